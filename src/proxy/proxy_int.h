/* Internals of the proxy module shared by its files and unit tests. */
#ifndef VG_PROXY_INT_H
#define VG_PROXY_INT_H

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
    bool has_body;                /* send Content-Length: body_len */
    size_t body_len;
};

/* Builds the HTTP/1.1 request head for the origin into pool memory (*out,
 * valid as long as the pool). Sends "Connection: keep-alive", recomputes
 * Content-Length (POST/PUT/PATCH without a body get 0), merges Cookie
 * headers into one, appends the client to X-Forwarded-For and "1.1 verge"
 * to Via, replaces X-Forwarded-Proto, drops Expect (the body is already
 * here) and keeps every other header in order. Returns VG_EINVAL, building
 * nothing, when a value holds CR, LF or NUL or a name is not a plain token
 * (either could split the head or smuggle a header). */
int vg__proxy_head_build(h2o_mem_pool_t *pool, const struct vg__proxy_head *in, h2o_iovec_t *out) VG_MUST_CHECK;

/* An origin's status line "HTTP/1.x DDD[ reason]" without the line end
 * (a trailing CR is allowed): returns DDD (100..999), or -1. Reads
 * untrusted bytes from origins in health probes. */
int vg__proxy_status_line_parse(const char *s, size_t len);

#endif
