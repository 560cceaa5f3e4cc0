/* The floor of BENCHMARKS.md's streaming benchmark: the least a streaming
 * server can do. It SUBSCRIBEs one Redis channel and writes every message, as
 * an SSE frame, to every connection: no routing, no authentication, no
 * parsing beyond Redis' framing, one write per connection per Redis read.
 *
 *   cc -O2 -Wall -Wextra -Werror -o floor floor.c
 *   ./floor PORT REDIS_PORT CHANNEL
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

static void drop(struct conn *c) {
    size_t i = c->index;
    close(c->fd);
    c->fd = -1;
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

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s PORT REDIS_PORT CHANNEL\n", argv[0]);
        return 2;
    }
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
    int n = snprintf(cmd, sizeof cmd, "*2\r\n$9\r\nSUBSCRIBE\r\n$%zu\r\n%s\r\n", strlen(argv[3]), argv[3]);
    if (write(rfd, cmd, (size_t)n) != n) die("subscribe");
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
                    if (!kind || !bulk(&cur, end, &cl)) break;
                    if (kl == 9 && !memcmp(kind, "subscribe", 9)) { /* the reply: an integer */
                        const char *nl = memmem(cur, (size_t)(end - cur), "\r\n", 2);
                        if (!nl) break;
                        p = nl + 2;
                        continue;
                    }
                    const char *msg = bulk(&cur, end, &ml);
                    if (!msg) break;
                    while (outlen + ml + 32 > outcap) out = realloc(out, outcap *= 2);
                    memcpy(out + outlen, "event: update\ndata: ", 20);
                    memcpy(out + outlen + 20, msg, ml);
                    memcpy(out + outlen + 20 + ml, "\n\n", 2);
                    outlen += ml + 22;
                    p = cur;
                }
                used = (size_t)(end - p);
                memmove(in, p, used);
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
                    if (send_all(ec, head, sizeof head - 1) < 0) drop(ec);
                }
            }
        }
    }
}
