/* Routing: path kinds, host wildcards, app selection, method handling. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include <arpa/inet.h>

#include "http/http.h"

#define M(kind, pat, path) vg_http_path_match(VG_CONF_MATCH_##kind, pat, path, strlen(path))

static void test_prefix_is_segment_aware(void **state)
{
    assert_true(M(PREFIX, "/api", "/api"));
    assert_true(M(PREFIX, "/api", "/api/"));
    assert_true(M(PREFIX, "/api", "/api/v1/x"));
    assert_false(M(PREFIX, "/api", "/apix"));
    assert_false(M(PREFIX, "/api", "/ap"));
    assert_true(M(PREFIX, "/", "/anything/at/all"));
    assert_true(M(PREFIX, "/api/", "/api/x"));
    assert_false(M(PREFIX, "/api/", "/api"));
}

static void test_exact(void **state)
{
    assert_true(M(EXACT, "/login", "/login"));
    assert_false(M(EXACT, "/login", "/login/"));
    assert_false(M(EXACT, "/login", "/logi"));
}

static void test_glob(void **state)
{
    assert_true(M(GLOB, "/img/*.png", "/img/a.png"));
    assert_true(M(GLOB, "/img/*.png", "/img/.png"));
    assert_false(M(GLOB, "/img/*.png", "/img/sub/a.png")); /* '*' stays in its segment */
    assert_true(M(GLOB, "/img/**.png", "/img/sub/a.png"));
    assert_true(M(GLOB, "/a/**", "/a/b/c/d"));
    assert_false(M(GLOB, "/a/*", "/a/b/c"));
    assert_true(M(GLOB, "/*/x", "/y/x"));
    assert_false(M(GLOB, "/img/*.png", "/img/a.jpg"));
}

static void test_glob_is_bounded(void **state)
{
    /* many stars against a long non-matching path must return (false) fast */
    char path[2048];
    memset(path, 'a', sizeof(path) - 1);
    path[0] = '/';
    path[sizeof(path) - 1] = '\0';
    assert_false(M(GLOB, "/**a**a**a**a**a**a**a**a**b", path));
}

static void test_host_match(void **state)
{
    assert_true(vg_http_host_match("a.test", "A.Test", 6));
    assert_true(vg_http_host_match("a.test", "a.test:8080", 11));
    assert_true(vg_http_host_match("a.test", "a.test.", 7));
    assert_false(vg_http_host_match("a.test", "b.test", 6));
    assert_true(vg_http_host_match("*.a.test", "x.a.test", 8));
    assert_true(vg_http_host_match("*.a.test", "y.x.a.test", 10));
    assert_false(vg_http_host_match("*.a.test", "a.test", 6));
    assert_false(vg_http_host_match("*.a.test", "xa.test", 7));
    assert_true(vg_http_host_match("*", "whatever", 8));
    assert_true(vg_http_host_match("::1", "[::1]:80", 8) == false); /* brackets are part of the name */
}

static void test_app_select(void **state)
{
    char *h1[] = {"a.test"}, *h2[] = {"*.test"};
    struct vg_conf_app a = {.name = "a", .hosts = h1, .n_hosts = 1};
    struct vg_conf_app b = {.name = "b", .hosts = h2, .n_hosts = 1};
    struct vg_conf_app c = {.name = "c"};
    struct vg_conf_app *apps[] = {&b, &a, &c};
    assert_int_equal(vg_http_app_select(apps, 3, "a.test", 6), 1); /* exact beats an earlier wildcard */
    assert_int_equal(vg_http_app_select(apps, 3, "z.test", 6), 0);
    assert_int_equal(vg_http_app_select(apps, 3, "other", 5), 2); /* default app */
    assert_int_equal(vg_http_app_select(apps, 2, "other", 5), -1);
}

static void test_route_find(void **state)
{
    struct vg_conf_route routes[] = {
        {.match = VG_CONF_MATCH_PREFIX, .path = "/api", .methods = VG_CONF_METHOD_GET | VG_CONF_METHOD_POST},
        {.host = "admin.test", .match = VG_CONF_MATCH_PREFIX, .path = "/", .methods = VG_CONF_METHOD_ALL},
        {.match = VG_CONF_MATCH_EXACT, .path = "/ping", .methods = VG_CONF_METHOD_GET},
    };
    struct vg_conf_app app = {.name = "x", .routes = routes, .n_routes = 3};
    assert_int_equal(vg_http_route_find(&app, "x", 1, "/api/a", 6, VG_CONF_METHOD_GET, NULL), 0);
    assert_int_equal(vg_http_route_find(&app, "x", 1, "/api/a", 6, VG_CONF_METHOD_DELETE, NULL),
                     VG_HTTP_ROUTE_BAD_METHOD);
    assert_int_equal(vg_http_route_find(&app, "admin.test", 10, "/api/a", 6, VG_CONF_METHOD_DELETE, NULL), 1);
    assert_int_equal(vg_http_route_find(&app, "x", 1, "/ping", 5, VG_CONF_METHOD_GET, NULL), 2);
    assert_int_equal(vg_http_route_find(&app, "x", 1, "/pong", 5, VG_CONF_METHOD_GET, NULL), VG_HTTP_ROUTE_NONE);
    /* an unknown method only matches routes that allow every method */
    assert_int_equal(vg_http_route_find(&app, "x", 1, "/ping", 5, 0, NULL), VG_HTTP_ROUTE_BAD_METHOD);
    assert_int_equal(vg_http_route_find(&app, "admin.test", 10, "/ping", 5, 0, NULL), 1);
}

static void test_route_allow(void **state)
{
    struct vg_conf_route routes[] = {
        {.match = VG_CONF_MATCH_PREFIX, .path = "/a", .methods = VG_CONF_METHOD_GET | VG_CONF_METHOD_HEAD},
        {.match = VG_CONF_MATCH_PREFIX, .path = "/", .methods = VG_CONF_METHOD_POST},
    };
    struct vg_conf_app app = {.name = "x", .routes = routes, .n_routes = 2};
    uint32_t allow = 0;
    assert_int_equal(vg_http_route_find(&app, "x", 1, "/a", 2, VG_CONF_METHOD_PUT, &allow), VG_HTTP_ROUTE_BAD_METHOD);
    char buf[64];
    vg_http_methods_format(allow, buf, sizeof(buf));
    assert_string_equal(buf, "GET, HEAD, POST");
}

static void check_ipv4(const char *ip)
{
    struct sockaddr_in sin = {.sin_family = AF_INET};
    assert_int_equal(inet_pton(AF_INET, ip, &sin.sin_addr), 1);
    char buf[VG_HTTP_PEER_MAX];
    h2o_iovec_t s = vg_http_sockaddr_ip((struct sockaddr *)&sin, sizeof(sin), buf);
    assert_string_equal(buf, ip);
    assert_int_equal(s.len, strlen(ip));
}

/* The client address as it goes into X-Forwarded-For and the access log. */
static void test_sockaddr_ip(void **state)
{
    (void)state;
    const char *v4[] = {"0.0.0.0", "127.0.0.1", "10.0.9.99", "192.168.100.255", "255.255.255.255", "1.20.100.9"};
    for (size_t i = 0; i < sizeof(v4) / sizeof(v4[0]); i++)
        check_ipv4(v4[i]);
    struct sockaddr_in6 sin6 = {.sin6_family = AF_INET6};
    assert_int_equal(inet_pton(AF_INET6, "2001:db8::1", &sin6.sin6_addr), 1);
    char buf[VG_HTTP_PEER_MAX];
    assert_int_equal(vg_http_sockaddr_ip((struct sockaddr *)&sin6, sizeof(sin6), buf).len, 11);
    assert_string_equal(buf, "2001:db8::1");
    assert_int_equal(vg_http_sockaddr_ip(NULL, 0, buf).len, 0);
    assert_string_equal(buf, "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_prefix_is_segment_aware),
        cmocka_unit_test(test_exact),
        cmocka_unit_test(test_glob),
        cmocka_unit_test(test_glob_is_bounded),
        cmocka_unit_test(test_host_match),
        cmocka_unit_test(test_app_select),
        cmocka_unit_test(test_route_find),
        cmocka_unit_test(test_route_allow),
        cmocka_unit_test(test_sockaddr_ip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
