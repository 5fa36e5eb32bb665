/* HTTP/2 server connections: libnghttp2 for the protocol, h2o's sockets and
 * request objects for everything above it.
 *
 * h2o 2.2.5's own HTTP/2 reads a whole request body before the handler runs
 * (as its HTTP/1 does; see http1.c). Here nghttp2 does the framing, HPACK,
 * flow control and priorities, and each stream becomes an h2o_req_t that
 * h2o's handlers and filters answer through an output stream of ours, as
 * on HTTP/1. What that buys:
 *
 *  - request bodies are streamed with flow control as the backpressure: the
 *    stream's receive window is given back (WINDOW_UPDATE) only as the
 *    handler takes pieces, so a stream buffers at most one window whatever
 *    the body's size; bodies up to body_buffer_bytes still arrive whole in
 *    req->entity, like HTTP/1's;
 *  - the same limits and timeouts as HTTP/1 (431, 413, a stalled body 408,
 *    idle connections closed), refusals logged with their reason.
 *
 * Reentrancy rule: nghttp2 is driven (mem_recv, mem_send) only from loop
 * callbacks (socket read, write done, the flush timer), never from inside
 * an h2o callback, so a stream that nghttp2 closes (and we dispose) never
 * has its request's code on the stack. Responses and window updates queue
 * in nghttp2 and a zero timer flushes them. */
#include "http_int.h"

#include <nghttp2/nghttp2.h>
#include <pthread.h>
#include <string.h>

#define MAX_STREAMS 100
#define STREAM_WINDOW (256 * 1024)     /* per stream: bounds what a body buffers (h2o's figure too) */
#define CONN_WINDOW (16 * 1024 * 1024) /* given back on arrival: streams never wait for each other */
#define WRITE_BATCH (64 * 1024)        /* bytes collected from nghttp2 per socket write */

enum sstate {
    SS_HEAD,    /* receiving the request head */
    SS_BUFFER,  /* reading a small body before handling */
    SS_HANDLE,  /* with the handler */
    SS_REFUSED, /* answered by us (431, 413...): body bytes are dropped */
};

struct h2c;

struct h2s {
    h2o_req_t req;
    h2o_ostream_t ostr;
    struct h2c *c;
    int32_t id;
    h2o_linklist_t link;
    enum sstate st;
    bool is_head_method;
    size_t head_bytes;
    const char *refuse_why;
    int refuse_status;
    h2o_iovec_t cookies; /* crumbs joined with "; " (RFC 9113 8.2.3) */
    /* request body */
    size_t length; /* Content-Length, SIZE_MAX when absent */
    bool streamed;
    bool end;           /* END_STREAM received */
    bool delivered_end; /* END or ERROR went to the reader */
    h2o_buffer_t *in;   /* arrived, not handed out */
    h2o_buffer_t *out;  /* handed to the reader, released at its next call */
    size_t unacked;     /* arrived and not yet given back to the stream's window */
    size_t total;       /* handed out so far */
    vg_http_body_cb cb;
    void *cbdata;
    size_t limit;
    bool want;
    int err_status;
    const char *err_reason;
    h2o_timeout_entry_t deliver_te; /* delivery from the loop */
    h2o_timeout_entry_t stall_te;   /* the reader waits too long: 408 */
    /* response */
    bool res_submitted;
    bool data_deferred; /* nghttp2 was told to wait for more data */
    bool spent;         /* bufs are copied out; the generator was asked for more */
    h2o_iovec_t *bufs;  /* a copy of the generator's list (its array may be on its stack) */
    size_t nbufs, bufs_cap, bi, boff;
    h2o_send_state_t sendst;
    h2o_timeout_entry_t proceed_te;
};

struct h2c {
    h2o_conn_t super; /* first: h2o hands us &super */
    struct vg_http1_ctx *hc;
    h2o_socket_t *sock;
    nghttp2_session *ng;
    h2o_linklist_t link;
    h2o_linklist_t streams;
    size_t n_streams;
    h2o_buffer_t *wbuf;
    bool writing;
    bool closed; /* close_conn ran (guards the callers up the stack) */
    h2o_timeout_entry_t idle_te;
    h2o_timeout_entry_t flush_te;
};

static const h2o_conn_callbacks_t callbacks;
static void flush(struct h2c *c);
static void body_deliver(struct h2s *s);

/* ---- connection lifetime ------------------------------------------------------- */

static void unlink_te(h2o_timeout_entry_t *te)
{
    if (h2o_timeout_is_linked(te))
        h2o_timeout_unlink(te);
}

static void later(struct h2c *c, h2o_timeout_entry_t *te)
{
    if (!h2o_timeout_is_linked(te))
        h2o_timeout_link(c->hc->ctx->loop, &c->hc->ctx->zero_timeout, te);
}

static void schedule_flush(struct h2c *c)
{
    if (!c->writing)
        later(c, &c->flush_te);
}

static void stream_free(struct h2s *s)
{
    struct h2c *c = s->c;
    h2o_linklist_unlink(&s->link);
    c->n_streams--;
    unlink_te(&s->deliver_te);
    unlink_te(&s->stall_te);
    unlink_te(&s->proceed_te);
    h2o_dispose_request(&s->req);
    h2o_buffer_dispose(&s->in);
    h2o_buffer_dispose(&s->out);
    free(s->bufs);
    free(s);
    if (!c->n_streams && !c->closed)
        h2o_timeout_link(c->hc->ctx->loop, &c->hc->idle_to, &c->idle_te);
}

static void close_conn(struct h2c *c)
{
    c->closed = true;
    while (!h2o_linklist_is_empty(&c->streams)) {
        struct h2s *s = H2O_STRUCT_FROM_MEMBER(struct h2s, link, c->streams.next);
        nghttp2_session_set_stream_user_data(c->ng, s->id, NULL);
        stream_free(s);
    }
    unlink_te(&c->idle_te);
    unlink_te(&c->flush_te);
    nghttp2_session_del(c->ng);
    h2o_linklist_unlink(&c->link);
    h2o_buffer_dispose(&c->wbuf);
    h2o_socket_close(c->sock);
    free(c);
}

static void on_idle(h2o_timeout_entry_t *te)
{
    struct h2c *c = H2O_STRUCT_FROM_MEMBER(struct h2c, idle_te, te);
    nghttp2_session_terminate_session(c->ng, NGHTTP2_NO_ERROR);
    flush(c);
}

static void on_flush_te(h2o_timeout_entry_t *te)
{
    flush(H2O_STRUCT_FROM_MEMBER(struct h2c, flush_te, te));
}

static void on_written(h2o_socket_t *sock, const char *err)
{
    struct h2c *c = sock->data;
    c->writing = false;
    if (err) {
        close_conn(c);
        return;
    }
    h2o_buffer_consume(&c->wbuf, c->wbuf->size);
    flush(c);
}

/* Collects what nghttp2 has to send (up to WRITE_BATCH) and writes it; the
 * next batch follows when the write is done. Closes the connection once
 * neither side has anything more to say. */
static void flush(struct h2c *c)
{
    unlink_te(&c->flush_te);
    if (c->writing)
        return;
    while (c->wbuf->size < WRITE_BATCH) {
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(c->ng, &data);
        if (n < 0) {
            close_conn(c);
            return;
        }
        if (n == 0)
            break;
        h2o_iovec_t dst = h2o_buffer_reserve(&c->wbuf, (size_t)n);
        memcpy(dst.base, data, (size_t)n);
        c->wbuf->size += (size_t)n;
    }
    if (c->wbuf->size) {
        h2o_iovec_t v = h2o_iovec_init(c->wbuf->bytes, c->wbuf->size);
        c->writing = true;
        h2o_socket_write(c->sock, &v, 1, on_written);
        return;
    }
    if (!nghttp2_session_want_read(c->ng) && !nghttp2_session_want_write(c->ng))
        close_conn(c);
}

static void on_read(h2o_socket_t *sock, const char *err)
{
    struct h2c *c = sock->data;
    if (err) {
        close_conn(c);
        return;
    }
    ssize_t n = nghttp2_session_mem_recv(c->ng, (const uint8_t *)sock->input->bytes, sock->input->size);
    if (n < 0) { /* a protocol error: nghttp2 queued a GOAWAY where it could */
        if (n != NGHTTP2_ERR_BAD_CLIENT_MAGIC)
            vg__http_log_reject(sock, 400, nghttp2_strerror((int)n));
        h2o_buffer_consume(&sock->input, sock->input->size);
        h2o_socket_read_stop(sock);
        nghttp2_session_terminate_session(c->ng, NGHTTP2_PROTOCOL_ERROR);
        flush(c);
        return;
    }
    h2o_buffer_consume(&sock->input, (size_t)n);
    flush(c);
}

/* ---- responses -------------------------------------------------------------------- */

static h2o_iovec_t lower_name(h2o_mem_pool_t *pool, const h2o_iovec_t *name)
{
    for (size_t i = 0; i < name->len; i++) {
        if (name->base[i] >= 'A' && name->base[i] <= 'Z') {
            char *p = h2o_mem_alloc_pool(pool, name->len);
            memcpy(p, name->base, name->len);
            h2o_strtolower(p, name->len);
            return h2o_iovec_init(p, name->len);
        }
    }
    return *name;
}

static nghttp2_nv nv(h2o_iovec_t name, h2o_iovec_t value)
{
    return (nghttp2_nv){(uint8_t *)name.base, (uint8_t *)value.base, name.len, value.len, NGHTTP2_NV_FLAG_NONE};
}

/* :status, date, server, content-length, then the response's own fields
 * less the connection-specific ones HTTP/2 forbids. */
static size_t response_nv(struct h2s *s, nghttp2_nv **out)
{
    h2o_req_t *req = &s->req;
    h2o_context_t *ctx = s->c->hc->ctx;
    nghttp2_nv *a = h2o_mem_alloc_pool(&req->pool, sizeof(*a) * (req->res.headers.size + 4));
    size_t n = 0;
    int status = req->res.status > 999 || req->res.status < 100 ? 500 : req->res.status;
    char *st = h2o_mem_alloc_pool(&req->pool, 3);
    st[0] = (char)('0' + status / 100), st[1] = (char)('0' + status / 10 % 10), st[2] = (char)('0' + status % 10);
    a[n++] = nv(h2o_iovec_init(H2O_STRLIT(":status")), h2o_iovec_init(st, 3));
    if (h2o_find_header(&req->res.headers, H2O_TOKEN_DATE, -1) == -1) { /* a proxied response keeps the origin's */
        h2o_timestamp_t ts;
        h2o_get_timestamp(ctx, &req->pool, &ts);
        a[n++] = nv(H2O_TOKEN_DATE->buf, h2o_iovec_init(ts.str->rfc1123, H2O_TIMESTR_RFC1123_LEN));
    }
    if (ctx->globalconf->server_name.len)
        a[n++] = nv(H2O_TOKEN_SERVER->buf, ctx->globalconf->server_name);
    if (req->res.content_length != SIZE_MAX) {
        char *cl = h2o_mem_alloc_pool(&req->pool, sizeof(H2O_UINT64_LONGEST_STR));
        size_t len = (size_t)sprintf(cl, "%zu", req->res.content_length);
        a[n++] = nv(H2O_TOKEN_CONTENT_LENGTH->buf, h2o_iovec_init(cl, len));
    }
    for (size_t i = 0; i < req->res.headers.size; i++) {
        const h2o_header_t *h = &req->res.headers.entries[i];
        if (h2o_iovec_is_token(h->name)) {
            const h2o_token_t *tok = (const h2o_token_t *)h->name;
            if (tok->http2_should_reject || tok == H2O_TOKEN_CONTENT_LENGTH)
                continue;
            a[n++] = nv(tok->buf, h->value);
        } else {
            a[n++] = nv(lower_name(&req->pool, h->name), h->value);
        }
    }
    *out = a;
    return n;
}

static void on_proceed_te(h2o_timeout_entry_t *te)
{
    h2o_proceed_response(&H2O_STRUCT_FROM_MEMBER(struct h2s, proceed_te, te)->req);
}

/* nghttp2 asks for the next DATA payload: copied from the generator's
 * buffers; once they are used up the generator is asked for more (from the
 * loop) and the stream waits (DEFERRED) until it answers. */
static ssize_t data_read(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t length, uint32_t *flags,
                         nghttp2_data_source *src, void *user)
{
    struct h2s *s = src->ptr;
    size_t n = 0;
    while (n < length && s->bi < s->nbufs) {
        h2o_iovec_t *b = &s->bufs[s->bi];
        size_t take = b->len - s->boff < length - n ? b->len - s->boff : length - n;
        memcpy(buf + n, b->base + s->boff, take);
        n += take;
        s->boff += take;
        if (s->boff == b->len) {
            s->bi++;
            s->boff = 0;
        }
    }
    if (s->bi < s->nbufs)
        return (ssize_t)n;
    if (!h2o_send_state_is_in_progress(s->sendst)) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        return (ssize_t)n;
    }
    if (!s->spent) { /* the generator may reuse its buffers now: ask it for the next ones, once */
        s->spent = true;
        later(s->c, &s->proceed_te);
    }
    if (n)
        return (ssize_t)n;
    s->data_deferred = true;
    return NGHTTP2_ERR_DEFERRED;
}

static bool no_body(struct h2s *s)
{
    int st = s->req.res.status;
    return s->is_head_method || st == 204 || st == 304;
}

static void on_send(h2o_ostream_t *self, h2o_req_t *req, h2o_iovec_t *bufs, size_t n, h2o_send_state_t state)
{
    struct h2s *s = H2O_STRUCT_FROM_MEMBER(struct h2s, ostr, self);
    struct h2c *c = s->c;
    if (state == H2O_SEND_STATE_ERROR) { /* the body is cut short: the reset says so */
        nghttp2_submit_rst_stream(c->ng, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_INTERNAL_ERROR);
        schedule_flush(c);
        return;
    }
    size_t bytes = 0;
    for (size_t i = 0; i < n; i++)
        bytes += bufs[i].len;
    if (n > s->bufs_cap) {
        s->bufs_cap = n < 4 ? 4 : n;
        s->bufs = vg_xrealloc(s->bufs, s->bufs_cap * sizeof(*bufs));
    }
    if (n)
        memcpy(s->bufs, bufs, n * sizeof(*bufs));
    s->nbufs = no_body(s) ? 0 : n;
    s->bi = s->boff = 0;
    s->spent = false;
    s->sendst = state;
    if (!no_body(s))
        req->bytes_sent += bytes;
    if (!s->res_submitted) {
        s->res_submitted = true;
        nghttp2_nv *a;
        size_t k = response_nv(s, &a);
        nghttp2_data_provider prd = {.source.ptr = s, .read_callback = data_read};
        bool headers_only = no_body(s) || (!h2o_send_state_is_in_progress(state) && !bytes);
        nghttp2_submit_response(c->ng, s->id, a, k, headers_only ? NULL : &prd);
    } else if (s->data_deferred) {
        s->data_deferred = false;
        nghttp2_session_resume_data(c->ng, s->id);
    }
    schedule_flush(c);
}

/* An answer of ours, without a body, to a request the handler never sees. */
static void refuse(struct h2s *s, int status, const char *why)
{
    struct h2c *c = s->c;
    vg__http_log_reject(c->sock, status, why);
    unlink_te(&s->stall_te);
    s->st = SS_REFUSED;
    char *st = h2o_mem_alloc_pool(&s->req.pool, 4);
    snprintf(st, 4, "%d", status);
    nghttp2_nv a[] = {nv(h2o_iovec_init(H2O_STRLIT(":status")), h2o_iovec_init(st, 3)),
                      nv(H2O_TOKEN_CONTENT_LENGTH->buf, h2o_iovec_init(H2O_STRLIT("0")))};
    s->res_submitted = true;
    nghttp2_submit_response(c->ng, s->id, a, 2, NULL);
}

/* ---- request bodies ---------------------------------------------------------------- */

static struct h2s *stream_of(h2o_req_t *req)
{
    if (req->conn->callbacks != &callbacks)
        return NULL;
    struct h2s *s = H2O_STRUCT_FROM_MEMBER(struct h2s, req, req);
    return s;
}

bool vg__http2_first_stream(h2o_req_t *req)
{
    struct h2s *s = stream_of(req);
    return s && s->id == 1;
}

bool vg__http2_owns(h2o_req_t *req)
{
    /* a subrequest made on this connection (verge.fetch's) is not a stream */
    if (req->conn->callbacks != &callbacks)
        return false;
    struct h2c *c = (struct h2c *)req->conn;
    for (h2o_linklist_t *l = c->streams.next; l != &c->streams; l = l->next)
        if (&H2O_STRUCT_FROM_MEMBER(struct h2s, link, l)->req == req)
            return true;
    return false;
}

bool vg__http2_body_is_streamed(h2o_req_t *req)
{
    return stream_of(req)->streamed;
}

size_t vg__http2_body_length(h2o_req_t *req)
{
    return stream_of(req)->length;
}

/* Gives n received bytes back to the peer's send windows. */
static void give_back(struct h2s *s, size_t n)
{
    if (!n)
        return;
    s->unacked -= n;
    nghttp2_session_consume_stream(s->c->ng, s->id, n);
    schedule_flush(s->c);
}

static void on_deliver_te(h2o_timeout_entry_t *te)
{
    body_deliver(H2O_STRUCT_FROM_MEMBER(struct h2s, deliver_te, te));
}

/* The stream's timer: the head (and a small body read whole) must arrive
 * within header_timeout, as on HTTP/1; later, a reader waiting for body
 * bytes longer than idle_timeout gets 408. */
static void on_stall(h2o_timeout_entry_t *te)
{
    struct h2s *s = H2O_STRUCT_FROM_MEMBER(struct h2s, stall_te, te);
    struct h2c *c = s->c;
    if (s->st == SS_HEAD) { /* a header block left open blocks the whole connection */
        vg__http_log_reject(c->sock, 408, "request head not complete within limits.header_timeout");
        nghttp2_session_terminate_session(c->ng, NGHTTP2_NO_ERROR);
        schedule_flush(c);
        return;
    }
    if (s->st == SS_BUFFER) {
        refuse(s, 408, "request body not complete within limits.header_timeout");
        schedule_flush(c);
        return;
    }
    if (!s->want)
        return;
    s->err_status = 408;
    s->err_reason = "request body stalled longer than limits.idle_timeout";
    body_deliver(s);
}

/* Hands everything that arrived to the reader (the buffers swap: the one
 * handed out stays put until the reader's next call). */
static void body_deliver(struct h2s *s)
{
    s->want = false;
    unlink_te(&s->stall_te);
    unlink_te(&s->deliver_te);
    vg_http_body_cb cb = s->cb;
    if (s->err_status) {
        s->delivered_end = true;
        cb(s->cbdata, h2o_iovec_init(NULL, 0), VG_HTTP_BODY_ERROR, s->err_status, s->err_reason);
        return;
    }
    h2o_buffer_t *t = s->out;
    s->out = s->in;
    s->in = t;
    h2o_iovec_t buf = h2o_iovec_init(s->out->bytes, s->out->size);
    s->total += buf.len;
    if (s->total > s->limit) {
        s->delivered_end = true;
        cb(s->cbdata, h2o_iovec_init(NULL, 0), VG_HTTP_BODY_ERROR, 413, "request body exceeds limits.body_size");
        return;
    }
    bool end = s->end && !s->in->size;
    if (end)
        s->delivered_end = true;
    cb(s->cbdata, buf, end ? VG_HTTP_BODY_END : VG_HTTP_BODY_MORE, 0, NULL);
}

void vg__http2_body_read(h2o_req_t *req, size_t limit, vg_http_body_cb cb, void *data)
{
    struct h2s *s = stream_of(req);
    VG_ASSERT(s->streamed && !s->want && !s->delivered_end);
    if (s->out->size) { /* the reader is done with the last piece */
        give_back(s, s->out->size);
        h2o_buffer_consume(&s->out, s->out->size);
    }
    s->cb = cb;
    s->cbdata = data;
    s->limit = limit;
    s->want = true;
    if (s->in->size || s->end || s->err_status) {
        later(s->c, &s->deliver_te);
        return;
    }
    h2o_timeout_link(s->c->hc->ctx->loop, &s->c->hc->idle_to, &s->stall_te);
}

/* ---- request heads ------------------------------------------------------------------- */

static void process(struct h2s *s)
{
    unlink_te(&s->stall_te); /* the head's (and small body's) clock stops */
    s->st = SS_HANDLE;
    h2o_process_request(&s->req);
}

/* The body goes to the handler as it comes (a large or unknown-sized one). */
static void start_streaming(struct h2s *s)
{
    s->streamed = true;
    process(s);
}

/* A small body arrived whole: it becomes req->entity. */
static void finish_buffered(struct h2s *s)
{
    s->req.entity = h2o_strdup(&s->req.pool, s->in->bytes, s->in->size);
    give_back(s, s->in->size);
    h2o_buffer_consume(&s->in, s->in->size);
    process(s);
}

static int on_begin_headers(nghttp2_session *ng, const nghttp2_frame *frame, void *user)
{
    struct h2c *c = user;
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    struct h2s *s = vg_xcalloc(1, sizeof(*s));
    s->c = c;
    s->id = frame->hd.stream_id;
    s->length = SIZE_MAX;
    h2o_init_request(&s->req, &c->super, NULL);
    s->req.version = 0x200;
    s->req.input.scheme = c->sock->ssl ? &H2O_URL_SCHEME_HTTPS : &H2O_URL_SCHEME_HTTP;
    s->ostr.do_send = on_send;
    s->req._ostr_top = &s->ostr;
    h2o_buffer_init(&s->in, &h2o_socket_buffer_prototype);
    h2o_buffer_init(&s->out, &h2o_socket_buffer_prototype);
    s->deliver_te.cb = on_deliver_te;
    s->stall_te.cb = on_stall;
    s->proceed_te.cb = on_proceed_te;
    h2o_timeout_link(c->hc->ctx->loop, &c->hc->header_to, &s->stall_te);
    h2o_linklist_insert(&c->streams, &s->link);
    c->n_streams++;
    unlink_te(&c->idle_te);
    nghttp2_session_set_stream_user_data(ng, s->id, s);
    return 0;
}

static h2o_iovec_t pool_dup(h2o_mem_pool_t *pool, const uint8_t *p, size_t len)
{
    return h2o_strdup(pool, (const char *)p, len);
}

static void add_cookie(struct h2s *s, const uint8_t *v, size_t len)
{
    h2o_iovec_t old = s->cookies;
    size_t n = old.len ? old.len + 2 + len : len;
    char *p = h2o_mem_alloc_pool(&s->req.pool, n + 1);
    size_t off = 0;
    if (old.len) {
        memcpy(p, old.base, old.len);
        memcpy(p + old.len, "; ", 2);
        off = old.len + 2;
    }
    memcpy(p + off, v, len);
    p[n] = '\0';
    s->cookies = h2o_iovec_init(p, n);
}

/* nghttp2 has checked the field (lower-case name, valid bytes, pseudo
 * fields first and known, no connection-specific fields). */
static int on_header(nghttp2_session *ng, const nghttp2_frame *frame, const uint8_t *name, size_t namelen,
                     const uint8_t *value, size_t valuelen, uint8_t flags, void *user)
{
    struct h2s *s = nghttp2_session_get_stream_user_data(ng, frame->hd.stream_id);
    if (!s || frame->hd.type != NGHTTP2_HEADERS || s->st != SS_HEAD)
        return 0; /* trailers: accepted, not kept */
    h2o_req_t *req = &s->req;
    s->head_bytes += namelen + valuelen + 4;
    if (s->head_bytes > s->c->hc->s.max_header_bytes) {
        s->refuse_status = 431;
        s->refuse_why = "request head exceeds limits.header_size";
        return 0;
    }
    if (s->refuse_status)
        return 0;
    if (namelen && name[0] == ':') {
        h2o_iovec_t v = pool_dup(&req->pool, value, valuelen);
        if (namelen == 7 && memcmp(name, ":method", 7) == 0)
            req->input.method = v;
        else if (namelen == 5 && memcmp(name, ":path", 5) == 0)
            req->input.path = v;
        else if (namelen == 10 && memcmp(name, ":authority", 10) == 0)
            req->input.authority = v;
        return 0; /* :scheme: the connection says whether it is TLS */
    }
    const h2o_token_t *tok = h2o_lookup_token((const char *)name, namelen);
    if (tok == H2O_TOKEN_COOKIE) {
        add_cookie(s, value, valuelen);
        return 0;
    }
    h2o_iovec_t v = pool_dup(&req->pool, value, valuelen);
    if (tok == H2O_TOKEN_HOST) {
        if (!req->input.authority.base)
            req->input.authority = v;
        return 0;
    }
    if (tok == H2O_TOKEN_CONTENT_LENGTH)
        s->length = h2o_strtosize(v.base, v.len); /* nghttp2 checked the number and checks the body against it */
    if (tok) {
        h2o_add_header(&req->pool, &req->headers, tok, NULL, v.base, v.len);
    } else {
        h2o_iovec_t nm = pool_dup(&req->pool, name, namelen);
        h2o_add_header_by_str(&req->pool, &req->headers, nm.base, nm.len, 0, NULL, v.base, v.len);
    }
    return 0;
}

/* The head is complete: refuse it, or decide how its body arrives. */
static void on_request_head(struct h2s *s, bool end_stream)
{
    h2o_req_t *req = &s->req;
    struct vg_http1_settings *set = &s->c->hc->s;
    s->end = end_stream;
    if (s->cookies.len)
        h2o_add_header(&req->pool, &req->headers, H2O_TOKEN_COOKIE, NULL, s->cookies.base, s->cookies.len);
    if (!s->refuse_status && (!req->input.path.len || !req->input.authority.len)) {
        s->refuse_status = h2o_memis(req->input.method.base, req->input.method.len, H2O_STRLIT("CONNECT")) ? 501 : 400;
        s->refuse_why = s->refuse_status == 501 ? "CONNECT is not supported" : "request without :path or :authority";
    }
    if (!s->refuse_status && s->length != SIZE_MAX && s->length > set->max_body_bytes) {
        s->refuse_status = 413;
        s->refuse_why = "request body exceeds limits.body_size";
    }
    if (s->refuse_status) {
        refuse(s, s->refuse_status, s->refuse_why);
        return;
    }
    s->is_head_method = h2o_memis(req->input.method.base, req->input.method.len, H2O_STRLIT("HEAD"));
    if (end_stream) {
        process(s);
    } else if (s->length != SIZE_MAX && s->length > set->body_buffer_bytes) {
        start_streaming(s);
    } else {
        s->st = SS_BUFFER;
    }
}

/* Body bytes: buffered whole (small), held for the reader (streamed; the
 * window is given back as the reader takes them), or dropped. */
static int on_data_chunk(nghttp2_session *ng, uint8_t flags, int32_t id, const uint8_t *data, size_t len, void *user)
{
    struct h2s *s = nghttp2_session_get_stream_user_data(ng, id);
    if (!s || s->st == SS_REFUSED || (s->st == SS_HANDLE && !s->streamed) || s->delivered_end) {
        nghttp2_session_consume(ng, id, len);
        return 0;
    }
    h2o_iovec_t dst = h2o_buffer_reserve(&s->in, len);
    memcpy(dst.base, data, len);
    s->in->size += len;
    /* The connection's window goes back at once, so a stream whose handler
     * is slow to read never holds up the others; the stream's own window
     * is the backpressure (at most STREAM_WINDOW buffered per stream). */
    nghttp2_session_consume_connection(ng, len);
    s->unacked += len;
    if (s->st == SS_BUFFER) {
        /* a buffered body stays below body_buffer_bytes, less than a window */
        if (s->in->size > s->c->hc->s.max_body_bytes)
            refuse(s, 413, "request body exceeds limits.body_size");
        else if (s->in->size > s->c->hc->s.body_buffer_bytes)
            start_streaming(s); /* what is buffered goes out as the first piece */
        return 0;
    }
    if (s->want)
        later(s->c, &s->deliver_te);
    return 0;
}

static int on_frame_recv(nghttp2_session *ng, const nghttp2_frame *frame, void *user)
{
    struct h2s *s = nghttp2_session_get_stream_user_data(ng, frame->hd.stream_id);
    if (!s || (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA))
        return 0;
    bool end_stream = (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
    if (frame->hd.type == NGHTTP2_HEADERS && s->st == SS_HEAD) {
        on_request_head(s, end_stream);
        return 0;
    }
    if (!end_stream)
        return 0;
    s->end = true;
    if (s->st == SS_BUFFER)
        finish_buffered(s);
    else if (s->st == SS_HANDLE && s->streamed && s->want)
        later(s->c, &s->deliver_te);
    return 0;
}

/* Our response is complete while the client may still be sending a body
 * nobody will read: reset the stream (NO_ERROR) so it stops. */
static int on_frame_send(nghttp2_session *ng, const nghttp2_frame *frame, void *user)
{
    if ((frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA) ||
        !(frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
        return 0;
    if (!nghttp2_session_get_stream_remote_close(ng, frame->hd.stream_id))
        nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, frame->hd.stream_id, NGHTTP2_NO_ERROR);
    return 0;
}

static int on_stream_close(nghttp2_session *ng, int32_t id, uint32_t error_code, void *user)
{
    struct h2s *s = nghttp2_session_get_stream_user_data(ng, id);
    if (!s)
        return 0;
    stream_free(s);
    return 0;
}

/* ---- accept and shutdown ------------------------------------------------------------- */

/* Shared by every worker's sessions (nghttp2 copies them in). */
static pthread_once_t once = PTHREAD_ONCE_INIT;
static nghttp2_session_callbacks *cbs;
static nghttp2_option *options;

static void init_once(void)
{
    VG_AZ(nghttp2_session_callbacks_new(&cbs));
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_frame_send_callback(cbs, on_frame_send);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    VG_AZ(nghttp2_option_new(&options));
    /* windows are given back as bodies are consumed (backpressure) */
    nghttp2_option_set_no_auto_window_update(options, 1);
}

void vg__http2_accept(struct vg_http1_ctx *hc, h2o_hostconf_t **hosts, h2o_socket_t *sock, struct timeval connected_at)
{
    pthread_once(&once, init_once);
    struct h2c *c = vg_xcalloc(1, sizeof(*c));
    c->super.ctx = hc->ctx;
    c->super.hosts = hosts;
    c->super.connected_at = connected_at;
    c->super.id = ++hc->next_id;
    c->super.callbacks = &callbacks;
    c->hc = hc;
    c->sock = sock;
    c->idle_te.cb = on_idle;
    c->flush_te.cb = on_flush_te;
    h2o_linklist_init_anchor(&c->streams);
    h2o_buffer_init(&c->wbuf, &h2o_socket_buffer_prototype);
    h2o_linklist_insert(&hc->h2_conns, &c->link);
    sock->data = c;
    VG_AZ(nghttp2_session_server_new2(&c->ng, cbs, c, options));
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, MAX_STREAMS},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, STREAM_WINDOW},
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
    };
    nghttp2_submit_settings(c->ng, NGHTTP2_FLAG_NONE, iv, sizeof(iv) / sizeof(iv[0]));
    nghttp2_session_set_local_window_size(c->ng, NGHTTP2_FLAG_NONE, 0, CONN_WINDOW);
    h2o_timeout_link(hc->ctx->loop, &hc->idle_to, &c->idle_te);
    vg_http_read_resume(sock, on_read);
    if (sock->input->size)
        on_read(sock, NULL);
    else
        flush(c);
}

void vg__http2_shutdown(struct vg_http1_ctx *hc)
{
    h2o_linklist_t *l = hc->h2_conns.next;
    while (l != &hc->h2_conns) {
        struct h2c *c = H2O_STRUCT_FROM_MEMBER(struct h2c, link, l);
        l = l->next;
        nghttp2_submit_goaway(c->ng, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(c->ng),
                              NGHTTP2_NO_ERROR, NULL, 0);
        schedule_flush(c);
    }
}

/* ---- h2o connection callbacks ------------------------------------------------------------ */

static socklen_t get_sockname(h2o_conn_t *conn, struct sockaddr *sa)
{
    return h2o_socket_getsockname(((struct h2c *)conn)->sock, sa);
}

static socklen_t get_peername(h2o_conn_t *conn, struct sockaddr *sa)
{
    return h2o_socket_getpeername(((struct h2c *)conn)->sock, sa);
}

static h2o_socket_t *get_socket(h2o_conn_t *conn)
{
    return ((struct h2c *)conn)->sock;
}

static const h2o_conn_callbacks_t callbacks = {
    .get_sockname = get_sockname,
    .get_peername = get_peername,
    .get_socket = get_socket,
};
