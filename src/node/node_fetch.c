/* verge.fetch on a node: a subrequest through the same forwarder proxy
 * routes use, so a fetch gets the origin's balancing, health, keep-alive
 * pool, retries and timeouts, and behaves exactly like a proxied request.
 *
 * The subrequest is an h2o request of its own (on the parent's connection,
 * for the client address and the context) whose output stream captures the
 * response into a buffer instead of a socket. Completion is always handed
 * to the runtime from the loop, never from inside the forwarder's h2o_send:
 * the runtime may end the subrequest (and with it the forwarder's state)
 * at once.
 *
 * Targets are the app's origins, by name or by one of their server URLs:
 * what a function may call is what the manifest declares (an egress
 * allow-list), and every target has its pools ready on every worker. */
#include "node_int.h"

#include <string.h>

struct vg__node_fetch_ctx {
    struct vg_site *site;
    struct vg_worker *worker;
    size_t app;
};

struct subreq {
    h2o_req_t req;
    h2o_ostream_t ostr;
    struct vg_worker *worker;
    char *body; /* in the subrequest's pool: a small body costs no malloc */
    size_t body_len, body_cap, max_body;
    vg_fn_fetch_done done;
    void *data;
    h2o_timeout_entry_t te; /* proceed (more body) or complete: never both pending */
    struct vg_trace *trace; /* the parent request's (its pool outlives us: we are cancelled first) */
    vg_span_t span;         /* "fetch" in it */
    const char *err;        /* failure before or instead of a response */
    bool finished;          /* the response is complete or failed: complete() is scheduled */
};

static void dispose(struct subreq *s)
{
    if (h2o_timeout_is_linked(&s->te))
        h2o_timeout_unlink(&s->te);
    h2o_dispose_request(&s->req);
    free(s);
}

static void on_complete(h2o_timeout_entry_t *te)
{
    struct subreq *s = H2O_STRUCT_FROM_MEMBER(struct subreq, te, te);
    struct vg_fn_fetch_res res = {.err = s->err};
    if (s->err || s->req.res.status >= 500)
        vg_trace_fail(s->trace, s->span);
    vg_trace_end(s->trace, s->span);
    if (!s->err) {
        res.status = s->req.res.status;
        res.headers = s->req.res.headers.entries;
        res.n_headers = s->req.res.headers.size;
        res.body = h2o_iovec_init(s->body, s->body_len);
    }
    s->done(s->data, &res);
    dispose(s);
}

static void on_proceed(h2o_timeout_entry_t *te)
{
    struct subreq *s = H2O_STRUCT_FROM_MEMBER(struct subreq, te, te);
    h2o_proceed_response(&s->req);
}

static void schedule(struct subreq *s, h2o_timeout_cb cb)
{
    s->te.cb = cb;
    h2o_timeout_link(s->worker->loop, &s->worker->ctx.zero_timeout, &s->te);
}

static void finish(struct subreq *s, const char *err)
{
    s->finished = true;
    s->err = err;
    if (h2o_timeout_is_linked(&s->te))
        h2o_timeout_unlink(&s->te);
    schedule(s, on_complete);
}

/* Grows by doubling (from the first piece's size) in pool memory: the old
 * copies stay in the pool until the subrequest ends, at most the size of
 * the final body again. */
static void body_append(struct subreq *s, h2o_iovec_t b)
{
    if (s->body_len + b.len > s->body_cap) {
        size_t cap = s->body_cap ? s->body_cap : 1024;
        while (cap < s->body_len + b.len)
            cap *= 2;
        char *p = h2o_mem_alloc_pool(&s->req.pool, cap);
        if (s->body_len)
            memcpy(p, s->body, s->body_len);
        s->body = p;
        s->body_cap = cap;
    }
    memcpy(s->body + s->body_len, b.base, b.len);
    s->body_len += b.len;
}

/* The final output stream of the subrequest: keeps the body. */
static void capture(h2o_ostream_t *self, h2o_req_t *req, h2o_iovec_t *bufs, size_t n, h2o_send_state_t state)
{
    struct subreq *s = H2O_STRUCT_FROM_MEMBER(struct subreq, ostr, self);
    if (s->finished)
        return;
    for (size_t i = 0; i < n; i++) {
        if (s->body_len + bufs[i].len > s->max_body) {
            finish(s, "response body larger than max_body");
            return;
        }
        body_append(s, bufs[i]);
    }
    if (state == H2O_SEND_STATE_ERROR)
        finish(s, "the origin's response was cut short");
    else if (state == H2O_SEND_STATE_FINAL)
        finish(s, NULL);
    else
        schedule(s, on_proceed);
}

static bool server_url_is(const struct vg_conf_server *srv, h2o_iovec_t url)
{
    size_t n = strlen(srv->url);
    while (n && srv->url[n - 1] == '/')
        n--;
    return n == url.len && memcmp(srv->url, url.base, n) == 0;
}

/* The origin a target names, or -1. */
static int find_origin(const struct vg_conf_app *app, h2o_iovec_t target)
{
    bool url = target.len > 7 && memcmp(target.base, "http://", 7) == 0;
    for (size_t o = 0; o < app->n_origins; o++) {
        const struct vg_conf_origin *oc = &app->origins[o];
        if (!url && h2o_memis(target.base, target.len, oc->name, strlen(oc->name)))
            return (int)o;
        for (size_t s = 0; url && s < oc->n_servers; s++)
            if (server_url_is(&oc->servers[s], target))
                return (int)o;
    }
    return -1;
}

static void fill_request(struct subreq *s, h2o_req_t *parent, const struct vg_fn_fetch_req *f)
{
    h2o_req_t *req = &s->req;
    h2o_init_request(req, parent->conn, NULL);
    req->pathconf = &s->worker->node->fetch_pathconf;
    req->_ostr_top = &s->ostr;
    req->version = 0x100; /* keeps h2o's chunked encoder off the captured body */
    req->input.scheme = req->scheme = &H2O_URL_SCHEME_HTTP;
    req->input.method = req->method = h2o_strdup(&req->pool, f->method.base, f->method.len);
    req->input.path = req->path = h2o_strdup(&req->pool, f->path.base, f->path.len);
    req->input.authority = req->authority = parent->authority;
    req->path_normalized =
        h2o_url_normalize_path(&req->pool, req->path.base, req->path.len, &req->query_at, &req->norm_indexes);
    for (size_t i = 0; i < f->n_headers; i++)
        h2o_add_header_by_str(&req->pool, &req->headers, f->headers[i].name->base, f->headers[i].name->len, 1, NULL,
                              f->headers[i].value.base, f->headers[i].value.len);
    if (f->body.len || !h2o_memis(f->method.base, f->method.len, H2O_STRLIT("GET")))
        req->entity = h2o_strdup(&req->pool, f->body.base ? f->body.base : "", f->body.len);
}

static void *fetch_start(void *vctx, h2o_req_t *parent, const struct vg_fn_fetch_req *f, vg_fn_fetch_done done,
                         void *data)
{
    struct vg__node_fetch_ctx *ctx = vctx;
    struct subreq *s = vg_xcalloc(1, sizeof(*s));
    s->worker = ctx->worker;
    s->done = done;
    s->data = data;
    s->max_body = f->max_body;
    s->ostr.do_send = capture;
    fill_request(s, parent, f);
    s->trace = vg_http_req_trace(parent);
    s->span = vg_trace_begin(s->trace, "fetch", 0);
    vg_trace_detail(s->trace, s->span, f->target.base, f->target.len);
    /* the origin joins the trace, unless the script set a traceparent itself */
    bool own = h2o_find_header_by_str(&s->req.headers, H2O_STRLIT("traceparent"), -1) >= 0;
    h2o_iovec_t tp = own ? h2o_iovec_init(NULL, 0) : vg__node_trace_header(s->trace, s->span, &s->req);
    struct vg_app_rt *app = &ctx->site->apps[ctx->app];
    int o = find_origin(app->conf, f->target);
    if (o < 0) {
        finish(s, "not an origin of this app (declare it under 'origins:')");
        return s;
    }
    struct vg_origin_rt *ort = &app->origins[o];
    struct vg_site_worker_origin *wo = &ctx->site->workers[ctx->worker->id].origins[ctx->app][o];
    struct vg_proxy_target t = {
        .conf = ort->conf,
        .state = ort->state,
        .balancer = wo->balancer,
        .pools = wo->pools,
        .timers = &wo->timers,
        .authority = ort->authority,
        .app = app->conf->name,
        .body_limit = app->conf->limits.body_size,
        .traceparent = tp,
    };
    vg_proxy_forward(&s->req, &t, s->req.path, h2o_iovec_init(NULL, 0), NULL, NULL);
    return s;
}

static void fetch_cancel(void *handle)
{
    dispose(handle);
}

struct vg__node_fetch_ctx *vg__node_fetch_ctx_create(struct vg_site *site, struct vg_worker *w, size_t app)
{
    struct vg__node_fetch_ctx *c = vg_xcalloc(1, sizeof(*c));
    *c = (struct vg__node_fetch_ctx){.site = site, .worker = w, .app = app};
    return c;
}

struct vg_fn_fetcher vg__node_fetcher(struct vg__node_fetch_ctx *ctx)
{
    return (struct vg_fn_fetcher){.start = fetch_start, .cancel = fetch_cancel, .ctx = ctx};
}
