/* Per-worker balancers. Each worker owns its balancer outright, so nothing
 * here is synchronised; everything a pick needs is allocated at creation so
 * the pick path never allocates. */
#include "proxy/proxy.h"

#include <string.h>

#define BALANCER_MAGIC 0xba1a4ce5u

/* Ketama's figure: with 160 points per weight unit each server's share of
 * the key space stays within a few percent of its weight. */
#define RING_POINTS_PER_WEIGHT 160u
/* Bound on the ring so that a huge weight cannot make it (and its build
 * time) unbounded; above it, points are scaled down in proportion. */
#define RING_MAX_POINTS (1u << 20)

struct ring_point {
    uint64_t hash;
    uint32_t server;
};

struct vg_proxy_balancer {
    uint32_t magic;
    const struct vg_conf_origin *o;
    size_t n;
    int64_t *current;        /* smooth WRR: current weight per server */
    uint32_t *active;        /* least_conn: attempts in flight on this worker */
    size_t lc_cursor;        /* least_conn: where the next scan starts, so ties rotate */
    struct ring_point *ring; /* hash: sorted by hash */
    size_t n_ring;
    uint64_t *seen; /* hash: scratch bitmap of servers rejected during one pick */
    size_t seen_words;
};

/* ---- hashing -------------------------------------------------------------- */

#define FNV64_OFFSET 0xcbf29ce484222325ull
#define FNV64_PRIME 0x100000001b3ull

static uint64_t fnv1a64(uint64_t h, const void *data, size_t len)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= FNV64_PRIME;
    }
    return h;
}

/* FNV-1a alone diffuses the last bytes poorly (only the final multiply mixes
 * them upward), which would cluster keys that differ only at the end, such as
 * "user-1", "user-2". A 64-bit finaliser (the fmix64 constants of
 * MurmurHash3) makes every input bit affect every output bit; it is a
 * bijection, so distinct FNV states stay distinct. */
static uint64_t mix64(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h;
}

static uint64_t hash_key(const char *key, size_t len)
{
    return mix64(fnv1a64(FNV64_OFFSET, key, len));
}

/* A server's ring identity is its address, not its index, so that adding or
 * removing another server leaves its points where they were. */
static uint64_t server_identity_hash(const struct vg_conf_server *s)
{
    if (s->url)
        return fnv1a64(FNV64_OFFSET, s->url, strlen(s->url));
    char buf[16];
    int n = snprintf(buf, sizeof(buf), ":%u", (unsigned)s->port);
    uint64_t h = s->host ? fnv1a64(FNV64_OFFSET, s->host, strlen(s->host)) : FNV64_OFFSET;
    return fnv1a64(h, buf, (size_t)n);
}

static uint64_t point_hash(uint64_t identity, uint32_t j)
{
    unsigned char b[5] = {'#', (unsigned char)j, (unsigned char)(j >> 8), (unsigned char)(j >> 16),
                          (unsigned char)(j >> 24)};
    return mix64(fnv1a64(identity, b, sizeof(b)));
}

/* ---- construction ---------------------------------------------------------- */

static int cmp_point(const void *a, const void *b)
{
    const struct ring_point *x = a, *y = b;
    if (x->hash != y->hash)
        return x->hash < y->hash ? -1 : 1;
    return (x->server > y->server) - (x->server < y->server);
}

static uint32_t ring_points_for(uint64_t weight, uint64_t total_weight)
{
    if (total_weight <= RING_MAX_POINTS / RING_POINTS_PER_WEIGHT)
        return (uint32_t)(weight * RING_POINTS_PER_WEIGHT);
    uint64_t pts = weight * RING_MAX_POINTS / total_weight;
    return pts ? (uint32_t)pts : 1;
}

static void ring_build(struct vg_proxy_balancer *b)
{
    const struct vg_conf_origin *o = b->o;
    uint64_t total = 0;
    for (size_t i = 0; i < b->n; i++)
        total += o->servers[i].weight;
    size_t n_ring = 0;
    for (size_t i = 0; i < b->n; i++)
        n_ring += ring_points_for(o->servers[i].weight, total);
    b->ring = vg_xcalloc(n_ring, sizeof(*b->ring));
    size_t k = 0;
    for (size_t i = 0; i < b->n; i++) {
        uint64_t id = server_identity_hash(&o->servers[i]);
        uint32_t pts = ring_points_for(o->servers[i].weight, total);
        for (uint32_t j = 0; j < pts; j++)
            b->ring[k++] = (struct ring_point){point_hash(id, j), (uint32_t)i};
    }
    qsort(b->ring, n_ring, sizeof(*b->ring), cmp_point);
    b->n_ring = n_ring;
    b->seen_words = (b->n + 63) / 64;
    b->seen = vg_xcalloc(b->seen_words, sizeof(*b->seen));
}

struct vg_proxy_balancer *vg_proxy_balancer_create(const struct vg_conf_origin *o)
{
    VG_AN(o);
    VG_ASSERT(o->n_servers >= 1 && o->n_servers <= UINT32_MAX);
    for (size_t i = 0; i < o->n_servers; i++)
        VG_ASSERT(o->servers[i].weight >= 1); /* conf guarantees it */
    struct vg_proxy_balancer *b = vg_xcalloc(1, sizeof(*b));
    b->magic = BALANCER_MAGIC;
    b->o = o;
    b->n = o->n_servers;
    b->current = vg_xcalloc(b->n, sizeof(*b->current));
    b->active = vg_xcalloc(b->n, sizeof(*b->active));
    if (o->balance == VG_CONF_BALANCE_HASH)
        ring_build(b);
    return b;
}

void vg_proxy_balancer_destroy(struct vg_proxy_balancer *b)
{
    if (!b)
        return;
    VG_ASSERT(b->magic == BALANCER_MAGIC);
    b->magic = 0;
    free(b->current);
    free(b->active);
    free(b->ring);
    free(b->seen);
    free(b);
}

/* ---- picking ---------------------------------------------------------------- */

static bool candidate(vg_proxy_usable_fn usable, void *ctx, uint64_t tried, size_t i)
{
    if (i < 64 && ((tried >> i) & 1))
        return false;
    return usable(ctx, i);
}

/* nginx's smooth weighted round robin: every candidate gains its weight,
 * the richest is picked and pays the sum. Over sum(weights) picks each
 * server is chosen exactly weight times, spread out rather than in runs.
 * Servers that are not candidates keep their current weight untouched. */
static int pick_round_robin(struct vg_proxy_balancer *b, vg_proxy_usable_fn usable, void *ctx, uint64_t tried)
{
    int64_t total = 0;
    int best = -1;
    for (size_t i = 0; i < b->n; i++) {
        if (!candidate(usable, ctx, tried, i))
            continue;
        int64_t w = b->o->servers[i].weight;
        b->current[i] += w;
        total += w;
        if (best < 0 || b->current[i] > b->current[best])
            best = (int)i;
    }
    if (best >= 0)
        b->current[best] -= total;
    return best;
}

/* Lowest (active+1)/weight, compared by cross-multiplying to stay in
 * integers. The "+1" makes weights count even when everything is idle.
 * Scanning from a rotating cursor and keeping the first minimum breaks ties
 * round robin. */
static int pick_least_conn(struct vg_proxy_balancer *b, vg_proxy_usable_fn usable, void *ctx, uint64_t tried)
{
    int best = -1;
    for (size_t k = 0; k < b->n; k++) {
        size_t i = (b->lc_cursor + k) % b->n;
        if (!candidate(usable, ctx, tried, i))
            continue;
        if (best >= 0) {
            uint64_t load_i = ((uint64_t)b->active[i] + 1) * b->o->servers[best].weight;
            uint64_t load_best = ((uint64_t)b->active[best] + 1) * b->o->servers[i].weight;
            if (load_i >= load_best)
                continue;
        }
        best = (int)i;
    }
    if (best >= 0)
        b->lc_cursor = ((size_t)best + 1) % b->n;
    return best;
}

/* Index of the first point whose hash is >= h, wrapping to 0 past the end. */
static size_t ring_lower_bound(const struct vg_proxy_balancer *b, uint64_t h)
{
    size_t lo = 0, hi = b->n_ring;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (b->ring[mid].hash < h)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo == b->n_ring ? 0 : lo;
}

/* The owner of the key's point, or else the next distinct usable server
 * clockwise: keys of an unusable server spread over the others while every
 * other key stays put. Each server is asked at most once per pick. */
static int pick_hash(struct vg_proxy_balancer *b, vg_proxy_usable_fn usable, void *ctx, uint64_t tried, const char *key,
                     size_t key_len)
{
    size_t pos = ring_lower_bound(b, hash_key(key, key_len));
    memset(b->seen, 0, b->seen_words * sizeof(*b->seen));
    size_t rejected = 0;
    for (size_t k = 0; k < b->n_ring && rejected < b->n; k++) {
        uint32_t s = b->ring[(pos + k) % b->n_ring].server;
        uint64_t bit = 1ull << (s % 64);
        if (b->seen[s / 64] & bit)
            continue;
        if (candidate(usable, ctx, tried, s))
            return (int)s;
        b->seen[s / 64] |= bit;
        rejected++;
    }
    return -1;
}

int vg_proxy_balancer_pick(struct vg_proxy_balancer *b, vg_proxy_usable_fn usable, void *ctx, uint64_t tried,
                           const char *key, size_t key_len)
{
    VG_AN(b);
    VG_ASSERT(b->magic == BALANCER_MAGIC);
    VG_AN(usable);
    VG_ASSERT(key || key_len == 0);
    switch (b->o->balance) {
    case VG_CONF_BALANCE_LEAST_CONN:
        return pick_least_conn(b, usable, ctx, tried);
    case VG_CONF_BALANCE_HASH:
        if (key_len > 0)
            return pick_hash(b, usable, ctx, tried, key, key_len);
        return pick_round_robin(b, usable, ctx, tried);
    case VG_CONF_BALANCE_ROUND_ROBIN:
        break;
    }
    return pick_round_robin(b, usable, ctx, tried);
}

void vg_proxy_balancer_acquire(struct vg_proxy_balancer *b, size_t i)
{
    VG_AN(b);
    VG_ASSERT(b->magic == BALANCER_MAGIC);
    VG_ASSERT(i < b->n);
    b->active[i]++;
}

void vg_proxy_balancer_release(struct vg_proxy_balancer *b, size_t i)
{
    VG_AN(b);
    VG_ASSERT(b->magic == BALANCER_MAGIC);
    VG_ASSERT(i < b->n);
    VG_ASSERT(b->active[i] > 0); /* a release without its acquire is a bug */
    b->active[i]--;
}
