/* The manifest's `placement:` section: static or dynamic placement, the
 * enforcements, priority and resources (docs/manifest.md "placement").
 *
 * What can be checked without the live inventory is checked here, against
 * the bundled locations (src/geo): unknown location ids and regions, a
 * static list that breaks an enforcement, a dynamic minimum above the
 * number of locations the enforcements leave, min above max. Tags belong to
 * the inventory, so `require_tags` is checked by the scheduler. */
#include "conf/conf_int.h"
#include "geo/geo.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MAX_TARGET_MS 10000
#define MAX_LOCS 100000
#define PRIORITY_MAX 1000

void vg_conf_placement_default(struct vg_conf_placement *p)
{
    *p = (struct vg_conf_placement){
        .target_us = 50000,
        .percentile = 95,
        .min_demand_mrps = 1000,
        .min = 1,
        .max = 10,
        .scale_in_after_ms = 10 * 60 * 1000,
        .cpu_m = 100,
        .memory = 128u << 20,
    };
}

static struct vg_conf_placement *pl(struct vg__conf_ld *ld)
{
    return &ld->app->placement;
}

/* A list of short strings each passing ok(); *out and *n the copy. */
static int want_names(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                      bool (*ok)(const char *s, size_t len), const char *what, char ***out, size_t *n)
{
    struct vg__conf_node *const *items;
    size_t k;
    int rc = vg__conf_list(ld, key, val, true, &items, &k);
    if (rc)
        return rc;
    *out = vg__conf_alloc_array(ld->pool, k ? k : 1, sizeof(**out));
    for (size_t i = 0; i < k; i++) {
        if ((rc = vg__conf_want_scalar(ld, key, items[i], what)))
            return rc;
        if (!ok(items[i]->str, items[i]->len)) {
            char shown[80];
            return vg__conf_fail(ld, items[i], "expected %s in '%s', got '%s'", what, key->str,
                                 vg__conf_show(items[i]->str, shown, sizeof(shown)));
        }
        (*out)[i] = vg__conf_strndup(ld->pool, items[i]->str, items[i]->len);
    }
    *n = k;
    return 0;
}

static bool is_country(const char *s, size_t len)
{
    return len == 2 && s[0] >= 'A' && s[0] <= 'Z' && s[1] >= 'A' && s[1] <= 'Z';
}

static bool is_name(const char *s, size_t len)
{
    if (len == 0 || len >= VG_GEO_REGION_MAX)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-'))
            return false;
    return true;
}

/* --- static ------------------------------------------------------------------- */

static int parse_static(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                        void *obj)
{
    struct vg_conf_placement *p = pl(ld);
    int rc = want_names(ld, key, val, is_name, "a location id like fra", &p->static_locs, &p->n_static);
    if (rc)
        return rc;
    if (p->n_static == 0)
        return vg__conf_fail(ld, val, "'static' needs at least one location");
    p->mode = VG_CONF_PLACEMENT_STATIC;
    return 0;
}

/* --- dynamic ------------------------------------------------------------------ */

static int parse_target(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                        void *obj)
{
    uint64_t ms = 0;
    int rc = vg__conf_want_duration(ld, key, val, 1, MAX_TARGET_MS, &ms);
    pl(ld)->target_us = ms * 1000;
    return rc;
}

static int parse_percentile(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                            void *obj)
{
    return vg__conf_want_u32(ld, key, val, 1, 100, &pl(ld)->percentile);
}

/* "5rps", "0.5rps", "5" (requests per second) -> thousandths. */
static bool parse_rps(const char *s, size_t len, uint64_t *out)
{
    if (len > 3 && memcmp(s + len - 3, "rps", 3) == 0)
        len -= 3;
    if (len == 0 || len > 20 || s[0] == '.' || s[len - 1] == '.')
        return false;
    char buf[24];
    size_t dots = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '.')
            dots++;
        else if (s[i] < '0' || s[i] > '9')
            return false;
        buf[i] = s[i];
    }
    buf[len] = '\0';
    double v = strtod(buf, NULL);
    if (dots > 1 || !isfinite(v) || v > 1e9)
        return false;
    *out = (uint64_t)llround(v * 1000.0);
    return true;
}

static int parse_min_demand(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                            void *obj)
{
    const char *what = "a request rate like 5rps or 0.5rps";
    int rc = vg__conf_want_scalar(ld, key, val, what);
    if (rc)
        return rc;
    if (!parse_rps(val->str, val->len, &pl(ld)->min_demand_mrps)) {
        char shown[80];
        return vg__conf_fail(ld, val, "expected %s for 'min_demand', got '%s'", what,
                             vg__conf_show(val->str, shown, sizeof(shown)));
    }
    return 0;
}

static int parse_min(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                     void *obj)
{
    return vg__conf_want_u32(ld, key, val, 0, MAX_LOCS, &pl(ld)->min);
}

static int parse_max(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                     void *obj)
{
    return vg__conf_want_u32(ld, key, val, 1, MAX_LOCS, &pl(ld)->max);
}

static int parse_scale_in(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                          void *obj)
{
    return vg__conf_want_duration(ld, key, val, 0, VG__CONF_MAX_DURATION_MS, &pl(ld)->scale_in_after_ms);
}

static int parse_dynamic(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                         void *obj)
{
    static const struct vg__conf_key keys[] = {
        {"target", parse_target, false},
        {"percentile", parse_percentile, false},
        {"min_demand", parse_min_demand, false},
        {"min", parse_min, false},
        {"max", parse_max, false},
        {"scale_in_after", parse_scale_in, false},
    };
    pl(ld)->mode = VG_CONF_PLACEMENT_DYNAMIC;
    if (val->type == VG__CONF_NODE_NULL)
        return 0; /* "dynamic:" alone: the defaults */
    return vg__conf_map_walk(ld, val, "'placement.dynamic'", keys, VG_ARRAY_LEN(keys), NULL);
}

/* --- enforce ------------------------------------------------------------------- */

static int parse_allow_countries(struct vg__conf_ld *ld, const struct vg__conf_node *key,
                                 const struct vg__conf_node *val, void *obj)
{
    struct vg_conf_placement *p = pl(ld);
    return want_names(ld, key, val, is_country, "an ISO 3166-1 country code like DE", &p->allow_countries,
                      &p->n_allow_countries);
}

static int parse_deny_countries(struct vg__conf_ld *ld, const struct vg__conf_node *key,
                                const struct vg__conf_node *val, void *obj)
{
    struct vg_conf_placement *p = pl(ld);
    return want_names(ld, key, val, is_country, "an ISO 3166-1 country code like DE", &p->deny_countries,
                      &p->n_deny_countries);
}

static int parse_allow_regions(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                               void *obj)
{
    struct vg_conf_placement *p = pl(ld);
    return want_names(ld, key, val, is_name, "a region like eu", &p->allow_regions, &p->n_allow_regions);
}

static int parse_deny_regions(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                              void *obj)
{
    struct vg_conf_placement *p = pl(ld);
    return want_names(ld, key, val, is_name, "a region like eu", &p->deny_regions, &p->n_deny_regions);
}

static int parse_require_tags(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                              void *obj)
{
    struct vg_conf_placement *p = pl(ld);
    return want_names(ld, key, val, is_name, "a tag like pci", &p->require_tags, &p->n_require_tags);
}

static int parse_residency(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                           void *obj)
{
    return vg__conf_want_bool(ld, key, val, &pl(ld)->residency);
}

static int parse_enforce(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                         void *obj)
{
    static const struct vg__conf_key keys[] = {
        {"allow_countries", parse_allow_countries, false}, {"deny_countries", parse_deny_countries, false},
        {"allow_regions", parse_allow_regions, false},     {"deny_regions", parse_deny_regions, false},
        {"require_tags", parse_require_tags, false},       {"residency", parse_residency, false},
    };
    return vg__conf_map_walk(ld, val, "'placement.enforce'", keys, VG_ARRAY_LEN(keys), NULL);
}

/* --- priority and resources ------------------------------------------------------ */

static int parse_priority(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                          void *obj)
{
    uint32_t v = 0;
    int rc = vg__conf_want_u32(ld, key, val, 0, PRIORITY_MAX, &v);
    pl(ld)->priority = (int32_t)v;
    return rc;
}

/* "250m" millicores, "0.5" or "2" cores. */
static bool parse_cpu_str(const char *s, size_t len, uint64_t *out)
{
    uint64_t v = 0;
    if (len > 1 && s[len - 1] == 'm') {
        if (len - 1 > 9)
            return false;
        for (size_t i = 0; i + 1 < len; i++) {
            if (s[i] < '0' || s[i] > '9')
                return false;
            v = v * 10 + (uint64_t)(s[i] - '0');
        }
        *out = v;
        return v > 0;
    }
    if (!parse_rps(s, len, &v) || memchr(s, 'r', len)) /* the same decimal grammar, x1000 */
        return false;
    *out = v;
    return v > 0;
}

static int parse_cpu(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                     void *obj)
{
    const char *what = "CPU as millicores like 250m or cores like 0.5";
    int rc = vg__conf_want_scalar(ld, key, val, what);
    if (rc)
        return rc;
    uint64_t v;
    if (!parse_cpu_str(val->str, val->len, &v) || v > 1000000) {
        char shown[80];
        return vg__conf_fail(ld, val, "expected %s (at most 1000 cores) for 'cpu', got '%s'", what,
                             vg__conf_show(val->str, shown, sizeof(shown)));
    }
    pl(ld)->cpu_m = v;
    return 0;
}

/* "128Mi", "1Gi", "512Ki" (binary units, as Kubernetes writes them) or
 * whatever vg_parse_size takes ("128m", "1g"). */
static bool parse_mem_str(const char *s, size_t len, uint64_t *out)
{
    char buf[32];
    if (len == 0 || len >= sizeof(buf))
        return false;
    memcpy(buf, s, len);
    buf[len] = '\0';
    if (len > 2 && buf[len - 1] == 'i' && strchr("KMG", buf[len - 2])) {
        unsigned shift = buf[len - 2] == 'K' ? 10 : buf[len - 2] == 'M' ? 20 : 30;
        uint64_t v = 0;
        for (size_t i = 0; i + 2 < len; i++) {
            if (buf[i] < '0' || buf[i] > '9' || i > 8)
                return false;
            v = v * 10 + (uint64_t)(buf[i] - '0');
        }
        *out = v << shift;
        return true;
    }
    return vg_parse_size(buf, out) == 0;
}

static int parse_memory(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                        void *obj)
{
    const char *what = "a memory size like 128Mi or 1Gi (1 MiB to 1 TiB)";
    int rc = vg__conf_want_scalar(ld, key, val, what);
    if (rc)
        return rc;
    uint64_t v = 0;
    if (!parse_mem_str(val->str, val->len, &v) || v < (1u << 20) || v > (1ull << 40)) {
        char shown[80];
        return vg__conf_fail(ld, val, "expected %s for 'memory', got '%s'", what,
                             vg__conf_show(val->str, shown, sizeof(shown)));
    }
    pl(ld)->memory = v;
    return 0;
}

static int parse_resources(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                           void *obj)
{
    static const struct vg__conf_key keys[] = {
        {"cpu", parse_cpu, false},
        {"memory", parse_memory, false},
    };
    return vg__conf_map_walk(ld, val, "'placement.resources'", keys, VG_ARRAY_LEN(keys), NULL);
}

int vg__conf_placement_parse(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                             void *obj)
{
    static const struct vg__conf_key keys[] = {
        {"static", parse_static, false},     {"dynamic", parse_dynamic, false},     {"enforce", parse_enforce, false},
        {"priority", parse_priority, false}, {"resources", parse_resources, false},
    };
    int rc = vg__conf_map_check(ld, val, "'placement'", keys, VG_ARRAY_LEN(keys));
    if (rc)
        return rc;
    const struct vg__conf_node *st = vg__conf_map_get(val, "static"), *dy = vg__conf_map_get(val, "dynamic");
    if (st && dy) {
        const struct vg__conf_node *later = st->line > dy->line ? st : dy;
        return vg__conf_fail(ld, later, "'placement' has both 'static' and 'dynamic': choose one");
    }
    pl(ld)->line = val->line;
    pl(ld)->col = val->col;
    ld->placement = val;
    if ((rc = vg__conf_map_parse(ld, val, keys, VG_ARRAY_LEN(keys), NULL)) != 0)
        return rc;
    if (pl(ld)->mode == VG_CONF_PLACEMENT_NONE) /* enforce or resources alone: dynamic with the defaults */
        pl(ld)->mode = VG_CONF_PLACEMENT_DYNAMIC;
    return 0;
}

/* --- checks against the bundled locations ------------------------------------------ */

static bool listed(const char *s, char *const *items, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(s, items[i]) == 0)
            return true;
    return false;
}

static void join(char *buf, size_t cap, char *const *items, size_t n)
{
    size_t at = (size_t)snprintf(buf, cap, "[");
    for (size_t i = 0; i < n && at < cap; i++)
        at += (size_t)snprintf(buf + at, cap - at, "%s%s", i ? ", " : "", items[i]);
    if (at < cap)
        snprintf(buf + at, cap - at, "]");
}

/* NULL if the enforcements allow loc, else the rule and its values. */
static const char *broken_rule(const struct vg_conf_placement *p, const struct vg_geo_location *l, char *buf,
                               size_t cap)
{
    char list[200];
    if (listed(l->country, p->deny_countries, p->n_deny_countries)) {
        join(list, sizeof(list), p->deny_countries, p->n_deny_countries);
        snprintf(buf, cap, "country %s is in enforce.deny_countries %s", l->country, list);
    } else if (listed(l->region, p->deny_regions, p->n_deny_regions)) {
        join(list, sizeof(list), p->deny_regions, p->n_deny_regions);
        snprintf(buf, cap, "region %s is in enforce.deny_regions %s", l->region, list);
    } else if (p->n_allow_countries && !listed(l->country, p->allow_countries, p->n_allow_countries)) {
        join(list, sizeof(list), p->allow_countries, p->n_allow_countries);
        snprintf(buf, cap, "country %s is not in enforce.allow_countries %s", l->country, list);
    } else if (p->n_allow_regions && !listed(l->region, p->allow_regions, p->n_allow_regions)) {
        join(list, sizeof(list), p->allow_regions, p->n_allow_regions);
        snprintf(buf, cap, "region %s is not in enforce.allow_regions %s", l->region, list);
    } else {
        return NULL;
    }
    return buf;
}

const char *vg_conf_placement_forbids(const struct vg_conf_placement *p, const char *location, char *why, size_t cap)
{
    if (p->mode == VG_CONF_PLACEMENT_NONE || !location)
        return NULL;
    struct vg_geo_set *set = NULL;
    if (vg_geo_set_builtin(&set) != 0)
        return NULL;
    const struct vg_geo_location *l = vg_geo_set_find(set, location);
    const char *r = l ? broken_rule(p, l, why, cap) : NULL;
    vg_geo_set_destroy(set);
    return r;
}

/* The nth item of the list under placement.<a>.<b> (b NULL: placement.<a>). */
static const struct vg__conf_node *item_at(const struct vg__conf_node *pm, const char *a, const char *b, size_t n)
{
    const struct vg__conf_node *v = vg__conf_map_get(pm, a);
    if (v && b && v->type == VG__CONF_NODE_MAP)
        v = vg__conf_map_get(v, b);
    if (v && v->type == VG__CONF_NODE_SEQ && n < v->n_kids)
        return v->kids[n];
    return v ? v : pm;
}

static int check_regions(struct vg__conf_ld *ld, const struct vg_geo_set *set, char *const *regions, size_t n,
                         const char *rule)
{
    const char *known[32];
    size_t n_known = 0;
    for (size_t i = 0; i < vg_geo_set_count(set); i++) {
        const char *r = vg_geo_set_at(set, i)->region;
        bool dup = false;
        for (size_t k = 0; k < n_known; k++)
            dup |= strcmp(known[k], r) == 0;
        if (!dup && n_known < VG_ARRAY_LEN(known))
            known[n_known++] = r;
    }
    for (size_t i = 0; i < n; i++) {
        bool ok = false;
        for (size_t k = 0; k < n_known; k++)
            ok |= strcmp(known[k], regions[i]) == 0;
        if (ok)
            continue;
        const char *hint = vg__conf_suggest(regions[i], known, n_known);
        return vg__conf_fail(ld, item_at(ld->placement, "enforce", rule, i),
                             "app %s: placement.enforce.%s: unknown region '%s'%s%s%s (regions: eu, na, sa, as, oc, "
                             "af, me)",
                             ld->app->name, rule, regions[i], hint ? "; did you mean '" : "", hint ? hint : "",
                             hint ? "'?" : "");
    }
    return 0;
}

static int check_static(struct vg__conf_ld *ld, const struct vg_geo_set *set)
{
    const struct vg_conf_placement *p = &ld->app->placement;
    const char **ids = vg__conf_alloc_array(&ld->tmp, vg_geo_set_count(set) + 1, sizeof(*ids));
    for (size_t i = 0; i < vg_geo_set_count(set); i++)
        ids[i] = vg_geo_set_at(set, i)->id;
    size_t broken = 0, first_broken = 0;
    char why[300];
    for (size_t i = 0; i < p->n_static; i++) {
        const struct vg_geo_location *l = vg_geo_set_find(set, p->static_locs[i]);
        if (!l) {
            const char *hint = vg__conf_suggest(p->static_locs[i], ids, vg_geo_set_count(set));
            return vg__conf_fail(ld, item_at(ld->placement, "static", NULL, i),
                                 "app %s: placement.static: unknown location '%s'%s%s%s", ld->app->name,
                                 p->static_locs[i], hint ? "; did you mean '" : "", hint ? hint : "",
                                 hint ? "'?" : " (see data/locations.csv)");
        }
        if (broken_rule(p, l, why, sizeof(why)) && broken++ == 0)
            first_broken = i;
    }
    if (broken == 0)
        return 0;
    const struct vg_geo_location *l = vg_geo_set_find(set, p->static_locs[first_broken]);
    broken_rule(p, l, why, sizeof(why));
    if (broken == p->n_static && p->n_static > 1)
        return vg__conf_fail(ld, vg__conf_map_get(ld->placement, "static"),
                             "app %s: placement.static lies entirely outside the enforcements: every location breaks "
                             "one (%s: %s)",
                             ld->app->name, l->id, why);
    return vg__conf_fail(ld, item_at(ld->placement, "static", NULL, first_broken),
                         "app %s: placement.static location %s breaks an enforcement: %s", ld->app->name, l->id, why);
}

static int check_dynamic(struct vg__conf_ld *ld, const struct vg_geo_set *set)
{
    const struct vg_conf_placement *p = &ld->app->placement;
    const struct vg__conf_node *dy = vg__conf_map_get(ld->placement, "dynamic");
    const struct vg__conf_node *min_n = dy && dy->type == VG__CONF_NODE_MAP ? vg__conf_map_get(dy, "min") : NULL;
    if (p->min > p->max)
        return vg__conf_fail(ld, min_n ? min_n : dy, "app %s: placement.dynamic: min %u is above max %u", ld->app->name,
                             p->min, p->max);
    size_t allowed = 0;
    char why[300];
    for (size_t i = 0; i < vg_geo_set_count(set); i++)
        allowed += broken_rule(p, vg_geo_set_at(set, i), why, sizeof(why)) == NULL;
    if (allowed == 0)
        return vg__conf_fail(ld, vg__conf_map_get(ld->placement, "enforce"),
                             "app %s: placement.enforce allows none of the %zu known locations", ld->app->name,
                             vg_geo_set_count(set));
    if (p->min > allowed)
        return vg__conf_fail(ld, min_n ? min_n : dy,
                             "app %s: placement.dynamic: min %u is above the %zu known locations that "
                             "placement.enforce allows",
                             ld->app->name, p->min, allowed);
    return 0;
}

int vg__conf_placement_check(struct vg__conf_ld *ld)
{
    if (!ld->placement)
        return 0;
    struct vg_geo_set *set = NULL;
    if (vg_geo_set_builtin(&set) != 0)
        return vg__conf_fail(ld, ld->placement, "the bundled location list cannot be read");
    const struct vg_conf_placement *p = &ld->app->placement;
    int rc = check_regions(ld, set, p->allow_regions, p->n_allow_regions, "allow_regions");
    if (rc == 0)
        rc = check_regions(ld, set, p->deny_regions, p->n_deny_regions, "deny_regions");
    if (rc == 0 && p->mode == VG_CONF_PLACEMENT_STATIC)
        rc = check_static(ld, set);
    if (rc == 0 && p->mode != VG_CONF_PLACEMENT_STATIC)
        rc = check_dynamic(ld, set);
    vg_geo_set_destroy(set);
    return rc;
}
