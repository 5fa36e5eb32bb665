/* node: the edge node — runs apps from manifests on N worker event loops.
 *
 * Threads: one main thread (signals, reloads, origin health probes) and
 * N workers, each with its own libuv loop, h2o context and SO_REUSEPORT
 * listeners. Workers share nothing mutable except atomics (metrics, origin
 * health) and the refcounted, immutable "site" (the compiled apps of one
 * configuration generation), which SIGHUP replaces without dropping
 * in-flight requests. */
#ifndef VG_NODE_H
#define VG_NODE_H

#include "base/base.h"

struct vg_node_options {
    const char **app_dirs;
    size_t n_apps;
    const char **listen; /* plain HTTP (h1 + h2c) */
    size_t n_listen;
    const char **tls_listen; /* HTTPS (h1 + h2 by ALPN), with cert/key */
    size_t n_tls_listen;
    const char *cert, *key;
    unsigned workers;          /* 0 = one per core */
    bool access_log;           /* JSON line per request on stdout */
    uint64_t drain_timeout_ms; /* SIGTERM: longest wait for in-flight requests */
    bool dev;                  /* development mode: error details in bodies */
    uint64_t cache_memory;     /* HTTP cache memory tier, bytes (default 256 MiB) */
    const char *cache_dir;     /* persistent tier (LMDB) directory, NULL = memory only */
    uint64_t cache_disk;       /* persistent tier budget, bytes (default 1 GiB) */
    const char *admin_token;   /* bearer token of the admin API (/_verge/purge), NULL = API closed */
    /* agent mode: apps come from a control plane (see node_agent.c) */
    const char *control_url;   /* http://HOST:PORT of `verge control`, NULL = off */
    const char *control_token; /* a node-scoped API token */
    const char *node_id;       /* this node's id (default: the host name) */
    const char *location;      /* its location id */
    const char *data_dir;      /* unpacked versions and the last known good state */
    uint64_t add_latency_ms;   /* every request waits this long first (verge dev --latency), 0 = off */
    const char **labels;       /* key=value, sent when registering (capacity, tags: see control_place.c) */
    size_t n_labels;
    bool client_area_header; /* demand: trust X-Verge-Client-Area (dev, tests) for a request's client area */
    const char *geoip;       /* demand: a MaxMind DB placing client addresses (NULL = off) */
    /* messaging between nodes: NATS servers (several for a cluster), else
     * the in-process bus (one node) */
    const char **nats_urls;
    size_t n_nats_urls;
    /* verge.kv scope "local": the LMDB directory (default verge-state, in
     * agent mode DATA/state), opened when an app has Lua code */
    const char *state_dir;
    /* traces: head sampling rate (0..1), the threshold over which a
     * request's trace is kept anyway (0: none), kept traces per worker,
     * and an OTLP/HTTP collector (http://host:port/v1/traces) or NULL */
    bool trace_off;    /* no traces at all (the overhead benchmark's baseline) */
    bool trace_stages; /* unsampled requests record every stage too (else only their own span) */
    double trace_sample;
    uint64_t trace_slow_ms;
    size_t trace_ring;
    const char *trace_export;
    size_t log_ring_bytes; /* recent log lines kept for `verge logs` (default 8 MiB) */
};

/* Trace lookups over the bus: a request carrying a trace id (32 hex); every
 * node holding records of it answers with their JSON array. */
#define VG_NODE_TRACE_SUBJECT "verge.trace.get"

/* Live figures over the bus (node_stats.c): every node answers. */
#define VG_NODE_STATS_SUBJECT "verge.stats.query"
/* And pushed once a second with --nats, on VG_NODE_STATS_REPORT_SUBJECT
 * ".<node-id>": {node, location, boot, time_ms, apps: {APP: {version?,
 * stats}}} (docs/ARCHITECTURE.md "Live figures"); the control plane
 * listens on "verge.stats.report.>". */
#define VG_NODE_STATS_REPORT_SUBJECT "verge.stats.report"
#define VG_NODE_STATS_REPORT_MS 1000

/* Log queries over the bus (see node_logs.c): every node answers. */
#define VG_NODE_LOGS_SUBJECT "verge.logs.query"

/* Runs until SIGTERM/SIGINT; returns the process exit status (0 after a
 * clean drain, 1 when start-up failed — the reason is logged). */
int vg_node_run(const struct vg_node_options *opt);

#endif
