/* verge.fetch and verge.fetch_all: subrequests from a handler. The call's
 * coroutine waits while the node does the HTTP (env.fetch: the app's
 * origins with their pools and balancers), and the worker serves other
 * requests meanwhile. Several fetches of one fetch_all run at the same
 * time; the call wakes when the last one is done.
 *
 * Everything a fetch needs is copied into the request's pool before it
 * starts, so nothing depends on Lua values staying alive. A result goes
 * into Lua straight from the node's buffers when it completes its batch
 * (the common case: one fetch), else it is copied into the pool until the
 * batch is complete; either way nothing outlives the node's callback. */
#include "fn_int.h"

#include <string.h>

#define FETCH_MAX_PARALLEL 64
#define FETCH_DEFAULT_MAX_BODY (8u << 20)

struct fetch_one {
    struct vg__fn_fetch_batch *batch;
    void *handle; /* while running */
    bool running;
    struct vg_fn_fetch_req req;
    /* The result: the fetcher's memory while its done callback runs (the
     * last fetch of a batch wakes the call from there, without copying),
     * copies in the request's pool once kept for later (see on_done). */
    struct vg_fn_fetch_res res;
};

struct vg__fn_fetch_batch {
    struct vg__fn_call *call;
    struct fetch_one *items;
    size_t n, pending;
    bool list; /* fetch_all: results as a list */
};

/* ---- arguments -------------------------------------------------------------------- */

static h2o_iovec_t pool_str(h2o_req_t *req, lua_State *L, int idx)
{
    size_t n;
    const char *s = lua_tolstring(L, idx, &n);
    return h2o_strdup(&req->pool, s, n);
}

static void opt_headers(lua_State *L, int opts, h2o_req_t *req, struct vg_fn_fetch_req *f)
{
    if (lua_getfield(L, opts, "headers") != LUA_TTABLE) {
        lua_pop(L, 1);
        return;
    }
    int t = lua_gettop(L);
    size_t cap = 0;
    lua_pushnil(L);
    while (lua_next(L, t)) {
        cap++;
        lua_pop(L, 1);
    }
    h2o_header_t *hs = h2o_mem_alloc_pool(&req->pool, sizeof(*hs) * (cap ? cap : 1));
    size_t n = 0;
    lua_pushnil(L);
    while (lua_next(L, t)) {
        if (lua_type(L, -2) != LUA_TSTRING || (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER))
            luaL_error(L, "verge.fetch: headers map names to strings");
        size_t kl, vl;
        const char *k = lua_tolstring(L, -2, &kl);
        lua_pushvalue(L, -1);
        const char *v = lua_tolstring(L, -1, &vl); /* a copy: converting the value in place would upset lua_next */
        char *lk = h2o_mem_alloc_pool(&req->pool, kl);
        for (size_t i = 0; i < kl; i++) {
            char ch = k[i];
            if ((unsigned char)ch <= 0x20 || ch == ':' || ch == 0x7f)
                luaL_error(L, "verge.fetch: invalid header name");
            lk[i] = (char)(ch >= 'A' && ch <= 'Z' ? ch + 32 : ch);
        }
        for (size_t i = 0; i < vl; i++)
            if (v[i] == '\r' || v[i] == '\n' || v[i] == '\0')
                luaL_error(L, "verge.fetch: CR, LF or NUL in a header value");
        hs[n].name = h2o_mem_alloc_pool(&req->pool, sizeof(h2o_iovec_t));
        *hs[n].name = h2o_iovec_init(lk, kl);
        hs[n].orig_name = NULL;
        hs[n].value = h2o_strdup(&req->pool, v, vl);
        n++;
        lua_pop(L, 2);
    }
    lua_pop(L, 1);
    f->headers = hs;
    f->n_headers = n;
}

/* verge.fetch(target [, opts]) arguments at (target, opts) -> *f. */
static void parse_one(lua_State *L, int target, int opts, struct vg__fn_call *c, struct vg_fn_fetch_req *f)
{
    h2o_req_t *req = c->req;
    size_t tl;
    const char *t = luaL_checklstring(L, target, &tl);
    if (!lua_isnoneornil(L, opts))
        luaL_checktype(L, opts, LUA_TTABLE);
    *f = (struct vg_fn_fetch_req){.method = h2o_iovec_init(H2O_STRLIT("GET")), .path = h2o_iovec_init(H2O_STRLIT("/"))};
    if (tl > 7 && memcmp(t, "http://", 7) == 0) {
        const char *slash = memchr(t + 7, '/', tl - 7);
        f->target = h2o_strdup(&req->pool, t, slash ? (size_t)(slash - t) : tl);
        if (slash)
            f->path = h2o_strdup(&req->pool, slash, tl - (size_t)(slash - t));
    } else {
        f->target = h2o_strdup(&req->pool, t, tl);
    }
    uint64_t now = vg_now_ms();
    f->timeout_ms = c->deadline_ms > now ? c->deadline_ms - now : 1;
    f->max_body = FETCH_DEFAULT_MAX_BODY;
    if (lua_isnoneornil(L, opts))
        return;
    opts = lua_absindex(L, opts);
    if (lua_getfield(L, opts, "path") == LUA_TSTRING)
        f->path = pool_str(req, L, -1);
    if (lua_getfield(L, opts, "body") == LUA_TSTRING) {
        f->body = pool_str(req, L, -1);
        f->method = h2o_iovec_init(H2O_STRLIT("POST"));
    }
    if (lua_getfield(L, opts, "method") == LUA_TSTRING)
        f->method = pool_str(req, L, -1);
    if (lua_getfield(L, opts, "timeout") == LUA_TNUMBER) {
        lua_Number ms = lua_tonumber(L, -1);
        if (ms > 0 && (uint64_t)ms < f->timeout_ms)
            f->timeout_ms = (uint64_t)ms;
    }
    if (lua_getfield(L, opts, "max_body") == LUA_TNUMBER && lua_tointeger(L, -1) > 0)
        f->max_body = (size_t)lua_tointeger(L, -1);
    lua_pop(L, 5);
    opt_headers(L, opts, req, f);
    for (size_t i = 0; i < f->method.len; i++)
        if (!((f->method.base[i] >= 'A' && f->method.base[i] <= 'Z') || f->method.base[i] == '-'))
            luaL_error(L, "verge.fetch: invalid method");
    if (f->path.len == 0 || f->path.base[0] != '/' || memchr(f->path.base, ' ', f->path.len) ||
        memchr(f->path.base, '\r', f->path.len) || memchr(f->path.base, '\n', f->path.len))
        luaL_error(L, "verge.fetch: the path starts with '/' and has no spaces or line breaks");
}

/* ---- results ---------------------------------------------------------------------------- */

/* {status=, headers= (a read-only view, one allocation), body=} */
static void push_result(lua_State *L, const struct vg_fn_fetch_res *r)
{
    lua_createtable(L, 0, 3);
    lua_pushinteger(L, r->status);
    lua_setfield(L, -2, "status");
    vg__fn_headers_push_copy(L, r->headers, r->n_headers);
    lua_setfield(L, -2, "headers");
    lua_pushlstring(L, r->body.base, r->body.len);
    lua_setfield(L, -2, "body");
}

static void wake(struct vg__fn_fetch_batch *b)
{
    struct vg__fn_call *c = b->call;
    lua_State *co = c->co;
    c->fetch = NULL;
    vg__fn_call_stop_timer(c);
    c->app->building = true;
    if (!b->list) {
        struct fetch_one *o = &b->items[0];
        if (o->res.err) {
            lua_pushnil(co);
            lua_pushstring(co, o->res.err);
        } else {
            push_result(co, &o->res);
            lua_pushnil(co);
        }
        vg__fn_call_wake(c, 2);
        return;
    }
    lua_createtable(co, (int)b->n, 0);
    for (size_t i = 0; i < b->n; i++) {
        if (b->items[i].res.err) {
            lua_createtable(co, 0, 1);
            lua_pushstring(co, b->items[i].res.err);
            lua_setfield(co, -2, "error");
        } else {
            push_result(co, &b->items[i].res);
        }
        lua_rawseti(co, -2, (lua_Integer)i + 1);
    }
    vg__fn_call_wake(c, 1);
}

/* A result that must outlive its done callback (others of its batch are
 * still running) is copied into the request's pool. */
static void keep(struct fetch_one *o, h2o_req_t *req)
{
    struct vg_fn_fetch_res *r = &o->res;
    if (r->err) {
        r->err = h2o_strdup(&req->pool, r->err, strlen(r->err)).base;
        return;
    }
    h2o_header_t *hs = h2o_mem_alloc_pool(&req->pool, sizeof(*hs) * (r->n_headers ? r->n_headers : 1));
    for (size_t i = 0; i < r->n_headers; i++) {
        hs[i].name = h2o_mem_alloc_pool(&req->pool, sizeof(h2o_iovec_t));
        *hs[i].name = h2o_strdup(&req->pool, r->headers[i].name->base, r->headers[i].name->len);
        hs[i].orig_name = NULL;
        hs[i].value = h2o_strdup(&req->pool, r->headers[i].value.base, r->headers[i].value.len);
    }
    r->headers = hs;
    r->body = h2o_strdup(&req->pool, r->body.base, r->body.len);
}

static void on_done(void *data, const struct vg_fn_fetch_res *res)
{
    struct fetch_one *o = data;
    o->running = false;
    o->res = *res;
    if (--o->batch->pending == 0)
        wake(o->batch); /* res is still valid: Lua copies what it keeps */
    else
        keep(o, o->batch->call->req);
}

/* The batch's timeout (the shortest of its fetches'): whatever still runs
 * is stopped and reported as timed out. */
static void on_timeout(uv_timer_t *t)
{
    struct vg__fn_fetch_batch *b = t->data;
    struct vg__fn_call *c = b->call;
    for (size_t i = 0; i < b->n; i++) {
        struct fetch_one *o = &b->items[i];
        if (!o->running)
            continue;
        c->app->env.fetch.cancel(o->handle);
        o->running = false;
        o->res.err = "timed out";
    }
    b->pending = 0;
    wake(b);
}

static void start_timer(struct vg__fn_fetch_batch *b)
{
    struct vg__fn_call *c = b->call;
    if (!c->app->env.loop)
        return;
    uint64_t ms = UINT64_MAX;
    for (size_t i = 0; i < b->n; i++)
        if (b->items[i].req.timeout_ms < ms)
            ms = b->items[i].req.timeout_ms;
    c->timer = vg_xmalloc(sizeof(*c->timer));
    uv_timer_init(c->app->env.loop, c->timer);
    c->timer->data = b;
    uv_timer_start(c->timer, on_timeout, ms, 0);
}

/* ---- starting ------------------------------------------------------------------------------ */

static int start(lua_State *L, struct vg__fn_fetch_batch *b)
{
    struct vg__fn_call *c = b->call;
    const struct vg_fn_fetcher *fx = &c->app->env.fetch;
    c->fetch = b;
    c->waiting = true;
    b->pending = b->n;
    start_timer(b);
    for (size_t i = 0; i < b->n; i++) {
        struct fetch_one *o = &b->items[i];
        o->batch = b;
        o->running = true;
        o->handle = fx->start(fx->ctx, c->req, &o->req, on_done, o);
    }
    return lua_yield(L, 0);
}

static struct vg__fn_call *fetch_call(lua_State *L, const char *what)
{
    struct vg__fn_call *c = vg__fn_call_checked(L, what);
    if (!c->app->env.fetch.start)
        luaL_error(L, "%s is not available here", what);
    if (!c->req) /* fetches run as subrequests of the call's HTTP request */
        luaL_error(L, "%s is not available in message handlers (only while handling an HTTP request)", what);
    if (c->fetch)
        luaL_error(L, "%s: a fetch is already running", what);
    return c;
}

/* verge.fetch(target [, opts]) -> response | nil, reason */
static int l_fetch(lua_State *L)
{
    struct vg__fn_call *c = fetch_call(L, "verge.fetch");
    struct vg__fn_fetch_batch *b = h2o_mem_alloc_pool(&c->req->pool, sizeof(*b));
    *b = (struct vg__fn_fetch_batch){.call = c, .n = 1};
    b->items = h2o_mem_alloc_pool(&c->req->pool, sizeof(*b->items));
    memset(b->items, 0, sizeof(*b->items));
    parse_one(L, 1, 2, c, &b->items[0].req);
    return start(L, b);
}

/* verge.fetch_all({{target [, opts]}, ...}) -> {response or {error=reason}, ...} */
static int l_fetch_all(lua_State *L)
{
    struct vg__fn_call *c = fetch_call(L, "verge.fetch_all");
    luaL_checktype(L, 1, LUA_TTABLE);
    size_t n = lua_rawlen(L, 1);
    if (n == 0 || n > FETCH_MAX_PARALLEL)
        return luaL_error(L, "verge.fetch_all: give 1 to %d requests", FETCH_MAX_PARALLEL);
    struct vg__fn_fetch_batch *b = h2o_mem_alloc_pool(&c->req->pool, sizeof(*b));
    *b = (struct vg__fn_fetch_batch){.call = c, .n = n, .list = true};
    b->items = h2o_mem_alloc_pool(&c->req->pool, sizeof(*b->items) * n);
    memset(b->items, 0, sizeof(*b->items) * n);
    for (size_t i = 0; i < n; i++) {
        if (lua_rawgeti(L, 1, (lua_Integer)i + 1) != LUA_TTABLE)
            return luaL_error(L, "verge.fetch_all: request %d is not a table {target, opts}", (int)i + 1);
        int t = lua_gettop(L);
        lua_rawgeti(L, t, 1);
        lua_rawgeti(L, t, 2);
        parse_one(L, t + 1, t + 2, c, &b->items[i].req);
        lua_settop(L, t - 1);
    }
    return start(L, b);
}

void vg__fn_fetch_abort(struct vg__fn_call *c)
{
    struct vg__fn_fetch_batch *b = c->fetch;
    if (!b)
        return;
    for (size_t i = 0; i < b->n; i++)
        if (b->items[i].running)
            c->app->env.fetch.cancel(b->items[i].handle);
    c->fetch = NULL;
}

void vg__fn_open_fetch(lua_State *L)
{
    lua_pushcfunction(L, l_fetch);
    lua_setfield(L, -2, "fetch");
    lua_pushcfunction(L, l_fetch_all);
    lua_setfield(L, -2, "fetch_all");
}
