/* --add-latency DUR: every request waits DUR before it is handled, as if
 * the client were far away (`verge dev --latency` simulates the distance
 * between the developer and each location this way).
 *
 * The wait is an h2o timeout on the worker's own loop: no thread blocks,
 * other requests go on meanwhile. One h2o_timeout_t per worker serves
 * every delayed request (they all wait the same time, so the timeout's
 * list stays in order). The entry lives on the request's pool: a client
 * that goes away before the wait ends disposes of the pool, which unlinks
 * the entry. */
#include "node_int.h"

struct delayed {
    h2o_timeout_entry_t entry; /* first: the callback gets &entry */
    h2o_req_t *req;
    h2o_handler_t *handler;
    struct vg_worker *worker;
};

static void on_dispose(void *p)
{
    struct delayed *d = p;
    if (h2o_timeout_is_linked(&d->entry))
        h2o_timeout_unlink(&d->entry);
}

static void on_timeout(h2o_timeout_entry_t *entry)
{
    struct delayed *d = (struct delayed *)entry;
    struct vg_worker *w = d->worker;
    /* hand the request back to the handler, which will ask again */
    w->delay_resuming = d->req;
    d->handler->on_req(d->handler, d->req);
}

bool vg__node_delay(struct vg_worker *w, h2o_handler_t *handler, h2o_req_t *req)
{
    uint64_t ms = w->node->opt.add_latency_ms;
    if (!ms)
        return false;
    if (w->delay_resuming == req) {
        w->delay_resuming = NULL;
        return false;
    }
    if (!w->delay_ready) {
        /* never disposed: requests may still wait when the worker stops,
         * and the loop (which owns the list) is never destroyed either */
        h2o_timeout_init(w->loop, &w->delay_timeout, ms);
        w->delay_ready = true;
    }
    struct delayed *d = h2o_mem_alloc_shared(&req->pool, sizeof(*d), on_dispose);
    *d = (struct delayed){.entry = {.cb = on_timeout}, .req = req, .handler = handler, .worker = w};
    h2o_timeout_link(w->loop, &w->delay_timeout, &d->entry);
    return true;
}
