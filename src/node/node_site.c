/* A site is one configuration generation: the apps' models plus everything
 * compiled from them (static file handlers, origin health state). Workers
 * hold references; the last one out frees it. */
#include "node_int.h"

#include <fcntl.h>
#include <string.h>
#include <unistd.h>

static void route_init(struct vg_node *node, struct vg_app_rt *app, size_t i)
{
    struct vg_route_rt *rt = &app->routes[i];
    const struct vg_conf_route *r = &app->conf->routes[i];
    char esc[128];
    rt->conf = r;
    rt->root_fd = -1;
    vg_obs_label_escape(esc, sizeof(esc), r->path);
    snprintf(rt->label, sizeof(rt->label), "app=\"%s\",route=\"%s\"", app->label, esc);
    rt->latency = vg_obs_histogram_get(node->metrics, "verge_request_duration_seconds",
                                       "Time from request start to the end of the response.", rt->label);
    if (r->action == VG_CONF_ACTION_PROXY)
        vg__node_cache_route_init(&rt->cache, &r->cache);
    if (rt->cache.enabled && !app->cache_counters[0]) {
        static const char *const results[] = {"hit", "miss", "stale", "bypass"};
        for (size_t k = 0; k < VG__NODE_CACHE_RESULTS; k++) {
            char labels[160];
            snprintf(labels, sizeof(labels), "app=\"%s\",result=\"%s\"", app->label, results[k]);
            app->cache_counters[k] = vg_obs_counter_get(node->metrics, "verge_cache_requests_total",
                                                        "Requests of caching routes by outcome.", labels);
        }
    }
    if (r->action != VG_CONF_ACTION_STATIC)
        return;
    /* Prefix routes map the prefix away (alias semantics: /assets/x -> DIR/x);
     * exact and glob routes map the whole path (DIR + /img/a.png). */
    const char *mount = "/";
    if (r->match == VG_CONF_MATCH_PREFIX)
        mount = r->path;
    h2o_config_init_pathconf(&rt->pathconf, &node->gconf, mount, node->gconf.mimemap);
    /* h2o_file_handler_t is opaque but starts with its h2o_handler_t */
    rt->file = (h2o_handler_t *)h2o_file_register(&rt->pathconf, r->u.static_.dir, (const char **)r->u.static_.index,
                                                  node->gconf.mimemap, 0);
    rt->root_fd = open(r->u.static_.dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
    rt->mount_len = strlen(mount);
    if (rt->mount_len && mount[rt->mount_len - 1] == '/')
        rt->mount_len--;
}

static void origin_init(struct vg_app_rt *app, size_t i)
{
    struct vg_origin_rt *o = &app->origins[i];
    o->conf = &app->conf->origins[i];
    o->state = vg_proxy_origin_state_create(o->conf);
    o->authority = vg_xcalloc(o->conf->n_servers, sizeof(char *));
    o->label = vg_xcalloc(o->conf->n_servers, sizeof(char *));
    for (size_t s = 0; s < o->conf->n_servers; s++) {
        const struct vg_conf_server *srv = &o->conf->servers[s];
        bool v6 = strchr(srv->host, ':') != NULL;
        o->authority[s] = vg_xasprintf(v6 ? "[%s]:%u" : "%s:%u", srv->host, srv->port);
        char esc[256];
        vg_obs_label_escape(esc, sizeof(esc), srv->url);
        o->label[s] = vg_xstrdup(esc);
    }
}

static void collect_upstreams(void *data, struct vg_obs_buf *buf)
{
    struct vg_site *site = data;
    vg_obs_buf_printf(buf, "# HELP verge_upstream_up Whether an origin server receives traffic (health).\n"
                           "# TYPE verge_upstream_up gauge\n");
    uint64_t now = vg_now_ms();
    for (size_t a = 0; a < site->n_apps; a++) {
        struct vg_app_rt *app = &site->apps[a];
        for (size_t o = 0; o < app->conf->n_origins; o++) {
            struct vg_origin_rt *ort = &app->origins[o];
            for (size_t s = 0; s < ort->conf->n_servers; s++)
                vg_obs_buf_printf(buf, "verge_upstream_up{app=\"%s\",origin=\"%s\",server=\"%s\"} %d\n", app->label,
                                  ort->conf->name, ort->label[s],
                                  vg_proxy_origin_state_usable(ort->state, s, now) ? 1 : 0);
        }
    }
}

struct vg_site *vg__node_site_create(struct vg_node *node, struct vg_conf_app **apps, size_t n_apps)
{
    struct vg_site *site = vg_xcalloc(1, sizeof(*site));
    site->refs = 1;
    site->node = node;
    site->generation = ++node->generation;
    site->confs = apps;
    site->n_apps = n_apps;
    site->apps = vg_xcalloc(n_apps, sizeof(*site->apps));
    for (size_t a = 0; a < n_apps; a++) {
        struct vg_app_rt *app = &site->apps[a];
        app->conf = apps[a];
        app->stats = vg__node_appstats_for(node, apps[a]->name);
        vg_obs_label_escape(app->label, sizeof(app->label), apps[a]->name);
        app->routes = vg_xcalloc(apps[a]->n_routes, sizeof(*app->routes));
        app->origins = vg_xcalloc(apps[a]->n_origins, sizeof(*app->origins));
        for (size_t r = 0; r < apps[a]->n_routes; r++)
            route_init(node, app, r);
        for (size_t o = 0; o < apps[a]->n_origins; o++)
            origin_init(app, o);
        for (size_t k = 0; k < VG__NODE_CACHE_RESULTS && app->cache_counters[0]; k++) /* for `verge top` */
            __atomic_store_n(&app->stats->cache[k], app->cache_counters[k], __ATOMIC_RELEASE);
        if (vg_fn_app_needed(apps[a])) {
            app->shared = vg__node_shared_for(node, apps[a]->name);
            vg__node_state_for(node, app);
        }
    }
    vg_obs_collector_add(node->metrics, collect_upstreams, site);
    return site;
}

void vg__node_site_start_health(struct vg_site *site, uv_loop_t *loop)
{
    for (size_t a = 0; a < site->n_apps; a++)
        for (size_t o = 0; o < site->apps[a].conf->n_origins; o++) {
            struct vg_origin_rt *ort = &site->apps[a].origins[o];
            ort->health = vg_proxy_health_start(loop, ort->conf, site->apps[a].conf->name, ort->state);
        }
}

void vg__node_site_stop_health(struct vg_site *site)
{
    for (size_t a = 0; a < site->n_apps; a++)
        for (size_t o = 0; o < site->apps[a].conf->n_origins; o++) {
            struct vg_origin_rt *ort = &site->apps[a].origins[o];
            if (ort->health)
                vg_proxy_health_stop(ort->health);
            ort->health = NULL;
        }
}

void vg__node_site_ref(struct vg_site *site)
{
    __atomic_fetch_add(&site->refs, 1, __ATOMIC_RELAXED);
}

static void site_destroy(struct vg_site *site)
{
    vg_obs_collector_remove(site->node->metrics, collect_upstreams, site);
    for (size_t a = 0; a < site->n_apps; a++) {
        struct vg_app_rt *app = &site->apps[a];
        for (size_t r = 0; r < app->conf->n_routes; r++) {
            if (app->routes[r].file)
                h2o_config_dispose_pathconf(&app->routes[r].pathconf);
            if (app->routes[r].root_fd >= 0)
                close(app->routes[r].root_fd);
        }
        for (size_t o = 0; o < app->conf->n_origins; o++) {
            struct vg_origin_rt *ort = &app->origins[o];
            VG_ASSERT(ort->health == NULL); /* stopped on the main loop before release */
            for (size_t s = 0; s < ort->conf->n_servers; s++) {
                free(ort->authority[s]);
                free(ort->label[s]);
            }
            free(ort->authority);
            free(ort->label);
            vg_proxy_origin_state_destroy(ort->state);
        }
        free(app->routes);
        free(app->origins);
        vg_conf_app_destroy(app->conf);
    }
    free(site->apps);
    free(site->confs);
    free(site);
}

void vg__node_site_unref(struct vg_site *site)
{
    if (__atomic_sub_fetch(&site->refs, 1, __ATOMIC_ACQ_REL) == 0)
        site_destroy(site);
}

static void worker_origin_init(struct vg_worker *w, struct vg_site_worker_origin *wo, const struct vg_conf_origin *o)
{
    wo->balancer = vg_proxy_balancer_create(o);
    vg_proxy_timers_init(&wo->timers, w->loop, o);
    wo->pools = vg_xcalloc(o->n_servers, sizeof(*wo->pools));
    for (size_t s = 0; s < o->n_servers; s++) /* resolves the server's address, once */
        wo->pools[s] = vg_proxy_pool_create(&o->servers[s], &wo->timers);
}

/* Each app with Lua gets its own state on each worker. The code loaded
 * once already when the manifest was read; failing here (memory) leaves
 * the app's functions answering 503, logged. */
/* verge_lua_errors_total{app} and verge_lua_limits_total{app,limit}. */
static void fn_counters(struct vg_node *node, const struct vg_app_rt *app, struct vg_fn_env *env)
{
    char labels[200];
    snprintf(labels, sizeof(labels), "app=\"%s\"", app->label);
    env->errors =
        vg_obs_counter_get(node->metrics, "verge_lua_errors_total", "Lua calls ended by a script error.", labels);
    for (int k = 0; k < VG_FN_LIMITS; k++) {
        snprintf(labels, sizeof(labels), "app=\"%s\",limit=\"%s\"", app->label, VG_FN_LIMIT_NAMES[k]);
        env->limits[k] = vg_obs_counter_get(node->metrics, "verge_lua_limits_total",
                                            "Lua calls stopped at a limit (memory, instructions, timeout).", labels);
    }
}

static void worker_fn_init(struct vg_site *site, struct vg_worker *w, struct vg_site_worker *sw)
{
    sw->fn = vg_xcalloc(site->n_apps, sizeof(*sw->fn));
    sw->fetch = vg_xcalloc(site->n_apps, sizeof(*sw->fetch));
    for (size_t a = 0; a < site->n_apps; a++) {
        const struct vg_conf_app *app = site->apps[a].conf;
        if (!vg_fn_app_needed(app))
            continue;
        sw->fetch[a] = vg__node_fetch_ctx_create(site, w, a);
        struct vg_fn_env env = {.loop = &w->uv,
                                .fetch = vg__node_fetcher(sw->fetch[a]),
                                .shared = site->apps[a].shared,
                                .kv_local = site->apps[a].kv_local,
                                .kv_global = site->apps[a].kv_global,
                                .kv_global_off = site->apps[a].kv_global_off,
                                .bus = w->node->bus,
                                .dev = w->node->opt.dev};
        fn_counters(w->node, &site->apps[a], &env);
        char err[1024];
        sw->fn[a] = vg_fn_app_create(app, &env, err, sizeof(err));
        if (!sw->fn[a])
            vg_log(VG_LOG_ERROR, "cannot load the app's Lua code on a worker", "app", app->name, "error", err, NULL);
    }
}

static void worker_fn_fini(struct vg_site *site, struct vg_site_worker *sw)
{
    for (size_t a = 0; a < site->n_apps; a++) {
        vg_fn_app_destroy(sw->fn[a]);
        free(sw->fetch[a]);
    }
    free(sw->fn);
    free(sw->fetch);
    sw->fn = NULL;
}

void vg__node_site_worker_init(struct vg_site *site, struct vg_worker *w)
{
    struct vg_site_worker *sw = &site->workers[w->id];
    VG_ASSERT(!sw->ready);
    sw->origins = vg_xcalloc(site->n_apps, sizeof(*sw->origins));
    for (size_t a = 0; a < site->n_apps; a++) {
        const struct vg_conf_app *app = site->apps[a].conf;
        sw->origins[a] = vg_xcalloc(app->n_origins, sizeof(**sw->origins));
        for (size_t o = 0; o < app->n_origins; o++)
            worker_origin_init(w, &sw->origins[a][o], &app->origins[o]);
    }
    worker_fn_init(site, w, sw);
    sw->ready = true;
}

void vg__node_site_worker_fini(struct vg_site *site, struct vg_worker *w)
{
    struct vg_site_worker *sw = &site->workers[w->id];
    VG_ASSERT(sw->ready && sw->inflight == 0);
    for (size_t a = 0; a < site->n_apps; a++) {
        const struct vg_conf_app *app = site->apps[a].conf;
        for (size_t o = 0; o < app->n_origins; o++) {
            struct vg_site_worker_origin *wo = &sw->origins[a][o];
            /* the site's requests here are over: every connection is idle or closed */
            for (size_t s = 0; s < app->origins[o].n_servers; s++)
                vg_proxy_pool_destroy(wo->pools[s]);
            free(wo->pools);
            vg_proxy_timers_dispose(&wo->timers);
            vg_proxy_balancer_destroy(wo->balancer);
        }
        /* holds the timeouts, which the evloop may be walking right now */
        vg__node_worker_defer_free(w, sw->origins[a]);
    }
    free(sw->origins);
    worker_fn_fini(site, sw);
    sw->ready = false;
}
