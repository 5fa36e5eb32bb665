/* Upstream connections: one worker's keep-alive pool per server, kept on
 * the worker's evloop, and the parsing of origin responses.
 *
 * h2o's socketpool exports a socket out of its loop when it goes idle and
 * imports it again for the next request (epoll_ctl DEL/ADD, fcntl, a
 * recvfrom peek per reuse), which made verge's proxy path cost more CPU per
 * request than nginx's. Here an idle connection stays an h2o_socket_t in
 * the loop with reading left on, its read callback set to on_idle_read:
 * whatever arrives while it is idle (the origin closing it, or bytes it had
 * no business sending) closes it, so a connection handed out is one the
 * origin had not closed when this loop pass started, and reusing it costs
 * nothing but the exchange itself.
 *
 * What keeps it memory safe:
 *  - a connection is in exactly one of three states: connecting (on_connect
 *    set, owned by the user), busy (owned by the user) or idle (on p->idle
 *    with idle_te linked, owned by the pool). vg__proxy_conn_close works in
 *    each, and h2o runs no callback of a closed socket, so the conn is freed
 *    at once.
 *  - n_busy counts connecting and busy connections: a pool is destroyed only
 *    when it is 0 (every forward gives its connection back or closes it when
 *    its request ends, and the node destroys a site's pools only once its
 *    requests are over).
 *  - the idle timeout belongs to the caller's vg_proxy_timers (freed a tick
 *    after disposal), so the pool itself can be freed at once. */
#include "http/http.h"
#include "proxy_int.h"

#include <errno.h>
#include <netdb.h>
#include <string.h>

/* ---- the pool --------------------------------------------------------------------- */

static void resolve(struct vg_proxy_pool *p, const struct vg_conf_server *srv)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_ADDRCONFIG | AI_NUMERICSERV}, *res;
    char port[8];
    snprintf(port, sizeof(port), "%u", srv->port);
    int rc = getaddrinfo(srv->host, port, &hints, &res);
    if (rc != 0) {
        p->noaddr = "server address did not resolve";
        vg_log(VG_LOG_WARN, "origin server address did not resolve (connections to it fail until a reload)", "server",
               srv->url, "reason", gai_strerror(rc), NULL);
        return;
    }
    for (struct addrinfo *ai = res; ai && p->n_addr < VG__PROXY_MAX_ADDRS; ai = ai->ai_next) {
        if (ai->ai_addrlen > sizeof(p->addr[0]))
            continue;
        memcpy(&p->addr[p->n_addr], ai->ai_addr, ai->ai_addrlen);
        p->addr_len[p->n_addr++] = ai->ai_addrlen;
    }
    freeaddrinfo(res);
    if (p->n_addr == 0)
        p->noaddr = "server address did not resolve";
}

struct vg_proxy_pool *vg_proxy_pool_create(const struct vg_conf_server *srv, struct vg_proxy_timers *t)
{
    struct vg_proxy_pool *p = vg_xcalloc(1, sizeof(*p));
    p->timers = t;
    p->url = srv->url;
    h2o_linklist_init_anchor(&p->idle);
    resolve(p, srv);
    return p;
}

static void conn_free(struct vg__proxy_conn *c)
{
    h2o_socket_close(c->sock);
    free(c);
}

static void idle_close(struct vg__proxy_conn *c)
{
    struct vg_proxy_pool *p = c->pool;
    h2o_linklist_unlink(&c->link);
    if (h2o_timeout_is_linked(&c->idle_te))
        h2o_timeout_unlink(&c->idle_te);
    p->n_idle--;
    conn_free(c);
}

void vg_proxy_pool_destroy(struct vg_proxy_pool *p)
{
    VG_ASSERT(p->n_busy == 0);
    while (!h2o_linklist_is_empty(&p->idle))
        idle_close(H2O_STRUCT_FROM_MEMBER(struct vg__proxy_conn, link, p->idle.next));
    free(p);
}

/* ---- idle connections ----------------------------------------------------------------- */

/* The origin closed the connection, reset it or sent something unasked:
 * it cannot carry another exchange. */
static void on_idle_read(h2o_socket_t *sock, const char *err)
{
    struct vg__proxy_conn *c = sock->data;
    if (err == NULL && sock->input->size == 0)
        return; /* a wake-up without bytes */
    idle_close(c);
}

static void on_idle_timeout(h2o_timeout_entry_t *e)
{
    idle_close(H2O_STRUCT_FROM_MEMBER(struct vg__proxy_conn, idle_te, e));
}

void vg__proxy_conn_release(struct vg__proxy_conn *c)
{
    struct vg_proxy_pool *p = c->pool;
    VG_ASSERT(p->n_busy > 0 && c->on_connect == NULL);
    VG_ASSERT(c->sock->input->size == 0 && !h2o_socket_is_writing(c->sock));
    p->n_busy--;
    c->user = NULL;
    c->exchanges++;
    if (p->timers->idle.timeout == 0) { /* keepalive: 0 */
        conn_free(c);
        return;
    }
    if (p->n_idle == VG__PROXY_IDLE_MAX) /* make room: the oldest has the least time left */
        idle_close(H2O_STRUCT_FROM_MEMBER(struct vg__proxy_conn, link, p->idle.next));
    h2o_linklist_insert(&p->idle, &c->link);
    p->n_idle++;
    h2o_timeout_link(p->timers->loop, &p->timers->idle, &c->idle_te);
    /* reading stays on: an epoll_ctl only if the exchange had paused it */
    vg_http_read_resume(c->sock, on_idle_read);
}

void vg__proxy_conn_close(struct vg__proxy_conn *c)
{
    struct vg_proxy_pool *p = c->pool;
    if (h2o_linklist_is_linked(&c->link)) {
        idle_close(c);
        return;
    }
    VG_ASSERT(p->n_busy > 0);
    p->n_busy--;
    conn_free(c);
}

/* ---- new connections ------------------------------------------------------------------ */

static void on_connected(h2o_socket_t *sock, const char *err);

/* Starts connecting c to the next of the server's addresses not tried yet.
 * Returns false (c->sock NULL) when none is left; *err says why the last
 * one failed. */
static bool connect_next(struct vg__proxy_conn *c, const char **err)
{
    struct vg_proxy_pool *p = c->pool;
    while (c->addr_tries < p->n_addr) {
        c->addr_i = (p->addr_pref + c->addr_tries++) % p->n_addr;
        c->sock = h2o_socket_connect(p->timers->loop, (struct sockaddr *)&p->addr[c->addr_i], p->addr_len[c->addr_i],
                                     on_connected);
        if (c->sock) {
            c->sock->data = c;
            return true;
        }
        *err = errno == ECONNREFUSED ? "connection refused" : "connection failed";
    }
    return false;
}

static void on_connected(h2o_socket_t *sock, const char *err)
{
    struct vg__proxy_conn *c = sock->data;
    struct vg_proxy_pool *p = c->pool;
    if (err == NULL) {
        vg__proxy_connect_cb cb = c->on_connect;
        c->on_connect = NULL;
        p->addr_pref = c->addr_i;
        cb(c->user, NULL);
        return;
    }
    h2o_socket_close(sock);
    c->sock = NULL;
    if (connect_next(c, &err))
        return;
    vg__proxy_connect_cb cb = c->on_connect;
    void *user = c->user;
    p->n_busy--;
    free(c);
    cb(user, err);
}

enum vg__proxy_open vg__proxy_conn_open(struct vg_proxy_pool *p, bool fresh, vg__proxy_connect_cb on_connect,
                                        void *user, struct vg__proxy_conn **out, const char **err)
{
    /* the most recently used: the least likely to have been closed by the origin */
    if (!fresh && !h2o_linklist_is_empty(&p->idle)) {
        struct vg__proxy_conn *c = H2O_STRUCT_FROM_MEMBER(struct vg__proxy_conn, link, p->idle.prev);
        h2o_linklist_unlink(&c->link);
        h2o_timeout_unlink(&c->idle_te);
        p->n_idle--;
        p->n_busy++;
        c->user = user;
        *out = c;
        return VG__PROXY_OPEN_READY;
    }
    if (p->n_addr == 0) {
        *err = p->noaddr;
        return VG__PROXY_OPEN_FAILED;
    }
    struct vg__proxy_conn *c = vg_xcalloc(1, sizeof(*c));
    *c = (struct vg__proxy_conn){.pool = p, .user = user, .on_connect = on_connect};
    c->idle_te.cb = on_idle_timeout;
    if (!connect_next(c, err)) {
        free(c);
        return VG__PROXY_OPEN_FAILED;
    }
    p->n_busy++;
    *out = c;
    return VG__PROXY_OPEN_PENDING;
}

/* ---- response heads --------------------------------------------------------------------- */

/* RFC 9110 tchar, as a table: it runs for every byte of every header name. */
static bool is_tchar(unsigned char ch)
{
    static const uint64_t map[4] = {
        0x03ff6cfa00000000, /* 0x20-0x3f: ! # $ % & ' * + - . 0-9 */
        0x57ffffffc7fffffe, /* 0x40-0x7f: A-Z ^ _ ` a-z | ~ */
    };
    return (map[ch >> 6] >> (ch & 63)) & 1;
}

/* Control bytes other than HTAB: picohttpparser is lenient about what it
 * accepts, and these could smuggle something into the client's response. */
static bool text_bad(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
            return true;
    }
    return false;
}

static bool field_bad(const struct phr_header *h)
{
    for (size_t i = 0; i < h->name_len; i++)
        if (!is_tchar((unsigned char)h->name[i]))
            return true;
    return h->name_len == 0 || text_bad(h->value, h->value_len);
}

static bool name_is(const struct phr_header *h, const char *lc, size_t len)
{
    return h2o_lcstris(h->name, h->name_len, lc, len);
}

/* 1..19 decimal digits, nothing else (no sign, no list, no overflow). */
static size_t parse_length(const char *v, size_t len)
{
    size_t n = 0;
    if (len == 0 || len > 19)
        return SIZE_MAX;
    for (size_t i = 0; i < len; i++) {
        if (v[i] < '0' || v[i] > '9')
            return SIZE_MAX;
        n = n * 10 + (size_t)(v[i] - '0');
    }
    return n;
}

/* Transfer-Encoding: only "chunked" alone is understood (as nginx does);
 * anything else leaves no way to find the body's end but the close, and
 * a coding the client would not be told about. */
static bool te_is_chunked(h2o_iovec_t v)
{
    while (v.len && (v.base[0] == ' ' || v.base[0] == '\t'))
        v.base++, v.len--;
    while (v.len && (v.base[v.len - 1] == ' ' || v.base[v.len - 1] == '\t'))
        v.len--;
    return h2o_lcstris(v.base, v.len, H2O_STRLIT("chunked"));
}

/* Reads the framing and connection headers into r. Returns why the head
 * cannot be forwarded, or NULL. */
static const char *read_fields(struct vg__proxy_resp *r, bool *te, bool *close, bool *keep)
{
    size_t n_te = 0;
    for (size_t i = 0; i < r->n_headers; i++) {
        const struct phr_header *h = &r->headers[i];
        if (h->name == NULL)
            return "obsolete line folding in response header";
        if (field_bad(h))
            return "invalid byte in response header";
        h2o_iovec_t v = h2o_iovec_init(h->value, h->value_len);
        if (name_is(h, H2O_STRLIT("content-length"))) {
            size_t n = parse_length(h->value, h->value_len);
            if (n == SIZE_MAX || (r->content_length != SIZE_MAX && n != r->content_length))
                return "invalid or conflicting content-length";
            r->content_length = n;
        } else if (name_is(h, H2O_STRLIT("transfer-encoding"))) {
            if (++n_te > 1 || !te_is_chunked(v))
                return "unsupported transfer-encoding";
            *te = true;
        } else if (name_is(h, H2O_STRLIT("connection"))) {
            *close = *close || vg__proxy_list_has(v, H2O_STRLIT("close"));
            *keep = *keep || vg__proxy_list_has(v, H2O_STRLIT("keep-alive"));
        }
    }
    return NULL;
}

int vg__proxy_resp_parse(const char *buf, size_t len, size_t last_len, bool head_request, struct vg__proxy_resp *r,
                         const char **why)
{
    const char *msg;
    size_t msg_len;
    r->n_headers = VG__PROXY_MAX_HEADERS;
    int n = phr_parse_response(buf, len, &r->minor_version, &r->status, &msg, &msg_len, r->headers, &r->n_headers,
                               last_len);
    if (n == -2 && len <= VG__PROXY_MAX_HEAD)
        return VG__PROXY_HEAD_PARTIAL;
    if (n < 0 || (size_t)n > VG__PROXY_MAX_HEAD) {
        *why = n == -1 ? "malformed response head" : "response head too large";
        return -1;
    }
    if (r->status < 100 || r->status > 999 || text_bad(msg, msg_len)) {
        *why = "malformed response head";
        return -1;
    }
    if (r->status == 101) {
        *why = "unexpected 101 response (no upgrade was asked for)";
        return -1;
    }
    r->reason = h2o_iovec_init(msg, msg_len);
    r->content_length = SIZE_MAX;
    bool te = false, close = false, keep = false;
    if ((*why = read_fields(r, &te, &close, &keep)) != NULL)
        return -1;
    r->chunked = te;
    r->keepalive = r->minor_version >= 1 ? !close : keep && !close;
    if (head_request || r->status < 200 || r->status == 204 || r->status == 304)
        r->framing = VG__PROXY_BODY_NONE;
    else if (te)
        r->framing = VG__PROXY_BODY_CHUNKED;
    else if (r->content_length != SIZE_MAX)
        r->framing = VG__PROXY_BODY_LENGTH;
    else
        r->framing = VG__PROXY_BODY_CLOSE;
    if (r->framing == VG__PROXY_BODY_CLOSE || (te && r->content_length != SIZE_MAX) ||
        (r->status == 204 && r->content_length != SIZE_MAX && r->content_length != 0))
        r->keepalive = false;
    return n;
}

/* ---- response bodies ------------------------------------------------------------------ */

void vg__proxy_body_init(struct vg__proxy_body *b, const struct vg__proxy_resp *r)
{
    *b = (struct vg__proxy_body){.framing = r->framing, .left = r->content_length};
    b->chunked.consume_trailer = 1; /* trailers are dropped: h2o cannot send them on */
}

enum vg__proxy_body_status vg__proxy_body_decode(struct vg__proxy_body *b, char *buf, size_t *len, size_t *extra)
{
    *extra = 0;
    switch (b->framing) {
    case VG__PROXY_BODY_NONE:
        *extra = *len;
        *len = 0;
        return VG__PROXY_BODY_DONE;
    case VG__PROXY_BODY_LENGTH:
        if (*len < b->left) {
            b->left -= *len;
            return VG__PROXY_BODY_MORE;
        }
        *extra = *len - b->left;
        *len = b->left;
        b->left = 0;
        return VG__PROXY_BODY_DONE;
    case VG__PROXY_BODY_CHUNKED: {
        ssize_t rc = phr_decode_chunked(&b->chunked, buf, len);
        if (rc == -2)
            return VG__PROXY_BODY_MORE;
        if (rc < 0)
            return VG__PROXY_BODY_BAD;
        *extra = (size_t)rc;
        return VG__PROXY_BODY_DONE;
    }
    case VG__PROXY_BODY_CLOSE:
        return VG__PROXY_BODY_MORE;
    }
    return VG__PROXY_BODY_BAD;
}
