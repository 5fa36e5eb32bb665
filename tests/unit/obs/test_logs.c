/* The log ring (cursor reads, eviction by bytes, long lines) and log
 * filters (parsing and matching). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "obs/obs.h"

static void add(struct vg_log_ring *g, int i)
{
    char line[64];
    int n = snprintf(line, sizeof(line), "{\"i\":%d,\"pad\":\"%032d\"}", i, i); /* 52 bytes */
    vg_log_ring_append(g, (uint64_t)i * 1000, line, (size_t)n);
}

static void test_ring_cursor(void **state)
{
    struct vg_log_ring *g = vg_log_ring_create(4096);
    struct vg_log_batch b;
    vg_log_ring_read(g, 0, 0, &b);
    assert_int_equal(b.n, 0);
    assert_int_equal(b.next, 0);
    vg_log_batch_free(&b);
    for (int i = 1; i <= 10; i++)
        add(g, i);
    vg_log_ring_read(g, 0, 0, &b);
    assert_int_equal(b.n, 10);
    assert_int_equal(b.lines[0].seq, 1);
    assert_int_equal(b.next, 10);
    assert_memory_equal(b.lines[9].text, "{\"i\":10,", 8);
    vg_log_batch_free(&b);
    vg_log_ring_read(g, 7, 0, &b); /* after the cursor only */
    assert_int_equal(b.n, 3);
    assert_int_equal(b.lines[0].seq, 8);
    vg_log_batch_free(&b);
    vg_log_ring_read(g, 0, 5000, &b); /* since a time */
    assert_int_equal(b.n, 6);
    assert_int_equal(b.lines[0].time_us, 5000);
    vg_log_batch_free(&b);
    vg_log_ring_read(g, 10, 0, &b);
    assert_int_equal(b.n, 0);
    assert_int_equal(b.next, 10);
    vg_log_batch_free(&b);
    vg_log_ring_destroy(g);
}

static void test_ring_evicts_oldest_and_counts_missed(void **state)
{
    struct vg_log_ring *g = vg_log_ring_create(4096); /* ~78 lines of 52 bytes */
    for (int i = 1; i <= 500; i++)
        add(g, i);
    struct vg_log_batch b;
    vg_log_ring_read(g, 3, 0, &b);
    assert_true(b.n > 50 && b.n < 80);
    assert_int_equal(b.lines[b.n - 1].seq, 500);
    assert_int_equal(b.missed, b.lines[0].seq - 4); /* the reader learns what it lost */
    for (size_t k = 1; k < b.n; k++)
        assert_int_equal(b.lines[k].seq, b.lines[k - 1].seq + 1);
    char want[64];
    snprintf(want, sizeof(want), "{\"i\":%d,", (int)b.lines[0].seq);
    assert_memory_equal(b.lines[0].text, want, strlen(want)); /* never a torn line */
    vg_log_batch_free(&b);
    char big[3000];
    memset(big, 'x', sizeof(big));
    vg_log_ring_append(g, 1, big, sizeof(big)); /* cut to a quarter of the budget */
    vg_log_ring_read(g, 500, 0, &b);
    assert_int_equal(b.n, 1);
    assert_int_equal(b.lines[0].len, 1024);
    vg_log_batch_free(&b);
    vg_log_ring_destroy(g);
}

static bool m(const char *expr, const char *line)
{
    const char *why;
    struct vg_log_filter *f = vg_log_filter_parse(expr, &why);
    assert_non_null(f);
    bool r = vg_log_filter_match(f, line, strlen(line));
    vg_log_filter_free(f);
    return r;
}

static void test_filter(void **state)
{
    const char *access = "{\"type\":\"access\",\"status\":503,\"app\":\"shop\",\"path\":\"/a/b\",\"duration_us\":1500}";
    assert_true(m("status>=500", access));
    assert_false(m("status<500", access));
    assert_true(m("status=503,app=shop", access));
    assert_false(m("status=503,app=web", access));
    assert_true(m("path~/a/", access));
    assert_true(m("app!=web", access));
    assert_true(m("level!=error", access)); /* a missing field: only != holds */
    assert_false(m("level=error", access));
    assert_true(m("", access));                            /* no terms: everything */
    assert_true(m("status>=500", "{\"status\":\"503\"}")); /* a number in a string compares as a number */
    assert_false(m("status>=500", "not json"));
    assert_false(m("status>=500", "[1,2]"));
    const char *why;
    const char *bad[] = {"status>=x",
                         "=5",
                         "status",
                         "st atus=1",
                         "a=1,,b=2",
                         "a=1,b=2,c=3,d=4,e=5,f=6,g=7,h=8,"
                         "i=9,j=10,k=11,l=12,m=13,n=14,o=15,p=16,"
                         "q=17"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        why = NULL;
        assert_null(vg_log_filter_parse(bad[i], &why));
        assert_non_null(why);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ring_cursor),
        cmocka_unit_test(test_ring_evicts_oldest_and_counts_missed),
        cmocka_unit_test(test_filter),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
