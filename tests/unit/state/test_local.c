/* state, local scope: the LMDB store behind verge.kv{scope="local"} —
 * types, TTL on an injected clock, incr, per-app isolation, persistence
 * across a close and reopen, the key and value limits at their boundary,
 * and the record format. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "state/state_int.h"

static uint64_t fake_now = 1700000000000ull;

static uint64_t fake_clock(void *ctx)
{
    (void)ctx;
    return fake_now;
}

struct t {
    char dir[64];
    struct vg_state_local *s;
    struct vg_state_db *a, *b;
};

static void open_store(struct t *t)
{
    char err[256];
    assert_int_equal(vg_state_local_open(t->dir, 64u << 20, &t->s, err, sizeof(err)), 0);
    vg__state_local_set_clock(t->s, fake_clock, NULL);
    assert_int_equal(vg_state_local_db(t->s, "alpha", &t->a), 0);
    assert_int_equal(vg_state_local_db(t->s, "beta", &t->b), 0);
}

static int setup(void **state)
{
    struct t *t = calloc(1, sizeof(*t));
    snprintf(t->dir, sizeof(t->dir), "/tmp/verge-state-test-XXXXXX");
    assert_non_null(mkdtemp(t->dir));
    open_store(t);
    *state = t;
    return 0;
}

static int teardown(void **state)
{
    struct t *t = *state;
    vg_state_local_close(t->s);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", t->dir);
    assert_int_equal(system(cmd), 0);
    free(t);
    return 0;
}

/* A write, waited for. */
struct wait {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    struct vg_state_result r;
};

static void on_done(void *arg, const struct vg_state_result *r)
{
    struct wait *w = arg;
    pthread_mutex_lock(&w->mu);
    w->r = *r;
    w->r.err = NULL;
    w->done = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

static struct vg_state_result wr(struct vg_state_db *db, struct vg_state_write w)
{
    struct wait x = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    if (!w.klen)
        w.klen = strlen(w.key);
    assert_int_equal(vg_state_local_write(db, &w, on_done, &x), 0);
    pthread_mutex_lock(&x.mu);
    while (!x.done)
        pthread_cond_wait(&x.cv, &x.mu);
    pthread_mutex_unlock(&x.mu);
    return x.r;
}

static struct vg_state_value str(const char *s)
{
    return (struct vg_state_value){.type = VG_STATE_STRING, .str = {s, strlen(s)}};
}

static int get(struct vg_state_db *db, const char *key, struct vg_state_value *v, char **mem)
{
    return vg_state_local_get(db, key, strlen(key), v, mem);
}

static void test_types(void **state)
{
    struct t *t = *state;
    assert_int_equal(wr(t->a, (struct vg_state_write){.op = VG_STATE_SET, .key = "s", .value = str("hello")}).rc, 0);
    assert_int_equal(wr(t->a, (struct vg_state_write){.op = VG_STATE_SET,
                                                      .key = "i",
                                                      .value = {.type = VG_STATE_INTEGER, .i = -9007199254740993}})
                         .rc,
                     0);
    assert_int_equal(
        wr(t->a, (struct vg_state_write){.op = VG_STATE_SET, .key = "n", .value = {.type = VG_STATE_NUMBER, .n = 0.1}})
            .rc,
        0);
    assert_int_equal(
        wr(t->a,
           (struct vg_state_write){.op = VG_STATE_SET, .key = "b", .value = {.type = VG_STATE_BOOLEAN, .b = false}})
            .rc,
        0);
    assert_int_equal(wr(t->a, (struct vg_state_write){.op = VG_STATE_SET, .key = "e", .value = str("")}).rc, 0);
    struct vg_state_value v;
    char *mem;
    assert_int_equal(get(t->a, "s", &v, &mem), 0);
    assert_int_equal(v.type, VG_STATE_STRING);
    assert_int_equal(v.str.len, 5);
    assert_memory_equal(v.str.ptr, "hello", 5);
    free(mem);
    assert_int_equal(get(t->a, "i", &v, &mem), 0);
    assert_int_equal(v.type, VG_STATE_INTEGER);
    assert_true(v.i == -9007199254740993);
    assert_null(mem);
    assert_int_equal(get(t->a, "n", &v, &mem), 0);
    assert_int_equal(v.type, VG_STATE_NUMBER);
    assert_true(v.n == 0.1);
    assert_int_equal(get(t->a, "b", &v, &mem), 0);
    assert_int_equal(v.type, VG_STATE_BOOLEAN);
    assert_false(v.b);
    assert_int_equal(get(t->a, "e", &v, &mem), 0);
    assert_int_equal(v.type, VG_STATE_STRING);
    assert_int_equal(v.str.len, 0);
    free(mem);
    assert_int_equal(get(t->a, "missing", &v, &mem), VG_ENOENT);
    /* replace, then delete */
    assert_int_equal(
        wr(t->a, (struct vg_state_write){.op = VG_STATE_SET, .key = "s", .value = {.type = VG_STATE_INTEGER, .i = 7}})
            .rc,
        0);
    assert_int_equal(get(t->a, "s", &v, &mem), 0);
    assert_int_equal(v.type, VG_STATE_INTEGER);
    assert_int_equal(wr(t->a, (struct vg_state_write){.op = VG_STATE_DELETE, .key = "s"}).rc, 0);
    assert_int_equal(get(t->a, "s", &v, &mem), VG_ENOENT);
    assert_int_equal(wr(t->a, (struct vg_state_write){.op = VG_STATE_DELETE, .key = "s"}).rc, 0); /* absent: fine */
}

static void test_ttl(void **state)
{
    struct t *t = *state;
    assert_int_equal(
        wr(t->a, (struct vg_state_write){.op = VG_STATE_SET, .key = "t", .value = str("x"), .ttl_ms = 1000}).rc, 0);
    struct vg_state_value v;
    char *mem;
    fake_now += 999;
    assert_int_equal(get(t->a, "t", &v, &mem), 0);
    free(mem);
    fake_now += 1;
    assert_int_equal(get(t->a, "t", &v, &mem), VG_ENOENT);
    /* the reader queued its removal: a later write round-trip has run it,
     * and the record is gone even with the clock turned back */
    assert_int_equal(wr(t->a, (struct vg_state_write){.op = VG_STATE_SET, .key = "other", .value = str("y")}).rc, 0);
    fake_now -= 500;
    assert_int_equal(get(t->a, "t", &v, &mem), VG_ENOENT);
    fake_now += 500;
    /* a set without ttl clears the expiry */
    assert_int_equal(
        wr(t->a, (struct vg_state_write){.op = VG_STATE_SET, .key = "t", .value = str("x"), .ttl_ms = 10}).rc, 0);
    assert_int_equal(wr(t->a, (struct vg_state_write){.op = VG_STATE_SET, .key = "t", .value = str("z")}).rc, 0);
    fake_now += 100000;
    assert_int_equal(get(t->a, "t", &v, &mem), 0);
    free(mem);
}

static void test_incr(void **state)
{
    struct t *t = *state;
    struct vg_state_value one = {.type = VG_STATE_INTEGER, .i = 1};
    struct vg_state_result r = wr(t->a, (struct vg_state_write){.op = VG_STATE_INCR, .key = "c", .value = one});
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.value.type, VG_STATE_INTEGER);
    assert_int_equal(r.value.i, 1);
    r = wr(t->a, (struct vg_state_write){.op = VG_STATE_INCR, .key = "c", .value = one});
    assert_int_equal(r.value.i, 2);
    r = wr(t->a,
           (struct vg_state_write){.op = VG_STATE_INCR, .key = "c", .value = {.type = VG_STATE_NUMBER, .n = 0.5}});
    assert_int_equal(r.value.type, VG_STATE_NUMBER);
    assert_true(r.value.n == 2.5);
    /* init and ttl for a missing key; an existing key keeps its expiry */
    r = wr(t->a, (struct vg_state_write){.op = VG_STATE_INCR,
                                         .key = "w",
                                         .value = one,
                                         .init = {.type = VG_STATE_INTEGER, .i = 100},
                                         .ttl_ms = 1000});
    assert_int_equal(r.value.i, 101);
    fake_now += 600;
    r = wr(t->a, (struct vg_state_write){.op = VG_STATE_INCR, .key = "w", .value = one, .ttl_ms = 1000});
    assert_int_equal(r.value.i, 102);
    fake_now += 400;
    r = wr(t->a, (struct vg_state_write){.op = VG_STATE_INCR, .key = "w", .value = one});
    assert_int_equal(r.value.i, 1); /* expired at 1000 ms: started again from 0 */
    /* integers wrap */
    assert_int_equal(wr(t->a, (struct vg_state_write){.op = VG_STATE_SET,
                                                      .key = "max",
                                                      .value = {.type = VG_STATE_INTEGER, .i = INT64_MAX}})
                         .rc,
                     0);
    r = wr(t->a, (struct vg_state_write){.op = VG_STATE_INCR, .key = "max", .value = one});
    assert_true(r.value.i == INT64_MIN);
    /* not a number: refused, unchanged */
    assert_int_equal(wr(t->a, (struct vg_state_write){.op = VG_STATE_SET, .key = "s", .value = str("abc")}).rc, 0);
    r = wr(t->a, (struct vg_state_write){.op = VG_STATE_INCR, .key = "s", .value = one});
    assert_int_equal(r.rc, VG_EINVAL);
    struct vg_state_value v;
    char *mem;
    assert_int_equal(get(t->a, "s", &v, &mem), 0);
    assert_int_equal(v.type, VG_STATE_STRING);
    free(mem);
    /* a burst of increments from several submitters: none lost */
    struct wait ws[200];
    for (int i = 0; i < 200; i++) {
        ws[i] = (struct wait){.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
        struct vg_state_write w = {.op = VG_STATE_INCR, .key = "burst", .klen = 5, .value = one};
        assert_int_equal(vg_state_local_write(t->a, &w, on_done, &ws[i]), 0);
    }
    for (int i = 0; i < 200; i++) {
        pthread_mutex_lock(&ws[i].mu);
        while (!ws[i].done)
            pthread_cond_wait(&ws[i].cv, &ws[i].mu);
        pthread_mutex_unlock(&ws[i].mu);
    }
    assert_int_equal(get(t->a, "burst", &v, &mem), 0);
    assert_int_equal(v.i, 200);
}

static void test_isolation(void **state)
{
    struct t *t = *state;
    assert_int_equal(wr(t->a, (struct vg_state_write){.op = VG_STATE_SET, .key = "k", .value = str("of alpha")}).rc, 0);
    struct vg_state_value v;
    char *mem;
    assert_int_equal(get(t->b, "k", &v, &mem), VG_ENOENT);
    assert_int_equal(wr(t->b, (struct vg_state_write){.op = VG_STATE_SET, .key = "k", .value = str("of beta")}).rc, 0);
    assert_int_equal(get(t->a, "k", &v, &mem), 0);
    assert_int_equal(v.str.len, 8);
    assert_memory_equal(v.str.ptr, "of alpha", 8);
    free(mem);
    assert_int_equal(wr(t->b, (struct vg_state_write){.op = VG_STATE_DELETE, .key = "k"}).rc, 0);
    assert_int_equal(get(t->a, "k", &v, &mem), 0);
    free(mem);
    /* the same handle for the same app */
    struct vg_state_db *again;
    assert_int_equal(vg_state_local_db(t->s, "alpha", &again), 0);
    assert_ptr_equal(again, t->a);
}

static void test_reopen(void **state)
{
    struct t *t = *state;
    char long_key[VG_STATE_MAX_KEY + 1];
    memset(long_key, 'k', VG_STATE_MAX_KEY);
    long_key[VG_STATE_MAX_KEY] = 0;
    assert_int_equal(wr(t->a, (struct vg_state_write){.op = VG_STATE_SET, .key = "p", .value = str("kept")}).rc, 0);
    assert_int_equal(wr(t->a, (struct vg_state_write){.op = VG_STATE_SET, .key = long_key, .value = str("long")}).rc,
                     0);
    assert_int_equal(wr(t->b, (struct vg_state_write){.op = VG_STATE_SET,
                                                      .key = "p",
                                                      .value = {.type = VG_STATE_INTEGER, .i = 42},
                                                      .ttl_ms = 60000})
                         .rc,
                     0);
    vg_state_local_close(t->s);
    open_store(t);
    struct vg_state_value v;
    char *mem;
    assert_int_equal(get(t->a, "p", &v, &mem), 0);
    assert_memory_equal(v.str.ptr, "kept", 4);
    free(mem);
    assert_int_equal(get(t->a, long_key, &v, &mem), 0);
    assert_memory_equal(v.str.ptr, "long", 4);
    free(mem);
    assert_int_equal(get(t->b, "p", &v, &mem), 0);
    assert_int_equal(v.i, 42);
    fake_now += 60000; /* expiry is wall-clock: it survives the restart */
    assert_int_equal(get(t->b, "p", &v, &mem), VG_ENOENT);
}

static void test_limits(void **state)
{
    struct t *t = *state;
    /* keys: 1024 bytes fine (longer than LMDB's own key size), 1025 not;
     * two long keys differing in their last byte stay apart */
    char key[VG_STATE_MAX_KEY + 2];
    memset(key, 'a', sizeof(key));
    key[VG_STATE_MAX_KEY + 1] = 0;
    struct vg_state_write w = {.op = VG_STATE_SET, .key = key, .klen = VG_STATE_MAX_KEY + 1, .value = str("x")};
    assert_int_equal(vg_state_local_write(t->a, &w, on_done, NULL), VG_EINVAL);
    w.klen = VG_STATE_MAX_KEY;
    assert_int_equal(wr(t->a, w).rc, 0);
    key[VG_STATE_MAX_KEY - 1] = 'b';
    w.value = str("y");
    assert_int_equal(wr(t->a, w).rc, 0);
    struct vg_state_value v;
    char *mem;
    assert_int_equal(vg_state_local_get(t->a, key, VG_STATE_MAX_KEY, &v, &mem), 0);
    assert_memory_equal(v.str.ptr, "y", 1);
    free(mem);
    key[VG_STATE_MAX_KEY - 1] = 'a';
    assert_int_equal(vg_state_local_get(t->a, key, VG_STATE_MAX_KEY, &v, &mem), 0);
    assert_memory_equal(v.str.ptr, "x", 1);
    free(mem);
    assert_int_equal(vg_state_local_get(t->a, key, VG_STATE_MAX_KEY + 1, &v, &mem), VG_EINVAL);
    /* values: 64 KiB fine, one more byte not */
    char *big = malloc(VG_STATE_MAX_VALUE + 1);
    memset(big, 'v', VG_STATE_MAX_VALUE + 1);
    w = (struct vg_state_write){.op = VG_STATE_SET,
                                .key = "big",
                                .klen = 3,
                                .value = {.type = VG_STATE_STRING, .str = {big, VG_STATE_MAX_VALUE + 1}}};
    assert_int_equal(vg_state_local_write(t->a, &w, on_done, NULL), VG_ELIMIT);
    w.value.str.len = VG_STATE_MAX_VALUE;
    assert_int_equal(wr(t->a, w).rc, 0);
    assert_int_equal(get(t->a, "big", &v, &mem), 0);
    assert_int_equal(v.str.len, VG_STATE_MAX_VALUE);
    free(mem);
    free(big);
}

static void test_keys(void **state)
{
    static const char *ok[] = {"a", "block.10.0.0.1", "user/42", "x=y", "A-b_c", "1"};
    static const char *bad[] = {"", ".a", "a.", "a..b", "a b", "block:1.2.3.4", "a*", "a>", "é", "a\nb"};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
        assert_true(vg_state_key_valid(ok[i], strlen(ok[i]), NULL));
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const char *why = NULL;
        assert_false(vg_state_key_valid(bad[i], strlen(bad[i]), &why));
        assert_non_null(why);
    }
    assert_false(vg_state_key_valid("a\0b", 3, NULL));
}

static void test_record(void **state)
{
    uint8_t buf[64];
    struct vg_state_value v = {.type = VG_STATE_NUMBER, .n = -2.5};
    size_t n = vg__state_rec_size(&v, 0, false);
    assert_int_equal(n, VG__STATE_HDR + 8);
    vg__state_rec_encode(buf, &v, 123, 456, NULL, 0, NULL);
    struct vg__state_rec r;
    assert_true(vg__state_rec_decode(buf, n, false, &r));
    assert_true(r.v.n == -2.5);
    assert_int_equal(r.expires_ms, 123);
    assert_int_equal(r.written_us, 456);
    /* truncated, wrong length for the type, bad boolean: refused */
    assert_false(vg__state_rec_decode(buf, n - 1, false, &r));
    buf[4] = VG_STATE_BOOLEAN;
    assert_false(vg__state_rec_decode(buf, n, false, &r));
    buf[4] = 99;
    assert_false(vg__state_rec_decode(buf, n, false, &r));
    /* a payload shorter than its type needs is refused before it is read
     * (found by fuzz_kv_record: a boolean with no payload byte) */
    buf[4] = VG_STATE_BOOLEAN;
    assert_false(vg__state_rec_decode(buf, VG__STATE_HDR, false, &r));
    buf[4] = VG_STATE_INTEGER;
    assert_false(vg__state_rec_decode(buf, VG__STATE_HDR + 7, false, &r));
    /* no magic: a plain string only when raw values are allowed */
    assert_false(vg__state_rec_decode((const uint8_t *)"plain", 5, false, &r));
    assert_true(vg__state_rec_decode((const uint8_t *)"plain", 5, true, &r));
    assert_int_equal(r.v.type, VG_STATE_STRING);
    assert_int_equal(r.v.str.len, 5);
    /* the magic and less than a header: a record cut short, refused even
     * where raw values are allowed */
    assert_false(vg__state_rec_decode(buf, 5, true, &r));
    assert_false(vg__state_rec_decode(buf, VG__STATE_HDR - 1, true, &r));
    assert_true(vg__state_rec_decode(buf, 3, true, &r)); /* not the whole magic: a string */
}

/* A global record with an ack request (await_visible): the request rides
 * at the very end, after the payload, and comes back as written. */
static void test_record_ack_request(void **state)
{
    uint8_t buf[64];
    struct vg_state_value v = {.type = VG_STATE_STRING, .str = {"hello", 5}};
    struct vg__state_ackreq ack = {.inbox = 0x0123456789abcdefull, .id = 42};
    size_t n = vg__state_rec_size(&v, 0, true);
    assert_int_equal(n, VG__STATE_HDR + 5 + VG__STATE_ACK_REQ);
    vg__state_rec_encode(buf, &v, 0, 7, NULL, 0, &ack);
    struct vg__state_rec r;
    assert_true(vg__state_rec_decode(buf, n, false, &r));
    assert_true(r.ack);
    assert_int_equal(r.ackreq.inbox, ack.inbox);
    assert_int_equal(r.ackreq.id, 42);
    assert_int_equal(r.v.str.len, 5); /* the request is not part of the string */
    assert_memory_equal(r.v.str.ptr, "hello", 5);
    /* too short to hold the request it announces; an unknown flag */
    assert_false(vg__state_rec_decode(buf, VG__STATE_HDR + VG__STATE_ACK_REQ - 1, false, &r));
    buf[5] = 2;
    assert_false(vg__state_rec_decode(buf, n, false, &r));
    /* without the flag the same bytes are a longer string, no request */
    buf[5] = 0;
    assert_true(vg__state_rec_decode(buf, n, false, &r));
    assert_false(r.ack);
    assert_int_equal(r.v.str.len, 5 + VG__STATE_ACK_REQ);
    /* an integer with a request: the payload length is still checked */
    struct vg_state_value i = {.type = VG_STATE_INTEGER, .i = -3};
    vg__state_rec_encode(buf, &i, 0, 0, NULL, 0, &ack);
    n = vg__state_rec_size(&i, 0, true);
    assert_true(vg__state_rec_decode(buf, n, false, &r));
    assert_true(r.ack && r.v.i == -3);
    assert_false(vg__state_rec_decode(buf, n - 1, false, &r));
}

static void test_ack(void **state)
{
    uint8_t buf[VG__STATE_ACK_LEN];
    struct vg__state_ack a = {.id = 9, .rev = 1234, .node = 0xfeedfacecafebeefull}, b;
    vg__state_ack_encode(buf, &a);
    assert_true(vg__state_ack_decode(buf, sizeof(buf), &b));
    assert_int_equal(b.id, 9);
    assert_int_equal(b.rev, 1234);
    assert_int_equal(b.node, a.node);
    /* exactly 28 bytes with the magic, nothing else */
    assert_false(vg__state_ack_decode(buf, sizeof(buf) - 1, &b));
    uint8_t longer[VG__STATE_ACK_LEN + 1] = {0};
    memcpy(longer, buf, sizeof(buf));
    assert_false(vg__state_ack_decode(longer, sizeof(longer), &b));
    buf[3] = '1'; /* a value record's magic is not an ack's */
    assert_false(vg__state_ack_decode(buf, sizeof(buf), &b));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_record_ack_request),
        cmocka_unit_test(test_ack),
        cmocka_unit_test_setup_teardown(test_types, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ttl, setup, teardown),
        cmocka_unit_test_setup_teardown(test_incr, setup, teardown),
        cmocka_unit_test_setup_teardown(test_isolation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reopen, setup, teardown),
        cmocka_unit_test_setup_teardown(test_limits, setup, teardown),
        cmocka_unit_test(test_keys),
        cmocka_unit_test(test_record),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
