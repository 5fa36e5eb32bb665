/* Shared origin health: one record per server, read by every worker on each
 * pick and written by workers (passive outcomes) and the prober (active
 * checks). Only relaxed atomics: every field is an independent hint, no
 * reader needs to see two fields change together, and a stale value costs at
 * most one request sent to (or kept from) a server a moment too long. */
#include "proxy/proxy.h"

#include <stdatomic.h>

#define STATE_MAGIC 0x9a5e57a7u

struct server_state {
    atomic_bool active_up;
    /* Consecutive passive failures, saturating at max_fails: once there, a
     * server whose ejection expired is ejected again by a single failure
     * (nginx does the same), while one success clears it. */
    _Atomic uint32_t fails;
    /* vg_now_ms() value until which the server is skipped; 0 = not ejected. */
    _Atomic uint64_t ejected_until;
};

struct vg_proxy_origin_state {
    uint32_t magic;
    uint32_t max_fails; /* 0 = passive ejection off */
    uint64_t fail_timeout_ms;
    size_t n;
    struct server_state servers[];
};

struct vg_proxy_origin_state *vg_proxy_origin_state_create(const struct vg_conf_origin *o)
{
    VG_AN(o);
    VG_ASSERT(o->n_servers >= 1);
    struct vg_proxy_origin_state *st = vg_xcalloc(1, sizeof(*st) + o->n_servers * sizeof(st->servers[0]));
    st->magic = STATE_MAGIC;
    st->max_fails = o->max_fails;
    st->fail_timeout_ms = o->fail_timeout_ms;
    st->n = o->n_servers;
    for (size_t i = 0; i < st->n; i++) {
        atomic_init(&st->servers[i].active_up, true);
        atomic_init(&st->servers[i].fails, 0);
        atomic_init(&st->servers[i].ejected_until, 0);
    }
    return st;
}

void vg_proxy_origin_state_destroy(struct vg_proxy_origin_state *st)
{
    if (!st)
        return;
    VG_ASSERT(st->magic == STATE_MAGIC);
    st->magic = 0;
    free(st);
}

static struct server_state *server_at(struct vg_proxy_origin_state *st, size_t i)
{
    VG_AN(st);
    VG_ASSERT(st->magic == STATE_MAGIC);
    VG_ASSERT(i < st->n);
    return &st->servers[i];
}

bool vg_proxy_origin_state_usable(struct vg_proxy_origin_state *st, size_t i, uint64_t now_ms)
{
    struct server_state *s = server_at(st, i);
    if (!atomic_load_explicit(&s->active_up, memory_order_relaxed))
        return false;
    return now_ms >= atomic_load_explicit(&s->ejected_until, memory_order_relaxed);
}

static void report_success(struct server_state *s)
{
    /* Load before storing: successes are the common case and a store on
     * every request would bounce the cache line between workers. */
    if (atomic_load_explicit(&s->fails, memory_order_relaxed) != 0)
        atomic_store_explicit(&s->fails, 0, memory_order_relaxed);
    if (atomic_load_explicit(&s->ejected_until, memory_order_relaxed) != 0)
        atomic_store_explicit(&s->ejected_until, 0, memory_order_relaxed);
}

static void report_failure(struct vg_proxy_origin_state *st, struct server_state *s, uint64_t now_ms)
{
    if (st->max_fails == 0)
        return;
    uint32_t f = atomic_load_explicit(&s->fails, memory_order_relaxed);
    if (f < st->max_fails)
        f = atomic_fetch_add_explicit(&s->fails, 1, memory_order_relaxed) + 1;
    if (f < st->max_fails)
        return;
    uint64_t until = now_ms + st->fail_timeout_ms;
    if (until < now_ms) /* saturate rather than wrap to "not ejected" */
        until = UINT64_MAX;
    atomic_store_explicit(&s->ejected_until, until, memory_order_relaxed);
}

void vg_proxy_origin_state_report(struct vg_proxy_origin_state *st, size_t i, bool ok, uint64_t now_ms)
{
    struct server_state *s = server_at(st, i);
    if (ok)
        report_success(s);
    else
        report_failure(st, s, now_ms);
}

void vg_proxy_origin_state_set_active(struct vg_proxy_origin_state *st, size_t i, bool healthy)
{
    atomic_store_explicit(&server_at(st, i)->active_up, healthy, memory_order_relaxed);
}

bool vg_proxy_origin_state_active_up(struct vg_proxy_origin_state *st, size_t i)
{
    return atomic_load_explicit(&server_at(st, i)->active_up, memory_order_relaxed);
}
