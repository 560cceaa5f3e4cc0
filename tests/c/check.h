/* A minimal assertion kit for the C ABI tests: a failed check prints where,
 * what, and the thread's evr_last_error(), then exits non-zero. */
#ifndef EVR_TEST_CHECK_H
#define EVR_TEST_CHECK_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "evroute.h"

#define CHECK(cond)                                                              \
    do {                                                                         \
        if (!(cond)) {                                                           \
            fprintf(stderr, "%s:%d: check failed: %s\n  last error: %s\n",       \
                    __FILE__, __LINE__, #cond, evr_last_error());                \
            exit(1);                                                             \
        }                                                                        \
    } while (0)

#define CHECK_STATUS(call, expected)                                             \
    do {                                                                         \
        evr_status got_ = (call);                                                \
        if (got_ != (expected)) {                                                \
            fprintf(stderr, "%s:%d: %s returned %d, expected %s (%d)\n"          \
                    "  last error: %s\n", __FILE__, __LINE__, #call, (int)got_,  \
                    #expected, (int)(expected), evr_last_error());               \
            exit(1);                                                             \
        }                                                                        \
    } while (0)

/* Byte-exact comparison with a readable failure. */
#define CHECK_BYTES(ptr, len, want, want_len)                                    \
    do {                                                                         \
        const void *p_ = (ptr);                                                  \
        size_t l_ = (len), wl_ = (want_len);                                     \
        if (p_ == NULL || l_ != wl_ || memcmp(p_, (want), wl_) != 0) {           \
            fprintf(stderr, "%s:%d: bytes differ (%s)\n  got  (%zu): %.*s\n"     \
                    "  want (%zu): %.*s\n", __FILE__, __LINE__, #ptr, l_,        \
                    p_ ? (int)l_ : 6, p_ ? (const char *)p_ : "(null)", wl_,     \
                    (int)wl_, (const char *)(want));                             \
            exit(1);                                                             \
        }                                                                        \
    } while (0)

#define CHECK_CONTAINS(haystack, needle)                                         \
    do {                                                                         \
        if (strstr((haystack), (needle)) == NULL) {                              \
            fprintf(stderr, "%s:%d: \"%s\" does not contain \"%s\"\n",           \
                    __FILE__, __LINE__, (haystack), (needle));                   \
            exit(1);                                                             \
        }                                                                        \
    } while (0)

#endif
