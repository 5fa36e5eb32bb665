/* Live figures for `verge top`: a snapshot of every app's counters on this
 * node — requests, 5xx, latency buckets (the same ones the rollout gates
 * read) and cache results — over HTTP (GET /_verge/stats) or the bus
 * ("verge.stats.query", every node answers). Rates are the reader's: two
 * snapshots apart. */
#include "node_int.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

static json_t *app_json(const struct vg_node_appstats *st)
{
    static const char *const results[] = {"hit", "miss", "stale", "bypass"};
    json_t *lat = json_array(), *cache = json_object();
    for (size_t b = 0; b < VG_NODE_LAT_BUCKETS; b++)
        json_array_append_new(lat, json_integer((json_int_t)__atomic_load_n(&st->lat[b], __ATOMIC_RELAXED)));
    for (size_t k = 0; k < 4; k++) {
        struct vg_obs_counter *c = __atomic_load_n(&st->cache[k], __ATOMIC_ACQUIRE);
        if (c)
            json_object_set_new(cache, results[k], json_integer((json_int_t)vg_obs_counter_value(c)));
    }
    return json_pack("{s:I, s:I, s:o, s:o}", "requests", (json_int_t)__atomic_load_n(&st->requests, __ATOMIC_RELAXED),
                     "errors_5xx", (json_int_t)__atomic_load_n(&st->errors_5xx, __ATOMIC_RELAXED), "latency", lat,
                     "cache", cache);
}

static char *snapshot(struct vg_node *node)
{
    json_t *apps = json_object(), *bounds = json_array();
    pthread_mutex_lock(&node->stats_mu); /* the array; entries never move or go away */
    for (size_t i = 0; i < node->n_appstats; i++)
        json_object_set_new(apps, node->appstats[i]->app, app_json(node->appstats[i]));
    pthread_mutex_unlock(&node->stats_mu);
    for (size_t b = 0; b + 1 < VG_NODE_LAT_BUCKETS; b++)
        json_array_append_new(bounds, json_integer((json_int_t)VG_NODE_LAT_BOUNDS_US[b]));
    json_t *out = json_pack("{s:s, s:s, s:I, s:o, s:o}", "node", node->node_id, "location",
                            node->opt.location ? node->opt.location : "", "time_us", (json_int_t)vg_wall_us(),
                            "latency_bounds_us", bounds, "apps", apps);
    char *text = json_dumps(out, JSON_COMPACT);
    json_decref(out);
    return text;
}

void vg__node_stats_endpoint(struct vg_worker *w, h2o_req_t *req)
{
    struct vg_node *node = w->node;
    if (!vg__node_admin_diag_ok(node, req, "/_verge/stats"))
        return;
    char *text = snapshot(node);
    vg_http_send_text(req, 200, "application/json", text, strlen(text));
    free(text);
}

static void on_stats_query(void *arg, const struct vg_bus_msg *m)
{
    struct vg_node *node = arg;
    if (!m->reply)
        return;
    char *text = snapshot(node);
    if (vg_bus_publish(node->bus, m->reply, text, strlen(text)) != 0)
        vg_log(VG_LOG_WARN, "cannot answer a stats query", "reason", "the bus refused the answer", NULL);
    free(text);
}

void vg__node_stats_subscribe(struct vg_node *node)
{
    if (node->bus &&
        vg_bus_subscribe(node->bus, VG_NODE_STATS_SUBJECT, NULL, on_stats_query, node, &node->stats_sub) != 0)
        vg_log(VG_LOG_WARN, "stats queries over the bus are off", "reason", "cannot subscribe", NULL);
}

void vg__node_stats_unsubscribe(struct vg_node *node)
{
    if (node->stats_sub)
        vg_bus_unsubscribe(node->stats_sub);
    node->stats_sub = NULL;
}
