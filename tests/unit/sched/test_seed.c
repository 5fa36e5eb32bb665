/* sched: seeded plans (vg_sched_plan_seed) — the previous placement the
 * control plane keeps by location id, across worlds that changed. A
 * seeded location is kept while its demand holds and its hysteresis
 * counter carries on; locations out of range are dropped; a seeded plan
 * decides exactly as the real previous plan did. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "geo/geo.h"
#include "sched/sched.h"

#include <stdio.h>
#include <stdlib.h>

#include "small_world.h"

static const struct vg_sched_app APP = {.name = "web",
                                        .cpu_m = 100,
                                        .mem_mib = 64,
                                        .mode = VG_SCHED_DYNAMIC,
                                        .target_us = 20000,
                                        .percentile = 95,
                                        .min_demand_mrps = 5000,
                                        .min_locs = 1,
                                        .max_locs = 4,
                                        .scale_in_steps = 3};

static void test_seed_keeps_counters_and_decides_as_the_real_plan(void **state)
{
    (void)state;
    struct vg_sched_world *w = small_world(16, 10);
    uint32_t fra = vg_sched_world_find(w, "fra"), syd = vg_sched_world_find(w, "syd");
    /* step 1: demand at fra and syd places both */
    struct vg_sched_demand_entry both[] = {{fra, 20000}, {syd, 20000}}, home[] = {{fra, 20000}, {syd, 100}};
    struct vg_sched_demand d1 = {both, 2}, d2 = {home, 2};
    struct vg_sched_plan *p1, *p2;
    struct vg_sched_error err;
    assert_int_equal(vg_sched_place(w, &APP, 1, &d1, NULL, &p1, &err), 0);
    const uint32_t *locs;
    assert_int_equal(vg_sched_plan_locations(p1, 0, &locs), 2);
    /* step 2: syd's demand drops below min_demand: kept, its counter at 1 */
    assert_int_equal(vg_sched_place(w, &APP, 1, &d2, p1, &p2, &err), 0);
    assert_int_equal(vg_sched_plan_locations(p2, 0, &locs), 2);
    const uint16_t *below;
    size_t n = vg_sched_plan_below(p2, 0, &below);
    uint32_t ids[4];
    uint16_t counters[4];
    for (size_t k = 0; k < n; k++) {
        ids[k] = locs[k];
        counters[k] = below[k];
        assert_int_equal(below[k], locs[k] == syd ? 1 : 0);
    }
    /* the same step from a seed (what the control plane keeps) instead of
     * the plan itself: the same decisions, byte for byte */
    struct vg_sched_prev pv = {ids, counters, n};
    struct vg_sched_plan *seed1 = vg_sched_plan_seed(w, 1, &pv), *a, *b;
    assert_int_equal(vg_sched_place(w, &APP, 1, &d2, p2, &a, &err), 0);
    assert_int_equal(vg_sched_place(w, &APP, 1, &d2, seed1, &b, &err), 0);
    assert_true(vg_sched_plan_digest(a) == vg_sched_plan_digest(b));
    /* two more steps below: syd goes (scale_in_steps 3), fra stays */
    struct vg_sched_plan *c;
    assert_int_equal(vg_sched_place(w, &APP, 1, &d2, b, &c, &err), 0);
    assert_int_equal(vg_sched_plan_locations(c, 0, &locs), 1);
    assert_int_equal(locs[0], fra);
    vg_sched_plan_destroy(p1);
    vg_sched_plan_destroy(p2);
    vg_sched_plan_destroy(seed1);
    vg_sched_plan_destroy(a);
    vg_sched_plan_destroy(b);
    vg_sched_plan_destroy(c);
    vg_sched_world_destroy(w);
}

static void test_seed_drops_what_the_world_does_not_have(void **state)
{
    (void)state;
    struct vg_sched_world *w = small_world(8, 10);
    uint32_t ids[] = {5, 999, 2, 5}; /* out of range, and a duplicate */
    uint16_t counters[] = {1, 7, 2, 1};
    struct vg_sched_prev pv[2] = {{ids, counters, 4}, {NULL, NULL, 0}};
    struct vg_sched_plan *p = vg_sched_plan_seed(w, 2, pv);
    const uint32_t *locs;
    const uint16_t *below;
    assert_int_equal(vg_sched_plan_locations(p, 0, &locs), 2);
    assert_int_equal(vg_sched_plan_below(p, 0, &below), 2);
    assert_int_equal(locs[0], 2);
    assert_int_equal(below[0], 2);
    assert_int_equal(locs[1], 5);
    assert_int_equal(below[1], 1);
    assert_int_equal(vg_sched_plan_locations(p, 1, &locs), 0);
    vg_sched_plan_destroy(p);
    vg_sched_world_destroy(w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_seed_keeps_counters_and_decides_as_the_real_plan),
        cmocka_unit_test(test_seed_drops_what_the_world_does_not_have),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
