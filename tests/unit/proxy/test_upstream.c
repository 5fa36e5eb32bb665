/* Origin responses: head parsing and body framing, and the picohttpparser
 * ABI they are built on (declared by hand in src/http/phr.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "proxy/proxy_int.h"

static struct vg__proxy_resp resp;

/* Parses a whole head; returns its length or -1 (why in *why). */
static int parse(const char *head, bool head_request, const char **why)
{
    *why = NULL;
    int n = vg__proxy_resp_parse(head, strlen(head), 0, head_request, &resp, why);
    assert_int_not_equal(n, VG__PROXY_HEAD_PARTIAL);
    return n;
}

static void assert_ok(const char *head, bool head_request)
{
    const char *why;
    int n = parse(head, head_request, &why);
    if (n < 0)
        fail_msg("rejected (%s): %s", why, head);
    assert_int_equal(n, (int)strlen(head));
}

static void assert_rejected(const char *head, const char *why_part)
{
    const char *why;
    assert_int_equal(parse(head, false, &why), -1);
    assert_non_null(why);
    if (!strstr(why, why_part))
        fail_msg("reason '%s' lacks '%s'", why, why_part);
}

/* ---- the ABI ------------------------------------------------------------------------- */

static void test_phr_parse_response_abi(void **state)
{
    const char *buf = "HTTP/1.1 404 Not Found\r\nX-A: 1\r\nContent-Length:  7\r\n\r\nbody...";
    struct phr_header h[4];
    size_t nh = 4, msg_len;
    int minor, status;
    const char *msg;
    int n = phr_parse_response(buf, strlen(buf), &minor, &status, &msg, &msg_len, h, &nh, 0);
    assert_int_equal(n, (int)(strstr(buf, "body") - buf));
    assert_int_equal(minor, 1);
    assert_int_equal(status, 404);
    assert_int_equal(msg_len, 9);
    assert_memory_equal(msg, "Not Found", 9);
    assert_int_equal(nh, 2);
    assert_int_equal(h[1].name_len, 14);
    assert_memory_equal(h[1].name, "Content-Length", 14);
    assert_int_equal(h[1].value_len, 1);
    assert_memory_equal(h[1].value, "7", 1);
    nh = 4;
    assert_int_equal(phr_parse_response(buf, 20, &minor, &status, &msg, &msg_len, h, &nh, 0), -2);
    nh = 1; /* more headers than room: an error */
    assert_int_equal(phr_parse_response(buf, strlen(buf), &minor, &status, &msg, &msg_len, h, &nh, 0), -1);
}

static void test_phr_decode_chunked_abi(void **state)
{
    char buf[] = "5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nTrailer: x\r\n\r\nNEXT";
    struct phr_chunked_decoder d;
    memset(&d, 0, sizeof(d));
    d.consume_trailer = 1;
    size_t len = strlen(buf);
    ssize_t rc = phr_decode_chunked(&d, buf, &len);
    assert_int_equal(rc, 4); /* "NEXT" follows, right after the body */
    assert_int_equal(len, 11);
    assert_memory_equal(buf, "hello world", 11);
    assert_memory_equal(buf + len, "NEXT", 4);
}

/* ---- heads ------------------------------------------------------------------------------ */

static void test_head_basic(void **state)
{
    assert_ok("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\ncontent-length: 12\r\n\r\n", false);
    assert_int_equal(resp.status, 200);
    assert_int_equal(resp.minor_version, 1);
    assert_int_equal(resp.reason.len, 2);
    assert_int_equal(resp.n_headers, 2);
    assert_int_equal(resp.content_length, 12);
    assert_int_equal(resp.framing, VG__PROXY_BODY_LENGTH);
    assert_false(resp.chunked);
    assert_true(resp.keepalive);
}

static void test_head_partial_and_limits(void **state)
{
    const char *head = "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n";
    const char *why = NULL;
    for (size_t i = 0; i < strlen(head); i++)
        assert_int_equal(vg__proxy_resp_parse(head, i, 0, false, &resp, &why), VG__PROXY_HEAD_PARTIAL);
    /* last_len only saves work: the answer is the same */
    assert_int_equal(vg__proxy_resp_parse(head, strlen(head), 20, false, &resp, &why), (int)strlen(head));

    size_t big = VG__PROXY_MAX_HEAD + 100;
    char *buf = malloc(big);
    memcpy(buf, "HTTP/1.1 200 OK\r\nX: ", 20);
    memset(buf + 20, 'a', big - 20);
    assert_int_equal(vg__proxy_resp_parse(buf, big, 0, false, &resp, &why), -1);
    assert_string_equal(why, "response head too large");
    free(buf);

    char many[VG__PROXY_MAX_HEADERS * 8 + 64];
    size_t n = (size_t)sprintf(many, "HTTP/1.1 200 OK\r\n");
    for (int i = 0; i <= VG__PROXY_MAX_HEADERS; i++)
        n += (size_t)sprintf(many + n, "X: %d\r\n", i % 10);
    strcpy(many + n, "\r\n");
    assert_rejected(many, "malformed");
}

static void test_head_framing(void **state)
{
    assert_ok("HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked \r\n\r\n", false);
    assert_int_equal(resp.framing, VG__PROXY_BODY_CHUNKED);
    assert_true(resp.chunked && resp.keepalive);

    /* chunked wins over a length, and the connection must close after it */
    assert_ok("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", false);
    assert_int_equal(resp.framing, VG__PROXY_BODY_CHUNKED);
    assert_false(resp.keepalive);

    assert_ok("HTTP/1.1 200 OK\r\nContent-Type: x\r\n\r\n", false);
    assert_int_equal(resp.framing, VG__PROXY_BODY_CLOSE);
    assert_false(resp.keepalive);

    /* no body, whatever the head says */
    assert_ok("HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n", true);
    assert_int_equal(resp.framing, VG__PROXY_BODY_NONE);
    assert_int_equal(resp.content_length, 5000);
    assert_true(resp.keepalive);
    assert_ok("HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n", false);
    assert_int_equal(resp.framing, VG__PROXY_BODY_NONE);
    assert_true(resp.keepalive);
    assert_ok("HTTP/1.1 204 No Content\r\n\r\n", false);
    assert_int_equal(resp.framing, VG__PROXY_BODY_NONE);
    assert_true(resp.keepalive);
    /* a 204 with a length likely carries a body it must not have */
    assert_ok("HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\n", false);
    assert_false(resp.keepalive);
    assert_ok("HTTP/1.1 100 Continue\r\n\r\n", false);
    assert_int_equal(resp.status, 100);
    assert_int_equal(resp.framing, VG__PROXY_BODY_NONE);
}

static void test_head_keepalive(void **state)
{
    assert_ok("HTTP/1.1 200 OK\r\nConnection: Close\r\nContent-Length: 0\r\n\r\n", false);
    assert_false(resp.keepalive);
    assert_ok("HTTP/1.1 200 OK\r\nConnection: x-foo, close\r\nContent-Length: 0\r\n\r\n", false);
    assert_false(resp.keepalive);
    assert_ok("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", false);
    assert_false(resp.keepalive);
    assert_ok("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n", false);
    assert_true(resp.keepalive);
    assert_ok("HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n", false);
    assert_true(resp.keepalive);
}

static void test_head_rejected(void **state)
{
    assert_rejected("NOT HTTP AT ALL\r\n\r\n", "malformed");
    assert_rejected("HTTP/1.1 2000 OK\r\n\r\n", "malformed");
    assert_rejected("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n", "101");
    assert_rejected("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", "content-length");
    assert_rejected("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "content-length");
    assert_rejected("HTTP/1.1 200 OK\r\nContent-Length: 1,1\r\n\r\n", "content-length");
    assert_rejected("HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n", "content-length");
    assert_rejected("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", "transfer-encoding");
    assert_rejected("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", "transfer-encoding");
    assert_rejected("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
                    "transfer-encoding");
    assert_rejected("HTTP/1.1 200 OK\r\nX-A: 1\r\n folded\r\n\r\n", "folding");
    assert_rejected("HTTP/1.1 200 OK\r\nX(A): 1\r\n\r\n", ""); /* picohttpparser's or ours */
    const char *why;
    static const char ctl[] = "HTTP/1.1 200 OK\r\nX-A: a\x01z\r\n\r\n";
    assert_int_equal(vg__proxy_resp_parse(ctl, sizeof(ctl) - 1, 0, false, &resp, &why), -1);
    static const char ctl_reason[] = "HTTP/1.1 200 O\x7fK\r\n\r\n";
    assert_int_equal(vg__proxy_resp_parse(ctl_reason, sizeof(ctl_reason) - 1, 0, false, &resp, &why), -1);
    /* equal lengths are one length */
    assert_ok("HTTP/1.1 200 OK\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\n", false);
    assert_int_equal(resp.content_length, 5);
}

/* ---- bodies ------------------------------------------------------------------------------- */

static void init_body(struct vg__proxy_body *b, const char *head)
{
    assert_ok(head, false);
    vg__proxy_body_init(b, &resp);
}

static void test_body_length(void **state)
{
    struct vg__proxy_body b;
    init_body(&b, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n");
    char buf[32] = "0123456";
    size_t len = 7, extra;
    assert_int_equal(vg__proxy_body_decode(&b, buf, &len, &extra), VG__PROXY_BODY_MORE);
    assert_int_equal(len, 7);
    strcpy(buf, "789HTTP/1.1");
    len = strlen(buf);
    assert_int_equal(vg__proxy_body_decode(&b, buf, &len, &extra), VG__PROXY_BODY_DONE);
    assert_int_equal(len, 3);
    assert_int_equal(extra, 8);

    init_body(&b, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    len = 0;
    assert_int_equal(vg__proxy_body_decode(&b, NULL, &len, &extra), VG__PROXY_BODY_DONE);
    assert_int_equal(extra, 0);

    init_body(&b, "HTTP/1.1 204 No Content\r\n\r\n");
    len = 0;
    assert_int_equal(vg__proxy_body_decode(&b, NULL, &len, &extra), VG__PROXY_BODY_DONE);

    init_body(&b, "HTTP/1.1 200 OK\r\n\r\n"); /* until close: never done by itself */
    strcpy(buf, "abc");
    len = 3;
    assert_int_equal(vg__proxy_body_decode(&b, buf, &len, &extra), VG__PROXY_BODY_MORE);
    assert_int_equal(len, 3);
}

/* Feeds a chunked body in pieces of `step` bytes the way the forwarder
 * does (decoded bytes stay at the front, new ones are appended) and
 * returns the status of the last call. */
static enum vg__proxy_body_status feed_chunked(const char *wire, size_t step, char *out, size_t *out_len, size_t *extra)
{
    struct vg__proxy_body b;
    init_body(&b, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
    size_t total = strlen(wire), off = 0, have = 0;
    enum vg__proxy_body_status st = VG__PROXY_BODY_MORE;
    while (off < total && st == VG__PROXY_BODY_MORE) {
        size_t n = total - off < step ? total - off : step;
        memcpy(out + have, wire + off, n);
        off += n;
        st = vg__proxy_body_decode(&b, out + have, &n, extra);
        have += n;
    }
    *out_len = have;
    if (st == VG__PROXY_BODY_DONE)
        *extra += total - off; /* what the loop did not feed */
    return st;
}

static void test_body_chunked_any_split(void **state)
{
    const char *wire = "4\r\nWiki\r\n5;name=\"v\"\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nX-T: 1\r\n\r\n";
    const char *body = "Wikipedia in\r\n\r\nchunks.";
    char out[256];
    for (size_t step = 1; step <= strlen(wire); step++) {
        size_t len, extra = 0;
        assert_int_equal(feed_chunked(wire, step, out, &len, &extra), VG__PROXY_BODY_DONE);
        assert_int_equal(len, strlen(body));
        assert_memory_equal(out, body, len);
        assert_int_equal(extra, 0);
    }
}

static void test_body_chunked_edges(void **state)
{
    char out[256];
    size_t len, extra = 0;
    assert_int_equal(feed_chunked("0\r\n\r\n", 64, out, &len, &extra), VG__PROXY_BODY_DONE);
    assert_int_equal(len, 0);
    assert_int_equal(feed_chunked("3\r\nabc\r\n0\r\n\r\nHTTP/1.1 200", 64, out, &len, &extra), VG__PROXY_BODY_DONE);
    assert_int_equal(len, 3);
    assert_int_equal(extra, 12);
    assert_int_equal(feed_chunked("3\r\nabc\r\n", 64, out, &len, &extra), VG__PROXY_BODY_MORE);
    assert_int_equal(len, 3);
    assert_int_equal(feed_chunked("zz\r\nabc\r\n", 64, out, &len, &extra), VG__PROXY_BODY_BAD);
    assert_int_equal(feed_chunked("3\r\nabcX\r\n", 64, out, &len, &extra), VG__PROXY_BODY_BAD);
    assert_int_equal(feed_chunked("11111111111111111\r\n", 64, out, &len, &extra), VG__PROXY_BODY_BAD);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_phr_parse_response_abi),
        cmocka_unit_test(test_phr_decode_chunked_abi),
        cmocka_unit_test(test_head_basic),
        cmocka_unit_test(test_head_partial_and_limits),
        cmocka_unit_test(test_head_framing),
        cmocka_unit_test(test_head_keepalive),
        cmocka_unit_test(test_head_rejected),
        cmocka_unit_test(test_body_length),
        cmocka_unit_test(test_body_chunked_any_split),
        cmocka_unit_test(test_body_chunked_edges),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
