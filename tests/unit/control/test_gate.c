/* control: the rollout gates' arithmetic — figures from reports, p99 from
 * histogram buckets, 5xx-rate and p99 comparisons with the thresholds at
 * their boundary. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include <math.h>

#include "control/control_int.h"

static json_t *stats(uint64_t req, uint64_t err, const uint64_t counts[15])
{
    json_t *le = json_array(), *c = json_array();
    for (int i = 0; i < 14; i++)
        json_array_append_new(le, json_real(vg__control_latency_le_ms[i]));
    for (int i = 0; i < 15; i++)
        json_array_append_new(c, json_integer((json_int_t)(counts ? counts[i] : 0)));
    return json_pack("{s:I,s:I,s:I,s:o,s:o}", "live_since_ms", (json_int_t)1, "requests", (json_int_t)req, "errors_5xx",
                     (json_int_t)err, "latency_le_ms", le, "latency_counts", c);
}

static void add(struct vg__control_figures *f, uint64_t req, uint64_t err, const uint64_t counts[15])
{
    json_t *s = stats(req, err, counts);
    assert_true(vg__control_figures_add(f, s));
    json_decref(s);
}

static bool near(double a, double b)
{
    return fabs(a - b) < 1e-6;
}

static void test_p99_from_buckets(void **state)
{
    struct vg__control_figures f = {0};
    assert_true(vg__control_figures_p99_ms(&f) < 0); /* nothing timed */
    /* 100 requests, all in (1, 2.5]: the rank 99 sits 99% into the bucket */
    uint64_t c[15] = {0};
    c[2] = 100;
    add(&f, 100, 0, c);
    assert_true(near(vg__control_figures_p99_ms(&f), 1 + 1.5 * 0.99));
    /* 99 fast (<= 0.5 ms) and 1 in (100, 250]: the rank 99 is the last fast one */
    struct vg__control_figures g = {0};
    uint64_t d[15] = {0};
    d[0] = 99;
    d[8] = 1;
    add(&g, 100, 0, d);
    assert_true(near(vg__control_figures_p99_ms(&g), 0.5));
    /* 98 fast, 2 slow: the rank 99 is in the slow bucket, halfway */
    struct vg__control_figures h = {0};
    uint64_t e[15] = {0};
    e[0] = 98;
    e[8] = 2;
    add(&h, 100, 0, e);
    assert_true(near(vg__control_figures_p99_ms(&h), 100 + 150 * 0.5));
    /* everything beyond the last bound: the last bound */
    struct vg__control_figures k = {0};
    uint64_t inf[15] = {0};
    inf[14] = 10;
    add(&k, 10, 0, inf);
    assert_true(near(vg__control_figures_p99_ms(&k), 10000));
    /* sums over nodes */
    add(&f, 100, 0, c);
    assert_int_equal(f.requests, 200);
    assert_int_equal(f.nodes, 2);
    assert_int_equal(f.timed, 200);
    assert_true(near(vg__control_figures_p99_ms(&f), 1 + 1.5 * 0.99));
}

static void test_reports_that_are_not_stats(void **state)
{
    struct vg__control_figures f = {0};
    json_t *s = json_string("x");
    assert_false(vg__control_figures_add(&f, s));
    json_decref(s);
    assert_false(vg__control_figures_add(&f, NULL));
    s = json_pack("{s:I,s:I}", "requests", (json_int_t)5, "errors_5xx", (json_int_t)6); /* more errors than requests */
    assert_false(vg__control_figures_add(&f, s));
    json_decref(s);
    /* other bounds: counted, but not timed */
    s = json_pack("{s:I,s:I,s:[f],s:[I,I]}", "requests", (json_int_t)5, "errors_5xx", (json_int_t)1, "latency_le_ms",
                  3.0, "latency_counts", (json_int_t)5, (json_int_t)0);
    assert_true(vg__control_figures_add(&f, s));
    json_decref(s);
    assert_int_equal(f.requests, 5);
    assert_int_equal(f.errors, 1);
    assert_int_equal(f.timed, 0);
    assert_true(near(vg__control_figures_error_rate(&f), 0.2));
    struct vg__control_figures z = {0};
    assert_true(vg__control_figures_error_rate(&z) == 0);
}

static void test_error_rate_gate_at_the_boundary(void **state)
{
    struct vg__control_gate g = {.min_requests = 100, .max_error_rate = 0.01, .max_p99_ratio = 1.5};
    struct vg__control_figures old = {0}, neu = {0};
    char why[256];
    add(&old, 1000, 10, NULL); /* 1% */
    add(&neu, 99, 99, NULL);   /* awful, but not enough requests yet */
    assert_int_equal(vg__control_gate_judge(&g, &old, &neu, true, why, sizeof(why)), VG__CONTROL_GATE_WAIT);
    assert_non_null(strstr(why, "99 of 100 requests"));
    memset(&neu, 0, sizeof(neu));
    add(&neu, 100, 2, NULL); /* 2%: exactly +1 point, passes */
    assert_int_equal(vg__control_gate_judge(&g, &old, &neu, true, why, sizeof(why)), VG__CONTROL_GATE_PASS);
    assert_int_equal(vg__control_gate_judge(&g, &old, &neu, false, why, sizeof(why)), VG__CONTROL_GATE_WAIT);
    memset(&neu, 0, sizeof(neu));
    add(&neu, 1000, 21, NULL); /* 2.1%: fails, window over or not */
    assert_int_equal(vg__control_gate_judge(&g, &old, &neu, false, why, sizeof(why)), VG__CONTROL_GATE_FAIL);
    assert_non_null(strstr(why, "5xx rate 2.10% against 1.00%"));
    /* better than before always passes */
    memset(&neu, 0, sizeof(neu));
    add(&neu, 1000, 0, NULL);
    assert_int_equal(vg__control_gate_judge(&g, &old, &neu, true, why, sizeof(why)), VG__CONTROL_GATE_PASS);
    /* max_error_rate 0: any increase fails, the same rate passes */
    g.max_error_rate = 0;
    memset(&neu, 0, sizeof(neu));
    add(&neu, 1000, 10, NULL);
    assert_int_equal(vg__control_gate_judge(&g, &old, &neu, true, why, sizeof(why)), VG__CONTROL_GATE_PASS);
    memset(&neu, 0, sizeof(neu));
    add(&neu, 1000, 11, NULL);
    assert_int_equal(vg__control_gate_judge(&g, &old, &neu, true, why, sizeof(why)), VG__CONTROL_GATE_FAIL);
    /* no previous traffic: compared with 0% */
    g.max_error_rate = 0.01;
    struct vg__control_figures none = {0};
    memset(&neu, 0, sizeof(neu));
    add(&neu, 100, 1, NULL);
    assert_int_equal(vg__control_gate_judge(&g, &none, &neu, true, why, sizeof(why)), VG__CONTROL_GATE_PASS);
    memset(&neu, 0, sizeof(neu));
    add(&neu, 100, 2, NULL);
    assert_int_equal(vg__control_gate_judge(&g, &none, &neu, true, why, sizeof(why)), VG__CONTROL_GATE_FAIL);
    /* min_requests 0 and no traffic: time alone */
    g.min_requests = 0;
    assert_int_equal(vg__control_gate_judge(&g, &old, &none, true, why, sizeof(why)), VG__CONTROL_GATE_PASS);
    assert_int_equal(vg__control_gate_judge(&g, &old, &none, false, why, sizeof(why)), VG__CONTROL_GATE_WAIT);
}

static void test_p99_gate_at_the_boundary(void **state)
{
    struct vg__control_gate g = {.min_requests = 1, .max_error_rate = 1, .max_p99_ratio = 1.5};
    struct vg__control_figures old = {0}, neu = {0};
    char why[256];
    uint64_t c[15] = {0};
    c[7] = 100; /* (50, 100]: p99 99.5 */
    add(&old, 100, 0, c);
    double op = vg__control_figures_p99_ms(&old);
    assert_true(near(op, 99.5));
    /* 1.5 x 99.5 = 149.25 is in (100, 250]: 100 + 150 x r = 149.25 with r the rank's share */
    uint64_t d[15] = {0};
    d[7] = 67;
    d[8] = 33; /* rank 99 -> (99 - 67) / 33 of the way: 100 + 150 x 32/33 = 245.45: fails */
    add(&neu, 100, 0, d);
    assert_int_equal(vg__control_gate_judge(&g, &old, &neu, true, why, sizeof(why)), VG__CONTROL_GATE_FAIL);
    assert_non_null(strstr(why, "p99 245.5 ms against 99.5 ms"));
    /* exactly at the ratio: passes; a hair above: fails */
    g.max_p99_ratio = vg__control_figures_p99_ms(&neu) / op;
    assert_int_equal(vg__control_gate_judge(&g, &old, &neu, true, why, sizeof(why)), VG__CONTROL_GATE_PASS);
    g.max_p99_ratio -= 1e-6;
    assert_int_equal(vg__control_gate_judge(&g, &old, &neu, true, why, sizeof(why)), VG__CONTROL_GATE_FAIL);
    /* tiny latencies: 0.2 ms against 0.9 ms is 4.5x but within the slack */
    g.max_p99_ratio = 1.5;
    struct vg__control_figures a = {0}, b = {0};
    uint64_t fast[15] = {0}, less_fast[15] = {0};
    fast[0] = 100;
    less_fast[1] = 100;
    add(&a, 100, 0, fast);
    add(&b, 100, 0, less_fast);
    assert_true(vg__control_figures_p99_ms(&b) / vg__control_figures_p99_ms(&a) > 1.5);
    assert_int_equal(vg__control_gate_judge(&g, &a, &b, true, why, sizeof(why)), VG__CONTROL_GATE_PASS);
    /* no previous latency: nothing to compare */
    struct vg__control_figures none = {0};
    assert_int_equal(vg__control_gate_judge(&g, &none, &neu, true, why, sizeof(why)), VG__CONTROL_GATE_PASS);
}

static void test_figures_saved_and_loaded(void **state)
{
    struct vg__control_figures f = {0}, g;
    uint64_t c[15] = {0};
    c[3] = 7;
    c[14] = 3;
    add(&f, 10, 4, c);
    json_t *j = vg__control_figures_save(&f);
    vg__control_figures_from_json(&g, j);
    json_decref(j);
    assert_memory_equal(&f, &g, sizeof(f));
    j = vg__control_figures_json(&f);
    assert_true(near(json_real_value(json_object_get(j, "error_rate")), 0.4));
    assert_int_equal(json_integer_value(json_object_get(j, "requests")), 10);
    json_decref(j);
    struct vg__control_figures z = {0};
    j = vg__control_figures_json(&z);
    assert_true(json_is_null(json_object_get(j, "p99_ms")));
    json_decref(j);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_p99_from_buckets),
        cmocka_unit_test(test_reports_that_are_not_stats),
        cmocka_unit_test(test_error_rate_gate_at_the_boundary),
        cmocka_unit_test(test_p99_gate_at_the_boundary),
        cmocka_unit_test(test_figures_saved_and_loaded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
