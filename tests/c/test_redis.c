/* C ABI tests of the Redis scale-out (cargo feature `redis`, SPEC §9)
 * against a real redis-server. Usage: test_redis PORT
 * (run by scripts/test.d/65-redis-c.sh, which starts the server; redis-cli
 * must be on PATH). Build with -DEVR_FEATURE_REDIS. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <time.h>

#include "check.h"

#ifndef EVR_FEATURE_REDIS
#error "build with -DEVR_FEATURE_REDIS against a library built with --features redis"
#endif

#define NS "evrtest"

static const char *port;

static void sleep_ms(long ms) {
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&t, NULL);
}

/* Runs `redis-cli -p PORT ARGS` and returns the first line of its output. */
static void redis_cli(const char *args, char *reply, size_t size) {
    char command[1024];
    snprintf(command, sizeof command, "redis-cli -p %s %s", port, args);
    FILE *p = popen(command, "r");
    CHECK(p != NULL);
    if (fgets(reply, (int)size, p) == NULL) reply[0] = '\0';
    reply[strcspn(reply, "\r\n")] = '\0';
    CHECK(pclose(p) == 0);
}

/* Waits for the next frame and checks its WebSocket bytes. */
static void expect_ws(evr_subscriber *sub, const char *want) {
    evr_frame *frame = NULL;
    CHECK_STATUS(evr_subscriber_next(sub, 5000, &frame), EVR_OK);
    size_t len = 0;
    const uint8_t *ws = evr_frame_ws(frame, &len);
    CHECK_BYTES(ws, len, want, strlen(want));
    evr_frame_free(frame);
}

static long long now_ms(void) {
    struct timespec t;
    CHECK(clock_gettime(CLOCK_MONOTONIC, &t) == 0);
    return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* What the log callback saw; it runs on the node's threads. Each of the
 * node's connections ("redis ingest ...", "redis presence ...") logs its own
 * failures: repeat_ms is the gap between the first two records of one. */
#define LOG_SOURCES 4
struct log_seen {
    pthread_mutex_t lock;
    int records;
    int sources;
    char source[LOG_SOURCES][64];     /* a message up to "connection failed" */
    long long source_ms[LOG_SOURCES]; /* when that source last logged */
    long long repeat_ms;              /* -1 until a source logged twice */
    evr_log_level level;
    char target[64];
    char message[512];
};

static void on_log(void *user_data, evr_log_level level, const char *target, const char *message) {
    struct log_seen *seen = user_data;
    long long now = now_ms();
    pthread_mutex_lock(&seen->lock);
    seen->records++;
    seen->level = level;
    snprintf(seen->target, sizeof seen->target, "%s", target);
    snprintf(seen->message, sizeof seen->message, "%s", message);
    const char *cut = strstr(message, "connection failed");
    size_t len = cut != NULL ? (size_t)(cut - message) : 0;
    if (cut != NULL && len < sizeof seen->source[0]) {
        int i = 0;
        while (i < seen->sources && !(strncmp(seen->source[i], message, len) == 0 && seen->source[i][len] == '\0')) i++;
        if (i < seen->sources) {
            if (seen->repeat_ms < 0) seen->repeat_ms = now - seen->source_ms[i];
            seen->source_ms[i] = now;
        } else if (i < LOG_SOURCES) {
            snprintf(seen->source[i], sizeof seen->source[i], "%.*s", (int)len, message);
            seen->source_ms[i] = now;
            seen->sources++;
        }
    }
    pthread_mutex_unlock(&seen->lock);
}

static int log_records(struct log_seen *seen) {
    pthread_mutex_lock(&seen->lock);
    int n = seen->records;
    pthread_mutex_unlock(&seen->lock);
    return n;
}

/* A node on an unreachable Redis logs its failure through the callback (from
 * its own thread); after the callback is removed nothing more arrives. */
static void test_log_callback(void) {
    static struct log_seen seen = {.lock = PTHREAD_MUTEX_INITIALIZER, .repeat_ms = -1, .level = EVR_LOG_OFF};
    CHECK_STATUS(evr_set_log_callback(6, on_log, &seen), EVR_ERR_INVALID_CONFIG);
    CHECK_CONTAINS(evr_last_error(), "level 6");
    CHECK_STATUS(evr_set_log_callback(EVR_LOG_WARN, on_log, &seen), EVR_OK);

    evr_engine *engine;
    CHECK_STATUS(evr_engine_new(NULL, 0, &engine), EVR_OK);
    const char *nowhere = "redis://127.0.0.1:1/";
    const char *fast = "{\"backoff_min_ms\":20,\"backoff_max_ms\":20,\"poll_interval_ms\":10}";
    evr_redis_node *node;
    CHECK_STATUS(evr_redis_node_attach(engine, (const uint8_t *)nowhere, strlen(nowhere), (const uint8_t *)fast,
                                       strlen(fast), &node),
                 EVR_OK);
    for (int i = 0; i < 500 && log_records(&seen) == 0; i++) sleep_ms(10);
    pthread_mutex_lock(&seen.lock);
    CHECK(seen.records > 0);
    CHECK(seen.level == EVR_LOG_WARN);
    CHECK(strncmp(seen.target, "evroute", 7) == 0);
    CHECK_CONTAINS(seen.message, "connection failed");
    pthread_mutex_unlock(&seen.lock);

    /* Failures keep coming every 20 ms and every tenth is logged: wait for a
     * connection to log again, so the silence below means something, and take
     * the interval between its two records. */
    long long interval = -1;
    for (int i = 0; i < 2500 && interval < 0; i++) {
        sleep_ms(2);
        pthread_mutex_lock(&seen.lock);
        interval = seen.repeat_ms;
        pthread_mutex_unlock(&seen.lock);
    }
    CHECK(interval >= 0);

    /* Once this returns the callback is not running and is never called again.
     * Watch for at least three intervals (at least 300 ms, at most 2 s). */
    CHECK_STATUS(evr_set_log_callback(EVR_LOG_TRACE, NULL, NULL), EVR_OK);
    int before = log_records(&seen);
    long long watch = 3 * interval;
    if (watch < 300) watch = 300;
    if (watch > 2000) watch = 2000;
    fprintf(stderr, "test_log_callback: records %lld ms apart; watching %lld ms\n", interval, watch);
    sleep_ms((long)watch);
    CHECK(log_records(&seen) == before);
    evr_redis_node_free(node);
    evr_engine_free(engine);
}

static const char STATUS[] =
    "{\"id\":\"9\",\"visibility\":\"public\",\"reblog\":null,\"in_reply_to_account_id\":null,"
    "\"language\":\"en\",\"account\":{\"id\":\"3\",\"acct\":\"bob\"},"
    "\"tags\":[{\"name\":\"Rust\"}],\"media_attachments\":[]}";

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: test_redis PORT\n");
        return 2;
    }
    port = argv[1];
    char url[128], reply[256];
    snprintf(url, sizeof url, "redis://127.0.0.1:%s/", port);
    const uint8_t *u = (const uint8_t *)url;
    size_t ulen = strlen(url);

    static const char config[] = "{\"redis_namespace\":\"" NS "\"}";
    evr_engine *engine = NULL;
    CHECK_STATUS(evr_engine_new((const uint8_t *)config, strlen(config), &engine), EVR_OK);
    evr_subscriber *sub = NULL;
    CHECK_STATUS(evr_subscriber_new(engine, NULL, 0, &sub), EVR_OK);
    static const char subscription[] = "{\"stream\":\"hashtag\",\"tag\":\"Rust\"}";
    CHECK_STATUS(evr_subscribe(sub, (const uint8_t *)subscription, strlen(subscription)), EVR_OK);

    /* Argument errors: nothing is written to *out. */
    evr_redis_node *node = NULL;
    static const char unknown[] = "{\"presence_ttl\":5}";
    CHECK_STATUS(evr_redis_node_attach(engine, u, ulen, (const uint8_t *)unknown, strlen(unknown), &node),
                 EVR_ERR_INVALID_CONFIG);
    CHECK_CONTAINS(evr_last_error(), "presence_ttl");
    CHECK_STATUS(evr_redis_node_attach(engine, u, ulen, NULL, 0, NULL), EVR_ERR_NULL);
    CHECK_STATUS(evr_redis_node_attach(NULL, u, ulen, NULL, 0, &node), EVR_ERR_NULL);
    CHECK(node == NULL);
    evr_redis_node_free(NULL);

    static const char options[] = "{\"presence_ttl_secs\":5,\"presence_refresh_secs\":1,\"poll_interval_ms\":20}";
    CHECK_STATUS(evr_redis_node_attach(engine, u, ulen, (const uint8_t *)options, strlen(options), &node), EVR_OK);
    CHECK_STATUS(evr_redis_node_wait_subscribed(node, 5000), EVR_OK);

    /* The presence key of the subscriber's channel, namespace first. */
    int present = 0;
    for (int i = 0; i < 100 && !present; i++) {
        redis_cli("EXISTS " NS ":subscribed:timeline:hashtag:rust", reply, sizeof reply);
        present = strcmp(reply, "1") == 0;
        if (!present) sleep_ms(20);
    }
    CHECK(present);
    redis_cli("TTL " NS ":subscribed:timeline:hashtag:rust", reply, sizeof reply);
    CHECK(atoi(reply) >= 1 && atoi(reply) <= 5);

    /* A message published by someone else (here redis-cli) reaches the subscriber. */
    /* One node subscribed. Under valgrind a signal can interrupt the node's
     * read (EINTR), and it reconnects; a PUBLISH in that gap reaches nobody,
     * so wait for the node and publish again. */
    for (int i = 0; i < 50; i++) {
        CHECK_STATUS(evr_redis_node_wait_subscribed(node, 5000), EVR_OK);
        redis_cli("PUBLISH " NS ":timeline:hashtag:rust '{\"event\":\"delete\",\"payload\":\"4242\"}'", reply,
                  sizeof reply);
        if (strcmp(reply, "1") == 0) break;
        sleep_ms(50);
    }
    CHECK(strcmp(reply, "1") == 0);
    expect_ws(sub, "{\"stream\":[\"hashtag\",\"Rust\"],\"event\":\"delete\",\"payload\":\"4242\"}");

    /* The publisher: content mode derives the channels (hashtag, hashtag:local,
     * public, public:local: a local public status with one tag). */
    evr_redis_publisher *publisher = NULL;
    CHECK_STATUS(evr_redis_publisher_new((const uint8_t *)"redis://127.0.0.1:1/", 20, NULL, 0, &publisher),
                 EVR_ERR_IO);
    CHECK(publisher == NULL);
    CHECK_STATUS(evr_redis_publisher_new(u, ulen, (const uint8_t *)NS, strlen(NS), &publisher), EVR_OK);
    char event[1024];
    snprintf(event, sizeof event, "{\"event\":\"update\",\"payload\":%s}", STATUS);
    evr_redis_published published = {0, 0};
    CHECK_STATUS(evr_redis_publish(publisher, (const uint8_t *)event, strlen(event), &published), EVR_OK);
    CHECK(published.channels == 4 && published.receivers == 4);
    evr_frame *frame = NULL;
    CHECK_STATUS(evr_subscriber_next(sub, 5000, &frame), EVR_OK);
    size_t len = 0;
    const uint8_t *bytes = evr_frame_payload(frame, &len);
    CHECK_BYTES(bytes, len, STATUS, strlen(STATUS)); /* passed through byte for byte */
    bytes = evr_frame_sse(frame, &len);
    char sse[1024];
    snprintf(sse, sizeof sse, "event: update\ndata: %s\n\n", STATUS);
    CHECK_BYTES(bytes, len, sse, strlen(sse));
    evr_frame_free(frame);

    /* Bad input is refused before anything is published. */
    static const char bad_json[] = "{\"event\":\"update\",";
    CHECK_STATUS(evr_redis_publish(publisher, (const uint8_t *)bad_json, strlen(bad_json), NULL),
                 EVR_ERR_INVALID_JSON);
    static const char bad_channel[] = "timeline:nope:1";
    static const char message[] = "{\"event\":\"delete\",\"payload\":\"9\"}";
    CHECK_STATUS(evr_redis_publish_channel(publisher, (const uint8_t *)bad_channel, strlen(bad_channel),
                                           (const uint8_t *)message, strlen(message), NULL),
                 EVR_ERR_INVALID_CHANNEL);
    CHECK_STATUS(evr_subscriber_next(sub, 200, &frame), EVR_TIMEOUT);

    /* The node keeps the routing domain alive after its engine handle is freed. */
    evr_engine_free(engine);
    static const char channel[] = "timeline:hashtag:rust";
    CHECK_STATUS(evr_redis_publish_channel(publisher, (const uint8_t *)channel, strlen(channel),
                                           (const uint8_t *)message, strlen(message), &published),
                 EVR_OK);
    CHECK(published.channels == 1 && published.receivers == 1);
    expect_ws(sub, "{\"stream\":[\"hashtag\",\"Rust\"],\"event\":\"delete\",\"payload\":\"9\"}");

    /* 1 from redis-cli, 4 content-mode channels, 1 channel mode. The count
     * is raised just after the engine delivered, so it may lag the frame. */
    evr_redis_node_stats stats;
    for (int i = 0; i < 100; i++) {
        CHECK_STATUS(evr_redis_node_get_stats(node, &stats), EVR_OK);
        if (stats.received >= 6) break;
        sleep_ms(10);
    }
    if (stats.received != 6) fprintf(stderr, "received %llu\n", (unsigned long long)stats.received);
    CHECK(stats.received == 6);
    CHECK(stats.rejected == 0 && stats.presence_keys == 1);

    /* Stop is idempotent; afterwards nothing more is received. */
    CHECK_STATUS(evr_redis_node_stop(node), EVR_OK);
    CHECK_STATUS(evr_redis_node_stop(node), EVR_OK);
    CHECK_STATUS(evr_redis_node_wait_subscribed(node, 1000), EVR_CLOSED);
    CHECK_STATUS(evr_redis_publish_channel(publisher, (const uint8_t *)channel, strlen(channel),
                                           (const uint8_t *)message, strlen(message), NULL),
                 EVR_OK);
    CHECK_STATUS(evr_subscriber_next(sub, 300, &frame), EVR_TIMEOUT);
    CHECK_STATUS(evr_redis_node_get_stats(node, &stats), EVR_OK);
    CHECK(stats.received == 6);

    evr_redis_node_free(node);
    evr_redis_publisher_free(publisher);
    evr_subscriber_free(sub);

    /* Free without stop also stops: a second node is freed while subscribed. */
    CHECK_STATUS(evr_engine_new(NULL, 0, &engine), EVR_OK);
    CHECK_STATUS(evr_redis_node_attach(engine, u, ulen, NULL, 0, &node), EVR_OK);
    CHECK_STATUS(evr_redis_node_wait_subscribed(node, 5000), EVR_OK);
    evr_redis_node_free(node);
    evr_engine_free(engine);
    /* Its connection is closed: Redis sees the pattern go (soon; it handles
     * the disconnect asynchronously). */
    int gone = 0;
    for (int i = 0; i < 100 && !gone; i++) {
        redis_cli("PUBSUB NUMPAT", reply, sizeof reply);
        gone = strcmp(reply, "0") == 0;
        if (!gone) sleep_ms(20);
    }
    CHECK(gone);

    test_log_callback();
    puts("C Redis ABI tests passed");
    return 0;
}
