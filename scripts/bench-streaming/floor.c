/* The floor of BENCHMARKS.md's streaming benchmark: the least a streaming
 * server can do. It writes every Redis message, as an SSE frame, to the
 * connections it is for: no authentication, no parsing beyond Redis' framing
 * and the request's token, one write per connection per Redis read.
 *
 *   cc -O2 -Wall -Wextra -Werror -o floor floor.c
 *   ./floor PORT REDIS_PORT CHANNEL             # every message to every connection
 *   ./floor PORT REDIS_PORT PREFIX BASE         # each connection its own channel
 *
 * The first form SUBSCRIBEs CHANNEL (`public`). The second (`user` and home
 * feed) SUBSCRIBEs PREFIX<BASE+n> for a connection whose request carries the
 * token "benchtok<n>" (the load generator's seed tokens) and writes that
 * channel's messages to that connection only.
 *
 * Any GET gets "HTTP/1.1 200", ":)\n", then "event: update\ndata: <message>\n\n"
 * per Redis message, until the client goes away. Linux only (epoll). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

struct conn {
    int fd;
    size_t index;           /* in conns */
    int streaming;          /* the response head was sent */
    char *pending;          /* bytes a full socket did not take */
    size_t npending;
    long token;             /* per-connection channels: n of benchtok<n>; else -1 */
    char *out;              /* per-connection channels: this read's frames */
    size_t nout, capout;
};

static struct conn **conns;
static size_t nconns, capconns;

static void die(const char *what) {
    perror(what);
    exit(1);
}

static int ep;
/* Dropped connections are freed after the current batch of events, which
 * may still name them. */
static struct conn **dead;
static size_t ndead;

/* Per-connection channels: the connection of each token, and the
 * connections that got frames in the current Redis read. */
static struct conn **by_token;
static size_t ntokens;
static struct conn **dirty;
static size_t ndirty, capdirty;

static void drop(struct conn *c) {
    size_t i = c->index;
    close(c->fd);
    c->fd = -1;
    if (c->token >= 0 && by_token[c->token] == c) by_token[c->token] = NULL;
    conns[i] = conns[--nconns];
    conns[i]->index = i;
    dead = realloc(dead, (ndead + 1) * sizeof *dead);
    dead[ndead++] = c;
}

/* Asks for EPOLLOUT exactly while bytes are pending. */
static void watch(struct conn *c) {
    struct epoll_event ev = {.events = EPOLLIN | (c->npending ? EPOLLOUT : 0), .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

/* Writes what is pending, then buf; keeps what the socket does not take.
 * Returns -1 when the connection is gone. */
static int send_all(struct conn *c, const char *buf, size_t len) {
    if (c->npending) {
        char *joined = realloc(c->pending, c->npending + len);
        if (!joined) die("realloc");
        memcpy(joined + c->npending, buf, len);
        c->pending = joined;
        c->npending += len;
        buf = c->pending;
        len = c->npending;
    }
    ssize_t n = write(c->fd, buf, len);
    if (n < 0) {
        if (errno != EAGAIN) return -1;
        n = 0;
    }
    size_t rest = len - (size_t)n;
    if (rest && buf != c->pending) {
        c->pending = malloc(rest);
        if (!c->pending) die("malloc");
        memcpy(c->pending, buf + n, rest);
    } else if (rest) {
        memmove(c->pending, c->pending + n, rest);
    } else {
        free(c->pending);
        c->pending = NULL;
    }
    if ((rest != 0) != (c->npending != 0)) {
        c->npending = rest;
        watch(c);
    }
    c->npending = rest;
    return 0;
}

/* Parses one RESP bulk string at *p; returns its start or NULL if incomplete. */
static const char *bulk(const char **p, const char *end, size_t *len) {
    const char *s = *p;
    if (s >= end || *s != '$') return NULL;
    const char *crlf = memmem(s, (size_t)(end - s), "\r\n", 2);
    if (!crlf) return NULL;
    long n = strtol(s + 1, NULL, 10);
    const char *data = crlf + 2;
    if (n < 0 || data + n + 2 > end) return NULL;
    *len = (size_t)n;
    *p = data + n + 2;
    return data;
}

/* An SSE frame of msg at dst: ml + 22 bytes. */
static void frame(char *dst, const char *msg, size_t ml) {
    memcpy(dst, "event: update\ndata: ", 20);
    memcpy(dst + 20, msg, ml);
    memcpy(dst + 20 + ml, "\n\n", 2);
}

/* Per-connection channels: finds benchtok<n> in the request, registers the
 * connection as token n's and SUBSCRIBEs PREFIX<BASE+n>. -1 without a token. */
static int subscribe_token(struct conn *c, const char *req, size_t len, int rfd, const char *prefix, long base) {
    const char *t = memmem(req, len, "benchtok", 8);
    if (!t) return -1;
    char *after;
    long n = strtol(t + 8, &after, 10);
    if (after == t + 8 || n < 0 || n >= 1 << 24) return -1;
    if ((size_t)n >= ntokens) {
        size_t grown = ((size_t)n + 1) * 2;
        by_token = realloc(by_token, grown * sizeof *by_token);
        if (!by_token) die("realloc");
        memset(by_token + ntokens, 0, (grown - ntokens) * sizeof *by_token);
        ntokens = grown;
    }
    by_token[n] = c;
    c->token = n;
    char chan[256], cmd[512];
    int cl = snprintf(chan, sizeof chan, "%s%ld", prefix, base + n);
    int k = snprintf(cmd, sizeof cmd, "*2\r\n$9\r\nSUBSCRIBE\r\n$%d\r\n%s\r\n", cl, chan);
    /* A few dozen bytes to a socket that is only read from: it has room. */
    if (write(rfd, cmd, (size_t)k) != k) die("subscribe");
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 4 && argc != 5) {
        fprintf(stderr, "usage: %s PORT REDIS_PORT CHANNEL | PORT REDIS_PORT PREFIX BASE\n", argv[0]);
        return 2;
    }
    const char *prefix = argc == 5 ? argv[3] : NULL;
    long base = argc == 5 ? atol(argv[4]) : 0;
    size_t prefixlen = prefix ? strlen(prefix) : 0;
    signal(SIGPIPE, SIG_IGN);
    int one = 1;
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    addr.sin_port = htons((unsigned short)atoi(argv[1]));
    if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) || listen(lfd, 4096)) die("listen");

    int rfd = socket(AF_INET, SOCK_STREAM, 0);
    addr.sin_port = htons((unsigned short)atoi(argv[2]));
    if (connect(rfd, (struct sockaddr *)&addr, sizeof addr)) die("connect to redis");
    char cmd[512];
    int n;
    if (!prefix) {
        n = snprintf(cmd, sizeof cmd, "*2\r\n$9\r\nSUBSCRIBE\r\n$%zu\r\n%s\r\n", strlen(argv[3]), argv[3]);
        if (write(rfd, cmd, (size_t)n) != n) die("subscribe");
    }
    fcntl(rfd, F_SETFL, O_NONBLOCK);

    static struct conn listener, redis; /* markers for epoll's data.ptr */
    listener.fd = lfd;
    redis.fd = rfd;
    ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &listener};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    ev.data.ptr = &redis;
    epoll_ctl(ep, EPOLL_CTL_ADD, rfd, &ev);

    size_t cap = 1 << 20, used = 0, outcap = 1 << 20;
    char *in = malloc(cap), *out = malloc(outcap);
    static const char head[] = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                               "Cache-Control: no-store\r\nConnection: close\r\n\r\n:)\n";
    struct epoll_event events[256];
    for (;;) {
        for (; ndead; ndead--) {
            free(dead[ndead - 1]->pending);
            free(dead[ndead - 1]->out);
            free(dead[ndead - 1]);
        }
        int k = epoll_wait(ep, events, 256, -1);
        for (int e = 0; e < k; e++) {
            struct conn *ec = events[e].data.ptr;
            if (ec->fd < 0) continue;
            if (ec == &listener) {
                int c;
                while ((c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    if (nconns == capconns) {
                        capconns = capconns ? capconns * 2 : 1024;
                        conns = realloc(conns, capconns * sizeof *conns);
                    }
                    struct conn *cn = calloc(1, sizeof *cn);
                    cn->fd = c;
                    cn->token = -1;
                    cn->index = nconns;
                    conns[nconns++] = cn;
                    struct epoll_event cev = {.events = EPOLLIN, .data.ptr = cn};
                    epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev);
                }
            } else if (ec == &redis) {
                ssize_t r;
                while ((r = read(rfd, in + used, cap - used)) > 0) {
                    used += (size_t)r;
                    if (used == cap) in = realloc(in, cap *= 2);
                }
                if (r == 0) {
                    fprintf(stderr, "redis closed the connection\n");
                    return 1;
                }
                /* Every complete "message" push becomes a frame in out. */
                size_t outlen = 0;
                const char *p = in, *end = in + used;
                while (p < end && *p == '*') {
                    const char *q = memmem(p, (size_t)(end - p), "\r\n", 2);
                    if (!q) break;
                    const char *cur = q + 2;
                    size_t kl, cl, ml;
                    const char *kind = bulk(&cur, end, &kl);
                    const char *chan = kind ? bulk(&cur, end, &cl) : NULL;
                    if (!chan) break;
                    if (kl == 9 && !memcmp(kind, "subscribe", 9)) { /* the reply: an integer */
                        const char *nl = memmem(cur, (size_t)(end - cur), "\r\n", 2);
                        if (!nl) break;
                        p = nl + 2;
                        continue;
                    }
                    const char *msg = bulk(&cur, end, &ml);
                    if (!msg) break;
                    p = cur;
                    if (prefix) {
                        /* PREFIX<BASE+n> goes to the connection of token n. */
                        if (cl <= prefixlen || memcmp(chan, prefix, prefixlen)) continue;
                        long t = strtol(chan + prefixlen, NULL, 10) - base;
                        struct conn *to = t >= 0 && (size_t)t < ntokens ? by_token[t] : NULL;
                        if (!to || to->fd < 0) continue;
                        if (!to->nout) {
                            if (ndirty == capdirty) {
                                capdirty = capdirty ? capdirty * 2 : 1024;
                                dirty = realloc(dirty, capdirty * sizeof *dirty);
                            }
                            dirty[ndirty++] = to;
                        }
                        if (to->nout + ml + 22 > to->capout) {
                            to->capout = (to->nout + ml + 22) * 2;
                            to->out = realloc(to->out, to->capout);
                            if (!to->out) die("realloc");
                        }
                        frame(to->out + to->nout, msg, ml);
                        to->nout += ml + 22;
                        continue;
                    }
                    while (outlen + ml + 32 > outcap) out = realloc(out, outcap *= 2);
                    frame(out + outlen, msg, ml);
                    outlen += ml + 22;
                }
                used = (size_t)(end - p);
                memmove(in, p, used);
                for (size_t i = 0; i < ndirty; i++) {
                    struct conn *to = dirty[i];
                    size_t len = to->nout;
                    to->nout = 0;
                    if (to->fd >= 0 && send_all(to, to->out, len) < 0) drop(to);
                }
                ndirty = 0;
                for (size_t i = 0; outlen && i < nconns;) {
                    if (conns[i]->streaming && send_all(conns[i], out, outlen) < 0) {
                        drop(conns[i]);
                        continue;
                    }
                    i++;
                }
            } else if (events[e].events & EPOLLOUT) {
                if (send_all(ec, "", 0) < 0) drop(ec);
            } else {
                /* A client's request (read and ignored) or its goodbye. */
                char buf[4096];
                ssize_t r = read(ec->fd, buf, sizeof buf);
                if (r <= 0) {
                    drop(ec);
                } else if (!ec->streaming) {
                    ec->streaming = 1;
                    if (prefix && subscribe_token(ec, buf, (size_t)r, rfd, prefix, base) < 0) {
                        drop(ec);
                        continue;
                    }
                    if (send_all(ec, head, sizeof head - 1) < 0) drop(ec);
                }
            }
        }
    }
}
