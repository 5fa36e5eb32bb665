/* vg_node_run: start-up, signals, reload and drain. */
#include "node_int.h"

#include <signal.h>
#include <string.h>
#include <unistd.h>

struct main_ctx {
    struct vg_node *node;
    uv_loop_t loop;
    uv_signal_t sighup, sigterm, sigint;
    bool stopping;
};

/* The app directories a site is built from: the --app ones, then the
 * agent's (NULL: the agent's live versions). */
struct dirs {
    const char **v;
    size_t n;
    char **owned; /* the agent's, when fetched here */
    size_t n_owned;
};

static void dirs_get(struct vg_node *node, char **agent_dirs, size_t n_agent, struct dirs *d)
{
    *d = (struct dirs){0};
    if (node->agent && !agent_dirs)
        agent_dirs = d->owned = vg__node_agent_dirs(node->agent, &n_agent), d->n_owned = n_agent;
    d->v = vg_xcalloc(node->opt.n_apps + n_agent + 1, sizeof(*d->v));
    for (size_t i = 0; i < node->opt.n_apps; i++)
        d->v[d->n++] = node->opt.app_dirs[i];
    for (size_t i = 0; i < n_agent; i++)
        d->v[d->n++] = agent_dirs[i];
}

static void dirs_free(struct dirs *d)
{
    for (size_t i = 0; i < d->n_owned; i++)
        free(d->owned[i]);
    free(d->owned);
    free(d->v);
}

/* Loads every app; on the first error logs `what` with the reason (also
 * into err) and returns VG_ECONF. */
static int load_apps(const struct dirs *d, const char *location, const char *what, struct vg_conf_app ***out, char *err,
                     size_t errcap)
{
    struct vg_conf_app **apps = vg_xcalloc(d->n + 1, sizeof(*apps));
    char msg[1200], why[400];
    for (size_t i = 0; i < d->n; i++) {
        struct vg_conf_error ce;
        if (vg_conf_app_load(d->v[i], &apps[i], &ce) != 0 || vg_fn_check(apps[i], &ce) != 0) {
            vg_conf_error_format(&ce, msg, sizeof(msg));
            vg_log(VG_LOG_ERROR, what, "error", msg, NULL);
            goto fail;
        }
        /* compliance: the app (and so its data: verge.kv replicas, log
         * and trace rings) may not be at this location at all */
        if (vg_conf_placement_forbids(&apps[i]->placement, location, why, sizeof(why))) {
            snprintf(msg, sizeof(msg), "%s: app %s may not run at location %s: %s", apps[i]->manifest_path,
                     apps[i]->name, location, why);
            vg_log(VG_LOG_ERROR, what, "error", msg, NULL);
            goto fail;
        }
        for (size_t j = 0; j < i; j++) {
            if (strcmp(apps[j]->name, apps[i]->name) == 0) {
                snprintf(msg, sizeof(msg), "two apps have the same name '%s' (%s)", apps[i]->name, d->v[i]);
                vg_log(VG_LOG_ERROR, what, "error", "two apps have the same name", "app", apps[i]->name, "dir", d->v[i],
                       NULL);
                i++;
                goto fail;
            }
        }
        continue;
    fail:
        if (err)
            snprintf(err, errcap, "%s", msg);
        for (size_t j = 0; j < d->n; j++)
            if (apps[j])
                vg_conf_app_destroy(apps[j]);
        free(apps);
        return VG_ECONF;
    }
    *out = apps;
    return 0;
}

/* verge.shared: per app per node. */
#define SHARED_DICT_BYTES (16u << 20)

/* Bodies up to this size are read whole before the handler runs (and can
 * be retried on another origin server); larger ones are streamed. */
#define BODY_BUFFER_BYTES (64 * 1024)

struct vg_fn_shared *vg__node_shared_for(struct vg_node *node, const char *app)
{
    for (size_t i = 0; i < node->n_shared; i++)
        if (strcmp(node->shared[i].app, app) == 0)
            return node->shared[i].dict;
    node->shared = vg_xrealloc(node->shared, (node->n_shared + 1) * sizeof(*node->shared));
    struct vg_node_shared *s = &node->shared[node->n_shared++];
    s->app = vg_xstrdup(app);
    s->dict = vg_fn_shared_create(SHARED_DICT_BYTES);
    return s->dict;
}

const uint64_t VG_NODE_LAT_BOUNDS_US[VG_NODE_LAT_BUCKETS - 1] = {
    500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000, 2500000, 5000000, 10000000};

struct vg_node_appstats *vg__node_appstats_for(struct vg_node *node, const char *app)
{
    pthread_mutex_lock(&node->stats_mu);
    struct vg_node_appstats *st = NULL;
    for (size_t i = 0; i < node->n_appstats && !st; i++)
        if (strcmp(node->appstats[i]->app, app) == 0)
            st = node->appstats[i];
    if (!st) {
        st = vg_xcalloc(1, sizeof(*st));
        st->app = vg_xstrdup(app);
        if (node->geo)
            st->areas = vg_xcalloc(vg_geo_set_count(node->geo) + 1, sizeof(*st->areas));
        node->appstats = vg_xrealloc(node->appstats, (node->n_appstats + 1) * sizeof(*node->appstats));
        node->appstats[node->n_appstats++] = st;
    }
    pthread_mutex_unlock(&node->stats_mu);
    return st;
}

void vg__node_appstats_read(struct vg_node *node, const char *app, struct vg_node_appstats *out)
{
    memset(out, 0, sizeof(*out));
    pthread_mutex_lock(&node->stats_mu);
    for (size_t i = 0; i < node->n_appstats; i++) {
        const struct vg_node_appstats *st = node->appstats[i];
        if (strcmp(st->app, app) != 0)
            continue;
        out->requests = __atomic_load_n(&st->requests, __ATOMIC_RELAXED);
        out->errors_5xx = __atomic_load_n(&st->errors_5xx, __ATOMIC_RELAXED);
        for (size_t b = 0; b < VG_NODE_LAT_BUCKETS; b++)
            out->lat[b] = __atomic_load_n(&st->lat[b], __ATOMIC_RELAXED);
        for (size_t k = 0; k < 4; k++) {
            struct vg_obs_counter *c = __atomic_load_n(&st->cache[k], __ATOMIC_ACQUIRE);
            out->cache_n[k] = c ? vg_obs_counter_value(c) : 0;
        }
    }
    pthread_mutex_unlock(&node->stats_mu);
}

json_t *vg__node_appstats_demand(struct vg_node *node, const char *app)
{
    json_t *d = json_object();
    pthread_mutex_lock(&node->stats_mu);
    for (size_t i = 0; i < node->n_appstats; i++) {
        const struct vg_node_appstats *st = node->appstats[i];
        if (strcmp(st->app, app) != 0 || !st->areas)
            continue;
        size_t n = vg_geo_set_count(node->geo);
        for (size_t a = 0; a <= n; a++) {
            uint64_t c = __atomic_load_n(&st->areas[a], __ATOMIC_RELAXED);
            if (c)
                json_object_set_new(d, a < n ? vg_geo_set_at(node->geo, a)->id : node->opt.location,
                                    json_integer((json_int_t)c));
        }
    }
    pthread_mutex_unlock(&node->stats_mu);
    return d;
}

/* Connection-level limits apply before a request names its app: timeouts
 * and the connection cap take the strictest value any app asks for, sizes
 * the largest (each app's own size limits are checked per request). */
static void apply_limits(struct vg_node *node, struct vg_conf_app **apps, size_t n)
{
    uint64_t body = 0, header_to = UINT64_MAX, idle = UINT64_MAX, maxc = UINT64_MAX, hdr = 0;
    if (node->opt.control_url) {
        /* apps arrive later, their limits unknown: the connection level
         * takes the widest sizes a manifest may ask for and the default
         * timeouts (each app's own sizes are still checked per request) */
        struct vg_conf_limits dl;
        vg_conf_limits_default(&dl);
        hdr = VG_CONF_HEADER_SIZE_MAX;
        body = VG_CONF_BODY_SIZE_MAX;
        header_to = dl.header_timeout_ms;
        idle = dl.idle_timeout_ms;
        maxc = dl.max_connections;
    }
    for (size_t i = 0; i < n; i++) {
        const struct vg_conf_limits *l = &apps[i]->limits;
        body = l->body_size > body ? l->body_size : body;
        hdr = l->header_size > hdr ? l->header_size : hdr;
        header_to = l->header_timeout_ms < header_to ? l->header_timeout_ms : header_to;
        idle = l->idle_timeout_ms < idle ? l->idle_timeout_ms : idle;
        maxc = l->max_connections < maxc ? l->max_connections : maxc;
    }
    node->gconf.max_request_entity_size = body;
    node->max_conns = maxc;
    node->http1 = (struct vg_http1_settings){
        .header_timeout_ms = header_to,
        .idle_timeout_ms = idle,
        .max_header_bytes = hdr,
        .max_body_bytes = body,
        .body_buffer_bytes = BODY_BUFFER_BYTES,
    };
}

/* Builds a site from dirs and switches every worker to it; on a load
 * error the running site stays (the reason in err). */
static int reload(struct main_ctx *m, const struct dirs *d, char *err, size_t errcap)
{
    struct vg_node *node = m->node;
    struct vg_conf_app **apps;
    if (load_apps(d, node->opt.location, "reload failed, keeping the running configuration", &apps, err, errcap) != 0) {
        vg_obs_counter_add(node->m_reload_fail, 1);
        return VG_ECONF;
    }
    struct vg_site *site = vg__node_site_create(node, apps, d->n);
    vg__node_site_start_health(site, &m->loop);
    pthread_mutex_lock(&node->mu);
    struct vg_site *old = node->site;
    node->site = site;
    for (unsigned i = 0; i < node->n_workers; i++) {
        struct vg_worker *w = &node->workers[i];
        if (w->cmd_site) /* an earlier reload the worker has not picked up yet */
            vg__node_site_unref(w->cmd_site);
        vg__node_site_ref(site);
        w->cmd_site = site;
    }
    pthread_mutex_unlock(&node->mu);
    for (unsigned i = 0; i < node->n_workers; i++)
        vg__node_worker_post(&node->workers[i]);
    vg__node_msg_sync(node, site); /* after the workers were told: a message finds the new site */
    vg__node_site_stop_health(old);
    vg__node_site_unref(old);
    vg_obs_counter_add(node->m_reload_ok, 1);
    char gen[24];
    snprintf(gen, sizeof(gen), "%llu", (unsigned long long)site->generation);
    vg_log(VG_LOG_INFO, "reloaded", "generation", gen, NULL);
    return 0;
}

/* The agent asks for a switch to its set of versions. */
static void on_agent(uv_async_t *h)
{
    struct main_ctx *m = h->data;
    struct vg_node *node = m->node;
    pthread_mutex_lock(&node->agent_mu);
    struct dirs d;
    dirs_get(node, node->agent_dirs, node->n_agent_dirs, &d);
    bool pending = node->agent_dirs != NULL && !node->agent_done;
    pthread_mutex_unlock(&node->agent_mu);
    if (!pending || m->stopping) {
        dirs_free(&d);
        return;
    }
    char err[1200] = "";
    int rc = reload(m, &d, err, sizeof(err));
    dirs_free(&d);
    pthread_mutex_lock(&node->agent_mu);
    node->agent_rc = rc;
    snprintf(node->agent_err, sizeof(node->agent_err), "%s", err);
    node->agent_dirs = NULL;
    node->agent_done = true;
    pthread_cond_broadcast(&node->agent_cv);
    pthread_mutex_unlock(&node->agent_mu);
}

static void on_signal(uv_signal_t *s, int signum)
{
    struct main_ctx *m = s->data;
    if (signum == SIGHUP) {
        struct dirs d;
        dirs_get(m->node, NULL, 0, &d);
        (void)reload(m, &d, NULL, 0);
        dirs_free(&d);
        return;
    }
    if (m->stopping)
        return;
    m->stopping = true;
    vg_log(VG_LOG_INFO, "draining", NULL);
    pthread_mutex_lock(&m->node->mu);
    for (unsigned i = 0; i < m->node->n_workers; i++)
        m->node->workers[i].cmd_shutdown = true;
    pthread_mutex_unlock(&m->node->mu);
    for (unsigned i = 0; i < m->node->n_workers; i++)
        vg__node_worker_post(&m->node->workers[i]);
    uv_close((uv_handle_t *)&m->sighup, NULL);
    uv_close((uv_handle_t *)&m->sigterm, NULL);
    uv_close((uv_handle_t *)&m->sigint, NULL);
    if (m->node->agent) {
        vg__node_agent_stop(m->node->agent);
        uv_close((uv_handle_t *)&m->node->agent_async, NULL);
    }
    vg__node_site_stop_health(m->node->site);
    vg__node_msg_sync(m->node, NULL); /* other nodes of a queue group take the messages now */
}

/* Binds every listener once per worker (SO_REUSEPORT). ":0" resolves to a
 * port on the first bind and the other workers join that port. */
static int open_listeners(struct vg_node *node)
{
    const struct vg_node_options *o = &node->opt;
    size_t n = o->n_listen + o->n_tls_listen;
    for (size_t a = 0; a < node->site->n_apps; a++)
        n += node->site->confs[a]->n_listen;
    node->listen_fds = vg_xcalloc(node->n_workers, sizeof(int *));
    for (unsigned w = 0; w < node->n_workers; w++)
        node->listen_fds[w] = vg_xcalloc(n ? n : 1, sizeof(int));
    node->listen_ssl = vg_xcalloc(n ? n : 1, sizeof(SSL_CTX *));
    node->listen_addr = vg_xcalloc(n ? n : 1, sizeof(char *));
    size_t i = 0;
    for (size_t k = 0; k < n; k++) {
        const char *addr, *cert = NULL, *key = NULL;
        if (k < o->n_listen) {
            addr = o->listen[k];
        } else if (k < o->n_listen + o->n_tls_listen) {
            addr = o->tls_listen[k - o->n_listen];
            cert = o->cert;
            key = o->key;
        } else {
            size_t j = k - o->n_listen - o->n_tls_listen, a = 0;
            while (j >= node->site->confs[a]->n_listen)
                j -= node->site->confs[a++]->n_listen;
            const struct vg_conf_listen *l = &node->site->confs[a]->listen[j];
            addr = l->addr;
            cert = l->tls_cert;
            key = l->tls_key;
        }
        char err[512];
        if (cert || key) {
            if (!cert || !key) {
                vg_log(VG_LOG_ERROR, "TLS listener needs both a certificate and a key", "addr", addr, NULL);
                return VG_ETLS;
            }
            node->listen_ssl[i] = vg_http_tls_ctx_create(cert, key, err, sizeof(err));
            if (!node->listen_ssl[i]) {
                vg_log(VG_LOG_ERROR, "cannot set up TLS", "addr", addr, "reason", err, NULL);
                return VG_ETLS;
            }
        }
        char resolved[300];
        snprintf(resolved, sizeof(resolved), "%s", addr);
        for (unsigned w = 0; w < node->n_workers; w++) {
            if (vg_net_listen(resolved, true, 1024, &node->listen_fds[w][i], err, sizeof(err)) != 0) {
                vg_log(VG_LOG_ERROR, "cannot listen", "addr", addr, "reason", err, NULL);
                return VG_ENET;
            }
            if (w == 0) {
                struct sockaddr_storage ss;
                socklen_t len = sizeof(ss);
                getsockname(node->listen_fds[0][i], (struct sockaddr *)&ss, &len);
                vg_net_addr_format((struct sockaddr *)&ss, resolved, sizeof(resolved));
            }
        }
        node->listen_addr[i] = vg_xstrdup(resolved);
        vg_log(VG_LOG_INFO, "listening", "addr", resolved, "tls", node->listen_ssl[i] ? "on" : "off", NULL);
        i++;
    }
    node->n_listeners = i;
    return i ? 0 : VG_EINVAL;
}

static void gconf_init(struct vg_node *node)
{
    h2o_config_init(&node->gconf);
    node->gconf.server_name = h2o_iovec_init(H2O_STRLIT("verge"));
    node->gconf.proxy.emit_x_forwarded_headers = 1;
    node->gconf.proxy.emit_via_header = 1;
    /* no open-file cache: a file changed in place must never be served with
     * its old length or validators (h2o refreshes the cache only each second) */
    node->gconf.filecache.capacity = 0;
    node->hostconf = h2o_config_register_host(&node->gconf, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    node->root = h2o_config_register_path(node->hostconf, "/", 0);
    h2o_config_init_pathconf(&node->fetch_pathconf, &node->gconf, "/", node->gconf.mimemap);
    vg__node_handler_register(node);
}

static void collect_node(void *data, struct vg_obs_buf *buf)
{
    struct vg_node *node = data;
    vg_obs_buf_printf(buf,
                      "# HELP verge_connections_open Client connections open now.\n"
                      "# TYPE verge_connections_open gauge\nverge_connections_open %zu\n",
                      __atomic_load_n(&node->conns, __ATOMIC_RELAXED));
}

static void collect_cache(void *data, struct vg_obs_buf *buf)
{
    struct vg_node *node = data;
    struct vg_cache_stats st;
    vg_cache_stats(node->cache, &st);
    vg_obs_buf_printf(buf,
                      "# HELP verge_cache_objects Objects in the HTTP cache now, by tier.\n"
                      "# TYPE verge_cache_objects gauge\nverge_cache_objects{tier=\"memory\"} %llu\n"
                      "verge_cache_objects{tier=\"disk\"} %llu\n"
                      "# HELP verge_cache_bytes Bytes in the HTTP cache now, by tier.\n"
                      "# TYPE verge_cache_bytes gauge\nverge_cache_bytes{tier=\"memory\"} %llu\n"
                      "verge_cache_bytes{tier=\"disk\"} %llu\n"
                      "# HELP verge_cache_evictions_total Objects evicted for the memory budget.\n"
                      "# TYPE verge_cache_evictions_total counter\nverge_cache_evictions_total %llu\n"
                      "# HELP verge_cache_disk_corrupt_total Persistent entries dropped as corrupt.\n"
                      "# TYPE verge_cache_disk_corrupt_total counter\nverge_cache_disk_corrupt_total %llu\n",
                      (unsigned long long)st.objects, (unsigned long long)st.disk_objects, (unsigned long long)st.bytes,
                      (unsigned long long)st.disk_bytes, (unsigned long long)st.evictions,
                      (unsigned long long)st.disk_corrupt);
}

/* The bus to the other nodes (NATS), or the in-process one; purges fan
 * out over it. */
static int bus_init(struct vg_node *node)
{
    const struct vg_node_options *o = &node->opt;
    char host[64] = "node";
    if (o->node_id)
        snprintf(node->node_id, sizeof(node->node_id), "%s", o->node_id);
    else if (gethostname(host, sizeof(host) - 1) == 0)
        snprintf(node->node_id, sizeof(node->node_id), "%s-%d", host, (int)getpid());
    int rc;
    if (o->n_nats_urls) {
        char err[512];
        struct vg_bus_options bo = {.urls = o->nats_urls, .n_urls = o->n_nats_urls, .name = node->node_id};
        if ((rc = vg_bus_nats_create(&bo, &node->bus, err, sizeof(err))) != 0) {
            vg_log(VG_LOG_ERROR, "cannot reach NATS", "reason", err, NULL);
            return rc;
        }
    } else if ((rc = vg_bus_inproc_create(&node->bus)) != 0) {
        return rc;
    }
    if ((rc = vg__node_purge_fanout_start(node)) != 0)
        vg_log(VG_LOG_ERROR, "cannot subscribe to purges", "reason", vg_strerror(rc), NULL);
    return rc;
}

static void collect_bus(void *data, struct vg_obs_buf *buf)
{
    struct vg_node *node = data;
    struct vg_bus_stats st;
    vg_bus_stats(node->bus, &st);
    vg_obs_buf_printf(buf,
                      "# HELP verge_bus_connected Whether the node is connected to its bus.\n"
                      "# TYPE verge_bus_connected gauge\nverge_bus_connected %d\n"
                      "# HELP verge_bus_messages_total Bus messages by outcome.\n"
                      "# TYPE verge_bus_messages_total counter\n"
                      "verge_bus_messages_total{result=\"published\"} %llu\n"
                      "verge_bus_messages_total{result=\"publish_failed\"} %llu\n"
                      "verge_bus_messages_total{result=\"delivered\"} %llu\n"
                      "verge_bus_messages_total{result=\"dropped\"} %llu\n"
                      "# HELP verge_bus_reconnects_total Reconnections to the bus.\n"
                      "# TYPE verge_bus_reconnects_total counter\nverge_bus_reconnects_total %llu\n",
                      st.connected, (unsigned long long)st.published, (unsigned long long)st.publish_failed,
                      (unsigned long long)st.delivered, (unsigned long long)st.dropped,
                      (unsigned long long)st.reconnects);
}

/* The HTTP cache store: memory, and the persistent tier when asked. */
static int cache_init(struct vg_node *node)
{
    struct vg_cache_config cfg = {.mem_bytes = (size_t)node->opt.cache_memory,
                                  .disk_path = node->opt.cache_dir,
                                  .disk_bytes = (size_t)node->opt.cache_disk};
    int rc = vg_cache_create(&cfg, &node->cache);
    if (rc != 0) {
        vg_log(VG_LOG_ERROR, "cannot open the HTTP cache", "dir", node->opt.cache_dir ? node->opt.cache_dir : "",
               "reason", vg_strerror(rc), NULL);
        return rc;
    }
    vg_obs_collector_add(node->metrics, collect_cache, node);
    return 0;
}

static void metrics_init(struct vg_node *node)
{
    node->metrics = vg_obs_registry_create();
    node->m_conn_rejected = vg_obs_counter_get(node->metrics, "verge_connections_rejected_total",
                                               "Connections refused over limits.max_connections.", "");
    node->m_reload_ok = vg_obs_counter_get(node->metrics, "verge_reloads_total", "Manifest reloads.", "result=\"ok\"");
    node->m_reload_fail =
        vg_obs_counter_get(node->metrics, "verge_reloads_total", "Manifest reloads.", "result=\"error\"");
    vg_obs_collector_add(node->metrics, collect_node, node);
}

static unsigned worker_count(unsigned asked)
{
    if (asked)
        return asked > VG_NODE_MAX_WORKERS ? VG_NODE_MAX_WORKERS : asked;
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > VG_NODE_MAX_WORKERS ? VG_NODE_MAX_WORKERS : (unsigned)n;
}

int vg_node_run(const struct vg_node_options *opt)
{
    static struct vg_node node; /* one per process; signals need it anyway */
    struct main_ctx m = {.node = &node};
    node.opt = *opt;
    node.n_workers = worker_count(opt->workers);
    pthread_mutex_init(&node.mu, NULL);
    pthread_mutex_init(&node.stats_mu, NULL);
    signal(SIGPIPE, SIG_IGN);
    vg__node_logs_init(&node); /* from the first line on */

    struct vg_conf_app **apps;
    struct dirs d;
    if (opt->control_url) {
        pthread_mutex_init(&node.agent_mu, NULL);
        pthread_cond_init(&node.agent_cv, NULL);
        if (vg_geo_set_builtin(&node.geo) == 0) {
            node.own_area = (uint32_t)vg_geo_set_index(node.geo, opt->location);
            node.rtt_us = vg_xcalloc(vg_geo_set_count(node.geo) + 1, sizeof(*node.rtt_us));
        }
        if (opt->geoip && vg__node_geoip_open(&node) != 0)
            return 1;
        node.agent = vg__node_agent_create(&node);
    }
    dirs_get(&node, NULL, 0, &d);
    int rc = load_apps(&d, node.opt.location, "invalid manifest", &apps, NULL, 0);
    if (rc != 0 && node.agent && d.n_owned) {
        /* the last known good versions do not load (a damaged data
         * directory): start without them, the control plane resends */
        vg__node_agent_forget(node.agent);
        dirs_free(&d);
        dirs_get(&node, NULL, 0, &d);
        rc = load_apps(&d, node.opt.location, "invalid manifest", &apps, NULL, 0);
    }
    size_t n_apps = d.n;
    dirs_free(&d);
    if (rc != 0)
        return 1;
    metrics_init(&node);
    if (cache_init(&node) != 0 || bus_init(&node) != 0 || vg__node_state_init(&node) != 0)
        return 1;
    vg__node_logs_subscribe(&node);
    vg__node_stats_subscribe(&node);
    vg_obs_collector_add(node.metrics, collect_bus, &node);
    gconf_init(&node);
    apply_limits(&node, apps, n_apps);
    uv_loop_init(&m.loop);
    node.main_loop = &m.loop;
    node.site = vg__node_site_create(&node, apps, n_apps);
    if (open_listeners(&node) != 0) {
        uv_loop_close(&m.loop);
        return 1;
    }
    vg__node_site_start_health(node.site, &m.loop);

    node.workers = vg_xcalloc(node.n_workers, sizeof(*node.workers));
    for (unsigned i = 0; i < node.n_workers; i++) {
        node.workers[i].id = i;
        node.workers[i].node = &node;
    }
    if (vg__node_trace_init(&node) != 0)
        return 1;
    for (unsigned i = 0; i < node.n_workers; i++)
        if (vg__node_worker_start(&node, &node.workers[i]) != 0)
            return 1;
    vg__node_msg_sync(&node, node.site);
    uv_signal_init(&m.loop, &m.sighup);
    uv_signal_init(&m.loop, &m.sigterm);
    uv_signal_init(&m.loop, &m.sigint);
    m.sighup.data = m.sigterm.data = m.sigint.data = &m;
    uv_signal_start(&m.sighup, on_signal, SIGHUP);
    uv_signal_start(&m.sigterm, on_signal, SIGTERM);
    uv_signal_start(&m.sigint, on_signal, SIGINT);
    char nw[16];
    snprintf(nw, sizeof(nw), "%u", node.n_workers);
    vg_log(VG_LOG_INFO, "node started", "workers", nw, NULL);
    if (node.agent) {
        uv_async_init(&m.loop, &node.agent_async, on_agent);
        node.agent_async.data = &m;
        vg__node_agent_start(node.agent);
    }

    uv_run(&m.loop, UV_RUN_DEFAULT);
    for (unsigned i = 0; i < node.n_workers; i++)
        pthread_join(node.workers[i].thread, NULL);
    vg__node_stats_unsubscribe(&node); /* its answers and reports read the figures freed below */
    vg__node_msg_fini(&node);          /* no message reaches a worker that is gone */
    vg__node_site_unref(node.site);
    vg__node_trace_fini(&node); /* what is queued for the collector goes out */
    for (size_t i = 0; i < node.n_shared; i++) {
        vg_fn_shared_destroy(node.shared[i].dict);
        free(node.shared[i].app);
    }
    free(node.shared);
    for (size_t i = 0; i < node.n_appstats; i++) {
        free(node.appstats[i]->app);
        free(node.appstats[i]->areas);
        free(node.appstats[i]);
    }
    free(node.appstats);
    vg__node_geoip_close(&node);
    vg_geo_set_destroy(node.geo);
    free(node.rtt_us);
    vg__node_state_fini(&node);         /* every Lua state is gone: results of late writes are dropped */
    vg_bus_unsubscribe(node.purge_sub); /* no purge arrives for a cache that is going */
    vg__node_logs_unsubscribe(&node);
    vg_obs_collector_remove(node.metrics, collect_bus, &node);
    vg_bus_destroy(node.bus);
    vg_obs_collector_remove(node.metrics, collect_cache, &node);
    vg__node_agent_destroy(node.agent); /* before the loop its wake-ups target goes */
    node.agent = NULL;
    vg_cache_destroy(node.cache); /* every request, and its hold on objects, is over */
    node.cache = NULL;
    uv_loop_close(&m.loop);
    vg_log(VG_LOG_INFO, "stopped", NULL);
    vg__node_logs_fini(&node);
    return 0;
}
