/* Unit tests for src/conf: verge.yaml -> validated app model.
 *
 * Only the public conf.h / base.h API is used. Every case runs against a
 * temporary app directory (made with mkdtemp) that holds the files the
 * manifests refer to. Run under ASan/LSan: a leak on any error path fails. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "conf/conf.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char g_dir[PATH_MAX];         /* the app directory, canonical */
static char g_public[PATH_MAX + 16]; /* g_dir/public */
static char g_cert[PATH_MAX + 32];   /* g_dir/certs/cert.pem */

#define NAME "name: t\n"
#define ROUTES "routes:\n  - respond: ok\n"
#define MIN NAME ROUTES /* three lines: additions start on line 4 */

/* --- helpers -------------------------------------------------------------- */

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static int group_setup(void **state)
{
    char tmpl[] = "/tmp/vg_conf_XXXXXX";
    char path[PATH_MAX + 64];
    if (!mkdtemp(tmpl) || !realpath(tmpl, g_dir))
        return -1;
    snprintf(g_public, sizeof(g_public), "%s/public", g_dir);
    snprintf(g_cert, sizeof(g_cert), "%s/certs/cert.pem", g_dir);
    mkdir(g_public, 0755);
    snprintf(path, sizeof(path), "%s/certs", g_dir);
    mkdir(path, 0755);
    write_file(g_cert, "cert");
    snprintf(path, sizeof(path), "%s/certs/key.pem", g_dir);
    write_file(path, "key");
    snprintf(path, sizeof(path), "%s/file.txt", g_dir);
    write_file(path, "x");
    snprintf(path, sizeof(path), "%s/edge.lua", g_dir);
    write_file(path, "function handle() end\n");
    snprintf(path, sizeof(path), "%s/link", g_dir);
    return symlink("public", path);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

static int group_teardown(void **state)
{
    return nftw(g_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static struct vg_conf_app *load_ok(const char *yaml)
{
    struct vg_conf_app *app = NULL;
    struct vg_conf_error err;
    int rc = vg_conf_app_load_buffer(g_dir, "verge.yaml", yaml, strlen(yaml), &app, &err);
    if (rc != 0) {
        char buf[1200];
        vg_conf_error_format(&err, buf, sizeof(buf));
        print_error("unexpected error for:\n%s\n=> %s\n", yaml, buf);
        fail();
    }
    assert_non_null(app);
    return app;
}

/* line/col 0: position not checked. */
struct err_case {
    const char *yaml;
    int line, col;
    const char *msg;
};

static void expect_err_len(const char *yaml, size_t len, int line, int col, const char *msg)
{
    static int sentinel;
    struct vg_conf_app *app = (struct vg_conf_app *)(void *)&sentinel;
    struct vg_conf_error err;
    int rc = vg_conf_app_load_buffer(g_dir, "verge.yaml", yaml, len, &app, &err);
    if (rc != VG_ECONF || (line && err.line != line) || (col && err.col != col) || !strstr(err.msg, msg) ||
        strcmp(err.file, "verge.yaml") != 0) {
        print_error("for:\n%.300s\nwant %d:%d: ...%s...\ngot rc=%d %s:%d:%d: %s\n", yaml, line, col, msg, rc, err.file,
                    err.line, err.col, err.msg);
        fail();
    }
    assert_ptr_equal(app, &sentinel); /* *out untouched on failure */
}

static void expect_err(const char *yaml, int line, int col, const char *msg)
{
    expect_err_len(yaml, strlen(yaml), line, col, msg);
}

static void expect_errs(const struct err_case *c, size_t n)
{
    for (size_t i = 0; i < n; i++)
        expect_err(c[i].yaml, c[i].line, c[i].col, c[i].msg);
}

static void expect_oks(const char *const *yamls, size_t n)
{
    for (size_t i = 0; i < n; i++)
        vg_conf_app_destroy(load_ok(yamls[i]));
}

/* --- the example from docs/manifest.md ------------------------------------ */

static const char example[] = "name: hello\n"
                              "hosts: [hello.localhost, \"*.hello.test\"]\n"
                              "listen:\n"
                              "  - 127.0.0.1:8080\n"
                              "  - addr: 127.0.0.1:8443\n"
                              "    tls: {cert: certs/cert.pem, key: certs/key.pem}\n"
                              "limits:\n"
                              "  header_size: 32k\n"
                              "  body_size: 1m\n"
                              "  header_timeout: 5s\n"
                              "  idle_timeout: 2m\n"
                              "  max_connections: 500\n"
                              "origins:\n"
                              "  api:\n"
                              "    servers:\n"
                              "      - http://127.0.0.1:9001\n"
                              "      - {url: \"http://127.0.0.1:9002\", weight: 2}\n"
                              "    balance: hash\n"
                              "    hash_on: header:X-User\n"
                              "    health: {path: /healthz, interval: 3s, timeout: 500ms, rise: 4, fall: 5, expect: "
                              "200-299}\n"
                              "    timeouts: {connect: 1s, read: 20s, total: 40s}\n"
                              "    keepalive: 15s\n"
                              "    retries: 2\n"
                              "    passive: {max_fails: 5, fail_timeout: 20s}\n"
                              "    preserve_host: true\n"
                              "routes:\n"
                              "  - path: /api\n"
                              "    host: API.example.com\n"
                              "    methods: [GET, post]\n"
                              "    proxy: api\n"
                              "    strip_prefix: /api\n"
                              "  - exact: /ping\n"
                              "    respond: {status: 201, body: \"pong\\n\", content_type: text/plain}\n"
                              "  - path: /old\n"
                              "    redirect: {to: /new, status: 301}\n"
                              "  - glob: /img/**/*.png\n"
                              "    proxy: http://127.0.0.1:9100\n"
                              "  - path: /\n"
                              "    static: public\n";

static void test_example_manifest(void **state)
{
    struct vg_conf_app *app = load_ok(example);
    assert_string_equal(app->name, "hello");
    assert_string_equal(app->dir, g_dir);
    assert_int_equal(app->n_hosts, 2);
    assert_string_equal(app->hosts[0], "hello.localhost");
    assert_string_equal(app->hosts[1], "*.hello.test");

    assert_int_equal(app->n_listen, 2);
    assert_string_equal(app->listen[0].addr, "127.0.0.1:8080");
    assert_null(app->listen[0].tls_cert);
    assert_string_equal(app->listen[1].addr, "127.0.0.1:8443");
    assert_string_equal(app->listen[1].tls_cert, g_cert);
    assert_non_null(strstr(app->listen[1].tls_key, "/certs/key.pem"));
    assert_true(app->listen[1].tls_key[0] == '/');

    assert_int_equal(app->limits.header_size, 32 * 1024);
    assert_int_equal(app->limits.body_size, 1024 * 1024);
    assert_int_equal(app->limits.header_timeout_ms, 5000);
    assert_int_equal(app->limits.idle_timeout_ms, 120000);
    assert_int_equal(app->limits.max_connections, 500);

    assert_int_equal(app->n_origins, 2); /* api + the implicit one */
    struct vg_conf_origin *o = &app->origins[0];
    assert_string_equal(o->name, "api");
    assert_int_equal(o->line, 14);
    assert_int_equal(o->col, 3);
    assert_int_equal(o->n_servers, 2);
    assert_string_equal(o->servers[0].url, "http://127.0.0.1:9001");
    assert_string_equal(o->servers[0].host, "127.0.0.1");
    assert_int_equal(o->servers[0].port, 9001);
    assert_int_equal(o->servers[0].weight, 1);
    assert_int_equal(o->servers[1].port, 9002);
    assert_int_equal(o->servers[1].weight, 2);
    assert_int_equal(o->balance, VG_CONF_BALANCE_HASH);
    assert_int_equal(o->hash_on, VG_CONF_HASH_HEADER);
    assert_string_equal(o->hash_name, "X-User");
    assert_true(o->health.enabled);
    assert_string_equal(o->health.path, "/healthz");
    assert_int_equal(o->health.interval_ms, 3000);
    assert_int_equal(o->health.timeout_ms, 500);
    assert_int_equal(o->health.rise, 4);
    assert_int_equal(o->health.fall, 5);
    assert_int_equal(o->health.expect_status_min, 200);
    assert_int_equal(o->health.expect_status_max, 299);
    assert_int_equal(o->connect_timeout_ms, 1000);
    assert_int_equal(o->read_timeout_ms, 20000);
    assert_int_equal(o->total_timeout_ms, 40000);
    assert_int_equal(o->keepalive_ms, 15000);
    assert_int_equal(o->retries, 2);
    assert_int_equal(o->max_fails, 5);
    assert_int_equal(o->fail_timeout_ms, 20000);
    assert_true(o->preserve_host);

    assert_int_equal(app->n_routes, 5);
    struct vg_conf_route *r = app->routes;
    assert_int_equal(r[0].match, VG_CONF_MATCH_PREFIX);
    assert_string_equal(r[0].path, "/api");
    assert_string_equal(r[0].host, "api.example.com");
    assert_int_equal(r[0].methods, VG_CONF_METHOD_GET | VG_CONF_METHOD_POST);
    assert_int_equal(r[0].action, VG_CONF_ACTION_PROXY);
    assert_int_equal(r[0].u.proxy.origin, 0);
    assert_string_equal(r[0].u.proxy.strip_prefix, "/api");
    assert_int_equal(r[0].line, 27);
    assert_int_equal(r[0].col, 5);

    assert_int_equal(r[1].match, VG_CONF_MATCH_EXACT);
    assert_string_equal(r[1].path, "/ping");
    assert_int_equal(r[1].action, VG_CONF_ACTION_RESPOND);
    assert_int_equal(r[1].u.respond.status, 201);
    assert_string_equal(r[1].u.respond.body, "pong\n");
    assert_string_equal(r[1].u.respond.content_type, "text/plain");

    assert_int_equal(r[2].action, VG_CONF_ACTION_REDIRECT);
    assert_int_equal(r[2].u.redirect.status, 301);
    assert_string_equal(r[2].u.redirect.location, "/new");

    assert_int_equal(r[3].match, VG_CONF_MATCH_GLOB);
    assert_string_equal(r[3].path, "/img/**/*.png");
    assert_int_equal(r[3].u.proxy.origin, 1);
    assert_null(r[3].u.proxy.strip_prefix);
    assert_string_equal(app->origins[1].name, "http://127.0.0.1:9100");
    assert_int_equal(app->origins[1].line, 37);
    assert_int_equal(app->origins[1].col, 12);

    assert_int_equal(r[4].action, VG_CONF_ACTION_STATIC);
    assert_string_equal(r[4].u.static_.dir, g_public);
    assert_string_equal(r[4].u.static_.index[0], "index.html");
    assert_null(r[4].u.static_.index[1]);
    vg_conf_app_destroy(app);
}

/* --- defaults ------------------------------------------------------------- */

static void test_defaults(void **state)
{
    struct vg_conf_app *app = load_ok(MIN);
    char mp[PATH_MAX + 32];
    snprintf(mp, sizeof(mp), "%s/verge.yaml", g_dir);
    assert_string_equal(app->manifest_path, mp);
    assert_int_equal(app->n_hosts, 0);
    assert_int_equal(app->n_listen, 0);
    assert_int_equal(app->n_origins, 0);
    assert_int_equal(app->limits.header_size, 16 * 1024);
    assert_int_equal(app->limits.body_size, 16 * 1024 * 1024);
    assert_int_equal(app->limits.header_timeout_ms, 10000);
    assert_int_equal(app->limits.idle_timeout_ms, 60000);
    assert_int_equal(app->limits.max_connections, 10000);
    assert_int_equal(app->limits.kv_global_size, 64u << 20);
    assert_int_equal(app->n_routes, 1);
    struct vg_conf_route *r = &app->routes[0];
    assert_null(r->host);
    assert_int_equal(r->match, VG_CONF_MATCH_PREFIX);
    assert_string_equal(r->path, "/");
    assert_int_equal(r->methods, VG_CONF_METHOD_ALL);
    assert_int_equal(r->action, VG_CONF_ACTION_RESPOND);
    assert_int_equal(r->u.respond.status, 200);
    assert_string_equal(r->u.respond.body, "ok");
    assert_string_equal(r->u.respond.content_type, "text/plain; charset=utf-8");
    assert_int_equal(r->line, 3);
    assert_int_equal(r->col, 5);
    vg_conf_app_destroy(app);
}

static void test_origin_defaults(void **state)
{
    struct vg_conf_app *app = load_ok(NAME "origins:\n  web:\n    servers: http://example.com\n"
                                           "routes:\n  - proxy: web\n");
    struct vg_conf_origin *o = &app->origins[0];
    assert_int_equal(app->n_origins, 1);
    assert_int_equal(o->n_servers, 1);
    assert_string_equal(o->servers[0].host, "example.com");
    assert_int_equal(o->servers[0].port, 80);
    assert_int_equal(o->servers[0].weight, 1);
    assert_int_equal(o->balance, VG_CONF_BALANCE_ROUND_ROBIN);
    assert_int_equal(o->hash_on, VG_CONF_HASH_CLIENT_IP);
    assert_null(o->hash_name);
    assert_false(o->health.enabled);
    assert_string_equal(o->health.path, "/");
    assert_int_equal(o->health.interval_ms, 2000);
    assert_int_equal(o->health.timeout_ms, 1000);
    assert_int_equal(o->health.rise, 2);
    assert_int_equal(o->health.fall, 3);
    assert_int_equal(o->health.expect_status_min, 200);
    assert_int_equal(o->health.expect_status_max, 399);
    assert_int_equal(o->connect_timeout_ms, 2000);
    assert_int_equal(o->read_timeout_ms, 30000);
    assert_int_equal(o->total_timeout_ms, 60000);
    assert_int_equal(o->keepalive_ms, 30000);
    assert_int_equal(o->retries, 1);
    assert_int_equal(o->max_fails, 3);
    assert_int_equal(o->fail_timeout_ms, 10000);
    assert_false(o->preserve_host);
    assert_int_equal(app->routes[0].u.proxy.origin, 0);
    assert_null(app->routes[0].u.proxy.strip_prefix);
    vg_conf_app_destroy(app);

    /* health: {} turns checks on with every default */
    app = load_ok(NAME "origins:\n  web: {servers: [http://a:1], health: {}}\nroutes:\n  - proxy: web\n");
    assert_true(app->origins[0].health.enabled);
    assert_int_equal(app->origins[0].health.interval_ms, 2000);
    vg_conf_app_destroy(app);
}

/* --- top level ------------------------------------------------------------ */

static void test_name(void **state)
{
    static const char *const ok[] = {
        "name: a\n" ROUTES, "name: 0\n" ROUTES, "name: my-app-2\n" ROUTES,
        "name: abcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefghij123\n" ROUTES, /* 63 */
    };
    static const struct err_case bad[] = {
        {"name: Hello\n" ROUTES, 1, 7, "expected an app name"},
        {"name: -x\n" ROUTES, 1, 7, "got '-x'"},
        {"name: a_b\n" ROUTES, 1, 7, "expected an app name"},
        {"name: abcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefghij1234\n" ROUTES, 1, 7, "1 to 63"},
        {"name: \"\"\n" ROUTES, 1, 7, "expected an app name"},
        {"name:\n" ROUTES, 1, 1, "got nothing"},
        {"name: [a]\n" ROUTES, 1, 7, "got a list"},
        {ROUTES, 1, 1, "missing required key 'name' in the manifest"},
        {NAME, 1, 1, "missing required key 'routes'"},
    };
    expect_oks(ok, VG_ARRAY_LEN(ok));
    expect_errs(bad, VG_ARRAY_LEN(bad));
}

static void test_unknown_keys(void **state)
{
    static const struct err_case bad[] = {
        {"nmae: t\n" ROUTES, 1, 1, "unknown key 'nmae' in the manifest; did you mean 'name'?"},
        {MIN "xyzzy: 1\n", 4, 1,
         "unknown key 'xyzzy' in the manifest (expected one of: name, hosts, listen, limits, "
         "hooks, origins, routes, rollout, subscriptions, placement)"},
        {MIN "limits:\n  header_sise: 1k\n", 5, 3,
         "unknown key 'header_sise' in 'limits'; did you mean 'header_size'?"},
        {NAME "routes:\n  - pth: /x\n    respond: ok\n", 3, 5, "unknown key 'pth' in a route; did you mean 'path'?"},
        {MIN "origins:\n  a:\n    server: [http://x:1]\n", 6, 5, "did you mean 'servers'?"},
        {NAME "routes:\n  - respond: {stauts: 200}\n", 3, 15,
         "unknown key 'stauts' in 'respond'; did you mean 'status'?"},
        {MIN "listen:\n  - {adr: ':80'}\n", 5, 6, "did you mean 'addr'?"},
        {NAME "routes:\n  - redirect: {too: /x}\n", 3, 16, "did you mean 'to'?"},
        {MIN "origins:\n  a:\n    servers: [http://x:1]\n    health: {intervall: 1s}\n", 7, 14,
         "did you mean 'interval'?"},
        {MIN "{a: 1}: x\n", 4, 1, "expected a name as key in the manifest, got a mapping"},
    };
    expect_errs(bad, VG_ARRAY_LEN(bad));
}

static void test_duplicate_keys(void **state)
{
    static const struct err_case bad[] = {
        {"name: t\nname: u\n" ROUTES, 2, 1, "duplicate key 'name' in the manifest (first given at line 1)"},
        {MIN "limits:\n  body_size: 1k\n  body_size: 2k\n", 6, 3, "duplicate key 'body_size' in 'limits'"},
        {MIN "origins:\n  a: {servers: [http://x:1]}\n  a: {servers: [http://y:1]}\n", 6, 3,
         "duplicate key 'a' in 'origins' (first given at line 5)"},
        {NAME "routes:\n  - path: /a\n    path: /b\n    respond: x\n", 4, 5, "duplicate key 'path' in a route"},
        {MIN ROUTES, 4, 1, "duplicate key 'routes'"},
    };
    expect_errs(bad, VG_ARRAY_LEN(bad));
}

static void test_wrong_types(void **state)
{
    static const struct err_case bad[] = {
        {MIN "limits: [1]\n", 4, 9, "expected a mapping for 'limits', got a list"},
        {MIN "limits: 5\n", 4, 9, "expected a mapping for 'limits', got a single value"},
        {MIN "limits:\n  idle_timeout: forever\n", 5, 17, "expected a duration like 5s"},
        {MIN "limits:\n  body_size: lots\n", 5, 14, "expected a size like 16k"},
        {MIN "limits:\n  max_connections: 10.5\n", 5, 20, "expected an integer between 1 and 1000000"},
        {NAME "routes: /x\n", 2, 9, "expected a list of routes for 'routes', got a single value"},
        {NAME "routes:\n  - /x\n", 3, 5, "expected a mapping for a route, got a single value"},
        {MIN "hosts: {a: 1}\n", 4, 8, "expected a value or a list for 'hosts', got a mapping"},
        {MIN "origins: [a]\n", 4, 10, "expected a mapping of origin names to origins"},
        {MIN "listen: [[a]]\n", 4, 10, "expected an address or a mapping with 'addr'"},
        {"- a\n", 1, 1, "expected a mapping for the manifest, got a list"},
        {"just text\n", 1, 1, "expected a mapping for the manifest, got a single value"},
        {MIN "origins:\n  a: {servers: [http://x:1], preserve_host: yes}\n", 5, 45, "expected true or false"},
        {MIN "origins:\n  a: {servers: [http://x:1], timeouts: 5s}\n", 5, 40, "expected a mapping for 'timeouts'"},
        {NAME "routes:\n  - respond: [a]\n", 3, 14, "expected a body text or a mapping"},
        {NAME "routes:\n  - proxy: {a: 1}\n", 3, 12, "expected an origin name or a URL"},
    };
    expect_errs(bad, VG_ARRAY_LEN(bad));
}

static void test_limits_bounds(void **state)
{
    static const char *const ok[] = {
        MIN "limits: {header_size: 1k}\n",     MIN "limits: {header_size: 256k}\n",
        MIN "limits: {header_size: 262144}\n", MIN "limits: {body_size: 0}\n",
        MIN "limits: {body_size: 64g}\n",      MIN "limits: {header_timeout: 1ms}\n",
        MIN "limits: {header_timeout: 24h}\n", MIN "limits: {idle_timeout: 1}\n",
        MIN "limits: {max_connections: 1}\n",  MIN "limits: {max_connections: 1000000}\n",
        MIN "limits: {kv_global_size: 16k}\n", MIN "limits: {kv_global_size: 8g}\n",
    };
    static const struct err_case bad[] = {
        {MIN "limits: {header_size: 1023}\n", 4, 23,
         "expected a size between 1k and 256k for 'header_size', got '1023'"},
        {MIN "limits: {header_size: 257k}\n", 4, 23, "got '257k'"},
        {MIN "limits: {header_size: 262145}\n", 4, 23, "between 1k and 256k"},
        {MIN "limits: {body_size: 65g}\n", 4, 21, "a size between 0 and 64g"},
        {MIN "limits: {header_timeout: 0}\n", 4, 26, "a duration between 1ms and 24h"},
        {MIN "limits: {header_timeout: 25h}\n", 4, 26, "a duration between 1ms and 24h"},
        {MIN "limits: {idle_timeout: 0s}\n", 4, 24, "between 1ms and 24h"},
        {MIN "limits: {max_connections: 0}\n", 4, 27, "between 1 and 1000000"},
        {MIN "limits: {max_connections: 1000001}\n", 4, 27, "between 1 and 1000000"},
        {MIN "limits: {max_connections: -1}\n", 4, 27, "between 1 and 1000000"},
        {MIN "limits: {max_connections: 99999999999999999999999}\n", 4, 27, "between 1 and 1000000"},
        {MIN "limits: {kv_global_size: 16383}\n", 4, 26, "a size between 16k and 8g for 'kv_global_size'"},
        {MIN "limits: {kv_global_size: 9g}\n", 4, 26, "between 16k and 8g"},
    };
    expect_oks(ok, VG_ARRAY_LEN(ok));
    expect_errs(bad, VG_ARRAY_LEN(bad));
    struct vg_conf_app *app = load_ok(MIN "limits: {header_size: 256k, body_size: 64g}\n");
    assert_int_equal(app->limits.header_size, 256 * 1024);
    assert_int_equal(app->limits.body_size, 64ull << 30);
    vg_conf_app_destroy(app);
    app = load_ok(MIN "limits: {kv_global_size: 1m}\n");
    assert_int_equal(app->limits.kv_global_size, 1u << 20);
    vg_conf_app_destroy(app);
}

static void test_hosts(void **state)
{
    struct vg_conf_app *app = load_ok(MIN "hosts: Example.COM\n");
    assert_int_equal(app->n_hosts, 1);
    assert_string_equal(app->hosts[0], "example.com");
    vg_conf_app_destroy(app);
    app = load_ok(MIN "hosts: [\"*\", \"*.Hello.test\", 127.0.0.1, my_host-1.local]\n");
    assert_int_equal(app->n_hosts, 4);
    assert_string_equal(app->hosts[0], "*");
    assert_string_equal(app->hosts[1], "*.hello.test");
    vg_conf_app_destroy(app);
    app = load_ok(MIN "hosts: []\n");
    assert_int_equal(app->n_hosts, 0);
    vg_conf_app_destroy(app);
    static const struct err_case bad[] = {
        {MIN "hosts: [ok.com, \"a*b.com\"]\n", 4, 17, "expected a host name like api.example.com"},
        {MIN "hosts: \"*.\"\n", 4, 8, "got '*.'"},
        {MIN "hosts: a..b\n", 4, 8, "expected a host name"},
        {MIN "hosts: \"\"\n", 4, 8, "expected a host name"},
        {MIN "hosts: \"exa mple\"\n", 4, 8, "expected a host name"},
        {MIN "hosts: example.com:80\n", 4, 8, "expected a host name"},
        {MIN "hosts: [~]\n", 4, 0, "got nothing"},
    };
    expect_errs(bad, VG_ARRAY_LEN(bad));
}

static void test_listen(void **state)
{
    struct vg_conf_app *app =
        load_ok(MIN "listen: ['127.0.0.1:8080', ':8081', '[::1]:8443', 'localhost:80', {addr: ':9443', tls: {cert: "
                    "certs/cert.pem, key: certs/key.pem}}]\n");
    assert_int_equal(app->n_listen, 5);
    assert_string_equal(app->listen[1].addr, ":8081");
    assert_string_equal(app->listen[2].addr, "[::1]:8443");
    assert_null(app->listen[3].tls_cert);
    assert_string_equal(app->listen[4].tls_cert, g_cert);
    vg_conf_app_destroy(app);

    char abs[PATH_MAX + 200];
    snprintf(abs, sizeof(abs), MIN "listen: {addr: ':1', tls: {cert: %s, key: certs/key.pem}}\n", g_cert);
    expect_err(abs, 4, 9, "expected a value or a list for 'listen', got a mapping");
    snprintf(abs, sizeof(abs), MIN "listen:\n  - addr: ':1'\n    tls: {cert: %s, key: certs/key.pem}\n", g_cert);
    app = load_ok(abs); /* absolute paths are used as they are */
    assert_string_equal(app->listen[0].tls_cert, g_cert);
    vg_conf_app_destroy(app);

    app = load_ok(MIN "listen: 0.0.0.0:80\n"); /* one address without a list */
    assert_int_equal(app->n_listen, 1);
    vg_conf_app_destroy(app);

    static const struct err_case bad[] = {
        {MIN "listen: [127.0.0.1]\n", 4, 10, "missing ':port'"},
        {MIN "listen: ['127.0.0.1:0']\n", 4, 10, "between 1 and 65535"},
        {MIN "listen: [':65536']\n", 4, 10, "between 1 and 65535"},
        {MIN "listen: ['::1:80']\n", 4, 10, "IPv6 addresses need brackets"},
        {MIN "listen: ['[zz]:80']\n", 4, 10, "invalid IPv6 address"},
        {MIN "listen: [':80', ':81', ':80']\n", 4, 24, "duplicate listen address ':80'"},
        {MIN "listen:\n  - addr: ':1'\n    tls: {cert: nope.pem, key: certs/key.pem}\n", 6, 17, "does not exist"},
        {MIN "listen:\n  - addr: ':1'\n    tls: {cert: certs, key: certs/key.pem}\n", 6, 17, "is not a regular file"},
        {MIN "listen:\n  - addr: ':1'\n    tls: {cert: certs/cert.pem}\n", 6, 10,
         "missing required key 'key' in 'tls'"},
        {MIN "listen:\n  - tls: {cert: certs/cert.pem, key: certs/key.pem}\n", 5, 5, "missing required key 'addr'"},
    };
    expect_errs(bad, VG_ARRAY_LEN(bad));
}

/* --- origins -------------------------------------------------------------- */

#define ORIGIN(body) MIN "origins:\n  a:\n" body /* origin keys start on line 6, col 5 */

static void test_origin_servers(void **state)
{
    struct vg_conf_app *app = load_ok(ORIGIN("    servers:\n      - http://example.com/\n      - HTTP://[::1]:9000\n"
                                             "      - {weight: 100, url: 'http://10.0.0.1:65535'}\n"));
    struct vg_conf_origin *o = &app->origins[0];
    assert_int_equal(o->n_servers, 3);
    assert_int_equal(o->servers[0].port, 80);
    assert_string_equal(o->servers[0].url, "http://example.com/");
    assert_string_equal(o->servers[1].host, "::1");
    assert_int_equal(o->servers[1].port, 9000);
    assert_int_equal(o->servers[2].weight, 100);
    assert_int_equal(o->servers[2].port, 65535);
    vg_conf_app_destroy(app);

    static const struct err_case bad[] = {
        {ORIGIN("    servers: [https://x:443]\n"), 6, 15, "https origins are not supported yet"},
        {ORIGIN("    servers: [ftp://x:21]\n"), 6, 15, "it must start with http://"},
        {ORIGIN("    servers: ['127.0.0.1:9000']\n"), 6, 15, "expected an origin URL like http://127.0.0.1:9000"},
        {ORIGIN("    servers: [http://x:1/api]\n"), 6, 15, "cannot have a path"},
        {ORIGIN("    servers: [http://x:0]\n"), 6, 15, "between 1 and 65535"},
        {ORIGIN("    servers: [http://x:70000]\n"), 6, 15, "between 1 and 65535"},
        {ORIGIN("    servers: ['http://:80']\n"), 6, 15, "missing host"},
        {ORIGIN("    servers: ['http://::1:80']\n"), 6, 15, "need brackets"},
        {ORIGIN("    servers: [{url: 'http://x:1', weight: 0}]\n"), 6, 43, "between 1 and 100"},
        {ORIGIN("    servers: [{url: 'http://x:1', weight: 101}]\n"), 6, 43, "between 1 and 100"},
        {ORIGIN("    servers: [{weight: 2}]\n"), 6, 15, "missing required key 'url' in a server"},
        {ORIGIN("    servers: []\n"), 6, 14, "'servers' of origin 'a' must list at least one server"},
        {ORIGIN("    balance: hash\n"), 6, 5, "missing required key 'servers' in origin 'a'"},
        {ORIGIN("    servers: [http://x:1, 'http://x:1/']\n"), 6, 27, "duplicate server x:1 in origin 'a'"},
        {ORIGIN("    servers: [[http://x:1]]\n"), 6, 15, "expected a URL or a mapping with 'url'"},
        {MIN "origins:\n  'my api': {servers: [http://x:1]}\n", 5, 3, "expected an origin name"},
        {MIN "origins:\n  [a]: {servers: [http://x:1]}\n", 5, 3, "expected an origin name"},
        {MIN "origins:\n  a:\n", 5, 3, "expected a mapping for origin 'a', got nothing"},
    };
    expect_errs(bad, VG_ARRAY_LEN(bad));
}

static void test_origin_balance(void **state)
{
    struct vg_conf_app *app = load_ok(MIN "origins:\n  a: {servers: [http://x:1], balance: least_conn}\n"
                                          "  b: {servers: [http://x:1], balance: hash, hash_on: cookie:sid}\n"
                                          "  c: {servers: [http://x:1], hash_on: client_ip, balance: hash}\n");
    assert_int_equal(app->origins[0].balance, VG_CONF_BALANCE_LEAST_CONN);
    assert_int_equal(app->origins[1].hash_on, VG_CONF_HASH_COOKIE);
    assert_string_equal(app->origins[1].hash_name, "sid");
    assert_int_equal(app->origins[2].hash_on, VG_CONF_HASH_CLIENT_IP);
    assert_null(app->origins[2].hash_name);
    vg_conf_app_destroy(app);

    static const struct err_case bad[] = {
        {ORIGIN("    servers: [http://x:1]\n    balance: round-robin\n"), 7, 14,
         "unknown balance 'round-robin'; did you mean 'round_robin'?"},
        {ORIGIN("    servers: [http://x:1]\n    balance: random\n"), 7, 14,
         "expected round_robin, least_conn or hash for 'balance', got 'random'"},
        {ORIGIN("    servers: [http://x:1]\n    hash_on: client_ip\n"), 7, 14, "'hash_on' needs 'balance: hash'"},
        {ORIGIN("    servers: [http://x:1]\n    balance: hash\n    hash_on: 'header:'\n"), 8, 14,
         "expected client_ip, header:NAME or cookie:NAME"},
        {ORIGIN("    servers: [http://x:1]\n    balance: hash\n    hash_on: ip\n"), 8, 14, "got 'ip'"},
        {ORIGIN("    servers: [http://x:1]\n    balance: hash\n    hash_on: 'header:a b'\n"), 8, 14, "header:NAME"},
    };
    expect_errs(bad, VG_ARRAY_LEN(bad));
}

static void test_origin_health_and_timeouts(void **state)
{
    struct vg_conf_app *app = load_ok(ORIGIN("    servers: [http://x:1]\n    health: {expect: 204, path: '/h?full=1'}\n"
                                             "    keepalive: 0\n    retries: 10\n    passive: {max_fails: 0}\n"));
    struct vg_conf_origin *o = &app->origins[0];
    assert_int_equal(o->health.expect_status_min, 204);
    assert_int_equal(o->health.expect_status_max, 204);
    assert_string_equal(o->health.path, "/h?full=1");
    assert_int_equal(o->keepalive_ms, 0);
    assert_int_equal(o->retries, 10);
    assert_int_equal(o->max_fails, 0);
    assert_int_equal(o->fail_timeout_ms, 10000);
    vg_conf_app_destroy(app);

    static const struct err_case bad[] = {
        {ORIGIN("    servers: [http://x:1]\n    health: {expect: 600}\n"), 7, 22, "expected a status or status range"},
        {ORIGIN("    servers: [http://x:1]\n    health: {expect: 399-200}\n"), 7, 22, "status range like 200-399"},
        {ORIGIN("    servers: [http://x:1]\n    health: {expect: 2xx}\n"), 7, 22, "got '2xx'"},
        {ORIGIN("    servers: [http://x:1]\n    health: {rise: 0}\n"), 7, 20, "between 1 and 100"},
        {ORIGIN("    servers: [http://x:1]\n    health: {fall: 101}\n"), 7, 20, "between 1 and 100"},
        {ORIGIN("    servers: [http://x:1]\n    health: {interval: 0}\n"), 7, 24, "a duration between 1ms and 24h"},
        {ORIGIN("    servers: [http://x:1]\n    health: {timeout: 1x}\n"), 7, 23, "expected a duration like 5s"},
        {ORIGIN("    servers: [http://x:1]\n    health: {path: healthz}\n"), 7, 20, "must start with '/'"},
        {ORIGIN("    servers: [http://x:1]\n    retries: 11\n"), 7, 14, "between 0 and 10"},
        {ORIGIN("    servers: [http://x:1]\n    keepalive: 2d\n"), 7, 16, "expected a duration"},
        {ORIGIN("    servers: [http://x:1]\n    timeouts: {total: 0}\n"), 7, 23, "between 1ms and 24h"},
        {ORIGIN("    servers: [http://x:1]\n    timeouts: {connect: 1s, conect: 2s}\n"), 7, 29,
         "unknown key 'conect' in 'timeouts'; did you mean 'connect'?"},
        {ORIGIN("    servers: [http://x:1]\n    passive: {fail_timeout: 0}\n"), 7, 29, "between 1ms and 24h"},
        {ORIGIN("    servers: [http://x:1]\n    passive: {max_fails: 1001}\n"), 7, 26, "between 0 and 1000"},
    };
    expect_errs(bad, VG_ARRAY_LEN(bad));
}

/* --- routes --------------------------------------------------------------- */

static void test_route_match(void **state)
{
    struct vg_conf_app *app = load_ok(NAME "routes:\n  - {exact: /login, respond: x}\n  - {glob: '/a/**', respond: x}\n"
                                           "  - {glob: '/img/*.png', respond: x}\n  - {path: /api/, respond: x}\n");
    assert_int_equal(app->routes[0].match, VG_CONF_MATCH_EXACT);
    assert_string_equal(app->routes[0].path, "/login");
    assert_int_equal(app->routes[1].match, VG_CONF_MATCH_GLOB);
    assert_string_equal(app->routes[2].path, "/img/*.png");
    assert_int_equal(app->routes[3].match, VG_CONF_MATCH_PREFIX);
    assert_string_equal(app->routes[3].path, "/api/");
    assert_int_equal(app->routes[3].line, 6);
    assert_int_equal(app->routes[3].col, 5);
    vg_conf_app_destroy(app);

    static const struct err_case bad[] = {
        {NAME "routes:\n  - path: api\n    respond: x\n", 3, 11, "must start with '/'"},
        {NAME "routes:\n  - path: /a*b\n    respond: x\n", 3, 11, "use 'glob:' for patterns"},
        {NAME "routes:\n  - exact: /a*\n    respond: x\n", 3, 12, "use 'glob:'"},
        {NAME "routes:\n  - glob: /a**\n    respond: x\n", 3, 11, "'**' must be a whole path segment"},
        {NAME "routes:\n  - glob: /a/***/b\n    respond: x\n", 3, 11, "whole path segment"},
        {NAME "routes:\n  - path: /a?b=1\n    respond: x\n", 3, 11, "must not contain a query"},
        {NAME "routes:\n  - path: /a/../b\n    respond: x\n", 3, 11, "'..' segments"},
        {NAME "routes:\n  - path: \"/a b\"\n    respond: x\n", 3, 11, "spaces or control characters"},
        {NAME "routes:\n  - respond: x\n  - path: /a\n    exact: /a\n    respond: x\n", 4, 5,
         "a route takes one of 'path', 'exact' or 'glob', but this one has 'path' and 'exact'"},
        {NAME "routes:\n  - {glob: /x, path: /y, respond: x}\n", 3, 5, "has 'glob' and 'path'"},
    };
    expect_errs(bad, VG_ARRAY_LEN(bad));
}

static void test_route_actions(void **state)
{
    static const struct err_case bad[] = {
        {NAME "routes:\n  - path: /x\n", 3, 5,
         "a route needs an action: one of 'static', 'proxy', 'respond', 'redirect' or 'handler'"},
        {NAME "routes:\n  - respond: a\n  - path: /x\n    methods: GET\n", 4, 5, "a route needs an action"},
        {NAME "routes:\n  - path: /x\n    respond: a\n    static: public\n", 3, 5,
         "a route takes exactly one action, but this one has 'respond' and 'static'"},
        {NAME "routes:\n  -   {proxy: a, redirect: /b}\n", 3, 7, "exactly one action"},
        {NAME "routes: []\n", 2, 9, "'routes' must list at least one route"},
        {NAME "routes:\n", 2, 1, "expected a list of routes for 'routes', got nothing"},
        {NAME "routes:\n  - respond: a\n    strip_prefix: /a\n", 4, 5,
         "'strip_prefix' only applies to routes with 'proxy'"},
        {NAME "routes:\n  - {}\n", 3, 5, "a route needs an action"},
    };
    expect_errs(bad, VG_ARRAY_LEN(bad));
}

static void test_route_methods_and_host(void **state)
{
    struct vg_conf_app *app =
        load_ok(NAME "routes:\n  - {methods: get, respond: x}\n  - {methods: [Post, OPTIONS, delete, PUT, PATCH, head]"
                     ", respond: x, host: '*.Example.com'}\n");
    assert_int_equal(app->routes[0].methods, VG_CONF_METHOD_GET);
    assert_int_equal(app->routes[1].methods, VG_CONF_METHOD_ALL & ~VG_CONF_METHOD_GET);
    assert_string_equal(app->routes[1].host, "*.example.com");
    vg_conf_app_destroy(app);
    static const struct err_case bad[] = {
        {NAME "routes:\n  - {methods: [GET, GTE], respond: x}\n", 3, 21, "unknown method 'GTE'; did you mean 'GET'?"},
        {NAME "routes:\n  - {methods: BREW, respond: x}\n", 3, 15,
         "unknown method 'BREW' (expected GET, HEAD, POST, PUT, DELETE, PATCH or OPTIONS)"},
        {NAME "routes:\n  - {methods: GETTTTTTTTTTTTTTTTTTTTTTTTT, respond: x}\n", 3, 15, "unknown method"},
        {NAME "routes:\n  - {methods: [], respond: x}\n", 3, 15, "'methods' must list at least one method"},
        {NAME "routes:\n  - {host: 'a b', respond: x}\n", 3, 12, "expected a host name"},
    };
    expect_errs(bad, VG_ARRAY_LEN(bad));
}

static void test_route_proxy(void **state)
{
    /* origins may come after the routes that use them */
    struct vg_conf_app *app = load_ok(
        NAME "routes:\n  - {path: /b, proxy: beta, strip_prefix: /b}\n  - {path: /u, proxy: 'http://127.0.0.1:9000'}\n"
             "  - {path: /v, proxy: 'http://127.0.0.1:9000'}\n  - {path: /w, proxy: 'http://[::1]'}\n"
             "  - {proxy: alpha}\n"
             "origins:\n  alpha: {servers: [http://a:1]}\n  beta: {servers: [http://b:2]}\n");
    assert_int_equal(app->n_origins, 4);
    assert_int_equal(app->routes[0].u.proxy.origin, 1);
    assert_string_equal(app->routes[0].u.proxy.strip_prefix, "/b");
    assert_int_equal(app->routes[1].u.proxy.origin, 2);
    assert_int_equal(app->routes[2].u.proxy.origin, 2); /* same URL, same implicit origin */
    assert_int_equal(app->routes[3].u.proxy.origin, 3);
    assert_int_equal(app->routes[4].u.proxy.origin, 0);
    struct vg_conf_origin *o = &app->origins[2];
    assert_string_equal(o->name, "http://127.0.0.1:9000");
    assert_int_equal(o->n_servers, 1);
    assert_string_equal(o->servers[0].host, "127.0.0.1");
    assert_int_equal(o->servers[0].port, 9000);
    assert_int_equal(o->balance, VG_CONF_BALANCE_ROUND_ROBIN);
    assert_int_equal(o->retries, 1);
    assert_int_equal(o->connect_timeout_ms, 2000);
    assert_false(o->health.enabled);
    assert_int_equal(app->origins[3].servers[0].port, 80);
    assert_string_equal(app->origins[3].servers[0].host, "::1");
    vg_conf_app_destroy(app);

    static const struct err_case bad[] = {
        {NAME "routes:\n  - proxy: apl\norigins:\n  api: {servers: [http://a:1]}\n", 3, 12,
         "unknown origin 'apl'; did you mean 'api'?"},
        {NAME "routes:\n  - proxy: web\n", 3, 12,
         "unknown origin 'web': declare it under 'origins:' or use a URL like http://127.0.0.1:9000"},
        {NAME "routes:\n  - proxy: https://x:1\n", 3, 12, "https origins are not supported yet"},
        {NAME "routes:\n  - proxy: http://x:1/api\n", 3, 12, "cannot have a path"},
        {NAME "routes:\n  - proxy: a\n    strip_prefix: api\norigins:\n  a: {servers: [http://a:1]}\n", 4, 19,
         "must start with '/'"},
    };
    expect_errs(bad, VG_ARRAY_LEN(bad));
}

/* --- cache ------------------------------------------------------------------ */

#define PX NAME "routes:\n  - proxy: http://127.0.0.1:9000\n" /* route on line 3; its keys at col 5 */

static void test_route_cache_forms(void **state)
{
    struct vg_conf_app *app = load_ok(PX);
    assert_false(app->routes[0].cache.enabled); /* off unless asked for */
    assert_true(app->routes[0].cache.honour_origin);
    vg_conf_app_destroy(app);

    static const char *const on[] = {PX "    cache: true\n", PX "    cache: on\n", PX "    cache: {}\n"};
    for (size_t i = 0; i < VG_ARRAY_LEN(on); i++) {
        app = load_ok(on[i]);
        struct vg_conf_cache *c = &app->routes[0].cache;
        assert_true(c->enabled);
        assert_true(c->honour_origin);
        assert_false(c->heuristic);
        assert_false(c->allow_set_cookie);
        assert_int_equal(c->ttl_s, 0);
        assert_int_equal(c->max_object_size, 8 << 20);
        assert_true(c->key_host);
        assert_true(c->key_query);
        assert_null(c->query_include);
        assert_null(c->query_exclude);
        assert_null(c->headers);
        assert_null(c->cookies);
        vg_conf_app_destroy(app);
    }
    static const char *const off[] = {PX "    cache: false\n", PX "    cache: OFF\n"};
    for (size_t i = 0; i < VG_ARRAY_LEN(off); i++) {
        app = load_ok(off[i]);
        assert_false(app->routes[0].cache.enabled);
        vg_conf_app_destroy(app);
    }
}

static void test_route_cache_mapping(void **state)
{
    struct vg_conf_app *app = load_ok(PX "    cache:\n"
                                         "      ttl: 2m\n"
                                         "      honour_origin: false\n"
                                         "      heuristic: true\n"
                                         "      allow_set_cookie: true\n"
                                         "      max_object_size: 64k\n"
                                         "      key:\n"
                                         "        host: false\n"
                                         "        query: {exclude: [utm_*, fbclid]}\n"
                                         "        headers: [Accept-Language]\n"
                                         "        cookies: ab\n");
    struct vg_conf_cache *c = &app->routes[0].cache;
    assert_true(c->enabled);
    assert_int_equal(c->ttl_s, 120);
    assert_false(c->honour_origin);
    assert_true(c->heuristic);
    assert_true(c->allow_set_cookie);
    assert_int_equal(c->max_object_size, 64 * 1024);
    assert_false(c->key_host);
    assert_true(c->key_query);
    assert_null(c->query_include);
    assert_string_equal(c->query_exclude[0], "utm_*");
    assert_string_equal(c->query_exclude[1], "fbclid");
    assert_null(c->query_exclude[2]);
    assert_string_equal(c->headers[0], "accept-language"); /* lower-cased */
    assert_null(c->headers[1]);
    assert_string_equal(c->cookies[0], "ab");
    assert_null(c->cookies[1]);
    vg_conf_app_destroy(app);

    app = load_ok(PX "    cache: {ttl: 8760h, key: {query: false}}\n");
    assert_int_equal(app->routes[0].cache.ttl_s, 8760 * 3600);
    assert_false(app->routes[0].cache.key_query);
    vg_conf_app_destroy(app);
    app = load_ok(PX "    cache: {key: {query: {include: [id, page]}}}\n");
    assert_string_equal(app->routes[0].cache.query_include[1], "page");
    vg_conf_app_destroy(app);
    /* cache may come before proxy */
    app = load_ok(NAME "routes:\n  - cache: on\n    proxy: http://127.0.0.1:9000\n");
    assert_true(app->routes[0].cache.enabled);
    vg_conf_app_destroy(app);
}

static void test_route_cache_errors(void **state)
{
    static const struct err_case bad[] = {
        {NAME "routes:\n  - respond: ok\n    cache: on\n", 4, 5, "'cache' only applies to routes with 'proxy'"},
        {NAME "routes:\n  - cache: on\n    static: public\n", 3, 5, "'cache' only applies to routes with 'proxy'"},
        {PX "    cache: yes\n", 4, 12, "expected true, false or a mapping of cache settings for 'cache', got 'yes'"},
        {PX "    cache:\n", 4, 0, "expected true, false or a mapping of cache settings for 'cache', got nothing"},
        {PX "    cache: [a]\n", 4, 12, "got a list"},
        {PX "    cache: {tll: 5s}\n", 4, 13, "unknown key 'tll' in 'cache'; did you mean 'ttl'?"},
        {PX "    cache: {ttl: soon}\n", 4, 18, "expected a duration like 5s, 250ms or 2m for 'ttl', got 'soon'"},
        {PX "    cache: {ttl: 1500ms}\n", 4, 18, "'ttl' must be a whole number of seconds"},
        {PX "    cache: {ttl: 9000h}\n", 4, 18, "expected a duration between"},
        {PX "    cache: {honour_origin: maybe}\n", 4, 28, "expected true or false for 'honour_origin'"},
        {PX "    cache: {max_object_size: 2g}\n", 4, 30, "expected a size between 1 and 1g"},
        {PX "    cache: {max_object_size: big}\n", 4, 30, "expected a size like 16k, 8m or 1g"},
        {PX "    cache: {key: [host]}\n", 4, 18, "expected a mapping with host, query, headers, cookies for 'key'"},
        {PX "    cache: {key: {hots: false}}\n", 4, 19, "unknown key 'hots' in 'key'; did you mean 'host'?"},
        {PX "    cache: {key: {query: {include: [a], exclude: [b]}}}\n", 4, 26,
         "'query' takes one of 'include' or 'exclude', not both"},
        {PX "    cache: {key: {query: {inclde: [a]}}}\n", 4, 27, "did you mean 'include'?"},
        {PX "    cache: {key: {query: maybe}}\n", 4, 26, "expected true or false for 'query'"},
        {PX "    cache: {key: {query: {exclude: ['a*b']}}}\n", 4, 37,
         "invalid name 'a*b' in 'exclude': '*' may only end a name"},
        {PX "    cache: {key: {query: {include: ['a=b']}}}\n", 4, 37, "invalid name 'a=b' in 'include'"},
        {PX "    cache: {key: {query: {include: []}}}\n", 4, 36, "'include' must list at least one name"},
        {PX "    cache: {key: {headers: ['x y']}}\n", 4, 29, "invalid name 'x y' in 'headers': expected a token"},
        {PX "    cache: {key: {cookies: [a, 'b;c']}}\n", 4, 32, "invalid name 'b;c' in 'cookies'"},
        {PX "    cache: {key: {cookies: {a: 1}}}\n", 4, 28, "expected a value or a list for 'cookies'"},
    };
    expect_errs(bad, VG_ARRAY_LEN(bad));
}

static void test_route_respond(void **state)
{
    struct vg_conf_app *app = load_ok(NAME "routes:\n  - respond: |\n      line one\n      line two\n"
                                           "  - respond: {status: 404}\n  - respond: {status: 100, body: ''}\n"
                                           "  - respond: {status: 599, content_type: application/json}\n");
    assert_string_equal(app->routes[0].u.respond.body, "line one\nline two\n");
    assert_int_equal(app->routes[0].u.respond.status, 200);
    assert_int_equal(app->routes[1].u.respond.status, 404);
    assert_string_equal(app->routes[1].u.respond.body, "");
    assert_string_equal(app->routes[1].u.respond.content_type, "text/plain; charset=utf-8");
    assert_int_equal(app->routes[2].u.respond.status, 100);
    assert_int_equal(app->routes[3].u.respond.status, 599);
    assert_string_equal(app->routes[3].u.respond.content_type, "application/json");
    vg_conf_app_destroy(app);
    static const struct err_case bad[] = {
        {NAME "routes:\n  - respond: {status: 99}\n", 3, 23, "expected an integer between 100 and 599"},
        {NAME "routes:\n  - respond: {status: 600}\n", 3, 23, "between 100 and 599 for 'status', got '600'"},
        {NAME "routes:\n  - respond: {status: ok}\n", 3, 23, "got 'ok'"},
        {NAME "routes:\n  - respond: {content_type: \"text/plain\\r\\nX-Evil: 1\"}\n", 3, 29,
         "'content_type' must not contain control characters"},
        {NAME "routes:\n  - respond: {content_type: ''}\n", 3, 29, "'content_type' must not be empty"},
        {NAME "routes:\n  - respond:\n", 3, 5, "expected a body text or a mapping"},
    };
    expect_errs(bad, VG_ARRAY_LEN(bad));
}

static void test_route_handler_and_hooks(void **state)
{
    struct vg_conf_app *app = load_ok(NAME "hooks: {on_request: edge.lua:pre}\n"
                                           "limits: {lua_memory: 8m, lua_instructions: 5000, lua_timeout: 2s}\n"
                                           "routes:\n  - handler: edge.lua:hello\n  - handler: edge.lua\n");
    assert_int_equal(app->routes[0].action, VG_CONF_ACTION_HANDLER);
    assert_string_equal(app->routes[0].u.handler.func, "hello");
    assert_string_equal(app->routes[0].u.handler.rel, "edge.lua");
    assert_true(strstr(app->routes[0].u.handler.file, "/edge.lua") != NULL);
    assert_string_equal(app->routes[1].u.handler.func, "handle");
    assert_string_equal(app->on_request.func, "pre");
    assert_null(app->on_response.file);
    assert_int_equal(app->limits.lua_memory, 8u << 20);
    assert_int_equal(app->limits.lua_instructions, 5000);
    assert_int_equal(app->limits.lua_timeout_ms, 2000);
    vg_conf_app_destroy(app);
    app = load_ok(NAME "routes:\n  - respond: x\n");
    assert_null(app->on_request.file);
    assert_int_equal(app->limits.lua_memory, 64u << 20);
    vg_conf_app_destroy(app);
    static const struct err_case bad[] = {
        {NAME "routes:\n  - handler: missing.lua:x\n", 3, 14, "does not exist"},
        {NAME "routes:\n  - handler: file.txt:x\n", 3, 14, "expected a Lua function as 'file.lua:name'"},
        {NAME "routes:\n  - handler: 'edge.lua:9x'\n", 3, 14, "'9x' is not a Lua function name"},
        {NAME "routes:\n  - handler: ../etc/x.lua\n", 3, 14, "x.lua"},
        {NAME "routes:\n  - handler: edge.lua\n    respond: x\n", 3, 5, "exactly one action"},
        {NAME "hooks: {on_reqest: edge.lua}\nroutes:\n  - respond: x\n", 2, 9, "did you mean 'on_request'"},
        {NAME "limits: {lua_memory: 1k}\nroutes:\n  - respond: x\n", 2, 22, "lua_memory"},
    };
    expect_errs(bad, VG_ARRAY_LEN(bad));
}

static void test_route_redirect(void **state)
{
    struct vg_conf_app *app =
        load_ok(NAME "routes:\n  - redirect: /new\n  - redirect: {to: 'https://x.test/a', status: 308}\n"
                     "  - redirect: {status: 303, to: /b}\n");
    assert_int_equal(app->routes[0].u.redirect.status, 302);
    assert_string_equal(app->routes[0].u.redirect.location, "/new");
    assert_int_equal(app->routes[1].u.redirect.status, 308);
    assert_string_equal(app->routes[1].u.redirect.location, "https://x.test/a");
    assert_int_equal(app->routes[2].u.redirect.status, 303);
    vg_conf_app_destroy(app);
    static const struct err_case bad[] = {
        {NAME "routes:\n  - redirect: {to: /a, status: 300}\n", 3, 32,
         "expected 301, 302, 303, 307 or 308 for 'status'"},
        {NAME "routes:\n  - redirect: {to: /a, status: 200}\n", 3, 32, "got '200'"},
        {NAME "routes:\n  - redirect: {status: 301}\n", 3, 15, "missing required key 'to' in 'redirect'"},
        {NAME "routes:\n  - redirect: '/a b'\n", 3, 15, "must not contain spaces"},
        {NAME "routes:\n  - redirect: \"/a\\nb\"\n", 3, 15, "control characters"},
        {NAME "routes:\n  - redirect: ''\n", 3, 15, "must not be empty"},
    };
    expect_errs(bad, VG_ARRAY_LEN(bad));
}

static void test_route_static(void **state)
{
    char yaml[PATH_MAX + 200];
    struct vg_conf_app *app = load_ok(NAME "routes:\n  - static: link\n  - static: {dir: ./public/, index: [a.html, "
                                           "index.htm]}\n  - static: {dir: public, index: home.html}\n"
                                           "  - static: {dir: public, index: []}\n");
    /* stored canonical: the symlink and the ./ are resolved */
    assert_string_equal(app->routes[0].u.static_.dir, g_public);
    assert_string_equal(app->routes[1].u.static_.dir, g_public);
    assert_string_equal(app->routes[1].u.static_.index[0], "a.html");
    assert_string_equal(app->routes[1].u.static_.index[1], "index.htm");
    assert_null(app->routes[1].u.static_.index[2]);
    assert_string_equal(app->routes[2].u.static_.index[0], "home.html");
    assert_null(app->routes[2].u.static_.index[1]);
    assert_null(app->routes[3].u.static_.index[0]);
    vg_conf_app_destroy(app);

    snprintf(yaml, sizeof(yaml), NAME "routes:\n  - static: '%s/'\n", g_public);
    app = load_ok(yaml);
    assert_string_equal(app->routes[0].u.static_.dir, g_public);
    vg_conf_app_destroy(app);

    static const struct err_case bad[] = {
        {NAME "routes:\n  - static: nope\n", 3, 13, "does not exist"},
        {NAME "routes:\n  - static: file.txt\n", 3, 13, "is not a directory"},
        {NAME "routes:\n  - static: ''\n", 3, 13, "expected a directory for 'static', got an empty string"},
        {NAME "routes:\n  - static: {index: a.html}\n", 3, 13, "missing required key 'dir' in 'static'"},
        {NAME "routes:\n  - static: {dir: public, index: [a/b.html]}\n", 3, 35, "expected a file name like index.html"},
        {NAME "routes:\n  - static: {dir: public, index: '..'}\n", 3, 34, "expected a file name"},
        {NAME "routes:\n  - static: [public]\n", 3, 13, "expected a directory for 'static', got a list"},
    };
    expect_errs(bad, VG_ARRAY_LEN(bad));
}

/* --- YAML-level problems and limits on untrusted input --------------------- */

static void test_yaml_syntax_errors(void **state)
{
    static const struct err_case bad[] = {
        {"name: @foo\n" ROUTES, 1, 7, "YAML syntax error: plain scalar cannot start with '@'"},
        {MIN "hosts: [a, b]]\n", 4, 14, "YAML syntax error"},
        {MIN "hosts: [a, b\n", 0, 0, "flow sequence without a closing bracket"},
        {MIN "anchors: &x a\nother: *x\n", 5, 8, "YAML aliases (*name) are not supported"},
        {MIN "---\nname: u\n", 4, 1, "only one YAML document is allowed"},
        {"", 1, 1, "the manifest is empty"},
        {"# only a comment\n", 1, 1, "the manifest is empty"},
    };
    expect_errs(bad, VG_ARRAY_LEN(bad));
    /* A NUL byte inside a quoted scalar (YAML escape) and in the raw input. */
    expect_err(NAME "routes:\n  - respond: \"a\\0b\"\n", 3, 14, "NUL");
    static const char raw[] = "name: t\0\n" ROUTES;
    struct vg_conf_app *app = NULL;
    struct vg_conf_error err;
    assert_int_equal(vg_conf_app_load_buffer(g_dir, "x.yaml", raw, sizeof(raw) - 1, &app, &err), VG_ECONF);
    assert_null(app);
}

/* Regression: libfyaml 0.7.12 never returned on malformed UTF-8 in a
 * directive line (found by fuzz_manifest). */
static void test_invalid_utf8_refused_not_hung(void **state)
{
    static const struct err_case bad[] = {
        {"%a \x97", 1, 4, "invalid UTF-8 (byte 0x97)"},
        {"%a \xc3\n", 1, 4, "byte 0xc3"},
        {"%a \xed\xa0\x80\n", 1, 4, "byte 0xed"}, /* surrogate */
        {"%a \xc0\x80\n", 1, 4, "byte 0xc0"},     /* overlong NUL */
        {"%a \xf4\x90\x80\x80\n", 1, 4, "byte 0xf4"},
        {"name: t\nhosts: [\xc3\xa9t\xc3\xa9, \xff]\n", 2, 14, "byte 0xff"}, /* columns count characters */
    };
    expect_errs(bad, VG_ARRAY_LEN(bad));
    struct vg_conf_app *app = load_ok("\xef\xbb\xbf" MIN); /* a byte order mark is fine */
    vg_conf_app_destroy(app);
    app = load_ok(NAME "routes:\n  - respond: \"h\xc3\xa9llo \xf0\x9f\x98\x80\"\n");
    assert_string_equal(app->routes[0].u.respond.body, "h\xc3\xa9llo \xf0\x9f\x98\x80");
    vg_conf_app_destroy(app);
}

/* Control characters (YAML allows tab, LF and CR only) are refused before
 * the parser sees them, with their position. */
static void test_control_characters_refused(void **state)
{
    static const struct {
        const char *yaml;
        size_t len;
        int line, col;
    } bad[] = {
        {"? [] :\t\0\n", 9, 1, 8},
        {"name: t\nroutes: \x01\n", 18, 2, 9},
        {"name: \x7f\n", 8, 1, 7},
        {"name: t\x1b[0m\n", 12, 1, 8},
    };
    for (size_t i = 0; i < VG_ARRAY_LEN(bad); i++) {
        struct vg_conf_app *app = NULL;
        struct vg_conf_error err;
        assert_int_equal(vg_conf_app_load_buffer(g_dir, "x.yaml", bad[i].yaml, bad[i].len, &app, &err), VG_ECONF);
        assert_null(app);
        assert_int_equal(err.line, bad[i].line);
        assert_int_equal(err.col, bad[i].col);
        assert_non_null(strstr(err.msg, "control character"));
    }
    struct vg_conf_app *app = load_ok(NAME "routes:\r\n\t\n  - respond: \"tab\\there\"\n"); /* tab, CR are fine */
    vg_conf_app_destroy(app);
}

/* Regression: libfyaml crashes freeing its parser after "? a:" followed by
 * tabs and ':' (found by fuzz_manifest); explicit keys are refused first. */
static void test_explicit_keys_refused(void **state)
{
    static const struct err_case bad[] = {
        {"? a:\t\t:\n", 1, 1, "explicit keys"},
        {"- ? a:\t\t:\n", 1, 3, "explicit keys"},
        {"name: t\nx:\n  ? a:\t\t:\n", 3, 3, "explicit keys"},
        {"? [] :\tx\n", 1, 1, "explicit keys"},
        {"?\n", 1, 1, "explicit keys"},
        /* a lone CR is a YAML line break: "\r? key" crashed libfyaml too */
        {"\r? me\tname:\t\t\t://\t\n://\t\tes\t", 1, 1, "carriage return without a line feed"},
        {"name: t\rx: 1\n", 1, 8, "carriage return without a line feed"},
    };
    expect_errs(bad, VG_ARRAY_LEN(bad));
    vg_conf_app_destroy(load_ok("name: t\r\nroutes:\r\n  - respond: ok\r\n")); /* CRLF is fine */
    struct vg_conf_app *app =
        load_ok(NAME "routes:\n  - respond: \"?x\"\n  - respond: |\n      what?\n"); /* not keys */
    vg_conf_app_destroy(app);
}

/* Regression: libfyaml 0.7.12 decodes '''' as ''' and leaks doing so
 * (found by fuzz_manifest); single-quoted text is decoded by conf itself. */
static void test_single_quoted_text(void **state)
{
#define Q10 "''''''''''"
    struct vg_conf_app *app = load_ok(NAME "routes:\n"
                                           "  - respond: 'it''s'\n"
                                           "  - respond: 'a''''b'\n"
                                           "  - respond: '" Q10 Q10 Q10 Q10 Q10 "'\n"
                                           "  - respond: 'one\n      two  \n\n      three '\n"
                                           "  - respond: ' keep  '\n"
                                           "  - respond: ''\n");
    assert_string_equal(app->routes[0].u.respond.body, "it's");
    assert_string_equal(app->routes[1].u.respond.body, "a''b");
    assert_string_equal(app->routes[2].u.respond.body, "'''''''''''''''''''''''''");
    assert_string_equal(app->routes[3].u.respond.body, "one two\nthree ");
    assert_string_equal(app->routes[4].u.respond.body, " keep  ");
    assert_string_equal(app->routes[5].u.respond.body, "");
    vg_conf_app_destroy(app);
    expect_err("n: [{rd: " Q10 Q10 Q10 Q10 Q10 "'': x", 1, 62, "YAML syntax error");
#undef Q10
}

/* Builds "key: [[[...]]]" with n brackets. */
static char *nested(int n)
{
    size_t len = strlen(MIN) + 8 + 2 * (size_t)n + 2;
    char *s = malloc(len);
    char *p = s + sprintf(s, MIN "hosts: ");
    memset(p, '[', (size_t)n);
    memset(p + n, ']', (size_t)n);
    strcpy(p + 2 * n, "\n");
    return s;
}

static void test_limit_depth(void **state)
{
    /* The top mapping is level 1 and hosts' list level 2: 31 brackets reach
     * level 32 (allowed, then rejected for its content), 32 reach 33. */
    char *s = nested(31);
    expect_err(s, 4, 9, "expected a host name");
    free(s);
    s = nested(32);
    expect_err(s, 4, 39, "nesting deeper than 32 levels");
    free(s);
    s = nested(100000); /* never recursed into, never a crash */
    expect_err(s, 4, 39, "nesting deeper than 32 levels");
    free(s);
}

static void test_limit_scalar(void **state)
{
    size_t n = 4096;
    char *s = malloc(n + 100);
    char *p = s + sprintf(s, NAME "routes:\n  - respond: ");
    memset(p, 'x', n);
    strcpy(p + n, "\n");
    struct vg_conf_app *app = load_ok(s);
    assert_int_equal(strlen(app->routes[0].u.respond.body), 4096);
    vg_conf_app_destroy(app);
    p[n] = 'x';
    strcpy(p + n + 1, "\n");
    expect_err(s, 3, 14, "value longer than 4096 bytes");
    free(s);
}

/* "name: t\n" + "routes:\n" + n times item. */
static char *many(const char *head, const char *item, size_t n, const char *tail)
{
    size_t len = strlen(head) + n * strlen(item) + strlen(tail) + 1;
    char *s = malloc(len), *p = s;
    p += sprintf(p, "%s", head);
    for (size_t i = 0; i < n; i++)
        p += sprintf(p, "%s", item);
    strcpy(p, tail);
    return s;
}

static void test_limit_counts(void **state)
{
    char *s = many(NAME "routes:\n", "  - respond: x\n", 1000, "");
    struct vg_conf_app *app = load_ok(s);
    assert_int_equal(app->n_routes, 1000);
    vg_conf_app_destroy(app);
    free(s);
    s = many(NAME "routes:\n", "  - respond: x\n", 1001, "");
    expect_err(s, 1003, 5, "'routes' has more than 1000 entries");
    free(s);

    /* every route with its own inline URL: 1000 implicit origins */
    char *p, *big = malloc(1000 * 64 + 100);
    p = big + sprintf(big, NAME "routes:\n");
    for (int i = 0; i < 1000; i++)
        p += sprintf(p, "  - proxy: http://h%d:%d\n", i, 1 + i);
    app = load_ok(big);
    assert_int_equal(app->n_origins, 1000);
    assert_int_equal(app->routes[999].u.proxy.origin, 999);
    vg_conf_app_destroy(app);
    free(big);

    s = many(ORIGIN("    servers:\n"), "      - http://x\n", 1001, "");
    expect_err(s, 1007, 9, "'servers' has more than 1000 entries");
    free(s);

    big = malloc(1001 * 48 + 100);
    p = big + sprintf(big, MIN "origins:\n");
    for (int i = 0; i < 1001; i++)
        p += sprintf(p, "  o%d: {servers: [http://x]}\n", i);
    expect_err(big, 1005, 3, "'origins' has more than 1000 entries");
    free(big);
}

static void test_limit_size(void **state)
{
    size_t max = 1u << 20;
    char *s = malloc(max + 2);
    size_t head = (size_t)sprintf(s, MIN "#");
    memset(s + head, 'x', max - head - 1);
    s[max - 1] = '\n';
    s[max] = '\0';
    struct vg_conf_app *app = NULL;
    struct vg_conf_error err;
    assert_int_equal(vg_conf_app_load_buffer(g_dir, "v.yaml", s, max, &app, &err), 0); /* exactly 1 MiB */
    vg_conf_app_destroy(app);
    app = NULL;
    s[max] = '\n';
    assert_int_equal(vg_conf_app_load_buffer(g_dir, "v.yaml", s, max + 1, &app, &err), VG_ECONF);
    assert_null(app);
    assert_non_null(strstr(err.msg, "larger than 1 MiB"));
    assert_int_equal(err.line, 0);
    free(s);
}

/* --- files ------------------------------------------------------------------ */

static void test_load_from_dir(void **state)
{
    char path[PATH_MAX + 64], buf[1300], given[PATH_MAX + 128];
    snprintf(path, sizeof(path), "%s/verge.yaml", g_dir);
    write_file(path, example);
    struct vg_conf_app *app = NULL;
    struct vg_conf_error err;
    assert_int_equal(vg_conf_app_load(g_dir, &app, &err), 0);
    assert_string_equal(app->name, "hello");
    assert_string_equal(app->manifest_path, path);
    vg_conf_app_destroy(app);

    /* errors name the file as given, trailing slash or not */
    write_file(path, MIN "limits: {header_size: 257k}\n");
    snprintf(given, sizeof(given), "%s/", g_dir);
    app = NULL;
    assert_int_equal(vg_conf_app_load(given, &app, &err), VG_ECONF);
    assert_null(app);
    assert_string_equal(err.file, path);
    assert_int_equal(err.line, 4);
    assert_int_equal(err.col, 23);
    vg_conf_error_format(&err, buf, sizeof(buf));
    snprintf(given, sizeof(given), "%.*s", (int)strlen(path), buf);
    assert_string_equal(given, path);
    assert_non_null(strstr(buf, ":4:23: expected a size between 1k and 256k for 'header_size', got '257k'"));

    /* a manifest over 1 MiB is refused before parsing */
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(MIN, f);
    while (ftell(f) <= 1 << 20)
        fputs("# padding padding padding padding padding padding padding\n", f);
    fclose(f);
    assert_int_equal(vg_conf_app_load(g_dir, &app, &err), VG_ECONF);
    assert_non_null(strstr(err.msg, "larger than 1 MiB"));
    vg_conf_error_format(&err, buf, sizeof(buf));
    snprintf(given, sizeof(given), "%s: the manifest is larger than 1 MiB", path);
    assert_string_equal(buf, given);
    unlink(path);

    assert_int_equal(vg_conf_app_load(g_dir, &app, &err), VG_ENOENT);
    assert_null(app);
    assert_string_equal(err.file, path);
    assert_int_equal(vg_conf_app_load("/nonexistent/dir", &app, NULL), VG_ENOENT);
    assert_int_equal(vg_conf_app_load_buffer("/nonexistent/dir", "v", MIN, strlen(MIN), &app, &err), VG_ENOENT);
    assert_null(app);
}

static void test_error_format_and_helpers(void **state)
{
    struct vg_conf_error err = {.file = "app/verge.yaml", .line = 3, .col = 7, .msg = "boom"};
    char buf[64];
    vg_conf_error_format(&err, buf, sizeof(buf));
    assert_string_equal(buf, "app/verge.yaml:3:7: boom");
    vg_conf_error_format(&err, buf, 8); /* truncates, always terminated */
    assert_string_equal(buf, "app/ver");

    assert_int_equal(vg_conf_method_from_str("GET", 3), VG_CONF_METHOD_GET);
    assert_int_equal(vg_conf_method_from_str("OPTIONS", 7), VG_CONF_METHOD_OPTIONS);
    assert_int_equal(vg_conf_method_from_str("GETX", 3), VG_CONF_METHOD_GET);
    assert_int_equal(vg_conf_method_from_str("get", 3), 0);
    assert_int_equal(vg_conf_method_from_str("TRACE", 5), 0);
    assert_string_equal(vg_conf_balance_name(VG_CONF_BALANCE_ROUND_ROBIN), "round_robin");
    assert_string_equal(vg_conf_balance_name(VG_CONF_BALANCE_LEAST_CONN), "least_conn");
    assert_string_equal(vg_conf_balance_name(VG_CONF_BALANCE_HASH), "hash");

    vg_conf_app_destroy(NULL);
    struct vg_conf_app *app = NULL;
    assert_int_equal(vg_conf_app_load_buffer(g_dir, NULL, "x: [", 4, &app, NULL), VG_ECONF); /* err optional */
    assert_null(app);
}

/* Long values are clipped and control bytes escaped in messages. */
static void test_messages_are_safe(void **state)
{
    char yaml[600];
    snprintf(yaml, sizeof(yaml), MIN "%0300d: 1\n", 7);
    expect_err(yaml, 4, 1, "...' in the manifest");
    expect_err(MIN "\"a\\x1bb\": 1\n", 4, 1, "unknown key 'a\\x1bb'");
}

/* --- rollout --------------------------------------------------------------- */

static void test_rollout(void **state)
{
    struct vg_conf_app *app = load_ok(MIN);
    assert_int_equal(app->rollout.canary, 1);
    assert_false(app->rollout.canary_percent);
    assert_int_equal(app->rollout.n_waves, 1);
    assert_int_equal(app->rollout.waves[0], 100);
    assert_int_equal(app->rollout.window_ms, 30000);
    assert_int_equal(app->rollout.min_requests, 20);
    assert_true(app->rollout.max_error_rate == 0.01);
    assert_true(app->rollout.max_p99_ratio == 1.5);
    assert_int_equal(app->rollout.healthy_timeout_ms, 60000);
    vg_conf_app_destroy(app);

    app = load_ok(MIN "rollout:\n  canary: \"10%\"\n  waves: [25, \"50%\", 100]\n  window: 1s\n"
                      "  min_requests: 0\n  max_error_rate: 2.5%\n  max_p99_ratio: 2\n  healthy_timeout: 250ms\n");
    assert_int_equal(app->rollout.canary, 10);
    assert_true(app->rollout.canary_percent);
    assert_int_equal(app->rollout.n_waves, 3);
    assert_int_equal(app->rollout.waves[0], 25);
    assert_int_equal(app->rollout.waves[1], 50);
    assert_int_equal(app->rollout.waves[2], 100);
    assert_int_equal(app->rollout.window_ms, 1000);
    assert_int_equal(app->rollout.min_requests, 0);
    assert_true(app->rollout.max_error_rate > 0.02499 && app->rollout.max_error_rate < 0.02501);
    assert_true(app->rollout.max_p99_ratio == 2);
    assert_int_equal(app->rollout.healthy_timeout_ms, 250);
    vg_conf_app_destroy(app);

    app = load_ok(MIN "rollout: {canary: 0, max_error_rate: 0, max_p99_ratio: 1, window: 0s}\n");
    assert_int_equal(app->rollout.canary, 0);
    assert_true(app->rollout.max_error_rate == 0);
    assert_int_equal(app->rollout.window_ms, 0);
    vg_conf_app_destroy(app);

    app = load_ok(MIN "rollout: {canary: 3, max_error_rate: 1}\n");
    assert_int_equal(app->rollout.canary, 3);
    assert_true(app->rollout.max_error_rate == 1);
    vg_conf_app_destroy(app);

    static const struct err_case bad[] = {
        {MIN "rollout:\n  canery: 1\n", 5, 3, "did you mean 'canary'"},
        {MIN "rollout:\n  canary: \"110%\"\n", 5, 11, "a percentage is 0% to 100%"},
        {MIN "rollout:\n  canary: -1\n", 5, 11, "node count"},
        {MIN "rollout:\n  canary: many\n", 5, 11, "'canary'"},
        {MIN "rollout:\n  waves: [50, 25, 100]\n", 5, 15, "must increase: 25% after 50%"},
        {MIN "rollout:\n  waves: [50, 90]\n", 5, 15, "the last wave must be 100%"},
        {MIN "rollout:\n  waves: []\n", 5, 10, "at least one wave"},
        {MIN "rollout:\n  waves: [0, 100]\n", 5, 11, "'waves'"},
        {MIN "rollout:\n  waves: [10, {a: 1}, 100]\n", 5, 15, "cumulative percentage"},
        {MIN "rollout:\n  window: soon\n", 5, 11, "a duration like 5s"},
        {MIN "rollout:\n  healthy_timeout: 1ms\n", 5, 20, "between 100ms and"},
        {MIN "rollout:\n  min_requests: x\n", 5, 17, "an integer between 0 and"},
        {MIN "rollout:\n  max_error_rate: 1.5\n", 5, 19, "a rate from 0 to 1"},
        {MIN "rollout:\n  max_error_rate: 1e-2\n", 5, 19, "a rate from 0 to 1"},
        {MIN "rollout:\n  max_error_rate: \"200%\"\n", 5, 19, "a rate from 0 to 1"},
        {MIN "rollout:\n  max_p99_ratio: 0.5\n", 5, 18, "a ratio from 1 to 1000"},
        {MIN "rollout:\n  max_p99_ratio: inf\n", 5, 18, "a ratio from 1 to 1000"},
        {MIN "rollout:\n  max_p99_ratio: [1]\n", 5, 18, "got a list"},
        {MIN "rollout: 5\n", 4, 10, "'rollout'"},
    };
    expect_errs(bad, VG_ARRAY_LEN(bad));
}

static void test_subscriptions(void **state)
{
    struct vg_conf_app *app = load_ok(MIN "subscriptions:\n"
                                          "  - subject: orders.*\n"
                                          "    handler: edge.lua:on_order\n"
                                          "  - subject: 'audit.>'\n"
                                          "    handler: edge.lua\n"
                                          "    deliver: all\n");
    assert_int_equal(app->n_subs, 2);
    assert_string_equal(app->subs[0].subject, "orders.*");
    assert_string_equal(app->subs[0].handler.func, "on_order");
    assert_false(app->subs[0].deliver_all);
    assert_int_equal(app->subs[0].line, 5);
    assert_string_equal(app->subs[1].subject, "audit.>");
    assert_string_equal(app->subs[1].handler.func, "handle");
    assert_true(app->subs[1].deliver_all);
    vg_conf_app_destroy(app);
    app = load_ok(MIN "subscriptions: []\n");
    assert_int_equal(app->n_subs, 0);
    vg_conf_app_destroy(app);
    static const struct err_case bad[] = {
        {MIN "subscriptions:\n  - subject: a\n    handler: edge.lua\n    delivr: all\n", 7, 5,
         "did you mean 'deliver'"},
        {MIN "subscriptions:\n  - subject: a\n    handler: edge.lua\n    deliver: al\n", 7, 14, "did you mean 'all'"},
        {MIN "subscriptions:\n  - subject: a..b\n    handler: edge.lua\n", 5, 14, "empty token"},
        {MIN "subscriptions:\n  - subject: .a\n    handler: edge.lua\n", 5, 14, "invalid subject"},
        {MIN "subscriptions:\n  - subject: 'a.>.b'\n    handler: edge.lua\n", 5, 14, "'>' may only be the last"},
        {MIN "subscriptions:\n  - subject: 'a*'\n    handler: edge.lua\n", 5, 14, "whole token"},
        {MIN "subscriptions:\n  - subject: 'a b'\n    handler: edge.lua\n", 5, 14, "space"},
        {MIN "subscriptions:\n  - subject: a\n", 5, 5, "handler"},
        {MIN "subscriptions:\n  - subject: a\n    handler: missing.lua:x\n", 6, 14, "does not exist"},
        {MIN "subscriptions:\n  - {subject: a, handler: edge.lua}\n  - {subject: a, handler: edge.lua:x}\n", 6, 15,
         "already subscribed"},
        {MIN "subscriptions: {subject: a}\n", 4, 16, "a list of subscriptions"},
        {MIN "subscription:\n  - subject: a\n", 4, 1, "did you mean 'subscriptions'"},
    };
    expect_errs(bad, VG_ARRAY_LEN(bad));
}

/* --- placement ------------------------------------------------------------- */

static void test_placement(void **state)
{
    struct vg_conf_app *app = load_ok(MIN);
    assert_int_equal(app->placement.mode, VG_CONF_PLACEMENT_NONE);
    vg_conf_app_destroy(app);
    app = load_ok(MIN "placement:\n  static: [fra, ams]\n  enforce: {allow_regions: [eu], residency: true}\n"
                      "  priority: 10\n  resources: {cpu: 250m, memory: 128Mi}\n");
    assert_int_equal(app->placement.mode, VG_CONF_PLACEMENT_STATIC);
    assert_int_equal(app->placement.n_static, 2);
    assert_string_equal(app->placement.static_locs[1], "ams");
    assert_true(app->placement.residency);
    assert_int_equal(app->placement.priority, 10);
    assert_int_equal(app->placement.cpu_m, 250);
    assert_int_equal(app->placement.memory, 128u << 20);
    vg_conf_app_destroy(app);
    app = load_ok(MIN "placement:\n  dynamic: {target: 20ms, percentile: 99, min_demand: 0.5rps, min: 2, max: 8, "
                      "scale_in_after: 10m}\n  enforce: {allow_countries: [DE, FR], require_tags: [pci]}\n"
                      "  resources: {cpu: \"1.5\", memory: 1Gi}\n");
    const struct vg_conf_placement *p = &app->placement;
    assert_int_equal(p->mode, VG_CONF_PLACEMENT_DYNAMIC);
    assert_int_equal(p->target_us, 20000);
    assert_int_equal(p->percentile, 99);
    assert_int_equal(p->min_demand_mrps, 500);
    assert_int_equal(p->min, 2);
    assert_int_equal(p->max, 8);
    assert_int_equal(p->scale_in_after_ms, 600000);
    assert_int_equal(p->n_allow_countries, 2);
    assert_string_equal(p->require_tags[0], "pci");
    assert_int_equal(p->cpu_m, 1500);
    assert_int_equal(p->memory, 1u << 30);
    vg_conf_app_destroy(app);
    app = load_ok(MIN "placement:\n  dynamic:\n");
    assert_int_equal(app->placement.target_us, 50000);
    assert_int_equal(app->placement.max, 10);
    vg_conf_app_destroy(app);
}

static void test_placement_errors(void **state)
{
    static const struct err_case bad[] = {
        {MIN "placement:\n  static: [frx]\n", 5, 12,
         "app t: placement.static: unknown location 'frx'; did you mean 'fra'?"},
        {MIN "placement:\n  static: [fra, lhr]\n  enforce: {allow_countries: [DE, FR]}\n", 5, 17,
         "app t: placement.static location lhr breaks an enforcement: country GB is not in enforce.allow_countries "
         "[DE, FR]"},
        {MIN "placement:\n  static: [lhr, ams]\n  enforce: {allow_countries: [DE, FR]}\n", 5, 11,
         "app t: placement.static lies entirely outside the enforcements"},
        {MIN "placement:\n  static: [fra]\n  enforce: {deny_regions: [eu]}\n", 5, 12,
         "region eu is in enforce.deny_regions [eu]"},
        {MIN "placement:\n  dynamic: {min: 4}\n  enforce: {allow_countries: [DE, FR]}\n", 5, 18,
         "app t: placement.dynamic: min 4 is above the 3 known locations that placement.enforce allows"},
        {MIN "placement:\n  dynamic: {min: 5, max: 2}\n", 5, 18, "app t: placement.dynamic: min 5 is above max 2"},
        {MIN "placement:\n  enforce: {allow_countries: [XX]}\n", 5, 12, "allows none of the"},
        {MIN "placement:\n  enforce: {allow_regions: [europe]}\n", 5, 29, "unknown region 'europe'"},
        {MIN "placement:\n  enforce: {allow_regions: [euu]}\n", 5, 29, "did you mean 'eu'?"},
        {MIN "placement:\n  enforce: {allow_countries: [de]}\n", 5, 31, "expected an ISO 3166-1 country code"},
        {MIN "placement:\n  static: [fra]\n  dynamic: {}\n", 6, 12, "both 'static' and 'dynamic'"},
        {MIN "placement:\n  dynamic: {target: 20 parsecs}\n", 5, 21, "'target'"},
        {MIN "placement:\n  dynamic: {min_demand: 5qps}\n", 5, 25, "expected a request rate like 5rps"},
        {MIN "placement:\n  dynamic: {percentile: 101}\n", 5, 25, "percentile"},
        {MIN "placement:\n  resources: {cpu: 250x}\n", 5, 20, "expected CPU as millicores"},
        {MIN "placement:\n  resources: {memory: 12Qi}\n", 5, 23, "expected a memory size like 128Mi"},
        {MIN "placement:\n  dynamic: {targte: 20ms}\n", 5, 13, "did you mean 'target'?"},
        {MIN "placement:\n  static: []\n", 5, 11, "'static' needs at least one location"},
    };
    expect_errs(bad, VG_ARRAY_LEN(bad));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_example_manifest),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_origin_defaults),
        cmocka_unit_test(test_name),
        cmocka_unit_test(test_unknown_keys),
        cmocka_unit_test(test_duplicate_keys),
        cmocka_unit_test(test_wrong_types),
        cmocka_unit_test(test_limits_bounds),
        cmocka_unit_test(test_hosts),
        cmocka_unit_test(test_listen),
        cmocka_unit_test(test_origin_servers),
        cmocka_unit_test(test_origin_balance),
        cmocka_unit_test(test_origin_health_and_timeouts),
        cmocka_unit_test(test_route_match),
        cmocka_unit_test(test_route_actions),
        cmocka_unit_test(test_route_methods_and_host),
        cmocka_unit_test(test_route_proxy),
        cmocka_unit_test(test_route_cache_forms),
        cmocka_unit_test(test_route_cache_mapping),
        cmocka_unit_test(test_route_cache_errors),
        cmocka_unit_test(test_route_respond),
        cmocka_unit_test(test_route_handler_and_hooks),
        cmocka_unit_test(test_route_redirect),
        cmocka_unit_test(test_route_static),
        cmocka_unit_test(test_yaml_syntax_errors),
        cmocka_unit_test(test_invalid_utf8_refused_not_hung),
        cmocka_unit_test(test_control_characters_refused),
        cmocka_unit_test(test_explicit_keys_refused),
        cmocka_unit_test(test_single_quoted_text),
        cmocka_unit_test(test_limit_depth),
        cmocka_unit_test(test_limit_scalar),
        cmocka_unit_test(test_limit_counts),
        cmocka_unit_test(test_limit_size),
        cmocka_unit_test(test_load_from_dir),
        cmocka_unit_test(test_error_format_and_helpers),
        cmocka_unit_test(test_messages_are_safe),
        cmocka_unit_test(test_rollout),
        cmocka_unit_test(test_subscriptions),
        cmocka_unit_test(test_placement),
        cmocka_unit_test(test_placement_errors),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
