/* A blocking HTTP/1.1 client, one request per connection, for threads that
 * may block: the node agent's calls to the control plane (a long poll, a
 * bundle download, a heartbeat). Never used on an event loop. */
#include "http.h"
#include "phr.h"

#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

static int fail(char *err, size_t cap, int code, const char *what, const char *why)
{
    snprintf(err, cap, "%s: %s", what, why);
    return code;
}

int vg_http_url_split(const char *url, char *host, size_t hostcap, char *port, size_t portcap, const char **path)
{
    if (strncmp(url, "http://", 7) != 0)
        return VG_EINVAL;
    const char *h = url + 7, *end = h + strcspn(h, "/?#");
    const char *colon = NULL;
    if (*h == '[') { /* [v6]:port */
        const char *rb = memchr(h, ']', (size_t)(end - h));
        if (!rb)
            return VG_EINVAL;
        colon = rb[1] == ':' ? rb + 1 : NULL;
        if ((size_t)(rb - h - 1) >= hostcap)
            return VG_EINVAL;
        memcpy(host, h + 1, (size_t)(rb - h - 1));
        host[rb - h - 1] = '\0';
    } else {
        colon = memchr(h, ':', (size_t)(end - h));
        const char *he = colon ? colon : end;
        if (he == h || (size_t)(he - h) >= hostcap)
            return VG_EINVAL;
        memcpy(host, h, (size_t)(he - h));
        host[he - h] = '\0';
    }
    const char *p = colon ? colon + 1 : "80";
    size_t plen = colon ? (size_t)(end - colon - 1) : 2;
    if (!plen || plen > 5 || plen >= portcap || strspn(p, "0123456789") < plen || atoi(p) > 65535 || atoi(p) == 0)
        return VG_EINVAL;
    memcpy(port, p, plen);
    port[plen] = '\0';
    *path = *end == '/' ? end : "/";
    return 0;
}

/* Waits for fd to be ready for ev until deadline_ms: 0, or VG_ETIMEDOUT,
 * or VG_EIO when cancel_fd (if > 0) became readable first. */
static int wait_fd(int fd, short ev, uint64_t deadline_ms, int cancel_fd)
{
    uint64_t now = vg_now_ms();
    if (now >= deadline_ms)
        return VG_ETIMEDOUT;
    struct pollfd pfd[2] = {{.fd = fd, .events = ev}, {.fd = cancel_fd, .events = POLLIN}};
    int r;
    while ((r = poll(pfd, cancel_fd > 0 ? 2 : 1, (int)(deadline_ms - now))) < 0 && errno == EINTR)
        ;
    if (cancel_fd > 0 && pfd[1].revents)
        return VG_EIO;
    return r > 0 ? 0 : VG_ETIMEDOUT;
}

static int dial(const char *host, const char *port, uint64_t deadline_ms, int cancel_fd, char *err, size_t cap)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
    int gai = getaddrinfo(host, port, &hints, &res);
    if (gai != 0) {
        fail(err, cap, VG_EIO, host, gai_strerror(gai));
        return -1;
    }
    int fd = -1;
    const char *why = "no address";
    for (struct addrinfo *a = res; a && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
            continue;
        if (connect(fd, a->ai_addr, a->ai_addrlen) != 0 && errno != EINPROGRESS) {
            why = strerror(errno);
            close(fd);
            fd = -1;
            continue;
        }
        int so = 0, w = wait_fd(fd, POLLOUT, deadline_ms, cancel_fd);
        socklen_t sl = sizeof(so);
        if (w != 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &so, &sl) != 0 || so != 0) {
            why = so ? strerror(so) : w == VG_EIO ? "cancelled" : "connect timed out";
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd < 0)
        fail(err, cap, VG_EIO, host, why);
    return fd;
}

static int send_all(int fd, const char *p, size_t n, uint64_t deadline_ms, int cancel_fd)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
        } else if (w < 0 && errno == EINTR) {
            continue;
        } else if (w < 0 && errno == EAGAIN) {
            int rc = wait_fd(fd, POLLOUT, deadline_ms, cancel_fd);
            if (rc)
                return rc;
        } else {
            return VG_EIO;
        }
    }
    return 0;
}

/* Reads to EOF (the request said Connection: close). */
static int read_all(int fd, struct vg_http_sync_res *r, size_t max, uint64_t deadline_ms, int cancel_fd, char *err,
                    size_t cap)
{
    size_t bufcap = 16384;
    r->buf = vg_xmalloc(bufcap);
    for (;;) {
        if (r->len == bufcap) {
            if (bufcap >= max)
                return fail(err, cap, VG_ELIMIT, "response", "larger than the limit");
            bufcap *= 2;
            r->buf = vg_xrealloc(r->buf, bufcap);
        }
        ssize_t n = recv(fd, r->buf + r->len, bufcap - r->len, 0);
        if (n > 0) {
            r->len += (size_t)n;
        } else if (n == 0) {
            return 0;
        } else if (errno == EINTR) {
            continue;
        } else if (errno == EAGAIN) {
            int rc = wait_fd(fd, POLLIN, deadline_ms, cancel_fd);
            if (rc)
                return fail(err, cap, rc, "response", rc == VG_EIO ? "cancelled" : "timed out");
        } else {
            return fail(err, cap, VG_EIO, "response", strerror(errno));
        }
    }
}

static int parse(struct vg_http_sync_res *r, char *err, size_t cap)
{
    struct phr_header h[64];
    size_t nh = 64, msg_len;
    const char *msg;
    int minor;
    int hl = phr_parse_response(r->buf, r->len, &minor, &r->status, &msg, &msg_len, h, &nh, 0);
    if (hl <= 0)
        return fail(err, cap, VG_EPARSE, "response", "malformed or incomplete head");
    r->body = r->buf + hl;
    r->body_len = r->len - (size_t)hl;
    for (size_t i = 0; i < nh; i++) {
        if (h[i].name_len == 17 && strncasecmp(h[i].name, "transfer-encoding", 17) == 0) {
            struct phr_chunked_decoder d = {.consume_trailer = 1};
            size_t sz = r->body_len;
            if (phr_decode_chunked(&d, r->body, &sz) < 0)
                return fail(err, cap, VG_EPARSE, "response", "malformed chunked body");
            r->body_len = sz;
        } else if (h[i].name_len == 14 && strncasecmp(h[i].name, "content-length", 14) == 0) {
            size_t want = h2o_strtosize(h[i].value, h[i].value_len);
            if (want == SIZE_MAX || want > r->body_len)
                return fail(err, cap, VG_EPARSE, "response", "body shorter than its Content-Length");
            r->body_len = want;
        }
    }
    return 0;
}

int vg_http_sync_request(const struct vg_http_sync_req *q, struct vg_http_sync_res *r, char *err, size_t errcap)
{
    memset(r, 0, sizeof(*r));
    char host[256], port[8];
    const char *path;
    if (vg_http_url_split(q->url, host, sizeof(host), port, sizeof(port), &path) != 0)
        return fail(err, errcap, VG_EINVAL, q->url, "not an http://HOST[:PORT][/PATH] URL");
    uint64_t deadline = vg_now_ms() + q->timeout_ms;
    int fd = dial(host, port, deadline, q->cancel_fd, err, errcap);
    if (fd < 0)
        return VG_EIO;
    /* "http://h:p" + "/v1/x" is "/v1/x", and "http://h:p/api/" + "/v1" is "/api/v1" */
    size_t plen = strlen(path);
    if (q->path_suffix && q->path_suffix[0] == '/' && plen && path[plen - 1] == '/')
        plen--;
    char head[2048];
    int hl = snprintf(head, sizeof(head),
                      "%s %.*s%s HTTP/1.1\r\nHost: %s:%s\r\nConnection: close\r\nContent-Length: %zu\r\n", q->method,
                      (int)plen, path, q->path_suffix ? q->path_suffix : "", host, port, q->body_len);
    if (hl > 0 && q->token)
        hl += snprintf(head + hl, sizeof(head) - (size_t)hl, "Authorization: Bearer %s\r\n", q->token);
    if (hl > 0 && (size_t)hl < sizeof(head) && q->content_type)
        hl += snprintf(head + hl, sizeof(head) - (size_t)hl, "Content-Type: %s\r\n", q->content_type);
    if (hl > 0 && (size_t)hl < sizeof(head))
        hl += snprintf(head + hl, sizeof(head) - (size_t)hl, "\r\n");
    int rc;
    if (hl < 0 || (size_t)hl >= sizeof(head))
        rc = fail(err, errcap, VG_EINVAL, q->url, "request head too long");
    else if ((rc = send_all(fd, head, (size_t)hl, deadline, q->cancel_fd)) != 0 ||
             (q->body_len && (rc = send_all(fd, q->body, q->body_len, deadline, q->cancel_fd)) != 0))
        fail(err, errcap, rc, q->url, rc == VG_ETIMEDOUT ? "timed out sending" : "connection lost sending");
    else if ((rc = read_all(fd, r, q->max_bytes ? q->max_bytes : (64u << 20), deadline, q->cancel_fd, err, errcap)) ==
             0)
        rc = parse(r, err, errcap);
    close(fd);
    if (rc)
        vg_http_sync_res_free(r);
    return rc;
}

void vg_http_sync_res_free(struct vg_http_sync_res *r)
{
    free(r->buf);
    memset(r, 0, sizeof(*r));
}
