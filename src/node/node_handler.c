/* The request path: select app by Host, route, sanity limits, then the
 * route's action (respond, redirect, static, proxy). Every request carries
 * a small state object on its pool; the pool's destructor is where the
 * request ends for us (access log, metrics, passive health, site release). */
#include "node_int.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

struct reqstate {
    h2o_req_t *req;
    struct vg_worker *worker;
    struct vg_site *site;
    struct vg_app_rt *app;
    struct vg_route_rt *route;
    struct vg_origin_rt *origin;
    struct vg_site_worker_origin *worigin;
    int server; /* upstream server index, -1 if none */
    size_t app_idx;
    struct vg_fn_req *fn; /* shared by the request's Lua calls */
    uint64_t start_us;
    h2o_iovec_t reqid;
    /* the trace: its stages' spans while they run */
    struct vg_trace *trace;
    vg_span_t sp_lua, sp_upstream, sp_phase;
    bool internal;  /* /_verge/...: not in the log ring (a `verge logs -f` would see its own polls) */
    ssize_t tp_hdr; /* the traceparent header's index in req->headers, -1: none yet */
};

static const h2o_iovec_t hdr_reqid = {H2O_STRLIT("x-request-id")};

/* ---- access log ------------------------------------------------------------- */

#define LOG_BUF_CAP (64 * 1024)

void vg__node_access_log_flush(struct vg_worker *w)
{
    if (!w->log_len)
        return;
    size_t off = 0;
    while (off < w->log_len) {
        ssize_t n = write(STDOUT_FILENO, w->log_buf + off, w->log_len - off);
        if (n <= 0)
            break; /* a full or closed stdout must not stall the worker */
        off += (size_t)n;
    }
    w->log_len = 0;
}

static size_t json_str(char *dst, size_t cap, const char *key, const char *s, size_t len)
{
    size_t o = (size_t)snprintf(dst, cap, ",\"%s\":\"", key);
    if (o >= cap)
        return cap;
    o += vg_json_escape(dst + o, cap - o, s, len);
    if (o + 1 >= cap)
        return cap;
    dst[o++] = '"';
    return o;
}

static void log_append(struct vg_worker *w, const char *line, size_t len)
{
    if (w->log_len + len > LOG_BUF_CAP)
        vg__node_access_log_flush(w);
    memcpy(w->log_buf + w->log_len, line, len);
    w->log_len += len;
}

/* --log-format text (verge dev): one short line a person can scan. */
static void access_log_text(struct reqstate *rs, int status, uint64_t dur_us)
{
    h2o_req_t *req = rs->req;
    char line[1400];
    int n = snprintf(line, sizeof(line), "%-5.*s %3d %.*s  %zuB %.1fms%s%s  app=%s id=%.*s\n",
                     (int)(req->input.method.len > 8 ? 8 : req->input.method.len), req->input.method.base, status,
                     (int)(req->input.path.len > 1024 ? 1024 : req->input.path.len), req->input.path.base,
                     req->bytes_sent, (double)dur_us / 1000.0, rs->server >= 0 ? " <- " : "",
                     rs->server >= 0 ? rs->origin->authority[rs->server] : "", rs->app ? rs->app->conf->name : "-",
                     (int)rs->reqid.len, rs->reqid.base);
    if (n > 0)
        log_append(rs->worker, line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
}

/* The JSON line goes to the node's log ring (verge logs) and, in JSON
 * mode, to stdout; --log-format text prints the short form instead. */
static void access_log(struct reqstate *rs, int status, uint64_t dur_us)
{
    h2o_req_t *req = rs->req;
    char line[3072];
    size_t cap = sizeof(line), o = 0;
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    o += strftime(line, cap, "{\"time\":\"%Y-%m-%dT%H:%M:%SZ\",\"type\":\"access\"", &tm);
    const char *app = rs->app ? rs->app->conf->name : "";
    o += json_str(line + o, cap - o, "app", app, strlen(app));
    if (o < cap)
        o += json_str(line + o, cap - o, "method", req->input.method.base, req->input.method.len);
    if (o < cap)
        o += json_str(line + o, cap - o, "path", req->input.path.base,
                      req->input.path.len > 1024 ? 1024 : req->input.path.len);
    const char *up = rs->server >= 0 ? rs->origin->authority[rs->server] : "";
    if (o < cap)
        o += snprintf(line + o, cap - o, ",\"status\":%d,\"bytes\":%zu,\"duration_us\":%llu", status, req->bytes_sent,
                      (unsigned long long)dur_us);
    if (o < cap)
        o += json_str(line + o, cap - o, "upstream", up, strlen(up));
    if (o < cap)
        o += json_str(line + o, cap - o, "request_id", rs->reqid.base, rs->reqid.len);
    if (o < cap && rs->trace) {
        char id[VG_TRACE_ID_HEX + 1];
        vg_trace_hex(vg_trace_id(rs->trace), 16, id);
        o += json_str(line + o, cap - o, "trace_id", id, VG_TRACE_ID_HEX);
    }
    if (o + 2 >= cap)
        return; /* cannot happen with the bounds above; never log a torn line */
    line[o++] = '}';
    if (!rs->internal)
        vg_log_ring_append(rs->worker->node->log_ring, vg_wall_us(), line, o);
    line[o++] = '\n';
    if (vg_log_is_json())
        log_append(rs->worker, line, o);
    else
        access_log_text(rs, status, dur_us);
}

/* ---- metrics ----------------------------------------------------------------- */

static struct vg_obs_counter *status_counter(struct vg_worker *w, struct vg_route_rt *rt, int status)
{
    /* slots fill once per (route, status) and are then read lock-free */
    for (size_t i = 0; i < VG_NODE_STATUS_SLOTS; i++) {
        int code = __atomic_load_n(&rt->status_code[i], __ATOMIC_ACQUIRE);
        if (code == status)
            return __atomic_load_n(&rt->status[i], __ATOMIC_ACQUIRE);
        if (code == 0) {
            char labels[300];
            snprintf(labels, sizeof(labels), "%s,status=\"%d\"", rt->label, status);
            struct vg_obs_counter *c =
                vg_obs_counter_get(w->node->metrics, "verge_requests_total", "Requests served.", labels);
            int expected = 0;
            __atomic_store_n(&rt->status[i], c, __ATOMIC_RELEASE);
            if (__atomic_compare_exchange_n(&rt->status_code[i], &expected, status, false, __ATOMIC_ACQ_REL,
                                            __ATOMIC_ACQUIRE))
                return c;
            if (expected == status)
                return c; /* another worker won with the same series */
        }
    }
    return NULL; /* more distinct statuses than slots on one route: counted below */
}

static void count_request(struct reqstate *rs, int status, uint64_t dur_us)
{
    struct vg_node *node = rs->worker->node;
    struct vg_obs_counter *c = rs->route ? status_counter(rs->worker, rs->route, status) : NULL;
    if (!c) {
        char labels[200];
        snprintf(labels, sizeof(labels), "app=\"%s\",route=\"\",status=\"%d\"", rs->app ? rs->app->label : "", status);
        c = vg_obs_counter_get(node->metrics, "verge_requests_total", "Requests served.", labels);
    }
    vg_obs_counter_add(c, 1);
    if (rs->route)
        vg_obs_histogram_observe_us(rs->route->latency, dur_us);
    struct vg_node_appstats *st = rs->app ? rs->app->stats : NULL;
    if (st) {
        size_t b = 0;
        while (b < VG_NODE_LAT_BUCKETS - 1 && dur_us > VG_NODE_LAT_BOUNDS_US[b])
            b++;
        __atomic_fetch_add(&st->requests, 1, __ATOMIC_RELAXED);
        __atomic_fetch_add(&st->lat[b], 1, __ATOMIC_RELAXED);
        if (status >= 500)
            __atomic_fetch_add(&st->errors_5xx, 1, __ATOMIC_RELAXED);
        if (st->areas) { /* agent mode: the demand placement reads, and now and then a round trip */
            uint32_t area = vg__node_client_area(rs->worker, rs->req);
            __atomic_fetch_add(&st->areas[area], 1, __ATOMIC_RELAXED);
            if (rs->worker->rtt_countdown-- <= 1)
                vg__node_rtt_sample(rs->worker, rs->req, area);
        }
    }
}

static void on_request_end(void *p)
{
    struct reqstate *rs = p;
    h2o_req_t *req = rs->req;
    int status = req->res.status ? req->res.status : 499; /* 499: client went away first */
    uint64_t dur = vg_now_us() - rs->start_us;
    /* passive health and the balancer were settled per attempt by the forwarder */
    count_request(rs, status, dur);
    if (rs->worker->node->opt.access_log)
        access_log(rs, status, dur);
    if (rs->trace) {
        struct vg_trace_meta m = {.app = rs->app ? rs->app->conf->name : NULL,
                                  .route = rs->route ? rs->route->conf->path : NULL,
                                  .node = rs->worker->node->node_id,
                                  .location = rs->worker->node->opt.location,
                                  .status = status};
        vg__node_trace_end(rs->worker, rs->trace, &m);
        vg__node_trace_release(rs->worker, rs->trace); /* the last of the request to use it */
        rs->trace = NULL;
    }
    vg__node_worker_request_done(rs->worker, rs->site);
}

/* ---- helpers ------------------------------------------------------------------ */

/* Bad input is not a bug: answer with a status, log the reason. */
static void reject(struct reqstate *rs, int status, const char *reason, const char *why)
{
    h2o_req_t *req = rs->req;
    char code[8], path[256];
    snprintf(code, sizeof(code), "%d", status);
    snprintf(path, sizeof(path), "%.*s", (int)(req->input.path.len > 200 ? 200 : req->input.path.len),
             req->input.path.base);
    vg_log(VG_LOG_WARN, "request rejected", "status", code, "reason", why, "app", rs->app ? rs->app->conf->name : "",
           "path", path, "request_id", rs->reqid.base ? h2o_strdup(&req->pool, rs->reqid.base, rs->reqid.len).base : "",
           NULL);
    h2o_send_error_generic(req, status, reason, why, status == 400 ? H2O_SEND_ERROR_HTTP1_CLOSE_CONNECTION : 0);
}

static bool valid_reqid(h2o_iovec_t v)
{
    if (v.len == 0 || v.len > 64)
        return false;
    for (size_t i = 0; i < v.len; i++) {
        char c = v.base[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-' || c == '_' ||
              c == '.'))
            return false;
    }
    return true;
}

/* Keeps a well-formed incoming X-Request-Id (so ids join across tiers),
 * otherwise makes one: worker prefix + sequence, unique per process run. */
static void assign_request_id(struct reqstate *rs)
{
    h2o_req_t *req = rs->req;
    ssize_t i = h2o_find_header_by_str(&req->headers, hdr_reqid.base, hdr_reqid.len, -1);
    if (i >= 0 && valid_reqid(req->headers.entries[i].value)) {
        rs->reqid = req->headers.entries[i].value;
        return;
    }
    struct vg_worker *w = rs->worker;
    /* 8 hex digits of prefix + 10 of sequence; formatted by hand, as this
     * runs for every request and printf showed in profiles */
    static const char hex[] = "0123456789abcdef";
    char *buf = h2o_mem_alloc_pool(&req->pool, 18);
    memcpy(buf, w->reqid_prefix, 8);
    uint64_t seq = ++w->reqid_seq;
    for (int k = 17; k >= 8; k--, seq >>= 4)
        buf[k] = hex[seq & 15];
    rs->reqid = h2o_iovec_init(buf, 18);
    if (i >= 0)
        req->headers.entries[i].value = rs->reqid;
    else
        h2o_add_header_by_str(&req->pool, &req->headers, hdr_reqid.base, hdr_reqid.len, 0, NULL, rs->reqid.base,
                              rs->reqid.len);
}

static bool internal_endpoint(struct reqstate *rs)
{
    h2o_req_t *req = rs->req;
    h2o_iovec_t p = req->path_normalized;
    rs->internal = p.len >= 8 && memcmp(p.base, "/_verge/", 8) == 0;
    if (h2o_memis(p.base, p.len, H2O_STRLIT("/_verge/health"))) {
        if (!vg__node_state_ready(rs->worker->node)) /* a global replica is still loading */
            vg_http_send_text(req, 503, "text/plain; charset=utf-8", H2O_STRLIT("not ready: loading global state\n"));
        else
            vg_http_send_text(req, 200, "text/plain; charset=utf-8", H2O_STRLIT("ok\n"));
        return true;
    }
    if (h2o_memis(p.base, p.len, H2O_STRLIT("/_verge/purge"))) {
        vg__node_cache_purge_endpoint(rs->worker, req);
        return true;
    }
    static const h2o_iovec_t traces = {H2O_STRLIT("/_verge/traces/")};
    if (p.len > traces.len && memcmp(p.base, traces.base, traces.len) == 0) {
        vg__node_trace_endpoint(rs->worker, req, h2o_iovec_init(p.base + traces.len, p.len - traces.len));
        return true;
    }
    if (h2o_memis(p.base, p.len, H2O_STRLIT("/_verge/stats"))) {
        vg__node_stats_endpoint(rs->worker, req);
        return true;
    }
    if (h2o_memis(p.base, p.len, H2O_STRLIT("/_verge/logs"))) {
        vg__node_logs_endpoint(rs->worker, req);
        return true;
    }
    if (p.len >= 15 && memcmp(p.base, "/_verge/publish", 15) == 0 && (p.len == 15 || p.base[15] == '/')) {
        vg__node_publish_endpoint(rs->worker, req);
        return true;
    }
    if (h2o_memis(p.base, p.len, H2O_STRLIT("/_verge/metrics"))) {
        size_t len;
        char *text = vg_obs_registry_render(rs->worker->node->metrics, &len);
        vg_http_send_text(req, 200, "text/plain; version=0.0.4", text, len); /* copies it */
        free(text);
        return true;
    }
    return false;
}

/* ---- actions ------------------------------------------------------------------- */

static void do_respond(h2o_req_t *req, const struct vg_conf_route *r)
{
    vg_http_send_text(req, r->u.respond.status, r->u.respond.content_type, r->u.respond.body,
                      strlen(r->u.respond.body));
}

static void do_redirect(h2o_req_t *req, const struct vg_conf_route *r)
{
    h2o_send_redirect(req, r->u.redirect.status, vg_http_reason_phrase(r->u.redirect.status), r->u.redirect.location,
                      strlen(r->u.redirect.location));
}

/* The slow path of inside_root: realpath(3), one system call per path
 * component. The resolved path is left in real (empty when the file does
 * not exist). */
static bool inside_root_by_realpath(struct reqstate *rs, const char *dir, h2o_iovec_t rel, char real[PATH_MAX])
{
    size_t dl = strlen(dir);
    char *path = h2o_mem_alloc_pool(&rs->req->pool, dl + rel.len + 2);
    memcpy(path, dir, dl);
    path[dl] = '/';
    memcpy(path + dl + 1, rel.base, rel.len);
    path[dl + 1 + rel.len] = '\0';
    real[0] = '\0';
    if (!realpath(path, real)) {
        real[0] = '\0';
        return true; /* missing: h2o answers 404 without opening anything */
    }
    size_t rl = strlen(real);
    return rl >= dl && memcmp(real, dir, dl) == 0 && (real[dl] == '\0' || real[dl] == '/');
}

/* True when the file the request names resolves (through any symlinks)
 * inside the static root; h2o already removed "." and ".." segments. Fast
 * path: one openat2(RESOLVE_BENEATH) on the root's descriptor, where the
 * kernel refuses any resolution that leaves it; the file stays open in *fd
 * (read-only, non-blocking so that a FIFO cannot hold the worker) for
 * sending. It also refuses absolute symlinks that point back inside, and
 * old kernels lack it: those cases take realpath (*fd is then -1). *st is
 * the file's, when *have_st. */
static bool inside_root(struct reqstate *rs, const struct vg_route_rt *rt, h2o_iovec_t rel, struct stat *st,
                        bool *have_st, int *fd)
{
    static bool no_openat2;
    char name[PATH_MAX];
    *have_st = false;
    *fd = -1;
    if (rt->root_fd >= 0 && !no_openat2 && rel.len < sizeof(name)) {
        memcpy(name, rel.len ? rel.base : ".", rel.len ? rel.len : 1);
        name[rel.len ? rel.len : 1] = '\0';
        struct open_how how = {.flags = O_RDONLY | O_NONBLOCK | O_CLOEXEC,
                               .resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS};
        int f = (int)syscall(SYS_openat2, rt->root_fd, name, &how, sizeof(how));
        if (f >= 0) {
            *have_st = fstat(f, st) == 0;
            *fd = f;
            return true;
        }
        if (errno == ENOENT || errno == ENOTDIR || errno == EACCES)
            return true; /* missing or unreadable: h2o answers 404 or 403 */
        if (errno == ENOSYS)
            no_openat2 = true; /* a race between workers here is harmless */
    }
    char real[PATH_MAX];
    bool inside = inside_root_by_realpath(rs, rt->conf->u.static_.dir, rel, real);
    *have_st = inside && real[0] && stat(real, st) == 0;
    return inside;
}

/* A plain GET or HEAD of a regular file, sent with sendfile: the common
 * case, done here with the headers h2o's file handler would send
 * (Content-Type, Last-Modified, ETag, Accept-Ranges). Ranges, conditional
 * requests, directories, dynamic types and connections that cannot take
 * sendfile (TLS, HTTP/2, an on_response hook) go to h2o's handler. True
 * when the response is under way (fd taken). */
static bool send_file_fast(h2o_req_t *req, const struct vg_route_rt *rt, h2o_iovec_t rel, int fd, const struct stat *st)
{
    static const h2o_token_t *const conditional[] = {H2O_TOKEN_RANGE,         H2O_TOKEN_IF_RANGE,
                                                     H2O_TOKEN_IF_NONE_MATCH, H2O_TOKEN_IF_MODIFIED_SINCE,
                                                     H2O_TOKEN_IF_MATCH,      H2O_TOKEN_IF_UNMODIFIED_SINCE};
    if (!S_ISREG(st->st_mode))
        return false;
    for (size_t i = 0; i < sizeof(conditional) / sizeof(conditional[0]); i++)
        if (h2o_find_header(&req->headers, conditional[i], -1) != -1)
            return false;
    const char *slash = memrchr(rel.base, '/', rel.len), *base = slash ? slash + 1 : rel.base;
    const char *dot = memrchr(base, '.', (size_t)(rel.base + rel.len - base));
    h2o_mimemap_type_t *type =
        dot ? h2o_mimemap_get_type_by_extension(rt->pathconf.mimemap,
                                                h2o_iovec_init(dot + 1, (size_t)(rel.base + rel.len - dot - 1)))
            : h2o_mimemap_get_default_type(rt->pathconf.mimemap);
    if (type->type != H2O_MIMEMAP_TYPE_MIMETYPE)
        return false;
    char *lm = h2o_mem_alloc_pool(&req->pool, H2O_TIMESTR_RFC1123_LEN + 1), *etag = h2o_mem_alloc_pool(&req->pool, 40);
    struct tm gmt;
    gmtime_r(&st->st_mtime, &gmt);
    h2o_time2str_rfc1123(lm, &gmt);
    int n = snprintf(etag, 40, "\"%08x-%zx\"", (unsigned)st->st_mtime, (size_t)st->st_size); /* h2o's form */
    req->res.status = 200;
    req->res.reason = "OK";
    h2o_headers_t saved = req->res.headers;
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, type->data.mimetype.base,
                   type->data.mimetype.len);
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_LAST_MODIFIED, NULL, lm, H2O_TIMESTR_RFC1123_LEN);
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ETAG, NULL, etag, (size_t)n);
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ACCEPT_RANGES, NULL, H2O_STRLIT("bytes"));
    if (vg_http_send_file(req, fd, (size_t)st->st_size))
        return true;
    req->res.headers = saved;
    req->res.status = 0;
    req->res.reason = NULL;
    return false;
}

/* h2o compares If-None-Match as one opaque string; RFC 9110 13.1.2 wants a
 * list and "*", compared weakly. When the list names the file's current
 * entity tag (h2o's format: mtime-size in hex) or is "*", the header is
 * reduced to that tag so h2o answers 304. */
static void normalize_if_none_match(h2o_req_t *req, const struct stat *sp, bool have_st)
{
    ssize_t i = h2o_find_header(&req->headers, H2O_TOKEN_IF_NONE_MATCH, -1);
    if (i < 0 || !have_st || !S_ISREG(sp->st_mode))
        return;
    struct stat st = *sp;
    h2o_iovec_t v = req->headers.entries[i].value;
    char *etag = h2o_mem_alloc_pool(&req->pool, 40);
    int n = snprintf(etag, 40, "\"%08x-%zx\"", (unsigned)st.st_mtime, (size_t)st.st_size);
    bool match = false;
    size_t pos = 0;
    while (pos < v.len && !match) {
        while (pos < v.len && (v.base[pos] == ' ' || v.base[pos] == '\t' || v.base[pos] == ','))
            pos++;
        size_t start = pos;
        while (pos < v.len && v.base[pos] != ',')
            pos++;
        size_t stop = pos;
        while (stop > start && (v.base[stop - 1] == ' ' || v.base[stop - 1] == '\t'))
            stop--;
        if (stop - start >= 2 && v.base[start] == 'W' && v.base[start + 1] == '/')
            start += 2; /* weak comparison */
        size_t len = stop - start;
        match =
            (len == 1 && v.base[start] == '*') || (len == (size_t)n && memcmp(v.base + start, etag, (size_t)n) == 0);
    }
    if (match)
        req->headers.entries[i].value = h2o_iovec_init(etag, (size_t)n);
}

static void do_static(struct reqstate *rs)
{
    h2o_req_t *req = rs->req;
    struct vg_route_rt *rt = rs->route;
    h2o_iovec_t p = req->path_normalized;
    if (!h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET")) &&
        !h2o_memis(req->method.base, req->method.len, H2O_STRLIT("HEAD"))) {
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ALLOW, NULL, H2O_STRLIT("GET, HEAD"));
        h2o_send_error_405(req, "Method Not Allowed", "method not allowed", H2O_SEND_ERROR_KEEP_HEADERS);
        return;
    }
    if (p.len == rt->mount_len) { /* "/assets" -> "/assets/" so relative links work */
        h2o_iovec_t dest = h2o_concat(&req->pool, p, h2o_iovec_init(H2O_STRLIT("/")));
        h2o_send_redirect(req, 301, "Moved Permanently", dest.base, dest.len);
        return;
    }
    h2o_iovec_t rel = h2o_iovec_init(p.base + rt->mount_len + 1, p.len - rt->mount_len - 1);
    struct stat st;
    bool have_st;
    int fd;
    if (!inside_root(rs, rt, rel, &st, &have_st, &fd)) {
        reject(rs, 403, "Forbidden", "path resolves outside the static root");
        return;
    }
    if (fd >= 0) {
        if (have_st && send_file_fast(req, rt, rel, fd, &st))
            return;
        close(fd);
    }
    normalize_if_none_match(req, &st, have_st);
    if (rt->file->on_req(rt->file, req) != 0)
        h2o_send_error_404(req, "Not Found", "not found", 0);
}

static h2o_iovec_t cookie_value(h2o_req_t *req, const char *name)
{
    size_t nl = strlen(name);
    for (ssize_t i = -1; (i = h2o_find_header(&req->headers, H2O_TOKEN_COOKIE, i)) != -1;) {
        h2o_iovec_t v = req->headers.entries[i].value;
        const char *p = v.base, *end = v.base + v.len;
        while (p < end) {
            while (p < end && (*p == ' ' || *p == ';'))
                p++;
            const char *semi = memchr(p, ';', (size_t)(end - p));
            const char *stop = semi ? semi : end;
            if ((size_t)(stop - p) > nl && memcmp(p, name, nl) == 0 && p[nl] == '=')
                return h2o_iovec_init(p + nl + 1, (size_t)(stop - p - nl - 1));
            p = stop;
        }
    }
    return h2o_iovec_init(NULL, 0);
}

static h2o_iovec_t client_ip(h2o_req_t *req)
{
    return vg_http_peer_ip(req, h2o_mem_alloc_pool(&req->pool, VG_HTTP_PEER_MAX));
}

static h2o_iovec_t hash_key(h2o_req_t *req, const struct vg_conf_origin *o)
{
    switch (o->hash_on) {
    case VG_CONF_HASH_CLIENT_IP:
        return client_ip(req);
    case VG_CONF_HASH_HEADER: {
        /* h2o keeps header names lower-case; the manifest may not */
        size_t n = strlen(o->hash_name);
        char *lc = h2o_mem_alloc_pool(&req->pool, n);
        for (size_t k = 0; k < n; k++)
            lc[k] = (char)tolower((unsigned char)o->hash_name[k]);
        ssize_t i = h2o_find_header_by_str(&req->headers, lc, n, -1);
        return i >= 0 ? req->headers.entries[i].value : h2o_iovec_init(NULL, 0);
    }
    case VG_CONF_HASH_COOKIE:
        return cookie_value(req, o->hash_name);
    }
    return h2o_iovec_init(NULL, 0);
}

/* RFC 7239 Forwarded, next to the X-Forwarded-* headers the forwarder adds. */
static void add_forwarded(h2o_req_t *req)
{
    h2o_iovec_t ip = client_ip(req);
    bool v6 = memchr(ip.base, ':', ip.len) != NULL;
    char *buf = h2o_mem_alloc_pool(&req->pool, ip.len + req->authority.len + 40);
    int n = sprintf(buf, v6 ? "for=\"[%.*s]\";proto=%s;host=\"%.*s\"" : "for=%.*s;proto=%s;host=\"%.*s\"", (int)ip.len,
                    ip.base, req->scheme == &H2O_URL_SCHEME_HTTPS ? "https" : "http", (int)req->authority.len,
                    req->authority.base);
    h2o_add_header_by_str(&req->pool, &req->headers, H2O_STRLIT("forwarded"), 0, NULL, buf, (size_t)n);
}

/* The access log names the server of the last attempt; the trace gets an
 * "upstream" span per attempt with its phases under it. */
static void on_upstream_event(void *data, enum vg_proxy_event ev, int server)
{
    struct reqstate *rs = data;
    struct vg_trace *t = rs->trace;
    if (ev == VG_PROXY_ATTEMPT)
        rs->server = server;
    if (!vg_trace_recording(t))
        return;
    switch (ev) {
    case VG_PROXY_ATTEMPT: {
        if (rs->sp_upstream != VG_SPAN_NONE) { /* the previous attempt failed: this is a retry */
            vg_trace_fail(t, rs->sp_upstream);
            vg_trace_end(t, rs->sp_phase);
        }
        rs->sp_upstream = vg_trace_next(t, rs->sp_upstream, "upstream", 0);
        const char *a = rs->origin->authority[server];
        vg_trace_detail(t, rs->sp_upstream, a, strlen(a));
        rs->sp_phase = vg_trace_add(t, "upstream_connect", rs->sp_upstream, vg_trace_span_start(t, rs->sp_upstream), 0);
        return;
    }
    case VG_PROXY_CONNECTED:
        rs->sp_phase = vg_trace_next(t, rs->sp_phase, "upstream_first_byte", rs->sp_upstream);
        return;
    case VG_PROXY_HEAD:
        rs->sp_phase = vg_trace_next(t, rs->sp_phase, "upstream_body", rs->sp_upstream);
        return;
    case VG_PROXY_END: {
        uint64_t now = vg_trace_clock();
        vg_trace_end_at(t, rs->sp_phase, now);
        vg_trace_end_at(t, rs->sp_upstream, now);
        rs->sp_phase = VG_SPAN_NONE;
        return;
    }
    }
}

static void do_proxy(struct reqstate *rs, size_t app_idx)
{
    h2o_req_t *req = rs->req;
    const struct vg_conf_route *r = rs->route->conf;
    rs->origin = &rs->app->origins[r->u.proxy.origin];
    rs->worigin = &rs->site->workers[rs->worker->id].origins[app_idx][r->u.proxy.origin];
    const struct vg_conf_origin *o = rs->origin->conf;
    h2o_iovec_t key = o->balance == VG_CONF_BALANCE_HASH ? hash_key(req, o) : h2o_iovec_init(NULL, 0);

    h2o_iovec_t path = req->path; /* as received (with query), minus strip_prefix */
    const char *strip = r->u.proxy.strip_prefix;
    if (strip) {
        size_t sl = strlen(strip);
        if (path.len >= sl && memcmp(path.base, strip, sl) == 0) {
            path.base += sl;
            path.len -= sl;
            if (path.len == 0 || path.base[0] != '/') /* "/api?q" -> "/?q" */
                path = h2o_concat(&req->pool, h2o_iovec_init(H2O_STRLIT("/")), path);
        }
    }
    add_forwarded(req);
    struct vg_proxy_target t = {
        .conf = o,
        .state = rs->origin->state,
        .balancer = rs->worigin->balancer,
        .pools = rs->worigin->pools,
        .timers = &rs->worigin->timers,
        .authority = rs->origin->authority,
        .app = rs->app->conf->name,
        .body_limit = rs->app->conf->limits.body_size,
        .traceparent = vg__node_trace_header(rs->trace, 0, req), /* the origin's parent: this request */
    };
    /* the forwarder's state goes on the pool after rs: it is torn down
     * first, while the site it points into is still held */
    if (rs->route->cache.enabled && rs->worker->node->cache) {
        struct vg__node_cache_fwd fwd = {.t = t,
                                         .path = path,
                                         .hash_key = key,
                                         .on_event = on_upstream_event,
                                         .event_data = rs,
                                         .trace = rs->trace,
                                         .trace_parent = 0};
        vg__node_cache_proxy(rs->worker, rs->site, req,
                             h2o_iovec_init(rs->app->conf->name, strlen(rs->app->conf->name)), rs->app->cache_counters,
                             &rs->route->cache, &fwd);
        return;
    }
    vg_proxy_forward(req, &t, path, key, on_upstream_event, rs);
}

/* ---- Lua ------------------------------------------------------------------------- */

/* A Lua call's span: ended when the call is; a 5xx it answers marks it
 * failed (the trace is then kept whatever the sampling said). */
static void lua_span_begin(struct reqstate *rs, const char *name)
{
    rs->sp_lua = vg_trace_begin(rs->trace, name, 0);
    vg_trace_set_current(rs->trace, rs->sp_lua);                           /* its kv lookups nest under it */
    vg__node_trace_propagate(rs->trace, rs->sp_lua, rs->req, &rs->tp_hdr); /* what verge.publish/request pass on */
}

static void lua_span_end(struct reqstate *rs)
{
    if (rs->req->res.status >= 500)
        vg_trace_fail(rs->trace, rs->sp_lua);
    vg_trace_end(rs->trace, rs->sp_lua);
    vg_trace_set_current(rs->trace, 0);
    rs->sp_lua = VG_SPAN_NONE;
}

static struct vg_fn_app *fn_of(struct reqstate *rs, size_t app_idx)
{
    return rs->site->workers[rs->worker->id].fn[app_idx];
}

static void on_handler_done(void *data, enum vg_fn_outcome o)
{
    struct reqstate *rs = data;
    lua_span_end(rs);
    if (o == VG_FN_PASS)
        h2o_send_error_404(rs->req, "Not Found", "the handler returned no response", 0);
}

static void do_handler(struct reqstate *rs, size_t app_idx, int route)
{
    struct vg_fn_app *fa = fn_of(rs, app_idx);
    if (!fa) {
        reject(rs, 503, "Service Unavailable", "the app's Lua code is not loaded on this worker");
        return;
    }
    lua_span_begin(rs, "handler");
    vg_fn_run(fa, route, rs->req, rs->reqid, &rs->fn, on_handler_done, rs);
}

/* ---- entry ------------------------------------------------------------------------ */

static bool check_limits(struct reqstate *rs)
{
    h2o_req_t *req = rs->req;
    const struct vg_conf_limits *lim = &rs->app->conf->limits;
    if (vg_http_req_header_bytes(req) > lim->header_size) {
        reject(rs, 431, "Request Header Fields Too Large", "request headers exceed limits.header_size");
        return false;
    }
    size_t streamed = vg_http_body_is_streamed(req) ? vg_http_body_length(req) : 0; /* SIZE_MAX: chunked */
    if ((req->entity.base && req->entity.len > lim->body_size) || (streamed != SIZE_MAX && streamed > lim->body_size)) {
        reject(rs, 413, "Payload Too Large", "request body exceeds limits.body_size");
        return false;
    }
    return true;
}

static void dispatch(struct reqstate *rs, size_t app_idx)
{
    h2o_req_t *req = rs->req;
    uint32_t m = vg_conf_method_from_str(req->method.base, req->method.len);
    uint32_t allow;
    int r = vg_http_route_find(rs->app->conf, req->authority.base, req->authority.len, req->path_normalized.base,
                               req->path_normalized.len, m, &allow);
    if (vg_trace_recording(rs->trace)) { /* a lookup of ~100 ns: a mark (one clock reading), not a measured span */
        uint64_t now = vg_trace_clock();
        vg_trace_add(rs->trace, "route", 0, now, now);
    }
    if (r == VG_HTTP_ROUTE_NONE) {
        h2o_send_error_404(req, "Not Found", "no route matches", 0);
        return;
    }
    if (r == VG_HTTP_ROUTE_BAD_METHOD) {
        char *list = h2o_mem_alloc_pool(&req->pool, 64);
        vg_http_methods_format(allow, list, 64);
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ALLOW, NULL, list, strlen(list));
        h2o_send_error_405(req, "Method Not Allowed", "method not allowed on this route", H2O_SEND_ERROR_KEEP_HEADERS);
        return;
    }
    rs->route = &rs->app->routes[r];
    switch (rs->route->conf->action) {
    case VG_CONF_ACTION_RESPOND:
        do_respond(req, rs->route->conf);
        return;
    case VG_CONF_ACTION_REDIRECT:
        do_redirect(req, rs->route->conf);
        return;
    case VG_CONF_ACTION_STATIC:
        do_static(rs);
        return;
    case VG_CONF_ACTION_HANDLER:
        do_handler(rs, app_idx, r);
        return;
    case VG_CONF_ACTION_PROXY:
        do_proxy(rs, app_idx);
        return;
    }
    VG_ASSERT(!"unknown route action");
}

static void on_hook_done(void *data, enum vg_fn_outcome o)
{
    struct reqstate *rs = data;
    lua_span_end(rs);
    if (o == VG_FN_PASS)
        dispatch(rs, rs->app_idx);
}

/* The app's on_request hook runs before any route: it may answer, or
 * return nil to let the route's action run. */
static void run_on_request(struct reqstate *rs)
{
    if (!rs->app->conf->on_request.file) {
        dispatch(rs, rs->app_idx);
        return;
    }
    struct vg_fn_app *fa = fn_of(rs, rs->app_idx);
    if (!fa) {
        reject(rs, 503, "Service Unavailable", "the app's Lua code is not loaded on this worker");
        return;
    }
    lua_span_begin(rs, "on_request");
    vg_fn_run(fa, VG_FN_ON_REQUEST, rs->req, rs->reqid, &rs->fn, on_hook_done, rs);
}

/* "GET http://host/path HTTP/1.1" (RFC 9112 3.2.2): h2o 2.2 keeps the
 * whole URI as the path; take the authority and path from it instead. */
static int absolute_form(h2o_req_t *req)
{
    h2o_iovec_t p = req->input.path;
    if (!(p.len > 7 && (h2o_memis(p.base, 7, H2O_STRLIT("http://")) || h2o_memis(p.base, 8, H2O_STRLIT("https://")))))
        return 0;
    h2o_url_t url;
    if (h2o_url_parse(p.base, p.len, &url) != 0)
        return -1;
    req->authority = url.authority;
    req->path = url.path;
    req->path_normalized =
        h2o_url_normalize_path(&req->pool, url.path.base, url.path.len, &req->query_at, &req->norm_indexes);
    return 0;
}

static int on_req(h2o_handler_t *self, h2o_req_t *req)
{
    struct vg_worker *w = vg__node_worker_of(req->conn->ctx);
    if (vg__node_delay(w, self, req))
        return 0; /* --add-latency: comes back here later */
    struct vg_site *site = w->site;
    struct reqstate *rs = h2o_mem_alloc_shared(&req->pool, sizeof(*rs), on_request_end);
    *rs = (struct reqstate){.req = req,
                            .worker = w,
                            .site = site,
                            .server = -1,
                            .start_us = vg_now_us(),
                            .sp_lua = VG_SPAN_NONE,
                            .sp_upstream = VG_SPAN_NONE,
                            .sp_phase = VG_SPAN_NONE};
    site->workers[w->id].inflight++;
    assign_request_id(rs);
    rs->trace = vg__node_trace_start(w, req, &rs->tp_hdr);

    const char *why;
    /* HTTP/1 heads were checked raw, before parsing (http1.c: the guard and
     * picohttpparser's grammar); HTTP/2's come out of HPACK unchecked */
    int bad = req->version >= 0x200 ? vg_http_req_check(req, &why) : 0;
    /* without a Host header h2o lends the default hostconf's name */
    bool no_host = req->input.authority.base == w->node->hostconf->authority.hostport.base;
    if (!bad && req->version >= 0x101 && req->version < 0x200 && no_host) {
        bad = 400; /* RFC 9112 3.2: a server MUST answer 400 to HTTP/1.1 without Host */
        why = "HTTP/1.1 request without Host";
    }
    if (!bad && absolute_form(req) != 0) {
        bad = 400;
        why = "invalid absolute-form request target";
    }
    if (!bad && memchr(req->path_normalized.base, '\0', req->path_normalized.len)) {
        bad = 400; /* %00 would cut a file name short */
        why = "NUL byte in path";
    }
    if (bad) {
        reject(rs, bad, "Bad Request", why);
        return 0;
    }
    if (internal_endpoint(rs))
        return 0;
    int a = vg_http_app_select(site->confs, site->n_apps, req->authority.base, req->authority.len);
    if (a < 0) {
        reject(rs, 404, "Not Found", "no app serves this host");
        return 0;
    }
    rs->app = &site->apps[a];
    rs->app_idx = (size_t)a;
    struct vg_fn_app *fa = site->workers[w->id].fn[a];
    if (vg_fn_has_on_response(fa))
        vg_fn_on_response(fa, req, rs->reqid, &rs->fn);
    if (check_limits(rs))
        run_on_request(rs);
    return 0;
}

/* Response filter: every response names its request id. (A proxied
 * response keeps its origin's Date: http1.c and http2.c add one only
 * when there is none.) */
static void on_setup_ostream(h2o_filter_t *self, h2o_req_t *req, h2o_ostream_t **slot)
{
    ssize_t i = h2o_find_header_by_str(&req->headers, hdr_reqid.base, hdr_reqid.len, -1);
    if (i >= 0)
        h2o_set_header_by_str(&req->pool, &req->res.headers, hdr_reqid.base, hdr_reqid.len, 0,
                              req->headers.entries[i].value.base, req->headers.entries[i].value.len, 1);
    struct vg_worker *w = vg__node_worker_of(req->conn->ctx);
    struct vg_trace *t = vg_http_req_trace(req);
    vg__node_trace_timing(w, t, req);
    vg_trace_begin(t, "send", 0); /* the response going out: ends with the request */
    h2o_setup_next_ostream(req, slot);
}

void vg__node_handler_register(struct vg_node *node)
{
    h2o_handler_t *h = h2o_create_handler(node->root, sizeof(*h));
    h->on_req = on_req;
    h2o_filter_t *f = h2o_create_filter(node->root, sizeof(*f));
    f->on_setup_ostream = on_setup_ostream;
}
