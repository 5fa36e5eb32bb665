/* http: internals shared by the HTTP/1 (http1.c) and HTTP/2 (http2.c)
 * server connections. */
#ifndef VG_HTTP_INT_H
#define VG_HTTP_INT_H
#include "http.h"

#define VG__HTTP_RQ_FREELIST 64

/* Per worker: settings, timers and the live connections of both versions. */
struct vg_http1_ctx {
    h2o_context_t *ctx;
    struct vg_http1_settings s;
    h2o_timeout_t header_to, idle_to, linger_to;
    h2o_linklist_t conns;    /* HTTP/1 */
    h2o_linklist_t h2_conns; /* HTTP/2 */
    bool shutdown;
    uint64_t next_id;
    void *freelist[VG__HTTP_RQ_FREELIST]; /* recycled HTTP/1 request objects */
    size_t n_free;
};

/* Takes over sock for HTTP/2 (after ALPN "h2", or with the prior-knowledge
 * preface already in sock->input). */
void vg__http2_accept(struct vg_http1_ctx *hc, h2o_hostconf_t **hosts, h2o_socket_t *sock, struct timeval connected_at);
/* GOAWAY to every HTTP/2 connection: streams under way finish, then close. */
void vg__http2_shutdown(struct vg_http1_ctx *hc);

/* The request bodies of HTTP/2 streams (vg_http_body_* dispatch here when
 * req is a stream's request; false/SIZE_MAX otherwise). */
bool vg__http2_owns(h2o_req_t *req);
/* Whether req is its HTTP/2 connection's first stream. */
bool vg__http2_first_stream(h2o_req_t *req);
bool vg__http2_body_is_streamed(h2o_req_t *req);
size_t vg__http2_body_length(h2o_req_t *req);
void vg__http2_body_read(h2o_req_t *req, size_t limit, vg_http_body_cb cb, void *data);

/* The one log line of a refused request (status and reason). */
void vg__http_log_reject(h2o_socket_t *sock, int status, const char *why);

#endif
