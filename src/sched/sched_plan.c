/* Plans: capacity bookkeeping, where demand goes, figures, churn, the
 * independent verifier and the digest. */
#include "sched/sched_int.h"

#include <string.h>

/* Site s's record: of its locations with a slot free, the one with the
 * most CPU free (then memory, then the lowest index), with a copy of its
 * free CPU and memory (struct vg__sched_site). The most CPU free, not the
 * first with a slot: a location one app filled to its last millicore
 * would send every later app to the locations' records. */
static void site_witness(struct vg_sched_plan *p, uint32_t s)
{
    uint32_t n, best = VG_SCHED_NONE;
    const uint32_t *t = vg__sched_site_locs(p->w, s, &n);
    for (uint32_t i = 0; i < n; i++) {
        const struct vg__sched_loc *b = best == VG_SCHED_NONE ? NULL : &p->loc[best];
        if (vg__sched_witness_better(&p->loc[t[i]], b != NULL, b ? b->cpu_free : 0, b ? b->mem_free : 0))
            best = t[i];
    }
    struct vg__sched_site *ss = &p->site[s];
    if (best != VG_SCHED_NONE) {
        vg__sched_st(&ss->cpu_free, p->loc[best].cpu_free);
        vg__sched_st(&ss->mem_free, p->loc[best].mem_free);
    }
    vg__sched_st(&ss->loc, best);
}

/* The site record after loc's capacity changed: taken at the record's
 * location, it is chosen again; given back anywhere, that location may
 * now be the better one. */
static void site_changed(struct vg_sched_plan *p, uint32_t loc, bool taken)
{
    uint32_t s = p->w->loc_site[loc], wl = p->site[s].loc;
    const struct vg__sched_loc *u = &p->loc[loc];
    if (taken ? wl == loc
              : wl == VG_SCHED_NONE || wl == loc || u->cpu_free > p->site[s].cpu_free ||
                    (u->cpu_free == p->site[s].cpu_free && u->mem_free > p->site[s].mem_free))
        site_witness(p, s);
}

struct vg_sched_plan *vg__sched_plan_new(const struct vg_sched_world *w, size_t n_apps)
{
    size_t n_locs = w->n_locs;
    struct vg_sched_plan *p = vg_xcalloc(1, sizeof(*p));
    p->magic = VG__SCHED_PLAN_MAGIC;
    p->n_apps = n_apps;
    p->n_locs = n_locs;
    p->apps = vg_xcalloc(n_apps + 1, sizeof(*p->apps));
    /* the records as they start, copied from the world's (aligned: a record in one line, not two) */
    p->loc = vg__sched_alloc_lines(n_locs + 1, sizeof(*p->loc));
    memcpy(p->loc, w->loc0, (n_locs + 1) * sizeof(*p->loc));
    p->seen = vg_xcalloc(n_locs + 1, sizeof(*p->seen));
    p->held_head = vg_xmalloc((n_locs + 1) * sizeof(*p->held_head));
    memset(p->held_head, 0xff, (n_locs + 1) * sizeof(*p->held_head)); /* VG_SCHED_NONE: nothing held */
    p->held_free = VG_SCHED_NONE;
    p->w = w;
    p->sites_gen = w->sites_gen;
    p->site = vg__sched_alloc_lines(w->n_sites + 1, sizeof(*p->site));
    memcpy(p->site, w->site0, (w->n_sites + 1) * sizeof(*p->site));
    return p;
}

void vg__sched_app_plan_alloc(struct vg__sched_app_plan *ap, size_t n_locs, size_t n_why, size_t n_served)
{
    /* one block, the most aligned first: records, served, locations, counters */
    size_t o_served = (n_why + 1) * sizeof(*ap->why), o_locs = o_served + (n_served + 1) * sizeof(*ap->served),
           o_below = o_locs + (n_locs + 1) * sizeof(*ap->locs);
    char *b = vg_xmalloc(o_below + (n_locs + 1) * sizeof(*ap->below));
    memset(ap, 0, sizeof(*ap));
    ap->block = b;
    ap->why = (struct vg_sched_why *)b;
    ap->served = (struct vg_sched_served *)(b + o_served);
    ap->locs = (uint32_t *)(b + o_locs);
    ap->below = (uint16_t *)(b + o_below);
    memset(ap->below, 0, n_locs * sizeof(*ap->below));
}

void vg__sched_app_plan_free(struct vg__sched_app_plan *ap)
{
    if (ap->block) {
        free(ap->block);
    } else {
        free(ap->locs);
        free(ap->below);
        free(ap->why);
        free(ap->served);
    }
    memset(ap, 0, sizeof(*ap));
}

void vg_sched_plan_destroy(struct vg_sched_plan *p)
{
    if (!p)
        return;
    VG_ASSERT(p->magic == VG__SCHED_PLAN_MAGIC);
    for (size_t a = 0; a < p->n_apps; a++)
        vg__sched_app_plan_free(&p->apps[a]);
    free(p->apps);
    free(p->loc);
    free(p->seen);
    free(p->held_head);
    free(p->held);
    free(p->site);
    p->magic = 0;
    free(p);
}

uint32_t vg__sched_plan_stamp(struct vg_sched_plan *p)
{
    if (++p->stamp == 0) { /* wrapped: marks from long ago could match */
        for (size_t l = 0; l < p->n_locs; l++)
            p->seen[l].mark = 0;
        p->stamp = 1;
    }
    return p->stamp;
}

void vg__sched_plan_hold(struct vg_sched_plan *p, const struct vg_sched_app *apps, uint32_t app, uint32_t loc)
{
    struct vg__sched_loc *u = &p->loc[loc];
    /* placement checked that it fits (and made room when updating) */
    VG_ASSERT(u->cpu_free >= apps[app].cpu_m && u->mem_free >= apps[app].mem_mib && u->slots_free >= 1);
    /* stores a parallel placement's speculative readers may meet */
    vg__sched_st(&u->cpu_free, u->cpu_free - apps[app].cpu_m);
    vg__sched_st(&u->mem_free, u->mem_free - apps[app].mem_mib);
    vg__sched_st(&u->slots_free, u->slots_free - 1);
    if (u->top == VG_SCHED_NONE || apps[app].priority > u->top_prio) { /* the first of equals stays */
        vg__sched_st((uint32_t *)&u->top_prio, (uint32_t)apps[app].priority);
        vg__sched_st(&u->top, app);
    }
    site_changed(p, loc, true);
    uint32_t k = p->held_free;
    if (k != VG_SCHED_NONE) {
        p->held_free = p->held[k].next;
    } else {
        if (p->n_held == p->cap_held) {
            p->cap_held = p->cap_held ? 2 * p->cap_held : 1024;
            p->held = vg_xrealloc(p->held, p->cap_held * sizeof(*p->held));
        }
        k = p->n_held++;
    }
    p->held[k] = (struct vg__sched_held){app, p->held_head[loc]};
    p->held_head[loc] = k;
}

/* Gives back what the app holds and forgets its placement. */
void vg__sched_plan_release(struct vg_sched_plan *p, const struct vg_sched_app *apps, uint32_t app)
{
    struct vg__sched_app_plan *ap = &p->apps[app];
    for (size_t i = 0; i < ap->n_locs; i++) {
        uint32_t loc = ap->locs[i];
        struct vg__sched_loc *u = &p->loc[loc];
        u->cpu_free += apps[app].cpu_m;
        u->mem_free += apps[app].mem_mib;
        u->slots_free++;
        site_changed(p, loc, false);
        for (uint32_t *at = &p->held_head[loc]; *at != VG_SCHED_NONE; at = &p->held[*at].next)
            if (p->held[*at].app == app) { /* unlinked, and given back */
                uint32_t k = *at;
                *at = p->held[k].next;
                p->held[k].next = p->held_free;
                p->held_free = k;
                break;
            }
        if (u->top != app)
            continue;
        /* the first to come of the highest priority: the list is newest
         * first, so the last met of equals */
        u->top = VG_SCHED_NONE;
        for (uint32_t k = p->held_head[loc]; k != VG_SCHED_NONE; k = p->held[k].next) {
            uint32_t a = p->held[k].app;
            if (u->top == VG_SCHED_NONE || apps[a].priority >= u->top_prio)
                u->top = a, u->top_prio = apps[a].priority;
        }
    }
    vg__sched_app_plan_free(ap);
}

/* Partitions k[lo, hi) around the latency of its middle entry: below it
 * k[lo, *lt), equal k[*lt, *gt), above k[*gt, hi); the weights of the
 * first two parts in *w_lt, *w_eq. Returns the pivot latency. Two passes
 * without a branch on the data (each swaps unconditionally and moves the
 * boundary by the comparison): the three-way pass with branches
 * mispredicted about every other entry, and was 4% of a full placement. */
static uint32_t partition3(uint64_t *k, size_t lo, size_t hi, size_t *lt_out, size_t *gt_out, uint64_t *w_lt,
                           uint64_t *w_eq)
{
    uint32_t pivot = (uint32_t)(k[lo + (hi - lo) / 2] >> 32);
    size_t lt = lo, gt;
    uint64_t wl = 0, we = 0;
    for (size_t i = lo; i < hi; i++) {
        uint64_t v = k[i];
        size_t less = (uint32_t)(v >> 32) < pivot;
        k[i] = k[lt];
        k[lt] = v;
        wl += (uint32_t)v & -(uint64_t)less;
        lt += less;
    }
    gt = lt;
    for (size_t i = lt; i < hi; i++) {
        uint64_t v = k[i];
        size_t eq = (uint32_t)(v >> 32) == pivot;
        k[i] = k[gt];
        k[gt] = v;
        we += (uint32_t)v & -(uint64_t)eq;
        gt += eq;
    }
    *lt_out = lt;
    *gt_out = gt;
    *w_lt = wl;
    *w_eq = we;
    return pivot;
}

/* The lowest latency in k[lo, hi) at which the demand at or below it
 * reaches want (which the part's demand does). */
static uint32_t select_in(uint64_t *k, size_t lo, size_t hi, uint64_t want)
{
    for (;;) {
        size_t lt, gt;
        uint64_t w_lt, w_eq;
        uint32_t pivot = partition3(k, lo, hi, &lt, &gt, &w_lt, &w_eq);
        if (want <= w_lt) {
            hi = lt;
        } else if (want <= w_lt + w_eq) {
            return pivot;
        } else {
            want -= w_lt + w_eq;
            lo = gt;
        }
    }
}

/* The demand-weighted p50 and p95 of served demand given as rtt << 32 |
 * mrps: for each, the lowest latency at which the demand at or below it
 * reaches pct% of total (at least one mrps), or the highest latency when
 * none does. A selection (partitions around a pivot latency, the part
 * holding the quantile kept), not a sort, and one for both while they
 * fall in the same part (the partitions are most of the cost: they were
 * made twice). k is reordered. */
static void weighted_p50_p95(uint64_t *k, size_t n, uint64_t total, uint32_t *p50, uint32_t *p95)
{
    uint64_t want[2] = {(total * 50 + 99) / 100, (total * 95 + 99) / 100};
    want[0] = want[0] ? want[0] : 1;
    want[1] = want[1] ? want[1] : 1;
    uint32_t top = 0;
    uint64_t all = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t r = (uint32_t)(k[i] >> 32);
        top = r > top ? r : top;
        all += (uint32_t)k[i];
    }
    *p50 = *p95 = top;
    if (all < want[0])
        return;
    if (all < want[1]) {
        *p50 = select_in(k, 0, n, want[0]);
        return;
    }
    size_t lo = 0, hi = n; /* both quantiles' latencies are in k[lo, hi); want[0] <= want[1] */
    for (;;) {
        size_t lt, gt;
        uint64_t w_lt, w_eq;
        uint32_t pivot = partition3(k, lo, hi, &lt, &gt, &w_lt, &w_eq);
        if (want[1] <= w_lt) { /* both below */
            hi = lt;
        } else if (want[0] > w_lt + w_eq) { /* both above */
            want[0] -= w_lt + w_eq;
            want[1] -= w_lt + w_eq;
            lo = gt;
        } else { /* they part here: each on its own */
            *p50 = want[0] <= w_lt ? select_in(k, lo, lt, want[0]) : pivot;
            *p95 = want[1] <= w_lt + w_eq ? pivot : select_in(k, gt, hi, want[1] - w_lt - w_eq);
            return;
        }
    }
}

static double chord2(const struct vg_geo_xyz *a, const struct vg_geo_xyz *b)
{
    double dx = a->x - b->x, dy = a->y - b->y, dz = a->z - b->z;
    return dx * dx + dy * dy + dz * dz;
}

/* The chosen location with the lowest latency from area a that the app
 * may serve it from. Without measured RTTs latency grows with distance,
 * and distance with the chord: the search compares squared chords and
 * converts the winner only. */
static uint32_t nearest(const struct vg_sched_world *w, const struct vg_sched_app *app,
                        const struct vg__sched_app_plan *ap, uint32_t a)
{
    uint32_t best = VG_SCHED_NONE, best_rtt = UINT32_MAX;
    double best_c = 1e9;
    for (size_t k = 0; k < ap->n_locs; k++) {
        uint32_t l = ap->locs[k];
        if (app->enforce.residency && w->loc_region[l] != w->area_region[a])
            continue;
        if (w->n_ovr == 0) {
            double c = chord2(&w->area_xyz[a], &w->loc_xyz[l]);
            if (c < best_c)
                best_c = c, best = l;
            continue;
        }
        uint32_t r = vg_sched_rtt_us(w, a, l);
        if (r < best_rtt)
            best_rtt = r, best = l;
    }
    return best;
}

/* Each area goes to the nearest chosen location it may use (residency),
 * with exact latencies (not only the nearest lists the search used). */

void vg__sched_serve_scratch_free(struct vg__sched_serve_scratch *s)
{
    free(s->pt);
    free(s->c2);
    free(s->pend);
}

/* Room for n in v, kept from call to call. */
#define SCRATCH(v, cap, n)                                                                                             \
    do {                                                                                                               \
        if ((cap) < (n)) {                                                                                             \
            (cap) = (n);                                                                                               \
            (v) = vg_xrealloc((v), (n) * sizeof(*(v)));                                                                \
        }                                                                                                              \
    } while (0)

/* Chosen locations at most for which comparing the area's chord to each
 * is cheaper than the caller's answer (a chord to a point of its own, far
 * in memory, and the bound's checks). */
#define SERVE_SCAN_MAX 16

/* Where each area's demand goes, without its latency when only chords
 * were compared (those areas are listed in sc->pend, their chords in
 * sc->c2: converted together, the square roots and arcsines overlap). */
static size_t serve_areas(const struct vg_sched_world *w, const struct vg_sched_app *app,
                          const struct vg_sched_demand *d, struct vg__sched_app_plan *ap, vg__sched_known_fn known,
                          void *arg, struct vg__sched_serve_scratch *sc)
{
    /* without measured RTTs or residency the nearest chosen location is
     * the one at the smallest chord: the chosen points side by side, once
     * an area needs them */
    const struct vg_geo_xyz *pt = NULL;
    bool chords = w->n_ovr == 0 && !app->enforce.residency && ap->n_locs > 0;
    known = chords && ap->n_locs <= SERVE_SCAN_MAX ? NULL : known;
    size_t n_pend = 0;
    for (size_t i = 0; i < d->n; i++) {
        uint32_t a = d->e[i].area, best = VG_SCHED_NONE, best_rtt = 0;
        if (known && known(arg, i, &best, &best_rtt)) {
            ap->served[i] = (struct vg_sched_served){a, best, best_rtt, d->e[i].mrps};
            continue; /* the caller's answer */
        }
        if (chords && !pt) {
            SCRATCH(sc->pt, sc->cap_pt, ap->n_locs);
            for (size_t k = 0; k < ap->n_locs; k++)
                sc->pt[k] = w->loc_xyz[ap->locs[k]];
            pt = sc->pt;
        }
        if (pt) {
            const struct vg_geo_xyz *o = &w->area_xyz[a];
            double best_c = chord2(o, &pt[0]);
            size_t at = 0;
            for (size_t k = 1; k < ap->n_locs; k++) { /* without branches: which is nearest is unpredictable */
                double c = chord2(o, &pt[k]);
                bool lt = c < best_c;
                best_c = lt ? c : best_c;
                at = lt ? k : at;
            }
            best = ap->locs[at];
            sc->c2[n_pend] = best_c;
            sc->pend[n_pend++] = (uint32_t)i;
        } else {
            best = nearest(w, app, ap, a);
            best_rtt = best != VG_SCHED_NONE ? vg_sched_rtt_us(w, a, best) : 0;
        }
        ap->served[i] = (struct vg_sched_served){a, best, best_rtt, d->e[i].mrps};
    }
    return n_pend;
}

void vg__sched_plan_serve(const struct vg_sched_world *w, const struct vg_sched_app *app,
                          const struct vg_sched_demand *d, struct vg__sched_app_plan *ap, vg__sched_known_fn known,
                          void *arg, struct vg__sched_serve_scratch *sc)
{
    ap->n_served = d->n; /* room made by the caller */
    memset(&ap->stats, 0, sizeof(ap->stats));
    SCRATCH(sc->c2, sc->cap_c2, d->n + 1);
    SCRATCH(sc->pend, sc->cap_pend, d->n + 1);
    size_t n_pend = serve_areas(w, app, d, ap, known, arg, sc);
    for (size_t k = 0; k < n_pend; k++)
        ap->served[sc->pend[k]].rtt_us = vg__sched_rtt_chord2(sc->c2[k]);
    for (size_t i = 0; i < d->n; i++) {
        const struct vg_sched_served *s = &ap->served[i];
        ap->stats.demand_mrps += s->mrps;
        if (s->loc == VG_SCHED_NONE)
            continue;
        ap->stats.served_mrps += s->mrps;
        ap->stats.latency_sum += (uint64_t)s->rtt_us * s->mrps;
        if (app->mode == VG_SCHED_DYNAMIC && s->rtt_us <= app->target_us)
            ap->stats.within_mrps += s->mrps;
    }
    /* p50 and p95 are computed when asked for (vg_sched_plan_app_stats):
     * placement never reads them, and selecting them was a twentieth of
     * its work */
}

size_t vg_sched_plan_locations(const struct vg_sched_plan *p, uint32_t app, const uint32_t **locs)
{
    VG_ASSERT(app < p->n_apps);
    *locs = p->apps[app].locs;
    return p->apps[app].n_locs;
}

size_t vg_sched_plan_served(const struct vg_sched_plan *p, uint32_t app, const struct vg_sched_served **out)
{
    VG_ASSERT(app < p->n_apps);
    *out = p->apps[app].served;
    return p->apps[app].n_served;
}

void vg_sched_plan_app_stats(const struct vg_sched_plan *p, uint32_t app, struct vg_sched_app_stats *out)
{
    VG_ASSERT(app < p->n_apps);
    const struct vg__sched_app_plan *ap = &p->apps[app];
    *out = ap->stats;
    uint64_t *k = vg_xmalloc((ap->n_served + 1) * sizeof(*k));
    size_t n = 0;
    for (size_t i = 0; i < ap->n_served; i++)
        if (ap->served[i].loc != VG_SCHED_NONE)
            k[n++] = (uint64_t)ap->served[i].rtt_us << 32 | ap->served[i].mrps;
    weighted_p50_p95(k, n, out->served_mrps, &out->p50_us, &out->p95_us);
    free(k);
}

size_t vg_sched_plan_explain(const struct vg_sched_plan *p, uint32_t app, const struct vg_sched_why **out)
{
    VG_ASSERT(app < p->n_apps);
    *out = p->apps[app].why;
    return p->apps[app].n_why;
}

void vg_sched_plan_use(const struct vg_sched_world *w, const struct vg_sched_plan *p, struct vg_sched_use *out)
{
    memset(out, 0, sizeof(*out));
    for (size_t l = 0; l < w->n_locs; l++) {
        out->cpu_used += w->locs[l].cpu_m - p->loc[l].cpu_free;
        out->mem_used += w->locs[l].mem_mib - p->loc[l].mem_free;
        out->slots_used += w->locs[l].slots - p->loc[l].slots_free;
        out->cpu_total += w->locs[l].cpu_m;
        out->mem_total += w->locs[l].mem_mib;
        out->slots_total += w->locs[l].slots;
    }
    for (size_t a = 0; a < p->n_apps; a++)
        out->placements += p->apps[a].n_locs;
}

uint64_t vg_sched_plan_churn(const struct vg_sched_plan *prev, const struct vg_sched_plan *next)
{
    uint64_t churn = 0;
    for (size_t a = 0; a < next->n_apps; a++) {
        const struct vg__sched_app_plan *x = a < prev->n_apps ? &prev->apps[a] : NULL, *y = &next->apps[a];
        size_t i = 0, j = 0, nx = x ? x->n_locs : 0;
        while (i < nx || j < y->n_locs) { /* both ascending: a merge */
            if (j == y->n_locs || (i < nx && x->locs[i] < y->locs[j]))
                churn++, i++;
            else if (i == nx || y->locs[j] < x->locs[i])
                churn++, j++;
            else
                i++, j++;
        }
    }
    return churn;
}

/* --- the verifier: its own reading of the rules, string by string ---------- */

static bool in_list(const char *s, const char *const *list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(s, list[i]) == 0)
            return true;
    return false;
}

static size_t note(size_t n, char *why, size_t cap, const char *fmt, const char *a, const char *b, const char *c)
{
    if (n == 0 && cap)
        snprintf(why, cap, fmt, a, b, c);
    return n + 1;
}

static size_t verify_app(const struct vg_sched_world *w, const struct vg_sched_app *app,
                         const struct vg__sched_app_plan *ap, size_t bad, char *why, size_t cap)
{
    const struct vg_sched_enforce *e = &app->enforce;
    for (size_t k = 0; k < ap->n_locs; k++) {
        const struct vg_sched_location *l = &w->locs[ap->locs[k]];
        bool ok = !in_list(l->country, e->deny_countries, e->n_deny_countries) &&
                  !in_list(l->region, e->deny_regions, e->n_deny_regions) &&
                  (!e->n_allow_countries || in_list(l->country, e->allow_countries, e->n_allow_countries)) &&
                  (!e->n_allow_regions || in_list(l->region, e->allow_regions, e->n_allow_regions)) &&
                  (l->tags & e->require_tags) == e->require_tags;
        if (!ok)
            bad = note(bad, why, cap, "app %s runs at %s, which its enforcements forbid%s", app->name, l->id, "");
    }
    for (size_t i = 0; i < ap->n_served; i++) {
        const struct vg_sched_served *s = &ap->served[i];
        if (s->loc == VG_SCHED_NONE || !e->residency)
            continue;
        if (strcmp(w->areas[s->area].region, w->locs[s->loc].region) != 0)
            bad = note(bad, why, cap, "app %s serves demand from region %s at %s (residency)", app->name,
                       w->areas[s->area].region, w->locs[s->loc].id);
    }
    return bad;
}

size_t vg_sched_plan_verify(const struct vg_sched_world *w, const struct vg_sched_app *apps, size_t n_apps,
                            const struct vg_sched_plan *p, char *why, size_t cap)
{
    size_t bad = 0;
    uint64_t *cpu = vg_xcalloc(w->n_locs + 1, sizeof(*cpu)), *mem = vg_xcalloc(w->n_locs + 1, sizeof(*mem));
    uint64_t *slots = vg_xcalloc(w->n_locs + 1, sizeof(*slots));
    if (cap)
        why[0] = '\0';
    for (size_t a = 0; a < n_apps && a < p->n_apps; a++) {
        bad = verify_app(w, &apps[a], &p->apps[a], bad, why, cap);
        for (size_t k = 0; k < p->apps[a].n_locs; k++) {
            uint32_t l = p->apps[a].locs[k];
            cpu[l] += apps[a].cpu_m;
            mem[l] += apps[a].mem_mib;
            slots[l]++;
        }
    }
    for (size_t l = 0; l < w->n_locs; l++)
        if (cpu[l] > w->locs[l].cpu_m || mem[l] > w->locs[l].mem_mib || slots[l] > w->locs[l].slots)
            bad = note(bad, why, cap, "location %s is over capacity%s%s", w->locs[l].id, "", "");
    free(cpu);
    free(mem);
    free(slots);
    return bad;
}

/* splitmix64's finaliser over 64-bit words: a digest, not a MAC */
static uint64_t mix(uint64_t h, uint64_t v)
{
    h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
    h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ull;
    h = (h ^ (h >> 27)) * 0x94d049bb133111ebull;
    return h ^ (h >> 31);
}

uint64_t vg_sched_plan_digest(const struct vg_sched_plan *p)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t a = 0; a < p->n_apps; a++) {
        const struct vg__sched_app_plan *ap = &p->apps[a];
        h = mix(h, ap->n_locs);
        for (size_t k = 0; k < ap->n_locs; k++)
            h = mix(h, (uint64_t)ap->locs[k] << 16 | ap->below[k]);
        for (size_t i = 0; i < ap->n_served; i++) {
            const struct vg_sched_served *s = &ap->served[i];
            h = mix(mix(h, (uint64_t)s->area << 32 | s->loc), (uint64_t)s->rtt_us << 32 | s->mrps);
        }
        for (size_t i = 0; i < ap->n_why; i++) {
            const struct vg_sched_why *y = &ap->why[i];
            h = mix(h, (uint64_t)y->loc << 32 | (uint64_t)y->verdict << 24 | (uint64_t)y->reason << 16 |
                           (uint64_t)y->resource << 8);
            h = mix(mix(mix(h, (uint64_t)y->below << 32 | y->by_app), y->demand_mrps), y->gain);
        }
    }
    return h;
}
