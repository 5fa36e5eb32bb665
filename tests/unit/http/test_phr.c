/* picohttpparser as libh2o exports it: the declarations in src/http/phr.h
 * must match the library's ABI (Debian ships no header for it), so each
 * one is exercised here, including the in-place chunked decoder that
 * http1.c relies on for pipelined bytes after a body. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "http/phr.h"

static void test_request_head(void **state)
{
    (void)state;
    static const char req[] = "POST /a?b=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nX-Y: z\r\n\r\nabc";
    const char *method, *path;
    size_t mlen, plen, n = 8;
    int minor = -1;
    struct phr_header h[8];
    int r = phr_parse_request(req, sizeof(req) - 1, &method, &mlen, &path, &plen, &minor, h, &n, 0);
    assert_int_equal(r, (int)(sizeof(req) - 1 - 3));
    assert_int_equal(minor, 1);
    assert_int_equal(n, 3);
    assert_memory_equal(method, "POST", mlen);
    assert_memory_equal(path, "/a?b=1", plen);
    assert_int_equal(h[1].name_len, 14);
    assert_memory_equal(h[1].name, "Content-Length", 14);
    assert_memory_equal(h[2].value, "z", h[2].value_len);
    /* incomplete, then malformed, then too many headers */
    n = 8;
    assert_int_equal(phr_parse_request(req, 20, &method, &mlen, &path, &plen, &minor, h, &n, 0), -2);
    n = 8;
    assert_int_equal(phr_parse_request("GET / HTTP/2.0\r\n\r\n", 18, &method, &mlen, &path, &plen, &minor, h, &n, 0),
                     -1);
    n = 1;
    assert_int_equal(phr_parse_request(req, sizeof(req) - 1, &method, &mlen, &path, &plen, &minor, h, &n, 0), -1);
}

static void test_obs_fold_has_null_name(void **state)
{
    (void)state;
    static const char req[] = "GET / HTTP/1.1\r\nX-A: 1\r\n  2\r\n\r\n";
    const char *method, *path;
    size_t mlen, plen, n = 8;
    int minor;
    struct phr_header h[8];
    assert_true(phr_parse_request(req, sizeof(req) - 1, &method, &mlen, &path, &plen, &minor, h, &n, 0) > 0);
    assert_int_equal(n, 2);
    assert_null(h[1].name);
}

static void test_response_head(void **state)
{
    (void)state;
    static const char res[] = "HTTP/1.0 404 Not Found\r\nA: b\r\n\r\n";
    const char *msg;
    size_t mlen, n = 4;
    int minor, status;
    struct phr_header h[4];
    int r = phr_parse_response(res, sizeof(res) - 1, &minor, &status, &msg, &mlen, h, &n, 0);
    assert_int_equal(r, (int)(sizeof(res) - 1));
    assert_int_equal(minor, 0);
    assert_int_equal(status, 404);
    assert_memory_equal(msg, "Not Found", mlen);
    assert_int_equal(n, 1);
}

static void test_chunked_in_place_with_trailing_bytes(void **state)
{
    (void)state;
    char buf[] = "3\r\nabc\r\n4;ext=1\r\ndefg\r\n0\r\nTrailer: x\r\n\r\nGET /next";
    struct phr_chunked_decoder d;
    memset(&d, 0, sizeof(d));
    d.consume_trailer = 1;
    /* feed it in two pieces, split inside a chunk header */
    size_t first = 12, sz = first;
    assert_int_equal(phr_decode_chunked(&d, buf, &sz), -2);
    assert_int_equal(sz, 3);
    assert_memory_equal(buf, "abc", 3);
    size_t rest = sizeof(buf) - 1 - first;
    memmove(buf + 3, buf + first, rest);
    size_t sz2 = rest;
    ssize_t left = phr_decode_chunked(&d, buf + 3, &sz2);
    assert_int_equal(left, 9); /* "GET /next" */
    assert_int_equal(sz2, 4);
    assert_memory_equal(buf, "abcdefg", 7);
    assert_memory_equal(buf + 7, "GET /next", 9); /* moved right behind the data */
    /* malformed size */
    char bad[] = "zz\r\n";
    size_t bsz = 4;
    memset(&d, 0, sizeof(d));
    assert_int_equal(phr_decode_chunked(&d, bad, &bsz), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_head),
        cmocka_unit_test(test_obs_fold_has_null_name),
        cmocka_unit_test(test_response_head),
        cmocka_unit_test(test_chunked_in_place_with_trailing_bytes),
    };
    return cmocka_run_group_tests_name("phr", tests, NULL, NULL);
}
