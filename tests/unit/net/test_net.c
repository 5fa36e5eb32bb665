/* net: listen address parsing/formatting and real listeners on loopback. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include <netinet/in.h>
#include <unistd.h>

#include "net/net.h"

static void roundtrip(const char *in, const char *want)
{
    struct sockaddr_storage ss;
    socklen_t len;
    assert_int_equal(vg_net_addr_parse(in, &ss, &len), 0);
    char out[128];
    vg_net_addr_format((struct sockaddr *)&ss, out, sizeof(out));
    assert_string_equal(out, want);
}

static void test_parse_forms(void **state)
{
    roundtrip("127.0.0.1:8080", "127.0.0.1:8080");
    roundtrip("localhost:80", "127.0.0.1:80");
    roundtrip(":8080", "0.0.0.0:8080");
    roundtrip("0.0.0.0:1", "0.0.0.0:1");
    roundtrip("[::1]:8443", "[::1]:8443");
    roundtrip("[::]:0", "[::]:0");
}

static void test_parse_rejects(void **state)
{
    static const char *bad[] = {
        "",        "8080",    "127.0.0.1",      "127.0.0.1:",   "127.0.0.1:65536", "127.0.0.1:-1", "127.0.0.1:80x",
        "[::1:80", "[::1]80", "example.com:80", "999.1.1.1:80", "[zz]:80",
    };
    for (size_t i = 0; i < VG_ARRAY_LEN(bad); i++) {
        struct sockaddr_storage ss;
        socklen_t len;
        if (vg_net_addr_parse(bad[i], &ss, &len) != VG_EINVAL)
            fail_msg("accepted '%s'", bad[i]);
    }
}

static void test_listen_port_zero_and_reuseport(void **state)
{
    int a, b;
    char err[256];
    assert_int_equal(vg_net_listen("127.0.0.1:0", true, 16, &a, err, sizeof(err)), 0);
    int port = vg_net_local_port(a);
    assert_true(port > 0);
    /* a second SO_REUSEPORT socket joins the same port: that is how workers share it */
    char addr[64];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
    assert_int_equal(vg_net_listen(addr, true, 16, &b, err, sizeof(err)), 0);
    assert_int_equal(vg_net_local_port(b), port);
    close(b);
    /* without SO_REUSEPORT the port is taken, and the error names it */
    int c;
    assert_int_equal(vg_net_listen(addr, false, 16, &c, err, sizeof(err)), VG_ENET);
    assert_non_null(strstr(err, addr));
    close(a);
}

static void test_listen_bad_address_message(void **state)
{
    int fd;
    char err[256];
    assert_int_equal(vg_net_listen("nonsense", true, 16, &fd, err, sizeof(err)), VG_ENET);
    assert_non_null(strstr(err, "invalid listen address 'nonsense'"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_forms),
        cmocka_unit_test(test_parse_rejects),
        cmocka_unit_test(test_listen_port_zero_and_reuseport),
        cmocka_unit_test(test_listen_bad_address_message),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
