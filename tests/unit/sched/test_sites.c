/* sched sites: how a world groups its locations (grid cell, country,
 * region), each area's nearest sites, and placement over sites — one
 * location per chosen site, the one nearest the demand it serves that is
 * usable (capacity, tags), a kept location staying where it was, measured
 * RTTs deciding within a site, an old plan's second location in a site
 * said to be replaced. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "sched/sched.h"

#include <stdio.h>
#include <stdlib.h>

/* Four metros, each a few towers within some 15 km of its centre (well
 * inside one 1-degree cell), tower 1 of each nearest its centre, tower 3
 * of each tagged pci; one client area at each centre. Paris has a fifth
 * tower in the same cell with another country (a site of its own). */
struct metro {
    const char *name, *cc, *region;
    double lat, lon;
};

static const struct metro metros[] = {
    {"par", "FR", "eu", 48.50, 2.50},
    {"ber", "DE", "eu", 52.50, 13.40},
    {"mad", "ES", "eu", 40.40, -3.70},
    {"nyc", "US", "na", 40.70, -73.50},
};
#define N_METROS 4
#define PER_METRO 4
static const double offsets[PER_METRO][2] = {{0.10, 0.10}, {0.01, 0.0}, {-0.12, 0.05}, {0.05, -0.13}};

static struct vg_sched_world *metro_world(uint32_t slots_first_near)
{
    struct vg_sched_location locs[N_METROS * PER_METRO + 1];
    struct vg_sched_area areas[N_METROS];
    memset(locs, 0, sizeof(locs));
    memset(areas, 0, sizeof(areas));
    for (size_t m = 0; m < N_METROS; m++) {
        for (size_t t = 0; t < PER_METRO; t++) {
            struct vg_sched_location *l = &locs[m * PER_METRO + t];
            snprintf(l->id, sizeof(l->id), "%s%zu", metros[m].name, t);
            memcpy(l->country, metros[m].cc, 3);
            snprintf(l->region, sizeof(l->region), "%s", metros[m].region);
            l->lat = metros[m].lat + offsets[t][0];
            l->lon = metros[m].lon + offsets[t][1];
            l->cpu_m = 4000, l->mem_mib = 8192, l->slots = t == 1 ? slots_first_near : 4, l->cost = 1;
            l->tags = t == 3 ? 1 : 0;
        }
        struct vg_sched_area *a = &areas[m];
        a->lat = metros[m].lat, a->lon = metros[m].lon;
        memcpy(a->country, metros[m].cc, 3);
        snprintf(a->region, sizeof(a->region), "%s", metros[m].region);
    }
    struct vg_sched_location *be = &locs[N_METROS * PER_METRO];
    *be = locs[0];
    snprintf(be->id, sizeof(be->id), "parbe");
    memcpy(be->country, "BE", 3);
    be->lat += 0.02;
    static const char *const tags[] = {"pci"};
    struct vg_sched_world *w = NULL;
    assert_int_equal(vg_sched_world_create(locs, N_METROS * PER_METRO + 1, areas, N_METROS, tags, 1, &w), 0);
    return w;
}

static uint32_t loc(const struct vg_sched_world *w, const char *id)
{
    uint32_t l = vg_sched_world_find(w, id);
    assert_int_not_equal(l, VG_SCHED_NONE);
    return l;
}

/* Tower t of metro m. */
static uint32_t tower(const struct vg_sched_world *w, size_t m, size_t t)
{
    char id[16];
    snprintf(id, sizeof(id), "%s%zu", metros[m].name, t);
    return loc(w, id);
}

/* The app alone, placed from prev (may be NULL). */
static struct vg_sched_plan *place(const struct vg_sched_world *w, const struct vg_sched_app *app,
                                   const struct vg_sched_demand *d, const struct vg_sched_plan *prev)
{
    struct vg_sched_plan *p = NULL;
    struct vg_sched_error err;
    assert_int_equal(vg_sched_place(w, app, 1, d, prev, &p, &err), 0);
    return p;
}

/* Demand at every metro; a target no location meets, so the greedy adds
 * a site while it gains. */
static struct vg_sched_app everywhere_app(void)
{
    return (struct vg_sched_app){.name = "x",
                                 .cpu_m = 100,
                                 .mem_mib = 64,
                                 .mode = VG_SCHED_DYNAMIC,
                                 .target_us = 1,
                                 .percentile = 100,
                                 .min_demand_mrps = 0,
                                 .min_locs = 1,
                                 .max_locs = 16,
                                 .scale_in_steps = 3};
}

static struct vg_sched_demand_entry demand_e[N_METROS];

static struct vg_sched_demand everywhere_demand(void)
{
    for (uint32_t m = 0; m < N_METROS; m++)
        demand_e[m] = (struct vg_sched_demand_entry){m, 10000};
    return (struct vg_sched_demand){demand_e, N_METROS};
}

static const struct vg_sched_why *why_for(const struct vg_sched_plan *p, uint32_t l)
{
    const struct vg_sched_why *y;
    size_t n = vg_sched_plan_explain(p, 0, &y);
    for (size_t i = 0; i < n; i++)
        if (y[i].loc == l)
            return &y[i];
    return NULL;
}

static void grouping(void **state)
{
    (void)state;
    struct vg_sched_world *w = metro_world(4);
    assert_int_equal(vg_sched_world_n_sites(w), N_METROS + 1); /* the Belgian tower is a site of its own */
    uint32_t par = vg_sched_world_site(w, loc(w, "par0"));
    for (size_t t = 1; t < PER_METRO; t++)
        assert_int_equal(vg_sched_world_site(w, tower(w, 0, t)), par);
    assert_int_not_equal(vg_sched_world_site(w, loc(w, "parbe")), par);
    assert_int_not_equal(vg_sched_world_site(w, loc(w, "ber0")), par);
    size_t n;
    const uint32_t *v = vg_sched_world_site_locations(w, par, &n);
    assert_int_equal(n, PER_METRO);
    for (size_t i = 1; i < n; i++)
        assert_true(v[i - 1] < v[i]);
    /* a site per location, and back */
    assert_int_equal(vg_sched_world_set_sites(w, 0), 0);
    assert_int_equal(vg_sched_world_n_sites(w), N_METROS * PER_METRO + 1);
    assert_int_equal(vg_sched_world_set_sites(w, 1), 0);
    assert_int_equal(vg_sched_world_n_sites(w), N_METROS + 1);
    /* the bounds */
    assert_int_equal(vg_sched_world_set_sites(w, 0.001), VG_EINVAL);
    assert_int_equal(vg_sched_world_set_sites(w, 10.5), VG_EINVAL);
    assert_int_equal(vg_sched_world_set_sites(w, -1), VG_EINVAL);
    assert_int_equal(vg_sched_world_set_sites(w, 0.01), 0);
    assert_int_equal(vg_sched_world_set_sites(w, 10), 0);
    vg_sched_world_destroy(w);
    /* as the CLI takes it */
    double d = -1;
    assert_int_equal(vg_sched_parse_site_deg("0.5", &d), 0);
    assert_true(d == 0.5);
    assert_int_equal(vg_sched_parse_site_deg("0", &d), 0);
    assert_true(d == 0);
    static const char *const bad[] = {"", "x", "1x", "11", "0.001", "-1", "nan", "inf"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(vg_sched_parse_site_deg(bad[i], &d), VG_EINVAL);
}

/* One location per site, the one nearest the demand (tower 1), each
 * chosen site's other towers without records of their own. */
static void one_location_per_site(void **state)
{
    (void)state;
    struct vg_sched_world *w = metro_world(4);
    struct vg_sched_app app = everywhere_app();
    struct vg_sched_demand d = everywhere_demand();
    struct vg_sched_plan *p = place(w, &app, &d, NULL);
    const uint32_t *locs;
    size_t n = vg_sched_plan_locations(p, 0, &locs);
    assert_int_equal(n, N_METROS);
    for (size_t m = 0; m < N_METROS; m++) {
        uint32_t l = tower(w, m, 1);
        assert_true(why_for(p, l) != NULL && why_for(p, l)->verdict == VG_SCHED_CHOSEN);
        assert_null(why_for(p, tower(w, m, 0)));
    }
    char why[200];
    assert_int_equal(vg_sched_plan_verify(w, &app, 1, p, why, sizeof(why)), 0);
    /* served from the chosen tower, at its latency */
    const struct vg_sched_served *sv;
    size_t ns = vg_sched_plan_served(p, 0, &sv);
    for (size_t i = 0; i < ns; i++) {
        assert_int_equal(sv[i].loc, tower(w, sv[i].area, 1));
        assert_int_equal(sv[i].rtt_us, vg_sched_rtt_us(w, sv[i].area, sv[i].loc));
    }
    vg_sched_plan_destroy(p);
    vg_sched_world_destroy(w);
}

/* The tower nearest the demand is full: the site still is a candidate,
 * and the app runs at the nearest tower with room. A pci app runs at the
 * tagged tower. */
static void capacity_and_tags_within_a_site(void **state)
{
    (void)state;
    struct vg_sched_world *w = metro_world(0);
    struct vg_sched_app app = everywhere_app();
    struct vg_sched_demand d = everywhere_demand();
    struct vg_sched_plan *p = place(w, &app, &d, NULL);
    const uint32_t *locs;
    assert_int_equal(vg_sched_plan_locations(p, 0, &locs), N_METROS);
    for (size_t m = 0; m < N_METROS; m++)
        assert_null(why_for(p, tower(w, m, 1)));
    vg_sched_plan_destroy(p);
    app.enforce.require_tags = vg_sched_world_tag(w, "pci");
    p = place(w, &app, &d, NULL);
    size_t n = vg_sched_plan_locations(p, 0, &locs);
    assert_int_equal(n, N_METROS);
    for (size_t m = 0; m < N_METROS; m++)
        assert_true(why_for(p, tower(w, m, 3)) != NULL && why_for(p, tower(w, m, 3))->verdict == VG_SCHED_CHOSEN);
    vg_sched_plan_destroy(p);
    vg_sched_world_destroy(w);
}

/* A location from the previous plan stays while its site is kept, even
 * when another of the site's towers is nearer; a second previous one in
 * the same site is replaced, and its record says so. */
static void kept_location_stays(void **state)
{
    (void)state;
    struct vg_sched_world *w = metro_world(4);
    struct vg_sched_app app = everywhere_app();
    app.max_locs = 1;
    struct vg_sched_demand_entry e = {0, 10000}; /* Paris only */
    struct vg_sched_demand d = {&e, 1};
    uint32_t prev_locs[] = {loc(w, "par0"), loc(w, "par2")};
    struct vg_sched_prev pv = {prev_locs, NULL, 2};
    struct vg_sched_plan *seed = vg_sched_plan_seed(w, 1, &pv), *p = place(w, &app, &d, seed);
    const uint32_t *locs;
    assert_int_equal(vg_sched_plan_locations(p, 0, &locs), 1);
    assert_int_equal(locs[0], loc(w, "par0"));
    assert_int_equal(why_for(p, loc(w, "par0"))->verdict, VG_SCHED_KEPT);
    const struct vg_sched_why *y = why_for(p, loc(w, "par2"));
    assert_non_null(y);
    assert_int_equal(y->reason, VG_SCHED_R_SAME_SITE);
    assert_string_equal(vg_sched_reason_name(y->reason), "same_site");
    vg_sched_plan_destroy(seed);
    vg_sched_plan_destroy(p);
    vg_sched_world_destroy(w);
}

/* A measured RTT decides within a site: the app runs at the tower the
 * area measured fastest, not the nearest by distance; and a measured RTT
 * to a far site's tower moves that site into the area's nearest. */
static void measured_rtt_within_a_site(void **state)
{
    (void)state;
    struct vg_sched_world *w = metro_world(4);
    struct vg_sched_app app = everywhere_app();
    app.max_locs = 1;
    struct vg_sched_demand_entry e = {0, 10000};
    struct vg_sched_demand d = {&e, 1};
    assert_int_equal(vg_sched_world_set_rtt(w, 0, loc(w, "par2"), 10), 0);
    struct vg_sched_plan *p = place(w, &app, &d, NULL);
    const uint32_t *locs;
    assert_int_equal(vg_sched_plan_locations(p, 0, &locs), 1);
    assert_int_equal(locs[0], loc(w, "par2"));
    vg_sched_plan_destroy(p);
    /* New York measured 5 µs from Paris's area: its site now wins */
    assert_int_equal(vg_sched_world_set_rtt(w, 0, loc(w, "nyc0"), 5), 0);
    p = place(w, &app, &d, NULL);
    assert_int_equal(vg_sched_plan_locations(p, 0, &locs), 1);
    assert_int_equal(locs[0], loc(w, "nyc0"));
    /* regrouping keeps the measured RTTs in the sites' entries */
    assert_int_equal(vg_sched_world_set_sites(w, 2), 0);
    vg_sched_plan_destroy(p);
    p = place(w, &app, &d, NULL);
    assert_int_equal(vg_sched_plan_locations(p, 0, &locs), 1);
    assert_int_equal(locs[0], loc(w, "nyc0"));
    vg_sched_plan_destroy(p);
    vg_sched_world_destroy(w);
}

/* A minimum above the sites an app may use: more locations of its sites,
 * placed again where they were (no churn), each said to be for the
 * minimum. */
static void minimum_beyond_the_sites(void **state)
{
    (void)state;
    struct vg_sched_world *w = metro_world(4);
    struct vg_sched_app app = everywhere_app();
    static const char *const fr[] = {"FR"};
    app.enforce.allow_countries = fr;
    app.enforce.n_allow_countries = 1;
    app.min_locs = 3, app.max_locs = 5;
    app.target_us = 100000, app.percentile = 50; /* met by one */
    struct vg_sched_demand d = everywhere_demand();
    struct vg_sched_plan *p = place(w, &app, &d, NULL);
    const uint32_t *locs;
    size_t n = vg_sched_plan_locations(p, 0, &locs);
    assert_int_equal(n, 3);
    uint32_t par = vg_sched_world_site(w, loc(w, "par0"));
    size_t for_min = 0;
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(vg_sched_world_site(w, locs[i]), par);
        const struct vg_sched_why *y = why_for(p, locs[i]);
        assert_non_null(y);
        assert_int_not_equal(y->verdict, VG_SCHED_REJECTED);
        for_min += y->reason == VG_SCHED_R_MIN_COUNT;
    }
    assert_true(for_min >= 2);
    char why[200];
    assert_int_equal(vg_sched_plan_verify(w, &app, 1, p, why, sizeof(why)), 0);
    /* the served locations are the nearest chosen ones */
    const struct vg_sched_served *sv;
    size_t ns = vg_sched_plan_served(p, 0, &sv);
    for (size_t i = 0; i < ns; i++) {
        if (sv[i].loc == VG_SCHED_NONE)
            continue;
        for (size_t k = 0; k < n; k++)
            assert_true(sv[i].rtt_us <= vg_sched_rtt_us(w, sv[i].area, locs[k]));
    }
    /* again from there: the same three, on one thread and on two */
    struct vg_sched_plan *q = place(w, &app, &d, p), *t2 = NULL;
    struct vg_sched_error err;
    const uint32_t *again;
    assert_int_equal(vg_sched_plan_locations(q, 0, &again), 3);
    assert_memory_equal(again, locs, 3 * sizeof(*locs));
    assert_int_equal(vg_sched_plan_churn(p, q), 0);
    assert_int_equal(vg_sched_place_threads(w, &app, 1, &d, p, 2, &t2, &err), 0);
    assert_int_equal(vg_sched_plan_digest(t2), vg_sched_plan_digest(q));
    vg_sched_plan_destroy(t2);
    vg_sched_plan_destroy(p);
    vg_sched_plan_destroy(q);
    vg_sched_world_destroy(w);
}

/* An update needs the plan's sites to be the world's: a plan made before
 * a regrouping is refused, with the reason. */
static void update_refuses_a_regrouped_world(void **state)
{
    (void)state;
    struct vg_sched_world *w = metro_world(4);
    struct vg_sched_app app = everywhere_app();
    struct vg_sched_demand d = everywhere_demand();
    struct vg_sched_plan *p = place(w, &app, &d, NULL);
    struct vg_sched_error err;
    assert_int_equal(vg_sched_update(w, &app, 1, &d, p, 0, &err), 0);
    assert_int_equal(vg_sched_world_set_sites(w, 0), 0);
    assert_int_equal(vg_sched_update(w, &app, 1, &d, p, 0, &err), VG_EINVAL);
    assert_non_null(strstr(err.msg, "sites"));
    vg_sched_plan_destroy(p);
    vg_sched_world_destroy(w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(grouping),
        cmocka_unit_test(one_location_per_site),
        cmocka_unit_test(capacity_and_tags_within_a_site),
        cmocka_unit_test(kept_location_stays),
        cmocka_unit_test(measured_rtt_within_a_site),
        cmocka_unit_test(minimum_beyond_the_sites),
        cmocka_unit_test(update_refuses_a_regrouped_world),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
