/* Placement: one app at a time, higher priority first.
 *
 * Dynamic apps: the candidates are the locations near the app's demand
 * (each area's VG_SCHED_NEAR nearest, filtered by the enforcements and the
 * capacity left), which keeps the work proportional to the app's demand,
 * not to the world. The previous locations are kept while they serve
 * enough demand (hysteresis); then a greedy facility-location pass adds
 * the candidate with the largest demand-weighted latency gain (kept exact
 * as locations open, found from buckets by gain: gains only shrink, the
 * objective is submodular), until the app has its minimum and its latency
 * target is met, or its maximum; then a local search swaps added
 * locations for better ones while that improves. Every candidate leaves a
 * record of why it was chosen or not.
 *
 * Where the time goes: an app touches a few hundred locations once each
 * (a cache miss apiece, hence the plan's packed per-location record and
 * the prefetching), and everything after is per candidate or per pair,
 * in arrays reused from app to app (no per-app allocation but the plan's
 * own, no per-app clearing: marks are epochs).
 *
 * Memory comes from vg_xmalloc (abort on exhaustion): what a placement
 * uses is bounded by its inputs (candidates x demand areas), which the
 * caller bounds. */
#include "sched/sched_int.h"

#include <math.h>
#include <pthread.h>
#include <string.h>

#define SWAP_TRIES 4  /* alternatives tried per added location in the local search */
#define SWAP_ALL 32   /* pools this small try every alternative */
#define SWAP_PASSES 3 /* local-search passes at most */

/* 32 bytes, two to a cache line (the array is aligned): the greedy and
 * the local search walk candidates all over the array. Its cost and its
 * first sight (cand_cost, x->nw0) are kept elsewhere: rarely read. */
struct cand {
    uint32_t loc;   /* dynamic apps: the site's location its records name, then (open) the one it runs at */
    uint32_t site;  /* dynamic apps; VG_SCHED_NONE for static ones */
    uint32_t first; /* its pairs: a chain through pair.next, VG_SCHED_NONE ends it */
    uint16_t below;
    uint8_t reason;
    uint8_t open : 1, kept : 1, dead : 2;
    uint64_t gain, served;
};
_Static_assert(sizeof(struct cand) == 32, "two candidates to a cache line");

struct pair {
    uint32_t cand, area, rtt; /* area: index into the app's demand */
    uint32_t next;            /* the candidate's next pair (its lists in any order: sums and minima) */
};

/* An app that lost a location to a higher-priority one during an update,
 * with its placement as it was (its hysteresis counters carry on). */
struct evicted {
    uint32_t app;
    uint32_t *locs;
    uint16_t *below;
    size_t n;
};

/* The greedy's candidates by gain: a list per bucket (bucket_of), and
 * the highest bucket that may be non-empty. */
#define GREEDY_BUCKETS 256

struct buckets {
    uint32_t head[GREEDY_BUCKETS];
    int top;
};

struct ctx {
    const struct vg_sched_world *w;
    const struct vg_sched_app *apps;
    size_t n_apps;
    const struct vg_sched_demand *demand;
    struct vg_sched_plan *plan;
    const struct vg_sched_app *app;
    uint32_t app_idx;
    struct vg__sched_rules rules;
    uint32_t stamp;
    struct vg__sched_loc *loc;   /* the plan's */
    struct vg__sched_seen *seen; /* the plan's, or this thread's own (own_seen) */
    bool own_seen;
    bool spec;                      /* a parallel placement's: commit leaves the capacity to the committer */
    struct vg__sched_app_plan *out; /* where commit writes, when not in the plan */
    const uint32_t *prev;           /* the app's previous locations */
    size_t n_prev;
    struct cand *c; /* aligned to a cache line */
    uint32_t *nw0;  /* per candidate: the rejections recorded before it was made (a parallel commit's repair) */
    size_t nc, cc;
    struct pair *pr;
    size_t np, cp;
    uint32_t *area_start;
    uint64_t *wa;
    uint32_t *cur;
    uint32_t *b1, *b2, *c1; /* local search: each area's best and second-best open latency, and its best */
    size_t ca;
    struct vg_sched_why *why;
    size_t nw, cw;
    struct buckets bs[2]; /* the greedy's candidates with a gain: eligible, below the demand threshold */
    uint32_t *next;       /* per candidate: the next in its bucket */
    uint32_t *ol;         /* local search: the open candidates, ascending */
    size_t n_ol;
    size_t cl, n_live; /* n_live: neither open nor dropped, zero gains included */
    uint64_t total, within;
    size_t n_open;
    bool preempt;        /* updates: lower-priority apps make room, and are placed again after */
    bool evaluated;      /* the candidates' gains are those of add_pair and still hold */
    uint8_t left_reason; /* why the candidates the greedy left (neither open nor dropped) are rejected */
    struct evicted *evicted;
    size_t n_evicted, cap_evicted;
    uint32_t *hubs; /* the hubs this app may use, found on the first far area */
    double *hub_c;  /* fallback_hub's scratch: their chords to the area */
    size_t n_hubs;
    bool hubs_known;
    bool note; /* placing ahead: commit notes what check_ahead needs in rec_locs */
    uint32_t *rec_locs;
    size_t cap_rec_locs;
    uint32_t *alts; /* spec: the locations the local search tried (check_ahead) */
    size_t n_alts, cap_alts;
    uint32_t *gone;  /* the committer's: rejected candidates found gone (check_ahead) */
    uint32_t *moved; /* the committer's: chosen records whose location was taken (check_ahead) */
    size_t n_moved, cap_moved;
    size_t n_gone, cap_gone;
    uint32_t *gone_nw0, *gone_pairs; /* per gone one (gone_info) */
    struct vg_sched_why *old_why;    /* the committer's: repair's copy of the records */
    size_t cap_old_why;
    size_t cap_gone_info;
    uint32_t *amark, *aidx, astamp; /* the committer's: areas of the app being checked (mark_areas) */
    uint32_t *smark, *sidx, sstamp; /* the committer's: its first record per site (mark_sites) */
    uint32_t *extra;                /* dynamic: locations beyond one per site, for the minimum (add_extras) */
    uint64_t *extra_served;
    size_t n_extra, cap_extra;
    uint32_t *same; /* previous locations in a site that already runs the app */
    size_t n_same, cap_same;
    struct vg__sched_serve_scratch serve;
};

#define GROW(ptr, n, cap)                                                                                              \
    do {                                                                                                               \
        if ((n) == (cap)) {                                                                                            \
            (cap) = (cap) ? 2 * (cap) : 64;                                                                            \
            (ptr) = vg_xrealloc((ptr), (cap) * sizeof(*(ptr)));                                                        \
        }                                                                                                              \
    } while (0)

static void ctx_init(struct ctx *x, const struct vg_sched_world *w, const struct vg_sched_app *apps, size_t n_apps,
                     const struct vg_sched_demand *demand, struct vg_sched_plan *plan)
{
    memset(x, 0, sizeof(*x));
    x->w = w;
    x->apps = apps;
    x->n_apps = n_apps;
    x->demand = demand;
    x->plan = plan;
    x->loc = plan->loc;
    x->seen = plan->seen;
}

static void ctx_fini(struct ctx *x)
{

    free(x->c);
    free(x->nw0);
    free(x->pr);
    free(x->area_start);
    free(x->wa);
    free(x->cur);
    free(x->b1);
    free(x->b2);
    free(x->c1);
    free(x->why);
    free(x->next);
    free(x->ol);
    free(x->hubs);
    free(x->hub_c);
    free(x->alts);
    free(x->rec_locs);
    free(x->gone);
    free(x->moved);
    free(x->gone_nw0);
    free(x->gone_pairs);
    free(x->old_why);
    free(x->amark);
    free(x->aidx);
    free(x->smark);
    free(x->sidx);
    free(x->extra);
    free(x->extra_served);
    free(x->same);
    vg__sched_serve_scratch_free(&x->serve);
    if (x->own_seen)
        free(x->seen);
    for (size_t i = 0; i < x->n_evicted; i++) {
        free(x->evicted[i].locs);
        free(x->evicted[i].below);
    }
    free(x->evicted);
}

/* A record slot (the rejections found while looking at locations). */
static inline struct vg_sched_why *new_why(struct ctx *x)
{
    if (__builtin_expect(x->nw == x->cw, 0)) /* build_pairs makes room: only static apps grow it */
        GROW(x->why, x->nw, x->cw);
    return &x->why[x->nw++];
}

static struct vg_sched_why why_of(uint32_t loc, uint8_t verdict, uint8_t reason)
{
    return (struct vg_sched_why){.loc = loc, .verdict = verdict, .reason = reason, .by_app = VG_SCHED_NONE};
}

/* The resource short at loc for the current app, or NONE. When updating,
 * what lower-priority apps hold there counts as free: they make room. */
static uint8_t short_of(const struct ctx *x, uint32_t loc)
{
    const struct vg__sched_loc *l = &x->loc[loc];
    uint64_t cpu = vg__sched_ld(&l->cpu_free), mem = vg__sched_ld(&l->mem_free), slots = vg__sched_ld(&l->slots_free);
    if (x->preempt) {
        const struct vg_sched_plan *p = x->plan;
        for (uint32_t k = p->held_head[loc]; k != VG_SCHED_NONE; k = p->held[k].next) {
            const struct vg_sched_app *o = &x->apps[p->held[k].app];
            if (o->priority < x->app->priority)
                cpu += o->cpu_m, mem += o->mem_mib, slots++;
        }
    }
    if (slots < 1)
        return VG_SCHED_RES_SLOTS;
    if (cpu < x->app->cpu_m)
        return VG_SCHED_RES_CPU;
    if (mem < x->app->mem_mib)
        return VG_SCHED_RES_MEM;
    return VG_SCHED_RES_NONE;
}

static bool fits_now(const struct ctx *x, uint32_t loc)
{
    return vg__sched_fits(&x->loc[loc], x->app);
}

/* Takes the lowest-priority app (the last of equals) off every location
 * it holds until the current app fits at loc; it is queued to be placed
 * again from where it was. */
static void make_room(struct ctx *x, uint32_t loc)
{
    while (!fits_now(x, loc)) {
        const struct vg_sched_plan *p = x->plan;
        uint32_t victim = VG_SCHED_NONE;
        for (uint32_t k = p->held_head[loc]; k != VG_SCHED_NONE; k = p->held[k].next) {
            uint32_t a = p->held[k].app;
            if (x->apps[a].priority < x->app->priority &&
                (victim == VG_SCHED_NONE || x->apps[a].priority < x->apps[victim].priority ||
                 (x->apps[a].priority == x->apps[victim].priority && a > victim)))
                victim = a;
        }
        VG_ASSERT(victim != VG_SCHED_NONE); /* short_of counted on it */
        const struct vg__sched_app_plan *vp = &x->plan->apps[victim];
        GROW(x->evicted, x->n_evicted, x->cap_evicted);
        struct evicted *e = &x->evicted[x->n_evicted++];
        e->app = victim;
        e->n = vp->n_locs;
        e->locs = vg_xmalloc((e->n + 1) * sizeof(*e->locs));
        e->below = vg_xmalloc((e->n + 1) * sizeof(*e->below));
        memcpy(e->locs, vp->locs, e->n * sizeof(*e->locs));
        memcpy(e->below, vp->below, e->n * sizeof(*e->below));
        vg__sched_plan_release(x->plan, x->apps, victim);
    }
}

/* The highest-priority app holding loc (the first of equals), if its
 * priority is above ours. */
static uint32_t displacer(const struct ctx *x, uint32_t loc)
{
    const struct vg__sched_loc *l = &x->loc[loc];
    uint32_t top = vg__sched_ld(&l->top);
    return top != VG_SCHED_NONE && (int32_t)vg__sched_ld((const uint32_t *)&l->top_prio) > x->app->priority
               ? top
               : VG_SCHED_NONE;
}

static void capacity_why(const struct ctx *x, uint32_t loc, uint8_t res, struct vg_sched_why *y)
{
    *y = why_of(loc, VG_SCHED_REJECTED, VG_SCHED_R_CAPACITY);
    y->resource = res;
    y->by_app = displacer(x, loc);
    if (y->by_app != VG_SCHED_NONE)
        for (size_t k = 0; k < x->n_prev; k++)
            if (x->prev[k] == loc)
                y->reason = VG_SCHED_R_DISPLACED;
}

static void reject_capacity(struct ctx *x, uint32_t loc, uint8_t res)
{
    capacity_why(x, loc, res, new_why(x));
}

/* Room for n candidates (n > x->cc), the array aligned to a cache line
 * (realloc keeps only malloc's alignment). */
static void cand_room(struct ctx *x, size_t n)
{
    struct cand *c = vg__sched_alloc_lines(n, sizeof(*c));
    if (x->nc)
        memcpy(c, x->c, x->nc * sizeof(*c));
    free(x->c);
    x->c = c;
    x->nw0 = vg_xrealloc(x->nw0, n * sizeof(*x->nw0));
    x->cc = n;
}

/* The candidate for loc, made on first sight; VG_SCHED_NONE (and a record
 * of why) when the app may not or cannot run there. */
static uint32_t consider_new(struct ctx *x, uint32_t loc, struct vg__sched_seen *sn)
{
    sn->mark = x->stamp;
    sn->slot = VG_SCHED_NONE;
    const struct vg__sched_loc *s = &x->loc[loc];
    if (!vg__sched_rules_allow_at(&x->rules, s->tags, s->country, s->region)) {
        *new_why(x) = why_of(loc, VG_SCHED_REJECTED, VG_SCHED_R_POLICY);
        return VG_SCHED_NONE;
    }
    uint8_t res = !x->preempt && vg__sched_fits(s, x->app) ? VG_SCHED_RES_NONE : short_of(x, loc);
    if (res != VG_SCHED_RES_NONE) {
        reject_capacity(x, loc, res);
        return VG_SCHED_NONE;
    }
    if (x->nc == x->cc)
        cand_room(x, 2 * x->cc + 64);
    x->c[x->nc] = (struct cand){.loc = loc, .site = VG_SCHED_NONE, .first = VG_SCHED_NONE};
    x->nw0[x->nc] = (uint32_t)x->nw;
    sn->slot = (uint32_t)x->nc;
    return (uint32_t)x->nc++;
}

static uint32_t consider(struct ctx *x, uint32_t loc)
{
    struct vg__sched_seen *sn = &x->seen[loc];
    return sn->mark == x->stamp ? sn->slot : consider_new(x, loc, sn);
}

/* The app may run at loc now (when updating, lower-priority apps make
 * room). */
static bool usable(const struct ctx *x, uint32_t loc)
{
    const struct vg__sched_loc *l = &x->loc[loc];
    return vg__sched_rules_allow_at(&x->rules, l->tags, l->country, l->region) &&
           (x->preempt ? short_of(x, loc) == VG_SCHED_RES_NONE : vg__sched_fits(l, x->app));
}

/* Whether one of the site's locations is usable, and (*key, when NONE)
 * the first the rules allow: the tags side by side, the records only
 * where they match. */
static bool site_scan(const struct ctx *x, uint32_t site, uint32_t *key)
{
    uint32_t n, need = x->rules.tags;
    const uint32_t *t = vg__sched_site_locs(x->w, site, &n), *tags = &x->w->site_tags[x->w->site_start[site]];
    for (uint32_t i = 0; i < n; i++) {
        if ((tags[i] & need) != need)
            continue;
        *key = *key == VG_SCHED_NONE ? t[i] : *key;
        if (x->preempt ? short_of(x, t[i]) == VG_SCHED_RES_NONE : vg__sched_fits(&x->loc[t[i]], x->app))
            return true;
    }
    return false;
}

/* The site's record names a location with a slot free and room for the
 * app (reads that a parallel commit checks: vg__sched_ld). */
static bool site_record_fits(const struct ctx *x, const struct vg__sched_site *ss)
{
    return vg__sched_ld(&ss->loc) != VG_SCHED_NONE && vg__sched_ld(&ss->cpu_free) >= x->app->cpu_m &&
           vg__sched_ld(&ss->mem_free) >= x->app->mem_mib;
}

/* The site's candidate (dynamic apps), made on first sight: the site is
 * a candidate when one of its locations is usable; its records name the
 * first location the rules allow (not the first usable one: what a
 * parallel placement saw must not depend on capacity that other apps
 * take, see the parallel part), or the site's first for a rejection by
 * policy. */
static uint32_t consider_site_new(struct ctx *x, uint32_t site, struct vg__sched_seen *sn)
{
    sn->mark = x->stamp;
    sn->slot = VG_SCHED_NONE;
    const struct vg__sched_site *ss = &x->plan->site[site];
    uint32_t key = VG_SCHED_NONE, need = x->rules.tags, first = ss->first;
    bool any = false;
    /* the site's country and region are its locations', and the tags
     * any of them has */
    if (vg__sched_rules_allow_at(&x->rules, need, ss->country, ss->region) && (ss->tags_any & need) == need) {
        if (need == 0 && !x->preempt) { /* the common case: the site's record often knows one that fits */
            key = first;
            any = site_record_fits(x, ss);
        }
        if (!any)
            any = site_scan(x, site, &key);
    }
    if (key == VG_SCHED_NONE) {
        *new_why(x) = why_of(first, VG_SCHED_REJECTED, VG_SCHED_R_POLICY);
        return VG_SCHED_NONE;
    }
    if (!any) {
        reject_capacity(x, key, short_of(x, key));
        return VG_SCHED_NONE;
    }
    x->c[x->nc] = (struct cand){.loc = key, .site = site, .first = VG_SCHED_NONE};
    x->nw0[x->nc] = (uint32_t)x->nw;
    sn->slot = (uint32_t)x->nc;
    return (uint32_t)x->nc++;
}

static uint32_t consider_site(struct ctx *x, uint32_t site)
{
    struct vg__sched_seen *sn = &x->seen[site];
    if (sn->mark == x->stamp)
        return sn->slot;
    if (x->nc == x->cc)
        cand_room(x, 2 * x->cc + 64);
    return consider_site_new(x, site, sn);
}

/* The candidate a chosen location belongs to. */
static uint32_t slot_of(const struct ctx *x, uint32_t loc)
{
    return x->seen[x->app->mode == VG_SCHED_DYNAMIC ? x->w->loc_site[loc] : loc].slot;
}

/* A pair, and what it adds to its candidate's gain while nothing is open
 * (the greedy's first evaluation when no location was kept). */
static void add_pair(struct ctx *x, uint32_t cand, uint32_t area, uint32_t rtt)
{
    GROW(x->pr, x->np, x->cp);
    x->pr[x->np] = (struct pair){cand, area, rtt, x->c[cand].first};
    x->c[cand].first = (uint32_t)x->np++;
    if (rtt < VG_SCHED_UNSERVED_US) {
        x->c[cand].gain += x->wa[area] * (VG_SCHED_UNSERVED_US - rtt);
        x->c[cand].served += x->wa[area];
    }
}

static bool residency_ok(const struct ctx *x, uint32_t area, uint32_t loc)
{
    return !x->rules.residency || x->w->loc_region[loc] == x->w->area_region[area];
}

/* An area none of whose nearest locations the app may use: the nearest
 * usable hub (a few locations per country), checked without records. The
 * usable hubs are listed once per app, on the first such area. */
static void usable_hubs(struct ctx *x)
{
    x->hubs = vg_xrealloc(x->hubs, (x->w->n_hubs + 1) * sizeof(*x->hubs));
    x->hub_c = vg_xrealloc(x->hub_c, (x->w->n_hubs + 1) * sizeof(*x->hub_c));
    x->n_hubs = 0;
    for (size_t h = 0; h < x->w->n_hubs; h++) {
        uint32_t loc = x->w->hubs[h];
        if (vg__sched_rules_allow(x->w, &x->rules, loc) && short_of(x, loc) == VG_SCHED_RES_NONE)
            x->hubs[x->n_hubs++] = loc;
    }
    x->hubs_known = true;
}

static void fallback_hub(struct ctx *x, uint32_t i, uint32_t area)
{
    if (!x->hubs_known)
        usable_hubs(x);
    uint32_t best = VG_SCHED_NONE, best_rtt = UINT32_MAX;
    /* Without measured RTTs latency grows with the chord: only hubs within
     * a hair of the nearest (1e-4 of the unit sphere, some 600 m, where
     * one µs of latency is 100 m) can share its latency, and only theirs
     * is computed. The choice is the same: lowest latency, then index. */
    double near_c = 1e9, *ch = x->hub_c; /* each hub's chord, computed once */
    if (x->w->n_ovr == 0) {
        for (size_t h = 0; h < x->n_hubs; h++) {
            ch[h] = residency_ok(x, area, x->hubs[h]) ? vg__sched_chord2(x->w, area, x->hubs[h]) : HUGE_VAL;
            near_c = ch[h] < near_c ? ch[h] : near_c;
        }
        near_c = (sqrt(near_c) + 1e-4) * (sqrt(near_c) + 1e-4);
    }
    for (size_t h = 0; h < x->n_hubs; h++) {
        uint32_t loc = x->hubs[h];
        if (x->w->n_ovr == 0 ? ch[h] > near_c : !residency_ok(x, area, loc))
            continue;
        uint32_t r = vg_sched_rtt_us(x->w, area, loc);
        if (r < best_rtt || (r == best_rtt && loc < best))
            best = loc, best_rtt = r;
    }
    /* NONE only when placing ahead (a parallel placement) and another
     * thread took the hub since it was listed: the commit sees that */
    uint32_t c = best != VG_SCHED_NONE ? consider_site(x, x->w->loc_site[best]) : VG_SCHED_NONE;
    if (c != VG_SCHED_NONE)
        add_pair(x, c, i, best_rtt);
}

/* The areas' nearest sites are scattered over the world's lists: the
 * next areas' lists are asked for while this one is worked on, and a few
 * areas nearer, their sites' records (by then their lists are in). Hints
 * only: no effect on the result. */
#define PREFETCH_LIST 8 /* areas ahead whose nearest sites are asked for */

#define PREFETCH_SITES 4 /* areas ahead whose sites' records are asked for (their lists are in by then) */

static void prefetch_list(const struct ctx *x, uint32_t a)
{
    const struct vg__sched_near *near = &x->w->snear[(size_t)a * x->w->snear_k];
    __builtin_prefetch(near);
    __builtin_prefetch(near + x->w->snear_k - 1);
}

/* The records of the area's nearest sites: a site's first sight reads
 * its record (most of an area's sites were seen before, and those cost a
 * prefetch of a line in cache). */
static void prefetch_sites(const struct ctx *x, uint32_t a)
{
    const struct vg__sched_near *near = &x->w->snear[(size_t)a * x->w->snear_k];
    for (uint8_t k = 0, n = x->w->n_snear[a]; k < n; k++)
        __builtin_prefetch(&x->plan->site[near[k].loc]);
}

static void build_pairs(struct ctx *x, const struct vg_sched_demand *d)
{
    if (x->ca < d->n + 1) {
        x->ca = d->n + 1;
        x->area_start = vg_xrealloc(x->area_start, x->ca * sizeof(*x->area_start));
        x->wa = vg_xrealloc(x->wa, x->ca * sizeof(*x->wa));
        x->cur = vg_xrealloc(x->cur, x->ca * sizeof(*x->cur));
        x->b1 = vg_xrealloc(x->b1, x->ca * sizeof(*x->b1));
        x->b2 = vg_xrealloc(x->b2, x->ca * sizeof(*x->b2));
        x->c1 = vg_xrealloc(x->c1, x->ca * sizeof(*x->c1));
    }
    /* room for every pair and candidate up front: none of the appends
     * below checks (an area adds at most VG_SCHED_NEAR pairs, a hub's
     * included, each at most one candidate and one record) */
    size_t most = d->n * VG_SCHED_NEAR + 1;
    if (x->cp < most) {
        x->cp = most;
        x->pr = vg_xrealloc(x->pr, x->cp * sizeof(*x->pr));
    }
    if (x->cc < most + x->n_prev)
        cand_room(x, most + x->n_prev);
    if (x->cw < most + x->n_prev) {
        x->cw = most + x->n_prev;
        x->why = vg_xrealloc(x->why, x->cw * sizeof(*x->why));
    }
    for (size_t i = 0; i < d->n && i < PREFETCH_LIST; i++)
        prefetch_list(x, d->e[i].area);
    const struct vg_sched_world *w = x->w;
    const struct vg__sched_near *all = w->snear;
    struct vg__sched_seen *seen = x->seen;
    struct pair *pr = x->pr;
    uint32_t stamp = x->stamp, np = (uint32_t)x->np;
    bool residency = x->rules.residency;
    for (size_t i = 0; i < d->n; i++) {
        uint32_t a = d->e[i].area, mrps = d->e[i].mrps;
        if (i + PREFETCH_LIST < d->n)
            prefetch_list(x, d->e[i + PREFETCH_LIST].area);
        if (i + PREFETCH_SITES < d->n)
            prefetch_sites(x, d->e[i + PREFETCH_SITES].area);
        x->wa[i] = mrps;
        x->total += mrps;
        x->cur[i] = VG_SCHED_UNSERVED_US;
        x->area_start[i] = np;
        const struct vg__sched_near *near = &all[(size_t)a * w->snear_k];
        for (uint8_t k = 0, n = w->n_snear[a]; k < n; k++) {
            uint32_t site = near[k].loc, rtt = near[k].rtt_us;
            if (residency && w->site_region[site] != w->area_region[a])
                continue;
            struct vg__sched_seen *sn = &seen[site];
            uint32_t c = sn->mark == stamp ? sn->slot : consider_site_new(x, site, sn);
            if (c == VG_SCHED_NONE)
                continue;
            struct cand *cd = &x->c[c];
            pr[np] = (struct pair){c, (uint32_t)i, rtt, cd->first};
            cd->first = np++;
            if (rtt < VG_SCHED_UNSERVED_US) { /* the gain while nothing is open */
                cd->gain += (uint64_t)mrps * (VG_SCHED_UNSERVED_US - rtt);
                cd->served += mrps;
            }
        }
        x->np = np;
        if (x->area_start[i] == np) {
            fallback_hub(x, (uint32_t)i, a);
            np = (uint32_t)x->np;
        }
    }
    x->area_start[d->n] = (uint32_t)x->np;
    VG_ASSERT(x->nc <= x->cc && x->np <= x->cp); /* the room made above held */
}

/* --- the objective ---------------------------------------------------------- */

static void eval_gain(struct ctx *x, struct cand *c)
{
    uint64_t g = 0, s = 0;
    for (uint32_t k = c->first; k != VG_SCHED_NONE; k = x->pr[k].next) {
        const struct pair *v = &x->pr[k];
        if (v->rtt < x->cur[v->area]) {
            g += x->wa[v->area] * (x->cur[v->area] - v->rtt);
            s += x->wa[v->area];
        }
    }
    c->gain = g;
    c->served = s;
}

static void open_cand(struct ctx *x, struct cand *c)
{
    uint32_t target = x->app->target_us;
    for (uint32_t k = c->first; k != VG_SCHED_NONE; k = x->pr[k].next) {
        const struct pair *v = &x->pr[k];
        if (v->rtt < x->cur[v->area]) {
            if (x->cur[v->area] > target && v->rtt <= target)
                x->within += x->wa[v->area];
            x->cur[v->area] = v->rtt;
        }
    }
    c->open = 1;
    x->n_open++;
}

static void recompute_cur(struct ctx *x, size_t n_areas)
{
    x->within = 0;
    x->n_open = 0;
    for (size_t i = 0; i < n_areas; i++)
        x->cur[i] = VG_SCHED_UNSERVED_US;
    for (size_t c = 0; c < x->nc; c++)
        if (x->c[c].open) {
            x->c[c].open = 0;
            open_cand(x, &x->c[c]);
        }
}

static bool target_met(const struct ctx *x)
{
    return x->within * 100 >= x->total * x->app->percentile;
}

/* Demand each open candidate serves as the nearest open one (ties: the
 * lower candidate). */
static void assign_served(struct ctx *x, size_t n_areas)
{
    for (size_t c = 0; c < x->nc; c++)
        x->c[c].served = 0;
    for (size_t i = 0; i < n_areas; i++) {
        uint32_t best = VG_SCHED_NONE, best_rtt = UINT32_MAX;
        for (uint32_t k = x->area_start[i]; k < x->area_start[i + 1]; k++)
            if (x->c[x->pr[k].cand].open && x->pr[k].rtt < best_rtt)
                best = x->pr[k].cand, best_rtt = x->pr[k].rtt;
        if (best != VG_SCHED_NONE)
            x->c[best].served += x->wa[i];
    }
}

/* Each area's best and second-best latency over the open candidates, the
 * objective and the demand within target: what a swap is measured from,
 * so that trying one costs the two candidates' lists, not every area. */
static uint64_t best_two(struct ctx *x, size_t n_areas, uint64_t *within)
{
    uint64_t obj = 0;
    *within = 0;
    for (size_t i = 0; i < n_areas; i++)
        x->b1[i] = x->b2[i] = VG_SCHED_UNSERVED_US, x->c1[i] = VG_SCHED_NONE;
    /* over the open candidates' lists, not every pair: an area's pairs are
     * in (latency, location) order, so the best is the lowest location
     * among equal latencies */
    for (size_t j = 0; j < x->n_ol; j++) {
        uint32_t c = x->ol[j];
        const struct cand *cd = &x->c[c];
        for (uint32_t k = cd->first; k != VG_SCHED_NONE; k = x->pr[k].next) {
            const struct pair *v = &x->pr[k];
            uint32_t i = v->area, r = v->rtt;
            if (r < x->b1[i] || (r == x->b1[i] && x->c1[i] != VG_SCHED_NONE && cd->loc < x->c[x->c1[i]].loc))
                x->b2[i] = x->b1[i], x->b1[i] = r, x->c1[i] = c;
            else if (r < x->b2[i])
                x->b2[i] = r;
        }
    }
    for (size_t i = 0; i < n_areas; i++) {
        uint32_t d1 = x->b1[i];
        obj += x->wa[i] * d1;
        if (d1 <= x->app->target_us)
            *within += x->wa[i];
    }
    return obj;
}

/* What closing out costs: the objective and the demand within target it
 * loses (its areas fall back to their second best). */
static void swap_loss(struct ctx *x, uint32_t out, uint64_t *loss, uint64_t *lost_within)
{
    const struct cand *c = &x->c[out];
    *loss = *lost_within = 0;
    for (uint32_t k = c->first; k != VG_SCHED_NONE; k = x->pr[k].next) {
        uint32_t a = x->pr[k].area;
        if (x->c1[a] != out)
            continue;
        *loss += x->wa[a] * (x->b2[a] - x->b1[a]);
        if (x->b1[a] <= x->app->target_us && x->b2[a] > x->app->target_us)
            *lost_within += x->wa[a];
    }
}

/* What opening in gains once out is closed: objective, demand within
 * target, and the demand it would serve. */
static uint64_t swap_gain(struct ctx *x, uint32_t out, uint32_t in, uint64_t *won_within, uint64_t *served)
{
    const struct cand *c = &x->c[in];
    uint64_t gain = 0;
    *won_within = *served = 0;
    for (uint32_t k = c->first; k != VG_SCHED_NONE; k = x->pr[k].next) {
        const struct pair *v = &x->pr[k];
        uint32_t now = x->c1[v->area] == out ? x->b2[v->area] : x->b1[v->area];
        if (v->rtt >= now)
            continue;
        gain += x->wa[v->area] * (now - v->rtt);
        *served += x->wa[v->area];
        if (now > x->app->target_us && v->rtt <= x->app->target_us)
            *won_within += x->wa[v->area];
    }
    return gain;
}

/* --- ranking candidates --------------------------------------------------- */

/* A site's lowest cost (dynamic apps), a location's (static). */
static uint32_t cand_cost(const struct ctx *x, const struct cand *c)
{
    return c->site != VG_SCHED_NONE ? x->plan->site[c->site].cost : x->loc[c->loc].cost;
}

static bool better(const struct ctx *x, uint32_t a, uint32_t b)
{
    const struct cand *ca = &x->c[a], *cb = &x->c[b];
    if (ca->gain != cb->gain)
        return ca->gain > cb->gain;
    uint32_t ka = cand_cost(x, ca), kb = cand_cost(x, cb);
    if (ka != kb)
        return ka < kb;
    return ca->loc < cb->loc;
}

/* --- the dynamic policy ------------------------------------------------------ */

static void close_cand(struct ctx *x, struct cand *c, uint8_t reason)
{
    c->open = 0;
    c->dead = 1;
    c->reason = reason;
}

/* Previous locations the app may still use stay while they serve enough
 * demand; below it, a counter runs, and at scale_in_steps they go. */
static void keep_previous(struct ctx *x, size_t n_areas, const uint32_t *prev, const uint16_t *below, size_t n_prev)
{
    for (size_t k = 0; k < n_prev; k++) {
        uint32_t c = consider_site(x, x->w->loc_site[prev[k]]);
        if (c == VG_SCHED_NONE || (x->c[c].open && x->c[c].loc == prev[k]))
            continue;       /* rejected (recorded), or listed twice */
        if (x->c[c].open) { /* an older plan ran it twice in the site: unless the minimum needs it (add_extras) */
            GROW(x->same, x->n_same, x->cap_same);
            x->same[x->n_same++] = prev[k];
            continue;
        }
        if (!usable(x, prev[k])) { /* the site is usable, not this location of it */
            const struct vg__sched_loc *l = &x->loc[prev[k]];
            if (!vg__sched_rules_allow_at(&x->rules, l->tags, l->country, l->region))
                *new_why(x) = why_of(prev[k], VG_SCHED_REJECTED, VG_SCHED_R_POLICY);
            else
                reject_capacity(x, prev[k], short_of(x, prev[k]));
            continue;
        }
        x->c[c].loc = prev[k];
        x->c[c].kept = 1;
        x->c[c].below = below[k];
        x->c[c].gain = 0; /* kept, not gained: the records say so */
        open_cand(x, &x->c[c]);
    }
    if (x->n_open == 0)
        return; /* nothing kept: the gains of add_pair stand */
    x->evaluated = false;
    assign_served(x, n_areas);
    bool closed = false;
    while (x->n_open > x->app->max_locs) { /* the maximum was lowered: the least useful go */
        uint32_t worst = VG_SCHED_NONE;
        for (size_t c = 0; c < x->nc; c++)
            if (x->c[c].open && (worst == VG_SCHED_NONE || x->c[c].served < x->c[worst].served))
                worst = (uint32_t)c;
        close_cand(x, &x->c[worst], VG_SCHED_R_MAX_REACHED);
        x->n_open--;
        closed = true;
    }
    for (size_t c = 0; c < x->nc; c++) {
        struct cand *cd = &x->c[c];
        if (!cd->open)
            continue;
        if (cd->served >= x->app->min_demand_mrps) {
            cd->below = 0;
            cd->reason = VG_SCHED_R_DEMAND_HOLDS;
            continue;
        }
        cd->below = cd->below < UINT16_MAX ? cd->below + 1 : cd->below;
        cd->reason = VG_SCHED_R_HYSTERESIS;
        if (cd->below < x->app->scale_in_steps)
            continue;
        if (x->n_open <= x->app->min_locs) { /* the minimum stays: swapping it would be churn for nothing */
            cd->reason = VG_SCHED_R_MIN_COUNT;
            continue;
        }
        close_cand(x, cd, VG_SCHED_R_SCALED_IN);
        x->n_open--;
        closed = true;
    }
    if (closed)
        recompute_cur(x, n_areas);
}

/* Opens c during the greedy: its areas get nearer, and every live
 * candidate sharing one of them loses what it would have gained there (a
 * walk over those areas' pairs, not over the candidates): gains stay
 * exact, so the greedy needs no re-evaluation. Open and dead candidates
 * keep the figures they were decided with. */
static void open_live(struct ctx *x, struct cand *c)
{
    uint32_t target = x->app->target_us;
    c->open = 1;
    x->n_open++;
    for (uint32_t k = c->first; k != VG_SCHED_NONE; k = x->pr[k].next) {
        const struct pair *v = &x->pr[k];
        uint32_t i = v->area, old = x->cur[i], now = v->rtt;
        if (now >= old)
            continue;
        uint64_t w = x->wa[i];
        if (old > target && now <= target)
            x->within += w;
        x->cur[i] = now;
        for (uint32_t p = x->area_start[i]; p < x->area_start[i + 1]; p++) {
            const struct pair *pr = &x->pr[p];
            struct cand *o = &x->c[pr->cand];
            if (pr->rtt >= old || o->open || o->dead)
                continue;
            if (pr->rtt < now) {
                o->gain -= w * (old - now);
            } else {
                o->gain -= w * (old - pr->rtt);
                o->served -= w;
            }
        }
    }
}

/* --- the greedy ---------------------------------------------------------------- */

static bool eligible(const struct ctx *x, const struct cand *c)
{
    return c->gain > 0 && c->served >= x->app->min_demand_mrps;
}

static void drop_below(struct cand *c)
{
    c->dead = 1;
    c->reason = VG_SCHED_R_BELOW_DEMAND;
}

/* The candidates left when the greedy stops are rejected for reason (no
 * gain at all says so), with their gains as of now. */
static void reject_left(struct ctx *x, uint8_t reason)
{
    x->left_reason = reason; /* applied by commit, which passes over them anyway */
    x->n_live = 0;
}

/* A bucket per quarter octave of gain (the gain's top three bits): a
 * larger gain is never in a lower bucket, so the best is in the highest
 * non-empty bucket, found by comparing that bucket's few members. */
static int bucket_of(uint64_t gain)
{
    int msb = 63 - __builtin_clzll(gain);
    /* the two bits below the top one, without a branch on small gains */
    unsigned sub = (unsigned)((gain << (63 - msb)) >> 61) & 3;
    return 4 * msb + (int)sub;
}

static void bucket_push(struct ctx *x, struct buckets *s, int b, uint32_t t)
{
    x->next[t] = s->head[b];
    s->head[b] = t;
    if (b > s->top)
        s->top = b;
}

/* The best eligible candidate (exact), or NONE. Members sit in the bucket
 * of their gain when put there; gains only shrink, so one found lower now
 * moves down (or to the other set, no longer eligible) as it is met. */
static uint32_t best_eligible(struct ctx *x)
{
    struct buckets *e = &x->bs[0];
    for (; e->top >= 0; e->top--) {
        int b = e->top;
        uint32_t list = e->head[b], kept = VG_SCHED_NONE, best = VG_SCHED_NONE;
        e->head[b] = VG_SCHED_NONE;
        while (list != VG_SCHED_NONE) {
            uint32_t t = list;
            const struct cand *c = &x->c[t];
            list = x->next[t];
            if (c->open) /* taken below the minimum */
                continue;
            if (!eligible(x, c)) {
                if (c->gain > 0) /* zero gains stay out: rejected at the end */
                    bucket_push(x, &x->bs[1], bucket_of(c->gain), t);
                continue;
            }
            int fb = bucket_of(c->gain);
            if (fb < b) {
                bucket_push(x, e, fb, t);
                continue;
            }
            x->next[t] = kept;
            kept = t;
            if (best == VG_SCHED_NONE || better(x, t, best))
                best = t;
        }
        e->head[b] = kept;
        if (best == VG_SCHED_NONE)
            continue;
        for (uint32_t *at = &e->head[b];; at = &x->next[*at]) /* unlink it */
            if (*at == best) {
                *at = x->next[best];
                break;
            }
        return best;
    }
    return VG_SCHED_NONE;
}

/* Below the demand threshold, what ranks above best (everything with a
 * gain when best is NONE) goes: the greedy would have taken it first.
 * Only the buckets from best's up can hold such. */
static void drop_above(struct ctx *x, uint32_t best)
{
    struct buckets *r = &x->bs[1];
    int low = best == VG_SCHED_NONE ? 0 : bucket_of(x->c[best].gain);
    for (int b = r->top; b >= low; b--) {
        uint32_t list = r->head[b], kept = VG_SCHED_NONE;
        r->head[b] = VG_SCHED_NONE;
        while (list != VG_SCHED_NONE) {
            uint32_t t = list;
            struct cand *c = &x->c[t];
            list = x->next[t];
            if (c->gain == 0 || c->open)
                continue; /* rejected at the end, or taken below the minimum */
            if (best == VG_SCHED_NONE || better(x, t, best)) {
                drop_below(c);
                x->n_live--;
                continue;
            }
            int fb = bucket_of(c->gain);
            if (fb < b) {
                bucket_push(x, r, fb, t);
                continue;
            }
            x->next[t] = kept;
            kept = t;
        }
        r->head[b] = kept;
    }
    while (r->top >= 0 && r->head[r->top] == VG_SCHED_NONE)
        r->top--;
}

/* The greedy proper: each step opens the candidate with the largest gain
 * (ties: cost, then location). Below the minimum count it takes whatever
 * ranks first; past it, a candidate serving less than min_demand is
 * dropped when it would have been taken (served only shrinks: it never
 * comes back), and a largest gain of zero ends it. Gains are kept exact
 * (open_live), so a step needs no re-evaluation, only the best eligible
 * and what ranks above it, from two sets of gain buckets (eligible, and
 * below the demand threshold). The decisions and records are those of
 * the lazy greedy over one heap of all candidates, ties included. */
static void greedy(struct ctx *x)
{
    const struct vg_sched_app *app = x->app;
    if (x->cl < x->nc + 1) {
        x->cl = x->nc + 1;
        x->next = vg_xrealloc(x->next, x->cl * sizeof(*x->next));
        x->ol = vg_xrealloc(x->ol, x->cl * sizeof(*x->ol));
    }
    x->n_live = 0;
    for (int s = 0; s < 2; s++) {
        memset(x->bs[s].head, 0xff, sizeof(x->bs[s].head));
        x->bs[s].top = -1;
    }
    /* one pass: gains, the first pick, and the buckets (entries that the
     * minimum's picks below make stale are fixed as they are met) */
    uint32_t first = VG_SCHED_NONE;
    uint64_t first_gain = 0; /* first's: a lower gain cannot rank above it */
    for (size_t i = 0; i < x->nc; i++) {
        struct cand *c = &x->c[i];
        if (c->open || c->dead)
            continue;
        if (!x->evaluated)
            eval_gain(x, c);
        x->n_live++;
        if (first == VG_SCHED_NONE || (c->gain >= first_gain && better(x, (uint32_t)i, first)))
            first = (uint32_t)i, first_gain = c->gain;
        if (c->gain > 0)
            bucket_push(x, &x->bs[eligible(x, c) ? 0 : 1], bucket_of(c->gain), (uint32_t)i);
    }
    while (x->n_live && x->n_open < app->min_locs) { /* max >= min: neither stop applies yet */
        if (first == VG_SCHED_NONE)
            for (size_t c = 0; c < x->nc; c++)
                if (!x->c[c].open && !x->c[c].dead && (first == VG_SCHED_NONE || better(x, (uint32_t)c, first)))
                    first = (uint32_t)c;
        struct cand *c = &x->c[first];
        c->reason = c->served < app->min_demand_mrps ? VG_SCHED_R_MIN_COUNT : VG_SCHED_R_GAIN;
        open_live(x, c);
        x->n_live--;
        first = VG_SCHED_NONE;
    }
    for (;;) {
        if (!x->n_live)
            return;
        if (x->n_open >= app->max_locs)
            return reject_left(x, VG_SCHED_R_MAX_REACHED);
        if (target_met(x))
            return reject_left(x, VG_SCHED_R_TARGET_MET);
        uint32_t best = best_eligible(x);
        drop_above(x, best);
        if (best == VG_SCHED_NONE) /* zero gains are left, if anything */
            return reject_left(x, VG_SCHED_R_NO_GAIN);
        struct cand *c = &x->c[best];
        c->reason = VG_SCHED_R_GAIN;
        open_live(x, c);
        x->n_live--;
    }
}

/* Swaps: each location the greedy added may be exchanged for one of the
 * best rejected candidates if that lowers the objective without losing
 * the target or the demand threshold; repeated while a pass improves, at
 * most SWAP_PASSES. Small pools (SWAP_ALL candidates or fewer) try every
 * exchange, larger ones the SWAP_TRIES best by gain: the work stays
 * bounded per app. Previous (kept) locations never move: that is the
 * stability rule. */
/* A parallel placement's record of the alternatives tried (check_ahead). */
static __attribute__((noinline)) void note_alts(struct ctx *x, const uint32_t *alt, size_t n_alt)
{
    for (size_t i = 0; i < n_alt; i++) {
        GROW(x->alts, x->n_alts, x->cap_alts);
        x->alts[x->n_alts++] = x->c[alt[i]].loc;
    }
}

static size_t pick_alternatives(struct ctx *x, uint32_t *alt, size_t max, bool list_open)
{
    size_t n_alt = 0;
    uint64_t floor = 0; /* once full: the last one's gain; below it nothing gets in */
    if (list_open)      /* the same pass lists the open ones */
        x->n_ol = 0;
    for (size_t c = 0; c < x->nc; c++) {
        struct cand *cd = &x->c[c];
        if (cd->open) {
            if (list_open)
                x->ol[x->n_ol++] = (uint32_t)c;
            continue;
        }
        if (cd->gain < floor || cd->kept || cd->dead == 2 || cd->reason == VG_SCHED_R_BELOW_DEMAND)
            continue;
        size_t i = n_alt < max ? n_alt++ : max;
        while (i > 0 && better(x, (uint32_t)c, alt[i - 1])) {
            if (i < max)
                alt[i] = alt[i - 1];
            i--;
        }
        if (i < max)
            alt[i] = (uint32_t)c;
        if (n_alt == max)
            floor = x->c[alt[max - 1]].gain;
    }
    if (x->spec)
        note_alts(x, alt, n_alt);
    return n_alt;
}

static bool swap_pass(struct ctx *x, size_t n_areas, const uint32_t *alt, size_t n_alt, bool met)
{
    uint64_t within, obj = best_two(x, n_areas, &within);
    bool improved = false;
    /* the open ones in index order, as they are when met: one swapped in
     * above the current index is met later in the same pass */
    for (size_t j = 0; j < x->n_ol; j++) {
        uint32_t c = x->ol[j];
        struct cand *out = &x->c[c];
        if (out->kept || out->reason == VG_SCHED_R_STATIC)
            continue;
        uint64_t loss, lost_within;
        swap_loss(x, (uint32_t)c, &loss, &lost_within);
        uint32_t best = VG_SCHED_NONE;
        uint64_t best_gain = loss; /* a swap must gain more than closing out loses */
        for (size_t k = 0; k < n_alt; k++) {
            struct cand *in = &x->c[alt[k]];
            if (in->open || in->dead == 2)
                continue;
            uint64_t won, served, g = swap_gain(x, (uint32_t)c, alt[k], &won, &served);
            uint64_t w2 = within - lost_within + won;
            if (g <= best_gain || (met && w2 * 100 < x->total * x->app->percentile) || served < x->app->min_demand_mrps)
                continue;
            best = alt[k];
            best_gain = g;
        }
        if (best == VG_SCHED_NONE)
            continue;
        struct cand *in = &x->c[best];
        uint8_t was = out->reason;
        out->open = 0;
        out->dead = 2; /* never back: no cycles */
        out->reason = VG_SCHED_R_SWAPPED;
        in->open = 1;
        in->dead = 0;
        in->reason = was == VG_SCHED_R_MIN_COUNT ? VG_SCHED_R_MIN_COUNT : VG_SCHED_R_GAIN;
        size_t at = j; /* out's place; in goes where its index sorts */
        for (; at + 1 < x->n_ol && x->ol[at + 1] < best; at++)
            x->ol[at] = x->ol[at + 1];
        for (; at > 0 && x->ol[at - 1] > best; at--)
            x->ol[at] = x->ol[at - 1];
        x->ol[at] = best;
        if (best < c) /* the next to look at is the first above c, now one place on */
            j++;
        j--;
        obj = best_two(x, n_areas, &within); /* the lists changed: measure again */
        improved = true;
    }
    (void)obj;
    return improved;
}

static void local_search(struct ctx *x, size_t n_areas)
{
    size_t max = x->nc <= SWAP_ALL ? SWAP_ALL : SWAP_TRIES;
    uint32_t alt[SWAP_ALL];
    size_t n_alt = pick_alternatives(x, alt, max, true);
    uint64_t within;
    best_two(x, n_areas, &within);
    bool met = within * 100 >= x->total * x->app->percentile, any = false;
    for (int pass = 0; pass < SWAP_PASSES; pass++) {
        if (pass > 0)
            n_alt = pick_alternatives(x, alt, max, false);
        if (n_alt == 0 || !swap_pass(x, n_areas, alt, n_alt, met))
            break;
        any = true;
    }
    if (any)
        recompute_cur(x, n_areas);
}

/* The location of t[0, n) (points q) with the largest dot product with
 * v, then the cheapest, then the lowest index; among the usable ones
 * only, or NONE. */
static uint32_t pick_location(const struct ctx *x, const uint32_t *t, const struct vg_geo_xyz *q, uint32_t n,
                              const double *v, bool only_usable)
{
    uint32_t best = VG_SCHED_NONE;
    double best_dot = -HUGE_VAL;
    for (uint32_t i = 0; i < n; i++) {
        double dot = q[i].x * v[0] + q[i].y * v[1] + q[i].z * v[2];
        if (dot < best_dot || (only_usable && !usable(x, t[i])))
            continue;
        if (best == VG_SCHED_NONE || dot > best_dot || x->w->hot[t[i]].cost < x->w->hot[best].cost)
            best = t[i], best_dot = dot;
    }
    return best;
}

/* The site's location for demand in direction v, as choose_locations
 * picks it: the best of all, then (if that one is not usable: the
 * favourite fills) of the usable ones: the points are side by side, the
 * records are not. NONE when none is usable. */
static uint32_t pick_in_site(const struct ctx *x, uint32_t site, const double *v)
{
    uint32_t n;
    const uint32_t *t = vg__sched_site_locs(x->w, site, &n);
    const struct vg_geo_xyz *q = &x->w->site_xyz[x->w->site_start[site]];
    uint32_t best = pick_location(x, t, q, n, v, false);
    return usable(x, best) ? best : pick_location(x, t, q, n, v, true);
}

/* With measured RTTs, geometry is not latency: the usable location of
 * t[0, n) with the least demand-weighted latency to the areas candidate
 * oc serves, then the cheapest, then the lowest index; or NONE. */
static uint32_t pick_measured(const struct ctx *x, uint32_t oc, const uint32_t *t, uint32_t n)
{
    const struct vg_sched_demand_entry *e = x->demand[x->app_idx].e;
    uint32_t best = VG_SCHED_NONE;
    uint64_t best_sum = UINT64_MAX;
    for (uint32_t i = 0; i < n; i++) {
        if (!usable(x, t[i]))
            continue;
        uint64_t sum = 0;
        for (uint32_t k = x->c[oc].first; k != VG_SCHED_NONE; k = x->pr[k].next)
            if (x->c1[x->pr[k].area] == oc)
                sum += (uint64_t)x->wa[x->pr[k].area] * vg_sched_rtt_us(x->w, e[x->pr[k].area].area, t[i]);
        if (sum < best_sum || (sum == best_sum && x->w->hot[t[i]].cost < x->w->hot[best].cost))
            best = t[i], best_sum = sum;
    }
    return best;
}

/* The location each chosen site runs the app at: a kept one stays where
 * it was; else (without measured RTTs) the usable one nearest the demand
 * the site serves (the largest dot product with the demand-weighted sum
 * of its areas' points: the nearest direction), then the cheapest, then
 * the lowest index. The local search's last best_two left each area's
 * best open candidate in c1. */
static void choose_locations(struct ctx *x)
{
    const struct vg_sched_world *w = x->w;
    const struct vg_sched_demand_entry *e = x->demand[x->app_idx].e;
    for (size_t j = 0; j < x->n_ol; j++) {
        uint32_t oc = x->ol[j], n;
        struct cand *c = &x->c[oc];
        const uint32_t *t = vg__sched_site_locs(w, c->site, &n);
        if (c->kept || n == 1)
            continue;
        if (w->n_ovr != 0) {
            uint32_t best = pick_measured(x, oc, t, n);
            VG_ASSERT(best != VG_SCHED_NONE || x->spec); /* as below */
            c->loc = best != VG_SCHED_NONE ? best : c->loc;
            continue;
        }
        double v[3] = {0, 0, 0};
        for (uint32_t k = c->first; k != VG_SCHED_NONE; k = x->pr[k].next) {
            const struct pair *p = &x->pr[k];
            if (x->c1[p->area] != oc)
                continue;
            const struct vg_geo_xyz *q = &w->area_xyz[e[p->area].area];
            double wt = (double)x->wa[p->area] + 1; /* + 1: areas without demand still point somewhere */
            v[0] += wt * q->x, v[1] += wt * q->y, v[2] += wt * q->z;
        }
        uint32_t best = pick_in_site(x, c->site, v);
        /* the site was a candidate: one of its locations was usable, unless
         * placing ahead and another thread took it since (the commit sees
         * that its location is not usable) */
        VG_ASSERT(best != VG_SCHED_NONE || x->spec);
        c->loc = best != VG_SCHED_NONE ? best : c->loc;
    }
}

static bool is_extra(const struct ctx *x, uint32_t loc, size_t *at)
{
    for (size_t i = 0; i < x->n_extra; i++)
        if (x->extra[i] == loc) {
            *at = i;
            return true;
        }
    return false;
}

static bool add_extra(struct ctx *x, uint32_t loc)
{
    size_t at;
    if (x->c[slot_of(x, loc)].loc == loc || is_extra(x, loc, &at) || !usable(x, loc))
        return false;
    if (x->n_extra == x->cap_extra) {
        x->cap_extra = x->cap_extra ? 2 * x->cap_extra : 8;
        x->extra = vg_xrealloc(x->extra, x->cap_extra * sizeof(*x->extra));
        x->extra_served = vg_xrealloc(x->extra_served, x->cap_extra * sizeof(*x->extra_served));
    }
    x->extra[x->n_extra++] = loc;
    return true;
}

/* One location per site, unless the app's minimum asks for more than the
 * sites it may use hold: then more locations of the chosen sites, the
 * previous ones first (no churn), then in each site's order. The
 * previous locations not taken are recorded as replaced by their site's. */
static void add_extras(struct ctx *x)
{
    x->n_extra = 0;
    for (size_t k = 0; k < x->n_same && x->n_ol + x->n_extra < x->app->min_locs; k++)
        add_extra(x, x->same[k]);
    for (size_t j = 0; j < x->n_ol && x->n_ol + x->n_extra < x->app->min_locs; j++) {
        uint32_t n;
        const uint32_t *t = vg__sched_site_locs(x->w, x->c[x->ol[j]].site, &n);
        for (uint32_t i = 0; i < n && x->n_ol + x->n_extra < x->app->min_locs; i++)
            add_extra(x, t[i]);
    }
    for (size_t k = 0; k < x->n_same; k++) {
        size_t at;
        if (!is_extra(x, x->same[k], &at))
            *new_why(x) = why_of(x->same[k], VG_SCHED_REJECTED, VG_SCHED_R_SAME_SITE);
    }
}

static void place_dynamic(struct ctx *x, const uint32_t *prev, const uint16_t *below, size_t n_prev)
{
    const struct vg_sched_demand *d = &x->demand[x->app_idx];
    build_pairs(x, d);
    for (size_t k = 0; k < n_prev; k++) /* so that they are candidates, with their lists */
        consider_site(x, x->w->loc_site[prev[k]]);
    keep_previous(x, d->n, prev, below, n_prev);
    greedy(x);
    local_search(x, d->n);
    choose_locations(x);
    add_extras(x);
}

/* --- the static policy ------------------------------------------------------- */

static int place_static(struct ctx *x, struct vg_sched_error *err)
{
    const struct vg_sched_app *app = x->app;
    for (size_t k = 0; k < app->n_static; k++) {
        uint32_t loc = app->static_locs[k];
        char buf[200];
        const char *why = loc < x->w->n_locs ? vg_sched_enforce_check(x->w, app, loc, buf, sizeof(buf)) : NULL;
        if (loc >= x->w->n_locs || why) {
            err->app = x->app_idx;
            snprintf(err->msg, sizeof(err->msg), "app %s: static location %s: %s", app->name,
                     loc < x->w->n_locs ? x->w->locs[loc].id : "(unknown index)", why ? why : "no such location");
            return VG_EINVAL;
        }
        if (x->seen[loc].mark == x->stamp)
            continue; /* listed twice */
        uint32_t c = consider(x, loc);
        if (c == VG_SCHED_NONE)
            continue; /* capacity: recorded */
        x->c[c].reason = VG_SCHED_R_STATIC;
        x->c[c].open = 1;
        x->n_open++;
    }
    return 0;
}

/* --- results ----------------------------------------------------------------- */

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* An app's few locations in ascending order: insertion sort below a few
 * dozen (qsort's merge sort and its calls through cmp_u32 were 1.4% of a
 * full placement for ~7 locations an app). */
static void sort_locs(uint32_t *v, size_t n)
{
    if (n > 32) {
        qsort(v, n, sizeof(*v), cmp_u32);
        return;
    }
    for (size_t i = 1; i < n; i++) {
        uint32_t t = v[i];
        size_t j = i;
        for (; j > 0 && v[j - 1] > t; j--)
            v[j] = v[j - 1];
        v[j] = t;
    }
}

/* The nearest chosen location among the i-th area's pairs, when it is
 * the nearest chosen location overall: without measured RTTs latency
 * grows with the chord, and a location of a site outside the area's
 * nearest sites is no nearer than the list's last, so a chosen one below
 * that latency wins. The nearest is the smallest chord, then the lowest
 * location (latency, a step function of the chord, then the chord: the
 * same order), as the search over every chosen location decides; only
 * its latency is computed. Residency, policy and capacity were applied
 * when the pairs were made. */
static bool pair_nearest(void *arg, size_t i, uint32_t *loc, uint32_t *rtt_us)
{
    const struct ctx *x = arg;
    const struct vg_sched_world *w = x->w;
    uint32_t a = x->demand[x->app_idx].e[i].area, n = w->n_snear[a];
    uint32_t bound = n == w->n_sites  ? UINT32_MAX
                     : n < w->snear_k ? 0
                                      : w->snear[(size_t)a * w->snear_k + n - 1].rtt_us;
    /* c1 and b2: the area's best open site and the second-best open
     * site's latency, from the local search's last best_two (the open set
     * is final). A site's latency is its nearest location's: every chosen
     * location of another open site in the list is at b2 or more */
    uint32_t oc = x->c1[i];
    if (w->n_ovr != 0 || oc == VG_SCHED_NONE)
        return false;
    uint32_t best = x->c[oc].loc, rtt = vg__sched_rtt_chord2(vg__sched_chord2(w, a, best)); /* the model's */
    if (rtt >= bound || rtt >= x->b2[i])
        return false;
    *loc = best;
    *rtt_us = rtt;
    return true;
}

/* What a placement made ahead leaves for its commit in x->rec_locs: its
 * records' locations (n_why), then for each candidate record the
 * rejections recorded before the candidate was made (n_cand), then
 * (dynamic apps) where each demand entry's pairs begin and the end
 * (d->n + 1), then each entry's best open site (d->n): with the world's
 * areas by location (struct par), what a repair needs to know of a gone
 * candidate without walking the app's nearest lists again, and what
 * rechoose needs of a chosen site's demand. Makes room for all of it and
 * returns where the second part goes (commit writes it as it writes the
 * records). */
static uint32_t *note_room(struct ctx *x, size_t n_why, size_t n_cand)
{
    size_t n = n_why + n_cand + 2 * x->demand[x->app_idx].n + 2;
    if (x->cap_rec_locs < n) {
        x->cap_rec_locs = n;
        x->rec_locs = vg_xrealloc(x->rec_locs, n * sizeof(*x->rec_locs));
    }
    return x->rec_locs + n_why;
}

/* The records' locations (4 bytes a record, not 32: the commit searches
 * them) and the areas' pair starts (note_room). */
static void note_records(struct ctx *x, const struct vg__sched_app_plan *ap, size_t n_cand)
{
    bool dyn = x->app->mode == VG_SCHED_DYNAMIC; /* a dynamic app's records are searched by site */
    for (size_t i = 0; i < ap->n_why; i++)
        x->rec_locs[i] = dyn ? x->w->loc_site[ap->why[i].loc] : ap->why[i].loc;
    if (!dyn)
        return;
    size_t n = x->demand[x->app_idx].n;
    uint32_t *starts = x->rec_locs + ap->n_why + n_cand, *best = starts + n + 1;
    memcpy(starts, x->area_start, (n + 1) * sizeof(*x->area_start));
    for (size_t i = 0; i < n; i++) /* each area's best open site (choose_locations' directions) */
        best[i] = x->c1[i] == VG_SCHED_NONE ? VG_SCHED_NONE : x->c[x->c1[i]].site;
}

/* The candidates' records (those left, dropped and swapped out), field
 * by field (a compound literal went through the stack); with note, each
 * one's rejection count too (note_room). */
static inline void write_rejected(struct ctx *x, struct vg__sched_app_plan *ap, uint32_t *nw0, bool note)
{
    struct vg_sched_why *y = &ap->why[ap->n_why];
    uint8_t left = x->left_reason;
    for (size_t c = 0; c < x->nc; c++) {
        const struct cand *cd = &x->c[c];
        if (cd->open)
            continue;
        y->loc = cd->loc;
        y->verdict = VG_SCHED_REJECTED;
        y->reason = cd->dead ? cd->reason : cd->gain == 0 ? VG_SCHED_R_NO_GAIN : left;
        y->resource = VG_SCHED_RES_NONE;
        y->below = cd->below;
        y->by_app = VG_SCHED_NONE;
        y->demand_mrps = cd->served;
        y->gain = cd->gain;
        y++;
        if (note)
            *nw0++ = x->nw0[cd - x->c];
    }
    ap->n_why = (size_t)(y - ap->why);
}

static void commit(struct ctx *x)
{
    struct vg__sched_app_plan *ap = x->out ? x->out : &x->plan->apps[x->app_idx];
    size_t n = x->n_open + x->n_extra, at;
    vg__sched_app_plan_alloc(ap, n, n + x->nc + x->nw, x->demand[x->app_idx].n);
    if (x->app->mode == VG_SCHED_DYNAMIC) { /* the local search's list of them */
        for (size_t j = 0; j < x->n_ol; j++)
            ap->locs[ap->n_locs++] = x->c[x->ol[j]].loc;
        for (size_t i = 0; i < x->n_extra; i++)
            ap->locs[ap->n_locs++] = x->extra[i];
    } else {
        for (size_t c = 0; c < x->nc && ap->n_locs < x->n_open; c++)
            if (x->c[c].open)
                ap->locs[ap->n_locs++] = x->c[c].loc;
    }
    VG_ASSERT(ap->n_locs == n);
    sort_locs(ap->locs, ap->n_locs);
    for (size_t k = 0; k < ap->n_locs; k++) {
        uint32_t c = slot_of(x, ap->locs[k]);
        ap->below[k] = is_extra(x, ap->locs[k], &at) ? 0 : x->c[c].below;
        if (x->preempt)
            make_room(x, ap->locs[k]);
        if (!x->spec) /* else the committer holds them once it knows they are right */
            vg__sched_plan_hold(x->plan, x->apps, x->app_idx, ap->locs[k]);
    }
    /* an area's nearest chosen location may be an extra one: searched for */
    vg__sched_plan_serve(x->w, x->app, &x->demand[x->app_idx], ap,
                         x->app->mode == VG_SCHED_DYNAMIC && !x->n_extra ? pair_nearest : NULL, x, &x->serve);
    /* the records: chosen first (by location), then rejected as found */
    for (size_t k = 0; k < ap->n_locs; k++) /* chosen: served is what they serve now */
        x->c[slot_of(x, ap->locs[k])].served = 0;
    for (size_t i = 0; i < x->n_extra; i++)
        x->extra_served[i] = 0;
    for (size_t i = 0; i < ap->n_served; i++) {
        uint32_t l = ap->served[i].loc;
        if (l == VG_SCHED_NONE)
            continue;
        if (x->n_extra && is_extra(x, l, &at))
            x->extra_served[at] += ap->served[i].mrps;
        else
            x->c[slot_of(x, l)].served += ap->served[i].mrps;
    }
    for (size_t k = 0; k < ap->n_locs; k++) {
        const struct cand *cd = &x->c[slot_of(x, ap->locs[k])];
        struct vg_sched_why y;
        if (x->n_extra && is_extra(x, ap->locs[k], &at)) {
            y = why_of(ap->locs[k], VG_SCHED_CHOSEN, VG_SCHED_R_MIN_COUNT);
            y.demand_mrps = x->extra_served[at];
        } else {
            y = why_of(cd->loc, cd->kept ? VG_SCHED_KEPT : VG_SCHED_CHOSEN, cd->reason);
            y.below = cd->below;
            y.gain = cd->gain;
            y.demand_mrps = cd->served;
        }
        ap->why[ap->n_why++] = y;
    }
    for (size_t i = 0; i < x->nw; i++)
        ap->why[ap->n_why++] = x->why[i];
    size_t n_cand = x->nc - x->n_open; /* the open ones are the chosen */
    if (x->note) {                     /* two loops: the test out of the one-thread one */
        write_rejected(x, ap, note_room(x, ap->n_why + n_cand, n_cand), true);
        note_records(x, ap, n_cand);
    } else {
        write_rejected(x, ap, NULL, false);
    }
}

static uint32_t next_stamp(struct ctx *x)
{
    if (!x->own_seen)
        return vg__sched_plan_stamp(x->plan);
    if (++x->stamp == 0) { /* wrapped: marks from long ago could match */
        memset(x->seen, 0, x->plan->n_locs * sizeof(*x->seen));
        x->stamp = 1;
    }
    return x->stamp;
}

static int place_one(struct ctx *x, uint32_t app, const uint32_t *prev, const uint16_t *below, size_t n_prev,
                     struct vg_sched_error *err)
{
    x->stamp = next_stamp(x);
    x->prev = prev;
    x->n_prev = n_prev;
    x->app = &x->apps[app];
    x->app_idx = app;
    x->nc = x->np = x->nw = x->n_open = 0;
    x->n_extra = x->n_same = 0;
    x->n_alts = 0;
    x->evaluated = true;
    x->left_reason = VG_SCHED_R_NO_GAIN;
    x->total = x->within = 0;
    x->hubs_known = false;
    vg__sched_rules_compile(x->w, x->app, &x->rules);
    if (x->app->mode == VG_SCHED_STATIC) {
        int rc = place_static(x, err);
        if (rc)
            return rc;
    } else {
        place_dynamic(x, prev, below, n_prev);
    }
    commit(x);
    return 0;
}

/* --- entry points ------------------------------------------------------------ */

static int check_app(const struct vg_sched_world *w, const struct vg_sched_app *apps, uint32_t a,
                     const struct vg_sched_demand *d, struct vg_sched_error *err)
{
    const struct vg_sched_app *app = &apps[a];
    const char *bad = NULL;
    if (!app->name)
        bad = "no name";
    else if (app->mode == VG_SCHED_DYNAMIC && (app->percentile < 1 || app->percentile > 100))
        bad = "percentile must be 1 to 100";
    else if (app->mode == VG_SCHED_DYNAMIC && (app->max_locs < 1 || app->min_locs > app->max_locs))
        bad = "min must not exceed max, and max must be at least 1";
    else if (app->enforce.require_tags >> w->n_tags && w->n_tags < 32)
        bad = "a required tag the world does not have";
    for (size_t i = 0; !bad && i < d->n; i++)
        if (d->e[i].area >= w->n_areas)
            bad = "demand from an unknown area";
    if (!bad)
        return 0;
    err->app = a;
    snprintf(err->msg, sizeof(err->msg), "app %s: %s", app->name ? app->name : "?", bad);
    return VG_EINVAL;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Places app from where it was in prev (may be NULL). */
static int place_prev(struct ctx *x, const struct vg_sched_plan *prev, uint32_t app, struct vg_sched_error *err)
{
    const struct vg__sched_app_plan *pp = prev ? &prev->apps[app] : NULL;
    return place_one(x, app, pp ? pp->locs : NULL, pp ? pp->below : NULL, pp ? pp->n_locs : 0, err);
}

/* --- parallel placement ---------------------------------------------------------
 *
 * The sequential placement, apps in priority order, each against the
 * capacity its predecessors left, gives the plan; threads must give the
 * same one, bit for bit. Each thread places the next app in the order
 * ahead, against the capacity as it is while earlier apps are still
 * being placed, without taking any. Commits go strictly in order. An
 * app's placement depends on the world, its policy, demand and previous
 * locations, and on what it saw of capacity: for each location it looked
 * at, whether it fits, and for one rejected for capacity the resource
 * short and the app holding it. Every location it looked at left a record
 * (the usable hubs excepted: see check_ahead), so the committer checks
 * those that the commits made since it began took (a version per
 * location): when what it saw still holds, the placement is the
 * sequential one; when only rejected candidates were taken, it is
 * repaired (see check_ahead); else it is placed again, on the committed
 * capacity. In a full placement capacity only shrinks: a location that
 * fits now fitted then. */
#define PAR_WINDOW 8 /* apps placed ahead of the last commit, at most: bounds how stale a snapshot gets */

enum { PAR_FREE, PAR_TAKEN, PAR_READY, PAR_STOLEN };

struct par_app {
    uint32_t snap; /* commits made when its placement began */
    uint8_t state; /* PAR_*, under mu */
    bool hubs;     /* it listed the usable hubs */
    bool extras;   /* it runs at more than one location of a site (add_extras) */
    int rc;
    struct vg_sched_error *err;    /* rc != 0 only */
    struct vg__sched_app_plan res; /* its placement, until committed */
    uint32_t *rec_locs;            /* its records' locations and more (note_room; ctx's, taken) */
    uint32_t *alts;                /* ctx.alts of its placement */
    size_t n_alts, nw, nc;         /* and its rejections found while looking, and its candidates */
    size_t cap_rec_locs, cap_alts;
};

/* Spare buffers for what a placement made ahead leaves its commit
 * (rec_locs, alts): handed back from commit to placement under mu
 * rather than allocated and freed (across threads) for every app. */
#define PAR_POOL (4 * PAR_WINDOW)

struct par_buf {
    uint32_t *v;
    size_t cap;
};

struct par {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    const struct vg_sched_world *w;
    const struct vg_sched_app *apps;
    size_t n_apps;
    const struct vg_sched_demand *demand;
    const struct vg_sched_plan *prev;
    struct vg_sched_plan *plan;
    const uint32_t *order;
    struct par_app *pa; /* by position in order; pa[j] is set when j is taken (j < next) */
    /* by position: the enforcements its placement compiled (the commit checks with them) */
    struct vg__sched_rules *rules;
    uint32_t *ver;       /* per location: the last commit (1-based) that changed it; the committer's */
    uint32_t *loc_areas; /* the areas whose nearest sites hold each site: loc_areas[loc_at[s], loc_at[s + 1]) */
    uint32_t *loc_at;
    bool own_areas;       /* loc_at and loc_areas are this placement's, not the world's */
    size_t next, commits; /* under mu */
    bool committing;      /* under mu: one committer at a time */
    int rc;               /* the committer's */
    struct vg_sched_error err;
    struct par_buf pool[PAR_POOL]; /* under mu */
    size_t n_pool;
};

/* Under mu. */
static void pool_put(struct par *p, uint32_t **v, size_t cap)
{
    if (*v && p->n_pool < PAR_POOL)
        p->pool[p->n_pool++] = (struct par_buf){*v, cap};
    else
        free(*v);
    *v = NULL;
}

static uint32_t *pool_take(struct par *p, size_t *cap)
{
    *cap = p->n_pool ? p->pool[p->n_pool - 1].cap : 0;
    return p->n_pool ? p->pool[--p->n_pool].v : NULL;
}

/* A committed (or unneeded) placement's buffers go back to the pool. */
static void pool_put_app(struct par *p, struct par_app *pa)
{
    pool_put(p, &pa->rec_locs, pa->cap_rec_locs);
    pool_put(p, &pa->alts, pa->cap_alts);
}

/* What app saw of a location it rejected for capacity, seen again now. */
static bool capacity_same(const struct ctx *x, const struct vg_sched_why *y)
{
    return short_of(x, y->loc) == y->resource && displacer(x, y->loc) == y->by_app;
}

/* What the commit makes of a placement made ahead. */
enum { AHEAD_SAME, AHEAD_REPAIR, AHEAD_RECHOOSE, AHEAD_AGAIN };

static bool has_u32(const uint32_t *v, size_t n, uint32_t x)
{
    for (size_t i = 0; i < n; i++)
        if (v[i] == x)
            return true;
    return false;
}

/* The first index of x in v, or n: eight at a time in vector registers
 * (GCC/Clang vector extensions; the one-by-one search was a quarter of a
 * parallel commit's time, and an index of the records by location cost
 * more to build than it saved). */
typedef uint32_t u32x4 __attribute__((vector_size(16)));

static size_t find_u32(const uint32_t *v, size_t n, uint32_t x)
{
    size_t i = 0;
    u32x4 key = {x, x, x, x};
    for (; i + 8 <= n; i += 8) {
        u32x4 a, b;
        memcpy(&a, v + i, sizeof(a));
        memcpy(&b, v + i + 4, sizeof(b));
        u32x4 m = (u32x4)(a == key) | (u32x4)(b == key);
        if (m[0] | m[1] | m[2] | m[3])
            break;
    }
    for (; i < n; i++)
        if (v[i] == x)
            return i;
    return n;
}

/* Each area's place in the j-th app's demand, in the committer's
 * scratch (x->amark: a stamp per area). */
static uint32_t mark_areas(const struct par *p, struct ctx *x, const struct vg_sched_demand *d)
{
    if (!x->amark) {
        x->amark = vg_xcalloc(p->w->n_areas + 1, sizeof(*x->amark));
        x->aidx = vg_xmalloc((p->w->n_areas + 1) * sizeof(*x->aidx));
    }
    if (++x->astamp == 0) { /* wrapped: old marks could match */
        memset(x->amark, 0, p->w->n_areas * sizeof(*x->amark));
        x->astamp = 1;
    }
    for (size_t i = 0; i < d->n; i++) {
        x->amark[d->e[i].area] = x->astamp;
        x->aidx[d->e[i].area] = (uint32_t)i; /* an area listed twice has the same pairs each time */
    }
    return x->astamp;
}

/* The gone candidates' first sights and pairs: how many rejections were
 * recorded before each was made (x->gone_nw0: its record's place among
 * them, noted by the placement) and the fewest pairs among the app's
 * areas whose nearest lists hold it (x->gone_pairs: the placement's pair
 * counts, the areas found from the world's areas by location). False
 * when one is in none of them (a hub found for a far area, or a previous
 * location: placed again, then). */
static bool gone_info(const struct par *p, struct ctx *x, size_t j)
{
    const struct par_app *pa = &p->pa[j];
    const struct vg_sched_world *w = p->w;
    const struct vg_sched_demand *d = &p->demand[p->order[j]];
    size_t cand0 = pa->res.n_locs + pa->nw, n_cand = pa->res.n_why - cand0;
    const uint32_t *nw0 = pa->rec_locs + pa->res.n_why, *starts = nw0 + n_cand;
    VG_ASSERT(x->app->mode == VG_SCHED_DYNAMIC); /* static apps have no candidate records */
    if (x->cap_gone_info < x->n_gone) {
        x->cap_gone_info = x->n_gone;
        x->gone_nw0 = vg_xrealloc(x->gone_nw0, x->n_gone * sizeof(*x->gone_nw0));
        x->gone_pairs = vg_xrealloc(x->gone_pairs, x->n_gone * sizeof(*x->gone_pairs));
    }
    uint32_t st = mark_areas(p, x, d);
    for (size_t g = 0; g < x->n_gone; g++) {
        uint32_t site = pa->rec_locs[cand0 + x->gone[g]], fewest = UINT32_MAX; /* a dynamic app's: by site */
        for (uint32_t k = p->loc_at[site]; k < p->loc_at[site + 1]; k++) {
            uint32_t a = p->loc_areas[k];
            if (x->amark[a] != st || (x->app->enforce.residency && w->site_region[site] != w->area_region[a]))
                continue; /* not the app's, or not looked at there */
            uint32_t i = x->aidx[a], n_pairs = starts[i + 1] - starts[i];
            fewest = n_pairs < fewest ? n_pairs : fewest;
        }
        if (fewest == UINT32_MAX)
            return false;
        x->gone_nw0[g] = nw0[x->gone[g]];
        x->gone_pairs[g] = fewest;
    }
    return true;
}

/* The areas whose nearest sites hold each site, for gone_info: the
 * world's, or (a measured RTT moved a list since) made here. */
static void index_loc_areas(struct par *p)
{
    p->own_areas = !p->w->site_areas;
    if (p->own_areas) {
        vg__sched_site_areas(p->w, &p->loc_at, &p->loc_areas);
    } else {
        p->loc_at = p->w->site_areas_at;
        p->loc_areas = p->w->site_areas;
    }
}

/* One of the app's previous locations is in the site. */
static bool prev_in_site(const struct vg_sched_world *w, const struct vg__sched_app_plan *pp, uint32_t site)
{
    for (size_t k = 0; pp && k < pp->n_locs; k++)
        if (w->loc_site[pp->locs[k]] == site)
            return true;
    return false;
}

/* The j-th (dynamic) app's first record of each site, in the committer's
 * scratch (x->smark: a stamp per site): a site without a record was not
 * looked at (every site looked at leaves one). */
static void mark_sites(const struct par *p, struct ctx *x, size_t j)
{
    const struct par_app *pa = &p->pa[j];
    if (!x->smark) {
        x->smark = vg_xcalloc(p->w->n_sites + 1, sizeof(*x->smark));
        x->sidx = vg_xmalloc((p->w->n_sites + 1) * sizeof(*x->sidx));
    }
    if (++x->sstamp == 0) { /* wrapped: old marks could match */
        memset(x->smark, 0, p->w->n_sites * sizeof(*x->smark));
        x->sstamp = 1;
    }
    for (size_t i = 0; i < pa->res.n_why; i++) {
        uint32_t site = pa->rec_locs[i];
        if (x->smark[site] != x->sstamp)
            x->smark[site] = x->sstamp, x->sidx[site] = (uint32_t)i;
    }
}

/* The index of the first record of loc's site, or NONE (mark_sites). */
static uint32_t site_record(const struct par *p, const struct ctx *x, uint32_t loc)
{
    uint32_t site = p->w->loc_site[loc];
    return x->smark[site] == x->sstamp ? x->sidx[site] : VG_SCHED_NONE;
}

/* Some location of the site is usable: as consider_site_new finds it,
 * from the site's record first (the committer's, up to date). */
static bool site_usable(const struct ctx *x, uint32_t site)
{
    const struct vg__sched_site *ss = &x->plan->site[site];
    if (x->rules.tags == 0 && !x->preempt && site_record_fits(x, ss) &&
        vg__sched_rules_allow_at(&x->rules, 0, ss->country, ss->region))
        return true;
    uint32_t n;
    const uint32_t *t = vg__sched_site_locs(x->w, site, &n);
    for (uint32_t i = 0; i < n; i++)
        if (usable(x, t[i]))
            return true;
    return false;
}

enum { SITE_SAME = -1, SITE_AGAIN = -2, SITE_MOVED = -3 };

/* What a commit's taking of loc changed for the j-th (dynamic) app,
 * whose placement looked at loc's site (its first record there is the
 * i-th): nothing (SITE_SAME), too much (SITE_AGAIN), only that a
 * candidate is gone (its index among the candidates' records), or that a
 * chosen site's location is no longer usable while the site is
 * (SITE_MOVED: rechoose). A site's candidate depends only on whether one
 * of its locations is usable (its pairs are the site's, its records name
 * the first location the rules allow), a chosen site's location on which
 * are (the best of them: taking another one changes nothing, and a
 * better one taken before the choice was taken before in the sequential
 * placement too). A site with
 * previous locations may hold several records: placed again unless it
 * is kept and loc is not the kept one or still fits. */
static long site_changed(const struct par *p, struct ctx *x, size_t j, uint32_t loc, size_t i,
                         const struct vg__sched_app_plan *pp)
{
    const struct par_app *pa = &p->pa[j];
    const struct vg__sched_app_plan *ap = &pa->res;
    uint32_t site = p->w->loc_site[loc];
    size_t rej0 = ap->n_locs, cand0 = rej0 + pa->nw;
    bool fits = usable(x, loc);
    struct vg_sched_why *y = &p->pa[j].res.why[i];
    if (prev_in_site(p->w, pp, site))
        return i < rej0 && y->verdict == VG_SCHED_KEPT && (y->loc != loc || fits) ? SITE_SAME : SITE_AGAIN;
    if (y->reason == VG_SCHED_R_POLICY)
        return SITE_SAME;
    if (i < rej0) { /* chosen: where it runs must still be usable, or the site (rechoose) */
        if (usable(x, y->loc))
            return SITE_SAME;
        uint32_t n;
        vg__sched_site_locs(p->w, site, &n);
        return p->w->n_ovr == 0 && n > 1 && y->verdict == VG_SCHED_CHOSEN && site_usable(x, site) ? SITE_MOVED
                                                                                                  : SITE_AGAIN;
    }
    if (i < cand0) {              /* rejected for capacity, and still: capacity only shrinks */
        if (site_usable(x, site)) /* what it read of the site's record was being written */
            return SITE_AGAIN;
        if (!capacity_same(x, y)) {
            uint8_t res = short_of(x, y->loc);
            if (res == VG_SCHED_RES_NONE) /* cannot happen in a full placement: be safe */
                return SITE_AGAIN;
            capacity_why(x, y->loc, res, y); /* only this record changed */
        }
        return SITE_SAME;
    }
    if (site_usable(x, site))
        return SITE_SAME;
    if (y->reason == VG_SCHED_R_SWAPPED || has_u32(pa->alts, pa->n_alts, y->loc))
        return SITE_AGAIN;
    return (long)(i - cand0);
}

/* Whether what the j-th app's placement saw of capacity still holds:
 * every location it looked at that a commit since changed must look the
 * same, except a candidate it rejected that no longer fits (the usual
 * change: another app took it). Such a candidate, never open (kept or
 * swapped out) nor tried by the local search, changed nothing but its
 * own record, as long as each of its areas keeps a pair (else a hub would
 * have been looked for) and the local search's pool keeps its size
 * class: then the placement is repaired (its record becomes a capacity
 * one, where the sequential placement would have written it) rather than
 * made again. The gone ones are listed in x->gone. A location it rejected
 * for capacity still is rejected (capacity only shrinks): when the
 * resource short or the holder changed, its record is rewritten as the
 * sequential placement writes it, in place. */
static int check_ahead(const struct par *p, struct ctx *x, size_t j)
{
    const struct par_app *pa = &p->pa[j];
    uint32_t app = p->order[j];
    x->app = &p->apps[app];
    const struct vg__sched_app_plan *ap = &pa->res, *pp = p->prev ? &p->prev->apps[app] : NULL;
    size_t rej0 = ap->n_locs, cand0 = rej0 + pa->nw; /* the records: chosen, rejections, candidates */
    bool dyn = x->app->mode == VG_SCHED_DYNAMIC;
    x->rules = p->rules[j];         /* the placement's: which locations are usable */
    bool marked = false;            /* mark_sites, once needed */
    x->prev = pp ? pp->locs : NULL; /* DISPLACED is said of previous locations (capacity_why) */
    x->n_prev = pp ? pp->n_locs : 0;
    x->n_gone = x->n_moved = 0;
    /* the locations changed since it began: what the commits in between took */
    for (size_t k = pa->snap; k < j; k++) {
        const struct vg__sched_app_plan *held = &p->plan->apps[p->order[k]];
        for (size_t h = 0; h < held->n_locs; h++) {
            uint32_t loc = held->locs[h];
            if (p->ver[loc] != k + 1) /* taken again later: seen there */
                continue;
            bool fits = vg__sched_fits(&x->loc[loc], x->app);
            if (dyn && !marked)
                mark_sites(p, x, j), marked = true;
            /* its record: a dynamic app's are found by site */
            size_t i = dyn ? site_record(p, x, loc) : find_u32(pa->rec_locs, ap->n_why, loc);
            i = i == VG_SCHED_NONE ? ap->n_why : i;
            if (pa->hubs && !fits && has_u32(p->w->hubs, p->w->n_hubs, loc)) {
                /* the usable hubs were listed from every hub's capacity: one
                 * the rules allow that no longer fits may have fitted then.
                 * Unless a far area chose it (it has a record then), it
                 * changed nothing: each far area takes the lowest latency,
                 * then index, of the list, which it was not */
                if (vg__sched_rules_allow(p->w, &x->rules, loc)) {
                    if (i < ap->n_why)
                        return AHEAD_AGAIN;
                    continue; /* not looked at but listed */
                }
            }
            if (i == ap->n_why)
                continue;          /* not looked at */
            if (dyn && pa->extras) /* rare: a site's several locations, not checked one by one */
                return AHEAD_AGAIN;
            if (dyn) {
                long r = site_changed(p, x, j, loc, i, pp);
                if (r == SITE_AGAIN)
                    return AHEAD_AGAIN;
                if (r == SITE_MOVED) {
                    if (!has_u32(x->moved, x->n_moved, (uint32_t)i)) {
                        GROW(x->moved, x->n_moved, x->cap_moved);
                        x->moved[x->n_moved++] = (uint32_t)i;
                    }
                    continue;
                }
                if (r != SITE_SAME && !has_u32(x->gone, x->n_gone, (uint32_t)r)) {
                    GROW(x->gone, x->n_gone, x->cap_gone);
                    size_t at = x->n_gone++; /* kept in record order */
                    for (; at > 0 && x->gone[at - 1] > (uint32_t)r; at--)
                        x->gone[at] = x->gone[at - 1];
                    x->gone[at] = (uint32_t)r;
                }
                continue;
            }
            if (ap->why[i].reason == VG_SCHED_R_POLICY)
                continue; /* not for its capacity */
            const struct vg_sched_why *y = &ap->why[i];
            if (i >= rej0 && i < cand0) { /* rejected for capacity, and still: capacity only shrinks */
                if (!capacity_same(x, y)) {
                    uint8_t res = short_of(x, loc);
                    if (res == VG_SCHED_RES_NONE) /* cannot happen in a full placement: be safe */
                        return AHEAD_AGAIN;
                    /* the resource short or the holder changed: only this
                     * record did, and it becomes the sequential one */
                    capacity_why(x, loc, res, &p->pa[j].res.why[i]);
                }
                continue;
            }
            if (fits)
                continue;
            if (i < cand0 || y->reason == VG_SCHED_R_SWAPPED || has_u32(pa->alts, pa->n_alts, loc) ||
                (pp && has_u32(pp->locs, pp->n_locs, loc)))
                return AHEAD_AGAIN;
            GROW(x->gone, x->n_gone, x->cap_gone);
            size_t at = x->n_gone++; /* kept in record order */
            for (; at > 0 && x->gone[at - 1] > i - cand0; at--)
                x->gone[at] = x->gone[at - 1];
            x->gone[at] = (uint32_t)(i - cand0);
        }
    }
    if (x->n_moved)
        return x->n_gone ? AHEAD_AGAIN : AHEAD_RECHOOSE; /* both at once: rare */
    if (x->n_gone == 0)
        return AHEAD_SAME;
    if ((pa->nc <= SWAP_ALL) != (pa->nc - x->n_gone <= SWAP_ALL) || !gone_info(p, x, j))
        return AHEAD_AGAIN;
    for (size_t g = 0; g < x->n_gone; g++)
        if (x->gone_pairs[g] <= x->n_gone) /* an area could have lost all its pairs */
            return AHEAD_AGAIN;
    return AHEAD_REPAIR;
}

/* The records as the sequential placement writes them, the gone
 * candidates rejected for capacity: chosen, then rejections in the order
 * met (a gone candidate's where its first sight was: after the nw0
 * rejections made before it), then the candidates left. */
static void repair(const struct par *p, struct ctx *x, size_t j)
{
    struct par_app *pa = &p->pa[j];
    struct vg__sched_app_plan *ap = &pa->res;
    const struct vg__sched_app_plan *pp = p->prev ? &p->prev->apps[p->order[j]] : NULL;
    x->prev = pp ? pp->locs : NULL; /* DISPLACED is said of previous locations */
    x->n_prev = pp ? pp->n_locs : 0;
    size_t rej0 = ap->n_locs, cand0 = rej0 + pa->nw, n = ap->n_why, o = rej0, g = 0;
    if (x->cap_old_why < n) { /* the records as they were; rewritten in place */
        x->cap_old_why = n;
        x->old_why = vg_xrealloc(x->old_why, n * sizeof(*x->old_why));
    }
    struct vg_sched_why *old = x->old_why, *y = ap->why;
    memcpy(old, y, n * sizeof(*y));
    for (size_t r = 0; r <= pa->nw; r++) {
        for (; g < x->n_gone && x->gone_nw0[g] == r; g++) {
            uint32_t loc = old[cand0 + x->gone[g]].loc;
            capacity_why(x, loc, short_of(x, loc), &y[o++]);
        }
        if (r < pa->nw)
            y[o++] = old[rej0 + r];
    }
    VG_ASSERT(g == x->n_gone); /* nw0 grows with the candidates, and is at most nw */
    for (size_t k = cand0, gi = 0; k < n; k++) {
        if (gi < x->n_gone && k - cand0 == x->gone[gi]) {
            gi++;
            continue;
        }
        y[o++] = old[k];
    }
    VG_ASSERT(o == n);
}

/* The placement as the sequential one makes it when the locations some
 * chosen sites run at (x->moved: their records) were taken meanwhile but
 * each site still has a usable one: the sites, and so the greedy and the
 * local search, are the same; the location in each is chosen again as
 * choose_locations does (the demand each site serves, from the entries'
 * best open sites noted by the placement, summed in the same order),
 * then where demand goes and the chosen records' figures follow. */
static void rechoose(const struct par *p, struct ctx *x, size_t j)
{
    struct par_app *pa = &p->pa[j];
    struct vg__sched_app_plan *ap = &pa->res;
    const struct vg_sched_world *w = p->w;
    const struct vg_sched_demand *d = &p->demand[p->order[j]];
    const uint32_t *best = pa->rec_locs + ap->n_why + (ap->n_why - ap->n_locs - pa->nw) + d->n + 1;
    for (size_t m = 0; m < x->n_moved; m++) {
        struct vg_sched_why *y = &ap->why[x->moved[m]];
        uint32_t site = w->loc_site[y->loc];
        double v[3] = {0, 0, 0};
        for (size_t i = d->n; i-- > 0;) { /* the order of the candidate's pairs */
            if (best[i] != site)
                continue;
            const struct vg_geo_xyz *q = &w->area_xyz[d->e[i].area];
            double wt = (double)d->e[i].mrps + 1;
            v[0] += wt * q->x, v[1] += wt * q->y, v[2] += wt * q->z;
        }
        uint32_t loc = pick_in_site(x, site, v);
        VG_ASSERT(loc != VG_SCHED_NONE); /* the site was found usable */
        ap->locs[x->moved[m]] = loc;     /* chosen records and locations go side by side */
        y->loc = loc;
    }
    /* by location again, records and counters with them */
    for (size_t k = 1; k < ap->n_locs; k++)
        for (size_t i = k; i > 0 && ap->locs[i - 1] > ap->locs[i]; i--) {
            uint32_t l = ap->locs[i];
            uint16_t b = ap->below[i];
            struct vg_sched_why r = ap->why[i];
            ap->locs[i] = ap->locs[i - 1], ap->below[i] = ap->below[i - 1], ap->why[i] = ap->why[i - 1];
            ap->locs[i - 1] = l, ap->below[i - 1] = b, ap->why[i - 1] = r;
        }
    vg__sched_plan_serve(w, x->app, d, ap, NULL, NULL, &x->serve);
    for (size_t k = 0; k < ap->n_locs; k++) {
        uint64_t served = 0;
        for (size_t i = 0; i < ap->n_served; i++)
            served += ap->served[i].loc == ap->locs[k] ? ap->served[i].mrps : 0;
        ap->why[k].demand_mrps = served;
    }
}

/* Commits the next app in order and returns the commits made: its
 * placement when what it saw still holds, else (or when stolen: its
 * placement is not ready) it is placed now, on the committed capacity.
 * One committer at a time, outside mu: the other thread places ahead
 * meanwhile, and what it reads of the capacity taken here is checked
 * against ver when its own app commits. */
static size_t commit_next(struct par *p, struct ctx *x, bool stolen)
{
    size_t j = p->commits;
    struct par_app *pa = &p->pa[j];
    uint32_t app = p->order[j];
    struct vg__sched_app_plan *ap = &p->plan->apps[app];
    /* stolen: its result and error are still its placer's */
    int rc = stolen ? 0 : pa->rc;
    struct vg_sched_error e = stolen || !pa->err ? (struct vg_sched_error){0} : *pa->err;
    int seen = stolen || rc ? AHEAD_AGAIN : check_ahead(p, x, j);
    if (seen == AHEAD_REPAIR)
        repair(p, x, j);
    else if (seen == AHEAD_RECHOOSE)
        rechoose(p, x, j);
    if (seen != AHEAD_AGAIN) {
        *ap = pa->res;
        memset(&pa->res, 0, sizeof(pa->res));
    } else if (rc == 0) {
        if (!stolen)
            vg__sched_app_plan_free(&pa->res);
        x->out = ap;
        rc = place_prev(x, p->prev, app, &e);
        x->out = NULL;
    }
    if (rc) { /* the first failure in order: the sequential placement's */
        p->rc = rc;
        p->err = e;
        return p->n_apps;
    }
    for (size_t k = 0; k < ap->n_locs; k++) {
        vg__sched_plan_hold(p->plan, p->apps, app, ap->locs[k]);
        p->ver[ap->locs[k]] = (uint32_t)j + 1;
    }
    return j + 1;
}

/* Places the j-th app ahead (outside mu), into its own result. */
static void place_ahead(struct par *p, struct ctx *x, size_t j)
{
    struct par_app *pa = &p->pa[j];
    x->out = &pa->res;
    x->note = true;
    struct vg_sched_error e;
    pa->rc = place_prev(x, p->prev, p->order[j], &e);
    if (pa->rc) {
        pa->err = vg_xmalloc(sizeof(*pa->err));
        *pa->err = e;
    }
    x->note = false;
    pa->rec_locs = x->rec_locs; /* taken, as alts (par_work gives x others) */
    pa->cap_rec_locs = x->cap_rec_locs;
    x->rec_locs = NULL;
    x->cap_rec_locs = 0;
    pa->hubs = x->hubs_known;
    p->rules[j] = x->rules;
    pa->extras = x->n_extra > 0;
    pa->nw = x->nw;
    pa->nc = x->nc;
    pa->alts = x->alts;
    pa->n_alts = x->n_alts;
    pa->cap_alts = x->cap_alts;
    x->alts = NULL;
    x->n_alts = x->cap_alts = 0;
    x->out = NULL;
}

/* Each thread commits the next app when its placement is ready, or
 * places the next app ahead; when neither can be done (the window is
 * full or every app is taken) it steals the next to commit, which
 * another thread is still placing, rather than wait: a thread the kernel
 * parks (the machine is shared) then stalls nothing. */
static void par_work(struct par *p, struct ctx *x)
{
    pthread_mutex_lock(&p->mu);
    while (p->commits < p->n_apps) {
        struct par_app *head = &p->pa[p->commits];
        uint8_t hs = p->commits < p->next ? head->state : PAR_FREE; /* set once taken */
        bool ahead = p->next < p->n_apps && p->next - p->commits < PAR_WINDOW;
        bool steal = hs == PAR_TAKEN && !ahead;
        if (!p->committing && (hs == PAR_READY || steal)) {
            if (steal)
                head->state = PAR_STOLEN;
            p->committing = true;
            pthread_mutex_unlock(&p->mu);
            size_t done = commit_next(p, x, steal);
            pthread_mutex_lock(&p->mu);
            if (!steal) /* a stolen one's are its placer's */
                pool_put_app(p, head);
            p->commits = done;
            p->committing = false;
            pthread_cond_broadcast(&p->cv);
        } else if (ahead) {
            size_t j = p->next++;
            struct par_app *pa = &p->pa[j];
            *pa = (struct par_app){.state = PAR_TAKEN, .snap = (uint32_t)p->commits};
            pthread_mutex_unlock(&p->mu);
            place_ahead(p, x, j);
            pthread_mutex_lock(&p->mu);
            x->rec_locs = pool_take(p, &x->cap_rec_locs);
            x->alts = pool_take(p, &x->cap_alts);
            if (pa->state == PAR_STOLEN) { /* committed meanwhile: this one is not needed */
                pool_put_app(p, pa);
                pthread_mutex_unlock(&p->mu);
                vg__sched_app_plan_free(&pa->res);
                pthread_mutex_lock(&p->mu);
            } else {
                pa->state = PAR_READY;
                pthread_cond_broadcast(&p->cv);
            }
        } else {
            pthread_cond_wait(&p->cv, &p->mu);
        }
    }
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

struct par_thread {
    struct par *p;
    struct ctx x;
    pthread_t t;
};

static void par_ctx(struct par *p, struct ctx *x, bool own_seen)
{
    ctx_init(x, p->w, p->apps, p->n_apps, p->demand, p->plan);
    x->spec = true;
    if (own_seen) { /* the plan's is the first thread's */
        x->seen = vg_xcalloc(p->plan->n_locs + 1, sizeof(*x->seen));
        x->own_seen = true;
    }
}

/* An extra thread makes and frees its own scratch: meanwhile the first
 * one is at work, and the memory is of the thread that uses it. */
static void *par_main(void *arg)
{
    struct par_thread *t = arg;
    par_ctx(t->p, &t->x, true);
    par_work(t->p, &t->x);
    ctx_fini(&t->x);
    return NULL;
}

static int place_parallel(const struct vg_sched_world *w, const struct vg_sched_app *apps, size_t n_apps,
                          const struct vg_sched_demand *demand, const struct vg_sched_plan *prev,
                          struct vg_sched_plan *plan, const uint32_t *order, unsigned threads,
                          struct vg_sched_error *err)
{
    struct par p = {
        .w = w, .apps = apps, .n_apps = n_apps, .demand = demand, .prev = prev, .plan = plan, .order = order};
    p.pa = vg_xmalloc(n_apps * sizeof(*p.pa)); /* each set when taken: no zeroing of what a failure leaves untaken */
    p.rules = vg_xmalloc(n_apps * sizeof(*p.rules));
    p.ver = vg_xcalloc(w->n_locs + 1, sizeof(*p.ver));
    index_loc_areas(&p);
    pthread_mutex_init(&p.mu, NULL);
    pthread_cond_init(&p.cv, NULL);
    struct par_thread *t = vg_xcalloc(threads, sizeof(*t));
    unsigned started = 1;
    for (unsigned i = 1; i < threads; i++) {
        t[i].p = &p;
        if (pthread_create(&t[i].t, NULL, par_main, &t[i]) != 0) /* fewer threads: the same plan */
            break;
        started++;
    }
    t[0].p = &p;
    par_ctx(&p, &t[0].x, false);
    par_work(&p, &t[0].x);
    ctx_fini(&t[0].x);
    for (unsigned i = 1; i < started; i++)
        pthread_join(t[i].t, NULL);
    for (size_t j = 0; j < p.next; j++) { /* placed ahead of a failure, never committed */
        vg__sched_app_plan_free(&p.pa[j].res);
        free(p.pa[j].alts);
        free(p.pa[j].rec_locs);
        free(p.pa[j].err);
    }
    pthread_cond_destroy(&p.cv);
    pthread_mutex_destroy(&p.mu);
    free(t);
    for (size_t i = 0; i < p.n_pool; i++)
        free(p.pool[i].v);
    free(p.pa);
    free(p.rules);
    free(p.ver);
    if (p.own_areas) {
        free(p.loc_at);
        free(p.loc_areas);
    }
    if (p.rc)
        *err = p.err;
    return p.rc;
}

/* Higher priority first, then index: keys (INT32_MAX - priority, index)
 * packed into 64 bits, so that qsort needs no context. */
static void priority_order(const struct vg_sched_app *apps, size_t n, uint32_t *order)
{
    uint64_t *keys = vg_xmalloc((n ? n : 1) * sizeof(*keys));
    for (size_t i = 0; i < n; i++)
        keys[i] = (uint64_t)(uint32_t)((int64_t)INT32_MAX - apps[i].priority) << 32 | i;
    qsort(keys, n, sizeof(*keys), cmp_u64);
    for (size_t i = 0; i < n; i++)
        order[i] = (uint32_t)keys[i];
    free(keys);
}

int vg_sched_place(const struct vg_sched_world *w, const struct vg_sched_app *apps, size_t n_apps,
                   const struct vg_sched_demand *demand, const struct vg_sched_plan *prev, struct vg_sched_plan **out,
                   struct vg_sched_error *err)
{
    return vg_sched_place_threads(w, apps, n_apps, demand, prev, 1, out, err);
}

int vg_sched_place_threads(const struct vg_sched_world *w, const struct vg_sched_app *apps, size_t n_apps,
                           const struct vg_sched_demand *demand, const struct vg_sched_plan *prev, unsigned threads,
                           struct vg_sched_plan **out, struct vg_sched_error *err)
{
    VG_ASSERT(w->magic == VG__SCHED_WORLD_MAGIC);
    for (uint32_t a = 0; a < n_apps; a++) {
        int rc = check_app(w, apps, a, &demand[a], err);
        if (rc)
            return rc;
    }
    if (prev && (prev->magic != VG__SCHED_PLAN_MAGIC || prev->n_apps != n_apps || prev->n_locs != w->n_locs))
        prev = NULL; /* a plan of other apps or another world says nothing about this one */
    struct vg_sched_plan *plan = vg__sched_plan_new(w, n_apps);
    uint32_t *order = vg_xmalloc((n_apps ? n_apps : 1) * sizeof(*order));
    priority_order(apps, n_apps, order);
    int rc = 0;
    if (threads > 1 && n_apps > 1) {
        rc = place_parallel(w, apps, n_apps, demand, prev, plan, order, threads, err);
    } else {
        struct ctx x;
        ctx_init(&x, w, apps, n_apps, demand, plan);
        for (size_t i = 0; i < n_apps && rc == 0; i++)
            rc = place_prev(&x, prev, order[i], err);
        ctx_fini(&x);
    }
    free(order);
    if (rc) {
        vg_sched_plan_destroy(plan);
        return rc;
    }
    *out = plan;
    return 0;
}

int vg_sched_update(const struct vg_sched_world *w, const struct vg_sched_app *apps, size_t n_apps,
                    const struct vg_sched_demand *demand, struct vg_sched_plan *plan, uint32_t app,
                    struct vg_sched_error *err)
{
    VG_ASSERT(w->magic == VG__SCHED_WORLD_MAGIC && plan->magic == VG__SCHED_PLAN_MAGIC);
    if (app >= n_apps || plan->n_apps != n_apps || plan->n_locs != w->n_locs || plan->w != w ||
        plan->sites_gen != w->sites_gen) {
        err->app = app;
        snprintf(err->msg, sizeof(err->msg), "the plan is not of these apps and this world (or its sites)");
        return VG_EINVAL;
    }
    int rc = check_app(w, apps, app, &demand[app], err);
    if (rc)
        return rc;
    struct vg__sched_app_plan *ap = &plan->apps[app];
    size_t n_prev = ap->n_locs;
    uint32_t *prev = vg_xmalloc((n_prev ? n_prev : 1) * sizeof(*prev));
    uint16_t *below = vg_xmalloc((n_prev ? n_prev : 1) * sizeof(*below));
    memcpy(prev, ap->locs, n_prev * sizeof(*prev));
    memcpy(below, ap->below, n_prev * sizeof(*below));
    vg__sched_plan_release(plan, apps, app);
    struct ctx x;
    ctx_init(&x, w, apps, n_apps, demand, plan);
    x.preempt = true;
    rc = place_one(&x, app, prev, below, n_prev, err);
    /* the apps that made room, each from where it was (a chain of strictly
     * lower priorities: it ends) */
    for (size_t i = 0; i < x.n_evicted; i++) { /* each of them, whatever another's outcome */
        struct evicted e = x.evicted[i];
        struct vg_sched_error e2;
        int rc2 = place_one(&x, e.app, e.locs, e.below, e.n, rc ? &e2 : err);
        rc = rc ? rc : rc2;
    }
    ctx_fini(&x);
    free(prev);
    free(below);
    return rc;
}
