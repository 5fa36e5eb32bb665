/* The Lua runtime's calling side, without a node: handlers run on real
 * h2o requests (a stand-in connection, the response captured by an output
 * stream of the test's), suspended calls wake from a libuv loop, and
 * verge.fetch goes to a fetcher the test drives by hand. Covers coroutine
 * scheduling (a sleeping call does not hold up another, fetch_all results
 * keep their order whatever order they complete in), per-call limits
 * (instructions, memory, wall clock, with the count hook on from a call's
 * first instruction and armed late by the CPU ticker) and the end of a
 * request while its call waits. */
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "conf/conf.h"
#include "fn/fn.h"
#include "fn/fn_int.h" /* the coroutines kept for reuse: are they hooked? */

static char g_dir[PATH_MAX];
static h2o_globalconf_t g_gconf;
static h2o_pathconf_t *g_pathconf;
static h2o_context_t g_ctx;
static uv_loop_t g_uv;

static socklen_t no_name(h2o_conn_t *conn, struct sockaddr *sa)
{
    return 0;
}

static const h2o_conn_callbacks_t g_callbacks = {.get_sockname = no_name, .get_peername = no_name};
static h2o_conn_t g_conn;

/* ---- a request whose response the test keeps ---- */

struct treq {
    h2o_req_t req;
    h2o_ostream_t ostr;
    struct vg_fn_req *shared;
    char body[4096];
    size_t len;
    bool final;
    bool done;
    enum vg_fn_outcome outcome;
    int order; /* when done ran, among the test's calls */
};

static int g_done_seq;

static void capture(h2o_ostream_t *self, h2o_req_t *req, h2o_iovec_t *bufs, size_t n, h2o_send_state_t state)
{
    struct treq *t = H2O_STRUCT_FROM_MEMBER(struct treq, ostr, self);
    for (size_t i = 0; i < n; i++) {
        size_t k = bufs[i].len < sizeof(t->body) - t->len ? bufs[i].len : sizeof(t->body) - t->len;
        memcpy(t->body + t->len, bufs[i].base, k);
        t->len += k;
    }
    t->final = !h2o_send_state_is_in_progress(state);
}

static void on_done(void *data, enum vg_fn_outcome o)
{
    struct treq *t = data;
    t->done = true;
    t->outcome = o;
    t->order = ++g_done_seq;
}

static struct treq *treq_new(const char *path, const char *xa)
{
    struct treq *t = calloc(1, sizeof(*t));
    h2o_init_request(&t->req, &g_conn, NULL);
    t->req.pathconf = g_pathconf;
    t->req._ostr_top = &t->ostr;
    t->ostr.do_send = capture;
    t->req.version = 0x100; /* no chunked encoder in the way */
    t->req.input.method = t->req.method = h2o_iovec_init(H2O_STRLIT("GET"));
    t->req.input.path = t->req.path = h2o_strdup(&t->req.pool, path, strlen(path));
    t->req.path_normalized = t->req.path;
    t->req.query_at = SIZE_MAX;
    t->req.input.authority = t->req.authority = h2o_iovec_init(H2O_STRLIT("t.test"));
    if (xa)
        h2o_add_header_by_str(&t->req.pool, &t->req.headers, H2O_STRLIT("x-a"), 0, NULL, xa, strlen(xa));
    return t;
}

static void treq_free(struct treq *t)
{
    h2o_dispose_request(&t->req);
    free(t);
}

/* Runs the loop until every t is done (or a second passes). */
static void run_until_done(struct treq **ts, size_t n)
{
    for (int i = 0; i < 1000; i++) {
        bool all = true;
        for (size_t k = 0; k < n; k++)
            all = all && ts[k]->done;
        if (all)
            return;
        uv_run(&g_uv, UV_RUN_NOWAIT);
        usleep(1000);
    }
}

static bool body_is(const struct treq *t, const char *want)
{
    return t->len == strlen(want) && memcmp(t->body, want, t->len) == 0;
}

/* ---- a fetcher the test completes by hand ---- */

struct pending {
    vg_fn_fetch_done done;
    void *data;
    char path[64];
    bool cancelled;
};

static struct pending g_pending[8];
static size_t g_n_pending;

static void *fake_start(void *ctx, h2o_req_t *req, const struct vg_fn_fetch_req *f, vg_fn_fetch_done done, void *data)
{
    struct pending *p = &g_pending[g_n_pending++];
    *p = (struct pending){.done = done, .data = data};
    snprintf(p->path, sizeof(p->path), "%.*s", (int)f->path.len, f->path.base);
    return p;
}

static void fake_cancel(void *handle)
{
    ((struct pending *)handle)->cancelled = true;
}

static void complete(struct pending *p, const char *body, const char *xh)
{
    h2o_iovec_t name = h2o_iovec_init(H2O_STRLIT("x-h"));
    h2o_header_t h = {.name = &name, .value = h2o_iovec_init(xh, strlen(xh))};
    struct vg_fn_fetch_res r = {
        .status = 200, .headers = &h, .n_headers = 1, .body = h2o_iovec_init(body, strlen(body))};
    p->done(p->data, &r);
}

/* ---- the app ---- */

static const char EDGE[] =
    "function fast(req) return {body = 'fast ' .. req.method .. ' ' .. req.path .. ' ' .. (req.headers['X-A'] or '-')} "
    "end\n"
    "function slow(req) verge.sleep(30) return {status = 201, body = 'slow'} end\n"
    "function spin(req) while true do end end\n"
    "function bomb(req) local t = {} for i = 1, 1e8 do t[i] = {i} end end\n"
    "function nap(req) verge.sleep(5000) return {body = 'woke'} end\n"
    "function one(req) local r = verge.fetch('o', {path = '/one'})\n"
    "  return {status = r.status, body = r.body .. ' ' .. r.headers['X-H']} end\n"
    "function two(req) local rs = verge.fetch_all({{'o', {path = '/a'}}, {'o', {path = '/b'}}})\n"
    "  return {body = rs[1].body .. '+' .. rs[2].body} end\n"
    "function pass(req) return nil end\n"
    "function mkco(req) CO = coroutine.wrap(function() while true do end end) return {body = 'made'} end\n"
    "function runco(req) while true do CO() end end\n"
    "function pcallspin(req) while true do pcall(function() while true do end end) end end\n"
    "function sortspin(req) local t = {3, 1, 2}\n"
    "  while true do pcall(table.sort, t, function(a, b) while true do end end) end end\n";

static const char *const ROUTES[] = {"fast", "slow", "spin", "bomb",  "nap",       "one",
                                     "two",  "pass", "mkco", "runco", "pcallspin", "sortspin"};
enum { R_FAST, R_SLOW, R_SPIN, R_BOMB, R_NAP, R_ONE, R_TWO, R_PASS, R_MKCO, R_RUNCO, R_PCALLSPIN, R_SORTSPIN };

/* g_app counts every instruction (a budget under 10 M); g_lazy's budget is
 * large, so its calls start unhooked and the ticker arms the hook. */
static struct vg_conf_app *g_conf, *g_lazy_conf;
static struct vg_fn_app *g_app, *g_lazy;

static struct vg_fn_app *make_app(const char *limits, struct vg_conf_app **conf)
{
    char yaml[2048];
    size_t n = (size_t)snprintf(yaml, sizeof(yaml), "name: t\nlimits: %s\nroutes:\n", limits);
    for (size_t i = 0; i < sizeof(ROUTES) / sizeof(ROUTES[0]); i++)
        n += (size_t)snprintf(yaml + n, sizeof(yaml) - n, "  - exact: /%s\n    handler: edge.lua:%s\n", ROUTES[i],
                              ROUTES[i]);
    struct vg_conf_error cerr;
    assert_int_equal(vg_conf_app_load_buffer(g_dir, "verge.yaml", yaml, n, conf, &cerr), 0);
    struct vg_fn_env env = {.loop = &g_uv, .fetch = {.start = fake_start, .cancel = fake_cancel}};
    char err[512];
    struct vg_fn_app *a = vg_fn_app_create(*conf, &env, err, sizeof(err));
    if (!a)
        fail_msg("%s", err);
    return a;
}

static int setup(void **state)
{
    snprintf(g_dir, sizeof(g_dir), "/tmp/verge-fn-calls-XXXXXX");
    assert_non_null(mkdtemp(g_dir));
    char path[PATH_MAX + 32];
    snprintf(path, sizeof(path), "%s/edge.lua", g_dir);
    FILE *f = fopen(path, "w");
    fputs(EDGE, f);
    fclose(f);
    h2o_config_init(&g_gconf);
    h2o_hostconf_t *hc = h2o_config_register_host(&g_gconf, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    g_pathconf = h2o_config_register_path(hc, "/", 0);
    h2o_context_init(&g_ctx, h2o_evloop_create(), &g_gconf);
    g_conn = (h2o_conn_t){.ctx = &g_ctx, .hosts = g_gconf.hosts, .callbacks = &g_callbacks};
    uv_loop_init(&g_uv);
    g_app = make_app("{lua_instructions: 2000000, lua_memory: 8m, lua_timeout: 300ms}", &g_conf);
    g_lazy = make_app("{lua_instructions: 20000000, lua_memory: 8m, lua_timeout: 10s}", &g_lazy_conf);
    return 0;
}

static int teardown(void **state)
{
    vg_fn_app_destroy(g_app);
    vg_conf_app_destroy(g_conf);
    vg_fn_app_destroy(g_lazy);
    vg_conf_app_destroy(g_lazy_conf);
    for (int i = 0; i < 10; i++)
        uv_run(&g_uv, UV_RUN_NOWAIT); /* timers closed by the calls */
    uv_loop_close(&g_uv);
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", g_dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void run(struct treq *t, int route)
{
    vg_fn_run(g_app, route, &t->req, h2o_iovec_init(H2O_STRLIT("rid")), &t->shared, on_done, t);
}

/* ---- tests ---- */

static void test_a_handler_answers(void **state)
{
    struct treq *t = treq_new("/fast", "va");
    run(t, R_FAST);
    assert_true(t->done && t->final && t->outcome == VG_FN_ANSWERED); /* no wait: done before vg_fn_run returns */
    assert_int_equal(t->req.res.status, 200);
    assert_true(body_is(t, "fast GET /fast va"));
    treq_free(t);
}

static void test_nil_passes(void **state)
{
    struct treq *t = treq_new("/pass", NULL);
    run(t, R_PASS);
    assert_true(t->done && t->outcome == VG_FN_PASS && t->len == 0);
    treq_free(t);
}

/* A sleeping call yields: one started after it finishes first. */
static void test_sleep_does_not_hold_up_other_calls(void **state)
{
    struct treq *s = treq_new("/slow", NULL), *f = treq_new("/fast", NULL);
    g_done_seq = 0;
    run(s, R_SLOW);
    assert_false(s->done);
    run(f, R_FAST);
    assert_true(f->done);
    struct treq *both[] = {s, f};
    run_until_done(both, 2);
    assert_true(s->done && s->req.res.status == 201 && body_is(s, "slow"));
    assert_true(f->order < s->order);
    treq_free(s);
    treq_free(f);
}

static void test_limits_per_call(void **state)
{
    static const int routes[] = {R_SPIN, R_BOMB, R_NAP};
    for (size_t i = 0; i < 3; i++) {
        struct treq *t = treq_new("/limit", NULL);
        run(t, routes[i]);
        struct treq *one[] = {t};
        run_until_done(one, 1);
        assert_true(t->done && t->outcome == VG_FN_ANSWERED);
        assert_int_equal(t->req.res.status, 503);
        treq_free(t);
    }
    /* the state still serves afterwards */
    struct treq *t = treq_new("/fast", NULL);
    run(t, R_FAST);
    assert_true(t->done && t->req.res.status == 200);
    treq_free(t);
}

/* The hook mask of the coroutine a's last call ended on (kept for reuse). */
static int last_thread_hookmask(struct vg_fn_app *a)
{
    assert_true(a->n_free_threads > 0);
    lua_rawgeti(a->L, LUA_REGISTRYINDEX, a->free_threads[a->n_free_threads - 1]);
    lua_State *co = lua_tothread(a->L, -1);
    lua_pop(a->L, 1);
    return lua_gethookmask(co);
}

static struct treq *run_on(struct vg_fn_app *a, int route)
{
    struct treq *t = treq_new("/t", NULL);
    vg_fn_run(a, route, &t->req, h2o_iovec_init(H2O_STRLIT("rid")), &t->shared, on_done, t);
    struct treq *one[] = {t};
    run_until_done(one, 1);
    assert_true(t->done && t->outcome == VG_FN_ANSWERED);
    return t;
}

/* A short call of an app with a large budget runs, and is put back,
 * without the count hook (that is the point: no trap per instruction);
 * one with a small budget is counted from its first instruction. */
static void test_short_calls_run_unhooked_under_a_large_budget(void **state)
{
    treq_free(run_on(g_lazy, R_FAST));
    assert_int_equal(last_thread_hookmask(g_lazy), 0);
    treq_free(run_on(g_app, R_FAST));
    assert_int_equal(last_thread_hookmask(g_app), LUA_MASKCOUNT);
}

/* Started unhooked, every way around the budget still ends at it: the
 * ticker hooks the call within a millisecond of CPU, coroutines the
 * script makes are hooked at birth, even one made by an earlier call and
 * resumed in this one. A loop left running would hang the test: the alarm
 * fails it instead. */
static void test_late_hook_still_stops_every_loop(void **state)
{
    alarm(60);
    treq_free(run_on(g_lazy, R_MKCO)); /* CO, for runco */
    static const int routes[] = {R_SPIN, R_PCALLSPIN, R_SORTSPIN, R_RUNCO};
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
        struct treq *t = run_on(g_lazy, routes[i]);
        if (t->req.res.status != 503 || !memmem(t->body, t->len, "lua_instructions", 16))
            fail_msg("route %s: %d %.*s", ROUTES[routes[i]], t->req.res.status, (int)t->len, t->body);
        treq_free(t);
    }
    alarm(0);
    struct treq *t = run_on(g_lazy, R_FAST); /* the state still serves, its coroutine unhooked again */
    assert_int_equal(t->req.res.status, 200);
    assert_int_equal(last_thread_hookmask(g_lazy), 0);
    treq_free(t);
}

static void test_fetch_wakes_the_call_with_the_result(void **state)
{
    g_n_pending = 0;
    struct treq *t = treq_new("/one", NULL);
    run(t, R_ONE);
    assert_false(t->done);
    assert_int_equal(g_n_pending, 1);
    assert_string_equal(g_pending[0].path, "/one");
    complete(&g_pending[0], "got", "hv");
    assert_true(t->done && t->req.res.status == 200 && body_is(t, "got hv"));
    treq_free(t);
}

/* fetch_all: both run at once; results keep the order asked for, however
 * they complete (the first to complete is kept while the other runs). */
static void test_fetch_all_keeps_order(void **state)
{
    g_n_pending = 0;
    struct treq *t = treq_new("/two", NULL);
    run(t, R_TWO);
    assert_int_equal(g_n_pending, 2);
    complete(&g_pending[1], "B", "");
    assert_false(t->done);
    complete(&g_pending[0], "A", "");
    assert_true(t->done && body_is(t, "A+B"));
    treq_free(t);
}

/* The request ends (client gone) while its call waits: the fetch is
 * cancelled, done never runs, and the state serves on. */
static void test_request_ending_mid_fetch(void **state)
{
    g_n_pending = 0;
    struct treq *t = treq_new("/one", NULL);
    run(t, R_ONE);
    assert_int_equal(g_n_pending, 1);
    treq_free(t);
    assert_true(g_pending[0].cancelled);
    struct treq *f = treq_new("/fast", NULL);
    run(f, R_FAST);
    assert_true(f->done && f->req.res.status == 200);
    treq_free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_handler_answers),
        cmocka_unit_test(test_nil_passes),
        cmocka_unit_test(test_sleep_does_not_hold_up_other_calls),
        cmocka_unit_test(test_limits_per_call),
        cmocka_unit_test(test_short_calls_run_unhooked_under_a_large_budget),
        cmocka_unit_test(test_late_hook_still_stops_every_loop),
        cmocka_unit_test(test_fetch_wakes_the_call_with_the_result),
        cmocka_unit_test(test_fetch_all_keeps_order),
        cmocka_unit_test(test_request_ending_mid_fetch),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
