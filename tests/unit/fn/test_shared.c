/* The shared dictionary: its C API (TTL on an injected clock, LRU and
 * expired-first eviction, the byte budget, incr under contention) and
 * verge.shared as Lua sees it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <pthread.h>

#include "fn/fn_int.h"

static uint64_t fake_now = 1000000;

static uint64_t fake_clock(void *ctx)
{
    (void)ctx;
    return fake_now;
}

/* One shard: eviction order is then exact LRU, which the tests check. */
static struct vg_fn_shared *dict_fake(size_t max_bytes)
{
    return vg__fn_shared_create_ex(max_bytes, 1, fake_clock, NULL);
}

static struct vg_state_value str(const char *s)
{
    return (struct vg_state_value){.type = VG_STATE_STRING, .str = {s, strlen(s)}};
}

static struct vg_state_value integer(int64_t i)
{
    return (struct vg_state_value){.type = VG_STATE_INTEGER, .i = i};
}

static int set_s(struct vg_fn_shared *d, const char *k, const char *v, uint64_t ttl_ms)
{
    struct vg_state_value sv = str(v);
    return vg_fn_shared_set(d, k, strlen(k), &sv, ttl_ms);
}

static bool has(struct vg_fn_shared *d, const char *k)
{
    char buf[64];
    struct vg_state_value v;
    int rc = vg_fn_shared_get(d, k, strlen(k), &v, buf, sizeof(buf));
    assert_true(rc == 0 || rc == VG_ENOENT);
    return rc == 0;
}

static size_t used(struct vg_fn_shared *d)
{
    size_t bytes;
    vg_fn_shared_usage(d, &bytes, NULL);
    return bytes;
}

/* ---- the hash --------------------------------------------------------------------------- */

static void test_siphash_vectors(void **state)
{
    /* From the SipHash paper (appendix A) and its reference test vectors:
     * key 00 01 .. 0f; messages 00 01 .. (n-1). */
    uint8_t key[16], msg[64];
    for (int i = 0; i < 16; i++)
        key[i] = (uint8_t)i;
    for (int i = 0; i < 64; i++)
        msg[i] = (uint8_t)i;
    assert_true(vg_siphash24(key, msg, 15) == 0xa129ca6149be45e5ull);
    assert_true(vg_siphash24(key, msg, 0) == 0x726fdb47dd0e0e31ull);
    assert_true(vg_siphash24(key, msg, 8) == 0x93f5f5799a932462ull);
}

/* ---- C API ------------------------------------------------------------------------------ */

static void test_types_and_buffers(void **state)
{
    struct vg_fn_shared *d = dict_fake(1 << 20);
    struct vg_state_value v, f = {.type = VG_STATE_NUMBER, .n = 2.5}, b = {.type = VG_STATE_BOOLEAN, .b = false},
                             i = integer(-7);
    char buf[8];
    assert_int_equal(vg_fn_shared_set(d, "f", 1, &f, 0), 0);
    assert_int_equal(vg_fn_shared_set(d, "b", 1, &b, 0), 0);
    assert_int_equal(vg_fn_shared_set(d, "i", 1, &i, 0), 0);
    assert_int_equal(set_s(d, "s", "hello", 0), 0);
    assert_int_equal(vg_fn_shared_get(d, "f", 1, &v, NULL, 0), 0);
    assert_true(v.type == VG_STATE_NUMBER && v.n == 2.5);
    assert_int_equal(vg_fn_shared_get(d, "b", 1, &v, NULL, 0), 0);
    assert_true(v.type == VG_STATE_BOOLEAN && !v.b);
    assert_int_equal(vg_fn_shared_get(d, "i", 1, &v, NULL, 0), 0);
    assert_true(v.type == VG_STATE_INTEGER && v.i == -7);
    assert_int_equal(vg_fn_shared_get(d, "s", 1, &v, buf, sizeof(buf)), 0);
    assert_true(v.type == VG_STATE_STRING && v.str.ptr == buf && v.str.len == 5);
    assert_memory_equal(buf, "hello", 5);
    assert_int_equal(vg_fn_shared_get(d, "s", 1, &v, buf, 4), VG_ELIMIT);
    assert_int_equal(v.str.len, 5);
    assert_int_equal(vg_fn_shared_get(d, "nope", 4, &v, buf, sizeof(buf)), VG_ENOENT);
    /* keys are bytes: embedded NULs, empty key */
    struct vg_state_value one = integer(1);
    assert_int_equal(vg_fn_shared_set(d, "a\0b", 3, &one, 0), 0);
    assert_int_equal(vg_fn_shared_get(d, "a\0c", 3, &v, NULL, 0), VG_ENOENT);
    assert_int_equal(vg_fn_shared_set(d, "", 0, &one, 0), 0);
    assert_int_equal(vg_fn_shared_get(d, "", 0, &v, NULL, 0), 0);
    /* delete */
    assert_int_equal(vg_fn_shared_delete(d, "s", 1), 0);
    assert_int_equal(vg_fn_shared_delete(d, "s", 1), VG_ENOENT);
    size_t n;
    vg_fn_shared_usage(d, NULL, &n);
    assert_int_equal(n, 5);
    vg_fn_shared_destroy(d);
}

static void test_limits(void **state)
{
    struct vg_fn_shared *d = dict_fake(64 * 1024);
    assert_int_equal(vg_fn_shared_max_value(d), 8 * 1024);
    char key[VG_FN_SHARED_MAX_KEY + 1];
    memset(key, 'k', sizeof(key));
    struct vg_state_value v = integer(1), out;
    uint64_t ms;
    assert_int_equal(vg_fn_shared_set(d, key, VG_FN_SHARED_MAX_KEY, &v, 0), 0);
    assert_int_equal(vg_fn_shared_set(d, key, VG_FN_SHARED_MAX_KEY + 1, &v, 0), VG_ELIMIT);
    assert_int_equal(vg_fn_shared_get(d, key, VG_FN_SHARED_MAX_KEY + 1, &out, NULL, 0), VG_ELIMIT);
    assert_int_equal(vg_fn_shared_incr(d, key, VG_FN_SHARED_MAX_KEY + 1, &v, NULL, 0, &out), VG_ELIMIT);
    assert_int_equal(vg_fn_shared_ttl(d, key, VG_FN_SHARED_MAX_KEY + 1, &ms), VG_ELIMIT);

    static char big[8 * 1024 + 1];
    memset(big, 'v', sizeof(big));
    struct vg_state_value s = {.type = VG_STATE_STRING, .str = {big, 8 * 1024}};
    assert_int_equal(vg_fn_shared_set(d, "big", 3, &s, 0), 0);
    s.str.len++;
    assert_int_equal(vg_fn_shared_set(d, "big", 3, &s, 0), VG_ELIMIT);
    vg_fn_shared_destroy(d);

    /* a dictionary too small for even one entry */
    d = dict_fake(64);
    assert_int_equal(set_s(d, "k", "12345678", 0), VG_ENOMEM);
    assert_int_equal(vg_fn_shared_incr(d, "k", 1, &v, NULL, 0, &out), VG_ENOMEM);
    assert_int_equal(used(d), 0);
    vg_fn_shared_destroy(d);
}

static void test_ttl(void **state)
{
    struct vg_fn_shared *d = dict_fake(1 << 20);
    uint64_t ms;
    assert_int_equal(set_s(d, "t", "x", 1000), 0);
    assert_int_equal(set_s(d, "forever", "x", 0), 0);
    size_t full = used(d);
    assert_int_equal(vg_fn_shared_ttl(d, "t", 1, &ms), 0);
    assert_int_equal(ms, 1000);
    assert_int_equal(vg_fn_shared_ttl(d, "forever", 7, &ms), 0);
    assert_true(ms == VG_FN_SHARED_NO_EXPIRY);
    fake_now += 999;
    assert_true(has(d, "t"));
    assert_int_equal(vg_fn_shared_ttl(d, "t", 1, &ms), 0);
    assert_int_equal(ms, 1);
    fake_now += 1;
    assert_int_equal(used(d), full); /* lazy: still charged until touched */
    assert_false(has(d, "t"));
    assert_true(used(d) < full);
    assert_int_equal(vg_fn_shared_ttl(d, "t", 1, &ms), VG_ENOENT);
    assert_int_equal(vg_fn_shared_delete(d, "t", 1), VG_ENOENT);
    /* an expired key is absent to delete as well */
    assert_int_equal(set_s(d, "t2", "x", 5), 0);
    fake_now += 5;
    assert_int_equal(vg_fn_shared_delete(d, "t2", 2), VG_ENOENT);
    /* set replaces the TTL; no TTL given means none */
    assert_int_equal(set_s(d, "t3", "x", 5), 0);
    assert_int_equal(set_s(d, "t3", "y", 0), 0);
    fake_now += 10;
    assert_true(has(d, "t3"));
    assert_true(has(d, "forever"));
    vg_fn_shared_destroy(d);
}

/* A dictionary holding exactly n entries of key length 2 and value length 10. */
static struct vg_fn_shared *dict_of_n(size_t n)
{
    return dict_fake(n * vg__fn_shared_entry_cost(2, 10));
}

static void test_lru_eviction(void **state)
{
    struct vg_fn_shared *d = dict_of_n(4);
    assert_int_equal(set_s(d, "k1", "0123456789", 0), 0);
    assert_int_equal(set_s(d, "k2", "0123456789", 0), 0);
    assert_int_equal(set_s(d, "k3", "0123456789", 0), 0);
    assert_int_equal(set_s(d, "k4", "0123456789", 0), 0);
    assert_true(has(d, "k1")); /* k1 is now the most recent; k2 the least */
    assert_int_equal(set_s(d, "k5", "0123456789", 0), 0);
    assert_false(has(d, "k2"));
    assert_true(has(d, "k1") && has(d, "k3") && has(d, "k4") && has(d, "k5"));
    /* replacing a value of the same size evicts nothing */
    assert_int_equal(set_s(d, "k3", "abcdefghij", 0), 0);
    assert_true(has(d, "k1") && has(d, "k3") && has(d, "k4") && has(d, "k5"));
    assert_int_equal(used(d), 4 * vg__fn_shared_entry_cost(2, 10));
    /* a bigger value pushes out the least recently used, never itself */
    assert_int_equal(set_s(d, "k1", "0123456789012345678901234567890", 0), 0);
    assert_true(has(d, "k1"));
    assert_false(has(d, "k3")); /* least recent after k1, which is kept */
    assert_true(has(d, "k4") && has(d, "k5"));
    assert_true(used(d) <= 4 * vg__fn_shared_entry_cost(2, 10));
    vg_fn_shared_destroy(d);
}

static void test_expired_evicted_first(void **state)
{
    struct vg_fn_shared *d = dict_of_n(4);
    assert_int_equal(set_s(d, "k1", "0123456789", 0), 0);
    assert_int_equal(set_s(d, "k2", "0123456789", 0), 0);
    assert_int_equal(set_s(d, "k3", "0123456789", 0), 0);
    assert_int_equal(set_s(d, "tt", "0123456789", 100), 0); /* most recent, but will expire */
    fake_now += 100;
    assert_int_equal(set_s(d, "k5", "0123456789", 0), 0);
    assert_true(has(d, "k1") && has(d, "k2") && has(d, "k3") && has(d, "k5"));
    size_t n;
    vg_fn_shared_usage(d, NULL, &n);
    assert_int_equal(n, 4);
    vg_fn_shared_destroy(d);
}

static void test_incr(void **state)
{
    struct vg_fn_shared *d = dict_fake(1 << 20);
    struct vg_state_value one = integer(1), half = {.type = VG_STATE_NUMBER, .n = 0.5}, out;
    struct vg_state_value ten = integer(10);
    assert_int_equal(vg_fn_shared_incr(d, "c", 1, &one, NULL, 0, &out), 0);
    assert_true(out.type == VG_STATE_INTEGER && out.i == 1);
    assert_int_equal(vg_fn_shared_incr(d, "c", 1, &one, &ten, 0, &out), 0); /* init only when missing */
    assert_true(out.type == VG_STATE_INTEGER && out.i == 2);
    assert_int_equal(vg_fn_shared_incr(d, "c", 1, &half, NULL, 0, &out), 0);
    assert_true(out.type == VG_STATE_NUMBER && out.n == 2.5);
    assert_int_equal(vg_fn_shared_incr(d, "n", 1, &one, &ten, 0, &out), 0);
    assert_true(out.type == VG_STATE_INTEGER && out.i == 11);
    /* integers wrap like Lua's */
    struct vg_state_value max = integer(INT64_MAX);
    assert_int_equal(vg_fn_shared_set(d, "w", 1, &max, 0), 0);
    assert_int_equal(vg_fn_shared_incr(d, "w", 1, &one, NULL, 0, &out), 0);
    assert_true(out.type == VG_STATE_INTEGER && out.i == INT64_MIN);
    /* not a number: refused, unchanged */
    assert_int_equal(set_s(d, "s", "5", 0), 0);
    assert_int_equal(vg_fn_shared_incr(d, "s", 1, &one, NULL, 0, &out), VG_EINVAL);
    /* the TTL applies when the key is created, and only then */
    uint64_t ms;
    assert_int_equal(vg_fn_shared_incr(d, "t", 1, &one, NULL, 100, &out), 0);
    assert_int_equal(vg_fn_shared_incr(d, "t", 1, &one, NULL, 5000, &out), 0);
    assert_int_equal(vg_fn_shared_ttl(d, "t", 1, &ms), 0);
    assert_int_equal(ms, 100);
    fake_now += 100;
    assert_int_equal(vg_fn_shared_incr(d, "t", 1, &one, NULL, 0, &out), 0); /* expired: starts over */
    assert_true(out.i == 1);
    assert_int_equal(vg_fn_shared_ttl(d, "t", 1, &ms), 0);
    assert_true(ms == VG_FN_SHARED_NO_EXPIRY);
    vg_fn_shared_destroy(d);
}

/* Many shards, the real clock: the budget holds whatever the spread of
 * keys, and a value of max_bytes/8 always finds room. */
static void test_budget_across_shards(void **state)
{
    const size_t max = 64 * 1024;
    struct vg_fn_shared *d = vg__fn_shared_create_ex(max, 16, NULL, NULL);
    char k[32];
    for (int i = 0; i < 5000; i++) {
        snprintf(k, sizeof(k), "key-%d", i);
        assert_int_equal(set_s(d, k, "some value of a few bytes", i % 3 ? 0 : 1), 0);
        assert_true(used(d) <= max);
    }
    assert_true(has(d, k));
    static char big[8 * 1024];
    memset(big, 'b', sizeof(big));
    struct vg_state_value v = {.type = VG_STATE_STRING, .str = {big, sizeof(big)}};
    /* room for a large value is taken across shards, a few entries each:
     * no more evictions than needed, plus at most one round of shards */
    size_t n0, n1, used0 = used(d);
    vg_fn_shared_usage(d, NULL, &n0);
    assert_int_equal(vg_fn_shared_set(d, "big", 3, &v, 0), 0);
    vg_fn_shared_usage(d, NULL, &n1);
    size_t need = vg__fn_shared_entry_cost(3, sizeof(big)) - (max - used0);
    size_t smallest = vg__fn_shared_entry_cost(5, strlen("some value of a few bytes"));
    assert_true(n0 + 1 - n1 <= (need + smallest - 1) / smallest + 16);
    for (int i = 0; i < 8; i++) {
        snprintf(k, sizeof(k), "big-%d", i);
        assert_int_equal(vg_fn_shared_set(d, k, strlen(k), &v, 0), 0);
        assert_true(used(d) <= max);
    }
    size_t n;
    vg_fn_shared_usage(d, NULL, &n);
    assert_true(n > 0);
    vg_fn_shared_destroy(d);
}

/* ---- contention ------------------------------------------------------------------------- */

enum { THREADS = 4, ROUNDS = 50000 };

struct worker {
    struct vg_fn_shared *d;
    unsigned seed;
};

static void *hammer_incr(void *arg)
{
    struct worker *w = arg;
    struct vg_state_value one = integer(1), out;
    char k[16];
    for (int i = 0; i < ROUNDS; i++) {
        VG_AZ(vg_fn_shared_incr(w->d, "hits", 4, &one, NULL, 0, &out));
        snprintf(k, sizeof(k), "c%d", i % 64); /* spread over shards too */
        VG_AZ(vg_fn_shared_incr(w->d, k, strlen(k), &one, NULL, 0, &out));
    }
    return NULL;
}

static void test_incr_threads(void **state)
{
    struct vg_fn_shared *d = vg_fn_shared_create(1 << 20);
    pthread_t t[THREADS];
    struct worker w[THREADS];
    for (int i = 0; i < THREADS; i++) {
        w[i] = (struct worker){d, (unsigned)i};
        assert_int_equal(pthread_create(&t[i], NULL, hammer_incr, &w[i]), 0);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    struct vg_state_value v;
    assert_int_equal(vg_fn_shared_get(d, "hits", 4, &v, NULL, 0), 0);
    assert_true(v.type == VG_STATE_INTEGER && v.i == THREADS * ROUNDS);
    int64_t sum = 0;
    for (int i = 0; i < 64; i++) {
        char k[16];
        snprintf(k, sizeof(k), "c%d", i);
        assert_int_equal(vg_fn_shared_get(d, k, strlen(k), &v, NULL, 0), 0);
        sum += v.i;
    }
    assert_true(sum == (int64_t)THREADS * ROUNDS);
    vg_fn_shared_destroy(d);
}

/* Every operation at once on a small dictionary that evicts all the
 * time: no crash, no sanitizer report, the budget holds. */
static void *churn(void *arg)
{
    struct worker *w = arg;
    char k[16], buf[600], val[600];
    memset(val, 'v', sizeof(val));
    for (int i = 0; i < ROUNDS / 2; i++) {
        unsigned r = rand_r(&w->seed);
        snprintf(k, sizeof(k), "k%u", r % 500);
        struct vg_state_value v = {.type = VG_STATE_STRING, .str = {val, r % sizeof(val)}}, out;
        struct vg_state_value one = integer(1);
        uint64_t ms;
        switch (r % 5) {
        case 0:
            (void)!vg_fn_shared_set(w->d, k, strlen(k), &v, r % 3 ? 0 : 1 + r % 20);
            break;
        case 1:
            (void)!vg_fn_shared_get(w->d, k, strlen(k), &out, buf, sizeof(buf));
            break;
        case 2:
            (void)!vg_fn_shared_incr(w->d, k, strlen(k), &one, NULL, r % 2 ? 5 : 0, &out);
            break;
        case 3:
            (void)vg_fn_shared_delete(w->d, k, strlen(k));
            break;
        case 4:
            (void)!vg_fn_shared_ttl(w->d, k, strlen(k), &ms);
            break;
        }
    }
    return NULL;
}

static void test_churn_threads(void **state)
{
    const size_t max = 32 * 1024;
    struct vg_fn_shared *d = vg_fn_shared_create(max);
    pthread_t t[THREADS];
    struct worker w[THREADS];
    for (int i = 0; i < THREADS; i++) {
        w[i] = (struct worker){d, (unsigned)i + 1};
        assert_int_equal(pthread_create(&t[i], NULL, churn, &w[i]), 0);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    assert_true(used(d) <= max);
    vg_fn_shared_destroy(d);
}

/* ---- verge.shared from Lua ---------------------------------------------------------------- */

static const char prelude[] = "S = verge.shared\n"
                              "function eq(got, want, what)\n"
                              "  if got ~= want or math.type(got) ~= math.type(want) then\n"
                              "    error(string.format('%s: got %s (%s), want %s (%s)', what or 'value',\n"
                              "      tostring(got), math.type(got) or type(got), tostring(want),\n"
                              "      math.type(want) or type(want)), 2)\n"
                              "  end\n"
                              "end\n"
                              "function fails(pattern, f, ...)\n"
                              "  local ok, err = pcall(f, ...)\n"
                              "  if ok then error('no error, expected: ' .. pattern, 2) end\n"
                              "  if not string.find(tostring(err), pattern, 1, true) then\n"
                              "    error(string.format('error %q does not contain %q', tostring(err), pattern), 2)\n"
                              "  end\n"
                              "end\n";

static lua_State *lua_with(struct vg_fn_shared *d)
{
    lua_State *L = luaL_newstate();
    assert_non_null(L);
    luaL_openlibs(L);
    lua_newtable(L);
    vg__fn_open_shared(L, d);
    assert_int_equal(lua_gettop(L), 1);
    lua_setglobal(L, "verge");
    assert_int_equal(luaL_dostring(L, prelude), LUA_OK);
    return L;
}

static void run(lua_State *L, const char *code)
{
    if (luaL_dostring(L, code) != LUA_OK)
        fail_msg("%s\n-- in:\n%s", lua_tostring(L, -1), code);
    lua_settop(L, 0);
}

static void test_lua_values(void **state)
{
    struct vg_fn_shared *d = dict_fake(1 << 20);
    lua_State *L = lua_with(d);
    run(L, "eq(S.set('s', 'text'), true) eq(S.get('s'), 'text')\n"
           "eq(S.set('e', ''), true) eq(S.get('e'), '')\n"
           "eq(S.set('i', 42), true) eq(S.get('i'), 42)\n"
           "eq(S.set('f', 3.0), true) eq(S.get('f'), 3.0)\n" /* a float stays a float */
           "eq(S.set('t', true), true) eq(S.get('t'), true)\n"
           "eq(S.set('b', false), true) eq(S.get('b'), false)\n"
           "eq(S.set('bin', '\\0\\255'), true) eq(S.get('bin'), '\\0\\255')\n"
           "eq(S.get('missing'), nil)\n"
           "eq(S.set('i', nil), true) eq(S.get('i'), nil)\n" /* nil deletes */
           "local long = string.rep('0123456789', 5000)\n"   /* past the stack buffer */
           "eq(S.set('long', long), true) eq(S.get('long'), long)\n"
           "eq(S.set(7, 'n'), true) eq(S.get('7'), 'n')\n" /* numbers are keys as strings */
           "eq(S.delete('s'), true) eq(S.delete('s'), false) eq(S.get('s'), nil)\n");
    lua_close(L);
    vg_fn_shared_destroy(d);
}

static void test_lua_ttl(void **state)
{
    struct vg_fn_shared *d = dict_fake(1 << 20);
    lua_State *L = lua_with(d);
    run(L, "eq(S.set('a', 1, {ttl = 0.5}), true)\n"
           "eq(S.set('b', 1, {ttl = 0.0001}), true)\n" /* rounds up to 1 ms, never to 'no ttl' */
           "eq(S.set('c', 1), true)\n"
           "eq(S.ttl('a'), 0.5) eq(S.ttl('b'), 0.001) eq(S.ttl('c'), math.huge) eq(S.ttl('zz'), nil)\n");
    fake_now += 499;
    run(L, "eq(S.get('a'), 1) eq(S.ttl('a'), 0.001) eq(S.get('b'), nil)\n");
    fake_now += 1;
    run(L, "eq(S.get('a'), nil) eq(S.ttl('a'), nil) eq(S.get('c'), 1)\n"
           "eq(S.incr('n', 1, {ttl = 2}), 1) eq(S.incr('n', 1, {ttl = 100}), 2) eq(S.ttl('n'), 2.0)\n");
    fake_now += 2000;
    run(L, "eq(S.get('n'), nil) eq(S.incr('n', 1), 1)\n");
    lua_close(L);
    vg_fn_shared_destroy(d);
}

static void test_lua_incr(void **state)
{
    struct vg_fn_shared *d = dict_fake(1 << 20);
    lua_State *L = lua_with(d);
    run(L, "eq(S.incr('c', 1), 1) eq(S.incr('c', 5), 6) eq(S.incr('c', -10), -4)\n"
           "eq(S.incr('f', 1.5, {init = 1}), 2.5) eq(S.incr('f', 1), 3.5)\n"
           "eq(S.incr('g', 1, {init = 0.0}), 1.0)\n"
           "eq(S.incr('c', 0.5), -3.5)\n"
           "S.set('s', 'x') local v, err = S.incr('s', 1) eq(v, nil) eq(err, 'not a number')\n"
           "S.set('b', true) v, err = S.incr('b', 1) eq(err, 'not a number') eq(S.get('b'), true)\n"
           "S.set('m', math.maxinteger) eq(S.incr('m', 1), math.mininteger)\n"
           "fails(\"bad argument #2 to 'verge.shared.incr'\", S.incr, 'c', '1')\n"
           "fails(\"bad argument #2 to 'verge.shared.incr'\", S.incr, 'c')\n"
           "fails('init must be a number', S.incr, 'c', 1, {init = '1'})\n");
    lua_close(L);
    vg_fn_shared_destroy(d);
}

static void test_lua_errors(void **state)
{
    struct vg_fn_shared *d = dict_fake(64 * 1024);
    lua_State *L = lua_with(d);
    run(L, "local g = 'scope=global: verge.shared is in memory on one node; use verge.kv'\n"
           "fails(g, S.get, 'a', {scope = 'global'})\n"
           "fails(g, S.set, 'a', 1, {scope = 'global'})\n"
           "fails(g, S.incr, 'a', 1, {scope = 'global', ttl = 1})\n"
           "fails(g, S.delete, 'a', {scope = 'global'})\n"
           "fails(g, S.ttl, 'a', {scope = 'global'})\n"
           "eq(S.set('a', 1, {scope = 'local', ttl = 5}), true)\n"
           "eq(S.get('a', {scope = 'local'}), 1) eq(S.ttl('a', {scope = 'local'}), 5.0)\n"
           "eq(S.incr('a', 1, {scope = 'local'}), 2) eq(S.delete('a', {scope = 'local'}), true)\n"
           "fails('scope must be \"local\" or \"global\"', S.get, 'a', {scope = 'cluster'})\n"
           "fails(\"verge.shared.set: unknown option 'tll'\", S.set, 'a', 1, {tll = 5})\n"
           "fails(\"unknown option 'ttl'\", S.get, 'a', {ttl = 5})\n"
           "fails(\"unknown option 'init'\", S.set, 'a', 1, {init = 5})\n"
           "fails('ttl must be a number of seconds', S.set, 'a', 1, {ttl = 0})\n"
           "fails('ttl must be a number of seconds', S.set, 'a', 1, {ttl = -1})\n"
           "fails('ttl must be a number of seconds', S.set, 'a', 1, {ttl = 0/0})\n"
           "fails('ttl must be a number of seconds', S.set, 'a', 1, {ttl = '5'})\n"
           "fails('ttl must be a number of seconds', S.set, 'a', 1, {ttl = 1e10})\n"
           "fails(\"bad argument #3 to 'verge.shared.set'\", S.set, 'a', 1, 5)\n"
           "fails(\"bad argument #1 to 'verge.shared.get'\", S.get)\n"
           "fails(\"bad argument #1 to 'verge.shared.get'\", S.get, {})\n"
           "fails(\"bad argument #2 to 'verge.shared.set'\", S.set, 'a')\n"
           "fails(\"bad argument #2 to 'verge.shared.set' (string, number, boolean or nil expected, got table)\",\n"
           "      S.set, 'a', {})\n"
           "fails('verge.shared.get: key longer than 1024 bytes', S.get, string.rep('k', 1025))\n"
           "eq(S.set(string.rep('k', 1024), 1), true)\n"
           "fails('verge.shared.set: value longer than 8192 bytes', S.set, 'v', string.rep('v', 8193))\n"
           "eq(S.set('v', string.rep('v', 8192)), true)\n");
    lua_close(L);
    vg_fn_shared_destroy(d);

    d = dict_fake(64); /* too small for any entry */
    L = lua_with(d);
    run(L, "local ok, err = S.set('k', 'v') eq(ok, nil) eq(err, 'no memory')\n"
           "ok, err = S.incr('k', 1) eq(ok, nil) eq(err, 'no memory')\n");
    lua_close(L);
    vg_fn_shared_destroy(d);
}

/* Workers: one Lua state each, one dictionary. */
static void *lua_worker(void *arg)
{
    struct vg_fn_shared *d = arg;
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    lua_newtable(L);
    vg__fn_open_shared(L, d);
    lua_setglobal(L, "verge");
    int rc = luaL_dostring(L, "for i = 1, 20000 do verge.shared.incr('hits', 1) end");
    lua_close(L);
    return rc == LUA_OK ? d : NULL;
}

static void test_lua_incr_threads(void **state)
{
    struct vg_fn_shared *d = vg_fn_shared_create(1 << 20);
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, lua_worker, d), 0);
    for (int i = 0; i < THREADS; i++) {
        void *ret;
        pthread_join(t[i], &ret);
        assert_ptr_equal(ret, d);
    }
    lua_State *L = lua_with(d);
    run(L, "eq(S.get('hits'), 80000)");
    lua_close(L);
    vg_fn_shared_destroy(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_siphash_vectors),
        cmocka_unit_test(test_types_and_buffers),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_ttl),
        cmocka_unit_test(test_lru_eviction),
        cmocka_unit_test(test_expired_evicted_first),
        cmocka_unit_test(test_incr),
        cmocka_unit_test(test_budget_across_shards),
        cmocka_unit_test(test_incr_threads),
        cmocka_unit_test(test_churn_threads),
        cmocka_unit_test(test_lua_values),
        cmocka_unit_test(test_lua_ttl),
        cmocka_unit_test(test_lua_incr),
        cmocka_unit_test(test_lua_errors),
        cmocka_unit_test(test_lua_incr_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
