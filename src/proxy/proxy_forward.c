/* Forwarding: one request to one origin over h2o's HTTP/1 client, with
 * server choice and retries, our own connect / read / total timers, and the
 * response streamed back with backpressure.
 *
 * h2o 2.2.5's own proxy cannot retry on another server, answers 502 for
 * timeouts, has one I/O timeout for everything and reads the origin as fast
 * as it sends, whatever the client takes. We keep h2o's client (connecting
 * through the keep-alive pool, writing the request, parsing the response,
 * decoding chunked bodies) and own everything around it.
 *
 * A forward is one struct fwd on the request pool:
 *
 *   start_attempt -> on_connect -> (request out) -> on_head -> on_body ... end
 *         ^              |                            |
 *         +--- retry ----+----------------------------+   (once the head is in,
 *                                                           errors abort the stream)
 *
 * What keeps it memory safe:
 *  - f->client is non-NULL exactly while h2o's client object lives. h2o frees
 *    it right after calling our connect callback with an error, the head
 *    callback with an error or end of stream, the body callback with any
 *    errstr, or a callback that returns NULL: each of those paths clears
 *    f->client first. Every other way out (our timers, the generator's stop,
 *    the pool destructor) cancels it, which also keeps its socket out of the
 *    keep-alive pool.
 *  - h2o may call back synchronously from inside
 *    h2o_http1client_connect_with_pool (a pooled socket is ready at once; a
 *    socket error fails at once and may start the next attempt), so nothing
 *    follows that call.
 *  - f->done is set before the response ends (final h2o_send, error
 *    response) and when h2o stops the generator; nothing is sent after it.
 *  - an attempt acquires the balancer when it starts; end_attempt releases
 *    it exactly once (f->server >= 0 in between). */
#include "proxy_int.h"

#include <netdb.h>
#include <string.h>
#include <sys/socket.h>

/* Reading from the origin stops when this much of its body waits in the
 * receive buffer, and restarts once that buffer has been handed to the
 * client. A request holds that buffer plus the one in flight to the client,
 * each at most this plus one read (bounded by UPSTREAM_RCVBUF below). */
#define READ_HIGH_WATER (64 * 1024)

/* h2o's evloop reads a readable socket until it runs dry, so what bounds one
 * read after a pause is the kernel's receive buffer; left to autotuning it
 * grows towards tcp_rmem's maximum (6-32 MiB), which a slow client would
 * then pull into our memory in one go. Linux doubles the value for its
 * bookkeeping. The price: one origin connection cannot carry more than
 * about 256 KiB per round trip (plenty near the origin, a limit across
 * continents). */
#define UPSTREAM_RCVBUF (128 * 1024)

enum fail_kind {
    FAIL_CONNECT,     /* nothing was sent: any method may be retried */
    FAIL_NO_RESPONSE, /* the request went out, no response byte came back: idempotent ones may be retried */
    FAIL_RESPONSE,    /* (part of) a response came and was bad: never retried */
};

enum outcome { OUTCOME_OK, OUTCOME_FAIL, OUTCOME_UNKNOWN };

enum start { STARTED, NO_SERVER, BAD_REQUEST };

struct fwd {
    h2o_generator_t gen; /* the response, once the head is in */
    h2o_req_t *req;
    struct vg_proxy_target t;
    h2o_iovec_t path, key;
    vg_proxy_attempt_fn on_attempt;
    void *data;
    h2o_iovec_t client_ip;
    h2o_iovec_t reqbufs[2]; /* head, body */
    size_t n_reqbufs;
    bool is_head, idempotent;
    /* attempts */
    h2o_http1client_t *client;
    int server;      /* the running attempt's server, -1 between attempts */
    int last_server; /* for logs */
    bool reported;   /* the running attempt's outcome went to the health state already */
    uint64_t tried;  /* balancer mask */
    unsigned attempts;
    uint64_t pick_now_ms;
    h2o_timeout_entry_t connect_te, read_te, total_te;
    /* the response */
    bool responding;      /* h2o_start_response done */
    bool done;            /* the response ended or was stopped: send nothing more */
    bool upstream_end;    /* the origin is done and f->client gone; f->rest holds the tail */
    bool upstream_err;    /* ... not cleanly: end the stream with an error */
    bool paused;          /* reading from the origin is stopped (backpressure) */
    bool chunked;         /* the origin's body is chunked */
    h2o_socket_cb reader; /* h2o's body reader, to restart it */
    h2o_doublebuffer_t sending;
    h2o_buffer_t *rest;
};

static h2o_http1client_head_cb on_connect(h2o_http1client_t *client, const char *errstr, h2o_iovec_t **reqbufs,
                                          size_t *reqbufcnt, int *method_is_head);
static void respond_error(struct fwd *f, int status, const char *why);

/* ---- timers ------------------------------------------------------------------ */

void vg_proxy_timers_init(struct vg_proxy_timers *t, h2o_loop_t *loop, const struct vg_conf_origin *o)
{
    uint64_t longest = o->total_timeout_ms;
    if (o->read_timeout_ms > longest)
        longest = o->read_timeout_ms;
    if (o->connect_timeout_ms > longest)
        longest = o->connect_timeout_ms;
    h2o_timeout_init(loop, &t->connect, o->connect_timeout_ms);
    h2o_timeout_init(loop, &t->read, o->read_timeout_ms);
    h2o_timeout_init(loop, &t->total, o->total_timeout_ms);
    h2o_timeout_init(loop, &t->io, longest + 1000); /* ours always fire first */
}

void vg_proxy_timers_dispose(struct vg_proxy_timers *t, h2o_loop_t *loop)
{
    h2o_timeout_dispose(loop, &t->connect);
    h2o_timeout_dispose(loop, &t->read);
    h2o_timeout_dispose(loop, &t->total);
    h2o_timeout_dispose(loop, &t->io);
}

static void unarm(h2o_timeout_entry_t *e)
{
    if (h2o_timeout_is_linked(e))
        h2o_timeout_unlink(e);
}

static void arm(struct fwd *f, h2o_timeout_t *to, h2o_timeout_entry_t *e)
{
    unarm(e);
    h2o_timeout_link(f->t.client->loop, to, e);
}

static void stop_timers(struct fwd *f)
{
    unarm(&f->connect_te);
    unarm(&f->read_te);
    unarm(&f->total_te);
}

/* ---- helpers ------------------------------------------------------------------ */

static bool is_idempotent(h2o_iovec_t m)
{
    static const char *const names[] = {"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"};
    for (size_t i = 0; i < VG_ARRAY_LEN(names); i++)
        if (h2o_memis(m.base, m.len, names[i], strlen(names[i])))
            return true;
    return false;
}

static h2o_iovec_t peer_ip(h2o_req_t *req)
{
    struct sockaddr_storage ss;
    socklen_t len = req->conn->callbacks->get_peername(req->conn, (struct sockaddr *)&ss);
    if (len == 0)
        return h2o_iovec_init(NULL, 0);
    char *buf = h2o_mem_alloc_pool(&req->pool, NI_MAXHOST);
    size_t n = h2o_socket_getnumerichost((struct sockaddr *)&ss, len, buf);
    return n == SIZE_MAX ? h2o_iovec_init(NULL, 0) : h2o_iovec_init(buf, n);
}

static void log_failure(struct fwd *f, const char *msg, const char *why)
{
    h2o_req_t *req = f->req;
    char rid[72] = "", tries[16];
    ssize_t i = h2o_find_header_by_str(&req->headers, H2O_STRLIT("x-request-id"), -1);
    if (i >= 0) {
        h2o_iovec_t v = req->headers.entries[i].value;
        snprintf(rid, sizeof(rid), "%.*s", (int)(v.len > 64 ? 64 : v.len), v.base);
    }
    snprintf(tries, sizeof(tries), "%u", f->attempts);
    const char *server = f->last_server >= 0 ? f->t.conf->servers[f->last_server].url : "";
    vg_log(VG_LOG_WARN, msg, "app", f->t.app ? f->t.app : "", "origin", f->t.conf->name, "server", server, "reason",
           why, "attempts", tries, "request_id", rid, NULL);
}

/* Cancels the running h2o client, if any: its socket is closed, not pooled. */
static void cancel_client(struct fwd *f)
{
    if (f->client) {
        h2o_http1client_cancel(f->client);
        f->client = NULL;
    }
}

/* Ends the running attempt: reports its outcome (once) and releases the balancer. */
static void end_attempt(struct fwd *f, enum outcome o)
{
    if (f->server < 0)
        return;
    if (!f->reported && o != OUTCOME_UNKNOWN)
        vg_proxy_origin_state_report(f->t.state, (size_t)f->server, o == OUTCOME_OK, vg_now_ms());
    vg_proxy_balancer_release(f->t.balancer, (size_t)f->server);
    f->server = -1;
}

/* ---- request head ------------------------------------------------------------- */

bool vg__proxy_hop_header(const char *name, size_t len)
{
    static const char *const hop[] = {"connection", "keep-alive",         "proxy-connection",
                                      "te",         "transfer-encoding",  "upgrade",
                                      "trailer",    "proxy-authenticate", "proxy-authorization"};
    for (size_t i = 0; i < VG_ARRAY_LEN(hop); i++)
        if (h2o_lcstris(name, len, hop[i], strlen(hop[i])))
            return true;
    return false;
}

static bool same_nocase(const char *a, size_t alen, const char *b, size_t blen)
{
    if (alen != blen)
        return false;
    for (size_t i = 0; i < alen; i++)
        if (h2o_tolower(a[i]) != h2o_tolower(b[i]))
            return false;
    return true;
}

bool vg__proxy_list_has(h2o_iovec_t list, const char *name, size_t len)
{
    const char *p = list.base, *end = list.base + list.len;
    while (p < end) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *e = comma ? comma : end;
        const char *b = p;
        while (b < e && (*b == ' ' || *b == '\t'))
            b++;
        const char *q = e;
        while (q > b && (q[-1] == ' ' || q[-1] == '\t'))
            q--;
        if (same_nocase(b, (size_t)(q - b), name, len))
            return true;
        p = e + 1;
    }
    return false;
}

static bool unsafe_bytes(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (s[i] == '\r' || s[i] == '\n' || s[i] == '\0')
            return true;
    return false;
}

static bool unsafe_name(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] <= ' ' || s[i] == ':' || s[i] == 0x7f)
            return true;
    return len == 0;
}

static bool named_in_request_connection(const h2o_headers_t *hs, const h2o_iovec_t *name)
{
    for (size_t i = 0; i < hs->size; i++) {
        const h2o_header_t *h = &hs->entries[i];
        if (h2o_lcstris(h->name->base, h->name->len, H2O_STRLIT("connection")) &&
            vg__proxy_list_has(h->value, name->base, name->len))
            return true;
    }
    return false;
}

/* What happens to a client header on its way to the origin. */
enum req_hdr { HDR_KEEP, HDR_DROP, HDR_COOKIE, HDR_XFF, HDR_VIA };

static enum req_hdr classify(const h2o_headers_t *hs, const h2o_iovec_t *name)
{
    static const char *const ours[] = {"host", "content-length", "expect", "x-forwarded-proto"};
    if (vg__proxy_hop_header(name->base, name->len))
        return HDR_DROP;
    for (size_t i = 0; i < VG_ARRAY_LEN(ours); i++)
        if (h2o_lcstris(name->base, name->len, ours[i], strlen(ours[i])))
            return HDR_DROP;
    if (h2o_lcstris(name->base, name->len, H2O_STRLIT("cookie")))
        return HDR_COOKIE;
    if (h2o_lcstris(name->base, name->len, H2O_STRLIT("x-forwarded-for")))
        return HDR_XFF;
    if (h2o_lcstris(name->base, name->len, H2O_STRLIT("via")))
        return HDR_VIA;
    return named_in_request_connection(hs, name) ? HDR_DROP : HDR_KEEP;
}

struct out {
    char *buf;
    size_t len, cap;
};

static void put(struct out *o, const char *s, size_t n)
{
    VG_ASSERT(o->len + n <= o->cap); /* cap is computed from the same inputs */
    memcpy(o->buf + o->len, s, n);
    o->len += n;
}

#define PUT_LIT(o, lit) put((o), (lit), sizeof(lit) - 1)

/* Writes "name: v1<sep>v2...[<sep>last]\r\n" for every header of kind k (and
 * `last` when given); nothing when there is nothing to write. */
static void put_merged(struct out *o, const h2o_headers_t *hs, enum req_hdr k, const char *name, const char *sep,
                       h2o_iovec_t last)
{
    bool any = false;
    for (size_t i = 0; i < hs->size; i++) {
        const h2o_header_t *h = &hs->entries[i];
        if (classify(hs, h->name) != k)
            continue;
        if (!any) {
            put(o, name, strlen(name));
            PUT_LIT(o, ": ");
        } else {
            put(o, sep, strlen(sep));
        }
        put(o, h->value.base, h->value.len);
        any = true;
    }
    if (last.len) {
        if (!any) {
            put(o, name, strlen(name));
            PUT_LIT(o, ": ");
        } else {
            put(o, sep, strlen(sep));
        }
        put(o, last.base, last.len);
        any = true;
    }
    if (any)
        PUT_LIT(o, "\r\n");
}

int vg__proxy_head_build(h2o_mem_pool_t *pool, const struct vg__proxy_head *in, h2o_iovec_t *out)
{
    const h2o_headers_t *hs = in->headers;
    if (unsafe_bytes(in->method.base, in->method.len) || unsafe_bytes(in->path.base, in->path.len) ||
        unsafe_bytes(in->host.base, in->host.len) || unsafe_bytes(in->client_ip.base, in->client_ip.len))
        return VG_EINVAL;
    /* every header is written at most once, with at most 4 bytes around it */
    size_t cap = in->method.len + in->path.len + in->host.len + in->client_ip.len + in->proto.len + 256;
    for (size_t i = 0; i < hs->size; i++) {
        const h2o_header_t *h = &hs->entries[i];
        if (unsafe_name(h->name->base, h->name->len) || unsafe_bytes(h->value.base, h->value.len))
            return VG_EINVAL;
        cap += h->name->len + h->value.len + 4;
    }
    struct out o = {.buf = h2o_mem_alloc_pool(pool, cap), .cap = cap};
    put(&o, in->method.base, in->method.len);
    PUT_LIT(&o, " ");
    put(&o, in->path.base, in->path.len);
    PUT_LIT(&o, " HTTP/1.1\r\nhost: ");
    put(&o, in->host.base, in->host.len);
    PUT_LIT(&o, "\r\nconnection: keep-alive\r\n");
    bool wants_length = h2o_memis(in->method.base, in->method.len, H2O_STRLIT("POST")) ||
                        h2o_memis(in->method.base, in->method.len, H2O_STRLIT("PUT")) ||
                        h2o_memis(in->method.base, in->method.len, H2O_STRLIT("PATCH"));
    if (in->has_body || wants_length) { /* a server may answer 411 to a POST without one */
        char cl[48];
        int n = snprintf(cl, sizeof(cl), "content-length: %zu\r\n", in->has_body ? in->body_len : 0);
        put(&o, cl, (size_t)n);
    }
    for (size_t i = 0; i < hs->size; i++) {
        const h2o_header_t *h = &hs->entries[i];
        if (classify(hs, h->name) != HDR_KEEP)
            continue;
        put(&o, h->orig_name ? h->orig_name : h->name->base, h->name->len);
        PUT_LIT(&o, ": ");
        put(&o, h->value.base, h->value.len);
        PUT_LIT(&o, "\r\n");
    }
    /* one Cookie line: HTTP/2 clients may split it, HTTP/1.1 wants one (RFC 6265 5.4) */
    put_merged(&o, hs, HDR_COOKIE, "cookie", "; ", h2o_iovec_init(NULL, 0));
    put_merged(&o, hs, HDR_XFF, "x-forwarded-for", ", ", in->client_ip);
    PUT_LIT(&o, "x-forwarded-proto: ");
    put(&o, in->proto.base, in->proto.len);
    PUT_LIT(&o, "\r\n");
    put_merged(&o, hs, HDR_VIA, "via", ", ", h2o_iovec_init(H2O_STRLIT("1.1 verge")));
    PUT_LIT(&o, "\r\n");
    *out = h2o_iovec_init(o.buf, o.len);
    return 0;
}

/* ---- attempts ----------------------------------------------------------------- */

static bool usable(void *ctx, size_t i)
{
    struct fwd *f = ctx;
    return vg_proxy_origin_state_usable(f->t.state, i, f->pick_now_ms);
}

static enum start start_attempt(struct fwd *f)
{
    h2o_req_t *req = f->req;
    VG_ASSERT(f->client == NULL && f->server < 0 && !f->done);
    f->pick_now_ms = vg_now_ms();
    int s = vg_proxy_balancer_pick(f->t.balancer, usable, f, f->tried, f->key.base, f->key.len);
    if (s < 0)
        return NO_SERVER;
    const char *auth = f->t.authority[s];
    struct vg__proxy_head h = {
        .method = req->method,
        .path = f->path,
        .host = f->t.conf->preserve_host ? req->authority : h2o_iovec_init(auth, strlen(auth)),
        .headers = &req->headers,
        .client_ip = f->client_ip,
        .proto = req->scheme->name,
        .has_body = req->entity.base != NULL,
        .body_len = req->entity.len,
    };
    if (vg__proxy_head_build(&req->pool, &h, &f->reqbufs[0]) != 0)
        return BAD_REQUEST;
    if (s < 64)
        f->tried |= (uint64_t)1 << s;
    f->attempts++;
    f->server = f->last_server = s;
    f->reported = false;
    vg_proxy_balancer_acquire(f->t.balancer, (size_t)s);
    if (f->on_attempt)
        f->on_attempt(f->data, s);
    arm(f, &f->t.timers->connect, &f->connect_te);
    h2o_http1client_connect_with_pool(&f->client, f, f->t.client, &f->t.pools[s], on_connect);
    return STARTED; /* the attempt may already have ended (and others started): touch nothing here */
}

/* The running attempt failed before a response head came (f->client is
 * already gone). Retries when the rules allow, else answers the client. */
static void attempt_failed(struct fwd *f, enum fail_kind kind, bool timeout, const char *why)
{
    VG_ASSERT(f->client == NULL);
    unarm(&f->connect_te);
    unarm(&f->read_te);
    end_attempt(f, OUTCOME_FAIL);
    bool may = kind == FAIL_CONNECT || (kind == FAIL_NO_RESPONSE && f->idempotent);
    if (may && f->attempts <= f->t.conf->retries) {
        vg_log(VG_LOG_DEBUG, "upstream attempt failed, retrying", "origin", f->t.conf->name, "server",
               f->t.conf->servers[f->last_server].url, "reason", why, NULL);
        if (start_attempt(f) == STARTED)
            return;
    }
    respond_error(f, timeout ? 504 : 502, why);
}

/* Answers with an error (no response head has gone out). */
static void respond_error(struct fwd *f, int status, const char *why)
{
    h2o_req_t *req = f->req;
    VG_ASSERT(!f->responding && !f->done && f->client == NULL && f->server < 0);
    stop_timers(f);
    f->done = true;
    log_failure(f, "upstream failed", why);
    if (status == 504)
        h2o_send_error_generic(req, 504, "Gateway Timeout", "upstream timed out\n", 0);
    else
        h2o_send_error_502(req, "Bad Gateway", "upstream unavailable\n", 0);
}

/* ---- response body ------------------------------------------------------------- */

/* Hands buffered body bytes to the client; ends the response when the origin
 * is done and everything went out. Only while nothing is in flight. */
static void do_send(struct fwd *f)
{
    if (f->done)
        return;
    VG_ASSERT(f->sending.bytes_inflight == 0);
    h2o_buffer_t **src = f->client ? &f->client->sock->input : &f->rest;
    h2o_iovec_t v = h2o_doublebuffer_prepare(&f->sending, src, SIZE_MAX);
    if (f->upstream_end && f->rest->size == 0 && v.len == f->sending.buf->size) {
        f->done = true; /* the request may go away once h2o has sent this: touch nothing after */
        h2o_send(f->req, &v, v.len ? 1 : 0, f->upstream_err ? H2O_SEND_STATE_ERROR : H2O_SEND_STATE_FINAL);
        return;
    }
    if (v.len)
        h2o_send(f->req, &v, 1, H2O_SEND_STATE_IN_PROGRESS);
}

/* Moves what the origin sent but the client has not got yet out of the
 * client's socket buffer, which goes away (or back to the pool) with it. */
static void take_tail(struct fwd *f)
{
    h2o_buffer_t *t = f->rest;
    VG_ASSERT(t->size == 0);
    f->rest = f->client->sock->input;
    f->client->sock->input = t;
}

/* The origin is done with this response (f->client is gone). err: why it
 * did not finish cleanly, or NULL. */
static void upstream_finished(struct fwd *f, const char *err, enum outcome o)
{
    VG_ASSERT(f->client == NULL);
    stop_timers(f);
    f->upstream_end = true;
    f->paused = false;
    end_attempt(f, o);
    if (err) {
        f->upstream_err = true;
        log_failure(f, "upstream failed", err);
    }
    if (f->sending.bytes_inflight == 0)
        do_send(f);
}

/* Ends the exchange with the origin mid-body (the head has gone out, so
 * the client gets a broken stream rather than an error status). */
static void abort_upstream(struct fwd *f, const char *why, enum outcome o)
{
    take_tail(f);
    cancel_client(f);
    upstream_finished(f, why, o);
}

static int on_body(h2o_http1client_t *client, const char *errstr)
{
    struct fwd *f = client->data;
    VG_ASSERT(client == f->client && !f->done);
    unarm(&f->read_te);
    if (errstr != NULL) {
        /* h2o takes a close right after a complete chunk for the end
         * (browsers forgive a missing last chunk); a proxy must not pass a
         * cut body on as whole. The real end comes with the bytes that held
         * the last chunk; a close comes with none. */
        if (errstr == h2o_http1client_error_is_eos && f->chunked && client->sock->bytes_read == 0)
            errstr = "origin closed the connection before the last chunk";
        take_tail(f);
        f->client = NULL; /* h2o closes (or pools) it when we return */
        if (errstr == h2o_http1client_error_is_eos)
            upstream_finished(f, NULL, OUTCOME_OK);
        else
            upstream_finished(f, errstr, OUTCOME_FAIL);
        return 0;
    }
    if (f->sending.bytes_inflight == 0)
        do_send(f);
    if (client->sock->input->size >= READ_HIGH_WATER) {
        /* backpressure: h2o's client has no call for this; stopping its
         * socket works because it only reads in this callback's caller,
         * which we restart with the same reader (2.2.5 keeps it in _cb) */
        f->reader = client->sock->_cb.read;
        h2o_socket_read_stop(client->sock);
        f->paused = true;
    } else {
        arm(f, &f->t.timers->read, &f->read_te);
    }
    return 0;
}

static void on_proceed(h2o_generator_t *gen, h2o_req_t *req)
{
    struct fwd *f = H2O_STRUCT_FROM_MEMBER(struct fwd, gen, gen);
    h2o_doublebuffer_consume(&f->sending);
    do_send(f);
    if (f->paused && f->client && f->client->sock->input->size < READ_HIGH_WATER) {
        f->paused = false;
        h2o_socket_read_start(f->client->sock, f->reader);
        arm(f, &f->t.timers->read, &f->read_te);
    }
}

/* The client went away mid-response. */
static void on_stop(h2o_generator_t *gen, h2o_req_t *req)
{
    struct fwd *f = H2O_STRUCT_FROM_MEMBER(struct fwd, gen, gen);
    f->done = true;
    stop_timers(f);
    cancel_client(f);
    end_attempt(f, OUTCOME_OK); /* the origin answered; a 5xx was reported already */
}

/* ---- response head ---------------------------------------------------------------- */

static bool named_by_connection(const h2o_header_t *hs, size_t n, const h2o_iovec_t *name)
{
    for (size_t i = 0; i < n; i++)
        if (h2o_lcstris(hs[i].name->base, hs[i].name->len, H2O_STRLIT("connection")) &&
            vg__proxy_list_has(hs[i].value, name->base, name->len))
            return true;
    return false;
}

/* Content-Length is h2o's to write (from res.content_length); so are Date
 * and Server, which h2o always adds (nginx hides the origin's too). */
static bool drop_from_response(const h2o_iovec_t *name)
{
    return h2o_memis(name->base, name->len, H2O_STRLIT("content-length")) ||
           h2o_memis(name->base, name->len, H2O_STRLIT("date")) ||
           h2o_memis(name->base, name->len, H2O_STRLIT("server"));
}

/* Copies the origin's head into req->res (h2o reuses its memory after the
 * callback). Returns why it cannot be forwarded, or NULL (req->res is only
 * written once the head is known to be good). */
static const char *copy_head(struct fwd *f, int status, h2o_iovec_t msg, const h2o_header_t *hs, size_t n,
                             size_t *declared)
{
    h2o_req_t *req = f->req;
    size_t clen = SIZE_MAX;
    bool chunked = false;
    if (status == 101)
        return "unexpected 101 response (no upgrade was asked for)";
    for (size_t i = 0; i < n; i++) {
        const h2o_iovec_t *name = hs[i].name;
        if (h2o_memis(name->base, name->len, H2O_STRLIT("content-length"))) {
            size_t v = h2o_strtosize(hs[i].value.base, hs[i].value.len);
            if (v == SIZE_MAX || (clen != SIZE_MAX && v != clen))
                return "invalid or conflicting content-length";
            clen = v;
        } else if (h2o_memis(name->base, name->len, H2O_STRLIT("transfer-encoding"))) {
            chunked = true; /* h2o's client decoded it, or refused the head */
        }
    }
    *declared = clen;
    f->chunked = chunked;
    req->res.status = status;
    req->res.reason = h2o_strdup(&req->pool, msg.base, msg.len).base;
    if (clen != SIZE_MAX && !chunked && status != 204 && status != 304)
        req->res.content_length = clen; /* h2o writes Content-Length itself */
    for (size_t i = 0; i < n; i++) {
        const h2o_iovec_t *name = hs[i].name;
        if (vg__proxy_hop_header(name->base, name->len) || drop_from_response(name) || named_by_connection(hs, n, name))
            continue;
        h2o_iovec_t value = h2o_strdup(&req->pool, hs[i].value.base, hs[i].value.len);
        const char *orig = hs[i].orig_name ? h2o_strdup(&req->pool, hs[i].orig_name, name->len).base : NULL;
        if (h2o_iovec_is_token(name))
            h2o_add_header(&req->pool, &req->res.headers, (const h2o_token_t *)name, orig, value.base, value.len);
        else
            h2o_add_header_by_str(&req->pool, &req->res.headers, h2o_strdup(&req->pool, name->base, name->len).base,
                                  name->len, 0, orig, value.base, value.len);
    }
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_VIA, NULL, H2O_STRLIT("1.1 verge"));
    return NULL;
}

static h2o_http1client_body_cb on_head(h2o_http1client_t *client, const char *errstr, int minor_version, int status,
                                       h2o_iovec_t msg, h2o_header_t *headers, size_t num_headers, int rlen)
{
    struct fwd *f = client->data;
    h2o_req_t *req = f->req;
    VG_ASSERT(client == f->client && !f->done);
    unarm(&f->read_te);
    if (errstr != NULL && errstr != h2o_http1client_error_is_eos) {
        bool got_bytes = client->sock != NULL && client->sock->input->size != 0;
        f->client = NULL;
        attempt_failed(f, got_bytes ? FAIL_RESPONSE : FAIL_NO_RESPONSE, strcmp(errstr, "I/O timeout") == 0, errstr);
        return NULL;
    }
    bool eos = errstr != NULL;
    size_t declared;
    const char *bad = copy_head(f, status, msg, headers, num_headers, &declared);
    if (bad) {
        if (eos) /* h2o would pool the socket after an eos head: keep it out */
            h2o_socket_close(h2o_http1client_steal_socket(client));
        f->client = NULL;
        attempt_failed(f, FAIL_RESPONSE, false, bad);
        return NULL;
    }
    /* 5xx counts against the server at once; 501 means "not supported", not ill */
    if (status >= 500 && status != 501) {
        vg_proxy_origin_state_report(f->t.state, (size_t)f->server, false, vg_now_ms());
        f->reported = true;
    }
    f->responding = true;
    h2o_start_response(req, &f->gen);
    if (eos) { /* HEAD, 204, 304 */
        if (status == 204 && declared != SIZE_MAX && declared != 0) {
            /* a 204 with a length usually comes with the body it must not
             * have; that would be read as the next response on this
             * connection: do not pool it */
            h2o_socket_close(h2o_http1client_steal_socket(client));
        }
        f->client = NULL;
        f->upstream_end = true;
        stop_timers(f);
        end_attempt(f, OUTCOME_OK);
        f->done = true;
        h2o_send(req, NULL, 0, H2O_SEND_STATE_FINAL);
        return NULL;
    }
    arm(f, &f->t.timers->read, &f->read_te);
    return on_body; /* h2o calls it at once with any body bytes that came with the head */
}

/* ---- connecting ----------------------------------------------------------------------- */

static h2o_http1client_head_cb on_connect(h2o_http1client_t *client, const char *errstr, h2o_iovec_t **reqbufs,
                                          size_t *reqbufcnt, int *method_is_head)
{
    struct fwd *f = client->data;
    VG_ASSERT(client == f->client && !f->done);
    unarm(&f->connect_te);
    if (errstr != NULL) {
        f->client = NULL;
        attempt_failed(f, FAIL_CONNECT, strcmp(errstr, "connection timeout") == 0, errstr);
        return NULL;
    }
    int fd = h2o_socket_get_fd(client->sock), sz = UPSTREAM_RCVBUF;
    if (fd >= 0)
        (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz)); /* best effort */
    *reqbufs = f->reqbufs;
    *reqbufcnt = f->n_reqbufs;
    *method_is_head = f->is_head;
    arm(f, &f->t.timers->read, &f->read_te);
    return on_head;
}

static void on_connect_timeout(h2o_timeout_entry_t *e)
{
    struct fwd *f = H2O_STRUCT_FROM_MEMBER(struct fwd, connect_te, e);
    VG_AN(f->client);
    cancel_client(f);
    attempt_failed(f, FAIL_CONNECT, true, "connect timeout");
}

static void on_read_timeout(h2o_timeout_entry_t *e)
{
    struct fwd *f = H2O_STRUCT_FROM_MEMBER(struct fwd, read_te, e);
    h2o_http1client_t *c = f->client;
    VG_AN(c);
    if (f->responding) {
        abort_upstream(f, "read timeout", OUTCOME_FAIL);
        return;
    }
    if (c->sock && h2o_socket_is_writing(c->sock)) {
        /* still sending the request body: the origin is reading, not silent */
        arm(f, &f->t.timers->read, &f->read_te);
        return;
    }
    bool got_bytes = c->sock != NULL && c->sock->input->size != 0;
    cancel_client(f);
    attempt_failed(f, got_bytes ? FAIL_RESPONSE : FAIL_NO_RESPONSE, true, "read timeout");
}

static void on_total_timeout(h2o_timeout_entry_t *e)
{
    struct fwd *f = H2O_STRUCT_FROM_MEMBER(struct fwd, total_te, e);
    VG_AN(f->client);
    if (f->responding) {
        /* a client too slow to take the body is not the origin's fault */
        abort_upstream(f, "total timeout", f->paused ? OUTCOME_OK : OUTCOME_FAIL);
        return;
    }
    cancel_client(f);
    unarm(&f->connect_te);
    unarm(&f->read_te);
    end_attempt(f, OUTCOME_FAIL);
    respond_error(f, 504, "total timeout");
}

/* ---- entry ------------------------------------------------------------------------------- */

static void on_dispose(void *p)
{
    struct fwd *f = p;
    stop_timers(f);
    cancel_client(f);
    end_attempt(f, OUTCOME_UNKNOWN); /* the client left before the answer: nobody knows */
    h2o_doublebuffer_dispose(&f->sending);
    h2o_buffer_dispose(&f->rest);
}

void vg_proxy_forward(h2o_req_t *req, const struct vg_proxy_target *t, h2o_iovec_t path, h2o_iovec_t hash_key,
                      vg_proxy_attempt_fn on_attempt, void *data)
{
    struct fwd *f = h2o_mem_alloc_shared(&req->pool, sizeof(*f), on_dispose);
    *f = (struct fwd){
        .gen = {on_proceed, on_stop},
        .req = req,
        .t = *t,
        .path = path,
        .key = hash_key,
        .on_attempt = on_attempt,
        .data = data,
        .server = -1,
        .last_server = -1,
        .is_head = h2o_memis(req->method.base, req->method.len, H2O_STRLIT("HEAD")),
        .idempotent = is_idempotent(req->method),
    };
    f->connect_te.cb = on_connect_timeout;
    f->read_te.cb = on_read_timeout;
    f->total_te.cb = on_total_timeout;
    h2o_doublebuffer_init(&f->sending, &h2o_socket_buffer_prototype);
    h2o_buffer_init(&f->rest, &h2o_socket_buffer_prototype);
    f->client_ip = peer_ip(req);
    f->n_reqbufs = 1;
    if (req->entity.base && req->entity.len)
        f->reqbufs[f->n_reqbufs++] = req->entity; /* h2o 2.2.5 has the whole body already */
    arm(f, &f->t.timers->total, &f->total_te);
    switch (start_attempt(f)) {
    case STARTED:
        return;
    case NO_SERVER:
        respond_error(f, 502, "no usable server");
        return;
    case BAD_REQUEST:
        stop_timers(f);
        f->done = true;
        log_failure(f, "request rejected", "request cannot be forwarded (CR, LF or NUL in a field)");
        h2o_send_error_400(req, "Bad Request", "bad request\n", H2O_SEND_ERROR_HTTP1_CLOSE_CONNECTION);
        return;
    }
}
