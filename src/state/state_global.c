/* The global scope: a JetStream KV bucket per app ("verge_<app>", history
 * 1) and, on every node, an in-memory replica of it fed by a watcher.
 *
 * Threads: one writer per node (all JetStream writes, acknowledged, one at
 * a time, in submission order), one watcher per bucket (kvWatcher_Next in
 * a loop), and any number of readers (workers). The replica is a chained
 * hash table under a read-write lock, held only to copy in or out.
 *
 * Rules that must stay true:
 * - An entry is replaced only by a higher revision, so the writer's own
 *   apply (read-your-writes) and the watcher's later copy of the same
 *   write commute, and a stale delivery never goes back in time. Deletes
 *   stay as tombstones with their revision for the same reason.
 * - A value carries the writer's expiry (JetStream KV's TTL is per bucket)
 *   and its wall-clock write time; expired values read as absent (the
 *   entry stays until overwritten: no node deletes on expiry, which would
 *   make N nodes race to write the same delete).
 * - Ready means: the watcher delivered everything the bucket held when it
 *   started; after a reconnect, until the watcher has seen the stream's
 *   last sequence again. While disconnected the replica keeps serving
 *   (and stays ready): availability over freshness. */
#include "state_int.h"

#include "obs/obs.h"

#include <nats/nats.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_APPS 256
#define INCR_TRIES 16
#define MIN_BUCKETS 64

struct rentry {
    struct rentry *next;
    uint64_t hash, rev;
    bool deleted;
    uint8_t *val; /* the record, malloc'd (NULL for a tombstone) */
    size_t vlen, klen;
    char key[];
};

struct vg_state_gdb {
    struct vg_state_global *g;
    char app[64], bucket[80];
    kvStore *kv;
    kvWatcher *w;
    pthread_t watcher;
    pthread_rwlock_t lock;
    struct rentry **tab; /* under lock */
    size_t cap, n, live;
    _Atomic bool ready, recheck, stop;
    _Atomic bool need_target; /* after a reconnect: the stream's last sequence is to be fetched */
    uint64_t target;          /* the watcher's: that sequence, to be reached */
    _Atomic uint64_t max_rev; /* the highest revision the watcher delivered */
};

struct vg_state_global {
    natsOptions *opts;
    natsConnection *nc;
    jsCtx *js;
    struct vg_state_gdb *dbs[MAX_APPS];
    _Atomic size_t n_dbs;
    pthread_mutex_t dbs_mu;
    pthread_t writer;
    pthread_mutex_t mu;
    pthread_cond_t more;
    struct vg__state_wreq *head, **tail;
    bool stop;
    struct vg_obs_histogram *propagation;
    _Atomic bool connected;
    bool closed; /* under mu: on_closed ran, libnats calls nothing of ours after it */
    _Atomic uint64_t applied, bad;
    _Atomic uint64_t counts[VG_STATE_C_OPS][VG_STATE_R_RESULTS];
};

static void count(struct vg_state_global *g, int op, int res)
{
    atomic_fetch_add_explicit(&g->counts[op][res], 1, memory_order_relaxed);
}

static uint64_t now_ms(void)
{
    return vg_wall_us() / 1000;
}

/* ---- the replica ---------------------------------------------------------------------- */

static uint64_t hash_key(const char *k, size_t n)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a: keys are validated names, not hostile input */
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)k[i]) * 1099511628211ull;
    return h;
}

static struct rentry *find(struct vg_state_gdb *db, const char *key, size_t klen, uint64_t h)
{
    if (!db->cap)
        return NULL;
    for (struct rentry *e = db->tab[h & (db->cap - 1)]; e; e = e->next)
        if (e->hash == h && e->klen == klen && memcmp(e->key, key, klen) == 0)
            return e;
    return NULL;
}

static void grow(struct vg_state_gdb *db)
{
    size_t cap = db->cap ? db->cap * 2 : MIN_BUCKETS;
    struct rentry **tab = vg_xcalloc(cap, sizeof(*tab));
    for (size_t i = 0; i < db->cap; i++)
        for (struct rentry *e = db->tab[i], *next; e; e = next) {
            next = e->next;
            e->next = tab[e->hash & (cap - 1)];
            tab[e->hash & (cap - 1)] = e;
        }
    free(db->tab);
    db->tab = tab;
    db->cap = cap;
}

/* Applies (key, rev, record or NULL for a delete) if rev is newer; takes
 * val (malloc'd). keep_rev: a delete whose revision JetStream did not
 * tell us (kvStore_Delete): a tombstone at the entry's current revision,
 * which the watcher's copy of the delete then replaces. */
static bool replica_apply(struct vg_state_gdb *db, const char *key, size_t klen, uint64_t rev, uint8_t *val,
                          size_t vlen, bool keep_rev)
{
    uint64_t h = hash_key(key, klen);
    pthread_rwlock_wrlock(&db->lock);
    struct rentry *e = find(db, key, klen, h);
    bool applied = false;
    if (!e) {
        if (db->n + 1 > db->cap)
            grow(db);
        e = vg_xcalloc(1, sizeof(*e) + klen);
        e->hash = h;
        e->klen = klen;
        memcpy(e->key, key, klen);
        e->deleted = true;
        e->next = db->tab[h & (db->cap - 1)];
        db->tab[h & (db->cap - 1)] = e;
        db->n++;
    }
    if (keep_rev || rev > e->rev) {
        if (!e->deleted)
            db->live--;
        free(e->val);
        e->val = val;
        e->vlen = vlen;
        e->deleted = val == NULL;
        if (!keep_rev)
            e->rev = rev;
        if (!e->deleted)
            db->live++;
        val = NULL;
        applied = true;
    }
    pthread_rwlock_unlock(&db->lock);
    free(val);
    return applied;
}

/* The replica's view of key: a copy of the record (malloc'd) and its
 * revision; *val NULL when absent (*rev then the tombstone's, or 0). */
static void replica_read(struct vg_state_gdb *db, const char *key, size_t klen, uint8_t **val, size_t *vlen,
                         uint64_t *rev)
{
    uint64_t h = hash_key(key, klen);
    *val = NULL;
    *vlen = 0;
    *rev = 0;
    pthread_rwlock_rdlock(&db->lock);
    struct rentry *e = find(db, key, klen, h);
    if (e) {
        *rev = e->rev;
        if (!e->deleted) {
            *val = vg_xmalloc(e->vlen ? e->vlen : 1);
            memcpy(*val, e->val, e->vlen);
            *vlen = e->vlen;
        }
    }
    pthread_rwlock_unlock(&db->lock);
}

/* ---- the watcher ---------------------------------------------------------------------- */

static void on_entry(struct vg_state_gdb *db, kvEntry *e)
{
    struct vg_state_global *g = db->g;
    const char *key = kvEntry_Key(e);
    size_t klen = strlen(key);
    uint64_t rev = kvEntry_Revision(e);
    uint64_t max = atomic_load(&db->max_rev);
    while (rev > max && !atomic_compare_exchange_weak(&db->max_rev, &max, rev))
        ;
    const char *why = NULL;
    if (!vg_state_key_valid(key, klen, &why)) {
        char shown[128]; /* a key may be as long as a subject */
        snprintf(shown, sizeof(shown), "%.*s%s", klen > 100 ? 100 : (int)klen, key, klen > 100 ? "..." : "");
        atomic_fetch_add(&g->bad, 1);
        vg_log(VG_LOG_WARN, "state: an entry with an invalid key in a global bucket, ignored", "bucket", db->bucket,
               "key", shown, "reason", why, NULL);
        return;
    }
    if (kvEntry_Operation(e) != kvOp_Put) {
        replica_apply(db, key, klen, rev, NULL, 0, false);
        atomic_fetch_add(&g->applied, 1);
        return;
    }
    const uint8_t *p = kvEntry_Value(e);
    size_t len = (size_t)kvEntry_ValueLen(e);
    struct vg__state_rec r;
    if (!vg__state_rec_decode(p, len, true, &r) || r.tail_klen) {
        atomic_fetch_add(&g->bad, 1);
        vg_log(VG_LOG_WARN, "state: a malformed value in a global bucket, ignored", "bucket", db->bucket, "key", key,
               "reason",
               r.tail_klen ? "a record with a stored key (local records only)"
                           : "not a verge value record (bad header, type or length)",
               NULL);
        return;
    }
    uint8_t *copy = vg_xmalloc(len ? len : 1);
    memcpy(copy, p, len);
    bool fresh = replica_apply(db, key, klen, rev, copy, len, false);
    atomic_fetch_add(&g->applied, 1);
    /* the propagation time of live writes (not the initial load): the
     * writer's wall clock against ours; clocks of different hosts must be
     * in sync (NTP) for the figure to mean anything */
    if (fresh && atomic_load(&db->ready) && r.written_us) {
        uint64_t now = vg_wall_us(), lag = now > r.written_us ? now - r.written_us : 0;
        if (g->propagation)
            vg_obs_histogram_observe_us(g->propagation, lag);
        if (vg_log_enabled(VG_LOG_DEBUG)) { /* the exact figure per write (bench/propagation.py) */
            char rs[24], ls[24];
            snprintf(rs, sizeof(rs), "%llu", (unsigned long long)rev);
            snprintf(ls, sizeof(ls), "%llu", (unsigned long long)lag);
            vg_log(VG_LOG_DEBUG, "state: replica applied", "bucket", db->bucket, "key", key, "rev", rs, "lag_us", ls,
                   NULL);
        }
    }
}

/* After a reconnect: caught up once the watcher has seen the stream's
 * last sequence as it was when the watcher first checked after the
 * reconnect. The sequence is fetched once per reconnect: fetched on every
 * entry (as it was), a backlog of 20,000 entries took 9.5 s to catch up
 * instead of 0.2 s, and under steady writes the target kept moving. */
static void check_caught_up(struct vg_state_gdb *db)
{
    if (atomic_exchange(&db->need_target, false)) {
        char stream[96];
        snprintf(stream, sizeof(stream), "KV_%s", db->bucket);
        jsStreamInfo *si = NULL;
        jsErrCode jerr = 0;
        if (js_GetStreamInfo(&si, db->g->js, stream, NULL, &jerr) != NATS_OK) {
            atomic_store(&db->need_target, true); /* again on the next round */
            return;
        }
        db->target = si->State.LastSeq;
        jsStreamInfo_Destroy(si);
    }
    if (atomic_load(&db->max_rev) >= db->target) {
        atomic_store(&db->recheck, false);
        atomic_store(&db->ready, true);
        vg_log(VG_LOG_INFO, "state: replica caught up after a reconnect", "bucket", db->bucket, NULL);
    }
}

static void *watcher_main(void *arg)
{
    struct vg_state_gdb *db = arg;
    while (!atomic_load(&db->stop)) {
        kvEntry *e = NULL;
        natsStatus s = kvWatcher_Next(&e, db->w, 200);
        if (s == NATS_ILLEGAL_STATE)
            break; /* stopped */
        if (s == NATS_OK && !e && !atomic_load(&db->ready) && !atomic_load(&db->recheck)) {
            char n[24];
            snprintf(n, sizeof(n), "%zu", db->live);
            atomic_store(&db->ready, true);
            vg_log(VG_LOG_INFO, "state: replica loaded", "bucket", db->bucket, "keys", n, NULL);
        } else if (s == NATS_OK && e) {
            on_entry(db, e);
            kvEntry_Destroy(e);
        } else if (s != NATS_OK && s != NATS_TIMEOUT) {
            struct timespec ts = {0, 100 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
        if (atomic_load(&db->recheck))
            check_caught_up(db);
    }
    return NULL;
}

/* ---- the writer ----------------------------------------------------------------------- */

static bool is_conflict(void)
{
    const char *e = nats_GetLastError(NULL);
    return e && (strstr(e, "wrong last sequence") || strstr(e, "key exists"));
}

/* Encodes v as a record with an expiry and now as its write time. */
static uint8_t *encode(const struct vg_state_value *v, uint64_t expires_ms, size_t *len)
{
    *len = vg__state_rec_size(v, 0);
    uint8_t *p = vg_xmalloc(*len);
    vg__state_rec_encode(p, v, expires_ms, vg_wall_us(), NULL, 0);
    return p;
}

/* Puts rec under key: plain, or as a compare-and-set on rev (0: absent). */
static natsStatus put(struct vg_state_gdb *db, const struct vg_state_write *w, bool cas, uint64_t last, uint8_t *rec,
                      size_t len, uint64_t *rev)
{
    if (!cas)
        return kvStore_Put(rev, db->kv, w->key, rec, (int)len);
    if (last == 0)
        return kvStore_Create(rev, db->kv, w->key, rec, (int)len);
    return kvStore_Update(rev, db->kv, w->key, rec, (int)len, last);
}

/* A write that failed for want of JetStream (the reason is the writer
 * thread's, valid during the done callback). */
static void net_fail(struct vg_state_result *res, natsStatus s)
{
    static __thread char why[300];
    const char *e = nats_GetLastError(NULL);
    snprintf(why, sizeof(why), "JetStream did not acknowledge the write (%s%s%s)", natsStatus_GetText(s),
             e && *e ? ": " : "", e && *e ? e : "");
    res->rc = VG_ENET;
    res->err = why;
}

static void do_set(struct vg_state_gdb *db, const struct vg_state_write *w, struct vg_state_result *res)
{
    size_t len;
    uint8_t *rec = encode(&w->value, w->ttl_ms ? now_ms() + w->ttl_ms : 0, &len);
    uint64_t rev = 0;
    natsStatus s = put(db, w, w->cas, w->rev, rec, len, &rev);
    if (s != NATS_OK) {
        if (w->cas && is_conflict()) {
            res->rc = VG_EEXIST;
            res->err = "the revision moved (another write came first)";
        } else {
            net_fail(res, s);
        }
        free(rec);
        return;
    }
    res->rev = rev;
    replica_apply(db, w->key, w->klen, rev, rec, len, false);
}

/* The current value of key straight from JetStream (after a conflict the
 * replica may not have caught up yet). */
static natsStatus fetch(struct vg_state_gdb *db, const char *key, uint8_t **val, size_t *vlen, uint64_t *rev)
{
    kvEntry *e = NULL;
    *val = NULL;
    *rev = 0;
    natsStatus s = kvStore_Get(&e, db->kv, key);
    if (s == NATS_NOT_FOUND)
        return NATS_OK; /* absent or deleted: Create handles a delete marker */
    if (s != NATS_OK)
        return s;
    *rev = kvEntry_Revision(e);
    *vlen = (size_t)kvEntry_ValueLen(e);
    *val = vg_xmalloc(*vlen ? *vlen : 1);
    memcpy(*val, kvEntry_Value(e), *vlen);
    kvEntry_Destroy(e);
    return NATS_OK;
}

static void do_incr(struct vg_state_gdb *db, const struct vg_state_write *w, struct vg_state_result *res)
{
    uint8_t *cur;
    size_t clen;
    uint64_t last;
    replica_read(db, w->key, w->klen, &cur, &clen, &last);
    for (int i = 0; i < INCR_TRIES; i++) {
        struct vg__state_rec r;
        bool have = cur && vg__state_rec_decode(cur, clen, true, &r) && !(r.expires_ms && now_ms() >= r.expires_ms);
        if (vg__state_incr(have ? &r.v : NULL, w, &res->value) != 0) {
            free(cur);
            res->rc = VG_EINVAL;
            res->err = "not a number";
            return;
        }
        uint64_t exp = have ? r.expires_ms : w->ttl_ms ? now_ms() + w->ttl_ms : 0;
        bool exists = cur != NULL;
        free(cur);
        size_t len;
        uint8_t *rec = encode(&res->value, exp, &len);
        uint64_t rev = 0;
        /* absent (never written, or deleted): create; an expired value is
         * still there at its revision: update it */
        natsStatus s = put(db, w, true, exists ? last : 0, rec, len, &rev);
        if (s == NATS_OK) {
            res->rev = rev;
            replica_apply(db, w->key, w->klen, rev, rec, len, false);
            return;
        }
        free(rec);
        if (!is_conflict()) {
            net_fail(res, s);
            return;
        }
        if ((s = fetch(db, w->key, &cur, &clen, &last)) != NATS_OK) {
            net_fail(res, s);
            return;
        }
    }
    res->rc = VG_EEXIST;
    res->err = "too many concurrent writers on this key";
}

static void do_write(struct vg_state_global *g, struct vg__state_wreq *q)
{
    struct vg_state_gdb *db = q->db;
    struct vg_state_result res = {0};
    int op = VG_STATE_C_SET;
    switch (q->w.op) {
    case VG_STATE_SET:
        do_set(db, &q->w, &res);
        break;
    case VG_STATE_DELETE: {
        op = VG_STATE_C_DELETE;
        natsStatus s = kvStore_Delete(db->kv, q->w.key);
        if (s != NATS_OK)
            net_fail(&res, s);
        else
            replica_apply(db, q->w.key, q->w.klen, 0, NULL, 0, true);
        break;
    }
    case VG_STATE_INCR:
        op = VG_STATE_C_INCR;
        do_incr(db, &q->w, &res);
        break;
    }
    count(g, op, res.rc == 0 ? VG_STATE_R_OK : res.rc == VG_EEXIST ? VG_STATE_R_CONFLICT : VG_STATE_R_ERROR);
    if (res.rc == VG_ENET)
        vg_log(VG_LOG_WARN, "state: a global write failed", "bucket", db->bucket, "reason", res.err, NULL);
    if (q->done)
        q->done(q->arg, &res);
}

static void *writer_main(void *arg)
{
    struct vg_state_global *g = arg;
    pthread_mutex_lock(&g->mu);
    for (;;) {
        while (!g->head && !g->stop)
            pthread_cond_wait(&g->more, &g->mu);
        struct vg__state_wreq *q = g->head;
        if (!q)
            break;
        g->head = q->next;
        if (!g->head)
            g->tail = &g->head;
        pthread_mutex_unlock(&g->mu);
        do_write(g, q);
        free(q);
        pthread_mutex_lock(&g->mu);
    }
    pthread_mutex_unlock(&g->mu);
    return NULL;
}

/* ---- the connection ------------------------------------------------------------------- */

static void on_disconnected(natsConnection *nc, void *arg)
{
    struct vg_state_global *g = arg;
    atomic_store(&g->connected, false);
}

static void on_reconnected(natsConnection *nc, void *arg)
{
    struct vg_state_global *g = arg;
    atomic_store(&g->connected, true);
    size_t n = atomic_load(&g->n_dbs);
    for (size_t i = 0; i < n; i++) {
        atomic_store(&g->dbs[i]->ready, false);
        atomic_store(&g->dbs[i]->need_target, true);
        atomic_store(&g->dbs[i]->recheck, true);
    }
}

/* libnats' last callback (in order after on_disconnected, on its own
 * thread, possibly after natsConnection_Close returned): destroy waits for
 * it before freeing g. */
static void on_closed(natsConnection *nc, void *arg)
{
    struct vg_state_global *g = arg;
    pthread_mutex_lock(&g->mu);
    g->closed = true;
    pthread_cond_broadcast(&g->more);
    pthread_mutex_unlock(&g->mu);
}

int vg_state_global_create(const struct vg_state_global_options *o, struct vg_state_global **out, char *err,
                           size_t errcap)
{
    struct vg_state_global *g = vg_xcalloc(1, sizeof(*g));
    g->propagation = o->propagation;
    natsStatus s = natsOptions_Create(&g->opts);
    if (s == NATS_OK)
        s = natsOptions_SetServers(g->opts, (const char **)o->urls, (int)o->n_urls);
    if (s == NATS_OK && o->name)
        s = natsOptions_SetName(g->opts, o->name);
    if (s == NATS_OK)
        s = natsOptions_SetTimeout(g->opts, 2000);
    if (s == NATS_OK)
        s = natsOptions_SetMaxReconnect(g->opts, -1);
    if (s == NATS_OK)
        s = natsOptions_SetReconnectWait(g->opts, 250);
    /* a write goes out from the writer thread itself instead of waking
     * libnats' flusher thread: one thread hop less per write, which on a
     * busy core cost the whole fan-out a scheduling delay of milliseconds
     * (bench/propagation.py); nothing is lost by not batching, since the
     * writer waits for each acknowledgement anyway */
    if (s == NATS_OK)
        s = natsOptions_SetSendAsap(g->opts, true);
    if (s == NATS_OK)
        s = natsOptions_SetDisconnectedCB(g->opts, on_disconnected, g);
    if (s == NATS_OK)
        s = natsOptions_SetReconnectedCB(g->opts, on_reconnected, g);
    if (s == NATS_OK)
        s = natsOptions_SetClosedCB(g->opts, on_closed, g);
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->more, NULL);
    if (s == NATS_OK)
        s = natsConnection_Connect(&g->nc, g->opts);
    jsOptions jo;
    if (s == NATS_OK)
        s = jsOptions_Init(&jo);
    if (s == NATS_OK) {
        /* how long a write waits for JetStream's acknowledgement: past it
         * the write is reported failed (its outcome unknown: a publish
         * buffered during an outage may still land after a reconnect) */
        jo.Wait = 2000;
        s = natsConnection_JetStream(&g->js, g->nc, &jo);
    }
    if (s != NATS_OK) {
        snprintf(err, errcap, "state: cannot connect to NATS JetStream: %s", nats_GetLastError(NULL));
        jsCtx_Destroy(g->js);
        if (g->nc) { /* connected, then failed: wait for its callbacks */
            natsConnection_Close(g->nc);
            pthread_mutex_lock(&g->mu);
            while (!g->closed)
                pthread_cond_wait(&g->more, &g->mu);
            pthread_mutex_unlock(&g->mu);
        }
        natsConnection_Destroy(g->nc);
        natsOptions_Destroy(g->opts);
        pthread_mutex_destroy(&g->mu);
        pthread_cond_destroy(&g->more);
        free(g);
        return VG_ENET;
    }
    atomic_store(&g->connected, true);
    pthread_mutex_init(&g->dbs_mu, NULL);
    g->tail = &g->head;
    VG_AZ(pthread_create(&g->writer, NULL, writer_main, g));
    *out = g;
    return 0;
}

/* After the connection closed: stopping a watcher then costs no round
 * trip (deleting its consumer would wait for a server that may be gone;
 * the server drops an ephemeral consumer on its own). */
static void gdb_destroy(struct vg_state_gdb *db)
{
    atomic_store(&db->stop, true);
    kvWatcher_Stop(db->w);
    pthread_join(db->watcher, NULL);
    kvWatcher_Destroy(db->w);
    kvStore_Destroy(db->kv);
    for (size_t i = 0; i < db->cap; i++)
        for (struct rentry *e = db->tab[i], *next; e; e = next) {
            next = e->next;
            free(e->val);
            free(e);
        }
    free(db->tab);
    pthread_rwlock_destroy(&db->lock);
    free(db);
}

void vg_state_global_destroy(struct vg_state_global *g)
{
    if (!g)
        return;
    pthread_mutex_lock(&g->mu);
    g->stop = true; /* queued writes still go out: they were accepted */
    pthread_cond_signal(&g->more);
    pthread_mutex_unlock(&g->mu);
    pthread_join(g->writer, NULL);
    for (size_t i = 0; i < g->n_dbs; i++)
        atomic_store(&g->dbs[i]->stop, true);
    natsConnection_Close(g->nc);
    pthread_mutex_lock(&g->mu);
    while (!g->closed)
        pthread_cond_wait(&g->more, &g->mu);
    pthread_mutex_unlock(&g->mu);
    for (size_t i = 0; i < g->n_dbs; i++)
        gdb_destroy(g->dbs[i]);
    jsCtx_Destroy(g->js);
    natsConnection_Destroy(g->nc);
    natsOptions_Destroy(g->opts);
    pthread_mutex_destroy(&g->mu);
    pthread_mutex_destroy(&g->dbs_mu);
    pthread_cond_destroy(&g->more);
    free(g);
}

int vg_state_global_db(struct vg_state_global *g, const char *app, struct vg_state_gdb **out, char *err, size_t errcap)
{
    size_t n = atomic_load(&g->n_dbs);
    for (size_t i = 0; i < n; i++)
        if (strcmp(g->dbs[i]->app, app) == 0) {
            *out = g->dbs[i];
            return 0;
        }
    if (n == MAX_APPS || strlen(app) > 63) {
        snprintf(err, errcap, "state: too many apps or an app name too long");
        return VG_ELIMIT;
    }
    struct vg_state_gdb *db = vg_xcalloc(1, sizeof(*db));
    db->g = g;
    snprintf(db->app, sizeof(db->app), "%s", app);
    snprintf(db->bucket, sizeof(db->bucket), "verge_%s", app);
    pthread_rwlock_init(&db->lock, NULL);
    natsStatus s = js_KeyValue(&db->kv, g->js, db->bucket);
    if (s == NATS_NOT_FOUND) {
        kvConfig cfg;
        kvConfig_Init(&cfg);
        cfg.Bucket = db->bucket;
        cfg.History = 1;
        cfg.MaxValueSize = (int32_t)(VG__STATE_HDR + VG_STATE_MAX_VALUE);
        s = js_CreateKeyValue(&db->kv, g->js, &cfg);
    }
    kvWatchOptions wo;
    if (s == NATS_OK)
        s = kvWatchOptions_Init(&wo);
    if (s == NATS_OK)
        s = kvStore_WatchAll(&db->w, db->kv, &wo);
    if (s != NATS_OK) {
        snprintf(err, errcap, "state: cannot open the bucket %s: %s", db->bucket, nats_GetLastError(NULL));
        kvStore_Destroy(db->kv);
        pthread_rwlock_destroy(&db->lock);
        free(db);
        return VG_ENET;
    }
    VG_AZ(pthread_create(&db->watcher, NULL, watcher_main, db));
    g->dbs[n] = db;
    atomic_store(&g->n_dbs, n + 1);
    *out = db;
    return 0;
}

bool vg_state_global_ready(struct vg_state_global *g)
{
    size_t n = atomic_load(&g->n_dbs);
    for (size_t i = 0; i < n; i++)
        if (!atomic_load(&g->dbs[i]->ready))
            return false;
    return true;
}

int vg_state_global_get(struct vg_state_gdb *db, const char *key, size_t klen, struct vg_state_value *v, char **mem,
                        uint64_t *rev)
{
    *mem = NULL;
    *rev = 0;
    if (!vg_state_key_valid(key, klen, NULL))
        return VG_EINVAL;
    uint8_t *val;
    size_t vlen;
    replica_read(db, key, klen, &val, &vlen, rev);
    struct vg__state_rec r;
    int rc = VG_ENOENT;
    if (val && vg__state_rec_decode(val, vlen, true, &r) && !(r.expires_ms && now_ms() >= r.expires_ms)) {
        vg__state_value_out(&r.v, v, mem);
        rc = 0;
    }
    free(val);
    count(db->g, VG_STATE_C_GET, rc == 0 ? VG_STATE_R_OK : VG_STATE_R_MISS);
    return rc;
}

int vg_state_global_write(struct vg_state_gdb *db, const struct vg_state_write *w, vg_state_done_fn done, void *arg)
{
    int rc = vg__state_write_check(w);
    if (rc != 0)
        return rc;
    struct vg_state_global *g = db->g;
    struct vg__state_wreq *q = vg__state_wreq_new(db, w, done, arg);
    pthread_mutex_lock(&g->mu);
    *g->tail = q;
    g->tail = &q->next;
    pthread_cond_signal(&g->more);
    pthread_mutex_unlock(&g->mu);
    return 0;
}

void vg_state_global_stats(struct vg_state_global *g, struct vg_state_global_stats *out)
{
    memset(out, 0, sizeof(*out));
    out->connected = atomic_load(&g->connected);
    out->applied = atomic_load(&g->applied);
    out->bad = atomic_load(&g->bad);
    size_t n = atomic_load(&g->n_dbs);
    for (size_t i = 0; i < n; i++) {
        pthread_rwlock_rdlock(&g->dbs[i]->lock);
        out->keys += g->dbs[i]->live;
        pthread_rwlock_unlock(&g->dbs[i]->lock);
    }
    for (int o = 0; o < VG_STATE_C_OPS; o++)
        for (int r = 0; r < VG_STATE_R_RESULTS; r++)
            out->counts[o][r] = atomic_load_explicit(&g->counts[o][r], memory_order_relaxed);
}
