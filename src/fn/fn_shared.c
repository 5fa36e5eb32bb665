/* The node-local shared dictionary behind verge.shared.
 *
 * Layout: keys are spread by hash over N shards; each shard has its own
 * mutex, a chained hash table, an LRU list and a min-heap of expiry times,
 * so workers touching different keys rarely meet on a lock. The byte
 * budget (max_bytes) is global, one atomic counter: a large value may use
 * any part of the budget, whatever its shard.
 *
 * Rules that must stay true:
 * - `used` never exceeds max_bytes: bytes are reserved (compare-and-swap)
 *   before an entry is inserted or grown, and released when one is freed.
 * - At most one shard lock is held at a time (no lock order to get wrong):
 *   a writer short of room unlocks its shard, evicts shard by shard, and
 *   tries again.
 * - Nothing under a shard lock calls Lua or can raise: the Lua binding
 *   copies in and out through C memory.
 * - Expiry is lazy: an expired entry is absent to every reader, and freed
 *   when someone touches it or needs its room. Eviction takes the expired
 *   entries of all shards first, then the least recently used entry of
 *   each shard in turn (an approximation of global LRU; exact with one
 *   shard). */
#include "fn_int.h"

#include <math.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#define SHARED_MAGIC 0x5eed0d1cu
#define DEFAULT_SHARDS 16
#define NOT_IN_HEAP UINT32_MAX
#define MIN_BUCKETS 16

struct lru {
    struct lru *prev, *next;
};

struct entry {
    struct lru lru; /* first: a list node is its entry */
    struct entry *hnext;
    uint64_t hash;
    uint64_t expires_ms; /* 0: never */
    size_t cost;         /* charged to max_bytes */
    uint32_t heap_idx;
    uint32_t klen;
    struct vg_state_value v; /* a string points into data, after the key */
    char data[];
};

struct shard {
    _Alignas(64) pthread_mutex_t lock; /* a cache line of its own per shard */
    struct entry **buckets;
    size_t mask;
    size_t count;
    struct lru lru; /* next: most recently used; prev: least */
    struct entry **heap;
    uint32_t heap_len, heap_cap;
};

struct vg_fn_shared {
    uint32_t magic;
    unsigned n_shards; /* a power of two */
    size_t max_bytes;
    _Atomic size_t used;
    vg__fn_clock_fn now;
    void *now_ctx;
    uint8_t seed[16]; /* hash key: keys may come from clients (flooding) */
    struct shard *shards;
};

/* ---- entries ------------------------------------------------------------------------ */

size_t vg__fn_shared_entry_cost(size_t klen, size_t vlen)
{
    /* the entry, its key and value, and its share of the bucket array (at
     * most two slots per entry) and of the expiry heap */
    return sizeof(struct entry) + klen + vlen + 3 * sizeof(void *);
}

static const char *entry_key(const struct entry *e)
{
    return e->data;
}

static bool expired(const struct entry *e, uint64_t now)
{
    return e->expires_ms && e->expires_ms <= now;
}

static uint64_t expiry(uint64_t now, uint64_t ttl_ms)
{
    if (!ttl_ms)
        return 0;
    return ttl_ms > UINT64_MAX - 1 - now ? UINT64_MAX - 1 : now + ttl_ms;
}

/* The caller owns the result (free()); NULL when out of memory. */
static struct entry *entry_new(uint64_t hash, const char *key, size_t klen, const struct vg_state_value *v,
                               uint64_t expires_ms)
{
    size_t vlen = v->type == VG_STATE_STRING ? v->str.len : 0;
    struct entry *e = malloc(sizeof(*e) + klen + vlen);
    if (!e)
        return NULL;
    memset(e, 0, sizeof(*e));
    e->hash = hash;
    e->expires_ms = expires_ms;
    e->cost = vg__fn_shared_entry_cost(klen, vlen);
    e->heap_idx = NOT_IN_HEAP;
    e->klen = (uint32_t)klen;
    e->v = *v;
    memcpy(e->data, key, klen);
    if (v->type == VG_STATE_STRING) {
        memcpy(e->data + klen, v->str.ptr, vlen);
        e->v.str.ptr = e->data + klen;
    }
    return e;
}

/* ---- the expiry heap (min-heap on expires_ms; entries know their index) ------------- */

static void heap_set(struct shard *sh, uint32_t i, struct entry *e)
{
    sh->heap[i] = e;
    e->heap_idx = i;
}

static void heap_sift_up(struct shard *sh, uint32_t i)
{
    struct entry *e = sh->heap[i];
    while (i > 0) {
        uint32_t parent = (i - 1) / 2;
        if (sh->heap[parent]->expires_ms <= e->expires_ms)
            break;
        heap_set(sh, i, sh->heap[parent]);
        i = parent;
    }
    heap_set(sh, i, e);
}

static void heap_sift_down(struct shard *sh, uint32_t i)
{
    struct entry *e = sh->heap[i];
    for (;;) {
        uint32_t c = 2 * i + 1;
        if (c >= sh->heap_len)
            break;
        if (c + 1 < sh->heap_len && sh->heap[c + 1]->expires_ms < sh->heap[c]->expires_ms)
            c++;
        if (e->expires_ms <= sh->heap[c]->expires_ms)
            break;
        heap_set(sh, i, sh->heap[c]);
        i = c;
    }
    heap_set(sh, i, e);
}

/* Makes room for one more heap slot before anything changes, so that an
 * insert never fails half-done. */
static bool heap_reserve(struct shard *sh)
{
    if (sh->heap_len < sh->heap_cap)
        return true;
    uint32_t cap = sh->heap_cap ? sh->heap_cap * 2 : 16;
    if (cap <= sh->heap_cap)
        return false;
    struct entry **h = realloc(sh->heap, cap * sizeof(*h));
    if (!h)
        return false;
    sh->heap = h;
    sh->heap_cap = cap;
    return true;
}

static void heap_push(struct shard *sh, struct entry *e)
{
    VG_ASSERT(sh->heap_len < sh->heap_cap);
    heap_set(sh, sh->heap_len++, e);
    heap_sift_up(sh, e->heap_idx);
}

static void heap_remove(struct shard *sh, struct entry *e)
{
    uint32_t i = e->heap_idx;
    VG_ASSERT(i < sh->heap_len && sh->heap[i] == e);
    e->heap_idx = NOT_IN_HEAP;
    struct entry *last = sh->heap[--sh->heap_len];
    if (last == e)
        return;
    heap_set(sh, i, last);
    heap_sift_up(sh, i);
    heap_sift_down(sh, last->heap_idx);
}

/* ---- a shard: hash table + LRU + heap, all under sh->lock ----------------------------- */

static void lru_unlink(struct entry *e)
{
    e->lru.prev->next = e->lru.next;
    e->lru.next->prev = e->lru.prev;
}

static void lru_push_front(struct shard *sh, struct entry *e)
{
    e->lru.prev = &sh->lru;
    e->lru.next = sh->lru.next;
    sh->lru.next->prev = &e->lru;
    sh->lru.next = &e->lru;
}

static void touch(struct shard *sh, struct entry *e)
{
    lru_unlink(e);
    lru_push_front(sh, e);
}

static struct entry **bucket_of(struct shard *sh, uint64_t hash)
{
    return &sh->buckets[hash & sh->mask];
}

static struct entry *find(struct shard *sh, uint64_t hash, const char *key, size_t klen)
{
    for (struct entry *e = *bucket_of(sh, hash); e; e = e->hnext)
        if (e->hash == hash && e->klen == klen && memcmp(entry_key(e), key, klen) == 0)
            return e;
    return NULL;
}

/* Doubles the bucket array when the load passes 1. Failing to grow is not
 * an error: chains just get longer. */
static void maybe_grow(struct shard *sh)
{
    if (sh->count <= sh->mask + 1)
        return;
    size_t n = (sh->mask + 1) * 2;
    struct entry **b = calloc(n, sizeof(*b));
    if (!b)
        return;
    for (size_t i = 0; i <= sh->mask; i++) {
        for (struct entry *e = sh->buckets[i], *next; e; e = next) {
            next = e->hnext;
            e->hnext = b[e->hash & (n - 1)];
            b[e->hash & (n - 1)] = e;
        }
    }
    free(sh->buckets);
    sh->buckets = b;
    sh->mask = n - 1;
}

static void insert(struct shard *sh, struct entry *e)
{
    struct entry **b = bucket_of(sh, e->hash);
    e->hnext = *b;
    *b = e;
    lru_push_front(sh, e);
    if (e->expires_ms)
        heap_push(sh, e);
    sh->count++;
    maybe_grow(sh);
}

/* Unlinks and frees e; credit says whether its bytes go back to the budget
 * (not when a replacement already took them over). */
static void drop(struct vg_fn_shared *d, struct shard *sh, struct entry *e, bool credit)
{
    struct entry **p = bucket_of(sh, e->hash);
    while (*p != e)
        p = &(*p)->hnext;
    *p = e->hnext;
    lru_unlink(e);
    if (e->heap_idx != NOT_IN_HEAP)
        heap_remove(sh, e);
    sh->count--;
    if (credit)
        atomic_fetch_sub_explicit(&d->used, e->cost, memory_order_relaxed);
    free(e);
}

/* The live entry for key, or NULL; an expired one found on the way is freed. */
static struct entry *lookup(struct vg_fn_shared *d, struct shard *sh, uint64_t hash, const char *key, size_t klen,
                            uint64_t now)
{
    struct entry *e = find(sh, hash, key, klen);
    if (e && expired(e, now)) {
        drop(d, sh, e, true);
        return NULL;
    }
    return e;
}

/* ---- the byte budget and eviction -------------------------------------------------- */

/* Takes delta bytes from the budget (gives them back if negative); false
 * when they are not there. */
static bool reserve(struct vg_fn_shared *d, ptrdiff_t delta)
{
    if (delta <= 0) {
        atomic_fetch_sub_explicit(&d->used, (size_t)-delta, memory_order_relaxed);
        return true;
    }
    size_t cur = atomic_load_explicit(&d->used, memory_order_relaxed);
    do {
        if ((size_t)delta > d->max_bytes || cur > d->max_bytes - (size_t)delta)
            return false;
    } while (!atomic_compare_exchange_weak_explicit(&d->used, &cur, cur + (size_t)delta, memory_order_relaxed,
                                                    memory_order_relaxed));
    return true;
}

static bool fits(struct vg_fn_shared *d, size_t need)
{
    size_t cur = atomic_load_explicit(&d->used, memory_order_relaxed);
    return need <= d->max_bytes && cur <= d->max_bytes - need;
}

static struct entry *expired_victim(struct shard *sh, uint64_t now)
{
    return sh->heap_len && expired(sh->heap[0], now) ? sh->heap[0] : NULL;
}

static bool same_key(const struct entry *a, const struct entry *b)
{
    return a->hash == b->hash && a->klen == b->klen && memcmp(entry_key(a), entry_key(b), a->klen) == 0;
}

/* The least recently used entry, but never the one under the key being
 * stored (spare): it is about to be replaced, and evicting it would show
 * readers a moment without the key. */
static struct entry *lru_victim(struct shard *sh, const struct entry *spare)
{
    for (struct lru *l = sh->lru.prev; l != &sh->lru; l = l->prev)
        if (!same_key((const struct entry *)l, spare))
            return (struct entry *)l;
    return NULL;
}

/* With no lock held: evicts until need bytes are free (free, not
 * reserved: the caller retries), one shard locked at a time, home first.
 * Expired entries all go; with lru, each round then takes the least
 * recently used entry of every shard, so that no shard is emptied for the
 * sake of another's large value. Returns whether anything was evicted. */
static bool free_room(struct vg_fn_shared *d, unsigned home, size_t need, uint64_t now, bool lru,
                      const struct entry *spare)
{
    bool evicted = false, round = true;
    while (round && !fits(d, need)) {
        round = false;
        for (unsigned i = 0; i < d->n_shards && !fits(d, need); i++) {
            struct shard *sh = &d->shards[(home + i) & (d->n_shards - 1)];
            struct entry *v;
            pthread_mutex_lock(&sh->lock);
            while (!fits(d, need) && (v = expired_victim(sh, now))) {
                drop(d, sh, v, true);
                round = true;
            }
            if (lru && !fits(d, need) && (v = lru_victim(sh, spare))) {
                drop(d, sh, v, true);
                round = true;
            }
            pthread_mutex_unlock(&sh->lock);
        }
        evicted |= round;
    }
    return evicted;
}

/* ---- the operations ----------------------------------------------------------------- */

static struct vg_fn_shared *check(struct vg_fn_shared *d)
{
    VG_AN(d);
    VG_ASSERT(d->magic == SHARED_MAGIC);
    return d;
}

static uint64_t hash_key(const struct vg_fn_shared *d, const char *key, size_t klen)
{
    return vg_siphash24(d->seed, key, klen);
}

static unsigned shard_index(const struct vg_fn_shared *d, uint64_t hash)
{
    return (unsigned)(hash >> 40) & (d->n_shards - 1); /* bits apart from the bucket's */
}

static bool is_number(const struct vg_state_value *v)
{
    return v->type == VG_STATE_INTEGER || v->type == VG_STATE_NUMBER;
}

static int incr_existing(struct shard *sh, struct entry *e, const struct vg_state_value *delta,
                         struct vg_state_value *out)
{
    if (!is_number(&e->v))
        return VG_EINVAL;
    e->v = vg_state_value_add(&e->v, delta);
    touch(sh, e);
    if (out)
        *out = e->v;
    return 0;
}

/* Inserts e (taking ownership) in place of any live entry with its key.
 * For an incr (delta set) that lost a race to another creator, the delta
 * goes to the entry found instead. When the budget is short, the first
 * eviction round takes expired entries only, so that every shard's dead
 * entries go before anyone's live ones; attempts are bounded because
 * other writers may take the room freed for us. */
static int store(struct vg_fn_shared *d, struct entry *e, const struct vg_state_value *delta,
                 struct vg_state_value *out)
{
    unsigned home = shard_index(d, e->hash);
    struct shard *sh = &d->shards[home];
    int rc = VG_ENOMEM;
    for (int attempt = 0; attempt < 8; attempt++) {
        uint64_t now = d->now(d->now_ctx);
        pthread_mutex_lock(&sh->lock);
        struct entry *old = lookup(d, sh, e->hash, entry_key(e), e->klen, now);
        if (old && delta) {
            rc = incr_existing(sh, old, delta, out);
            pthread_mutex_unlock(&sh->lock);
            break;
        }
        ptrdiff_t need = (ptrdiff_t)e->cost - (old ? (ptrdiff_t)old->cost : 0);
        if (e->expires_ms && !heap_reserve(sh)) {
            pthread_mutex_unlock(&sh->lock);
            break;
        }
        if (reserve(d, need)) {
            if (old)
                drop(d, sh, old, false); /* its bytes are part of need already */
            insert(sh, e);
            if (out)
                *out = e->v;
            pthread_mutex_unlock(&sh->lock);
            return 0;
        }
        pthread_mutex_unlock(&sh->lock);
        if (!free_room(d, home, (size_t)need, now, attempt > 0, e) && attempt > 0)
            break; /* nothing left to evict */
    }
    free(e);
    return rc;
}

static int check_key(size_t klen)
{
    return klen > VG_FN_SHARED_MAX_KEY ? VG_ELIMIT : 0;
}

int vg_fn_shared_get(struct vg_fn_shared *d, const char *key, size_t klen, struct vg_state_value *v, char *buf,
                     size_t cap)
{
    check(d);
    if (check_key(klen))
        return VG_ELIMIT;
    uint64_t hash = hash_key(d, key, klen), now = d->now(d->now_ctx);
    struct shard *sh = &d->shards[shard_index(d, hash)];
    int rc = VG_ENOENT;
    pthread_mutex_lock(&sh->lock);
    struct entry *e = lookup(d, sh, hash, key, klen, now);
    if (e) {
        touch(sh, e);
        *v = e->v;
        rc = 0;
        if (v->type == VG_STATE_STRING) {
            if (v->str.len <= cap) {
                memcpy(buf, e->v.str.ptr, v->str.len);
                v->str.ptr = buf;
            } else {
                v->str.ptr = NULL;
                rc = VG_ELIMIT;
            }
        }
    }
    pthread_mutex_unlock(&sh->lock);
    return rc;
}

int vg_fn_shared_set(struct vg_fn_shared *d, const char *key, size_t klen, const struct vg_state_value *v,
                     uint64_t ttl_ms)
{
    check(d);
    VG_AN(v);
    VG_ASSERT(v->type >= VG_STATE_STRING && v->type <= VG_STATE_BOOLEAN);
    if (check_key(klen) || (v->type == VG_STATE_STRING && v->str.len > vg_fn_shared_max_value(d)))
        return VG_ELIMIT;
    uint64_t hash = hash_key(d, key, klen);
    if (vg__fn_shared_entry_cost(klen, v->type == VG_STATE_STRING ? v->str.len : 0) > d->max_bytes)
        return VG_ENOMEM; /* would not fit in an empty dictionary: evict nothing */
    struct entry *e = entry_new(hash, key, klen, v, expiry(d->now(d->now_ctx), ttl_ms));
    if (!e)
        return VG_ENOMEM;
    return store(d, e, NULL, NULL);
}

int vg_fn_shared_incr(struct vg_fn_shared *d, const char *key, size_t klen, const struct vg_state_value *delta,
                      const struct vg_state_value *init, uint64_t ttl_ms, struct vg_state_value *out)
{
    check(d);
    VG_ASSERT(delta && is_number(delta));
    VG_ASSERT(!init || is_number(init));
    if (check_key(klen))
        return VG_ELIMIT;
    uint64_t hash = hash_key(d, key, klen), now = d->now(d->now_ctx);
    struct shard *sh = &d->shards[shard_index(d, hash)];

    /* the common case: the counter exists, no allocation */
    pthread_mutex_lock(&sh->lock);
    struct entry *e = lookup(d, sh, hash, key, klen, now);
    int rc = e ? incr_existing(sh, e, delta, out) : VG_ENOENT;
    pthread_mutex_unlock(&sh->lock);
    if (rc != VG_ENOENT)
        return rc;

    static const struct vg_state_value zero = {.type = VG_STATE_INTEGER, .i = 0};
    struct vg_state_value start = vg_state_value_add(init ? init : &zero, delta);
    if (vg__fn_shared_entry_cost(klen, 0) > d->max_bytes)
        return VG_ENOMEM;
    e = entry_new(hash, key, klen, &start, expiry(now, ttl_ms));
    if (!e)
        return VG_ENOMEM;
    return store(d, e, delta, out);
}

int vg_fn_shared_delete(struct vg_fn_shared *d, const char *key, size_t klen)
{
    check(d);
    if (check_key(klen))
        return VG_ELIMIT;
    uint64_t hash = hash_key(d, key, klen), now = d->now(d->now_ctx);
    struct shard *sh = &d->shards[shard_index(d, hash)];
    pthread_mutex_lock(&sh->lock);
    struct entry *e = find(sh, hash, key, klen);
    int rc = e && !expired(e, now) ? 0 : VG_ENOENT;
    if (e)
        drop(d, sh, e, true);
    pthread_mutex_unlock(&sh->lock);
    return rc;
}

int vg_fn_shared_ttl(struct vg_fn_shared *d, const char *key, size_t klen, uint64_t *ms_left)
{
    check(d);
    if (check_key(klen))
        return VG_ELIMIT;
    uint64_t hash = hash_key(d, key, klen), now = d->now(d->now_ctx);
    struct shard *sh = &d->shards[shard_index(d, hash)];
    pthread_mutex_lock(&sh->lock);
    struct entry *e = lookup(d, sh, hash, key, klen, now);
    if (e)
        *ms_left = e->expires_ms ? e->expires_ms - now : VG_FN_SHARED_NO_EXPIRY;
    pthread_mutex_unlock(&sh->lock);
    return e ? 0 : VG_ENOENT;
}

size_t vg_fn_shared_max_value(const struct vg_fn_shared *d)
{
    return d->max_bytes / 8;
}

void vg_fn_shared_usage(struct vg_fn_shared *d, size_t *bytes, size_t *entries)
{
    check(d);
    size_t n = 0;
    for (unsigned i = 0; i < d->n_shards; i++) {
        pthread_mutex_lock(&d->shards[i].lock);
        n += d->shards[i].count;
        pthread_mutex_unlock(&d->shards[i].lock);
    }
    if (bytes)
        *bytes = atomic_load(&d->used);
    if (entries)
        *entries = n;
}

/* ---- lifetime ----------------------------------------------------------------------- */

static uint64_t monotonic_ms(void *ctx)
{
    (void)ctx;
    return vg_now_ms();
}

static void seed_init(uint8_t seed[16])
{
    if (RAND_bytes(seed, 16) == 1)
        return;
    /* No CSPRNG: still different per process, if guessable. */
    uint64_t a = vg_now_us() ^ (uint64_t)(uintptr_t)seed, b = vg_wall_us() * 0x9e3779b97f4a7c15ull;
    memcpy(seed, &a, 8);
    memcpy(seed + 8, &b, 8);
}

struct vg_fn_shared *vg__fn_shared_create_ex(size_t max_bytes, unsigned n_shards, vg__fn_clock_fn now, void *ctx)
{
    VG_ASSERT(n_shards >= 1 && (n_shards & (n_shards - 1)) == 0);
    struct vg_fn_shared *d = vg_xcalloc(1, sizeof(*d));
    d->magic = SHARED_MAGIC;
    d->n_shards = n_shards;
    d->max_bytes = max_bytes;
    atomic_init(&d->used, 0);
    d->now = now ? now : monotonic_ms;
    d->now_ctx = ctx;
    seed_init(d->seed);
    d->shards = aligned_alloc(_Alignof(struct shard), n_shards * sizeof(struct shard));
    VG_AN(d->shards);
    memset(d->shards, 0, n_shards * sizeof(struct shard));
    for (unsigned i = 0; i < n_shards; i++) {
        struct shard *sh = &d->shards[i];
        VG_AZ(pthread_mutex_init(&sh->lock, NULL));
        sh->buckets = vg_xcalloc(MIN_BUCKETS, sizeof(*sh->buckets));
        sh->mask = MIN_BUCKETS - 1;
        sh->lru.prev = sh->lru.next = &sh->lru;
    }
    return d;
}

struct vg_fn_shared *vg_fn_shared_create(size_t max_bytes)
{
    return vg__fn_shared_create_ex(max_bytes, DEFAULT_SHARDS, NULL, NULL);
}

void vg_fn_shared_destroy(struct vg_fn_shared *d)
{
    if (!d)
        return;
    check(d);
    for (unsigned i = 0; i < d->n_shards; i++) {
        struct shard *sh = &d->shards[i];
        for (struct lru *l = sh->lru.next, *next; l != &sh->lru; l = next) {
            next = l->next;
            free(l);
        }
        free(sh->buckets);
        free(sh->heap);
        VG_AZ(pthread_mutex_destroy(&sh->lock));
    }
    free(d->shards);
    d->magic = 0;
    free(d);
}

/* ---- verge.shared: the Lua binding -------------------------------------------------- */

/* Each function has the dictionary as upvalue 1 (a light userdata): the
 * runtime keeps the dictionary alive longer than any state it opened. */
static struct vg_fn_shared *dict_of(lua_State *L)
{
    return check(lua_touserdata(L, lua_upvalueindex(1)));
}

static const char *check_key_arg(lua_State *L, const char *fn, size_t *klen)
{
    const char *key = luaL_checklstring(L, 1, klen);
    if (*klen > VG_FN_SHARED_MAX_KEY)
        luaL_error(L, "%s: key longer than %d bytes", fn, VG_FN_SHARED_MAX_KEY);
    return key;
}

enum { OPT_TTL = 1, OPT_INIT = 2 };

struct opts {
    uint64_t ttl_ms;            /* 0: none */
    struct vg_state_value init; /* type 0: not given */
};

void vg__fn_to_number(lua_State *L, int idx, struct vg_state_value *v)
{
    if (lua_isinteger(L, idx)) {
        v->type = VG_STATE_INTEGER;
        v->i = (int64_t)lua_tointeger(L, idx);
    } else {
        v->type = VG_STATE_NUMBER;
        v->n = lua_tonumber(L, idx);
    }
}

/* The option value is on top of the stack. */
static void opt_scope(lua_State *L, const char *fn)
{
    const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "";
    if (strcmp(s, "global") == 0)
        luaL_error(L, "%s: scope=global: verge.shared is in memory on one node; use verge.kv with scope=\"global\"",
                   fn);
    if (strcmp(s, "local") != 0)
        luaL_error(L, "%s: scope must be \"local\" or \"global\"", fn);
}

static uint64_t opt_ttl(lua_State *L, const char *fn)
{
    double t = lua_type(L, -1) == LUA_TNUMBER ? lua_tonumber(L, -1) : NAN;
    if (!(t > 0 && t <= 1e9))
        luaL_error(L, "%s: ttl must be a number of seconds, > 0 and at most 1e9", fn);
    return (uint64_t)ceil(t * 1000); /* a tiny ttl must not become "never" */
}

/* Options are checked strictly: a misspelt one ("tll") is an error rather
 * than a silently ignored wish. */
static void parse_opts(lua_State *L, int idx, unsigned allowed, struct opts *o, const char *fn)
{
    memset(o, 0, sizeof(*o));
    if (lua_isnoneornil(L, idx))
        return;
    luaL_checktype(L, idx, LUA_TTABLE);
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "";
        if (strcmp(k, "scope") == 0) {
            opt_scope(L, fn);
        } else if ((allowed & OPT_TTL) && strcmp(k, "ttl") == 0) {
            o->ttl_ms = opt_ttl(L, fn);
        } else if ((allowed & OPT_INIT) && strcmp(k, "init") == 0) {
            if (lua_type(L, -1) != LUA_TNUMBER)
                luaL_error(L, "%s: init must be a number", fn);
            vg__fn_to_number(L, -1, &o->init);
        } else {
            luaL_error(L, "%s: unknown option '%s'", fn, luaL_tolstring(L, -2, NULL));
        }
        lua_pop(L, 1);
    }
}

void vg__fn_push_value(lua_State *L, const struct vg_state_value *v)
{
    switch (v->type) {
    case VG_STATE_STRING:
        lua_pushlstring(L, v->str.ptr, v->str.len);
        break;
    case VG_STATE_INTEGER:
        lua_pushinteger(L, (lua_Integer)v->i);
        break;
    case VG_STATE_NUMBER:
        lua_pushnumber(L, v->n);
        break;
    case VG_STATE_BOOLEAN:
        lua_pushboolean(L, v->b);
        break;
    }
}

/* A string longer than the stack buffer is copied straight into a Lua
 * buffer; the value may change between two tries, hence the loop. */
static int get_long(lua_State *L, struct vg_fn_shared *d, const char *key, size_t klen, size_t len)
{
    struct vg_state_value v;
    luaL_Buffer b;
    char *p = luaL_buffinitsize(L, &b, len);
    int rc;
    while ((rc = vg_fn_shared_get(d, key, klen, &v, p, len)) == VG_ELIMIT) {
        len = v.str.len;
        p = luaL_prepbuffsize(&b, len);
    }
    luaL_pushresultsize(&b, rc == 0 && v.type == VG_STATE_STRING ? v.str.len : 0);
    if (rc == 0 && v.type == VG_STATE_STRING)
        return 1;
    if (rc == 0)
        vg__fn_push_value(L, &v);
    else
        lua_pushnil(L);
    return 1;
}

/* What every verge.shared function starts with: the dictionary, the key
 * (argument 1) and the options table at opts_idx. */
struct shared_call {
    struct vg_fn_shared *d;
    const char *key;
    size_t klen;
    struct opts o;
};

static void shared_call_begin(lua_State *L, const char *fn, int opts_idx, unsigned allowed, struct shared_call *c)
{
    c->d = dict_of(L);
    c->key = check_key_arg(L, fn, &c->klen);
    parse_opts(L, opts_idx, allowed, &c->o, fn);
}

static int shared_get(lua_State *L)
{
    static const char fn[] = "verge.shared.get";
    struct shared_call c;
    shared_call_begin(L, fn, 2, 0, &c);
    char small[512];
    struct vg_state_value v;
    int rc = vg_fn_shared_get(c.d, c.key, c.klen, &v, small, sizeof(small));
    if (rc == VG_ELIMIT)
        return get_long(L, c.d, c.key, c.klen, v.str.len);
    if (rc == VG_ENOENT)
        lua_pushnil(L);
    else
        vg__fn_push_value(L, &v);
    return 1;
}

static int fail(lua_State *L, const char *why)
{
    lua_pushnil(L);
    lua_pushstring(L, why);
    return 2;
}

static int shared_set(lua_State *L)
{
    static const char fn[] = "verge.shared.set";
    struct shared_call c;
    shared_call_begin(L, fn, 3, OPT_TTL, &c);
    luaL_checkany(L, 2);
    struct vg_state_value v = {0};
    switch (lua_type(L, 2)) {
    case LUA_TNIL:
        (void)vg_fn_shared_delete(c.d, c.key, c.klen);
        lua_pushboolean(L, 1);
        return 1;
    case LUA_TSTRING:
        v.type = VG_STATE_STRING;
        v.str.ptr = lua_tolstring(L, 2, &v.str.len);
        if (v.str.len > vg_fn_shared_max_value(c.d))
            return luaL_error(L, "%s: value longer than %I bytes (max_bytes/8)", fn,
                              (lua_Integer)vg_fn_shared_max_value(c.d));
        break;
    case LUA_TNUMBER:
        vg__fn_to_number(L, 2, &v);
        break;
    case LUA_TBOOLEAN:
        v.type = VG_STATE_BOOLEAN;
        v.b = lua_toboolean(L, 2);
        break;
    default:
        return luaL_typeerror(L, 2, "string, number, boolean or nil");
    }
    int rc = vg_fn_shared_set(c.d, c.key, c.klen, &v, c.o.ttl_ms);
    if (rc == VG_ENOMEM)
        return fail(L, "no memory");
    VG_AZ(rc);
    lua_pushboolean(L, 1);
    return 1;
}

static int shared_incr(lua_State *L)
{
    static const char fn[] = "verge.shared.incr";
    struct shared_call c;
    shared_call_begin(L, fn, 3, OPT_TTL | OPT_INIT, &c);
    luaL_checktype(L, 2, LUA_TNUMBER);
    struct vg_state_value delta, out;
    vg__fn_to_number(L, 2, &delta);
    int rc = vg_fn_shared_incr(c.d, c.key, c.klen, &delta, c.o.init.type ? &c.o.init : NULL, c.o.ttl_ms, &out);
    if (rc == VG_EINVAL)
        return fail(L, "not a number");
    if (rc == VG_ENOMEM)
        return fail(L, "no memory");
    VG_AZ(rc);
    vg__fn_push_value(L, &out);
    return 1;
}

static int shared_delete(lua_State *L)
{
    static const char fn[] = "verge.shared.delete";
    struct shared_call c;
    shared_call_begin(L, fn, 2, 0, &c);
    lua_pushboolean(L, vg_fn_shared_delete(c.d, c.key, c.klen) == 0);
    return 1;
}

static int shared_ttl(lua_State *L)
{
    static const char fn[] = "verge.shared.ttl";
    struct shared_call c;
    shared_call_begin(L, fn, 2, 0, &c);
    uint64_t ms;
    if (vg_fn_shared_ttl(c.d, c.key, c.klen, &ms) != 0)
        lua_pushnil(L);
    else if (ms == VG_FN_SHARED_NO_EXPIRY)
        lua_pushnumber(L, HUGE_VAL);
    else
        lua_pushnumber(L, (double)ms / 1000.0);
    return 1;
}

void vg__fn_open_shared(lua_State *L, struct vg_fn_shared *d)
{
    static const luaL_Reg fns[] = {
        {"get", shared_get},       {"set", shared_set}, {"incr", shared_incr},
        {"delete", shared_delete}, {"ttl", shared_ttl}, {NULL, NULL},
    };
    check(d);
    int verge = lua_absindex(L, -1);
    luaL_checkstack(L, 4, "verge.shared");
    lua_createtable(L, 0, 5);
    lua_pushlightuserdata(L, d);
    luaL_setfuncs(L, fns, 1);
    /* also the loaded module "verge.shared", so that Lua names our
     * functions in errors however they are called (see fn_codec.c) */
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    lua_pushvalue(L, -2);
    lua_setfield(L, -2, "verge.shared");
    lua_pop(L, 1);
    lua_setfield(L, verge, "shared");
}
