/* Live figures for `verge top`: a snapshot of every app's counters on this
 * node — requests, 5xx, latency buckets (the same ones the rollout gates
 * read) and cache results — over HTTP (GET /_verge/stats) or the bus
 * ("verge.stats.query", every node answers). Rates are the reader's: two
 * snapshots apart.
 *
 * With --nats a thread of its own also pushes them once a second on
 * "verge.stats.report.<node-id>" for the control plane, in the heartbeat's
 * per-app shape (counted since the app's version went live here, so the
 * rollout gates can read them too; since the process started without an
 * agent). One small JSON a second: the control plane turns two of them into
 * rates. */
#include "node_int.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

struct vg__node_stats_reporter {
    struct vg_node *node;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop; /* under mu */
    uint64_t started_ms;
    char subject[VG_BUS_SUBJECT_MAX];
};

static uint64_t since(uint64_t now, uint64_t base)
{
    return now >= base ? now - base : 0;
}

json_t *vg__node_stats_since(const struct vg_node_appstats *now, const struct vg_node_appstats *base,
                             uint64_t live_since_ms)
{
    json_t *le = json_array(), *counts = json_array();
    for (size_t b = 0; b < VG_NODE_LAT_BUCKETS; b++) {
        if (b < VG_NODE_LAT_BUCKETS - 1)
            json_array_append_new(le, json_real((double)VG_NODE_LAT_BOUNDS_US[b] / 1000.0));
        json_array_append_new(counts, json_integer((json_int_t)since(now->lat[b], base->lat[b])));
    }
    json_t *j =
        json_pack("{s:I,s:I,s:I,s:o,s:o}", "live_since_ms", (json_int_t)live_since_ms, "requests",
                  (json_int_t)since(now->requests, base->requests), "errors_5xx",
                  (json_int_t)since(now->errors_5xx, base->errors_5xx), "latency_le_ms", le, "latency_counts", counts);
    if (now->cache_n[0] | now->cache_n[1] | now->cache_n[2] | now->cache_n[3]) {
        static const char *const results[] = {"hit", "miss", "stale", "bypass"};
        json_t *c = json_object();
        for (size_t k = 0; k < 4; k++)
            json_object_set_new(c, results[k], json_integer((json_int_t)since(now->cache_n[k], base->cache_n[k])));
        json_object_set_new(j, "cache", c);
    }
    return j;
}

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

/* The report: every app this node serves, as the heartbeat has it. */
static char *report_text(struct vg__node_stats_reporter *r)
{
    struct vg_node *node = r->node;
    pthread_mutex_lock(&node->stats_mu);
    size_t n = node->n_appstats;
    char **names = vg_xcalloc(n ? n : 1, sizeof(*names));
    for (size_t i = 0; i < n; i++)
        names[i] = vg_xstrdup(node->appstats[i]->app);
    pthread_mutex_unlock(&node->stats_mu);
    json_t *apps = json_object();
    for (size_t i = 0; i < n; i++) {
        struct vg_node_appstats now, base = {0};
        uint64_t live_since = r->started_ms;
        char version[65] = "";
        /* with an agent, only what runs a version, counted from when it went live */
        if (!node->agent || vg__node_agent_live(node->agent, names[i], version, &base, &live_since)) {
            vg__node_appstats_read(node, names[i], &now);
            json_t *o = json_pack("{s:o}", "stats", vg__node_stats_since(&now, &base, live_since));
            if (version[0])
                json_object_set_new(o, "version", json_string(version));
            json_object_set_new(apps, names[i], o);
        }
        free(names[i]);
    }
    free(names);
    json_t *out =
        json_pack("{s:s, s:s, s:s, s:I, s:I, s:o}", "node", node->node_id, "location",
                  node->opt.location ? node->opt.location : "", "boot", node->boot_id, "time_ms",
                  (json_int_t)(vg_wall_us() / 1000), "interval_ms", (json_int_t)VG_NODE_STATS_REPORT_MS, "apps", apps);
    char *text = json_dumps(out, JSON_COMPACT);
    json_decref(out);
    return text;
}

static void *reporter_main(void *arg)
{
    struct vg__node_stats_reporter *r = arg;
    bool failing = false;
    pthread_mutex_lock(&r->mu);
    while (!r->stop) {
        struct timespec ts = vg_deadline(CLOCK_REALTIME, VG_NODE_STATS_REPORT_MS);
        while (!r->stop && pthread_cond_timedwait(&r->cv, &r->mu, &ts) == 0)
            ;
        if (r->stop)
            break;
        pthread_mutex_unlock(&r->mu);
        char *text = report_text(r);
        int rc = vg_bus_publish(r->node->bus, r->subject, text, strlen(text));
        free(text);
        if (rc != 0 && !failing) /* counted by the bus; said once per outage */
            vg_log(VG_LOG_WARN, "cannot publish the live figures", "subject", r->subject, "reason", vg_strerror(rc),
                   NULL);
        failing = rc != 0;
        pthread_mutex_lock(&r->mu);
    }
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

static void reporter_start(struct vg_node *node)
{
    struct vg__node_stats_reporter *r = vg_xcalloc(1, sizeof(*r));
    r->node = node;
    r->started_ms = vg_wall_us() / 1000;
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    /* the id as one subject token: ids may hold '.', hostnames other bytes */
    char tok[sizeof(node->node_id)];
    size_t k = 0;
    for (const char *p = node->node_id; *p && k + 1 < sizeof(tok); p++)
        tok[k++] = (char)((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
                                  *p == '-' || *p == '_'
                              ? *p
                              : '_');
    tok[k] = '\0';
    snprintf(r->subject, sizeof(r->subject), "%s.%s", VG_NODE_STATS_REPORT_SUBJECT, k ? tok : "_");
    VG_AZ(pthread_create(&r->thread, NULL, reporter_main, r));
    node->reporter = r;
}

static void reporter_stop(struct vg_node *node)
{
    struct vg__node_stats_reporter *r = node->reporter;
    if (!r)
        return;
    pthread_mutex_lock(&r->mu);
    r->stop = true;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    pthread_join(r->thread, NULL);
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
    free(r);
    node->reporter = NULL;
}

void vg__node_stats_subscribe(struct vg_node *node)
{
    if (node->bus &&
        vg_bus_subscribe(node->bus, VG_NODE_STATS_SUBJECT, NULL, on_stats_query, node, &node->stats_sub) != 0)
        vg_log(VG_LOG_WARN, "stats queries over the bus are off", "reason", "cannot subscribe", NULL);
    if (node->bus && node->opt.n_nats_urls) /* in-process, nobody else would hear it */
        reporter_start(node);
}

void vg__node_stats_unsubscribe(struct vg_node *node)
{
    reporter_stop(node);
    if (node->stats_sub)
        vg_bus_unsubscribe(node->stats_sub);
    node->stats_sub = NULL;
}
