/* The blocking client's URL handling and its failures (no server needed:
 * a refused port and a malformed URL). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "http/http.h"

static void split_ok(const char *url, const char *host, const char *port, const char *path)
{
    char h[64], p[8];
    const char *pa;
    assert_int_equal(vg_http_url_split(url, h, sizeof(h), p, sizeof(p), &pa), 0);
    assert_string_equal(h, host);
    assert_string_equal(p, port);
    assert_string_equal(pa, path);
}

static void test_url_split(void **state)
{
    split_ok("http://127.0.0.1:7070", "127.0.0.1", "7070", "/");
    split_ok("http://cp.example:80/api/", "cp.example", "80", "/api/");
    split_ok("http://cp.example", "cp.example", "80", "/");
    split_ok("http://[::1]:9/x?y", "::1", "9", "/x?y");
    char h[8], p[8];
    const char *pa;
    static const char *bad[] = {"https://a:1", "http://",          "http://:80",  "http://a:",
                                "http://a:8x", "http://a:1234567", "http://[::1", "http://averyveryverylonghost:1"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(vg_http_url_split(bad[i], h, sizeof(h), p, sizeof(p), &pa), VG_EINVAL);
}

static void test_request_failures_say_why(void **state)
{
    /* a port nobody listens on: bind one, learn it, close it */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof(sa);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
    close(fd);
    char url[64], err[256];
    snprintf(url, sizeof(url), "http://127.0.0.1:%u", ntohs(sa.sin_port));
    struct vg_http_sync_req q = {.method = "GET", .url = url, .path_suffix = "/v1/x", .timeout_ms = 2000};
    struct vg_http_sync_res r;
    assert_int_equal(vg_http_sync_request(&q, &r, err, sizeof(err)), VG_EIO);
    assert_non_null(strstr(err, "refused"));
    q.url = "ftp://x";
    assert_int_equal(vg_http_sync_request(&q, &r, err, sizeof(err)), VG_EINVAL);
    assert_non_null(strstr(err, "not an http://"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_url_split),
        cmocka_unit_test(test_request_failures_say_why),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
