/* The cache store: objects, lookup with Vary, replace, the byte budget and
 * S3-FIFO eviction, references outliving eviction, purge, coalescing,
 * threads, and the LMDB tier (restart, damaged records, its budget, the
 * writer queue). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <dirent.h>
#include <lmdb.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <unistd.h>
#include <zlib.h>

#include "cache/cache_int.h"

#define NOW 1700000000

static h2o_mem_pool_t pool;

static struct vg_cache_meta meta_at(int64_t t, int64_t lifetime)
{
    return (struct vg_cache_meta){.request_time = t - 1,
                                  .response_time = t,
                                  .date = t,
                                  .age = 0,
                                  .lifetime = lifetime,
                                  .swr = -1,
                                  .sie = -1,
                                  .last_modified = -1};
}

/* Request headers from "name: value" pairs (NULL-terminated). */
static h2o_headers_t req(const char *name, const char *value)
{
    h2o_headers_t h = {NULL, 0, 0};
    if (name)
        h2o_add_header_by_str(&pool, &h, name, strlen(name), 0, NULL, value, strlen(value));
    return h;
}

static h2o_iovec_t iov(const char *s)
{
    return h2o_iovec_init(s, strlen(s));
}

/* An object of key with body, varying on vary_names as the request r
 * would select it; tags separated by spaces. */
static struct vg_cache_obj *mk_at(const char *key, const char *vary, const h2o_headers_t *r, const char *body,
                                  const char *tags, int64_t t)
{
    h2o_headers_t res = {NULL, 0, 0};
    h2o_add_header_by_str(&pool, &res, H2O_STRLIT("ETag"), 0, NULL, H2O_STRLIT("\"v1\""));
    h2o_add_header_by_str(&pool, &res, H2O_STRLIT("content-type"), 0, NULL, H2O_STRLIT("text/plain"));
    h2o_iovec_t vk = vary && *vary ? vg_cache_vary_key(&pool, iov(vary), r) : iov("");
    h2o_iovec_t tv[8];
    size_t nt = 0;
    char *tcopy = tags ? h2o_mem_alloc_pool(&pool, strlen(tags) + 1) : NULL;
    if (tags) {
        strcpy(tcopy, tags);
        for (char *save, *tok = strtok_r(tcopy, " ", &save); tok; tok = strtok_r(NULL, " ", &save))
            tv[nt++] = iov(tok);
    }
    struct vg_cache_meta m = meta_at(t, 100);
    struct vg_cache_obj *o = vg_cache_obj_new(iov(key), iov(vary ? vary : ""), vk, 200, &res, &m, tv, nt);
    assert_non_null(o);
    assert_int_equal(vg_cache_obj_append(o, body, strlen(body), 1 << 20), 0);
    return o;
}

static struct vg_cache_obj *mk(const char *key, const char *body)
{
    return mk_at(key, NULL, NULL, body, NULL, NOW);
}

static struct vg_cache *mem_cache(size_t bytes, unsigned shards)
{
    struct vg_cache_config cfg = {.mem_bytes = bytes};
    struct vg__cache_opts opts = {.n_shards = shards};
    struct vg_cache *c;
    assert_int_equal(vg__cache_create_ex(&cfg, &opts, &c), 0);
    return c;
}

/* The body of key's variant for r as a pool string, or NULL on a miss. */
static const char *get(struct vg_cache *c, const char *key, const h2o_headers_t *r, bool *known)
{
    struct vg_cache_obj *o = vg_cache_lookup(c, iov(key), r, NOW, known);
    if (!o)
        return NULL;
    h2o_iovec_t b = vg_cache_obj_body(o);
    char *s = h2o_mem_alloc_pool(&pool, b.len + 1);
    memcpy(s, b.base, b.len);
    s[b.len] = 0;
    vg_cache_obj_release(o);
    return s;
}

static struct vg_cache_stats stats(struct vg_cache *c)
{
    struct vg_cache_stats st;
    vg_cache_stats(c, &st);
    return st;
}

static int setup(void **state)
{
    h2o_mem_init_pool(&pool);
    return 0;
}

static int teardown(void **state)
{
    h2o_mem_clear_pool(&pool);
    return 0;
}

/* ---- memory tier ---------------------------------------------------------- */

static void test_insert_lookup(void **state)
{
    struct vg_cache *c = mem_cache(1 << 20, 0);
    bool known = true;
    assert_null(get(c, "h\n/a", NULL, &known));
    assert_false(known);
    vg_cache_insert(c, mk("h\n/a", "hello"));
    struct vg_cache_obj *o = vg_cache_lookup(c, iov("h\n/a"), NULL, NOW, &known);
    assert_non_null(o);
    assert_true(known);
    assert_int_equal(vg_cache_obj_status(o), 200);
    assert_int_equal(vg_cache_obj_n_headers(o), 2);
    h2o_iovec_t n, v;
    vg_cache_obj_header(o, 0, &n, &v);
    assert_memory_equal(n.base, "etag", 4); /* lower-cased */
    assert_int_equal(vg_cache_obj_etag(o).len, 4);
    struct vg_cache_meta m;
    vg_cache_obj_meta(o, &m);
    struct vg_cache_meta want = meta_at(NOW, 100); /* field by field: the struct has padding */
    assert_int_equal(m.request_time, want.request_time);
    assert_int_equal(m.response_time, want.response_time);
    assert_int_equal(m.date, want.date);
    assert_int_equal(m.age, want.age);
    assert_int_equal(m.lifetime, want.lifetime);
    assert_int_equal(m.swr, -1);
    assert_int_equal(m.sie, -1);
    assert_int_equal(m.last_modified, -1);
    assert_int_equal(m.flags, 0);
    assert_false(vg_cache_obj_is_stale_marked(o));
    h2o_iovec_t b = vg_cache_obj_body(o);
    assert_memory_equal(b.base, "hello", 5);
    vg_cache_obj_release(o);
    struct vg_cache_stats st = stats(c);
    assert_int_equal(st.objects, 1);
    assert_int_equal(st.hits, 1);
    assert_int_equal(st.misses, 1);
    assert_true(st.bytes > 0 && st.bytes <= 1 << 20);
    vg_cache_destroy(c);
}

static void test_append_limit(void **state)
{
    struct vg_cache_obj *o = mk("h\n/a", "12345");
    assert_int_equal(vg_cache_obj_append(o, "678", 3, 7), VG_ELIMIT);
    assert_int_equal(vg_cache_obj_body(o).len, 5);
    vg_cache_obj_release(o);
}

static void test_variants(void **state)
{
    struct vg_cache *c = mem_cache(1 << 20, 0);
    h2o_headers_t gz = req("Accept-Encoding", " gzip "), br = req("accept-encoding", "br"), none = req(NULL, NULL),
                  empty = req("accept-encoding", ""), other = req("accept-encoding", "zstd");
    vg_cache_insert(c, mk_at("h\n/v", "accept-encoding", &gz, "GZ", NULL, NOW));
    vg_cache_insert(c, mk_at("h\n/v", "accept-encoding", &br, "BR", NULL, NOW));
    vg_cache_insert(c, mk_at("h\n/v", "accept-encoding", &none, "NONE", NULL, NOW));
    bool known = false;
    assert_string_equal(get(c, "h\n/v", &gz, &known), "GZ");
    assert_string_equal(get(c, "h\n/v", &br, &known), "BR");
    assert_string_equal(get(c, "h\n/v", &none, &known), "NONE");
    assert_null(get(c, "h\n/v", &empty, &known)); /* empty is not absent */
    assert_true(known);                           /* vary-miss */
    assert_null(get(c, "h\n/v", &other, &known));
    assert_true(known);
    assert_null(get(c, "h\n/w", &gz, &known));
    assert_false(known); /* uri-miss */
    /* a newer variant under another Vary list wins where both match */
    vg_cache_insert(c, mk_at("h\n/v", "accept-language", &gz, "NEWER", NULL, NOW + 1));
    assert_string_equal(get(c, "h\n/v", &gz, &known), "NEWER");
    vg_cache_destroy(c);
}

static void test_replace(void **state)
{
    struct vg_cache *c = mem_cache(1 << 20, 0);
    vg_cache_insert(c, mk("h\n/r", "one"));
    struct vg_cache_obj *held = vg_cache_lookup(c, iov("h\n/r"), NULL, NOW, NULL);
    vg_cache_insert(c, mk("h\n/r", "two"));
    assert_string_equal(get(c, "h\n/r", NULL, NULL), "two");
    assert_int_equal(stats(c).objects, 1);
    assert_memory_equal(vg_cache_obj_body(held).base, "one", 3); /* the old one lives while held */
    vg_cache_obj_release(held);
    vg_cache_destroy(c);
}

static void test_expiry(void **state)
{
    struct vg_cache *c = mem_cache(1 << 20, 0);
    vg_cache_insert(c, mk("h\n/e", "x")); /* lifetime 100 */
    /* current age starts at 1 (the response took a second, RFC 9111 4.2.3) */
    int64_t last = NOW - 1 + 100 + VG__CACHE_GRACE;
    struct vg_cache_obj *o = vg_cache_lookup(c, iov("h\n/e"), NULL, last, NULL);
    assert_non_null(o); /* stale but within grace: the policy decides */
    vg_cache_obj_release(o);
    assert_null(vg_cache_lookup(c, iov("h\n/e"), NULL, last + 1, NULL));
    assert_int_equal(stats(c).objects, 0);
    vg_cache_destroy(c);
}

static void test_refresh(void **state)
{
    struct vg_cache *c = mem_cache(1 << 20, 0);
    vg_cache_insert(c, mk_at("h\n/f", NULL, NULL, "body", "t1 t2", NOW));
    struct vg_cache_obj *o = vg_cache_lookup(c, iov("h\n/f"), NULL, NOW, NULL);
    h2o_headers_t h = req("etag", "\"v2\"");
    struct vg_cache_meta m = meta_at(NOW + 50, 300);
    struct vg_cache_obj *n = vg_cache_refresh(c, o, &h, &m);
    assert_non_null(n);
    assert_memory_equal(vg_cache_obj_body(n).base, "body", 4);
    assert_memory_equal(vg_cache_obj_etag(n).base, "\"v2\"", 4);
    assert_true(vg__cache_obj_has_tag(n, iov("t2")));
    vg_cache_obj_release(n);
    vg_cache_obj_release(o);
    o = vg_cache_lookup(c, iov("h\n/f"), NULL, NOW + 300, NULL);
    assert_non_null(o);
    vg_cache_obj_release(o);
    assert_int_equal(stats(c).objects, 1);
    vg_cache_destroy(c);
}

static void test_budget(void **state)
{
    const size_t budget = 64 * 1024;
    struct vg_cache *c = mem_cache(budget, 1);
    char key[32], body[501];
    memset(body, 'b', 500);
    body[500] = 0;
    for (int i = 0; i < 1000; i++) {
        snprintf(key, sizeof(key), "h\n/%d", i);
        vg_cache_insert(c, mk(key, body));
        assert_true(stats(c).bytes <= budget);
    }
    struct vg_cache_stats st = stats(c);
    assert_true(st.evictions > 0);
    assert_true(st.objects > 50);
    /* bigger than the shard's budget: never stored */
    char *big = calloc(1, budget + 1);
    memset(big, 'x', budget);
    vg_cache_insert(c, mk("h\n/big", big));
    assert_null(get(c, "h\n/big", NULL, NULL));
    free(big);
    vg_cache_destroy(c);
}

static bool present(struct vg_cache *c, const char *key)
{
    struct vg_cache_obj *o = vg_cache_lookup(c, iov(key), NULL, NOW, NULL);
    vg_cache_obj_release(o);
    return o != NULL;
}

static void test_scan_resistance(void **state)
{
    struct vg_cache *c = mem_cache(100 * 1024, 1);
    char key[32], body[801];
    memset(body, 'b', 800);
    body[800] = 0;
    /* a hot set of 40 objects (~40 KiB), each used a few times */
    for (int round = 0; round < 4; round++)
        for (int i = 0; i < 40; i++) {
            snprintf(key, sizeof(key), "h\n/hot%d", i);
            if (!present(c, key))
                vg_cache_insert(c, mk(key, body));
        }
    /* a scan of 2000 never-reused objects, ~20 times the budget */
    for (int i = 0; i < 2000; i++) {
        snprintf(key, sizeof(key), "h\n/scan%d", i);
        vg_cache_insert(c, mk(key, body));
    }
    int alive = 0;
    for (int i = 0; i < 40; i++) {
        snprintf(key, sizeof(key), "h\n/hot%d", i);
        alive += present(c, key);
    }
    assert_true(alive >= 36);
    vg_cache_destroy(c);
}

static void test_ref_outlives_eviction(void **state)
{
    struct vg_cache *c = mem_cache(16 * 1024, 1);
    vg_cache_insert(c, mk("h\n/held", "still here"));
    struct vg_cache_obj *o = vg_cache_lookup(c, iov("h\n/held"), NULL, NOW, NULL);
    assert_non_null(o);
    char key[32], body[1001];
    memset(body, 'b', 1000);
    body[1000] = 0;
    for (int i = 0; i < 200; i++) { /* each used twice: they go to main, which evicts */
        snprintf(key, sizeof(key), "h\n/%d", i);
        vg_cache_insert(c, mk(key, body));
        present(c, key);
    }
    assert_false(present(c, "h\n/held"));
    assert_memory_equal(vg_cache_obj_body(o).base, "still here", 10);
    vg_cache_obj_release(o);
    vg_cache_destroy(c);
}

/* ---- purge -------------------------------------------------------------------- */

static size_t purge(struct vg_cache *c, enum vg_cache_purge_kind kind, const char *value, bool soft)
{
    struct vg_cache_purge p = {.kind = kind, .value = iov(value), .soft = soft};
    return vg_cache_purge(c, &p);
}

static void fill_purge_set(struct vg_cache *c)
{
    h2o_headers_t gz = req("accept-encoding", "gzip"), br = req("accept-encoding", "br");
    vg_cache_insert(c, mk_at("h\n/a", "accept-encoding", &gz, "1", "red", NOW));
    vg_cache_insert(c, mk_at("h\n/a", "accept-encoding", &br, "2", "red blue", NOW));
    vg_cache_insert(c, mk_at("h\n/a\nh:x=1", NULL, NULL, "3", "blue", NOW));
    vg_cache_insert(c, mk_at("h\n/ab", NULL, NULL, "4", "red", NOW));
    vg_cache_insert(c, mk_at("h\n/b/c", NULL, NULL, "5", NULL, NOW));
    vg_cache_insert(c, mk_at("g\n/a", NULL, NULL, "6", "red", NOW));
}

static void test_purge_url(void **state)
{
    struct vg_cache *c = mem_cache(1 << 20, 0);
    fill_purge_set(c);
    assert_int_equal(purge(c, VG_CACHE_PURGE_URL, "h\n/a", false), 3); /* two variants + a header part */
    assert_false(present(c, "h\n/a\nh:x=1"));
    assert_true(present(c, "h\n/ab"));
    assert_int_equal(stats(c).objects, 3);
    assert_int_equal(purge(c, VG_CACHE_PURGE_URL, "h\n/a", false), 0);
    vg_cache_destroy(c);
}

static void test_purge_prefix_soft(void **state)
{
    struct vg_cache *c = mem_cache(1 << 20, 0);
    fill_purge_set(c);
    assert_int_equal(purge(c, VG_CACHE_PURGE_PREFIX, "h\n/a", true), 4);
    assert_int_equal(stats(c).objects, 6); /* soft: all still there */
    struct vg_cache_obj *o = vg_cache_lookup(c, iov("h\n/ab"), NULL, NOW, NULL);
    assert_true(vg_cache_obj_is_stale_marked(o));
    vg_cache_obj_release(o);
    o = vg_cache_lookup(c, iov("h\n/b/c"), NULL, NOW, NULL);
    assert_false(vg_cache_obj_is_stale_marked(o));
    vg_cache_obj_release(o);
    assert_int_equal(purge(c, VG_CACHE_PURGE_PREFIX, "h\n/", false), 5);
    assert_int_equal(stats(c).objects, 1);
    assert_int_equal(stats(c).purged, 9);
    vg_cache_destroy(c);
}

static void test_purge_tag(void **state)
{
    struct vg_cache *c = mem_cache(1 << 20, 0);
    fill_purge_set(c);
    assert_int_equal(purge(c, VG_CACHE_PURGE_TAG, "blue", true), 2);
    assert_int_equal(purge(c, VG_CACHE_PURGE_TAG, "red", false), 4);
    assert_int_equal(stats(c).objects, 2);
    assert_int_equal(purge(c, VG_CACHE_PURGE_TAG, "re", false), 0);
    vg_cache_destroy(c);
}

/* ---- coalescing ------------------------------------------------------------------ */

struct waiter {
    struct vg_cache_waiter w;
    int woken;
};

static void wake(struct vg_cache_waiter *w)
{
    ((struct waiter *)w)->woken++;
}

static void test_coalescing(void **state)
{
    struct vg_cache *c = mem_cache(1 << 20, 0);
    struct waiter w[4] = {{{wake, NULL}, 0}, {{wake, NULL}, 0}, {{wake, NULL}, 0}, {{wake, NULL}, 0}};
    h2o_iovec_t k = iov("h\n/co");
    assert_int_equal(vg_cache_join(c, k, &w[0].w, 2), VG_CACHE_LEADER);
    assert_int_equal(vg_cache_join(c, k, &w[1].w, 2), VG_CACHE_WAITER);
    assert_int_equal(vg_cache_join(c, k, &w[2].w, 2), VG_CACHE_WAITER);
    assert_int_equal(vg_cache_join(c, k, &w[3].w, 2), VG_CACHE_BYPASS); /* max_waiters */
    assert_int_equal(vg_cache_join(c, iov("h\n/other"), &w[3].w, 2), VG_CACHE_LEADER);
    assert_true(vg_cache_cancel_wait(c, k, &w[1].w));
    assert_false(vg_cache_cancel_wait(c, k, &w[1].w));
    vg_cache_leave(c, k);
    assert_int_equal(w[0].woken, 0);
    assert_int_equal(w[1].woken, 0);
    assert_int_equal(w[2].woken, 1);
    assert_false(vg_cache_cancel_wait(c, k, &w[2].w)); /* already woken */
    vg_cache_leave(c, k);                              /* no flight: nothing happens */
    assert_int_equal(w[2].woken, 1);
    assert_int_equal(vg_cache_join(c, k, &w[0].w, 2), VG_CACHE_LEADER);
    vg_cache_leave(c, k);
    vg_cache_leave(c, iov("h\n/other"));
    vg_cache_destroy(c);
}

/* ---- threads ------------------------------------------------------------------------- */

struct stress {
    struct vg_cache *c;
    unsigned seed;
};

struct stress_waiter {
    struct vg_cache_waiter w;
    atomic_int woken;
};

static void stress_wake(struct vg_cache_waiter *w)
{
    atomic_store(&((struct stress_waiter *)w)->woken, 1);
}

static void *stress_main(void *arg)
{
    struct stress *st = arg;
    char key[32], body[300];
    memset(body, 'z', sizeof(body) - 1);
    body[sizeof(body) - 1] = 0;
    struct vg_cache_meta m = meta_at(NOW, 100);
    for (int i = 0; i < 20000; i++) {
        unsigned r = (unsigned)rand_r(&st->seed);
        snprintf(key, sizeof(key), "h\n/%u", r % 500);
        h2o_iovec_t k = iov(key);
        switch (r % 16) {
        case 0: {
            struct vg_cache_purge p = {.kind = r & 32 ? VG_CACHE_PURGE_URL : VG_CACHE_PURGE_TAG,
                                       .value = r & 32 ? k : iov("t"),
                                       .soft = r & 64};
            vg_cache_purge(st->c, &p);
            break;
        }
        case 1: {
            struct stress_waiter w = {{stress_wake, NULL}, 0};
            enum vg_cache_join j = vg_cache_join(st->c, k, &w.w, 4);
            if (j == VG_CACHE_LEADER)
                vg_cache_leave(st->c, k);
            else if (j == VG_CACHE_WAITER && !vg_cache_cancel_wait(st->c, k, &w.w))
                while (!atomic_load(&w.woken)) /* the wake is under way: w must outlive it */
                    sched_yield();
            break;
        }
        case 2:
        case 3:
        case 4: {
            h2o_iovec_t tag = iov("t");
            struct vg_cache_obj *o = vg_cache_obj_new(k, iov(""), iov(""), 200, NULL, &m, &tag, 1);
            assert_int_equal(vg_cache_obj_append(o, body, r % sizeof(body), sizeof(body)), 0);
            vg_cache_insert(st->c, o);
            break;
        }
        default: {
            struct vg_cache_obj *o = vg_cache_lookup(st->c, k, NULL, NOW, NULL);
            if (o) {
                h2o_iovec_t b = vg_cache_obj_body(o);
                assert_true(b.len == 0 || b.base[b.len - 1] == 'z');
                vg_cache_obj_release(o);
            }
        }
        }
    }
    return NULL;
}

static void run_stress(struct vg_cache *c)
{
    pthread_t t[4];
    struct stress st[4];
    for (int i = 0; i < 4; i++) {
        st[i] = (struct stress){c, (unsigned)i * 7919u + 1};
        assert_int_equal(pthread_create(&t[i], NULL, stress_main, &st[i]), 0);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
}

static void test_threads(void **state)
{
    const size_t budget = 64 * 1024;
    struct vg_cache *c = mem_cache(budget, 4);
    run_stress(c);
    assert_true(stats(c).bytes <= budget);
    vg_cache_destroy(c);
}

/* ---- disk tier ------------------------------------------------------------------------- */

static char tmpdir[64];

static void rm_tmpdir(void)
{
    DIR *d = opendir(tmpdir);
    struct dirent *e;
    char p[512];
    while (d && (e = readdir(d)))
        if (e->d_name[0] != '.') {
            snprintf(p, sizeof(p), "%s/%s", tmpdir, e->d_name);
            unlink(p);
        }
    if (d)
        closedir(d);
    rmdir(tmpdir);
}

static int disk_setup(void **state)
{
    setup(state);
    strcpy(tmpdir, "/tmp/vg-cache-test-XXXXXX");
    assert_non_null(mkdtemp(tmpdir));
    return 0;
}

static int disk_teardown(void **state)
{
    rm_tmpdir();
    return teardown(state);
}

static struct vg_cache *disk_cache(size_t mem, size_t disk, size_t queue)
{
    struct vg_cache_config cfg = {.mem_bytes = mem, .disk_path = tmpdir, .disk_bytes = disk};
    struct vg__cache_opts opts = {.disk_queue = queue};
    struct vg_cache *c;
    assert_int_equal(vg__cache_create_ex(&cfg, &opts, &c), 0);
    return c;
}

static void test_disk_restart(void **state)
{
    struct vg_cache *c = disk_cache(1 << 20, 4 << 20, 0);
    h2o_headers_t gz = req("accept-encoding", "gzip"), br = req("accept-encoding", "br");
    char key[32];
    for (int i = 0; i < 20; i++) {
        snprintf(key, sizeof(key), "h\n/%d", i);
        vg_cache_insert(c, mk_at(key, NULL, NULL, key + 2, "tag", NOW));
    }
    vg_cache_insert(c, mk_at("h\n/v", "accept-encoding", &gz, "GZ", NULL, NOW));
    vg_cache_insert(c, mk_at("h\n/v", "accept-encoding", &br, "BR", NULL, NOW));
    vg__cache_disk_flush(c->disk);
    assert_int_equal(stats(c).disk_objects, 22);
    assert_int_equal(stats(c).disk_writes, 22);
    vg_cache_destroy(c);

    c = disk_cache(1 << 20, 4 << 20, 0);
    struct vg_cache_stats st = stats(c);
    assert_int_equal(st.objects, 0);
    assert_int_equal(st.disk_objects, 22);
    for (int i = 0; i < 20; i++) {
        snprintf(key, sizeof(key), "h\n/%d", i);
        assert_string_equal(get(c, key, NULL, NULL), key + 2);
    }
    bool known = false;
    assert_string_equal(get(c, "h\n/v", &br, &known), "BR");
    assert_string_equal(get(c, "h\n/v", &gz, &known), "GZ");
    h2o_headers_t other = req("accept-encoding", "zstd");
    assert_null(get(c, "h\n/v", &other, &known));
    assert_true(known);
    assert_null(get(c, "h\n/", NULL, &known));
    assert_false(known);
    st = stats(c);
    assert_int_equal(st.disk_hits, 22);
    assert_int_equal(st.objects, 22); /* promoted */
    vg__cache_disk_flush(c->disk);
    assert_int_equal(stats(c).disk_writes, 0); /* promotion writes nothing back */
    vg_cache_destroy(c);
}

/* Flips one byte of the body of the first record, with LMDB directly. */
static void damage_first_record(void)
{
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    MDB_cursor *cur;
    MDB_val k, v;
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, 2), 0);
    assert_int_equal(mdb_env_set_mapsize(env, 4 << 20), 0);
    assert_int_equal(mdb_env_open(env, tmpdir, 0, 0600), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, VG__CACHE_DISK_DB_OBJS, 0, &dbi), 0);
    assert_int_equal(mdb_cursor_open(txn, dbi, &cur), 0);
    assert_int_equal(mdb_cursor_get(cur, &k, &v, MDB_FIRST), 0);
    uint8_t *copy = malloc(v.mv_size);
    memcpy(copy, v.mv_data, v.mv_size);
    copy[v.mv_size - 6] ^= 0x40; /* in the body, before the CRC */
    MDB_val nv = {v.mv_size, copy};
    assert_int_equal(mdb_cursor_put(cur, &k, &nv, MDB_CURRENT), 0);
    mdb_cursor_close(cur);
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
    free(copy);
}

static void test_disk_corrupt(void **state)
{
    struct vg_cache *c = disk_cache(1 << 20, 4 << 20, 0);
    vg_cache_insert(c, mk("h\n/a", "alpha"));
    vg_cache_insert(c, mk("h\n/b", "bravo"));
    vg__cache_disk_flush(c->disk);
    vg_cache_destroy(c);
    damage_first_record(); /* "h\n/a" sorts first */

    c = disk_cache(1 << 20, 4 << 20, 0);
    bool known = true;
    assert_null(get(c, "h\n/a", NULL, &known));
    assert_false(known);
    assert_string_equal(get(c, "h\n/b", NULL, NULL), "bravo");
    vg__cache_disk_flush(c->disk);
    struct vg_cache_stats st = stats(c);
    assert_int_equal(st.disk_corrupt, 1);
    assert_int_equal(st.disk_objects, 1); /* the damaged record is gone */
    assert_null(get(c, "h\n/a", NULL, NULL));
    assert_int_equal(stats(c).disk_corrupt, 1);
    vg_cache_destroy(c);
}

/* A record's response time, rewritten to t, with its CRC made right
 * again: parsed, or refused. */
static int parse_with_time(const uint8_t *rec, size_t n, uint64_t t)
{
    uint8_t *r = malloc(n);
    memcpy(r, rec, n);
    for (int i = 0; i < 8; i++) /* little-endian at offset 12 */
        r[12 + i] = (uint8_t)(t >> (8 * i));
    uint32_t crc = (uint32_t)crc32(0L, r, (uInt)(n - 4));
    for (int i = 0; i < 4; i++)
        r[n - 4 + i] = (uint8_t)(crc >> (8 * i));
    struct vg_cache_obj *o = NULL;
    uint64_t seq;
    int rc = vg__cache_rec_parse(r, n, &o, &seq);
    if (rc == 0)
        vg_cache_obj_release(o);
    free(r);
    return rc;
}

/* A damaged record whose times would overflow the sums made with them
 * (UBSan under fuzz_cache_record) is refused, not read. */
static void test_disk_record_times(void **state)
{
    struct vg_cache_obj *o = vg__cache_obj_finish(mk("h\n/t", "tango"));
    size_t n = vg__cache_rec_size(o);
    uint8_t *rec = malloc(n);
    vg__cache_rec_write(o, 7, rec);
    vg_cache_obj_release(o);
    assert_int_equal(parse_with_time(rec, n, (uint64_t)NOW), 0);
    assert_int_equal(parse_with_time(rec, n, (uint64_t)VG__CACHE_TIME_MAX), 0);
    assert_int_equal(parse_with_time(rec, n, (uint64_t)VG__CACHE_TIME_MAX + 1), VG_EPARSE);
    assert_int_equal(parse_with_time(rec, n, (uint64_t)INT64_MIN + 5), VG_EPARSE);
    assert_int_equal(parse_with_time(rec, n, UINT64_MAX), VG_EPARSE); /* -1 */
    free(rec);
}

static void test_disk_budget(void **state)
{
    const size_t disk = 2 << 20;
    struct vg_cache *c = disk_cache(256 << 10, disk, 0);
    char key[32], body[3001];
    memset(body, 'd', 3000);
    body[3000] = 0;
    for (int i = 0; i < 2000; i++) {
        snprintf(key, sizeof(key), "h\n/%04d", i);
        vg_cache_insert(c, mk(key, body));
        if (i % 256 == 0)
            vg__cache_disk_flush(c->disk); /* let the queue keep up */
    }
    vg__cache_disk_flush(c->disk);
    struct vg_cache_stats st = stats(c);
    assert_true(st.disk_bytes <= disk / 2);
    assert_true(st.disk_objects > 100 && st.disk_objects < 2000);
    vg_cache_destroy(c);
    c = disk_cache(0, disk, 0);                      /* no memory tier: only the disk answers */
    assert_null(get(c, "h\n/0000", NULL, NULL));     /* oldest went first */
    assert_non_null(get(c, "h\n/1999", NULL, NULL)); /* newest stayed */
    vg_cache_destroy(c);
}

static void test_disk_queue_full(void **state)
{
    struct vg_cache *c = disk_cache(1 << 20, 4 << 20, 4);
    vg__cache_disk_pause(c->disk, true);
    char key[32];
    for (int i = 0; i < 10; i++) {
        snprintf(key, sizeof(key), "h\n/%d", i);
        vg_cache_insert(c, mk(key, "q"));
    }
    assert_int_equal(stats(c).disk_dropped, 6);
    vg__cache_disk_pause(c->disk, false);
    vg__cache_disk_flush(c->disk);
    struct vg_cache_stats st = stats(c);
    assert_int_equal(st.disk_writes, 4);
    assert_int_equal(st.disk_objects, 4);
    assert_int_equal(st.objects, 10); /* memory is unaffected */
    vg_cache_destroy(c);
}

static void test_disk_purge(void **state)
{
    struct vg_cache *c = disk_cache(1 << 20, 4 << 20, 0);
    fill_purge_set(c);
    vg__cache_disk_flush(c->disk);
    /* in both tiers: each object counts once */
    assert_int_equal(purge(c, VG_CACHE_PURGE_URL, "h\n/a", false), 3);
    assert_int_equal(stats(c).disk_objects, 3);
    vg_cache_destroy(c);

    c = disk_cache(1 << 20, 4 << 20, 0); /* disk only now */
    assert_int_equal(purge(c, VG_CACHE_PURGE_TAG, "red", true), 2);
    struct vg_cache_obj *o = vg_cache_lookup(c, iov("h\n/ab"), NULL, NOW, NULL);
    assert_non_null(o);
    assert_true(vg_cache_obj_is_stale_marked(o)); /* the mark survived on disk */
    vg_cache_obj_release(o);
    assert_int_equal(purge(c, VG_CACHE_PURGE_PREFIX, "g\n", false), 1);
    assert_null(get(c, "g\n/a", NULL, NULL));
    assert_int_equal(stats(c).disk_objects, 2);
    vg_cache_destroy(c);
}

static void test_disk_purge_pending(void **state)
{
    struct vg_cache *c = disk_cache(1 << 20, 4 << 20, 0);
    vg__cache_disk_pause(c->disk, true);
    vg_cache_insert(c, mk("h\n/p", "pending"));
    assert_int_equal(purge(c, VG_CACHE_PURGE_URL, "h\n/p", false), 1);
    vg__cache_disk_pause(c->disk, false);
    vg__cache_disk_flush(c->disk);
    assert_int_equal(stats(c).disk_objects, 0); /* not written after its purge */
    vg_cache_destroy(c);
}

static void test_disk_threads(void **state)
{
    struct vg_cache *c = disk_cache(32 * 1024, 2 << 20, 0);
    run_stress(c);
    vg_cache_destroy(c);
}

/* ---- compactness ------------------------------------------------------------------------ */

/* Bytes the store spends per small object beyond key, header bytes and
 * body (object header, header lengths, slots, ghost, malloc's own).
 * bench/cache_sim.c --overhead measures it for a million objects. */
static void test_overhead(void **state)
{
    const int n = 100000;
    struct vg_cache *c = mem_cache((size_t)1 << 30, 0);
    h2o_headers_t res = {NULL, 0, 0};
    h2o_add_header_by_str(&pool, &res, H2O_STRLIT("content-type"), 0, NULL, H2O_STRLIT("text/html"));
    h2o_add_header_by_str(&pool, &res, H2O_STRLIT("etag"), 0, NULL, H2O_STRLIT("\"5f3c1a\""));
    char key[64], body[200];
    memset(body, 'o', sizeof(body));
    size_t payload = 0;
    struct vg_cache_meta m = meta_at(NOW, 100);
    for (int i = 0; i < n; i++) {
        int kl = snprintf(key, sizeof(key), "www.example.com\n/static/img/%08d.png", i);
        struct vg_cache_obj *o =
            vg_cache_obj_new(h2o_iovec_init(key, (size_t)kl), iov(""), iov(""), 200, &res, &m, NULL, 0);
        assert_int_equal(vg_cache_obj_append(o, body, sizeof(body), sizeof(body)), 0);
        vg_cache_insert(c, o);
        payload += (size_t)kl + 12 + 9 + 4 + 8 + sizeof(body);
    }
    struct vg_cache_stats st = stats(c);
    assert_int_equal(st.objects, n);
    double per = (double)(st.bytes - payload) / n;
    print_message("overhead per object: %.1f bytes\n", per);
    assert_true(per <= 128);
    vg_cache_destroy(c);
}

int main(void)
{
    vg_log_set_level(VG_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_insert_lookup, setup, teardown),
        cmocka_unit_test_setup_teardown(test_append_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_variants, setup, teardown),
        cmocka_unit_test_setup_teardown(test_replace, setup, teardown),
        cmocka_unit_test_setup_teardown(test_expiry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refresh, setup, teardown),
        cmocka_unit_test_setup_teardown(test_budget, setup, teardown),
        cmocka_unit_test_setup_teardown(test_scan_resistance, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ref_outlives_eviction, setup, teardown),
        cmocka_unit_test_setup_teardown(test_purge_url, setup, teardown),
        cmocka_unit_test_setup_teardown(test_purge_prefix_soft, setup, teardown),
        cmocka_unit_test_setup_teardown(test_purge_tag, setup, teardown),
        cmocka_unit_test_setup_teardown(test_coalescing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_threads, setup, teardown),
        cmocka_unit_test_setup_teardown(test_disk_restart, disk_setup, disk_teardown),
        cmocka_unit_test_setup_teardown(test_disk_corrupt, disk_setup, disk_teardown),
        cmocka_unit_test_setup_teardown(test_disk_record_times, setup, teardown),
        cmocka_unit_test_setup_teardown(test_disk_budget, disk_setup, disk_teardown),
        cmocka_unit_test_setup_teardown(test_disk_queue_full, disk_setup, disk_teardown),
        cmocka_unit_test_setup_teardown(test_disk_purge, disk_setup, disk_teardown),
        cmocka_unit_test_setup_teardown(test_disk_purge_pending, disk_setup, disk_teardown),
        cmocka_unit_test_setup_teardown(test_disk_threads, disk_setup, disk_teardown),
        cmocka_unit_test_setup_teardown(test_overhead, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
