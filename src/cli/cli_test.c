/* verge test [DIR]: runs the app's test/NAME.lua files against a real local node.
 *
 * The node is this same binary (`verge node`) on a free 127.0.0.1 port with
 * one worker, started for the run and stopped after it, so tests exercise
 * exactly what `verge node` serves (routing, Lua sandbox and limits, proxy).
 * Test files run in a plain Lua state of their own (they are the
 * developer's code, on the developer's machine) with:
 *
 *   test("name", function() ... end)      register a test (or define test_* functions)
 *   verge.test.request{method=, path=, headers=, body=}  -> {status=, headers=, body=}
 *   verge.test.eq(actual, expected [, msg]), verge.test.ok(v [, msg]),
 *   verge.test.contains(s, part [, msg])
 *
 * A failure names the line of the test file where it happened. Exit status:
 * 0 when every test passed, 1 otherwise. */
#include "cli.h"
#include "cli_int.h"
#include "conf/conf.h"
#include "fn/fn.h"
#include "http/phr.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <glob.h>
#include <jansson.h>
#include <lauxlib.h>
#include <lualib.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct run {
    uint16_t port;
    const char *file; /* the test file being run */
    bool json;
    json_t *report;
    unsigned passed, failed;
};

static struct run *run_of(lua_State *L)
{
    return *(struct run **)lua_getextraspace(L);
}

/* ---- the local node -------------------------------------------------------------- */

static uint16_t free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &len) != 0) {
        if (fd >= 0)
            close(fd);
        return 0;
    }
    close(fd);
    return ntohs(sa.sin_port);
}

/* verge.kv's local state of a test run: a fresh directory per run, so
 * that tests never see what an earlier run (or the app's own node) left. */
static char state_dir[64];

static void state_dir_remove(void)
{
    char p[96];
    if (!state_dir[0])
        return;
    snprintf(p, sizeof(p), "%s/data.mdb", state_dir);
    unlink(p);
    snprintf(p, sizeof(p), "%s/lock.mdb", state_dir);
    unlink(p);
    rmdir(state_dir);
    state_dir[0] = 0;
}

static pid_t start_node(const char *dir, uint16_t port, int logfd)
{
    char listen[32];
    snprintf(listen, sizeof(listen), "127.0.0.1:%u", port);
    snprintf(state_dir, sizeof(state_dir), "/tmp/verge-test-state-XXXXXX");
    if (!mkdtemp(state_dir))
        snprintf(state_dir, sizeof(state_dir), "/tmp/verge-test-state-%d", (int)getpid());
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    dup2(logfd, STDERR_FILENO);
    dup2(logfd, STDOUT_FILENO);
    execl("/proc/self/exe", "verge", "node", "--app", dir, "--listen", listen, "--workers", "1", "--access-log", "off",
          "--log-format", "text", "--log-level", "warn", "--dev", "--state-dir", state_dir, (char *)NULL);
    _exit(127);
}

static void stop_node(pid_t pid)
{
    kill(pid, SIGTERM);
    for (int i = 0; i < 100; i++) {
        if (waitpid(pid, NULL, WNOHANG) == pid) {
            state_dir_remove();
            return;
        }
        usleep(20000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    state_dir_remove();
}

/* Appends to a malloc'd string (no Lua errors may happen while it lives). */
static void cat(char **buf, size_t *len, const char *s, size_t n)
{
    *buf = vg_xrealloc(*buf, *len + n + 1);
    memcpy(*buf + *len, s, n);
    *len += n;
}

/* Headers must be strings that cannot split the request; checked before
 * anything is allocated, since luaL_error does not return. */
static bool check_headers(lua_State *L, int t, bool *has_host)
{
    lua_pushnil(L);
    while (lua_next(L, t)) {
        if (lua_type(L, -2) != LUA_TSTRING || (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER))
            luaL_error(L, "verge.test.request: headers must map strings to strings");
        const char *k = lua_tostring(L, -2);
        size_t vl;
        const char *v = lua_tolstring(L, -1, &vl); /* a number value becomes a string in place: fine */
        if (strpbrk(k, "\r\n: ") || memchr(v, '\r', vl) || memchr(v, '\n', vl))
            luaL_error(L, "verge.test.request: header %s: no CR, LF, ':' or space in names, no CR or LF in values", k);
        *has_host = *has_host || strcasecmp(k, "host") == 0;
        lua_pop(L, 1);
    }
    return true;
}

static char *build_request(lua_State *L, int headers, const char *method, const char *path, const char *body,
                           size_t blen, bool has_host, size_t *len)
{
    char *buf = NULL, line[64];
    *len = 0;
    cat(&buf, len, method, strlen(method));
    cat(&buf, len, " ", 1);
    cat(&buf, len, path, strlen(path));
    cat(&buf, len, " HTTP/1.1\r\nConnection: close\r\n", 30);
    int n = snprintf(line, sizeof(line), "Content-Length: %zu\r\n", blen);
    cat(&buf, len, line, (size_t)n);
    if (!has_host)
        cat(&buf, len, "Host: localhost\r\n", 17);
    if (headers) {
        lua_pushnil(L);
        while (lua_next(L, headers)) {
            size_t kl, vl;
            const char *k = lua_tolstring(L, -2, &kl), *v = lua_tolstring(L, -1, &vl);
            cat(&buf, len, k, kl);
            cat(&buf, len, ": ", 2);
            cat(&buf, len, v, vl);
            cat(&buf, len, "\r\n", 2);
            lua_pop(L, 1);
        }
    }
    cat(&buf, len, "\r\n", 2);
    cat(&buf, len, body, blen);
    return buf;
}

static void push_response(lua_State *L, struct vg__cli_response *r)
{
    lua_createtable(L, 0, 3);
    lua_pushinteger(L, r->status);
    lua_setfield(L, -2, "status");
    lua_createtable(L, 0, (int)r->n_headers);
    for (size_t i = 0; i < r->n_headers; i++) {
        char name[256];
        size_t n = r->headers[i].name_len < sizeof(name) ? r->headers[i].name_len : sizeof(name) - 1;
        for (size_t k = 0; k < n; k++)
            name[k] = (char)tolower((unsigned char)r->headers[i].name[k]);
        lua_pushlstring(L, name, n);
        lua_pushlstring(L, r->headers[i].value, r->headers[i].value_len);
        lua_rawset(L, -3);
    }
    lua_setfield(L, -2, "headers");
    lua_pushlstring(L, r->body, r->body_len);
    lua_setfield(L, -2, "body");
}

/* verge.test.request{method=, path=, headers=, body=} */
static int l_request(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_getfield(L, 1, "method");
    const char *method = luaL_optstring(L, -1, "GET");
    lua_getfield(L, 1, "path");
    const char *path = luaL_optstring(L, -1, "/");
    lua_getfield(L, 1, "body");
    size_t blen = 0;
    const char *body = luaL_optlstring(L, -1, "", &blen);
    if (strpbrk(method, "\r\n ") || strpbrk(path, "\r\n "))
        return luaL_error(L, "verge.test.request: no spaces, CR or LF in method or path");
    bool has_host = false;
    int headers = lua_getfield(L, 1, "headers") == LUA_TTABLE ? lua_gettop(L) : 0;
    if (headers)
        check_headers(L, headers, &has_host);
    size_t rlen;
    char *raw = build_request(L, headers, method, path, body, blen, has_host, &rlen);
    int fd = vg__cli_dial("127.0.0.1", run_of(L)->port);
    struct vg__cli_response r = {0};
    const char *err = fd < 0                             ? "cannot connect to the local node"
                      : !vg__cli_send_all(fd, raw, rlen) ? "cannot send the request"
                                                         : vg__cli_read_response(fd, &r);
    if (fd >= 0)
        close(fd);
    free(raw);
    if (err) {
        free(r.buf);
        return luaL_error(L, "%s %s: %s", method, path, err);
    }
    push_response(L, &r);
    free(r.buf);
    return 1;
}

/* ---- assertions --------------------------------------------------------------------------- */

static void show(lua_State *L, int idx)
{
    if (lua_type(L, idx) == LUA_TSTRING)
        lua_pushfstring(L, "%q", lua_tostring(L, idx)); /* quoted: "" and " " stay visible */
    else
        luaL_tolstring(L, idx, NULL);
}

static int fail_with(lua_State *L, int msg_idx, const char *what)
{
    if (!lua_isnoneornil(L, msg_idx))
        return luaL_error(L, "%s: %s", lua_tostring(L, msg_idx), what);
    return luaL_error(L, "%s", what);
}

static int l_eq(lua_State *L)
{
    luaL_checkany(L, 2);
    if (lua_rawequal(L, 1, 2))
        return 0;
    show(L, 2);
    show(L, 1);
    lua_pushfstring(L, "expected %s, got %s", lua_tostring(L, -2), lua_tostring(L, -1));
    return fail_with(L, 3, lua_tostring(L, -1));
}

static int l_ok(lua_State *L)
{
    if (lua_toboolean(L, 1))
        return 0;
    show(L, 1);
    lua_pushfstring(L, "expected a true value, got %s", lua_tostring(L, -1));
    return fail_with(L, 2, lua_tostring(L, -1));
}

static int l_contains(lua_State *L)
{
    size_t n, m;
    const char *s = luaL_checklstring(L, 1, &n), *part = luaL_checklstring(L, 2, &m);
    if (memmem(s, n, part, m))
        return 0;
    show(L, 1);
    lua_pushfstring(L, "expected to contain \"%s\", got %s", part, lua_tostring(L, -1));
    return fail_with(L, 3, lua_tostring(L, -1));
}

/* test("name", fn): registered in order in the registry list "tests". */
static int l_test(lua_State *L)
{
    luaL_checkstring(L, 1);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    lua_getfield(L, LUA_REGISTRYINDEX, "verge.tests");
    lua_createtable(L, 2, 0);
    lua_pushvalue(L, 1);
    lua_rawseti(L, -2, 1);
    lua_pushvalue(L, 2);
    lua_rawseti(L, -2, 2);
    lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
    return 0;
}

/* Message handler: make sure the message names the test file's line. */
static int on_error(lua_State *L)
{
    const char *msg = luaL_tolstring(L, 1, NULL);
    const char *file = run_of(L)->file;
    lua_Debug ar;
    for (int level = 1; lua_getstack(L, level, &ar); level++) {
        lua_getinfo(L, "Sl", &ar);
        if (ar.source[0] == '@' && strcmp(ar.source + 1, file) == 0 && ar.currentline > 0) {
            char where[600];
            snprintf(where, sizeof(where), "%s:%d:", file, ar.currentline);
            if (strncmp(msg, where, strlen(where)) != 0)
                lua_pushfstring(L, "%s %s", where, msg);
            return 1;
        }
    }
    return 1;
}

/* ---- running ---------------------------------------------------------------------------- */

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static lua_State *new_state(struct run *r)
{
    lua_State *L = luaL_newstate();
    *(struct run **)lua_getextraspace(L) = r;
    luaL_openlibs(L);
    static const luaL_Reg t[] = {
        {"request", l_request}, {"eq", l_eq}, {"ok", l_ok}, {"contains", l_contains}, {NULL, NULL}};
    lua_newtable(L);
    luaL_newlib(L, t);
    lua_setfield(L, -2, "test");
    lua_setglobal(L, "verge");
    lua_pushcfunction(L, l_test);
    lua_setglobal(L, "test");
    lua_newtable(L);
    lua_setfield(L, LUA_REGISTRYINDEX, "verge.tests");
    return L;
}

struct found {
    int line, idx;
};

static int by_line(const void *a, const void *b)
{
    return ((const struct found *)a)->line - ((const struct found *)b)->line;
}

/* Global test_* functions join the registered ones, in source order. */
static void collect_globals(lua_State *L)
{
    struct found found[512];
    size_t n = 0;
    lua_getfield(L, LUA_REGISTRYINDEX, "verge.tests");
    int list = lua_gettop(L);
    lua_newtable(L);
    int tmp = lua_gettop(L);
    lua_pushglobaltable(L);
    lua_pushnil(L);
    while (lua_next(L, -2)) {
        if (n < 512 && lua_type(L, -2) == LUA_TSTRING && strncmp(lua_tostring(L, -2), "test_", 5) == 0 &&
            lua_isfunction(L, -1)) {
            lua_Debug ar;
            lua_pushvalue(L, -1);
            lua_getinfo(L, ">S", &ar);
            found[n] = (struct found){ar.linedefined, (int)n + 1};
            lua_createtable(L, 2, 0);
            lua_pushvalue(L, -3);
            lua_rawseti(L, -2, 1);
            lua_pushvalue(L, -2);
            lua_rawseti(L, -2, 2);
            lua_rawseti(L, tmp, (lua_Integer)++n);
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    qsort(found, n, sizeof(found[0]), by_line);
    for (size_t i = 0; i < n; i++) {
        lua_rawgeti(L, tmp, found[i].idx);
        lua_rawseti(L, list, (lua_Integer)lua_rawlen(L, list) + 1);
    }
    lua_pop(L, 2);
}

static void report(struct run *r, json_t *tests, const char *name, bool ok, double ms, const char *err)
{
    if (ok)
        r->passed++;
    else
        r->failed++;
    if (r->json) {
        json_t *t = json_pack("{s:s,s:b,s:f}", "name", name, "ok", ok, "ms", ms);
        if (err)
            json_object_set_new(t, "error", json_string(err));
        json_array_append_new(tests, t);
        return;
    }
    printf("  %s %s (%.0f ms)\n", ok ? "ok  " : "FAIL", name, ms);
    if (err)
        printf("       %s\n", err);
}

static void run_file(struct run *r, const char *path)
{
    r->file = path;
    lua_State *L = new_state(r);
    json_t *tests = json_array();
    if (!r->json)
        printf("%s\n", path);
    lua_pushcfunction(L, on_error);
    if (luaL_loadfile(L, path) != LUA_OK || lua_pcall(L, 0, 0, 1) != LUA_OK) {
        report(r, tests, "(loading the file)", false, 0, lua_tostring(L, -1));
    } else {
        collect_globals(L);
        lua_getfield(L, LUA_REGISTRYINDEX, "verge.tests");
        lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
        for (lua_Integer i = 1; i <= n; i++) {
            lua_rawgeti(L, -1, i);
            lua_rawgeti(L, -1, 1);
            const char *name = lua_tostring(L, -1);
            lua_pushcfunction(L, on_error);
            lua_rawgeti(L, -3, 2);
            double t0 = now_ms();
            int rc = lua_pcall(L, 0, 0, -2);
            report(r, tests, name, rc == LUA_OK, now_ms() - t0, rc == LUA_OK ? NULL : lua_tostring(L, -1));
            lua_pop(L, rc == LUA_OK ? 3 : 4);
        }
    }
    if (r->json)
        json_array_append_new(r->report, json_pack("{s:s,s:o}", "file", path, "tests", tests));
    else
        json_decref(tests);
    lua_close(L);
}

static bool wait_ready(uint16_t port, pid_t pid)
{
    static const char req[] = "GET /_verge/health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    for (int i = 0; i < 200; i++) {
        if (waitpid(pid, NULL, WNOHANG) == pid)
            return false;
        int fd = vg__cli_dial("127.0.0.1", port);
        if (fd >= 0) {
            struct vg__cli_response r = {0};
            bool ok = vg__cli_send_all(fd, req, sizeof(req) - 1) && !vg__cli_read_response(fd, &r) && r.status == 200;
            free(r.buf);
            close(fd);
            if (ok)
                return true;
        }
        usleep(25000);
    }
    return false;
}

static void print_log(FILE *log)
{
    char line[1024];
    rewind(log);
    while (fgets(line, sizeof(line), log))
        fprintf(stderr, "  | %s", line);
}

static int test_usage(FILE *f)
{
    fprintf(f, "usage: verge test [--json] [DIR]\n"
               "  runs DIR/test/*.lua (default DIR: the current directory) against a local node serving DIR;\n"
               "  exits 1 if a test fails\n");
    return f == stdout ? 0 : 2;
}

/* Validates the app first, so a broken manifest or handler reads as such. */
static bool app_loads(const char *dir)
{
    struct vg_conf_app *app;
    struct vg_conf_error err;
    int rc = vg_conf_app_load(dir, &app, &err);
    if (rc == 0) {
        rc = vg_fn_check(app, &err);
        vg_conf_app_destroy(app);
    }
    if (rc == 0)
        return true;
    char msg[1200];
    vg_conf_error_format(&err, msg, sizeof(msg));
    fprintf(stderr, "%s\n", msg);
    return false;
}

static int run_all(struct run *r, const char *dir, glob_t *g)
{
    FILE *log = tmpfile();
    r->port = free_port();
    if (!log || !r->port) {
        fprintf(stderr, "verge test: cannot set up a local node\n");
        return 1;
    }
    pid_t pid = start_node(dir, r->port, fileno(log));
    if (pid < 0 || !wait_ready(r->port, pid)) {
        fprintf(stderr, "verge test: the local node did not start; its log:\n");
        print_log(log);
        if (pid > 0)
            stop_node(pid);
        fclose(log);
        return 1;
    }
    for (size_t i = 0; i < g->gl_pathc; i++)
        run_file(r, g->gl_pathv[i]);
    stop_node(pid);
    if (r->failed && !r->json && ftell(log) > 0) {
        fprintf(stderr, "node log:\n");
        print_log(log);
    }
    fclose(log);
    return 0;
}

int vg_cli_test(int argc, char **argv)
{
    struct run r = {0};
    const char *dir = ".";
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0)
            r.json = true;
        else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
            return test_usage(stdout);
        else if (argv[i][0] == '-')
            return test_usage(stderr);
        else
            dir = argv[i];
    }
    if (!app_loads(dir))
        return 1;
    char pattern[4096];
    snprintf(pattern, sizeof(pattern), "%s/test/*.lua", dir);
    glob_t g;
    if (glob(pattern, 0, NULL, &g) != 0) {
        printf("verge test: no tests (%s)\n", pattern);
        return 0;
    }
    r.report = json_array();
    int rc = run_all(&r, dir, &g);
    globfree(&g);
    if (r.json) {
        json_t *out = json_pack("{s:o,s:i,s:i}", "files", r.report, "passed", r.passed, "failed", r.failed);
        json_dumpf(out, stdout, JSON_INDENT(2));
        printf("\n");
        json_decref(out);
    } else {
        json_decref(r.report);
        printf("%u passed, %u failed\n", r.passed, r.failed);
    }
    return rc || r.failed ? 1 : 0;
}
