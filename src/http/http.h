/* http: request routing (pure), request sanity checks and TLS contexts on
 * top of libh2o (the HTTP/1.1 + HTTP/2 engine; see docs/decisions.md).
 *
 * Routing is pure (no I/O, no h2o types) so that it can be unit-tested and
 * fuzzed; the h2o-facing helpers take h2o_req_t. */
#ifndef VG_HTTP_H
#define VG_HTTP_H

#include "base/base.h"
#include "conf/conf.h"

#include <h2o.h>

/* ---- routing ---------------------------------------------------------------- */

/* Path match by kind. PREFIX is segment-aware: "/api" matches "/api",
 * "/api/" and "/api/x" but not "/apix"; "/" matches everything. GLOB: '*'
 * matches within one segment, '**' across segments; the work per call is
 * bounded (a pathological pattern/path pair fails to match instead of
 * running long). path need not be NUL-terminated. */
bool vg_http_path_match(enum vg_conf_match_kind kind, const char *pattern, const char *path, size_t len);

/* Host match: exact (case-insensitive), "*" (any) or "*.suffix" (one or
 * more labels before suffix). host may carry a ":port", which is ignored. */
bool vg_http_host_match(const char *pattern, const char *host, size_t len);

/* Picks the app for a Host: first an app listing the host exactly, then one
 * matching by wildcard, then the first app with no hosts (the default app).
 * Returns the index or -1. */
int vg_http_app_select(struct vg_conf_app *const *apps, size_t n_apps, const char *host, size_t len);

enum {
    VG_HTTP_ROUTE_NONE = -1,       /* no route matches the path: 404 */
    VG_HTTP_ROUTE_BAD_METHOD = -2, /* a route matches the path, not the method: 405 */
};

/* First route of app (in order) matching host, path and method; returns its
 * index or a VG_HTTP_ROUTE_* code. method is a VG_CONF_METHOD_* bit (0 for an
 * unknown method, which matches only routes that allow every method). For
 * VG_HTTP_ROUTE_BAD_METHOD, *allowed (if not NULL) is the union of the
 * methods the path-matching routes accept (for the Allow header). */
int vg_http_route_find(const struct vg_conf_app *app, const char *host, size_t hlen, const char *path, size_t plen,
                       uint32_t method, uint32_t *allowed);

/* Writes "GET, HEAD, ..." for a VG_CONF_METHOD_* mask. */
void vg_http_methods_format(uint32_t mask, char *buf, size_t cap);

/* ---- the event loop ------------------------------------------------------------ */

/* h2o_evloop_run, serving as nginx does: connections registered
 * edge-triggered, the sockets of one poll served in the order epoll
 * reported them (h2o alone serves a batch in reverse; see http_loop.c).
 * Same arguments and result. */
int vg_http_loop_run(h2o_evloop_t *loop, int32_t max_wait);

/* Frees what vg_http_loop_run keeps for the calling thread (at its end). */
void vg_http_loop_done(void);

/* h2o_socket_read_start for a connection whose reading verge paused: the
 * loop registers connections edge-triggered, and a pause and a restart in
 * one turn would otherwise leave bytes epoll already reported unread. */
void vg_http_read_resume(h2o_socket_t *sock, h2o_socket_cb cb);

/* ---- request checks (h2o) ----------------------------------------------------- */

/* The header rules for a request whose head was not checked raw (HTTP/2:
 * HPACK lets any byte through): Content-Length together with
 * Transfer-Encoding, several differing Content-Length values, a
 * Content-Length that is not a number, header names/values with bytes
 * outside RFC 9110's grammar. HTTP/1 heads get the same rules from
 * vg_http_guard_check and picohttpparser before they are parsed.
 * Returns 0 when acceptable, else the status to answer (400) and a reason. */
int vg_http_req_check(h2o_req_t *req, const char **reason);
/* RFC 9110's field grammar, for headers a script or peer hands us: a name
 * is a non-empty token; a value has no CR, LF, NUL or other controls (it
 * could not split the head). */
bool vg_http_name_ok(h2o_iovec_t name);
bool vg_http_value_ok(h2o_iovec_t value);

/* One raw HTTP/1 header line as picohttpparser reports it (its struct
 * phr_header; name is NULL for an obs-fold continuation line). */
struct vg_http_raw_header {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
};

/* The smuggling rules on a raw header list: obs-fold, conflicting or
 * malformed Content-Length, Content-Length with Transfer-Encoding, several
 * Host headers. 0 when acceptable, else -1 and a reason. Applied to every
 * HTTP/1 request head before it is interpreted. */
int vg_http_guard_check(const struct vg_http_raw_header *h, size_t n, const char **reason);

/* Total size of the request line + header fields as received (approximate
 * for HTTP/2, where it is the decoded size). */
size_t vg_http_req_header_bytes(h2o_req_t *req);

/* Whether req is the first on its connection (its trace then shows the
 * connection's setup: accept, TLS). */
bool vg_http_req_first_on_conn(h2o_req_t *req);

/* The request's trace (obs.h), carried in h2o's per-request env so that
 * whatever sees only the request (filters, verge.fetch, the Lua runtime)
 * can add spans; NULL when tracing is off. Set once, by the node. */
struct vg_trace;
void vg_http_req_set_trace(h2o_req_t *req, struct vg_trace *t);
/* The same, with slot as the env's storage while req has none (no
 * allocation: every request sets its trace). slot must outlive every
 * vg_http_req_trace of req; the env grows into pool memory if something
 * adds to it later. */
void vg_http_req_set_trace_in(h2o_req_t *req, struct vg_trace *t, h2o_iovec_t slot[2]);
extern const h2o_iovec_t vg__http_env_trace; /* the env's key: its first entry, as a rule */
struct vg_trace *vg__http_req_trace_find(h2o_req_t *req);
static inline struct vg_trace *vg_http_req_trace(h2o_req_t *req)
{
    if (req->env.size >= 2 && req->env.entries[0].base == vg__http_env_trace.base)
        return (struct vg_trace *)(void *)req->env.entries[1].base;
    return vg__http_req_trace_find(req);
}

/* application/x-www-form-urlencoded decoding ('+' is a space, %XX a byte;
 * a malformed escape stays as it is) of n bytes into out (n bytes are
 * always enough); returns the decoded length. */
size_t vg_http_form_decode(const char *s, size_t n, char *out);
/* The first query parameter called name, decoded, on req's pool; false
 * when there is none. */
bool vg_http_query_param(h2o_req_t *req, const char *name, h2o_iovec_t *value);

/* ---- server connections ------------------------------------------------------ */

/* verge serves HTTP/1.x (http1.c) and HTTP/2 (http2.c, on libnghttp2;
 * ALPN "h2" or the h2c prior-knowledge preface) itself, on h2o's sockets
 * and request objects. It does so because h2o 2.2.5 reads a whole request
 * body before any handler runs; here a large body is streamed to the
 * handler (see vg_http_body_read), and slow headers get 408, idle
 * connections their own timeout. See docs/decisions.md. */

struct vg_http1_settings {
    uint64_t header_timeout_ms; /* first byte of a request to the end of its head: 408 after */
    uint64_t idle_timeout_ms;   /* keep-alive wait between requests, and between body reads: close after */
    size_t max_header_bytes;    /* request line + headers: 431 above (the node's largest app limit) */
    size_t max_body_bytes;      /* request body: 413 above (the node's largest app limit) */
    size_t body_buffer_bytes;   /* bodies up to this are read whole before the handler runs */
};

/* Per-worker state for vg_http_accept, both versions (timeouts live in the
 * loop). */
struct vg_http1_ctx;
struct vg_http1_ctx *vg_http1_ctx_create(h2o_context_t *ctx, const struct vg_http1_settings *s);
void vg_http1_ctx_destroy(struct vg_http1_ctx *c);

/* Takes over an accepted socket: TLS handshake when accept->ssl_ctx is set,
 * then HTTP/2 or HTTP/1.x. */
void vg_http_accept(struct vg_http1_ctx *c, h2o_accept_ctx_t *accept, h2o_socket_t *sock);

/* Graceful shutdown: closes idle HTTP/1 keep-alive connections now and
 * makes busy ones close after their current response; sends HTTP/2
 * connections a GOAWAY (streams under way finish, then they close). */
void vg_http1_shutdown(struct vg_http1_ctx *c);

/* ---- request bodies ---------------------------------------------------------------- */

/* Whether req's body is still arriving while the request is handled: a
 * body larger than body_buffer_bytes (or of unknown length and growing
 * past it). Then req->entity is empty and the body is read with
 * vg_http_body_read; otherwise any body is whole in req->entity. On
 * HTTP/2 the stream's flow-control window is the backpressure: it is
 * given back as the reader takes pieces. */
bool vg_http_body_is_streamed(h2o_req_t *req);

/* The streamed body's declared length (Content-Length), or SIZE_MAX when it
 * is chunked. Only meaningful when vg_http_body_is_streamed. */
size_t vg_http_body_length(h2o_req_t *req);

enum vg_http_body_status {
    VG_HTTP_BODY_MORE,  /* buf holds body bytes (never empty); more follow */
    VG_HTTP_BODY_END,   /* buf holds the last bytes (may be empty); done */
    VG_HTTP_BODY_ERROR, /* the body cannot be completed (see the reason); buf empty */
};

/* status 400 (malformed chunked encoding), 408 (client too slow) or 413
 * (over the limit) with a reason, for VG_HTTP_BODY_ERROR; 0 and NULL
 * otherwise. When the client goes away instead, the request ends (its pool
 * destructors run) and cb is not called. */
typedef void (*vg_http_body_cb)(void *data, h2o_iovec_t buf, enum vg_http_body_status st, int status,
                                const char *reason);

/* Asks for the next piece of a streamed body. cb runs once, always later
 * from the loop (never inside this call). buf stays valid until the next
 * vg_http_body_read or the end of the request. Between a callback and the
 * next call the connection does not read from the client (backpressure).
 * The first call sends "100 Continue" when the client expects it. A body
 * over limit bytes ends with VG_HTTP_BODY_ERROR / 413. If the response
 * finishes before the body was read to the end, the connection closes
 * after it. Must not be called again after END or ERROR. */
void vg_http_body_read(h2o_req_t *req, size_t limit, vg_http_body_cb cb, void *data);

/* The client's address of req ("192.0.2.1", "2001:db8::1") into buf,
 * NUL-terminated; empty when the connection has none (a test stub). With
 * inet_ntop, not getnameinfo/sprintf: it runs on every proxied request. */
#define VG_HTTP_PEER_MAX 46 /* INET6_ADDRSTRLEN */
h2o_iovec_t vg_http_peer_ip(h2o_req_t *req, char buf[VG_HTTP_PEER_MAX]);
/* The same for a socket address (sa may be NULL: empty). */
h2o_iovec_t vg_http_sockaddr_ip(const struct sockaddr *sa, socklen_t len, char buf[VG_HTTP_PEER_MAX]);

/* Sends the open regular file fd (len bytes from offset 0) as the whole
 * body of req's response, with sendfile(2): the bytes go from the page
 * cache to the socket without a copy through user space. The head is
 * req->res (status, headers) with Content-Length len, sent in the same
 * segment as the file's first bytes (MSG_MORE). Only on a plaintext
 * HTTP/1 connection of verge's own, before anything of the response was
 * sent and with no prefilter on the request (an on_response hook):
 * returns false otherwise, doing nothing (fd is still the caller's, who
 * sends the file another way). On true, fd is taken (closed once sent or
 * when the connection goes) and the response is under way: a client that
 * stops reading for limits.idle_timeout is disconnected. */
bool vg_http_send_file(h2o_req_t *req, int fd, size_t len);

/* A whole response of one piece: status, its reason phrase, Content-Type
 * ctype, body (copied into the request's pool). */
void vg_http_send_text(h2o_req_t *req, int status, const char *ctype, const char *body, size_t len);

/* The reason phrase for a status ("Not Found"), "Status" for an unusual one. */
const char *vg_http_reason_phrase(int status);

/* ---- blocking client ------------------------------------------------------------ */

/* For threads that may block (the node agent talking to the control
 * plane); never on an event loop. One request per connection. */
struct vg_http_sync_req {
    const char *method;
    const char *url;          /* http://HOST[:PORT][/PATH] */
    const char *path_suffix;  /* appended to the URL's path (NULL: none) */
    const char *token;        /* "Authorization: Bearer" (NULL: none) */
    const char *content_type; /* NULL: none */
    const void *body;
    size_t body_len;
    uint32_t timeout_ms; /* the whole exchange, connect to last byte */
    size_t max_bytes;    /* the whole response; 0 = 64 MiB */
    int cancel_fd;       /* > 0: the exchange gives up (VG_EIO) once this fd is readable */
};

struct vg_http_sync_res {
    int status;
    char *buf; /* the whole response (owned; vg_http_sync_res_free) */
    size_t len;
    char *body; /* into buf, de-chunked */
    size_t body_len;
};

/* 0 with *res filled (any status), or VG_EINVAL (bad URL), VG_EIO
 * (connect/send/receive), VG_ETIMEDOUT, VG_ELIMIT (response too large),
 * VG_EPARSE (malformed response), with the reason in err. */
int vg_http_sync_request(const struct vg_http_sync_req *q, struct vg_http_sync_res *res, char *err,
                         size_t errcap) VG_MUST_CHECK;
void vg_http_sync_res_free(struct vg_http_sync_res *res);

/* Splits "http://host[:port][/path]" (host may be [v6]); *path points into
 * url ("/" when it has none). VG_EINVAL when it is not such a URL. */
int vg_http_url_split(const char *url, char *host, size_t hostcap, char *port, size_t portcap, const char **path);

/* ---- TLS ---------------------------------------------------------------------------- */

/* Creates a server SSL_CTX from PEM files with ALPN "h2" and "http/1.1",
 * TLS 1.2+. Caller owns the result (SSL_CTX_free). On failure returns NULL
 * and writes the reason into err. */
SSL_CTX *vg_http_tls_ctx_create(const char *cert, const char *key, char *err, size_t errcap);

#endif
