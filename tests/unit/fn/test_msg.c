/* Message handlers and verge.request, without a node: an app's
 * subscription handlers run through vg_fn_msg_run on a libuv loop of the
 * test's, over an in-process bus where the test plays the other side
 * (answering, staying silent, or nobody listening). */
#include <limits.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "bus/bus.h"
#include "conf/conf.h"
#include "fn/fn.h"

static char g_dir[PATH_MAX];
static uv_loop_t g_uv;
static struct vg_bus *g_bus;
static struct vg_conf_app *g_conf;
static struct vg_fn_app *g_app;

static const char EDGE[] = "function echo(msg) return 'got ' .. msg.data .. ' on ' .. msg.subject .. ' ' .. "
                           "tostring(msg.reply) end\n"
                           "function spin(msg) while true do end end\n"
                           "function fail(msg) error('boom') end\n"
                           "function tbl(msg) return {ok = true, n = {1, 2}} end\n"
                           "function bad(msg) return msg.data == 'f' and function() end or {f = print} end\n"
                           "function ask(msg) local r, err = verge.request(msg.data, 'q', {timeout = 100})\n"
                           "  return tostring(r) .. ' ' .. tostring(err) end\n"
                           "function nap(msg) verge.sleep(20) return 'slept' end\n"
                           "function fetch(msg) local ok, err = pcall(verge.fetch, 'http://127.0.0.1:1/')\n"
                           "  return tostring(err) end\n";
static const char *const SUBS[] = {"echo", "spin", "fail", "tbl", "ask", "nap", "fetch", "bad"};
enum { S_ECHO, S_SPIN, S_FAIL, S_TBL, S_ASK, S_NAP, S_FETCH, S_BAD };

/* ---- the other side of the bus ---- */

struct inbox {
    pthread_mutex_t mu;
    char last[256];
    int n;
    bool echo; /* answer requests */
};

static void on_bus(void *arg, const struct vg_bus_msg *m)
{
    struct inbox *in = arg;
    if (in->echo && m->reply)
        assert_int_equal(vg_bus_publish(g_bus, m->reply, "pong", 4), 0);
    pthread_mutex_lock(&in->mu);
    snprintf(in->last, sizeof(in->last), "%.*s", (int)m->len, (const char *)m->data);
    in->n++;
    pthread_mutex_unlock(&in->mu);
}

static int inbox_count(struct inbox *in)
{
    pthread_mutex_lock(&in->mu);
    int n = in->n;
    pthread_mutex_unlock(&in->mu);
    return n;
}

/* ---- runs ---- */

struct done {
    bool done;
    enum vg_fn_msg_result r;
};

static void on_done(void *data, enum vg_fn_msg_result r)
{
    struct done *d = data;
    d->done = true;
    d->r = r;
}

static void loop_until(bool *flag, int ms)
{
    for (int i = 0; i < ms && !*flag; i++) {
        uv_run(&g_uv, UV_RUN_NOWAIT);
        usleep(1000);
    }
}

static enum vg_fn_msg_result run(int sub, const char *data, const char *reply)
{
    struct done d = {0};
    struct vg_fn_msg m = {.subject = "x.y", .data = data, .len = strlen(data), .reply = reply};
    vg_fn_msg_run(g_app, (size_t)sub, &m, "msg-1", on_done, &d);
    assert_false(d.done); /* never before the call has let go: a loop turn later */
    loop_until(&d.done, 2000);
    assert_true(d.done);
    return d.r;
}

/* Runs sub with a reply subject and returns the answer published there
 * (empty when none came). */
static enum vg_fn_msg_result run_answered(int sub, const char *data, char *answer, size_t cap)
{
    struct inbox in = {.n = 0};
    pthread_mutex_init(&in.mu, NULL);
    struct vg_bus_sub *s;
    assert_int_equal(vg_bus_subscribe(g_bus, "_INBOX.test", NULL, on_bus, &in, &s), 0);
    enum vg_fn_msg_result r = run(sub, data, "_INBOX.test");
    for (int i = 0; i < 200 && inbox_count(&in) == 0; i++)
        usleep(1000);
    vg_bus_unsubscribe(s);
    snprintf(answer, cap, "%s", in.n ? in.last : "");
    pthread_mutex_destroy(&in.mu);
    return r;
}

/* ---- setup ---- */

/* The node's fetcher is there; message handlers still may not use it. */
static void *never_start(void *ctx, h2o_req_t *req, const struct vg_fn_fetch_req *f, vg_fn_fetch_done done, void *data)
{
    fail_msg("a fetch started from a message handler");
    return NULL;
}

static void never_cancel(void *handle)
{
}

static int setup(void **state)
{
    snprintf(g_dir, sizeof(g_dir), "/tmp/verge-fn-msg-XXXXXX");
    assert_non_null(mkdtemp(g_dir));
    char path[PATH_MAX + 32];
    snprintf(path, sizeof(path), "%s/edge.lua", g_dir);
    FILE *f = fopen(path, "w");
    fputs(EDGE, f);
    fclose(f);
    char yaml[2048];
    size_t n = (size_t)snprintf(yaml, sizeof(yaml),
                                "name: t\nlimits: {lua_instructions: 2000000, lua_memory: 8m, lua_timeout: 300ms}\n"
                                "routes:\n  - respond: ok\nsubscriptions:\n");
    for (size_t i = 0; i < sizeof(SUBS) / sizeof(SUBS[0]); i++)
        n += (size_t)snprintf(yaml + n, sizeof(yaml) - n, "  - subject: %s\n    handler: edge.lua:%s\n", SUBS[i],
                              SUBS[i]);
    struct vg_conf_error cerr;
    assert_int_equal(vg_conf_app_load_buffer(g_dir, "verge.yaml", yaml, n, &g_conf, &cerr), 0);
    assert_int_equal(g_conf->n_subs, sizeof(SUBS) / sizeof(SUBS[0]));
    uv_loop_init(&g_uv);
    assert_int_equal(vg_bus_inproc_create(&g_bus), 0);
    struct vg_fn_env env = {.loop = &g_uv, .bus = g_bus, .fetch = {.start = never_start, .cancel = never_cancel}};
    char err[512];
    g_app = vg_fn_app_create(g_conf, &env, err, sizeof(err));
    if (!g_app)
        fail_msg("%s", err);
    return 0;
}

static int teardown(void **state)
{
    vg_fn_app_destroy(g_app);
    vg_conf_app_destroy(g_conf);
    for (int i = 0; i < 10; i++)
        uv_run(&g_uv, UV_RUN_NOWAIT);
    assert_int_equal(uv_loop_close(&g_uv), 0); /* every handle of the calls closed */
    vg_bus_destroy(g_bus);
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", g_dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* ---- tests ---- */

static void test_handler_answers_a_request(void **state)
{
    char answer[256];
    assert_int_equal(run_answered(S_ECHO, "hi", answer, sizeof(answer)), VG_FN_MSG_OK);
    assert_string_equal(answer, "got hi on x.y true");
    assert_int_equal(run(S_ECHO, "no reply wanted", NULL), VG_FN_MSG_OK);
    assert_int_equal(run_answered(S_NAP, "", answer, sizeof(answer)), VG_FN_MSG_OK); /* it may wait */
    assert_string_equal(answer, "slept");
}

static void test_limits_and_errors(void **state)
{
    char answer[256];
    assert_int_equal(run(S_SPIN, "", NULL), VG_FN_MSG_LIMIT);
    assert_int_equal(run(S_FAIL, "", NULL), VG_FN_MSG_ERROR);
    assert_int_equal(run_answered(S_TBL, "", answer, sizeof(answer)), VG_FN_MSG_OK); /* a table: JSON */
    assert_true(strcmp(answer, "{\"ok\":true,\"n\":[1,2]}") == 0 || strcmp(answer, "{\"n\":[1,2],\"ok\":true}") == 0);
    assert_int_equal(run_answered(S_BAD, "f", answer, sizeof(answer)), VG_FN_MSG_ERROR); /* a function */
    assert_string_equal(answer, "");
    assert_int_equal(run_answered(S_BAD, "t", answer, sizeof(answer)), VG_FN_MSG_ERROR); /* not JSON */
    assert_string_equal(answer, "");
    assert_int_equal(run(S_BAD, "f", NULL), VG_FN_MSG_OK); /* nobody asked: the result is ignored */
    assert_int_equal(run_answered(S_FETCH, "", answer, sizeof(answer)), VG_FN_MSG_OK);
    assert_non_null(strstr(answer, "not available in message handlers"));
    assert_int_equal(run_answered(S_ECHO, "after", answer, sizeof(answer)), VG_FN_MSG_OK);
    assert_string_equal(answer, "got after on x.y true");
}

static void test_request_answer_timeout_and_no_responders(void **state)
{
    struct inbox svc = {.echo = true}, silent = {.n = 0};
    pthread_mutex_init(&svc.mu, NULL);
    pthread_mutex_init(&silent.mu, NULL);
    struct vg_bus_sub *s1, *s2;
    assert_int_equal(vg_bus_subscribe(g_bus, "verge.app.t.svc", NULL, on_bus, &svc, &s1), 0);
    assert_int_equal(vg_bus_subscribe(g_bus, "verge.app.t.quiet", NULL, on_bus, &silent, &s2), 0);
    char answer[256];
    assert_int_equal(run_answered(S_ASK, "svc", answer, sizeof(answer)), VG_FN_MSG_OK);
    assert_string_equal(answer, "pong nil");
    assert_string_equal(svc.last, "q"); /* on the app's own subject */
    uint64_t t0 = vg_now_ms();
    assert_int_equal(run_answered(S_ASK, "quiet", answer, sizeof(answer)), VG_FN_MSG_OK);
    assert_string_equal(answer, "nil timeout");
    assert_true(vg_now_ms() - t0 >=
                90); /* it waited for its timeout (libuv times it from its loop clock, a ms or two early) */
    assert_int_equal(run_answered(S_ASK, "nobody", answer, sizeof(answer)), VG_FN_MSG_OK);
    assert_string_equal(answer, "nil no responders");
    vg_bus_unsubscribe(s1);
    vg_bus_unsubscribe(s2);
    pthread_mutex_destroy(&svc.mu);
    pthread_mutex_destroy(&silent.mu);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_handler_answers_a_request),
        cmocka_unit_test(test_limits_and_errors),
        cmocka_unit_test(test_request_answer_timeout_and_no_responders),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
