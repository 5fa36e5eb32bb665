/* Active health checks: one probe per server, on the node's main loop.
 *
 * An attempt is: resolve (only for host names), connect, send a fixed GET,
 * read until the status line is complete, close. One timer per probe serves
 * as the interval while idle and as the whole attempt's deadline while busy;
 * the next attempt is scheduled interval_ms after the previous one has fully
 * ended (its socket closed), so attempts on one server never overlap.
 *
 * Hosts that are numeric IPv4/IPv6 addresses are parsed once at start; names
 * are resolved with uv_getaddrinfo on every attempt (so DNS changes are
 * followed) and each address is tried in turn until one accepts the
 * connection, within the same deadline.
 *
 * Lifetime: after vg_proxy_health_stop no callback touches the origin or the
 * shared state any more (they only count down and free), so the caller may
 * release both right after stop even though the prober itself is freed later,
 * when the loop has delivered every close and cancel callback. */
#include "proxy/proxy_int.h"

#include <string.h>

#define HEALTH_MAGIC 0x4ea17401u
/* Only the status line matters. A server that has not finished it within
 * this many bytes is not speaking HTTP well enough to be called healthy, and
 * the cap keeps a misbehaving server from making us buffer its body. */
#define PROBE_BUF 1024

enum probe_state {
    PROBE_IDLE,      /* nothing open */
    PROBE_RESOLVING, /* uv_getaddrinfo in flight */
    PROBE_TCP,       /* tcp handle open: connecting, writing or reading */
    PROBE_CLOSING,   /* tcp handle closing; its callback decides what is next */
};

struct probe {
    struct vg_proxy_health *h;
    size_t idx;
    enum probe_state state;
    bool busy;           /* an attempt is running (from its start until probe_end) */
    bool done;           /* the running attempt's outcome is recorded */
    bool up;             /* last value written to the shared state */
    uint32_t oks, fails; /* consecutive outcomes */
    uv_timer_t timer;
    uv_tcp_t tcp;
    uv_connect_t connect;
    uv_write_t write;
    uv_getaddrinfo_t gai;
    bool numeric, numeric_tried;
    struct sockaddr_storage addr;       /* when numeric */
    struct addrinfo *ai_head, *ai_next; /* when resolved */
    char *name;                         /* host without IPv6 brackets */
    char port_str[8];
    char *request;
    size_t request_len;
    char reason[128]; /* why the last address failed, for the log */
    char buf[PROBE_BUF];
    size_t len;
};

struct vg_proxy_health {
    uint32_t magic;
    uv_loop_t *loop;
    const struct vg_conf_origin *o;
    struct vg_proxy_origin_state *st;
    char *app;
    bool stopping;
    size_t refs; /* open handles + getaddrinfo requests in flight */
    size_t n;
    struct probe probes[];
};

static void on_timer(uv_timer_t *t);
static void connect_next(struct probe *p);

static uint64_t at_least_1(uint64_t v)
{
    return v ? v : 1;
}

/* ---- outcome and transitions -------------------------------------------- */

static void log_transition(struct probe *p, bool up, const char *reason)
{
    const struct vg_proxy_health *h = p->h;
    const char *url = h->o->servers[p->idx].url;
    if (up)
        vg_log(VG_LOG_INFO, "origin server up", "app", h->app, "origin", h->o->name, "server", url, NULL);
    else
        vg_log(VG_LOG_WARN, "origin server down", "app", h->app, "origin", h->o->name, "server", url, "reason", reason,
               NULL);
}

static void record(struct probe *p, bool ok, const char *reason)
{
    const struct vg_conf_health *hc = &p->h->o->health;
    if (ok) {
        p->fails = 0;
        p->oks += p->oks < UINT32_MAX;
    } else {
        p->oks = 0;
        p->fails += p->fails < UINT32_MAX;
        vg_log(VG_LOG_DEBUG, "origin health check failed", "app", p->h->app, "origin", p->h->o->name, "server",
               p->h->o->servers[p->idx].url, "reason", reason, NULL);
    }
    bool flip = p->up ? p->fails >= at_least_1(hc->fall) : p->oks >= at_least_1(hc->rise);
    if (!flip)
        return;
    p->up = !p->up;
    vg_proxy_origin_state_set_active(p->h->st, p->idx, p->up);
    log_transition(p, p->up, reason);
}

static void probe_end(struct probe *p)
{
    uv_freeaddrinfo(p->ai_head);
    p->ai_head = p->ai_next = NULL;
    p->busy = false;
    uv_timer_start(&p->timer, on_timer, at_least_1(p->h->o->health.interval_ms), 0);
}

static void on_tcp_closed(uv_handle_t *handle);

static void close_tcp(struct probe *p)
{
    p->state = PROBE_CLOSING;
    uv_close((uv_handle_t *)&p->tcp, on_tcp_closed);
}

/* Records the attempt's outcome once; the attempt then ends when whatever it
 * still has open has been closed or cancelled. */
static void finish(struct probe *p, bool ok, const char *reason)
{
    if (p->done)
        return;
    p->done = true;
    uv_timer_stop(&p->timer);
    record(p, ok, reason);
    switch (p->state) {
    case PROBE_TCP:
        close_tcp(p); /* on_tcp_closed ends the attempt */
        break;
    case PROBE_RESOLVING:
        uv_cancel((uv_req_t *)&p->gai); /* on_resolved ends it, cancelled or not */
        break;
    case PROBE_CLOSING:
        break; /* on_tcp_closed ends it */
    case PROBE_IDLE:
        probe_end(p);
        break;
    }
}

static void set_reason(struct probe *p, const char *what, int uv_err)
{
    snprintf(p->reason, sizeof(p->reason), "%s: %s", what, uv_strerror(uv_err));
}

static void fail_uv(struct probe *p, const char *what, int uv_err)
{
    set_reason(p, what, uv_err);
    finish(p, false, p->reason);
}

/* ---- freeing ------------------------------------------------------------------ */

static void health_free(struct vg_proxy_health *h)
{
    for (size_t i = 0; i < h->n; i++) {
        uv_freeaddrinfo(h->probes[i].ai_head);
        free(h->probes[i].name);
        free(h->probes[i].request);
    }
    free(h->app);
    h->magic = 0;
    free(h);
}

/* Called last in every callback that drops a reference while stopping. */
static void maybe_free(struct vg_proxy_health *h)
{
    if (h->stopping && h->refs == 0)
        health_free(h);
}

static void on_timer_closed(uv_handle_t *handle)
{
    struct probe *p = handle->data;
    p->h->refs--;
    maybe_free(p->h);
}

/* ---- reading the status line ---------------------------------------------------- */

/* (declared in proxy_int.h) */
int vg__proxy_status_line_parse(const char *s, size_t len)
{
    if (len > 0 && s[len - 1] == '\r')
        len--;
    if (len < 12 || memcmp(s, "HTTP/", 5) != 0)
        return -1;
    if (s[5] < '0' || s[5] > '9' || s[6] != '.' || s[7] < '0' || s[7] > '9' || s[8] != ' ')
        return -1;
    int status = 0;
    for (size_t i = 9; i < 12; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        status = status * 10 + (s[i] - '0');
    }
    if (len > 12 && s[12] != ' ')
        return -1;
    return status >= 100 ? status : -1;
}

static void check_status_line(struct probe *p)
{
    const char *eol = memchr(p->buf, '\n', p->len);
    if (!eol) {
        if (p->len == PROBE_BUF)
            finish(p, false, "status line longer than 1 KiB");
        return;
    }
    int status = vg__proxy_status_line_parse(p->buf, (size_t)(eol - p->buf));
    if (status < 0) {
        finish(p, false, "malformed status line");
        return;
    }
    const struct vg_conf_health *hc = &p->h->o->health;
    char reason[32];
    snprintf(reason, sizeof(reason), "status %d", status);
    finish(p, (uint32_t)status >= hc->expect_status_min && (uint32_t)status <= hc->expect_status_max, reason);
}

static void on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
    struct probe *p = handle->data;
    /* Never more than what is left of the 1 KiB: a full buffer yields a
     * zero-length buffer, which libuv reports as UV_ENOBUFS. */
    *buf = uv_buf_init(p->buf + p->len, (unsigned)(PROBE_BUF - p->len));
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    struct probe *p = stream->data;
    if (p->state != PROBE_TCP || p->done || nread == 0)
        return;
    if (nread == UV_EOF) {
        finish(p, false, "closed before the status line");
        return;
    }
    if (nread < 0) {
        fail_uv(p, "read", (int)nread);
        return;
    }
    p->len += (size_t)nread;
    check_status_line(p);
}

/* ---- connecting and sending -------------------------------------------------------- */

static void on_write(uv_write_t *req, int status)
{
    struct probe *p = req->data;
    if (status < 0 && p->state == PROBE_TCP)
        fail_uv(p, "write", status);
}

static void on_connect(uv_connect_t *req, int status)
{
    struct probe *p = req->data;
    if (p->state != PROBE_TCP)
        return; /* closing (timeout or stop): the close callback takes over */
    if (status < 0) {
        set_reason(p, "connect", status);
        close_tcp(p); /* on_tcp_closed tries the next address */
        return;
    }
    p->write.data = p;
    uv_buf_t b = uv_buf_init(p->request, (unsigned)p->request_len);
    int rc = uv_write(&p->write, (uv_stream_t *)&p->tcp, &b, 1, on_write);
    if (rc == 0)
        rc = uv_read_start((uv_stream_t *)&p->tcp, on_alloc, on_read);
    if (rc < 0)
        fail_uv(p, "write", rc);
}

static void on_tcp_closed(uv_handle_t *handle)
{
    struct probe *p = handle->data;
    struct vg_proxy_health *h = p->h;
    h->refs--;
    p->state = PROBE_IDLE;
    if (h->stopping)
        maybe_free(h);
    else if (p->done)
        probe_end(p);
    else
        connect_next(p);
}

static const struct sockaddr *next_addr(struct probe *p)
{
    if (p->numeric) {
        if (p->numeric_tried)
            return NULL;
        p->numeric_tried = true;
        return (const struct sockaddr *)&p->addr;
    }
    while (p->ai_next) {
        struct addrinfo *ai = p->ai_next;
        p->ai_next = ai->ai_next;
        if (ai->ai_family == AF_INET || ai->ai_family == AF_INET6)
            return ai->ai_addr;
    }
    return NULL;
}

static void connect_next(struct probe *p)
{
    const struct sockaddr *sa = next_addr(p);
    if (!sa) {
        finish(p, false, p->reason[0] ? p->reason : "no usable address");
        return;
    }
    int rc = uv_tcp_init(p->h->loop, &p->tcp);
    if (rc < 0) {
        fail_uv(p, "socket", rc);
        return;
    }
    p->h->refs++;
    p->tcp.data = p;
    p->connect.data = p;
    p->state = PROBE_TCP;
    rc = uv_tcp_connect(&p->connect, &p->tcp, sa, on_connect);
    if (rc < 0) {
        set_reason(p, "connect", rc);
        close_tcp(p); /* on_tcp_closed tries the next address */
    }
}

/* ---- resolving --------------------------------------------------------------------- */

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    struct probe *p = req->data;
    struct vg_proxy_health *h = p->h;
    h->refs--;
    p->state = PROBE_IDLE;
    if (h->stopping || p->done) {
        uv_freeaddrinfo(res); /* late answer to a stopped or timed-out attempt */
        if (h->stopping)
            maybe_free(h);
        else
            probe_end(p);
        return;
    }
    if (status < 0) {
        fail_uv(p, "resolve", status);
        return;
    }
    p->ai_head = p->ai_next = res;
    connect_next(p);
}

static void resolve(struct probe *p)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
    p->gai.data = p;
    int rc = uv_getaddrinfo(p->h->loop, &p->gai, on_resolved, p->name, p->port_str, &hints);
    if (rc < 0) {
        fail_uv(p, "resolve", rc);
        return;
    }
    p->h->refs++;
    p->state = PROBE_RESOLVING;
}

static void probe_begin(struct probe *p)
{
    p->busy = true;
    p->done = false;
    p->numeric_tried = false;
    p->len = 0;
    p->reason[0] = '\0';
    uv_timer_start(&p->timer, on_timer, at_least_1(p->h->o->health.timeout_ms), 0);
    if (p->numeric)
        connect_next(p);
    else
        resolve(p);
}

/* Idle: time for the next attempt. Busy: the attempt's deadline passed. */
static void on_timer(uv_timer_t *t)
{
    struct probe *p = t->data;
    if (p->busy)
        finish(p, false, "timeout");
    else
        probe_begin(p);
}

/* ---- start / stop ------------------------------------------------------------------ */

static void probe_init(struct vg_proxy_health *h, size_t i)
{
    struct probe *p = &h->probes[i];
    const struct vg_conf_server *s = &h->o->servers[i];
    const char *host = s->host ? s->host : "";
    size_t hl = strlen(host);
    bool bracketed = hl >= 2 && host[0] == '[' && host[hl - 1] == ']';
    p->h = h;
    p->idx = i;
    p->up = true; /* the shared state starts up too */
    p->name = bracketed ? vg_xstrndup(host + 1, hl - 2) : vg_xstrdup(host);
    snprintf(p->port_str, sizeof(p->port_str), "%u", (unsigned)s->port);
    p->numeric = uv_ip4_addr(p->name, s->port, (struct sockaddr_in *)&p->addr) == 0 ||
                 uv_ip6_addr(p->name, s->port, (struct sockaddr_in6 *)&p->addr) == 0;
    bool v6 = strchr(p->name, ':') != NULL;
    const char *path = h->o->health.path ? h->o->health.path : "/";
    p->request = vg_xasprintf("GET %s HTTP/1.1\r\nHost: %s%s%s:%u\r\nUser-Agent: verge-health\r\n"
                              "Connection: close\r\n\r\n",
                              path, v6 ? "[" : "", p->name, v6 ? "]" : "", (unsigned)s->port);
    p->request_len = strlen(p->request);
    VG_AZ(uv_timer_init(h->loop, &p->timer));
    p->timer.data = p;
    h->refs++;
    /* First attempt right away: a dead server should not get traffic for a
     * whole interval after start. */
    uv_timer_start(&p->timer, on_timer, 0, 0);
}

struct vg_proxy_health *vg_proxy_health_start(uv_loop_t *loop, const struct vg_conf_origin *o, const char *app_name,
                                              struct vg_proxy_origin_state *st)
{
    VG_AN(loop);
    VG_AN(o);
    VG_AN(st);
    if (!o->health.enabled)
        return NULL;
    VG_ASSERT(o->n_servers >= 1);
    struct vg_proxy_health *h = vg_xcalloc(1, sizeof(*h) + o->n_servers * sizeof(h->probes[0]));
    h->magic = HEALTH_MAGIC;
    h->loop = loop;
    h->o = o;
    h->st = st;
    h->app = vg_xstrdup(app_name ? app_name : "");
    h->n = o->n_servers;
    for (size_t i = 0; i < h->n; i++)
        probe_init(h, i);
    return h;
}

void vg_proxy_health_stop(struct vg_proxy_health *h)
{
    if (!h)
        return;
    VG_ASSERT(h->magic == HEALTH_MAGIC);
    VG_ASSERT(!h->stopping);
    h->stopping = true;
    for (size_t i = 0; i < h->n; i++) {
        struct probe *p = &h->probes[i];
        uv_close((uv_handle_t *)&p->timer, on_timer_closed);
        if (p->state == PROBE_TCP)
            close_tcp(p);
        else if (p->state == PROBE_RESOLVING)
            uv_cancel((uv_req_t *)&p->gai);
    }
}
