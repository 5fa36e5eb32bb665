/* Internals shared by the node's files. */
#ifndef VG_NODE_INT_H
#define VG_NODE_INT_H

#include "bus/bus.h"
#include "cache/cache.h"
#include "conf/conf.h"
#include "fn/fn.h"
#include "geo/geo.h"
#include "http/http.h"
#include "net/net.h"
#include "node.h"
#include "obs/obs.h"
#include "proxy/proxy.h"
#include "state/state.h"

#include <jansson.h>

#include <h2o.h>
#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>
#include <uv.h>

#define VG_NODE_MAX_WORKERS 64
#define VG_NODE_STATUS_SLOTS 16 /* per-route status counters cached per slot */

struct vg_node;
struct vg_worker;
struct vg__node_area_cache;
struct MMDB_s;

/* ---- site: one configuration generation, shared read-only by workers ---- */

/* node_cache.c: the HTTP cache in front of proxy routes. */
struct vg__node_cache_route {
    bool enabled;
    struct vg_cache_rules rules;
    struct vg_cache_keyrules key;
};
void vg__node_cache_route_init(struct vg__node_cache_route *cr, const struct vg_conf_cache *cc);

enum vg__node_cache_result {
    VG__NODE_CACHE_HIT,
    VG__NODE_CACHE_MISS,
    VG__NODE_CACHE_STALE,
    VG__NODE_CACHE_BYPASS,
    VG__NODE_CACHE_RESULTS
};

/* How a caching route reaches its origin (what vg_proxy_forward takes). */
struct vg__node_cache_fwd {
    struct vg_proxy_target t;
    h2o_iovec_t path, hash_key;
    vg_proxy_event_fn on_event;
    void *event_data;
    struct vg_trace *trace; /* the request's, for the cache span (NULL: none) */
    vg_span_t trace_parent;
};

struct vg_route_rt {
    const struct vg_conf_route *conf;
    char label[256];         /* escaped route label for metrics */
    h2o_pathconf_t pathconf; /* static: owns the file handler */
    h2o_handler_t *file;     /* static: h2o's file handler (ETag, Range, 304) */
    int root_fd;             /* static: the directory (O_PATH), -1 if it could not be opened */
    size_t mount_len;        /* static: request path bytes mapped away */
    struct vg_obs_counter *status[VG_NODE_STATUS_SLOTS]; /* lazily filled */
    int status_code[VG_NODE_STATUS_SLOTS];
    struct vg_obs_histogram *latency;
    struct vg__node_cache_route cache; /* proxy: the cache's rules */
};

struct vg_origin_rt {
    const struct vg_conf_origin *conf;
    struct vg_proxy_origin_state *state;
    struct vg_proxy_health *health; /* main loop; stopped when the site is replaced */
    char **authority;               /* "host:port" per server */
    char **label;                   /* escaped server url per server */
};

/* Per-app request figures the agent reports (rollout gates read them):
 * relaxed atomics, kept by app name across reloads like the shared
 * dictionaries. Latency buckets are per bucket (not cumulative), bounds in
 * VG_NODE_LAT_BOUNDS_US, the last one +Inf. */
#define VG_NODE_LAT_BUCKETS 15
extern const uint64_t VG_NODE_LAT_BOUNDS_US[VG_NODE_LAT_BUCKETS - 1];
struct vg_node_appstats {
    char *app;
    uint64_t requests, errors_5xx;
    uint64_t lat[VG_NODE_LAT_BUCKETS];
    struct vg_obs_counter *cache[4]; /* the app's verge_cache_requests_total by result, once a route caches */
    uint64_t *areas;                 /* agent mode: requests by client area (node->geo's order, then "elsewhere") */
    uint64_t cache_n[4];             /* in a copy (vg__node_appstats_read): those counters' values */
};

struct vg_app_rt {
    struct vg_conf_app *conf;
    struct vg_node_appstats *stats; /* the node's, by app name */
    struct vg_route_rt *routes;
    struct vg_origin_rt *origins;
    struct vg_fn_shared *shared;    /* verge.shared (the node's, kept across reloads); NULL without Lua */
    struct vg_state_db *kv_local;   /* verge.kv local: the app's LMDB database; NULL without Lua */
    struct vg_state_gdb *kv_global; /* verge.kv global: its bucket replica; NULL without --nats or Lua */
    const char *kv_global_off;      /* why kv_global is NULL with --nats */
    char label[96];                 /* escaped app name */
    struct vg_obs_counter *cache_counters[VG__NODE_CACHE_RESULTS]; /* by result, when a route caches */
};

/* What one worker needs per origin: its own balancer, connection pools and
 * the forwarder's timers. */
struct vg_site_worker_origin {
    struct vg_proxy_balancer *balancer;
    struct vg_proxy_pool **pools;  /* one per server, keep-alive on this worker's loop */
    struct vg_proxy_timers timers; /* the pools' idle timeout among them */
};

struct vg_site_worker {
    bool ready;
    size_t inflight;                        /* requests of this worker still using the site */
    struct vg_site_worker_origin **origins; /* [app][origin] */
    struct vg_fn_app **fn;                  /* [app]: its Lua state here, NULL without Lua (or if it failed) */
    struct vg__node_fetch_ctx **fetch;      /* [app]: what verge.fetch needs here */
};

struct vg_site {
    int refs; /* atomic: main's current pointer + each worker using it */
    uint64_t generation;
    struct vg_node *node;
    struct vg_conf_app **confs;
    struct vg_app_rt *apps;
    size_t n_apps;
    struct vg_site_worker workers[VG_NODE_MAX_WORKERS];
};

struct vg_site *vg__node_site_create(struct vg_node *node, struct vg_conf_app **apps, size_t n_apps);
void vg__node_site_start_health(struct vg_site *site, uv_loop_t *loop);
void vg__node_site_stop_health(struct vg_site *site);
void vg__node_site_ref(struct vg_site *site);
void vg__node_site_unref(struct vg_site *site);
/* Worker-thread side: build/tear down the worker's private part. */
void vg__node_site_worker_init(struct vg_site *site, struct vg_worker *w);
void vg__node_site_worker_fini(struct vg_site *site, struct vg_worker *w);

/* ---- workers ---- */

struct vg_listener {
    h2o_socket_t *sock;
    h2o_accept_ctx_t accept;
    struct vg_worker *worker;
};

/* HTTP sockets run on h2o's own evloop (docs/decisions.md: the libuv
 * binding costs 15-55% more CPU per request); a libuv loop is embedded in
 * the same thread for wake-ups and timers, driven by the evloop. */
struct vg_worker {
    h2o_context_t ctx; /* first: h2o hands us &ctx */
    h2o_evloop_t *loop;
    struct vg_http1_ctx *http1; /* HTTP/1 connections (verge's own, http1.c) */
    uv_loop_t uv;
    h2o_socket_t *uv_watch; /* libuv's epoll fd, watched by the evloop */
    bool stop;
    unsigned id;
    struct vg_node *node;
    pthread_t thread;
    uv_async_t async;
    uv_timer_t tick; /* access-log flush, drain checks */
    struct vg_listener *listeners;
    size_t n_listeners;
    struct vg_site *site;
    struct vg_site **retiring; /* replaced sites with requests still running here */
    size_t n_retiring;
    bool draining;
    uint64_t drain_deadline_ms;
    uint32_t rtt_countdown; /* requests until the next round-trip sample (node_rtt.c) */
    /* commands from the main thread, under node->mu */
    struct vg_site *cmd_site;
    bool cmd_shutdown;
    /* access log */
    char *log_buf;
    size_t log_len;
    /* memory h2o may still touch while it finishes what it was doing with
     * it (timeouts of a retired site: the evloop walks their list while it
     * runs them): freed a tick later */
    struct vg_deferred_free {
        void *ptr;
        uint64_t tick;
    } * graveyard;
    size_t n_graveyard;
    uint64_t ticks;
    /* the HTTP cache: waiters woken by other workers' requests */
    pthread_mutex_t cache_mu;
    struct vg__node_cache_waiter *cache_woken; /* node_cache.c's, under cache_mu */
    uv_async_t cache_async;
    h2o_conn_t cache_conn; /* stand-in connection of background refreshes */
    /* request ids: per-worker random prefix + sequence */
    char reqid_prefix[12];
    uint64_t reqid_seq;
    /* --add-latency (node_delay.c) */
    h2o_timeout_t delay_timeout;
    bool delay_ready;
    h2o_req_t *delay_resuming;    /* the request being handed back, during that call */
    struct vg_trace_ring *traces; /* kept traces of this worker's requests */
    void *trace_free;             /* live traces' memory for reuse (node_trace.c) */
    size_t n_trace_free;
    struct vg__node_msgq *msgq;             /* messages for the apps' subscription handlers (node_msg.c) */
    struct vg__node_area_cache *area_cache; /* --geoip: client address -> area (node_area.c) */
};

struct vg_node {
    struct vg_node_options opt;
    h2o_globalconf_t gconf;
    h2o_hostconf_t *hostconf; /* the one catch-all host: we route ourselves */
    h2o_pathconf_t *root;
    h2o_pathconf_t fetch_pathconf; /* for verge.fetch subrequests: no filters of the root's */
    struct vg_obs_registry *metrics;
    struct vg_obs_counter *m_conn_rejected, *m_reload_ok, *m_reload_fail;
    pthread_mutex_t mu;
    struct vg_site *site; /* current; under mu */
    uint64_t generation;
    struct vg_worker *workers;
    unsigned n_workers;
    int **listen_fds;     /* [worker][listener] */
    SSL_CTX **listen_ssl; /* [listener], NULL for plain */
    char **listen_addr;   /* [listener], resolved "host:port" */
    size_t n_listeners;
    struct vg_http1_settings http1; /* connection-level limits, from every app's */
    size_t conns;                   /* atomic: open client connections */
    size_t max_conns;
    uv_loop_t *main_loop;
    /* verge.shared dictionaries by app name: they outlive sites so that
     * counters survive reloads; main thread only */
    struct vg_node_shared {
        char *app;
        struct vg_fn_shared *dict;
    } * shared;
    size_t n_shared;
    struct vg_cache *cache;       /* the HTTP cache, shared by every app and worker */
    struct vg_bus *bus;           /* NATS, or in-process */
    struct vg_bus_sub *purge_sub; /* purges from the other nodes */
    char node_id[80];             /* tells a node its own messages */
    struct vg_obs_counter *m_purge_in, *m_purge_bad;
    /* verge.kv (src/state): opened on first need by a site (main thread) */
    struct vg_state_local *state_local;
    struct vg_state_global *state_global; /* with --nats only */
    bool state_failed;                    /* the local store could not open (logged once) */
    struct vg_obs_histogram *m_kv_propagation;
    struct vg__node_exporter *trace_exporter; /* --trace-export, else NULL */
    struct vg_bus_sub *trace_sub;             /* lookups from `verge trace` */
    struct vg_log_ring *log_ring;             /* recent lines for `verge logs` */
    struct vg_bus_sub *logs_sub;              /* queries from `verge logs` */
    struct vg_bus_sub *stats_sub;             /* queries from `verge top` */
    struct vg__node_stats_reporter *reporter; /* the figures on the bus once a second (--nats) */
    char boot_id[17];                         /* this process's: cursors of another one start over */
    struct vg_obs_counter *m_traces_kept;
    struct vg_obs_histogram *m_kv_visible;
    pthread_mutex_t stats_mu; /* the array (entries never move or go away) */
    struct vg_node_appstats **appstats;
    size_t n_appstats;
    /* agent mode: the client areas demand is counted in (the bundled
     * locations), and the one a request without X-Verge-Client-Area (or
     * without --client-area-header) comes from: the node's own */
    struct vg_geo_set *geo;
    uint32_t own_area;
    uint32_t *rtt_us; /* per client area: the clients' round trip, a moving average (node_rtt.c) */
    /* agent mode with --geoip: the database (libmaxminddb's MMDB_s, read
     * by every worker: lookups are read-only), and node->geo's locations
     * as unit vectors for the nearest one to a client */
    struct MMDB_s *geoip;
    struct vg_geo_xyz *area_xyz;
    /* agent mode: the agent thread hands the main thread a set of app
     * directories to switch to and waits for the outcome */
    struct vg_node_agent *agent;
    uv_async_t agent_async;
    pthread_mutex_t agent_mu;
    pthread_cond_t agent_cv;
    char **agent_dirs; /* under agent_mu: the request */
    size_t n_agent_dirs;
    bool agent_done; /* under agent_mu: the answer */
    int agent_rc;
    char agent_err[1200];
    struct vg__node_msg *msg; /* the apps' subscriptions (node_msg.c) */
};

/* The app's figures (created on first use; main thread). */
struct vg_node_appstats *vg__node_appstats_for(struct vg_node *node, const char *app);
/* A copy of app's figures (cache results in cache_n), all zero when it has
 * none yet (any thread). */
void vg__node_appstats_read(struct vg_node *node, const char *app, struct vg_node_appstats *out);
/* App's requests by client area since start, {area id: n} (agent mode;
 * any thread): the demand the control plane places apps by. */
json_t *vg__node_appstats_demand(struct vg_node *node, const char *app);

/* node_area.c: client areas. The area a request is counted in (index into
 * node->geo, or its count for a place outside it): the header's (with
 * --client-area-header), else the GeoIP database's (with --geoip), else
 * the node's own. Worker thread (w's cache). */
uint32_t vg__node_client_area(struct vg_worker *w, h2o_req_t *req);
/* The area of a peer address by the GeoIP database, through the worker's
 * cache c (the node's own area without a database, a cache or an IP
 * address). */
uint32_t vg__node_area_of_addr(struct vg_node *node, struct vg__node_area_cache *c, const struct sockaddr *sa,
                               socklen_t len);
/* Opens --geoip once node->geo is loaded: 0, else logs why and returns
 * VG_EINVAL. Close after the workers are gone. */
int vg__node_geoip_open(struct vg_node *node) VG_MUST_CHECK;
void vg__node_geoip_close(struct vg_node *node);
/* A worker's address -> area cache (NULL without a database); the caller
 * owns it. */
struct vg__node_area_cache *vg__node_area_cache_create(struct vg_node *node);
void vg__node_area_cache_destroy(struct vg__node_area_cache *c);
/* node_rtt.c: one request's client round trip into its area's average
 * (called when w->rtt_countdown reaches 0; re-arms it), and the averages
 * as {area id: µs} for the heartbeat. */
void vg__node_rtt_sample(struct vg_worker *w, h2o_req_t *req, uint32_t area);
json_t *vg__node_rtt_json(struct vg_node *node);

/* node_agent.c: the control-plane agent (agent mode only). */
struct vg_node_agent *vg__node_agent_create(struct vg_node *node);
/* The directories of the versions last known good (malloc'd, both levels). */
char **vg__node_agent_dirs(struct vg_node_agent *a, size_t *n);
/* Drops the live versions (they failed to load at start-up). */
void vg__node_agent_forget(struct vg_node_agent *a);
void vg__node_agent_start(struct vg_node_agent *a);
/* Ends the agent's calls and waits now (drain); destroy joins its threads. */
void vg__node_agent_stop(struct vg_node_agent *a);
void vg__node_agent_destroy(struct vg_node_agent *a);
/* Whether app has a live version here: then its id (65 bytes), the figures
 * it had when it went live and when that was (any thread). */
bool vg__node_agent_live(struct vg_node_agent *a, const char *app, char *version, struct vg_node_appstats *base,
                         uint64_t *live_since_ms);

/* verge.fetch through the forwarder (node_fetch.c): one context per app
 * per worker per site. */
struct vg__node_fetch_ctx;
struct vg__node_fetch_ctx *vg__node_fetch_ctx_create(struct vg_site *site, struct vg_worker *w, size_t app);
struct vg_fn_fetcher vg__node_fetcher(struct vg__node_fetch_ctx *ctx);

/* verge.kv stores (node_state.c): init after the metrics and bus (opens
 * the global store with --nats), fini once no worker runs. */
int vg__node_state_init(struct vg_node *node);
void vg__node_state_fini(struct vg_node *node);
/* The app's verge.kv stores (main thread, at site creation). */
void vg__node_state_for(struct vg_node *node, struct vg_app_rt *app);
/* Whether the global replicas have caught up (always true without --nats). */
bool vg__node_state_ready(struct vg_node *node);
/* The app's shared dictionary, created on first use (main thread). */
struct vg_fn_shared *vg__node_shared_for(struct vg_node *node, const char *app);

/* node_msg.c: the apps' subscriptions, a Lua handler per bus message. */
void vg__node_msg_worker_init(struct vg_worker *w);  /* main thread, before the worker runs */
void vg__node_msg_worker_close(struct vg_worker *w); /* the worker, as it stops: later messages are dropped */
/* Subscribes to what site's apps declare and unsubscribes the rest (site
 * NULL: everything); main thread, after the workers were told of site. */
void vg__node_msg_sync(struct vg_node *node, struct vg_site *site);
void vg__node_msg_fini(struct vg_node *node); /* the workers are joined; before the bus goes */

int vg__node_worker_start(struct vg_node *node, struct vg_worker *w);
/* Reads the main thread's commands (a new site, shutdown) now. */
void vg__node_worker_commands(struct vg_worker *w);
void vg__node_worker_post(struct vg_worker *w); /* wake it to read commands */
void vg__node_worker_request_done(struct vg_worker *w, struct vg_site *site);
/* free(ptr) once libuv has finished closing the handles inside it. */
void vg__node_worker_defer_free(struct vg_worker *w, void *ptr);

/* ---- request handling ---- */

void vg__node_handler_register(struct vg_node *node);

/* --add-latency (node_delay.c): true when req was put aside to be handed
 * to handler->on_req again later on this worker's loop (the handler then
 * returns at once); false when it is to be handled now. */
bool vg__node_delay(struct vg_worker *w, h2o_handler_t *handler, h2o_req_t *req);

/* Answers req from the cache or forwards it with the cache's filter on it
 * (node_cache.c). app: the app's name, prefix of its keys. */
void vg__node_cache_proxy(struct vg_worker *w, struct vg_site *site, h2o_req_t *req, h2o_iovec_t app,
                          struct vg_obs_counter *const *counters, const struct vg__node_cache_route *cr,
                          const struct vg__node_cache_fwd *fwd);
/* POST /_verge/purge (node_cache.c). */
void vg__node_cache_purge_endpoint(struct vg_worker *w, h2o_req_t *req);

/* node_admin.c: what the admin endpoints share. */
/* {"error": why} with status (401 adds WWW-Authenticate: Bearer). */
void vg__node_admin_error(h2o_req_t *req, int status, const char *why);
/* Whether req carries "Authorization: Bearer <token>" (constant time;
 * false when the node has no token). */
bool vg__node_admin_token_ok(h2o_req_t *req, const char *token);
/* Whether v is token, in constant time in the token's length (the
 * X-Verge-Debug header's check). */
bool vg__node_admin_token_equal(h2o_iovec_t v, const char *token);
/* The diagnostics endpoints (traces, logs, stats): open in --dev, else the
 * admin token; false after answering 401 and logging why (what: the
 * endpoint, for the log). */
bool vg__node_admin_diag_ok(struct vg_node *node, h2o_req_t *req, const char *what);
/* The app named (name, len), or the node's only app when name is NULL;
 * NULL with *why ("no such app…" for an unknown name) otherwise. */
const struct vg_app_rt *vg__node_admin_app(struct vg_site *site, const char *name, size_t len, const char **why);

/* node_publish.c: POST /_verge/publish/SUBJECT. */
void vg__node_publish_endpoint(struct vg_worker *w, h2o_req_t *req);

/* Purges travel between nodes on "verge.purge.APP" as
 * {"node": ID, "soft": bool, "purges": [{"kind": "url"|"prefix"|"tag", "value": V}]}
 * where every V belongs to APP (starts with "APP " or, for a tag, "APP\n").
 * Parses such a message into at most max purges (values point into *doc,
 * which the caller releases with json_decref); 0, or -1 with a reason.
 * Untrusted bytes: fuzzed (fuzz_purge_msg). */
int vg__node_purge_msg_parse(const void *data, size_t len, const char *app, json_t **doc, struct vg_cache_purge *out,
                             size_t max, size_t *n, const char **from, const char **why);
/* Subscribes the node to the other nodes' purges (start-up). */
int vg__node_purge_fanout_start(struct vg_node *node);
void vg__node_cache_worker_init(struct vg_worker *w);
void vg__node_cache_worker_close(struct vg_worker *w);
void vg__node_access_log_flush(struct vg_worker *w);

/* ---- live figures (node_stats.c) ---- */

/* GET /_verge/stats and "verge.stats.query" on the bus: every app's
 * counters (requests, 5xx, latency buckets, cache results) for `verge top`,
 * which turns two snapshots into rates. */
void vg__node_stats_endpoint(struct vg_worker *w, h2o_req_t *req);
/* Also starts the once-a-second report on the bus with --nats
 * (VG_NODE_STATS_REPORT_SUBJECT; the control plane's `verge top` and gates
 * read it); unsubscribe stops it, before the bus goes. */
void vg__node_stats_subscribe(struct vg_node *node);
void vg__node_stats_unsubscribe(struct vg_node *node);
/* An app's figures counted from base (what it had when its version went
 * live; zeros: since the process started) in the report's `stats` shape:
 * {live_since_ms, requests, errors_5xx, latency_le_ms, latency_counts,
 * cache}. The caller owns it. */
json_t *vg__node_stats_since(const struct vg_node_appstats *now, const struct vg_node_appstats *base,
                             uint64_t live_since_ms);

/* ---- logs (node_logs.c) ---- */

/* The ring every log line also goes to (init first thing, fini last). */
void vg__node_logs_init(struct vg_node *node);
void vg__node_logs_fini(struct vg_node *node);
/* Answers "verge.logs.query" on the bus (after the bus is up). */
void vg__node_logs_subscribe(struct vg_node *node);
void vg__node_logs_unsubscribe(struct vg_node *node);
/* GET /_verge/logs. */
void vg__node_logs_endpoint(struct vg_worker *w, h2o_req_t *req);

/* ---- traces (node_trace.c, node_trace_export.c) ---- */

/* The request's trace: continues an incoming traceparent; *tp_hdr is the
 * index of that header in req (-1: none), for vg__node_trace_propagate. */
struct vg_trace *vg__node_trace_start(struct vg_worker *w, h2o_req_t *req, ssize_t *tp_hdr);
/* Span from's traceparent for a callee, or empty when tracing is off:
 * what a proxied request carries (vg_proxy_target). The request's own
 * span's (from 0) is formatted once into the trace's memory and lives as
 * long as the trace (until on_request_end); others' are on req's pool. */
h2o_iovec_t vg__node_trace_header(struct vg_trace *t, vg_span_t from, h2o_req_t *req);
/* Sets req's traceparent to span from's (before forwarding it): in place
 * at *tp_hdr when it is still there, else found or added (and *tp_hdr
 * updated). */
void vg__node_trace_propagate(struct vg_trace *t, vg_span_t from, h2o_req_t *req, ssize_t *tp_hdr);
/* A kept trace's record into the worker's ring and the exporter (takes
 * the caller's reference). */
void vg__node_trace_keep(struct vg_worker *w, struct vg_trace_rec *r);
/* Finishes it; a kept one goes to the worker's ring and the exporter.
 * Inline, like vg__node_trace_timing: every request passes, few stop. */
static inline void vg__node_trace_end(struct vg_worker *w, struct vg_trace *t, const struct vg_trace_meta *m)
{
    struct vg_trace_rec *r = vg_trace_finish(t, m, w->node->opt.trace_slow_ms * 1000);
    if (r)
        vg__node_trace_keep(w, r);
}
/* A trace's memory, from the worker's free list (node_trace.c says why):
 * the trace and what every request needs besides it, so that none of it
 * is an allocation. */
struct vg__node_trace_block {
    struct vg__node_trace_block *next_free;
    h2o_iovec_t env[2];              /* the request env's entries that carry the trace */
    char tp[VG_TRACEPARENT_LEN + 1]; /* the origin's traceparent (span 0's), once formatted (tp[0] != 0) */
    _Alignas(16) unsigned char trace[];
};
#define VG__NODE_TRACE_FREE_MAX 256
/* Gives a request's trace memory back (after vg__node_trace_end). */
static inline void vg__node_trace_release(struct vg_worker *w, struct vg_trace *t)
{
    if (!t)
        return;
    struct vg__node_trace_block *b =
        (struct vg__node_trace_block *)(void *)((unsigned char *)t - offsetof(struct vg__node_trace_block, trace));
    if (w->n_trace_free >= VG__NODE_TRACE_FREE_MAX) {
        free(b);
        return;
    }
    b->next_free = w->trace_free;
    w->trace_free = b;
    w->n_trace_free++;
}
/* Server-Timing and traceresponse on the response, when asked for:
 * always in dev mode, else when the request carries the admin token in
 * X-Verge-Debug (so never without an admin token). */
void vg__node_trace_timing_add(struct vg_worker *w, struct vg_trace *t, h2o_req_t *req);
static inline void vg__node_trace_timing(struct vg_worker *w, struct vg_trace *t, h2o_req_t *req)
{
    if (t && (w->node->opt.dev || w->node->opt.admin_token))
        vg__node_trace_timing_add(w, t, req);
}
/* GET /_verge/traces/ID. */
void vg__node_trace_endpoint(struct vg_worker *w, h2o_req_t *req, h2o_iovec_t id_hex);
int vg__node_trace_init(struct vg_node *node); /* after the workers' array exists */
void vg__node_trace_fini(struct vg_node *node);

/* OTLP/HTTP JSON export of kept traces: one thread, a bounded queue. */
struct vg__node_exporter;
struct vg__node_exporter_options {
    const char *url; /* the collector: http://host:port/v1/traces */
    const char *service, *node, *location;
    size_t queue_max;    /* records (default 8192); past it dropped, counted */
    size_t batch_max;    /* records per request (default 256) */
    uint32_t flush_ms;   /* a partial batch waits at most this (default 1000) */
    uint32_t timeout_ms; /* per request (default 2000) */
    uint32_t retries;    /* per batch, with backoff (default 3); then dropped, counted */
};
struct vg__node_exporter_stats {
    uint64_t exported, dropped_queue, dropped_failed, failed_requests;
};
int vg__node_exporter_create(const struct vg__node_exporter_options *o, struct vg__node_exporter **out, char *err,
                             size_t errcap) VG_MUST_CHECK;
/* Sends what is queued (one more try, bounded by the timeout), then stops. */
void vg__node_exporter_destroy(struct vg__node_exporter *x);
/* Takes a reference of its own, or drops r (counted) when the queue is full. */
void vg__node_exporter_push(struct vg__node_exporter *x, struct vg_trace_rec *r);
void vg__node_exporter_stats(struct vg__node_exporter *x, struct vg__node_exporter_stats *out);

static inline struct vg_worker *vg__node_worker_of(h2o_context_t *ctx)
{
    return (struct vg_worker *)ctx; /* ctx is the first member */
}

#endif
