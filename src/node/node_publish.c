/* POST /_verge/publish/SUBJECT[?app=NAME]: an outside system publishes a
 * message on an app's subjects ("verge.app.APP.SUBJECT") over the node's
 * bus, as verge.publish does from Lua, so that it reaches every node and
 * NATS client subscribed to them.
 *
 * It is an admin endpoint: the node's --admin-token as a bearer token
 * (checked like /_verge/purge's, node_admin.c), the app named by ?app=
 * or the node's only one. The body is the payload, at most
 * VG_BUS_PAYLOAD_MAX bytes (nats-server's default max_payload): a body
 * that size arrives streamed, so it is gathered here (in malloc'd memory
 * the request's pool frees) before the one publish. Publishing never
 * waits; while NATS is away the bus buffers a bounded amount, and past it
 * the answer is 503. Every refusal is logged with its reason. */
#include "node_int.h"

#include <stdlib.h>
#include <string.h>

#define PREFIX "/_verge/publish/"
#define APP_PREFIX "verge.app."

struct pub {
    h2o_req_t *req;
    struct vg_bus *bus;
    char subject[VG_BUS_SUBJECT_MAX + 1];
    char *body; /* malloc'd, freed with the request's pool */
    size_t len, cap;
};

static void refuse(h2o_req_t *req, int status, const char *why)
{
    vg_log(VG_LOG_WARN, "publish refused", "reason", why, NULL);
    vg__node_admin_error(req, status, why);
}

static void on_pub_dispose(void *p)
{
    free(((struct pub *)p)->body);
}

/* The value of ?app=, or NULL (a name is [a-z0-9-]: nothing to decode). */
static const char *query_app(h2o_req_t *req, size_t *len)
{
    if (req->query_at == SIZE_MAX)
        return NULL;
    const char *q = req->path.base + req->query_at + 1, *end = req->path.base + req->path.len;
    while (q < end) {
        const char *amp = memchr(q, '&', (size_t)(end - q));
        const char *stop = amp ? amp : end;
        if (stop - q >= 4 && memcmp(q, "app=", 4) == 0) {
            *len = (size_t)(stop - q - 4);
            return q + 4;
        }
        q = stop + 1;
    }
    return NULL;
}

/* "verge.app.APP.SUBJECT" into out, or the reason it is not a subject one
 * may publish on. */
static const char *subject_check(const char *app, h2o_iovec_t s, char *out, size_t cap)
{
    if (!s.len)
        return "no subject: POST /_verge/publish/SUBJECT";
    for (size_t i = 0; i < s.len; i++) {
        bool tok_start = i == 0 || s.base[i - 1] == '.';
        bool tok_end = i + 1 == s.len || s.base[i + 1] == '.';
        if ((s.base[i] == '*' || s.base[i] == '>') && tok_start && tok_end)
            return "wildcards ('*', '>') are for subscribing, not for publishing";
    }
    int n = snprintf(out, cap, APP_PREFIX "%s.%.*s", app, (int)s.len, s.base);
    if (n < 0 || (size_t)n >= cap)
        return "subject too long: at most 256 bytes with the app's prefix verge.app.APP.";
    if (strlen(out) != (size_t)n || !vg_bus_subject_valid(out, false))
        return "invalid subject: tokens of printable ASCII separated by '.', no spaces or empty tokens";
    return NULL;
}

static void publish(struct pub *p, const char *data, size_t len)
{
    int rc = vg_bus_publish(p->bus, p->subject, data, len);
    if (rc == VG_ELIMIT || rc == VG_ENET) {
        refuse(p->req, 503,
               rc == VG_ELIMIT ? "the bus is disconnected and its buffer is full" : "the bus is not connected");
        return;
    }
    if (rc) {
        refuse(p->req, 400, vg_strerror(rc));
        return;
    }
    char esc[2 * VG_BUS_SUBJECT_MAX + 8], buf[sizeof(esc) + 64];
    vg_json_escape(esc, sizeof(esc), p->subject, strlen(p->subject));
    snprintf(buf, sizeof(buf), "{\"published\":true,\"subject\":\"%s\",\"bytes\":%zu}\n", esc, len);
    vg_http_send_text(p->req, 202, "application/json", buf, strlen(buf));
}

static void on_body_piece(void *data, h2o_iovec_t buf, enum vg_http_body_status st, int status, const char *reason)
{
    struct pub *p = data;
    if (st == VG_HTTP_BODY_ERROR) {
        refuse(p->req, status, reason);
        return;
    }
    if (p->len + buf.len > VG_BUS_PAYLOAD_MAX) { /* vg_http_body_read stops it first; kept as a guard */
        refuse(p->req, 413, "the payload is over 1048576 bytes (the bus's limit)");
        return;
    }
    if (p->len + buf.len > p->cap) {
        size_t cap = p->cap ? p->cap : 128u << 10;
        while (cap < p->len + buf.len)
            cap *= 2;
        p->body = vg_xrealloc(p->body, cap);
        p->cap = cap;
    }
    if (buf.len) {
        memcpy(p->body + p->len, buf.base, buf.len);
        p->len += buf.len;
    }
    if (st == VG_HTTP_BODY_MORE)
        vg_http_body_read(p->req, VG_BUS_PAYLOAD_MAX, on_body_piece, p);
    else
        publish(p, p->body, p->len);
}

/* Everything about the call but its body; NULL once answered. */
static struct pub *check(struct vg_worker *w, h2o_req_t *req)
{
    if (!h2o_memis(req->method.base, req->method.len, H2O_STRLIT("POST"))) {
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ALLOW, NULL, H2O_STRLIT("POST"));
        refuse(req, 405, "POST the payload to /_verge/publish/SUBJECT");
        return NULL;
    }
    if (!vg__node_admin_token_ok(req, w->node->opt.admin_token)) {
        vg_log(VG_LOG_WARN, "publish refused", "reason",
               w->node->opt.admin_token ? "missing or wrong token" : "no --admin-token on this node", NULL);
        vg__node_admin_error(req, 401, "a valid admin token is required (Authorization: Bearer TOKEN)");
        return NULL;
    }
    size_t al = 0;
    const char *an = query_app(req, &al), *why = NULL;
    const struct vg_app_rt *app = vg__node_admin_app(w->site, an, al, &why);
    if (!app) {
        refuse(req, strstr(why, "no such") ? 404 : 400, why);
        return NULL;
    }
    struct pub *p = h2o_mem_alloc_shared(&req->pool, sizeof(*p), on_pub_dispose);
    memset(p, 0, sizeof(*p));
    p->req = req;
    p->bus = w->node->bus;
    h2o_iovec_t s = req->path_normalized; /* "/_verge/publish" or "/_verge/publish/..." */
    size_t skip = s.len < strlen(PREFIX) ? s.len : strlen(PREFIX);
    s.base += skip;
    s.len -= skip;
    if ((why = subject_check(app->conf->name, s, p->subject, sizeof(p->subject))) != NULL) {
        refuse(req, 400, why);
        return NULL;
    }
    return p;
}

void vg__node_publish_endpoint(struct vg_worker *w, h2o_req_t *req)
{
    struct pub *p = check(w, req);
    if (!p)
        return;
    if (!vg_http_body_is_streamed(req)) {
        publish(p, req->entity.base ? req->entity.base : "", req->entity.len);
        return;
    }
    size_t declared = vg_http_body_length(req);
    if (declared != SIZE_MAX && declared > VG_BUS_PAYLOAD_MAX) {
        refuse(req, 413, "the payload is over 1048576 bytes (the bus's limit)");
        return;
    }
    vg_http_body_read(req, VG_BUS_PAYLOAD_MAX, on_body_piece, p);
}
