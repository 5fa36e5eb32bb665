/* The request object a handler receives, and the response it returns.
 *
 * The request is a userdata holding the call; its fields are computed when
 * read (most handlers read two or three), and tables built on demand
 * (query, headers, ctx) are cached in its user value. When the request is
 * over the call pointer is cleared, so a script that kept the object gets
 * an error instead of reading freed memory.
 *
 * Responses are read with raw accesses only: a metatable on a response
 * table would otherwise run script code outside the call's limits. */
#include "fn_int.h"
#include "http/http.h"

#include <ctype.h>
#include <string.h>

#define REQ_MT "verge.request"

static bool header_ok(const char *name, size_t nl, const char *val, size_t vl);

/* user values of the request object: tables and proxies built on demand */
enum { CACHE_QUERY = 1, CACHE_HEADERS, CACHE_CTX, CACHE_SLOTS = CACHE_CTX };

/* Metamethods get the request itself; methods (req:x()) may get anything.
 * The metatable is compared by identity with the one kept as upvalue 1 of
 * every request function (cheaper than luaL_checkudata's registry lookup,
 * which showed per field access). */
static struct vg__fn_call *check_req(lua_State *L, int idx)
{
    struct vg__fn_call **p = lua_touserdata(L, idx);
    if (!p || !lua_getmetatable(L, idx) || !lua_rawequal(L, -1, lua_upvalueindex(1)))
        luaL_typeerror(L, idx, "request");
    lua_pop(L, 1);
    if (!*p || !(*p)->req)
        luaL_error(L, "the request is over (a request object is only valid while its handler runs)");
    return *p;
}

/* Sets the metatable at registry ref on the value on top. */
static void set_mt(lua_State *L, int ref)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
    lua_setmetatable(L, -2);
}

/* Pushes t[key] of the table at (absolute) idx, raw; returns its type. */
static int raw_field(lua_State *L, int idx, int key)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, vg__fn_app_of(L)->key_ref[key]);
    return lua_rawget(L, idx);
}

void vg__fn_request_push(lua_State *L, struct vg__fn_call *call)
{
    struct vg__fn_call **p = lua_newuserdatauv(L, sizeof(*p), CACHE_SLOTS);
    *p = call;
    set_mt(L, call->app->req_mt_ref);
}

/* ---- lazily built fields ---------------------------------------------------------- */

/* application/x-www-form-urlencoded decoding of one key or value. */
static void push_decoded(lua_State *L, const char *s, size_t n)
{
    luaL_Buffer b;
    char *out = luaL_buffinitsize(L, &b, n ? n : 1);
    luaL_pushresultsize(&b, vg_http_form_decode(s, n, out));
}

/* query: key -> value; a key given several times -> a list of values. */
static void push_query(lua_State *L, h2o_req_t *req)
{
    lua_newtable(L);
    if (req->query_at == SIZE_MAX)
        return;
    const char *p = req->path.base + req->query_at + 1, *end = req->path.base + req->path.len;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p)), *stop = amp ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(stop - p));
        if (stop > p) {
            push_decoded(L, p, (size_t)((eq ? eq : stop) - p));
            if (eq)
                push_decoded(L, eq + 1, (size_t)(stop - eq - 1));
            else
                lua_pushliteral(L, "");
            lua_pushvalue(L, -2);
            lua_rawget(L, -4);
            if (lua_isnil(L, -1)) {
                lua_pop(L, 1);
                lua_rawset(L, -3);
            } else {
                if (!lua_istable(L, -1)) { /* second value: make a list */
                    lua_createtable(L, 2, 0);
                    lua_insert(L, -2);
                    lua_rawseti(L, -2, 1);
                }
                lua_insert(L, -2);
                lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
                lua_rawset(L, -3);
            }
        }
        p = stop + 1;
    }
}

#define HEADERS_MT "verge.headers"

/* The header name argument at idx, lower-cased into buf (h2o keeps names
 * lower-case); false when it is too long to be a header name. */
static bool lower_name(lua_State *L, int idx, char buf[256], size_t *n)
{
    const char *k = luaL_checklstring(L, idx, n);
    if (*n >= 256)
        return false;
    for (size_t i = 0; i < *n; i++)
        buf[i] = (char)tolower((unsigned char)k[i]);
    return true;
}

/* All values of a header, joined with ", " (RFC 9110 5.3), or nothing. */
static int push_joined(lua_State *L, const h2o_headers_t *hs, const char *name, size_t n)
{
    int found = 0;
    for (ssize_t i = -1; (i = h2o_find_header_by_str(hs, name, n, i)) != -1; found++) {
        if (found)
            lua_pushliteral(L, ", ");
        lua_pushlstring(L, hs->entries[i].value.base, hs->entries[i].value.len);
    }
    if (found > 1)
        lua_concat(L, 2 * found - 1);
    return found ? 1 : 0;
}

/* A headers view is a userdata with the HEADERS_MT metatable, of one of
 * two kinds:
 *   - req.headers: no memory of its own; its user value is the request
 *     object, and the view reads the live request (valid while it runs);
 *   - a copy (a fetch's response headers): the userdata holds an
 *     h2o_headers_t with its entries, names and bytes packed behind it, so
 *     it lives as long as Lua keeps it and costs one allocation, however
 *     many headers there are (a table would cost one string per name and
 *     value, made whether or not the handler reads them). */
struct packed_headers {
    h2o_headers_t hs; /* entries point into this block */
};

/* The header list behind a view, or an error when it is the headers of a
 * request that is over. */
static const h2o_headers_t *headers_of(lua_State *L, int idx)
{
    if (lua_rawlen(L, idx) >= sizeof(struct packed_headers))
        return &((struct packed_headers *)lua_touserdata(L, idx))->hs;
    lua_getiuservalue(L, idx, 1);
    struct vg__fn_call **p = lua_touserdata(L, -1); /* set by push_headers: always the request */
    if (!p || !*p || !(*p)->req)
        luaL_error(L, "the request is over (a request object is only valid while its handler runs)");
    lua_pop(L, 1);
    return &(*p)->req->headers;
}

/* headers[name]: looked up in the list itself (any case), nothing is
 * copied until asked for: most handlers read one or two headers. */
static int headers_index(lua_State *L)
{
    const h2o_headers_t *hs = headers_of(L, 1);
    size_t n;
    char buf[256];
    if (!lower_name(L, 2, buf, &n))
        return 0;
    return push_joined(L, hs, buf, n);
}

/* pairs(headers): a snapshot table, lower-case name -> joined value. */
static int headers_pairs(lua_State *L)
{
    const h2o_headers_t *hs = headers_of(L, 1);
    lua_getglobal(L, "next");
    lua_createtable(L, 0, (int)hs->size);
    for (size_t i = 0; i < hs->size; i++) {
        const h2o_header_t *h = &hs->entries[i];
        lua_pushlstring(L, h->name->base, h->name->len);
        lua_pushvalue(L, -1);
        if (lua_rawget(L, -3) != LUA_TNIL) {
            lua_pop(L, 2);
            continue;
        }
        lua_pop(L, 1);
        push_joined(L, hs, h->name->base, h->name->len);
        lua_rawset(L, -3);
    }
    lua_pushnil(L);
    return 3;
}

static int headers_newindex(lua_State *L)
{
    if (lua_rawlen(L, 1) >= sizeof(struct packed_headers))
        return luaL_error(L, "these headers are read-only: copy them with pairs() to change them");
    return luaL_error(L, "req.headers is read-only: use req:set_header(name, value)");
}

void vg__fn_headers_push_copy(lua_State *L, const h2o_header_t *entries, size_t n)
{
    size_t bytes = 0;
    for (size_t i = 0; i < n; i++)
        bytes += entries[i].name->len + entries[i].value.len;
    size_t size = sizeof(struct packed_headers) + n * (sizeof(h2o_header_t) + sizeof(h2o_iovec_t)) + bytes;
    struct packed_headers *ph = lua_newuserdatauv(L, size, 0);
    h2o_header_t *e = (h2o_header_t *)(ph + 1);
    h2o_iovec_t *names = (h2o_iovec_t *)(e + n);
    char *p = (char *)(names + n);
    ph->hs = (h2o_headers_t){.entries = e, .size = n, .capacity = n};
    for (size_t i = 0; i < n; i++) {
        names[i] = h2o_iovec_init(p, entries[i].name->len);
        memcpy(p, entries[i].name->base, names[i].len);
        p += names[i].len;
        e[i] = (h2o_header_t){.name = &names[i], .value = h2o_iovec_init(p, entries[i].value.len)};
        memcpy(p, entries[i].value.base, entries[i].value.len);
        p += entries[i].value.len;
    }
    set_mt(L, vg__fn_app_of(L)->headers_mt_ref);
}

static void push_headers(lua_State *L, int req_ud)
{
    lua_newuserdatauv(L, 0, 1);
    lua_pushvalue(L, req_ud);
    lua_setiuservalue(L, -2, 1);
    set_mt(L, vg__fn_app_of(L)->headers_mt_ref);
}

static void push_cached(lua_State *L, int ud, int slot, struct vg__fn_call *c)
{
    if (lua_getiuservalue(L, ud, slot) != LUA_TNIL)
        return;
    lua_pop(L, 1);
    if (slot == CACHE_QUERY)
        push_query(L, c->req);
    else if (slot == CACHE_HEADERS)
        push_headers(L, ud);
    else
        lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_setiuservalue(L, ud, slot);
}

static int req_index(lua_State *L)
{
    struct vg__fn_call *c = check_req(L, 1);
    h2o_req_t *req = c->req;
    size_t n;
    const char *k = luaL_checklstring(L, 2, &n);
    if (n == 6 && memcmp(k, "method", 6) == 0) {
        lua_pushlstring(L, req->method.base, req->method.len);
    } else if (n == 4 && memcmp(k, "path", 4) == 0) {
        lua_pushlstring(L, req->path.base, req->query_at == SIZE_MAX ? req->path.len : req->query_at);
    } else if (n == 7 && memcmp(k, "headers", 7) == 0) {
        push_cached(L, 1, CACHE_HEADERS, c);
    } else if (n == 5 && memcmp(k, "query", 5) == 0) {
        push_cached(L, 1, CACHE_QUERY, c);
    } else if (n == 3 && memcmp(k, "ctx", 3) == 0) {
        push_cached(L, 1, CACHE_CTX, c);
    } else if (n == 4 && memcmp(k, "body", 4) == 0) { /* nil while a large body is still arriving: read_body */
        if (vg_http_body_is_streamed(req))
            lua_pushnil(L);
        else
            lua_pushlstring(L, req->entity.base ? req->entity.base : "", req->entity.len);
    } else if (n == 2 && memcmp(k, "id", 2) == 0) {
        lua_pushlstring(L, c->reqid.base, c->reqid.len);
    } else if (n == 9 && memcmp(k, "client_ip", 9) == 0) {
        char buf[VG_HTTP_PEER_MAX];
        h2o_iovec_t ip = vg_http_peer_ip(req, buf);
        lua_pushlstring(L, ip.base, ip.len);
    } else if (n == 4 && memcmp(k, "host", 4) == 0) {
        lua_pushlstring(L, req->authority.base, req->authority.len);
    } else if (n == 6 && memcmp(k, "scheme", 6) == 0) {
        lua_pushstring(L, req->scheme == &H2O_URL_SCHEME_HTTPS ? "https" : "http");
    } else if (n == 9 && memcmp(k, "raw_query", 9) == 0) {
        if (req->query_at == SIZE_MAX)
            lua_pushliteral(L, "");
        else
            lua_pushlstring(L, req->path.base + req->query_at + 1, req->path.len - req->query_at - 1);
    } else {
        lua_getmetatable(L, 1); /* methods */
        lua_pushvalue(L, 2);
        lua_rawget(L, -2);
    }
    return 1;
}

/* req:header(name) -> first value or nil. */
static int req_header(lua_State *L)
{
    struct vg__fn_call *c = check_req(L, 1);
    size_t n;
    char buf[256];
    if (!lower_name(L, 2, buf, &n))
        return 0;
    ssize_t i = h2o_find_header_by_str(&c->req->headers, buf, n, -1);
    if (i < 0)
        return 0;
    lua_pushlstring(L, c->req->headers.entries[i].value.base, c->req->headers.entries[i].value.len);
    return 1;
}

/* req:header_values(name) -> list of every value. */
static int req_header_values(lua_State *L)
{
    struct vg__fn_call *c = check_req(L, 1);
    size_t n;
    char buf[256];
    bool ok = lower_name(L, 2, buf, &n);
    lua_newtable(L);
    if (!ok)
        return 1;
    lua_Integer j = 1;
    for (ssize_t i = -1; (i = h2o_find_header_by_str(&c->req->headers, buf, n, i)) != -1;) {
        lua_pushlstring(L, c->req->headers.entries[i].value.base, c->req->headers.entries[i].value.len);
        lua_rawseti(L, -2, j++);
    }
    return 1;
}

/* ---- the body ---------------------------------------------------------------------------- */

static void wake_with_body(struct vg__fn_call *c, const char *err)
{
    lua_State *co = c->co;
    c->app->building = true;
    if (err) {
        lua_pushnil(co);
        lua_pushstring(co, err);
    } else {
        lua_pushlstring(co, c->body->bytes, c->body->size);
        lua_pushnil(co);
    }
    h2o_buffer_dispose(&c->body);
    vg__fn_call_wake(c, 2);
}

static void on_body_piece(void *data, h2o_iovec_t buf, enum vg_http_body_status st, int status, const char *reason)
{
    struct vg__fn_call *c = data;
    if (st == VG_HTTP_BODY_ERROR) {
        wake_with_body(c, reason ? reason : "the request body could not be read");
        return;
    }
    if (c->body->size + buf.len > c->body_max) {
        wake_with_body(c, "request body larger than the limit given to read_body");
        return;
    }
    if (buf.len) { /* an empty piece (the end over HTTP/2) may come with no buffer at all */
        h2o_iovec_t dst = h2o_buffer_reserve(&c->body, buf.len);
        memcpy(dst.base, buf.base, buf.len);
        c->body->size += buf.len;
    }
    if (st == VG_HTTP_BODY_END)
        wake_with_body(c, NULL);
    else
        vg_http_body_read(c->req, c->app->conf->limits.body_size, on_body_piece, c);
}

/* req:read_body([max]) -> body | nil, reason. A body still arriving (large
 * uploads) is read here, the call waiting without blocking the worker;
 * max (default limits.body_size) bounds what is kept in memory. */
static int req_read_body(lua_State *L)
{
    struct vg__fn_call *c = check_req(L, 1);
    h2o_req_t *req = c->req;
    lua_Integer max = luaL_optinteger(L, 2, (lua_Integer)c->app->conf->limits.body_size);
    if (max < 0)
        return luaL_argerror(L, 2, "must not be negative");
    if (!vg_http_body_is_streamed(req)) {
        if (req->entity.len > (size_t)max) {
            lua_pushnil(L);
            lua_pushliteral(L, "request body larger than the limit given to read_body");
            return 2;
        }
        lua_pushlstring(L, req->entity.base ? req->entity.base : "", req->entity.len);
        return 1;
    }
    if (c->body)
        return luaL_error(L, "read_body: the body is being read already");
    vg__fn_call_checked(L, "req:read_body");
    c->body_max = (size_t)max;
    h2o_buffer_init(&c->body, &h2o_socket_buffer_prototype);
    c->waiting = true;
    vg_http_body_read(req, c->app->conf->limits.body_size, on_body_piece, c);
    return lua_yield(L, 0);
}

/* ---- rewriting (on_request) --------------------------------------------------------- */

static void forget_cached(lua_State *L, int slot)
{
    lua_pushnil(L);
    lua_setiuservalue(L, 1, slot);
}

/* A lower-cased copy of the name in pool memory, or a Lua error. */
static h2o_iovec_t checked_name(lua_State *L, int idx, h2o_req_t *req)
{
    size_t n;
    const char *k = luaL_checklstring(L, idx, &n);
    if (!header_ok(k, n, "", 0))
        luaL_error(L, "invalid header name");
    char *lc = h2o_mem_alloc_pool(&req->pool, n);
    for (size_t i = 0; i < n; i++)
        lc[i] = (char)tolower((unsigned char)k[i]);
    return h2o_iovec_init(lc, n);
}

static h2o_iovec_t checked_value(lua_State *L, int idx, h2o_req_t *req)
{
    size_t n;
    const char *v = luaL_checklstring(L, idx, &n);
    if (!header_ok("x", 1, v, n))
        luaL_error(L, "invalid header value (CR, LF or control bytes)");
    return h2o_strdup(&req->pool, v, n);
}

static void remove_header(h2o_req_t *req, h2o_iovec_t name)
{
    ssize_t i;
    while ((i = h2o_find_header_by_str(&req->headers, name.base, name.len, -1)) != -1)
        h2o_delete_header(&req->headers, i);
}

/* req:set_header(name, value): replaces every value; nil removes. */
static int req_set_header(lua_State *L)
{
    struct vg__fn_call *c = check_req(L, 1);
    h2o_iovec_t name = checked_name(L, 2, c->req);
    remove_header(c->req, name);
    if (!lua_isnil(L, 3)) {
        h2o_iovec_t v = checked_value(L, 3, c->req);
        h2o_add_header_by_str(&c->req->pool, &c->req->headers, name.base, name.len, 1, NULL, v.base, v.len);
    }
    return 0;
}

/* req:add_header(name, value): one more value. */
static int req_add_header(lua_State *L)
{
    struct vg__fn_call *c = check_req(L, 1);
    h2o_iovec_t name = checked_name(L, 2, c->req);
    h2o_iovec_t v = checked_value(L, 3, c->req);
    h2o_add_header_by_str(&c->req->pool, &c->req->headers, name.base, name.len, 1, NULL, v.base, v.len);
    return 0;
}

/* req:set_path("/new?q=1"): what routing and the origin see from now on. */
static int req_set_path(lua_State *L)
{
    struct vg__fn_call *c = check_req(L, 1);
    size_t n;
    const char *p = luaL_checklstring(L, 2, &n);
    if (n == 0 || p[0] != '/' || n > 8192)
        return luaL_error(L, "a path starts with '/' (and is at most 8 KiB)");
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)p[i] <= 0x20 || p[i] == 0x7f || p[i] == '#')
            return luaL_error(L, "invalid byte in path (spaces, controls and '#' must be percent-encoded)");
    h2o_req_t *req = c->req;
    req->path = h2o_strdup(&req->pool, p, n);
    req->path_normalized =
        h2o_url_normalize_path(&req->pool, req->path.base, req->path.len, &req->query_at, &req->norm_indexes);
    forget_cached(L, CACHE_QUERY);
    return 0;
}

static int req_tostring(lua_State *L)
{
    struct vg__fn_call **p = lua_touserdata(L, 1);
    if (!p || !*p || !(*p)->req) {
        lua_pushliteral(L, "request (over)");
        return 1;
    }
    h2o_req_t *req = (*p)->req; /* "request GET /path" (the path clipped: it is for logs) */
    lua_pushliteral(L, "request ");
    lua_pushlstring(L, req->method.base, req->method.len);
    lua_pushliteral(L, " ");
    lua_pushlstring(L, req->path.base, req->path.len > 200 ? 200 : req->path.len);
    lua_concat(L, 4);
    return 1;
}

void vg__fn_request_open(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"header", req_header},         {"header_values", req_header_values}, {"set_header", req_set_header},
        {"add_header", req_add_header}, {"set_path", req_set_path},           {"read_body", req_read_body},
        {"__index", req_index},         {"__tostring", req_tostring},         {NULL, NULL}};
    static const luaL_Reg hmeta[] = {
        {"__index", headers_index}, {"__pairs", headers_pairs}, {"__newindex", headers_newindex}, {NULL, NULL}};
    static const char *const keys[VG__FN_KEYS] = {"status", "body", "headers"};
    struct vg_fn_app *a = vg__fn_app_of(L);
    luaL_newmetatable(L, HEADERS_MT);
    luaL_setfuncs(L, hmeta, 0);
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    a->headers_mt_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    luaL_newmetatable(L, REQ_MT);
    lua_pushvalue(L, -1);
    luaL_setfuncs(L, methods, 1); /* upvalue 1: the metatable, for check_req */
    lua_pushliteral(L, "request");
    lua_setfield(L, -2, "__name");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable"); /* getmetatable(req) does not hand out the methods table */
    a->req_mt_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    for (int k = 0; k < VG__FN_KEYS; k++) {
        lua_pushstring(L, keys[k]);
        a->key_ref[k] = luaL_ref(L, LUA_REGISTRYINDEX);
    }
}

/* ---- responses ----------------------------------------------------------------------- */

/* A header a script sends: RFC 9110's grammar, and a name short enough
 * for lower_name's buffer when it is read back. */
static bool header_ok(const char *name, size_t nl, const char *val, size_t vl)
{
    return nl <= 256 && vg_http_name_ok(h2o_iovec_init(name, nl)) && vg_http_value_ok(h2o_iovec_init(val, vl));
}

static bool add_header(lua_State *L, h2o_req_t *req, int vidx, const char *name, size_t nl, const char **why)
{
    size_t vl;
    if (lua_type(L, vidx) != LUA_TSTRING && lua_type(L, vidx) != LUA_TNUMBER) {
        *why = "header values must be strings, numbers or lists of them";
        return false;
    }
    const char *v = lua_tolstring(L, vidx, &vl);
    if (!header_ok(name, nl, v, vl)) {
        *why = "invalid header name or value (CR, LF or control bytes)";
        return false;
    }
    char *lname = h2o_mem_alloc_pool(&req->pool, nl);
    for (size_t i = 0; i < nl; i++)
        lname[i] = (char)tolower((unsigned char)name[i]);
    if (nl == 14 && memcmp(lname, "content-length", 14) == 0)
        return true; /* the body decides */
    h2o_iovec_t val = h2o_strdup(&req->pool, v, vl);
    h2o_add_header_by_str(&req->pool, &req->res.headers, lname, nl, 1, NULL, val.base, val.len);
    return true;
}

static bool add_headers(lua_State *L, int t, h2o_req_t *req, const char **why)
{
    lua_pushnil(L);
    while (lua_next(L, t)) {
        if (lua_type(L, -2) != LUA_TSTRING) {
            *why = "header names must be strings";
            lua_pop(L, 2);
            return false;
        }
        size_t nl;
        const char *name = lua_tolstring(L, -2, &nl);
        bool ok = true;
        if (lua_istable(L, -1)) {
            lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
            for (lua_Integer i = 1; ok && i <= n; i++) {
                lua_rawgeti(L, -1, i);
                ok = add_header(L, req, lua_gettop(L), name, nl, why);
                lua_pop(L, 1);
            }
        } else {
            ok = add_header(L, req, lua_gettop(L), name, nl, why);
        }
        lua_pop(L, 1);
        if (!ok) {
            lua_pop(L, 1);
            return false;
        }
    }
    return true;
}

/* The headers of a view (already valid: parsed from a peer) into the
 * response, but for Content-Length: the body decides. */
static bool add_view(lua_State *L, int idx, h2o_req_t *req)
{
    const h2o_headers_t *hs = headers_of(L, idx);
    for (size_t i = 0; i < hs->size; i++) {
        const h2o_header_t *h = &hs->entries[i];
        if (h2o_memis(h->name->base, h->name->len, H2O_STRLIT("content-length")))
            continue;
        h2o_iovec_t name = h2o_strdup(&req->pool, h->name->base, h->name->len);
        h2o_iovec_t val = h2o_strdup(&req->pool, h->value.base, h->value.len);
        h2o_add_header_by_str(&req->pool, &req->res.headers, name.base, name.len, 1, NULL, val.base, val.len);
    }
    return true;
}

bool vg__fn_response_headers(lua_State *L, int idx, h2o_req_t *req, const char **why)
{
    int ht = raw_field(L, idx, VG__FN_KEY_HEADERS);
    bool ok = ht == LUA_TNIL || (ht == LUA_TTABLE && add_headers(L, lua_gettop(L), req, why));
    if (ht == LUA_TUSERDATA && luaL_testudata(L, -1, HEADERS_MT)) /* a view: `return verge.fetch(...)` */
        ok = add_view(L, lua_gettop(L), req);
    else if (ht != LUA_TTABLE && ht != LUA_TNIL)
        *why = "headers must be a table";
    lua_pop(L, 1);
    return ok;
}

/* Sends body as the whole response. A body of PIN_MIN bytes or more is not
 * copied: the Lua string (immutable, and Lua's collector never moves
 * objects) is kept alive by a registry reference until the request ends,
 * and the response points into it; a small one is copied into the pool,
 * which costs less than the reference. */
#define PIN_MIN 1024 /* h2o's pool hands allocations this big to malloc */

static void send_body(lua_State *L, int body_idx, const char *body, size_t blen, h2o_req_t *req, int *pin)
{
    static h2o_generator_t generator = {NULL, NULL}; /* one piece, sent final: nothing to proceed or stop */
    if (blen < PIN_MIN || !pin) {
        h2o_send_inline(req, body, blen);
        return;
    }
    lua_pushvalue(L, body_idx);
    *pin = luaL_ref(L, LUA_REGISTRYINDEX);
    h2o_iovec_t buf = h2o_iovec_init(body, blen);
    h2o_start_response(req, &generator);
    h2o_send(req, &buf, 1, H2O_SEND_STATE_FINAL);
}

bool vg__fn_response_send(lua_State *L, int idx, h2o_req_t *req, int *pin, const char **why)
{
    lua_Integer status = 200;
    if (raw_field(L, idx, VG__FN_KEY_STATUS) != LUA_TNIL) {
        int isnum;
        status = lua_tointegerx(L, -1, &isnum);
        if (!isnum || status < 200 || status > 999) {
            *why = "status must be an integer from 200 to 999";
            lua_pop(L, 1);
            return false;
        }
    }
    lua_pop(L, 1);
    size_t blen = 0;
    const char *body = "";
    int bt = raw_field(L, idx, VG__FN_KEY_BODY);
    if (bt == LUA_TSTRING || bt == LUA_TNUMBER)
        body = lua_tolstring(L, -1, &blen);
    else if (bt != LUA_TNIL) {
        *why = "body must be a string";
        lua_pop(L, 1);
        return false;
    }
    int body_idx = lua_gettop(L); /* keeps the body string alive until sent */
    if (!vg__fn_response_headers(L, idx, req, why)) {
        lua_settop(L, body_idx - 1);
        return false;
    }
    req->res.status = (int)status;
    req->res.reason = vg_http_reason_phrase((int)status);
    req->res.content_length = blen;
    if (h2o_find_header(&req->res.headers, H2O_TOKEN_CONTENT_TYPE, -1) == -1 && blen)
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
                       H2O_STRLIT("text/plain; charset=utf-8"));
    send_body(L, body_idx, body, blen, req, pin);
    lua_settop(L, body_idx - 1);
    return true;
}
