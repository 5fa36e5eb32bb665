/* cache disk: the persistent tier, one LMDB environment.
 *
 * Databases:
 *   objs  disk key -> record (cache_obj.c: version, fields, data, CRC32).
 *         The disk key is  key '\0' vary-names '\0' vary-key  so that the
 *         variants of a key, a URL and a prefix are each one range of the
 *         B-tree; beyond LMDB's key limit it is cut and ends with a hash of
 *         the whole (the record holds the real key, which scans compare).
 *   seq   insertion number -> disk key; key 0 holds the totals (records,
 *         bytes), so a restart knows them without a scan. The disk is kept
 *         under its budget by deleting the lowest numbers first (FIFO by
 *         insertion: the memory tier already filters what is popular; the
 *         disk only has to keep the most recent).
 *
 * Writes come from one background thread fed by a bounded queue, one
 * transaction per batch: a worker never waits for the disk (a full queue
 * drops the write and counts it). Readers run on every worker thread with
 * short read-only transactions (MDB_NOTLS: a reader slot per transaction,
 * not per thread). MDB_NOMETASYNC: a system crash may lose the last
 * batches, never the database's consistency — fine for a cache, and it
 * halves the fsyncs; MDB_NOSYNC would risk corruption on a system crash.
 * The budget counts records at what LMDB spends on them and is half the
 * map: copy-on-write needs free pages, branch pages and half-full leaves
 * take the rest. MDB_MAP_FULL anyway: evict a quarter, retry once, drop. */
#include "cache/cache_int.h"

#include <errno.h>
#include <lmdb.h>
#include <string.h>
#include <sys/stat.h>

_Static_assert(sizeof(size_t) == 8, "seq keys are MDB_INTEGERKEY size_t");

#define DEFAULT_QUEUE 1024
#define BATCH 64
#define KEY_MAX 511 /* LMDB's default; smaller if the library says so */
#define HASH_LEN 8

struct item {
    struct vg_cache_obj *o; /* a write (our reference) ... */
    char *del;              /* ... or a corrupt record to delete (owned) */
    size_t del_len;
};

struct vg__cache_disk {
    MDB_env *env;
    MDB_dbi objs, seq;
    size_t budget, key_max, page;
    size_t next_seq; /* write transactions only (LMDB serialises them) */
    pthread_t writer;
    pthread_mutex_t lock;
    pthread_cond_t more, idle;
    struct item *ring;
    size_t cap, head, len;
    bool stop, paused, busy;
    _Atomic uint64_t objects, bytes, corrupt, dropped, writes;
};

struct delta {
    int64_t objects, bytes;
};

static const uint8_t hash_seed[16]; /* stable across restarts */

/* ---- keys ------------------------------------------------------------------ */

/* The disk key of (key, names, vkey) into out[KEY_MAX]; its length. */
static size_t disk_key(const struct vg__cache_disk *d, h2o_iovec_t key, h2o_iovec_t vn, h2o_iovec_t vk, uint8_t *out)
{
    size_t len = key.len + 1 + vn.len + 1 + vk.len;
    uint8_t small[KEY_MAX], *buf = len <= sizeof(small) ? small : malloc(len);
    VG_AN(buf);
    memcpy(buf, key.base, key.len);
    buf[key.len] = 0;
    memcpy(buf + key.len + 1, vn.base, vn.len);
    buf[key.len + 1 + vn.len] = 0;
    memcpy(buf + key.len + 2 + vn.len, vk.base, vk.len);
    size_t n = len;
    if (len > d->key_max) {
        uint64_t h = vg__cache_hash(hash_seed, buf, len);
        n = d->key_max;
        memcpy(out + n - HASH_LEN, &h, HASH_LEN);
        memcpy(out, buf, n - HASH_LEN);
    } else {
        memcpy(out, buf, len);
    }
    if (buf != small)
        free(buf);
    return n;
}

static size_t obj_disk_key(const struct vg__cache_disk *d, const struct vg_cache_obj *o, uint8_t *out)
{
    return disk_key(d, h2o_iovec_init(vg__cache_obj_key(o), o->key_len), h2o_iovec_init(vg__cache_obj_vn(o), o->vn_len),
                    h2o_iovec_init(vg__cache_obj_vk(o), o->vk_len), out);
}

/* Every disk key that starts with p starts with the returned length of p. */
static size_t scan_len(const struct vg__cache_disk *d, size_t plen)
{
    return plen < d->key_max - HASH_LEN ? plen : d->key_max - HASH_LEN;
}

/* What a record costs in the map: node header + key + value, and whole
 * pages for values that go to overflow pages. */
static int64_t charge(const struct vg__cache_disk *d, size_t klen, size_t vlen)
{
    size_t v = vlen > d->page / 2 ? (vlen + 16 + d->page - 1) / d->page * d->page : vlen + 16;
    return (int64_t)(klen + v);
}

static uint64_t rec_seq(const MDB_val *v)
{
    uint64_t s = 0;
    if (v->mv_size >= 12)
        for (int i = 0; i < 8; i++)
            s |= (uint64_t)((const uint8_t *)v->mv_data)[4 + i] << (8 * i);
    return s;
}

/* ---- totals ------------------------------------------------------------------- */

static int totals_put(struct vg__cache_disk *d, MDB_txn *txn, const struct delta *dl)
{
    uint64_t t[2] = {atomic_load(&d->objects) + (uint64_t)dl->objects, atomic_load(&d->bytes) + (uint64_t)dl->bytes};
    size_t zero = 0;
    MDB_val k = {sizeof(zero), &zero}, v = {sizeof(t), t};
    return mdb_put(txn, d->seq, &k, &v, 0);
}

static void totals_apply(struct vg__cache_disk *d, const struct delta *dl)
{
    atomic_fetch_add(&d->objects, (uint64_t)dl->objects);
    atomic_fetch_add(&d->bytes, (uint64_t)dl->bytes);
}

/* ---- records in a write transaction ---------------------------------------------- */

/* Deletes the record at k (value v) and its seq entry when that entry still
 * names k: a damaged record's seq must not take another record's entry. */
static int record_del(struct vg__cache_disk *d, MDB_txn *txn, MDB_val *k, const MDB_val *v, struct delta *dl)
{
    size_t s = rec_seq(v);
    MDB_val sk = {sizeof(s), &s}, sv;
    if (s && mdb_get(txn, d->seq, &sk, &sv) == 0 && sv.mv_size == k->mv_size &&
        memcmp(sv.mv_data, k->mv_data, k->mv_size) == 0)
        mdb_del(txn, d->seq, &sk, NULL);
    dl->objects--;
    dl->bytes -= charge(d, k->mv_size, v->mv_size);
    int rc = mdb_del(txn, d->objs, k, NULL);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

static int record_put(struct vg__cache_disk *d, MDB_txn *txn, const struct vg_cache_obj *o, struct delta *dl)
{
    uint8_t kb[KEY_MAX];
    MDB_val k = {obj_disk_key(d, o, kb), kb}, v;
    int rc;
    if (mdb_get(txn, d->objs, &k, &v) == 0 && (rc = record_del(d, txn, &k, &v, dl)) != 0)
        return rc;
    size_t s = d->next_seq++, size = vg__cache_rec_size(o);
    v = (MDB_val){size, NULL};
    if ((rc = mdb_put(txn, d->objs, &k, &v, MDB_RESERVE)) != 0)
        return rc;
    vg__cache_rec_write(o, s, v.mv_data);
    MDB_val sk = {sizeof(s), &s}, sv = {k.mv_size, kb};
    if ((rc = mdb_put(txn, d->seq, &sk, &sv, 0)) != 0)
        return rc;
    dl->objects++;
    dl->bytes += charge(d, k.mv_size, size);
    return 0;
}

/* The oldest record goes; false when there is none. */
static bool evict_oldest(struct vg__cache_disk *d, MDB_txn *txn, MDB_cursor *cur, struct delta *dl)
{
    size_t one = 1;
    MDB_val sk = {sizeof(one), &one}, sv, v;
    if (mdb_cursor_get(cur, &sk, &sv, MDB_SET_RANGE) != 0)
        return false;
    size_t s;
    memcpy(&s, sk.mv_data, sizeof(s));
    uint8_t kb[KEY_MAX];
    MDB_val k = {sv.mv_size < sizeof(kb) ? sv.mv_size : sizeof(kb), kb};
    memcpy(kb, sv.mv_data, k.mv_size);
    mdb_cursor_del(cur, 0);
    if (mdb_get(txn, d->objs, &k, &v) == 0 && rec_seq(&v) == s) {
        dl->objects--;
        dl->bytes -= charge(d, k.mv_size, v.mv_size);
        mdb_del(txn, d->objs, &k, NULL);
    }
    return true;
}

static int evict_to(struct vg__cache_disk *d, MDB_txn *txn, struct delta *dl, int64_t limit)
{
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, d->seq, &cur);
    if (rc != 0)
        return rc;
    while ((int64_t)atomic_load(&d->bytes) + dl->bytes > limit && evict_oldest(d, txn, cur, dl))
        ;
    mdb_cursor_close(cur);
    return 0;
}

/* The record at key still fails its check: delete it (a fresh write may
 * have replaced it since a reader saw it damaged). */
static int del_if_corrupt(struct vg__cache_disk *d, MDB_txn *txn, const char *key, size_t len, struct delta *dl)
{
    MDB_val k = {len, (void *)key}, v;
    if (mdb_get(txn, d->objs, &k, &v) != 0)
        return 0;
    struct vg_cache_obj *o;
    uint64_t s;
    if (vg__cache_rec_parse(v.mv_data, v.mv_size, &o, &s) == 0) {
        vg_cache_obj_release(o);
        return 0;
    }
    return record_del(d, txn, &k, &v, dl);
}

/* ---- the writer -------------------------------------------------------------------------- */

static int try_batch(struct vg__cache_disk *d, struct item *items, size_t n, size_t *written)
{
    MDB_txn *txn;
    struct delta dl = {0, 0};
    int rc = mdb_txn_begin(d->env, NULL, 0, &txn);
    if (rc != 0)
        return rc;
    *written = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        if (items[i].del)
            rc = del_if_corrupt(d, txn, items[i].del, items[i].del_len, &dl);
        else if (!(atomic_load(&items[i].o->flags) & VG__CACHE_OBJ_PURGED)) /* purges set it before their txn */
            rc = record_put(d, txn, items[i].o, &dl);
    }
    if (rc == 0)
        rc = evict_to(d, txn, &dl, (int64_t)d->budget);
    if (rc == 0)
        rc = totals_put(d, txn, &dl);
    if (rc == 0)
        rc = mdb_txn_commit(txn);
    else
        mdb_txn_abort(txn);
    if (rc != 0)
        return rc;
    totals_apply(d, &dl);
    for (size_t i = 0; i < n; i++)
        if (items[i].o && !(atomic_load(&items[i].o->flags) & VG__CACHE_OBJ_PURGED)) {
            atomic_fetch_or(&items[i].o->flags, VG__CACHE_OBJ_ON_DISK);
            (*written)++;
        }
    return 0;
}

static void make_room(struct vg__cache_disk *d)
{
    MDB_txn *txn;
    struct delta dl = {0, 0};
    if (mdb_txn_begin(d->env, NULL, 0, &txn) != 0)
        return;
    if (evict_to(d, txn, &dl, (int64_t)atomic_load(&d->bytes) * 3 / 4) == 0 && totals_put(d, txn, &dl) == 0 &&
        mdb_txn_commit(txn) == 0)
        totals_apply(d, &dl);
    else
        mdb_txn_abort(txn);
}

static void write_batch(struct vg__cache_disk *d, struct item *items, size_t n)
{
    size_t written = 0;
    int rc = try_batch(d, items, n, &written);
    if (rc == MDB_MAP_FULL || rc == MDB_TXN_FULL) {
        make_room(d);
        rc = try_batch(d, items, n, &written);
    }
    if (rc != 0) {
        size_t objs = 0;
        for (size_t i = 0; i < n; i++)
            objs += items[i].o != NULL;
        atomic_fetch_add(&d->dropped, objs);
        vg_log(VG_LOG_WARN, "cache disk write failed", "error", mdb_strerror(rc), NULL);
    }
    atomic_fetch_add(&d->writes, written);
}

static size_t take(struct vg__cache_disk *d, struct item *batch)
{
    size_t n = 0;
    for (; n < BATCH && d->len; n++, d->len--) {
        batch[n] = d->ring[d->head];
        d->head = (d->head + 1) % d->cap;
    }
    return n;
}

static void *writer_main(void *arg)
{
    struct vg__cache_disk *d = arg;
    struct item batch[BATCH];
    pthread_mutex_lock(&d->lock);
    for (;;) {
        while ((d->len == 0 || d->paused) && !d->stop) {
            d->busy = false;
            pthread_cond_broadcast(&d->idle);
            pthread_cond_wait(&d->more, &d->lock);
        }
        if (d->len == 0) /* stopping, drained */
            break;
        size_t n = take(d, batch);
        d->busy = true;
        pthread_mutex_unlock(&d->lock);
        write_batch(d, batch, n);
        for (size_t i = 0; i < n; i++) {
            vg_cache_obj_release(batch[i].o);
            free(batch[i].del);
        }
        pthread_mutex_lock(&d->lock);
    }
    d->busy = false;
    pthread_cond_broadcast(&d->idle);
    pthread_mutex_unlock(&d->lock);
    return NULL;
}

static bool push(struct vg__cache_disk *d, struct item it)
{
    pthread_mutex_lock(&d->lock);
    bool ok = d->len < d->cap && !d->stop;
    if (ok) {
        d->ring[(d->head + d->len) % d->cap] = it;
        d->len++;
        pthread_cond_signal(&d->more);
    }
    pthread_mutex_unlock(&d->lock);
    return ok;
}

bool vg__cache_disk_enqueue(struct vg__cache_disk *d, struct vg_cache_obj *o)
{
    vg_cache_obj_retain(o);
    if (push(d, (struct item){.o = o}))
        return true;
    vg_cache_obj_release(o);
    atomic_fetch_add(&d->dropped, 1);
    return false;
}

static void enqueue_delete(struct vg__cache_disk *d, const void *key, size_t len)
{
    char *k = malloc(len);
    if (!k)
        return;
    memcpy(k, key, len);
    if (!push(d, (struct item){.del = k, .del_len = len}))
        free(k); /* the next reader finds it again */
}

void vg__cache_disk_flush(struct vg__cache_disk *d)
{
    pthread_mutex_lock(&d->lock);
    while (d->len || d->busy)
        pthread_cond_wait(&d->idle, &d->lock);
    pthread_mutex_unlock(&d->lock);
}

void vg__cache_disk_pause(struct vg__cache_disk *d, bool paused)
{
    pthread_mutex_lock(&d->lock);
    d->paused = paused;
    pthread_cond_signal(&d->more);
    pthread_mutex_unlock(&d->lock);
}

/* ---- reading ------------------------------------------------------------------------------ */

static void report_corrupt(struct vg__cache_disk *d, const MDB_val *k)
{
    atomic_fetch_add(&d->corrupt, 1);
    const char *p = k->mv_data, *end = memchr(p, 0, k->mv_size);
    char *key = vg_xstrndup(p, end ? (size_t)(end - p) : k->mv_size);
    vg_log(VG_LOG_WARN, "cache entry corrupt", "key", key, NULL);
    free(key);
}

/* The record under the cursor as an object, or NULL (damaged: reported
 * and queued for deletion). */
static struct vg_cache_obj *read_record(struct vg__cache_disk *d, const MDB_val *k, const MDB_val *v, uint64_t *seq)
{
    struct vg_cache_obj *o;
    int rc = vg__cache_rec_parse(v->mv_data, v->mv_size, &o, seq);
    if (rc == 0)
        return o;
    if (rc == VG_EPARSE) {
        report_corrupt(d, k);
        enqueue_delete(d, k->mv_data, k->mv_size);
    }
    return NULL;
}

static bool key_eq(const struct vg_cache_obj *o, h2o_iovec_t key)
{
    return o->key_len == key.len && memcmp(vg__cache_obj_key(o), key.base, key.len) == 0;
}

static size_t read_variants(struct vg__cache_disk *d, MDB_txn *txn, h2o_iovec_t key, int64_t now,
                            struct vg_cache_obj **cands, size_t max)
{
    /* every variant's disk key starts with key '\0' */
    uint8_t prefix[KEY_MAX];
    size_t plen = scan_len(d, key.len + 1);
    memcpy(prefix, key.base, plen < key.len ? plen : key.len);
    if (plen > key.len)
        prefix[key.len] = 0;
    MDB_cursor *cur;
    if (mdb_cursor_open(txn, d->objs, &cur) != 0)
        return 0;
    size_t n = 0;
    MDB_val k = {plen, prefix}, v;
    for (int rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0 && n < max;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size < plen || memcmp(k.mv_data, prefix, plen) != 0)
            break;
        uint64_t s;
        struct vg_cache_obj *o = read_record(d, &k, &v, &s);
        if (o && key_eq(o, key) && now <= vg__cache_obj_useless_at(o))
            cands[n++] = o;
        else
            vg_cache_obj_release(o);
    }
    mdb_cursor_close(cur);
    return n;
}

struct vg_cache_obj *vg__cache_disk_lookup(struct vg__cache_disk *d, h2o_iovec_t key, const h2o_headers_t *req_headers,
                                           int64_t now, bool *key_known)
{
    MDB_txn *txn;
    *key_known = false;
    if (mdb_txn_begin(d->env, NULL, MDB_RDONLY, &txn) != 0)
        return NULL;
    struct vg_cache_obj *cands[VG__CACHE_MAX_VARIANTS * 2];
    size_t n = read_variants(d, txn, key, now, cands, VG_ARRAY_LEN(cands));
    mdb_txn_abort(txn);
    *key_known = n > 0;
    struct vg_cache_obj *pick = n ? vg__cache_choose(cands, n, req_headers) : NULL;
    for (size_t i = 0; i < n; i++)
        if (cands[i] != pick)
            vg_cache_obj_release(cands[i]);
    return pick;
}

/* ---- purge ---------------------------------------------------------------------------------- */

struct hit {
    char *key;
    size_t len;
};

struct hits {
    struct hit *v;
    size_t n, cap;
};

static void hits_add(struct hits *h, const MDB_val *k)
{
    if (h->n == h->cap) {
        h->cap = h->cap ? h->cap * 2 : 16;
        h->v = vg_xrealloc(h->v, h->cap * sizeof(*h->v));
    }
    h->v[h->n].key = vg_xmalloc(k->mv_size);
    memcpy(h->v[h->n].key, k->mv_data, k->mv_size);
    h->v[h->n++].len = k->mv_size;
}

static void hits_free(struct hits *h)
{
    for (size_t i = 0; i < h->n; i++)
        free(h->v[i].key);
    free(h->v);
}

/* Matching (and damaged) records, found by a range scan for URL and
 * PREFIX and by a walk of every record for TAG. */
static void purge_scan(struct vg__cache_disk *d, MDB_txn *txn, const struct vg_cache_purge *p, struct hits *match,
                       struct hits *bad)
{
    MDB_cursor *cur;
    if (mdb_cursor_open(txn, d->objs, &cur) != 0)
        return;
    size_t plen = p->kind == VG_CACHE_PURGE_TAG ? 0 : scan_len(d, p->value.len);
    MDB_val k = {plen, p->value.base}, v;
    int rc = mdb_cursor_get(cur, &k, &v, plen ? MDB_SET_RANGE : MDB_FIRST);
    for (; rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (plen && (k.mv_size < plen || memcmp(k.mv_data, p->value.base, plen) != 0))
            break;
        struct vg_cache_obj *o;
        uint64_t s;
        if (vg__cache_rec_parse(v.mv_data, v.mv_size, &o, &s) != 0) {
            report_corrupt(d, &k);
            hits_add(bad, &k);
            continue;
        }
        if (vg__cache_purge_match(o, p))
            hits_add(match, &k);
        vg_cache_obj_release(o);
    }
    mdb_cursor_close(cur);
}

static int mark_stale(struct vg__cache_disk *d, MDB_txn *txn, MDB_val *k)
{
    MDB_val v;
    int rc = mdb_get(txn, d->objs, k, &v);
    if (rc != 0 || (((const uint8_t *)v.mv_data)[1] & VG__CACHE_OBJ_STALE))
        return rc == MDB_NOTFOUND ? 0 : rc;
    uint8_t *copy = vg_xmalloc(v.mv_size);
    memcpy(copy, v.mv_data, v.mv_size);
    vg__cache_rec_set_flags(copy, v.mv_size, copy[1] | VG__CACHE_OBJ_STALE);
    v.mv_data = copy;
    rc = mdb_put(txn, d->objs, k, &v, 0);
    free(copy);
    return rc;
}

static int purge_apply(struct vg__cache_disk *d, MDB_txn *txn, struct hits *h, bool soft, struct delta *dl)
{
    int rc = 0;
    for (size_t i = 0; i < h->n && rc == 0; i++) {
        MDB_val k = {h->v[i].len, h->v[i].key}, v;
        if (soft)
            rc = mark_stale(d, txn, &k);
        else if (mdb_get(txn, d->objs, &k, &v) == 0)
            rc = record_del(d, txn, &k, &v, dl);
    }
    return rc;
}

/* Objects still waiting for the writer take the mark too: written later,
 * a purged object would come back. */
static void purge_pending(struct vg__cache_disk *d, const struct vg_cache_purge *p)
{
    pthread_mutex_lock(&d->lock);
    for (size_t i = 0; i < d->len; i++) {
        struct vg_cache_obj *o = d->ring[(d->head + i) % d->cap].o;
        if (o && vg__cache_purge_match(o, p))
            atomic_fetch_or(&o->flags, p->soft ? VG__CACHE_OBJ_STALE : VG__CACHE_OBJ_PURGED);
    }
    pthread_mutex_unlock(&d->lock);
}

size_t vg__cache_disk_purge(struct vg__cache_disk *d, const struct vg_cache_purge *p)
{
    purge_pending(d, p);
    MDB_txn *txn;
    if (mdb_txn_begin(d->env, NULL, 0, &txn) != 0)
        return 0;
    struct hits match = {0}, bad = {0};
    struct delta dl = {0, 0};
    purge_scan(d, txn, p, &match, &bad);
    int rc = purge_apply(d, txn, &match, p->soft, &dl);
    if (rc == 0)
        rc = purge_apply(d, txn, &bad, false, &dl);
    if (rc == 0)
        rc = totals_put(d, txn, &dl);
    if (rc == 0)
        rc = mdb_txn_commit(txn);
    else
        mdb_txn_abort(txn);
    size_t n = rc == 0 ? match.n : 0;
    if (rc == 0)
        totals_apply(d, &dl);
    else
        vg_log(VG_LOG_WARN, "cache disk purge failed", "error", mdb_strerror(rc), NULL);
    hits_free(&match);
    hits_free(&bad);
    return n;
}

/* ---- open / close ------------------------------------------------------------------------------- */

static int open_dbs(struct vg__cache_disk *d)
{
    MDB_txn *txn;
    int rc = mdb_txn_begin(d->env, NULL, 0, &txn);
    if (rc != 0)
        return rc;
    if ((rc = mdb_dbi_open(txn, VG__CACHE_DISK_DB_OBJS, MDB_CREATE, &d->objs)) != 0 ||
        (rc = mdb_dbi_open(txn, VG__CACHE_DISK_DB_SEQ, MDB_CREATE | MDB_INTEGERKEY, &d->seq)) != 0) {
        mdb_txn_abort(txn);
        return rc;
    }
    size_t zero = 0;
    MDB_val k = {sizeof(zero), &zero}, v;
    if (mdb_get(txn, d->seq, &k, &v) == 0 && v.mv_size == 16) {
        uint64_t t[2];
        memcpy(t, v.mv_data, sizeof(t));
        atomic_store(&d->objects, t[0]);
        atomic_store(&d->bytes, t[1]);
    }
    MDB_cursor *cur;
    d->next_seq = 1;
    if ((rc = mdb_cursor_open(txn, d->seq, &cur)) == 0) {
        if (mdb_cursor_get(cur, &k, &v, MDB_LAST) == 0) {
            memcpy(&d->next_seq, k.mv_data, sizeof(d->next_seq));
            d->next_seq++;
        }
        mdb_cursor_close(cur);
    }
    return rc == 0 ? mdb_txn_commit(txn) : (mdb_txn_abort(txn), rc);
}

static int env_open(struct vg__cache_disk *d, const char *path, size_t bytes)
{
    if (mkdir(path, 0700) != 0 && errno != EEXIST)
        return VG_EIO;
    size_t map = bytes < (1u << 20) ? (1u << 20) : bytes;
    int rc;
    if ((rc = mdb_env_create(&d->env)) != 0)
        return rc;
    if ((rc = mdb_env_set_maxdbs(d->env, 2)) != 0 || (rc = mdb_env_set_mapsize(d->env, map)) != 0 ||
        (rc = mdb_env_set_maxreaders(d->env, 1024)) != 0 ||
        (rc = mdb_env_open(d->env, path, MDB_NOTLS | MDB_NOMETASYNC | MDB_NORDAHEAD, 0600)) != 0)
        return rc;
    MDB_stat st;
    if ((rc = mdb_env_stat(d->env, &st)) != 0)
        return rc;
    d->page = st.ms_psize;
    int km = mdb_env_get_maxkeysize(d->env);
    d->key_max = km < KEY_MAX ? (size_t)km : KEY_MAX;
    d->budget = map / 2;
    return open_dbs(d);
}

int vg__cache_disk_open(const char *path, size_t bytes, size_t queue_cap, struct vg__cache_disk **out)
{
    struct vg__cache_disk *d = calloc(1, sizeof(*d));
    if (!d)
        return VG_ENOMEM;
    d->cap = queue_cap ? queue_cap : DEFAULT_QUEUE;
    d->ring = calloc(d->cap, sizeof(*d->ring));
    int rc = d->ring ? env_open(d, path, bytes) : VG_ENOMEM;
    if (rc != 0) {
        vg_log(VG_LOG_ERROR, "cache disk tier unavailable", "path", path, "error",
               rc < 0 ? vg_strerror(rc) : mdb_strerror(rc), NULL);
        if (d->env)
            mdb_env_close(d->env);
        free(d->ring);
        free(d);
        return rc < 0 ? rc : VG_EIO;
    }
    VG_AZ(pthread_mutex_init(&d->lock, NULL));
    VG_AZ(pthread_cond_init(&d->more, NULL));
    VG_AZ(pthread_cond_init(&d->idle, NULL));
    VG_AZ(pthread_create(&d->writer, NULL, writer_main, d));
    *out = d;
    return 0;
}

void vg__cache_disk_close(struct vg__cache_disk *d)
{
    pthread_mutex_lock(&d->lock);
    d->stop = true;
    pthread_cond_signal(&d->more);
    pthread_mutex_unlock(&d->lock);
    VG_AZ(pthread_join(d->writer, NULL));
    mdb_env_sync(d->env, 1);
    mdb_env_close(d->env);
    pthread_cond_destroy(&d->more);
    pthread_cond_destroy(&d->idle);
    pthread_mutex_destroy(&d->lock);
    free(d->ring);
    free(d);
}

void vg__cache_disk_stats(struct vg__cache_disk *d, struct vg__cache_disk_stats *out)
{
    out->objects = atomic_load(&d->objects);
    out->bytes = atomic_load(&d->bytes);
    out->corrupt = atomic_load(&d->corrupt);
    out->dropped = atomic_load(&d->dropped);
    out->writes = atomic_load(&d->writes);
}
