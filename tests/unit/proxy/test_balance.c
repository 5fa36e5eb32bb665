/* Balancers: smooth weighted round robin, least_conn, consistent hashing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "proxy/proxy.h"

#define MAX_SERVERS 70

struct fixture {
    struct vg_conf_server servers[MAX_SERVERS];
    char urls[MAX_SERVERS][48];
    struct vg_conf_origin o;
    bool up[MAX_SERVERS];
    unsigned usable_calls;
};

/* Builds an origin by hand (conf's loader is not linked here). Server i is
 * http://10.0.0.<i+1>:8080, so the same i means the same server across
 * fixtures, which the consistent-hash tests rely on. */
static void fixture_init(struct fixture *f, enum vg_conf_balance bal, const uint32_t *weights, size_t n)
{
    memset(f, 0, sizeof(*f));
    for (size_t i = 0; i < n; i++) {
        snprintf(f->urls[i], sizeof(f->urls[i]), "http://10.0.0.%zu:8080", i + 1);
        f->servers[i].url = f->urls[i];
        f->servers[i].host = f->urls[i] + 7;
        f->servers[i].port = 8080;
        f->servers[i].weight = weights ? weights[i] : 1;
        f->up[i] = true;
    }
    f->o.name = "backend";
    f->o.servers = f->servers;
    f->o.n_servers = n;
    f->o.balance = bal;
}

static bool usable(void *ctx, size_t i)
{
    struct fixture *f = ctx;
    f->usable_calls++;
    return f->up[i];
}

static int pick(struct vg_proxy_balancer *b, struct fixture *f, uint64_t tried)
{
    return vg_proxy_balancer_pick(b, usable, f, tried, NULL, 0);
}

static int pick_key(struct vg_proxy_balancer *b, struct fixture *f, uint64_t tried, const char *key)
{
    return vg_proxy_balancer_pick(b, usable, f, tried, key, strlen(key));
}

/* ---- round robin ------------------------------------------------------------ */

static void test_rr_weighted_exact_and_smooth(void **state)
{
    static const uint32_t w[] = {5, 1, 1};
    static const int nginx_cycle[] = {0, 0, 1, 0, 2, 0, 0}; /* nginx's documented order */
    struct fixture f;
    fixture_init(&f, VG_CONF_BALANCE_ROUND_ROBIN, w, 3);
    struct vg_proxy_balancer *b = vg_proxy_balancer_create(&f.o);
    enum { N = 7000 };
    static int seq[N];
    int count[3] = {0}, run = 0, max_run = 0;
    for (int k = 0; k < N; k++) {
        seq[k] = pick(b, &f, 0);
        assert_in_range(seq[k], 0, 2);
        count[seq[k]]++;
        run = (seq[k] == 0) ? run + 1 : 0;
        max_run = run > max_run ? run : max_run;
    }
    assert_int_equal(count[0], 5000);
    assert_int_equal(count[1], 1000);
    assert_int_equal(count[2], 1000);
    for (int k = 0; k < 7; k++)
        assert_int_equal(seq[k], nginx_cycle[k]);
    /* Smoothness: every window of sum(weights) picks holds exactly 5:1:1, and
     * the heavy server never gets a run of 5 (plain WRR's "aaaaabc"). */
    for (int s = 0; s + 7 <= N; s++) {
        int c[3] = {0};
        for (int k = s; k < s + 7; k++)
            c[seq[k]]++;
        assert_int_equal(c[0], 5);
        assert_int_equal(c[1], 1);
        assert_int_equal(c[2], 1);
    }
    assert_int_equal(max_run, 4);
    vg_proxy_balancer_destroy(b);
}

static void test_rr_equal_weights_alternate(void **state)
{
    struct fixture f;
    fixture_init(&f, VG_CONF_BALANCE_ROUND_ROBIN, NULL, 3);
    struct vg_proxy_balancer *b = vg_proxy_balancer_create(&f.o);
    for (int k = 0; k < 30; k++)
        assert_int_equal(pick(b, &f, 0), k % 3);
    vg_proxy_balancer_destroy(b);
}

static void test_rr_skips_down_servers(void **state)
{
    static const uint32_t w[] = {1, 3, 1};
    struct fixture f;
    fixture_init(&f, VG_CONF_BALANCE_ROUND_ROBIN, w, 3);
    struct vg_proxy_balancer *b = vg_proxy_balancer_create(&f.o);
    f.up[1] = false;
    int count[3] = {0};
    for (int k = 0; k < 100; k++)
        count[pick(b, &f, 0)]++;
    assert_int_equal(count[0], 50);
    assert_int_equal(count[1], 0);
    assert_int_equal(count[2], 50);
    f.up[1] = true; /* back: gets its weight's share again */
    memset(count, 0, sizeof(count));
    for (int k = 0; k < 500; k++)
        count[pick(b, &f, 0)]++;
    assert_in_range(count[1], 299, 301);
    vg_proxy_balancer_destroy(b);
}

static void test_rr_tried_mask(void **state)
{
    struct fixture f;
    fixture_init(&f, VG_CONF_BALANCE_ROUND_ROBIN, NULL, 3);
    struct vg_proxy_balancer *b = vg_proxy_balancer_create(&f.o);
    for (int k = 0; k < 20; k++) {
        int s = pick(b, &f, 1u << 0);
        assert_true(s == 1 || s == 2);
    }
    assert_int_equal(pick(b, &f, (1u << 0) | (1u << 2)), 1);
    assert_int_equal(pick(b, &f, 0x7), -1);
    f.up[1] = false; /* tried and unusable combine */
    assert_int_equal(pick(b, &f, (1u << 0) | (1u << 2)), -1);
    vg_proxy_balancer_destroy(b);
}

static void test_rr_servers_past_64_never_masked(void **state)
{
    struct fixture f;
    fixture_init(&f, VG_CONF_BALANCE_ROUND_ROBIN, NULL, MAX_SERVERS);
    struct vg_proxy_balancer *b = vg_proxy_balancer_create(&f.o);
    for (int k = 0; k < 20; k++)
        assert_true(pick(b, &f, UINT64_MAX) >= 64);
    vg_proxy_balancer_destroy(b);
}

static void test_all_unusable_every_kind(void **state)
{
    static const enum vg_conf_balance kinds[] = {VG_CONF_BALANCE_ROUND_ROBIN, VG_CONF_BALANCE_LEAST_CONN,
                                                 VG_CONF_BALANCE_HASH};
    for (size_t k = 0; k < VG_ARRAY_LEN(kinds); k++) {
        struct fixture f;
        fixture_init(&f, kinds[k], NULL, 4);
        struct vg_proxy_balancer *b = vg_proxy_balancer_create(&f.o);
        for (size_t i = 0; i < 4; i++)
            f.up[i] = false;
        assert_int_equal(pick(b, &f, 0), -1);
        assert_int_equal(pick_key(b, &f, 0, "some-key"), -1);
        f.up[3] = true;
        assert_int_equal(pick_key(b, &f, 0, "some-key"), 3);
        assert_int_equal(pick_key(b, &f, 1u << 3, "some-key"), -1);
        vg_proxy_balancer_destroy(b);
    }
}

/* ---- least_conn -------------------------------------------------------------- */

static void test_lc_prefers_least_loaded(void **state)
{
    struct fixture f;
    fixture_init(&f, VG_CONF_BALANCE_LEAST_CONN, NULL, 3);
    struct vg_proxy_balancer *b = vg_proxy_balancer_create(&f.o);
    vg_proxy_balancer_acquire(b, 0);
    vg_proxy_balancer_acquire(b, 0);
    vg_proxy_balancer_acquire(b, 1);
    for (int k = 0; k < 5; k++)
        assert_int_equal(pick(b, &f, 0), 2);
    vg_proxy_balancer_acquire(b, 2);
    vg_proxy_balancer_acquire(b, 2);
    vg_proxy_balancer_acquire(b, 2); /* loads 2,1,3 */
    assert_int_equal(pick(b, &f, 0), 1);
    vg_proxy_balancer_release(b, 0);
    vg_proxy_balancer_release(b, 0); /* loads 0,1,3 */
    assert_int_equal(pick(b, &f, 0), 0);
    assert_int_equal(pick(b, &f, 1u << 0), 1); /* tried goes to the next least loaded */
    f.up[0] = false;
    assert_int_equal(pick(b, &f, 0), 1);
    vg_proxy_balancer_destroy(b);
}

static void test_lc_ties_round_robin(void **state)
{
    struct fixture f;
    fixture_init(&f, VG_CONF_BALANCE_LEAST_CONN, NULL, 3);
    struct vg_proxy_balancer *b = vg_proxy_balancer_create(&f.o);
    for (int k = 0; k < 12; k++)
        assert_int_equal(pick(b, &f, 0), k % 3);
    f.up[1] = false;
    for (int k = 0; k < 6; k++)
        assert_int_equal(pick(b, &f, 0), (k % 2) ? 2 : 0);
    vg_proxy_balancer_destroy(b);
}

static void test_lc_respects_weights(void **state)
{
    static const uint32_t w[] = {2, 1};
    struct fixture f;
    fixture_init(&f, VG_CONF_BALANCE_LEAST_CONN, w, 2);
    struct vg_proxy_balancer *b = vg_proxy_balancer_create(&f.o);
    assert_int_equal(pick(b, &f, 0), 0); /* idle: (0+1)/2 < (0+1)/1 */
    int count[2] = {0};
    for (int k = 0; k < 30; k++) { /* long requests: nothing is released */
        int s = pick(b, &f, 0);
        vg_proxy_balancer_acquire(b, (size_t)s);
        count[s]++;
    }
    assert_int_equal(count[0], 20);
    assert_int_equal(count[1], 10);
    vg_proxy_balancer_destroy(b);
}

/* ---- consistent hashing -------------------------------------------------------- */

#define N_KEYS 30000

static void key_name(char *buf, size_t cap, int k)
{
    snprintf(buf, cap, "client-%d", k);
}

/* owner[k] = server picked for key k with everything usable. */
static void owners(struct fixture *f, int *owner)
{
    struct vg_proxy_balancer *b = vg_proxy_balancer_create(&f->o);
    char key[32];
    for (int k = 0; k < N_KEYS; k++) {
        key_name(key, sizeof(key), k);
        owner[k] = pick_key(b, f, 0, key);
        assert_true(owner[k] >= 0);
    }
    vg_proxy_balancer_destroy(b);
}

static void test_hash_same_key_same_server(void **state)
{
    struct fixture f;
    fixture_init(&f, VG_CONF_BALANCE_HASH, NULL, 5);
    struct vg_proxy_balancer *b = vg_proxy_balancer_create(&f.o);
    struct vg_proxy_balancer *b2 = vg_proxy_balancer_create(&f.o); /* another worker */
    char key[32];
    int seen[5] = {0};
    for (int k = 0; k < 200; k++) {
        key_name(key, sizeof(key), k);
        int s = pick_key(b, &f, 0, key);
        seen[s]++;
        for (int r = 0; r < 5; r++)
            assert_int_equal(pick_key(b, &f, 0, key), s);
        assert_int_equal(pick_key(b2, &f, 0, key), s);
    }
    for (int i = 0; i < 5; i++)
        assert_true(seen[i] > 0);
    vg_proxy_balancer_destroy(b);
    vg_proxy_balancer_destroy(b2);
}

static void test_hash_spread_three_servers(void **state)
{
    static int owner[N_KEYS];
    struct fixture f;
    fixture_init(&f, VG_CONF_BALANCE_HASH, NULL, 3);
    owners(&f, owner);
    int count[3] = {0};
    for (int k = 0; k < N_KEYS; k++)
        count[owner[k]]++;
    for (int i = 0; i < 3; i++)
        assert_in_range(count[i], 8500, 11500); /* 10000 +- 15% */
}

static void test_hash_respects_weights(void **state)
{
    static const uint32_t w[] = {2, 1, 1};
    static int owner[N_KEYS];
    struct fixture f;
    fixture_init(&f, VG_CONF_BALANCE_HASH, w, 3);
    owners(&f, owner);
    int count[3] = {0};
    for (int k = 0; k < N_KEYS; k++)
        count[owner[k]]++;
    assert_in_range(count[0], 12750, 17250); /* 15000 +- 15% */
    assert_in_range(count[1], 6375, 8625);   /* 7500 +- 15% */
    assert_in_range(count[2], 6375, 8625);
}

static void test_hash_adding_server_moves_its_share_only(void **state)
{
    static int before[N_KEYS], after[N_KEYS];
    struct fixture f3, f4;
    fixture_init(&f3, VG_CONF_BALANCE_HASH, NULL, 3);
    fixture_init(&f4, VG_CONF_BALANCE_HASH, NULL, 4);
    owners(&f3, before);
    owners(&f4, after);
    int moved = 0;
    for (int k = 0; k < N_KEYS; k++) {
        if (before[k] == after[k])
            continue;
        assert_int_equal(after[k], 3); /* a moved key only ever goes to the new server */
        moved++;
    }
    assert_in_range(moved, N_KEYS * 15 / 100, N_KEYS * 35 / 100);
}

static void test_hash_unusable_server_moves_only_its_keys(void **state)
{
    static int before[N_KEYS];
    struct fixture f;
    fixture_init(&f, VG_CONF_BALANCE_HASH, NULL, 3);
    owners(&f, before);
    f.up[1] = false;
    struct vg_proxy_balancer *b = vg_proxy_balancer_create(&f.o);
    char key[32];
    int moved_to[3] = {0};
    for (int k = 0; k < N_KEYS; k++) {
        key_name(key, sizeof(key), k);
        int s = pick_key(b, &f, 0, key);
        if (before[k] != 1) {
            assert_int_equal(s, before[k]);
        } else {
            assert_true(s == 0 || s == 2);
            moved_to[s]++;
        }
        /* tried behaves like unusable: a retry of an owner's key walks on */
        if (before[k] != 1)
            continue;
        f.up[1] = true;
        assert_int_equal(pick_key(b, &f, 1u << 1, key), s);
        f.up[1] = false;
    }
    /* the orphaned keys spread over both survivors, not onto one */
    assert_true(moved_to[0] > 1000 && moved_to[2] > 1000);
    vg_proxy_balancer_destroy(b);
}

static void test_hash_asks_each_server_once(void **state)
{
    struct fixture f;
    fixture_init(&f, VG_CONF_BALANCE_HASH, NULL, MAX_SERVERS);
    struct vg_proxy_balancer *b = vg_proxy_balancer_create(&f.o);
    for (size_t i = 0; i < MAX_SERVERS; i++)
        f.up[i] = false;
    f.usable_calls = 0;
    assert_int_equal(pick_key(b, &f, 0, "k"), -1);
    assert_int_equal(f.usable_calls, MAX_SERVERS);
    f.up[MAX_SERVERS - 1] = true;
    f.usable_calls = 0;
    assert_int_equal(pick_key(b, &f, 0, "k"), MAX_SERVERS - 1);
    assert_true(f.usable_calls <= MAX_SERVERS);
    vg_proxy_balancer_destroy(b);
}

static void test_hash_empty_key_round_robin(void **state)
{
    struct fixture f;
    fixture_init(&f, VG_CONF_BALANCE_HASH, NULL, 3);
    struct vg_proxy_balancer *b = vg_proxy_balancer_create(&f.o);
    for (int k = 0; k < 9; k++)
        assert_int_equal(pick(b, &f, 0), k % 3);
    vg_proxy_balancer_destroy(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rr_weighted_exact_and_smooth),
        cmocka_unit_test(test_rr_equal_weights_alternate),
        cmocka_unit_test(test_rr_skips_down_servers),
        cmocka_unit_test(test_rr_tried_mask),
        cmocka_unit_test(test_rr_servers_past_64_never_masked),
        cmocka_unit_test(test_all_unusable_every_kind),
        cmocka_unit_test(test_lc_prefers_least_loaded),
        cmocka_unit_test(test_lc_ties_round_robin),
        cmocka_unit_test(test_lc_respects_weights),
        cmocka_unit_test(test_hash_same_key_same_server),
        cmocka_unit_test(test_hash_spread_three_servers),
        cmocka_unit_test(test_hash_respects_weights),
        cmocka_unit_test(test_hash_adding_server_moves_its_share_only),
        cmocka_unit_test(test_hash_unusable_server_moves_only_its_keys),
        cmocka_unit_test(test_hash_asks_each_server_once),
        cmocka_unit_test(test_hash_empty_key_round_robin),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
