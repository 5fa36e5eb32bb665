/* sched internals shared by the sched_*.c files. */
#ifndef VG_SCHED_INT_H
#define VG_SCHED_INT_H

#include "geo/geo.h"
#include "sched/sched.h"

#define VG__SCHED_WORLD_MAGIC 0x5c4ed001u
#define VG__SCHED_PLAN_MAGIC 0x5c4ed002u
#define VG__SCHED_REGIONS_MAX 255
#define VG__SCHED_HUBS_PER_COUNTRY 4
/* Nearest sites kept per client area. Fewer than the nearest locations:
 * eight sites reach farther than sixteen towers (measured with verge
 * sim, docs/decisions.md: eight against sixteen, 0.2-0.3 points less
 * demand within target, churn 12-24% lower, a quarter less time). */
#define VG__SCHED_SITE_NEAR 8

/* One of an area's nearest locations. */
struct vg__sched_near {
    uint32_t loc, rtt_us;
};

/* What placement reads of a location, packed (24 bytes, not the 88 of
 * struct vg_sched_location): each plan starts its per-location records
 * from it (struct vg__sched_loc), and the enforcements are checked on it
 * outside placement's loop. */
struct vg__sched_lhot {
    uint32_t tags, cost, cpu_m, mem_mib, slots;
    uint16_t country;
    uint8_t region, pad;
};

struct vg__sched_rtt_ovr {
    uint64_t key; /* area << 32 | loc, 0 = empty slot (key + 1 stored) */
    uint32_t rtt_us;
};

struct vg_sched_world {
    uint32_t magic;
    struct vg_sched_location *locs;
    size_t n_locs;
    struct vg_sched_area *areas;
    size_t n_areas;
    char tags[VG_SCHED_TAGS_MAX][24];
    size_t n_tags;
    char regions[VG__SCHED_REGIONS_MAX][VG_SCHED_REGION_MAX];
    size_t n_regions;
    struct vg__sched_lhot *hot; /* n_locs */
    uint16_t *loc_country;      /* packed: 26 * (c0 - 'A') + (c1 - 'A') */
    uint8_t *loc_region, *area_region;
    struct vg_geo_xyz *loc_xyz, *area_xyz; /* for distances without trigonometry */
    struct vg__sched_near *near;           /* n_areas x VG_SCHED_NEAR, by rtt then loc */
    uint8_t *n_near;
    uint32_t *id_slots; /* open addressing over location ids: index + 1, 0 empty */
    size_t id_cap;
    uint32_t *hubs; /* a few locations per country: fallbacks for far areas */
    size_t n_hubs;
    struct vg__sched_rtt_ovr *ovr;
    size_t n_ovr, ovr_cap;
    /* Sites: the locations of one grid cell (site_deg degrees; 0: every
     * location is its own) in one country and region. Dynamic placement
     * chooses sites, then a location in each (sched_place.c): towers a
     * few kilometres apart differ by microseconds, and an area's nearest
     * towers are all in one or two sites, which hid every farther site
     * from it. */
    double site_deg;
    size_t n_sites;
    uint32_t *loc_site;     /* n_locs */
    uint32_t *site_start;   /* n_sites + 1: site s is site_locs[site_start[s], site_start[s + 1]) */
    uint32_t *site_locs;    /* ascending within a site */
    uint32_t *site_cost;    /* the lowest cost of its locations */
    uint16_t *site_country; /* its locations' (all the same) */
    uint8_t *site_region;
    struct vg_geo_xyz *site_xyz;  /* the points of site_locs, in its order */
    uint32_t *site_tags;          /* and their tags */
    uint32_t *site_tags_any;      /* per site: the tags any of its locations has */
    uint64_t sites_gen;           /* bumped by each grouping: a plan's site records are of one */
    struct vg__sched_near *snear; /* n_areas x snear_k: the nearest sites (loc: the site), by the latency
                                     of their nearest location; near itself when site_deg is 0 */
    uint8_t *n_snear, snear_k;
    /* The areas whose nearest sites hold each site: site_areas[site_areas_at[s], site_areas_at[s + 1]) (a
     * parallel placement's repairs); NULL while a measured RTT has moved a list since the grouping */
    uint32_t *site_areas_at, *site_areas;
    /* A new plan's records before anything is held (n_locs + 1 and n_sites + 1): copied, not computed */
    struct vg__sched_loc *loc0;
    struct vg__sched_site *site0;
};

/* The areas whose nearest sites hold each site, as in the world
 * (counting sort of the lists); the caller frees both. */
void vg__sched_site_areas(const struct vg_sched_world *w, uint32_t **at, uint32_t **areas);

/* Memory for n items of size bytes, aligned to a cache line (an item of
 * 32 or 64 bytes then never straddles two); freed with free. Aborts when
 * out of memory, as vg_xmalloc. The calloc one is zeroed. */
void *vg__sched_alloc_lines(size_t n, size_t size);
void *vg__sched_calloc_lines(size_t n, size_t size);

/* The site's locations. */
static inline const uint32_t *vg__sched_site_locs(const struct vg_sched_world *w, uint32_t s, uint32_t *n)
{
    *n = w->site_start[s + 1] - w->site_start[s];
    return &w->site_locs[w->site_start[s]];
}

#define VG__SCHED_COUNTRIES (26 * 26)
/* 0xffff for a code that is not two upper-case letters */
uint16_t vg__sched_country(const char *cc);
/* Region index in the world, or -1. */
int vg__sched_region(const struct vg_sched_world *w, const char *name);

/* A policy compiled against a world: O(1) checks per location. */
struct vg__sched_rules {
    uint8_t allow_c[VG__SCHED_COUNTRIES / 8 + 1], deny_c[VG__SCHED_COUNTRIES / 8 + 1];
    uint8_t allow_r[32], deny_r[32];
    bool any_allow_c, any_allow_r;
    uint32_t tags;
    bool residency;
    bool any; /* an allow or deny list, or required tags: without, every location is allowed */
};
void vg__sched_rules_compile(const struct vg_sched_world *w, const struct vg_sched_app *app, struct vg__sched_rules *r);
/* The checks on a location's country, region and tags (from the world's
 * packed record or the plan's copy). */
static inline bool vg__sched_rules_allow_at(const struct vg__sched_rules *r, uint32_t tags, unsigned cc, unsigned rg)
{
    if (!r->any)
        return true;
    if ((r->deny_c[cc / 8] >> (cc % 8) & 1) || (r->deny_r[rg / 8] >> (rg % 8) & 1))
        return false;
    if (r->any_allow_c && !(r->allow_c[cc / 8] >> (cc % 8) & 1))
        return false;
    if (r->any_allow_r && !(r->allow_r[rg / 8] >> (rg % 8) & 1))
        return false;
    return (tags & r->tags) == r->tags;
}

/* Inline: placement asks it of every location it looks at. */
static inline bool vg__sched_rules_allow(const struct vg_sched_world *w, const struct vg__sched_rules *r, uint32_t loc)
{
    const struct vg__sched_lhot *h = &w->hot[loc];
    return vg__sched_rules_allow_at(r, h->tags, h->country, h->region);
}

/* One app's share of a plan. */
struct vg__sched_app_plan {
    void *block;    /* when set, locs, below, why and served live in it (vg__sched_app_plan_alloc) */
    uint32_t *locs; /* ascending */
    uint16_t *below;
    size_t n_locs;
    struct vg_sched_why *why;
    size_t n_why;
    struct vg_sched_served *served;
    size_t n_served;
    struct vg_sched_app_stats stats; /* without p50 and p95: vg_sched_plan_app_stats computes them */
};

/* One app held at one location: the plan's pool of them, a list per
 * location through next, the newest first (VG_SCHED_NONE ends it). One
 * pool, not an array per location: a placement holds thousands, and each
 * first hold at a location was an allocation. */
struct vg__sched_held {
    uint32_t app, next;
};

/* A location as placement sees it, packed (32 bytes, two to a cache
 * line): the capacity left, the first of its highest-priority holders
 * (VG_SCHED_NONE when none: what a capacity record names) and that
 * holder's priority, its cost, and a copy of what the enforcements check
 * (the world's record of it is a second cache miss per location looked
 * at). During a parallel placement one thread commits (writes) while
 * another places speculatively (reads): the capacity and holder fields
 * are read and written with vg__sched_ld/vg__sched_st (relaxed atomics,
 * plain moves on x86); what a speculative reader saw is validated at
 * commit (sched_place.c). */
struct vg__sched_loc {
    uint32_t cpu_free, mem_free, slots_free, top;
    uint32_t cost;
    int32_t top_prio; /* top's priority, when top is not VG_SCHED_NONE */
    uint32_t tags;
    uint16_t country;
    uint8_t region, pad;
};

/* The site record's rule (struct vg__sched_site): of a site's locations
 * with a slot free, the one with the most CPU free, then memory, then
 * the first; true when l beats the best so far (have: there is one). */
static inline bool vg__sched_witness_better(const struct vg__sched_loc *l, bool have, uint32_t cpu, uint32_t mem)
{
    return l->slots_free >= 1 && (!have || l->cpu_free > cpu || (l->cpu_free == cpu && l->mem_free > mem));
}

static inline uint32_t vg__sched_ld(const uint32_t *p)
{
    return __atomic_load_n(p, __ATOMIC_RELAXED);
}

static inline void vg__sched_st(uint32_t *p, uint32_t v)
{
    __atomic_store_n(p, v, __ATOMIC_RELAXED);
}

/* The app fits in what is left at l (placement without preemption). */
static inline bool vg__sched_fits(const struct vg__sched_loc *l, const struct vg_sched_app *app)
{
    return vg__sched_ld(&l->slots_free) >= 1 && vg__sched_ld(&l->cpu_free) >= app->cpu_m &&
           vg__sched_ld(&l->mem_free) >= app->mem_mib;
}

/* Placement's per-location scratch: seen for the app being placed when
 * mark is the placing context's stamp, and its candidate there (no
 * per-app clearing: marks are epochs). A plan keeps one for sequential
 * placements and updates; each extra thread of a parallel one has its
 * own. */
struct vg__sched_seen {
    uint32_t mark, slot;
};

/* A site as placement sees it (the plan's, 32 bytes, two to a cache
 * line, aligned): of its locations with a slot free, the one with the
 * most CPU free (VG_SCHED_NONE: none has a slot) and a copy of that
 * location's free CPU and memory, so that most sites are found usable
 * without a look at their locations' records (a cache miss each); then a
 * copy of what the enforcements check of the site and its cost (the
 * world's arrays of them were four more cache lines per site looked at).
 * The first three are kept by hold and release and read with
 * vg__sched_ld (a parallel placement's readers are checked at commit
 * against the locations that changed, and every change here is a
 * location's). */
struct vg__sched_site {
    uint32_t loc, cpu_free, mem_free;
    uint32_t first;    /* the site's first location (never changes, nor do the rest) */
    uint32_t tags_any; /* the tags any of its locations has */
    uint32_t cost;     /* the lowest of its locations' */
    uint16_t country;
    uint8_t region, pad;
    uint32_t pad2;
};

struct vg_sched_plan {
    uint32_t magic;
    size_t n_apps, n_locs;
    struct vg__sched_app_plan *apps;
    struct vg__sched_loc *loc;   /* n_locs */
    struct vg__sched_seen *seen; /* n_locs */
    uint32_t *held_head;         /* n_locs: which apps run at each location, its list in held */
    struct vg__sched_held *held;
    uint32_t n_held, cap_held, held_free; /* held_free: entries given back, a list through next */
    struct vg__sched_site *site;          /* n_sites of the world's grouping sites_gen */
    const struct vg_sched_world *w;       /* the world it was made for (site membership) */
    uint64_t sites_gen;
    uint32_t stamp; /* the last mark handed out in seen */
};

struct vg_sched_plan *vg__sched_plan_new(const struct vg_sched_world *w, size_t n_apps);
/* A new mark for the next app's placement in p->seen: a location whose
 * mark equals it has been seen for that app (no per-app clearing). */
uint32_t vg__sched_plan_stamp(struct vg_sched_plan *p);
/* An app's share of a plan in one allocation (placement makes one per app
 * placed): room for n_locs locations (and their counters, zeroed),
 * n_why records and n_served served entries; the counts are zero. */
void vg__sched_app_plan_alloc(struct vg__sched_app_plan *ap, size_t n_locs, size_t n_why, size_t n_served);
/* Frees an app's share of a plan (not its capacity: see release). */
void vg__sched_app_plan_free(struct vg__sched_app_plan *ap);
void vg__sched_plan_hold(struct vg_sched_plan *p, const struct vg_sched_app *apps, uint32_t app, uint32_t loc);
void vg__sched_plan_release(struct vg_sched_plan *p, const struct vg_sched_app *apps, uint32_t app);
/* The nearest chosen location the i-th demand entry's area may use and
 * its latency, when the caller knows them for certain (they must be what
 * the search over every chosen location would find): true and *loc,
 * *rtt_us set; else false. */
typedef bool (*vg__sched_known_fn)(void *arg, size_t i, uint32_t *loc, uint32_t *rtt_us);
/* vg__sched_plan_serve's scratch, kept by the caller from app to app
 * (zeroed to start; freed with vg__sched_serve_scratch_free). */
struct vg__sched_serve_scratch {
    struct vg_geo_xyz *pt;
    double *c2;
    uint32_t *pend;
    size_t cap_pt, cap_c2, cap_pend;
};
void vg__sched_serve_scratch_free(struct vg__sched_serve_scratch *s);
/* Computes where each area's demand goes (into ap->served: room for d->n
 * made by the caller) and the app's stats. known (may be NULL) spares the
 * search where the caller has the answer. */
void vg__sched_plan_serve(const struct vg_sched_world *w, const struct vg_sched_app *app,
                          const struct vg_sched_demand *d, struct vg__sched_app_plan *ap, vg__sched_known_fn known,
                          void *arg, struct vg__sched_serve_scratch *sc);
/* Squared chord between an area and a location (unit sphere): latency
 * grows with it when no RTT is measured. Inline: the hub fallback asks it
 * of every usable hub. */
static inline double vg__sched_chord2(const struct vg_sched_world *w, uint32_t area, uint32_t loc)
{
    const struct vg_geo_xyz *a = &w->area_xyz[area], *b = &w->loc_xyz[loc];
    double dx = a->x - b->x, dy = a->y - b->y, dz = a->z - b->z;
    return dx * dx + dy * dy + dz * dz;
}

/* The latency model's round trip for a squared chord (what
 * vg_sched_rtt_us gives without measured RTTs): for callers that compared
 * chords first. */
static inline uint32_t vg__sched_rtt_chord2(double chord2)
{
    uint64_t us = vg_geo_rtt_us(vg_geo_distance_km_chord2(chord2));
    return us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
}

#endif
