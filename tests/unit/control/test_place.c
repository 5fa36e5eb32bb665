/* control: a manifest's `placement:` as the control plane keeps it with a
 * version (vg_control_placement_json): every field, the defaults, and
 * none at all for an app without the section. The policy's reading back
 * and its use are exercised end to end (tests/e2e/test_113_placement.py). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "conf/conf.h"
#include "control/control.h"

static json_t *policy_of(const char *manifest)
{
    char dir[] = "/tmp/vg-place-test-XXXXXX", path[64];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/verge.yaml", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(manifest, f);
    fclose(f);
    struct vg_conf_app *app = NULL;
    struct vg_conf_error err;
    if (vg_conf_app_load(dir, &app, &err) != 0)
        fail_msg("%s:%d:%d: %s", err.file, err.line, err.col, err.msg);
    json_t *j = vg_control_placement_json(&app->placement);
    vg_conf_app_destroy(app);
    unlink(path);
    rmdir(dir);
    return j;
}

static void test_every_field(void **state)
{
    (void)state;
    json_t *j = policy_of("name: shop\n"
                          "placement:\n"
                          "  dynamic: {target: 20ms, percentile: 90, min_demand: 2.5rps, min: 2, max: 6,"
                          " scale_in_after: 90s}\n"
                          "  enforce: {allow_regions: [eu], deny_countries: [GB], require_tags: [pci],"
                          " residency: true}\n"
                          "  priority: 7\n"
                          "  resources: {cpu: 250m, memory: 256Mi}\n"
                          "routes:\n  - path: /\n    respond: {body: ok}\n");
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "mode")), "dynamic");
    assert_int_equal(json_integer_value(json_object_get(j, "target_us")), 20000);
    assert_int_equal(json_integer_value(json_object_get(j, "percentile")), 90);
    assert_true(json_real_value(json_object_get(j, "min_demand_rps")) == 2.5);
    assert_int_equal(json_integer_value(json_object_get(j, "min")), 2);
    assert_int_equal(json_integer_value(json_object_get(j, "max")), 6);
    assert_int_equal(json_integer_value(json_object_get(j, "scale_in_after_ms")), 90000);
    assert_int_equal(json_integer_value(json_object_get(j, "priority")), 7);
    assert_int_equal(json_integer_value(json_object_get(j, "cpu_m")), 250);
    assert_int_equal(json_integer_value(json_object_get(j, "memory_mib")), 256);
    assert_true(json_is_true(json_object_get(j, "residency")));
    assert_string_equal(json_string_value(json_array_get(json_object_get(j, "allow_regions"), 0)), "eu");
    assert_string_equal(json_string_value(json_array_get(json_object_get(j, "deny_countries"), 0)), "GB");
    assert_string_equal(json_string_value(json_array_get(json_object_get(j, "require_tags"), 0)), "pci");
    assert_int_equal(json_array_size(json_object_get(j, "static")), 0);
    json_decref(j);
}

static void test_static_and_defaults(void **state)
{
    (void)state;
    json_t *j =
        policy_of("name: shop\nplacement:\n  static: [fra, ams]\nroutes:\n  - path: /\n    respond: {body: ok}\n");
    assert_string_equal(json_string_value(json_object_get(j, "mode")), "static");
    assert_int_equal(json_array_size(json_object_get(j, "static")), 2);
    assert_string_equal(json_string_value(json_array_get(json_object_get(j, "static"), 1)), "ams");
    /* the defaults docs/manifest.md gives */
    assert_int_equal(json_integer_value(json_object_get(j, "target_us")), 50000);
    assert_int_equal(json_integer_value(json_object_get(j, "percentile")), 95);
    assert_int_equal(json_integer_value(json_object_get(j, "max")), 10);
    assert_int_equal(json_integer_value(json_object_get(j, "scale_in_after_ms")), 600000);
    assert_false(json_is_true(json_object_get(j, "residency")));
    json_decref(j);
}

static void test_no_section_is_everywhere(void **state)
{
    (void)state;
    assert_null(policy_of("name: shop\nroutes:\n  - path: /\n    respond: {body: ok}\n"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_field),
        cmocka_unit_test(test_static_and_defaults),
        cmocka_unit_test(test_no_section_is_everywhere),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
