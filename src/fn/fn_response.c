/* The on_response hook: a response, whatever produced it (a route's
 * action, an origin, a file, an error), is held back whole and handed to
 * the app's on_response(req, res) before anything of it goes out; the hook
 * may change res.status, res.headers and res.body in place or return a new
 * table. Holding is bounded (RESPONSE_MAX): a larger response goes out
 * unhooked, logged.
 *
 * It is an h2o output stream set up by a per-request prefilter, so it sits
 * in front of h2o's own filters: those decided the framing when the
 * response started, which is why Content-Length and Transfer-Encoding are
 * not the hook's to change (chunked stays chunked; a fixed length is set
 * to the new body's). */
#include "fn_int.h"
#include "http/http.h"
#include "obs/obs.h"

#include <string.h>

#define RESPONSE_MAX (1u << 20)

struct resp_filter {
    h2o_req_prefilter_t super;
    struct vg_fn_app *app;
    h2o_iovec_t reqid;
    struct vg_fn_req **shared;
};

struct resp_ostr {
    h2o_ostream_t super;
    struct vg_fn_app *app;
    h2o_iovec_t reqid;
    struct vg_fn_req **shared;
    h2o_req_t *req;
    h2o_buffer_t *body;
    vg_span_t span;    /* "on_response" in the request's trace */
    bool passthrough;  /* too large: hook skipped */
    bool fixed_length; /* the response had a Content-Length when it started */
    h2o_timeout_entry_t proceed;
};

static void on_resp_dispose(void *p)
{
    struct resp_ostr *o = *(struct resp_ostr **)p;
    if (h2o_timeout_is_linked(&o->proceed))
        h2o_timeout_unlink(&o->proceed);
    h2o_buffer_dispose(&o->body);
}

static void on_proceed(h2o_timeout_entry_t *te)
{
    struct resp_ostr *o = H2O_STRUCT_FROM_MEMBER(struct resp_ostr, proceed, te);
    h2o_proceed_response(o->req);
}

/* Framing headers stay as h2o's filters set them. */
static bool is_framing(const h2o_iovec_t *name)
{
    return h2o_memis(name->base, name->len, H2O_STRLIT("content-length")) ||
           h2o_memis(name->base, name->len, H2O_STRLIT("transfer-encoding"));
}

/* res = {status=, headers={name = value or {values}}, body=} */
static void push_res(lua_State *L, struct resp_ostr *o)
{
    h2o_req_t *req = o->req;
    lua_createtable(L, 0, 3);
    lua_pushinteger(L, req->res.status);
    lua_setfield(L, -2, "status");
    lua_createtable(L, 0, (int)req->res.headers.size);
    for (size_t i = 0; i < req->res.headers.size; i++) {
        const h2o_header_t *h = &req->res.headers.entries[i];
        if (is_framing(h->name))
            continue;
        lua_pushlstring(L, h->name->base, h->name->len);
        lua_pushvalue(L, -1);
        if (lua_rawget(L, -3) == LUA_TNIL) {
            lua_pop(L, 1);
            lua_pushlstring(L, h->value.base, h->value.len);
        } else {
            if (!lua_istable(L, -1)) {
                lua_createtable(L, 2, 0);
                lua_insert(L, -2);
                lua_rawseti(L, -2, 1);
            }
            lua_pushlstring(L, h->value.base, h->value.len);
            lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
        }
        lua_rawset(L, -3);
    }
    lua_setfield(L, -2, "headers");
    lua_pushlstring(L, o->body->bytes, o->body->size);
    lua_setfield(L, -2, "body");
}

static void send_body(struct resp_ostr *o, h2o_iovec_t body)
{
    if (o->fixed_length)
        o->req->res.content_length = body.len;
    h2o_ostream_send_next(&o->super, o->req, &body, 1, H2O_SEND_STATE_FINAL);
}

/* Keeps only the framing headers of the original response. */
static void keep_framing_headers(h2o_req_t *req)
{
    h2o_headers_t kept = {NULL};
    for (size_t i = 0; i < req->res.headers.size; i++) {
        h2o_header_t *h = &req->res.headers.entries[i];
        if (is_framing(h->name))
            h2o_add_header_by_str(&req->pool, &kept, h->name->base, h->name->len, 1, h->orig_name, h->value.base,
                                  h->value.len);
    }
    req->res.headers = kept;
}

/* The hook is over: its span ends (failed when it did). */
static void hook_span_end(struct resp_ostr *o, bool failed)
{
    struct vg_trace *t = vg_http_req_trace(o->req);
    if (failed)
        vg_trace_fail(t, o->span);
    vg_trace_end(t, o->span);
    vg_trace_set_current(t, 0);
}

static void resp_fail(struct vg__fn_call *c, int status, const char *text)
{
    struct resp_ostr *o = c->ext;
    h2o_req_t *req = o->req;
    hook_span_end(o, true);
    req->res.status = status;
    req->res.reason = vg_http_reason_phrase(status);
    keep_framing_headers(req);
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
                   H2O_STRLIT("text/plain; charset=utf-8"));
    send_body(o, h2o_strdup(&req->pool, text, strlen(text)));
    c->done(c->data, VG_FN_ANSWERED);
}

/* The hook returned: its table, or else the res it was given (kept at
 * index 2, under the function's results). */
static void resp_result(struct vg__fn_call *c)
{
    struct resp_ostr *o = c->ext;
    lua_State *co = c->co;
    int idx = lua_gettop(co) >= 3 && !lua_isnil(co, 3) ? 3 : 2;
    h2o_req_t *req = o->req;
    if (!lua_istable(co, idx)) {
        vg__fn_call_bad_result(c, "on_response returns nil or a response table");
        return;
    }
    hook_span_end(o, false);
    lua_pushliteral(co, "status");
    int st_type = lua_rawget(co, idx);
    int isnum = 1;
    lua_Integer status = st_type == LUA_TNIL ? req->res.status : lua_tointegerx(co, -1, &isnum);
    lua_pop(co, 1);
    if (!isnum || status < 200 || status > 999) {
        vg__fn_call_bad_result(c, "status must be an integer from 200 to 999");
        return;
    }
    h2o_headers_t before = req->res.headers;
    keep_framing_headers(req);
    const char *why = NULL;
    if (!vg__fn_response_headers(co, idx, req, &why)) {
        req->res.headers = before;
        vg__fn_call_bad_result(c, why);
        return;
    }
    size_t blen;
    lua_pushliteral(co, "body");
    int bt = lua_rawget(co, idx);
    const char *b = bt == LUA_TSTRING || bt == LUA_TNUMBER ? lua_tolstring(co, -1, &blen) : NULL;
    h2o_iovec_t body = b ? h2o_strdup(&req->pool, b, blen) : h2o_iovec_init("", 0);
    lua_pop(co, 1);
    req->res.status = (int)status;
    req->res.reason = vg_http_reason_phrase((int)status);
    vg__fn_release_thread(c, true);
    send_body(o, body);
    c->done(c->data, VG_FN_ANSWERED);
}

static const struct vg__fn_call_ops resp_ops = {.result = resp_result, .fail = resp_fail};

static void on_hook_done(void *data, enum vg_fn_outcome o)
{
    (void)data;
    (void)o;
}

static void run_hook(struct resp_ostr *o)
{
    struct vg_fn_app *a = o->app;
    struct vg__fn_call *c = vg__fn_call_new(a, a->on_response_ref, a->conf->on_response.func, o->req, o->reqid,
                                            o->shared, &resp_ops, on_hook_done, o);
    c->ext = o;
    struct vg_trace *t = vg_http_req_trace(o->req);
    o->span = vg_trace_begin(t, "on_response", 0);
    vg_trace_set_current(t, o->span);
    push_res(c->co, o);       /* [req, fn, req, res] */
    lua_pushvalue(c->co, -1); /* a copy below the function outlives the call */
    lua_insert(c->co, 2);     /* [req, res, fn, req, res] */
    vg__fn_call_start(c, 2);
}

static void go_through(struct resp_ostr *o, h2o_iovec_t *bufs, size_t n, h2o_send_state_t state)
{
    h2o_iovec_t held = h2o_iovec_init(o->body->bytes, o->body->size);
    o->passthrough = true;
    char code[16];
    snprintf(code, sizeof(code), "%u", RESPONSE_MAX);
    vg_log(VG_LOG_WARN, "response too large for on_response: sent unhooked", "app", o->app->conf->name, "max_bytes",
           code, NULL);
    /* what was held goes first, then this piece; both stay valid until the
     * next proceed (the buffer lives until the request ends) */
    h2o_iovec_t *v = h2o_mem_alloc_pool(&o->req->pool, sizeof(*v) * (n + 1));
    v[0] = held;
    memcpy(v + 1, bufs, sizeof(*v) * n);
    h2o_ostream_send_next(&o->super, o->req, v, n + 1, state);
}

static void do_send(h2o_ostream_t *self, h2o_req_t *req, h2o_iovec_t *bufs, size_t n, h2o_send_state_t state)
{
    struct resp_ostr *o = (struct resp_ostr *)self;
    if (o->passthrough || state == H2O_SEND_STATE_ERROR) {
        h2o_ostream_send_next(self, req, bufs, n, state);
        return;
    }
    size_t total = o->body->size;
    for (size_t i = 0; i < n; i++)
        total += bufs[i].len;
    if (total > RESPONSE_MAX) {
        go_through(o, bufs, n, state);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        if (!bufs[i].len)
            continue;
        h2o_iovec_t dst = h2o_buffer_reserve(&o->body, bufs[i].len);
        memcpy(dst.base, bufs[i].base, bufs[i].len);
        o->body->size += bufs[i].len;
    }
    if (h2o_send_state_is_in_progress(state)) /* held, not sent: ask for more, from the loop */
        h2o_timeout_link(req->conn->ctx->loop, &req->conn->ctx->zero_timeout, &o->proceed);
    else
        run_hook(o);
}

static void on_setup_ostream(h2o_req_prefilter_t *self, h2o_req_t *req, h2o_ostream_t **slot)
{
    struct resp_filter *f = (struct resp_filter *)self;
    struct resp_ostr *o = (struct resp_ostr *)h2o_add_ostream(req, sizeof(*o), slot);
    o->super.do_send = do_send;
    o->app = f->app;
    o->reqid = f->reqid;
    o->shared = f->shared;
    o->req = req;
    o->passthrough = false;
    o->fixed_length = req->res.content_length != SIZE_MAX;
    o->proceed = (h2o_timeout_entry_t){.cb = on_proceed};
    h2o_buffer_init(&o->body, &h2o_socket_buffer_prototype);
    struct resp_ostr **d = h2o_mem_alloc_shared(&req->pool, sizeof(*d), on_resp_dispose);
    *d = o;
    h2o_setup_next_prefilter(self, req, &o->super.next);
}

bool vg_fn_has_on_response(const struct vg_fn_app *a)
{
    return a && a->on_response_ref != LUA_NOREF;
}

void vg_fn_on_response(struct vg_fn_app *a, h2o_req_t *req, h2o_iovec_t reqid, struct vg_fn_req **shared)
{
    struct resp_filter *f = (struct resp_filter *)h2o_add_prefilter(req, sizeof(*f));
    f->super.on_setup_ostream = on_setup_ostream;
    f->app = a;
    f->reqid = reqid;
    f->shared = shared;
}
