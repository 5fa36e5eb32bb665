/* Seeded plans: where apps ran and their hysteresis counters, without the
 * rest of a plan. The control plane's world changes between runs (nodes
 * come and go, apps are deployed), so its previous plan is kept by
 * location id, not as a plan of the same world; this turns it back into
 * the `prev` vg_sched_place reads. */
#include "sched/sched_int.h"

#include <stdlib.h>
#include <string.h>

static int cmp_pair(const void *a, const void *b)
{
    const uint32_t *x = a, *y = b;
    return x[0] < y[0] ? -1 : x[0] > y[0];
}

/* One app's locations ascending and unique, counters following them. */
static void seed_app(struct vg__sched_app_plan *ap, const struct vg_sched_prev *pv, size_t n_locs)
{
    uint32_t(*pairs)[2] = vg_xmalloc((pv->n ? pv->n : 1) * sizeof(*pairs));
    size_t n = 0;
    for (size_t k = 0; k < pv->n; k++)
        if (pv->locs[k] < n_locs) {
            pairs[n][0] = pv->locs[k];
            pairs[n][1] = pv->below ? pv->below[k] : 0;
            n++;
        }
    qsort(pairs, n, sizeof(*pairs), cmp_pair);
    ap->locs = vg_xmalloc((n ? n : 1) * sizeof(*ap->locs));
    ap->below = vg_xmalloc((n ? n : 1) * sizeof(*ap->below));
    for (size_t k = 0; k < n; k++) {
        if (ap->n_locs && ap->locs[ap->n_locs - 1] == pairs[k][0])
            continue;
        ap->locs[ap->n_locs] = pairs[k][0];
        ap->below[ap->n_locs++] = (uint16_t)pairs[k][1];
    }
    free(pairs);
}

struct vg_sched_plan *vg_sched_plan_seed(const struct vg_sched_world *w, size_t n_apps,
                                         const struct vg_sched_prev *prev)
{
    VG_ASSERT(w->magic == VG__SCHED_WORLD_MAGIC);
    struct vg_sched_plan *p = vg__sched_plan_new(w, n_apps);
    for (size_t a = 0; a < n_apps; a++)
        seed_app(&p->apps[a], &prev[a], w->n_locs);
    return p;
}

size_t vg_sched_plan_below(const struct vg_sched_plan *p, uint32_t app, const uint16_t **below)
{
    VG_ASSERT(p->magic == VG__SCHED_PLAN_MAGIC && app < p->n_apps);
    *below = p->apps[app].below;
    return p->apps[app].n_locs;
}
