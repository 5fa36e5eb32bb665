/* Shared origin state: passive ejection and active up/down flags. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include <pthread.h>

#include "proxy/proxy.h"

struct fixture {
    struct vg_conf_server servers[3];
    struct vg_conf_origin o;
};

static struct vg_proxy_origin_state *make_state(struct fixture *f, uint32_t max_fails, uint64_t fail_timeout_ms)
{
    static char *urls[] = {"http://10.0.0.1:80", "http://10.0.0.2:80", "http://10.0.0.3:80"};
    memset(f, 0, sizeof(*f));
    for (size_t i = 0; i < 3; i++)
        f->servers[i] = (struct vg_conf_server){urls[i], urls[i] + 7, 80, 1};
    f->o.name = "backend";
    f->o.servers = f->servers;
    f->o.n_servers = 3;
    f->o.max_fails = max_fails;
    f->o.fail_timeout_ms = fail_timeout_ms;
    return vg_proxy_origin_state_create(&f->o);
}

static void test_starts_usable_and_up(void **state)
{
    struct fixture f;
    struct vg_proxy_origin_state *st = make_state(&f, 3, 10000);
    for (size_t i = 0; i < 3; i++) {
        assert_true(vg_proxy_origin_state_active_up(st, i));
        assert_true(vg_proxy_origin_state_usable(st, i, 0));
        assert_true(vg_proxy_origin_state_usable(st, i, UINT64_MAX));
    }
    vg_proxy_origin_state_destroy(st);
}

static void test_ejected_after_max_fails_consecutive(void **state)
{
    struct fixture f;
    struct vg_proxy_origin_state *st = make_state(&f, 3, 10000);
    uint64_t now = 1000000;
    vg_proxy_origin_state_report(st, 1, false, now);
    vg_proxy_origin_state_report(st, 1, false, now);
    assert_true(vg_proxy_origin_state_usable(st, 1, now));
    vg_proxy_origin_state_report(st, 1, false, now);
    assert_false(vg_proxy_origin_state_usable(st, 1, now));
    assert_true(vg_proxy_origin_state_active_up(st, 1));   /* passive is not active */
    assert_true(vg_proxy_origin_state_usable(st, 0, now)); /* only that server */
    assert_true(vg_proxy_origin_state_usable(st, 2, now));
    vg_proxy_origin_state_destroy(st);
}

static void test_success_resets_the_count(void **state)
{
    struct fixture f;
    struct vg_proxy_origin_state *st = make_state(&f, 3, 10000);
    uint64_t now = 5000;
    for (int round = 0; round < 5; round++) {
        vg_proxy_origin_state_report(st, 0, false, now);
        vg_proxy_origin_state_report(st, 0, false, now);
        vg_proxy_origin_state_report(st, 0, true, now);
    }
    assert_true(vg_proxy_origin_state_usable(st, 0, now));
    vg_proxy_origin_state_destroy(st);
}

static void test_ejection_expires_then_one_trial(void **state)
{
    struct fixture f;
    struct vg_proxy_origin_state *st = make_state(&f, 2, 10000);
    uint64_t t = 1000;
    vg_proxy_origin_state_report(st, 2, false, t);
    vg_proxy_origin_state_report(st, 2, false, t);
    assert_false(vg_proxy_origin_state_usable(st, 2, t + 9999));
    assert_true(vg_proxy_origin_state_usable(st, 2, t + 10000));
    /* the trial fails: ejected again at once, for a fresh fail_timeout */
    t += 10000;
    vg_proxy_origin_state_report(st, 2, false, t);
    assert_false(vg_proxy_origin_state_usable(st, 2, t));
    assert_false(vg_proxy_origin_state_usable(st, 2, t + 9999));
    assert_true(vg_proxy_origin_state_usable(st, 2, t + 10000));
    /* the trial succeeds: cleared, and the count starts over */
    t += 10000;
    vg_proxy_origin_state_report(st, 2, true, t);
    assert_true(vg_proxy_origin_state_usable(st, 2, t));
    vg_proxy_origin_state_report(st, 2, false, t);
    assert_true(vg_proxy_origin_state_usable(st, 2, t));
    vg_proxy_origin_state_report(st, 2, false, t);
    assert_false(vg_proxy_origin_state_usable(st, 2, t));
    vg_proxy_origin_state_destroy(st);
}

static void test_max_fails_zero_never_ejects(void **state)
{
    struct fixture f;
    struct vg_proxy_origin_state *st = make_state(&f, 0, 10000);
    for (int k = 0; k < 100; k++)
        vg_proxy_origin_state_report(st, 0, false, 42);
    assert_true(vg_proxy_origin_state_usable(st, 0, 42));
    vg_proxy_origin_state_destroy(st);
}

static void test_active_flags(void **state)
{
    struct fixture f;
    struct vg_proxy_origin_state *st = make_state(&f, 3, 10000);
    vg_proxy_origin_state_set_active(st, 1, false);
    assert_false(vg_proxy_origin_state_active_up(st, 1));
    assert_false(vg_proxy_origin_state_usable(st, 1, 0));
    assert_true(vg_proxy_origin_state_usable(st, 0, 0));
    /* a passive success does not override an active "down" */
    vg_proxy_origin_state_report(st, 1, true, 0);
    assert_false(vg_proxy_origin_state_usable(st, 1, 0));
    vg_proxy_origin_state_set_active(st, 1, true);
    assert_true(vg_proxy_origin_state_usable(st, 1, 0));
    /* and active "up" does not lift a passive ejection */
    for (int k = 0; k < 3; k++)
        vg_proxy_origin_state_report(st, 0, false, 100);
    vg_proxy_origin_state_set_active(st, 0, true);
    assert_false(vg_proxy_origin_state_usable(st, 0, 100));
    vg_proxy_origin_state_destroy(st);
}

struct hammer {
    struct vg_proxy_origin_state *st;
    bool ok;
};

static void *hammer_run(void *arg)
{
    struct hammer *h = arg;
    for (int k = 0; k < 20000; k++) {
        vg_proxy_origin_state_report(h->st, 0, h->ok, 1000);
        (void)vg_proxy_origin_state_usable(h->st, 0, 1000);
    }
    return NULL;
}

/* Workers report concurrently; under TSan/ASan this must stay clean and a
 * run of failures from every thread must end in an ejection. */
static void test_concurrent_failures_eject(void **state)
{
    struct fixture f;
    struct vg_proxy_origin_state *st = make_state(&f, 3, 10000);
    pthread_t th[4];
    struct hammer h = {st, false};
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&th[i], NULL, hammer_run, &h), 0);
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    assert_false(vg_proxy_origin_state_usable(st, 0, 1000));
    assert_true(vg_proxy_origin_state_usable(st, 0, 11000));
    vg_proxy_origin_state_destroy(st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_starts_usable_and_up),        cmocka_unit_test(test_ejected_after_max_fails_consecutive),
        cmocka_unit_test(test_success_resets_the_count),    cmocka_unit_test(test_ejection_expires_then_one_trial),
        cmocka_unit_test(test_max_fails_zero_never_ejects), cmocka_unit_test(test_active_flags),
        cmocka_unit_test(test_concurrent_failures_eject),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
