/* Internals shared by the control plane's files: the SQLite store
 * (control_store.c), tokens (control_auth.c), the HTTP API
 * (control_api.c) and the server loop (control_main.c). */
#ifndef VG_CONTROL_INT_H
#define VG_CONTROL_INT_H

#include "conf/conf.h"
#include "control.h"
#include "http/http.h"

#include <h2o.h>
#include <jansson.h>
#include <uv.h>

struct vg_control_server;

/* ==== store =============================================================== */

/* One SQLite database (DIR/control.db): WAL, synchronous=NORMAL, foreign
 * keys on, schema versioned with PRAGMA user_version. Every mutation is
 * one transaction that also appends its history row. Single-threaded: the
 * server's loop thread owns it. Timestamps are Unix milliseconds. */
struct vg__control_store;

#define VG__CONTROL_SCHEMA_VERSION 4

/* Opens (creating and migrating as needed) the database at path. On
 * success *out is the caller's (vg__control_store_close). */
int vg__control_store_open(const char *path, struct vg__control_store **out, char *err, size_t errcap) VG_MUST_CHECK;
void vg__control_store_close(struct vg__control_store *s);
/* The raw handle, for tests that check what SQL may not do. */
struct sqlite3 *vg__control_store_db(struct vg__control_store *s);

/* Token scopes, as bits so a route names the set it accepts. */
enum {
    VG__CONTROL_SCOPE_READ = 1u << 0,
    VG__CONTROL_SCOPE_DEPLOY = 1u << 1,
    VG__CONTROL_SCOPE_ADMIN = 1u << 2,
    VG__CONTROL_SCOPE_NODE = 1u << 3,
};
/* "read" -> VG__CONTROL_SCOPE_READ...; 0 for an unknown name. */
unsigned vg__control_scope_parse(const char *s);
const char *vg__control_scope_name(unsigned scope);

/* Who makes a change (for history): a token's name. */
struct vg__control_actor {
    const char *name;
    unsigned scope;
};

/* ---- tokens ---- */
/* VG_EEXIST when the name is taken (revoked names stay taken). */
int vg__control_token_insert(struct vg__control_store *s, const char *name, unsigned scope, const uint8_t hash[32],
                             const char *actor, int64_t expires_at_ms) VG_MUST_CHECK;
/* VG_ENOENT when there is no live token of that name. */
int vg__control_token_revoke(struct vg__control_store *s, const char *name, const char *actor) VG_MUST_CHECK;
/* Live (unrevoked) tokens, for the in-memory table; cb gets each one. */
typedef void (*vg__control_token_fn)(void *data, const char *name, unsigned scope, const uint8_t hash[32],
                                     int64_t expires_at_ms);
int vg__control_tokens_each(struct vg__control_store *s, vg__control_token_fn cb, void *data) VG_MUST_CHECK;
int vg__control_tokens_count(struct vg__control_store *s, int64_t *n) VG_MUST_CHECK; /* revoked too */
/* JSON array of {name, scope, created_at, created_by, revoked_at}: no hashes. */
int vg__control_tokens_list(struct vg__control_store *s, json_t **out) VG_MUST_CHECK;

/* ---- apps and versions ---- */
/* *created tells whether the app is new. */
int vg__control_app_create(struct vg__control_store *s, const char *app, const char *actor,
                           bool *created) VG_MUST_CHECK;
int vg__control_apps_list(struct vg__control_store *s, json_t **out) VG_MUST_CHECK;
/* VG_ENOENT for an unknown app. */
int vg__control_app_get(struct vg__control_store *s, const char *app, json_t **out) VG_MUST_CHECK;

struct vg__control_version {
    const char *id; /* sha256 of the bundle, hex */
    const char *app;
    uint64_t size, entries, unpacked;
    const char *rollout;   /* the manifest's rollout settings as JSON, or NULL */
    const char *placement; /* the manifest's placement policy as JSON, or NULL (everywhere) */
};
/* Adds a version (and its app when new), or finds it: *created false when
 * the same bytes were uploaded before. VG_EEXIST if the id belongs to
 * another app. */
int vg__control_version_add(struct vg__control_store *s, const struct vg__control_version *v, const char *actor,
                            bool *created) VG_MUST_CHECK;
/* VG_ENOENT for an unknown app. */
int vg__control_versions_list(struct vg__control_store *s, const char *app, json_t **out) VG_MUST_CHECK;
/* VG_ENOENT for an unknown app or version. */
int vg__control_version_get(struct vg__control_store *s, const char *app, const char *id, json_t **out) VG_MUST_CHECK;
/* Whether a bundle of that sha256 belongs to some version. */
int vg__control_bundle_known(struct vg__control_store *s, const char *id, bool *known) VG_MUST_CHECK;

/* ---- desired state ---- */
/* Makes version the app's desired version everywhere at once: a new
 * deployment row (state 'done'), the revision bumped; a rollout in
 * progress is cancelled (state 'superseded'), its per-node versions
 * dropped. *changed false (and nothing written) when the version is
 * desired already and no rollout runs. VG_ENOENT for an unknown app or
 * version. */
int vg__control_desired_set(struct vg__control_store *s, const char *app, const char *version, const char *actor,
                            bool *changed, int64_t *deployment, int64_t *rev) VG_MUST_CHECK;
/* The desired-state revision: bumped by every change of desired state. */
int64_t vg__control_rev(struct vg__control_store *s);
/* {"rev": N, "apps": [{app, version, deployment, bundle}]} for a node. */
int vg__control_desired_for_node(struct vg__control_store *s, const char *node, json_t **out) VG_MUST_CHECK;

/* ---- nodes ---- */
int vg__control_node_register(struct vg__control_store *s, const char *id, const char *location, json_t *labels,
                              const char *actor) VG_MUST_CHECK;
/* VG_ENOENT for an unregistered node. report is stored as given. */
int vg__control_node_heartbeat(struct vg__control_store *s, const char *id, json_t *report) VG_MUST_CHECK;
int vg__control_node_exists(struct vg__control_store *s, const char *id, bool *exists) VG_MUST_CHECK;
int vg__control_nodes_list(struct vg__control_store *s, uint64_t now_ms, uint64_t up_ms, json_t **out) VG_MUST_CHECK;

/* ---- for control_rollout.c, which keeps its own SQL ---- */
int vg__control_store_begin(struct vg__control_store *s) VG_MUST_CHECK;
/* Commits when rc is 0, else rolls back; returns the outcome. */
int vg__control_store_end(struct vg__control_store *s, int rc) VG_MUST_CHECK;
/* One history row inside the caller's transaction; takes detail. */
int vg__control_store_history(struct vg__control_store *s, const char *actor, const char *action, const char *app,
                              const char *subject, json_t *detail) VG_MUST_CHECK;
/* Writes the next revision inside the caller's transaction; after the
 * commit, rev_committed makes it the store's. */
int vg__control_store_rev_next(struct vg__control_store *s, int64_t *rev) VG_MUST_CHECK;
void vg__control_store_rev_committed(struct vg__control_store *s, int64_t rev);

/* ---- SQL prepared per call (control_sql.c) ---- */
/* NULL after logging the reason. */
struct sqlite3_stmt *vg__control_sql_prep(struct vg_control_server *srv, const char *sql);
/* Steps a statement that returns no rows and finalizes it. */
int vg__control_sql_run(struct vg_control_server *srv, struct sqlite3_stmt *st, const char *what) VG_MUST_CHECK;
/* Column text, NULL for NULL. */
const char *vg__control_sql_col(struct sqlite3_stmt *st, int i);
void vg__control_sql_text(struct sqlite3_stmt *st, int i, const char *v); /* NULL binds NULL */
void vg__control_sql_int(struct sqlite3_stmt *st, int i, int64_t v);

/* ---- history ---- */
/* Newest first; app NULL for all. */
int vg__control_history_list(struct vg__control_store *s, const char *app, int64_t limit, json_t **out) VG_MUST_CHECK;

/* RFC 3339 UTC with milliseconds, for JSON. */
void vg__control_time_format(int64_t ms, char buf[32]);

/* ==== rollout gates (control_gate.c: pure) ================================== */

/* The nodes' latency histogram (the heartbeat contract): 14 bounds in ms,
 * then +Inf. */
#define VG__CONTROL_LAT_BUCKETS 15
extern const double vg__control_latency_le_ms[VG__CONTROL_LAT_BUCKETS - 1];
/* Below this difference two p99s are the same for the gate: near zero the
 * buckets are 0.5 ms wide, and a ratio of two tiny figures is noise. */
#define VG__CONTROL_P99_SLACK_MS 1.0

/* One version's figures, summed over the nodes that run it. */
struct vg__control_figures {
    uint64_t requests, errors; /* errors: 5xx */
    uint64_t counts[VG__CONTROL_LAT_BUCKETS];
    uint64_t timed; /* sum of counts */
    uint64_t nodes;
};

/* Adds one report's `stats` object; false (nothing added) when it is not
 * one. A histogram with other bounds is left out of the latency sums. */
bool vg__control_figures_add(struct vg__control_figures *f, json_t *stats);
double vg__control_figures_error_rate(const struct vg__control_figures *f); /* 0 without requests */
/* The 99th percentile in ms, interpolated inside its bucket; -1 without
 * any timed request. */
double vg__control_figures_p99_ms(const struct vg__control_figures *f);
/* The same for any q in (0, 1]. */
double vg__control_figures_quantile_ms(const struct vg__control_figures *f, double q);
/* f += add, field by field. */
void vg__control_figures_merge(struct vg__control_figures *f, const struct vg__control_figures *add);
/* {nodes, requests, errors_5xx, error_rate, p99_ms}: the caller owns it. */
json_t *vg__control_figures_json(const struct vg__control_figures *f);
/* The same with the bucket counts, to keep as a baseline, and back. */
json_t *vg__control_figures_save(const struct vg__control_figures *f);
void vg__control_figures_from_json(struct vg__control_figures *f, json_t *j);

struct vg__control_gate {
    uint64_t min_requests;
    double max_error_rate; /* absolute increase of the 5xx rate that fails */
    double max_p99_ratio;  /* new p99 / old p99 that fails */
};

enum vg__control_verdict {
    VG__CONTROL_GATE_WAIT, /* not enough traffic yet, or the window is not over */
    VG__CONTROL_GATE_PASS,
    VG__CONTROL_GATE_FAIL,
};

/* One step's verdict: FAIL as soon as the new version has min_requests and
 * is worse than old beyond a threshold (the threshold itself passes); PASS
 * when it has them, is not worse, and window_over; else WAIT. why says
 * what failed or what is awaited. */
enum vg__control_verdict vg__control_gate_judge(const struct vg__control_gate *g, const struct vg__control_figures *old,
                                                const struct vg__control_figures *neu, bool window_over, char *why,
                                                size_t cap);

/* ==== live figures (control_top.c) ======================================= */

/* The latest report of every node, per app: figures counted since the
 * app's version went live there (the heartbeat's `stats`), from the bus
 * ("verge.stats.report.<node>", once a second, with --nats) and from the
 * heartbeats alike. Two successive reports of a node give its rates
 * (GET /v1/top); the latest alone gives the rollout gates' sums. Thread
 * safe (a mutex): bus reports arrive on a bus thread. */
struct vg__control_top;

/* The nodes' subject, as node.h has it (control does not include node). */
#define VG__CONTROL_TOP_SUBJECT "verge.stats.report.>"
/* A node whose last report is older than this is out of the table's rows. */
#define VG__CONTROL_TOP_STALE_MS 5000
/* Two reports closer than this are not a window: the newer replaces the
 * older (a heartbeat right after a bus report). */
#define VG__CONTROL_TOP_MIN_WINDOW_MS 800

enum vg__control_top_source {
    VG__CONTROL_TOP_BUS,
    VG__CONTROL_TOP_HEARTBEAT,
};

struct vg__control_top *vg__control_top_create(void);
/* Unsubscribes and closes the bus first, when connected. */
void vg__control_top_destroy(struct vg__control_top *t);
/* Connects to NATS and listens to the nodes' reports; reason in err. */
int vg__control_top_connect(struct vg__control_top *t, const char *const *urls, size_t n, char *err,
                            size_t errcap) VG_MUST_CHECK;
/* Takes one report ({location?, boot?, time_ms?, apps: {APP: {version?,
 * stats}}}; report is borrowed) of node (NULL: the report's "node"),
 * received at now_ms (monotonic). VG_EINVAL when it is not one,
 * VG_ELIMIT when the table is full; both only counted (GET /v1/top's
 * sources.refused): a report is a best effort. */
int vg__control_top_ingest(struct vg__control_top *t, const char *node, json_t *report, uint64_t now_ms,
                           enum vg__control_top_source src);
/* GET /v1/top's body at now_ms: apps x locations over the last window,
 * and per-app totals (docs/api.md "Live figures"). The caller owns it. */
json_t *vg__control_top_json(struct vg__control_top *t, uint64_t now_ms);
/* Adds node's latest figures for app to f (f->nodes counts it) when it
 * has some and runs version there (NULL: any); *live gets that version
 * when not NULL (65 bytes). Whether it added: the gates' per-node sums. */
bool vg__control_top_node_figures(struct vg__control_top *t, const char *node, const char *app, const char *version,
                                  struct vg__control_figures *f, char *live);

/* ==== auth ================================================================ */

#define VG__CONTROL_TOKEN_PREFIX "vgt_"

/* The live tokens in memory (hashes only), refreshed after each change. */
struct vg__control_auth;
struct vg__control_auth *vg__control_auth_create(void);
void vg__control_auth_destroy(struct vg__control_auth *a);
int vg__control_auth_load(struct vg__control_auth *a, struct vg__control_store *s) VG_MUST_CHECK;
/* The token a presented secret belongs to: compares its sha256 with every
 * live token's in constant time (no early exit). False when none. The
 * actor's name points into the table: valid until the next load. */
/* 0 with *out filled, or VG_ENOENT (unknown or revoked) or VG_ELIMIT
 * (expired). */
int vg__control_auth_check(const struct vg__control_auth *a, const char *secret, size_t len,
                           struct vg__control_actor *out);
/* A new secret ("vgt_" + 64 hex digits from 32 random bytes). */
int vg__control_secret_new(char out[69]) VG_MUST_CHECK;
void vg__control_secret_hash(const char *secret, size_t len, uint8_t out[32]);
/* Valid token names: [A-Za-z0-9._-]{1,64}. */
bool vg__control_name_ok(const char *s);

/* ==== server ============================================================== */

/* A long poll waiting for the desired state to move past `since`. Lives in
 * its request's pool; unlinked when the request ends either way. */
struct vg__control_waiter {
    struct vg__control_waiter *prev, *next;
    struct vg_control_server *srv;
    h2o_req_t *req;
    char *node;
    int64_t since;
    uint64_t deadline_ms;
};

struct vg_control_server {
    struct vg_control_options opt;
    char *bundles_dir, *tmp_dir;
    struct vg__control_store *store;
    struct vg__control_auth *auth;
    struct vg__control_top *top; /* the nodes' live figures (control_top.c) */
    h2o_globalconf_t gconf;
    h2o_hostconf_t *hostconf;
    h2o_pathconf_t *root;
    h2o_context_t ctx;
    h2o_evloop_t *loop;
    struct vg_http1_settings http1_settings;
    struct vg_http1_ctx *http1;
    h2o_socket_t *listener;
    uv_loop_t uv;
    h2o_socket_t *uv_watch;
    uv_signal_t sigterm, sigint;
    uv_timer_t poll_timer;           /* the earliest long-poll deadline */
    uv_timer_t rollout_timer;        /* the rollout driver's tick */
    struct vg__control_place *place; /* control_place.c; NULL: every app everywhere */
    bool stop;
    struct vg__control_waiter waiters; /* list head */
    size_t n_waiters;
};

/* control_api.c: the /v1 handler on srv->root. */
void vg__control_api_register(struct vg_control_server *srv);
/* Answers every long poll the new revision concerns (after a commit). */
void vg__control_waiters_notify(struct vg_control_server *srv);
/* Answers the long polls whose time is up; re-arms the timer. */
void vg__control_waiters_expire(struct vg_control_server *srv);
void vg__control_waiters_rearm(struct vg_control_server *srv);

/* control_rollout.c: the rollout driver (docs/api.md "Deployments"). */
/* The manifest's settings as kept with a version: the caller owns it. */
json_t *vg__control_rollout_settings_json(const struct vg_conf_rollout *r);
/* Starts a gated rollout of app@version with the version's settings. *id
 * is the new deployment, 0 when the version is the app's already (nothing
 * written). VG_ENOENT (unknown app or version) and VG_EEXIST (a rollout of
 * the app is in progress) come with a message in err. */
int vg__control_rollout_start(struct vg_control_server *srv, const char *app, const char *version, const char *actor,
                              int64_t *id, char *err, size_t errcap) VG_MUST_CHECK;
/* Moves every rollout in progress as far as the nodes' reports allow. */
void vg__control_rollout_tick(struct vg_control_server *srv);
/* Starts the tick timer (rollouts in the database resume from it). */
void vg__control_rollout_init(struct vg_control_server *srv);
/* Newest first, without the per-node view; the caller owns *out. */
int vg__control_deployments_list(struct vg_control_server *srv, const char *app, int64_t limit,
                                 json_t **out) VG_MUST_CHECK;
/* One deployment with its per-node view; VG_ENOENT if app has no such id. */
int vg__control_deployment_get(struct vg_control_server *srv, const char *app, int64_t id, json_t **out) VG_MUST_CHECK;

/* control_place.c: placement (docs/ARCHITECTURE.md "Placement on the
 * control plane"). */
/* Loads the bundled locations, runs once and starts the interval timer. */
int vg__control_place_init(struct vg_control_server *srv) VG_MUST_CHECK;
void vg__control_place_fini(struct vg_control_server *srv);
/* A run now (the reason goes to the log and history): commits what moved
 * and bumps the revision; the caller notifies the long polls. */
int vg__control_place_run(struct vg_control_server *srv, const char *why) VG_MUST_CHECK;
/* Runs when the placed apps or their policies changed since the last run
 * (a deploy, a rollout's end); called before long polls are answered. */
void vg__control_place_sync(struct vg_control_server *srv);
/* A heartbeat's demand counts (after it was stored). */
void vg__control_place_report(struct vg_control_server *srv, const char *node, json_t *report);
/* Ends the drains whose new locations serve the version (or whose time is
 * up), committing and notifying. */
void vg__control_place_drain(struct vg_control_server *srv);
/* Whether app runs at location: unplaced apps run everywhere. */
bool vg__control_place_runs(struct vg_control_server *srv, const char *app, const char *location);
/* The nodes (vg__control_nodes_list entries) that run app: a new array. */
json_t *vg__control_place_nodes(struct vg_control_server *srv, const char *app, json_t *nodes);
/* Drops from node's desired-state document the apps not placed at its
 * location. */
void vg__control_place_filter(struct vg_control_server *srv, const char *node, json_t *desired);
/* GET /v1/apps/APP/placement's document. */
int vg__control_place_get(struct vg_control_server *srv, const char *app, json_t **out) VG_MUST_CHECK;
/* A dry run with app's policy replaced: VG_EINVAL with err for a policy
 * that is not valid. */
int vg__control_place_plan(struct vg_control_server *srv, const char *app, json_t *policy, json_t **out, char *err,
                           size_t errcap) VG_MUST_CHECK;

#endif
