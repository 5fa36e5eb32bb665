/* The nodes' live figures, aggregated: GET /v1/top (apps x locations:
 * requests per second, p50/p99, 5xx rate, cache hit ratio) and the rollout
 * gates' per-version sums read one table.
 *
 * The table holds, per node and app, the latest report and the one before
 * it (at least VG__CONTROL_TOP_MIN_WINDOW_MS older). A report's figures
 * are counters since the app's version went live on the node (the
 * heartbeat's `stats`; node_stats.c sends the same on the bus every
 * second), so:
 *   - the gates add up the latest reports of the nodes running a version
 *     (what they always did with the heartbeats' reports);
 *   - a rate is the difference of two reports over their own clock's
 *     interval. A counter that went back, or another series (the version,
 *     the moment it went live or the process changed), is a reset: the
 *     newer report's counters are then the whole increase, as Prometheus'
 *     rate() does.
 * Reports come from the bus (a bus thread) and the heartbeats (the loop
 * thread): one mutex; parsing happens outside it. Memory is bounded: at
 * most MAX_NODES nodes (silent ones go first) and MAX_APPS apps each. */
#include "bus/bus.h"
#include "control_int.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define MAX_NODES 4096
#define MAX_APPS 256
#define FORGET_MS (10 * 60 * 1000) /* a node silent this long may leave a full table */
#define APP_MAX 64                 /* app names: 1 to 63 bytes */
#define LOC_MAX 129
#define BOOT_MAX 24
#define VERSION_MAX 65

static const char *const cache_results[] = {"hit", "miss", "stale", "bypass"};
#define CACHE_RESULTS 4

struct sample {
    uint64_t t_ms;          /* the node's wall clock when it made the report */
    uint64_t live_since_ms; /* with boot and version: which series the counters belong to */
    char boot[BOOT_MAX];
    char version[VERSION_MAX];
    struct vg__control_figures f; /* f.nodes is 1 */
    uint64_t cache[CACHE_RESULTS];
};

struct app {
    char name[APP_MAX];
    struct sample prev, cur;
    bool has_prev;
    bool seen; /* scratch: in the report being merged */
};

struct node {
    char id[VERSION_MAX];
    char location[LOC_MAX];
    char boot[BOOT_MAX];
    uint64_t recv_ms; /* our monotonic clock, at its last report */
    uint64_t t_ms;    /* its clock, in its last report */
    struct app *apps;
    size_t n_apps;
};

struct vg__control_top {
    pthread_mutex_t mu;
    struct node *nodes;
    size_t n_nodes, cap_nodes;
    uint64_t reports[2], refused; /* by source; reports that were not ones */
    struct vg_bus *bus;
    struct vg_bus_sub *sub;
};

/* ---- reports in -------------------------------------------------------------------- */

static uint64_t juint(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return json_is_integer(v) && json_integer_value(v) > 0 ? (uint64_t)json_integer_value(v) : 0;
}

static void node_free(struct node *n)
{
    free(n->apps);
    n->apps = NULL;
    n->n_apps = 0;
}

/* A report as a node record (apps without figures left out). */
static int parse(json_t *report, const char *id, struct node *out)
{
    memset(out, 0, sizeof(*out));
    if (!json_is_object(report))
        return VG_EINVAL;
    if (!id)
        id = json_string_value(json_object_get(report, "node"));
    const char *loc = json_string_value(json_object_get(report, "location"));
    const char *boot = json_string_value(json_object_get(report, "boot"));
    json_t *apps = json_object_get(report, "apps");
    if (!id || !vg__control_name_ok(id) || (loc && strlen(loc) >= LOC_MAX) || (boot && strlen(boot) >= BOOT_MAX) ||
        (apps && !json_is_object(apps)))
        return VG_EINVAL;
    snprintf(out->id, sizeof(out->id), "%s", id);
    snprintf(out->location, sizeof(out->location), "%s", loc ? loc : "");
    snprintf(out->boot, sizeof(out->boot), "%s", boot ? boot : "");
    out->t_ms = juint(report, "time_ms");
    if (!out->t_ms) /* a node that does not say: when it reached us */
        out->t_ms = vg_wall_us() / 1000;
    size_t n = json_object_size(apps);
    out->apps = vg_xcalloc(n ? n : 1, sizeof(*out->apps));
    const char *name;
    json_t *a;
    json_object_foreach(apps, name, a)
    {
        if (out->n_apps == MAX_APPS)
            break;
        json_t *st = json_object_get(a, "stats");
        const char *v = json_string_value(json_object_get(a, "version"));
        if (!*name || strlen(name) >= APP_MAX || (v && strlen(v) >= VERSION_MAX))
            continue;
        struct app *x = &out->apps[out->n_apps];
        memset(x, 0, sizeof(*x));
        if (!vg__control_figures_add(&x->cur.f, st)) /* no live version there: no figures */
            continue;
        snprintf(x->name, sizeof(x->name), "%s", name);
        struct sample *s = &x->cur;
        s->t_ms = out->t_ms;
        s->live_since_ms = juint(st, "live_since_ms");
        snprintf(s->boot, sizeof(s->boot), "%s", boot ? boot : "");
        snprintf(s->version, sizeof(s->version), "%s", v ? v : "");
        json_t *c = json_object_get(st, "cache");
        for (size_t k = 0; k < CACHE_RESULTS; k++)
            s->cache[k] = juint(c, cache_results[k]);
        out->n_apps++;
    }
    return 0;
}

static struct node *node_find(struct vg__control_top *t, const char *id)
{
    for (size_t i = 0; i < t->n_nodes; i++)
        if (strcmp(t->nodes[i].id, id) == 0)
            return &t->nodes[i];
    return NULL;
}

/* A new node's slot, or NULL when the table is full of nodes heard from
 * lately. */
static struct node *node_add(struct vg__control_top *t, uint64_t now_ms)
{
    if (t->n_nodes == MAX_NODES) {
        size_t oldest = 0;
        for (size_t i = 1; i < t->n_nodes; i++)
            if (t->nodes[i].recv_ms < t->nodes[oldest].recv_ms)
                oldest = i;
        if (now_ms - t->nodes[oldest].recv_ms < FORGET_MS)
            return NULL;
        node_free(&t->nodes[oldest]);
        t->nodes[oldest] = t->nodes[--t->n_nodes];
    }
    if (t->n_nodes == t->cap_nodes) { /* no pointer into it outlives a call */
        t->cap_nodes = t->cap_nodes ? 2 * t->cap_nodes : 16;
        t->nodes = vg_xrealloc(t->nodes, t->cap_nodes * sizeof(*t->nodes));
    }
    struct node *n = &t->nodes[t->n_nodes++];
    memset(n, 0, sizeof(*n));
    return n;
}

/* One app's new report: it becomes the latest; the latest becomes the one
 * before when they are a window apart, else the window just grows. */
static void app_take(struct app *a, const struct sample *s)
{
    if (!a->cur.t_ms || s->t_ms <= a->cur.t_ms) { /* the first, or the node's clock went back */
        a->cur = *s;
        a->has_prev = false;
        return;
    }
    if (s->t_ms - a->cur.t_ms >= VG__CONTROL_TOP_MIN_WINDOW_MS) {
        a->prev = a->cur;
        a->has_prev = true;
    }
    a->cur = *s;
}

int vg__control_top_ingest(struct vg__control_top *t, const char *node, json_t *report, uint64_t now_ms,
                           enum vg__control_top_source src)
{
    struct node in;
    int rc = parse(report, node, &in);
    pthread_mutex_lock(&t->mu);
    if (rc) {
        t->refused++;
        goto out;
    }
    struct node *n = node_find(t, in.id);
    if (n && in.t_ms <= n->t_ms && strcmp(in.boot, n->boot) == 0)
        goto out; /* older than what we have (a heartbeat that took its time): the newer one stands */
    if (!n && !(n = node_add(t, now_ms))) {
        rc = VG_ELIMIT;
        t->refused++;
        goto out;
    }
    t->reports[src == VG__CONTROL_TOP_HEARTBEAT]++;
    snprintf(n->id, sizeof(n->id), "%s", in.id);
    snprintf(n->boot, sizeof(n->boot), "%s", in.boot);
    if (in.location[0] || !n->location[0])
        snprintf(n->location, sizeof(n->location), "%s", in.location);
    n->recv_ms = now_ms;
    n->t_ms = in.t_ms;
    for (size_t i = 0; i < n->n_apps; i++)
        n->apps[i].seen = false;
    for (size_t k = 0; k < in.n_apps; k++) {
        struct app *a = NULL;
        for (size_t i = 0; i < n->n_apps && !a; i++)
            if (strcmp(n->apps[i].name, in.apps[k].name) == 0)
                a = &n->apps[i];
        if (!a) {
            n->apps = vg_xrealloc(n->apps, (n->n_apps + 1) * sizeof(*n->apps));
            a = &n->apps[n->n_apps++];
            memset(a, 0, sizeof(*a));
            snprintf(a->name, sizeof(a->name), "%s", in.apps[k].name);
        }
        app_take(a, &in.apps[k].cur);
        a->seen = true;
    }
    /* apps the node no longer reports: it no longer serves them */
    for (size_t i = 0; i < n->n_apps;)
        if (!n->apps[i].seen)
            n->apps[i] = n->apps[--n->n_apps];
        else
            i++;
out:
    pthread_mutex_unlock(&t->mu);
    node_free(&in);
    return rc;
}

/* ---- rates out --------------------------------------------------------------------- */

static bool same_series(const struct sample *a, const struct sample *b)
{
    return a->live_since_ms == b->live_since_ms && strcmp(a->boot, b->boot) == 0 && strcmp(a->version, b->version) == 0;
}

/* What the node served between prev and cur: cur - prev, or all of cur
 * after a reset. */
static void sample_delta(const struct sample *prev, const struct sample *cur, struct sample *d)
{
    bool reset = !same_series(prev, cur) || cur->f.requests < prev->f.requests || cur->f.errors < prev->f.errors;
    for (size_t i = 0; i < VG__CONTROL_LAT_BUCKETS; i++)
        reset |= cur->f.counts[i] < prev->f.counts[i];
    for (size_t k = 0; k < CACHE_RESULTS; k++)
        reset |= cur->cache[k] < prev->cache[k];
    *d = *cur;
    if (reset)
        return;
    d->f.requests -= prev->f.requests;
    d->f.errors -= prev->f.errors;
    d->f.timed = 0;
    for (size_t i = 0; i < VG__CONTROL_LAT_BUCKETS; i++) {
        d->f.counts[i] -= prev->f.counts[i];
        d->f.timed += d->f.counts[i];
    }
    for (size_t k = 0; k < CACHE_RESULTS; k++)
        d->cache[k] -= prev->cache[k];
}

/* One row: an app at a location, or an app everywhere (loc NULL). */
struct row {
    const char *app, *loc;
    size_t nodes;
    struct vg__control_figures f;
    uint64_t cache[CACHE_RESULTS];
    double rps;
    json_t *locations; /* the totals' */
};

struct rows {
    struct row *r;
    size_t n;
};

static struct row *row_for(struct rows *rs, const char *app, const char *loc)
{
    for (size_t i = 0; i < rs->n; i++)
        if (strcmp(rs->r[i].app, app) == 0 && (loc ? rs->r[i].loc && strcmp(rs->r[i].loc, loc) == 0 : !rs->r[i].loc))
            return &rs->r[i];
    rs->r = vg_xrealloc(rs->r, (rs->n + 1) * sizeof(*rs->r));
    struct row *r = &rs->r[rs->n++];
    memset(r, 0, sizeof(*r));
    r->app = app;
    r->loc = loc;
    if (!loc)
        r->locations = json_array();
    return r;
}

static void row_add(struct row *r, const struct sample *d, double dt_s)
{
    vg__control_figures_merge(&r->f, &d->f);
    for (size_t k = 0; k < CACHE_RESULTS; k++)
        r->cache[k] += d->cache[k];
    r->rps += (double)d->f.requests / dt_s;
}

static int row_cmp(const void *a, const void *b)
{
    const struct row *x = a, *y = b;
    int c = strcmp(x->app, y->app);
    return c ? c : strcmp(x->loc ? x->loc : "", y->loc ? y->loc : "");
}

static json_t *round3(double v)
{
    return json_real(round(v * 1000) / 1000);
}

static json_t *row_json(const struct row *r)
{
    double p50 = vg__control_figures_quantile_ms(&r->f, 0.5), p99 = vg__control_figures_quantile_ms(&r->f, 0.99);
    double err = vg__control_figures_error_rate(&r->f);
    uint64_t cacheable = r->cache[0] + r->cache[1] + r->cache[2]; /* a bypass is not the cache's to hit */
    double hit = cacheable ? (double)r->cache[0] / (double)cacheable : -1;
    json_t *j = json_pack("{s:s}", "app", r->app);
    if (r->loc)
        json_object_set_new(j, "location", json_string(r->loc));
    else
        json_object_set(j, "locations", r->locations);
    json_object_set_new(j, "nodes", json_integer((json_int_t)r->nodes));
    json_object_set_new(j, "rps", round3(r->rps));
    json_object_set_new(j, "requests", json_integer((json_int_t)r->f.requests));
    json_object_set_new(j, "errors_5xx", json_integer((json_int_t)r->f.errors));
    json_object_set_new(j, "p50_ms", p50 >= 0 ? round3(p50) : json_null());
    json_object_set_new(j, "p99_ms", p99 >= 0 ? round3(p99) : json_null());
    json_object_set_new(j, "error_rate", json_real(err));
    json_object_set_new(j, "error_pct", round3(100 * err));
    json_object_set_new(j, "cache_hit_ratio", hit >= 0 ? json_real(hit) : json_null());
    json_object_set_new(j, "cache_hit_pct", hit >= 0 ? round3(100 * hit) : json_null());
    return j;
}

static bool in_array(json_t *a, const char *s)
{
    size_t i;
    json_t *v;
    json_array_foreach(a, i, v) if (strcmp(json_string_value(v), s) == 0) return true;
    return false;
}

json_t *vg__control_top_json(struct vg__control_top *t, uint64_t now_ms)
{
    struct rows rows = {0}, apps = {0};
    size_t fresh = 0;
    uint64_t window_ms = 0;
    pthread_mutex_lock(&t->mu);
    for (size_t i = 0; i < t->n_nodes; i++) {
        const struct node *n = &t->nodes[i];
        if (now_ms - n->recv_ms > VG__CONTROL_TOP_STALE_MS)
            continue; /* gone quiet: its last rate is not "now" */
        fresh++;
        const char *loc = n->location[0] ? n->location : "-";
        for (size_t k = 0; k < n->n_apps; k++) {
            const struct app *a = &n->apps[k];
            struct row *r = row_for(&rows, a->name, loc), *tot = row_for(&apps, a->name, NULL);
            r->nodes++;
            tot->nodes++;
            if (!in_array(tot->locations, loc))
                json_array_append_new(tot->locations, json_string(loc));
            if (!a->has_prev || a->cur.t_ms <= a->prev.t_ms)
                continue; /* one report so far: no rate yet */
            struct sample d;
            sample_delta(&a->prev, &a->cur, &d);
            uint64_t dt = a->cur.t_ms - a->prev.t_ms;
            if (dt > window_ms)
                window_ms = dt;
            row_add(r, &d, (double)dt / 1000.0);
            row_add(tot, &d, (double)dt / 1000.0);
        }
    }
    json_t *out =
        json_pack("{s:I,s:I,s:{s:b,s:I,s:I,s:I}}", "nodes", (json_int_t)fresh, "window_ms", (json_int_t)window_ms,
                  "sources", "bus", t->bus != NULL, "bus_reports", (json_int_t)t->reports[0], "heartbeat_reports",
                  (json_int_t)t->reports[1], "refused", (json_int_t)t->refused);
    /* the rows point at names in the table: rendered before it may change */
    if (rows.n) /* qsort's array may not be NULL, even empty */
        qsort(rows.r, rows.n, sizeof(*rows.r), row_cmp);
    if (apps.n)
        qsort(apps.r, apps.n, sizeof(*apps.r), row_cmp);
    json_t *ra = json_array(), *aa = json_array();
    for (size_t i = 0; i < rows.n; i++)
        json_array_append_new(ra, row_json(&rows.r[i]));
    for (size_t i = 0; i < apps.n; i++) {
        json_array_append_new(aa, row_json(&apps.r[i]));
        json_decref(apps.r[i].locations);
    }
    pthread_mutex_unlock(&t->mu);
    char now[32];
    vg__control_time_format((int64_t)(vg_wall_us() / 1000), now);
    json_object_set_new(out, "time", json_string(now));
    json_object_set_new(out, "rows", ra);
    json_object_set_new(out, "apps", aa);
    free(rows.r);
    free(apps.r);
    return out;
}

bool vg__control_top_node_figures(struct vg__control_top *t, const char *node, const char *app, const char *version,
                                  struct vg__control_figures *f, char *live)
{
    bool added = false;
    pthread_mutex_lock(&t->mu);
    struct node *n = node_find(t, node);
    for (size_t i = 0; n && i < n->n_apps && !added; i++) {
        const struct app *a = &n->apps[i];
        if (strcmp(a->name, app) != 0 || (version && strcmp(a->cur.version, version) != 0))
            continue;
        vg__control_figures_merge(f, &a->cur.f);
        if (live)
            snprintf(live, VERSION_MAX, "%s", a->cur.version);
        added = true;
    }
    pthread_mutex_unlock(&t->mu);
    return added;
}

/* ---- the bus and the table's life ------------------------------------------------- */

static void on_report(void *arg, const struct vg_bus_msg *m)
{
    struct vg__control_top *t = arg;
    json_t *j = json_loadb(m->data, m->len, 0, NULL);
    if (vg__control_top_ingest(t, NULL, j, vg_now_ms(), VG__CONTROL_TOP_BUS) != 0)
        vg_log(VG_LOG_DEBUG, "a stats report was refused", "subject", m->subject, NULL);
    json_decref(j);
}

struct vg__control_top *vg__control_top_create(void)
{
    struct vg__control_top *t = vg_xcalloc(1, sizeof(*t));
    pthread_mutex_init(&t->mu, NULL);
    return t;
}

int vg__control_top_connect(struct vg__control_top *t, const char *const *urls, size_t n, char *err, size_t errcap)
{
    struct vg_bus_options o = {.urls = urls, .n_urls = n, .name = "verge-control"};
    int rc = vg_bus_nats_create(&o, &t->bus, err, errcap);
    if (rc)
        return rc;
    rc = vg_bus_subscribe(t->bus, VG__CONTROL_TOP_SUBJECT, NULL, on_report, t, &t->sub);
    if (rc) {
        snprintf(err, errcap, "cannot subscribe to %s: %s", VG__CONTROL_TOP_SUBJECT, vg_strerror(rc));
        vg_bus_destroy(t->bus);
        t->bus = NULL;
    }
    return rc;
}

void vg__control_top_destroy(struct vg__control_top *t)
{
    if (!t)
        return;
    if (t->sub)
        vg_bus_unsubscribe(t->sub); /* no report arrives after this */
    if (t->bus)
        vg_bus_destroy(t->bus);
    for (size_t i = 0; i < t->n_nodes; i++)
        node_free(&t->nodes[i]);
    free(t->nodes);
    pthread_mutex_destroy(&t->mu);
    free(t);
}
