"""cffi (API mode) build of the extension `evroute._evroute` over include/evroute.h.

HELPERS (C compiled into the extension) hold the handle guard: Python calls
go through evrpy_handle so that close() from one thread never frees a
handle another thread is using, for the cost of two atomic operations
instead of Python-level locking; evrpy_next, evrpy_read and
evrpy_publish_channel run the hot path in one call each.

The prototypes below are also compiled into the extension after the real
header: a C compiler rejects a redeclaration whose types differ ("conflicting
types"), so a prototype that drifts from include/evroute.h fails the build
instead of corrupting memory at run time. Struct fields are checked by cffi
(with -Werror for the pointer-type diagnostics it relies on). The extension links the Rust static library
(target/release/libevroute.a), so the package carries its native code and
needs no shared library at run time. setup.py builds that library first.
"""

import os
import sys
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent

CDEF = """
typedef enum evr_status {
    EVR_OK, EVR_EMPTY, EVR_TIMEOUT, EVR_CLOSED, EVR_BUFFER_TOO_SMALL,
    EVR_ERR_NULL, EVR_ERR_INVALID_UTF8, EVR_ERR_INVALID_JSON, EVR_ERR_INVALID_SUBSCRIPTION,
    EVR_ERR_INVALID_CHANNEL, EVR_ERR_INVALID_EVENT, EVR_ERR_TOO_LARGE, EVR_ERR_INVALID_CONFIG,
    EVR_ERR_IO, EVR_ERR_PANIC, EVR_GAP, EVR_ERR_INVALID_ID, ...
} evr_status;

typedef enum evr_encoding { EVR_ENCODING_SSE, EVR_ENCODING_WS, ... } evr_encoding;

#define EVR_VERSION_MAJOR ...
#define EVR_VERSION_MINOR ...

typedef enum evr_log_level {
    EVR_LOG_OFF, EVR_LOG_ERROR, EVR_LOG_WARN, EVR_LOG_INFO, EVR_LOG_DEBUG, EVR_LOG_TRACE, ...
} evr_log_level;
typedef void (*evr_log_fn)(void *user_data, evr_log_level level, const char *target, const char *message);

typedef struct evr_engine evr_engine;
typedef struct evr_subscriber evr_subscriber;
typedef struct evr_frame evr_frame;
typedef struct evr_redis_node evr_redis_node;
typedef struct evr_redis_publisher evr_redis_publisher;
typedef struct evr_system_message evr_system_message;
typedef struct evr_ready_set evr_ready_set;

typedef struct evr_publish_stats { uint64_t matched; uint64_t delivered; uint64_t dropped; } evr_publish_stats;
typedef struct evr_engine_stats {
    uint64_t published; uint64_t rejected; uint64_t matched; uint64_t delivered; uint64_t dropped;
    uint64_t subscribers; uint64_t subscriptions; uint64_t history_entries; uint64_t history_bytes;
} evr_engine_stats;
typedef struct evr_subscriber_stats {
    uint64_t matched; uint64_t delivered; uint64_t dropped; uint64_t read; uint64_t depth;
} evr_subscriber_stats;
typedef struct evr_redis_node_stats {
    uint64_t received; uint64_t rejected; uint64_t ignored; uint64_t reconnects; uint64_t presence_keys; uint64_t subscriptions;
    uint64_t system_received; uint64_t system_dropped;
} evr_redis_node_stats;
typedef struct evr_redis_published { uint64_t channels; uint64_t receivers; } evr_redis_published;
"""

PROTOTYPES = """
enum evr_status evr_engine_new(const uint8_t *config_json, size_t len, struct evr_engine **out);
void evr_engine_free(struct evr_engine *engine);
enum evr_status evr_subscriber_new(const struct evr_engine *engine, const uint8_t *options_json, size_t len,
                                   struct evr_subscriber **out);
enum evr_status evr_subscriber_update(const struct evr_subscriber *subscriber, const uint8_t *filters_json,
                                      size_t len);
void evr_subscriber_free(struct evr_subscriber *subscriber);
enum evr_status evr_subscriber_close(const struct evr_subscriber *subscriber);
const char *evr_subscriber_closed(const struct evr_subscriber *subscriber);
enum evr_status evr_subscribe(const struct evr_subscriber *subscriber, const uint8_t *json, size_t len);
enum evr_status evr_unsubscribe(const struct evr_subscriber *subscriber, const uint8_t *json, size_t len);
enum evr_status evr_subscriber_resume(const struct evr_subscriber *subscriber, const uint8_t *last_id, size_t len);
enum evr_status evr_publish(const struct evr_engine *engine, const uint8_t *event, size_t len,
                            struct evr_publish_stats *out);
enum evr_status evr_publish_channel(const struct evr_engine *engine, const uint8_t *channel, size_t clen,
                                    const uint8_t *message, size_t mlen, struct evr_publish_stats *out);
enum evr_status evr_subscriber_next(const struct evr_subscriber *subscriber, uint32_t timeout_ms,
                                    struct evr_frame **out);
enum evr_status evr_subscriber_read(const struct evr_subscriber *subscriber, uint32_t timeout_ms,
                                    enum evr_encoding encoding, uint8_t *buf, size_t cap, size_t *lens,
                                    uint64_t *queued_at, size_t max, size_t *n_frames, size_t *n_bytes, int *emptied);
enum evr_status evr_subscriber_fd(const struct evr_subscriber *subscriber, int *out);
enum evr_status evr_ready_set_new(struct evr_ready_set **out);
enum evr_status evr_ready_set_fd(const struct evr_ready_set *set, int *out);
enum evr_status evr_ready_set_take(const struct evr_ready_set *set, uint64_t *tokens, size_t max, size_t *n);
void evr_ready_set_free(struct evr_ready_set *set);
enum evr_status evr_subscriber_attach_ready_set(const struct evr_subscriber *subscriber,
                                                const struct evr_ready_set *set, uint64_t token);
enum evr_status evr_engine_get_stats(const struct evr_engine *engine, struct evr_engine_stats *out);
enum evr_status evr_subscriber_get_stats(const struct evr_subscriber *subscriber,
                                         struct evr_subscriber_stats *out);
const uint8_t *evr_frame_sse(const struct evr_frame *frame, size_t *len);
const uint8_t *evr_frame_ws(const struct evr_frame *frame, size_t *len);
const uint8_t *evr_frame_event(const struct evr_frame *frame, size_t *len);
const uint8_t *evr_frame_payload(const struct evr_frame *frame, size_t *len);
const uint8_t *evr_frame_stream(const struct evr_frame *frame, size_t *len);
const uint8_t *evr_frame_id(const struct evr_frame *frame, size_t *len);
uint64_t evr_frame_queued_at(const struct evr_frame *frame);
void evr_frame_free(struct evr_frame *frame);
const char *evr_last_error(void);
const char *evr_version(void);
enum evr_status evr_set_log_callback(int level, evr_log_fn callback, void *user_data);

enum evr_status evr_redis_node_attach(const struct evr_engine *engine, const uint8_t *url, size_t url_len,
                                      const uint8_t *options_json, size_t options_len,
                                      struct evr_redis_node **out);
enum evr_status evr_redis_node_wait_subscribed(const struct evr_redis_node *node, uint32_t timeout_ms);
enum evr_status evr_redis_node_wait_synced(const struct evr_redis_node *node, uint32_t timeout_ms);
enum evr_status evr_redis_node_get_stats(const struct evr_redis_node *node, struct evr_redis_node_stats *out);
enum evr_status evr_redis_node_listen_system(const struct evr_redis_node *node, const uint8_t *channel, size_t len);
enum evr_status evr_redis_node_unlisten_system(const struct evr_redis_node *node, const uint8_t *channel, size_t len);
enum evr_status evr_redis_node_next_system(const struct evr_redis_node *node, uint32_t timeout_ms,
                                           struct evr_system_message **out);
const uint8_t *evr_system_message_channel(const struct evr_system_message *message, size_t *len);
const uint8_t *evr_system_message_payload(const struct evr_system_message *message, size_t *len);
void evr_system_message_free(struct evr_system_message *message);
enum evr_status evr_redis_node_stop(const struct evr_redis_node *node);
void evr_redis_node_free(struct evr_redis_node *node);
enum evr_status evr_redis_publisher_new(const uint8_t *url, size_t url_len, const uint8_t *namespace_,
                                        size_t namespace_len, struct evr_redis_publisher **out);
enum evr_status evr_redis_publish(const struct evr_redis_publisher *publisher, const uint8_t *event, size_t len,
                                  struct evr_redis_published *out);
enum evr_status evr_redis_publish_channel(const struct evr_redis_publisher *publisher, const uint8_t *channel,
                                          size_t clen, const uint8_t *message, size_t mlen,
                                          struct evr_redis_published *out);
void evr_redis_publisher_free(struct evr_redis_publisher *publisher);
"""

HELPERS_CDEF = """
extern "Python" void evrpy_log(void *user_data, evr_log_level level, const char *target, const char *message);
typedef struct evrpy_handle evrpy_handle;
enum { EVRPY_ENGINE, EVRPY_SUBSCRIBER, EVRPY_REDIS_NODE, EVRPY_REDIS_PUBLISHER, EVRPY_READY_SET };
#define EVRPY_HANDLE_CLOSED ...
evrpy_handle *evrpy_handle_new(int kind, void *ptr);
void *evrpy_acquire(evrpy_handle *h);
void evrpy_release(evrpy_handle *h);
void evrpy_close(evrpy_handle *h);
int evrpy_closed(evrpy_handle *h);
void evrpy_dispose(evrpy_handle *h);
int evrpy_status(void);
uint64_t evrpy_live(int kind);
struct evr_frame *evrpy_next(evrpy_handle *h, uint32_t timeout_ms);
int evrpy_publish_channel(evrpy_handle *h, const uint8_t *channel, size_t clen, const uint8_t *message,
                          size_t mlen, struct evr_publish_stats *out);
int evrpy_read(evrpy_handle *h, uint32_t timeout_ms, int encoding, uint8_t *buf, size_t cap, size_t *lens,
               size_t max, size_t *out);
"""

HELPERS = r"""
#include <stdatomic.h>
#include <stdlib.h>

enum { EVRPY_ENGINE, EVRPY_SUBSCRIBER, EVRPY_REDIS_NODE, EVRPY_REDIS_PUBLISHER, EVRPY_READY_SET };
/* What evrpy_status() says after a call on a closed handle (no evr_status uses it). */
#define EVRPY_HANDLE_CLOSED 100
#define EVRPY_CLOSED_BIT ((uintptr_t)1)
#define EVRPY_REF ((uintptr_t)2)

/* One C handle shared by a Python object's calls. `state` is 2 * references
   | closed bit: the owner holds one reference until close(), every call in
   flight one more; whoever drops the last reference frees the C object, so
   it is freed once and never while in use. */
typedef struct evrpy_handle {
    int kind;
    void *ptr;
    _Atomic uintptr_t state;
} evrpy_handle;

static _Thread_local int evrpy_last_status;
/* C objects of each kind owned by handles and not yet freed (evroute._live). */
static _Atomic uint64_t evrpy_live_count[5];

static void evrpy_free_kind(int kind, void *ptr) {
    switch (kind) {
    case EVRPY_ENGINE: evr_engine_free(ptr); break;
    case EVRPY_SUBSCRIBER: evr_subscriber_free(ptr); break;
    case EVRPY_REDIS_NODE: evr_redis_node_free(ptr); break;
    case EVRPY_REDIS_PUBLISHER: evr_redis_publisher_free(ptr); break;
    case EVRPY_READY_SET: evr_ready_set_free(ptr); break;
    }
}

/* Takes ownership of `ptr`: without memory for the handle it is freed, not leaked. */
static evrpy_handle *evrpy_handle_new(int kind, void *ptr) {
    evrpy_handle *h = malloc(sizeof *h);
    if (h == NULL) {
        evrpy_free_kind(kind, ptr);
        return NULL;
    }
    h->kind = kind;
    h->ptr = ptr;
    atomic_init(&h->state, EVRPY_REF);
    atomic_fetch_add(&evrpy_live_count[kind], 1);
    return h;
}

static void evrpy_free_object(evrpy_handle *h) {
    atomic_fetch_sub(&evrpy_live_count[h->kind], 1);
    evrpy_free_kind(h->kind, h->ptr);
}

/* The C object, with a reference for the caller; NULL once closed. */
static void *evrpy_acquire(evrpy_handle *h) {
    uintptr_t s = atomic_load(&h->state);
    do {
        if (s & EVRPY_CLOSED_BIT) return NULL;
    } while (!atomic_compare_exchange_weak(&h->state, &s, s + EVRPY_REF));
    return h->ptr;
}

static void evrpy_release(evrpy_handle *h) {
    if (atomic_fetch_sub(&h->state, EVRPY_REF) == (EVRPY_REF | EVRPY_CLOSED_BIT)) evrpy_free_object(h);
}

/* Marks the handle closed and drops the owner's reference; a subscriber or
   node is woken first so calls blocked in it return promptly. */
static void evrpy_close(evrpy_handle *h) {
    if (atomic_fetch_or(&h->state, EVRPY_CLOSED_BIT) & EVRPY_CLOSED_BIT) return;
    if (h->kind == EVRPY_SUBSCRIBER) evr_subscriber_close(h->ptr);
    if (h->kind == EVRPY_REDIS_NODE) evr_redis_node_stop(h->ptr);
    evrpy_release(h);
}

static int evrpy_closed(evrpy_handle *h) { return (atomic_load(&h->state) & EVRPY_CLOSED_BIT) != 0; }

/* The Python object is gone, so no call is in flight: free everything. */
static void evrpy_dispose(evrpy_handle *h) {
    evrpy_close(h);
    free(h);
}

static int evrpy_status(void) { return evrpy_last_status; }

static uint64_t evrpy_live(int kind) { return atomic_load(&evrpy_live_count[kind]); }

/* evr_subscriber_next on a handle: the frame, or NULL with evrpy_status(). */
static struct evr_frame *evrpy_next(evrpy_handle *h, uint32_t timeout_ms) {
    struct evr_frame *frame = NULL;
    void *sub = evrpy_acquire(h);
    if (sub == NULL) {
        evrpy_last_status = EVRPY_HANDLE_CLOSED;
        return NULL;
    }
    evrpy_last_status = evr_subscriber_next(sub, timeout_ms, &frame);
    evrpy_release(h);
    return evrpy_last_status == EVR_OK ? frame : NULL;
}

/* evr_subscriber_read on a handle; out[0] = frames, out[1] = bytes,
   out[2] = 1 when the queue was left empty. */
static int evrpy_read(evrpy_handle *h, uint32_t timeout_ms, int encoding, uint8_t *buf, size_t cap, size_t *lens,
                      size_t max, size_t *out) {
    void *sub = evrpy_acquire(h);
    if (sub == NULL) return EVRPY_HANDLE_CLOSED;
    int emptied = 0;
    int status = evr_subscriber_read(sub, timeout_ms, (enum evr_encoding)encoding, buf, cap, lens, NULL, max, &out[0],
                                     &out[1], &emptied);
    out[2] = (size_t)emptied;
    evrpy_release(h);
    return status;
}

static int evrpy_publish_channel(evrpy_handle *h, const uint8_t *channel, size_t clen, const uint8_t *message,
                                 size_t mlen, struct evr_publish_stats *out) {
    void *engine = evrpy_acquire(h);
    if (engine == NULL) return EVRPY_HANDLE_CLOSED;
    int status = evr_publish_channel(engine, channel, clen, message, mlen, out);
    evrpy_release(h);
    return status;
}
"""

# Diagnostics that mean "the declaration above differs from the header".
DRIFT_ERRORS = [
    "-Werror=incompatible-pointer-types",
    "-Werror=int-conversion",
    "-Werror=pointer-sign",
    "-Werror=discarded-qualifiers",
    "-Werror=implicit-function-declaration",
]


def target_dir():
    """Where cargo puts the Rust library (CARGO_TARGET_DIR or <repo>/target)."""
    return Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target")


def make_ffi(prototypes=PROTOTYPES, module="evroute._evroute"):
    """The FFI builder; tests pass drifted `prototypes` to see the build fail."""
    ffi = FFI()
    ffi.cdef(CDEF + prototypes + HELPERS_CDEF)
    libs = ["pthread", "dl", "m"] if sys.platform.startswith("linux") else ["pthread", "m"]
    ffi.set_source(
        module,
        '#include "evroute.h"\n' + prototypes + HELPERS,
        include_dirs=[str(ROOT / "include")],
        define_macros=[("EVR_FEATURE_REDIS", "1")],
        extra_objects=[str(target_dir() / "release" / "libevroute.a")],
        libraries=libs,
        extra_compile_args=DRIFT_ERRORS,
    )
    return ffi


ffibuilder = make_ffi()

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
