/* Helpers shared by the cache unit tests: a pool per test and header lists
 * written inline. */
#ifndef VG_CACHE_TEST_H
#define VG_CACHE_TEST_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cache/cache_int.h"

static h2o_mem_pool_t pool;

static int pool_setup(void **state)
{
    h2o_mem_init_pool(&pool);
    return 0;
}

static int pool_teardown(void **state)
{
    h2o_mem_clear_pool(&pool);
    return 0;
}

/* hdrs("name", "value", ..., NULL): a header list in the test pool. */
static h2o_headers_t *hdrs(const char *name, ...)
{
    h2o_headers_t *hs = h2o_mem_alloc_pool(&pool, sizeof(*hs));
    memset(hs, 0, sizeof(*hs));
    va_list ap;
    va_start(ap, name);
    for (const char *n = name; n; n = va_arg(ap, const char *)) {
        const char *v = va_arg(ap, const char *);
        h2o_add_header_by_str(&pool, hs, n, strlen(n), 1, NULL, v, strlen(v));
    }
    va_end(ap);
    return hs;
}

static h2o_iovec_t iov(const char *s)
{
    return h2o_iovec_init(s, strlen(s));
}

#define assert_iov_equal(v, s)                                                                                         \
    do {                                                                                                               \
        h2o_iovec_t v_ = (v);                                                                                          \
        const char *s_ = (s);                                                                                          \
        if (v_.len != strlen(s_) || memcmp(v_.base, s_, v_.len) != 0) {                                                \
            print_error("got '%.*s', want '%s'\n", (int)v_.len, v_.base, s_);                                          \
            fail();                                                                                                    \
        }                                                                                                              \
    } while (0)

#define T(f) cmocka_unit_test_setup_teardown(f, pool_setup, pool_teardown)

#endif
