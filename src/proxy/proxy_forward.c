/* Forwarding: one request to one origin over verge's own HTTP/1.1 client
 * (proxy_upstream.c: the keep-alive pool and the response parser), with
 * server choice and retries, connect / read / total timers, the request
 * body sent whole or streamed from the client, and the response streamed
 * back with backpressure.
 *
 * h2o 2.2.5's own proxy cannot retry on another server, answers 502 for
 * timeouts, has one I/O timeout for everything and reads the origin as fast
 * as it sends, whatever the client takes; its client sends a body from one
 * block of memory and its socket pool costs system calls per reuse. So the
 * whole exchange with the origin is ours.
 *
 * A forward is one struct fwd on the request pool:
 *
 *   start_attempt -> open_conn -> exchange_start -> on_read: head -> body ... -> response_done
 *        ^          (pooled: at once,   |  (request out: head,          |        (connection back to
 *        |           new: on_connected) |   then body pieces)           |         the pool, or closed)
 *        +--- retry (before the head) --+-------------------------------+
 *                                     (once the head is in, errors abort the stream)
 *
 * The request goes out while the response is read: reading starts with the
 * exchange, so an origin answering early (or closing a pooled connection)
 * is seen at once.
 *
 * What keeps it memory safe:
 *  - f->conn is non-NULL exactly while this forward holds a connection
 *    (connecting or in an exchange). Each way out of an exchange clears it
 *    and gives the connection back (only when reusable) or closes it; h2o
 *    runs no callback of a closed socket, so any socket callback that runs
 *    is f->conn's (asserted). The pool calls on_connected from the loop
 *    only, never from inside vg__proxy_conn_open.
 *  - an attempt that fails at once (no address, refused) may start the next
 *    one, or answer the request, from inside start_attempt: nothing follows
 *    that call.
 *  - f->done is set before the response ends (final h2o_send, error
 *    response) and when h2o stops the generator; nothing is sent after it.
 *  - an attempt acquires the balancer when it starts; end_attempt releases
 *    it exactly once (f->server >= 0 in between).
 *  - what h2o_socket_write is given (the head and entity in pool memory,
 *    a body piece, the chunk framing in f) stays valid until its callback
 *    or the connection's close.
 *  - a streamed body has at most one vg_http_body_read outstanding
 *    (f->body_reading), and its piece goes to the origin before the next
 *    read. The response does not end while a read is outstanding: the
 *    read's callback must find f (the request ends with its response), so
 *    the final send or an error answer waits for it (after_body_read). */
#include "proxy_int.h"

#include "http/http.h"

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
 * bookkeeping. Set once per connection, when it is made. The price: one
 * origin connection cannot carry more than about 256 KiB per round trip
 * (plenty near the origin, a limit across continents). */
#define UPSTREAM_RCVBUF (128 * 1024)

enum fail_kind {
    FAIL_CONNECT,     /* nothing was sent: any method may be retried */
    FAIL_NO_RESPONSE, /* the request went out, no response byte came back: idempotent ones may be retried */
    FAIL_RESPONSE,    /* (part of) a response came and was bad: never retried */
};

enum outcome { OUTCOME_OK, OUTCOME_FAIL, OUTCOME_UNKNOWN };

enum start { STARTED, NO_SERVER, BAD_REQUEST };

enum body_kind {
    BODY_NONE,
    BODY_WHOLE,  /* in req->entity */
    BODY_STREAM, /* read from the client with vg_http_body_read */
};

struct fwd {
    h2o_generator_t gen; /* the response, once the head is in */
    h2o_req_t *req;
    struct vg_proxy_target t;
    h2o_iovec_t path, key;
    vg_proxy_event_fn on_event;
    void *data;
    h2o_iovec_t client_ip;
    bool is_head, idempotent;
    /* the request body */
    enum body_kind body;
    size_t body_len;     /* WHOLE: entity.len; STREAM: Content-Length, SIZE_MAX when chunked */
    size_t body_out;     /* STREAM: bytes handed to the origin */
    bool body_started;   /* STREAM: reading from the client began: the request cannot be sent again */
    bool body_reading;   /* STREAM: a vg_http_body_read is outstanding */
    bool body_end;       /* STREAM: the client's body is complete */
    h2o_iovec_t bufs[3]; /* being written to the origin */
    char chunk_head[24]; /* "<hex size>\r\n" of the piece being written */
    /* attempts */
    int server;      /* the running attempt's server, -1 between attempts */
    int last_server; /* for logs */
    bool reported;   /* the running attempt's outcome went to the health state already */
    uint64_t tried;  /* balancer mask */
    unsigned attempts;
    uint64_t pick_now_ms;
    h2o_iovec_t head; /* the request head for the running attempt's server */
    /* the running exchange (f->conn) */
    struct vg__proxy_conn *conn;
    bool reused;       /* conn came from the pool */
    bool writing;      /* a write to conn is in flight */
    bool sent;         /* the whole request went out */
    bool stop_sending; /* the rest of the body stays with the client (the origin answered, or a write failed) */
    bool resp_any;     /* conn sent a response byte */
    size_t head_seen;  /* bytes of the response head phr has looked at */
    bool head_in;      /* the final response head is in */
    bool keepalive;    /* the exchange leaves conn reusable, as far as the response goes */
    struct vg__proxy_body rbody;
    size_t decoded; /* bytes at the start of conn's input that are decoded body */
    h2o_timeout_entry_t connect_te, read_te, total_te;
    bool total_started;
    /* the response */
    bool responding;     /* h2o_start_response done */
    bool done;           /* the response ended or was stopped: send nothing more */
    bool upstream_end;   /* the origin is done and f->conn gone; f->rest holds the tail */
    bool upstream_err;   /* ... not cleanly: end the stream with an error */
    bool paused;         /* reading from the origin is stopped (backpressure) */
    int deferred_status; /* an error answer waiting for the outstanding body read */
    h2o_doublebuffer_t sending;
    h2o_buffer_t *rest;
};

static void on_connected(void *user, const char *err);
static void on_read(h2o_socket_t *sock, const char *err);
static void attempt_failed(struct fwd *f, enum fail_kind kind, bool timeout, const char *why);
static void respond_error(struct fwd *f, int status, const char *why);
static void do_send(struct fwd *f);

/* ---- timers ------------------------------------------------------------------ */

void vg_proxy_timers_init(struct vg_proxy_timers *t, h2o_loop_t *loop, const struct vg_conf_origin *o)
{
    t->loop = loop;
    h2o_timeout_init(loop, &t->connect, o->connect_timeout_ms);
    h2o_timeout_init(loop, &t->read, o->read_timeout_ms);
    h2o_timeout_init(loop, &t->total, o->total_timeout_ms);
    h2o_timeout_init(loop, &t->idle, o->keepalive_ms);
}

void vg_proxy_timers_dispose(struct vg_proxy_timers *t)
{
    h2o_timeout_dispose(t->loop, &t->connect);
    h2o_timeout_dispose(t->loop, &t->read);
    h2o_timeout_dispose(t->loop, &t->total);
    h2o_timeout_dispose(t->loop, &t->idle);
}

static void unarm(h2o_timeout_entry_t *e)
{
    if (h2o_timeout_is_linked(e))
        h2o_timeout_unlink(e);
}

static void arm(struct fwd *f, h2o_timeout_t *to, h2o_timeout_entry_t *e)
{
    unarm(e);
    h2o_timeout_link(f->t.timers->loop, to, e);
}

static void stop_timers(struct fwd *f)
{
    unarm(&f->connect_te);
    unarm(&f->read_te);
    unarm(&f->total_te);
}

/* The total timeout runs once the request body is complete (or the
 * response started), so that a long upload is not cut by it. */
static void start_total(struct fwd *f)
{
    if (f->total_started)
        return;
    f->total_started = true;
    arm(f, &f->t.timers->total, &f->total_te);
}

/* ---- helpers ------------------------------------------------------------------ */

/* Names with their lengths: these lists are walked for every header of
 * every request and response, where strlen showed in profiles. */
struct name {
    const char *s;
    size_t len;
};
static bool is_idempotent(h2o_iovec_t m)
{
    static const struct name names[] = {{H2O_STRLIT("GET")},    {H2O_STRLIT("HEAD")},    {H2O_STRLIT("PUT")},
                                        {H2O_STRLIT("DELETE")}, {H2O_STRLIT("OPTIONS")}, {H2O_STRLIT("TRACE")}};
    for (size_t i = 0; i < VG_ARRAY_LEN(names); i++)
        if (h2o_memis(m.base, m.len, names[i].s, names[i].len))
            return true;
    return false;
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

/* Closes the running exchange's connection, if any (never pooled). */
static void drop_conn(struct fwd *f)
{
    if (f->conn) {
        vg__proxy_conn_close(f->conn);
        f->conn = NULL;
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
    static const struct name hop[] = {
        {H2O_STRLIT("connection")}, {H2O_STRLIT("keep-alive")},         {H2O_STRLIT("proxy-connection")},
        {H2O_STRLIT("te")},         {H2O_STRLIT("transfer-encoding")},  {H2O_STRLIT("upgrade")},
        {H2O_STRLIT("trailer")},    {H2O_STRLIT("proxy-authenticate")}, {H2O_STRLIT("proxy-authorization")}};
    for (size_t i = 0; i < VG_ARRAY_LEN(hop); i++)
        if (h2o_lcstris(name, len, hop[i].s, hop[i].len))
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

static enum req_hdr classify(const h2o_headers_t *hs, const h2o_iovec_t *name, bool has_connection, bool own_trace)
{
    static const struct name ours[] = {{H2O_STRLIT("host")},
                                       {H2O_STRLIT("content-length")},
                                       {H2O_STRLIT("expect")},
                                       {H2O_STRLIT("x-forwarded-proto")}};
    if (vg__proxy_hop_header(name->base, name->len))
        return HDR_DROP;
    for (size_t i = 0; i < VG_ARRAY_LEN(ours); i++)
        if (h2o_lcstris(name->base, name->len, ours[i].s, ours[i].len))
            return HDR_DROP;
    if (h2o_lcstris(name->base, name->len, H2O_STRLIT("cookie")))
        return HDR_COOKIE;
    if (h2o_lcstris(name->base, name->len, H2O_STRLIT("x-forwarded-for")))
        return HDR_XFF;
    if (h2o_lcstris(name->base, name->len, H2O_STRLIT("via")))
        return HDR_VIA;
    if (own_trace && h2o_lcstris(name->base, name->len, H2O_STRLIT("traceparent")))
        return HDR_DROP; /* ours replaces it */
    return has_connection && named_in_request_connection(hs, name) ? HDR_DROP : HDR_KEEP;
}

/* Every header's fate, decided once: the head is written in four passes
 * (kept headers, then the merged Cookie, X-Forwarded-For and Via lines),
 * and classifying in each pass cost ~20% of the head's instructions. */
static uint8_t *classify_all(h2o_mem_pool_t *pool, const h2o_headers_t *hs, bool own_trace, uint8_t *stack,
                             size_t stack_len)
{
    uint8_t *kind = hs->size <= stack_len ? stack : h2o_mem_alloc_pool(pool, hs->size);
    bool has_connection = false;
    for (size_t i = 0; i < hs->size; i++)
        has_connection |= h2o_lcstris(hs->entries[i].name->base, hs->entries[i].name->len, H2O_STRLIT("connection"));
    for (size_t i = 0; i < hs->size; i++)
        kind[i] = (uint8_t)classify(hs, hs->entries[i].name, has_connection, own_trace);
    return kind;
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

#define TRACEPARENT_LEN 55 /* a version 00 traceparent: "00-" 32 hex "-" 16 hex "-" 2 hex (obs.h) */

/* Writes "name: v1<sep>v2...[<sep>last]\r\n" for every header of kind k (and
 * `last` when given); nothing when there is nothing to write. */
static void put_merged(struct out *o, const h2o_headers_t *hs, const uint8_t *kind, enum req_hdr k, const char *name,
                       const char *sep, h2o_iovec_t last)
{
    bool any = false;
    for (size_t i = 0; i < hs->size; i++) {
        const h2o_header_t *h = &hs->entries[i];
        if (kind[i] != k)
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
    /* every header is written at most once, with at most 4 bytes around it;
     * 256 covers the lines of our own */
    size_t cap =
        in->method.len + in->path.len + in->host.len + in->client_ip.len + in->proto.len + 256 + in->traceparent.len;
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
    if (in->has_body && in->body_len == SIZE_MAX) {
        PUT_LIT(&o, "transfer-encoding: chunked\r\n");
    } else if (in->has_body || wants_length) { /* a server may answer 411 to a POST without one */
        char cl[48];
        int n = snprintf(cl, sizeof(cl), "content-length: %zu\r\n", in->has_body ? in->body_len : 0);
        put(&o, cl, (size_t)n);
    }
    uint8_t stack[64];
    const uint8_t *kind = classify_all(pool, hs, in->traceparent.len != 0, stack, sizeof(stack));
    for (size_t i = 0; i < hs->size; i++) {
        const h2o_header_t *h = &hs->entries[i];
        if (kind[i] != HDR_KEEP)
            continue;
        put(&o, h->orig_name ? h->orig_name : h->name->base, h->name->len);
        PUT_LIT(&o, ": ");
        put(&o, h->value.base, h->value.len);
        PUT_LIT(&o, "\r\n");
    }
    /* one Cookie line: HTTP/2 clients may split it, HTTP/1.1 wants one (RFC 6265 5.4) */
    put_merged(&o, hs, kind, HDR_COOKIE, "cookie", "; ", h2o_iovec_init(NULL, 0));
    put_merged(&o, hs, kind, HDR_XFF, "x-forwarded-for", ", ", in->client_ip);
    PUT_LIT(&o, "x-forwarded-proto: ");
    put(&o, in->proto.base, in->proto.len);
    PUT_LIT(&o, "\r\n");
    put_merged(&o, hs, kind, HDR_VIA, "via", ", ", h2o_iovec_init(H2O_STRLIT("1.1 verge")));
    if (in->traceparent.len == TRACEPARENT_LEN) { /* ours, well-formed by construction: no check, no classifying */
        /* the usual one (every proxied request's): the line in three fixed-size copies */
        VG_ASSERT(o.len + 15 + TRACEPARENT_LEN <= o.cap);
        memcpy(o.buf + o.len, "traceparent: ", 13);
        memcpy(o.buf + o.len + 13, in->traceparent.base, TRACEPARENT_LEN);
        memcpy(o.buf + o.len + 13 + TRACEPARENT_LEN, "\r\n", 2);
        o.len += 15 + TRACEPARENT_LEN;
    } else if (in->traceparent.len) {
        PUT_LIT(&o, "traceparent: ");
        put(&o, in->traceparent.base, in->traceparent.len);
        PUT_LIT(&o, "\r\n");
    }
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

static void exchange_start(struct fwd *f);

static void tell(struct fwd *f, enum vg_proxy_event ev)
{
    if (f->on_event)
        f->on_event(f->data, ev, f->server);
}

/* Gets the running attempt a connection to its server: a pooled one goes
 * to work at once, a new one once made. Streamed bodies take new ones
 * (see vg_proxy_forward), as does a request sent again after a pooled
 * connection turned out closed (fresh). */
static void open_conn(struct fwd *f, bool fresh)
{
    const char *err = "connection failed";
    struct vg_proxy_pool *pool = f->t.pools[f->server];
    switch (vg__proxy_conn_open(pool, fresh || f->body == BODY_STREAM, on_connected, f, &f->conn, &err)) {
    case VG__PROXY_OPEN_READY:
        f->reused = true;
        exchange_start(f);
        return;
    case VG__PROXY_OPEN_PENDING:
        f->reused = false;
        arm(f, &f->t.timers->connect, &f->connect_te);
        return;
    case VG__PROXY_OPEN_FAILED:
        f->conn = NULL;
        attempt_failed(f, FAIL_CONNECT, false, err);
        return;
    }
}

static enum start start_attempt(struct fwd *f)
{
    h2o_req_t *req = f->req;
    VG_ASSERT(f->conn == NULL && f->server < 0 && !f->done);
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
        .has_body = f->body != BODY_NONE,
        .body_len = f->body_len,
        .traceparent = f->t.traceparent,
    };
    if (vg__proxy_head_build(&req->pool, &h, &f->head) != 0)
        return BAD_REQUEST;
    if (s < 64)
        f->tried |= (uint64_t)1 << s;
    f->attempts++;
    f->server = f->last_server = s;
    f->reported = false;
    vg_proxy_balancer_acquire(f->t.balancer, (size_t)s);
    tell(f, VG_PROXY_ATTEMPT);
    open_conn(f, false);
    return STARTED; /* the attempt may already have ended (and others started): touch nothing here */
}

/* The running attempt failed before a response head came (f->conn is
 * already gone). Retries when the rules allow, else answers the client. */
static void attempt_failed(struct fwd *f, enum fail_kind kind, bool timeout, const char *why)
{
    VG_ASSERT(f->conn == NULL);
    unarm(&f->connect_te);
    unarm(&f->read_te);
    end_attempt(f, OUTCOME_FAIL);
    bool may = kind == FAIL_CONNECT || (kind == FAIL_NO_RESPONSE && f->idempotent);
    if (f->body_started) /* part of the client's body went into this attempt: it is gone */
        may = false;
    if (may && f->attempts <= f->t.conf->retries) {
        vg_log(VG_LOG_DEBUG, "upstream attempt failed, retrying", "origin", f->t.conf->name, "server",
               f->t.conf->servers[f->last_server].url, "reason", why, NULL);
        if (start_attempt(f) == STARTED)
            return;
    }
    respond_error(f, timeout ? 504 : 502, why);
}

/* The running exchange failed before a response head: its connection goes. */
static void fail_exchange(struct fwd *f, enum fail_kind kind, bool timeout, const char *why)
{
    drop_conn(f);
    attempt_failed(f, kind, timeout, why);
}

static void send_error(struct fwd *f, int status)
{
    f->done = true;
    if (status == 504)
        h2o_send_error_generic(f->req, 504, "Gateway Timeout", "upstream timed out\n", 0);
    else
        h2o_send_error_502(f->req, "Bad Gateway", "upstream unavailable\n", 0);
}

/* Answers with an error (no response head has gone out). */
static void respond_error(struct fwd *f, int status, const char *why)
{
    VG_ASSERT(!f->responding && !f->done && f->conn == NULL && f->server < 0);
    stop_timers(f);
    log_failure(f, "upstream failed", why);
    if (f->body_reading) { /* after the outstanding read (see the top) */
        f->deferred_status = status;
        return;
    }
    send_error(f, status);
}

/* ---- the request, out ------------------------------------------------------------ */

static void on_written(h2o_socket_t *sock, const char *err);
static void body_read_next(struct fwd *f);

/* Hands f->bufs[0..n) to the origin. Until the response head, the read
 * timer runs while a write is in flight: the origin has that long to take
 * it (on_read_timeout lets a whole body take longer). */
static void write_out(struct fwd *f, size_t n)
{
    f->writing = true;
    if (!f->head_in)
        arm(f, &f->t.timers->read, &f->read_te);
    h2o_socket_write(f->conn->sock, f->bufs, n, on_written);
}

/* The running attempt has its connection: the request goes out, the
 * response is watched for from now on. */
static void exchange_start(struct fwd *f)
{
    tell(f, VG_PROXY_CONNECTED);
    f->writing = f->sent = f->stop_sending = f->resp_any = f->head_in = false;
    f->head_seen = f->decoded = 0;
    vg_http_read_resume(f->conn->sock, on_read);
    f->bufs[0] = f->head;
    size_t n = 1;
    if (f->body == BODY_WHOLE && f->req->entity.len)
        f->bufs[n++] = f->req->entity;
    write_out(f, n);
}

static void request_sent(struct fwd *f)
{
    f->sent = true;
    start_total(f);
    if (!f->head_in)
        arm(f, &f->t.timers->read, &f->read_te);
}

static void on_written(h2o_socket_t *sock, const char *err)
{
    struct vg__proxy_conn *c = sock->data;
    struct fwd *f = c->user;
    VG_ASSERT(c == f->conn && f->writing && !f->done);
    f->writing = false;
    if (err != NULL) {
        /* the connection broke: the read side sees how (a close, a reset,
         * an answer sent before the origin stopped reading) and decides */
        f->stop_sending = true;
        return;
    }
    if (f->body != BODY_STREAM || f->body_end) {
        request_sent(f);
        return;
    }
    if (!f->head_in)
        unarm(&f->read_te); /* the origin took it; now the client is the one to wait for */
    if (!f->stop_sending)
        body_read_next(f);
}

/* What waited for an outstanding body read to come back. */
static void after_body_read(struct fwd *f)
{
    if (f->done)
        return;
    if (f->deferred_status) {
        send_error(f, f->deferred_status);
        return;
    }
    if (f->responding && f->sending.bytes_inflight == 0)
        do_send(f); /* the final send may have waited */
}

/* The answer to a client whose body failed (vg_http_body_read's status). */
static void send_body_error(struct fwd *f, int status)
{
    switch (status) {
    case 408:
        h2o_send_error_generic(f->req, 408, "Request Timeout", "request body timed out\n",
                               H2O_SEND_ERROR_HTTP1_CLOSE_CONNECTION);
        return;
    case 413:
        h2o_send_error_generic(f->req, 413, "Payload Too Large", "request body too large\n",
                               H2O_SEND_ERROR_HTTP1_CLOSE_CONNECTION);
        return;
    default:
        h2o_send_error_400(f->req, "Bad Request", "bad request body\n", H2O_SEND_ERROR_HTTP1_CLOSE_CONNECTION);
        return;
    }
}

/* The client's body cannot be completed (a read's ERROR, or a body that
 * does not match its length). */
static void body_failed(struct fwd *f, int status, const char *reason)
{
    f->stop_sending = true;
    if (f->done)
        return;
    if (f->responding) { /* the origin answered already: that answer stands */
        after_body_read(f);
        return;
    }
    /* not the origin's doing: the attempt ends without a verdict */
    stop_timers(f);
    drop_conn(f);
    end_attempt(f, OUTCOME_UNKNOWN);
    f->done = true;
    if (status == 0) /* the client went away: nobody to answer */
        return;
    log_failure(f, "request body failed", reason);
    send_body_error(f, status);
}

/* Hands one piece of the client's body to the origin, framed as a chunk
 * when the body's length is unknown. */
static void body_write(struct fwd *f, h2o_iovec_t buf)
{
    size_t n = 0;
    bool end = f->body_end;
    if (f->body_len == SIZE_MAX) {
        if (buf.len) {
            int k = snprintf(f->chunk_head, sizeof(f->chunk_head), "%zx\r\n", buf.len);
            f->bufs[n++] = h2o_iovec_init(f->chunk_head, (size_t)k);
            f->bufs[n++] = buf;
            f->bufs[n++] = end ? h2o_iovec_init(H2O_STRLIT("\r\n0\r\n\r\n")) : h2o_iovec_init(H2O_STRLIT("\r\n"));
        } else if (end) {
            f->bufs[n++] = h2o_iovec_init(H2O_STRLIT("0\r\n\r\n"));
        }
    } else {
        size_t left = f->body_len - f->body_out;
        if (buf.len > left || (end && buf.len != left)) {
            body_failed(f, 400, "request body does not match its content-length");
            return;
        }
        if (buf.len)
            f->bufs[n++] = buf;
    }
    f->body_out += buf.len;
    if (n)
        write_out(f, n);
    else if (end)
        request_sent(f);
    else
        body_read_next(f);
}

static void on_body_piece(void *data, h2o_iovec_t buf, enum vg_http_body_status st, int status, const char *reason)
{
    struct fwd *f = data;
    VG_ASSERT(f->body_reading);
    f->body_reading = false;
    if (st == VG_HTTP_BODY_ERROR) {
        body_failed(f, status, reason);
        return;
    }
    f->body_end = st == VG_HTTP_BODY_END;
    if (f->done || f->conn == NULL || f->stop_sending) {
        /* the exchange is over, or the origin answered: the rest stays with the client */
        after_body_read(f);
        return;
    }
    body_write(f, buf);
}

static void body_read_next(struct fwd *f)
{
    VG_ASSERT(!f->body_reading && !f->body_end);
    f->body_started = true;
    f->body_reading = true;
    vg_http_body_read(f->req, f->t.body_limit, on_body_piece, f);
}

/* ---- response body ------------------------------------------------------------- */

/* Hands buffered body bytes to the client; ends the response when the origin
 * is done and everything went out. Only while nothing is in flight. */
static void do_send(struct fwd *f)
{
    if (f->done)
        return;
    VG_ASSERT(f->sending.bytes_inflight == 0);
    h2o_buffer_t **src = f->conn ? &f->conn->sock->input : &f->rest;
    h2o_iovec_t v = h2o_doublebuffer_prepare(&f->sending, src, SIZE_MAX);
    if (f->conn)
        f->decoded = (*src)->size; /* swapped away: what is left (nothing) is all body */
    if (f->upstream_end && f->rest->size == 0 && v.len == f->sending.buf->size && !f->body_reading) {
        f->done = true; /* the request may go away once h2o has sent this: touch nothing after */
        h2o_send(f->req, &v, v.len ? 1 : 0, f->upstream_err ? H2O_SEND_STATE_ERROR : H2O_SEND_STATE_FINAL);
        return;
    }
    if (v.len)
        h2o_send(f->req, &v, 1, H2O_SEND_STATE_IN_PROGRESS);
}

/* Moves what the origin sent but the client has not got yet out of the
 * connection's buffer, which goes back to the pool (or away) with it. */
static void take_tail(struct fwd *f)
{
    h2o_buffer_t *t = f->rest;
    VG_ASSERT(t->size == 0);
    f->rest = f->conn->sock->input;
    f->conn->sock->input = t;
    f->decoded = 0;
}

/* The origin is done with this response (f->conn is gone). err: why it
 * did not finish cleanly, or NULL. */
static void upstream_finished(struct fwd *f, const char *err, enum outcome o)
{
    VG_ASSERT(f->conn == NULL);
    stop_timers(f);
    f->upstream_end = true;
    tell(f, VG_PROXY_END);
    f->paused = false;
    f->stop_sending = true;
    end_attempt(f, o);
    if (err) {
        f->upstream_err = true;
        log_failure(f, "upstream failed", err);
    }
    if (f->sending.bytes_inflight == 0)
        do_send(f);
}

/* Ends the exchange mid-body (the head has gone out, so the client gets a
 * broken stream rather than an error status). */
static void abort_upstream(struct fwd *f, const char *why, enum outcome o)
{
    take_tail(f);
    drop_conn(f);
    upstream_finished(f, why, o);
}

/* The whole response is in: the connection goes back to the pool when the
 * exchange left it reusable (the whole request went out too), else it is
 * closed. */
static void response_done(struct fwd *f)
{
    struct vg__proxy_conn *c = f->conn;
    take_tail(f);
    f->conn = NULL;
    if (f->keepalive && f->sent)
        vg__proxy_conn_release(c);
    else
        vg__proxy_conn_close(c);
    upstream_finished(f, NULL, OUTCOME_OK);
}

/* The connection ended (err) before the body's end. */
static void body_cut(struct fwd *f, const char *err)
{
    bool closed = err == h2o_socket_error_closed;
    if (f->rbody.framing == VG__PROXY_BODY_CLOSE && closed) {
        f->keepalive = false;
        response_done(f);
        return;
    }
    /* a proxy must not pass a cut body on as whole */
    if (f->rbody.framing == VG__PROXY_BODY_CHUNKED && closed)
        err = "origin closed the connection before the last chunk";
    else if (closed)
        err = "origin closed the connection before the end of the body";
    abort_upstream(f, err, OUTCOME_FAIL);
}

/* fresh bytes came at the end of the connection's buffer, or the
 * connection ended (err), while the response body is read. */
static void on_body_bytes(struct fwd *f, const char *err, size_t fresh)
{
    h2o_buffer_t *in = f->conn->sock->input;
    size_t len = fresh, extra;
    char *raw = fresh ? in->bytes + f->decoded : NULL;
    enum vg__proxy_body_status st = vg__proxy_body_decode(&f->rbody, raw, &len, &extra);
    if (st == VG__PROXY_BODY_BAD) {
        abort_upstream(f, "malformed chunked encoding in the response", OUTCOME_FAIL);
        return;
    }
    in->size = f->decoded + len; /* the decoded body, without framing or what followed it */
    f->decoded = in->size;
    if (st == VG__PROXY_BODY_DONE) {
        if (extra) /* bytes after the response: the connection is out of step */
            f->keepalive = false;
        response_done(f);
        return;
    }
    if (err != NULL) {
        body_cut(f, err);
        return;
    }
    if (f->sending.bytes_inflight == 0)
        do_send(f);
    if (f->conn->sock->input->size >= READ_HIGH_WATER) {
        h2o_socket_read_stop(f->conn->sock); /* backpressure: on_proceed restarts it */
        f->paused = true;
        unarm(&f->read_te);
    } else {
        arm(f, &f->t.timers->read, &f->read_te);
    }
}

static void on_proceed(h2o_generator_t *gen, h2o_req_t *req)
{
    struct fwd *f = H2O_STRUCT_FROM_MEMBER(struct fwd, gen, gen);
    h2o_doublebuffer_consume(&f->sending);
    do_send(f);
    if (f->paused && f->conn && f->conn->sock->input->size < READ_HIGH_WATER) {
        f->paused = false;
        vg_http_read_resume(f->conn->sock, on_read);
        arm(f, &f->t.timers->read, &f->read_te);
    }
}

/* The client went away mid-response. */
static void on_stop(h2o_generator_t *gen, h2o_req_t *req)
{
    struct fwd *f = H2O_STRUCT_FROM_MEMBER(struct fwd, gen, gen);
    f->done = true;
    stop_timers(f);
    drop_conn(f);
    end_attempt(f, OUTCOME_OK); /* the origin answered; a 5xx was reported already */
}

/* ---- response head ---------------------------------------------------------------- */

static bool named_by_connection(const struct vg__proxy_resp *r, const char *lc, size_t len)
{
    for (size_t i = 0; i < r->n_headers; i++) {
        const struct phr_header *h = &r->headers[i];
        if (h2o_lcstris(h->name, h->name_len, H2O_STRLIT("connection")) &&
            vg__proxy_list_has(h2o_iovec_init(h->value, h->value_len), lc, len))
            return true;
    }
    return false;
}

/* Content-Length is h2o's to write (from res.content_length); so is
 * Server (nginx hides the origin's too). The origin's Date stays: it is
 * when the response was made, which the cache's age arithmetic needs
 * (RFC 9111 4.2.3) and clients may see; HTTP/1 then sends it instead of
 * the node's own. */
static bool drop_from_response(const char *lc, size_t len)
{
    return h2o_memis(lc, len, H2O_STRLIT("content-length")) || h2o_memis(lc, len, H2O_STRLIT("server"));
}

/* Copies one of the origin's headers into req->res (in pool memory: the
 * connection's buffer moves on), unless a proxy must not pass it on.
 * h2o wants names in lower case; the origin's spelling goes out on HTTP/1. */
static void add_response_header(struct fwd *f, const struct vg__proxy_resp *r, const struct phr_header *h)
{
    h2o_mem_pool_t *pool = &f->req->pool;
    size_t len = h->name_len;
    char *lc = h2o_strdup(pool, h->name, len).base;
    for (size_t i = 0; i < len; i++)
        lc[i] = h2o_tolower(lc[i]);
    if (vg__proxy_hop_header(lc, len) || drop_from_response(lc, len) || named_by_connection(r, lc, len))
        return;
    h2o_iovec_t value = h2o_strdup(pool, h->value, h->value_len);
    const char *orig = memcmp(lc, h->name, len) != 0 ? h2o_strdup(pool, h->name, len).base : NULL;
    const h2o_token_t *token = h2o_lookup_token(lc, len);
    if (token)
        h2o_add_header(pool, &f->req->res.headers, token, orig, value.base, value.len);
    else
        h2o_add_header_by_str(pool, &f->req->res.headers, lc, len, 0, orig, value.base, value.len);
}

static void copy_head(struct fwd *f, const struct vg__proxy_resp *r)
{
    h2o_req_t *req = f->req;
    req->res.status = r->status;
    req->res.reason = h2o_strdup(&req->pool, r->reason.base, r->reason.len).base;
    if (r->content_length != SIZE_MAX && !r->chunked && r->status != 204 && r->status != 304)
        req->res.content_length = r->content_length; /* h2o writes Content-Length itself (HEAD too) */
    for (size_t i = 0; i < r->n_headers; i++)
        add_response_header(f, r, &r->headers[i]);
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_VIA, NULL, H2O_STRLIT("1.1 verge"));
}

/* The final response head is in (n bytes of the connection's buffer). */
static void head_done(struct fwd *f, const struct vg__proxy_resp *r, size_t n)
{
    unarm(&f->read_te);
    copy_head(f, r);
    h2o_buffer_consume(&f->conn->sock->input, n); /* r points into it: after the copy */
    f->head_in = true;
    tell(f, VG_PROXY_HEAD);
    f->keepalive = r->keepalive;
    vg__proxy_body_init(&f->rbody, r);
    /* an origin that rejects the body before it has all of it does not
     * want the rest; one that accepts it early may still read it */
    if (!f->sent && r->status >= 300)
        f->stop_sending = true;
    /* 5xx counts against the server at once; 501 means "not supported", not ill */
    if (r->status >= 500 && r->status != 501) {
        vg_proxy_origin_state_report(f->t.state, (size_t)f->server, false, vg_now_ms());
        f->reported = true;
    }
    start_total(f);
    f->responding = true;
    h2o_start_response(f->req, &f->gen);
    on_body_bytes(f, NULL, f->conn->sock->input->size); /* what came with the head; ends a bodiless one */
}

/* The origin closed or reset the connection (err) before a whole head. */
static void head_cut(struct fwd *f, const char *err)
{
    if (f->resp_any) {
        fail_exchange(f, FAIL_RESPONSE, false, "origin closed the connection before the end of the response head");
        return;
    }
    if (f->reused) {
        /* the origin closed an idle connection as the request arrived: it
         * did not process it, so it goes again on a new connection to the
         * same server, whatever the method, within the same attempt
         * (streamed bodies never take pooled connections) */
        vg_log(VG_LOG_DEBUG, "pooled upstream connection was closed, sending again on a new one", "origin",
               f->t.conf->name, "server", f->t.conf->servers[f->server].url, NULL);
        drop_conn(f);
        unarm(&f->read_te);
        open_conn(f, true);
        return;
    }
    fail_exchange(f, FAIL_NO_RESPONSE, false, err == h2o_socket_error_closed ? "origin closed the connection" : err);
}

/* Bytes came, or the connection ended (err), while the head is awaited. */
static void on_head_bytes(struct fwd *f, const char *err)
{
    h2o_buffer_t **in = &f->conn->sock->input;
    if ((*in)->size == 0) {
        if (err != NULL)
            head_cut(f, err);
        return;
    }
    for (;;) {
        struct vg__proxy_resp r;
        const char *why = NULL;
        int n = vg__proxy_resp_parse((*in)->bytes, (*in)->size, f->head_seen, f->is_head, &r, &why);
        if (n == VG__PROXY_HEAD_PARTIAL) {
            f->head_seen = (*in)->size;
            if (err != NULL)
                head_cut(f, err);
            return;
        }
        if (n < 0) {
            fail_exchange(f, FAIL_RESPONSE, false, why);
            return;
        }
        if (r.status >= 200) {
            head_done(f, &r, (size_t)n);
            return;
        }
        h2o_buffer_consume(in, (size_t)n); /* 1xx (100 Continue, 103...): the final head follows */
        f->head_seen = 0;
        if (f->sent)
            arm(f, &f->t.timers->read, &f->read_te);
    }
}

static void on_read(h2o_socket_t *sock, const char *err)
{
    struct vg__proxy_conn *c = sock->data;
    struct fwd *f = c->user;
    VG_ASSERT(c == f->conn && !f->done);
    size_t fresh = sock->input->size - f->decoded;
    if (fresh)
        f->resp_any = true;
    if (f->head_in)
        on_body_bytes(f, err, fresh);
    else
        on_head_bytes(f, err);
}

/* ---- connecting and timeouts ----------------------------------------------------------- */

static void on_connected(void *user, const char *err)
{
    struct fwd *f = user;
    VG_ASSERT(f->conn != NULL && !f->done);
    unarm(&f->connect_te);
    if (err != NULL) {
        f->conn = NULL; /* the pool closed it */
        attempt_failed(f, FAIL_CONNECT, false, err);
        return;
    }
    int fd = h2o_socket_get_fd(f->conn->sock), sz = UPSTREAM_RCVBUF;
    if (fd >= 0)
        (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz)); /* best effort */
    exchange_start(f);
}

static void on_connect_timeout(h2o_timeout_entry_t *e)
{
    struct fwd *f = H2O_STRUCT_FROM_MEMBER(struct fwd, connect_te, e);
    VG_AN(f->conn);
    fail_exchange(f, FAIL_CONNECT, true, "connect timeout");
}

static void on_read_timeout(h2o_timeout_entry_t *e)
{
    struct fwd *f = H2O_STRUCT_FROM_MEMBER(struct fwd, read_te, e);
    VG_AN(f->conn);
    if (f->responding) {
        abort_upstream(f, "read timeout", OUTCOME_FAIL);
        return;
    }
    if (f->writing && f->body != BODY_STREAM) {
        /* still sending a body that was here whole: the origin is reading,
         * not silent (the total timeout bounds it) */
        arm(f, &f->t.timers->read, &f->read_te);
        return;
    }
    bool got_bytes = f->resp_any;
    fail_exchange(f, got_bytes ? FAIL_RESPONSE : FAIL_NO_RESPONSE, true,
                  f->writing ? "send timeout (the origin did not take the request body)" : "read timeout");
}

static void on_total_timeout(h2o_timeout_entry_t *e)
{
    struct fwd *f = H2O_STRUCT_FROM_MEMBER(struct fwd, total_te, e);
    VG_AN(f->conn);
    if (f->responding) {
        /* a client too slow to take the body is not the origin's fault */
        abort_upstream(f, "total timeout", f->paused ? OUTCOME_OK : OUTCOME_FAIL);
        return;
    }
    drop_conn(f);
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
    drop_conn(f);
    end_attempt(f, OUTCOME_UNKNOWN); /* the client left before the answer: nobody knows */
    h2o_doublebuffer_dispose(&f->sending);
    h2o_buffer_dispose(&f->rest);
}

static void body_init(struct fwd *f)
{
    h2o_req_t *req = f->req;
    if (vg_http_body_is_streamed(req)) {
        f->body = BODY_STREAM;
        f->body_len = vg_http_body_length(req);
    } else if (req->entity.base) {
        f->body = BODY_WHOLE;
        f->body_len = req->entity.len;
    }
}

void vg_proxy_forward(h2o_req_t *req, const struct vg_proxy_target *t, h2o_iovec_t path, h2o_iovec_t hash_key,
                      vg_proxy_event_fn on_event, void *data)
{
    struct fwd *f = h2o_mem_alloc_shared(&req->pool, sizeof(*f), on_dispose);
    *f = (struct fwd){
        .gen = {on_proceed, on_stop},
        .req = req,
        .t = *t,
        .path = path,
        .key = hash_key,
        .on_event = on_event,
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
    f->client_ip = vg_http_peer_ip(req, h2o_mem_alloc_pool(&req->pool, VG_HTTP_PEER_MAX));
    body_init(f);
    if (f->body == BODY_STREAM && f->body_len != SIZE_MAX && f->body_len > f->t.body_limit) {
        f->done = true;
        log_failure(f, "request rejected", "request body exceeds limits.body_size");
        h2o_send_error_generic(req, 413, "Payload Too Large", "request body too large\n",
                               H2O_SEND_ERROR_HTTP1_CLOSE_CONNECTION);
        return;
    }
    if (f->body != BODY_STREAM) /* the body (if any) is complete already */
        start_total(f);
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
