/* verge.kv on a node: the local store (LMDB under --state-dir, opened
 * when the first app with Lua code arrives), the global one (JetStream,
 * with --nats), each app's handles, readiness and metrics. */
#include "node_int.h"

#include <string.h>

/* Each replica's memory against its bound (limits.kv_global_size). */
static void collect_replicas(struct vg_node *node, struct vg_obs_buf *buf)
{
    struct vg_state_replica_stat rs[256];
    size_t n = vg_state_global_replicas(node->state_global, rs, VG_ARRAY_LEN(rs));
    if (n > VG_ARRAY_LEN(rs))
        n = VG_ARRAY_LEN(rs);
    vg_obs_buf_printf(buf, "# HELP verge_kv_replica_bytes Memory of this node's replica of an app's global bucket.\n"
                           "# TYPE verge_kv_replica_bytes gauge\n");
    for (size_t i = 0; i < n; i++) {
        char app[160];
        vg_obs_label_escape(app, sizeof(app), rs[i].app);
        vg_obs_buf_printf(buf, "verge_kv_replica_bytes{app=\"%s\"} %llu\n", app, (unsigned long long)rs[i].bytes);
    }
    vg_obs_buf_printf(buf, "# HELP verge_kv_replica_max_bytes The bound of an app's global bucket "
                           "(limits.kv_global_size).\n# TYPE verge_kv_replica_max_bytes gauge\n");
    for (size_t i = 0; i < n; i++) {
        char app[160];
        vg_obs_label_escape(app, sizeof(app), rs[i].app);
        vg_obs_buf_printf(buf, "verge_kv_replica_max_bytes{app=\"%s\"} %llu\n", app,
                          (unsigned long long)rs[i].max_bytes);
    }
}

static void collect_state(void *data, struct vg_obs_buf *buf)
{
    struct vg_node *node = data;
    uint64_t c[VG_STATE_SCOPES][VG_STATE_C_OPS][VG_STATE_R_RESULTS] = {{{0}}};
    struct vg_state_global_stats gs = {0};
    if (node->state_local)
        vg_state_local_counts(node->state_local, c[VG_STATE_SCOPE_LOCAL]);
    if (node->state_global) {
        vg_state_global_stats(node->state_global, &gs);
        memcpy(c[VG_STATE_SCOPE_GLOBAL], gs.counts, sizeof(gs.counts));
    }
    vg_obs_buf_printf(buf, "# HELP verge_kv_operations_total verge.kv operations by scope, operation and result.\n"
                           "# TYPE verge_kv_operations_total counter\n");
    for (int s = 0; s < VG_STATE_SCOPES; s++)
        for (int o = 0; o < VG_STATE_C_OPS; o++)
            for (int r = 0; r < VG_STATE_R_RESULTS; r++)
                if (c[s][o][r])
                    vg_obs_buf_printf(buf, "verge_kv_operations_total{scope=\"%s\",op=\"%s\",result=\"%s\"} %llu\n",
                                      VG_STATE_SCOPE_NAMES[s], VG_STATE_OP_NAMES[o], VG_STATE_RESULT_NAMES[r],
                                      (unsigned long long)c[s][o][r]);
    if (!node->state_global)
        return;
    vg_obs_buf_printf(buf,
                      "# HELP verge_kv_replica_keys Keys in this node's replicas of the global buckets.\n"
                      "# TYPE verge_kv_replica_keys gauge\nverge_kv_replica_keys %llu\n"
                      "# HELP verge_kv_replica_ready Whether every global replica has caught up.\n"
                      "# TYPE verge_kv_replica_ready gauge\nverge_kv_replica_ready %d\n"
                      "# HELP verge_kv_replica_updates_total Entries from the watchers, by outcome.\n"
                      "# TYPE verge_kv_replica_updates_total counter\n"
                      "verge_kv_replica_updates_total{result=\"applied\"} %llu\n"
                      "verge_kv_replica_updates_total{result=\"malformed\"} %llu\n"
                      "# HELP verge_kv_connected Whether the state connection to NATS is up.\n"
                      "# TYPE verge_kv_connected gauge\nverge_kv_connected %d\n",
                      (unsigned long long)gs.keys, vg_state_global_ready(node->state_global),
                      (unsigned long long)gs.applied, (unsigned long long)gs.bad, gs.connected);
    vg_obs_buf_printf(buf,
                      "# HELP verge_kv_visible_acks_total Visibility acks (await_visible) by direction and outcome.\n"
                      "# TYPE verge_kv_visible_acks_total counter\n"
                      "verge_kv_visible_acks_total{dir=\"sent\"} %llu\n"
                      "verge_kv_visible_acks_total{dir=\"received\"} %llu\n"
                      "verge_kv_visible_acks_total{dir=\"malformed\"} %llu\n"
                      "# HELP verge_kv_visible_timeouts_total await_visible writes that ended short of their nodes.\n"
                      "# TYPE verge_kv_visible_timeouts_total counter\nverge_kv_visible_timeouts_total %llu\n",
                      (unsigned long long)gs.acks_sent, (unsigned long long)gs.acks_received,
                      (unsigned long long)gs.acks_bad, (unsigned long long)gs.visible_timeouts);
    collect_replicas(node, buf);
}

int vg__node_state_init(struct vg_node *node)
{
    vg_obs_collector_add(node->metrics, collect_state, node);
    if (!node->opt.n_nats_urls)
        return 0;
    node->m_kv_propagation = vg_obs_histogram_get(
        node->metrics, "verge_kv_propagation_seconds",
        "Global writes: the writer's wall clock to this node's replica (live updates, any writer).", "");
    node->m_kv_visible = vg_obs_histogram_get(
        node->metrics, "verge_kv_visible_seconds",
        "Global writes with await_visible: the call to K nodes confirming (writes that reached K).", "");
    struct vg_state_global_options go = {.urls = node->opt.nats_urls,
                                         .n_urls = node->opt.n_nats_urls,
                                         .name = node->node_id,
                                         .propagation = node->m_kv_propagation,
                                         .visible = node->m_kv_visible};
    char err[512];
    int rc = vg_state_global_create(&go, &node->state_global, err, sizeof(err));
    if (rc != 0)
        vg_log(VG_LOG_ERROR, "cannot open global state", "reason", err, NULL);
    return rc;
}

void vg__node_state_fini(struct vg_node *node)
{
    vg_state_global_destroy(node->state_global); /* queued writes go out first */
    node->state_global = NULL;
    vg_state_local_close(node->state_local);
    node->state_local = NULL;
    vg_obs_collector_remove(node->metrics, collect_state, node);
}

void vg__node_state_for(struct vg_node *node, struct vg_app_rt *app)
{
    const char *name = app->conf->name;
    if (!node->state_local && !node->state_failed) {
        char err[512];
        const char *dir = node->opt.state_dir ? node->opt.state_dir : "verge-state";
        if (vg_state_local_open(dir, 0, &node->state_local, err, sizeof(err)) != 0) {
            vg_log(VG_LOG_ERROR, "cannot open the local state store; verge.kv local is off", "reason", err, NULL);
            node->state_failed = true;
        } else {
            vg_log(VG_LOG_INFO, "local state store open", "dir", dir, NULL);
        }
    }
    if (node->state_local && vg_state_local_db(node->state_local, name, &app->kv_local) != 0)
        app->kv_local = NULL;
    if (node->state_global) {
        char err[512];
        if (vg_state_global_db(node->state_global, name, app->conf->limits.kv_global_size, &app->kv_global, err,
                               sizeof(err)) != 0) {
            vg_log(VG_LOG_ERROR, "cannot open the app's global state; verge.kv global is off for it", "app", name,
                   "reason", err, NULL);
            app->kv_global = NULL;
            app->kv_global_off = "the node could not open the app's JetStream bucket (is JetStream enabled? see the "
                                 "node log)";
        }
    }
}

bool vg__node_state_ready(struct vg_node *node)
{
    return !node->state_global || vg_state_global_ready(node->state_global);
}
