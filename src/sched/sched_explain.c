/* Explanations: the enforcement rule a location breaks, and an app's
 * decision records rendered as text and as JSON. */
#include "sched/sched_int.h"

#include <string.h>

/* lower case for JSON; in the order of VG_SCHED_REASON_MAP */
static const char *const reason_names[] = {
    "static",    "gain",       "min_count", "demand_holds", "hysteresis",  "scaled_in", "policy",    "capacity",
    "displaced", "target_met", "no_gain",   "below_demand", "max_reached", "swapped",   "same_site",
};

static const char *const reason_texts[] = {
#define VG_SCHED_REASON_TEXT(name, text) text,
    VG_SCHED_REASON_MAP(VG_SCHED_REASON_TEXT)
#undef VG_SCHED_REASON_TEXT
};

_Static_assert(VG_ARRAY_LEN(reason_names) == VG_ARRAY_LEN(reason_texts), "a name for every reason");

const char *vg_sched_reason_name(enum vg_sched_reason r)
{
    return (size_t)r < VG_ARRAY_LEN(reason_names) ? reason_names[r] : "unknown";
}

const char *vg_sched_reason_text(enum vg_sched_reason r)
{
    return (size_t)r < VG_ARRAY_LEN(reason_texts) ? reason_texts[r] : "unknown";
}

static const char *verdict_name(uint8_t v)
{
    return v == VG_SCHED_CHOSEN ? "chosen" : v == VG_SCHED_KEPT ? "kept" : "rejected";
}

static const char *resource_name(uint8_t r)
{
    return r == VG_SCHED_RES_CPU ? "cpu" : r == VG_SCHED_RES_MEM ? "memory" : r == VG_SCHED_RES_SLOTS ? "slots" : "";
}

static void list_into(char *buf, size_t cap, const char *const *items, size_t n)
{
    size_t at = (size_t)snprintf(buf, cap, "[");
    for (size_t i = 0; i < n && at < cap; i++)
        at += (size_t)snprintf(buf + at, cap - at, "%s%s", i ? ", " : "", items[i]);
    if (at < cap)
        snprintf(buf + at, cap - at, "]");
}

static bool listed(const char *s, const char *const *items, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(s, items[i]) == 0)
            return true;
    return false;
}

/* The rule and its values, for messages: what a reader needs to fix the
 * manifest or the inventory without looking anything up. */
const char *vg_sched_enforce_check(const struct vg_sched_world *w, const struct vg_sched_app *app, uint32_t loc,
                                   char *buf, size_t cap)
{
    const struct vg_sched_enforce *e = &app->enforce;
    const struct vg_sched_location *l = &w->locs[loc];
    char list[160];
    if (listed(l->country, e->deny_countries, e->n_deny_countries)) {
        list_into(list, sizeof(list), e->deny_countries, e->n_deny_countries);
        snprintf(buf, cap, "country %s is in deny_countries %s", l->country, list);
    } else if (listed(l->region, e->deny_regions, e->n_deny_regions)) {
        list_into(list, sizeof(list), e->deny_regions, e->n_deny_regions);
        snprintf(buf, cap, "region %s is in deny_regions %s", l->region, list);
    } else if (e->n_allow_countries && !listed(l->country, e->allow_countries, e->n_allow_countries)) {
        list_into(list, sizeof(list), e->allow_countries, e->n_allow_countries);
        snprintf(buf, cap, "country %s is not in allow_countries %s", l->country, list);
    } else if (e->n_allow_regions && !listed(l->region, e->allow_regions, e->n_allow_regions)) {
        list_into(list, sizeof(list), e->allow_regions, e->n_allow_regions);
        snprintf(buf, cap, "region %s is not in allow_regions %s", l->region, list);
    } else if ((l->tags & e->require_tags) != e->require_tags) {
        uint32_t miss = e->require_tags & ~l->tags;
        unsigned bit = 0;
        while (!(miss >> bit & 1))
            bit++;
        snprintf(buf, cap, "it lacks the required tag '%s'", vg_sched_world_tag_name(w, bit));
    } else {
        return NULL;
    }
    return buf;
}

/* --- text ------------------------------------------------------------------- */

struct out {
    char *s;
    size_t n, cap;
};

static void put(struct out *o, const char *fmt, ...) VG_PRINTF(2, 3);
static void put(struct out *o, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(o->s + o->n, o->cap - o->n, fmt, ap);
        va_end(ap);
        if (k >= 0 && (size_t)k < o->cap - o->n) {
            o->n += (size_t)k;
            return;
        }
        o->cap = 2 * o->cap + (size_t)(k > 0 ? k : 0) + 64;
        o->s = vg_xrealloc(o->s, o->cap);
    }
}

static double ms(uint64_t us)
{
    return (double)us / 1000.0;
}

/* One record's details beyond its reason. */
static void detail(struct out *o, const struct vg_sched_world *w, const struct vg_sched_app *apps, size_t n_apps,
                   const struct vg_sched_app *app, const struct vg_sched_why *y)
{
    char buf[200];
    switch (y->reason) {
    case VG_SCHED_R_POLICY:
        put(o, ": %s", vg_sched_enforce_check(w, app, y->loc, buf, sizeof(buf)) ?: "?");
        break;
    case VG_SCHED_R_CAPACITY:
    case VG_SCHED_R_DISPLACED:
        if (!w->locs[y->loc].slots && !w->locs[y->loc].cpu_m && !w->locs[y->loc].mem_mib) {
            put(o, ": none there (no node is up at this location)");
            break;
        }
        put(o, ": %s full", resource_name(y->resource));
        if (y->by_app != VG_SCHED_NONE && y->by_app < n_apps)
            put(o, " (held by %s, priority %d > %d)", apps[y->by_app].name, apps[y->by_app].priority, app->priority);
        break;
    case VG_SCHED_R_HYSTERESIS:
    case VG_SCHED_R_SCALED_IN:
        put(o, ": serves %.3f rps < min_demand %.3f rps, %u of %u steps", y->demand_mrps / 1000.0,
            app->min_demand_mrps / 1000.0, y->below, app->scale_in_steps);
        break;
    case VG_SCHED_R_BELOW_DEMAND:
        put(o, ": would serve %.3f rps < min_demand %.3f rps", y->demand_mrps / 1000.0, app->min_demand_mrps / 1000.0);
        break;
    default:
        if (y->verdict != VG_SCHED_REJECTED)
            put(o, ": serves %.3f rps", y->demand_mrps / 1000.0);
        if (y->gain)
            put(o, ", latency gain %.1f ms x rps", (double)y->gain / 1e6);
        if (y->reason == VG_SCHED_R_MAX_REACHED)
            put(o, " (max %u)", app->max_locs);
        break;
    }
    (void)w;
}

/* The app's enforcements in one line ("" when it has none): the policy
 * every chosen location satisfies. */
static void enforce_line(const struct vg_sched_world *w, const struct vg_sched_enforce *e, char *buf, size_t cap)
{
    char list[160];
    size_t at = 0;
    buf[0] = '\0';
    struct {
        const char *name;
        const char *const *items;
        size_t n;
    } lists[] = {
        {"allow_countries", e->allow_countries, e->n_allow_countries},
        {"deny_countries", e->deny_countries, e->n_deny_countries},
        {"allow_regions", e->allow_regions, e->n_allow_regions},
        {"deny_regions", e->deny_regions, e->n_deny_regions},
    };
    for (size_t i = 0; i < VG_ARRAY_LEN(lists) && at < cap; i++) {
        if (!lists[i].n)
            continue;
        list_into(list, sizeof(list), lists[i].items, lists[i].n);
        at += (size_t)snprintf(buf + at, cap - at, " %s %s", lists[i].name, list);
    }
    for (unsigned bit = 0; bit < 32 && at < cap; bit++)
        if (e->require_tags >> bit & 1)
            at += (size_t)snprintf(buf + at, cap - at, " require_tags %s", vg_sched_world_tag_name(w, bit));
    if (e->residency && at < cap)
        snprintf(buf + at, cap - at, " residency");
}

/* A dynamic app runs at one location per site (sched_place.c): the other
 * locations of a record's site share its decision. Listed one per line,
 * so that the line of any location says why, up to SITE_LIST. */
#define SITE_LIST 8

static void site_lines(struct out *o, const struct vg_sched_world *w, const struct vg_sched_app *a,
                       const struct vg_sched_why *y)
{
    size_t n;
    uint32_t site = vg_sched_world_site(w, y->loc);
    const uint32_t *v = vg_sched_world_site_locations(w, site, &n);
    if (a->mode != VG_SCHED_DYNAMIC || n < 2 || y->reason == VG_SCHED_R_SAME_SITE)
        return;
    const char *id = w->locs[y->loc].id;
    size_t shown = 0;
    for (size_t i = 0; i < n && shown < SITE_LIST; i++) {
        if (v[i] == y->loc)
            continue;
        const struct vg_sched_location *l = &w->locs[v[i]];
        if (y->verdict == VG_SCHED_REJECTED)
            put(o, "  - %-15s rejected %s/%s: at the site of %s, rejected with it\n", l->id, l->country, l->region, id);
        else
            put(o, "  - %-15s rejected %s/%s: at the site of %s, where the app runs at %s (one location per site)\n",
                l->id, l->country, l->region, id, id);
        shown++;
    }
    if (n - 1 > shown)
        put(o, "    (and %zu more locations of that site)\n", n - 1 - shown);
}

char *vg_sched_explain_text(const struct vg_sched_world *w, const struct vg_sched_app *apps, size_t n_apps,
                            const struct vg_sched_plan *p, uint32_t app)
{
    VG_ASSERT(app < n_apps && app < p->n_apps);
    const struct vg_sched_app *a = &apps[app];
    const struct vg__sched_app_plan *ap = &p->apps[app];
    struct vg_sched_app_stats stats;
    vg_sched_plan_app_stats(p, app, &stats);
    const struct vg_sched_app_stats *st = &stats;
    struct out o = {vg_xmalloc(256), 0, 256};
    o.s[0] = '\0';
    put(&o, "app %s (priority %d): %s, %zu location%s\n", a->name, a->priority,
        a->mode == VG_SCHED_STATIC ? "static" : "dynamic", ap->n_locs, ap->n_locs == 1 ? "" : "s");
    put(&o, "  demand %.3f rps, served %.3f rps, p50 %.2f ms, p95 %.2f ms", st->demand_mrps / 1000.0,
        st->served_mrps / 1000.0, ms(st->p50_us), ms(st->p95_us));
    if (a->mode == VG_SCHED_DYNAMIC)
        put(&o, ", %.1f%% within %.1f ms (target %u%%)",
            st->demand_mrps ? 100.0 * (double)st->within_mrps / (double)st->demand_mrps : 100.0, ms(a->target_us),
            a->percentile);
    put(&o, "\n");
    char rules[400];
    enforce_line(w, &a->enforce, rules, sizeof(rules));
    if (rules[0])
        put(&o, "  enforce:%s (every chosen location satisfies it)\n", rules);
    if (st->served_mrps < st->demand_mrps)
        put(&o, "  unserved %.3f rps%s\n", (st->demand_mrps - st->served_mrps) / 1000.0,
            a->enforce.residency ? " (residency: no location chosen in its region)" : "");
    for (size_t i = 0; i < ap->n_why; i++) {
        const struct vg_sched_why *y = &ap->why[i];
        const struct vg_sched_location *l = &w->locs[y->loc];
        put(&o, "  %c %-15s %s %s/%s: %s", y->verdict == VG_SCHED_REJECTED ? '-' : '+', l->id, verdict_name(y->verdict),
            l->country, l->region, vg_sched_reason_text(y->reason));
        detail(&o, w, apps, n_apps, a, y);
        put(&o, "\n");
        site_lines(&o, w, a, y);
    }
    return o.s;
}

/* --- JSON ------------------------------------------------------------------- */

static json_t *why_json(const struct vg_sched_world *w, const struct vg_sched_app *apps, size_t n_apps,
                        const struct vg_sched_app *app, const struct vg_sched_why *y)
{
    const struct vg_sched_location *l = &w->locs[y->loc];
    json_t *j = json_pack("{s:s,s:s,s:s,s:s,s:s,s:f,s:f}", "location", l->id, "verdict", verdict_name(y->verdict),
                          "reason", vg_sched_reason_name(y->reason), "country", l->country, "region", l->region,
                          "demand_rps", y->demand_mrps / 1000.0, "latency_gain", (double)y->gain / 1e6);
    char buf[200];
    if (y->reason == VG_SCHED_R_POLICY)
        json_object_set_new(j, "rule", json_string(vg_sched_enforce_check(w, app, y->loc, buf, sizeof(buf)) ?: "?"));
    if (y->resource)
        json_object_set_new(j, "resource", json_string(resource_name(y->resource)));
    if (y->reason == VG_SCHED_R_CAPACITY && !l->slots && !l->cpu_m && !l->mem_mib)
        json_object_set_new(j, "empty", json_true()); /* no capacity at all there: no node */
    if (y->by_app != VG_SCHED_NONE && y->by_app < n_apps) {
        json_object_set_new(j, "by_app", json_string(apps[y->by_app].name));
        json_object_set_new(j, "by_priority", json_integer(apps[y->by_app].priority));
    }
    if (y->reason == VG_SCHED_R_HYSTERESIS || y->reason == VG_SCHED_R_SCALED_IN) {
        json_object_set_new(j, "below_steps", json_integer(y->below));
        json_object_set_new(j, "scale_in_steps", json_integer(app->scale_in_steps));
    }
    if (y->reason == VG_SCHED_R_BELOW_DEMAND || y->reason == VG_SCHED_R_HYSTERESIS || y->reason == VG_SCHED_R_SCALED_IN)
        json_object_set_new(j, "min_demand_rps", json_real(app->min_demand_mrps / 1000.0));
    size_t n;
    const uint32_t *v = vg_sched_world_site_locations(w, vg_sched_world_site(w, y->loc), &n);
    if (app->mode == VG_SCHED_DYNAMIC && n > 1) { /* the site's other locations share the decision */
        json_t *site = json_array();
        for (size_t i = 0; i < n && json_array_size(site) < SITE_LIST; i++)
            if (v[i] != y->loc)
                json_array_append_new(site, json_string(w->locs[v[i]].id));
        json_object_set_new(j, "site_locations", site);
        json_object_set_new(j, "site_size", json_integer((json_int_t)n));
    }
    return j;
}

json_t *vg_sched_explain_json(const struct vg_sched_world *w, const struct vg_sched_app *apps, size_t n_apps,
                              const struct vg_sched_plan *p, uint32_t app)
{
    VG_ASSERT(app < n_apps && app < p->n_apps);
    const struct vg_sched_app *a = &apps[app];
    const struct vg__sched_app_plan *ap = &p->apps[app];
    struct vg_sched_app_stats stats;
    vg_sched_plan_app_stats(p, app, &stats);
    const struct vg_sched_app_stats *st = &stats;
    json_t *locs = json_array(), *why = json_array();
    for (size_t k = 0; k < ap->n_locs; k++)
        json_array_append_new(locs, json_string(w->locs[ap->locs[k]].id));
    for (size_t i = 0; i < ap->n_why; i++)
        json_array_append_new(why, why_json(w, apps, n_apps, a, &ap->why[i]));
    char rules[400];
    enforce_line(w, &a->enforce, rules, sizeof(rules));
    return json_pack("{s:s,s:i,s:s,s:s,s:o,s:f,s:f,s:f,s:f,s:f,s:o}", "app", a->name, "priority", a->priority, "mode",
                     a->mode == VG_SCHED_STATIC ? "static" : "dynamic", "enforce", rules[0] ? rules + 1 : "",
                     "locations", locs, "demand_rps", st->demand_mrps / 1000.0, "served_rps", st->served_mrps / 1000.0,
                     "within_target_rps", st->within_mrps / 1000.0, "p50_ms", ms(st->p50_us), "p95_ms", ms(st->p95_us),
                     "decisions", why);
}
