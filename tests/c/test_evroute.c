/* C ABI tests for evroute (tests/c). Usage: test_evroute CORPUS_DIR
 * Every expected frame is built here from the corpus bytes and SPEC §4, not
 * taken from the library, so the checks are byte-exact and independent. */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "check.h"

static const char *corpus_dir;

typedef struct {
    char *p;
    size_t n;
} text;

static text text_dup(const char *s, size_t n) {
    text t = {malloc(n + 1), n};
    CHECK(t.p != NULL);
    memcpy(t.p, s, n);
    t.p[n] = '\0';
    return t;
}

static text text_of(const char *s) { return text_dup(s, strlen(s)); }

static text text_printf(const char *fmt, const char *a, const char *b, const char *c) {
    int n = snprintf(NULL, 0, fmt, a, b, c);
    CHECK(n >= 0);
    text t = {malloc((size_t)n + 1), (size_t)n};
    CHECK(t.p != NULL);
    snprintf(t.p, (size_t)n + 1, fmt, a, b, c);
    return t;
}

/* A corpus file, without its trailing newline. */
static text corpus(const char *name) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", corpus_dir, name);
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        fprintf(stderr, "cannot open %s\n", path);
        exit(1);
    }
    CHECK(fseek(f, 0, SEEK_END) == 0);
    long size = ftell(f);
    CHECK(size > 0 && fseek(f, 0, SEEK_SET) == 0);
    text t = {malloc((size_t)size + 1), (size_t)size};
    CHECK(t.p != NULL && fread(t.p, 1, t.n, f) == t.n);
    fclose(f);
    while (t.n > 0 && (t.p[t.n - 1] == '\n' || t.p[t.n - 1] == '\r')) t.n--;
    t.p[t.n] = '\0';
    return t;
}

/* `s` with the first `from` replaced by `to` (which must be present). */
static text replaced(text s, const char *from, const char *to) {
    const char *at = strstr(s.p, from);
    CHECK(at != NULL);
    size_t head = (size_t)(at - s.p), fl = strlen(from), tl = strlen(to);
    text t = {malloc(s.n - fl + tl + 1), s.n - fl + tl};
    CHECK(t.p != NULL);
    memcpy(t.p, s.p, head);
    memcpy(t.p + head, to, tl);
    memcpy(t.p + head + tl, at + fl, s.n - head - fl + 1);
    return t;
}

/* The payload string of a corpus envelope (SPEC §4): the raw text of an
 * object payload, or the contents of a string payload. The corpus writes
 * `"payload": ` before P and ends with P and one `}`. */
static text payload_of(text doc) {
    const char *key = strstr(doc.p, "\"payload\": ");
    CHECK(key != NULL);
    const char *start = key + strlen("\"payload\": ");
    const char *end = doc.p + doc.n - 1;
    CHECK(*end == '}');
    if (*start == '"') {
        start++;
        end = strchr(start, '"');
        CHECK(end != NULL);
    }
    return text_dup(start, (size_t)(end - start));
}

/* JSON string escaping as SPEC §4's WebSocket frame needs it. */
static text json_escaped(text s) {
    text t = {malloc(s.n * 6 + 1), 0};
    CHECK(t.p != NULL);
    for (size_t i = 0; i < s.n; i++) {
        unsigned char c = (unsigned char)s.p[i];
        const char *esc = NULL;
        switch (c) {
        case '"': esc = "\\\""; break;
        case '\\': esc = "\\\\"; break;
        case '\n': esc = "\\n"; break;
        case '\r': esc = "\\r"; break;
        case '\t': esc = "\\t"; break;
        case '\b': esc = "\\b"; break;
        case '\f': esc = "\\f"; break;
        default: break;
        }
        if (esc != NULL) {
            t.n += (size_t)sprintf(t.p + t.n, "%s", esc);
        } else if (c < 0x20) {
            t.n += (size_t)sprintf(t.p + t.n, "\\u%04x", c);
        } else {
            t.p[t.n++] = (char)c;
        }
    }
    t.p[t.n] = '\0';
    return t;
}

static evr_engine *engine_new(const char *config) {
    evr_engine *e = NULL;
    CHECK_STATUS(evr_engine_new((const uint8_t *)config, strlen(config), &e), EVR_OK);
    CHECK(e != NULL);
    return e;
}

static evr_subscriber *subscriber_new(evr_engine *e, const char *options, const char *subscription) {
    evr_subscriber *s = NULL;
    CHECK_STATUS(evr_subscriber_new(e, (const uint8_t *)options, strlen(options), &s), EVR_OK);
    CHECK(s != NULL);
    if (subscription != NULL) {
        CHECK_STATUS(evr_subscribe(s, (const uint8_t *)subscription, strlen(subscription)), EVR_OK);
    }
    return s;
}

static evr_status subscribe(evr_subscriber *s, const char *json) {
    return evr_subscribe(s, (const uint8_t *)json, strlen(json));
}

static evr_publish_stats publish_text(evr_engine *e, text event) {
    evr_publish_stats stats = {99, 99, 99};
    CHECK_STATUS(evr_publish(e, (const uint8_t *)event.p, event.n, &stats), EVR_OK);
    return stats;
}

static evr_publish_stats publish_corpus(evr_engine *e, const char *name) {
    text t = corpus(name);
    evr_publish_stats stats = publish_text(e, t);
    free(t.p);
    return stats;
}

static evr_publish_stats publish_channel(evr_engine *e, const char *channel, const char *message) {
    evr_publish_stats stats = {99, 99, 99};
    CHECK_STATUS(evr_publish_channel(e, (const uint8_t *)channel, strlen(channel), (const uint8_t *)message,
                                     strlen(message), &stats),
                 EVR_OK);
    return stats;
}

/* Takes the next frame and checks every accessor byte for byte against
 * the SPEC §4 encoding of (event, payload, stream). payload NULL = absent. */
static void expect_frame_at(int line, evr_subscriber *s, const char *event, const text *payload, const char *stream) {
    evr_frame *f = NULL;
    evr_status st = evr_subscriber_next(s, 0, &f);
    if (st != EVR_OK) {
        fprintf(stderr, "line %d: expected a %s frame on %s, got status %d\n", line, event, stream, (int)st);
        exit(1);
    }
    size_t len = 0;
    const uint8_t *p = evr_frame_event(f, &len);
    CHECK_BYTES(p, len, event, strlen(event));
    p = evr_frame_stream(f, &len);
    CHECK_BYTES(p, len, stream, strlen(stream));

    text sse, ws;
    if (payload == NULL) {
        len = 7;
        CHECK(evr_frame_payload(f, &len) == NULL && len == 0);
        sse = text_printf("event: %s\ndata: undefined\n\n%s%s", event, "", "");
        ws = text_printf("{\"stream\":%s,\"event\":\"%s\"}%s", stream, event, "");
    } else {
        p = evr_frame_payload(f, &len);
        CHECK_BYTES(p, len, payload->p, payload->n);
        CHECK(memchr(payload->p, '\n', payload->n) == NULL); /* one data line */
        text esc = json_escaped(*payload);
        sse = text_printf("event: %s\ndata: %s\n\n", event, payload->p, "");
        ws = text_printf("{\"stream\":%s,\"event\":\"%s\",\"payload\":\"%s\"}", stream, event, esc.p);
        free(esc.p);
    }
    p = evr_frame_sse(f, &len);
    CHECK_BYTES(p, len, sse.p, sse.n);
    p = evr_frame_ws(f, &len);
    CHECK_BYTES(p, len, ws.p, ws.n);
    free(sse.p);
    free(ws.p);
    evr_frame_free(f);
}
#define expect_frame(...) expect_frame_at(__LINE__, __VA_ARGS__)

/* The next frame carries the payload of this corpus envelope. */
static void expect_corpus_frame_at(int line, evr_subscriber *s, const char *name, const char *event,
                                   const char *stream) {
    text doc = corpus(name), payload = payload_of(doc);
    expect_frame_at(line, s, event, &payload, stream);
    free(doc.p);
    free(payload.p);
}
#define expect_corpus_frame(...) expect_corpus_frame_at(__LINE__, __VA_ARGS__)

static void expect_empty_at(int line, evr_subscriber *s) {
    evr_frame *f = (evr_frame *)&f; /* a sentinel: must stay untouched */
    evr_status st = evr_subscriber_next(s, 0, &f);
    if (st != EVR_EMPTY || f != (evr_frame *)&f) {
        size_t len = 0;
        const uint8_t *ws = st == EVR_OK ? evr_frame_ws(f, &len) : NULL;
        fprintf(stderr, "line %d: expected no frame, got status %d %.*s\n", line, (int)st, (int)len,
                ws ? (const char *)ws : "");
        exit(1);
    }
}
#define expect_empty(s) expect_empty_at(__LINE__, s)

static evr_subscriber_stats sub_stats(evr_subscriber *s) {
    evr_subscriber_stats st;
    CHECK_STATUS(evr_subscriber_get_stats(s, &st), EVR_OK);
    CHECK(st.matched == st.read + st.depth + st.dropped);
    return st;
}

/* ---- tests ---------------------------------------------------------- */

/* Whether a new thread starts with an empty last error. The string dies
 * with its thread, so it is compared here. */
static void *last_error_in_new_thread(void *arg) {
    (void)arg;
    return (void *)(intptr_t)(strcmp(evr_last_error(), "") == 0);
}

static void test_version_and_fresh_last_error(void) {
    CHECK(strcmp(evr_version(), EVR_VERSION) == 0);
    char want[64];
    snprintf(want, sizeof want, "%d.%d.%d", EVR_VERSION_MAJOR, EVR_VERSION_MINOR, EVR_VERSION_PATCH);
    CHECK(strncmp(EVR_VERSION, want, strlen(want)) == 0);
    CHECK(strcmp(evr_last_error(), "") == 0);
}

/* Every documented Mastodon example through one engine, in order, with
 * byte-exact frames on the streams each should reach (SPEC §3b). */
static void test_corpus_life_cycle(void) {
    evr_engine *e = NULL;
    CHECK_STATUS(evr_engine_new(NULL, 0, &e), EVR_OK); /* (NULL, 0) = defaults */
    evr_subscriber *pub = subscriber_new(e, "", "{\"stream\":\"public\"}");
    evr_subscriber *local = subscriber_new(e, "{}", "{\"type\":\"subscribe\",\"stream\":\"public:local\"}");
    evr_subscriber *remote = subscriber_new(e, "", "{\"stream\":\"public:remote\"}");
    evr_subscriber *tag = subscriber_new(e, "", "{\"stream\":\"hashtag\",\"tag\":\"#TEST!\"}");
    evr_subscriber *piano = subscriber_new(e, "", "{\"stream\":\"hashtag\",\"tag\":\"\xef\xbc\xb0iano\"}");
    /* Normalizes to the same channel: a no-op, so one frame, not two. */
    CHECK_STATUS(subscribe(piano, "{\"stream\":\"hashtag\",\"tag\":\"PIANO\"}"), EVR_OK);
    evr_subscriber *piano_local = subscriber_new(e, "", "{\"stream\":\"hashtag:local\",\"tag\":\"piano\"}");
    evr_subscriber *user = subscriber_new(e, "{\"account\":14715}", "{\"stream\":\"user\"}");

    static const char *files[] = {
        "01-update-108914327388663283.json", "02-notification-68739215.json",
        "03-filters_changed-undefined.json", "04-announcement-1.json",
        "05-announcement.reaction-None.json", "06-announcement.delete-1.json",
        "07-status.update-109348677773283527.json", "08-update-108914354907984653.json",
        "09-delete-107214471804101576.json", "10-status.update-109348684737626801.json",
        "11-update-108914398911648589.json", "12-delete-108914398911648589.json",
        "13-status.update-109348699525106378.json", "14-update-108914430312582020.json",
        "15-delete-108914430312582020.json", "16-status.update-108914430312582020.json",
        "17-status.update-108914327388663283.json", "18-conversation-819516.json",
    };
    evr_publish_stats total = {0, 0, 0};
    char path[64];
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        snprintf(path, sizeof path, "mastodon/%s", files[i]);
        evr_publish_stats s = publish_corpus(e, path);
        CHECK(s.delivered == s.matched && s.dropped == 0);
        total.matched += s.matched;
        total.delivered += s.delivered;
    }

    /* public: public statuses that are not replies to another account (01
     * and 17 are unlisted), and the deletes of statuses it received (09's
     * status was never seen). */
    expect_corpus_frame(pub, "mastodon/07-status.update-109348677773283527.json", "status.update", "[\"public\"]");
    expect_corpus_frame(pub, "mastodon/08-update-108914354907984653.json", "update", "[\"public\"]");
    expect_corpus_frame(pub, "mastodon/10-status.update-109348684737626801.json", "status.update", "[\"public\"]");
    expect_corpus_frame(pub, "mastodon/11-update-108914398911648589.json", "update", "[\"public\"]");
    expect_corpus_frame(pub, "mastodon/12-delete-108914398911648589.json", "delete", "[\"public\"]");
    expect_corpus_frame(pub, "mastodon/13-status.update-109348699525106378.json", "status.update", "[\"public\"]");
    expect_corpus_frame(pub, "mastodon/14-update-108914430312582020.json", "update", "[\"public\"]");
    expect_corpus_frame(pub, "mastodon/15-delete-108914430312582020.json", "delete", "[\"public\"]");
    expect_corpus_frame(pub, "mastodon/16-status.update-108914430312582020.json", "status.update", "[\"public\"]");
    expect_empty(pub);

    /* Local = acct without '@': admin, trwnh, gregpak (a self-reply). */
    expect_corpus_frame(local, "mastodon/07-status.update-109348677773283527.json", "status.update", "[\"public:local\"]");
    expect_corpus_frame(local, "mastodon/11-update-108914398911648589.json", "update", "[\"public:local\"]");
    expect_corpus_frame(local, "mastodon/12-delete-108914398911648589.json", "delete", "[\"public:local\"]");
    expect_corpus_frame(local, "mastodon/13-status.update-109348699525106378.json", "status.update", "[\"public:local\"]");
    expect_corpus_frame(local, "mastodon/14-update-108914430312582020.json", "update", "[\"public:local\"]");
    expect_corpus_frame(local, "mastodon/15-delete-108914430312582020.json", "delete", "[\"public:local\"]");
    expect_corpus_frame(local, "mastodon/16-status.update-108914430312582020.json", "status.update", "[\"public:local\"]");
    expect_empty(local);

    expect_corpus_frame(remote, "mastodon/08-update-108914354907984653.json", "update", "[\"public:remote\"]");
    expect_corpus_frame(remote, "mastodon/10-status.update-109348684737626801.json", "status.update", "[\"public:remote\"]");
    expect_empty(remote);

    /* Tags: "#TEST!" normalizes to "test"; the stream array keeps the
     * client's spelling. */
    expect_corpus_frame(tag, "mastodon/14-update-108914430312582020.json", "update", "[\"hashtag\",\"#TEST!\"]");
    expect_corpus_frame(tag, "mastodon/15-delete-108914430312582020.json", "delete", "[\"hashtag\",\"#TEST!\"]");
    expect_corpus_frame(tag, "mastodon/16-status.update-108914430312582020.json", "status.update", "[\"hashtag\",\"#TEST!\"]");
    expect_empty(tag);
    expect_corpus_frame(piano, "mastodon/10-status.update-109348684737626801.json", "status.update",
                        "[\"hashtag\",\"\xef\xbc\xb0iano\"]");
    expect_empty(piano);
    expect_empty(piano_local); /* 10 is remote */

    /* Announcements and filters_changed without recipients reach every
     * user stream; filters_changed has no payload. */
    expect_frame(user, "filters_changed", NULL, "[\"user\"]");
    expect_corpus_frame(user, "mastodon/04-announcement-1.json", "announcement", "[\"user\"]");
    expect_corpus_frame(user, "mastodon/05-announcement.reaction-None.json", "announcement.reaction", "[\"user\"]");
    expect_corpus_frame(user, "mastodon/06-announcement.delete-1.json", "announcement.delete", "[\"user\"]");
    expect_empty(user);

    evr_engine_stats es;
    CHECK_STATUS(evr_engine_get_stats(e, &es), EVR_OK);
    CHECK(es.published == sizeof files / sizeof *files && es.rejected == 0);
    CHECK(es.matched == total.matched && es.delivered == total.delivered && es.dropped == 0);
    CHECK(total.delivered == 9 + 7 + 2 + 3 + 1 + 4);
    CHECK(es.subscribers == 7 && es.subscriptions == 7);

    evr_subscriber *all[] = {pub, local, remote, tag, piano, piano_local, user};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) {
        evr_subscriber_stats ss = sub_stats(all[i]);
        CHECK(ss.depth == 0 && ss.dropped == 0 && ss.read == ss.delivered);
        evr_subscriber_free(all[i]);
    }
    CHECK_STATUS(evr_engine_get_stats(e, &es), EVR_OK);
    CHECK(es.subscribers == 0 && es.subscriptions == 0);
    evr_engine_free(e);
}

/* Recipients, lists, notifications, conversations and community webhooks. */
static void test_recipients_and_lists(void) {
    evr_engine *e = engine_new("{\"redis_namespace\":null}");
    evr_subscriber *user = subscriber_new(e, "{\"account\":\"42\"}", "{\"stream\":\"user\"}");
    evr_subscriber *notif = subscriber_new(e, "{\"account\":42}", "{\"stream\":\"user:notification\"}");
    evr_subscriber *direct = subscriber_new(e, "{\"account\":42}", "{\"stream\":\"direct\"}");
    evr_subscriber *list = subscriber_new(e, "", "{\"stream\":\"list\",\"list\":5}");
    evr_subscriber *other = subscriber_new(e, "{\"account\":43}", "{\"stream\":\"user\"}");
    evr_subscriber *seven = subscriber_new(e, "{\"account\":7}", "{\"stream\":\"user:notification\"}");

    text n = corpus("mastodon/02-notification-68739215.json");
    text n42 = replaced(n, "{", "{\"recipients\": [42], ");
    evr_publish_stats s = publish_text(e, n42);
    CHECK(s.matched == 2 && s.delivered == 2); /* user and user:notification of 42 */
    expect_corpus_frame(user, "mastodon/02-notification-68739215.json", "notification", "[\"user\"]");
    expect_corpus_frame(notif, "mastodon/02-notification-68739215.json", "notification", "[\"user:notification\"]");

    text c = corpus("mastodon/18-conversation-819516.json");
    text c42 = replaced(c, "{", "{\"recipients\": [\"42\"], ");
    CHECK(publish_text(e, c42).delivered == 1);
    expect_corpus_frame(direct, "mastodon/18-conversation-819516.json", "conversation", "[\"direct\"]");

    /* An unlisted status given to a list and to a home timeline. */
    text u = corpus("mastodon/01-update-108914327388663283.json");
    text ul = replaced(u, "{", "{\"lists\": [\"5\"], \"recipients\": [42], ");
    CHECK(publish_text(e, ul).delivered == 2);
    expect_corpus_frame(list, "mastodon/01-update-108914327388663283.json", "update", "[\"list\",\"5\"]");
    expect_corpus_frame(user, "mastodon/01-update-108914327388663283.json", "update", "[\"user\"]");

    /* Community webhook: the payload is the whole event object. */
    text m = corpus("community/notification.mention.json");
    CHECK(publish_text(e, m).delivered == 1);
    expect_frame(seven, "notification.mention", &m, "[\"user:notification\"]");

    /* Channel mode to a home timeline. */
    s = publish_channel(e, "timeline:42", "{\"event\":\"delete\",\"payload\":\"77\"}");
    CHECK(s.matched == 1);
    text id = text_of("77");
    expect_frame(user, "delete", &id, "[\"user\"]");

    evr_subscriber *all[] = {user, notif, direct, list, other, seven};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) expect_empty(all[i]);

    /* A stream that needs an account, on a subscriber without one. */
    evr_subscriber *anon = subscriber_new(e, "", NULL);
    CHECK_STATUS(subscribe(anon, "{\"stream\":\"user\"}"), EVR_ERR_INVALID_SUBSCRIPTION);
    CHECK_STATUS(subscribe(anon, "{\"stream\":\"direct\"}"), EVR_ERR_INVALID_SUBSCRIPTION);

    for (size_t i = 0; i < sizeof all / sizeof *all; i++) evr_subscriber_free(all[i]);
    evr_subscriber_free(anon);
    evr_engine_free(e);
    free(n.p), free(n42.p), free(c.p), free(c42.p), free(u.p), free(ul.p), free(m.p), free(id.p);
}

/* Query-style only_media (SPEC §2) and the :media channels. */
static void test_only_media(void) {
    evr_engine *e = engine_new("");
    evr_subscriber *media = subscriber_new(e, "", "{\"stream\":\"public\",\"only_media\":true}");
    /* The same channels as the first: a no-op. */
    CHECK_STATUS(subscribe(media, "{\"stream\":\"public:media\"}"), EVR_OK);
    evr_subscriber *local_media = subscriber_new(e, "", "{\"stream\":\"public:local\",\"only_media\":\"1\"}");
    evr_subscriber *not_media = subscriber_new(e, "", "{\"stream\":\"public\",\"only_media\":\"false\"}");
    evr_subscriber *off = subscriber_new(e, "", "{\"stream\":\"public\",\"only_media\":\"OFF\"}");

    text plain = corpus("mastodon/11-update-108914398911648589.json");
    text with = replaced(plain, "\"media_attachments\": []",
                         "\"media_attachments\": [{\"id\": \"9\", \"type\": \"image\"}]");
    text pw = payload_of(with);
    evr_publish_stats s = publish_text(e, plain);
    CHECK(s.matched == 2);
    s = publish_text(e, with);
    CHECK(s.matched == 4);

    expect_frame(media, "update", &pw, "[\"public:media\"]");
    expect_empty(media);
    expect_frame(local_media, "update", &pw, "[\"public:local:media\"]");
    expect_empty(local_media);
    expect_corpus_frame(not_media, "mastodon/11-update-108914398911648589.json", "update", "[\"public\"]");
    expect_frame(not_media, "update", &pw, "[\"public\"]");
    expect_empty(not_media);
    expect_corpus_frame(off, "mastodon/11-update-108914398911648589.json", "update", "[\"public\"]");
    expect_frame(off, "update", &pw, "[\"public\"]");
    expect_empty(off);

    evr_subscriber_free(media);
    evr_subscriber_free(local_media);
    evr_subscriber_free(not_media);
    evr_subscriber_free(off);
    evr_engine_free(e);
    free(plain.p), free(with.p), free(pw.p);
}

/* Viewer filters on public streams, replaced with evr_subscriber_update. */
static void test_viewer_filters(void) {
    evr_engine *e = engine_new("");
    /* 08 is by 272619, aiueohisama@mstdn.jp, language en; 11 is local. */
    const char *remote_en = "mastodon/08-update-108914354907984653.json";
    const char *local_en = "mastodon/11-update-108914398911648589.json";
    evr_subscriber *s = subscriber_new(e, "{\"languages\":[\"de\"]}", "{\"stream\":\"public\"}");
    evr_subscriber *user = subscriber_new(e, "{\"account\":1,\"languages\":[\"de\"]}", "{\"stream\":\"user\"}");

    publish_corpus(e, remote_en);
    expect_empty(s);

    struct {
        const char *filters;
        int remote_passes, local_passes;
    } cases[] = {
        {"{\"languages\":[\"en\"]}", 1, 1},
        {"{\"languages\":[\"de\",\"en\"],\"blocked_accounts\":[\"272619\"]}", 0, 1},
        {"{\"muted_accounts\":[272619]}", 0, 1},
        {"{\"blocked_domains\":[\"mstdn.jp\"]}", 0, 1},
        {"{\"muted_accounts\":[\"14715\"]}", 1, 0},
        {"", 1, 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        CHECK_STATUS(evr_subscriber_update(s, (const uint8_t *)cases[i].filters, strlen(cases[i].filters)), EVR_OK);
        publish_corpus(e, remote_en);
        publish_corpus(e, local_en);
        if (cases[i].remote_passes) expect_corpus_frame(s, remote_en, "update", "[\"public\"]");
        if (cases[i].local_passes) expect_corpus_frame(s, local_en, "update", "[\"public\"]");
        expect_empty(s);
    }

    /* A refused update leaves the filters as they were. */
    const char *block = "{\"blocked_domains\":[\"mstdn.jp\"]}";
    CHECK_STATUS(evr_subscriber_update(s, (const uint8_t *)block, strlen(block)), EVR_OK);
    const char *bad = "{\"account\":\"1\"}";
    CHECK_STATUS(evr_subscriber_update(s, (const uint8_t *)bad, strlen(bad)), EVR_ERR_INVALID_CONFIG);
    CHECK_CONTAINS(evr_last_error(), "account");
    CHECK_STATUS(evr_subscriber_update(s, (const uint8_t *)"{\"languages\":", 13), EVR_ERR_INVALID_JSON);
    publish_corpus(e, remote_en);
    expect_empty(s);

    /* Filters do not apply to user streams. */
    text u = corpus(remote_en), u1 = replaced(u, "{", "{\"recipients\": [1], ");
    publish_text(e, u1);
    expect_corpus_frame(user, remote_en, "update", "[\"user\"]");

    evr_subscriber_free(s);
    evr_subscriber_free(user);
    evr_engine_free(e);
    free(u.p), free(u1.p);
}

static void publish_ids(evr_engine *e, int from, int to) {
    char msg[64];
    for (int i = from; i <= to; i++) {
        snprintf(msg, sizeof msg, "{\"event\":\"delete\",\"payload\":\"%d\"}", i);
        publish_channel(e, "timeline:public", msg);
    }
}

static void expect_id(evr_subscriber *s, int id) {
    char buf[16];
    snprintf(buf, sizeof buf, "%d", id);
    text t = text_of(buf);
    expect_frame(s, "delete", &t, "[\"public\"]");
    free(t.p);
}

static void test_overflow_policies(void) {
    evr_engine *e = engine_new("{\"queue_capacity\":2,\"overflow\":\"drop_newest\"}");
    evr_subscriber *oldest = subscriber_new(e, "{\"overflow\":\"drop_oldest\"}", "{\"stream\":\"public\"}");
    evr_subscriber *newest = subscriber_new(e, "", "{\"stream\":\"public\"}"); /* engine default */
    evr_subscriber *slow = subscriber_new(e, "{\"queue_capacity\":4,\"overflow\":\"disconnect\"}", "{\"stream\":\"public\"}");
    evr_subscriber *roomy = subscriber_new(e, "{\"queue_capacity\":16}", "{\"stream\":\"public\"}");

    publish_ids(e, 1, 3); /* oldest evicts "1", newest refuses "3" */
    /* The 4th: oldest evicts "2", newest refuses it, slow and roomy take it. */
    evr_publish_stats s = publish_channel(e, "timeline:public", "{\"event\":\"delete\",\"payload\":\"4\"}");
    CHECK(s.matched == 4 && s.delivered == 3 && s.dropped == 2);
    CHECK(evr_subscriber_closed(slow) == NULL);
    /* The 5th overflows slow (capacity 4): it is closed and its 4 queued
     * frames plus the new one are dropped. */
    s = publish_channel(e, "timeline:public", "{\"event\":\"delete\",\"payload\":\"5\"}");
    CHECK(s.matched == 4 && s.delivered == 2 && s.dropped == 2 + 5);

    expect_id(oldest, 4);
    expect_id(oldest, 5);
    expect_empty(oldest);
    expect_id(newest, 1);
    expect_id(newest, 2);
    expect_empty(newest);
    for (int i = 1; i <= 5; i++) expect_id(roomy, i);

    evr_frame *f = (evr_frame *)&f;
    CHECK_STATUS(evr_subscriber_next(slow, 0, &f), EVR_CLOSED);
    CHECK_STATUS(evr_subscriber_next(slow, 50, &f), EVR_CLOSED);
    CHECK(f == (evr_frame *)&f);
    CHECK(strcmp(evr_subscriber_closed(slow), "slow consumer") == 0);

    evr_subscriber_stats st = sub_stats(oldest);
    CHECK(st.matched == 5 && st.delivered == 5 && st.dropped == 3 && st.read == 2);
    st = sub_stats(newest);
    CHECK(st.matched == 5 && st.delivered == 2 && st.dropped == 3);
    st = sub_stats(slow);
    CHECK(st.matched == 5 && st.dropped == 5 && st.depth == 0);
    /* A disconnected subscriber has left the index: later publishes do not
     * reach or count it. */
    publish_ids(e, 6, 6);
    CHECK(sub_stats(slow).dropped == 5 && sub_stats(slow).matched == 5);
    evr_engine_stats es;
    CHECK_STATUS(evr_engine_get_stats(e, &es), EVR_OK);
    /* Dropped per publish: 1+1 (the 3rd), 2, 7, then none (the others were
     * drained). */
    CHECK(es.published == 6 && es.dropped == 2 + 2 + 7);

    evr_subscriber_free(oldest);
    evr_subscriber_free(newest);
    evr_subscriber_free(slow);
    evr_subscriber_free(roomy);
    evr_engine_free(e);
}

static void expect_error_at(int line, evr_status got, evr_status want, const char *needle) {
    if (got != want || strstr(evr_last_error(), needle) == NULL) {
        fprintf(stderr, "line %d: status %d (want %d), last error \"%s\" (want it to mention \"%s\")\n", line,
                (int)got, (int)want, evr_last_error(), needle);
        exit(1);
    }
}
#define expect_error(got, want, needle) expect_error_at(__LINE__, got, want, needle)

static void *other_thread_error(void *arg) {
    (void)arg;
    evr_engine *e = (evr_engine *)&arg;
    evr_status st = evr_engine_new((const uint8_t *)"[", 1, &e);
    CHECK(st == EVR_ERR_INVALID_JSON || st == EVR_ERR_INVALID_CONFIG);
    CHECK(e == (evr_engine *)&arg);
    return NULL;
}

/* Every status a call can return, with its message. */
static void test_error_statuses(void) {
    evr_engine *sentinel_e = (evr_engine *)&sentinel_e, *e = sentinel_e;
    const uint8_t *x = (const uint8_t *)"{}";

    /* NULL arguments; out-parameters stay untouched on failure. */
    expect_error(evr_engine_new(NULL, 5, &e), EVR_ERR_NULL, "config_json");
    expect_error(evr_engine_new(x, 2, NULL), EVR_ERR_NULL, "out");
    CHECK(e == sentinel_e);
    e = engine_new("{\"max_event_bytes\":2048}");
    evr_subscriber *sentinel_s = (evr_subscriber *)&sentinel_s, *s = sentinel_s;
    expect_error(evr_subscriber_new(NULL, x, 2, &s), EVR_ERR_NULL, "engine");
    expect_error(evr_subscriber_new(e, NULL, 2, &s), EVR_ERR_NULL, "json");
    expect_error(evr_subscriber_new(e, x, 2, NULL), EVR_ERR_NULL, "out");
    CHECK(s == sentinel_s);
    s = subscriber_new(e, "", "{\"stream\":\"public\"}");
    expect_error(evr_subscribe(NULL, x, 2), EVR_ERR_NULL, "subscriber");
    expect_error(evr_subscribe(s, NULL, 2), EVR_ERR_NULL, "json");
    expect_error(evr_unsubscribe(NULL, x, 2), EVR_ERR_NULL, "subscriber");
    expect_error(evr_subscriber_update(NULL, x, 2), EVR_ERR_NULL, "subscriber");
    expect_error(evr_subscriber_update(s, NULL, 2), EVR_ERR_NULL, "json");
    expect_error(evr_subscriber_close(NULL), EVR_ERR_NULL, "subscriber");
    evr_publish_stats ps = {7, 8, 9};
    expect_error(evr_publish(NULL, x, 2, &ps), EVR_ERR_NULL, "engine");
    expect_error(evr_publish(e, NULL, 2, &ps), EVR_ERR_NULL, "event");
    expect_error(evr_publish_channel(NULL, x, 2, x, 2, &ps), EVR_ERR_NULL, "engine");
    expect_error(evr_publish_channel(e, NULL, 2, x, 2, &ps), EVR_ERR_NULL, "channel");
    expect_error(evr_publish_channel(e, x, 2, NULL, 2, &ps), EVR_ERR_NULL, "message");
    CHECK(ps.matched == 7 && ps.delivered == 8 && ps.dropped == 9);
    evr_frame *f = (evr_frame *)&f;
    expect_error(evr_subscriber_next(NULL, 0, &f), EVR_ERR_NULL, "subscriber");
    expect_error(evr_subscriber_next(s, 0, NULL), EVR_ERR_NULL, "out");
    CHECK(f == (evr_frame *)&f);
    int fd = -7;
    expect_error(evr_subscriber_fd(NULL, &fd), EVR_ERR_NULL, "subscriber");
    expect_error(evr_subscriber_fd(s, NULL), EVR_ERR_NULL, "out");
    CHECK(fd == -7);
    evr_engine_stats es;
    evr_subscriber_stats ss;
    expect_error(evr_engine_get_stats(NULL, &es), EVR_ERR_NULL, "engine");
    expect_error(evr_engine_get_stats(e, NULL), EVR_ERR_NULL, "out");
    expect_error(evr_subscriber_get_stats(NULL, &ss), EVR_ERR_NULL, "subscriber");
    expect_error(evr_subscriber_get_stats(s, NULL), EVR_ERR_NULL, "out");
    size_t len = 5;
    CHECK(evr_frame_sse(NULL, &len) == NULL && evr_frame_ws(NULL, &len) == NULL);
    CHECK(evr_frame_event(NULL, &len) == NULL && evr_frame_payload(NULL, &len) == NULL);
    CHECK(evr_frame_stream(NULL, &len) == NULL && len == 5);
    CHECK_CONTAINS(evr_last_error(), "frame");
    CHECK(evr_subscriber_closed(NULL) == NULL);
    evr_engine_free(NULL);
    evr_subscriber_free(NULL);
    evr_frame_free(NULL);

    /* (NULL, 0) is the empty input, which is not a subscription or event. */
    CHECK(evr_subscribe(s, NULL, 0) < 0);
    CHECK(evr_publish(e, NULL, 0, NULL) < 0);

    /* Invalid UTF-8, in events, channels and subscriptions. */
    const char *bad_utf8 = "{\"event\":\"delete\",\"payload\":\"\xff\xfe\"}";
    expect_error(evr_publish(e, (const uint8_t *)bad_utf8, strlen(bad_utf8), &ps), EVR_ERR_INVALID_UTF8, "UTF-8");
    expect_error(evr_publish_channel(e, (const uint8_t *)"timeline:\xc3", 10, x, 2, &ps), EVR_ERR_INVALID_UTF8,
                 "UTF-8");
    expect_error(subscribe(s, "{\"stream\":\"hashtag\",\"tag\":\"\xe2\x82\"}"), EVR_ERR_INVALID_UTF8, "UTF-8");

    /* Invalid JSON: the documentation's own trailing-comma examples. */
    text inv = corpus("invalid/notification.banner.sent-trailing-comma.json");
    expect_error(evr_publish(e, (const uint8_t *)inv.p, inv.n, &ps), EVR_ERR_INVALID_JSON, "JSON");
    free(inv.p);
    inv = corpus("invalid/notification.contribution-trailing-comma.json");
    expect_error(evr_publish(e, (const uint8_t *)inv.p, inv.n, &ps), EVR_ERR_INVALID_JSON, "JSON");
    free(inv.p);
    expect_error(subscribe(s, "{\"stream\":"), EVR_ERR_INVALID_JSON, "JSON");
    expect_error(evr_publish_channel(e, (const uint8_t *)"timeline:public", 15, (const uint8_t *)"{", 1, &ps),
                 EVR_ERR_INVALID_JSON, "JSON");

    /* Refused subscriptions, with Mastodon's messages. */
    expect_error(subscribe(s, "{\"stream\":\"bogus\"}"), EVR_ERR_INVALID_SUBSCRIPTION, "Unknown stream type");
    expect_error(subscribe(s, "{\"stream\":\"hashtag\"}"), EVR_ERR_INVALID_SUBSCRIPTION, "Missing tag name parameter");
    expect_error(subscribe(s, "{\"stream\":\"list\"}"), EVR_ERR_INVALID_SUBSCRIPTION, "Missing list name parameter");
    expect_error(subscribe(s, "{\"stream\":\"public\",\"stream\":\"user\"}"), EVR_ERR_INVALID_SUBSCRIPTION,
                 "duplicate key \"stream\"");
    expect_error(evr_unsubscribe(s, (const uint8_t *)"{\"stream\":\"nope\"}", 17), EVR_ERR_INVALID_SUBSCRIPTION,
                 "Unknown stream type");

    expect_error(evr_publish_channel(e, (const uint8_t *)"timeline:nope:x", 15, x, 2, &ps), EVR_ERR_INVALID_CHANNEL,
                 "timeline:nope:x");
    const char *no_event = "{\"payload\":{}}";
    expect_error(evr_publish(e, (const uint8_t *)no_event, strlen(no_event), &ps), EVR_ERR_INVALID_EVENT, "event");
    const char *no_account = "{\"event\":\"update\",\"payload\":{\"id\":\"1\",\"visibility\":\"public\"}}";
    expect_error(evr_publish(e, (const uint8_t *)no_account, strlen(no_account), &ps), EVR_ERR_INVALID_EVENT,
                 "account");

    text big = corpus("mastodon/14-update-108914430312582020.json");
    text small = corpus("mastodon/08-update-108914354907984653.json");
    CHECK(big.n > 2048 && small.n <= 2048);
    expect_error(evr_publish(e, (const uint8_t *)big.p, big.n, &ps), EVR_ERR_TOO_LARGE, "2048");
    publish_text(e, small);
    free(big.p), free(small.p);

    expect_error(evr_engine_new((const uint8_t *)"{\"queue_capacity\":0}", 20, &e), EVR_ERR_INVALID_CONFIG,
                 "queue_capacity");
    expect_error(evr_engine_new((const uint8_t *)"{\"overflow\":\"block\"}", 20, &e), EVR_ERR_INVALID_CONFIG,
                 "overflow");
    expect_error(evr_subscriber_new(e, (const uint8_t *)"{\"acount\":1}", 12, &s), EVR_ERR_INVALID_CONFIG, "acount");
    const char *twice = "{\"languages\":[\"en\"],\"languages\":[]}";
    expect_error(evr_subscriber_new(e, (const uint8_t *)twice, strlen(twice), &s), EVR_ERR_INVALID_CONFIG,
                 "duplicate key \"languages\"");

    /* EVR_ERR_IO: no file descriptor left for the readiness eventfd. */
    evr_subscriber *fdless = subscriber_new(e, "", NULL);
    struct rlimit old;
    CHECK(getrlimit(RLIMIT_NOFILE, &old) == 0);
    int probe = dup(0);
    CHECK(probe >= 0);
    close(probe);
    struct rlimit low = {(rlim_t)probe, old.rlim_max};
    CHECK(setrlimit(RLIMIT_NOFILE, &low) == 0);
    fd = -7;
    evr_status io = evr_subscriber_fd(fdless, &fd);
    CHECK(setrlimit(RLIMIT_NOFILE, &old) == 0);
    expect_error(io, EVR_ERR_IO, "eventfd");
    CHECK(fd == -7);
    CHECK_STATUS(evr_subscriber_fd(fdless, &fd), EVR_OK); /* recovers */
    CHECK(fd >= 0);
    evr_subscriber_free(fdless);

    /* The last error is per thread: another thread's failure leaves ours. */
    expect_error(subscribe(s, "{\"stream\":\"bogus\"}"), EVR_ERR_INVALID_SUBSCRIPTION, "bogus");
    pthread_t t;
    CHECK(pthread_create(&t, NULL, other_thread_error, NULL) == 0);
    CHECK(pthread_join(t, NULL) == 0);
    CHECK_CONTAINS(evr_last_error(), "bogus");
    void *fresh = NULL;
    CHECK(pthread_create(&t, NULL, last_error_in_new_thread, NULL) == 0);
    CHECK(pthread_join(t, &fresh) == 0);
    CHECK(fresh == (void *)1);

    CHECK_STATUS(evr_engine_get_stats(e, &es), EVR_OK);
    /* Rejected by the engine: empty, 3 UTF-8, 3 JSON, 1 channel, 2 event,
     * 1 too large. NULL arguments never reach it. */
    CHECK(es.rejected == 10 && es.published == 1);
    evr_subscriber_free(s);
    evr_engine_free(e);
}

/* Deterministic pseudo-random numbers for the mutation loop. */
static uint32_t rng_state = 2463534242u;
static uint32_t rng(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 17;
    rng_state ^= rng_state << 5;
    return rng_state;
}

/* Bad input across the ABI, interleaved with good events: nothing crashes
 * or leaks, and a bystander subscriber's frames stay exact and in order. */
static void test_bad_input_does_not_disturb_others(void) {
    evr_engine *e = engine_new("{\"max_event_bytes\":8192}");
    evr_subscriber *canary = subscriber_new(e, "{\"languages\":[\"en\"]}", "{\"stream\":\"hashtag\",\"tag\":\"evrcanary\"}");
    evr_subscriber *victim = subscriber_new(e, "{\"account\":1}", "{\"stream\":\"public:local\"}");
    text base = corpus("mastodon/14-update-108914430312582020.json");
    text good = replaced(base, "\"name\": \"test\"", "\"name\": \"EvrCanary\"");
    text good_payload = payload_of(good);
    static const char *sources[] = {
        "mastodon/07-status.update-109348677773283527.json", "mastodon/10-status.update-109348684737626801.json",
        "mastodon/02-notification-68739215.json", "mastodon/18-conversation-819516.json",
        "community/status.created.json", "community/notification.mention.json",
        "invalid/notification.contribution-trailing-comma.json",
    };
    text docs[sizeof sources / sizeof *sources];
    for (size_t i = 0; i < sizeof docs / sizeof *docs; i++) docs[i] = corpus(sources[i]);

    const int rounds = 300;
    int errors = 0, oks = 0, channel_errors = 0, channel_oks = 0;
    for (int round = 0; round < rounds; round++) {
        publish_text(e, good);

        /* A corpus event with a few random bytes changed (never the canary
         * tag), published in both modes. */
        text d = docs[(size_t)round % (sizeof docs / sizeof *docs)];
        text m = text_dup(d.p, d.n);
        for (int k = 0, flips = 1 + (int)(rng() % 4); k < flips; k++) m.p[rng() % m.n] = (char)(rng() & 0xff);
        evr_status st = evr_publish(e, (const uint8_t *)m.p, m.n, NULL);
        CHECK(st == EVR_OK || st < 0);
        errors += st < 0;
        oks += st == EVR_OK;
        st = evr_publish_channel(e, (const uint8_t *)"timeline:public:local", 21, (const uint8_t *)m.p, m.n, NULL);
        CHECK(st == EVR_OK || st < 0);
        channel_errors += st < 0;
        channel_oks += st == EVR_OK;
        /* Truncated anywhere. */
        size_t cut = rng() % m.n;
        CHECK(evr_publish(e, (const uint8_t *)m.p, cut, NULL) != EVR_OK || cut == m.n);
        free(m.p);

        /* Bad calls on the other subscriber and the engine. */
        CHECK(evr_subscribe(victim, (const uint8_t *)"{\"stream\":\"bogus\"}", 18) == EVR_ERR_INVALID_SUBSCRIPTION);
        CHECK(evr_subscribe(victim, (const uint8_t *)"\xff", 1) < 0);
        CHECK(evr_subscriber_update(victim, (const uint8_t *)"{\"languages\":7}", 15) < 0);
        CHECK(evr_subscriber_update(canary, (const uint8_t *)"{\"x\":1}", 7) == EVR_ERR_INVALID_CONFIG);
        CHECK(evr_subscribe(canary, (const uint8_t *)"{\"stream\":\"list\"}", 17) == EVR_ERR_INVALID_SUBSCRIPTION);
        CHECK(evr_publish(NULL, (const uint8_t *)good.p, good.n, NULL) == EVR_ERR_NULL);
        CHECK(evr_publish_channel(e, (const uint8_t *)"timeline:hashtag:", 17, (const uint8_t *)"{}", 2, NULL) < 0);
        evr_subscriber *tmp = NULL;
        CHECK(evr_subscriber_new(e, (const uint8_t *)"{\"account\":[]}", 14, &tmp) < 0 && tmp == NULL);

        /* Drain the victim so its queue never fills. */
        evr_frame *f = NULL;
        while (evr_subscriber_next(victim, 0, &f) == EVR_OK) evr_frame_free(f);

        if (round % 50 == 49) {
            for (int k = 0; k < 50; k++)
                expect_frame(canary, "update", &good_payload, "[\"hashtag\",\"evrcanary\"]");
            expect_empty(canary);
        }
    }
    fprintf(stderr, "mutations: publish %d ok, %d rejected; channel %d ok, %d rejected\n", oks, errors, channel_oks,
            channel_errors);
    CHECK(errors > rounds / 2); /* the mutations really were mostly bad */
    /* ... but not all: some still went through the whole pipeline, in both modes. */
    CHECK(oks >= 1);
    CHECK(channel_oks >= 1 && channel_errors >= 1);
    evr_subscriber_stats st = sub_stats(canary);
    CHECK(st.matched == (uint64_t)rounds && st.read == (uint64_t)rounds && st.dropped == 0);

    for (size_t i = 0; i < sizeof docs / sizeof *docs; i++) free(docs[i].p);
    free(base.p), free(good.p), free(good_payload.p);
    evr_subscriber_free(canary);
    evr_subscriber_free(victim);
    evr_engine_free(e);
}

/* 4 threads publish while 4 threads drain; per publisher, every drainer
 * sees all frames, in publish order. */
enum { PUBLISHERS = 4, DRAINERS = 4, PER_PUBLISHER = 2000 };

struct drain_job {
    evr_subscriber *sub;
    int received;
};

static void *publisher(void *arg) {
    evr_engine *e = ((void **)arg)[0];
    int p = (int)(intptr_t)((void **)arg)[1];
    char msg[96];
    for (int i = 0; i < PER_PUBLISHER; i++) {
        int n = snprintf(msg, sizeof msg, "{\"event\":\"delete\",\"payload\":\"%d\"}", p * 1000000 + i);
        evr_publish_stats s;
        CHECK_STATUS(evr_publish_channel(e, (const uint8_t *)"timeline:public", 15, (const uint8_t *)msg, (size_t)n, &s),
                     EVR_OK);
        CHECK(s.matched == DRAINERS && s.delivered == DRAINERS && s.dropped == 0);
    }
    return NULL;
}

static void *drainer(void *arg) {
    struct drain_job *job = arg;
    int next[PUBLISHERS] = {0};
    int idle = 0;
    while (job->received < PUBLISHERS * PER_PUBLISHER) {
        evr_frame *f = NULL;
        evr_status st = evr_subscriber_next(job->sub, 200, &f);
        if (st == EVR_TIMEOUT) {
            CHECK(++idle < 100); /* 20 s without a frame: something is stuck */
            continue;
        }
        CHECK_STATUS(st, EVR_OK);
        size_t len = 0;
        const uint8_t *payload = evr_frame_payload(f, &len);
        CHECK(payload != NULL && len < 16);
        char buf[16];
        memcpy(buf, payload, len);
        buf[len] = '\0';
        int id = atoi(buf), p = id / 1000000, i = id % 1000000;
        CHECK(p >= 0 && p < PUBLISHERS && i == next[p]);
        next[p]++;
        evr_frame_free(f);
        job->received++;
    }
    return NULL;
}

static void test_threads(void) {
    evr_engine *e = engine_new("{\"queue_capacity\":8000}");
    struct drain_job jobs[DRAINERS];
    pthread_t drainers[DRAINERS], publishers[PUBLISHERS];
    void *args[PUBLISHERS][2];
    for (int i = 0; i < DRAINERS; i++) {
        jobs[i].sub = subscriber_new(e, "", "{\"stream\":\"public\"}");
        jobs[i].received = 0;
        CHECK(pthread_create(&drainers[i], NULL, drainer, &jobs[i]) == 0);
    }
    for (int p = 0; p < PUBLISHERS; p++) {
        args[p][0] = e;
        args[p][1] = (void *)(intptr_t)p;
        CHECK(pthread_create(&publishers[p], NULL, publisher, args[p]) == 0);
    }
    for (int p = 0; p < PUBLISHERS; p++) CHECK(pthread_join(publishers[p], NULL) == 0);
    for (int i = 0; i < DRAINERS; i++) {
        CHECK(pthread_join(drainers[i], NULL) == 0);
        CHECK(jobs[i].received == PUBLISHERS * PER_PUBLISHER);
        evr_subscriber_stats st = sub_stats(jobs[i].sub);
        CHECK(st.read == PUBLISHERS * PER_PUBLISHER && st.dropped == 0 && st.depth == 0);
        evr_subscriber_free(jobs[i].sub);
    }
    evr_engine_stats es;
    CHECK_STATUS(evr_engine_get_stats(e, &es), EVR_OK);
    CHECK(es.published == PUBLISHERS * PER_PUBLISHER && es.delivered == (uint64_t)DRAINERS * es.published);
    evr_engine_free(e);
}

static int readable(int fd, int timeout_ms) {
    struct pollfd p = {fd, POLLIN, 0};
    int n = poll(&p, 1, timeout_ms);
    CHECK(n >= 0);
    return n == 1 && (p.revents & POLLIN);
}

static void *publish_later(void *arg) {
    struct timespec pause = {0, 50 * 1000 * 1000};
    nanosleep(&pause, NULL);
    publish_ids(arg, 1, 3);
    return NULL;
}

/* The readiness fd in poll(): readable exactly while frames wait, and on close. */
static void test_poll_readiness(void) {
    evr_engine *e = engine_new("");
    evr_subscriber *s = subscriber_new(e, "", "{\"stream\":\"public\"}");
    evr_subscriber *other = subscriber_new(e, "", "{\"stream\":\"public:local\"}");
    int fd = -1, again = -1, other_fd = -1;
    CHECK_STATUS(evr_subscriber_fd(s, &fd), EVR_OK);
    CHECK_STATUS(evr_subscriber_fd(s, &again), EVR_OK);
    CHECK_STATUS(evr_subscriber_fd(other, &other_fd), EVR_OK);
    CHECK(fd >= 0 && fd == again && other_fd != fd);
    CHECK(!readable(fd, 0));

    pthread_t t;
    CHECK(pthread_create(&t, NULL, publish_later, e) == 0);
    struct pollfd fds[2] = {{fd, POLLIN, 0}, {other_fd, POLLIN, 0}};
    CHECK(poll(fds, 2, 10000) >= 1); /* blocks until the publish */
    CHECK((fds[0].revents & POLLIN) && !(fds[1].revents & POLLIN));
    CHECK(pthread_join(t, NULL) == 0);

    /* Level-triggered: stays readable until the queue is drained. */
    expect_id(s, 1);
    CHECK(readable(fd, 0));
    expect_id(s, 2);
    expect_id(s, 3);
    CHECK(!readable(fd, 0));
    expect_empty(s);
    CHECK(!readable(other_fd, 0));

    /* Closing wakes the poller, and the read says closed. */
    CHECK_STATUS(evr_subscriber_close(s), EVR_OK);
    CHECK(readable(fd, 1000));
    evr_frame *f = NULL;
    CHECK_STATUS(evr_subscriber_next(s, 0, &f), EVR_CLOSED);
    CHECK(strcmp(evr_subscriber_closed(s), "closed") == 0);
    CHECK(evr_subscriber_closed(other) == NULL);
    evr_subscriber_free(s);
    evr_subscriber_free(other);
    evr_engine_free(e);
}

static void *wait_for_frame(void *arg) {
    evr_frame *f = NULL;
    return (void *)(intptr_t)evr_subscriber_next(arg, 10000, &f);
}

static double now_seconds(void) {
    struct timespec t;
    CHECK(clock_gettime(CLOCK_MONOTONIC, &t) == 0);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

struct reader {
    evr_subscriber *sub;
    evr_status status;
    double at;
};

static void *read_one(void *arg) {
    struct reader *r = arg;
    evr_frame *f = NULL;
    r->status = evr_subscriber_next(r->sub, 10000, &f);
    r->at = now_seconds();
    evr_frame_free(f);
    return NULL;
}

/* Several threads wait on one subscriber (the header allows it) and a burst
 * arrives at once: every reader gets a frame right away, none waits for its
 * 10 s timeout. */
static void test_several_readers(void) {
    enum { READERS = 4 };
    evr_engine *e = engine_new("");
    evr_subscriber *s = subscriber_new(e, "", "{\"stream\":\"public\"}");
    for (int round = 0; round < 3; round++) {
        struct reader readers[READERS];
        pthread_t threads[READERS];
        for (int i = 0; i < READERS; i++) {
            readers[i] = (struct reader){s, EVR_OK, 0};
            CHECK(pthread_create(&threads[i], NULL, read_one, &readers[i]) == 0);
        }
        struct timespec pause = {0, 100 * 1000 * 1000};
        nanosleep(&pause, NULL);
        double sent = now_seconds();
        publish_ids(e, 1, READERS);
        for (int i = 0; i < READERS; i++) {
            CHECK(pthread_join(threads[i], NULL) == 0);
            CHECK_STATUS(readers[i].status, EVR_OK);
            CHECK(readers[i].at - sent < 2.0);
        }
        expect_empty(s);
    }
    evr_subscriber_free(s);
    evr_engine_free(e);
}

/* Handles freed in any order; frames outlive everything; timeouts. */
static void test_lifetimes_and_waiting(void) {
    evr_engine *e = engine_new("");
    evr_subscriber *s = subscriber_new(e, "", "{\"stream\":\"public\"}");
    evr_frame *f = (evr_frame *)&f;
    CHECK_STATUS(evr_subscriber_next(s, 30, &f), EVR_TIMEOUT);
    CHECK(f == (evr_frame *)&f);

    /* A waiting reader is woken by evr_subscriber_close(). */
    evr_subscriber *waited = subscriber_new(e, "", "{\"stream\":\"public\"}");
    pthread_t t;
    void *result = NULL;
    CHECK(pthread_create(&t, NULL, wait_for_frame, waited) == 0);
    struct timespec pause = {0, 30 * 1000 * 1000};
    nanosleep(&pause, NULL);
    CHECK_STATUS(evr_subscriber_close(waited), EVR_OK);
    CHECK(pthread_join(t, &result) == 0);
    CHECK((evr_status)(intptr_t)result == EVR_CLOSED);
    evr_subscriber_free(waited);

    publish_ids(e, 1, 2);
    /* Unsubscribing stops delivery; a second unsubscribe is fine. */
    CHECK_STATUS(evr_unsubscribe(s, (const uint8_t *)"{\"stream\":\"public\"}", 19), EVR_OK);
    CHECK_STATUS(evr_unsubscribe(s, (const uint8_t *)"{\"stream\":\"public\"}", 19), EVR_OK);
    publish_ids(e, 3, 3);

    evr_frame *first = NULL;
    CHECK_STATUS(evr_subscriber_next(s, 0, &first), EVR_OK);
    evr_engine_free(e); /* the subscriber keeps the routing domain alive */
    expect_id(s, 2);
    expect_empty(s);
    CHECK_STATUS(subscribe(s, "{\"stream\":\"public\"}"), EVR_OK);
    evr_subscriber_free(s);

    size_t len = 0;
    const uint8_t *sse = evr_frame_sse(first, &len);
    const char *want = "event: delete\ndata: 1\n\n";
    CHECK_BYTES(sse, len, want, strlen(want));
    evr_frame_free(first);
}

/* Batch reads against single reads: two subscribers get the same frames;
 * one is drained frame by frame, the other with evr_subscriber_next_batch()
 * or evr_subscriber_read() in small pieces, and the bytes must agree. */
static const char *const batch_corpus[] = {
    "mastodon/01-update-108914327388663283.json",        "mastodon/08-update-108914354907984653.json",
    "mastodon/11-update-108914398911648589.json",        "mastodon/14-update-108914430312582020.json",
    "mastodon/07-status.update-109348677773283527.json",
};
#define BATCH_EVENTS (sizeof batch_corpus / sizeof *batch_corpus)

/* Concatenates one encoding of every waiting frame, read one at a time;
 * lens[i] gets frame i's length. */
static text drain_single(evr_subscriber *s, int ws, size_t *lens, size_t *count) {
    text t = {malloc(1 << 20), 0};
    CHECK(t.p != NULL);
    evr_frame *f = NULL;
    *count = 0;
    while (evr_subscriber_next(s, 0, &f) == EVR_OK) {
        size_t len = 0;
        const uint8_t *p = ws ? evr_frame_ws(f, &len) : evr_frame_sse(f, &len);
        CHECK(p != NULL && t.n + len <= (1 << 20));
        memcpy(t.p + t.n, p, len);
        t.n += len;
        lens[(*count)++] = len;
        evr_frame_free(f);
    }
    return t;
}

static void publish_batch_corpus(evr_engine *e, int rounds) {
    for (int r = 0; r < rounds; r++) {
        for (size_t i = 0; i < BATCH_EVENTS; i++) {
            publish_corpus(e, batch_corpus[i]);
        }
    }
}

static void test_batch_reads(void) {
    evr_engine *e = engine_new("{}");
    evr_subscriber *a = subscriber_new(e, "{}", "{\"stream\":\"public\"}");
    evr_subscriber *b = subscriber_new(e, "{}", "{\"stream\":\"public\"}");
    size_t want_lens[64], got_lens[64], count = 0, n = 99, bytes = 99;

    /* next_batch: the same frames in the same order, at most max at a time. */
    publish_batch_corpus(e, 2);
    size_t waiting = (size_t)sub_stats(b).depth;
    CHECK(waiting >= 2 * 3);
    evr_frame *frames[4];
    size_t total = 0;
    evr_status st;
    while ((st = evr_subscriber_next_batch(b, 0, frames, 4, &n)) == EVR_OK) {
        CHECK(n >= 1 && n <= 4);
        for (size_t i = 0; i < n; i++) {
            evr_frame *single = NULL;
            CHECK_STATUS(evr_subscriber_next(a, 0, &single), EVR_OK);
            size_t l1 = 0, l2 = 0;
            const uint8_t *p1 = evr_frame_ws(single, &l1), *p2 = evr_frame_ws(frames[i], &l2);
            CHECK_BYTES(p2, l2, p1, l1);
            evr_frame_free(single);
        }
        total += n;
        evr_frames_free(frames, n);
    }
    CHECK(st == EVR_EMPTY && total == waiting);
    expect_empty(a);
    CHECK(sub_stats(b).read == waiting);

    /* next_iov: the same bytes, pointed to instead of copied. */
    publish_batch_corpus(e, 1);
    for (int ws = 0; ws < 2; ws++) {
        evr_bytes iov[2];
        CHECK_STATUS(evr_subscriber_next_iov(b, 0, ws ? EVR_ENCODING_WS : EVR_ENCODING_SSE, frames, iov, 2, &n),
                     EVR_OK);
        CHECK(n == 2);
        for (size_t i = 0; i < n; i++) {
            evr_frame *single = NULL;
            CHECK_STATUS(evr_subscriber_next(a, 0, &single), EVR_OK);
            size_t len = 0;
            const uint8_t *p = ws ? evr_frame_ws(single, &len) : evr_frame_sse(single, &len);
            CHECK_BYTES(iov[i].ptr, iov[i].len, p, len);
            evr_frame_free(single);
        }
        evr_frames_free(frames, n);
    }
    CHECK_STATUS(evr_subscriber_next_iov(b, 0, EVR_ENCODING_SSE, frames, NULL, 2, &n), EVR_ERR_NULL);
    free(drain_single(a, 0, want_lens, &count).p);
    free(drain_single(b, 0, want_lens, &count).p);

    /* read: SSE and WebSocket bytes in pieces through a small buffer. */
    for (int ws = 0; ws < 2; ws++) {
        publish_batch_corpus(e, 3);
        text want = drain_single(a, ws, want_lens, &count);
        CHECK(count == waiting / 2 * 3);
        size_t cap = 0;
        for (size_t i = 0; i < count; i++) {
            cap = want_lens[i] > cap ? want_lens[i] : cap;
        }
        cap += cap / 2; /* room for one frame, sometimes two */
        text got = {malloc(want.n), 0};
        uint8_t *buf = malloc(cap);
        CHECK(got.p != NULL && buf != NULL);
        size_t frames_read = 0;
        evr_encoding enc = ws ? EVR_ENCODING_WS : EVR_ENCODING_SSE;
        while ((st = evr_subscriber_read(b, 0, enc, buf, cap, got_lens + frames_read, NULL, 3, &n, &bytes, NULL)) == EVR_OK) {
            CHECK(n >= 1 && n <= 3 && bytes <= cap && got.n + bytes <= want.n);
            size_t sum = 0;
            for (size_t i = 0; i < n; i++) {
                CHECK(got_lens[frames_read + i] == want_lens[frames_read + i]);
                sum += got_lens[frames_read + i];
            }
            CHECK(sum == bytes);
            memcpy(got.p + got.n, buf, bytes);
            got.n += bytes;
            frames_read += n;
        }
        CHECK(st == EVR_EMPTY && frames_read == count);
        CHECK_BYTES(got.p, got.n, want.p, want.n);
        free(want.p);
        free(got.p);
        free(buf);
    }

    /* A buffer too small for the oldest frame: its length, nothing taken. */
    publish_batch_corpus(e, 1);
    free(drain_single(a, 0, want_lens, &count).p);
    uint8_t tiny[8];
    n = 77;
    bytes = 0;
    CHECK_STATUS(evr_subscriber_read(b, 0, EVR_ENCODING_SSE, tiny, sizeof tiny, NULL, NULL, 64, &n, &bytes, NULL),
                 EVR_BUFFER_TOO_SMALL);
    CHECK(bytes == want_lens[0] && n == 77);
    CHECK(sub_stats(b).depth == waiting / 2);

    /* Argument errors and the closed outcome. */
    CHECK_STATUS(evr_subscriber_next_batch(b, 0, frames, 0, &n), EVR_ERR_INVALID_CONFIG);
    CHECK_STATUS(evr_subscriber_next_batch(b, 0, NULL, 4, &n), EVR_ERR_NULL);
    CHECK_STATUS(evr_subscriber_next_batch(b, 0, frames, 4, NULL), EVR_ERR_NULL);
    CHECK_STATUS(evr_subscriber_next_batch(NULL, 0, frames, 4, &n), EVR_ERR_NULL);
    CHECK_STATUS(evr_subscriber_read(b, 0, EVR_ENCODING_WS, NULL, 0, NULL, NULL, 4, &n, &bytes, NULL), EVR_ERR_NULL);
    CHECK_STATUS(evr_subscriber_read(b, 0, EVR_ENCODING_WS, tiny, sizeof tiny, NULL, NULL, 0, &n, &bytes, NULL),
                 EVR_ERR_INVALID_CONFIG);
    CHECK_STATUS(evr_subscriber_close(b), EVR_OK);
    CHECK_STATUS(evr_subscriber_next_batch(b, 0, frames, 4, &n), EVR_CLOSED);
    CHECK_STATUS(evr_subscriber_read(b, 5, EVR_ENCODING_SSE, tiny, sizeof tiny, NULL, NULL, 4, &n, &bytes, NULL), EVR_CLOSED);
    evr_frames_free(NULL, 3);
    evr_subscriber_free(a);
    evr_subscriber_free(b);
    evr_engine_free(e);
}

/* The id of the next frame (copied), after checking its payload. */
static text next_id_with_payload(evr_subscriber *s, int payload) {
    evr_frame *f = NULL;
    CHECK_STATUS(evr_subscriber_next(s, 1000, &f), EVR_OK);
    size_t n = 0;
    const uint8_t *p = evr_frame_payload(f, &n);
    char want[16];
    snprintf(want, sizeof want, "%d", payload);
    CHECK_BYTES(p, n, want, strlen(want));
    const uint8_t *id = evr_frame_id(f, &n);
    CHECK(id != NULL && n > 2);
    text t = text_dup((const char *)id, n);
    evr_frame_free(f);
    return t;
}

static evr_status resume(evr_subscriber *s, text id) {
    return evr_subscriber_resume(s, (const uint8_t *)id.p, id.n);
}

struct resume_publisher {
    evr_engine *e;
    int events;
};

static void *publish_in_order(void *arg) {
    struct resume_publisher *job = arg;
    publish_ids(job->e, 1, job->events);
    return NULL;
}

/* SPEC §12: frame ids, event_ids bytes, resume, gaps and bad ids. */
static void test_history_and_resume(void) {
    const char *pub = "{\"stream\":\"public\"}";
    evr_engine *off = engine_new("");
    evr_subscriber *plain = subscriber_new(off, "{\"event_ids\":true}", pub);
    publish_ids(off, 1, 1);
    evr_frame *f = NULL;
    size_t n = 99;
    CHECK_STATUS(evr_subscriber_next(plain, 0, &f), EVR_OK);
    CHECK(evr_frame_id(f, &n) == NULL && n == 0);
    CHECK_BYTES(evr_frame_sse(f, &n), n, "event: delete\ndata: 1\n\n", 23);
    evr_frame_free(f);
    evr_subscriber_free(plain);
    evr_engine_free(off);
    CHECK(evr_frame_id(NULL, &n) == NULL);

    evr_engine *e = engine_new("{\"history\":{\"max_events\":3,\"max_age_s\":60}}");
    evr_subscriber *ided = subscriber_new(e, "{\"event_ids\":true}", pub);
    evr_subscriber *first = subscriber_new(e, "", pub);
    publish_ids(e, 1, 3);
    text id1 = next_id_with_payload(first, 1);
    evr_subscriber_free(first);
    CHECK(strchr(id1.p, ':') != NULL && strcmp(strchr(id1.p, ':'), ":1") == 0);

    /* The event_ids variant, built here from SPEC §12. */
    CHECK_STATUS(evr_subscriber_next(ided, 0, &f), EVR_OK);
    text sse = text_printf("id: %s\nevent: delete\ndata: 1\n\n", id1.p, "", "");
    text ws = text_printf("{\"stream\":[\"public\"],\"event\":\"delete\",\"payload\":\"1\",\"id\":\"%s\"}", id1.p, "", "");
    const uint8_t *bytes = evr_frame_sse(f, &n);
    CHECK_BYTES(bytes, n, sse.p, sse.n);
    bytes = evr_frame_ws(f, &n);
    CHECK_BYTES(bytes, n, ws.p, ws.n);
    evr_frame_free(f);
    /* A batch read copies the same bytes. */
    char buf[256];
    size_t frames_read = 0;
    CHECK_STATUS(evr_subscriber_read(ided, 0, EVR_ENCODING_SSE, (uint8_t *)buf, sizeof buf, NULL, NULL, 1, &frames_read, &n, NULL),
                 EVR_OK);
    text id2 = text_dup(id1.p, id1.n);
    id2.p[id2.n - 1] = '2'; /* "<epoch>:1" -> "<epoch>:2" */
    text sse2 = text_printf("id: %s\nevent: delete\ndata: 2\n\n", id2.p, "", "");
    CHECK(frames_read == 1);
    CHECK_BYTES(buf, n, sse2.p, sse2.n);
    free(sse2.p);
    free(id2.p);

    /* Reconnect: resume from event 1 replays 2 and 3, then 4 comes live. */
    publish_ids(e, 4, 4);
    evr_subscriber *second = subscriber_new(e, "", pub);
    CHECK_STATUS(resume(second, id1), EVR_OK);
    publish_ids(e, 5, 5);
    for (int i = 2; i <= 5; i++) free(next_id_with_payload(second, i).p);
    expect_empty_at(__LINE__, second);
    evr_subscriber_stats st = sub_stats(second);
    CHECK(st.matched == 4 && st.read == 4 && st.depth == 0 && st.dropped == 0);

    /* Max 3 events per channel: event 2 is gone. What is left still comes. */
    evr_subscriber *third = subscriber_new(e, "", pub);
    CHECK_STATUS(resume(third, id1), EVR_GAP);
    for (int i = 3; i <= 5; i++) free(next_id_with_payload(third, i).p);
    evr_engine_stats es;
    CHECK_STATUS(evr_engine_get_stats(e, &es), EVR_OK);
    CHECK(es.history_entries == 3 && es.history_bytes > 0);

    /* Bad input. */
    const char *bad[] = {"", "17", "abc:", ":1", "a b:1", "abc:1:2"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        CHECK_STATUS(evr_subscriber_resume(third, (const uint8_t *)bad[i], strlen(bad[i])), EVR_ERR_INVALID_ID);
        CHECK_CONTAINS(evr_last_error(), "malformed event id");
    }
    CHECK_STATUS(evr_subscriber_resume(third, (const uint8_t *)"\xff:1", 3), EVR_ERR_INVALID_UTF8);
    CHECK_STATUS(evr_subscriber_resume(third, NULL, 3), EVR_ERR_NULL);
    CHECK_STATUS(evr_subscriber_resume(NULL, (const uint8_t *)id1.p, id1.n), EVR_ERR_NULL);
    evr_subscriber_free(third);
    evr_subscriber_free(second);
    evr_subscriber_free(ided);
    evr_engine_free(e);

    /* Reconnects while another thread publishes: every event once, in order. */
    e = engine_new("{\"queue_capacity\":10000,\"history\":{\"max_events\":10000}}");
    evr_subscriber *conn = subscriber_new(e, "", pub);
    struct resume_publisher job = {e, 3000};
    pthread_t t;
    CHECK(pthread_create(&t, NULL, publish_in_order, &job) == 0);
    int next = 1;
    text last = next_id_with_payload(conn, next++);
    for (int round = 0; round < 20 && next <= job.events; round++) {
        for (int i = 0; i < 40 && next <= job.events; i++) {
            free(last.p);
            last = next_id_with_payload(conn, next++);
        }
        evr_subscriber_free(conn);
        conn = subscriber_new(e, "", pub);
        CHECK_STATUS(resume(conn, last), EVR_OK);
    }
    CHECK(pthread_join(t, NULL) == 0);
    while (next <= job.events) {
        free(last.p);
        last = next_id_with_payload(conn, next++);
    }
    expect_empty_at(__LINE__, conn);
    free(last.p);
    evr_subscriber_free(conn);
    evr_engine_free(e);
    free(id1.p);
    free(sse.p);
    free(ws.p);
}

static int ready_set_fd(const evr_ready_set *set) {
    int fd = -1;
    CHECK_STATUS(evr_ready_set_fd(set, &fd), EVR_OK);
    CHECK(fd >= 0);
    return fd;
}

/* Reads s's SSE bytes one frame at a time (the buffer holds one) until a
 * read says the queue was emptied; returns how many frames it took. */
static size_t drain_one_by_one(evr_subscriber *s) {
    uint8_t buf[32];
    size_t frames = 0;
    for (;;) {
        size_t n = 0, bytes = 0;
        int emptied = -1;
        CHECK_STATUS(evr_subscriber_read(s, 0, EVR_ENCODING_SSE, buf, sizeof buf, NULL, NULL, 8, &n, &bytes, &emptied),
                     EVR_OK);
        CHECK(n == 1 && (emptied == 0 || emptied == 1));
        frames++;
        if (emptied) return frames;
    }
}

/* A message's queued_at reaches the host: per frame from a batch read
 * (0 when the message had none), and from a frame handle. */
static void test_queued_at(void) {
    evr_engine *e = engine_new("");
    evr_subscriber *s = subscriber_new(e, "", "{\"stream\":\"public\"}");
    publish_channel(e, "timeline:public", "{\"event\":\"delete\",\"payload\":\"1\",\"queued_at\":1764550000123}");
    publish_channel(e, "timeline:public", "{\"event\":\"delete\",\"payload\":\"2\"}");
    publish_channel(e, "timeline:public", "{\"event\":\"delete\",\"payload\":\"3\",\"queued_at\":-1}");
    publish_channel(e, "timeline:public", "{\"event\":\"delete\",\"payload\":\"4\",\"queued_at\":7}");
    uint8_t buf[512];
    size_t lens[3], n = 0, bytes = 0;
    uint64_t queued[3] = {99, 99, 99};
    CHECK_STATUS(evr_subscriber_read(s, 0, EVR_ENCODING_WS, buf, sizeof buf, lens, queued, 3, &n, &bytes, NULL), EVR_OK);
    CHECK(n == 3 && queued[0] == 1764550000123ULL && queued[1] == 0 && queued[2] == 0);
    evr_frame *f = NULL;
    CHECK_STATUS(evr_subscriber_next(s, 0, &f), EVR_OK);
    CHECK(evr_frame_queued_at(f) == 7);
    CHECK(evr_frame_queued_at(NULL) == 0);
    evr_frame_free(f);
    evr_subscriber_free(s);
    evr_engine_free(e);
}

/* Ready sets: one fd for many subscribers, tokens listed on empty ->
 * non-empty and on close, the drain's emptied flag, attach errors, and a
 * subscriber freed while listed never comes out of take. */
static void test_ready_set(void) {
    evr_engine *e = engine_new("");
    evr_subscriber *subs[3];
    subs[0] = subscriber_new(e, "", "{\"stream\":\"public\"}");
    evr_ready_set *set = NULL, *other = NULL;
    CHECK_STATUS(evr_ready_set_new(NULL), EVR_ERR_NULL);
    CHECK_STATUS(evr_ready_set_new(&set), EVR_OK);
    CHECK_STATUS(evr_ready_set_new(&other), EVR_OK);
    int fd = ready_set_fd(set);
    CHECK(!readable(fd, 0));

    /* Frames that wait before the attach list the token at once. */
    publish_ids(e, 1, 2);
    CHECK_STATUS(evr_subscriber_attach_ready_set(subs[0], set, 10), EVR_OK);
    CHECK(readable(fd, 0));
    for (int i = 1; i < 3; i++) subs[i] = subscriber_new(e, "", "{\"stream\":\"public\"}");
    CHECK_STATUS(evr_subscriber_attach_ready_set(subs[1], set, 20), EVR_OK);
    CHECK_STATUS(evr_subscriber_attach_ready_set(subs[2], set, 30), EVR_OK);

    /* Attach errors name the problem. */
    CHECK_STATUS(evr_subscriber_attach_ready_set(subs[0], other, 11), EVR_ERR_INVALID_CONFIG);
    CHECK_CONTAINS(evr_last_error(), "already attached to a ready set");
    evr_subscriber *lone = subscriber_new(e, "", NULL);
    CHECK_STATUS(evr_subscriber_attach_ready_set(lone, set, 20), EVR_ERR_INVALID_CONFIG);
    CHECK_CONTAINS(evr_last_error(), "token 20 is already attached");
    int own = -1;
    CHECK_STATUS(evr_subscriber_fd(lone, &own), EVR_OK);
    CHECK_STATUS(evr_subscriber_attach_ready_set(lone, other, 1), EVR_ERR_INVALID_CONFIG);
    CHECK_CONTAINS(evr_last_error(), "own readiness fd");
    own = -7;
    CHECK_STATUS(evr_subscriber_fd(subs[0], &own), EVR_ERR_INVALID_CONFIG);
    CHECK(own == -7);
    CHECK_CONTAINS(evr_last_error(), "attached to a ready set");
    CHECK_STATUS(evr_subscriber_attach_ready_set(NULL, set, 1), EVR_ERR_NULL);
    CHECK_STATUS(evr_subscriber_attach_ready_set(lone, NULL, 1), EVR_ERR_NULL);
    evr_subscriber_free(lone);

    uint64_t tokens[4] = {0};
    size_t n = 99;
    CHECK_STATUS(evr_ready_set_take(NULL, tokens, 4, &n), EVR_ERR_NULL);
    CHECK_STATUS(evr_ready_set_take(set, NULL, 4, &n), EVR_ERR_NULL);
    CHECK_STATUS(evr_ready_set_take(set, tokens, 4, NULL), EVR_ERR_NULL);
    CHECK_STATUS(evr_ready_set_take(set, tokens, 0, &n), EVR_ERR_INVALID_CONFIG);
    CHECK_STATUS(evr_ready_set_fd(set, NULL), EVR_ERR_NULL);
    CHECK(n == 99);

    /* Only subs[0] had frames when attached; a publish lists the two others
     * once each, in the order their queues filled. */
    publish_ids(e, 3, 4);
    CHECK_STATUS(evr_ready_set_take(set, tokens, 2, &n), EVR_OK);
    CHECK(n == 2 && tokens[0] == 10 && tokens[1] == 20);
    CHECK(readable(fd, 0));
    CHECK_STATUS(evr_ready_set_take(set, tokens, 4, &n), EVR_OK);
    CHECK(n == 1 && tokens[0] == 30);
    CHECK(!readable(fd, 0));
    CHECK_STATUS(evr_ready_set_take(set, tokens, 4, &n), EVR_OK);
    CHECK(n == 0);

    /* Draining a frame at a time: emptied only with the last frame. */
    CHECK(drain_one_by_one(subs[0]) == 4);
    CHECK(drain_one_by_one(subs[1]) == 2);
    /* subs[2] is only partly drained: its host still owes it a visit, and no
     * new token comes for it while frames are left. */
    uint8_t buf[32];
    size_t bytes = 0;
    int emptied = -1;
    CHECK_STATUS(evr_subscriber_read(subs[2], 0, EVR_ENCODING_SSE, buf, sizeof buf, NULL, NULL, 8, &n, &bytes, &emptied),
                 EVR_OK);
    CHECK(n == 1 && emptied == 0);
    publish_ids(e, 5, 5);
    CHECK_STATUS(evr_ready_set_take(set, tokens, 4, &n), EVR_OK);
    CHECK(n == 2 && tokens[0] == 10 && tokens[1] == 20);
    CHECK(drain_one_by_one(subs[2]) == 2);
    CHECK_STATUS(evr_subscriber_read(subs[2], 0, EVR_ENCODING_SSE, buf, sizeof buf, NULL, NULL, 8, &n, &bytes, NULL),
                 EVR_EMPTY);

    /* Closing an empty subscriber lists it, and its read says closed. */
    CHECK(drain_one_by_one(subs[0]) == 1 && drain_one_by_one(subs[1]) == 1);
    CHECK_STATUS(evr_subscriber_close(subs[1]), EVR_OK);
    CHECK(readable(fd, 0));
    CHECK_STATUS(evr_ready_set_take(set, tokens, 4, &n), EVR_OK);
    CHECK(n == 1 && tokens[0] == 20);
    CHECK_STATUS(evr_subscriber_read(subs[1], 0, EVR_ENCODING_SSE, buf, sizeof buf, NULL, NULL, 8, &n, &bytes, &emptied),
                 EVR_CLOSED);

    /* A subscriber freed while listed never comes out of take; the set's
     * handle may go first, its fd stays with the attached subscribers. */
    publish_ids(e, 6, 6);
    CHECK(readable(fd, 0));
    evr_subscriber_free(subs[0]);
    evr_ready_set_free(set);
    evr_ready_set_free(NULL);
    CHECK(readable(fd, 0)); /* subs[2] is listed */
    evr_subscriber_free(subs[2]);
    evr_subscriber_free(subs[1]);
    evr_ready_set_free(other);
    evr_engine_free(e);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s CORPUS_DIR\n", argv[0]);
        return 2;
    }
    corpus_dir = argv[1];
    setvbuf(stdout, NULL, _IOLBF, 0);
    struct {
        const char *name;
        void (*run)(void);
    } tests[] = {
        {"version and fresh last error", test_version_and_fresh_last_error},
        {"corpus life cycle", test_corpus_life_cycle},
        {"recipients and lists", test_recipients_and_lists},
        {"only_media", test_only_media},
        {"viewer filters", test_viewer_filters},
        {"overflow policies", test_overflow_policies},
        {"error statuses", test_error_statuses},
        {"bad input does not disturb others", test_bad_input_does_not_disturb_others},
        {"4 publishers, 4 drainers", test_threads},
        {"poll readiness", test_poll_readiness},
        {"several readers of one subscriber", test_several_readers},
        {"lifetimes and waiting", test_lifetimes_and_waiting},
        {"batch reads", test_batch_reads},
        {"history and resume", test_history_and_resume},
        {"ready set", test_ready_set},
        {"queued_at", test_queued_at},
    };
    for (size_t i = 0; i < sizeof tests / sizeof *tests; i++) {
        tests[i].run();
        printf("ok %zu - %s\n", i + 1, tests[i].name);
    }
    return 0;
}
