/* sched: the placement engine — which locations run which app.
 *
 * Pure: no I/O, no clocks, no global state. The same inputs (world, apps,
 * demand, previous plan) give the same plan, byte for byte: decisions are
 * made on integers (µs, milli-requests/s), ties broken by cost then index.
 * The control plane and `verge sim` run the same code.
 *
 * A world is the location inventory and the client areas demand comes
 * from, indexed once (a grid, the nearest locations of every area, the
 * latency of each such pair from src/geo's model or a measured RTT). A plan
 * is one placement of every app, with the capacity it uses, the hysteresis
 * counters the next placement reads, and an explanation record for every
 * location chosen and every candidate rejected. */
#ifndef VG_SCHED_H
#define VG_SCHED_H

#include "base/base.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#define VG_SCHED_ID_MAX 16     /* location ids: as src/geo's */
#define VG_SCHED_REGION_MAX 16 /* region names: as src/geo's */
#define VG_SCHED_TAGS_MAX 32   /* distinct tag names in one world (a bitmask) */
#define VG_SCHED_NEAR 16       /* nearest locations kept per client area (candidate pruning) */
#define VG_SCHED_NONE UINT32_MAX

struct vg_sched_location {
    char id[VG_SCHED_ID_MAX];
    char country[3]; /* ISO 3166-1 alpha-2 */
    char region[VG_SCHED_REGION_MAX];
    double lat, lon;
    uint32_t tags;                  /* bits over the world's tag names */
    uint32_t cpu_m, mem_mib, slots; /* capacity: CPU millicores, memory MiB, apps */
    uint32_t cost;                  /* relative cost of running one app there */
};

/* Where demand comes from: a point with its country and region (residency
 * is decided on the area's region). */
struct vg_sched_area {
    double lat, lon;
    char country[3];
    char region[VG_SCHED_REGION_MAX];
};

struct vg_sched_world;

/* Indexes locs and areas (copied; the caller keeps its arrays). tag_names
 * (n_tags <= VG_SCHED_TAGS_MAX) name the bits of the locations' tags.
 * Location ids must be unique. The caller owns *out. */
int vg_sched_world_create(const struct vg_sched_location *locs, size_t n_locs, const struct vg_sched_area *areas,
                          size_t n_areas, const char *const *tag_names, size_t n_tags,
                          struct vg_sched_world **out) VG_MUST_CHECK;
void vg_sched_world_destroy(struct vg_sched_world *w);

size_t vg_sched_world_n_locations(const struct vg_sched_world *w);
size_t vg_sched_world_n_areas(const struct vg_sched_world *w);
const struct vg_sched_location *vg_sched_world_location(const struct vg_sched_world *w, size_t i);
const struct vg_sched_area *vg_sched_world_area(const struct vg_sched_world *w, size_t i);
/* The index of the location with this id, or VG_SCHED_NONE. */
uint32_t vg_sched_world_find(const struct vg_sched_world *w, const char *id);
/* The bit of a tag name, or 0 if the world has no such tag. */
uint32_t vg_sched_world_tag(const struct vg_sched_world *w, const char *name);
const char *vg_sched_world_tag_name(const struct vg_sched_world *w, unsigned bit);

/* Sites: dynamic placement chooses among sites (the locations of one grid
 * cell in one country and region), then takes one location in each
 * chosen site (sched_place.c). cell_deg is the cell's side in degrees,
 * 0.01 to 10, or 0 for a site per location; worlds start at
 * VG_SCHED_SITE_DEG. Set before placing, like measured RTTs. */
#define VG_SCHED_SITE_DEG 1.0
int vg_sched_world_set_sites(struct vg_sched_world *w, double cell_deg) VG_MUST_CHECK;
/* A cell side as the CLI takes it ("1", "0.5", "0"): VG_EINVAL outside
 * the range vg_sched_world_set_sites accepts. */
int vg_sched_parse_site_deg(const char *s, double *out) VG_MUST_CHECK;
size_t vg_sched_world_n_sites(const struct vg_sched_world *w);
/* The site of a location, and the site's locations (ascending). */
uint32_t vg_sched_world_site(const struct vg_sched_world *w, uint32_t loc);
const uint32_t *vg_sched_world_site_locations(const struct vg_sched_world *w, uint32_t site, size_t *n);

/* Round-trip latency between an area and a location in µs: the measured
 * RTT when one was set, else src/geo's model over the great circle. */
uint32_t vg_sched_rtt_us(const struct vg_sched_world *w, uint32_t area, uint32_t loc);
/* Replaces the model by a measured RTT for this pair (nodes report them).
 * Set before placing: a world is read-only while plans are made. */
int vg_sched_world_set_rtt(struct vg_sched_world *w, uint32_t area, uint32_t loc, uint32_t rtt_us) VG_MUST_CHECK;

/* --- apps and their policies ---------------------------------------------- */

enum vg_sched_mode {
    VG_SCHED_DYNAMIC, /* by demand and latency */
    VG_SCHED_STATIC,  /* an explicit list */
};

/* Enforcements: where the app may run at all. Empty allow lists allow
 * everything; deny wins over allow. */
struct vg_sched_enforce {
    const char *const *allow_countries;
    size_t n_allow_countries;
    const char *const *deny_countries;
    size_t n_deny_countries;
    const char *const *allow_regions;
    size_t n_allow_regions;
    const char *const *deny_regions;
    size_t n_deny_regions;
    uint32_t require_tags; /* every bit must be on the location */
    bool residency;        /* demand from a region is served inside it, or not at all */
};

struct vg_sched_app {
    const char *name;
    int priority;            /* higher wins capacity */
    uint32_t cpu_m, mem_mib; /* per location; each placement also takes one slot */
    enum vg_sched_mode mode;
    const uint32_t *static_locs; /* STATIC: world indices */
    size_t n_static;
    /* DYNAMIC */
    uint32_t target_us;          /* latency target ... */
    uint32_t percentile;         /* ... for this share of demand, 1..100 */
    uint32_t min_demand_mrps;    /* a location must serve this much demand to be worth it */
    uint32_t min_locs, max_locs; /* 0 <= min <= max, max >= 1 */
    uint32_t scale_in_steps;     /* hysteresis: below min_demand this many steps before removal */
    struct vg_sched_enforce enforce;
};

/* An app's demand: requests per second (in thousandths) from each area. */
struct vg_sched_demand_entry {
    uint32_t area;
    uint32_t mrps;
};
struct vg_sched_demand {
    const struct vg_sched_demand_entry *e;
    size_t n;
};

/* Why a policy is refused (static location violating an enforcement, an
 * unknown index): names the app, the rule and the values. */
struct vg_sched_error {
    uint32_t app;
    char msg[256];
};

/* NULL when loc satisfies the app's enforcements, else the rule it breaks
 * written out with the values into buf ("country US is not in
 * allow_countries [DE, FR]"). */
const char *vg_sched_enforce_check(const struct vg_sched_world *w, const struct vg_sched_app *app, uint32_t loc,
                                   char *buf, size_t cap);

/* --- plans ---------------------------------------------------------------- */

struct vg_sched_plan;

/* Places every app (higher priority first, then in index order). prev is
 * the last plan for the same apps (or NULL): its locations are kept while
 * their demand holds (hysteresis), and its counters carry on. demand has
 * n_apps entries. The caller owns *out. VG_EINVAL with *err for a policy
 * that cannot be honoured (see vg_sched_enforce_check). */
int vg_sched_place(const struct vg_sched_world *w, const struct vg_sched_app *apps, size_t n_apps,
                   const struct vg_sched_demand *demand, const struct vg_sched_plan *prev, struct vg_sched_plan **out,
                   struct vg_sched_error *err) VG_MUST_CHECK;
/* vg_sched_place on up to `threads` threads (1: the same as vg_sched_place;
 * fewer when a thread cannot be started). The plan is the same, bit for
 * bit, whatever the number: apps are placed ahead speculatively and
 * committed in order, each placed again when capacity it looked at was
 * taken in between (sched_place.c). */
int vg_sched_place_threads(const struct vg_sched_world *w, const struct vg_sched_app *apps, size_t n_apps,
                           const struct vg_sched_demand *demand, const struct vg_sched_plan *prev, unsigned threads,
                           struct vg_sched_plan **out, struct vg_sched_error *err) VG_MUST_CHECK;

/* Re-places one app whose demand (or policy) changed, in plan, leaving
 * every other app where it is (but those that make room, below): the work
 * is that app's, not the world's.
 * Lower-priority apps holding capacity it needs make room: each is placed
 * again from where it was, the location it lost recorded as displaced.
 * On an error (a static location breaking an enforcement) the app holds
 * nothing in plan afterwards; every other app stays placed. */
int vg_sched_update(const struct vg_sched_world *w, const struct vg_sched_app *apps, size_t n_apps,
                    const struct vg_sched_demand *demand, struct vg_sched_plan *plan, uint32_t app,
                    struct vg_sched_error *err) VG_MUST_CHECK;

void vg_sched_plan_destroy(struct vg_sched_plan *p);

/* The app's locations (world indices, ascending); valid until the plan
 * changes. */
size_t vg_sched_plan_locations(const struct vg_sched_plan *p, uint32_t app, const uint32_t **locs);

/* Where each area's demand goes: the nearest chosen location it may use. */
struct vg_sched_served {
    uint32_t area, loc; /* loc VG_SCHED_NONE: unserved (residency, nothing chosen) */
    uint32_t rtt_us, mrps;
};
size_t vg_sched_plan_served(const struct vg_sched_plan *p, uint32_t app, const struct vg_sched_served **out);

struct vg_sched_app_stats {
    uint64_t demand_mrps, served_mrps, within_mrps; /* within: served within target_us */
    uint32_t p50_us, p95_us;                        /* demand-weighted, over served demand */
    uint64_t latency_sum;                           /* sum of rtt_us * mrps over served demand */
};
/* The app's figures; p50 and p95 are selected from its served demand on
 * each call (linear in its areas). */
void vg_sched_plan_app_stats(const struct vg_sched_plan *p, uint32_t app, struct vg_sched_app_stats *out);

struct vg_sched_use {
    uint64_t cpu_used, cpu_total, mem_used, mem_total, slots_used, slots_total, placements;
};
void vg_sched_plan_use(const struct vg_sched_world *w, const struct vg_sched_plan *p, struct vg_sched_use *out);

/* Where an app ran and its hysteresis counters (below[k] for locs[k];
 * below NULL: all zero), for a plan of another world or other apps. */
struct vg_sched_prev {
    const uint32_t *locs; /* world indices; out-of-range ones are dropped */
    const uint16_t *below;
    size_t n;
};
/* A plan holding only prev[0..n_apps) (locations and counters; no
 * capacity, no records): the `prev` argument of vg_sched_place. The caller
 * owns it. */
struct vg_sched_plan *vg_sched_plan_seed(const struct vg_sched_world *w, size_t n_apps,
                                         const struct vg_sched_prev *prev);
/* The app's hysteresis counters, one per vg_sched_plan_locations entry. */
size_t vg_sched_plan_below(const struct vg_sched_plan *p, uint32_t app, const uint16_t **below);

/* Placements added plus placements removed between two plans of the same
 * apps. */
uint64_t vg_sched_plan_churn(const struct vg_sched_plan *prev, const struct vg_sched_plan *next);

/* An independent check of a plan (none of the placement code): every
 * placement within its app's enforcements, every served area inside its
 * region when residency is on, no location over capacity. Returns the
 * number of violations; the first is described in why. */
size_t vg_sched_plan_verify(const struct vg_sched_world *w, const struct vg_sched_app *apps, size_t n_apps,
                            const struct vg_sched_plan *p, char *why, size_t cap);

/* A digest of the plan's decisions (locations, served areas, reasons):
 * two plans with equal digests decided the same (64 bits, not a MAC). */
uint64_t vg_sched_plan_digest(const struct vg_sched_plan *p);

/* --- explanations --------------------------------------------------------- */

enum vg_sched_verdict {
    VG_SCHED_CHOSEN,
    VG_SCHED_KEPT,
    VG_SCHED_REJECTED,
};

#define VG_SCHED_REASON_MAP(X)                                                                                         \
    X(STATIC, "listed in the static policy")                                                                           \
    X(GAIN, "largest latency gain")                                                                                    \
    X(MIN_COUNT, "needed to reach the minimum number of locations")                                                    \
    X(DEMAND_HOLDS, "still serves enough demand")                                                                      \
    X(HYSTERESIS, "below the demand threshold, within the scale-in window")                                            \
    X(SCALED_IN, "below the demand threshold for the whole scale-in window")                                           \
    X(POLICY, "an enforcement forbids it")                                                                             \
    X(CAPACITY, "not enough capacity")                                                                                 \
    X(DISPLACED, "displaced by a higher-priority app")                                                                 \
    X(TARGET_MET, "latency gain too small: the target is already met")                                                 \
    X(NO_GAIN, "no latency gain")                                                                                      \
    X(BELOW_DEMAND, "would serve less than the minimum demand")                                                        \
    X(MAX_REACHED, "the maximum number of locations is reached")                                                       \
    X(SWAPPED, "replaced by a better location in the local search")                                                    \
    X(SAME_SITE, "another location at the same site runs the app")

enum vg_sched_reason {
#define VG_SCHED_REASON_ENUM(name, text) VG_SCHED_R_##name,
    VG_SCHED_REASON_MAP(VG_SCHED_REASON_ENUM)
#undef VG_SCHED_REASON_ENUM
};

const char *vg_sched_reason_name(enum vg_sched_reason r); /* "gain", "capacity", ... */
const char *vg_sched_reason_text(enum vg_sched_reason r);

enum vg_sched_resource { VG_SCHED_RES_NONE, VG_SCHED_RES_CPU, VG_SCHED_RES_MEM, VG_SCHED_RES_SLOTS };

struct vg_sched_why {
    uint32_t loc;
    uint8_t verdict;      /* enum vg_sched_verdict */
    uint8_t reason;       /* enum vg_sched_reason */
    uint8_t resource;     /* CAPACITY/DISPLACED: enum vg_sched_resource short */
    uint16_t below;       /* HYSTERESIS/SCALED_IN: steps below the threshold so far */
    uint32_t by_app;      /* DISPLACED/CAPACITY: an app holding it with higher priority, or VG_SCHED_NONE */
    uint64_t demand_mrps; /* demand it serves (chosen) or would serve (rejected) */
    uint64_t gain;        /* latency gain, µs x mrps (demand-weighted) */
};

/* The app's records: chosen and kept locations first, then rejected
 * candidates (the pruned set: policy, capacity, gain, demand). */
size_t vg_sched_plan_explain(const struct vg_sched_plan *p, uint32_t app, const struct vg_sched_why **out);

/* The app's explanation as text (the caller frees the result). */
char *vg_sched_explain_text(const struct vg_sched_world *w, const struct vg_sched_app *apps, size_t n_apps,
                            const struct vg_sched_plan *p, uint32_t app);
/* The same as JSON (the caller owns the reference). */
json_t *vg_sched_explain_json(const struct vg_sched_world *w, const struct vg_sched_app *apps, size_t n_apps,
                              const struct vg_sched_plan *p, uint32_t app);

/* --- exactness ------------------------------------------------------------ */

/* The exact optimum for one app by exhaustive search: the k allowed
 * locations (among at most 24 that have capacity) that minimise the
 * demand-weighted latency, the quantity the greedy minimises. Returns that
 * sum (µs x mrps, unserved demand counted at VG_SCHED_UNSERVED_US) and the
 * locations in best[k]; UINT64_MAX if there are more than 24 candidates or
 * fewer than k. For measuring the greedy's gap on small worlds. */
#define VG_SCHED_UNSERVED_US 1000000u
uint64_t vg_sched_exact(const struct vg_sched_world *w, const struct vg_sched_app *app,
                        const struct vg_sched_demand *demand, size_t k, uint32_t *best);
/* The same sum for a given set of locations. */
uint64_t vg_sched_cost(const struct vg_sched_world *w, const struct vg_sched_app *app,
                       const struct vg_sched_demand *demand, const uint32_t *locs, size_t n);

/* --- simulated worlds (verge sim) ----------------------------------------- */

/* A seeded world: towers around real cities (seed points), client areas
 * around the same cities, apps with a mix of policies, and demand with a
 * daily cycle and flash crowds. Pure given the seed (its own PRNG). */
struct vg_sched_sim;

struct vg_sched_sim_point {
    double lat, lon;
    char country[3];
    char region[VG_SCHED_REGION_MAX];
};

int vg_sched_sim_create(const struct vg_sched_sim_point *cities, size_t n_cities, size_t n_locs, size_t n_apps,
                        uint64_t seed, struct vg_sched_sim **out) VG_MUST_CHECK;
void vg_sched_sim_destroy(struct vg_sched_sim *s);
const struct vg_sched_world *vg_sched_sim_world(const struct vg_sched_sim *s);
/* Regroups the sim's world into sites (vg_sched_world_set_sites). */
int vg_sched_sim_set_sites(struct vg_sched_sim *s, double cell_deg) VG_MUST_CHECK;
const struct vg_sched_app *vg_sched_sim_apps(const struct vg_sched_sim *s, size_t *n);
/* Demand at a step (one step is VG_SCHED_SIM_STEP_MIN minutes of
 * simulated time); valid until the next call. */
#define VG_SCHED_SIM_STEP_MIN 10
const struct vg_sched_demand *vg_sched_sim_demand(struct vg_sched_sim *s, uint32_t step);
/* Apps whose flash crowd starts or ends at this step (their demand
 * changes most): for incremental updates. */
size_t vg_sched_sim_flash_apps(const struct vg_sched_sim *s, uint32_t step, uint32_t *apps, size_t cap);

/* A small PRNG (xoshiro256**, seeded by splitmix64): the same numbers on
 * every platform, unlike rand(). */
struct vg_sched_rng {
    uint64_t s[4];
};
void vg_sched_rng_seed(struct vg_sched_rng *r, uint64_t seed);
uint64_t vg_sched_rng_next(struct vg_sched_rng *r);
/* Uniform in [0, n) (n > 0), and in [0, 1). */
uint64_t vg_sched_rng_below(struct vg_sched_rng *r, uint64_t n);
double vg_sched_rng_unit(struct vg_sched_rng *r);

#endif
