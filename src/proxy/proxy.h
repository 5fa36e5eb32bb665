/* proxy: origin selection (balancers), origin health (active probes and
 * passive ejection), shared by every worker.
 *
 * Threading: a vg_proxy_origin_state is shared by all workers and the main
 * thread (atomics only, no locks). A vg_proxy_balancer is per worker (no
 * synchronisation at all): each worker balances its own share, like nginx
 * workers without a shared zone. A vg_proxy_health prober runs on one
 * uv loop (the node's main loop) and writes into the shared state. */
#ifndef VG_PROXY_H
#define VG_PROXY_H

#include "base/base.h"
#include "conf/conf.h"

#include <uv.h>

/* ---- shared health state ------------------------------------------------ */

struct vg_proxy_origin_state;

/* Caller owns the result. All servers start "up" (active checks, when
 * enabled, then take over). */
struct vg_proxy_origin_state *vg_proxy_origin_state_create(const struct vg_conf_origin *o);
void vg_proxy_origin_state_destroy(struct vg_proxy_origin_state *st);

/* Whether server i may receive traffic now: actively healthy and not
 * passively ejected (an ejection expires after fail_timeout_ms: the next
 * request then tries the server again, and one success clears it). */
bool vg_proxy_origin_state_usable(struct vg_proxy_origin_state *st, size_t i, uint64_t now_ms);

/* Passive outcome of one attempt on server i (connect error, timeout or 5xx
 * = !ok). max_fails consecutive failures eject the server. */
void vg_proxy_origin_state_report(struct vg_proxy_origin_state *st, size_t i, bool ok, uint64_t now_ms);

/* Active health result (used by the prober; exposed for tests). */
void vg_proxy_origin_state_set_active(struct vg_proxy_origin_state *st, size_t i, bool healthy);
bool vg_proxy_origin_state_active_up(struct vg_proxy_origin_state *st, size_t i);

/* ---- balancers (per worker) ---------------------------------------------- */

struct vg_proxy_balancer;

/* Caller owns the result; o must outlive it. */
struct vg_proxy_balancer *vg_proxy_balancer_create(const struct vg_conf_origin *o);
void vg_proxy_balancer_destroy(struct vg_proxy_balancer *b);

/* Picks a server index for one attempt, or -1 when none is usable.
 *   usable(i): whether server i may be chosen (health);
 *   tried: bitmask of servers already tried by this request (retries go
 *          elsewhere; bit i for server i, servers >= 64 are never masked);
 *   key/key_len: the hash key for VG_CONF_BALANCE_HASH (ignored otherwise;
 *          an empty key falls back to round robin).
 * round_robin is smooth weighted round robin; least_conn picks the lowest
 * active/weight (ties broken round robin); hash is a consistent-hash ring
 * (weights respected) that moves ~1/N of keys when a server is added or
 * removed, and walks the ring to the next usable server when the owner is
 * unusable. */
typedef bool (*vg_proxy_usable_fn)(void *ctx, size_t i);
int vg_proxy_balancer_pick(struct vg_proxy_balancer *b, vg_proxy_usable_fn usable, void *ctx, uint64_t tried,
                           const char *key, size_t key_len);

/* least_conn bookkeeping: call when an attempt on server i starts / ends. */
void vg_proxy_balancer_acquire(struct vg_proxy_balancer *b, size_t i);
void vg_proxy_balancer_release(struct vg_proxy_balancer *b, size_t i);

/* ---- active health checks ------------------------------------------------- */

struct vg_proxy_health;

/* Starts periodic probes of every server of o (GET health.path over plain
 * HTTP/1.1, Connection: close; healthy when the status is within
 * [expect_status_min, expect_status_max] and the answer arrives within
 * timeout_ms). rise consecutive successes mark a server up, fall
 * consecutive failures mark it down; transitions are logged. Returns NULL
 * when o->health.enabled is false. Caller owns the result. */
struct vg_proxy_health *vg_proxy_health_start(uv_loop_t *loop, const struct vg_conf_origin *o, const char *app_name,
                                              struct vg_proxy_origin_state *st);
/* Stops probing and frees the prober once its handles are closed (the loop
 * must keep running until then; pending probes are cancelled). */
void vg_proxy_health_stop(struct vg_proxy_health *h);

#endif
