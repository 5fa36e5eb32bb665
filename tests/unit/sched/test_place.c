/* sched: each policy, capacity and priority, hysteresis, explanations,
 * measured RTTs; properties over random worlds (no enforcement violated,
 * no capacity exceeded, the same input giving the same bytes); the
 * greedy's gap to the exhaustive optimum on small worlds. */
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

static struct vg_sched_app dyn_app(const char *name)
{
    return (struct vg_sched_app){.name = name,
                                 .cpu_m = 100,
                                 .mem_mib = 64,
                                 .mode = VG_SCHED_DYNAMIC,
                                 .target_us = 20000,
                                 .percentile = 95,
                                 .min_demand_mrps = 1000,
                                 .min_locs = 1,
                                 .max_locs = 5,
                                 .scale_in_steps = 3};
}

static uint32_t loc(const struct vg_sched_world *w, const char *id)
{
    uint32_t l = vg_sched_world_find(w, id);
    assert_int_not_equal(l, VG_SCHED_NONE);
    return l;
}

static bool has_loc(const struct vg_sched_plan *p, uint32_t app, uint32_t l)
{
    const uint32_t *locs;
    size_t n = vg_sched_plan_locations(p, app, &locs);
    for (size_t i = 0; i < n; i++)
        if (locs[i] == l)
            return true;
    return false;
}

static const struct vg_sched_why *why_for(const struct vg_sched_plan *p, uint32_t app, uint32_t l)
{
    const struct vg_sched_why *y;
    size_t n = vg_sched_plan_explain(p, app, &y);
    for (size_t i = 0; i < n; i++)
        if (y[i].loc == l)
            return &y[i];
    return NULL;
}

static void static_policy(void **state)
{
    struct vg_sched_world *w = small_world(20, 10);
    uint32_t ls[] = {loc(w, "fra"), loc(w, "ams")};
    struct vg_sched_app app = dyn_app("s");
    app.mode = VG_SCHED_STATIC;
    app.static_locs = ls;
    app.n_static = 2;
    struct vg_sched_demand_entry e[] = {{loc(w, "lhr"), 5000}};
    struct vg_sched_demand d = {e, 1};
    struct vg_sched_plan *p = NULL;
    struct vg_sched_error err;
    assert_int_equal(vg_sched_place(w, &app, 1, &d, NULL, &p, &err), 0);
    assert_true(has_loc(p, 0, ls[0]) && has_loc(p, 0, ls[1]));
    assert_int_equal(why_for(p, 0, ls[0])->reason, VG_SCHED_R_STATIC);
    vg_sched_plan_destroy(p);
    /* a listed location breaking an enforcement is an error, not a skip */
    const char *allow[] = {"DE", "FR"};
    app.enforce.allow_countries = allow;
    app.enforce.n_allow_countries = 2;
    p = NULL;
    assert_int_equal(vg_sched_place(w, &app, 1, &d, NULL, &p, &err), VG_EINVAL);
    assert_null(p);
    assert_non_null(strstr(err.msg, "app s: static location ams: country NL is not in allow_countries [DE, FR]"));
    vg_sched_world_destroy(w);
}

static void dynamic_policy_follows_demand(void **state)
{
    struct vg_sched_world *w = small_world(64, 10);
    struct vg_sched_app app = dyn_app("d");
    struct vg_sched_demand_entry e[] = {{loc(w, "fra"), 50000}, {loc(w, "syd"), 50000}, {loc(w, "mel"), 100}};
    struct vg_sched_demand d = {e, 3};
    struct vg_sched_plan *p = NULL;
    struct vg_sched_error err;
    assert_int_equal(vg_sched_place(w, &app, 1, &d, NULL, &p, &err), 0);
    assert_true(has_loc(p, 0, loc(w, "fra")));
    assert_true(has_loc(p, 0, loc(w, "syd")));
    const uint32_t *locs;
    assert_int_equal(vg_sched_plan_locations(p, 0, &locs), 2); /* 95% within 20 ms with two */
    struct vg_sched_app_stats st;
    vg_sched_plan_app_stats(p, 0, &st);
    assert_true(st.within_mrps * 100 >= st.demand_mrps * 95);
    assert_int_equal(why_for(p, 0, loc(w, "fra"))->reason, VG_SCHED_R_GAIN);
    /* Melbourne's trickle: its own location would gain latency but the target is met */
    const struct vg_sched_why *mel = why_for(p, 0, loc(w, "mel"));
    assert_non_null(mel);
    assert_int_equal(mel->verdict, VG_SCHED_REJECTED);
    assert_true(mel->reason == VG_SCHED_R_TARGET_MET || mel->reason == VG_SCHED_R_BELOW_DEMAND);
    vg_sched_plan_destroy(p);
    /* 100% within 5 ms asks for Melbourne too (Sydney is 9 ms away), but its
     * demand is below min_demand */
    app.percentile = 100;
    app.target_us = 5000;
    assert_int_equal(vg_sched_place(w, &app, 1, &d, NULL, &p, &err), 0);
    assert_false(has_loc(p, 0, loc(w, "mel")));
    assert_int_equal(why_for(p, 0, loc(w, "mel"))->reason, VG_SCHED_R_BELOW_DEMAND);
    vg_sched_plan_destroy(p);
    vg_sched_world_destroy(w);
}

static void enforcements(void **state)
{
    struct vg_sched_world *w = small_world(64, 10);
    struct vg_sched_app app = dyn_app("e");
    const char *eu[] = {"eu"};
    app.enforce.allow_regions = eu;
    app.enforce.n_allow_regions = 1;
    app.enforce.residency = true;
    struct vg_sched_demand_entry e[] = {{loc(w, "fra"), 5000}, {loc(w, "iad"), 5000}};
    struct vg_sched_demand d = {e, 2};
    struct vg_sched_plan *p = NULL;
    struct vg_sched_error err;
    assert_int_equal(vg_sched_place(w, &app, 1, &d, NULL, &p, &err), 0);
    assert_true(has_loc(p, 0, loc(w, "fra")));
    assert_false(has_loc(p, 0, loc(w, "iad")));
    const struct vg_sched_why *iad = why_for(p, 0, loc(w, "iad"));
    assert_non_null(iad);
    assert_int_equal(iad->reason, VG_SCHED_R_POLICY);
    struct vg_sched_app_stats st;
    vg_sched_plan_app_stats(p, 0, &st);
    assert_int_equal(st.served_mrps, 5000); /* Washington's demand may not leave its region */
    char why[200];
    assert_int_equal(vg_sched_plan_verify(w, &app, 1, p, why, sizeof(why)), 0);
    char *text = vg_sched_explain_text(w, &app, 1, p, 0);
    assert_non_null(strstr(text, "region na is not in allow_regions [eu]"));
    assert_non_null(strstr(text, "unserved 5.000 rps (residency"));
    assert_non_null(strstr(text, "enforce: allow_regions [eu] residency"));
    assert_non_null(strstr(text, "+ fra             chosen DE/eu: largest latency gain: serves 5.000 rps"));
    free(text);
    vg_sched_plan_destroy(p);
    /* required tags: only pci locations */
    struct vg_sched_app pci = dyn_app("pci");
    pci.enforce.require_tags = vg_sched_world_tag(w, "pci");
    assert_int_equal(vg_sched_place(w, &pci, 1, &d, NULL, &p, &err), 0);
    const uint32_t *locs;
    size_t n = vg_sched_plan_locations(p, 0, &locs);
    assert_true(n >= 1);
    for (size_t i = 0; i < n; i++)
        assert_true(vg_sched_world_location(w, locs[i])->tags & 1);
    assert_int_equal(vg_sched_plan_verify(w, &pci, 1, p, why, sizeof(why)), 0);
    vg_sched_plan_destroy(p);
    vg_sched_world_destroy(w);
}

static void priority_wins_capacity(void **state)
{
    struct vg_sched_world *w = small_world(64, 1); /* one app per location */
    struct vg_sched_app apps[2] = {dyn_app("low"), dyn_app("high")};
    apps[0].max_locs = apps[1].max_locs = 1;
    apps[1].priority = 5;
    struct vg_sched_demand_entry e[] = {{loc(w, "fra"), 5000}};
    struct vg_sched_demand d[2] = {{e, 1}, {e, 1}};
    struct vg_sched_plan *p = NULL, *q = NULL;
    struct vg_sched_error err;
    assert_int_equal(vg_sched_place(w, apps, 2, d, NULL, &p, &err), 0);
    assert_true(has_loc(p, 1, loc(w, "fra")));
    assert_false(has_loc(p, 0, loc(w, "fra")));
    const struct vg_sched_why *y = why_for(p, 0, loc(w, "fra"));
    assert_int_equal(y->reason, VG_SCHED_R_CAPACITY);
    assert_int_equal(y->resource, VG_SCHED_RES_SLOTS);
    assert_int_equal(y->by_app, 1);
    /* the low app held fra; now the high one arrives: displaced, and said so */
    apps[1].priority = 5;
    struct vg_sched_demand none[2] = {{e, 1}, {NULL, 0}};
    vg_sched_plan_destroy(p);
    assert_int_equal(vg_sched_place(w, apps, 2, none, NULL, &p, &err), 0);
    assert_true(has_loc(p, 0, loc(w, "fra")));
    assert_int_equal(vg_sched_place(w, apps, 2, d, p, &q, &err), 0);
    assert_true(has_loc(q, 1, loc(w, "fra")));
    assert_int_equal(why_for(q, 0, loc(w, "fra"))->reason, VG_SCHED_R_DISPLACED);
    json_t *j = vg_sched_explain_json(w, apps, 2, q, 0);
    char *s = json_dumps(j, JSON_SORT_KEYS);
    assert_non_null(strstr(s, "\"by_app\": \"high\""));
    assert_non_null(strstr(s, "\"reason\": \"displaced\""));
    free(s);
    json_decref(j);
    char why[200];
    assert_int_equal(vg_sched_plan_verify(w, apps, 2, q, why, sizeof(why)), 0);
    vg_sched_plan_destroy(p);
    vg_sched_plan_destroy(q);
    vg_sched_world_destroy(w);
}

static struct vg_sched_sim *sim_world(uint64_t seed, size_t n_locs, size_t n_apps);

static void update_preempts_lower_priority(void **state)
{
    struct vg_sched_world *w = small_world(64, 1);
    struct vg_sched_app apps[2] = {dyn_app("low"), dyn_app("high")};
    apps[0].max_locs = apps[1].max_locs = 1;
    apps[1].priority = 5;
    uint32_t fra = loc(w, "fra");
    struct vg_sched_demand_entry e[] = {{fra, 5000}};
    struct vg_sched_demand d[2] = {{e, 1}, {NULL, 0}};
    struct vg_sched_plan *p = NULL;
    struct vg_sched_error err;
    assert_int_equal(vg_sched_place(w, apps, 2, d, NULL, &p, &err), 0);
    assert_true(has_loc(p, 0, fra));
    /* demand for the high app appears: one update places it, the low app makes room */
    d[1] = (struct vg_sched_demand){e, 1};
    assert_int_equal(vg_sched_update(w, apps, 2, d, p, 1, &err), 0);
    assert_true(has_loc(p, 1, fra));
    assert_false(has_loc(p, 0, fra));
    const uint32_t *locs;
    assert_int_equal(vg_sched_plan_locations(p, 0, &locs), 1); /* moved, not dropped */
    const struct vg_sched_why *y = why_for(p, 0, fra);
    assert_int_equal(y->reason, VG_SCHED_R_DISPLACED);
    assert_int_equal(y->by_app, 1);
    char why[200];
    assert_int_equal(vg_sched_plan_verify(w, apps, 2, p, why, sizeof(why)), 0);
    /* and the low app's own update does not take it back */
    assert_int_equal(vg_sched_update(w, apps, 2, d, p, 0, &err), 0);
    assert_true(has_loc(p, 1, fra));
    assert_int_equal(vg_sched_plan_verify(w, apps, 2, p, why, sizeof(why)), 0);
    vg_sched_plan_destroy(p);
    vg_sched_world_destroy(w);
}

/* A small change of demand moves few placements. */
static void stability(void **state)
{
    struct vg_sched_sim *s = sim_world(9, 2000, 200);
    size_t n_apps;
    const struct vg_sched_app *apps = vg_sched_sim_apps(s, &n_apps);
    const struct vg_sched_world *w = vg_sched_sim_world(s);
    const struct vg_sched_demand *d = vg_sched_sim_demand(s, 30);
    struct vg_sched_plan *p = NULL, *q = NULL;
    struct vg_sched_error err;
    assert_int_equal(vg_sched_place(w, apps, n_apps, d, NULL, &p, &err), 0);
    /* +-5% on every area's demand */
    struct vg_sched_demand *d2 = calloc(n_apps, sizeof(*d2));
    struct vg_sched_rng r;
    vg_sched_rng_seed(&r, 5);
    for (size_t a = 0; a < n_apps; a++) {
        struct vg_sched_demand_entry *e = calloc(d[a].n + 1, sizeof(*e));
        for (size_t i = 0; i < d[a].n; i++)
            e[i] = (struct vg_sched_demand_entry){d[a].e[i].area,
                                                  (uint32_t)(d[a].e[i].mrps * (0.95 + 0.1 * vg_sched_rng_unit(&r)))};
        d2[a] = (struct vg_sched_demand){e, d[a].n};
    }
    assert_int_equal(vg_sched_place(w, apps, n_apps, d2, p, &q, &err), 0);
    struct vg_sched_use use;
    vg_sched_plan_use(w, p, &use);
    uint64_t churn = vg_sched_plan_churn(p, q);
    printf("churn after +-5%% demand: %llu of %llu placements\n", (unsigned long long)churn,
           (unsigned long long)use.placements);
    assert_true(churn * 100 <= use.placements * 2);
    for (size_t a = 0; a < n_apps; a++)
        free((void *)d2[a].e);
    free(d2);
    vg_sched_plan_destroy(p);
    vg_sched_plan_destroy(q);
    vg_sched_sim_destroy(s);
}

static void hysteresis(void **state)
{
    struct vg_sched_world *w = small_world(64, 10);
    struct vg_sched_app app = dyn_app("h");
    app.scale_in_steps = 3;
    struct vg_sched_demand_entry e[] = {{loc(w, "fra"), 5000}, {loc(w, "syd"), 5000}};
    struct vg_sched_demand d = {e, 2};
    struct vg_sched_plan *p = NULL, *q = NULL;
    struct vg_sched_error err;
    assert_int_equal(vg_sched_place(w, &app, 1, &d, NULL, &p, &err), 0);
    uint32_t syd = loc(w, "syd");
    assert_true(has_loc(p, 0, syd));
    e[1].mrps = 100; /* Sydney goes quiet: kept for two more steps, removed on the third */
    for (int step = 1; step <= 3; step++) {
        assert_int_equal(vg_sched_place(w, &app, 1, &d, p, &q, &err), 0);
        const struct vg_sched_why *y = why_for(q, 0, syd);
        assert_int_equal(y->below, step);
        if (step < 3) {
            assert_true(has_loc(q, 0, syd));
            assert_int_equal(y->reason, VG_SCHED_R_HYSTERESIS);
        } else {
            assert_false(has_loc(q, 0, syd));
            assert_int_equal(y->reason, VG_SCHED_R_SCALED_IN);
            char *text = vg_sched_explain_text(w, &app, 1, q, 0);
            assert_non_null(strstr(text, "< min_demand 1.000 rps, 3 of 3 steps"));
            free(text);
        }
        assert_int_equal(vg_sched_plan_churn(p, q), step < 3 ? 0 : 1);
        vg_sched_plan_destroy(p);
        p = q;
    }
    /* Frankfurt goes quiet too: the last location is the minimum, it stays */
    e[0].mrps = 100;
    uint32_t fra = loc(w, "fra");
    for (int step = 1; step <= 5; step++) {
        assert_int_equal(vg_sched_place(w, &app, 1, &d, p, &q, &err), 0);
        assert_true(has_loc(q, 0, fra));
        assert_int_equal(vg_sched_plan_churn(p, q), 0);
        assert_int_equal(why_for(q, 0, fra)->reason, step < 3 ? VG_SCHED_R_HYSTERESIS : VG_SCHED_R_MIN_COUNT);
        vg_sched_plan_destroy(p);
        p = q;
    }
    vg_sched_plan_destroy(p);
    vg_sched_world_destroy(w);
}

static void measured_rtt_overrides_the_model(void **state)
{
    struct vg_sched_world *w = small_world(64, 10);
    struct vg_sched_app app = dyn_app("m");
    app.max_locs = 1;
    uint32_t fra = loc(w, "fra"), ams = loc(w, "ams");
    struct vg_sched_demand_entry e[] = {{fra, 5000}};
    struct vg_sched_demand d = {e, 1};
    struct vg_sched_plan *p = NULL;
    struct vg_sched_error err;
    assert_int_equal(vg_sched_place(w, &app, 1, &d, NULL, &p, &err), 0);
    assert_true(has_loc(p, 0, fra));
    vg_sched_plan_destroy(p);
    /* Frankfurt's clients measure 40 ms to their own city, 3 ms to Amsterdam */
    assert_int_equal(vg_sched_world_set_rtt(w, fra, fra, 40000), 0);
    assert_int_equal(vg_sched_world_set_rtt(w, fra, ams, 3000), 0);
    assert_int_equal(vg_sched_rtt_us(w, fra, ams), 3000);
    assert_int_equal(vg_sched_place(w, &app, 1, &d, NULL, &p, &err), 0);
    assert_true(has_loc(p, 0, ams));
    vg_sched_plan_destroy(p);
    vg_sched_world_destroy(w);
}

/* --- properties on simulated worlds --------------------------------------- */

static struct vg_sched_sim *sim_world(uint64_t seed, size_t n_locs, size_t n_apps)
{
    struct vg_geo_set *set = NULL;
    assert_int_equal(vg_geo_set_builtin(&set), 0);
    size_t n = vg_geo_set_count(set);
    struct vg_sched_sim_point *pts = calloc(n, sizeof(*pts));
    for (size_t i = 0; i < n; i++) {
        const struct vg_geo_location *g = vg_geo_set_at(set, i);
        pts[i].lat = g->lat;
        pts[i].lon = g->lon;
        memcpy(pts[i].country, g->country, 3);
        snprintf(pts[i].region, sizeof(pts[i].region), "%s", g->region);
    }
    struct vg_sched_sim *s = NULL;
    assert_int_equal(vg_sched_sim_create(pts, n, n_locs, n_apps, seed, &s), 0);
    free(pts);
    vg_geo_set_destroy(set);
    return s;
}

static uint64_t run_sim(uint64_t seed, size_t steps)
{
    struct vg_sched_sim *s = sim_world(seed, 800, 120);
    size_t n_apps;
    const struct vg_sched_app *apps = vg_sched_sim_apps(s, &n_apps);
    const struct vg_sched_world *w = vg_sched_sim_world(s);
    struct vg_sched_plan *prev = NULL;
    uint64_t digest = 0;
    for (uint32_t step = 0; step < steps; step++) {
        const struct vg_sched_demand *d = vg_sched_sim_demand(s, step * 7);
        struct vg_sched_plan *p = NULL;
        struct vg_sched_error err;
        assert_int_equal(vg_sched_place(w, apps, n_apps, d, prev, &p, &err), 0);
        char why[300];
        size_t bad = vg_sched_plan_verify(w, apps, n_apps, p, why, sizeof(why));
        if (bad)
            fail_msg("seed %llu step %u: %s", (unsigned long long)seed, step, why);
        /* incremental updates keep the invariants too */
        for (uint32_t a = step; a < n_apps; a += 17)
            assert_int_equal(vg_sched_update(w, apps, n_apps, d, p, a, &err), 0);
        assert_int_equal(vg_sched_plan_verify(w, apps, n_apps, p, why, sizeof(why)), 0);
        digest = digest * 31 + vg_sched_plan_digest(p);
        vg_sched_plan_destroy(prev);
        prev = p;
    }
    /* explanations render for every app, and their bytes join the digest:
     * the same input must give the same output bytes */
    for (uint32_t a = 0; a < n_apps; a++) {
        char *t = vg_sched_explain_text(w, apps, n_apps, prev, a);
        json_t *j = vg_sched_explain_json(w, apps, n_apps, prev, a);
        char *js = json_dumps(j, JSON_SORT_KEYS | JSON_COMPACT);
        assert_non_null(strstr(t, apps[a].name));
        for (const char *c = t; *c; c++)
            digest = (digest ^ (unsigned char)*c) * 1099511628211ull;
        for (const char *c = js; *c; c++)
            digest = (digest ^ (unsigned char)*c) * 1099511628211ull;
        free(t);
        free(js);
        json_decref(j);
    }
    vg_sched_plan_destroy(prev);
    vg_sched_sim_destroy(s);
    return digest;
}

static void property_random_worlds(void **state)
{
    for (uint64_t seed = 1; seed <= 4; seed++) {
        uint64_t a = run_sim(seed, 6), b = run_sim(seed, 6);
        assert_true(a == b); /* determinism: the same input, the same decisions */
        if (seed > 1)
            assert_true(a != run_sim(seed - 1, 6));
    }
}

/* What each record says must hold of its figures, on a simulated world of
 * a size where the greedy's buckets and drops all come into play: a
 * location has one record; a candidate dropped below the demand threshold
 * served less than it with some gain; "no gain" has none; the greedy's
 * stops name the count or the target that stopped it; chosen and kept
 * locations are the plan's. */
static void records_say_why(void **state)
{
    struct vg_sched_sim *s = sim_world(7, 3000, 300);
    size_t n_apps;
    const struct vg_sched_app *apps = vg_sched_sim_apps(s, &n_apps);
    const struct vg_sched_world *w = vg_sched_sim_world(s);
    struct vg_sched_plan *prev = NULL;
    uint8_t *seen = calloc(vg_sched_world_n_locations(w), 1);
    size_t dropped = 0, stopped = 0;
    for (uint32_t step = 0; step < 2; step++) { /* without, then with a previous plan */
        struct vg_sched_plan *p = NULL;
        struct vg_sched_error err;
        assert_int_equal(vg_sched_place(w, apps, n_apps, vg_sched_sim_demand(s, 60 + step), prev, &p, &err), 0);
        for (uint32_t a = 0; a < n_apps; a++) {
            const struct vg_sched_app *app = &apps[a];
            const struct vg_sched_why *y;
            size_t n = vg_sched_plan_explain(p, a, &y), placed = 0;
            const uint32_t *locs;
            size_t n_locs = vg_sched_plan_locations(p, a, &locs);
            for (size_t i = 0; i < n; i++) {
                assert_true(y[i].loc < vg_sched_world_n_locations(w));
                assert_int_equal(seen[y[i].loc], 0);
                seen[y[i].loc] = 1;
                if (y[i].verdict != VG_SCHED_REJECTED) {
                    placed++;
                    assert_true(has_loc(p, a, y[i].loc));
                    continue;
                }
                assert_false(has_loc(p, a, y[i].loc));
                switch (y[i].reason) {
                case VG_SCHED_R_BELOW_DEMAND:
                    assert_true(y[i].demand_mrps < app->min_demand_mrps && y[i].gain > 0);
                    dropped++;
                    break;
                case VG_SCHED_R_NO_GAIN:
                    assert_true(y[i].gain == 0 && y[i].demand_mrps == 0);
                    break;
                case VG_SCHED_R_MAX_REACHED:
                    assert_true(y[i].gain > 0 && n_locs >= app->max_locs);
                    stopped++;
                    break;
                case VG_SCHED_R_TARGET_MET:
                    assert_true(y[i].gain > 0 && n_locs >= app->min_locs);
                    stopped++;
                    break;
                default:
                    break;
                }
            }
            assert_int_equal(placed, n_locs);
            for (size_t i = 0; i < n; i++)
                seen[y[i].loc] = 0;
        }
        vg_sched_plan_destroy(prev);
        prev = p;
    }
    assert_true(dropped > 0 && stopped > 0); /* the paths were taken */
    free(seen);
    vg_sched_plan_destroy(prev);
    vg_sched_sim_destroy(s);
}

/* --- exactness -------------------------------------------------------------- */

static void exact_gap_small_worlds(void **state)
{
    struct vg_sched_rng r;
    vg_sched_rng_seed(&r, 42);
    double sum_gap = 0, worst = 0;
    int n = 0, optimal = 0;
    for (int inst = 0; inst < 60; inst++) {
        struct vg_sched_world *w = small_world(12, 10);
        struct vg_sched_demand_entry e[12];
        for (size_t i = 0; i < 12; i++)
            e[i] = (struct vg_sched_demand_entry){(uint32_t)i, 1000 + (uint32_t)vg_sched_rng_below(&r, 50000)};
        struct vg_sched_demand d = {e, 12};
        struct vg_sched_app app = dyn_app("x");
        app.percentile = 100;
        app.target_us = 1000; /* unreachable: the greedy goes to max */
        app.max_locs = 2 + (uint32_t)vg_sched_rng_below(&r, 4);
        app.min_demand_mrps = 0;
        struct vg_sched_plan *p = NULL;
        struct vg_sched_error err;
        assert_int_equal(vg_sched_place(w, &app, 1, &d, NULL, &p, &err), 0);
        const uint32_t *locs;
        size_t k = vg_sched_plan_locations(p, 0, &locs);
        uint32_t best[12];
        uint64_t opt = vg_sched_exact(w, &app, &d, k, best), got = vg_sched_cost(w, &app, &d, locs, k);
        assert_true(opt != UINT64_MAX && got >= opt);
        double gap = (double)(got - opt) / (double)opt;
        sum_gap += gap;
        worst = gap > worst ? gap : worst;
        optimal += got == opt;
        n++;
        vg_sched_plan_destroy(p);
        vg_sched_world_destroy(w);
    }
    printf("optimality gap over %d instances (12 locations): mean %.3f%%, worst %.3f%%, optimal in %d\n", n,
           100 * sum_gap / n, 100 * worst, optimal);
    assert_true(sum_gap / n < 0.01);
    assert_true(worst < 0.05);
}

/* Each area's demand goes to the chosen location nearest to it by
 * latency (the placement answers from its pairs where it can, the search
 * over every chosen location elsewhere: both must agree with a brute
 * force), and p50/p95 are the demand-weighted quantiles of a sort. */
static int cmp_key(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static uint32_t quantile_by_sort(uint64_t *k, size_t n, uint64_t total, unsigned pct)
{
    qsort(k, n, sizeof(*k), cmp_key);
    uint64_t want = (total * pct + 99) / 100, acc = 0;
    for (size_t i = 0; i < n; i++) {
        acc += (uint32_t)k[i];
        if (acc >= want && acc > 0)
            return (uint32_t)(k[i] >> 32);
    }
    return n ? (uint32_t)(k[n - 1] >> 32) : 0;
}

static void check_served(const struct vg_sched_world *w, const struct vg_sched_app *apps, size_t n_apps,
                         const struct vg_sched_plan *p)
{
    for (uint32_t a = 0; a < n_apps; a++) {
        const uint32_t *locs;
        size_t n_locs = vg_sched_plan_locations(p, a, &locs);
        const struct vg_sched_served *sv;
        size_t n = vg_sched_plan_served(p, a, &sv);
        uint64_t *keys = calloc(n + 1, sizeof(*keys));
        size_t nk = 0;
        uint64_t served = 0;
        for (size_t i = 0; i < n; i++) {
            uint32_t best = UINT32_MAX;
            for (size_t k = 0; k < n_locs; k++) {
                if (apps[a].enforce.residency && strcmp(vg_sched_world_location(w, locs[k])->region,
                                                        vg_sched_world_area(w, sv[i].area)->region) != 0)
                    continue;
                uint32_t r = vg_sched_rtt_us(w, sv[i].area, locs[k]);
                best = r < best ? r : best;
            }
            if (best == UINT32_MAX) {
                assert_int_equal(sv[i].loc, VG_SCHED_NONE);
                continue;
            }
            assert_int_not_equal(sv[i].loc, VG_SCHED_NONE);
            assert_int_equal(sv[i].rtt_us, best);
            assert_int_equal(vg_sched_rtt_us(w, sv[i].area, sv[i].loc), best);
            keys[nk++] = (uint64_t)sv[i].rtt_us << 32 | sv[i].mrps;
            served += sv[i].mrps;
        }
        struct vg_sched_app_stats st;
        vg_sched_plan_app_stats(p, a, &st);
        assert_int_equal(st.served_mrps, served);
        assert_int_equal(st.p50_us, quantile_by_sort(keys, nk, served, 50));
        assert_int_equal(st.p95_us, quantile_by_sort(keys, nk, served, 95));
        free(keys);
    }
}

static void served_is_the_nearest_chosen(void **state)
{
    for (uint64_t seed = 5; seed <= 6; seed++) {
        struct vg_sched_sim *s = sim_world(seed, 2000, 150);
        size_t n_apps;
        const struct vg_sched_app *apps = vg_sched_sim_apps(s, &n_apps);
        const struct vg_sched_world *w = vg_sched_sim_world(s);
        struct vg_sched_plan *p = NULL;
        struct vg_sched_error err;
        const struct vg_sched_demand *d = vg_sched_sim_demand(s, 90);
        assert_int_equal(vg_sched_place(w, apps, n_apps, d, NULL, &p, &err), 0);
        check_served(w, apps, n_apps, p);
        d = vg_sched_sim_demand(s, 97);
        for (uint32_t a = 0; a < n_apps; a += 7)
            assert_int_equal(vg_sched_update(w, apps, n_apps, d, p, a, &err), 0);
        check_served(w, apps, n_apps, p);
        vg_sched_plan_destroy(p);
        vg_sched_sim_destroy(s);
    }
}

/* A parallel placement is the sequential one, bit for bit: plans chained
 * through previous ones on simulated worlds, small enough that apps
 * compete for capacity (the placements made ahead are often stale and
 * placed again), on 2 and 3 threads; and the same first failure. */
static void plan_same(const struct vg_sched_plan *a, const struct vg_sched_plan *b, size_t n_apps)
{
    assert_true(vg_sched_plan_digest(a) == vg_sched_plan_digest(b));
    for (uint32_t i = 0; i < n_apps; i++) {
        struct vg_sched_app_stats x, y;
        vg_sched_plan_app_stats(a, i, &x);
        vg_sched_plan_app_stats(b, i, &y);
        assert_memory_equal(&x, &y, sizeof(x));
    }
}

static void threads_same_plan(void **state)
{
    for (uint64_t seed = 1; seed <= 6; seed++) {
        struct vg_sched_sim *s = sim_world(seed, seed % 2 ? 300 : 1200, seed % 2 ? 200 : 400);
        size_t n_apps;
        const struct vg_sched_app *apps = vg_sched_sim_apps(s, &n_apps);
        const struct vg_sched_world *w = vg_sched_sim_world(s);
        struct vg_sched_plan *prev = NULL;
        for (uint32_t step = 0; step < 3; step++) {
            const struct vg_sched_demand *d = vg_sched_sim_demand(s, 80 + 11 * step);
            struct vg_sched_plan *p1 = NULL, *p2 = NULL, *p3 = NULL;
            struct vg_sched_error err;
            assert_int_equal(vg_sched_place_threads(w, apps, n_apps, d, prev, 1, &p1, &err), 0);
            assert_int_equal(vg_sched_place_threads(w, apps, n_apps, d, prev, 2, &p2, &err), 0);
            assert_int_equal(vg_sched_place_threads(w, apps, n_apps, d, prev, 3, &p3, &err), 0);
            plan_same(p1, p2, n_apps);
            plan_same(p1, p3, n_apps);
            assert_int_equal(vg_sched_plan_verify(w, apps, n_apps, p2, NULL, 0), 0);
            vg_sched_plan_destroy(p2);
            vg_sched_plan_destroy(p3);
            vg_sched_plan_destroy(prev);
            prev = p1;
        }
        vg_sched_plan_destroy(prev);
        /* a static location its enforcements forbid, halfway down the
         * order: the same error, and no plan */
        struct vg_sched_app *bad = calloc(n_apps, sizeof(*bad));
        memcpy(bad, apps, n_apps * sizeof(*bad));
        uint32_t b = (uint32_t)(n_apps / 2), loc = 0;
        char why[200];
        while (bad[b].enforce.n_allow_countries == 0 && bad[b].enforce.n_allow_regions == 0 && b + 1 < n_apps)
            b++;
        for (; loc < vg_sched_world_n_locations(w); loc++)
            if (vg_sched_enforce_check(w, &bad[b], loc, why, sizeof(why)))
                break;
        if (loc < vg_sched_world_n_locations(w)) {
            bad[b].mode = VG_SCHED_STATIC;
            bad[b].static_locs = &loc;
            bad[b].n_static = 1;
            const struct vg_sched_demand *d = vg_sched_sim_demand(s, 90);
            struct vg_sched_plan *p = NULL;
            struct vg_sched_error e1, e2;
            assert_int_equal(vg_sched_place_threads(w, bad, n_apps, d, NULL, 1, &p, &e1), VG_EINVAL);
            assert_int_equal(vg_sched_place_threads(w, bad, n_apps, d, NULL, 2, &p, &e2), VG_EINVAL);
            assert_int_equal(e1.app, b);
            assert_int_equal(e2.app, b);
            assert_string_equal(e1.msg, e2.msg);
        }
        free(bad);
        vg_sched_sim_destroy(s);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(static_policy),
        cmocka_unit_test(dynamic_policy_follows_demand),
        cmocka_unit_test(enforcements),
        cmocka_unit_test(priority_wins_capacity),
        cmocka_unit_test(update_preempts_lower_priority),
        cmocka_unit_test(stability),
        cmocka_unit_test(hysteresis),
        cmocka_unit_test(measured_rtt_overrides_the_model),
        cmocka_unit_test(property_random_worlds),
        cmocka_unit_test(records_say_why),
        cmocka_unit_test(exact_gap_small_worlds),
        cmocka_unit_test(served_is_the_nearest_chosen),
        cmocka_unit_test(threads_same_plan),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
