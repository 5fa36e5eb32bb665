/* base: error table, parsers for durations and sizes, JSON escaping. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "base/base.h"

static void test_errors(void **state)
{
    assert_string_equal(vg_strerror(VG_ENOMEM), "out of memory");
    assert_string_equal(vg_err_name(VG_ECONF), "VG_ECONF");
    assert_string_equal(vg_strerror(0), "success");
    assert_string_equal(vg_err_name(-9999), "VG_UNKNOWN");
}

static void test_durations(void **state)
{
    uint64_t v;
    assert_int_equal(vg_parse_duration_ms("250ms", &v), 0);
    assert_int_equal(v, 250);
    assert_int_equal(vg_parse_duration_ms("5s", &v), 0);
    assert_int_equal(v, 5000);
    assert_int_equal(vg_parse_duration_ms("2m", &v), 0);
    assert_int_equal(v, 120000);
    assert_int_equal(vg_parse_duration_ms("1h", &v), 0);
    assert_int_equal(v, 3600000);
    assert_int_equal(vg_parse_duration_ms("42", &v), 0);
    assert_int_equal(v, 42);
    assert_int_not_equal(vg_parse_duration_ms("5 parsecs", &v), 0);
    assert_int_not_equal(vg_parse_duration_ms("-1s", &v), 0);
    assert_int_not_equal(vg_parse_duration_ms("", &v), 0);
    assert_int_not_equal(vg_parse_duration_ms("99999999999999999999999s", &v), 0);
    assert_int_not_equal(vg_parse_duration_ms("18446744073709551615h", &v), 0); /* overflow */
}

static void test_sizes(void **state)
{
    uint64_t v;
    assert_int_equal(vg_parse_size("16k", &v), 0);
    assert_int_equal(v, 16384);
    assert_int_equal(vg_parse_size("8KiB", &v), 0);
    assert_int_equal(v, 8192);
    assert_int_equal(vg_parse_size("1m", &v), 0);
    assert_int_equal(v, 1u << 20);
    assert_int_equal(vg_parse_size("2g", &v), 0);
    assert_int_equal(v, 2ull << 30);
    assert_int_equal(vg_parse_size("100", &v), 0);
    assert_int_equal(v, 100);
    assert_int_not_equal(vg_parse_size("1x", &v), 0);
    assert_int_not_equal(vg_parse_size("k", &v), 0);
}

static void test_counts(void **state)
{
    uint64_t v;
    assert_int_equal(vg_parse_count("1", 1, 64, &v), 0);
    assert_int_equal(v, 1);
    assert_int_equal(vg_parse_count("64", 1, 64, &v), 0);
    assert_int_equal(v, 64);
    assert_int_not_equal(vg_parse_count("0", 1, 64, &v), 0);  /* below */
    assert_int_not_equal(vg_parse_count("65", 1, 64, &v), 0); /* above */
    assert_int_not_equal(vg_parse_count("-1", 0, UINT64_MAX, &v), 0);
    assert_int_not_equal(vg_parse_count("+1", 0, UINT64_MAX, &v), 0);
    assert_int_not_equal(vg_parse_count("4k", 0, UINT64_MAX, &v), 0);
    assert_int_not_equal(vg_parse_count("", 0, UINT64_MAX, &v), 0);
    assert_int_not_equal(vg_parse_count("99999999999999999999999", 0, UINT64_MAX, &v), 0);
    assert_int_equal(vg_parse_count("18446744073709551615", 0, UINT64_MAX, &v), 0);
    assert_int_equal(v, UINT64_MAX);
}

static void test_json_escape(void **state)
{
    char buf[64];
    size_t n = vg_json_escape(buf, sizeof(buf), "a\"b\\\n\x01", 6);
    assert_string_equal(buf, "a\\\"b\\\\\\n\\u0001");
    assert_int_equal(n, strlen(buf));
    n = vg_json_escape(buf, 4, "abcdef", 6); /* truncates, reports the full length */
    assert_int_equal(n, 6);
    assert_int_equal(strlen(buf), 3);
}

static void test_edit_distance(void **state)
{
    assert_int_equal(vg_edit_distance("routes", "routes"), 0);
    assert_int_equal(vg_edit_distance("rootes", "routes"), 1);
    assert_int_equal(vg_edit_distance("origin", "origins"), 1);
    assert_int_equal(vg_edit_distance("", "abc"), 3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_errors), cmocka_unit_test(test_durations),   cmocka_unit_test(test_sizes),
        cmocka_unit_test(test_counts), cmocka_unit_test(test_json_escape), cmocka_unit_test(test_edit_distance),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
