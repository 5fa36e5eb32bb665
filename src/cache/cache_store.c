/* cache store: the memory tier. Shards by key hash, each with its own
 * mutex, open-addressing table, S3-FIFO queues and share of the budget;
 * lookup (with Vary), insert, refresh, stats.
 *
 * Eviction is S3-FIFO (Yang et al., SOSP 2023): a small FIFO (10% of the
 * bytes) takes new objects, a main FIFO the ones that proved themselves,
 * and a ghost set remembers hashes recently evicted from the small queue.
 * An object hit while in the small queue moves to main when it reaches
 * the small queue's head; an unhit one leaves (its hash goes to the ghost,
 * so a quick return goes straight to main). Main evicts FIFO, giving objects
 * hit since their last pass another round (frequency 0..3). Why not LRU or
 * segmented LRU: a one-off scan of never-reused keys flows through the
 * small queue without displacing main, and a hit costs one relaxed atomic
 * increment instead of a list move under the shard lock — the lookup path
 * holds the lock only to find the object. docs/decisions.md, "Cache
 * eviction", has the measurements (bench/cache_sim.c). */
#include "cache/cache_int.h"

#include <string.h>
#include <sys/random.h>
#include <time.h>

#define DEFAULT_SHARDS 32
#define MIN_SHARD_BYTES (1u << 20)
#define SMALL_SHARE 10 /* percent of a shard's bytes for the small queue */

/* ---- the table: linear probing over a capacity that grows by a quarter ----
 *
 * A slot is an object pointer with three bits of the object's hash in its
 * alignment bits, so a probe skips most non-matching objects without
 * touching them; that lets the table run up to 80% full (~11 bytes of slot
 * per object) with short probes. */

#define TAG_MASK ((uintptr_t)7)

static uint32_t home(const struct vg__cache_shard *s, uint32_t h)
{
    return (uint32_t)(((uint64_t)h * s->cap) >> 32); /* high bits; the tag takes low ones */
}

static uint32_t next_slot(const struct vg__cache_shard *s, uint32_t i)
{
    return i + 1 == s->cap ? 0 : i + 1;
}

static struct vg_cache_obj *slot_obj(uintptr_t v)
{
    return (struct vg_cache_obj *)(v & ~TAG_MASK);
}

static uintptr_t slot_of(struct vg_cache_obj *o)
{
    return (uintptr_t)o | (o->hash & TAG_MASK);
}

/* Whether slot v may hold an object of hash h (a cheap filter). */
static bool slot_may_be(uintptr_t v, uint32_t h)
{
    return (v & TAG_MASK) == (h & TAG_MASK);
}

static void slot_put(struct vg__cache_shard *s, struct vg_cache_obj *o)
{
    uint32_t i = home(s, o->hash);
    while (s->slots[i])
        i = next_slot(s, i);
    s->slots[i] = slot_of(o);
}

static uint16_t ghost_fp(uint32_t h)
{
    return (uint16_t)((h * 0x9E3779B1u) >> 16) | 1;
}

/* The ghost is a direct-mapped set of 16-bit fingerprints, a power of two
 * of at least half the slots: about as many ghosts as the main queue holds
 * objects, as S3-FIFO wants, for 2-3 bytes per object. Resizing forgets the
 * old ghosts, which costs a few early promotions at most. */
static int ghost_resize(struct vg__cache_shard *s, uint32_t slots)
{
    uint32_t n = 16;
    while (n < slots / 2)
        n *= 2;
    if (s->ghost && n == s->ghost_mask + 1)
        return 0;
    uint16_t *g = calloc(n, sizeof(*g));
    if (!g)
        return VG_ENOMEM;
    if (s->ghost)
        s->bytes -= (size_t)(s->ghost_mask + 1) * sizeof(*g);
    free(s->ghost);
    s->ghost = g;
    s->ghost_mask = n - 1;
    s->bytes += (size_t)n * sizeof(*g);
    return 0;
}

static int table_grow(struct vg__cache_shard *s)
{
    uint32_t old_cap = s->cap, cap = old_cap + (old_cap / 4 > 8 ? old_cap / 4 : 8);
    uintptr_t *old = s->slots, *slots = calloc(cap, sizeof(*slots));
    if (!slots || ghost_resize(s, cap) != 0) {
        free(slots);
        return VG_ENOMEM;
    }
    s->slots = slots;
    s->cap = cap;
    for (uint32_t i = 0; i < old_cap; i++)
        if (old[i])
            slot_put(s, slot_obj(old[i]));
    free(old);
    s->bytes += (size_t)(cap - old_cap) * sizeof(*slots);
    return 0;
}

static int table_add(struct vg__cache_shard *s, struct vg_cache_obj *o)
{
    VG_AZ((uintptr_t)o & TAG_MASK);
    if ((uint64_t)(s->count + 1) * 5 > (uint64_t)s->cap * 4) {
        int rc = table_grow(s);
        if (rc != 0)
            return rc;
    }
    slot_put(s, o);
    s->count++;
    return 0;
}

/* Backward-shift deletion: no tombstones, so probes stay short. */
static void table_del(struct vg__cache_shard *s, struct vg_cache_obj *o)
{
    uint32_t i = home(s, o->hash);
    while (slot_obj(s->slots[i]) != o) {
        VG_AN(s->slots[i]);
        i = next_slot(s, i);
    }
    for (uint32_t j = next_slot(s, i); s->slots[j]; j = next_slot(s, j)) {
        uint32_t k = home(s, slot_obj(s->slots[j])->hash);
        bool stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);
        if (!stays) {
            s->slots[i] = s->slots[j];
            i = j;
        }
    }
    s->slots[i] = 0;
    s->count--;
}

/* ---- queues --------------------------------------------------------------------- */

static struct vg__cache_queue *queue_of(struct vg__cache_shard *s, const struct vg_cache_obj *o)
{
    return o->queue == VG__CACHE_Q_SMALL ? &s->small : &s->main;
}

static void q_push(struct vg__cache_shard *s, uint8_t which, struct vg_cache_obj *o, size_t charge)
{
    o->queue = which;
    struct vg__cache_queue *q = queue_of(s, o);
    o->u.q.next = NULL;
    o->u.q.prev = q->tail;
    if (q->tail)
        q->tail->u.q.next = o;
    else
        q->head = o;
    q->tail = o;
    q->bytes += charge;
    q->count++;
}

static void q_remove(struct vg__cache_shard *s, struct vg_cache_obj *o, size_t charge)
{
    struct vg__cache_queue *q = queue_of(s, o);
    if (o->u.q.prev)
        o->u.q.prev->u.q.next = o->u.q.next;
    else
        q->head = o->u.q.next;
    if (o->u.q.next)
        o->u.q.next->u.q.prev = o->u.q.prev;
    else
        q->tail = o->u.q.prev;
    q->bytes -= charge;
    q->count--;
    o->queue = VG__CACHE_Q_NONE;
    o->u.q.prev = o->u.q.next = NULL;
}

struct vg_cache_obj *vg__cache_unlink(struct vg__cache_shard *s, struct vg_cache_obj *o)
{
    size_t charge = vg__cache_obj_charge(o);
    VG_ASSERT(o->queue != VG__CACHE_Q_NONE);
    q_remove(s, o, charge);
    table_del(s, o);
    s->bytes -= charge;
    return o;
}

/* Unlinked objects wait on a list through their (now free) queue links
 * and are released once the shard lock is dropped. */
static void dead_push(struct vg_cache_obj **dead, struct vg_cache_obj *o)
{
    o->u.q.next = *dead;
    *dead = o;
}

static void dead_release(struct vg_cache_obj *dead)
{
    while (dead) {
        struct vg_cache_obj *next = dead->u.q.next;
        vg_cache_obj_release(dead);
        dead = next;
    }
}

/* ---- eviction ------------------------------------------------------------------------- */

static void evict_small(struct vg__cache_shard *s, struct vg_cache_obj **dead)
{
    struct vg_cache_obj *o = s->small.head;
    size_t charge = vg__cache_obj_charge(o);
    if (atomic_load_explicit(&o->freq, memory_order_relaxed) > 0) {
        q_remove(s, o, charge);
        atomic_store_explicit(&o->freq, 0, memory_order_relaxed);
        q_push(s, VG__CACHE_Q_MAIN, o, charge);
        return;
    }
    if (s->ghost)
        s->ghost[o->hash & s->ghost_mask] = ghost_fp(o->hash);
    dead_push(dead, vg__cache_unlink(s, o));
    atomic_fetch_add_explicit(&s->evictions, 1, memory_order_relaxed);
}

static void evict_main(struct vg__cache_shard *s, bool lru, struct vg_cache_obj **dead)
{
    struct vg_cache_obj *o = s->main.head;
    uint8_t f = atomic_load_explicit(&o->freq, memory_order_relaxed);
    if (f > 0 && !lru) {
        size_t charge = vg__cache_obj_charge(o);
        q_remove(s, o, charge);
        atomic_store_explicit(&o->freq, f - 1, memory_order_relaxed);
        q_push(s, VG__CACHE_Q_MAIN, o, charge);
        return;
    }
    dead_push(dead, vg__cache_unlink(s, o));
    atomic_fetch_add_explicit(&s->evictions, 1, memory_order_relaxed);
}

/* Until the shard is within its budget. The small queue gives up objects
 * while it holds more than its share (but never its newest object alone
 * while main has something to give). Terminates: every step evicts, moves
 * an object from small to main, or lowers a frequency in main. */
static void evict(struct vg_cache *c, struct vg__cache_shard *s, struct vg_cache_obj **dead)
{
    while (s->bytes > s->budget && (s->small.count || s->main.count)) {
        bool from_small = s->main.count == 0 || (s->small.count > 1 && s->small.bytes > s->budget / 100 * SMALL_SHARE);
        if (from_small)
            evict_small(s, dead);
        else
            evict_main(s, c->policy == VG__CACHE_LRU, dead);
    }
}

/* ---- create / destroy ------------------------------------------------------------------- */

struct vg__cache_shard *vg__cache_shard_of(struct vg_cache *c, const char *key, size_t len)
{
    /* by "host\npath?query" only, so that a purge by URL visits one shard */
    const char *nl = memchr(key, '\n', len);
    if (nl)
        nl = memchr(nl + 1, '\n', len - (size_t)(nl + 1 - key));
    size_t url_len = nl ? (size_t)(nl - key) : len;
    uint64_t h = vg__cache_hash(c->seed, key, url_len);
    return &c->shards[(h >> 40) & (c->n_shards - 1)];
}

static uint32_t key_hash(struct vg_cache *c, const char *key, size_t len)
{
    return (uint32_t)vg__cache_hash(c->seed, key, len);
}

static void seed_init(uint8_t seed[16])
{
    if (getrandom(seed, 16, 0) == 16)
        return;
    uint64_t t = vg_now_us() ^ (uint64_t)(uintptr_t)seed;
    for (int i = 0; i < 16; i++)
        seed[i] = (uint8_t)(t >> (8 * (i % 8))) ^ (uint8_t)(i * 31);
}

static unsigned shards_for(size_t mem_bytes)
{
    unsigned n = DEFAULT_SHARDS;
    while (n > 1 && mem_bytes / n < MIN_SHARD_BYTES)
        n /= 2;
    return n;
}

int vg__cache_create_ex(const struct vg_cache_config *cfg, const struct vg__cache_opts *opts, struct vg_cache **out)
{
    unsigned n = opts->n_shards ? opts->n_shards : shards_for(cfg->mem_bytes);
    if (n & (n - 1))
        return VG_EINVAL;
    struct vg_cache *c = calloc(1, sizeof(*c));
    if (!c)
        return VG_ENOMEM;
    c->n_shards = n;
    c->policy = opts->policy;
    seed_init(c->seed);
    c->shards = aligned_alloc(64, sizeof(*c->shards) * n);
    if (!c->shards) {
        free(c);
        return VG_ENOMEM;
    }
    memset(c->shards, 0, sizeof(*c->shards) * n);
    for (unsigned i = 0; i < n; i++) {
        VG_AZ(pthread_mutex_init(&c->shards[i].lock, NULL));
        c->shards[i].budget = cfg->mem_bytes / n;
    }
    if (cfg->disk_path) {
        int rc = vg__cache_disk_open(cfg->disk_path, cfg->disk_bytes, opts->disk_queue, &c->disk);
        if (rc != 0) {
            vg_cache_destroy(c);
            return rc;
        }
    }
    *out = c;
    return 0;
}

int vg_cache_create(const struct vg_cache_config *cfg, struct vg_cache **out)
{
    struct vg__cache_opts opts = {0};
    return vg__cache_create_ex(cfg, &opts, out);
}

static void shard_fini(struct vg__cache_shard *s)
{
    struct vg__cache_queue *qs[] = {&s->small, &s->main};
    for (size_t i = 0; i < 2; i++)
        while (qs[i]->head) {
            struct vg_cache_obj *o = vg__cache_unlink(s, qs[i]->head);
            VG_ASSERT(atomic_load(&o->refs) == 1); /* every reference released */
            vg_cache_obj_release(o);
        }
    VG_ASSERT(s->flights == NULL);
    free(s->slots);
    free(s->ghost);
    pthread_mutex_destroy(&s->lock);
}

void vg_cache_destroy(struct vg_cache *c)
{
    if (!c)
        return;
    if (c->disk)
        vg__cache_disk_close(c->disk); /* drops the writer's references first */
    for (unsigned i = 0; i < c->n_shards; i++)
        shard_fini(&c->shards[i]);
    free(c->shards);
    free(c);
}

/* ---- insert ------------------------------------------------------------------------------- */

static bool key_is(const struct vg_cache_obj *o, uint32_t h, const char *key, size_t len)
{
    return o->hash == h && o->key_len == len && memcmp(vg__cache_obj_key(o), key, len) == 0;
}

/* The variants of o's key: the one o replaces goes, and the oldest goes
 * when the key already has its maximum. Collected first, unlinked after:
 * deleting moves slots under the probe. */
static void drop_variants(struct vg__cache_shard *s, const struct vg_cache_obj *o, struct vg_cache_obj **dead)
{
    struct vg_cache_obj *found[VG__CACHE_MAX_VARIANTS * 2], *oldest = NULL;
    size_t n = 0, kept = 0;
    for (uint32_t i = s->cap ? home(s, o->hash) : 0; s->cap && s->slots[i]; i = next_slot(s, i)) {
        if (!slot_may_be(s->slots[i], o->hash))
            continue;
        struct vg_cache_obj *x = slot_obj(s->slots[i]);
        if (!key_is(x, o->hash, vg__cache_obj_key(o), o->key_len) || n == VG_ARRAY_LEN(found))
            continue;
        if (vg__cache_obj_same_variant(x, o)) {
            found[n++] = x;
            continue;
        }
        kept++;
        if (!oldest || x->response_time < oldest->response_time)
            oldest = x;
    }
    if (kept >= VG__CACHE_MAX_VARIANTS && n < VG_ARRAY_LEN(found))
        found[n++] = oldest;
    for (size_t i = 0; i < n; i++)
        dead_push(dead, vg__cache_unlink(s, found[i]));
}

static void publish(struct vg_cache *c, struct vg__cache_shard *s, struct vg_cache_obj *o)
{
    struct vg_cache_obj *dead = NULL;
    size_t charge = vg__cache_obj_charge(o);
    pthread_mutex_lock(&s->lock);
    drop_variants(s, o, &dead);
    if (table_add(s, o) != 0) {
        pthread_mutex_unlock(&s->lock);
        dead_release(dead);
        vg_cache_obj_release(o);
        return;
    }
    bool ghost_hit = s->ghost && s->ghost[o->hash & s->ghost_mask] == ghost_fp(o->hash);
    if (ghost_hit)
        s->ghost[o->hash & s->ghost_mask] = 0;
    bool to_main = c->policy == VG__CACHE_LRU || ghost_hit;
    q_push(s, to_main ? VG__CACHE_Q_MAIN : VG__CACHE_Q_SMALL, o, charge);
    s->bytes += charge;
    atomic_fetch_add_explicit(&s->inserts, 1, memory_order_relaxed);
    evict(c, s, &dead);
    pthread_mutex_unlock(&s->lock);
    dead_release(dead);
}

void vg_cache_insert(struct vg_cache *c, struct vg_cache_obj *o)
{
    o = vg__cache_obj_finish(o);
    if (!o)
        return;
    uint8_t flags = atomic_fetch_or(&o->flags, VG__CACHE_OBJ_PUBLISHED);
    VG_ASSERT(!(flags & VG__CACHE_OBJ_PUBLISHED)); /* an object is inserted once */
    o->hash = key_hash(c, vg__cache_obj_key(o), o->key_len);
    struct vg__cache_shard *s = vg__cache_shard_of(c, vg__cache_obj_key(o), o->key_len);
    bool write = c->disk && !(flags & VG__CACHE_OBJ_ON_DISK);
    vg_cache_obj_retain(o); /* ours, for the disk queue: the table's may go at once */
    if (vg__cache_obj_charge(o) <= s->budget)
        publish(c, s, o);
    else
        vg_cache_obj_release(o); /* larger than a shard's budget: never in memory */
    if (write)
        vg__cache_disk_enqueue(c->disk, o);
    vg_cache_obj_release(o);
}

void vg__cache_promote(struct vg_cache *c, struct vg_cache_obj *o)
{
    VG_ASSERT(atomic_load(&o->flags) & VG__CACHE_OBJ_ON_DISK);
    vg_cache_insert(c, o);
}

/* ---- lookup ---------------------------------------------------------------------------------- */

/* Live variants of key retained into cands; expired ones unlinked. */
static size_t collect(struct vg__cache_shard *s, uint32_t h, h2o_iovec_t key, int64_t now, struct vg_cache_obj **cands,
                      struct vg_cache_obj **dead)
{
    struct vg_cache_obj *expired[VG__CACHE_MAX_VARIANTS * 2];
    size_t n = 0, n_exp = 0;
    for (uint32_t i = s->cap ? home(s, h) : 0; s->cap && s->slots[i]; i = next_slot(s, i)) {
        if (!slot_may_be(s->slots[i], h))
            continue;
        struct vg_cache_obj *x = slot_obj(s->slots[i]);
        if (!key_is(x, h, key.base, key.len))
            continue;
        if (now > vg__cache_obj_useless_at(x)) {
            if (n_exp < VG_ARRAY_LEN(expired))
                expired[n_exp++] = x;
        } else if (n < VG__CACHE_MAX_VARIANTS * 2) {
            vg_cache_obj_retain(x);
            cands[n++] = x;
        }
    }
    for (size_t i = 0; i < n_exp; i++) {
        dead_push(dead, vg__cache_unlink(s, expired[i]));
        atomic_fetch_add_explicit(&s->evictions, 1, memory_order_relaxed);
    }
    return n;
}

static void touch(struct vg_cache *c, struct vg__cache_shard *s, struct vg_cache_obj *o)
{
    uint8_t f = atomic_load_explicit(&o->freq, memory_order_relaxed);
    if (f < 3)
        atomic_store_explicit(&o->freq, f + 1, memory_order_relaxed);
    if (c->policy != VG__CACHE_LRU)
        return;
    /* the simulator's baseline only: LRU needs the lock on every hit */
    pthread_mutex_lock(&s->lock);
    if (o->queue == VG__CACHE_Q_MAIN) {
        size_t charge = vg__cache_obj_charge(o);
        q_remove(s, o, charge);
        q_push(s, VG__CACHE_Q_MAIN, o, charge);
    }
    pthread_mutex_unlock(&s->lock);
}

static struct vg_cache_obj *lookup_mem(struct vg_cache *c, struct vg__cache_shard *s, h2o_iovec_t key,
                                       const h2o_headers_t *req_headers, int64_t now, bool *known)
{
    struct vg_cache_obj *cands[VG__CACHE_MAX_VARIANTS * 2], *dead = NULL;
    uint32_t h = key_hash(c, key.base, key.len);
    pthread_mutex_lock(&s->lock);
    size_t n = collect(s, h, key, now, cands, &dead);
    pthread_mutex_unlock(&s->lock);
    dead_release(dead);
    struct vg_cache_obj *pick = n ? vg__cache_choose(cands, n, req_headers) : NULL;
    for (size_t i = 0; i < n; i++)
        if (cands[i] != pick)
            vg_cache_obj_release(cands[i]);
    if (pick)
        touch(c, s, pick);
    *known = n > 0;
    return pick;
}

struct vg_cache_obj *vg_cache_lookup(struct vg_cache *c, h2o_iovec_t key, const h2o_headers_t *req_headers, int64_t now,
                                     bool *key_known)
{
    struct vg__cache_shard *s = vg__cache_shard_of(c, key.base, key.len);
    bool known = false, disk_known = false;
    struct vg_cache_obj *o = lookup_mem(c, s, key, req_headers, now, &known);
    if (!o && c->disk) {
        o = vg__cache_disk_lookup(c->disk, key, req_headers, now, &disk_known);
        if (o) {
            vg_cache_obj_retain(o);
            vg__cache_promote(c, o);
            atomic_fetch_add_explicit(&s->disk_hits, 1, memory_order_relaxed);
        }
    }
    atomic_fetch_add_explicit(o ? &s->hits : &s->misses, 1, memory_order_relaxed);
    if (key_known)
        *key_known = known || disk_known || o;
    return o;
}

/* ---- refresh ----------------------------------------------------------------------------------- */

struct vg_cache_obj *vg_cache_refresh(struct vg_cache *c, struct vg_cache_obj *o, const h2o_headers_t *headers,
                                      const struct vg_cache_meta *meta)
{
    /* every tag takes at least two bytes of the tags block */
    h2o_iovec_t *tags = malloc(sizeof(*tags) * (o->tags_len / 2 + 1));
    if (!tags)
        return NULL;
    size_t n_tags = 0;
    const uint8_t *p = (const uint8_t *)vg__cache_obj_tags(o), *end = p + o->tags_len;
    for (; p < end; p += 1 + *p)
        tags[n_tags++] = h2o_iovec_init(p + 1, *p);
    h2o_iovec_t key = h2o_iovec_init(vg__cache_obj_key(o), o->key_len);
    h2o_iovec_t vn = h2o_iovec_init(vg__cache_obj_vn(o), o->vn_len),
                vk = h2o_iovec_init(vg__cache_obj_vk(o), o->vk_len);
    struct vg_cache_obj *n = vg_cache_obj_new(key, vn, vk, o->status, headers, meta, tags, n_tags);
    free(tags);
    h2o_iovec_t body = vg_cache_obj_body(o);
    if (!n || vg_cache_obj_append(n, body.base, body.len, body.len) != 0 || !(n = vg__cache_obj_finish(n))) {
        vg_cache_obj_release(n);
        return NULL;
    }
    vg_cache_obj_retain(n);
    vg_cache_insert(c, n);
    return n;
}

/* ---- stats --------------------------------------------------------------------------------------- */

void vg_cache_stats(struct vg_cache *c, struct vg_cache_stats *out)
{
    memset(out, 0, sizeof(*out));
    for (unsigned i = 0; i < c->n_shards; i++) {
        struct vg__cache_shard *s = &c->shards[i];
        pthread_mutex_lock(&s->lock);
        out->objects += s->count;
        out->bytes += s->bytes;
        pthread_mutex_unlock(&s->lock);
        out->hits += atomic_load_explicit(&s->hits, memory_order_relaxed);
        out->misses += atomic_load_explicit(&s->misses, memory_order_relaxed);
        out->inserts += atomic_load_explicit(&s->inserts, memory_order_relaxed);
        out->evictions += atomic_load_explicit(&s->evictions, memory_order_relaxed);
        out->purged += atomic_load_explicit(&s->purged, memory_order_relaxed);
        out->disk_hits += atomic_load_explicit(&s->disk_hits, memory_order_relaxed);
    }
    if (c->disk) {
        struct vg__cache_disk_stats d;
        vg__cache_disk_stats(c->disk, &d);
        out->disk_objects = d.objects;
        out->disk_bytes = d.bytes;
        out->disk_corrupt = d.corrupt;
        out->disk_writes = d.writes;
        out->disk_dropped = d.dropped;
    }
}
