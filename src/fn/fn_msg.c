/* Message handlers: a bus message runs the subscription's Lua function as
 * a call of the runtime like any other (same coroutines, limits, async
 * verge calls), without an HTTP request. The call lives on a pool of its
 * own which is released a loop turn after the call ends, so that nothing
 * on the stack that ended it still points into it. */
#include "fn_int.h"

#include "bus/bus.h"

#include <string.h>

struct msg_run {
    h2o_mem_pool_t pool;
    uv_timer_t closer; /* never started: closing it defers the release by a turn */
    struct vg_fn_app *app;
    const char *reply; /* on pool, or NULL */
    enum vg_fn_msg_result result;
    vg_fn_msg_done_cb done;
    void *data;
};

static void on_closed(uv_handle_t *h)
{
    struct msg_run *run = h->data;
    h2o_mem_clear_pool(&run->pool); /* disposes the call: its timer, its waits */
    run->done(run->data, run->result);
    free(run);
}

static void end(struct msg_run *run, enum vg_fn_msg_result r)
{
    run->result = r;
    uv_close((uv_handle_t *)&run->closer, on_closed);
}

/* A table answer becomes JSON through verge.json.encode, on the finished
 * coroutine (no call is current: the hook only counts nothing, the memory
 * cap still holds and a failure is an error of the call). */
static bool encode_table(struct vg__fn_call *c)
{
    lua_State *co = c->co;
    lua_settop(co, 2);
    lua_getfield(co, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    lua_getfield(co, -1, "verge.json");
    lua_getfield(co, -1, "encode");
    lua_pushvalue(co, 2);
    if (lua_pcall(co, 1, 1, 0) != LUA_OK) {
        lua_pushfstring(co, "the answer table cannot be JSON: %s", lua_tostring(co, -1));
        return false;
    }
    lua_replace(co, 2);
    lua_settop(co, 2);
    return true;
}

/* The handler returned: its first result (index 2) answers a request. */
static void msg_result(struct vg__fn_call *c)
{
    struct msg_run *run = c->data;
    lua_State *co = c->co;
    bool has = lua_gettop(co) >= 2 && !lua_isnil(co, 2);
    if (run->reply && has) {
        if (lua_type(co, 2) == LUA_TTABLE && !encode_table(c)) {
            vg__fn_call_bad_result(c, lua_tostring(co, -1));
            return;
        }
        if (lua_type(co, 2) != LUA_TSTRING) {
            vg__fn_call_bad_result(c, "expected a string or a table (the answer, sent as JSON) or nil");
            return;
        }
        size_t n;
        const char *s = lua_tolstring(co, 2, &n);
        int rc = vg_bus_publish(c->app->env.bus, run->reply, s, n);
        if (rc)
            vg_log(VG_LOG_WARN, "message handler: cannot publish the answer", "app", c->app->conf->name, "function",
                   c->fname, "reason", vg_strerror(rc), NULL);
    }
    vg__fn_release_thread(c, true);
    end(run, VG_FN_MSG_OK);
}

/* A script error (500) or a limit (503), logged by the runtime. */
static void msg_fail(struct vg__fn_call *c, int status, const char *body)
{
    end(c->data, status == 503 ? VG_FN_MSG_LIMIT : VG_FN_MSG_ERROR);
}

static const struct vg__fn_call_ops msg_ops = {.result = msg_result, .fail = msg_fail};

static void push_msg(lua_State *co, const struct vg_fn_msg *m)
{
    lua_createtable(co, 0, 3);
    lua_pushstring(co, m->subject);
    lua_setfield(co, -2, "subject");
    lua_pushlstring(co, m->data ? m->data : "", m->len);
    lua_setfield(co, -2, "data");
    lua_pushboolean(co, m->reply != NULL);
    lua_setfield(co, -2, "reply");
}

void vg_fn_msg_run(struct vg_fn_app *a, size_t sub, const struct vg_fn_msg *m, const char *id, vg_fn_msg_done_cb done,
                   void *data)
{
    VG_ASSERT(sub < a->conf->n_subs && a->env.loop && a->env.bus);
    struct msg_run *run = vg_xcalloc(1, sizeof(*run));
    h2o_mem_init_pool(&run->pool);
    uv_timer_init(a->env.loop, &run->closer);
    run->closer.data = run;
    run->app = a;
    run->done = done;
    run->data = data;
    if (m->reply)
        run->reply = h2o_strdup(&run->pool, m->reply, SIZE_MAX).base;
    h2o_iovec_t reqid = h2o_strdup(&run->pool, id, SIZE_MAX);
    struct vg__fn_call *c =
        vg__fn_call_alloc(a, a->conf->subs[sub].handler.func, &run->pool, NULL, reqid, &msg_ops, NULL, run);
    if (m->traceparent)
        c->traceparent = h2o_strdup(&run->pool, m->traceparent, SIZE_MAX).base;
    push_msg(c->co, m);
    vg__fn_call_push_fn(c, a->sub_ref[sub]);
    vg__fn_call_start(c, 1);
}
