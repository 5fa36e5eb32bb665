/* The exact optimum on small worlds, by exhaustive search: the yardstick
 * for the greedy's optimality gap (tests and bench/sched). */
#include "sched/sched_int.h"

#include <string.h>

#define EXACT_MAX 24

static bool usable(const struct vg_sched_world *w, const struct vg__sched_rules *r, const struct vg_sched_app *app,
                   uint32_t loc)
{
    const struct vg_sched_location *l = &w->locs[loc];
    return vg__sched_rules_allow(w, r, loc) && l->slots >= 1 && l->cpu_m >= app->cpu_m && l->mem_mib >= app->mem_mib;
}

static uint64_t subset_cost(const struct vg_sched_world *w, const struct vg_sched_app *app,
                            const struct vg_sched_demand *d, const uint32_t *rtt, size_t n_c, uint32_t mask,
                            const uint32_t *cands)
{
    uint64_t sum = 0;
    for (size_t i = 0; i < d->n; i++) {
        uint32_t best = VG_SCHED_UNSERVED_US;
        for (size_t c = 0; c < n_c; c++) {
            if (!(mask >> c & 1))
                continue;
            if (app->enforce.residency && w->loc_region[cands[c]] != w->area_region[d->e[i].area])
                continue;
            if (rtt[i * n_c + c] < best)
                best = rtt[i * n_c + c];
        }
        sum += (uint64_t)best * d->e[i].mrps;
    }
    return sum;
}

uint64_t vg_sched_cost(const struct vg_sched_world *w, const struct vg_sched_app *app, const struct vg_sched_demand *d,
                       const uint32_t *locs, size_t n)
{
    uint64_t sum = 0;
    for (size_t i = 0; i < d->n; i++) {
        uint32_t best = VG_SCHED_UNSERVED_US, a = d->e[i].area;
        for (size_t k = 0; k < n; k++) {
            if (app->enforce.residency && w->loc_region[locs[k]] != w->area_region[a])
                continue;
            uint32_t r = vg_sched_rtt_us(w, a, locs[k]);
            if (r < best)
                best = r;
        }
        sum += (uint64_t)best * d->e[i].mrps;
    }
    return sum;
}

uint64_t vg_sched_exact(const struct vg_sched_world *w, const struct vg_sched_app *app, const struct vg_sched_demand *d,
                        size_t k, uint32_t *best)
{
    struct vg__sched_rules r;
    vg__sched_rules_compile(w, app, &r);
    uint32_t cands[EXACT_MAX];
    size_t n_c = 0;
    for (size_t l = 0; l < w->n_locs; l++) {
        if (!usable(w, &r, app, (uint32_t)l))
            continue;
        if (n_c == EXACT_MAX)
            return UINT64_MAX;
        cands[n_c++] = (uint32_t)l;
    }
    if (k == 0 || k > n_c)
        return UINT64_MAX;
    uint32_t *rtt = vg_xmalloc((d->n * n_c + 1) * sizeof(*rtt));
    for (size_t i = 0; i < d->n; i++)
        for (size_t c = 0; c < n_c; c++)
            rtt[i * n_c + c] = vg_sched_rtt_us(w, d->e[i].area, cands[c]);
    uint64_t best_cost = UINT64_MAX;
    uint32_t best_mask = 0;
    /* every k-subset in increasing mask order (Gosper's hack) */
    for (uint32_t m = (1u << k) - 1; m < (1u << n_c);) {
        uint64_t c = subset_cost(w, app, d, rtt, n_c, m, cands);
        if (c < best_cost)
            best_cost = c, best_mask = m;
        uint32_t lo = m & -m, hi = m + lo;
        m = (((hi ^ m) >> 2) / lo) | hi;
    }
    free(rtt);
    size_t j = 0;
    for (size_t c = 0; c < n_c; c++)
        if (best_mask >> c & 1)
            best[j++] = cands[c];
    return best_cost;
}
