/* The HTTP cache in front of proxy routes (RFC 9111, shared cache).
 *
 * A GET or HEAD on a caching route is looked up in the node's store
 * (src/cache, shared by every worker). A usable object is answered at
 * once, from the object's own memory; otherwise the request goes to the
 * origin through the ordinary forwarder with the cache's output filter on
 * it. The filter is where everything that depends on the origin's answer
 * happens, so the forwarder knows nothing of the cache:
 *   - store: the response is copied into a new object as it streams to
 *     the client, and published when it is complete;
 *   - revalidation: a 304 refreshes the stored object, and the client gets
 *     the object (or its own 304);
 *   - stale-if-error: an error answer (or the forwarder's 502/504) is
 *     replaced by the stale object when the rules allow it;
 *   - invalidation: a successful unsafe request purges its URL (and
 *     Location / Content-Location on the same host).
 * The filter sits first after the forwarder (its prefilter is the last one
 * added), so an app's on_response hook sees what the client gets, and the
 * cache keeps what the origin said.
 *
 * Misses are coalesced (vg_cache_join): one request per key goes to the
 * origin, the others wait on their own worker until it is done, then look
 * again; when nothing usable was stored, they go to the origin themselves.
 * A waiter that waits longer than the origin's total timeout stops waiting.
 *
 * stale-while-revalidate refreshes in the background: a detached request
 * (on the worker's stand-in connection) goes through the same forwarder
 * and filter, holding the site like a client request does.
 *
 * Keys are "app " + vg_cache_key_build(...) ("app host\npath?query..."):
 * apps share the store but never each other's objects, and the store,
 * which spreads keys over its shards by their first two lines (so that a
 * purge by URL visits one shard), still sees one line per host. Tags are
 * "app\ntag". */
#include "node_int.h"

#include <jansson.h>
#include <string.h>
#include <time.h>

#define MAX_WAITERS 4096 /* per key; beyond, requests go to the origin directly */

enum mode {
    MODE_STORE,      /* a miss (or an unusable object): store what comes */
    MODE_REVALIDATE, /* a conditional request for a stale object */
    MODE_PASS,       /* not a GET or HEAD: passes, and an unsafe one purges on success */
};

struct vg__node_cache_waiter {
    struct vg_cache_waiter base; /* first */
    struct vg_worker *w;
    struct creq *cq; /* NULL once the request went away (then the wake frees it) */
    struct vg__node_cache_waiter *next_woken;
};

/* One request's cache state; on its pool, released with it. */
struct creq {
    struct vg_worker *w;
    struct vg_site *site;
    h2o_req_t *req;
    const struct vg__node_cache_route *cr;
    struct vg__node_cache_fwd fwd;
    h2o_iovec_t app;
    h2o_iovec_t key;
    h2o_headers_t client_headers; /* as the client sent them (revalidation adds its own conditionals) */
    struct vg_cache_req q;
    int64_t request_time;
    uint64_t lookup_at;                     /* when the lookup began (trace clock: the cache span) */
    bool key_known;                         /* the key had some variant: a vary-miss, not a uri-miss */
    bool leader;                            /* holds the key's slot (vg_cache_join) until leave */
    bool joined;                            /* asked once already: a woken waiter does not queue again */
    bool refresh;                           /* a background refresh, not a client's request */
    bool collapsed;                         /* waited for another request's answer */
    bool by_request;                        /* revalidating because the request asked (no-cache, max-age) */
    struct vg_cache_obj *stale;             /* retained: the object being revalidated */
    struct vg_obs_counter *const *counters; /* the app's, by vg__node_cache_result */
    struct vg__node_cache_waiter *waiter;   /* while waiting for a leader */
    h2o_timeout_entry_t wait_te;
};

struct filter {
    h2o_req_prefilter_t super;
    struct creq *cq;
    enum mode mode;
};

struct ostr {
    h2o_ostream_t super;
    struct creq *cq;
    struct vg_cache_obj *building; /* being stored */
    size_t max;
    struct vg_cache_obj *serve; /* replaces the origin's answer (retained) */
    bool served;
};

static h2o_generator_t static_generator = {NULL, NULL};

static void lookup(struct creq *cq);
static void on_creq_dispose(void *p);

/* ---- route rules ------------------------------------------------------------------ */

void vg__node_cache_route_init(struct vg__node_cache_route *cr, const struct vg_conf_cache *cc)
{
    cr->enabled = cc->enabled;
    cr->rules = (struct vg_cache_rules){
        .honour_origin = cc->honour_origin,
        .default_ttl = (int64_t)cc->ttl_s,
        .heuristic = cc->heuristic,
        .allow_set_cookie = cc->allow_set_cookie,
        .max_object_size = (size_t)cc->max_object_size,
    };
    cr->key = (struct vg_cache_keyrules){
        .ignore_host = !cc->key_host,
        .ignore_query = !cc->key_query,
        .query_include = cc->query_include,
        .query_exclude = cc->query_exclude,
        .headers = cc->headers,
        .cookies = cc->cookies,
    };
}

/* ---- numbers ------------------------------------------------------------------------ */

static void count(struct creq *cq, enum vg__node_cache_result r)
{
    static const char *const names[VG__NODE_CACHE_RESULTS] = {"hit", "miss", "stale", "bypass"};
    if (!cq->refresh && cq->counters)
        vg_obs_counter_add(cq->counters[r], 1);
    if (cq->fwd.trace) {
        vg_span_t s = vg_trace_add(cq->fwd.trace, "cache", cq->fwd.trace_parent, cq->lookup_at, vg_trace_clock());
        vg_trace_detail(cq->fwd.trace, s, names[r], strlen(names[r]));
    }
}

/* ---- answering from an object ------------------------------------------------------- */

static void on_obj_dispose(void *p)
{
    vg_cache_obj_release(*(struct vg_cache_obj **)p);
}

/* Keeps o (retained by the caller) alive as long as req's pool. */
static void hold(h2o_req_t *req, struct vg_cache_obj *o)
{
    struct vg_cache_obj **slot = h2o_mem_alloc_shared(&req->pool, sizeof(*slot), on_obj_dispose);
    *slot = o;
}

/* RFC 9110 15.4.5: what a 304 carries of the representation's metadata. */
static bool in_304(h2o_iovec_t name)
{
    static const char *const keep[] = {"cache-control", "content-location", "etag", "expires", "vary", "last-modified"};
    for (size_t i = 0; i < sizeof(keep) / sizeof(keep[0]); i++)
        if (h2o_memis(name.base, name.len, keep[i], strlen(keep[i])))
            return true;
    return false;
}

/* Sets req->res from o: status, stored headers, Age, Cache-Status; true
 * when the answer is a 304 (the client's own condition holds). */
static bool set_response(struct creq *cq, struct vg_cache_obj *o, struct vg_cache_status *cs)
{
    h2o_req_t *req = cq->req;
    int64_t now = time(NULL);
    struct vg_cache_meta m, *meta = &m;
    vg_cache_obj_meta(o, &m);
    int64_t age = vg_cache_age(meta, now);
    bool not_modified =
        vg_cache_obj_status(o) == 200 && vg_cache_not_modified(&cq->q, vg_cache_obj_etag(o), meta->last_modified);
    req->res.headers = (h2o_headers_t){NULL, 0, 0};
    req->res.status = not_modified ? 304 : vg_cache_obj_status(o);
    req->res.reason = vg_http_reason_phrase(req->res.status);
    for (size_t i = 0, n = vg_cache_obj_n_headers(o); i < n; i++) {
        h2o_iovec_t name, value;
        vg_cache_obj_header(o, i, &name, &value);
        if (not_modified && !in_304(name)) /* stored headers have no Age or Length: vg_cache_headers_to_store */
            continue;
        h2o_add_header_by_str(&req->pool, &req->res.headers, name.base, name.len, 0, NULL, value.base, value.len);
    }
    char *agebuf = h2o_mem_alloc_pool(&req->pool, 24);
    int al = snprintf(agebuf, 24, "%lld", (long long)age);
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_AGE, NULL, agebuf, (size_t)al);
    cs->ttl = meta->lifetime - age;
    h2o_iovec_t st = vg_cache_status_format(&req->pool, cs);
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("cache-status"), 0, NULL, st.base, st.len);
    req->res.content_length = not_modified ? SIZE_MAX : vg_cache_obj_body(o).len;
    return not_modified;
}

/* Answers the request from o (retained by the caller, kept by the request). */
static void serve(struct creq *cq, struct vg_cache_obj *o, struct vg_cache_status *cs)
{
    h2o_req_t *req = cq->req;
    hold(req, o);
    bool nm = set_response(cq, o, cs);
    h2o_iovec_t body = vg_cache_obj_body(o);
    h2o_start_response(req, &static_generator);
    h2o_send(req, &body, nm || !body.len ? 0 : 1, H2O_SEND_STATE_FINAL);
}

/* ---- the output filter --------------------------------------------------------------- */

static void leave(struct creq *cq)
{
    if (!cq->leader)
        return;
    cq->leader = false;
    vg_cache_leave(cq->w->node->cache, cq->key);
}

/* The object's purge tags: Surrogate-Key (space-separated) and Cache-Tag
 * (comma-separated) values. */
static size_t collect_tags(h2o_req_t *req, h2o_iovec_t **out)
{
    size_t n = 0, cap = 0;
    h2o_iovec_t *tags = NULL;
    for (size_t i = 0; i < req->res.headers.size; i++) {
        const h2o_header_t *h = &req->res.headers.entries[i];
        bool sk = h2o_lcstris(h->name->base, h->name->len, H2O_STRLIT("surrogate-key"));
        if (!sk && !h2o_lcstris(h->name->base, h->name->len, H2O_STRLIT("cache-tag")))
            continue;
        const char *p = h->value.base, *end = p + h->value.len;
        while (p < end) {
            while (p < end && (*p == ' ' || *p == ',' || *p == '\t'))
                p++;
            const char *s = p;
            while (p < end && *p != ' ' && *p != '\t' && (sk || *p != ','))
                p++;
            if (p == s)
                continue;
            if (n == cap) {
                cap = cap ? cap * 2 : 8;
                h2o_iovec_t *t = h2o_mem_alloc_pool(&req->pool, cap * sizeof(*t));
                if (n)
                    memcpy(t, tags, n * sizeof(*t));
                tags = t;
            }
            tags[n++] = h2o_iovec_init(s, (size_t)(p - s));
        }
    }
    *out = tags;
    return n;
}

/* A miss (or an unusable object): starts storing what the origin sends
 * when the rules allow, and says so in Cache-Status. */
static void decide_store(struct ostr *o, h2o_req_t *req, const char *fwd, int fwd_status)
{
    struct creq *cq = o->cq;
    int64_t now = time(NULL);
    struct vg_cache_meta meta;
    enum vg_cache_store_verdict v =
        vg_cache_storable(&cq->q, req->res.status, &req->res.headers, &cq->cr->rules, cq->request_time, now, &meta);
    struct vg_cache_status cs = {.fwd = fwd, .fwd_status = fwd_status, .ttl = INT64_MIN};
    if (v == VG_CACHE_STORE_OK && req->res.content_length != SIZE_MAX &&
        req->res.content_length > cq->cr->rules.max_object_size)
        v = VG_CACHE_NOSTORE_TOO_BIG;
    /* an answer to HEAD has no body to keep (a stored GET answers HEADs) */
    if (v == VG_CACHE_STORE_OK && h2o_memis(req->method.base, req->method.len, H2O_STRLIT("HEAD")))
        v = VG_CACHE_NOSTORE_METHOD;
    if (v == VG_CACHE_STORE_OK) {
        h2o_headers_t keep = vg_cache_headers_to_store(&req->pool, &req->res.headers);
        h2o_iovec_t names = vg_cache_vary_names(&req->pool, &req->res.headers);
        h2o_iovec_t vkey = vg_cache_vary_key(&req->pool, names, &cq->client_headers);
        h2o_iovec_t *tags;
        size_t n_tags = collect_tags(req, &tags);
        for (size_t i = 0; i < n_tags; i++) /* an app purges its own tags only */
            tags[i] = h2o_concat(&req->pool, cq->app, h2o_iovec_init(H2O_STRLIT("\n")), tags[i]);
        o->building = vg_cache_obj_new(cq->key, names, vkey, req->res.status, &keep, &meta, tags, n_tags);
        o->max = cq->cr->rules.max_object_size;
        /* "stored" only when it is sure to fit: a body of unknown length
         * may turn out too big after this header has gone */
        cs.stored = o->building && req->res.content_length != SIZE_MAX;
        cs.ttl = meta.lifetime - vg_cache_age(&meta, now);
        if (!o->building)
            leave(cq);
    } else {
        cs.detail = vg_cache_store_verdict_str(v);
        leave(cq); /* nothing will be stored: whoever waits goes to the origin now */
    }
    if (!cq->refresh) {
        h2o_iovec_t st = vg_cache_status_format(&req->pool, &cs);
        h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("cache-status"), 0, NULL, st.base, st.len);
    }
}

/* The URL part of a key ("app host\npath?query") for purges. */
static h2o_iovec_t url_key(struct creq *cq, h2o_iovec_t path)
{
    h2o_req_t *req = cq->req;
    static const char *const none[] = {NULL};
    struct vg_cache_keyrules kr = {.ignore_host = cq->cr->key.ignore_host,
                                   .ignore_query = cq->cr->key.ignore_query,
                                   .query_include = cq->cr->key.query_include,
                                   .query_exclude = cq->cr->key.query_exclude,
                                   .headers = (char **)none,
                                   .cookies = (char **)none};
    h2o_iovec_t k = vg_cache_key_build(&req->pool, &kr, req->authority, path, &cq->client_headers);
    return h2o_concat(&req->pool, cq->app, h2o_iovec_init(H2O_STRLIT(" ")), k);
}

/* RFC 9111 4.4: a successful unsafe request invalidates its URL, and the
 * Location / Content-Location URLs on the same host. */
static void invalidate(struct creq *cq, h2o_req_t *req)
{
    if (!vg_cache_invalidates(req->method, req->res.status))
        return;
    struct vg_cache *cache = cq->w->node->cache;
    struct vg_cache_purge p = {.kind = VG_CACHE_PURGE_URL, .value = url_key(cq, req->path)};
    vg_cache_purge(cache, &p);
    static const h2o_token_t *const targets[] = {H2O_TOKEN_LOCATION, H2O_TOKEN_CONTENT_LOCATION};
    for (size_t i = 0; i < 2; i++) {
        ssize_t j = h2o_find_header(&req->res.headers, targets[i], -1);
        if (j < 0)
            continue;
        h2o_iovec_t path = vg_cache_invalidation_target(&req->pool, req->res.headers.entries[j].value, req->authority);
        if (!path.len)
            continue;
        p.value = url_key(cq, path);
        vg_cache_purge(cache, &p);
    }
}

/* Replaces the origin's answer with o (retained by the caller). */
static void substitute(struct ostr *os, struct vg_cache_obj *o, struct vg_cache_status *cs)
{
    os->serve = o;
    hold(os->cq->req, o);
    set_response(os->cq, o, cs);
}

static void decide_revalidate(struct ostr *os, h2o_req_t *req)
{
    struct creq *cq = os->cq;
    struct vg_cache *cache = cq->w->node->cache;
    int64_t now = time(NULL);
    int status = req->res.status;
    if (status == 304) {
        struct vg_cache_obj *old = cq->stale;
        /* the stored headers with the 304's updates, judged as the stored status */
        h2o_headers_t stored = {NULL, 0, 0};
        for (size_t i = 0, n = vg_cache_obj_n_headers(old); i < n; i++) {
            h2o_iovec_t name, value;
            vg_cache_obj_header(old, i, &name, &value);
            h2o_add_header_by_str(&req->pool, &stored, name.base, name.len, 0, NULL, value.base, value.len);
        }
        h2o_headers_t merged = vg_cache_merge_304(&req->pool, &stored, &req->res.headers);
        struct vg_cache_meta meta;
        struct vg_cache_status cs = {.fwd = cq->by_request ? "request" : "stale", .fwd_status = 304};
        if (vg_cache_storable(&cq->q, vg_cache_obj_status(old), &merged, &cq->cr->rules, cq->request_time, now,
                              &meta) == VG_CACHE_STORE_OK) {
            h2o_headers_t keep = vg_cache_headers_to_store(&req->pool, &merged);
            struct vg_cache_obj *fresh = vg_cache_refresh(cache, old, &keep, &meta);
            cs.stored = true;
            substitute(os, fresh, &cs);
        } else {
            vg_cache_obj_retain(old);
            substitute(os, old, &cs);
        }
        leave(cq);
        return;
    }
    struct vg_cache_meta sm;
    vg_cache_obj_meta(cq->stale, &sm);
    if (status >= 500 && vg_cache_stale_if_error_ok(&sm, &cq->q, now)) {
        struct vg_cache_status cs = {.hit = true, .detail = "stale"};
        vg_cache_obj_retain(cq->stale);
        substitute(os, cq->stale, &cs);
        leave(cq);
        count(cq, VG__NODE_CACHE_STALE);
        return;
    }
    decide_store(os, req, cq->by_request ? "request" : "stale", status);
}

static void on_ostr_dispose(void *p)
{
    struct ostr *o = *(struct ostr **)p;
    if (o->building) /* the response never completed */
        vg_cache_obj_release(o->building);
    o->building = NULL;
}

static void do_send(h2o_ostream_t *self, h2o_req_t *req, h2o_iovec_t *bufs, size_t n, h2o_send_state_t state)
{
    struct ostr *o = (struct ostr *)self;
    if (o->serve) {
        /* the origin's body is not the answer: the object's goes, once and
         * final; the rest of the origin's stops with the request */
        if (o->served)
            return;
        o->served = true;
        h2o_iovec_t body = vg_cache_obj_body(o->serve);
        bool none = req->res.status == 304 || !body.len;
        h2o_ostream_send_next(&o->super, req, &body, none ? 0 : 1, H2O_SEND_STATE_FINAL);
        return;
    }
    if (o->building) {
        for (size_t i = 0; i < n && o->building; i++)
            if (vg_cache_obj_append(o->building, bufs[i].base, bufs[i].len, o->max) != 0) {
                vg_cache_obj_release(o->building); /* too big after all: it streams through */
                o->building = NULL;
                leave(o->cq);
            }
        if (o->building && state == H2O_SEND_STATE_FINAL) {
            vg_cache_insert(o->cq->w->node->cache, o->building);
            o->building = NULL;
        } else if (o->building && state == H2O_SEND_STATE_ERROR) {
            vg_cache_obj_release(o->building);
            o->building = NULL;
        }
    }
    if (!h2o_send_state_is_in_progress(state))
        leave(o->cq);
    h2o_ostream_send_next(&o->super, req, bufs, n, state);
}

static void on_setup_ostream(h2o_req_prefilter_t *self, h2o_req_t *req, h2o_ostream_t **slot)
{
    struct filter *f = (struct filter *)self;
    struct ostr *o = (struct ostr *)h2o_add_ostream(req, sizeof(*o), slot);
    o->super.do_send = do_send;
    o->cq = f->cq;
    o->building = o->serve = NULL;
    o->served = false;
    struct ostr **d = h2o_mem_alloc_shared(&req->pool, sizeof(*d), on_ostr_dispose);
    *d = o;
    switch (f->mode) {
    case MODE_PASS: {
        invalidate(f->cq, req);
        struct vg_cache_status cs = {.fwd = "bypass", .ttl = INT64_MIN};
        h2o_iovec_t st = vg_cache_status_format(&req->pool, &cs);
        h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("cache-status"), 0, NULL, st.base, st.len);
        break;
    }
    case MODE_REVALIDATE:
        decide_revalidate(o, req);
        break;
    case MODE_STORE:
        decide_store(o, req, f->cq->key_known ? "vary-miss" : "uri-miss", 0);
        break;
    }
    h2o_setup_next_prefilter(self, req, &o->super.next);
}

static void forward(struct creq *cq, enum mode mode)
{
    h2o_req_t *req = cq->req;
    struct filter *f = (struct filter *)h2o_add_prefilter(req, sizeof(*f));
    f->super.on_setup_ostream = on_setup_ostream;
    f->cq = cq;
    f->mode = mode;
    vg_proxy_forward(req, &cq->fwd.t, cq->fwd.path, cq->fwd.hash_key, cq->fwd.on_event, cq->fwd.event_data);
}

/* Asks the origin whether the stale object still holds: its validators
 * replace the client's (whose own conditions are answered from the object
 * afterwards). */
static void revalidate(struct creq *cq, struct vg_cache_obj *o)
{
    h2o_req_t *req = cq->req;
    static const h2o_token_t *const conditional[] = {H2O_TOKEN_IF_NONE_MATCH, H2O_TOKEN_IF_MODIFIED_SINCE,
                                                     H2O_TOKEN_IF_MATCH, H2O_TOKEN_IF_UNMODIFIED_SINCE,
                                                     H2O_TOKEN_IF_RANGE};
    h2o_headers_t hs = {NULL, 0, 0};
    h2o_vector_reserve(&req->pool, &hs, req->headers.size + 2);
    for (size_t i = 0; i < req->headers.size; i++) {
        bool cond = false;
        for (size_t k = 0; k < sizeof(conditional) / sizeof(conditional[0]); k++)
            cond |= req->headers.entries[i].name == &conditional[k]->buf;
        if (!cond)
            hs.entries[hs.size++] = req->headers.entries[i];
    }
    req->headers = hs;
    h2o_iovec_t etag = vg_cache_obj_etag(o);
    if (etag.len)
        h2o_add_header(&req->pool, &req->headers, H2O_TOKEN_IF_NONE_MATCH, NULL, etag.base, etag.len);
    struct vg_cache_meta m;
    vg_cache_obj_meta(o, &m);
    int64_t lm = m.last_modified;
    if (lm >= 0) {
        char *d = h2o_mem_alloc_pool(&req->pool, 30);
        vg_cache_date_format(lm, d);
        h2o_add_header(&req->pool, &req->headers, H2O_TOKEN_IF_MODIFIED_SINCE, NULL, d, strlen(d));
    }
    cq->stale = o;
    hold(req, o);
    forward(cq, MODE_REVALIDATE);
}

/* ---- background refresh (stale-while-revalidate) ------------------------------------ */

struct refresh {
    h2o_req_t req;
    h2o_ostream_t sink;
    struct vg_worker *w;
    struct vg_site *site;
    h2o_timeout_entry_t end_te;
};

static void refresh_end(h2o_timeout_entry_t *te)
{
    struct refresh *r = H2O_STRUCT_FROM_MEMBER(struct refresh, end_te, te);
    struct vg_worker *w = r->w;
    struct vg_site *site = r->site;
    h2o_dispose_request(&r->req);
    free(r);
    vg__node_worker_request_done(w, site);
}

static void on_refresh_proceed(h2o_timeout_entry_t *te);

/* The refresh's final output: the body is in the store already (or not
 * wanted); only the end matters. */
static void sink_send(h2o_ostream_t *self, h2o_req_t *req, h2o_iovec_t *bufs, size_t n, h2o_send_state_t state)
{
    struct refresh *r = H2O_STRUCT_FROM_MEMBER(struct refresh, sink, self);
    if (h2o_timeout_is_linked(&r->end_te))
        return;
    r->end_te.cb = h2o_send_state_is_in_progress(state) ? on_refresh_proceed : refresh_end;
    h2o_timeout_link(r->w->loop, &r->w->ctx.zero_timeout, &r->end_te); /* not from inside h2o_send */
}

static void on_refresh_proceed(h2o_timeout_entry_t *te)
{
    struct refresh *r = H2O_STRUCT_FROM_MEMBER(struct refresh, end_te, te);
    h2o_proceed_response(&r->req);
}

/* Starts one background refresh of cq's key (the caller holds its slot). */
static void refresh_start(struct creq *cq)
{
    struct vg_worker *w = cq->w;
    h2o_req_t *parent = cq->req;
    struct refresh *r = vg_xcalloc(1, sizeof(*r));
    r->w = w;
    r->site = cq->site;
    r->sink.do_send = sink_send;
    h2o_req_t *req = &r->req;
    h2o_init_request(req, &w->cache_conn, NULL);
    req->pathconf = &w->node->fetch_pathconf;
    req->_ostr_top = &r->sink;
    req->version = 0x101;
    req->input.scheme = req->scheme = parent->scheme;
    req->input.method = req->method = h2o_iovec_init(H2O_STRLIT("GET"));
    req->input.path = req->path = h2o_strdup(&req->pool, parent->path.base, parent->path.len);
    req->input.authority = req->authority = h2o_strdup(&req->pool, parent->authority.base, parent->authority.len);
    req->path_normalized =
        h2o_url_normalize_path(&req->pool, req->path.base, req->path.len, &req->query_at, &req->norm_indexes);
    for (size_t i = 0; i < parent->headers.size; i++) {
        const h2o_header_t *h = &parent->headers.entries[i];
        if (h2o_iovec_is_token(h->name) &&
            (h->name == &H2O_TOKEN_IF_NONE_MATCH->buf || h->name == &H2O_TOKEN_IF_MODIFIED_SINCE->buf ||
             h->name == &H2O_TOKEN_CACHE_CONTROL->buf))
            continue;
        h2o_add_header_by_str(&req->pool, &req->headers, h->name->base, h->name->len, 1, NULL,
                              h2o_strdup(&req->pool, h->value.base, h->value.len).base, h->value.len);
    }
    cq->site->workers[w->id].inflight++; /* the site stays while the refresh runs */
    struct creq *rq = h2o_mem_alloc_shared(&req->pool, sizeof(*rq), on_creq_dispose); /* leaves the slot, always */
    *rq = (struct creq){.w = w,
                        .site = cq->site,
                        .req = req,
                        .cr = cq->cr,
                        .fwd = cq->fwd,
                        .app = h2o_strdup(&req->pool, cq->app.base, cq->app.len),
                        .key = h2o_strdup(&req->pool, cq->key.base, cq->key.len),
                        .client_headers = req->headers,
                        .request_time = time(NULL),
                        .leader = true,
                        .joined = true,
                        .refresh = true};
    rq->fwd.path = h2o_strdup(&req->pool, cq->fwd.path.base, cq->fwd.path.len);
    rq->fwd.hash_key = h2o_strdup(&req->pool, cq->fwd.hash_key.base, cq->fwd.hash_key.len);
    rq->fwd.on_event = NULL; /* the client's request (its access log line, its trace) is not this one */
    rq->fwd.trace = NULL;
    /* the client's traceparent lives in its trace block, recycled when the
     * client's request ends: a copy in the refresh's own pool (a retry may
     * write the head again later) */
    if (cq->fwd.t.traceparent.len)
        rq->fwd.t.traceparent = h2o_strdup(&req->pool, cq->fwd.t.traceparent.base, cq->fwd.t.traceparent.len);
    rq->q = (struct vg_cache_req){.method = req->method, .headers = &rq->client_headers};
    cq->leader = false; /* the refresh leaves the slot */
    forward(rq, MODE_STORE);
}

/* ---- waiting for another request's answer ----------------------------------------------------- */

/* Leader's thread: hand the waiter to its own worker. */
static void on_wake(struct vg_cache_waiter *base)
{
    struct vg__node_cache_waiter *wt = (struct vg__node_cache_waiter *)base;
    struct vg_worker *w = wt->w;
    pthread_mutex_lock(&w->cache_mu);
    wt->next_woken = w->cache_woken;
    w->cache_woken = wt;
    pthread_mutex_unlock(&w->cache_mu);
    uv_async_send(&w->cache_async);
}

static void stop_waiting(struct creq *cq)
{
    if (h2o_timeout_is_linked(&cq->wait_te))
        h2o_timeout_unlink(&cq->wait_te);
    cq->waiter = NULL;
}

/* Worker thread: the leader is done; look again. */
static void on_woken(uv_async_t *a)
{
    struct vg_worker *w = a->data;
    pthread_mutex_lock(&w->cache_mu);
    struct vg__node_cache_waiter *list = w->cache_woken;
    w->cache_woken = NULL;
    pthread_mutex_unlock(&w->cache_mu);
    while (list) {
        struct vg__node_cache_waiter *wt = list;
        list = wt->next_woken;
        struct creq *cq = wt->cq;
        free(wt);
        if (!cq) /* its request went away meanwhile */
            continue;
        stop_waiting(cq);
        cq->collapsed = true;
        lookup(cq);
    }
}

/* Waited as long as the origin may take: go there directly. */
static void on_wait_timeout(h2o_timeout_entry_t *te)
{
    struct creq *cq = H2O_STRUCT_FROM_MEMBER(struct creq, wait_te, te);
    struct vg__node_cache_waiter *wt = cq->waiter;
    if (!vg_cache_cancel_wait(cq->w->node->cache, cq->key, &wt->base))
        return; /* the wake is on its way */
    free(wt);
    stop_waiting(cq);
    count(cq, VG__NODE_CACHE_BYPASS);
    forward(cq, MODE_STORE);
}

static void wait_for_leader(struct creq *cq, struct vg__node_cache_waiter *wt)
{
    cq->waiter = wt;
    cq->wait_te = (h2o_timeout_entry_t){.cb = on_wait_timeout};
    h2o_timeout_link(cq->w->loop, &cq->fwd.t.timers->total, &cq->wait_te);
}

/* ---- the request ---------------------------------------------------------------------------- */

static void on_creq_dispose(void *p)
{
    struct creq *cq = p;
    if (cq->waiter) {
        if (vg_cache_cancel_wait(cq->w->node->cache, cq->key, &cq->waiter->base))
            free(cq->waiter);
        else
            cq->waiter->cq = NULL; /* on_woken frees it */
        stop_waiting(cq);
    }
    leave(cq);
}

static bool only_if_cached(struct creq *cq)
{
    struct vg_cache_cc cc;
    vg_cache_cc_init(&cc);
    vg_cache_cc_from_headers(&cc, &cq->client_headers);
    return (cc.flags & VG_CACHE_CC_ONLY_IF_CACHED) != 0;
}

static void miss(struct creq *cq)
{
    h2o_req_t *req = cq->req;
    if (only_if_cached(cq)) {
        struct vg_cache_status cs = {.fwd = "miss", .ttl = INT64_MIN, .detail = "only-if-cached"};
        h2o_iovec_t st = vg_cache_status_format(&req->pool, &cs);
        h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("cache-status"), 0, NULL, st.base, st.len);
        h2o_send_error_generic(req, 504, "Gateway Timeout", "not in the cache (only-if-cached)\n", 0);
        return;
    }
    if (!cq->joined) {
        cq->joined = true;
        struct vg__node_cache_waiter *wt = vg_xcalloc(1, sizeof(*wt));
        *wt = (struct vg__node_cache_waiter){.base = {.wake = on_wake}, .w = cq->w, .cq = cq};
        switch (vg_cache_join(cq->w->node->cache, cq->key, &wt->base, MAX_WAITERS)) {
        case VG_CACHE_WAITER:
            wait_for_leader(cq, wt);
            return;
        case VG_CACHE_LEADER:
            cq->leader = true;
            break;
        case VG_CACHE_BYPASS:
            break;
        }
        free(wt);
    }
    count(cq, VG__NODE_CACHE_MISS);
    forward(cq, MODE_STORE);
}

static void lookup(struct creq *cq)
{
    struct vg_cache *cache = cq->w->node->cache;
    int64_t now = time(NULL);
    bool known = false;
    struct vg_cache_obj *o = vg_cache_lookup(cache, cq->key, &cq->client_headers, now, &known);
    cq->key_known = known;
    if (!o) {
        miss(cq);
        return;
    }
    struct vg_cache_meta m, *meta = &m;
    vg_cache_obj_meta(o, &m);
    enum vg_cache_use use = vg_cache_usable(meta, &cq->q, now);
    if (vg_cache_obj_is_stale_marked(o) && (use == VG_CACHE_USE_FRESH || use == VG_CACHE_USE_STALE_SWR))
        use = meta->swr > 0 ? VG_CACHE_USE_STALE_SWR : VG_CACHE_USE_REVALIDATE; /* soft-purged */
    switch (use) {
    case VG_CACHE_USE_FRESH: {
        struct vg_cache_status cs = {.hit = true, .collapsed = cq->collapsed};
        count(cq, VG__NODE_CACHE_HIT);
        serve(cq, o, &cs);
        return;
    }
    case VG_CACHE_USE_STALE_SWR: {
        struct vg_cache_status cs = {.hit = true, .detail = "stale"};
        count(cq, VG__NODE_CACHE_STALE);
        /* one refresh at a time per key: only the one who gets the key's
         * slot refreshes (no waiting: max_waiters 0 makes the others bypass) */
        struct vg_cache_waiter none = {.wake = on_wake};
        if (vg_cache_join(cache, cq->key, &none, 0) == VG_CACHE_LEADER) {
            cq->leader = true;
            refresh_start(cq);
        }
        serve(cq, o, &cs);
        return;
    }
    case VG_CACHE_USE_REVALIDATE: {
        /* fresh but for the request's own directives (no-cache, max-age):
         * Cache-Status says the request asked (fwd=request) */
        h2o_headers_t none = {NULL, 0, 0};
        struct vg_cache_req plain = {.method = cq->q.method, .headers = &none};
        cq->by_request = !vg_cache_obj_is_stale_marked(o) && vg_cache_usable(meta, &plain, now) == VG_CACHE_USE_FRESH;
        count(cq, VG__NODE_CACHE_MISS);
        revalidate(cq, o);
        return;
    }
    case VG_CACHE_USE_NONE:
        vg_cache_obj_release(o);
        count(cq, VG__NODE_CACHE_BYPASS);
        forward(cq, MODE_STORE); /* the response may still be storable (public, s-maxage) */
        return;
    }
}

void vg__node_cache_proxy(struct vg_worker *w, struct vg_site *site, h2o_req_t *req, h2o_iovec_t app,
                          struct vg_obs_counter *const *counters, const struct vg__node_cache_route *cr,
                          const struct vg__node_cache_fwd *fwd)
{
    struct creq *cq = h2o_mem_alloc_shared(&req->pool, sizeof(*cq), on_creq_dispose);
    *cq = (struct creq){.w = w, .site = site, .req = req, .cr = cr, .fwd = *fwd, .app = app, .counters = counters};
    cq->client_headers = req->headers; /* the vector is copied: revalidation replaces req->headers */
    cq->q = (struct vg_cache_req){.method = req->method, .headers = &cq->client_headers};
    cq->request_time = time(NULL);
    cq->lookup_at = fwd->trace ? vg_trace_clock() : 0;
    bool get = h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET")) ||
               h2o_memis(req->method.base, req->method.len, H2O_STRLIT("HEAD"));
    if (!get) { /* not for the cache; an unsafe one invalidates on success */
        count(cq, VG__NODE_CACHE_BYPASS);
        forward(cq, MODE_PASS);
        return;
    }
    h2o_iovec_t k = vg_cache_key_build(&req->pool, &cr->key, req->authority, req->path, &cq->client_headers);
    cq->key = h2o_concat(&req->pool, app, h2o_iovec_init(H2O_STRLIT(" ")), k);
    lookup(cq);
}

/* ---- purge API ------------------------------------------------------------------------------------ */

/* "http://host/path?q" (or https) -> host and path ("/" when absent). */
static bool split_url(h2o_mem_pool_t *pool, const char *url, h2o_iovec_t *host, h2o_iovec_t *path)
{
    const char *p = url;
    if (strncmp(p, "http://", 7) == 0)
        p += 7;
    else if (strncmp(p, "https://", 8) == 0)
        p += 8;
    else
        return false;
    const char *slash = strchr(p, '/');
    size_t hl = slash ? (size_t)(slash - p) : strlen(p);
    if (!hl)
        return false;
    *host = h2o_strdup(pool, p, hl);
    *path = slash ? h2o_strdup(pool, slash, strlen(slash)) : h2o_iovec_init(H2O_STRLIT("/"));
    return true;
}

/* The app a purge names ("app"), or the only one. */
static const struct vg_app_rt *purge_app(struct vg_site *site, json_t *j, const char **why)
{
    json_t *name = json_object_get(j, "app");
    const char *s = json_string_value(name);
    return vg__node_admin_app(site, s, s ? json_string_length(name) : 0, why);
}

/* The purges one API call made, to send to the other nodes. */
#define PURGE_FANOUT_MAX 17
struct purge_log {
    struct vg_cache_purge p[PURGE_FANOUT_MAX];
    size_t n;
};

static size_t purge_one(struct vg_cache *cache, struct purge_log *log, const struct vg_cache_purge *p)
{
    if (log->n < PURGE_FANOUT_MAX)
        log->p[log->n++] = *p;
    return vg_cache_purge(cache, p);
}

/* Purges value (after "app ") under each key form the app's caching
 * routes use (with or without the host): the same object is never counted
 * twice, since a key has one form. */
static size_t purge_forms(struct vg_cache *cache, struct purge_log *log, h2o_mem_pool_t *pool,
                          const struct vg_app_rt *app, enum vg_cache_purge_kind kind, h2o_iovec_t host,
                          h2o_iovec_t path, bool soft)
{
    size_t n = 0, n_done = 0;
    h2o_iovec_t done[16]; /* forms purged already */
    static const char *const none[] = {NULL};
    h2o_headers_t no_headers = {NULL, 0, 0};
    for (size_t r = 0; r < app->conf->n_routes; r++) {
        const struct vg__node_cache_route *cr = &app->routes[r].cache;
        if (!cr->enabled)
            continue;
        h2o_iovec_t v;
        if (kind == VG_CACHE_PURGE_URL) {
            struct vg_cache_keyrules kr = cr->key;
            kr.headers = kr.cookies = (char **)none;
            v = vg_cache_key_build(pool, &kr, host, path, &no_headers);
        } else {
            v = h2o_concat(pool, cr->key.ignore_host ? h2o_iovec_init(NULL, 0) : host, h2o_iovec_init(H2O_STRLIT("\n")),
                           path);
        }
        bool seen = false;
        for (size_t k = 0; k < n_done && !seen; k++)
            seen = h2o_memis(done[k].base, done[k].len, v.base, v.len);
        if (seen)
            continue;
        if (n_done < sizeof(done) / sizeof(done[0]))
            done[n_done++] = v;
        struct vg_cache_purge p = {.kind = kind, .soft = soft};
        p.value = h2o_concat(pool, h2o_iovec_init(app->conf->name, strlen(app->conf->name)),
                             h2o_iovec_init(H2O_STRLIT(" ")), v);
        n += purge_one(cache, log, &p);
    }
    return n;
}

static int purge(struct vg_worker *w, h2o_req_t *req, json_t *j, size_t *n, struct purge_log *log,
                 const struct vg_app_rt **appp, bool *softp, const char **why)
{
    const struct vg_app_rt *app = purge_app(w->site, j, why);
    *appp = app;
    if (!app)
        return strstr(*why, "no such") ? 404 : 400;
    const char *url = json_string_value(json_object_get(j, "url"));
    const char *prefix = json_string_value(json_object_get(j, "prefix"));
    const char *tag = json_string_value(json_object_get(j, "tag"));
    bool soft = json_is_true(json_object_get(j, "soft"));
    *softp = soft;
    if (!!url + !!prefix + !!tag != 1) {
        *why = "give exactly one of \"url\", \"prefix\" or \"tag\"";
        return 400;
    }
    if (tag) {
        struct vg_cache_purge p = {.kind = VG_CACHE_PURGE_TAG, .soft = soft};
        p.value = h2o_concat(&req->pool, h2o_iovec_init(app->conf->name, strlen(app->conf->name)),
                             h2o_iovec_init(H2O_STRLIT("\n")), h2o_iovec_init(tag, strlen(tag)));
        *n = purge_one(w->node->cache, log, &p);
        return 200;
    }
    h2o_iovec_t host, path;
    if (!split_url(&req->pool, url ? url : prefix, &host, &path)) {
        *why = "a URL is http://host/path (or https)";
        return 400;
    }
    *n = purge_forms(w->node->cache, log, &req->pool, app, url ? VG_CACHE_PURGE_URL : VG_CACHE_PURGE_PREFIX, host, path,
                     soft);
    return 200;
}

/* ---- purges between nodes ---------------------------------------------------------------------------- */

static const char *const purge_kinds[] = {
    [VG_CACHE_PURGE_URL] = "url", [VG_CACHE_PURGE_PREFIX] = "prefix", [VG_CACHE_PURGE_TAG] = "tag"};

#define PURGE_SUBJECT "verge.purge."
#define PURGE_VALUE_MAX 8192

/* Sends what this node purged to the others; false when the bus refused. */
static bool purge_publish(struct vg_node *node, const char *app, const struct purge_log *log, bool soft)
{
    char subject[VG_BUS_SUBJECT_MAX + 1];
    snprintf(subject, sizeof(subject), PURGE_SUBJECT "%s", app);
    json_t *list = json_array();
    for (size_t i = 0; i < log->n; i++)
        json_array_append_new(list, json_pack("{s:s,s:s%}", "kind", purge_kinds[log->p[i].kind], "value",
                                              log->p[i].value.base, log->p[i].value.len));
    json_t *msg = json_pack("{s:s,s:b,s:o}", "node", node->node_id, "soft", soft, "purges", list);
    char *text = json_dumps(msg, JSON_COMPACT);
    json_decref(msg);
    int rc = text ? vg_bus_publish(node->bus, subject, text, strlen(text)) : VG_ENOMEM;
    free(text);
    if (rc)
        vg_log(VG_LOG_WARN, "purge not sent to the other nodes", "app", app, "reason", vg_strerror(rc), NULL);
    return rc == 0;
}

int vg__node_purge_msg_parse(const void *data, size_t len, const char *app, json_t **doc, struct vg_cache_purge *out,
                             size_t max, size_t *n, const char **from, const char **why)
{
    *doc = json_loadb(data, len, JSON_REJECT_DUPLICATES, NULL);
    json_t *list = json_object_get(*doc, "purges"), *e;
    json_t *soft = json_object_get(*doc, "soft");
    *from = json_string_value(json_object_get(*doc, "node"));
    *n = 0;
    if (!json_is_object(*doc) || !*from || !json_is_array(list) || (soft && !json_is_boolean(soft))) {
        *why = "not a purge message";
        return -1;
    }
    if (!json_array_size(list) || json_array_size(list) > max) {
        *why = "a purge message holds 1 to 17 purges";
        return -1;
    }
    size_t al = strlen(app), i;
    json_array_foreach(list, i, e)
    {
        const char *kind = json_string_value(json_object_get(e, "kind"));
        json_t *v = json_object_get(e, "value");
        size_t k = 0;
        while (kind && k < 3 && strcmp(kind, purge_kinds[k]) != 0)
            k++;
        if (!kind || k == 3 || !json_is_string(v) || json_string_length(v) > PURGE_VALUE_MAX) {
            *why = "a purge is {\"kind\": url|prefix|tag, \"value\": string}";
            return -1;
        }
        const char *s = json_string_value(v);
        size_t sl = json_string_length(v);
        char sep = k == VG_CACHE_PURGE_TAG ? '\n' : ' ';
        /* an app purges its own objects only, whoever publishes */
        if (sl <= al || memcmp(s, app, al) != 0 || s[al] != sep) {
            *why = "a purge value outside the app its subject names";
            return -1;
        }
        out[i] = (struct vg_cache_purge){
            .kind = (enum vg_cache_purge_kind)k, .value = h2o_iovec_init(s, sl), .soft = json_is_true(soft)};
    }
    *n = json_array_size(list);
    return 0;
}

/* A purge from the bus (a bus thread: the cache is shared and locked). */
static void on_purge_msg(void *arg, const struct vg_bus_msg *m)
{
    struct vg_node *node = arg;
    const char *app = m->subject + strlen(PURGE_SUBJECT), *from, *why;
    struct vg_cache_purge p[PURGE_FANOUT_MAX];
    size_t n;
    json_t *doc;
    if (vg__node_purge_msg_parse(m->data, m->len, app, &doc, p, PURGE_FANOUT_MAX, &n, &from, &why) != 0) {
        vg_obs_counter_add(node->m_purge_bad, 1);
        vg_log(VG_LOG_WARN, "purge message refused", "subject", m->subject, "reason", why, NULL);
    } else if (strcmp(from, node->node_id) != 0) { /* our own was applied when it was made */
        for (size_t i = 0; i < n; i++)
            vg_cache_purge(node->cache, &p[i]);
        vg_obs_counter_add(node->m_purge_in, 1);
    }
    json_decref(doc);
}

int vg__node_purge_fanout_start(struct vg_node *node)
{
    node->m_purge_in = vg_obs_counter_get(node->metrics, "verge_purges_received_total",
                                          "Cache purges received from other nodes.", "result=\"applied\"");
    node->m_purge_bad = vg_obs_counter_get(node->metrics, "verge_purges_received_total",
                                           "Cache purges received from other nodes.", "result=\"refused\"");
    return vg_bus_subscribe(node->bus, PURGE_SUBJECT "*", NULL, on_purge_msg, node, &node->purge_sub);
}

void vg__node_cache_purge_endpoint(struct vg_worker *w, h2o_req_t *req)
{
    if (!h2o_memis(req->method.base, req->method.len, H2O_STRLIT("POST"))) {
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ALLOW, NULL, H2O_STRLIT("POST"));
        vg__node_admin_error(req, 405, "POST a purge request");
        return;
    }
    if (!vg__node_admin_token_ok(req, w->node->opt.admin_token)) {
        vg_log(VG_LOG_WARN, "purge refused", "reason",
               w->node->opt.admin_token ? "missing or wrong token" : "no --admin-token on this node", NULL);
        vg__node_admin_error(req, 401, "a valid admin token is required (Authorization: Bearer TOKEN)");
        return;
    }
    if (vg_http_body_is_streamed(req)) {
        vg__node_admin_error(req, 413, "a purge request is a small JSON object");
        return;
    }
    json_error_t jerr;
    json_t *j = json_loadb(req->entity.base ? req->entity.base : "", req->entity.len, 0, &jerr);
    if (!j || !json_is_object(j)) {
        json_decref(j);
        vg__node_admin_error(req, 400, "the body is a JSON object: {\"url\"|\"prefix\"|\"tag\": ..., \"soft\": bool}");
        return;
    }
    size_t n = 0;
    const char *why = "";
    struct purge_log log = {.n = 0};
    const struct vg_app_rt *app = NULL;
    bool soft = false;
    int status = purge(w, req, j, &n, &log, &app, &soft, &why);
    /* the values in log live in the request's pool or in j: publish first */
    bool sent = status == 200 && log.n && purge_publish(w->node, app->conf->name, &log, soft);
    json_decref(j);
    if (status != 200) {
        vg__node_admin_error(req, status, why);
        return;
    }
    char buf[80];
    snprintf(buf, sizeof(buf), "{\"purged\":%zu,\"sent\":%s}\n", n, sent ? "true" : "false");
    vg_http_send_text(req, 200, "application/json", buf, strlen(buf));
}

/* ---- worker plumbing ------------------------------------------------------------------------------ */

static socklen_t no_name(h2o_conn_t *conn, struct sockaddr *sa)
{
    return 0;
}

static const h2o_conn_callbacks_t refresh_callbacks = {.get_sockname = no_name, .get_peername = no_name};

void vg__node_cache_worker_init(struct vg_worker *w)
{
    pthread_mutex_init(&w->cache_mu, NULL);
    uv_async_init(&w->uv, &w->cache_async, on_woken);
    w->cache_async.data = w;
    w->cache_conn = (h2o_conn_t){.ctx = &w->ctx, .hosts = w->node->gconf.hosts, .callbacks = &refresh_callbacks};
    w->cache_conn.connected_at = (struct timeval){0};
}

void vg__node_cache_worker_close(struct vg_worker *w)
{
    uv_close((uv_handle_t *)&w->cache_async, NULL);
}
