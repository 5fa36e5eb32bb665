/* Simulated worlds for `verge sim` and the benchmark: towers and client
 * areas scattered around real cities, apps with a mix of policies, and
 * demand with a daily cycle (by each area's local solar time) and flash
 * crowds. Pure given the seed: its own PRNG, no clock. */
#include "sched/sched_int.h"

#include <math.h>
#include <string.h>

/* --- PRNG: xoshiro256** seeded through splitmix64 ------------------------- */

static uint64_t splitmix(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void vg_sched_rng_seed(struct vg_sched_rng *r, uint64_t seed)
{
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix(&seed);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

uint64_t vg_sched_rng_next(struct vg_sched_rng *r)
{
    uint64_t *s = r->s, out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

uint64_t vg_sched_rng_below(struct vg_sched_rng *r, uint64_t n)
{
    VG_ASSERT(n > 0);
    uint64_t lim = UINT64_MAX - UINT64_MAX % n, v; /* no modulo bias */
    do
        v = vg_sched_rng_next(r);
    while (v >= lim);
    return v % n;
}

double vg_sched_rng_unit(struct vg_sched_rng *r)
{
    return (double)(vg_sched_rng_next(r) >> 11) * (1.0 / 9007199254740992.0);
}

/* --- the world ---------------------------------------------------------------- */

#define FLASH_MAX 2 /* flash crowds per app */

struct flash {
    uint32_t start, len, city, factor;
};

struct sim_app {
    uint32_t first, n;        /* its demand entries in base[] */
    const char *countries[2]; /* enforcement lists point here */
    char cc[2][3];
    const char *regions[1];
    uint32_t statics[4];
    struct flash flash[FLASH_MAX];
    size_t n_flash;
};

struct vg_sched_sim {
    struct vg_sched_world *w;
    struct vg_sched_app *apps;
    struct sim_app *sa;
    size_t n_apps;
    struct vg_sched_demand_entry *base, *cur; /* base demand, and the current step's */
    uint32_t *area_city;
    struct vg_sched_demand *demand;
    size_t n_entries;
    uint32_t pci;
};

/* A point about km_sd km around a city (normal offsets, by Box-Muller). */
static void scatter(struct vg_sched_rng *r, const struct vg_sched_sim_point *c, double km_sd, double *lat, double *lon)
{
    double u1 = vg_sched_rng_unit(r), u2 = vg_sched_rng_unit(r);
    double m = sqrt(-2.0 * log(u1 > 1e-12 ? u1 : 1e-12));
    double dy = m * cos(2 * M_PI * u2) * km_sd, dx = m * sin(2 * M_PI * u2) * km_sd;
    double la = c->lat + dy / 111.0, coslat = cos(c->lat * M_PI / 180.0);
    double lo = c->lon + dx / (111.0 * (coslat < 0.1 ? 0.1 : coslat));
    *lat = la > 89 ? 89 : la < -89 ? -89 : la;
    *lon = lo > 180 ? lo - 360 : lo < -180 ? lo + 360 : lo;
}

/* Cities by weight: a Zipf-like population, shuffled so the big ones are
 * anywhere in the list. */
static double *city_weights(struct vg_sched_rng *r, size_t n)
{
    double *wt = vg_xmalloc(n * sizeof(*wt));
    for (size_t i = 0; i < n; i++)
        wt[i] = 1.0 / pow((double)(i + 1), 0.7);
    for (size_t i = n; i > 1; i--) {
        size_t j = vg_sched_rng_below(r, i);
        double t = wt[i - 1];
        wt[i - 1] = wt[j];
        wt[j] = t;
    }
    return wt;
}

static size_t pick_weighted(struct vg_sched_rng *r, const double *wt, size_t n, double total)
{
    double x = vg_sched_rng_unit(r) * total;
    for (size_t i = 0; i < n; i++)
        if ((x -= wt[i]) < 0)
            return i;
    return n - 1;
}

static void make_locations(struct vg_sched_rng *r, const struct vg_sched_sim_point *cities, size_t n_cities,
                           const double *wt, double total, struct vg_sched_location *locs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const struct vg_sched_sim_point *c = &cities[pick_weighted(r, wt, n_cities, total)];
        struct vg_sched_location *l = &locs[i];
        memset(l, 0, sizeof(*l));
        snprintf(l->id, sizeof(l->id), "t%05u", (unsigned)i);
        memcpy(l->country, c->country, 3);
        memcpy(l->region, c->region, sizeof(l->region));
        scatter(r, c, 80, &l->lat, &l->lon);
        l->tags = (vg_sched_rng_below(r, 10) == 0 ? 1u : 0) | (vg_sched_rng_below(r, 20) == 0 ? 2u : 0);
        /* cell-site compute is small: a few apps per tower */
        l->cpu_m = 1000 + 500 * (uint32_t)vg_sched_rng_below(r, 7);
        l->mem_mib = 2048 * (1 + (uint32_t)vg_sched_rng_below(r, 4));
        l->slots = 2 + (uint32_t)vg_sched_rng_below(r, 5);
        l->cost = 1 + (uint32_t)vg_sched_rng_below(r, 10);
    }
}

static void make_areas(struct vg_sched_rng *r, const struct vg_sched_sim_point *cities, size_t n_cities,
                       const double *wt, double total, struct vg_sched_area *areas, uint32_t *area_city, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        size_t ci = i < n_cities ? i : pick_weighted(r, wt, n_cities, total); /* every city has one */
        const struct vg_sched_sim_point *c = &cities[ci];
        struct vg_sched_area *a = &areas[i];
        memset(a, 0, sizeof(*a));
        memcpy(a->country, c->country, 3);
        memcpy(a->region, c->region, sizeof(a->region));
        scatter(r, c, 60, &a->lat, &a->lon);
        area_city[i] = (uint32_t)ci;
    }
}

/* --- apps -------------------------------------------------------------------- */

enum scope { SCOPE_GLOBAL, SCOPE_REGION, SCOPE_COUNTRY };

/* Does area a belong to the app's home (scope, region, country)? */
static bool at_home(const struct vg_sched_world *w, uint32_t a, enum scope sc, const char *region, const char *cc)
{
    const struct vg_sched_area *ar = &w->areas[a];
    return sc == SCOPE_GLOBAL || (sc == SCOPE_REGION && strcmp(ar->region, region) == 0) ||
           (sc == SCOPE_COUNTRY && strcmp(ar->country, cc) == 0);
}

static void make_enforce(struct vg_sched_sim *s, struct vg_sched_rng *r, uint32_t i, enum scope *sc,
                         const char **region, const char **cc)
{
    struct vg_sched_app *app = &s->apps[i];
    struct sim_app *sa = &s->sa[i];
    unsigned roll = (unsigned)vg_sched_rng_below(r, 100);
    if (roll < 15) { /* EU only, data stays in the EU */
        *sc = SCOPE_REGION;
        *region = "eu";
        sa->regions[0] = "eu";
        app->enforce.allow_regions = sa->regions;
        app->enforce.n_allow_regions = 1;
        app->enforce.residency = true;
    } else if (roll < 25) { /* one country */
        *sc = SCOPE_COUNTRY;
        memcpy(sa->cc[0], *cc, 3);
        sa->countries[0] = sa->cc[0];
        app->enforce.allow_countries = sa->countries;
        app->enforce.n_allow_countries = 1;
    } else if (roll < 30) { /* PCI: only tagged towers */
        app->enforce.require_tags = s->pci;
    } else if (roll < 35) { /* not in one country */
        memcpy(sa->cc[1], *cc, 3);
        sa->countries[1] = sa->cc[1];
        app->enforce.deny_countries = &sa->countries[1];
        app->enforce.n_deny_countries = 1;
        *sc = SCOPE_GLOBAL;
    }
}

/* Two to four towers the app may use, near its home, for a static app. */
static void make_static(struct vg_sched_sim *s, struct vg_sched_rng *r, uint32_t i)
{
    struct vg_sched_app *app = &s->apps[i];
    struct sim_app *sa = &s->sa[i];
    struct vg__sched_rules rules;
    vg__sched_rules_compile(s->w, app, &rules);
    size_t want = 2 + vg_sched_rng_below(r, 3), n = 0;
    for (size_t tries = 0; tries < 2000 && n < want && sa->n; tries++) {
        uint32_t a = s->base[sa->first + vg_sched_rng_below(r, sa->n)].area;
        const struct vg__sched_near *near = &s->w->near[(size_t)a * VG_SCHED_NEAR];
        uint32_t l = near[vg_sched_rng_below(r, s->w->n_near[a])].loc;
        bool dup = false;
        for (size_t k = 0; k < n; k++)
            dup |= sa->statics[k] == l;
        if (!dup && vg__sched_rules_allow(s->w, &rules, l))
            sa->statics[n++] = l;
    }
    if (n == 0) { /* nothing suitable near: leave it dynamic */
        app->mode = VG_SCHED_DYNAMIC;
        return;
    }
    app->mode = VG_SCHED_STATIC;
    app->static_locs = sa->statics;
    app->n_static = n;
}

static void make_app(struct vg_sched_sim *s, struct vg_sched_rng *r, uint32_t i, char (*names)[16], size_t *cap_entries)
{
    struct vg_sched_app *app = &s->apps[i];
    struct sim_app *sa = &s->sa[i];
    const struct vg_sched_world *w = s->w;
    snprintf(names[i], 16, "app%04u", i);
    app->name = names[i];
    app->priority = (int)vg_sched_rng_below(r, 10);
    app->cpu_m = 100 + 50 * (uint32_t)vg_sched_rng_below(r, 19);
    app->mem_mib = 64 * (1 + (uint32_t)vg_sched_rng_below(r, 16));
    app->mode = VG_SCHED_DYNAMIC;
    static const uint32_t targets[] = {10000, 20000, 30000, 50000}, pcts[] = {90, 95, 99};
    app->target_us = targets[vg_sched_rng_below(r, 4)];
    app->percentile = pcts[vg_sched_rng_below(r, 3)];
    app->min_demand_mrps = 1000 * (1 + (uint32_t)vg_sched_rng_below(r, 5));
    app->min_locs = 1;
    app->max_locs = 3 + (uint32_t)vg_sched_rng_below(r, 18);
    app->scale_in_steps = 3 + (uint32_t)vg_sched_rng_below(r, 4);
    /* home: where its users are */
    const struct vg_sched_area *seed_area = &w->areas[vg_sched_rng_below(r, w->n_areas)];
    unsigned sroll = (unsigned)vg_sched_rng_below(r, 10);
    enum scope sc = sroll < 3 ? SCOPE_GLOBAL : sroll < 8 ? SCOPE_REGION : SCOPE_COUNTRY;
    const char *region = seed_area->region, *cc = seed_area->country;
    make_enforce(s, r, i, &sc, &region, &cc);
    size_t want = sc == SCOPE_GLOBAL ? 60 + vg_sched_rng_below(r, 140) : 20 + vg_sched_rng_below(r, 60);
    double total_rps = 20.0 * pow(10.0, 2.5 * vg_sched_rng_unit(r)); /* 20 to ~6,000 rps */
    sa->first = (uint32_t)s->n_entries;
    for (size_t tries = 0; tries < 20 * want && sa->n < want; tries++) {
        uint32_t a = (uint32_t)vg_sched_rng_below(r, w->n_areas);
        if (!at_home(w, a, sc, region, cc))
            continue;
        if (s->n_entries == *cap_entries) {
            *cap_entries *= 2;
            s->base = vg_xrealloc(s->base, *cap_entries * sizeof(*s->base));
        }
        double share = (0.2 + vg_sched_rng_unit(r)) / (double)want;
        s->base[s->n_entries++] = (struct vg_sched_demand_entry){a, (uint32_t)(total_rps * share * 1000.0)};
        sa->n++;
    }
    if (vg_sched_rng_below(r, 10) < 2)
        make_static(s, r, i);
    sa->n_flash = vg_sched_rng_below(r, 10) < 3 ? 1 + vg_sched_rng_below(r, FLASH_MAX) : 0;
    for (size_t f = 0; f < sa->n_flash && sa->n; f++)
        sa->flash[f] = (struct flash){(uint32_t)vg_sched_rng_below(r, 150), 3 + (uint32_t)vg_sched_rng_below(r, 10),
                                      s->area_city[s->base[sa->first + vg_sched_rng_below(r, sa->n)].area],
                                      10 + (uint32_t)vg_sched_rng_below(r, 20)};
}

int vg_sched_sim_create(const struct vg_sched_sim_point *cities, size_t n_cities, size_t n_locs, size_t n_apps,
                        uint64_t seed, struct vg_sched_sim **out)
{
    if (n_cities == 0 || n_locs == 0 || n_locs > 1000000 || n_apps > 100000)
        return VG_EINVAL;
    struct vg_sched_rng r;
    vg_sched_rng_seed(&r, seed);
    double *wt = city_weights(&r, n_cities), total = 0;
    for (size_t i = 0; i < n_cities; i++)
        total += wt[i];
    size_t n_areas = n_locs / 4 > n_cities ? n_locs / 4 : n_cities;
    struct vg_sched_location *locs = vg_xmalloc(n_locs * sizeof(*locs));
    struct vg_sched_area *areas = vg_xmalloc(n_areas * sizeof(*areas));
    struct vg_sched_sim *s = vg_xcalloc(1, sizeof(*s));
    s->area_city = vg_xmalloc(n_areas * sizeof(*s->area_city));
    make_locations(&r, cities, n_cities, wt, total, locs, n_locs);
    make_areas(&r, cities, n_cities, wt, total, areas, s->area_city, n_areas);
    static const char *const tags[] = {"pci", "gpu"};
    int rc = vg_sched_world_create(locs, n_locs, areas, n_areas, tags, 2, &s->w);
    free(locs);
    free(areas);
    free(wt);
    if (rc) {
        free(s->area_city);
        free(s);
        return rc;
    }
    s->pci = vg_sched_world_tag(s->w, "pci");
    s->n_apps = n_apps;
    s->apps = vg_xcalloc(n_apps + 1, sizeof(*s->apps));
    s->sa = vg_xcalloc(n_apps + 1, sizeof(*s->sa));
    char(*names)[16] = vg_xcalloc(n_apps + 1, 16);
    size_t cap = 1024;
    s->base = vg_xmalloc(cap * sizeof(*s->base));
    for (uint32_t i = 0; i < n_apps; i++)
        make_app(s, &r, i, names, &cap);
    s->cur = vg_xmalloc((s->n_entries + 1) * sizeof(*s->cur));
    s->demand = vg_xcalloc(n_apps + 1, sizeof(*s->demand));
    /* the names' block is freed through the first app's name */
    *out = s;
    return 0;
}

void vg_sched_sim_destroy(struct vg_sched_sim *s)
{
    if (!s)
        return;
    vg_sched_world_destroy(s->w);
    if (s->n_apps)
        free((void *)s->apps[0].name);
    free(s->apps);
    free(s->sa);
    free(s->base);
    free(s->cur);
    free(s->area_city);
    free(s->demand);
    free(s);
}

const struct vg_sched_world *vg_sched_sim_world(const struct vg_sched_sim *s)
{
    return s->w;
}

int vg_sched_sim_set_sites(struct vg_sched_sim *s, double cell_deg)
{
    return vg_sched_world_set_sites(s->w, cell_deg);
}

const struct vg_sched_app *vg_sched_sim_apps(const struct vg_sched_sim *s, size_t *n)
{
    *n = s->n_apps;
    return s->apps;
}

/* --- demand over time ---------------------------------------------------------- */

/* Busy in the local afternoon, quiet before dawn: 0.2 .. 1.0. */
static double daily(double lon, uint32_t step)
{
    double utc_h = fmod(step * (double)VG_SCHED_SIM_STEP_MIN / 60.0, 24.0);
    double local = fmod(utc_h + lon / 15.0 + 48.0, 24.0);
    return 0.2 + 0.8 * (0.5 - 0.5 * cos(2 * M_PI * (local - 4.0) / 24.0));
}

static uint32_t flash_factor(const struct vg_sched_sim *s, const struct sim_app *sa, uint32_t area, uint32_t step)
{
    uint32_t f = 1;
    for (size_t k = 0; k < sa->n_flash; k++) {
        const struct flash *fl = &sa->flash[k];
        if (step >= fl->start && step < fl->start + fl->len && s->area_city[area] == fl->city)
            f *= fl->factor;
    }
    return f;
}

const struct vg_sched_demand *vg_sched_sim_demand(struct vg_sched_sim *s, uint32_t step)
{
    for (size_t i = 0; i < s->n_apps; i++) {
        const struct sim_app *sa = &s->sa[i];
        for (uint32_t k = sa->first; k < sa->first + sa->n; k++) {
            uint32_t a = s->base[k].area;
            double v = s->base[k].mrps * daily(s->w->areas[a].lon, step) * flash_factor(s, sa, a, step);
            s->cur[k] = (struct vg_sched_demand_entry){a, v > 4e9 ? 4000000000u : (uint32_t)v};
        }
        s->demand[i] = (struct vg_sched_demand){&s->cur[sa->first], sa->n};
    }
    return s->demand;
}

size_t vg_sched_sim_flash_apps(const struct vg_sched_sim *s, uint32_t step, uint32_t *apps, size_t cap)
{
    size_t n = 0;
    for (size_t i = 0; i < s->n_apps && n < cap; i++)
        for (size_t k = 0; k < s->sa[i].n_flash; k++)
            if (s->sa[i].flash[k].start == step || s->sa[i].flash[k].start + s->sa[i].flash[k].len == step) {
                apps[n++] = (uint32_t)i;
                break;
            }
    return n;
}
