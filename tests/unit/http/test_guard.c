/* HTTP/1 request-head guard: the smuggling rules h2o does not enforce. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "http/http.h"

#define H(n, v)                                                                                                        \
    {                                                                                                                  \
        n, sizeof(n) - 1, v, sizeof(v) - 1                                                                             \
    }

static int check(const struct vg_http_raw_header *h, size_t n, const char **why)
{
    *why = NULL;
    return vg_http_guard_check(h, n, why);
}

/* The token bitmap against RFC 9110's definition, every byte; and values
 * refuse CR, LF, NUL and DEL but take tabs and obs-text. */
static void test_field_grammar(void **state)
{
    (void)state;
    for (int c = 0; c < 256; c++) {
        char ch = (char)c;
        bool want = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                    (c && strchr("!#$%&'*+-.^_`|~", c) != NULL);
        if (vg_http_name_ok(h2o_iovec_init(&ch, 1)) != want)
            fail_msg("byte 0x%02x: token %d", c, !want);
    }
    assert_false(vg_http_name_ok(h2o_iovec_init("", 0)));
    assert_true(vg_http_value_ok(h2o_iovec_init(H2O_STRLIT("a\tb \xff"))));
    assert_false(vg_http_value_ok(h2o_iovec_init(H2O_STRLIT("a\r\nb"))));
    assert_false(vg_http_value_ok(h2o_iovec_init("a\0b", 3)));
    assert_false(vg_http_value_ok(h2o_iovec_init(H2O_STRLIT("a\x7f"))));
}

static void test_plain_requests_pass(void **state)
{
    const char *why;
    struct vg_http_raw_header ok[] = {H("Host", "a"), H("Content-Length", "5"), H("X", "y")};
    assert_int_equal(check(ok, 3, &why), 0);
    struct vg_http_raw_header chunked[] = {H("host", "a"), H("transfer-encoding", "chunked")};
    assert_int_equal(check(chunked, 2, &why), 0);
    struct vg_http_raw_header same_cl[] = {H("Content-Length", "5"), H("content-length", "5")};
    assert_int_equal(check(same_cl, 2, &why), 0); /* identical repeats are allowed (RFC 9110 8.6) */
    assert_int_equal(check(NULL, 0, &why), 0);
}

static void test_smuggling_shapes_fail(void **state)
{
    const char *why;
    struct vg_http_raw_header clte[] = {H("Content-Length", "5"), H("Transfer-Encoding", "chunked")};
    assert_int_equal(check(clte, 2, &why), -1);
    assert_string_equal(why, "Content-Length with Transfer-Encoding");
    struct vg_http_raw_header tecl[] = {H("TRANSFER-ENCODING", "chunked"), H("content-length", "5")};
    assert_int_equal(check(tecl, 2, &why), -1);
    struct vg_http_raw_header two_cl[] = {H("Content-Length", "5"), H("Content-Length", "6")};
    assert_int_equal(check(two_cl, 2, &why), -1);
    assert_string_equal(why, "conflicting Content-Length headers");
    struct vg_http_raw_header bad_cl[] = {H("Content-Length", "5, 5")};
    assert_int_equal(check(bad_cl, 1, &why), -1);
    struct vg_http_raw_header neg_cl[] = {H("Content-Length", "-1")};
    assert_int_equal(check(neg_cl, 1, &why), -1);
    struct vg_http_raw_header huge_cl[] = {H("Content-Length", "99999999999999999999")};
    assert_int_equal(check(huge_cl, 1, &why), -1);
    struct vg_http_raw_header hosts[] = {H("Host", "a"), H("Host", "b")};
    assert_int_equal(check(hosts, 2, &why), -1);
    assert_string_equal(why, "more than one Host header");
    struct vg_http_raw_header fold[] = {H("X", "a"), {NULL, 0, " b", 2}};
    assert_int_equal(check(fold, 2, &why), -1);
    assert_string_equal(why, "obsolete line folding in header");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_field_grammar),
        cmocka_unit_test(test_plain_requests_pass),
        cmocka_unit_test(test_smuggling_shapes_fail),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
