/* evroute from C: reads NDJSON events on stdin and prints, for each
 * subscriber, the SSE frames it receives.
 *
 *   example SUBSCRIBER_JSON SUBSCRIPTION_JSON [SUBSCRIBER_JSON SUBSCRIPTION_JSON ...]
 *
 * Each pair makes one subscriber, numbered from 1 in argument order. Every
 * frame is printed as an SSE comment naming its subscriber, then the SSE
 * bytes, so the output is itself a valid SSE stream. A bad input line is
 * reported on stderr as "stdin:LINE: reason"; the exit status is then 1.
 *
 * Build (see the C ABI section of the README):
 *   cargo build --release
 *   cc -std=c99 -Wall -Wextra -Werror -Iinclude bindings/c/example.c \
 *      target/release/libevroute.a -lpthread -ldl -lm -o example
 */
#define _POSIX_C_SOURCE 200809L
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "evroute.h"

static int fail(const char *what) {
    fprintf(stderr, "example: %s: %s\n", what, evr_last_error());
    return 2;
}

/* Writes every frame waiting for subscriber `n`. */
static int drain(evr_subscriber *sub, int n) {
    evr_frame *frame;
    evr_status st;
    while ((st = evr_subscriber_next(sub, 0, &frame)) == EVR_OK) {
        size_t len;
        const uint8_t *sse = evr_frame_sse(frame, &len);
        printf(": subscriber %d\n", n);
        fwrite(sse, 1, len, stdout);
        evr_frame_free(frame);
    }
    if (st == EVR_CLOSED) fprintf(stderr, "subscriber %d closed: %s\n", n, evr_subscriber_closed(sub));
    return st == EVR_EMPTY || st == EVR_CLOSED ? 0 : -1;
}

int main(int argc, char **argv) {
    if (argc < 3 || argc % 2 == 0) {
        fprintf(stderr, "usage: %s SUBSCRIBER_JSON SUBSCRIPTION_JSON [...]\n", argv[0]);
        return 2;
    }
    int count = (argc - 1) / 2, status = 0;
    evr_engine *engine = NULL;
    if (evr_engine_new(NULL, 0, &engine) != EVR_OK) return fail("engine");
    evr_subscriber **subs = calloc((size_t)count, sizeof *subs);
    struct pollfd *fds = calloc((size_t)count, sizeof *fds);
    if (subs == NULL || fds == NULL) return 2;
    for (int i = 0; i < count; i++) {
        const char *options = argv[1 + 2 * i], *subscription = argv[2 + 2 * i];
        if (evr_subscriber_new(engine, (const uint8_t *)options, strlen(options), &subs[i]) != EVR_OK)
            return fail(options);
        if (evr_subscribe(subs[i], (const uint8_t *)subscription, strlen(subscription)) != EVR_OK)
            return fail(subscription);
        /* A real server adds these fds to its event loop. */
        if (evr_subscriber_fd(subs[i], &fds[i].fd) != EVR_OK) return fail("readiness fd");
        fds[i].events = POLLIN;
    }

    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    for (long lineno = 1; (len = getline(&line, &cap, stdin)) > 0; lineno++) {
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) len--;
        if (len == 0) continue;
        if (evr_publish(engine, (const uint8_t *)line, (size_t)len, NULL) != EVR_OK) {
            fprintf(stderr, "stdin:%ld: %s\n", lineno, evr_last_error());
            status = 1;
            continue;
        }
        /* Only subscribers whose fd is readable have frames waiting. */
        if (poll(fds, (nfds_t)count, 0) < 0) return 2;
        for (int i = 0; i < count; i++) {
            if ((fds[i].revents & POLLIN) && drain(subs[i], i + 1) != 0) return fail("next");
        }
    }
    free(line);
    for (int i = 0; i < count; i++) evr_subscriber_free(subs[i]);
    evr_engine_free(engine);
    free(subs);
    free(fds);
    return status;
}
