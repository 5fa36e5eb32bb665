/* Metrics registry: series identity, counters, histograms, exposition. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "obs/obs.h"

static void test_counter_identity_and_value(void **state)
{
    struct vg_obs_registry *r = vg_obs_registry_create();
    struct vg_obs_counter *a = vg_obs_counter_get(r, "x_total", "X.", "app=\"a\"");
    struct vg_obs_counter *b = vg_obs_counter_get(r, "x_total", "X.", "app=\"a\"");
    struct vg_obs_counter *c = vg_obs_counter_get(r, "x_total", "X.", "app=\"b\"");
    assert_ptr_equal(a, b);
    assert_ptr_not_equal(a, c);
    vg_obs_counter_add(a, 2);
    vg_obs_counter_add(b, 3);
    assert_int_equal(vg_obs_counter_value(a), 5);
    assert_int_equal(vg_obs_counter_value(c), 0);
    vg_obs_registry_destroy(r);
}

static void collect(void *data, struct vg_obs_buf *buf)
{
    vg_obs_buf_printf(buf, "g %d\n", *(int *)data);
}

static void test_render(void **state)
{
    struct vg_obs_registry *r = vg_obs_registry_create();
    vg_obs_counter_add(vg_obs_counter_get(r, "b_total", "B.", "k=\"2\""), 7);
    vg_obs_counter_add(vg_obs_counter_get(r, "a_total", "A.", ""), 1);
    vg_obs_counter_add(vg_obs_counter_get(r, "b_total", "B.", "k=\"1\""), 9);
    struct vg_obs_histogram *h = vg_obs_histogram_get(r, "lat_seconds", "L.", "app=\"a\"");
    vg_obs_histogram_observe_us(h, 300);      /* <= 0.5 ms */
    vg_obs_histogram_observe_us(h, 3000);     /* <= 5 ms */
    vg_obs_histogram_observe_us(h, 20000000); /* over every bucket */
    int g = 42;
    vg_obs_collector_add(r, collect, &g);
    size_t len;
    char *text = vg_obs_registry_render(r, &len);
    assert_int_equal(strlen(text), len);
    /* families are grouped and sorted, HELP/TYPE once per family */
    const char *a = strstr(text, "# TYPE a_total counter\na_total 1\n");
    const char *b1 = strstr(text, "b_total{k=\"1\"} 9\n");
    const char *b2 = strstr(text, "b_total{k=\"2\"} 7\n");
    assert_non_null(a);
    assert_non_null(b1);
    assert_non_null(b2);
    assert_true(a < b1 && b1 < b2);
    assert_null(strstr(strstr(text, "# HELP b_total") + 1, "# HELP b_total"));
    assert_non_null(strstr(text, "lat_seconds_bucket{app=\"a\",le=\"0.0005\"} 1\n"));
    assert_non_null(strstr(text, "lat_seconds_bucket{app=\"a\",le=\"0.005\"} 2\n"));
    assert_non_null(strstr(text, "lat_seconds_bucket{app=\"a\",le=\"10\"} 2\n"));
    assert_non_null(strstr(text, "lat_seconds_bucket{app=\"a\",le=\"+Inf\"} 3\n"));
    assert_non_null(strstr(text, "lat_seconds_count{app=\"a\"} 3\n"));
    assert_non_null(strstr(text, "g 42\n"));
    free(text);
    vg_obs_collector_remove(r, collect, &g);
    text = vg_obs_registry_render(r, &len);
    assert_null(strstr(text, "g 42\n"));
    free(text);
    vg_obs_registry_destroy(r);
}

static void test_label_escape(void **state)
{
    char buf[32];
    vg_obs_label_escape(buf, sizeof(buf), "a\"b\\c\nd");
    assert_string_equal(buf, "a\\\"b\\\\c\\nd");
    vg_obs_label_escape(buf, 4, "abcdef");
    assert_true(strlen(buf) < 4);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counter_identity_and_value),
        cmocka_unit_test(test_render),
        cmocka_unit_test(test_label_escape),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
