/* Traces on a node: each request's trace starts here (an incoming W3C
 * traceparent continues, else a new trace), its outgoing traceparent goes
 * to origins, the kept ones land in the worker's ring and the exporter's
 * queue, `GET /_verge/traces/ID` answers from the rings, and dev mode or a
 * debug token gets Server-Timing on the response.
 *
 * The exporter is one thread: records queue (bounded) and go out as
 * OTLP/HTTP JSON batches; a failing collector costs retries on that thread
 * only, and past the queue records are dropped and counted. */
#include "node_int.h"

#include <jansson.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

static const h2o_iovec_t hdr_traceparent = {H2O_STRLIT("traceparent")};
static const h2o_iovec_t hdr_debug = {H2O_STRLIT("x-verge-debug")};

/* ---- per request ------------------------------------------------------------------ */

static bool wants_timing(struct vg_node *node, h2o_req_t *req);

static void accept_span(struct vg_trace *t, h2o_req_t *req)
{
    struct timeval now;
    gettimeofday(&now, NULL);
    int64_t ago_us = (int64_t)(now.tv_sec - req->conn->connected_at.tv_sec) * 1000000 +
                     (now.tv_usec - req->conn->connected_at.tv_usec);
    if (ago_us < 0 || ago_us > 3600 * 1000000LL)
        return;
    vg_span_t s = vg_trace_add(t, "accept", 0, vg_trace_clock_ago((uint64_t)ago_us * 1000), vg_trace_span_start(t, 0));
    if (req->scheme == &H2O_URL_SCHEME_HTTPS)
        vg_trace_detail(t, s, "tls", 3);
}

/* A trace's memory comes from the worker's free list, not the request's
 * pool: the pool's first chunk is mostly taken by then, and the trace
 * (~1.4 KiB) cost a chunk malloc and free per request. The block
 * (node_int.h) also holds what every request needs besides the trace, so
 * that none of it is an allocation: the request env's entries that carry
 * the trace (vg_http_req_set_trace_in) and the origin's traceparent. The
 * block is given back when the request's state is torn down
 * (on_request_end), after the forwarder's: nothing of the request reads
 * either later. */
static struct vg__node_trace_block *block_of(struct vg_trace *t)
{
    return (struct vg__node_trace_block *)(void *)((unsigned char *)t - offsetof(struct vg__node_trace_block, trace));
}

static struct vg__node_trace_block *trace_mem(struct vg_worker *w)
{
    struct vg__node_trace_block *b = w->trace_free;
    if (!b)
        return vg_xmalloc(sizeof(*b) + vg_trace_size());
    w->trace_free = b->next_free;
    w->n_trace_free--;
    return b;
}

/* h2o_find_header_by_str, without the call: every request looks. */
static inline ssize_t find_traceparent(const h2o_headers_t *hs)
{
    for (size_t i = 0; i < hs->size; i++) {
        const h2o_iovec_t *n = hs->entries[i].name;
        if (n->len == 11 && n->base[0] == 't' && memcmp(n->base, "traceparent", 11) == 0)
            return (ssize_t)i;
    }
    return -1;
}

struct vg_trace *vg__node_trace_start(struct vg_worker *w, h2o_req_t *req, ssize_t *tp_hdr)
{
    struct vg_node *node = w->node;
    *tp_hdr = -1;
    if (node->opt.trace_off)
        return NULL;
    struct vg_trace_parent parent, *pp = NULL;
    ssize_t i = *tp_hdr = find_traceparent(&req->headers);
    if (i >= 0 &&
        vg_trace_parse_traceparent(req->headers.entries[i].value.base, req->headers.entries[i].value.len, &parent))
        pp = &parent;
    struct vg__node_trace_block *b = trace_mem(w);
    b->tp[0] = '\0';
    /* dev and debug requests see every stage; others that head sampling
     * skipped time only their own span, unless --trace-unsampled stages */
    bool stages = node->opt.trace_stages || wants_timing(node, req);
    struct vg_trace *t = vg_trace_start(b->trace, pp, node->opt.trace_sample, "request", stages);
    vg_http_req_set_trace_in(req, t, b->env);
    /* the connection's setup (accept, a TLS handshake) came first */
    if (vg_trace_recording(t) && vg_http_req_first_on_conn(req))
        accept_span(t, req);
    return t;
}

h2o_iovec_t vg__node_trace_header(struct vg_trace *t, vg_span_t from, h2o_req_t *req)
{
    if (!t)
        return h2o_iovec_init(NULL, 0);
    char *tp;
    if (from <= 0) { /* the request's own span (the origin's parent): formatted once, into the block */
        tp = block_of(t)->tp;
        if (!tp[0])
            vg_trace_child_header(t, 0, tp);
    } else {
        tp = h2o_mem_alloc_pool(&req->pool, VG_TRACEPARENT_LEN + 1);
        vg_trace_child_header(t, from, tp);
    }
    return h2o_iovec_init(tp, VG_TRACEPARENT_LEN);
}

void vg__node_trace_propagate(struct vg_trace *t, vg_span_t from, h2o_req_t *req, ssize_t *tp_hdr)
{
    if (!t)
        return; /* tracing off: an incoming traceparent passes through */
    /* the callee's parent is our span; tracestate passes through untouched */
    char *tp = h2o_mem_alloc_pool(&req->pool, VG_TRACEPARENT_LEN + 1);
    vg_trace_child_header(t, from, tp);
    h2o_iovec_t v = h2o_iovec_init(tp, VG_TRACEPARENT_LEN);
    ssize_t i = *tp_hdr;
    if (i >= 0 && (size_t)i < req->headers.size && /* where it was, unless Lua rewrote the headers since */
        h2o_memis(req->headers.entries[i].name->base, req->headers.entries[i].name->len, hdr_traceparent.base,
                  hdr_traceparent.len)) {
        req->headers.entries[i].value = v;
        return;
    }
    i = h2o_find_header_by_str(&req->headers, hdr_traceparent.base, hdr_traceparent.len, -1);
    if (i >= 0)
        req->headers.entries[i].value = v;
    else
        h2o_add_header_by_str(&req->pool, &req->headers, hdr_traceparent.base, hdr_traceparent.len, 0, NULL, v.base,
                              v.len);
    *tp_hdr = i >= 0 ? i : (ssize_t)req->headers.size - 1;
}

void vg__node_trace_keep(struct vg_worker *w, struct vg_trace_rec *r)
{
    struct vg_node *node = w->node;
    vg_trace_ring_push(w->traces, r);
    if (node->trace_exporter)
        vg__node_exporter_push(node->trace_exporter, r);
    vg_obs_counter_add(node->m_traces_kept, 1);
    vg_trace_rec_unref(r);
}

/* Server-Timing (and the trace id, as W3C traceresponse) for a developer:
 * always in dev mode, else when the request carries the admin token in
 * X-Verge-Debug. */
static bool wants_timing(struct vg_node *node, h2o_req_t *req)
{
    if (node->opt.dev)
        return true;
    const char *tok = node->opt.admin_token;
    if (!tok)
        return false;
    ssize_t i = h2o_find_header_by_str(&req->headers, hdr_debug.base, hdr_debug.len, -1);
    return i >= 0 && vg__node_admin_token_equal(req->headers.entries[i].value, tok);
}

void vg__node_trace_timing_add(struct vg_worker *w, struct vg_trace *t, h2o_req_t *req)
{
    if (!t || !wants_timing(w->node, req))
        return;
    char *buf = h2o_mem_alloc_pool(&req->pool, 1024);
    size_t n = vg_trace_server_timing(t, buf, 1024);
    if (n)
        h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("server-timing"), 0, NULL, buf, n);
    char *tr = h2o_mem_alloc_pool(&req->pool, VG_TRACEPARENT_LEN + 1);
    vg_trace_child_header(t, 0, tr);
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("traceresponse"), 0, NULL, tr, VG_TRACEPARENT_LEN);
}

/* ---- GET /_verge/traces/ID ----------------------------------------------------------- */

void vg__node_trace_endpoint(struct vg_worker *w, h2o_req_t *req, h2o_iovec_t id_hex)
{
    struct vg_node *node = w->node;
    if (!vg__node_admin_diag_ok(node, req, "/_verge/traces"))
        return;
    uint8_t id[16];
    if (!vg_trace_id_parse(id_hex.base, id_hex.len, id)) {
        vg_http_send_text(req, 400, "text/plain; charset=utf-8", H2O_STRLIT("a trace id is 32 hex digits\n"));
        return;
    }
    json_t *arr = json_array();
    size_t found = 0;
    for (unsigned k = 0; k < node->n_workers; k++)
        found += vg_trace_ring_find(node->workers[k].traces, id, arr);
    char *text = json_dumps(arr, JSON_COMPACT);
    json_decref(arr);
    if (found)
        vg_http_send_text(req, 200, "application/json", text, strlen(text));
    else
        vg_http_send_text(req, 404, "application/json", H2O_STRLIT("[]"));
    free(text);
}

/* ---- lookups over the bus ------------------------------------------------------------ */

/* "verge.trace.get" carries a trace id; every node holding records of it
 * answers on the reply subject with their JSON array, the others stay
 * silent (the asker gathers answers for a while: a trace may span nodes). */
static void on_trace_get(void *arg, const struct vg_bus_msg *m)
{
    struct vg_node *node = arg;
    uint8_t id[16];
    if (!m->reply || !vg_trace_id_parse(m->data, m->len, id))
        return;
    json_t *arr = json_array();
    size_t found = 0;
    for (unsigned k = 0; k < node->n_workers; k++)
        found += vg_trace_ring_find(node->workers[k].traces, id, arr);
    char *text = found ? json_dumps(arr, JSON_COMPACT) : NULL;
    json_decref(arr);
    if (text && vg_bus_publish(node->bus, m->reply, text, strlen(text)) != 0)
        vg_log(VG_LOG_WARN, "cannot answer a trace lookup", "reason", "the bus refused the answer", NULL);
    free(text);
}

/* ---- node-wide --------------------------------------------------------------------- */

static void collect_traces(void *data, struct vg_obs_buf *buf)
{
    struct vg_node *node = data;
    struct vg__node_exporter_stats s = {0};
    if (!node->trace_exporter)
        return;
    vg__node_exporter_stats(node->trace_exporter, &s);
    vg_obs_buf_printf(buf,
                      "# HELP verge_trace_export_spans_total Trace records sent to the collector, or dropped.\n"
                      "# TYPE verge_trace_export_spans_total counter\n"
                      "verge_trace_export_spans_total{result=\"exported\"} %llu\n"
                      "verge_trace_export_spans_total{result=\"dropped_queue_full\"} %llu\n"
                      "verge_trace_export_spans_total{result=\"dropped_failed\"} %llu\n"
                      "# HELP verge_trace_export_failures_total Export requests that failed.\n"
                      "# TYPE verge_trace_export_failures_total counter\n"
                      "verge_trace_export_failures_total %llu\n",
                      (unsigned long long)s.exported, (unsigned long long)s.dropped_queue,
                      (unsigned long long)s.dropped_failed, (unsigned long long)s.failed_requests);
}

int vg__node_trace_init(struct vg_node *node)
{
    vg_trace_clock_init(); /* its 2 ms calibration now, not in a request */
    node->m_traces_kept =
        vg_obs_counter_get(node->metrics, "verge_traces_kept_total",
                           "Traces kept (head-sampled, errored or slow) in the rings and for export.", "");
    for (unsigned k = 0; k < node->n_workers; k++)
        node->workers[k].traces = vg_trace_ring_create(node->opt.trace_ring ? node->opt.trace_ring : 1024);
    vg_obs_collector_add(node->metrics, collect_traces, node);
    if (node->bus &&
        vg_bus_subscribe(node->bus, VG_NODE_TRACE_SUBJECT, NULL, on_trace_get, node, &node->trace_sub) != 0)
        vg_log(VG_LOG_WARN, "trace lookups over the bus are off", "reason", "cannot subscribe", NULL);
    if (!node->opt.trace_export)
        return 0;
    struct vg__node_exporter_options o = {
        .url = node->opt.trace_export, .service = "verge", .node = node->node_id, .location = node->opt.location};
    char err[256];
    int rc = vg__node_exporter_create(&o, &node->trace_exporter, err, sizeof(err));
    if (rc)
        vg_log(VG_LOG_ERROR, "cannot start the trace exporter", "reason", err, NULL);
    return rc;
}

void vg__node_trace_fini(struct vg_node *node)
{
    if (node->trace_sub)
        vg_bus_unsubscribe(node->trace_sub); /* no lookup runs into the rings below */
    node->trace_sub = NULL;
    vg_obs_collector_remove(node->metrics, collect_traces, node);
    vg__node_exporter_destroy(node->trace_exporter);
    node->trace_exporter = NULL;
    for (unsigned k = 0; k < node->n_workers; k++) {
        struct vg_worker *w = &node->workers[k];
        vg_trace_ring_destroy(w->traces);
        w->traces = NULL;
        while (w->trace_free) {
            struct vg__node_trace_block *b = w->trace_free;
            w->trace_free = b->next_free;
            free(b);
        }
        w->n_trace_free = 0;
    }
}
