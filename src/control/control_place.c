/* Placement on the control plane: runs src/sched over the live inventory
 * and the demand the nodes report, and narrows each node's desired state
 * to the apps placed at its location (docs/ARCHITECTURE.md "Placement on
 * the control plane").
 *
 * The world is the bundled location list (src/geo): each location's
 * capacity is the sum of its up nodes' (labels cpu_m, mem_mib, slots,
 * cost, tags; defaults below), zero where no node is up, and the same list
 * gives the client areas demand is counted in. An app is placed when its
 * desired version's manifest has a `placement:` section; apps without one
 * run everywhere, as before.
 *
 * Runs: when the set of placed apps or their policies change (a deploy, a
 * rollout's end), when a node registers, and every interval from demand
 * (each node's heartbeat carries cumulative requests per app per client
 * area; a rate is the difference between two heartbeats). One run is one
 * step of the engine: hysteresis windows are counted in runs. A change is
 * make-before-break: a location the engine drops keeps serving
 * ("draining") until every location it added reports the version live,
 * or for drain_ms at most; then it leaves the desired state and its nodes
 * drain their in-flight requests as on any site switch.
 *
 * Each change is one transaction with a history row and a new desired-state
 * revision; the current placement of every app is also kept in
 * `placements`, so a restarted control plane starts from it. */
#include "control_int.h"
#include "geo/geo.h"
#include "sched/sched.h"

#include <math.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>

/* A node's capacity when its labels do not say. */
#define NODE_CPU_M 4000
#define NODE_MEM_MIB 8192
#define NODE_SLOTS 100
#define NODE_COST 100
#define POLICY_LIST_MAX 512

struct place_loc {
    char id[VG_GEO_ID_MAX];
    uint16_t below;       /* the engine's hysteresis counter */
    uint64_t drain_until; /* draining: wall ms it goes at the latest; 0: placed */
};

/* One placed app. */
struct place_app {
    char *name, *version;
    char *policy; /* the version's placement JSON, compact */
    struct place_loc *locs;
    size_t n_locs;
    json_t *explain; /* the last run's decisions (vg_sched_explain_json), or NULL */
    char *text;      /* the same as text */
    char *error;     /* why the engine refused the policy, or NULL */
    json_t *demand;  /* the last run's demand: {area: rps} */
    int64_t changed_at;
    bool seen; /* marks during a reload */
};

/* What a node reported last: cumulative counts and the rates they gave. */
struct place_node {
    char *id;
    int64_t at_ms;
    json_t *counts; /* {app: {area: n}} */
    json_t *rates;  /* {app: {area: rps}} */
};

struct vg__control_place {
    struct vg_geo_set *geo;
    struct place_app *apps;
    size_t n_apps;
    struct place_node *nodes;
    size_t n_nodes;
    uv_timer_t timer;
    int64_t last_run_ms;
    uint64_t runs;
};

static int64_t wall_ms(void)
{
    return (int64_t)(vg_wall_us() / 1000);
}

/* ==== policies as JSON ======================================================= */

static json_t *str_list(char **v, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, json_string(v[i]));
    return a;
}

json_t *vg_control_placement_json(const struct vg_conf_placement *p)
{
    if (p->mode == VG_CONF_PLACEMENT_NONE)
        return NULL;
    json_t *j = json_pack("{s:s,s:I,s:i,s:f,s:i,s:i,s:I,s:i,s:I,s:I,s:b}", "mode",
                          p->mode == VG_CONF_PLACEMENT_STATIC ? "static" : "dynamic", "target_us",
                          (json_int_t)p->target_us, "percentile", (int)p->percentile, "min_demand_rps",
                          (double)p->min_demand_mrps / 1000.0, "min", (int)p->min, "max", (int)p->max,
                          "scale_in_after_ms", (json_int_t)p->scale_in_after_ms, "priority", (int)p->priority, "cpu_m",
                          (json_int_t)p->cpu_m, "memory_mib", (json_int_t)(p->memory >> 20), "residency", p->residency);
    json_object_set_new(j, "static", str_list(p->static_locs, p->n_static));
    json_object_set_new(j, "allow_countries", str_list(p->allow_countries, p->n_allow_countries));
    json_object_set_new(j, "deny_countries", str_list(p->deny_countries, p->n_deny_countries));
    json_object_set_new(j, "allow_regions", str_list(p->allow_regions, p->n_allow_regions));
    json_object_set_new(j, "deny_regions", str_list(p->deny_regions, p->n_deny_regions));
    json_object_set_new(j, "require_tags", str_list(p->require_tags, p->n_require_tags));
    return j;
}

/* A policy read back into the engine's struct; the strings point into j,
 * which must outlive it. */
struct policy {
    struct vg_sched_app app;
    const char **lists[5]; /* countries allow/deny, regions allow/deny, tags */
    size_t n_lists[5];
    const char **statics;
    size_t n_statics;
    uint64_t scale_in_after_ms;
};

static void policy_free(struct policy *p)
{
    for (size_t i = 0; i < VG_ARRAY_LEN(p->lists); i++)
        free(p->lists[i]);
    free(p->statics);
    free((void *)p->app.static_locs);
    memset(p, 0, sizeof(*p));
}

static bool short_name(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n == 0 || n >= max)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= '0' && s[i] <= '9') ||
              s[i] == '-' || s[i] == '_'))
            return false;
    return true;
}

static const char *read_list(json_t *j, const char *key, const char ***out, size_t *n)
{
    json_t *a = json_object_get(j, key), *v;
    *out = NULL;
    *n = 0;
    if (!a)
        return NULL;
    if (!json_is_array(a) || json_array_size(a) > POLICY_LIST_MAX)
        return key;
    *out = vg_xcalloc(json_array_size(a) + 1, sizeof(**out));
    size_t i;
    json_array_foreach(a, i, v)
    {
        if (!json_is_string(v) || !short_name(json_string_value(v), VG_GEO_REGION_MAX))
            return key;
        (*out)[(*n)++] = json_string_value(v);
    }
    return NULL;
}

static bool read_u64(json_t *j, const char *key, uint64_t lo, uint64_t hi, uint64_t *out)
{
    json_t *v = json_object_get(j, key);
    if (!v)
        return true;
    if (!json_is_integer(v) || json_integer_value(v) < (json_int_t)lo || (uint64_t)json_integer_value(v) > hi)
        return false;
    *out = (uint64_t)json_integer_value(v);
    return true;
}

/* Reads a policy (untrusted: the plan endpoint's body). NULL, or the
 * name of the field that is wrong. */
static const char *policy_read(json_t *j, const char *name, struct policy *p)
{
    struct vg_conf_placement d;
    vg_conf_placement_default(&d);
    memset(p, 0, sizeof(*p));
    if (!json_is_object(j))
        return "placement";
    const char *mode = json_string_value(json_object_get(j, "mode"));
    if (!mode || (strcmp(mode, "static") != 0 && strcmp(mode, "dynamic") != 0))
        return "mode";
    uint64_t target = d.target_us, pct = d.percentile, min = d.min, max = d.max, scale = d.scale_in_after_ms,
             cpu = d.cpu_m, mem = d.memory >> 20, prio = (uint64_t)(d.priority + 1000);
    json_t *prio_j = json_object_get(j, "priority");
    if (prio_j && (!json_is_integer(prio_j) || llabs(json_integer_value(prio_j)) > 1000))
        return "priority";
    if (prio_j)
        prio = (uint64_t)(json_integer_value(prio_j) + 1000);
    if (!read_u64(j, "target_us", 1, 10000000, &target))
        return "target_us";
    if (!read_u64(j, "percentile", 1, 100, &pct))
        return "percentile";
    if (!read_u64(j, "min", 0, 100000, &min))
        return "min";
    if (!read_u64(j, "max", 1, 100000, &max) || min > max)
        return "max";
    if (!read_u64(j, "scale_in_after_ms", 0, 30ull * 24 * 3600 * 1000, &scale))
        return "scale_in_after_ms";
    if (!read_u64(j, "cpu_m", 0, 1000000, &cpu))
        return "cpu_m";
    if (!read_u64(j, "memory_mib", 0, 1 << 24, &mem))
        return "memory_mib";
    json_t *dem = json_object_get(j, "min_demand_rps");
    double min_demand = (double)d.min_demand_mrps / 1000.0;
    if (dem && (!json_is_number(dem) || json_number_value(dem) < 0 || json_number_value(dem) > 1e9))
        return "min_demand_rps";
    if (dem)
        min_demand = json_number_value(dem);
    static const char *const keys[5] = {"allow_countries", "deny_countries", "allow_regions", "deny_regions",
                                        "require_tags"};
    for (size_t i = 0; i < 5; i++) {
        const char *bad = read_list(j, keys[i], &p->lists[i], &p->n_lists[i]);
        if (bad)
            return bad;
    }
    const char *bad = read_list(j, "static", &p->statics, &p->n_statics);
    if (bad)
        return bad;
    json_t *res = json_object_get(j, "residency");
    if (res && !json_is_boolean(res))
        return "residency";
    struct vg_sched_app *a = &p->app;
    *a = (struct vg_sched_app){
        .name = name,
        .priority = (int)((int64_t)prio - 1000),
        .cpu_m = (uint32_t)cpu,
        .mem_mib = (uint32_t)mem,
        .mode = strcmp(mode, "static") == 0 ? VG_SCHED_STATIC : VG_SCHED_DYNAMIC,
        .target_us = (uint32_t)target,
        .percentile = (uint32_t)pct,
        .min_demand_mrps = (uint32_t)llround(fmin(min_demand * 1000.0, 4e9)),
        .min_locs = (uint32_t)min,
        .max_locs = (uint32_t)max,
        .enforce = {.allow_countries = p->lists[0],
                    .n_allow_countries = p->n_lists[0],
                    .deny_countries = p->lists[1],
                    .n_deny_countries = p->n_lists[1],
                    .allow_regions = p->lists[2],
                    .n_allow_regions = p->n_lists[2],
                    .deny_regions = p->lists[3],
                    .n_deny_regions = p->n_lists[3],
                    .residency = res && json_is_true(res)},
    };
    p->scale_in_after_ms = scale;
    return NULL;
}

/* Binds what depends on the world: tag bits, static indices, and the
 * hysteresis window in runs. */
static void policy_bind(struct policy *p, const struct vg_sched_world *w, uint64_t interval_ms)
{
    p->app.enforce.require_tags = 0;
    for (size_t i = 0; i < p->n_lists[4]; i++)
        p->app.enforce.require_tags |= vg_sched_world_tag(w, p->lists[4][i]);
    uint32_t *idx = vg_xcalloc(p->n_statics + 1, sizeof(*idx));
    size_t n = 0;
    for (size_t i = 0; i < p->n_statics; i++) {
        uint32_t l = vg_sched_world_find(w, p->statics[i]);
        if (l != VG_SCHED_NONE)
            idx[n++] = l;
    }
    free((void *)p->app.static_locs);
    p->app.static_locs = idx;
    p->app.n_static = n;
    uint64_t steps = interval_ms ? (p->scale_in_after_ms + interval_ms - 1) / interval_ms : 0;
    p->app.scale_in_steps = (uint32_t)(steps > 60000 ? 60000 : steps);
}

/* ==== state ================================================================== */

static struct place_app *app_find(struct vg__control_place *pl, const char *name)
{
    for (size_t i = 0; i < pl->n_apps; i++)
        if (strcmp(pl->apps[i].name, name) == 0)
            return &pl->apps[i];
    return NULL;
}

static void app_clear(struct place_app *a)
{
    free(a->name);
    free(a->version);
    free(a->policy);
    free(a->locs);
    json_decref(a->explain);
    free(a->text);
    free(a->error);
    json_decref(a->demand);
    memset(a, 0, sizeof(*a));
}

static bool loc_held(const struct place_app *a, const char *loc)
{
    for (size_t i = 0; i < a->n_locs; i++)
        if (strcmp(a->locs[i].id, loc) == 0)
            return true;
    return false;
}

bool vg__control_place_runs(struct vg_control_server *srv, const char *app, const char *location)
{
    struct place_app *a = srv->place ? app_find(srv->place, app) : NULL;
    return !a || loc_held(a, location);
}

json_t *vg__control_place_nodes(struct vg_control_server *srv, const char *app, json_t *nodes)
{
    json_t *out = json_array(), *n;
    size_t i;
    json_array_foreach(nodes, i, n)
    {
        const char *loc = json_string_value(json_object_get(n, "location"));
        if (loc && vg__control_place_runs(srv, app, loc))
            json_array_append(out, n);
    }
    return out;
}

void vg__control_place_filter(struct vg_control_server *srv, const char *node, json_t *desired)
{
    if (!srv->place || !srv->place->n_apps)
        return;
    sqlite3_stmt *st = vg__control_sql_prep(srv, "SELECT location FROM nodes WHERE id = ?");
    vg__control_sql_text(st, 1, node);
    char loc[VG_GEO_ID_MAX * 4] = "";
    if (st && sqlite3_step(st) == SQLITE_ROW)
        snprintf(loc, sizeof(loc), "%s", vg__control_sql_col(st, 0) ?: "");
    sqlite3_finalize(st);
    json_t *apps = json_object_get(desired, "apps");
    for (size_t i = json_array_size(apps); i-- > 0;) {
        const char *app = json_string_value(json_object_get(json_array_get(apps, i), "app"));
        if (app && !vg__control_place_runs(srv, app, loc))
            json_array_remove(apps, i);
    }
}

/* The persisted document of an app's placement. */
static json_t *app_doc(const struct place_app *a)
{
    json_t *locs = json_array();
    for (size_t i = 0; i < a->n_locs; i++)
        json_array_append_new(locs, json_pack("{s:s,s:i,s:I}", "id", a->locs[i].id, "below", a->locs[i].below,
                                              "drain_until", (json_int_t)a->locs[i].drain_until));
    return json_pack("{s:s,s:o,s:I}", "version", a->version ? a->version : "", "locations", locs, "changed_at",
                     (json_int_t)a->changed_at);
}

static void app_doc_read(struct place_app *a, json_t *doc)
{
    json_t *locs = json_object_get(doc, "locations"), *l;
    size_t i;
    a->locs = vg_xcalloc(json_array_size(locs) + 1, sizeof(*a->locs));
    json_array_foreach(locs, i, l)
    {
        const char *id = json_string_value(json_object_get(l, "id"));
        if (!id || strlen(id) >= VG_GEO_ID_MAX)
            continue;
        struct place_loc *x = &a->locs[a->n_locs++];
        snprintf(x->id, sizeof(x->id), "%s", id);
        x->below = (uint16_t)json_integer_value(json_object_get(l, "below"));
        x->drain_until = (uint64_t)json_integer_value(json_object_get(l, "drain_until"));
    }
    a->changed_at = json_integer_value(json_object_get(doc, "changed_at"));
}

/* Reads the placed apps (desired versions with a policy) into memory,
 * keeping what is known of those already there; true when the set or a
 * policy changed (a run is due). */
static bool apps_reload(struct vg_control_server *srv)
{
    struct vg__control_place *pl = srv->place;
    sqlite3_stmt *st = vg__control_sql_prep(srv, "SELECT d.app, d.version, v.placement, p.doc FROM desired d"
                                                 " JOIN versions v ON v.id = d.version"
                                                 " LEFT JOIN placements p ON p.app = d.app"
                                                 " WHERE v.placement IS NOT NULL ORDER BY d.app");
    if (!st)
        return false;
    bool changed = false;
    for (size_t i = 0; i < pl->n_apps; i++)
        pl->apps[i].seen = false;
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *name = vg__control_sql_col(st, 0), *version = vg__control_sql_col(st, 1),
                   *policy = vg__control_sql_col(st, 2);
        struct place_app *a = app_find(pl, name);
        if (!a) {
            pl->apps = vg_xrealloc(pl->apps, (pl->n_apps + 1) * sizeof(*pl->apps));
            a = &pl->apps[pl->n_apps++];
            memset(a, 0, sizeof(*a));
            a->name = vg_xstrdup(name);
            json_t *doc = vg__control_sql_col(st, 3) ? json_loads(vg__control_sql_col(st, 3), 0, NULL) : NULL;
            if (doc)
                app_doc_read(a, doc); /* where it ran before a restart */
            json_decref(doc);
            if (!a->locs)
                a->locs = vg_xcalloc(1, sizeof(*a->locs));
            changed = true;
        }
        a->seen = true;
        if (!a->version || strcmp(a->version, version) != 0 || strcmp(a->policy, policy) != 0) {
            free(a->version);
            free(a->policy);
            a->version = vg_xstrdup(version);
            a->policy = vg_xstrdup(policy);
            changed = true;
        }
    }
    sqlite3_finalize(st);
    for (size_t i = 0; i < pl->n_apps;) { /* no policy any more: everywhere again */
        if (pl->apps[i].seen) {
            i++;
            continue;
        }
        app_clear(&pl->apps[i]);
        pl->apps[i] = pl->apps[--pl->n_apps];
        changed = true;
    }
    return changed;
}

/* ==== demand ================================================================= */

static struct place_node *node_get(struct vg__control_place *pl, const char *id)
{
    for (size_t i = 0; i < pl->n_nodes; i++)
        if (strcmp(pl->nodes[i].id, id) == 0)
            return &pl->nodes[i];
    pl->nodes = vg_xrealloc(pl->nodes, (pl->n_nodes + 1) * sizeof(*pl->nodes));
    struct place_node *n = &pl->nodes[pl->n_nodes++];
    *n = (struct place_node){.id = vg_xstrdup(id), .counts = json_object(), .rates = json_object()};
    return n;
}

/* Rates from two cumulative reports; a count that went down is a node
 * that restarted: the new count is what it served since. */
static json_t *rates_of(json_t *before, json_t *now, double dt_s)
{
    json_t *out = json_object(), *areas;
    const char *app;
    json_object_foreach(now, app, areas)
    {
        json_t *r = json_object(), *v;
        const char *area;
        json_object_foreach(areas, area, v)
        {
            json_int_t c = json_integer_value(v),
                       c0 = json_integer_value(json_object_get(json_object_get(before, app), area));
            json_int_t d = c >= c0 ? c - c0 : c;
            if (d > 0 && dt_s > 0)
                json_object_set_new(r, area, json_real((double)d / dt_s));
        }
        json_object_set_new(out, app, r);
    }
    return out;
}

void vg__control_place_report(struct vg_control_server *srv, const char *node, json_t *report)
{
    struct vg__control_place *pl = srv->place;
    if (!pl)
        return;
    json_t *counts = json_object(), *rep;
    const char *app;
    json_object_foreach(json_object_get(report, "apps"), app, rep)
    {
        json_t *d = json_object_get(rep, "demand"), *v;
        const char *area;
        if (!json_is_object(d))
            continue;
        json_t *c = json_object();
        json_object_foreach(d, area, v) if (json_is_integer(v) && json_integer_value(v) >= 0 &&
                                            strlen(area) < VG_GEO_ID_MAX) json_object_set(c, area, v);
        json_object_set_new(counts, app, c);
    }
    struct place_node *n = node_get(pl, node);
    int64_t now = wall_ms();
    if (n->at_ms) {
        json_decref(n->rates);
        n->rates = rates_of(n->counts, counts, (double)(now - n->at_ms) / 1000.0);
    }
    json_decref(n->counts);
    n->counts = counts;
    n->at_ms = now;
    vg__control_place_drain(srv);
}

/* ==== runs =================================================================== */

static uint32_t label_u32(json_t *labels, const char *key, uint32_t dflt)
{
    const char *s = json_string_value(json_object_get(labels, key));
    if (!s || !*s)
        return dflt;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    return *end || v > UINT32_MAX ? dflt : (uint32_t)v;
}

/* Adds each comma-separated tag of s to names (unique, at most 32). */
static void tags_collect(const char *s, char names[][24], size_t *n)
{
    while (s && *s) {
        const char *e = strchr(s, ',');
        size_t len = e ? (size_t)(e - s) : strlen(s);
        if (len && len < 24) {
            size_t i = 0;
            while (i < *n && (strlen(names[i]) != len || memcmp(names[i], s, len) != 0))
                i++;
            if (i == *n && *n < VG_SCHED_TAGS_MAX) {
                memcpy(names[*n], s, len);
                names[(*n)++][len] = '\0';
            }
        }
        s = e ? e + 1 : NULL;
    }
}

struct run {
    json_t *nodes; /* vg__control_nodes_list */
    struct vg_sched_location *locs;
    struct vg_sched_area *areas;
    size_t n;
    char tag_names[VG_SCHED_TAGS_MAX][24];
    size_t n_tags;
    struct vg_sched_world *world;
    bool *has_node; /* per location: an up node is there */
};

static void run_free(struct run *r)
{
    json_decref(r->nodes);
    free(r->locs);
    free(r->areas);
    free(r->has_node);
    vg_sched_world_destroy(r->world);
}

/* Round trips the up nodes measured to their clients, by client area
 * (heartbeat `rtt_us`): they replace the model for (area, the node's
 * location). Several nodes at one location: the lowest (the model is a
 * floor of fibre plus hops; a higher figure from one node is that node's
 * queueing, not the path). */
static void measured_rtts(struct vg__control_place *pl, struct run *r)
{
    size_t i;
    json_t *n;
    uint32_t *best = vg_xcalloc(r->n * r->n, sizeof(*best));
    json_array_foreach(r->nodes, i, n)
    {
        size_t l = vg_geo_set_index(pl->geo, json_string_value(json_object_get(n, "location")));
        if (l == r->n || !json_is_true(json_object_get(n, "up")))
            continue;
        json_t *v;
        const char *area;
        json_object_foreach(json_object_get(json_object_get(n, "report"), "rtt_us"), area, v)
        {
            uint32_t a = vg_sched_world_find(r->world, area);
            json_int_t us = json_integer_value(v);
            if (a == VG_SCHED_NONE || !json_is_integer(v) || us < 1 || us > 10000000)
                continue;
            uint32_t *b = &best[(size_t)a * r->n + l];
            if (!*b || (uint32_t)us < *b)
                *b = (uint32_t)us;
        }
    }
    for (size_t a = 0; a < r->n; a++)
        for (size_t l = 0; l < r->n; l++)
            if (best[a * r->n + l] && vg_sched_world_set_rtt(r->world, (uint32_t)a, (uint32_t)l, best[a * r->n + l]))
                vg_log(VG_LOG_WARN, "placement: a measured round trip was refused", NULL);
    free(best);
}

/* The world: the bundled locations with the up nodes' capacity, and the
 * same list as client areas. */
static int world_build(struct vg_control_server *srv, struct run *r, json_t *policies)
{
    struct vg__control_place *pl = srv->place;
    memset(r, 0, sizeof(*r));
    if (vg__control_nodes_list(srv->store, (uint64_t)wall_ms(), srv->opt.node_timeout_ms, &r->nodes) != 0)
        return VG_EIO;
    r->n = vg_geo_set_count(pl->geo);
    r->locs = vg_xcalloc(r->n, sizeof(*r->locs));
    r->areas = vg_xcalloc(r->n, sizeof(*r->areas));
    r->has_node = vg_xcalloc(r->n, sizeof(*r->has_node));
    size_t i;
    json_t *n, *p;
    json_array_foreach(r->nodes, i, n) if (json_is_true(json_object_get(n, "up"))) tags_collect(
        json_string_value(json_object_get(json_object_get(n, "labels"), "tags")), r->tag_names, &r->n_tags);
    json_array_foreach(policies, i, p)
    {
        json_t *t;
        size_t k;
        json_array_foreach(json_object_get(p, "require_tags"), k, t)
            tags_collect(json_string_value(t), r->tag_names, &r->n_tags);
    }
    for (size_t l = 0; l < r->n; l++) {
        const struct vg_geo_location *g = vg_geo_set_at(pl->geo, l);
        struct vg_sched_location *x = &r->locs[l];
        snprintf(x->id, sizeof(x->id), "%s", g->id);
        memcpy(x->country, g->country, 3);
        snprintf(x->region, sizeof(x->region), "%s", g->region);
        x->lat = g->lat;
        x->lon = g->lon;
        x->cost = NODE_COST;
        struct vg_sched_area *ar = &r->areas[l];
        ar->lat = g->lat;
        ar->lon = g->lon;
        memcpy(ar->country, g->country, 3);
        snprintf(ar->region, sizeof(ar->region), "%s", g->region);
    }
    json_array_foreach(r->nodes, i, n)
    {
        size_t l = vg_geo_set_index(pl->geo, json_string_value(json_object_get(n, "location")));
        if (l == r->n || !json_is_true(json_object_get(n, "up")))
            continue; /* a location outside the list cannot be placed on */
        json_t *lab = json_object_get(n, "labels");
        struct vg_sched_location *x = &r->locs[l];
        x->cpu_m += label_u32(lab, "cpu_m", NODE_CPU_M);
        x->mem_mib += label_u32(lab, "mem_mib", NODE_MEM_MIB);
        x->slots += label_u32(lab, "slots", NODE_SLOTS);
        x->cost = label_u32(lab, "cost", NODE_COST);
        char names[VG_SCHED_TAGS_MAX][24];
        size_t nt = 0;
        tags_collect(json_string_value(json_object_get(lab, "tags")), names, &nt);
        for (size_t t = 0; t < nt; t++)
            for (size_t k = 0; k < r->n_tags; k++)
                if (strcmp(names[t], r->tag_names[k]) == 0)
                    x->tags |= 1u << k;
        r->has_node[l] = true;
    }
    const char *tn[VG_SCHED_TAGS_MAX];
    for (size_t k = 0; k < r->n_tags; k++)
        tn[k] = r->tag_names[k];
    int rc = vg_sched_world_create(r->locs, r->n, r->areas, r->n, tn, r->n_tags, &r->world);
    if (rc == 0)
        rc = vg_sched_world_set_sites(r->world, srv->opt.place_site_deg);
    if (rc == 0)
        measured_rtts(pl, r);
    return rc;
}

/* An app's demand from the fresh reports of up nodes, in mrps per area;
 * with none at all, a token demand where nodes are, so that the minimum
 * number of locations lands where it can run. */
static void demand_build(struct vg_control_server *srv, const struct run *r, const char *app,
                         struct vg_sched_demand_entry *e, size_t *n, json_t **shown)
{
    struct vg__control_place *pl = srv->place;
    double *rps = vg_xcalloc(r->n, sizeof(*rps));
    int64_t fresh = wall_ms() - (int64_t)srv->opt.node_timeout_ms;
    for (size_t i = 0; i < pl->n_nodes; i++) {
        if (pl->nodes[i].at_ms < fresh)
            continue;
        json_t *v;
        const char *area;
        json_object_foreach(json_object_get(pl->nodes[i].rates, app), area, v)
        {
            uint32_t l = vg_sched_world_find(r->world, area);
            if (l != VG_SCHED_NONE)
                rps[l] += json_real_value(v);
        }
    }
    *n = 0;
    *shown = json_object();
    for (size_t l = 0; l < r->n; l++)
        if (rps[l] > 0) {
            e[(*n)++] = (struct vg_sched_demand_entry){(uint32_t)l, (uint32_t)fmin(llround(rps[l] * 1000.0), 4e9)};
            json_object_set_new(*shown, r->locs[l].id, json_real(round(rps[l] * 1000.0) / 1000.0));
        }
    if (*n == 0)
        for (size_t l = 0; l < r->n; l++)
            if (r->has_node[l])
                e[(*n)++] = (struct vg_sched_demand_entry){(uint32_t)l, 1};
    free(rps);
}

/* One app's change: the locations it gains and loses. */
struct change {
    json_t *added, *removed;
};

/* Moves app a to the plan's locations: new ones are placed, dropped ones
 * start draining (unless nothing new needs to come up first). */
static void app_apply(struct place_app *a, const struct run *r, const struct vg_sched_plan *plan, uint32_t idx,
                      uint64_t drain_ms, struct change *ch)
{
    const uint32_t *locs;
    const uint16_t *below;
    size_t n = vg_sched_plan_locations(plan, idx, &locs);
    vg_sched_plan_below(plan, idx, &below);
    struct place_loc *next = vg_xcalloc(n + a->n_locs + 1, sizeof(*next));
    size_t m = 0;
    int64_t now = wall_ms();
    for (size_t k = 0; k < n; k++) {
        snprintf(next[m].id, sizeof(next[m].id), "%s", r->locs[locs[k]].id);
        next[m].below = below[k];
        if (!loc_held(a, next[m].id))
            json_array_append_new(ch->added, json_string(next[m].id));
        m++;
    }
    for (size_t i = 0; i < a->n_locs; i++) {
        bool kept = false;
        for (size_t k = 0; k < n && !kept; k++)
            kept = strcmp(a->locs[i].id, r->locs[locs[k]].id) == 0;
        if (kept)
            continue;
        if (!a->locs[i].drain_until)
            json_array_append_new(ch->removed, json_string(a->locs[i].id));
        next[m] = a->locs[i];
        next[m].drain_until = a->locs[i].drain_until ? a->locs[i].drain_until : (uint64_t)now + drain_ms;
        m++;
    }
    free(a->locs);
    a->locs = next;
    a->n_locs = m;
    if (json_array_size(ch->added) || json_array_size(ch->removed))
        a->changed_at = now;
}

/* Commits the changed apps' documents with their history rows and a new
 * revision, in one transaction. */
static int commit_changes(struct vg_control_server *srv, json_t *changes, const char *why)
{
    if (!json_object_size(changes))
        return 0;
    struct vg__control_place *pl = srv->place;
    int rc = vg__control_store_begin(srv->store);
    if (rc)
        return rc;
    int64_t rev = 0;
    const char *app;
    json_t *detail;
    json_object_foreach(changes, app, detail)
    {
        struct place_app *a = app_find(pl, app);
        if (!a)
            continue;
        sqlite3_stmt *st = vg__control_sql_prep(srv, "INSERT INTO placements(app, doc, updated_at) VALUES(?,?,?)"
                                                     " ON CONFLICT(app) DO UPDATE SET doc = excluded.doc,"
                                                     " updated_at = excluded.updated_at");
        json_t *doc = app_doc(a);
        char *s = json_dumps(doc, JSON_COMPACT);
        json_decref(doc);
        vg__control_sql_text(st, 1, app);
        vg__control_sql_text(st, 2, s);
        vg__control_sql_int(st, 3, wall_ms());
        free(s);
        if (!rc)
            rc = vg__control_sql_run(srv, st, "placement save");
        else
            sqlite3_finalize(st);
        json_object_set_new(detail, "why", json_string(why));
        if (!rc)
            rc = vg__control_store_history(srv->store, "scheduler", "placement.change", app, a->version,
                                           json_incref(detail));
    }
    if (!rc)
        rc = vg__control_store_rev_next(srv->store, &rev);
    rc = vg__control_store_end(srv->store, rc);
    if (!rc)
        vg__control_store_rev_committed(srv->store, rev);
    return rc;
}

static void log_change(const char *app, const struct change *ch, const char *why)
{
    char *add = json_dumps(ch->added, JSON_COMPACT), *rem = json_dumps(ch->removed, JSON_COMPACT);
    vg_log(VG_LOG_INFO, "placement changed", "app", app, "added", add, "removed", rem, "why", why, NULL);
    free(add);
    free(rem);
}

/* The engine over every placed app; apps whose policy it refuses keep
 * where they were and carry the error. Returns whether anything moved. */
static bool place_all(struct vg_control_server *srv, const char *why, json_t *changes)
{
    struct vg__control_place *pl = srv->place;
    size_t na = pl->n_apps;
    if (!na)
        return false;
    json_t *policies = json_array();
    struct policy *pol = vg_xcalloc(na, sizeof(*pol));
    bool *ok = vg_xcalloc(na, sizeof(*ok));
    for (size_t i = 0; i < na; i++) {
        json_t *pj = json_loads(pl->apps[i].policy, 0, NULL);
        json_array_append_new(policies, pj ? pj : json_object());
        const char *bad = policy_read(json_array_get(policies, i), pl->apps[i].name, &pol[i]);
        free(pl->apps[i].error);
        pl->apps[i].error = bad ? vg_xasprintf("the stored policy's '%s' is not valid", bad) : NULL;
        ok[i] = !bad;
    }
    struct run r;
    bool moved = false;
    if (world_build(srv, &r, policies) != 0) {
        vg_log(VG_LOG_ERROR, "placement: cannot build the world", NULL);
        run_free(&r); /* what was built before the failure */
        goto out;
    }
    bool any_up = false;
    for (size_t l = 0; l < r.n; l++)
        any_up |= r.has_node[l];
    if (!any_up) { /* nothing can run anywhere (or the nodes have not come back after a restart): wait */
        run_free(&r);
        goto out;
    }
    /* the apps the engine takes: those with a readable policy */
    struct vg_sched_app *apps = vg_xcalloc(na, sizeof(*apps));
    struct vg_sched_demand *dem = vg_xcalloc(na, sizeof(*dem));
    struct vg_sched_prev *prev = vg_xcalloc(na, sizeof(*prev));
    uint32_t *map = vg_xcalloc(na, sizeof(*map));
    size_t m = 0;
    for (size_t i = 0; i < na; i++) {
        if (!ok[i])
            continue;
        struct place_app *a = &pl->apps[i];
        policy_bind(&pol[i], r.world, srv->opt.place_interval_ms);
        apps[m] = pol[i].app;
        struct vg_sched_demand_entry *e = vg_xcalloc(r.n, sizeof(*e));
        json_decref(a->demand);
        demand_build(srv, &r, a->name, e, &dem[m].n, &a->demand);
        dem[m].e = e;
        uint32_t *pl_locs = vg_xcalloc(a->n_locs + 1, sizeof(*pl_locs));
        uint16_t *pl_below = vg_xcalloc(a->n_locs + 1, sizeof(*pl_below));
        size_t k = 0;
        for (size_t j = 0; j < a->n_locs; j++) {
            if (a->locs[j].drain_until)
                continue; /* on its way out: not the engine's any more */
            uint32_t l = vg_sched_world_find(r.world, a->locs[j].id);
            if (l == VG_SCHED_NONE)
                continue;
            pl_locs[k] = l;
            pl_below[k++] = a->locs[j].below;
        }
        prev[m] = (struct vg_sched_prev){pl_locs, pl_below, k};
        map[m++] = (uint32_t)i;
    }
    struct vg_sched_plan *seed = vg_sched_plan_seed(r.world, m, prev), *plan = NULL;
    struct vg_sched_error err;
    int rc;
    while ((rc = vg_sched_place_threads(r.world, apps, m, dem, seed, srv->opt.place_threads, &plan, &err)) ==
               VG_EINVAL &&
           err.app < m) {
        /* one app's policy cannot be honoured: it keeps where it was */
        struct place_app *a = &pl->apps[map[err.app]];
        free(a->error);
        a->error = vg_xstrdup(err.msg);
        vg_log(VG_LOG_WARN, "placement refused", "app", a->name, "reason", err.msg, NULL);
        apps[err.app].mode = VG_SCHED_STATIC; /* hold nothing this run */
        apps[err.app].n_static = 0;
    }
    if (rc == 0) {
        for (size_t k = 0; k < m; k++) {
            struct place_app *a = &pl->apps[map[k]];
            if (a->error)
                continue;
            json_decref(a->explain);
            free(a->text);
            a->explain = vg_sched_explain_json(r.world, apps, m, plan, (uint32_t)k);
            a->text = vg_sched_explain_text(r.world, apps, m, plan, (uint32_t)k);
            struct change ch = {json_array(), json_array()};
            app_apply(a, &r, plan, (uint32_t)k, srv->opt.place_drain_ms, &ch);
            if (json_array_size(ch.added) || json_array_size(ch.removed)) {
                log_change(a->name, &ch, why);
                json_object_set_new(changes, a->name, json_pack("{s:o,s:o}", "added", ch.added, "removed", ch.removed));
                moved = true;
            } else {
                json_decref(ch.added);
                json_decref(ch.removed);
            }
        }
    } else {
        vg_log(VG_LOG_ERROR, "placement failed", "reason", err.msg, NULL);
    }
    vg_sched_plan_destroy(plan);
    vg_sched_plan_destroy(seed);
    for (size_t k = 0; k < m; k++) {
        free((void *)dem[k].e);
        free((void *)prev[k].locs);
        free((void *)prev[k].below);
    }
    free(apps);
    free(dem);
    free(prev);
    free(map);
    run_free(&r);
out:
    for (size_t i = 0; i < na; i++)
        policy_free(&pol[i]);
    free(pol);
    free(ok);
    json_decref(policies);
    pl->last_run_ms = wall_ms();
    pl->runs++;
    return moved;
}

int vg__control_place_run(struct vg_control_server *srv, const char *why)
{
    if (!srv->place)
        return 0;
    apps_reload(srv);
    json_t *changes = json_object();
    int rc = 0;
    if (place_all(srv, why, changes))
        rc = commit_changes(srv, changes, why);
    json_decref(changes);
    return rc;
}

void vg__control_place_sync(struct vg_control_server *srv)
{
    if (srv->place && apps_reload(srv) && vg__control_place_run(srv, "deploy") != 0)
        vg_log(VG_LOG_ERROR, "placement: cannot save a change", NULL);
}

/* ==== draining =============================================================== */

/* Whether some up node at loc reports app at version live. */
static bool live_at(json_t *nodes, const char *app, const char *version, const char *loc)
{
    size_t i;
    json_t *n;
    json_array_foreach(nodes, i, n)
    {
        if (!json_is_true(json_object_get(n, "up")) ||
            strcmp(json_string_value(json_object_get(n, "location")) ?: "", loc) != 0)
            continue;
        json_t *rep = json_object_get(json_object_get(json_object_get(n, "report"), "apps"), app);
        const char *v = json_string_value(json_object_get(rep, "version"));
        if (v && strcmp(v, version) == 0)
            return true;
    }
    return false;
}

void vg__control_place_drain(struct vg_control_server *srv)
{
    struct vg__control_place *pl = srv->place;
    bool any = false;
    for (size_t i = 0; pl && i < pl->n_apps && !any; i++)
        for (size_t k = 0; k < pl->apps[i].n_locs; k++)
            any |= pl->apps[i].locs[k].drain_until != 0;
    if (!any)
        return;
    json_t *nodes = NULL;
    if (vg__control_nodes_list(srv->store, (uint64_t)wall_ms(), srv->opt.node_timeout_ms, &nodes) != 0)
        return;
    json_t *changes = json_object();
    uint64_t now = (uint64_t)wall_ms();
    for (size_t i = 0; i < pl->n_apps; i++) {
        struct place_app *a = &pl->apps[i];
        bool ready = false; /* every placed location serves the version (and there is one) */
        for (size_t k = 0; k < a->n_locs; k++)
            if (!a->locs[k].drain_until) {
                ready = live_at(nodes, a->name, a->version, a->locs[k].id);
                if (!ready)
                    break;
            }
        json_t *gone = json_array();
        size_t m = 0;
        for (size_t k = 0; k < a->n_locs; k++) {
            if (a->locs[k].drain_until && (ready || now >= a->locs[k].drain_until))
                json_array_append_new(gone, json_string(a->locs[k].id));
            else
                a->locs[m++] = a->locs[k];
        }
        a->n_locs = m;
        if (json_array_size(gone)) {
            vg_log(VG_LOG_INFO, "placement drained", "app", a->name, "why",
                   ready ? "the new locations serve it" : "drain timeout", NULL);
            json_object_set_new(changes, a->name, json_pack("{s:[],s:o}", "added", "drained", gone));
        } else {
            json_decref(gone);
        }
    }
    json_decref(nodes);
    if (json_object_size(changes) && commit_changes(srv, changes, "drained") == 0)
        vg__control_waiters_notify(srv);
    json_decref(changes);
}

/* ==== the API's views ======================================================== */

static json_t *nodes_at(json_t *nodes, const char *loc, const char *app)
{
    json_t *out = json_array(), *n;
    size_t i;
    json_array_foreach(nodes, i, n)
    {
        if (strcmp(json_string_value(json_object_get(n, "location")) ?: "", loc) != 0)
            continue;
        json_t *rep = json_object_get(json_object_get(json_object_get(n, "report"), "apps"), app);
        json_array_append_new(out, json_pack("{s:s,s:b,s:s?}", "id", json_string_value(json_object_get(n, "id")), "up",
                                             json_is_true(json_object_get(n, "up")), "version",
                                             json_string_value(json_object_get(rep, "version"))));
    }
    return out;
}

int vg__control_place_get(struct vg_control_server *srv, const char *app, json_t **out)
{
    struct vg__control_place *pl = srv->place;
    struct place_app *a = app_find(pl, app);
    json_t *nodes = NULL;
    if (vg__control_nodes_list(srv->store, (uint64_t)wall_ms(), srv->opt.node_timeout_ms, &nodes) != 0)
        return VG_EIO;
    if (!a) {
        *out = json_pack("{s:s,s:n,s:b,s:s}", "app", app, "policy", "everywhere", true, "note",
                         "the desired version has no placement section: every node runs it");
        json_decref(nodes);
        return 0;
    }
    json_t *locs = json_array();
    for (size_t k = 0; k < a->n_locs; k++) {
        const struct vg_geo_location *g = vg_geo_set_find(pl->geo, a->locs[k].id);
        json_t *why = NULL, *d;
        size_t i;
        json_array_foreach(
            json_object_get(a->explain, "decisions"), i,
            d) if (!why && strcmp(json_string_value(json_object_get(d, "location")) ?: "", a->locs[k].id) == 0) why = d;
        json_array_append_new(locs,
                              json_pack("{s:s,s:s,s:s,s:s,s:s,s:o,s:O?}", "id", a->locs[k].id, "city", g ? g->city : "",
                                        "country", g ? g->country : "", "region", g ? g->region : "", "state",
                                        a->locs[k].drain_until ? "draining" : "placed", "nodes",
                                        nodes_at(nodes, a->locs[k].id, app), "decision", why));
    }
    json_decref(nodes);
    char changed[32], ran[32];
    vg__control_time_format(a->changed_at, changed);
    vg__control_time_format(pl->last_run_ms, ran);
    json_t *policy = json_loads(a->policy, 0, NULL);
    *out = json_pack("{s:s,s:s,s:o,s:b,s:o,s:O?,s:O?,s:s?,s:s?,s:s,s:s,s:I}", "app", app, "version", a->version,
                     "policy", policy ? policy : json_null(), "everywhere", false, "locations", locs, "demand_rps",
                     a->demand, "explain", a->explain, "text", a->text, "error", a->error, "changed_at", changed,
                     "last_run_at", ran, "interval_ms", (json_int_t)srv->opt.place_interval_ms);
    return 0;
}

int vg__control_place_plan(struct vg_control_server *srv, const char *app, json_t *policy, json_t **out, char *err,
                           size_t errcap)
{
    struct policy p;
    const char *bad = policy_read(policy, app, &p);
    policy_free(&p);
    if (bad) {
        snprintf(err, errcap, "placement: '%s' is not valid", bad);
        return VG_EINVAL;
    }
    /* a dry run: the same run with this app's policy replaced, on copies
     * of the state, nothing committed */
    struct vg__control_place *pl = srv->place, saved = *pl;
    struct place_app *copy = vg_xcalloc(pl->n_apps + 1, sizeof(*copy));
    size_t n = pl->n_apps;
    bool found = false;
    for (size_t i = 0; i < n; i++) {
        const struct place_app *a = &pl->apps[i];
        copy[i] = (struct place_app){.name = vg_xstrdup(a->name),
                                     .version = vg_xstrdup(a->version),
                                     .policy = vg_xstrdup(a->policy),
                                     .n_locs = a->n_locs};
        copy[i].locs = vg_xcalloc(a->n_locs + 1, sizeof(*a->locs));
        memcpy(copy[i].locs, a->locs, a->n_locs * sizeof(*a->locs));
        if (strcmp(a->name, app) == 0) {
            free(copy[i].policy);
            copy[i].policy = json_dumps(policy, JSON_COMPACT);
            found = true;
        }
    }
    if (!found) {
        copy[n] = (struct place_app){.name = vg_xstrdup(app),
                                     .version = vg_xstrdup("(plan)"),
                                     .policy = json_dumps(policy, JSON_COMPACT),
                                     .locs = vg_xcalloc(1, sizeof(*copy->locs))};
        n++;
    }
    pl->apps = copy;
    pl->n_apps = n;
    json_t *changes = json_object();
    place_all(srv, "plan", changes);
    struct place_app *a = app_find(pl, app);
    json_t *after = json_array();
    for (size_t k = 0; k < a->n_locs; k++)
        if (!a->locs[k].drain_until)
            json_array_append_new(after, json_string(a->locs[k].id));
    json_t *others = json_object(), *v;
    const char *name;
    json_object_foreach(changes, name, v) if (strcmp(name, app) != 0) json_object_set(others, name, v);
    json_t *mine = json_object_get(changes, app);
    *out = json_pack("{s:s,s:b,s:o,s:O,s:O,s:O?,s:s?,s:s?,s:o}", "app", app, "deployed", found, "locations", after,
                     "added", mine ? json_object_get(mine, "added") : json_array(), "removed",
                     mine ? json_object_get(mine, "removed") : json_array(), "explain", a->explain, "text", a->text,
                     "error", a->error, "others", others);
    json_decref(changes);
    for (size_t i = 0; i < n; i++)
        app_clear(&copy[i]);
    free(copy);
    *pl = saved; /* the dry run's clock and count included: it was not a run */
    return 0;
}

/* ==== life ==================================================================== */

static void on_timer(uv_timer_t *t)
{
    struct vg_control_server *srv = t->data;
    if (vg__control_place_run(srv, "demand") == 0)
        vg__control_waiters_notify(srv);
    vg__control_place_drain(srv);
}

int vg__control_place_init(struct vg_control_server *srv)
{
    struct vg__control_place *pl = vg_xcalloc(1, sizeof(*pl));
    if (vg_geo_set_builtin(&pl->geo) != 0) {
        free(pl);
        return VG_EIO;
    }
    srv->place = pl;
    uv_timer_init(&srv->uv, &pl->timer);
    pl->timer.data = srv;
    if (vg__control_place_run(srv, "start") != 0)
        vg_log(VG_LOG_ERROR, "placement: cannot save a change", NULL);
    if (srv->opt.place_interval_ms)
        uv_timer_start(&pl->timer, on_timer, srv->opt.place_interval_ms, srv->opt.place_interval_ms);
    return 0;
}

void vg__control_place_fini(struct vg_control_server *srv)
{
    struct vg__control_place *pl = srv->place;
    if (!pl)
        return;
    uv_timer_stop(&pl->timer);
    for (size_t i = 0; i < pl->n_apps; i++)
        app_clear(&pl->apps[i]);
    free(pl->apps);
    for (size_t i = 0; i < pl->n_nodes; i++) {
        free(pl->nodes[i].id);
        json_decref(pl->nodes[i].counts);
        json_decref(pl->nodes[i].rates);
    }
    free(pl->nodes);
    vg_geo_set_destroy(pl->geo);
    free(pl);
    srv->place = NULL;
}
