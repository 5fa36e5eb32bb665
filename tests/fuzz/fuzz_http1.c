/* Fuzzes verge's HTTP/1 connection layer end to end: the input is what a
 * client sends on one connection (heads, bodies in any framing, pipelined
 * requests, garbage), written into a socketpair whose other end is served
 * by vg_http_accept on a real h2o evloop, then half-closed. A handler reads
 * streamed bodies piece by piece and answers; the connection must always
 * end (no hang), without a crash, a sanitizer report or a leak.
 *
 * The body buffer is tiny (64 bytes) so that short inputs reach the
 * streaming, discarding and pipelining paths. */
#include "http/http.h"

#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static h2o_globalconf_t gconf;
static h2o_context_t ctx;
static h2o_evloop_t *loop;
static struct vg_http1_ctx *hc;
static h2o_accept_ctx_t actx;

struct reader {
    h2o_req_t *req;
    size_t got;
};

static void respond(h2o_req_t *req, int status, size_t n)
{
    char *body = h2o_mem_alloc_pool(&req->pool, 32);
    int len = snprintf(body, 32, "%zu\n", n);
    req->res.status = status;
    req->res.reason = "X";
    h2o_send_inline(req, body, (size_t)len);
}

static void on_body(void *data, h2o_iovec_t buf, enum vg_http_body_status st, int status, const char *reason)
{
    struct reader *r = data;
    (void)reason;
    if (st == VG_HTTP_BODY_ERROR) {
        respond(r->req, status ? status : 400, r->got);
        return;
    }
    r->got += buf.len;
    if (st == VG_HTTP_BODY_END) {
        respond(r->req, 200, r->got);
        return;
    }
    vg_http_body_read(r->req, 4096, on_body, r);
}

static int on_req(h2o_handler_t *self, h2o_req_t *req)
{
    (void)self;
    /* a path starting "/skip" answers without reading: the body is discarded */
    if (vg_http_body_is_streamed(req) && !(req->path.len >= 5 && memcmp(req->path.base, "/skip", 5) == 0)) {
        struct reader *r = h2o_mem_alloc_pool(&req->pool, sizeof(*r));
        *r = (struct reader){.req = req};
        vg_http_body_read(req, 4096, on_body, r);
        return 0;
    }
    respond(req, 200, req->entity.len);
    return 0;
}

static void setup(void)
{
    vg_log_set_level(VG_LOG_ERROR);
    h2o_config_init(&gconf);
    h2o_hostconf_t *host = h2o_config_register_host(&gconf, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    h2o_pathconf_t *path = h2o_config_register_path(host, "/", 0);
    h2o_handler_t *h = h2o_create_handler(path, sizeof(*h));
    h->on_req = on_req;
    loop = h2o_evloop_create();
    h2o_context_init(&ctx, loop, &gconf);
    struct vg_http1_settings s = {
        .header_timeout_ms = 1000,
        .idle_timeout_ms = 1000,
        .max_header_bytes = 2048,
        .max_body_bytes = 8192,
        .body_buffer_bytes = 64,
    };
    hc = vg_http1_ctx_create(&ctx, &s);
    actx = (h2o_accept_ctx_t){.ctx = &ctx, .hosts = gconf.hosts};
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!loop)
        setup();
    int fds[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, fds) != 0)
        return 0;
    int big = 1 << 20;
    setsockopt(fds[1], SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
    fcntl(fds[0], F_SETFL, O_NONBLOCK);
    fcntl(fds[1], F_SETFL, O_NONBLOCK);
    h2o_socket_t *sock = h2o_evloop_socket_create(loop, fds[0], 0);
    vg_http_accept(hc, &actx, sock);
    size_t off = 0;
    bool closed = false, shut = false;
    char sink[65536];
    for (int i = 0; i < 2000 && !closed; i++) {
        if (off < size) {
            ssize_t n = write(fds[1], data + off, size - off);
            if (n > 0)
                off += (size_t)n;
        }
        if (off == size && !shut) {
            shutdown(fds[1], SHUT_WR);
            shut = true;
        }
        h2o_evloop_run(loop, 0);
        ssize_t n;
        while ((n = read(fds[1], sink, sizeof(sink))) > 0)
            ;
        closed = n == 0;
    }
    if (!closed)
        __builtin_trap(); /* the connection outlived its input: a hang */
    for (int i = 0; i < 3; i++)
        h2o_evloop_run(loop, 0); /* let the evloop free the closed socket */
    close(fds[1]);
    return 0;
}
