/* verge.publish and verge.request: messages from Lua onto the node's bus
 * (NATS with --nats, else in-process). Subjects are the app's own:
 * "verge.app.APP.<subject>", so apps cannot publish into each other's
 * names, and outside NATS clients use an app's documented subjects.
 *
 * Publishing never waits (libnats buffers, the in-process bus queues), so
 * it is a plain call: true, or nil and the reason. A request waits for its
 * answer: the coroutine yields, the answer arrives on a bus thread and is
 * dropped into the app's mailbox, whose uv_async wakes the worker's loop
 * (as verge.kv's writes). The timeout is a timer of that loop; when it
 * fires, vg_bus_request_cancel either forgets the request (no answer can
 * come after) or reports that the answer is already in the mailbox, which
 * then wakes the call. A call that ends while waiting cancels the same
 * way, so no answer outlives its call, and the mailbox needs no refcount:
 * the app is destroyed only after its last call. */
#include "fn_int.h"

#include "bus/bus.h"

#include <lauxlib.h>
#include <pthread.h>
#include <string.h>

#define APP_PREFIX "verge.app."
#define REQUEST_TIMEOUT_MS 5000 /* verge.request's default */

/* The app's subject for the relative one at idx, into full; raises a Lua
 * error naming fn when it is not a valid subject. */
static void app_subject(lua_State *L, int idx, const char *fn, char *full, size_t cap)
{
    struct vg_fn_app *app = vg__fn_app_of(L);
    size_t sl;
    const char *subject = luaL_checklstring(L, idx, &sl);
    int n = snprintf(full, cap, APP_PREFIX "%s.%s", app->conf->name, subject);
    if (n < 0 || (size_t)n >= cap || strlen(subject) != sl || !vg_bus_subject_valid(full, false))
        luaL_error(L,
                   "%s: invalid subject '%s': tokens of printable ASCII separated by '.', "
                   "no spaces or wildcards, at most %d bytes with the app's prefix",
                   fn, subject, VG_BUS_SUBJECT_MAX);
}

/* The trace context a message from the running call carries: a message
 * handler's own, or the request's traceparent header (the node sets it to
 * the Lua span's before the call). */
static const char *call_traceparent(struct vg_fn_app *app)
{
    struct vg__fn_call *c = app->current;
    if (!c)
        return NULL;
    if (c->traceparent || !c->req)
        return c->traceparent;
    ssize_t i = h2o_find_header_by_str(&c->req->headers, H2O_STRLIT("traceparent"), -1);
    return i < 0
               ? NULL
               : h2o_strdup(c->pool, c->req->headers.entries[i].value.base, c->req->headers.entries[i].value.len).base;
}

static int l_publish(lua_State *L)
{
    struct vg_fn_app *app = vg__fn_app_of(L);
    size_t pl;
    luaL_checkstring(L, 1);
    const char *payload = luaL_checklstring(L, 2, &pl);
    if (!app->env.bus)
        return luaL_error(L, "verge.publish: no bus on this node");
    char full[VG_BUS_SUBJECT_MAX + 1];
    app_subject(L, 1, "verge.publish", full, sizeof(full));
    if (pl > VG_BUS_PAYLOAD_MAX)
        return luaL_error(L, "verge.publish: payload over %d bytes", VG_BUS_PAYLOAD_MAX);
    int rc = vg_bus_publish_traced(app->env.bus, full, NULL, call_traceparent(app), payload, pl);
    if (rc) {
        lua_pushnil(L);
        lua_pushstring(L, rc == VG_ELIMIT ? "the bus is disconnected and its buffer is full" : vg_strerror(rc));
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* ---- verge.request ---- */

struct vg__fn_bus_box {
    pthread_mutex_t mu;
    struct vg__fn_breq *done; /* under mu: answers to hand back, newest first */
    uv_async_t *async;        /* the worker loop's */
};

struct vg__fn_breq {
    struct vg__fn_breq *next;
    struct vg__fn_bus_box *box;
    struct vg__fn_call *call; /* NULL once the call is over (loop thread only) */
    uint64_t token;
    bool at_deadline; /* the timer is the call's deadline, not the request's timeout */
    int rc;
    char *data; /* the answer (malloc'd) */
    size_t len;
};

static void breq_free(struct vg__fn_breq *r)
{
    free(r->data);
    free(r);
}

/* A bus thread: the answer, or "no responders". */
static void on_answer(void *arg, int rc, const void *data, size_t len)
{
    struct vg__fn_breq *r = arg;
    struct vg__fn_bus_box *b = r->box;
    r->rc = rc;
    r->len = rc ? 0 : len;
    r->data = vg_xmalloc(r->len + 1);
    if (r->len)
        memcpy(r->data, data, r->len);
    pthread_mutex_lock(&b->mu);
    r->next = b->done;
    b->done = r;
    uv_async_send(b->async);
    pthread_mutex_unlock(&b->mu);
}

/* answer | nil, reason */
static void wake(struct vg__fn_call *c, int rc, const char *data, size_t len)
{
    c->app->building = true;
    if (rc == 0) {
        lua_pushlstring(c->co, data, len);
        vg__fn_call_wake(c, 1);
        return;
    }
    lua_pushnil(c->co);
    lua_pushstring(c->co, rc == VG_ETIMEDOUT ? "timeout" : rc == VG_ENOENT ? "no responders" : vg_strerror(rc));
    vg__fn_call_wake(c, 2);
}

static void on_async(uv_async_t *h)
{
    struct vg__fn_bus_box *b = h->data;
    pthread_mutex_lock(&b->mu);
    struct vg__fn_breq *list = b->done;
    b->done = NULL;
    pthread_mutex_unlock(&b->mu);
    while (list) {
        struct vg__fn_breq *r = list;
        list = r->next;
        struct vg__fn_call *c = r->call;
        if (c) {
            c->breq = NULL;
            vg__fn_call_stop_timer(c);
            wake(c, r->rc, r->data, r->len);
        }
        breq_free(r);
    }
}

/* The timeout (or the call's deadline, whichever comes first). */
static void on_timeout(uv_timer_t *t)
{
    struct vg__fn_call *c = t->data;
    struct vg__fn_breq *r = c->breq;
    vg__fn_call_stop_timer(c);
    if (!vg_bus_request_cancel(c->app->env.bus, r->token))
        return; /* the answer is in the mailbox: it wakes the call */
    c->breq = NULL;
    bool at_deadline = r->at_deadline;
    breq_free(r);
    if (at_deadline) {
        c->past_deadline = true;
        vg__fn_call_wake(c, 0); /* ends the call at its limit */
        return;
    }
    wake(c, VG_ETIMEDOUT, NULL, 0);
}

void vg__fn_bus_abort(struct vg__fn_call *c)
{
    struct vg__fn_breq *r = c->breq;
    if (!r)
        return;
    c->breq = NULL;
    if (vg_bus_request_cancel(c->app->env.bus, r->token))
        breq_free(r);
    else
        r->call = NULL; /* in the mailbox: dropped when it is read */
}

static uint64_t timeout_opt(lua_State *L, int idx)
{
    if (lua_isnoneornil(L, idx))
        return REQUEST_TIMEOUT_MS;
    luaL_checktype(L, idx, LUA_TTABLE);
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        if (lua_type(L, -2) != LUA_TSTRING || strcmp(lua_tostring(L, -2), "timeout") != 0)
            luaL_error(L, "verge.request: unknown option '%s' (expected timeout)", luaL_tolstring(L, -2, NULL));
        lua_pop(L, 1);
    }
    lua_getfield(L, idx, "timeout");
    lua_Number ms = lua_isnil(L, -1) ? REQUEST_TIMEOUT_MS : luaL_checknumber(L, -1);
    lua_pop(L, 1);
    if (!(ms >= 1 && ms <= 86400000))
        luaL_error(L, "verge.request: timeout must be 1 to 86400000 milliseconds");
    return (uint64_t)ms;
}

/* verge.request(subject, payload [, {timeout = ms}]) -> answer | nil, reason */
static int l_request(lua_State *L)
{
    struct vg__fn_call *c = vg__fn_call_checked(L, "verge.request");
    struct vg_fn_app *a = c->app;
    size_t pl = 0;
    const char *payload = luaL_optlstring(L, 2, "", &pl);
    uint64_t timeout = timeout_opt(L, 3);
    if (!a->env.bus || !a->bus_box)
        return luaL_error(L, "verge.request is not available here");
    char full[VG_BUS_SUBJECT_MAX + 1];
    app_subject(L, 1, "verge.request", full, sizeof(full));
    if (pl > VG_BUS_PAYLOAD_MAX)
        return luaL_error(L, "verge.request: payload over %d bytes", VG_BUS_PAYLOAD_MAX);
    struct vg__fn_breq *r = vg_xcalloc(1, sizeof(*r));
    r->box = a->bus_box;
    r->call = c;
    int rc = vg_bus_request_start_traced(a->env.bus, full, call_traceparent(a), payload, pl, on_answer, r, &r->token);
    if (rc) {
        free(r);
        lua_pushnil(L);
        lua_pushstring(L, rc == VG_ENOENT ? "no responders" : vg_strerror(rc));
        return 2;
    }
    c->breq = r;
    uint64_t now = vg_now_ms(), left = c->deadline_ms > now ? c->deadline_ms - now : 0;
    r->at_deadline = timeout >= left; /* an answer before the deadline still counts */
    c->timer = vg_xmalloc(sizeof(*c->timer));
    uv_timer_init(a->env.loop, c->timer);
    c->timer->data = c;
    uv_timer_start(c->timer, on_timeout, r->at_deadline ? left : timeout, 0);
    c->waiting = true;
    return lua_yield(L, 0);
}

static void on_async_closed(uv_handle_t *h)
{
    free(h);
}

void vg__fn_bus_app_init(struct vg_fn_app *a)
{
    if (!a->env.loop || !a->env.bus)
        return;
    struct vg__fn_bus_box *b = vg_xcalloc(1, sizeof(*b));
    pthread_mutex_init(&b->mu, NULL);
    b->async = vg_xmalloc(sizeof(*b->async));
    uv_async_init(a->env.loop, b->async, on_async);
    b->async->data = b;
    a->bus_box = b;
}

void vg__fn_bus_app_fini(struct vg_fn_app *a)
{
    struct vg__fn_bus_box *b = a->bus_box;
    if (!b)
        return;
    /* every call is over, each cancelled its request: no answer can come */
    uv_close((uv_handle_t *)b->async, on_async_closed);
    while (b->done) {
        struct vg__fn_breq *r = b->done;
        b->done = r->next;
        breq_free(r);
    }
    pthread_mutex_destroy(&b->mu);
    free(b);
    a->bus_box = NULL;
}

void vg__fn_open_bus(lua_State *L)
{
    lua_pushcfunction(L, l_publish);
    lua_setfield(L, -2, "publish");
    lua_pushcfunction(L, l_request);
    lua_setfield(L, -2, "request");
}
