/* control: the live figures' table (control_top.c) — rates from two
 * successive cumulative reports, counter resets (a restart, a new version,
 * a counter that went back), percentiles from merged buckets, the sums over
 * nodes and locations, stale nodes, and the gates' per-node figures. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include <math.h>

#include "control/control_int.h"

struct rep {
    const char *node, *loc, *boot, *version;
    uint64_t t_ms, live_since, req, err;
    uint64_t counts[15];
    int64_t hit, miss, bypass; /* < 0: no cache object */
};

static json_t *report_json(const struct rep *r)
{
    json_t *le = json_array(), *c = json_array();
    for (int i = 0; i < 14; i++)
        json_array_append_new(le, json_real(vg__control_latency_le_ms[i]));
    for (int i = 0; i < 15; i++)
        json_array_append_new(c, json_integer((json_int_t)r->counts[i]));
    json_t *st =
        json_pack("{s:I,s:I,s:I,s:o,s:o}", "live_since_ms", (json_int_t)r->live_since, "requests", (json_int_t)r->req,
                  "errors_5xx", (json_int_t)r->err, "latency_le_ms", le, "latency_counts", c);
    if (r->hit >= 0)
        json_object_set_new(st, "cache",
                            json_pack("{s:I,s:I,s:I,s:I}", "hit", (json_int_t)r->hit, "miss", (json_int_t)r->miss,
                                      "stale", (json_int_t)0, "bypass", (json_int_t)r->bypass));
    json_t *app = json_pack("{s:o}", "stats", st);
    if (r->version)
        json_object_set_new(app, "version", json_string(r->version));
    return json_pack("{s:s,s:s,s:s,s:I,s:{s:o}}", "node", r->node, "location", r->loc, "boot", r->boot ? r->boot : "b1",
                     "time_ms", (json_int_t)r->t_ms, "apps", "shop", app);
}

static int ingest(struct vg__control_top *t, const struct rep *r, uint64_t now_ms)
{
    json_t *j = report_json(r);
    int rc = vg__control_top_ingest(t, NULL, j, now_ms, VG__CONTROL_TOP_BUS);
    json_decref(j);
    return rc;
}

/* The row of (app, loc) in GET /v1/top's body; loc NULL: the app's totals. */
static json_t *row(json_t *top, const char *app, const char *loc)
{
    size_t i;
    json_t *r;
    json_array_foreach(json_object_get(top, loc ? "rows" : "apps"), i, r)
    {
        if (strcmp(json_string_value(json_object_get(r, "app")), app) != 0)
            continue;
        if (!loc || strcmp(json_string_value(json_object_get(r, "location")), loc) == 0)
            return r;
    }
    return NULL;
}

static double num(json_t *r, const char *k)
{
    return json_number_value(json_object_get(r, k));
}

static bool near(double a, double b)
{
    return fabs(a - b) < 1e-3;
}

static void test_rate_from_two_reports(void **state)
{
    (void)state;
    struct vg__control_top *t = vg__control_top_create();
    struct rep r = {.node = "a", .loc = "fra", .version = "v1", .t_ms = 10000, .live_since = 1, .req = 100, .err = 10};
    r.counts[1] = 100;
    r.hit = -1;
    assert_int_equal(ingest(t, &r, 1000), 0);
    json_t *top = vg__control_top_json(t, 1000);
    json_t *x = row(top, "shop", "fra");
    assert_non_null(x); /* one report: the node is there, no rate yet */
    assert_int_equal(json_integer_value(json_object_get(x, "nodes")), 1);
    assert_true(near(num(x, "rps"), 0));
    assert_true(json_is_null(json_object_get(x, "p99_ms")));
    json_decref(top);

    r.t_ms = 11000;
    r.req = 300;
    r.err = 30;
    r.counts[1] = 150;
    r.counts[3] = 50;
    assert_int_equal(ingest(t, &r, 2000), 0);
    top = vg__control_top_json(t, 2000);
    x = row(top, "shop", "fra");
    assert_true(near(num(x, "rps"), 200)); /* 200 requests in 1 s of the node's clock */
    assert_int_equal(json_integer_value(json_object_get(x, "requests")), 200);
    assert_true(near(num(x, "error_rate"), 0.1));
    assert_true(near(num(x, "error_pct"), 10));
    /* the window's buckets: 50 in (0.5, 1], 50 in (2.5, 5] */
    assert_true(near(num(x, "p50_ms"), 1.0));
    assert_true(near(num(x, "p99_ms"), 4.95));
    assert_true(json_is_null(json_object_get(x, "cache_hit_ratio")));
    assert_int_equal(json_integer_value(json_object_get(top, "window_ms")), 1000);
    assert_int_equal(json_integer_value(json_object_get(top, "nodes")), 1);
    json_decref(top);
    vg__control_top_destroy(t);
}

static void test_counter_resets(void **state)
{
    (void)state;
    struct vg__control_top *t = vg__control_top_create();
    struct rep r = {.node = "a", .loc = "fra", .version = "v1", .t_ms = 10000, .live_since = 5, .req = 1000, .hit = -1};
    assert_int_equal(ingest(t, &r, 1000), 0);
    /* the counter went back (same series): it restarted from zero */
    r.t_ms = 11000;
    r.req = 50;
    assert_int_equal(ingest(t, &r, 2000), 0);
    json_t *top = vg__control_top_json(t, 2000);
    assert_true(near(num(row(top, "shop", "fra"), "rps"), 50));
    json_decref(top);
    /* a restart (another boot, counting since a later moment) with more
     * than before: still a reset, all of it is new */
    r.t_ms = 12000;
    r.boot = "b2";
    r.live_since = 11500;
    r.req = 70;
    assert_int_equal(ingest(t, &r, 3000), 0);
    top = vg__control_top_json(t, 3000);
    assert_true(near(num(row(top, "shop", "fra"), "rps"), 70));
    json_decref(top);
    /* a new version went live: its counters start over */
    r.t_ms = 13000;
    r.version = "v2";
    r.req = 90;
    assert_int_equal(ingest(t, &r, 4000), 0);
    top = vg__control_top_json(t, 4000);
    assert_true(near(num(row(top, "shop", "fra"), "rps"), 90));
    json_decref(top);
    /* and then the same series again: a plain difference */
    r.t_ms = 14000;
    r.req = 100;
    assert_int_equal(ingest(t, &r, 5000), 0);
    top = vg__control_top_json(t, 5000);
    assert_true(near(num(row(top, "shop", "fra"), "rps"), 10));
    json_decref(top);
    vg__control_top_destroy(t);
}

static void test_nodes_and_locations_summed_percentiles_merged(void **state)
{
    (void)state;
    struct vg__control_top *t = vg__control_top_create();
    struct rep a = {.node = "a", .loc = "fra", .t_ms = 1000, .hit = 0, .miss = 0, .bypass = 0};
    struct rep b = {.node = "b", .loc = "fra", .t_ms = 1000, .hit = -1};
    struct rep c = {.node = "c", .loc = "sin", .t_ms = 1000, .hit = -1};
    assert_int_equal(ingest(t, &a, 100), 0);
    assert_int_equal(ingest(t, &b, 100), 0);
    assert_int_equal(ingest(t, &c, 100), 0);
    a.t_ms = b.t_ms = 2000;
    c.t_ms = 3000;             /* a 2 s window of its own */
    a.req = a.counts[1] = 100; /* fast */
    a.hit = 90;
    a.miss = 10;
    a.bypass = 50;
    b.req = b.counts[10] = 100; /* slow: (500, 1000] */
    b.err = 50;
    c.req = c.counts[1] = 400;
    assert_int_equal(ingest(t, &a, 1100), 0);
    assert_int_equal(ingest(t, &b, 1100), 0);
    assert_int_equal(ingest(t, &c, 1100), 0);
    json_t *top = vg__control_top_json(t, 1200);
    json_t *fra = row(top, "shop", "fra"), *sin = row(top, "shop", "sin"), *all = row(top, "shop", NULL);
    assert_int_equal(json_integer_value(json_object_get(fra, "nodes")), 2);
    assert_true(near(num(fra, "rps"), 200));
    assert_true(near(num(fra, "error_rate"), 0.25));
    /* from the merged buckets, not an average of the nodes' p99s */
    assert_true(near(num(fra, "p50_ms"), 1.0));
    assert_true(near(num(fra, "p99_ms"), 990));
    assert_true(near(num(fra, "cache_hit_ratio"), 0.9)); /* bypasses are not the cache's */
    assert_true(near(num(sin, "rps"), 200));
    assert_true(near(num(all, "rps"), 400));
    assert_int_equal(json_integer_value(json_object_get(all, "nodes")), 3);
    assert_int_equal(json_integer_value(json_object_get(all, "requests")), 600);
    json_t *locs = json_object_get(all, "locations");
    assert_int_equal(json_array_size(locs), 2);
    assert_string_equal(json_string_value(json_array_get(locs, 0)), "fra");
    assert_int_equal(json_integer_value(json_object_get(top, "window_ms")), 2000);
    json_decref(top);
    /* b and c go quiet: past the stale limit only a reports */
    a.t_ms = 8000;
    assert_int_equal(ingest(t, &a, 1100 + VG__CONTROL_TOP_STALE_MS), 0);
    top = vg__control_top_json(t, 1101 + VG__CONTROL_TOP_STALE_MS);
    assert_int_equal(json_integer_value(json_object_get(top, "nodes")), 1);
    assert_null(row(top, "shop", "sin"));
    assert_int_equal(json_integer_value(json_object_get(row(top, "shop", "fra"), "nodes")), 1);
    json_decref(top);
    vg__control_top_destroy(t);
}

static void test_close_reports_widen_the_window(void **state)
{
    (void)state;
    struct vg__control_top *t = vg__control_top_create();
    struct rep r = {.node = "a", .loc = "fra", .t_ms = 1000, .hit = -1};
    assert_int_equal(ingest(t, &r, 100), 0);
    r.t_ms = 2000;
    r.req = 100;
    assert_int_equal(ingest(t, &r, 200), 0);
    /* a heartbeat right after the bus's report: the window (from the first) grows to 1.3 s */
    r.t_ms = 2300;
    r.req = 230;
    json_t *j = report_json(&r);
    assert_int_equal(vg__control_top_ingest(t, NULL, j, 300, VG__CONTROL_TOP_HEARTBEAT), 0);
    json_decref(j);
    json_t *top = vg__control_top_json(t, 300);
    assert_int_equal(json_integer_value(json_object_get(top, "window_ms")), 1300);
    assert_true(near(num(row(top, "shop", "fra"), "rps"), 230 / 1.3));
    json_t *src = json_object_get(top, "sources");
    assert_int_equal(json_integer_value(json_object_get(src, "bus_reports")), 2);
    assert_int_equal(json_integer_value(json_object_get(src, "heartbeat_reports")), 1);
    json_decref(top);
    /* an older report arriving late changes nothing */
    r.t_ms = 2100;
    r.req = 5;
    assert_int_equal(ingest(t, &r, 400), 0);
    top = vg__control_top_json(t, 400);
    assert_true(near(num(row(top, "shop", "fra"), "rps"), 230 / 1.3));
    json_decref(top);
    vg__control_top_destroy(t);
}

static void test_gate_figures_are_the_latest_report(void **state)
{
    (void)state;
    struct vg__control_top *t = vg__control_top_create();
    struct rep r = {.node = "a", .loc = "fra", .version = "v2", .t_ms = 1000, .req = 40, .err = 4, .hit = -1};
    r.counts[2] = 40;
    assert_int_equal(ingest(t, &r, 100), 0);
    r.t_ms = 2000;
    r.req = r.counts[2] = 60;
    r.err = 6;
    assert_int_equal(ingest(t, &r, 200), 0);
    struct vg__control_figures f = {0};
    char live[65] = "";
    assert_false(vg__control_top_node_figures(t, "a", "shop", "v1", &f, live));
    assert_false(vg__control_top_node_figures(t, "b", "shop", NULL, &f, live));
    assert_false(vg__control_top_node_figures(t, "a", "blog", NULL, &f, live));
    assert_int_equal(f.nodes, 0);
    assert_true(vg__control_top_node_figures(t, "a", "shop", "v2", &f, live));
    assert_string_equal(live, "v2");
    /* what the version served since it went live: the counters, not a window */
    assert_int_equal(f.requests, 60);
    assert_int_equal(f.errors, 6);
    assert_int_equal(f.timed, 60);
    assert_int_equal(f.nodes, 1);
    assert_true(vg__control_top_node_figures(t, "a", "shop", NULL, &f, NULL));
    assert_int_equal(f.requests, 120);
    assert_int_equal(f.nodes, 2);
    vg__control_top_destroy(t);
}

static void test_what_is_not_a_report(void **state)
{
    (void)state;
    struct vg__control_top *t = vg__control_top_create();
    json_t *bad[] = {
        json_string("x"),
        json_pack("{s:{}}", "apps"),                                   /* no node */
        json_pack("{s:s,s:{}}", "node", "a b", "apps"),                /* not a node id */
        json_pack("{s:s,s:[]}", "node", "a", "apps"),                  /* apps not an object */
        json_pack("{s:s,s:s,s:{}}", "node", "a", "boot", "x", "apps"), /* fine: no app yet */
    };
    for (size_t i = 0; i < 4; i++)
        assert_int_equal(vg__control_top_ingest(t, NULL, bad[i], 100, VG__CONTROL_TOP_BUS), VG_EINVAL);
    assert_int_equal(vg__control_top_ingest(t, NULL, bad[4], 100, VG__CONTROL_TOP_BUS), 0);
    assert_int_equal(vg__control_top_ingest(t, NULL, NULL, 100, VG__CONTROL_TOP_BUS), VG_EINVAL);
    for (size_t i = 0; i < 5; i++)
        json_decref(bad[i]);
    /* an app without stats (no live version there) has no row; nor has an
     * app whose 5xx exceed its requests */
    json_t *j = json_pack("{s:s,s:{s:{s:s},s:{s:{s:i,s:i}}}}", "node", "a", "apps", "shop", "health", "none", "blog",
                          "stats", "requests", 1, "errors_5xx", 2);
    assert_int_equal(vg__control_top_ingest(t, NULL, j, 100, VG__CONTROL_TOP_HEARTBEAT), 0);
    json_decref(j);
    json_t *top = vg__control_top_json(t, 100);
    assert_int_equal(json_array_size(json_object_get(top, "rows")), 0);
    assert_int_equal(json_integer_value(json_object_get(top, "nodes")), 1);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(top, "sources"), "refused")), 5);
    json_decref(top);
    vg__control_top_destroy(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rate_from_two_reports),
        cmocka_unit_test(test_counter_resets),
        cmocka_unit_test(test_nodes_and_locations_summed_percentiles_merged),
        cmocka_unit_test(test_close_reports_widen_the_window),
        cmocka_unit_test(test_gate_figures_are_the_latest_report),
        cmocka_unit_test(test_what_is_not_a_report),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
