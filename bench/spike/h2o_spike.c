/*
 * h2o 2.2.5 hello-world spike: one thread, one listener, one custom handler
 * answering 200 "hello world\n" over HTTP/1.1 keep-alive. Built three ways
 * from this file (see bench/spike/run.sh):
 *   libuv binding:         cc h2o_spike.c -lh2o -luv
 *   h2o's evloop:          cc -DH2O_USE_LIBUV=0 h2o_spike.c -lh2o-evloop
 *   evloop + libuv inside: cc -DH2O_USE_LIBUV=0 -DSPIKE_EMBED_UV h2o_spike.c -lh2o-evloop -luv
 * The third keeps a libuv loop (for libnats' adapter, timers, processes) on
 * the same thread: its epoll fd is watched by the evloop, and a 10 ms libuv
 * timer proves it runs (its count is sent as x-uv-ticks).
 * Usage: h2o_spike PORT   (listens on 127.0.0.1:PORT)
 */
#include <arpa/inet.h>
#include <errno.h>
#include <h2o.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#ifdef SPIKE_EMBED_UV
#include <uv.h>
static uv_loop_t uvloop;
static uv_timer_t uvtimer;
static unsigned long uvticks;
#endif

static h2o_globalconf_t config;
static h2o_context_t ctx;
static h2o_accept_ctx_t accept_ctx;

static int on_req(h2o_handler_t *self, h2o_req_t *req)
{
    static const char body[] = "hello world\n";
    (void)self;
    req->res.status = 200;
    req->res.reason = "OK";
    req->res.content_length = sizeof(body) - 1; /* as nginx: Content-Length, not chunked */
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, H2O_STRLIT("text/plain"));
#ifdef SPIKE_EMBED_UV
    char *ticks = h2o_mem_alloc_pool(&req->pool, 24);
    int n = snprintf(ticks, 24, "%lu", uvticks);
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-uv-ticks"), 0, NULL, ticks, (size_t)n);
#endif
    h2o_send_inline(req, body, sizeof(body) - 1);
    return 0;
}

static int listen_fd(unsigned short port)
{
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
    int fd, on = 1;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if ((fd = socket(AF_INET, SOCK_STREAM, 0)) < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) != 0 ||
        bind(fd, (struct sockaddr *)&addr, sizeof(addr)) != 0 || listen(fd, SOMAXCONN) != 0) {
        perror("listen");
        exit(1);
    }
    return fd;
}

#if H2O_USE_LIBUV

static void on_accept(uv_stream_t *listener, int status)
{
    if (status != 0)
        return;
    uv_tcp_t *conn = h2o_mem_alloc(sizeof(*conn));
    uv_tcp_init(listener->loop, conn);
    if (uv_accept(listener, (uv_stream_t *)conn) != 0) {
        uv_close((uv_handle_t *)conn, (uv_close_cb)free);
        return;
    }
    h2o_accept(&accept_ctx, h2o_uv_socket_create((uv_stream_t *)conn, (uv_close_cb)free));
}

static int run(unsigned short port)
{
    static uv_tcp_t listener;
    uv_loop_t *loop = uv_default_loop();
    h2o_context_init(&ctx, loop, &config);
    accept_ctx.ctx = &ctx;
    accept_ctx.hosts = config.hosts;
    uv_tcp_init(loop, &listener);
    if (uv_tcp_open(&listener, listen_fd(port)) != 0 || uv_listen((uv_stream_t *)&listener, SOMAXCONN, on_accept) != 0)
        return 1;
    return uv_run(loop, UV_RUN_DEFAULT);
}

#else

static void on_accept(h2o_socket_t *listener, const char *err)
{
    h2o_socket_t *sock;
    if (err != NULL)
        return;
    while ((sock = h2o_evloop_socket_accept(listener)) != NULL)
        h2o_accept(&accept_ctx, sock);
}

#ifdef SPIKE_EMBED_UV
static void on_uv_tick(uv_timer_t *t)
{
    (void)t;
    uvticks++;
}

static void on_uv_ready(h2o_socket_t *sock, const char *err)
{
    (void)sock, (void)err;
    uv_run(&uvloop, UV_RUN_NOWAIT);
}
#endif

static int run(unsigned short port)
{
    int32_t wait = INT32_MAX;
    h2o_evloop_t *loop = h2o_evloop_create();
    h2o_context_init(&ctx, loop, &config);
    accept_ctx.ctx = &ctx;
    accept_ctx.hosts = config.hosts;
    h2o_socket_t *sock = h2o_evloop_socket_create(loop, listen_fd(port), H2O_SOCKET_FLAG_DONT_READ);
    h2o_socket_read_start(sock, on_accept);
#ifdef SPIKE_EMBED_UV
    uv_loop_init(&uvloop);
    uv_timer_init(&uvloop, &uvtimer);
    uv_timer_start(&uvtimer, on_uv_tick, 10, 10);
    /* libuv's epoll fd turns readable when any of its fds is ready */
    h2o_socket_read_start(h2o_evloop_socket_create(loop, uv_backend_fd(&uvloop), H2O_SOCKET_FLAG_DONT_READ),
                          on_uv_ready);
#endif
    for (;;) {
#ifdef SPIKE_EMBED_UV
        /* libuv timers: run it only when something is due, then sleep no longer than its next timer */
        uv_update_time(&uvloop);
        if (uv_backend_timeout(&uvloop) == 0)
            uv_run(&uvloop, UV_RUN_NOWAIT);
        wait = uv_backend_timeout(&uvloop) < 0 ? INT32_MAX : uv_backend_timeout(&uvloop);
#endif
        if (h2o_evloop_run(loop, wait) != 0 && errno != EINTR) /* EINTR: e.g. strace attaching */
            break;
    }
    perror("h2o_evloop_run");
    return 1;
}

#endif

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s PORT\n", argv[0]);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    h2o_config_init(&config);
    h2o_hostconf_t *host = h2o_config_register_host(&config, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    h2o_pathconf_t *path = h2o_config_register_path(host, "/", 0);
    h2o_create_handler(path, sizeof(h2o_handler_t))->on_req = on_req;
    return run((unsigned short)atoi(argv[1]));
}
