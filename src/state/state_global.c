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
 *   (and stays ready): availability over freshness.
 * - A bucket that JetStream is too slow or too far to open when the app
 *   loads (a timeout, a disconnect) is opened by its watcher thread, which
 *   keeps trying: until then the replica is not ready (the node answers
 *   503) and writes fail with that reason. Giving up there would leave the
 *   node ready for good without the app's global state (a loaded machine
 *   did that within 2 s). Only a definite answer (no JetStream) gives up.
 * - Visibility acks cost nothing unless asked for: only a record carrying
 *   an ack request (await_visible >= 2) makes a watcher publish one, to
 *   the writer's inbox subject, and only while the record is younger than
 *   VG_STATE_VISIBLE_TIMEOUT_MAX (a node loading the bucket does not ack
 *   old writes). The writer counts distinct nodes per write id (not per
 *   revision: a fast node's ack can arrive before JetStream's
 *   acknowledgement tells the writer the revision) in a bounded table of
 *   waiters (MAX_WAITERS); a waiter ends at K nodes or at its deadline,
 *   whichever first, and its done runs exactly once. */
#include "state_int.h"

#include "obs/obs.h"

#include <nats/nats.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#define MAX_APPS 256
#define INCR_TRIES 16
#define MIN_BUCKETS 64
#define MAX_WAITERS 4096 /* await_visible writes waiting for acks, per node */
#define ACK_PREFIX "verge.kvack."
/* MaxValueSize: the largest record (a 64 KiB string with an ack request) */
#define MAX_RECORD (VG__STATE_HDR + VG_STATE_MAX_VALUE + VG__STATE_ACK_REQ)

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
    _Atomic uint64_t max_bytes; /* the bucket's bound (what was asked last) */
    size_t bytes;               /* under lock: the replica's memory (entries, keys, records) */
    pthread_t watcher;
    pthread_rwlock_t lock;
    struct rentry **tab; /* under lock */
    size_t cap, n, live;
    _Atomic bool ready, recheck, stop;
    _Atomic bool open;        /* kv and w are set (the watcher's, when the first try failed) */
    pthread_mutex_t open_mu;  /* a late open against a reload's new bound */
    _Atomic bool need_target; /* after a reconnect: the stream's last sequence is to be fetched */
    uint64_t target;          /* the watcher's: that sequence, to be reached */
    _Atomic uint64_t max_rev; /* the highest revision the watcher delivered */
};

/* A write with await_visible, until K nodes confirmed or its deadline. */
struct waiter {
    struct waiter *next;
    struct vg_state_gdb *db;
    uint64_t id;
    uint32_t want, have;
    uint64_t nodes[VG_STATE_MAX_VISIBLE]; /* inbox ids that confirmed, the writer's first */
    uint64_t start_us, reached_us;        /* the call; when have reached want */
    uint64_t deadline_ms;                 /* vg_now_ms clock */
    bool put_done;                        /* res is the write's outcome (rc 0) */
    struct vg_state_result res;
    vg_state_done_fn done;
    void *arg;
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
    struct vg_obs_histogram *propagation, *visible;
    uint64_t inbox;     /* this node's ack inbox id (random per process) */
    char inbox_hex[17]; /* its subject token */
    natsSubscription *ack_sub;
    pthread_t vis_thread; /* ends waiters at their deadline */
    pthread_mutex_t vis_mu;
    pthread_cond_t vis_cond; /* CLOCK_MONOTONIC: a waiter's put is done, or stop */
    struct waiter *waiters;  /* under vis_mu */
    size_t n_waiters;        /* under vis_mu */
    bool vis_stop;           /* under vis_mu */
    uint64_t next_id;        /* under vis_mu */
    _Atomic bool connected;
    bool closed; /* under mu: on_closed ran, libnats calls nothing of ours after it */
    _Atomic uint64_t applied, bad, acks_sent, acks_received, acks_bad, visible_timeouts;
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
        db->bytes += sizeof(*e) + klen;
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
        db->bytes = db->bytes - e->vlen + vlen;
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

/* ---- visibility: waiters and acks ------------------------------------------------------ */

static void waiter_unlink(struct vg_state_global *g, struct waiter *w)
{
    for (struct waiter **pp = &g->waiters; *pp; pp = &(*pp)->next)
        if (*pp == w) {
            *pp = w->next;
            g->n_waiters--;
            return;
        }
    VG_ASSERT(!"waiter not in the list");
}

/* Ends w (unlinked, vis_mu not held): done with how many confirmed. */
static void waiter_finish(struct vg_state_global *g, struct waiter *w)
{
    w->res.visible = w->have;
    w->res.visible_timeout = w->have < w->want;
    if (w->res.visible_timeout)
        atomic_fetch_add(&g->visible_timeouts, 1);
    else if (g->visible)
        vg_obs_histogram_observe_us(g->visible, w->reached_us - w->start_us);
    if (w->done)
        w->done(w->arg, &w->res);
    free(w);
}

/* Registers a waiter for a write about to be sent; NULL when MAX_WAITERS
 * are waiting already (the write then goes without an ack request). */
static struct waiter *waiter_add(struct vg_state_gdb *db, const struct vg__state_wreq *q)
{
    struct vg_state_global *g = db->g;
    struct waiter *w = NULL;
    pthread_mutex_lock(&g->vis_mu);
    if (g->n_waiters < MAX_WAITERS) {
        w = vg_xcalloc(1, sizeof(*w));
        w->db = db;
        w->id = ++g->next_id;
        w->want = q->w.await_visible;
        w->have = 1; /* the writer: its replica has it once the put is acknowledged */
        w->nodes[0] = g->inbox;
        w->start_us = vg_wall_us();
        w->deadline_ms = vg_now_ms() + q->w.visible_timeout_ms;
        w->done = q->done;
        w->arg = q->arg;
        w->next = g->waiters;
        g->waiters = w;
        g->n_waiters++;
    }
    pthread_mutex_unlock(&g->vis_mu);
    return w;
}

/* The write behind w is over: failed (ends w with res, no visibility) or
 * acknowledged (w waits on for acks unless it has them or its deadline
 * passed meanwhile). */
static void waiter_put_done(struct vg_state_global *g, struct waiter *w, const struct vg_state_result *res)
{
    pthread_mutex_lock(&g->vis_mu);
    w->res = *res;
    w->put_done = true;
    bool end = res->rc != 0 || w->have >= w->want || vg_now_ms() >= w->deadline_ms;
    if (end)
        waiter_unlink(g, w);
    else
        pthread_cond_signal(&g->vis_cond);
    pthread_mutex_unlock(&g->vis_mu);
    if (!end)
        return;
    if (res->rc != 0) { /* no visibility to report on a failed write */
        if (w->done)
            w->done(w->arg, res);
        free(w);
        return;
    }
    waiter_finish(g, w);
}

/* An ack from a node (a libnats thread): counted once per node. */
static void on_ack(natsConnection *nc, natsSubscription *sub, natsMsg *m, void *arg)
{
    struct vg_state_global *g = arg;
    struct vg__state_ack a;
    const char *subj = natsMsg_GetSubject(m);
    const char *app = subj + strlen(ACK_PREFIX);
    const char *dot = strchr(app, '.');
    if (!vg__state_ack_decode((const uint8_t *)natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m), &a) || !dot) {
        atomic_fetch_add(&g->acks_bad, 1);
        natsMsg_Destroy(m);
        return;
    }
    atomic_fetch_add(&g->acks_received, 1);
    struct waiter *done = NULL;
    pthread_mutex_lock(&g->vis_mu);
    struct waiter *w = g->waiters;
    while (w && w->id != a.id)
        w = w->next;
    /* an ack names its app in the subject: another app's cannot count */
    if (w && strlen(w->db->app) == (size_t)(dot - app) && memcmp(w->db->app, app, (size_t)(dot - app)) == 0) {
        bool seen = false;
        for (uint32_t i = 0; i < w->have && !seen; i++)
            seen = w->nodes[i] == a.node;
        if (!seen && w->have < w->want) {
            w->nodes[w->have++] = a.node;
            if (w->have == w->want)
                w->reached_us = vg_wall_us();
        }
        if (w->put_done && w->have >= w->want) {
            waiter_unlink(g, w);
            done = w;
        }
    }
    pthread_mutex_unlock(&g->vis_mu);
    natsMsg_Destroy(m);
    if (done)
        waiter_finish(g, done);
}

/* The deadline keeper: ends acknowledged writes whose acks did not all
 * come in time (a waiter whose put is still out ends when it returns). */
static void *vis_main(void *arg)
{
    struct vg_state_global *g = arg;
    pthread_mutex_lock(&g->vis_mu);
    while (!g->vis_stop) {
        uint64_t now = vg_now_ms(), next = UINT64_MAX;
        struct waiter *expired = NULL;
        for (struct waiter **pp = &g->waiters; *pp;) {
            struct waiter *w = *pp;
            if (w->put_done && now >= w->deadline_ms) {
                *pp = w->next;
                g->n_waiters--;
                w->next = expired;
                expired = w;
                continue;
            }
            if (w->put_done && w->deadline_ms < next)
                next = w->deadline_ms;
            pp = &w->next;
        }
        if (expired) {
            pthread_mutex_unlock(&g->vis_mu);
            while (expired) {
                struct waiter *w = expired;
                expired = w->next;
                waiter_finish(g, w);
            }
            pthread_mutex_lock(&g->vis_mu);
            continue;
        }
        if (next == UINT64_MAX) {
            pthread_cond_wait(&g->vis_cond, &g->vis_mu);
            continue;
        }
        /* vg_now_ms is CLOCK_MONOTONIC's, as vis_cond's */
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        uint64_t wait = next - now;
        ts.tv_sec += (time_t)(wait / 1000);
        ts.tv_nsec += (long)(wait % 1000) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&g->vis_cond, &g->vis_mu, &ts);
    }
    pthread_mutex_unlock(&g->vis_mu);
    return NULL;
}

/* After the writer and the acks stopped: the waiters left end as they
 * are (done runs once for every write). */
static void vis_stop(struct vg_state_global *g)
{
    pthread_mutex_lock(&g->vis_mu);
    g->vis_stop = true;
    pthread_cond_signal(&g->vis_cond);
    pthread_mutex_unlock(&g->vis_mu);
    pthread_join(g->vis_thread, NULL);
    while (g->waiters) {
        struct waiter *w = g->waiters;
        g->waiters = w->next;
        VG_ASSERT(w->put_done); /* the writer finished every write */
        waiter_finish(g, w);
    }
}

/* The watcher applied a record with an ack request: tell its writer,
 * unless it is this node (the writer counts itself) or the record is too
 * old for anyone to be waiting. */
static void send_ack(struct vg_state_gdb *db, const struct vg__state_rec *r, uint64_t rev)
{
    struct vg_state_global *g = db->g;
    uint64_t now = vg_wall_us();
    if (r->ackreq.inbox == g->inbox || now > r->written_us + (uint64_t)VG_STATE_VISIBLE_TIMEOUT_MAX * 1000 ||
        r->written_us > now + (uint64_t)VG_STATE_VISIBLE_TIMEOUT_MAX * 1000)
        return;
    char subject[160];
    snprintf(subject, sizeof(subject), ACK_PREFIX "%s.%016llx", db->app, (unsigned long long)r->ackreq.inbox);
    uint8_t buf[VG__STATE_ACK_LEN];
    struct vg__state_ack a = {.id = r->ackreq.id, .rev = rev, .node = g->inbox};
    vg__state_ack_encode(buf, &a);
    if (natsConnection_Publish(g->nc, subject, buf, sizeof(buf)) == NATS_OK)
        atomic_fetch_add(&g->acks_sent, 1);
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
    if (r.ack) /* applied, or a newer revision is here already: visible either way */
        send_ack(db, &r, rev);
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

/* The largest record the bucket takes: a whole record, unless the bucket
 * itself is smaller. */
static int32_t max_value(uint64_t max_bytes)
{
    return (int32_t)(max_bytes < MAX_RECORD ? max_bytes : MAX_RECORD);
}

/* Makes the bucket's stream refuse what is over max_bytes (DiscardNew: a
 * full bucket refuses new writes rather than dropping old keys), when it
 * is not so already (a bucket made by an older verge, by hand, or bound
 * differently by the app's previous version). */
static natsStatus bucket_bound(struct vg_state_gdb *db, uint64_t max_bytes)
{
    char stream[96];
    snprintf(stream, sizeof(stream), "KV_%s", db->bucket);
    jsStreamInfo *si = NULL, *upd = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_GetStreamInfo(&si, db->g->js, stream, NULL, &jerr);
    if (s != NATS_OK)
        return s;
    jsStreamConfig *c = si->Config;
    if (c->MaxBytes != (int64_t)max_bytes || c->MaxMsgSize != max_value(max_bytes) || c->Discard != js_DiscardNew) {
        c->MaxBytes = (int64_t)max_bytes;
        c->MaxMsgSize = max_value(max_bytes);
        c->Discard = js_DiscardNew;
        s = js_UpdateStream(&upd, db->g->js, c, NULL, &jerr);
        jsStreamInfo_Destroy(upd);
    }
    jsStreamInfo_Destroy(si);
    if (s == NATS_OK)
        db->max_bytes = max_bytes;
    return s;
}

/* Opens (or creates) the bucket, bounds it and starts watching it; on
 * failure nothing is left open. */
static natsStatus gdb_open(struct vg_state_gdb *db)
{
    uint64_t max_bytes = atomic_load(&db->max_bytes);
    natsStatus s = js_KeyValue(&db->kv, db->g->js, db->bucket);
    if (s == NATS_NOT_FOUND) {
        kvConfig cfg;
        kvConfig_Init(&cfg);
        cfg.Bucket = db->bucket;
        cfg.History = 1;
        cfg.MaxValueSize = max_value(max_bytes);
        cfg.MaxBytes = (int64_t)max_bytes;
        s = js_CreateKeyValue(&db->kv, db->g->js, &cfg);
    }
    if (s == NATS_OK)
        s = bucket_bound(db, max_bytes);
    kvWatchOptions wo;
    if (s == NATS_OK)
        s = kvWatchOptions_Init(&wo);
    if (s == NATS_OK)
        s = kvStore_WatchAll(&db->w, db->kv, &wo);
    if (s != NATS_OK) {
        kvStore_Destroy(db->kv);
        db->kv = NULL;
    }
    return s;
}

/* A failure that trying again may mend: JetStream slow or out of reach. */
static bool transient(natsStatus s)
{
    return s == NATS_TIMEOUT || s == NATS_CONNECTION_DISCONNECTED || s == NATS_NOT_YET_CONNECTED ||
           s == NATS_NO_SERVER || s == NATS_IO_ERROR || s == NATS_STALE_CONNECTION || s == NATS_SLOW_CONSUMER;
}

static const char *open_error(natsStatus s)
{
    const char *e = nats_GetLastError(NULL);
    return e && *e ? e : natsStatus_GetText(s);
}

/* The watcher's first job when the bucket did not open at once: tries
 * again, a little slower each time (up to 2 s), until it opens or the
 * node stops. False when it stopped. */
static bool open_late(struct vg_state_gdb *db)
{
    unsigned wait_ms = 100;
    while (!atomic_load(&db->open)) {
        for (unsigned slept = 0; slept < wait_ms; slept += 50) { /* stop is seen within 50 ms */
            if (atomic_load(&db->stop))
                return false;
            struct timespec ts = {0, 50 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
        pthread_mutex_lock(&db->open_mu); /* max_bytes holds still meanwhile */
        natsStatus s = gdb_open(db);
        if (s == NATS_OK)
            atomic_store(&db->open, true);
        pthread_mutex_unlock(&db->open_mu);
        if (s == NATS_OK) {
            vg_log(VG_LOG_INFO, "state: bucket open", "bucket", db->bucket, NULL);
        } else {
            wait_ms = wait_ms < 1000 ? 2 * wait_ms : 2000;
        }
    }
    return true;
}

static void *watcher_main(void *arg)
{
    struct vg_state_gdb *db = arg;
    if (!open_late(db))
        return NULL;
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

/* Encodes v as a record with an expiry, now as its write time and an
 * ack request (or NULL). */
static uint8_t *encode(const struct vg_state_value *v, uint64_t expires_ms, const struct vg__state_ackreq *ack,
                       size_t *len)
{
    *len = vg__state_rec_size(v, 0, ack != NULL);
    uint8_t *p = vg_xmalloc(*len);
    vg__state_rec_encode(p, v, expires_ms, vg_wall_us(), NULL, 0, ack);
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

/* A write that JetStream refused for the bucket's bounds (MaxBytes,
 * MaxValueSize): the server's words for it. */
static bool is_full(const char *e)
{
    return e && (strstr(e, "maximum bytes") || strstr(e, "message size exceeds") || strstr(e, "resource limits"));
}

/* A write that failed for want of JetStream, or for room in the bucket
 * (the reason is the writer thread's, valid during the done callback). */
static void net_fail(struct vg_state_result *res, natsStatus s)
{
    static __thread char why[300];
    const char *e = nats_GetLastError(NULL);
    if (is_full(e)) {
        snprintf(why, sizeof(why), "global store full (%s): the app's limits.kv_global_size is reached", e);
        res->rc = VG_ELIMIT;
        res->err = why;
        return;
    }
    snprintf(why, sizeof(why), "JetStream did not acknowledge the write (%s%s%s)", natsStatus_GetText(s),
             e && *e ? ": " : "", e && *e ? e : "");
    res->rc = VG_ENET;
    res->err = why;
}

static void do_set(struct vg_state_gdb *db, const struct vg_state_write *w, const struct vg__state_ackreq *ack,
                   struct vg_state_result *res)
{
    size_t len;
    uint8_t *rec = encode(&w->value, w->ttl_ms ? now_ms() + w->ttl_ms : 0, ack, &len);
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

static void do_incr(struct vg_state_gdb *db, const struct vg_state_write *w, const struct vg__state_ackreq *ack,
                    struct vg_state_result *res)
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
        uint8_t *rec = encode(&res->value, exp, ack, &len);
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
    int op = q->w.op == VG_STATE_DELETE ? VG_STATE_C_DELETE
             : q->w.op == VG_STATE_INCR ? VG_STATE_C_INCR
                                        : VG_STATE_C_SET;
    if (!atomic_load(&db->open)) { /* its watcher is still trying to open it */
        res.rc = VG_ENET;
        res.err = "the app's global state is not open yet: JetStream has not answered; the node keeps trying";
        count(g, op, VG_STATE_R_ERROR);
        if (q->done)
            q->done(q->arg, &res);
        return;
    }
    /* await_visible: the waiter takes over done (after the acks) */
    struct waiter *wt = NULL;
    struct vg__state_ackreq ack;
    if (q->w.await_visible >= 2 && q->w.op != VG_STATE_DELETE) {
        wt = waiter_add(db, q);
        ack = (struct vg__state_ackreq){.inbox = g->inbox, .id = wt ? wt->id : 0};
    }
    switch (q->w.op) {
    case VG_STATE_SET:
        do_set(db, &q->w, wt ? &ack : NULL, &res);
        break;
    case VG_STATE_DELETE: {
        natsStatus s = kvStore_Delete(db->kv, q->w.key);
        if (s != NATS_OK)
            net_fail(&res, s);
        else
            replica_apply(db, q->w.key, q->w.klen, 0, NULL, 0, true);
        break;
    }
    case VG_STATE_INCR:
        do_incr(db, &q->w, wt ? &ack : NULL, &res);
        break;
    }
    count(g, op, res.rc == 0 ? VG_STATE_R_OK : res.rc == VG_EEXIST ? VG_STATE_R_CONFLICT : VG_STATE_R_ERROR);
    if (res.rc == VG_ENET || res.rc == VG_ELIMIT)
        vg_log(VG_LOG_WARN, "state: a global write failed", "bucket", db->bucket, "reason", res.err, NULL);
    if (wt) {
        waiter_put_done(g, wt, &res);
        return;
    }
    if (q->w.await_visible >= 2 && q->w.op != VG_STATE_DELETE && res.rc == 0) {
        res.visible = 1; /* no room for one more waiter: the writer's own copy only */
        res.visible_timeout = true;
        atomic_fetch_add(&g->visible_timeouts, 1);
    } else if (q->w.await_visible && res.rc == 0) {
        res.visible = 1;
    }
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
    g->visible = o->visible;
    /* the inbox only has to differ between the nodes of a cluster */
    if (getrandom(&g->inbox, sizeof(g->inbox), 0) != (ssize_t)sizeof(g->inbox))
        g->inbox = vg_wall_us() ^ ((uint64_t)getpid() << 32);
    snprintf(g->inbox_hex, sizeof(g->inbox_hex), "%016llx", (unsigned long long)g->inbox);
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
    char ack_subject[64];
    snprintf(ack_subject, sizeof(ack_subject), ACK_PREFIX "*.%s", g->inbox_hex);
    if (s == NATS_OK)
        s = natsConnection_Subscribe(&g->ack_sub, g->nc, ack_subject, on_ack, g);
    if (s != NATS_OK) {
        snprintf(err, errcap, "state: cannot connect to NATS JetStream: %s", nats_GetLastError(NULL));
        natsSubscription_Destroy(g->ack_sub);
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
    pthread_mutex_init(&g->vis_mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&g->vis_cond, &ca);
    pthread_condattr_destroy(&ca);
    g->tail = &g->head;
    VG_AZ(pthread_create(&g->writer, NULL, writer_main, g));
    VG_AZ(pthread_create(&g->vis_thread, NULL, vis_main, g));
    *out = g;
    return 0;
}

/* After the connection closed: stopping a watcher then costs no round
 * trip (deleting its consumer would wait for a server that may be gone;
 * the server drops an ephemeral consumer on its own). */
static void gdb_destroy(struct vg_state_gdb *db)
{
    atomic_store(&db->stop, true);
    if (atomic_load(&db->open)) /* else its watcher is trying to open it, and sees stop */
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
    pthread_mutex_destroy(&db->open_mu);
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
    /* no ack callback runs past the drain: then the waiters can end */
    if (natsSubscription_Drain(g->ack_sub) == NATS_OK)
        natsSubscription_WaitForDrainCompletion(g->ack_sub, 1000);
    vis_stop(g);
    for (size_t i = 0; i < g->n_dbs; i++)
        atomic_store(&g->dbs[i]->stop, true);
    natsConnection_Close(g->nc);
    pthread_mutex_lock(&g->mu);
    while (!g->closed)
        pthread_cond_wait(&g->more, &g->mu);
    pthread_mutex_unlock(&g->mu);
    natsSubscription_Destroy(g->ack_sub);
    for (size_t i = 0; i < g->n_dbs; i++)
        gdb_destroy(g->dbs[i]);
    jsCtx_Destroy(g->js);
    natsConnection_Destroy(g->nc);
    natsOptions_Destroy(g->opts);
    pthread_mutex_destroy(&g->mu);
    pthread_mutex_destroy(&g->dbs_mu);
    pthread_cond_destroy(&g->more);
    pthread_mutex_destroy(&g->vis_mu);
    pthread_cond_destroy(&g->vis_cond);
    free(g);
}

int vg_state_global_db(struct vg_state_global *g, const char *app, uint64_t max_bytes, struct vg_state_gdb **out,
                       char *err, size_t errcap)
{
    if (!max_bytes)
        max_bytes = VG_STATE_GLOBAL_BYTES_DEFAULT;
    size_t n = atomic_load(&g->n_dbs);
    for (size_t i = 0; i < n; i++)
        if (strcmp(g->dbs[i]->app, app) == 0) {
            struct vg_state_gdb *db = g->dbs[i];
            /* a reload with another bound: the stream follows the manifest
             * (a bucket not open yet takes the bound when it opens) */
            pthread_mutex_lock(&db->open_mu);
            if (!atomic_load(&db->open))
                atomic_store(&db->max_bytes, max_bytes);
            else if (db->max_bytes != max_bytes && bucket_bound(db, max_bytes) != NATS_OK)
                vg_log(VG_LOG_WARN, "state: cannot change the bound of a global bucket", "bucket", db->bucket, "reason",
                       nats_GetLastError(NULL), NULL);
            pthread_mutex_unlock(&db->open_mu);
            *out = db;
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
    pthread_mutex_init(&db->open_mu, NULL);
    atomic_store(&db->max_bytes, max_bytes);
    natsStatus s = gdb_open(db);
    if (s != NATS_OK && !transient(s)) {
        snprintf(err, errcap, "state: cannot open the bucket %s: %s", db->bucket, open_error(s));
        pthread_mutex_destroy(&db->open_mu);
        pthread_rwlock_destroy(&db->lock);
        free(db);
        return VG_ENET;
    }
    if (s == NATS_OK)
        atomic_store(&db->open, true);
    else
        vg_log(VG_LOG_WARN, "state: cannot open the bucket yet; trying again (the node is not ready until it opens)",
               "bucket", db->bucket, "reason", open_error(s), NULL);
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
    out->acks_sent = atomic_load(&g->acks_sent);
    out->acks_received = atomic_load(&g->acks_received);
    out->acks_bad = atomic_load(&g->acks_bad);
    out->visible_timeouts = atomic_load(&g->visible_timeouts);
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

size_t vg_state_global_replicas(struct vg_state_global *g, struct vg_state_replica_stat *out, size_t max)
{
    size_t n = atomic_load(&g->n_dbs);
    for (size_t i = 0; i < n && i < max; i++) {
        struct vg_state_gdb *db = g->dbs[i];
        pthread_rwlock_rdlock(&db->lock);
        out[i] = (struct vg_state_replica_stat){.app = db->app, .bytes = db->bytes, .max_bytes = db->max_bytes};
        pthread_rwlock_unlock(&db->lock);
    }
    return n;
}
