/* Drain cost through the C ABI, in ns per frame (issue 13, point 2).
 *
 * N subscribers on `public`, queues of 64; each round publishes 64 copies of
 * one event (untimed) and then drains every queue with one method (timed):
 *   next    evr_subscriber_next() + evr_frame_free() per frame
 *   batch   evr_subscriber_next_batch(64) + evr_frame_sse() + evr_frames_free()
 *   iov     evr_subscriber_next_iov(64): SSE pointers and lengths, no copy
 *   sse     evr_subscriber_read() of the SSE bytes into a 256 KiB buffer
 *   ws      evr_subscriber_read() of the WebSocket bytes, with lengths
 *   floor   no evroute: per frame, load a pointer from the subscriber's own
 *           ring and drop one reference (an atomic decrement), the least a
 *           handout of shared, reference-counted frames can cost
 * The methods take turns round by round, so they see the same machine load.
 *
 * usage: drain EVENT_JSON_FILE [SUBSCRIBERS=1000] [ROUNDS=20] [METHOD]
 * (METHOD, e.g. `batch`, runs that one alone, for profiling)
 * build: cc -O2 -std=c11 -Iinclude benches/c/drain.c target/release/libevroute.a -lpthread -ldl -lm
 */
#define _POSIX_C_SOURCE 199309L
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "evroute.h"

#define BATCH 64
#define BUF_BYTES (256 * 1024)

static void die(const char *what, evr_status st) {
    fprintf(stderr, "drain: %s: status %d: %s\n", what, (int)st, evr_last_error());
    exit(1);
}

static double now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static unsigned char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (f == NULL || fseek(f, 0, SEEK_END) != 0) {
        perror(path);
        exit(1);
    }
    long size = ftell(f);
    unsigned char *p = malloc((size_t)size);
    if (size <= 0 || p == NULL || fseek(f, 0, SEEK_SET) != 0 || fread(p, 1, (size_t)size, f) != (size_t)size) {
        fprintf(stderr, "drain: cannot read %s\n", path);
        exit(1);
    }
    fclose(f);
    *len = (size_t)size;
    return p;
}

enum { NEXT, BATCHED, IOV, SSE, WS, FLOOR, METHODS };
static const char *const names[METHODS] = {"next", "batch", "iov", "sse", "ws", "floor"};

/* The floor's frames: a reference count and a length, one cache line each. */
typedef struct {
    _Alignas(64) atomic_long refs;
    size_t len;
} floor_frame;

static floor_frame floor_frames[BATCH];

/* One ring of frame pointers per subscriber, allocated one by one. */
static floor_frame ***floor_rings;

static void floor_publish(size_t subscribers) {
    for (int e = 0; e < BATCH; e++) {
        atomic_fetch_add_explicit(&floor_frames[e].refs, (long)subscribers, memory_order_relaxed);
        for (size_t i = 0; i < subscribers; i++) floor_rings[i][e] = &floor_frames[e];
    }
}

static size_t floor_drain(floor_frame **ring, size_t *bytes) {
    for (int e = 0; e < BATCH; e++) {
        *bytes += ring[e]->len;
        atomic_fetch_sub_explicit(&ring[e]->refs, 1, memory_order_release);
    }
    return BATCH;
}

/* Drains one subscriber with one method; returns frames taken and adds the
 * bytes seen (so no method can skip touching them). */
static size_t drain_one(evr_subscriber *s, int method, unsigned char *buf, size_t *lens, size_t *bytes,
                        size_t *copied) {
    size_t frames = 0, n = 0, got = 0;
    evr_frame *batch[BATCH];
    evr_bytes iov[BATCH];
    evr_status st;
    switch (method) {
    case FLOOR:
        return 0;
    case NEXT:
        while ((st = evr_subscriber_next(s, 0, &batch[0])) == EVR_OK) {
            size_t len = 0;
            *bytes += evr_frame_sse(batch[0], &len)[0] + len;
            evr_frame_free(batch[0]);
            frames++;
        }
        break;
    case BATCHED:
        while ((st = evr_subscriber_next_batch(s, 0, batch, BATCH, &n)) == EVR_OK) {
            for (size_t i = 0; i < n; i++) {
                size_t len = 0;
                *bytes += evr_frame_sse(batch[i], &len)[0] + len;
            }
            evr_frames_free(batch, n);
            frames += n;
        }
        break;
    case IOV:
        while ((st = evr_subscriber_next_iov(s, 0, EVR_ENCODING_SSE, batch, iov, BATCH, &n)) == EVR_OK) {
            for (size_t i = 0; i < n; i++) *bytes += iov[i].ptr[0] + iov[i].len;
            evr_frames_free(batch, n);
            frames += n;
        }
        break;
    default:
        while ((st = evr_subscriber_read(s, 0, method == SSE ? EVR_ENCODING_SSE : EVR_ENCODING_WS, buf, BUF_BYTES,
                                         method == WS ? lens : NULL, NULL, BATCH, &n, &got, NULL)) == EVR_OK) {
            *bytes += buf[got - 1];
            *copied += got;
            frames += n;
        }
    }
    if (st != EVR_EMPTY) {
        die(names[method], st);
    }
    return frames;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s EVENT_JSON_FILE [SUBSCRIBERS] [ROUNDS]\n", argv[0]);
        return 2;
    }
    size_t event_len = 0;
    unsigned char *event = read_file(argv[1], &event_len);
    size_t subscribers = argc > 2 ? (size_t)strtoul(argv[2], NULL, 10) : 1000;
    int rounds = argc > 3 ? atoi(argv[3]) : 20;
    int only = -1;
    for (int m = 0; argc > 4 && m < METHODS; m++) {
        if (strcmp(argv[4], names[m]) == 0) only = m;
    }
    if (subscribers == 0 || rounds <= 0 || (argc > 4 && only < 0)) {
        fprintf(stderr, "drain: SUBSCRIBERS and ROUNDS must be positive\n");
        return 2;
    }
    const char config[] = "{\"queue_capacity\":64}";
    evr_engine *engine = NULL;
    evr_status st = evr_engine_new((const uint8_t *)config, sizeof config - 1, &engine);
    if (st != EVR_OK) die("engine", st);
    evr_subscriber **subs = calloc(subscribers, sizeof *subs);
    unsigned char *buf = malloc(BUF_BYTES);
    size_t *lens = malloc(BATCH * sizeof *lens);
    if (subs == NULL || buf == NULL || lens == NULL) die("out of memory", EVR_OK);
    floor_rings = calloc(subscribers, sizeof *floor_rings);
    if (floor_rings == NULL) die("out of memory", EVR_OK);
    for (size_t i = 0; i < subscribers; i++) {
        if ((floor_rings[i] = calloc(BATCH, sizeof **floor_rings)) == NULL) die("out of memory", EVR_OK);
    }
    for (int e = 0; e < BATCH; e++) floor_frames[e].len = event_len;
    const char sub[] = "{\"stream\":\"public\"}";
    for (size_t i = 0; i < subscribers; i++) {
        if ((st = evr_subscriber_new(engine, NULL, 0, &subs[i])) != EVR_OK) die("subscriber", st);
        if ((st = evr_subscribe(subs[i], (const uint8_t *)sub, sizeof sub - 1)) != EVR_OK) die("subscribe", st);
    }
    double ns[METHODS] = {0};
    size_t frames[METHODS] = {0}, copied[METHODS] = {0};
    size_t seen = 0;
    for (int r = 0; r <= rounds; r++) {
        for (int m = 0; m < METHODS; m++) {
            if (only >= 0 && m != only) continue;
            evr_publish_stats ps;
            for (int e = 0; e < BATCH && m != FLOOR; e++) {
                if ((st = evr_publish(engine, event, event_len, &ps)) != EVR_OK) die("publish", st);
                if (ps.delivered != subscribers) die("publish: the event does not reach `public`", EVR_OK);
            }
            if (m == FLOOR) floor_publish(subscribers);
            size_t taken = 0, b = 0, c = 0;
            double start = now_ns();
            for (size_t i = 0; i < subscribers; i++) {
                taken += m == FLOOR ? floor_drain(floor_rings[i], &b) : drain_one(subs[i], m, buf, lens, &b, &c);
            }
            double took = now_ns() - start;
            if (taken != subscribers * BATCH) die("a frame went missing", EVR_OK);
            seen += b;
            if (r > 0) { /* round 0 warms up */
                ns[m] += took;
                frames[m] += taken;
                copied[m] += c;
            }
        }
    }
    printf("drain through the C ABI: %zu subscribers, %d rounds of %d frames each, event of %zu bytes\n",
           subscribers, rounds, BATCH, event_len);
    for (int m = 0; m < METHODS; m++) {
        if (frames[m] == 0) continue;
        double per = ns[m] / (double)frames[m];
        printf("%-6s %8.1f ns/frame", names[m], per);
        if (frames[NEXT] > 0) printf("  %6.2fx next", (ns[NEXT] / (double)frames[NEXT]) / per);
        if (frames[FLOOR] > 0 && m != FLOOR) printf("  %6.2fx floor", per / (ns[FLOOR] / (double)frames[FLOOR]));
        if (m == SSE || m == WS) printf("  %5.2f GB/s copied", (double)copied[m] / ns[m]);
        printf("\n");
    }
    for (size_t i = 0; i < subscribers; i++) {
        evr_subscriber_free(subs[i]);
        free(floor_rings[i]);
    }
    free(floor_rings);
    evr_engine_free(engine);
    free(subs);
    free(buf);
    free(lens);
    free(event);
    return seen == 0; /* keeps the touched bytes alive */
}
