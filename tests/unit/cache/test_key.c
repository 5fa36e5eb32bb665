/* Cache keys: host/port, query normalisation, include/exclude, headers and
 * cookies, and that no input can make two different requests' keys equal
 * through the separators. */
#include "cache_test.h"

static h2o_iovec_t key(const struct vg_cache_keyrules *r, const char *host, const char *pq, const h2o_headers_t *h)
{
    static const struct vg_cache_keyrules none;
    static const h2o_headers_t no_headers;
    return vg_cache_key_build(&pool, r ? r : &none, iov(host), iov(pq), h ? h : &no_headers);
}

static void test_host(void **state)
{
    assert_iov_equal(key(NULL, "Example.COM", "/a", NULL), "example.com\n/a");
    assert_iov_equal(key(NULL, "example.com:80", "/a", NULL), "example.com\n/a");
    assert_iov_equal(key(NULL, "example.com:443", "/a", NULL), "example.com\n/a");
    assert_iov_equal(key(NULL, "example.com:8080", "/a", NULL), "example.com:8080\n/a");
    assert_iov_equal(key(NULL, "[::1]:80", "/a", NULL), "[::1]\n/a");
    assert_iov_equal(key(NULL, "", "/a", NULL), "\n/a");
    struct vg_cache_keyrules r = {.ignore_host = true};
    assert_iov_equal(key(&r, "example.com", "/a", NULL), "\n/a");
}

static void test_path_as_is(void **state)
{
    assert_iov_equal(key(NULL, "h", "/A%7e/b", NULL), "h\n/A%7e/b"); /* the caller normalised it */
    assert_iov_equal(key(NULL, "h", "/a\nb", NULL), "h\n/a%0Ab");    /* a separator cannot appear */
}

static void test_query_sorted_and_empty_dropped(void **state)
{
    assert_iov_equal(key(NULL, "h", "/?b=2&a=1", NULL), "h\n/?a=1&b=2");
    assert_iov_equal(key(NULL, "h", "/?a=2&&a=1&b&a&", NULL), "h\n/?a&a=1&a=2&b");
    assert_iov_equal(key(NULL, "h", "/p?", NULL), "h\n/p");
    assert_iov_equal(key(NULL, "h", "/p?&&", NULL), "h\n/p");
    assert_iov_equal(key(NULL, "h", "/p?a=", NULL), "h\n/p?a=");
    /* a and a= stay apart: an origin may tell them apart */
    assert_false(h2o_memis(key(NULL, "h", "/?a", NULL).base, key(NULL, "h", "/?a", NULL).len,
                           key(NULL, "h", "/?a=", NULL).base, key(NULL, "h", "/?a=", NULL).len));
    /* equal keys for reordered equal queries */
    h2o_iovec_t k1 = key(NULL, "h", "/?x=1&y=2&x=0", NULL), k2 = key(NULL, "h", "/?x=0&y=2&x=1", NULL);
    assert_true(h2o_memis(k1.base, k1.len, k2.base, k2.len));
}

static void test_query_percent_normalised(void **state)
{
    assert_iov_equal(key(NULL, "h", "/?%61=%7e%2d", NULL), "h\n/?a=~-");             /* unreserved decoded */
    assert_iov_equal(key(NULL, "h", "/?q=a%2fb%3D%26", NULL), "h\n/?q=a%2Fb%3D%26"); /* others: upper-case hex */
    assert_iov_equal(key(NULL, "h", "/?q=%zz%4", NULL), "h\n/?q=%zz%4");             /* broken escapes kept */
    assert_iov_equal(key(NULL, "h", "/?q=a\nb", NULL), "h\n/?q=a%0Ab");
    /* sorting sees the normalised names */
    assert_iov_equal(key(NULL, "h", "/?b=1&%61=2", NULL), "h\n/?a=2&b=1");
}

static void test_query_include_exclude(void **state)
{
    char *inc[] = {"id", "page", NULL}, *exc[] = {"utm_*", "fbclid", NULL};
    struct vg_cache_keyrules r = {.query_include = inc};
    assert_iov_equal(key(&r, "h", "/?page=2&x=1&id=7&idx=3", NULL), "h\n/?id=7&page=2");
    assert_iov_equal(key(&r, "h", "/?x=1", NULL), "h\n/");
    r = (struct vg_cache_keyrules){.query_exclude = exc};
    assert_iov_equal(key(&r, "h", "/?utm_source=a&utm_=b&fbclid=z&q=1&utm=c", NULL), "h\n/?q=1&utm=c");
    assert_iov_equal(key(&r, "h", "/?%75tm_x=1&q=1", NULL), "h\n/?q=1"); /* matched after decoding */
    char *all[] = {"*", NULL};
    r = (struct vg_cache_keyrules){.query_exclude = all};
    assert_iov_equal(key(&r, "h", "/?a=1", NULL), "h\n/");
    r = (struct vg_cache_keyrules){.ignore_query = true};
    assert_iov_equal(key(&r, "h", "/p?b=1&a=2", NULL), "h\n/p");
}

static void test_headers(void **state)
{
    char *names[] = {"Accept-Language", "x-a", NULL};
    struct vg_cache_keyrules r = {.headers = names};
    h2o_headers_t *h = hdrs("accept-language", " en ", "ACCEPT-LANGUAGE", "fr", "x-a", "", NULL);
    assert_iov_equal(key(&r, "h", "/", h), "h\n/\nh:Accept-Language=en, fr\nh:x-a=");
    /* absent differs from empty */
    assert_iov_equal(key(&r, "h", "/", hdrs("y", "1", NULL)), "h\n/\nh:Accept-Language\nh:x-a");
}

static void test_cookies(void **state)
{
    char *names[] = {"ab", "lang", NULL};
    struct vg_cache_keyrules r = {.cookies = names};
    h2o_headers_t *h = hdrs("cookie", "x=1; ab=B ; AB=no;lang", "cookie", "lang=de", NULL);
    assert_iov_equal(key(&r, "h", "/?q", h), "h\n/?q\nc:ab=B\nc:lang=de");
    assert_iov_equal(key(&r, "h", "/", hdrs("cookie", "ab=", NULL)), "h\n/\nc:ab=\nc:lang");
    assert_iov_equal(key(&r, "h", "/", NULL), "h\n/\nc:ab\nc:lang");
    char *hn[] = {"x", NULL};
    r.headers = hn;
    assert_iov_equal(key(&r, "h", "/", hdrs("x", "1", "cookie", "ab=1", NULL)), "h\n/\nh:x=1\nc:ab=1\nc:lang");
}

static void test_no_ambiguity(void **state)
{
    char *hn[] = {"x", NULL}, *cn[] = {"ab", NULL};
    struct vg_cache_keyrules r = {.headers = hn, .cookies = cn};
    /* a header value that spells the cookie part does not become one */
    h2o_iovec_t forged = key(&r, "h", "/", hdrs("x", "1\nc:ab=1", NULL));
    h2o_iovec_t real = key(&r, "h", "/", hdrs("x", "1", "cookie", "ab=1", NULL));
    assert_false(h2o_memis(forged.base, forged.len, real.base, real.len));
    assert_iov_equal(forged, "h\n/\nh:x=1%0Ac:ab=1\nc:ab");
    /* '%' is escaped in values, so a literal %0A differs from a newline */
    assert_iov_equal(key(&r, "h", "/", hdrs("x", "%0A", NULL)), "h\n/\nh:x=%250A\nc:ab");
    /* the host cannot spill into the path */
    assert_iov_equal(key(NULL, "a\n/b", "/c", NULL), "a%0A/b\n/c");
    /* a cookie value cannot spill into the next part either */
    assert_iov_equal(key(&r, "h", "/", hdrs("cookie", "ab=1\nh:x=2", NULL)), "h\n/\nh:x\nc:ab=1%0Ah:x=2");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_host),
        T(test_path_as_is),
        T(test_query_sorted_and_empty_dropped),
        T(test_query_percent_normalised),
        T(test_query_include_exclude),
        T(test_headers),
        T(test_cookies),
        T(test_no_ambiguity),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
