/* A worker: one thread, one libuv loop, one h2o context, its own
 * SO_REUSEPORT listeners. It talks to the main thread only through
 * commands under node->mu plus a uv_async wake-up. */
#include "node_int.h"

#include <string.h>
#include <unistd.h>

/* h2o owns handle->data once the socket is wrapped; the loop leads back to us. */
static void on_conn_close(uv_handle_t *h)
{
    struct vg_worker *w = h->loop->data;
    __atomic_fetch_sub(&w->node->conns, 1, __ATOMIC_RELAXED);
    free(h);
}

static void on_reject_close(uv_handle_t *h)
{
    free(h);
}

static void on_connection(uv_stream_t *server, int status)
{
    struct vg_listener *l = server->data;
    struct vg_worker *w = l->worker;
    struct vg_node *node = w->node;
    if (status != 0)
        return;
    uv_tcp_t *conn = vg_xmalloc(sizeof(*conn));
    uv_tcp_init(&w->loop, conn);
    if (uv_accept(server, (uv_stream_t *)conn) != 0) {
        uv_close((uv_handle_t *)conn, on_reject_close);
        return;
    }
    size_t open = __atomic_add_fetch(&node->conns, 1, __ATOMIC_RELAXED);
    if (open > node->max_conns) {
        /* over the limit: say so plainly rather than hang the client */
        __atomic_fetch_sub(&node->conns, 1, __ATOMIC_RELAXED);
        vg_obs_counter_add(node->m_conn_rejected, 1);
        static const char msg[] = "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        uv_buf_t b = uv_buf_init((char *)msg, sizeof(msg) - 1);
        if (!l->accept.ssl_ctx)
            uv_try_write((uv_stream_t *)conn, &b, 1);
        uv_close((uv_handle_t *)conn, on_reject_close);
        return;
    }
    h2o_socket_t *sock = h2o_uv_socket_create((uv_stream_t *)conn, on_conn_close);
    h2o_accept(&l->accept, sock);
}

static int listeners_start(struct vg_worker *w)
{
    struct vg_node *node = w->node;
    w->n_listeners = node->n_listeners;
    w->listeners = vg_xcalloc(w->n_listeners, sizeof(*w->listeners));
    for (size_t i = 0; i < w->n_listeners; i++) {
        struct vg_listener *l = &w->listeners[i];
        l->worker = w;
        l->accept = (h2o_accept_ctx_t){.ctx = &w->ctx, .hosts = node->gconf.hosts, .ssl_ctx = node->listen_ssl[i]};
        uv_tcp_init(&w->loop, &l->tcp);
        l->tcp.data = l;
        int rc = uv_tcp_open(&l->tcp, node->listen_fds[w->id][i]);
        if (rc == 0)
            rc = uv_listen((uv_stream_t *)&l->tcp, 1024, on_connection);
        if (rc != 0) {
            vg_log(VG_LOG_ERROR, "cannot listen", "addr", node->listen_addr[i], "reason", uv_strerror(rc), NULL);
            return VG_ENET;
        }
    }
    return 0;
}

static void listeners_stop(struct vg_worker *w)
{
    for (size_t i = 0; i < w->n_listeners; i++)
        if (!uv_is_closing((uv_handle_t *)&w->listeners[i].tcp))
            uv_close((uv_handle_t *)&w->listeners[i].tcp, NULL);
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
    uv_stop(&w->loop);
}

void vg__node_worker_defer_free(struct vg_worker *w, void *ptr)
{
    w->graveyard = vg_xrealloc(w->graveyard, (w->n_graveyard + 1) * sizeof(*w->graveyard));
    w->graveyard[w->n_graveyard++] = (struct vg_deferred_free){ptr, w->ticks};
}

/* Close callbacks run at the end of the loop iteration that asked for them;
 * anything deferred before this tick started is safe to free now. */
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

static void on_async(uv_async_t *a)
{
    struct vg_worker *w = a->data;
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
        h2o_context_request_shutdown(&w->ctx);
        uv_timer_start(&w->tick, on_tick, 0, 50);
    }
}

void vg__node_worker_post(struct vg_worker *w)
{
    uv_async_send(&w->async);
}

static void *worker_main(void *arg)
{
    struct vg_worker *w = arg;
    uv_run(&w->loop, UV_RUN_DEFAULT);
    /* Drained. Release what this thread owns; pending handles (client
     * connections h2o still holds) die with the process. */
    for (size_t i = 0; i < w->n_retiring; i++)
        if (w->retiring[i]->workers[w->id].inflight == 0)
            retire(w, w->retiring[i]);
    if (w->site && w->site->workers[w->id].inflight == 0)
        retire(w, w->site);
    w->site = NULL;
    uv_run(&w->loop, UV_RUN_NOWAIT); /* let the closes just requested finish */
    graveyard_sweep(w, true);
    return NULL;
}

int vg__node_worker_start(struct vg_node *node, struct vg_worker *w)
{
    uv_loop_init(&w->loop);
    w->loop.data = w;
    h2o_context_init(&w->ctx, &w->loop, &node->gconf);
    w->log_buf = vg_xmalloc(64 * 1024);
    uv_async_init(&w->loop, &w->async, on_async);
    w->async.data = w;
    uv_timer_init(&w->loop, &w->tick);
    w->tick.data = w;
    uv_timer_start(&w->tick, on_tick, 250, 250);
    snprintf(w->reqid_prefix, sizeof(w->reqid_prefix), "%08x", (unsigned)(vg_wall_us() * 2654435761u) ^ (w->id << 24));
    vg__node_site_ref(node->site);
    w->site = node->site;
    vg__node_site_worker_init(w->site, w);
    int rc = listeners_start(w);
    if (rc != 0)
        return rc;
    if (pthread_create(&w->thread, NULL, worker_main, w) != 0)
        return VG_ENOMEM;
    return 0;
}
