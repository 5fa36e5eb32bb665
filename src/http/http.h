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

/* ---- request checks (h2o) ----------------------------------------------------- */

/* Rejects requests that HTTP/1.1 smuggling defences forbid and that the
 * engine lets through: Content-Length together with Transfer-Encoding,
 * several differing Content-Length values, a Content-Length that is not a
 * number, header names/values with bytes outside RFC 9110's grammar.
 * Returns 0 when acceptable, else the status to answer (400) and a reason. */
int vg_http_req_check(h2o_req_t *req, const char **reason);

/* One raw HTTP/1 header line as picohttpparser reports it (its struct
 * phr_header; name is NULL for an obs-fold continuation line). */
struct vg_http_raw_header {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
};

/* The smuggling rules h2o does not enforce, on a raw header list: obs-fold,
 * conflicting or malformed Content-Length, Content-Length with
 * Transfer-Encoding, several Host headers. 0 when acceptable, else -1 and
 * a reason. Applied to every HTTP/1 request head (http_guard.c). */
int vg_http_guard_check(const struct vg_http_raw_header *h, size_t n, const char **reason);

/* Whether the guard is the parser h2o calls (the binary must export
 * phr_parse_request: -Wl,--export-dynamic-symbol). The node checks it at
 * start-up and refuses to run without it. */
bool vg_http_guard_active(void);

/* Total size of the request line + header fields as received (approximate
 * for HTTP/2, where it is the decoded size). */
size_t vg_http_req_header_bytes(h2o_req_t *req);

/* ---- TLS ---------------------------------------------------------------------------- */

/* Creates a server SSL_CTX from PEM files with ALPN "h2" and "http/1.1",
 * TLS 1.2+. Caller owns the result (SSL_CTX_free). On failure returns NULL
 * and writes the reason into err. */
SSL_CTX *vg_http_tls_ctx_create(const char *cert, const char *key, char *err, size_t errcap);

#endif
