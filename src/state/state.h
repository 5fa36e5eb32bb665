/* state: key-value state for apps, behind verge.kv.
 *
 *   local   persistent on one node: one LMDB environment under the node's
 *           --state-dir, one named database per app (an app can never
 *           reach another app's keys), written by one writer thread of its
 *           own (group commit), read by anyone with a read transaction;
 *   global  every node running the app: one JetStream KV bucket per app
 *           ("verge_<app>") on the node's NATS servers; each node keeps an
 *           in-memory replica of the bucket fed by a watcher thread, so a
 *           read never leaves the node; writes go to JetStream from a
 *           writer thread (acknowledged) and are applied to the writer's
 *           own replica at once (read-your-writes).
 *
 * Reads are synchronous and cheap (any thread). Writes are asynchronous:
 * vg_state_*_write copies what it needs, queues it, and calls done later
 * on a state thread (never inside the call) — an event loop must hand the
 * result back to itself. See docs/decisions.md, "State". */
#ifndef VG_STATE_H
#define VG_STATE_H

#include "base/base.h"

struct vg_obs_histogram;

#define VG_STATE_MAX_KEY 1024          /* bytes */
#define VG_STATE_MAX_VALUE (64u << 10) /* bytes of a string value */

enum vg_state_type {
    VG_STATE_STRING = 1,
    VG_STATE_INTEGER, /* Lua integer */
    VG_STATE_NUMBER,  /* Lua float */
    VG_STATE_BOOLEAN,
};

struct vg_state_value {
    enum vg_state_type type;
    union {
        struct {
            const char *ptr; /* bytes, not NUL-terminated */
            size_t len;
        } str;
        int64_t i;
        double n;
        bool b;
    };
};

/* Lua's arithmetic on two numbers (integer or float): integers wrap
 * around, anything with a float is a float. */
struct vg_state_value vg_state_value_add(const struct vg_state_value *a, const struct vg_state_value *b);

/* Whether key is a valid key for both scopes: 1..VG_STATE_MAX_KEY bytes
 * of A-Z a-z 0-9 - _ / = . (NATS KV's key alphabet), not starting or
 * ending with '.', no "..". On false *why (when why is given) says what is
 * wrong, as a static string. */
bool vg_state_key_valid(const char *key, size_t len, const char **why);

enum vg_state_op {
    VG_STATE_SET,
    VG_STATE_DELETE,
    VG_STATE_INCR,
};

/* One write. vg_state_*_write copies key and a string value. */
struct vg_state_write {
    enum vg_state_op op;
    const char *key;
    size_t klen;
    struct vg_state_value value; /* SET: the value; INCR: the delta (INTEGER or NUMBER) */
    struct vg_state_value init;  /* INCR: a missing key starts here (type 0: integer 0) */
    uint64_t ttl_ms;             /* SET, and INCR of a missing key: 0 = no expiry */
    bool cas;                    /* global SET only: compare-and-set on rev */
    uint64_t rev;                /* cas: the revision the key must have (0: it must not exist) */
    uint32_t await_visible;      /* global SET/INCR: done waits until this many nodes (the writer
                                    included) applied the write, or visible_timeout_ms; 0/1: no wait */
    uint32_t visible_timeout_ms; /* from the call, 1..VG_STATE_VISIBLE_TIMEOUT_MAX */
};

#define VG_STATE_MAX_VISIBLE 64                   /* await_visible at most */
#define VG_STATE_VISIBLE_TIMEOUT_MAX 60000        /* ms; nodes ack writes no older than this */
#define VG_STATE_GLOBAL_BYTES_DEFAULT (64u << 20) /* a bucket's MaxBytes */

/* What a write did. rc: 0; VG_EEXIST (cas: the revision moved; for INCR
 * too many conflicting writers); VG_EINVAL (INCR: the value is not a
 * number; unchanged); VG_EIO (LMDB) / VG_ENET (JetStream) / VG_ELIMIT
 * (store full). err: a reason for people. value: INCR's new value. rev:
 * global, the key's new revision. visible: with await_visible, the nodes
 * (the writer included) that confirmed they applied it, and
 * visible_timeout when that is fewer than asked (rc is still 0: the
 * write itself is acknowledged). Valid during the callback only. */
struct vg_state_result {
    int rc;
    const char *err;
    struct vg_state_value value;
    uint64_t rev;
    uint32_t visible;
    bool visible_timeout;
};

/* Runs on a state thread, once per write; must not block for long. */
typedef void (*vg_state_done_fn)(void *arg, const struct vg_state_result *r);

/* Operation counters by scope, op and result, for metrics. */
enum { VG_STATE_SCOPE_LOCAL, VG_STATE_SCOPE_GLOBAL, VG_STATE_SCOPES };
enum { VG_STATE_C_GET, VG_STATE_C_SET, VG_STATE_C_DELETE, VG_STATE_C_INCR, VG_STATE_C_OPS };
enum { VG_STATE_R_OK, VG_STATE_R_MISS, VG_STATE_R_CONFLICT, VG_STATE_R_ERROR, VG_STATE_R_RESULTS };
extern const char *const VG_STATE_SCOPE_NAMES[VG_STATE_SCOPES];
extern const char *const VG_STATE_OP_NAMES[VG_STATE_C_OPS];
extern const char *const VG_STATE_RESULT_NAMES[VG_STATE_R_RESULTS];

/* ---- local: LMDB, per node --------------------------------------------------------- */

struct vg_state_local;
struct vg_state_db; /* one app's database */

/* Opens (creating it) the store in dir; map_bytes bounds it (0: 1 GiB).
 * The caller owns the result. VG_EIO with the reason in err. */
int vg_state_local_open(const char *dir, size_t map_bytes, struct vg_state_local **out, char *err,
                        size_t errcap) VG_MUST_CHECK;
/* Finishes the queued writes (their done callbacks run), then closes. */
void vg_state_local_close(struct vg_state_local *s);

/* app's database (created on first use; the same handle every time,
 * valid until close). Main thread: not concurrently with itself. */
int vg_state_local_db(struct vg_state_local *s, const char *app, struct vg_state_db **out) VG_MUST_CHECK;

/* Reads key: 0 and *v (a string points into *mem, malloc'd, the caller's
 * to free; NULL for other types); VG_ENOENT when absent or expired (an
 * expired record is removed later by the writer); VG_EINVAL bad key;
 * VG_EIO. Any thread. */
int vg_state_local_get(struct vg_state_db *db, const char *key, size_t klen, struct vg_state_value *v,
                       char **mem) VG_MUST_CHECK;

/* Queues w; done(arg, result) runs on the writer thread after the write
 * committed (or failed). 0, or VG_EINVAL (bad key) / VG_ELIMIT (string
 * longer than VG_STATE_MAX_VALUE) at once, with done not called. */
int vg_state_local_write(struct vg_state_db *db, const struct vg_state_write *w, vg_state_done_fn done,
                         void *arg) VG_MUST_CHECK;

/* counts[scope local][op][result] */
void vg_state_local_counts(struct vg_state_local *s, uint64_t out[VG_STATE_C_OPS][VG_STATE_R_RESULTS]);

/* ---- global: JetStream KV + a replica per node ------------------------------------- */

struct vg_state_global;
struct vg_state_gdb; /* one app's bucket and replica */

struct vg_state_global_options {
    const char *const *urls; /* nats://host:port, several for a cluster */
    size_t n_urls;
    const char *name;                     /* the connection's name (connz) */
    struct vg_obs_histogram *propagation; /* writer's clock -> applied here, or NULL */
    struct vg_obs_histogram *visible;     /* await_visible: the call -> K confirmations, or NULL */
};

/* Connects (its own NATS connection, reconnecting forever). VG_ENET with
 * the reason in err. The caller owns the result. */
int vg_state_global_create(const struct vg_state_global_options *o, struct vg_state_global **out, char *err,
                           size_t errcap) VG_MUST_CHECK;
/* Lets the writer finish the queued writes (done runs for each), stops
 * the watchers, then closes. */
void vg_state_global_destroy(struct vg_state_global *g);

/* app's bucket, created on JetStream if missing, and its replica, loaded
 * by a watcher thread started here (blocking: the main thread at start-up
 * or reload). max_bytes (0: VG_STATE_GLOBAL_BYTES_DEFAULT) bounds the
 * bucket, and so every node's replica: JetStream refuses writes past it
 * (VG_ELIMIT, "global store full"); an existing bucket with another bound
 * is updated to this one. When JetStream does not answer in time (or the
 * connection is down), the db is returned all the same and its watcher
 * keeps trying to open it: not ready until then, writes failing with that
 * reason. VG_ENET with the reason in err when JetStream answered no (not
 * enabled, say). */
int vg_state_global_db(struct vg_state_global *g, const char *app, uint64_t max_bytes, struct vg_state_gdb **out,
                       char *err, size_t errcap) VG_MUST_CHECK;

/* Whether every bucket's replica has loaded what JetStream held when its
 * watcher started (and caught up again after a reconnect). */
bool vg_state_global_ready(struct vg_state_global *g);

/* Reads key from the replica: as vg_state_local_get, plus *rev. */
int vg_state_global_get(struct vg_state_gdb *db, const char *key, size_t klen, struct vg_state_value *v, char **mem,
                        uint64_t *rev) VG_MUST_CHECK;

/* As vg_state_local_write, to JetStream (done after the acknowledgement,
 * with the replica updated). */
int vg_state_global_write(struct vg_state_gdb *db, const struct vg_state_write *w, vg_state_done_fn done,
                          void *arg) VG_MUST_CHECK;

struct vg_state_global_stats {
    bool connected;
    uint64_t keys;    /* keys in every replica (not deleted; expired ones until overwritten) */
    uint64_t applied; /* watcher entries applied */
    uint64_t bad;     /* watcher entries refused (malformed) */
    uint64_t acks_sent, acks_received, acks_bad;
    uint64_t visible_timeouts; /* await_visible writes that ended short of K */
    uint64_t counts[VG_STATE_C_OPS][VG_STATE_R_RESULTS];
};
void vg_state_global_stats(struct vg_state_global *g, struct vg_state_global_stats *out);

/* One replica's size: its app, the bytes it holds (keys, records and
 * entry overhead: what the bucket's bound keeps in check) and its bound. */
struct vg_state_replica_stat {
    const char *app; /* valid while g is */
    uint64_t bytes, max_bytes;
};
/* Fills up to max entries; returns how many replicas there are. */
size_t vg_state_global_replicas(struct vg_state_global *g, struct vg_state_replica_stat *out, size_t max);

#endif
