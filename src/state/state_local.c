/* The local scope: one LMDB environment per node, one named database per
 * app ("app:<name>"), values as records (state_int.h) with their expiry.
 *
 * Rules that must stay true:
 * - Only the writer thread opens write transactions, except
 *   vg_state_local_db, which creates a database on the main thread (LMDB
 *   serialises the two); a database handle is used only after the
 *   transaction that opened it committed.
 * - Keys longer than LMDB's key size (511 bytes in Debian's build) are
 *   stored as 0xff + sha256(key) with the full key in the record, checked
 *   on read; 0xff never starts a valid key, so the two forms cannot meet.
 * - Expiry is lazy: an expired record is absent to every reader; a reader
 *   that meets one queues its removal (if it is still expired when the
 *   writer gets there).
 * - The writer takes every queued write into one transaction (group
 *   commit: one fsync for a burst), then calls their done callbacks. */
#include "state_int.h"

#include <errno.h>
#include <lmdb.h>
#include <openssl/sha.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define DEFAULT_MAP (1ull << 30)
#define MAX_APPS 1024

struct vg_state_db {
    struct vg_state_local *s;
    MDB_dbi dbi;
    char app[72];
};

struct vg_state_local {
    MDB_env *env;
    size_t key_max;
    pthread_t writer;
    pthread_mutex_t mu;
    pthread_cond_t more;
    struct vg__state_wreq *head, **tail; /* under mu */
    bool stop;                           /* under mu */
    struct vg_state_db *dbs[MAX_APPS];   /* main thread */
    size_t n_dbs;
    vg__state_clock_fn clock;
    void *clock_ctx;
    _Atomic uint64_t counts[VG_STATE_C_OPS][VG_STATE_R_RESULTS];
};

static uint64_t wall_ms(void *ctx)
{
    (void)ctx;
    return vg_wall_us() / 1000;
}

static void count(struct vg_state_local *s, int op, int res)
{
    atomic_fetch_add_explicit(&s->counts[op][res], 1, memory_order_relaxed);
}

void vg__state_local_set_clock(struct vg_state_local *s, vg__state_clock_fn fn, void *ctx)
{
    s->clock = fn ? fn : wall_ms;
    s->clock_ctx = ctx;
}

/* The LMDB key of key into buf (at least 33 bytes, or klen). */
static MDB_val db_key(const struct vg_state_local *s, const char *key, size_t klen, uint8_t *buf)
{
    if (klen <= s->key_max)
        return (MDB_val){klen, (void *)key};
    buf[0] = 0xff;
    SHA256((const unsigned char *)key, klen, buf + 1);
    return (MDB_val){1 + SHA256_DIGEST_LENGTH, buf};
}

/* Decodes a stored record for key: false when it is corrupt or another
 * key's (a hash collision). */
static bool rec_of(const struct vg_state_local *s, const MDB_val *v, const char *key, size_t klen,
                   struct vg__state_rec *r)
{
    if (!vg__state_rec_decode(v->mv_data, v->mv_size, false, r))
        return false;
    if (klen > s->key_max)
        return r->tail_klen == klen && memcmp(r->tail_key, key, klen) == 0;
    return r->tail_klen == 0;
}

static bool expired(const struct vg_state_local *s, const struct vg__state_rec *r)
{
    return r->expires_ms && s->clock(s->clock_ctx) >= r->expires_ms;
}

/* ---- the writer --------------------------------------------------------------------- */

static void enqueue(struct vg_state_local *s, struct vg__state_wreq *q)
{
    pthread_mutex_lock(&s->mu);
    *s->tail = q;
    s->tail = &q->next;
    pthread_cond_signal(&s->more);
    pthread_mutex_unlock(&s->mu);
}

/* An internal write: remove key if it is still expired. */
enum { OP_EXPIRE = 100 };

static int put_rec(struct vg_state_db *db, MDB_txn *txn, const struct vg_state_write *w, const struct vg_state_value *v,
                   uint64_t expires_ms)
{
    struct vg_state_local *s = db->s;
    uint8_t kb[1 + SHA256_DIGEST_LENGTH];
    MDB_val k = db_key(s, w->key, w->klen, kb);
    size_t tail = w->klen > s->key_max ? w->klen : 0;
    MDB_val val = {vg__state_rec_size(v, tail, false), NULL};
    int rc = mdb_put(txn, db->dbi, &k, &val, MDB_RESERVE);
    if (rc == 0)
        vg__state_rec_encode(val.mv_data, v, expires_ms, vg_wall_us(), w->key, tail, NULL);
    return rc;
}

/* Applies one write inside txn; fills res (an INCR's value in *num). */
static int apply(struct vg_state_db *db, MDB_txn *txn, const struct vg__state_wreq *q, struct vg_state_result *res)
{
    struct vg_state_local *s = db->s;
    const struct vg_state_write *w = &q->w;
    uint8_t kb[1 + SHA256_DIGEST_LENGTH];
    MDB_val k = db_key(s, w->key, w->klen, kb), v;
    uint64_t now = s->clock(s->clock_ctx);
    int rc;
    switch ((int)w->op) {
    case VG_STATE_SET:
        return put_rec(db, txn, w, &w->value, w->ttl_ms ? now + w->ttl_ms : 0);
    case VG_STATE_DELETE:
        rc = mdb_del(txn, db->dbi, &k, NULL);
        return rc == MDB_NOTFOUND ? 0 : rc;
    case OP_EXPIRE: {
        struct vg__state_rec r;
        if (mdb_get(txn, db->dbi, &k, &v) != 0 || !rec_of(s, &v, w->key, w->klen, &r) || !expired(s, &r))
            return 0;
        return mdb_del(txn, db->dbi, &k, NULL);
    }
    case VG_STATE_INCR: {
        struct vg__state_rec r;
        bool have = false;
        rc = mdb_get(txn, db->dbi, &k, &v);
        if (rc != 0 && rc != MDB_NOTFOUND)
            return rc;
        if (rc == 0 && rec_of(s, &v, w->key, w->klen, &r) && !expired(s, &r))
            have = true;
        if (vg__state_incr(have ? &r.v : NULL, w, &res->value) != 0) {
            res->rc = VG_EINVAL;
            res->err = "not a number";
            return 0;
        }
        /* an existing key keeps its expiry; a new one gets ttl */
        return put_rec(db, txn, w, &res->value, have ? r.expires_ms : w->ttl_ms ? now + w->ttl_ms : 0);
    }
    }
    VG_ASSERT(!"bad op");
    return 0;
}

static int op_counter(enum vg_state_op op)
{
    return op == VG_STATE_SET ? VG_STATE_C_SET : op == VG_STATE_DELETE ? VG_STATE_C_DELETE : VG_STATE_C_INCR;
}

static void run_batch(struct vg_state_local *s, struct vg__state_wreq *batch)
{
    size_t n = 0;
    for (struct vg__state_wreq *q = batch; q; q = q->next)
        n++;
    struct vg_state_result *res = vg_xcalloc(n, sizeof(*res));
    MDB_txn *txn = NULL;
    int rc = mdb_txn_begin(s->env, NULL, 0, &txn);
    size_t i = 0;
    for (struct vg__state_wreq *q = batch; q && rc == 0; q = q->next, i++)
        rc = apply(q->db, txn, q, &res[i]);
    if (rc == 0)
        rc = mdb_txn_commit(txn);
    else if (txn)
        mdb_txn_abort(txn);
    if (rc != 0)
        vg_log(VG_LOG_ERROR, "state: local write failed", "reason", mdb_strerror(rc), NULL);
    i = 0;
    for (struct vg__state_wreq *q = batch, *next; q; q = next, i++) {
        next = q->next;
        if (rc != 0) {
            res[i] = (struct vg_state_result){.rc = rc == MDB_MAP_FULL ? VG_ELIMIT : VG_EIO,
                                              .err = rc == MDB_MAP_FULL ? "the node's state store is full"
                                                                        : "the node's state store failed"};
        }
        if ((int)q->w.op != OP_EXPIRE)
            count(s, op_counter(q->w.op), res[i].rc == 0 ? VG_STATE_R_OK : VG_STATE_R_ERROR);
        if (q->done)
            q->done(q->arg, &res[i]);
        free(q);
    }
    free(res);
}

static void *writer_main(void *arg)
{
    struct vg_state_local *s = arg;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (!s->head && !s->stop)
            pthread_cond_wait(&s->more, &s->mu);
        if (!s->head)
            break; /* stop, and nothing left */
        struct vg__state_wreq *batch = s->head;
        s->head = NULL;
        s->tail = &s->head;
        pthread_mutex_unlock(&s->mu);
        run_batch(s, batch);
        pthread_mutex_lock(&s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* ---- the API ------------------------------------------------------------------------ */

int vg_state_local_open(const char *dir, size_t map_bytes, struct vg_state_local **out, char *err, size_t errcap)
{
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        snprintf(err, errcap, "cannot create %s: %s", dir, strerror(errno));
        return VG_EIO;
    }
    struct vg_state_local *s = vg_xcalloc(1, sizeof(*s));
    s->clock = wall_ms;
    int rc = mdb_env_create(&s->env);
    if (rc == 0)
        rc = mdb_env_set_maxdbs(s->env, MAX_APPS);
    if (rc == 0)
        rc = mdb_env_set_mapsize(s->env, map_bytes ? map_bytes : DEFAULT_MAP);
    if (rc == 0)
        rc = mdb_env_open(s->env, dir, MDB_NOTLS | MDB_NOMETASYNC, 0600);
    if (rc != 0) {
        snprintf(err, errcap, "cannot open the state store in %s: %s", dir, mdb_strerror(rc));
        if (s->env)
            mdb_env_close(s->env);
        free(s);
        return VG_EIO;
    }
    s->key_max = (size_t)mdb_env_get_maxkeysize(s->env);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->more, NULL);
    s->tail = &s->head;
    if (pthread_create(&s->writer, NULL, writer_main, s) != 0) {
        snprintf(err, errcap, "cannot start the state writer");
        mdb_env_close(s->env);
        free(s);
        return VG_EIO;
    }
    *out = s;
    return 0;
}

void vg_state_local_close(struct vg_state_local *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->mu);
    s->stop = true;
    pthread_cond_signal(&s->more);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->writer, NULL);
    for (size_t i = 0; i < s->n_dbs; i++)
        free(s->dbs[i]);
    mdb_env_close(s->env);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->more);
    free(s);
}

int vg_state_local_db(struct vg_state_local *s, const char *app, struct vg_state_db **out)
{
    for (size_t i = 0; i < s->n_dbs; i++)
        if (strcmp(s->dbs[i]->app, app) == 0) {
            *out = s->dbs[i];
            return 0;
        }
    if (s->n_dbs == MAX_APPS || strlen(app) > 63)
        return VG_ELIMIT;
    struct vg_state_db *db = vg_xcalloc(1, sizeof(*db));
    db->s = s;
    snprintf(db->app, sizeof(db->app), "%s", app);
    char name[80];
    snprintf(name, sizeof(name), "app:%s", app);
    MDB_txn *txn;
    int rc = mdb_txn_begin(s->env, NULL, 0, &txn);
    if (rc == 0 && (rc = mdb_dbi_open(txn, name, MDB_CREATE, &db->dbi)) != 0)
        mdb_txn_abort(txn);
    else if (rc == 0)
        rc = mdb_txn_commit(txn);
    if (rc != 0) {
        vg_log(VG_LOG_ERROR, "state: cannot open the app's database", "app", app, "reason", mdb_strerror(rc), NULL);
        free(db);
        return VG_EIO;
    }
    s->dbs[s->n_dbs++] = db;
    *out = db;
    return 0;
}

int vg_state_local_get(struct vg_state_db *db, const char *key, size_t klen, struct vg_state_value *v, char **mem)
{
    struct vg_state_local *s = db->s;
    *mem = NULL;
    if (!vg_state_key_valid(key, klen, NULL))
        return VG_EINVAL;
    MDB_txn *txn;
    int rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn);
    if (rc != 0) {
        count(s, VG_STATE_C_GET, VG_STATE_R_ERROR);
        return VG_EIO;
    }
    uint8_t kb[1 + SHA256_DIGEST_LENGTH];
    MDB_val k = db_key(s, key, klen, kb), val;
    struct vg__state_rec r;
    int out = VG_ENOENT;
    bool stale = false;
    if (mdb_get(txn, db->dbi, &k, &val) == 0 && rec_of(s, &val, key, klen, &r)) {
        if (expired(s, &r)) {
            stale = true;
        } else {
            vg__state_value_out(&r.v, v, mem);
            out = 0;
        }
    }
    mdb_txn_abort(txn);
    count(s, VG_STATE_C_GET, out == 0 ? VG_STATE_R_OK : VG_STATE_R_MISS);
    if (stale) {
        struct vg_state_write w = {.op = (enum vg_state_op)OP_EXPIRE, .key = key, .klen = klen};
        enqueue(s, vg__state_wreq_new(db, &w, NULL, NULL));
    }
    return out;
}

int vg_state_local_write(struct vg_state_db *db, const struct vg_state_write *w, vg_state_done_fn done, void *arg)
{
    int rc = vg__state_write_check(w);
    if (rc != 0)
        return rc;
    enqueue(db->s, vg__state_wreq_new(db, w, done, arg));
    return 0;
}

void vg_state_local_counts(struct vg_state_local *s, uint64_t out[VG_STATE_C_OPS][VG_STATE_R_RESULTS])
{
    for (int o = 0; o < VG_STATE_C_OPS; o++)
        for (int r = 0; r < VG_STATE_R_RESULTS; r++)
            out[o][r] = atomic_load_explicit(&s->counts[o][r], memory_order_relaxed);
}
