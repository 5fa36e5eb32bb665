/* Internals of the proxy module shared by its files and unit tests. */
#ifndef VG_PROXY_INT_H
#define VG_PROXY_INT_H

#include "http/phr.h"
#include "proxy.h"

/* Whether a header (any case) is hop-by-hop for a proxy (RFC 9110 7.6.1:
 * Connection, Keep-Alive, Proxy-Connection, TE, Transfer-Encoding,
 * Upgrade, Trailer, Proxy-Authenticate, Proxy-Authorization). Headers named
 * by Connection are hop-by-hop too: see vg__proxy_list_has. */
bool vg__proxy_hop_header(const char *name, size_t len);

/* Whether the comma-separated list (a Connection value) has the element
 * name, compared without case; whitespace around elements is ignored. */
bool vg__proxy_list_has(h2o_iovec_t list, const char *name, size_t len);

/* What the origin's request head is built from. */
struct vg__proxy_head {
    h2o_iovec_t method, path;     /* request line */
    h2o_iovec_t host;             /* Host */
    const h2o_headers_t *headers; /* the client's; hop-by-hop ones are left out */
    h2o_iovec_t client_ip;        /* appended to X-Forwarded-For (none when empty) */
    h2o_iovec_t proto;            /* X-Forwarded-Proto: "http" or "https" */
    bool has_body;                /* a body follows the head */
    size_t body_len;              /* its length; SIZE_MAX: unknown, sent chunked */
    h2o_iovec_t traceparent;      /* ours for the origin (the client's is then left out), or empty */
};

/* Builds the HTTP/1.1 request head for the origin into pool memory (*out,
 * valid as long as the pool). Sends "Connection: keep-alive", recomputes
 * Content-Length (POST/PUT/PATCH without a body get 0) or sends
 * "Transfer-Encoding: chunked" for a body of unknown length, merges Cookie
 * headers into one, appends the client to X-Forwarded-For and "1.1 verge"
 * to Via, replaces X-Forwarded-Proto, drops Expect (verge answers it: the
 * body is already here, or vg_http_body_read sends 100 Continue) and keeps
 * every other header in order. Returns VG_EINVAL, building
 * nothing, when a value holds CR, LF or NUL or a name is not a plain token
 * (either could split the head or smuggle a header). */
int vg__proxy_head_build(h2o_mem_pool_t *pool, const struct vg__proxy_head *in, h2o_iovec_t *out) VG_MUST_CHECK;

/* An origin's status line "HTTP/1.x DDD[ reason]" without the line end
 * (a trailing CR is allowed): returns DDD (100..999), or -1. Reads
 * untrusted bytes from origins in health probes. */
int vg__proxy_status_line_parse(const char *s, size_t len);

/* ---- upstream connections (proxy_upstream.c) ------------------------------------ */

/* Idle connections kept per server and worker, most recently used first:
 * enough for the concurrency one worker sees towards one server; beyond it
 * connections are closed after their response (nginx's `keepalive N`). */
#define VG__PROXY_IDLE_MAX 64
#define VG__PROXY_MAX_ADDRS 4 /* addresses kept per server name */

struct vg_proxy_pool {
    struct vg_proxy_timers *timers; /* loop, and idle: the keepalive */
    const char *url;                /* the server, for logs */
    struct sockaddr_storage addr[VG__PROXY_MAX_ADDRS];
    socklen_t addr_len[VG__PROXY_MAX_ADDRS];
    size_t n_addr;
    size_t addr_pref;    /* the address that worked last: new connections try it first */
    const char *noaddr;  /* why there is no address, when n_addr == 0 */
    h2o_linklist_t idle; /* vg__proxy_conn.link, oldest first */
    size_t n_idle;
    size_t n_busy; /* handed out: connecting or in an exchange */
};

/* Called once a new connection is made (err NULL) or could not be made
 * (err says why; the connection is gone by then). */
typedef void (*vg__proxy_connect_cb)(void *user, const char *err);

/* One connection to one server. sock->data is the connection, always;
 * while it is handed out, the user owns sock's read and write callbacks
 * and finds itself in user. */
struct vg__proxy_conn {
    h2o_socket_t *sock;
    struct vg_proxy_pool *pool;
    void *user;
    unsigned exchanges; /* completed on it before: > 0 means reused */
    /* while idle */
    h2o_linklist_t link;
    h2o_timeout_entry_t idle_te;
    /* while connecting */
    vg__proxy_connect_cb on_connect;
    size_t addr_i, addr_tries;
};

enum vg__proxy_open {
    VG__PROXY_OPEN_READY,   /* an idle connection, ready now (reused) */
    VG__PROXY_OPEN_PENDING, /* a new connection is being made: on_connect follows */
    VG__PROXY_OPEN_FAILED,  /* no connection: *err says why */
};

/* Hands out a connection to p's server for one exchange (*out; user is
 * stored in it). The most recently used idle one unless fresh, else a new
 * one, which tries the server's addresses in turn. on_connect is only ever
 * called later, from the loop. Close the connection (vg__proxy_conn_close)
 * to give up on it at any point. */
enum vg__proxy_open vg__proxy_conn_open(struct vg_proxy_pool *p, bool fresh, vg__proxy_connect_cb on_connect,
                                        void *user, struct vg__proxy_conn **out, const char **err);

/* Gives c back after an exchange that left it reusable: the whole request
 * was written (no write in flight), the whole response read, both sides
 * allow keep-alive, and sock->input is empty. c then waits in the pool
 * (or is closed: reuse off, or the pool full). c is no longer the
 * caller's. */
void vg__proxy_conn_release(struct vg__proxy_conn *c);

/* Closes c in any state; no callback of its socket runs afterwards, and c
 * is freed. */
void vg__proxy_conn_close(struct vg__proxy_conn *c);

/* ---- origin responses (proxy_upstream.c; pure) ------------------------------------ */

#define VG__PROXY_MAX_HEADERS 100      /* response header fields */
#define VG__PROXY_MAX_HEAD (64 * 1024) /* response head bytes */
#define VG__PROXY_HEAD_PARTIAL (-2)

enum vg__proxy_framing {
    VG__PROXY_BODY_NONE,    /* HEAD request, 1xx, 204, 304 */
    VG__PROXY_BODY_LENGTH,  /* Content-Length */
    VG__PROXY_BODY_CHUNKED, /* Transfer-Encoding: chunked */
    VG__PROXY_BODY_CLOSE,   /* until the origin closes the connection */
};

/* An origin's response head, as far as a proxy needs it. Pointers go into
 * the parsed buffer. */
struct vg__proxy_resp {
    int minor_version, status;
    h2o_iovec_t reason;
    struct phr_header headers[VG__PROXY_MAX_HEADERS];
    size_t n_headers;
    size_t content_length; /* as declared, SIZE_MAX when none (ignored when chunked) */
    bool chunked;          /* Transfer-Encoding: chunked came */
    enum vg__proxy_framing framing;
    bool keepalive; /* the connection may carry another exchange after this one */
};

/* Parses the response head at the start of buf (len bytes; last_len is
 * what the previous call for this head was given, 0 the first time).
 * Returns the head's length, VG__PROXY_HEAD_PARTIAL when more bytes are
 * needed, or -1 when it is malformed or must not be forwarded (*why):
 * bytes outside the grammar, obs-fold, more than VG__PROXY_MAX_HEADERS
 * fields or VG__PROXY_MAX_HEAD bytes, a conflicting or invalid
 * Content-Length, a transfer coding other than chunked, a 101 (verge
 * never asks for an upgrade). A 1xx other than 101 parses fine (framing
 * NONE): the caller skips it. head_request: the request was HEAD.
 *
 * Keep-alive: HTTP/1.1 unless "Connection: close", HTTP/1.0 only with
 * "Connection: keep-alive"; never when the body runs until close, when
 * both Transfer-Encoding and Content-Length came (RFC 9112 6.3: chunked
 * wins, the connection must close) or a 204 declared a non-zero length
 * (its body would be read as the next response). */
int vg__proxy_resp_parse(const char *buf, size_t len, size_t last_len, bool head_request, struct vg__proxy_resp *r,
                         const char **why);

/* The state of one response body. */
struct vg__proxy_body {
    enum vg__proxy_framing framing;
    size_t left; /* LENGTH: bytes still to come */
    struct phr_chunked_decoder chunked;
};

enum vg__proxy_body_status {
    VG__PROXY_BODY_MORE, /* the body goes on */
    VG__PROXY_BODY_DONE, /* the body ended */
    VG__PROXY_BODY_BAD,  /* broken chunked encoding */
};

void vg__proxy_body_init(struct vg__proxy_body *b, const struct vg__proxy_resp *r);

/* Takes the next *len bytes the origin sent at buf and decodes them in
 * place: afterwards the first *len bytes at buf are body. On DONE, *extra
 * bytes followed the body (at buf + *len: not the body's, the connection
 * must not be reused). Call with *len == 0 right after the head: a body
 * that is empty by its framing ends there. */
enum vg__proxy_body_status vg__proxy_body_decode(struct vg__proxy_body *b, char *buf, size_t *len, size_t *extra);

#endif
