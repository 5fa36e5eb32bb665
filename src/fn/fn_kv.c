/* verge.kv: the app's persistent state, local (LMDB on this node) or
 * global (JetStream KV, replicated to every node running the app).
 *
 * Reads are synchronous: an LMDB read transaction or the in-memory
 * replica, both cheap. Writes never block the worker: they are queued to
 * a state thread (src/state) and the call's coroutine waits, like
 * verge.fetch; the state thread drops the result into the app's mailbox
 * and wakes the worker's loop (uv_async), which resumes the coroutine.
 *
 * The mailbox outlives both sides: the app (one Lua state on one worker)
 * may be destroyed, or the request abandoned, while a write is still
 * queued on a state thread. It is refcounted (the app + each write in
 * flight) and closed by the app; a result arriving at a closed mailbox is
 * dropped (the write itself happened). */
#include "fn_int.h"
#include "http/http.h"
#include "obs/obs.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct kv_op;

struct vg__fn_kv_box {
    pthread_mutex_t mu;
    int refs;           /* under mu: the app + each write in flight */
    bool closed;        /* under mu: the app is gone */
    struct kv_op *done; /* under mu: results to hand back, newest first */
    uv_async_t *async;  /* the worker loop's; closed with the app */
};

struct kv_op {
    struct kv_op *next;
    struct vg__fn_kv_box *box;
    struct vg__fn_call *call; /* NULL once abandoned (loop thread only) */
    enum vg_state_op op;
    bool global;
    uint32_t await_visible; /* what the call asked (0: nothing) */
    uint32_t timeout_ms;    /* its visibility timeout */
    struct vg_state_result res;
    char err[200];
};

static void box_unref(struct vg__fn_kv_box *b)
{
    pthread_mutex_lock(&b->mu);
    bool last = --b->refs == 0;
    pthread_mutex_unlock(&b->mu);
    if (!last)
        return;
    pthread_mutex_destroy(&b->mu);
    free(b);
}

/* ---- results: state thread -> loop -------------------------------------------------- */

static void on_state_done(void *arg, const struct vg_state_result *r)
{
    struct kv_op *op = arg;
    struct vg__fn_kv_box *b = op->box;
    op->res = *r;
    if (r->err) {
        snprintf(op->err, sizeof(op->err), "%s", r->err);
        op->res.err = op->err;
    }
    pthread_mutex_lock(&b->mu);
    if (b->closed) {
        pthread_mutex_unlock(&b->mu);
        free(op);
        box_unref(b);
        return;
    }
    op->next = b->done;
    b->done = op;
    uv_async_send(b->async); /* under mu: the app cannot close it meanwhile */
    pthread_mutex_unlock(&b->mu);
}

/* await_visible: n [, reason] after the write's own results. */
static int push_visible(lua_State *co, const struct kv_op *op)
{
    lua_pushinteger(co, (lua_Integer)op->res.visible);
    if (!op->res.visible_timeout)
        return 1;
    lua_pushfstring(co, "visible on %d of %d nodes within %d ms", (int)op->res.visible, (int)op->await_visible,
                    (int)op->timeout_ms);
    return 2;
}

/* set/delete: true [, rev [, visible [, reason]]] | nil, reason;
 * incr: value [, rev [, visible [, reason]]] | nil, reason */
static void wake(struct kv_op *op)
{
    struct vg__fn_call *c = op->call;
    lua_State *co = c->co;
    c->kv = NULL;
    vg__fn_call_stop_timer(c);
    c->app->building = true;
    int n = 2;
    if (op->res.rc != 0) {
        lua_pushnil(co);
        lua_pushstring(co, op->res.err ? op->res.err : vg_strerror(op->res.rc));
    } else {
        if (op->op == VG_STATE_INCR)
            vg__fn_push_value(co, &op->res.value);
        else
            lua_pushboolean(co, 1);
        if (op->global && op->op != VG_STATE_DELETE)
            lua_pushinteger(co, (lua_Integer)op->res.rev);
        else
            n = 1;
        if (op->await_visible)
            n += push_visible(co, op);
    }
    vg__fn_call_wake(c, n);
}

static void on_async(uv_async_t *h)
{
    struct vg__fn_kv_box *b = h->data;
    pthread_mutex_lock(&b->mu);
    struct kv_op *list = b->done, *fifo = NULL;
    b->done = NULL;
    pthread_mutex_unlock(&b->mu);
    while (list) { /* oldest first */
        struct kv_op *next = list->next;
        list->next = fifo;
        fifo = list;
        list = next;
    }
    while (fifo) {
        struct kv_op *op = fifo;
        fifo = op->next;
        if (op->call)
            wake(op);
        free(op);
        box_unref(b);
    }
}

static void on_async_closed(uv_handle_t *h)
{
    free(h);
}

void vg__fn_kv_app_init(struct vg_fn_app *a)
{
    if (!a->env.loop || (!a->env.kv_local && !a->env.kv_global))
        return;
    struct vg__fn_kv_box *b = vg_xcalloc(1, sizeof(*b));
    pthread_mutex_init(&b->mu, NULL);
    b->refs = 1;
    b->async = vg_xmalloc(sizeof(*b->async));
    uv_async_init(a->env.loop, b->async, on_async);
    b->async->data = b;
    a->kv_box = b;
}

void vg__fn_kv_app_fini(struct vg_fn_app *a)
{
    struct vg__fn_kv_box *b = a->kv_box;
    if (!b)
        return;
    pthread_mutex_lock(&b->mu);
    b->closed = true;
    struct kv_op *list = b->done;
    b->done = NULL;
    pthread_mutex_unlock(&b->mu);
    uv_close((uv_handle_t *)b->async, on_async_closed);
    while (list) { /* results nobody will read: their calls are over */
        struct kv_op *next = list->next;
        free(list);
        box_unref(b);
        list = next;
    }
    a->kv_box = NULL;
    box_unref(b);
}

void vg__fn_kv_abort(struct vg__fn_call *c)
{
    if (!c->kv)
        return;
    c->kv->call = NULL; /* its result is dropped when it arrives */
    c->kv = NULL;
}

/* The call's deadline came while its write was queued: the write goes on,
 * the call ends (vg__fn_call_wake sees the deadline). */
static void on_deadline(uv_timer_t *t)
{
    struct vg__fn_call *c = t->data;
    vg__fn_call_stop_timer(c);
    vg__fn_kv_abort(c);
    c->past_deadline = true;
    vg__fn_call_wake(c, 0);
}

/* ---- arguments ---------------------------------------------------------------------- */

enum { OPT_TTL = 1, OPT_INIT = 2, OPT_REV = 4, OPT_VISIBLE = 8 };

#define VISIBLE_TIMEOUT_DEFAULT 5000 /* ms */

struct kv_args {
    bool global;
    const char *key;
    size_t klen;
    uint64_t ttl_ms;
    struct vg_state_value init;
    bool has_rev;
    uint64_t rev;
    uint32_t await_visible; /* 0: not asked */
    uint32_t timeout_ms;    /* 0: not given */
};

/* await_visible = K and timeout = ms (global set and incr). */
static bool parse_visible(lua_State *L, const char *fn, const char *k, struct kv_args *a)
{
    if (strcmp(k, "await_visible") == 0) {
        if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 1 || lua_tointeger(L, -1) > VG_STATE_MAX_VISIBLE)
            luaL_error(L, "%s: await_visible must be an integer from 1 to %d (nodes, this one included)", fn,
                       VG_STATE_MAX_VISIBLE);
        a->await_visible = (uint32_t)lua_tointeger(L, -1);
        return true;
    }
    if (strcmp(k, "timeout") == 0) {
        if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 1 || lua_tointeger(L, -1) > VG_STATE_VISIBLE_TIMEOUT_MAX)
            luaL_error(L, "%s: timeout must be an integer number of ms from 1 to %d", fn, VG_STATE_VISIBLE_TIMEOUT_MAX);
        a->timeout_ms = (uint32_t)lua_tointeger(L, -1);
        return true;
    }
    return false;
}

/* Key at 1, options at opts (checked strictly, as verge.shared's). */
static void parse(lua_State *L, const char *fn, int opts, unsigned allowed, struct kv_args *a)
{
    memset(a, 0, sizeof(*a));
    a->key = luaL_checklstring(L, 1, &a->klen);
    const char *why = NULL;
    if (!vg_state_key_valid(a->key, a->klen, &why))
        luaL_error(L, "%s: invalid key: %s", fn, why);
    if (!lua_isnoneornil(L, opts)) {
        luaL_checktype(L, opts, LUA_TTABLE);
        lua_pushnil(L);
        while (lua_next(L, opts)) {
            const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "";
            if (strcmp(k, "scope") == 0) {
                const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "";
                if (strcmp(s, "global") == 0)
                    a->global = true;
                else if (strcmp(s, "local") != 0)
                    luaL_error(L, "%s: scope must be \"local\" or \"global\"", fn);
            } else if ((allowed & OPT_TTL) && strcmp(k, "ttl") == 0) {
                double t = lua_type(L, -1) == LUA_TNUMBER ? lua_tonumber(L, -1) : NAN;
                if (!(t > 0 && t <= 1e9))
                    luaL_error(L, "%s: ttl must be a number of seconds, > 0 and at most 1e9", fn);
                a->ttl_ms = (uint64_t)ceil(t * 1000);
            } else if ((allowed & OPT_INIT) && strcmp(k, "init") == 0) {
                if (lua_type(L, -1) != LUA_TNUMBER)
                    luaL_error(L, "%s: init must be a number", fn);
                vg__fn_to_number(L, -1, &a->init);
            } else if ((allowed & OPT_REV) && strcmp(k, "rev") == 0) {
                if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 0)
                    luaL_error(L, "%s: rev must be an integer >= 0 (a revision from get; 0: the key must not exist)",
                               fn);
                a->has_rev = true;
                a->rev = (uint64_t)lua_tointeger(L, -1);
            } else if (!((allowed & OPT_VISIBLE) && parse_visible(L, fn, k, a))) {
                luaL_error(L, "%s: unknown option '%s'", fn, luaL_tolstring(L, -2, NULL));
            }
            lua_pop(L, 1);
        }
    }
    if (a->has_rev && !a->global)
        luaL_error(L, "%s: rev (compare-and-set) needs scope=\"global\"", fn);
    if ((a->await_visible || a->timeout_ms) && !a->global)
        luaL_error(L, "%s: await_visible needs scope=\"global\" (a local write is on this node only)", fn);
    if (a->timeout_ms && !a->await_visible)
        luaL_error(L, "%s: timeout goes with await_visible", fn);
    struct vg_fn_app *app = vg__fn_app_of(L);
    if (a->global && !app->env.kv_global && app->env.kv_global_off)
        luaL_error(L, "%s: scope=\"global\" is not available: %s", fn, app->env.kv_global_off);
    if (a->global && !app->env.kv_global)
        luaL_error(
            L, "%s: scope=\"global\" needs distributed state: run the node with --nats URL (NATS with JetStream)", fn);
    if (!a->global && !app->env.kv_local)
        luaL_error(L, "%s: verge.kv is not available here", fn);
}

/* ---- the functions ------------------------------------------------------------------ */

/* verge.kv.get(key [, opts]) -> value [, rev] | nil */
static int kv_get(lua_State *L)
{
    struct kv_args a;
    parse(L, "verge.kv.get", 2, 0, &a);
    struct vg_fn_app *app = vg__fn_app_of(L);
    struct vg_state_value v;
    char *mem = NULL;
    uint64_t rev = 0;
    struct vg_trace *t = app->current && app->current->req ? vg_http_req_trace(app->current->req) : NULL;
    uint64_t t0 = t ? vg_trace_clock() : 0;
    int rc = a.global ? vg_state_global_get(app->env.kv_global, a.key, a.klen, &v, &mem, &rev)
                      : vg_state_local_get(app->env.kv_local, a.key, a.klen, &v, &mem);
    if (t) { /* a lookup (a WAF's block list, a counter) is a span of the Lua call */
        vg_span_t s = vg_trace_add(t, "kv.get", vg_trace_current(t), t0, vg_trace_clock());
        vg_trace_detail(t, s, a.global ? "global" : "local", a.global ? 6 : 5);
    }
    if (rc == VG_EIO)
        return luaL_error(L, "verge.kv.get: the node's state store failed");
    if (rc != 0) {
        lua_pushnil(L);
        return 1;
    }
    /* the value is pushed past the memory cap (at most 64 KiB over it), so
     * that the push cannot raise and leak mem; the cap catches the next
     * allocation */
    bool was = app->building;
    app->building = true;
    vg__fn_push_value(L, &v);
    app->building = was;
    free(mem);
    if (!a.global)
        return 1;
    lua_pushinteger(L, (lua_Integer)rev);
    return 2;
}

static int start_write(lua_State *L, const char *fn, const struct kv_args *a, struct vg_state_write *w)
{
    struct vg__fn_call *c = vg__fn_call_checked(L, fn);
    struct vg_fn_app *app = c->app;
    if (!app->kv_box)
        return luaL_error(L, "%s is not available here", fn);
    if (c->kv || c->fetch)
        return luaL_error(L, "%s: another asynchronous call is running", fn);
    w->key = a->key;
    w->klen = a->klen;
    w->ttl_ms = a->ttl_ms;
    uint64_t now = vg_now_ms(), left = c->deadline_ms > now ? c->deadline_ms - now : 0;
    if (a->await_visible) {
        /* the wait ends before the request's lua_timeout does, so that the
         * handler gets its answer rather than a 503 */
        uint64_t t = a->timeout_ms ? a->timeout_ms : VISIBLE_TIMEOUT_DEFAULT;
        uint64_t room = left > 200 ? left - 100 : left / 2;
        w->await_visible = a->await_visible;
        w->visible_timeout_ms = (uint32_t)(t < room ? t : room ? room : 1);
    }
    struct kv_op *op = vg_xcalloc(1, sizeof(*op));
    op->box = app->kv_box;
    op->call = c;
    op->op = w->op;
    op->global = a->global;
    op->await_visible = w->await_visible;
    op->timeout_ms = w->visible_timeout_ms;
    pthread_mutex_lock(&op->box->mu);
    op->box->refs++;
    pthread_mutex_unlock(&op->box->mu);
    int rc = a->global ? vg_state_global_write(app->env.kv_global, w, on_state_done, op)
                       : vg_state_local_write(app->env.kv_local, w, on_state_done, op);
    if (rc != 0) {
        box_unref(op->box);
        free(op);
        return luaL_error(L, "%s: %s", fn, rc == VG_ELIMIT ? "value longer than 65536 bytes" : vg_strerror(rc));
    }
    c->kv = op;
    c->waiting = true;
    c->timer = vg_xmalloc(sizeof(*c->timer));
    uv_timer_init(app->env.loop, c->timer);
    c->timer->data = c;
    uv_timer_start(c->timer, on_deadline, left, 0);
    return lua_yield(L, 0);
}

/* verge.kv.set(key, value [, {scope, ttl, rev, await_visible, timeout}])
 *   -> true [, rev [, visible [, reason]]] | nil, reason */
static int kv_set(lua_State *L)
{
    static const char fn[] = "verge.kv.set";
    struct kv_args a;
    luaL_checkany(L, 2);
    parse(L, fn, 3, OPT_TTL | OPT_REV | OPT_VISIBLE, &a);
    struct vg_state_write w = {.op = VG_STATE_SET, .cas = a.has_rev, .rev = a.rev};
    switch (lua_type(L, 2)) {
    case LUA_TNIL:
        if (a.has_rev)
            return luaL_error(L, "%s: rev with a nil value: delete has no compare-and-set", fn);
        if (a.await_visible)
            return luaL_error(L, "%s: await_visible with a nil value: a delete carries no ack request", fn);
        w.op = VG_STATE_DELETE;
        break;
    case LUA_TSTRING:
        w.value.type = VG_STATE_STRING;
        w.value.str.ptr = lua_tolstring(L, 2, &w.value.str.len);
        if (w.value.str.len > VG_STATE_MAX_VALUE)
            return luaL_error(L, "%s: value longer than %d bytes", fn, (int)VG_STATE_MAX_VALUE);
        break;
    case LUA_TNUMBER:
        vg__fn_to_number(L, 2, &w.value);
        break;
    case LUA_TBOOLEAN:
        w.value.type = VG_STATE_BOOLEAN;
        w.value.b = lua_toboolean(L, 2);
        break;
    default:
        return luaL_typeerror(L, 2, "string, number, boolean or nil");
    }
    return start_write(L, fn, &a, &w);
}

/* verge.kv.delete(key [, {scope}]) -> true | nil, reason */
static int kv_delete(lua_State *L)
{
    static const char fn[] = "verge.kv.delete";
    struct kv_args a;
    parse(L, fn, 2, 0, &a);
    struct vg_state_write w = {.op = VG_STATE_DELETE};
    return start_write(L, fn, &a, &w);
}

/* verge.kv.incr(key, delta [, {scope, ttl, init, await_visible, timeout}])
 *   -> value [, rev [, visible [, reason]]] | nil, reason */
static int kv_incr(lua_State *L)
{
    static const char fn[] = "verge.kv.incr";
    struct kv_args a;
    luaL_checktype(L, 2, LUA_TNUMBER);
    parse(L, fn, 3, OPT_TTL | OPT_INIT | OPT_VISIBLE, &a);
    struct vg_state_write w = {.op = VG_STATE_INCR, .init = a.init};
    vg__fn_to_number(L, 2, &w.value);
    return start_write(L, fn, &a, &w);
}

void vg__fn_open_kv(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"get", kv_get}, {"set", kv_set}, {"delete", kv_delete}, {"incr", kv_incr}, {NULL, NULL},
    };
    int verge = lua_absindex(L, -1);
    luaL_newlib(L, fns);
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    lua_pushvalue(L, -2);
    lua_setfield(L, -2, "verge.kv");
    lua_pop(L, 1);
    lua_setfield(L, verge, "kv");
}
