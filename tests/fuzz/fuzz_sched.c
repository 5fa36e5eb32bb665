/* Fuzzes the placement engine's invariants: the bytes become a small world
 * (locations, areas, capacities, tags), apps with any policy and demand;
 * placing and updating must never crash, and the verifier must find no
 * enforcement broken and no capacity exceeded. */
#include "sched/sched.h"

#include <string.h>

struct rd {
    const uint8_t *p;
    size_t n;
};

static uint32_t take(struct rd *r, uint32_t mod)
{
    uint32_t v = 0;
    for (int i = 0; i < 2 && r->n; i++, r->p++, r->n--)
        v = v << 8 | *r->p;
    return mod ? v % mod : v;
}

static const char *const countries[] = {"DE", "FR", "US", "JP"};
static const char *const regions[] = {"eu", "na", "as"};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct rd r = {data, size};
    struct vg_sched_location locs[24];
    struct vg_sched_area areas[16];
    size_t nl = 1 + take(&r, 24), na = 1 + take(&r, 16), napps = 1 + take(&r, 6);
    for (size_t i = 0; i < nl; i++) {
        memset(&locs[i], 0, sizeof(locs[i]));
        snprintf(locs[i].id, sizeof(locs[i].id), "l%zu", i);
        memcpy(locs[i].country, countries[take(&r, 4)], 3);
        strcpy(locs[i].region, regions[take(&r, 3)]);
        locs[i].lat = (double)take(&r, 180) - 90, locs[i].lon = (double)take(&r, 360) - 180;
        locs[i].tags = take(&r, 4), locs[i].cpu_m = take(&r, 4000), locs[i].mem_mib = take(&r, 4000);
        locs[i].slots = take(&r, 4), locs[i].cost = take(&r, 10);
    }
    for (size_t i = 0; i < na; i++) {
        memset(&areas[i], 0, sizeof(areas[i]));
        memcpy(areas[i].country, countries[take(&r, 4)], 3);
        strcpy(areas[i].region, regions[take(&r, 3)]);
        areas[i].lat = (double)take(&r, 180) - 90, areas[i].lon = (double)take(&r, 360) - 180;
    }
    static const char *const tags[] = {"pci", "gpu"};
    struct vg_sched_world *w = NULL;
    if (vg_sched_world_create(locs, nl, areas, na, tags, 2, &w) != 0)
        return 0;
    static const double site_deg[] = {VG_SCHED_SITE_DEG, 0, 5, 0.5}; /* sites of many locations, or of one */
    if (vg_sched_world_set_sites(w, site_deg[take(&r, 4)]) != 0)
        __builtin_trap();
    for (size_t k = take(&r, 3); k > 0; k--) /* measured RTTs: lists and sites move */
        if (vg_sched_world_set_rtt(w, take(&r, (uint32_t)na), take(&r, (uint32_t)nl), take(&r, 0) * 8) != 0)
            __builtin_trap();
    struct vg_sched_app apps[6];
    struct vg_sched_demand d[6];
    struct vg_sched_demand_entry e[6][8];
    uint32_t statics[6][3];
    const char *allow_c[6][1], *deny_r[6][1];
    for (size_t a = 0; a < napps; a++) {
        struct vg_sched_app *app = &apps[a];
        memset(app, 0, sizeof(*app));
        app->name = "fz";
        app->priority = (int)take(&r, 5) - 2;
        app->cpu_m = take(&r, 2000), app->mem_mib = take(&r, 2000);
        app->mode = take(&r, 4) == 0 ? VG_SCHED_STATIC : VG_SCHED_DYNAMIC;
        app->target_us = take(&r, 0) * 4, app->percentile = 1 + take(&r, 100);
        app->min_demand_mrps = take(&r, 0), app->max_locs = 1 + take(&r, 6), app->min_locs = take(&r, 2);
        app->min_locs = app->min_locs > app->max_locs ? app->max_locs : app->min_locs;
        app->scale_in_steps = take(&r, 4);
        if (take(&r, 3) == 0)
            allow_c[a][0] = countries[take(&r, 4)], app->enforce.allow_countries = allow_c[a],
            app->enforce.n_allow_countries = 1;
        if (take(&r, 3) == 0)
            deny_r[a][0] = regions[take(&r, 3)], app->enforce.deny_regions = deny_r[a], app->enforce.n_deny_regions = 1;
        app->enforce.require_tags = take(&r, 4) == 0 ? 1 : 0;
        app->enforce.residency = take(&r, 2);
        size_t ne = take(&r, 9);
        for (size_t i = 0; i < ne && i < 8; i++)
            e[a][i] = (struct vg_sched_demand_entry){take(&r, (uint32_t)na), take(&r, 0) * 16};
        d[a] = (struct vg_sched_demand){e[a], ne > 8 ? 8 : ne};
        app->n_static = 1 + take(&r, 3);
        for (size_t i = 0; i < app->n_static; i++)
            statics[a][i] = take(&r, (uint32_t)nl);
        app->static_locs = statics[a];
    }
    struct vg_sched_plan *p = NULL, *q = NULL;
    struct vg_sched_error err;
    char why[200];
    if (vg_sched_place(w, apps, napps, d, NULL, &p, &err) == 0) {
        VG_ASSERT(vg_sched_plan_verify(w, apps, napps, p, why, sizeof(why)) == 0);
        if (vg_sched_place(w, apps, napps, d, p, &q, &err) == 0) {
            VG_ASSERT(vg_sched_plan_verify(w, apps, napps, q, why, sizeof(why)) == 0);
            struct vg_sched_plan *t2 = NULL; /* two threads: the same plan */
            VG_ASSERT(vg_sched_place_threads(w, apps, napps, d, p, 2, &t2, &err) == 0);
            VG_ASSERT(vg_sched_plan_digest(t2) == vg_sched_plan_digest(q));
            vg_sched_plan_destroy(t2);
            if (vg_sched_update(w, apps, napps, d, q, (uint32_t)take(&r, (uint32_t)napps), &err) == 0)
                VG_ASSERT(vg_sched_plan_verify(w, apps, napps, q, why, sizeof(why)) == 0);
            for (uint32_t a = 0; a < napps; a++) {
                free(vg_sched_explain_text(w, apps, napps, q, a));
                json_decref(vg_sched_explain_json(w, apps, napps, q, a));
            }
        }
    }
    vg_sched_plan_destroy(p);
    vg_sched_plan_destroy(q);
    vg_sched_world_destroy(w);
    return 0;
}
