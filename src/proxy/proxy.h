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

/* ---- forwarding (per request, on a worker's loop) ------------------------------ */

#include <h2o.h>

/* The timeouts one worker needs per origin (h2o timeouts are per loop and
 * per duration): connect, read and total carry the origin's timeouts for
 * the forwarder, idle its keepalive for the connection pools. */
struct vg_proxy_timers {
    h2o_loop_t *loop;
    h2o_timeout_t connect, read, total, idle;
};

/* t is the caller's memory. h2o's evloop walks its list of timeouts while
 * it runs their callbacks, so t must not be freed during the loop pass that
 * disposed of it (the node frees it a tick later). */
void vg_proxy_timers_init(struct vg_proxy_timers *t, h2o_loop_t *loop, const struct vg_conf_origin *o);
void vg_proxy_timers_dispose(struct vg_proxy_timers *t);

/* One worker's keep-alive connections to one server, kept on the worker's
 * loop: an idle connection stays an h2o socket with reading on (it closes
 * itself when the origin closes it or sends anything), so reusing it costs
 * no system call. At most a fixed number of idle connections are kept per
 * server (the most recently used ones), each for t->idle's duration
 * (conf keepalive; 0 turns reuse off).
 *
 * The server's address is resolved here, once (getaddrinfo, blocking: meant
 * for IP addresses and names from /etc/hosts such as localhost): a DNS
 * change needs a reload. A name that does not resolve is logged, and every
 * connection to that server then fails like a refused one.
 *
 * Caller owns the result; srv and t must outlive it. */
struct vg_proxy_pool;
struct vg_proxy_pool *vg_proxy_pool_create(const struct vg_conf_server *srv, struct vg_proxy_timers *t);
/* Closes the idle connections and frees p, at once. Every request that used
 * p must be over (a forward gives its connection back or closes it when its
 * request ends); call before vg_proxy_timers_dispose. */
void vg_proxy_pool_destroy(struct vg_proxy_pool *p);

/* Where a request goes: one origin as seen from one worker. Everything
 * pointed to is the caller's and must outlive every request forwarded with
 * it (the node keeps its site, which owns all of these, until the request's
 * pool is released). */
struct vg_proxy_target {
    const struct vg_conf_origin *conf;
    struct vg_proxy_origin_state *state; /* shared health */
    struct vg_proxy_balancer *balancer;  /* this worker's */
    struct vg_proxy_pool **pools;        /* this worker's, one per server (keep-alive) */
    struct vg_proxy_timers *timers;      /* this worker's */
    char *const *authority;              /* "host:port" per server: Host (unless conf->preserve_host) */
    const char *app;                     /* app name, for logs */
    size_t body_limit;                   /* the app's limits.body_size, for streamed request bodies */
    h2o_iovec_t traceparent;             /* sent instead of the client's (W3C), or empty */
};

/* What happens to a forwarded request, in order, per attempt (a retry
 * starts again at ATTEMPT): for the access log's upstream and the trace's
 * upstream spans. */
enum vg_proxy_event {
    VG_PROXY_ATTEMPT,   /* a server was picked: connecting, or taking a pooled connection */
    VG_PROXY_CONNECTED, /* the connection is ready (at once for a pooled one); the request goes out */
    VG_PROXY_HEAD,      /* the response head is in (the first byte came before) */
    VG_PROXY_END,       /* the origin is done with the response (cleanly or not) */
};
typedef void (*vg_proxy_event_fn)(void *data, enum vg_proxy_event ev, int server);

/* Forwards req to the origin and answers it: the response is streamed back
 * (a few hundred KiB of it held for the request at most: reading from the
 * origin stops while the client is behind), or an error is sent: 502 when
 * no server is usable, a connection fails or is reset, or the origin's
 * answer is malformed; 504 when connecting or waiting for the response head
 * timed out. An error after the head has gone out aborts the stream instead
 * (HTTP/1: the connection is closed without ending the body; HTTP/2: reset).
 *
 * The request body is sent as h2o has it: whole (req->entity, with its
 * Content-Length), or streamed from the client (vg_http_body_is_streamed)
 * with its Content-Length, or chunked when the client's length is unknown;
 * a streamed body is read piece by piece, the next piece only once the
 * previous one has gone to the origin (at most t->body_limit bytes: 413
 * beyond; a declared length over it is answered 413 at once). If the
 * client's body fails before the response head, the client gets the status
 * vg_http_body_read gave (400, 408 or 413), or nothing when it went away.
 * An origin that answers before it has the whole body gets its answer
 * forwarded; verge then stops sending the body at once when the status is
 * 300 or more, else once the response is complete (the client's connection
 * is closed after the response, since its body was not read to the end).
 *
 * Timeouts (conf): connect_timeout_ms per connection attempt; read_timeout_ms
 * from handing the whole request over until the response head is complete,
 * then between body reads (not while waiting for a slow client), and for
 * each piece of a streamed body to be taken by the origin; total_timeout_ms
 * from the moment the request body is complete (this call, unless it is
 * streamed; then the end of the upload or the response head, whichever
 * comes first) until the origin has sent the whole response.
 *
 *   path: what to ask the origin for (with the query), as it goes on the
 *         request line;
 *   hash_key: the balancer's key (empty unless the origin hashes);
 *   on_event, data: see vg_proxy_event_fn (on_event may be NULL).
 *
 * A server is picked per attempt (healthy ones, not yet tried by this
 * request); failures before the response head are retried on another server
 * up to conf->retries times: always when the connection could not be made,
 * and for idempotent methods also when the request went out but no response
 * byte came back; never once part of a streamed body was read from the
 * client (it cannot be sent again). Every attempt's outcome is reported to
 * the shared health state and every attempt holds the balancer
 * (acquire/release). Apart from those attempts, a request that went out on
 * a reused keep-alive connection and got the connection closed or reset
 * without a response byte is sent again on a new connection to the same
 * server, whatever its method: the origin closed an idle connection as the
 * request arrived, so it did not process it.
 * Streamed bodies always go out on a new connection, since they could not
 * be sent again.
 *
 * Ownership: the state lives on req->pool with a destructor that cancels
 * whatever is still running (h2o runs pool destructors newest first, so it
 * runs before anything the caller put on the pool earlier). path, hash_key
 * and req's headers must stay valid for the request (pool memory is). t is
 * copied. The caller must not answer req itself after the call. */
void vg_proxy_forward(h2o_req_t *req, const struct vg_proxy_target *t, h2o_iovec_t path, h2o_iovec_t hash_key,
                      vg_proxy_event_fn on_event, void *data);

#endif
