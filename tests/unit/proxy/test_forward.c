/* Forwarding helpers: hop-by-hop headers and the origin's request head. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "proxy/proxy_int.h"

struct fixture {
    h2o_mem_pool_t pool;
    h2o_headers_t headers;
    struct vg__proxy_head in;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    h2o_mem_init_pool(&f->pool);
    f->in = (struct vg__proxy_head){
        .method = h2o_iovec_init(H2O_STRLIT("GET")),
        .path = h2o_iovec_init(H2O_STRLIT("/a/b?q=1")),
        .host = h2o_iovec_init(H2O_STRLIT("10.0.0.1:8080")),
        .headers = &f->headers,
        .client_ip = h2o_iovec_init(H2O_STRLIT("192.0.2.7")),
        .proto = h2o_iovec_init(H2O_STRLIT("https")),
    };
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    h2o_mem_clear_pool(&f->pool);
    free(f);
    return 0;
}

/* Adds a client header the way h2o stores it: lower-case name, original
 * spelling in orig_name. */
static void add(struct fixture *f, const char *name, const char *value)
{
    size_t n = strlen(name);
    char *lc = h2o_mem_alloc_pool(&f->pool, n);
    for (size_t i = 0; i < n; i++)
        lc[i] = (char)(name[i] >= 'A' && name[i] <= 'Z' ? name[i] + 32 : name[i]);
    h2o_add_header_by_str(&f->pool, &f->headers, lc, n, 1, h2o_strdup(&f->pool, name, n).base, value, strlen(value));
}

static char *build(struct fixture *f)
{
    h2o_iovec_t out;
    assert_int_equal(vg__proxy_head_build(&f->pool, &f->in, &out), 0);
    return h2o_strdup(&f->pool, out.base, out.len).base;
}

/* ---- header lists --------------------------------------------------------------- */

static void test_hop_headers(void **state)
{
    const char *hop[] = {"Connection", "keep-alive",          "Proxy-Connection",  "TE", "transfer-encoding", "Upgrade",
                         "Trailer",    "Proxy-Authorization", "proxy-authenticate"};
    for (size_t i = 0; i < sizeof(hop) / sizeof(hop[0]); i++)
        assert_true(vg__proxy_hop_header(hop[i], strlen(hop[i])));
    const char *end[] = {"content-type", "cookie", "x-connection", "tee", "upgrade-insecure-requests", ""};
    for (size_t i = 0; i < sizeof(end) / sizeof(end[0]); i++)
        assert_false(vg__proxy_hop_header(end[i], strlen(end[i])));
}

static void test_list_has(void **state)
{
    h2o_iovec_t v = h2o_iovec_init(H2O_STRLIT("keep-alive,  X-Hop\t, , other"));
    assert_true(vg__proxy_list_has(v, H2O_STRLIT("x-hop")));
    assert_true(vg__proxy_list_has(v, H2O_STRLIT("KEEP-ALIVE")));
    assert_true(vg__proxy_list_has(v, H2O_STRLIT("other")));
    assert_false(vg__proxy_list_has(v, H2O_STRLIT("x-ho")));
    assert_false(vg__proxy_list_has(v, H2O_STRLIT("hop")));
    assert_false(vg__proxy_list_has(h2o_iovec_init(NULL, 0), H2O_STRLIT("x")));
}

/* ---- request head ------------------------------------------------------------------ */

static void test_minimal_head(void **state)
{
    struct fixture *f = *state;
    assert_string_equal(build(f), "GET /a/b?q=1 HTTP/1.1\r\n"
                                  "host: 10.0.0.1:8080\r\n"
                                  "connection: keep-alive\r\n"
                                  "x-forwarded-for: 192.0.2.7\r\n"
                                  "x-forwarded-proto: https\r\n"
                                  "via: 1.1 verge\r\n"
                                  "\r\n");
}

static void test_hop_by_hop_dropped_end_to_end_kept(void **state)
{
    struct fixture *f = *state;
    add(f, "Connection", "keep-alive, X-Hop");
    add(f, "X-Hop", "secret");
    add(f, "Keep-Alive", "timeout=5");
    add(f, "TE", "trailers");
    add(f, "Transfer-Encoding", "chunked");
    add(f, "Upgrade", "websocket");
    add(f, "Proxy-Authorization", "Basic eA==");
    add(f, "Expect", "100-continue");
    add(f, "Content-Length", "999");
    add(f, "X-Forwarded-Proto", "spoofed");
    add(f, "X-Custom", "abc");
    add(f, "Forwarded", "for=192.0.2.7");
    add(f, "X-Request-Id", "r1");
    f->in.method = h2o_iovec_init(H2O_STRLIT("POST"));
    f->in.has_body = true;
    f->in.body_len = 5;
    assert_string_equal(build(f), "POST /a/b?q=1 HTTP/1.1\r\n"
                                  "host: 10.0.0.1:8080\r\n"
                                  "connection: keep-alive\r\n"
                                  "content-length: 5\r\n"
                                  "X-Custom: abc\r\n"
                                  "Forwarded: for=192.0.2.7\r\n"
                                  "X-Request-Id: r1\r\n"
                                  "x-forwarded-for: 192.0.2.7\r\n"
                                  "x-forwarded-proto: https\r\n"
                                  "via: 1.1 verge\r\n"
                                  "\r\n");
}

static void test_merges_xff_via_cookie(void **state)
{
    struct fixture *f = *state;
    add(f, "Cookie", "a=1");
    add(f, "X-Forwarded-For", "198.51.100.1");
    add(f, "cookie", "b=2");
    add(f, "Via", "1.0 edge");
    add(f, "x-forwarded-for", "198.51.100.2, 198.51.100.3");
    char *head = build(f);
    assert_non_null(strstr(head, "\r\ncookie: a=1; b=2\r\n"));
    assert_non_null(strstr(head, "\r\nx-forwarded-for: 198.51.100.1, 198.51.100.2, 198.51.100.3, 192.0.2.7\r\n"));
    assert_non_null(strstr(head, "\r\nvia: 1.0 edge, 1.1 verge\r\n"));
    assert_null(strstr(head, "Cookie:"));
}

static void test_no_client_ip(void **state)
{
    struct fixture *f = *state;
    f->in.client_ip = h2o_iovec_init(NULL, 0);
    assert_null(strstr(build(f), "x-forwarded-for"));
    add(f, "X-Forwarded-For", "198.51.100.1");
    assert_non_null(strstr(build(f), "\r\nx-forwarded-for: 198.51.100.1\r\n"));
}

static void test_content_length_rules(void **state)
{
    struct fixture *f = *state;
    f->in.method = h2o_iovec_init(H2O_STRLIT("PUT")); /* no body: a PUT still says 0 */
    assert_non_null(strstr(build(f), "\r\ncontent-length: 0\r\n"));
    f->in.method = h2o_iovec_init(H2O_STRLIT("DELETE"));
    assert_null(strstr(build(f), "content-length"));
    f->in.has_body = true;
    f->in.body_len = 0; /* an empty body that was sent */
    assert_non_null(strstr(build(f), "\r\ncontent-length: 0\r\n"));
}

static void test_streamed_body_heads(void **state)
{
    struct fixture *f = *state;
    add(f, "Transfer-Encoding", "chunked");
    add(f, "Expect", "100-continue");
    f->in.method = h2o_iovec_init(H2O_STRLIT("POST"));
    f->in.has_body = true;
    f->in.body_len = SIZE_MAX; /* unknown length: chunked to the origin */
    assert_string_equal(build(f), "POST /a/b?q=1 HTTP/1.1\r\n"
                                  "host: 10.0.0.1:8080\r\n"
                                  "connection: keep-alive\r\n"
                                  "transfer-encoding: chunked\r\n"
                                  "x-forwarded-for: 192.0.2.7\r\n"
                                  "x-forwarded-proto: https\r\n"
                                  "via: 1.1 verge\r\n"
                                  "\r\n");
    f->in.body_len = (size_t)5 << 30; /* a known length, however large */
    char *head = build(f);
    assert_non_null(strstr(head, "\r\ncontent-length: 5368709120\r\n"));
    assert_null(strstr(head, "transfer-encoding"));
    assert_null(strstr(head, "expect"));
}

static void test_unsafe_fields_refused(void **state)
{
    struct fixture *f = *state;
    h2o_iovec_t out = {NULL, 0};
    f->in.path = h2o_iovec_init(H2O_STRLIT("/x\r\nx-evil: 1"));
    assert_int_equal(vg__proxy_head_build(&f->pool, &f->in, &out), VG_EINVAL);
    f->in.path = h2o_iovec_init(H2O_STRLIT("/x"));
    add(f, "X-A", "ok");
    assert_int_equal(vg__proxy_head_build(&f->pool, &f->in, &out), 0);
    h2o_add_header_by_str(&f->pool, &f->headers, H2O_STRLIT("x-b"), 0, NULL, "v\0w", 3);
    assert_int_equal(vg__proxy_head_build(&f->pool, &f->in, &out), VG_EINVAL);
    f->headers.size--;
    h2o_add_header_by_str(&f->pool, &f->headers, H2O_STRLIT("x b"), 0, NULL, H2O_STRLIT("v"));
    assert_int_equal(vg__proxy_head_build(&f->pool, &f->in, &out), VG_EINVAL);
    f->headers.size--;
    h2o_add_header_by_str(&f->pool, &f->headers, H2O_STRLIT("x:b"), 0, NULL, H2O_STRLIT("v"));
    assert_int_equal(vg__proxy_head_build(&f->pool, &f->in, &out), VG_EINVAL);
}

static void test_many_large_headers_fit(void **state)
{
    struct fixture *f = *state;
    char big[4096];
    memset(big, 'v', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    for (int i = 0; i < 50; i++) {
        add(f, "Cookie", big);
        add(f, "Via", big);
        add(f, "X-Forwarded-For", big);
        add(f, "X-Long", big);
    }
    char *head = build(f); /* the builder asserts it stays within what it sized */
    assert_true(strlen(head) > 50 * 4 * 4000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hop_headers),
        cmocka_unit_test(test_list_has),
        cmocka_unit_test_setup_teardown(test_minimal_head, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hop_by_hop_dropped_end_to_end_kept, setup, teardown),
        cmocka_unit_test_setup_teardown(test_merges_xff_via_cookie, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_client_ip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_content_length_rules, setup, teardown),
        cmocka_unit_test_setup_teardown(test_streamed_body_heads, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unsafe_fields_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_many_large_headers_fit, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
