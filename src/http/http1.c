/* HTTP/1.x server connections on h2o's sockets and request objects.
 *
 * h2o 2.2.5's own HTTP/1 connection reads a whole request body before the
 * handler runs, uses one timer for slow headers and idle keep-alive, and
 * takes reading off the socket while a request is handled (two epoll_ctl
 * calls per proxied request). verge parses the head with h2o's
 * picohttpparser, builds an h2o_req_t and lets h2o's handlers and filters
 * answer it, so files and errors stay h2o's (HTTP/2 is http2.c's); what
 * differs is here:
 *
 *  - the head is copied into the request's pool once parsed, so the
 *    socket's input buffer holds only bytes nobody owns yet and reading can
 *    stay on while the request runs (pipelined bytes queue behind it);
 *  - a body up to body_buffer_bytes is read whole (req->entity, as h2o
 *    does); a larger one is streamed: the handler runs at once and pulls
 *    the body with vg_http_body_read, one piece per call, and the socket is
 *    not read between a piece and the next call (constant memory);
 *  - slow headers get 408, idle keep-alive connections their own timeout;
 *  - a body the handler left unread is read away after the response (up to
 *    the body limit) so the connection stays usable; a final answer to a
 *    client that may still be sending is followed by a lingering close;
 *  - an idle connection holds neither a request object nor an input buffer.
 *
 * States of a connection:
 *
 *   HANDSHAKE -> HEAD -> [BUFFER body] -> HANDLE -> (response written)
 *                  |                                 | -> [DISCARD rest of body] -> HEAD ...
 *                  |                                 | -> close, or LINGER -> close
 *                  \-> http2.c (ALPN h2, or the prior-knowledge preface)
 *   CLOSING: an answer written without a request (bad head, timeout), then close
 *
 * The request object (struct rq) exists from a complete head until the
 * response is written; close_conn() disposes it, which runs the pool
 * destructors of whatever handler still works on it. */
#include "http_int.h"
#include "phr.h"

#include <errno.h>
#include <netdb.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_HEADERS 128
#define PIPELINE_CAP (64 * 1024) /* bytes queued behind a running request before reading pauses */
#define STREAM_RCVBUF (128 * 1024)
#define SENDFILE_TURN (1024 * 1024) /* file bytes per loop turn: one big download does not hold up the rest */
/* After a final answer to a client that may still be sending (a refused
 * body), its bytes are read and dropped this long before the close: closing
 * with unread input makes the kernel send a reset, which can destroy the
 * answer before the client reads it (nginx's lingering close). */
#define LINGER_MS 2000        /* ... between reads */
#define LINGER_TOTAL_MS 30000 /* ... at most, whatever the client does */

enum cstate {
    CS_HANDSHAKE, /* TLS */
    CS_HEAD,      /* waiting for / reading a request head */
    CS_BUFFER,    /* reading a small body before handling */
    CS_HANDLE,    /* the request is with the handler */
    CS_DISCARD,   /* answered: reading away the rest of a body the handler left */
    CS_CLOSING,   /* a last response goes out, then close */
    CS_LINGER,    /* answered and half-closed: reading away what the client still sends, then close */
};

enum bkind { BODY_NONE, BODY_LENGTH, BODY_CHUNKED };

struct body {
    enum bkind kind;
    bool streamed;
    bool complete;      /* every body byte has arrived (decoded) */
    bool delivered_end; /* END or ERROR went to the reader */
    size_t length;      /* Content-Length, SIZE_MAX for chunked */
    size_t remaining;   /* BODY_LENGTH: bytes still to arrive */
    size_t avail;       /* body bytes at the front of the input, not handed out yet */
    size_t held;        /* bytes handed to the reader, consumed at its next call */
    size_t total;       /* handed out so far (limit) */
    struct phr_chunked_decoder dec;
    /* the reader */
    vg_http_body_cb cb;
    void *data;
    size_t limit;
    bool want;
    int err_status;
    const char *err_reason;
    h2o_timeout_entry_t defer; /* async delivery of what is already here */
};

struct rq {
    h2o_req_t req;
    h2o_ostream_t ostr;
    bool sent_head;
    bool is_head_method;
    bool expect_continue;
    bool continue_sent;
    bool continue_writing; /* "100 Continue" write in flight */
    bool process_after_continue;
    struct { /* a response send that waits for the 100's write */
        h2o_iovec_t *bufs;
        size_t n;
        h2o_send_state_t state;
        bool pending;
    } stash;
    struct body body;
    /* vg_http_send_file: the file still going out */
    int file_fd; /* -1: none */
    off_t file_off;
    size_t file_left;
};

struct conn {
    h2o_conn_t super; /* first: h2o hands us &super */
    struct vg_http1_ctx *hc;
    h2o_socket_t *sock;
    h2o_linklist_t link;
    h2o_timeout_entry_t te;
    h2o_timeout_entry_t done_te; /* completes an empty final send from the loop */
    h2o_timeout_entry_t file_te; /* the next turn's share of a file */
    enum cstate st;
    bool peer_eof;    /* the client half-closed: no keep-alive */
    bool read_paused; /* pipelined bytes over PIPELINE_CAP */
    bool idle;        /* between requests: the idle timer runs, not the head's */
    bool linger;      /* the client may still be sending: linger before the close */
    uint64_t linger_until;
    unsigned requests; /* served on this connection */
    size_t prev_len;   /* picohttpparser's last_len */
    struct rq *rq;
};

static const h2o_conn_callbacks_t callbacks;
static void on_read(h2o_socket_t *sock, const char *err);
static void handle_input(struct conn *c);
static void finalostream_send(h2o_ostream_t *self, h2o_req_t *req, h2o_iovec_t *bufs, size_t n, h2o_send_state_t state);
static void body_on_input(struct conn *c);
static bool body_account(struct conn *c);

/* ---- context ---------------------------------------------------------------------- */

struct vg_http1_ctx *vg_http1_ctx_create(h2o_context_t *ctx, const struct vg_http1_settings *s)
{
    struct vg_http1_ctx *hc = vg_xcalloc(1, sizeof(*hc));
    hc->ctx = ctx;
    hc->s = *s;
    h2o_timeout_init(ctx->loop, &hc->header_to, s->header_timeout_ms);
    h2o_timeout_init(ctx->loop, &hc->idle_to, s->idle_timeout_ms);
    h2o_timeout_init(ctx->loop, &hc->linger_to, LINGER_MS);
    h2o_linklist_init_anchor(&hc->conns);
    h2o_linklist_init_anchor(&hc->h2_conns);
    return hc;
}

void vg_http1_ctx_destroy(struct vg_http1_ctx *hc)
{
    if (!hc)
        return;
    h2o_timeout_dispose(hc->ctx->loop, &hc->header_to);
    h2o_timeout_dispose(hc->ctx->loop, &hc->idle_to);
    h2o_timeout_dispose(hc->ctx->loop, &hc->linger_to);
    for (size_t i = 0; i < hc->n_free; i++)
        free(hc->freelist[i]);
    free(hc);
}

/* ---- connection lifetime ----------------------------------------------------------- */

static void set_timer(struct conn *c, h2o_timeout_t *to)
{
    if (h2o_timeout_is_linked(&c->te))
        h2o_timeout_unlink(&c->te);
    if (to)
        h2o_timeout_link(c->hc->ctx->loop, to, &c->te);
}

static void rq_free(struct conn *c)
{
    struct rq *rq = c->rq;
    if (!rq)
        return;
    c->rq = NULL;
    if (rq->file_fd >= 0)
        close(rq->file_fd);
    if (h2o_timeout_is_linked(&rq->body.defer))
        h2o_timeout_unlink(&rq->body.defer);
    h2o_dispose_request(&rq->req);
    struct vg_http1_ctx *hc = c->hc;
    if (hc->n_free < VG__HTTP_RQ_FREELIST)
        hc->freelist[hc->n_free++] = rq;
    else
        free(rq);
}

static void close_conn(struct conn *c)
{
    set_timer(c, NULL);
    if (h2o_timeout_is_linked(&c->done_te))
        h2o_timeout_unlink(&c->done_te);
    if (h2o_timeout_is_linked(&c->file_te))
        h2o_timeout_unlink(&c->file_te);
    rq_free(c);
    h2o_linklist_unlink(&c->link);
    if (c->sock)
        h2o_socket_close(c->sock);
    free(c);
}

void vg__http_log_reject(h2o_socket_t *sock, int status, const char *why)
{
    char code[8], peer[VG_HTTP_PEER_MAX] = "";
    struct sockaddr_storage ss;
    snprintf(code, sizeof(code), "%d", status);
    if (sock)
        vg_http_sockaddr_ip((struct sockaddr *)&ss, h2o_socket_getpeername(sock, (struct sockaddr *)&ss), peer);
    vg_log(VG_LOG_WARN, "request rejected", "status", code, "reason", why, "client", peer, NULL);
}

static void log_reject(struct conn *c, int status, const char *why)
{
    vg__http_log_reject(c->sock, status, why);
}

/* Half-closes and drops input until the client closes or LINGER_MS pass. */
static void linger_close(struct conn *c)
{
    rq_free(c);
    int fd = h2o_socket_get_fd(c->sock);
    if (fd < 0 || shutdown(fd, SHUT_WR) != 0) {
        close_conn(c);
        return;
    }
    c->st = CS_LINGER;
    c->linger_until = vg_now_ms() + LINGER_TOTAL_MS;
    h2o_buffer_consume(&c->sock->input, c->sock->input->size);
    set_timer(c, &c->hc->linger_to);
    vg_http_read_resume(c->sock, on_read);
}

static void on_final_written(h2o_socket_t *sock, const char *err)
{
    struct conn *c = sock->data;
    if (!err && (c->linger || c->sock->input->size))
        linger_close(c);
    else
        close_conn(c);
}

/* An answer for a request that never became an h2o request (bad head,
 * timeout before the head was complete): a fixed response, then close. */
static void reject_raw(struct conn *c, int status, const char *why)
{
    static const struct {
        int status;
        h2o_iovec_t text;
    } canned[] = {
        {400,
         {H2O_STRLIT("HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"
                     "Connection: close\r\nContent-Length: 12\r\n\r\nBad Request\n")}},
        {408,
         {H2O_STRLIT("HTTP/1.1 408 Request Timeout\r\nContent-Type: text/plain; charset=utf-8\r\n"
                     "Connection: close\r\nContent-Length: 16\r\n\r\nRequest Timeout\n")}},
        {413,
         {H2O_STRLIT("HTTP/1.1 413 Payload Too Large\r\nContent-Type: text/plain; charset=utf-8\r\n"
                     "Connection: close\r\nContent-Length: 18\r\n\r\nPayload Too Large\n")}},
        {417,
         {H2O_STRLIT("HTTP/1.1 417 Expectation Failed\r\nContent-Type: text/plain; charset=utf-8\r\n"
                     "Connection: close\r\nContent-Length: 19\r\n\r\nExpectation Failed\n")}},
        {431,
         {H2O_STRLIT("HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: text/plain; "
                     "charset=utf-8\r\nConnection: close\r\nContent-Length: 32\r\n\r\n"
                     "Request Header Fields Too Large\n")}},
        {501,
         {H2O_STRLIT("HTTP/1.1 501 Not Implemented\r\nContent-Type: text/plain; charset=utf-8\r\n"
                     "Connection: close\r\nContent-Length: 16\r\n\r\nNot Implemented\n")}},
    };
    log_reject(c, status, why);
    if (h2o_socket_is_writing(c->sock)) { /* a "100 Continue" is still going out: no room for an answer */
        close_conn(c);
        return;
    }
    set_timer(c, NULL);
    /* a body (or the rest of a head) we will not read may still be on its
     * way; not worth waiting for a client that was too slow already */
    c->linger = status != 408;
    rq_free(c);
    c->st = CS_CLOSING;
    h2o_socket_read_stop(c->sock);
    for (size_t i = 0; i < sizeof(canned) / sizeof(canned[0]); i++) {
        if (canned[i].status == status) {
            h2o_iovec_t buf = canned[i].text;
            h2o_socket_write(c->sock, &buf, 1, on_final_written);
            return;
        }
    }
    VG_ASSERT(!"no canned response for this status");
}

static void on_timeout(h2o_timeout_entry_t *te)
{
    struct conn *c = H2O_STRUCT_FROM_MEMBER(struct conn, te, te);
    switch (c->st) {
    case CS_HEAD:
        if (c->sock->input->size == 0) { /* idle keep-alive, or a client that never spoke */
            close_conn(c);
            return;
        }
        reject_raw(c, 408, "request head not complete within limits.header_timeout");
        return;
    case CS_BUFFER:
        reject_raw(c, 408, "request body not complete within limits.header_timeout");
        return;
    case CS_HANDLE: {              /* a streamed body stalled while the handler waits for it */
        if (c->rq->file_fd >= 0) { /* or the client stopped taking a file */
            close_conn(c);
            return;
        }
        struct body *b = &c->rq->body;
        if (!b->want)
            return;
        if (!b->err_status) {
            b->err_status = 408;
            b->err_reason = "request body stalled longer than limits.idle_timeout";
        }
        body_on_input(c);
        return;
    }
    case CS_HANDSHAKE:
    case CS_DISCARD:
    case CS_CLOSING:
    case CS_LINGER:
        close_conn(c);
        return;
    }
}

/* ---- response ----------------------------------------------------------------------- */

static bool keep_alive(struct conn *c)
{
    struct rq *rq = c->rq;
    h2o_req_t *req = &rq->req;
    if (!req->http1_is_persistent || c->peer_eof || c->hc->shutdown || c->hc->ctx->shutdown_requested)
        return false;
    const struct body *b = &rq->body;
    if (b->kind != BODY_NONE && !b->complete) {
        /* the rest is read away after the response (as nginx does), unless
         * it is unwanted (413), broken, or may never come: a client that
         * expects 100 Continue and did not get it may not send it */
        if (!b->streamed || b->err_status || req->res.status == 413 || (rq->expect_continue && !rq->continue_sent))
            return false;
    }
    /* without a length or chunked framing, only the close ends the body */
    bool no_body = rq->is_head_method || req->res.status == 204 || req->res.status == 304 ||
                   (req->res.status >= 100 && req->res.status < 200);
    if (req->res.content_length == SIZE_MAX && !no_body &&
        h2o_find_header(&req->res.headers, H2O_TOKEN_TRANSFER_ENCODING, -1) == -1)
        return false;
    return true;
}

static char *put(char *dst, const char *s, size_t n)
{
    memcpy(dst, s, n);
    return dst + n;
}

static char *put_uint(char *dst, size_t v)
{
    char tmp[24];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        *dst++ = tmp[--n];
    return dst;
}

/* The status line and headers, formatted by hand: this runs per response. */
static h2o_iovec_t flatten_head(struct conn *c)
{
    h2o_req_t *req = &c->rq->req;
    h2o_context_t *ctx = c->hc->ctx;
    h2o_timestamp_t ts;
    h2o_get_timestamp(ctx, &req->pool, &ts);
    bool ka = keep_alive(c);
    req->http1_is_persistent = ka;
    const char *reason = req->res.reason ? req->res.reason : "";
    size_t cap = 128 + strlen(reason) + H2O_TIMESTR_RFC1123_LEN + ctx->globalconf->server_name.len;
    for (size_t i = 0; i < req->res.headers.size; i++)
        cap += req->res.headers.entries[i].name->len + req->res.headers.entries[i].value.len + 4;
    char *buf = h2o_mem_alloc_pool(&req->pool, cap), *d = buf;
    int status = req->res.status > 999 || req->res.status < 100 ? 500 : req->res.status;
    d = put(d, H2O_STRLIT("HTTP/1.1 "));
    *d++ = (char)('0' + status / 100);
    *d++ = (char)('0' + status / 10 % 10);
    *d++ = (char)('0' + status % 10);
    *d++ = ' ';
    d = put(d, reason, strlen(reason));
    if (h2o_find_header(&req->res.headers, H2O_TOKEN_DATE, -1) == -1) { /* a proxied response keeps the origin's */
        d = put(d, H2O_STRLIT("\r\nDate: "));
        d = put(d, ts.str->rfc1123, H2O_TIMESTR_RFC1123_LEN);
    }
    if (ka)
        d = put(d, H2O_STRLIT("\r\nConnection: keep-alive"));
    else
        d = put(d, H2O_STRLIT("\r\nConnection: close"));
    if (ctx->globalconf->server_name.len) {
        d = put(d, H2O_STRLIT("\r\nServer: "));
        d = put(d, ctx->globalconf->server_name.base, ctx->globalconf->server_name.len);
    }
    if (req->res.content_length != SIZE_MAX) {
        d = put(d, H2O_STRLIT("\r\nContent-Length: "));
        d = put_uint(d, req->res.content_length);
    }
    d = put(d, H2O_STRLIT("\r\n"));
    for (size_t i = 0; i < req->res.headers.size; i++) {
        const h2o_header_t *h = &req->res.headers.entries[i];
        d = put(d, h->name->base, h->name->len);
        d = put(d, H2O_STRLIT(": "));
        d = put(d, h->value.base, h->value.len);
        d = put(d, H2O_STRLIT("\r\n"));
    }
    d = put(d, H2O_STRLIT("\r\n"));
    VG_ASSERT((size_t)(d - buf) <= cap);
    return h2o_iovec_init(buf, (size_t)(d - buf));
}

static void on_send_next(h2o_socket_t *sock, const char *err)
{
    struct conn *c = sock->data;
    if (err) {
        close_conn(c);
        return;
    }
    h2o_proceed_response(&c->rq->req);
}

/* The request is over, body included: on to the next one. */
static void next_request(struct conn *c)
{
    struct body *b = &c->rq->body;
    if (b->held + b->avail) /* a streamed body's last piece, or what the handler did not read of it */
        h2o_buffer_consume(&c->sock->input, b->held + b->avail);
    rq_free(c);
    c->st = CS_HEAD;
    c->prev_len = 0;
    c->requests++;
    if (c->read_paused) {
        c->read_paused = false;
        vg_http_read_resume(c->sock, on_read);
    }
    if (c->sock->input->size) {
        set_timer(c, &c->hc->header_to);
        handle_input(c);
        return;
    }
    /* idle: give the input buffer back (it is recycled, not freed) */
    if (c->sock->input != &h2o_socket_buffer_prototype._initial_buf) {
        h2o_buffer_dispose(&c->sock->input);
        h2o_buffer_init(&c->sock->input, &h2o_socket_buffer_prototype);
    }
    c->idle = true;
    set_timer(c, &c->hc->idle_to);
}

/* CS_DISCARD: drop body bytes as they come; the next request follows. */
static void discard_body(struct conn *c)
{
    struct body *b = &c->rq->body;
    if (!body_account(c)) {
        close_conn(c);
        return;
    }
    b->total += b->avail;
    h2o_buffer_consume(&c->sock->input, b->held + b->avail);
    b->held = b->avail = 0;
    if (b->total > c->hc->s.max_body_bytes) {
        log_reject(c, 413, "request body exceeds limits.body_size (after the response)");
        close_conn(c);
        return;
    }
    if (b->complete)
        next_request(c);
}

/* The response is out: next request on this connection, or close. */
static void on_send_complete(h2o_socket_t *sock, const char *err)
{
    struct conn *c = sock->data;
    struct rq *rq = c->rq;
    if (!err && !rq->req.http1_is_persistent &&
        ((rq->body.kind != BODY_NONE && !rq->body.complete) || c->sock->input->size)) {
        linger_close(c);
        return;
    }
    if (err || !rq->req.http1_is_persistent) {
        close_conn(c);
        return;
    }
    struct body *b = &c->rq->body;
    if (b->kind != BODY_NONE && !b->complete) {
        c->st = CS_DISCARD;
        b->want = false;
        if (h2o_timeout_is_linked(&b->defer))
            h2o_timeout_unlink(&b->defer);
        if (!c->read_paused)
            vg_http_read_resume(c->sock, on_read);
        set_timer(c, &c->hc->idle_to);
        discard_body(c);
        return;
    }
    next_request(c);
}

static void on_done_te(h2o_timeout_entry_t *te)
{
    struct conn *c = H2O_STRUCT_FROM_MEMBER(struct conn, done_te, te);
    on_send_complete(c->sock, NULL);
}

static void write_response(struct conn *c, h2o_iovec_t *bufs, size_t n, h2o_send_state_t state)
{
    struct rq *rq = c->rq;
    h2o_iovec_t *v = alloca(sizeof(*v) * (n + 1));
    size_t k = 0;
    if (state == H2O_SEND_STATE_ERROR)
        rq->req.http1_is_persistent = 0; /* the body is cut short: only a close says so */
    if (!rq->sent_head) {
        v[k++] = flatten_head(c);
        rq->sent_head = true;
    }
    if (!rq->is_head_method) {
        for (size_t i = 0; i < n; i++) {
            if (bufs[i].len)
                v[k++] = bufs[i];
            rq->req.bytes_sent += bufs[i].len;
        }
    }
    bool more = h2o_send_state_is_in_progress(state);
    if (!k) {
        if (more)
            h2o_proceed_response(&rq->req);
        else /* not from inside h2o_send: its caller may still look at the request */
            h2o_timeout_link(c->hc->ctx->loop, &c->hc->ctx->zero_timeout, &c->done_te);
        return;
    }
    h2o_socket_write(c->sock, v, k, more ? on_send_next : on_send_complete);
}

static void finalostream_send(h2o_ostream_t *self, h2o_req_t *req, h2o_iovec_t *bufs, size_t n, h2o_send_state_t state)
{
    struct conn *c = (struct conn *)req->conn;
    struct rq *rq = c->rq;
    VG_ASSERT(self == &rq->ostr);
    if (rq->continue_writing) { /* one write at a time: after the 100 */
        rq->stash.bufs = h2o_mem_alloc_pool(&req->pool, sizeof(*bufs) * (n ? n : 1));
        memcpy(rq->stash.bufs, bufs, sizeof(*bufs) * n);
        rq->stash.n = n;
        rq->stash.state = state;
        rq->stash.pending = true;
        return;
    }
    write_response(c, bufs, n, state);
}

/* ---- request bodies --------------------------------------------------------------------- */

/* The connection's request, when req is it (not a subrequest made on the
 * same connection, such as verge.fetch's: its body is its own). */
static struct rq *rq_of(h2o_req_t *req)
{
    if (req->conn->callbacks != &callbacks)
        return NULL;
    struct rq *rq = ((struct conn *)req->conn)->rq;
    return rq && &rq->req == req ? rq : NULL;
}

bool vg_http_body_is_streamed(h2o_req_t *req)
{
    if (vg__http2_owns(req))
        return vg__http2_body_is_streamed(req);
    struct rq *rq = rq_of(req);
    return rq && rq->body.streamed;
}

size_t vg_http_body_length(h2o_req_t *req)
{
    if (vg__http2_owns(req))
        return vg__http2_body_length(req);
    struct rq *rq = rq_of(req);
    return rq ? rq->body.length : SIZE_MAX;
}

/* ---- files ------------------------------------------------------------------------------ */

static void file_send(struct conn *c);

/* The socket can take more: the head's rest went out, or it drained. */
static void on_file_writable(h2o_socket_t *sock, const char *err)
{
    struct conn *c = sock->data;
    if (err) {
        close_conn(c);
        return;
    }
    file_send(c);
}

/* The file is out (or failed): finish like any response, from the loop
 * (this may run inside vg_http_send_file, whose caller still holds req). */
static void file_done(struct conn *c, bool ok)
{
    struct rq *rq = c->rq;
    close(rq->file_fd);
    rq->file_fd = -1;
    set_timer(c, NULL);
    if (!ok) /* the body is cut short: only a close says so */
        rq->req.http1_is_persistent = 0;
    h2o_timeout_link(c->hc->ctx->loop, &c->hc->ctx->zero_timeout, &c->done_te);
}

static void on_file_turn(h2o_timeout_entry_t *te)
{
    file_send(H2O_STRUCT_FROM_MEMBER(struct conn, file_te, te));
}

/* Sends file bytes until the socket is full (then waits for it to drain),
 * the file is done, or this turn's share is used (then goes on next turn:
 * the socket is still writable, and an edge-triggered registration would
 * not say so again). */
static void file_send(struct conn *c)
{
    struct rq *rq = c->rq;
    int sfd = h2o_socket_get_fd(c->sock);
    size_t turn = SENDFILE_TURN;
    bool full = false;
    while (rq->file_left && turn) {
        size_t want = rq->file_left < turn ? rq->file_left : turn;
        ssize_t n = sendfile(sfd, rq->file_fd, &rq->file_off, want);
        if (n > 0) {
            rq->file_left -= (size_t)n;
            turn -= (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN) {
            full = true;
            break;
        }
        file_done(c, false); /* an error, or the file shrank under us */
        return;
    }
    if (!rq->file_left) {
        file_done(c, true);
        return;
    }
    set_timer(c, &c->hc->idle_to);
    if (full)
        h2o_socket_notify_write(c->sock, on_file_writable);
    else
        h2o_timeout_link(c->hc->ctx->loop, &c->hc->ctx->zero_timeout, &c->file_te);
}

bool vg_http_send_file(h2o_req_t *req, int fd, size_t len)
{
    static h2o_generator_t generator = {NULL, NULL}; /* the body is not pulled through h2o */
    struct rq *rq = rq_of(req);
    if (!rq)
        return false;
    struct conn *c = (struct conn *)req->conn;
    if (c->sock->ssl || rq->sent_head || rq->continue_writing || req->prefilters)
        return false;
    req->res.content_length = len;
    h2o_start_response(req, &generator);
    /* The path's filters (the node's request-id header, h2o's chunked
     * encoder, which stays out of responses with a length) add headers at
     * most: a filter that inserted an output stream here would be bypassed */
    VG_ASSERT(req->_ostr_top == &rq->ostr);
    rq->file_fd = fd;
    rq->file_off = 0;
    rq->file_left = rq->is_head_method ? 0 : len;
    req->bytes_sent += rq->file_left;
    h2o_iovec_t head = flatten_head(c);
    rq->sent_head = true;
    /* nothing else is being written on this connection now (one response
     * at a time), so the head may go straight to the socket, held back
     * (MSG_MORE) to share a segment with the file's first bytes */
    ssize_t n = send(h2o_socket_get_fd(c->sock), head.base, head.len, MSG_NOSIGNAL | (rq->file_left ? MSG_MORE : 0));
    if (n == (ssize_t)head.len) {
        file_send(c);
        return true;
    }
    if (n < 0 && errno != EAGAIN && errno != EINTR) {
        file_done(c, false);
        return true;
    }
    size_t sent = n > 0 ? (size_t)n : 0;
    h2o_iovec_t rest = h2o_iovec_init(head.base + sent, head.len - sent);
    h2o_socket_write(c->sock, &rest, 1, on_file_writable);
    return true;
}

/* Decodes what arrived of a chunked body; false on malformed input. */
static bool chunked_decode(struct conn *c)
{
    struct body *b = &c->rq->body;
    h2o_buffer_t *in = c->sock->input;
    size_t from = b->held + b->avail;
    if (b->complete || in->size <= from)
        return true;
    size_t sz = in->size - from;
    ssize_t r = phr_decode_chunked(&b->dec, in->bytes + from, &sz);
    if (r == -1)
        return false;
    b->avail += sz;
    if (r >= 0) {
        b->complete = true;
        in->size = from + sz + (size_t)r; /* what follows the body stays, right after it */
    } else {
        in->size = from + sz;
    }
    return true;
}

/* Accounts bytes that arrived for a Content-Length body. */
static void length_account(struct conn *c)
{
    struct body *b = &c->rq->body;
    size_t have = c->sock->input->size - b->held - b->avail;
    size_t take = have < b->remaining ? have : b->remaining;
    b->avail += take;
    b->remaining -= take;
    if (!b->remaining)
        b->complete = true;
}

static bool body_account(struct conn *c)
{
    struct body *b = &c->rq->body;
    if (b->kind == BODY_CHUNKED)
        return chunked_decode(c);
    length_account(c);
    return true;
}

static void body_deliver(struct conn *c)
{
    struct rq *rq = c->rq;
    struct body *b = &rq->body;
    b->want = false;
    set_timer(c, NULL);
    vg_http_body_cb cb = b->cb;
    if (b->err_status) {
        b->delivered_end = true;
        cb(b->data, h2o_iovec_init(NULL, 0), VG_HTTP_BODY_ERROR, b->err_status, b->err_reason);
        return;
    }
    h2o_iovec_t buf = h2o_iovec_init(c->sock->input->bytes + b->held, b->avail);
    b->held += b->avail;
    b->total += b->avail;
    b->avail = 0;
    if (b->total > b->limit) {
        b->delivered_end = true;
        cb(b->data, h2o_iovec_init(NULL, 0), VG_HTTP_BODY_ERROR, 413, "request body exceeds limits.body_size");
        return;
    }
    bool end = b->complete;
    if (end)
        b->delivered_end = true;
    else if (!c->read_paused)
        h2o_socket_read_stop(c->sock); /* backpressure until the reader asks again */
    cb(b->data, buf, end ? VG_HTTP_BODY_END : VG_HTTP_BODY_MORE, 0, NULL);
}

/* New input (or a timeout) while a streamed body is being read. */
static void body_on_input(struct conn *c)
{
    struct body *b = &c->rq->body;
    if (!b->err_status && !body_account(c)) {
        b->err_status = 400;
        b->err_reason = "malformed chunked request body";
    }
    if (b->want && (b->avail || b->complete || b->err_status))
        body_deliver(c);
}

static void on_body_defer(h2o_timeout_entry_t *te)
{
    struct rq *rq = H2O_STRUCT_FROM_MEMBER(struct rq, body.defer, te);
    struct conn *c = (struct conn *)rq->req.conn;
    body_deliver(c);
}

static void on_continue_written(h2o_socket_t *sock, const char *err)
{
    struct conn *c = sock->data;
    struct rq *rq = c->rq;
    if (err) {
        close_conn(c);
        return;
    }
    rq->continue_writing = false;
    if (rq->stash.pending) {
        rq->stash.pending = false;
        write_response(c, rq->stash.bufs, rq->stash.n, rq->stash.state);
        return;
    }
    if (rq->process_after_continue) {
        rq->process_after_continue = false;
        c->st = CS_HANDLE;
        h2o_process_request(&rq->req);
    }
}

static void send_continue(struct conn *c)
{
    static const h2o_iovec_t res = {H2O_STRLIT("HTTP/1.1 100 Continue\r\n\r\n")};
    struct rq *rq = c->rq;
    rq->continue_sent = true;
    rq->continue_writing = true;
    h2o_socket_write(c->sock, (h2o_iovec_t *)&res, 1, on_continue_written);
}

void vg_http_body_read(h2o_req_t *req, size_t limit, vg_http_body_cb cb, void *data)
{
    if (vg__http2_owns(req)) {
        vg__http2_body_read(req, limit, cb, data);
        return;
    }
    struct rq *rq = rq_of(req);
    VG_AN(rq);
    struct conn *c = (struct conn *)req->conn;
    struct body *b = &rq->body;
    VG_ASSERT(b->streamed && !b->want && !b->delivered_end);
    if (b->held) {
        h2o_buffer_consume(&c->sock->input, b->held);
        b->held = 0;
    }
    b->cb = cb;
    b->data = data;
    b->limit = limit;
    b->want = true;
    if (rq->expect_continue && !rq->continue_sent && !b->avail && !b->complete)
        send_continue(c);
    if (b->avail || b->complete || b->err_status) {
        h2o_timeout_link(c->hc->ctx->loop, &c->hc->ctx->zero_timeout, &b->defer);
        return;
    }
    if (!c->read_paused)
        vg_http_read_resume(c->sock, on_read);
    set_timer(c, &c->hc->idle_to);
}

/* ---- request heads ------------------------------------------------------------------------ */

static struct rq *rq_alloc(struct conn *c)
{
    struct vg_http1_ctx *hc = c->hc;
    struct rq *rq = hc->n_free ? hc->freelist[--hc->n_free] : vg_xmalloc(sizeof(*rq));
    memset(rq, 0, sizeof(*rq));
    h2o_init_request(&rq->req, &c->super, NULL);
    rq->ostr.do_send = finalostream_send;
    rq->req._ostr_top = &rq->ostr;
    rq->file_fd = -1;
    rq->body.defer.cb = on_body_defer;
    c->rq = rq;
    return rq;
}

static h2o_iovec_t rebase(const char *p, size_t len, const char *from, char *to)
{
    return h2o_iovec_init(to + (p - from), len);
}

static bool has_token(h2o_iovec_t list, const char *tok, size_t n)
{
    return h2o_contains_token(list.base, list.len, tok, n, ',');
}

/* Fills the request from a parsed head (pointers already into pool memory).
 * Returns 0, or the status for a head that cannot be served. */
static int init_request(struct conn *c, struct rq *rq, const struct phr_header *h, size_t n, ptrdiff_t orig_off,
                        int minor, h2o_iovec_t *te, h2o_iovec_t *cl, const char **why)
{
    h2o_req_t *req = &rq->req;
    h2o_iovec_t connection = {NULL, 0}, expect = {NULL, 0};
    req->version = 0x100 | (minor != 0);
    req->input.scheme = c->sock->ssl ? &H2O_URL_SCHEME_HTTPS : &H2O_URL_SCHEME_HTTP;
    h2o_vector_reserve(&req->pool, &req->headers, n);
    for (size_t i = 0; i < n; i++) {
        const char *orig = h[i].name + orig_off; /* the name as sent, for origins */
        h2o_strtolower((char *)h[i].name, h[i].name_len);
        const h2o_token_t *tok = h2o_lookup_token(h[i].name, h[i].name_len);
        if (!tok) {
            h2o_add_header_by_str(&req->pool, &req->headers, h[i].name, h[i].name_len, 0, orig, h[i].value,
                                  h[i].value_len);
            continue;
        }
        h2o_iovec_t v = h2o_iovec_init(h[i].value, h[i].value_len);
        if (tok == H2O_TOKEN_HOST)
            req->input.authority = v;
        else if (tok == H2O_TOKEN_CONTENT_LENGTH)
            *cl = v;
        else if (tok == H2O_TOKEN_TRANSFER_ENCODING)
            *te = v;
        else if (tok == H2O_TOKEN_EXPECT)
            expect = v;
        else if (tok == H2O_TOKEN_UPGRADE)
            ; /* h2c upgrades are not offered (RFC 9113 deprecates them); prior knowledge and ALPN are */
        else {
            h2o_add_header(&req->pool, &req->headers, tok, orig, v.base, v.len);
            if (tok == H2O_TOKEN_CONNECTION)
                connection = v;
        }
    }
    if (connection.base)
        req->http1_is_persistent = has_token(connection, H2O_STRLIT("keep-alive")) ||
                                   (req->version >= 0x101 && !has_token(connection, H2O_STRLIT("close")));
    else
        req->http1_is_persistent = req->version >= 0x101;
    rq->is_head_method = h2o_memis(req->input.method.base, req->input.method.len, H2O_STRLIT("HEAD"));
    if (expect.base) {
        if (!h2o_lcstris(expect.base, expect.len, H2O_STRLIT("100-continue"))) {
            *why = "unsupported Expect";
            return 417;
        }
        rq->expect_continue = req->version >= 0x101;
    }
    return 0;
}

/* Content-Length / Transfer-Encoding -> the body's framing (the guard
 * already refused both together and conflicting lengths). */
static int init_body(struct conn *c, struct rq *rq, h2o_iovec_t te, h2o_iovec_t cl, const char **why)
{
    struct body *b = &rq->body;
    b->length = SIZE_MAX;
    if (te.base) {
        if (!h2o_lcstris(te.base, te.len, H2O_STRLIT("chunked"))) {
            *why = "unsupported Transfer-Encoding";
            return 501;
        }
        b->kind = BODY_CHUNKED;
        b->dec.consume_trailer = 1;
        return 0;
    }
    if (cl.base) {
        size_t len = h2o_strtosize(cl.base, cl.len);
        if (len == SIZE_MAX) {
            *why = "invalid Content-Length";
            return 400;
        }
        if (len > c->hc->s.max_body_bytes) {
            *why = "request body exceeds limits.body_size";
            return 413;
        }
        if (len) {
            b->kind = BODY_LENGTH;
            b->length = b->remaining = len;
        }
    }
    return 0;
}

/* Starts the handler, after a "100 Continue" that is still being written. */
static void process(struct conn *c)
{
    struct rq *rq = c->rq;
    set_timer(c, NULL);
    if (rq->continue_writing) {
        rq->process_after_continue = true;
        return;
    }
    c->st = CS_HANDLE;
    h2o_process_request(&rq->req);
}

/* The body is small and here: it becomes req->entity. */
static void finish_buffered_body(struct conn *c)
{
    struct rq *rq = c->rq;
    struct body *b = &rq->body;
    h2o_iovec_t e = h2o_strdup(&rq->req.pool, c->sock->input->bytes, b->avail);
    rq->req.entity = e;
    h2o_buffer_consume(&c->sock->input, b->avail);
    b->avail = 0;
    process(c);
}

/* The body goes to the handler piece by piece from now on. The evloop
 * reads a socket until the kernel runs dry, so the kernel's receive buffer
 * (autotuned up to several MiB) is what bounds one read: cap it. */
static void start_streaming(struct conn *c)
{
    c->rq->body.streamed = true;
    int fd = h2o_socket_get_fd(c->sock), sz = STREAM_RCVBUF;
    if (fd >= 0)
        (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));
}

/* CS_BUFFER: wait for a small body to arrive whole; switch to streaming
 * once it outgrows body_buffer_bytes (a chunked body's size shows late). */
static void buffer_body(struct conn *c)
{
    struct rq *rq = c->rq;
    struct body *b = &rq->body;
    if (!body_account(c)) {
        reject_raw(c, 400, "malformed chunked request body");
        return;
    }
    if (b->complete) {
        finish_buffered_body(c);
        return;
    }
    if (b->avail > c->hc->s.max_body_bytes) {
        reject_raw(c, 413, "request body exceeds limits.body_size");
        return;
    }
    if (b->kind == BODY_CHUNKED && b->avail > c->hc->s.body_buffer_bytes) {
        start_streaming(c);
        process(c);
    }
}

static void start_body(struct conn *c)
{
    struct rq *rq = c->rq;
    struct body *b = &rq->body;
    if (b->kind == BODY_NONE) {
        process(c);
        return;
    }
    if (b->kind == BODY_LENGTH && b->length > c->hc->s.body_buffer_bytes) {
        start_streaming(c);
        body_account(c);
        process(c);
        return;
    }
    c->st = CS_BUFFER;
    if (rq->expect_continue && !c->sock->input->size)
        send_continue(c);
    buffer_body(c);
}

/* A complete head of len bytes at the front of the input: copy it into the
 * request's pool (the input may move while the request runs), twice: header
 * names are lower-cased in the first copy, the second keeps them as sent
 * (h2o's orig_name, which origins see). Then build the request. */
static void on_head(struct conn *c, size_t len, h2o_iovec_t method, h2o_iovec_t path, int minor, struct phr_header *h,
                    size_t n)
{
    const char *why;
    if (vg_http_guard_check((const struct vg_http_raw_header *)h, n, &why) != 0) {
        reject_raw(c, 400, why);
        return;
    }
    struct rq *rq = rq_alloc(c);
    h2o_req_t *req = &rq->req;
    const char *from = c->sock->input->bytes;
    char *copy = h2o_mem_alloc_pool(&req->pool, 2 * len);
    memcpy(copy, from, len);
    memcpy(copy + len, from, len);
    req->input.method = rebase(method.base, method.len, from, copy);
    req->input.path = rebase(path.base, path.len, from, copy);
    for (size_t i = 0; i < n; i++) {
        h[i].name = copy + (h[i].name - from);
        h[i].value = copy + (h[i].value - from);
    }
    h2o_buffer_consume(&c->sock->input, len);
    c->prev_len = 0;
    h2o_iovec_t te = {NULL, 0}, cl = {NULL, 0};
    int status = init_request(c, rq, h, n, (ptrdiff_t)len, minor, &te, &cl, &why);
    if (!status)
        status = init_body(c, rq, te, cl, &why);
    if (status) {
        reject_raw(c, status, why);
        return;
    }
    start_body(c);
}

static bool is_h2_preface(h2o_buffer_t *in)
{
    static const char sig[] = "PRI * HTTP/2";
    return in->size >= sizeof(sig) - 1 && memcmp(in->bytes, sig, sizeof(sig) - 1) == 0;
}

/* Hands the connection to HTTP/2 (http2.c; its input already in sock). */
static void to_http2(struct conn *c)
{
    struct vg_http1_ctx *hc = c->hc;
    h2o_hostconf_t **hosts = c->super.hosts;
    h2o_socket_t *sock = c->sock;
    struct timeval at = c->super.connected_at;
    c->sock = NULL;
    close_conn(c);
    vg__http2_accept(hc, hosts, sock, at);
}

static void parse_head(struct conn *c)
{
    h2o_buffer_t *in = c->sock->input;
    size_t max = c->hc->s.max_header_bytes;
    size_t len = in->size < max ? in->size : max;
    struct phr_header h[MAX_HEADERS];
    size_t n = MAX_HEADERS;
    h2o_iovec_t method, path;
    int minor;
    int r = phr_parse_request(in->bytes, len, (const char **)&method.base, &method.len, (const char **)&path.base,
                              &path.len, &minor, h, &n, c->prev_len);
    c->prev_len = len;
    if (r > 0) {
        on_head(c, (size_t)r, method, path, minor, h, n);
        return;
    }
    if (r == -2) {
        if (len >= max)
            reject_raw(c, 431, "request head exceeds limits.header_size");
        return;
    }
    if (c->requests == 0 && !c->sock->ssl && is_h2_preface(in)) {
        to_http2(c);
        return;
    }
    reject_raw(c, 400, n >= MAX_HEADERS ? "too many header fields" : "malformed request head");
}

/* Whatever arrived, by state. */
static void handle_input(struct conn *c)
{
    switch (c->st) {
    case CS_HEAD:
        if (c->idle) { /* first byte after an idle wait: the head's clock starts */
            c->idle = false;
            set_timer(c, &c->hc->header_to);
        }
        parse_head(c);
        return;
    case CS_BUFFER:
        buffer_body(c);
        return;
    case CS_HANDLE:
        if (c->rq->body.streamed && !c->rq->body.delivered_end) {
            body_on_input(c);
            return;
        }
        /* pipelined bytes wait for the running request; bound them */
        if (c->sock->input->size > PIPELINE_CAP && !c->read_paused) {
            c->read_paused = true;
            h2o_socket_read_stop(c->sock);
        }
        return;
    case CS_DISCARD:
        set_timer(c, &c->hc->idle_to);
        discard_body(c);
        return;
    case CS_LINGER:
        h2o_buffer_consume(&c->sock->input, c->sock->input->size);
        if (vg_now_ms() > c->linger_until)
            close_conn(c);
        else
            set_timer(c, &c->hc->linger_to);
        return;
    case CS_HANDSHAKE:
    case CS_CLOSING:
        return;
    }
}

static void on_read(h2o_socket_t *sock, const char *err)
{
    struct conn *c = sock->data;
    if (err) {
        if (c->st == CS_HANDLE && !(c->rq->body.streamed && !c->rq->body.complete)) {
            /* a half-close after a complete request still gets its answer */
            c->peer_eof = true;
            h2o_socket_read_stop(sock);
            return;
        }
        close_conn(c);
        return;
    }
    handle_input(c);
}

/* ---- accept ------------------------------------------------------------------------------ */

static void start_http1(struct conn *c)
{
    c->st = CS_HEAD;
    vg_http_read_resume(c->sock, on_read);
    if (c->sock->input->size)
        handle_input(c);
}

static void on_handshake(h2o_socket_t *sock, const char *err)
{
    struct conn *c = sock->data;
    if (err) {
        close_conn(c);
        return;
    }
    h2o_iovec_t proto = h2o_socket_ssl_get_selected_protocol(sock);
    if (h2o_memis(proto.base, proto.len, H2O_STRLIT("h2"))) {
        set_timer(c, NULL);
        to_http2(c);
        return;
    }
    start_http1(c);
}

void vg_http_accept(struct vg_http1_ctx *hc, h2o_accept_ctx_t *accept, h2o_socket_t *sock)
{
    struct conn *c = vg_xcalloc(1, sizeof(*c));
    c->super.ctx = hc->ctx;
    c->super.hosts = accept->hosts;
    c->super.connected_at = *h2o_get_timestamp(hc->ctx, NULL, NULL);
    c->super.id = ++hc->next_id;
    c->super.callbacks = &callbacks;
    c->hc = hc;
    c->sock = sock;
    c->te.cb = on_timeout;
    c->done_te.cb = on_done_te;
    c->file_te.cb = on_file_turn;
    sock->data = c;
    h2o_linklist_insert(&hc->conns, &c->link);
    set_timer(c, &hc->header_to);
    if (accept->ssl_ctx) {
        c->st = CS_HANDSHAKE;
        h2o_socket_ssl_handshake(sock, accept->ssl_ctx, NULL, on_handshake);
        return;
    }
    start_http1(c);
}

void vg_http1_shutdown(struct vg_http1_ctx *hc)
{
    hc->shutdown = true;
    vg__http2_shutdown(hc);
    h2o_linklist_t *n = hc->conns.next;
    while (n != &hc->conns) {
        struct conn *c = H2O_STRUCT_FROM_MEMBER(struct conn, link, n);
        n = n->next;
        if ((c->st == CS_HEAD && c->sock->input->size == 0) || c->st == CS_HANDSHAKE)
            close_conn(c); /* idle: nothing to finish */
    }
}

/* ---- h2o connection callbacks ------------------------------------------------------------------ */

static socklen_t get_sockname(h2o_conn_t *conn, struct sockaddr *sa)
{
    return h2o_socket_getsockname(((struct conn *)conn)->sock, sa);
}

static socklen_t get_peername(h2o_conn_t *conn, struct sockaddr *sa)
{
    return h2o_socket_getpeername(((struct conn *)conn)->sock, sa);
}

static h2o_socket_t *get_socket(h2o_conn_t *conn)
{
    return ((struct conn *)conn)->sock;
}

static const h2o_conn_callbacks_t callbacks = {
    .get_sockname = get_sockname,
    .get_peername = get_peername,
    .get_socket = get_socket,
};

bool vg_http_req_first_on_conn(h2o_req_t *req)
{
    if (req->conn->callbacks == &callbacks)
        return ((struct conn *)req->conn)->requests == 0; /* counted when a request ends */
    return vg__http2_first_stream(req);
}
