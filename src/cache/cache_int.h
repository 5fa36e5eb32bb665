/* Internals shared by the cache module's files and their unit tests:
 * header and list helpers, a pool-backed byte builder and the field
 * stripping that qualified private= / no-cache= directives require (the
 * policy and key layers); objects, shards, the disk tier (the store).
 * Nothing here is visible outside src/cache. */
#ifndef VG_CACHE_INT_H
#define VG_CACHE_INT_H

#include "cache/cache.h"

/* A growing byte string in pool memory. Growth reallocates inside the pool
 * (the old block stays until the pool is cleared), so the result is only
 * valid as long as the pool. */
struct vg__cache_buf {
    h2o_mem_pool_t *pool;
    char *p;
    size_t len, cap;
};

void vg__cache_buf_init(struct vg__cache_buf *b, h2o_mem_pool_t *pool, size_t cap);
void vg__cache_buf_add(struct vg__cache_buf *b, const void *p, size_t len);
void vg__cache_buf_addc(struct vg__cache_buf *b, char c);
/* Appends s with '%' and control bytes (and `extra`, when not NUL)
 * percent-encoded as %XX, so the result never contains '\n' and can be
 * decoded unambiguously. */
void vg__cache_buf_add_escaped(struct vg__cache_buf *b, const char *s, size_t len, char extra);
h2o_iovec_t vg__cache_buf_iov(const struct vg__cache_buf *b);

/* Header name comparison, case-insensitive (lc must be lower case). */
bool vg__cache_name_is(const h2o_header_t *h, const char *lc);
/* Index of the next header named lc after cursor (-1 to start), or -1. */
ssize_t vg__cache_find(const h2o_headers_t *hs, const char *lc, ssize_t cursor);

/* One element of a comma-separated list (RFC 9110 5.6.1), honouring
 * quoted strings (a comma inside quotes does not split). Skips empty
 * elements; trims OWS. Returns false at the end of the list. */
bool vg__cache_list_next(const char **p, const char *end, h2o_iovec_t *elem);
h2o_iovec_t vg__cache_trim(const char *s, size_t len);

/* RFC 9111 5.2.2.4 / 5.2.2.7: fields named by no-cache="..." and
 * private="..." in a response must not be served from a shared cache
 * without revalidation; verge never revalidates single fields, so the
 * caller removes them before storing. Returns res without those fields
 * (res itself, copied into pool memory, when nothing is named). */
h2o_headers_t vg__cache_strip_qualified(h2o_mem_pool_t *pool, const h2o_headers_t *res);
/* Whether the response's qualified no-cache/private directives name
 * field lc (lower case). */
bool vg__cache_qualified_names(const h2o_headers_t *res, const char *lc);

#include <pthread.h>
#include <stdatomic.h>

/* ---- objects ---------------------------------------------------------------
 *
 * One allocation per object: this fixed header (84 bytes) followed by
 *   key | vary names | vary key | headers | tags | body
 * headers: n_headers times { varint name_len, varint value_len, name, value }
 *          (LEB128: one byte each for the usual short names and values)
 * tags:    { u8 len, bytes } repeated, tags_len bytes in all.
 * The meta is kept compact (times as 32-bit deltas from response_time,
 * clamped: 68 years either way) and handed out by copy: a full struct
 * vg_cache_meta is 72 bytes, more than half of the overhead budget.
 *
 * While an object is being built (VG__CACHE_OBJ_BUILDING) its body lives in
 * u.build; vg_cache_insert moves it in place behind the other data so a
 * published object is one block. */
enum {
    VG__CACHE_OBJ_STALE = 1u << 0,    /* soft-purged: the next use revalidates */
    VG__CACHE_OBJ_PURGED = 1u << 1,   /* hard-purged: the disk writer skips it */
    VG__CACHE_OBJ_ON_DISK = 1u << 2,  /* the disk tier holds this very object */
    VG__CACHE_OBJ_BUILDING = 1u << 3, /* body still in u.build */
    VG__CACHE_OBJ_PUBLISHED = 1u << 4,
};

enum { VG__CACHE_Q_NONE, VG__CACHE_Q_SMALL, VG__CACHE_Q_MAIN };

struct vg_cache_obj {
    union {
        struct {
            struct vg_cache_obj *prev, *next; /* eviction queue; shard lock */
        } q;
        struct {
            char *buf; /* body while built; owned */
            size_t cap;
        } build;
    } u;
    int64_t response_time;
    _Atomic uint32_t refs;
    uint32_t hash;                           /* of the whole key: table slots and the ghost set */
    int32_t req_delta, date_delta, lm_delta; /* relative to response_time */
    int32_t lifetime, swr, sie;
    uint32_t age;
    uint32_t hdr_len, body_len;
    uint16_t status, key_len, vn_len, vk_len, n_headers, tags_len;
    uint8_t meta_flags;    /* VG_CACHE_META_* (five defined) */
    _Atomic uint8_t flags; /* VG__CACHE_OBJ_* */
    _Atomic uint8_t freq;  /* S3-FIFO hits since (re)queued, 0..3; no lock needed */
    uint8_t queue;         /* VG__CACHE_Q_*; shard lock */
    char data[];
};

#define VG__CACHE_OBJ_MAX_FIELD 65535u /* key, vary, one header name or value */

static inline const char *vg__cache_obj_key(const struct vg_cache_obj *o)
{
    return o->data;
}
static inline const char *vg__cache_obj_vn(const struct vg_cache_obj *o)
{
    return o->data + o->key_len;
}
static inline const char *vg__cache_obj_vk(const struct vg_cache_obj *o)
{
    return o->data + o->key_len + o->vn_len;
}
static inline const char *vg__cache_obj_hdrs(const struct vg_cache_obj *o)
{
    return o->data + o->key_len + o->vn_len + o->vk_len;
}
static inline const char *vg__cache_obj_tags(const struct vg_cache_obj *o)
{
    return vg__cache_obj_hdrs(o) + o->hdr_len;
}
/* Bytes of data[] before the body. */
static inline size_t vg__cache_obj_head_len(const struct vg_cache_obj *o)
{
    return (size_t)o->key_len + o->vn_len + o->vk_len + o->hdr_len + o->tags_len;
}

/* When a lookup stops returning o: lifetime + max(swr, sie) + grace past
 * its current age of 0 (RFC 9111 4.2.3, computed from the meta). */
#define VG__CACHE_GRACE 60
/* The latest time an HTTP-date can say (9999-12-31 23:59:59): what the
 * cache keeps of a time is in [0, this], so that sums with its 32-bit
 * deltas never overflow. */
#define VG__CACHE_TIME_MAX 253402300799LL
int64_t vg__cache_obj_useless_at(const struct vg_cache_obj *o);
/* What o is charged against the memory budget: its block as malloc sees it. */
size_t vg__cache_obj_charge(const struct vg_cache_obj *o);
/* The published form of a built object (one block); consumes o's reference. */
struct vg_cache_obj *vg__cache_obj_finish(struct vg_cache_obj *o);
bool vg__cache_obj_has_tag(const struct vg_cache_obj *o, h2o_iovec_t tag);
bool vg__cache_obj_same_variant(const struct vg_cache_obj *a, const struct vg_cache_obj *b);

/* Disk records: version byte, fixed fields, data[] as above, CRC32 of all
 * that precedes it. Little-endian. */
#define VG__CACHE_REC_VERSION 1
#define VG__CACHE_REC_HEAD 68
size_t vg__cache_rec_size(const struct vg_cache_obj *o);
void vg__cache_rec_write(const struct vg_cache_obj *o, uint64_t seq, uint8_t *out);
/* Checks version, lengths and CRC; on success a new published object
 * (refcount 1, the caller's) and its sequence number. */
int vg__cache_rec_parse(const void *rec, size_t len, struct vg_cache_obj **out, uint64_t *seq) VG_MUST_CHECK;
/* Sets a record's flags byte (soft purge) and fixes its CRC. */
void vg__cache_rec_set_flags(uint8_t *rec, size_t len, uint8_t flags);

/* Of the candidates (all of one key), the most recent whose vary key
 * matches the request; NULL when none. Computes vary keys (no lock held). */
struct vg_cache_obj *vg__cache_choose(struct vg_cache_obj **cands, size_t n, const h2o_headers_t *req_headers);
#define VG__CACHE_MAX_VARIANTS 8

/* Keyed 64-bit hash (SipHash-2-4): keys come from clients. */
uint64_t vg__cache_hash(const uint8_t seed[16], const void *p, size_t n);

/* ---- the memory tier ---------------------------------------------------------- */

enum vg__cache_policy { VG__CACHE_S3FIFO, VG__CACHE_LRU /* the simulator's baseline */ };

struct vg__cache_opts {
    unsigned n_shards; /* power of two; 0 = chosen from mem_bytes */
    size_t disk_queue; /* writer queue capacity; 0 = default */
    enum vg__cache_policy policy;
};

struct vg__cache_queue {
    struct vg_cache_obj *head, *tail; /* head is evicted first */
    size_t bytes, count;
};

struct vg__cache_flight; /* cache_coalesce.c */

struct vg__cache_shard {
    pthread_mutex_t lock;
    uintptr_t *slots; /* object pointer | 3 bits of its hash; linear probing */
    uint32_t cap, count;
    uint16_t *ghost; /* S3-FIFO ghost: fingerprints of hashes evicted from small */
    uint32_t ghost_mask;
    struct vg__cache_queue small, main;
    size_t bytes, budget; /* objects' charges + the slot and ghost arrays */
    struct vg__cache_flight *flights;
    _Atomic uint64_t hits, misses, inserts, evictions, purged, disk_hits;
} __attribute__((aligned(64)));

struct vg__cache_disk; /* cache_disk.c */

struct vg_cache {
    unsigned n_shards;
    enum vg__cache_policy policy;
    uint8_t seed[16];
    struct vg__cache_disk *disk; /* NULL: memory only */
    struct vg__cache_shard *shards;
};

int vg__cache_create_ex(const struct vg_cache_config *cfg, const struct vg__cache_opts *opts,
                        struct vg_cache **out) VG_MUST_CHECK;
struct vg__cache_shard *vg__cache_shard_of(struct vg_cache *c, const char *key, size_t len);
/* Unlinks o from its shard (table and queue, lock held) and returns it with
 * the table's reference, which the caller releases after unlocking. */
struct vg_cache_obj *vg__cache_unlink(struct vg__cache_shard *s, struct vg_cache_obj *o);
/* Inserts an object that came from the disk tier (not written back). */
void vg__cache_promote(struct vg_cache *c, struct vg_cache_obj *o);

/* ---- the disk tier ---------------------------------------------------------------- */

struct vg__cache_disk_stats {
    uint64_t objects, bytes, corrupt, dropped, writes;
};
int vg__cache_disk_open(const char *path, size_t bytes, size_t queue_cap, struct vg__cache_disk **out) VG_MUST_CHECK;
/* Drains the writer queue, syncs and closes. */
void vg__cache_disk_close(struct vg__cache_disk *d);
/* Queues o for writing (takes a new reference); false when the queue is
 * full (counted as dropped). Never blocks on the disk. */
bool vg__cache_disk_enqueue(struct vg__cache_disk *d, struct vg_cache_obj *o);
/* Variants of key on disk, matching as vg_cache_lookup does. */
struct vg_cache_obj *vg__cache_disk_lookup(struct vg__cache_disk *d, h2o_iovec_t key, const h2o_headers_t *req_headers,
                                           int64_t now, bool *key_known);
/* Matching records purged (or marked stale); *overlap counts those that
 * the memory tier also held (objects flagged ON_DISK it had hit). */
size_t vg__cache_disk_purge(struct vg__cache_disk *d, const struct vg_cache_purge *p);
void vg__cache_disk_stats(struct vg__cache_disk *d, struct vg__cache_disk_stats *out);
/* Tests: wait until the writer queue is empty and the writer idle; stop
 * or restart the writer (queued items stay queued). */
void vg__cache_disk_flush(struct vg__cache_disk *d);
void vg__cache_disk_pause(struct vg__cache_disk *d, bool paused);
/* The LMDB database names, for tests that damage records. */
#define VG__CACHE_DISK_DB_OBJS "objs"
#define VG__CACHE_DISK_DB_SEQ "seq"

/* True when o matches the purge (URL, PREFIX or TAG). */
bool vg__cache_purge_match(const struct vg_cache_obj *o, const struct vg_cache_purge *p);

#endif
