/* conf: verge.yaml -> a validated, immutable app model.
 *
 * The model is plain data: nothing here knows about YAML nodes (h2o keeps
 * "what it does" apart from "how it is read"; so do we). Everything a
 * vg_conf_app points to is owned by it and released by vg_conf_app_destroy.
 * After load the model is never mutated, so worker threads may read it
 * concurrently without locks. */
#ifndef VG_CONF_H
#define VG_CONF_H

#include "base/base.h"

/* HTTP methods as a bitmask for route matching. */
enum {
    VG_CONF_METHOD_GET = 1u << 0,
    VG_CONF_METHOD_HEAD = 1u << 1,
    VG_CONF_METHOD_POST = 1u << 2,
    VG_CONF_METHOD_PUT = 1u << 3,
    VG_CONF_METHOD_DELETE = 1u << 4,
    VG_CONF_METHOD_PATCH = 1u << 5,
    VG_CONF_METHOD_OPTIONS = 1u << 6,
    VG_CONF_METHOD_ALL = 0x7f,
};

enum vg_conf_match_kind {
    VG_CONF_MATCH_PREFIX, /* path: /api  (segment-aware: /api, /api/x, not /apix) */
    VG_CONF_MATCH_EXACT,  /* exact: /login */
    VG_CONF_MATCH_GLOB,   /* glob: "/img/STAR.png" ('*' within a segment, '**' across) */
};

/* The route action is an open set: later issues add CACHE, ... */
enum vg_conf_action_kind {
    VG_CONF_ACTION_STATIC,
    VG_CONF_ACTION_PROXY,
    VG_CONF_ACTION_RESPOND,  /* fixed response: status, body, content type */
    VG_CONF_ACTION_REDIRECT, /* status 301/302/307/308 + location */
    VG_CONF_ACTION_HANDLER,  /* a Lua function answers */
};

/* A Lua function named in the manifest as "file.lua:name" ("file.lua"
 * alone names the function `handle`). */
struct vg_conf_fnref {
    char *file; /* absolute, canonical; inside the app directory */
    char *rel;  /* as written, for messages */
    char *func; /* a Lua identifier */
    int line, col;
};

enum vg_conf_balance {
    VG_CONF_BALANCE_ROUND_ROBIN,
    VG_CONF_BALANCE_LEAST_CONN,
    VG_CONF_BALANCE_HASH, /* consistent hashing on hash_key */
};

enum vg_conf_hash_on {
    VG_CONF_HASH_CLIENT_IP,
    VG_CONF_HASH_HEADER, /* hash_name = header name */
    VG_CONF_HASH_COOKIE, /* hash_name = cookie name */
};

struct vg_conf_server {
    char *url;  /* as written: "http://127.0.0.1:9000" */
    char *host; /* "127.0.0.1" */
    uint16_t port;
    uint32_t weight; /* >= 1, default 1 */
};

struct vg_conf_health {
    bool enabled;                                  /* true when a health: block is present */
    char *path;                                    /* default "/" */
    uint64_t interval_ms;                          /* default 2000 */
    uint64_t timeout_ms;                           /* default 1000 */
    uint32_t rise;                                 /* successes to mark up, default 2 */
    uint32_t fall;                                 /* failures to mark down, default 3 */
    uint32_t expect_status_min, expect_status_max; /* default 200..399 */
};

struct vg_conf_origin {
    char *name;
    struct vg_conf_server *servers;
    size_t n_servers; /* >= 1 */
    enum vg_conf_balance balance;
    enum vg_conf_hash_on hash_on;
    char *hash_name; /* header/cookie name for HEADER/COOKIE, else NULL */
    struct vg_conf_health health;
    uint64_t connect_timeout_ms; /* default 2000 */
    uint64_t read_timeout_ms;    /* default 30000 (idle between reads) */
    uint64_t total_timeout_ms;   /* default 60000 */
    uint64_t keepalive_ms;       /* idle upstream connection lifetime, default 30000 */
    uint32_t retries;            /* extra attempts for idempotent requests, default 1 */
    uint32_t max_fails;          /* passive: consecutive failures to eject, default 3 (0 = off) */
    uint64_t fail_timeout_ms;    /* passive: ejection time before a retry, default 10000 */
    bool preserve_host;          /* send the client's Host upstream, default false */
    int line, col;               /* where it was declared */
};

/* A route's `cache:` block. Plain fields: conf sits below the cache module,
 * so the node translates these into struct vg_cache_rules/keyrules. */
struct vg_conf_cache {
    bool enabled;             /* false unless `cache:` is true or a mapping */
    bool honour_origin;       /* default true */
    bool heuristic;           /* default false */
    bool allow_set_cookie;    /* default false */
    uint64_t ttl_s;           /* default_ttl in seconds, default 0 (origin freshness only) */
    uint64_t max_object_size; /* bytes, default 8 MiB */
    bool key_host;            /* default true; false = key on path only */
    bool key_query;           /* default true; false = ignore the query */
    char **query_include;     /* NULL-terminated, or NULL; a trailing '*' matches a prefix */
    char **query_exclude;     /* NULL-terminated, or NULL */
    char **headers;           /* NULL-terminated lower-case header names, or NULL */
    char **cookies;           /* NULL-terminated cookie names, or NULL */
};

#define VG_CONF_NAME_MAX 63 /* bytes of an app name: lowercase letters, digits, '-' */

struct vg_conf_route {
    char *host; /* NULL = any; "api.example.com" or "*.example.com" */
    enum vg_conf_match_kind match;
    char *path;       /* the pattern of path/exact/glob; always starts with '/' */
    uint32_t methods; /* VG_CONF_METHOD_* mask; VG_CONF_METHOD_ALL by default */
    enum vg_conf_action_kind action;
    union {
        struct {
            char *dir;    /* absolute, canonical (realpath) directory */
            char **index; /* NULL-terminated; default {"index.html", NULL} */
        } static_;
        struct {
            size_t origin;      /* index into app->origins */
            char *strip_prefix; /* removed from the path before proxying, or NULL */
        } proxy;
        struct {
            int status;         /* default 200 */
            char *body;         /* default "" */
            char *content_type; /* default "text/plain; charset=utf-8" */
        } respond;
        struct {
            int status; /* default 302 */
            char *location;
        } redirect;
        struct vg_conf_fnref handler;
    } u;
    struct vg_conf_cache cache; /* proxy routes only (checked at load) */
    int line, col;
};

/* The largest sizes a manifest may ask for. */
#define VG_CONF_HEADER_SIZE_MAX (256u << 10)
#define VG_CONF_BODY_SIZE_MAX (64ull << 30)
/* The app's global verge.kv bucket: every node holds all of it in memory. */
#define VG_CONF_KV_GLOBAL_SIZE_MIN (16u << 10)
#define VG_CONF_KV_GLOBAL_SIZE_MAX (8ull << 30)

struct vg_conf_limits {
    uint64_t header_size;       /* max bytes of request line + headers, default 16 KiB (431 above) */
    uint64_t body_size;         /* max request body bytes, default 16 MiB (413 above) */
    uint64_t header_timeout_ms; /* time to receive the headers, default 10000 (408) */
    uint64_t idle_timeout_ms;   /* keep-alive idle, default 60000 */
    uint64_t max_connections;   /* per node, default 10000 */
    uint64_t lua_memory;        /* bytes per app per worker Lua state, default 64 MiB (503 above) */
    uint64_t lua_instructions;  /* Lua VM instructions per request, default 100M (503 above) */
    uint64_t lua_timeout_ms;    /* wall clock per request while Lua runs or waits, default 30000 (503) */
    uint64_t kv_global_size;    /* bytes of the app's global verge.kv bucket, and so of each node's
                                   replica of it, default 64 MiB (writes past it: "global store full") */
};

/* The defaults above (what an app without a 'limits' key gets). */
void vg_conf_limits_default(struct vg_conf_limits *l);

/* The `rollout:` section: how `verge deploy` stages a new version of this
 * app over the nodes (read by the control plane from the version being
 * deployed; docs/manifest.md "rollout"). */
#define VG_CONF_ROLLOUT_MAX_WAVES 20
struct vg_conf_rollout {
    uint32_t canary;     /* nodes (canary_percent false) or percent of the nodes, default 1 node; 0 = none */
    bool canary_percent; /* canary was written as "N%" */
    uint32_t waves[VG_CONF_ROLLOUT_MAX_WAVES]; /* cumulative percentages, increasing, the last 100 */
    size_t n_waves;                            /* >= 1, default {100} */
    uint64_t window_ms;                        /* how long the gates observe each step, default 30000 */
    uint64_t min_requests;                     /* new-version requests a step needs to pass, default 20 */
    double max_error_rate;       /* 5xx rate increase over the previous version that fails, default 0.01 */
    double max_p99_ratio;        /* new p99 / previous p99 that fails, default 1.5 */
    uint64_t healthy_timeout_ms; /* for a step's nodes to report the version live, default 60000 */
};

void vg_conf_rollout_default(struct vg_conf_rollout *r);

/* A `subscriptions:` entry: messages on verge.app.<name>.<subject> run
 * handler. Wildcards as NATS: '*' one token, a final '>' one or more. */
#define VG_CONF_SUB_SUBJECT_MAX 180 /* with the prefix, within a bus subject's 256 bytes */
struct vg_conf_sub {
    char *subject; /* relative to the app's prefix */
    struct vg_conf_fnref handler;
    bool deliver_all; /* every node handles each message; default: one node (a queue group) */
    int line, col;
};

/* The `placement:` section: where the scheduler may and should run the app
 * (docs/manifest.md "placement"). Plain data: src/sched takes its own
 * structs, filled from these by whoever runs it. Lists are
 * NULL-terminated-free arrays with counts. */
enum vg_conf_placement_mode {
    VG_CONF_PLACEMENT_NONE,    /* no section: every location, as before */
    VG_CONF_PLACEMENT_STATIC,  /* static: [ids] */
    VG_CONF_PLACEMENT_DYNAMIC, /* dynamic: {...} */
};
struct vg_conf_placement {
    enum vg_conf_placement_mode mode;
    char **static_locs; /* bundled location ids (src/geo) */
    size_t n_static;
    uint64_t target_us;         /* dynamic: latency target, default 50 ms */
    uint32_t percentile;        /* ... for this share of demand, 1..100, default 95 */
    uint64_t min_demand_mrps;   /* requests/s x 1000 a location must serve, default 1 rps */
    uint32_t min, max;          /* locations, default 1 and 10 */
    uint64_t scale_in_after_ms; /* hysteresis window, default 10 minutes */
    char **allow_countries, **deny_countries, **allow_regions, **deny_regions, **require_tags;
    size_t n_allow_countries, n_deny_countries, n_allow_regions, n_deny_regions, n_require_tags;
    bool residency;   /* demand from a region is served inside it */
    int32_t priority; /* higher wins capacity, default 0 */
    uint64_t cpu_m;   /* millicores per location, default 100 */
    uint64_t memory;  /* bytes per location, default 128 MiB */
    int line, col;
};

/* The defaults of a `placement:` section (mode NONE). */
void vg_conf_placement_default(struct vg_conf_placement *p);
/* NULL when the enforcements allow the bundled location `location` (or it
 * is not a bundled id: nothing known to check), else the rule it breaks
 * with its values, written into why. Compute and data (verge.kv replicas,
 * logs, traces) follow the same rule: a node there refuses the app. */
const char *vg_conf_placement_forbids(const struct vg_conf_placement *p, const char *location, char *why, size_t cap);

struct vg_conf_listen {
    char *addr;     /* "127.0.0.1:8080", "[::1]:8443", ":8080" */
    char *tls_cert; /* absolute path or NULL */
    char *tls_key;  /* absolute path or NULL */
};

struct vg_conf_app {
    char *name;          /* [a-z0-9-]{1,63} */
    char *dir;           /* absolute app directory */
    char *manifest_path; /* dir + "/verge.yaml" */
    char **hosts;        /* Host names this app answers ("*" or "*.x" allowed) */
    size_t n_hosts;      /* 0 = any host (default app) */
    struct vg_conf_route *routes;
    size_t n_routes;
    struct vg_conf_origin *origins;
    size_t n_origins;
    struct vg_conf_limits limits;
    struct vg_conf_fnref on_request;  /* hook before every route's action; file NULL if none */
    struct vg_conf_fnref on_response; /* hook on every response; file NULL if none */
    struct vg_conf_listen *listen;
    size_t n_listen;
    struct vg_conf_rollout rollout;
    struct vg_conf_sub *subs; /* `subscriptions:` */
    size_t n_subs;
    struct vg_conf_placement placement;
};

/* A diagnostic: "file:line:col: message". */
struct vg_conf_error {
    char file[512];
    int line, col;
    char msg[512];
};

/* Loads DIR/verge.yaml. On success *out is the caller's (release with
 * vg_conf_app_destroy). On failure returns VG_ECONF (or VG_ENOENT / VG_EIO)
 * and fills *err with the first error found; *out is untouched. */
int vg_conf_app_load(const char *dir, struct vg_conf_app **out, struct vg_conf_error *err) VG_MUST_CHECK;

/* Same, from a YAML buffer (used by the fuzzer and tests); relative paths
 * resolve against dir, file names err->file. */
int vg_conf_app_load_buffer(const char *dir, const char *file, const char *yaml, size_t len, struct vg_conf_app **out,
                            struct vg_conf_error *err) VG_MUST_CHECK;

void vg_conf_app_destroy(struct vg_conf_app *app);

/* Formats err as "file:line:col: msg" into buf. */
void vg_conf_error_format(const struct vg_conf_error *err, char *buf, size_t cap);

/* Helpers shared with the data plane. */
uint32_t vg_conf_method_from_str(const char *m, size_t len); /* 0 if unknown */
const char *vg_conf_balance_name(enum vg_conf_balance b);

#endif
