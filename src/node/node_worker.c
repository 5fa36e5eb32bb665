/* A worker: one thread, one libuv loop, one h2o context, its own
 * SO_REUSEPORT listeners. It talks to the main thread only through
 * commands under node->mu plus a uv_async wake-up. */
#include "node_int.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

static void on_sock_close(void *data)
{
    struct vg_worker *w = data;
    __atomic_fetch_sub(&w->node->conns, 1, __ATOMIC_RELAXED);
}

static void on_reject_written(h2o_socket_t *sock, const char *err)
{
    h2o_socket_close(sock);
}

/* Over the limit: say so plainly rather than hang the client (a TLS client
 * has not shaken hands yet, so it just sees the close). */
static void reject_connection(struct vg_listener *l, h2o_socket_t *sock)
{
    static const char msg[] = "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    vg_obs_counter_add(l->worker->node->m_conn_rejected, 1);
    if (l->accept.ssl_ctx) {
        h2o_socket_close(sock);
        return;
    }
    h2o_iovec_t buf = h2o_iovec_init(msg, sizeof(msg) - 1);
    h2o_socket_write(sock, &buf, 1, on_reject_written);
}

static void on_accept(h2o_socket_t *listener, const char *err)
{
    struct vg_listener *l = listener->data;
    struct vg_worker *w = l->worker;
    if (err)
        return;
    h2o_socket_t *sock;
    while ((sock = h2o_evloop_socket_accept(listener)) != NULL) {
        size_t open = __atomic_add_fetch(&w->node->conns, 1, __ATOMIC_RELAXED);
        if (open > w->node->max_conns) {
            __atomic_fetch_sub(&w->node->conns, 1, __ATOMIC_RELAXED);
            reject_connection(l, sock);
            continue;
        }
        sock->on_close.cb = on_sock_close;
        sock->on_close.data = w;
        vg_http_accept(w->http1, &l->accept, sock);
    }
}

static void listeners_start(struct vg_worker *w)
{
    struct vg_node *node = w->node;
    w->n_listeners = node->n_listeners;
    w->listeners = vg_xcalloc(w->n_listeners, sizeof(*w->listeners));
    for (size_t i = 0; i < w->n_listeners; i++) {
        struct vg_listener *l = &w->listeners[i];
        l->worker = w;
        l->accept = (h2o_accept_ctx_t){.ctx = &w->ctx, .hosts = node->gconf.hosts, .ssl_ctx = node->listen_ssl[i]};
        l->sock = h2o_evloop_socket_create(w->loop, node->listen_fds[w->id][i], H2O_SOCKET_FLAG_DONT_READ);
        l->sock->data = l;
        h2o_socket_read_start(l->sock, on_accept);
    }
}

static void listeners_stop(struct vg_worker *w)
{
    for (size_t i = 0; i < w->n_listeners; i++) {
        if (!w->listeners[i].sock)
            continue;
        h2o_socket_read_stop(w->listeners[i].sock);
        h2o_socket_close(w->listeners[i].sock);
        w->listeners[i].sock = NULL;
    }
}

static size_t inflight(struct vg_worker *w)
{
    size_t n = w->site ? w->site->workers[w->id].inflight : 0;
    for (size_t i = 0; i < w->n_retiring; i++)
        n += w->retiring[i]->workers[w->id].inflight;
    return n;
}

static void retire(struct vg_worker *w, struct vg_site *site)
{
    vg__node_site_worker_fini(site, w);
    vg__node_site_unref(site);
}

/* Swaps in a new site; the old one stays until its last request here ends. */
static void adopt(struct vg_worker *w, struct vg_site *site)
{
    vg__node_site_worker_init(site, w);
    struct vg_site *old = w->site;
    w->site = site;
    if (!old)
        return;
    if (old->workers[w->id].inflight == 0) {
        retire(w, old);
        return;
    }
    w->retiring = vg_xrealloc(w->retiring, (w->n_retiring + 1) * sizeof(*w->retiring));
    w->retiring[w->n_retiring++] = old;
}

void vg__node_worker_request_done(struct vg_worker *w, struct vg_site *site)
{
    struct vg_site_worker *sw = &site->workers[w->id];
    VG_ASSERT(sw->inflight > 0);
    if (--sw->inflight || site == w->site)
        return;
    for (size_t i = 0; i < w->n_retiring; i++) {
        if (w->retiring[i] == site) {
            w->retiring[i] = w->retiring[--w->n_retiring];
            retire(w, site);
            return;
        }
    }
}

static void finish(struct vg_worker *w)
{
    vg__node_access_log_flush(w);
    uv_close((uv_handle_t *)&w->tick, NULL);
    uv_close((uv_handle_t *)&w->async, NULL);
    vg__node_cache_worker_close(w);
    vg__node_msg_worker_close(w);
    w->stop = true;
}

void vg__node_worker_defer_free(struct vg_worker *w, void *ptr)
{
    w->graveyard = vg_xrealloc(w->graveyard, (w->n_graveyard + 1) * sizeof(*w->graveyard));
    w->graveyard[w->n_graveyard++] = (struct vg_deferred_free){ptr, w->ticks};
}

/* h2o finishes closing sockets (and, on the libuv binding, timers) at the
 * end of the loop iteration that asked for it; anything deferred before
 * this tick started is safe to free now. */
static void graveyard_sweep(struct vg_worker *w, bool all)
{
    size_t keep = 0;
    for (size_t i = 0; i < w->n_graveyard; i++) {
        if (all || w->graveyard[i].tick < w->ticks)
            free(w->graveyard[i].ptr);
        else
            w->graveyard[keep++] = w->graveyard[i];
    }
    w->n_graveyard = keep;
    if (!keep) {
        free(w->graveyard);
        w->graveyard = NULL;
    }
}

static void on_tick(uv_timer_t *t)
{
    struct vg_worker *w = t->data;
    w->ticks++;
    graveyard_sweep(w, false);
    vg__node_access_log_flush(w);
    if (w->draining && (inflight(w) == 0 || vg_now_ms() >= w->drain_deadline_ms)) {
        if (inflight(w))
            vg_log(VG_LOG_WARN, "drain timeout: closing with requests in flight", NULL);
        finish(w);
    }
}

void vg__node_worker_commands(struct vg_worker *w)
{
    pthread_mutex_lock(&w->node->mu);
    struct vg_site *site = w->cmd_site;
    bool shutdown = w->cmd_shutdown;
    w->cmd_site = NULL;
    w->cmd_shutdown = false;
    pthread_mutex_unlock(&w->node->mu);
    if (site)
        adopt(w, site);
    if (shutdown && !w->draining) {
        w->draining = true;
        w->drain_deadline_ms = vg_now_ms() + w->node->opt.drain_timeout_ms;
        listeners_stop(w);
        vg_http1_shutdown(w->http1);
        h2o_context_request_shutdown(&w->ctx);
        uv_timer_start(&w->tick, on_tick, 0, 50);
    }
}

static void on_async(uv_async_t *a)
{
    vg__node_worker_commands(a->data);
}

void vg__node_worker_post(struct vg_worker *w)
{
    uv_async_send(&w->async);
}

static void on_uv_ready(h2o_socket_t *sock, const char *err)
{
    struct vg_worker *w = sock->data;
    uv_run(&w->uv, UV_RUN_NOWAIT);
}

/* The evloop waits; libuv's epoll fd is one of its sockets, and its timers
 * bound the wait. */
static void run(struct vg_worker *w)
{
    while (!w->stop) {
        uv_update_time(&w->uv);
        if (uv_backend_timeout(&w->uv) == 0)
            uv_run(&w->uv, UV_RUN_NOWAIT);
        if (w->stop)
            break;
        int t = uv_backend_timeout(&w->uv);
        if (vg_http_loop_run(w->loop, t < 0 ? INT32_MAX : t) != 0 && errno != EINTR) {
            vg_log(VG_LOG_ERROR, "event loop failed", "reason", strerror(errno), NULL);
            break;
        }
    }
}

static void *worker_main(void *arg)
{
    struct vg_worker *w = arg;
    run(w);
    vg_http_loop_done();
    /* Drained. Release what this thread owns; pending handles (client
     * connections h2o still holds) die with the process. */
    for (size_t i = 0; i < w->n_retiring; i++)
        if (w->retiring[i]->workers[w->id].inflight == 0)
            retire(w, w->retiring[i]);
    if (w->site && w->site->workers[w->id].inflight == 0)
        retire(w, w->site);
    w->site = NULL;
    h2o_socket_read_stop(w->uv_watch);
    h2o_socket_export_t ex; /* libuv owns its epoll fd: detach it, uv_loop_close closes it */
    if (h2o_socket_export(w->uv_watch, &ex) == 0)
        h2o_buffer_dispose(&ex.input);
    uv_run(&w->uv, UV_RUN_NOWAIT); /* let the closes just requested finish */
    uv_loop_close(&w->uv);
    graveyard_sweep(w, true);
    vg__node_area_cache_destroy(w->area_cache);
    w->area_cache = NULL;
    return NULL;
}

int vg__node_worker_start(struct vg_node *node, struct vg_worker *w)
{
    w->loop = h2o_evloop_create();
    uv_loop_init(&w->uv);
    w->uv.data = w;
    w->uv_watch = h2o_evloop_socket_create(w->loop, uv_backend_fd(&w->uv), H2O_SOCKET_FLAG_DONT_READ);
    w->uv_watch->data = w;
    h2o_socket_read_start(w->uv_watch, on_uv_ready);
    h2o_context_init(&w->ctx, w->loop, &node->gconf);
    w->http1 = vg_http1_ctx_create(&w->ctx, &node->http1);
    w->log_buf = vg_xmalloc(64 * 1024);
    w->area_cache = vg__node_area_cache_create(node);
    uv_async_init(&w->uv, &w->async, on_async);
    w->async.data = w;
    vg__node_cache_worker_init(w);
    vg__node_msg_worker_init(w);
    uv_timer_init(&w->uv, &w->tick);
    w->tick.data = w;
    uv_timer_start(&w->tick, on_tick, 250, 250);
    snprintf(w->reqid_prefix, sizeof(w->reqid_prefix), "%08x", (unsigned)(vg_wall_us() * 2654435761u) ^ (w->id << 24));
    vg__node_site_ref(node->site);
    w->site = node->site;
    vg__node_site_worker_init(w->site, w);
    listeners_start(w);
    if (pthread_create(&w->thread, NULL, worker_main, w) != 0)
        return VG_ENOMEM;
    return 0;
}
