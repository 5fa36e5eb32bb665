/* control: the control plane — apps, versions (content-addressed bundles),
 * nodes, desired state, API tokens and an append-only history, kept in
 * SQLite and served as an HTTP JSON API (/v1/..., docs/api.md).
 *
 * Two parts are public:
 *   bundles  the deterministic gzip'd tar of an app directory (writer, used
 *            by `verge bundle` and later `verge deploy`) and its reader for
 *            untrusted bytes (the server, the fuzzer);
 *   server   vg_control_run, the `verge control` process.
 * The store (control_store.c) and the HTTP handlers are internal
 * (control_int.h). */
#ifndef VG_CONTROL_H
#define VG_CONTROL_H

#include "base/base.h"
#include "bundle/bundle.h"

#include <jansson.h>

/* ==== placement =========================================================== */

struct vg_conf_placement;
/* A manifest's `placement:` policy as the control plane keeps it with a
 * version and as `verge placement plan` sends it: NULL without a section.
 * The caller owns the result. */
json_t *vg_control_placement_json(const struct vg_conf_placement *p);

/* ==== server ============================================================== */

struct vg_control_options {
    const char *listen;               /* "127.0.0.1:7070" */
    const char *data_dir;             /* control.db, bundles/, tmp/, admin.token */
    const char *bootstrap_token_file; /* the first admin token's secret, or NULL */
    const char *bootstrap_token;      /* the same given directly ($VERGE_CONTROL_TOKEN), or NULL */
    struct vg_bundle_limits bundle;
    uint64_t node_timeout_ms;     /* a node is "up" if it was heard from this recently */
    uint32_t max_wait_s;          /* the longest long poll (?wait=) */
    uint64_t place_interval_ms;   /* placement from demand runs this often (0: only on changes) */
    uint64_t place_drain_ms;      /* a dropped location serves at most this long while new ones come up */
    unsigned place_threads;       /* threads a placement run uses (the same plan from any number) */
    double place_site_deg;        /* dynamic placement's sites: a grid cell's side (vg_sched_world_set_sites) */
    const char *const *nats_urls; /* the nodes' bus for their live figures (none: the heartbeats') */
    size_t n_nats_urls;
};

void vg_control_options_default(struct vg_control_options *opt);

/* Runs the control plane until SIGTERM/SIGINT. Returns the process exit
 * status (0 after a clean stop, 1 when it could not start). */
int vg_control_run(const struct vg_control_options *opt);

#endif
