/* Cache store simulator: hit ratio of S3-FIFO (the store's policy) against
 * plain LRU on a Zipf key stream with a one-off scan in the middle, equal
 * byte budgets, the real store for both (vg__cache_opts.policy); and, with
 * --overhead, the store's bytes per small object beyond its payload.
 *
 *   make cache-sim                  # both
 *   build/bench/cache_sim --overhead 1000000
 */
#include "cache/cache_int.h"

#include <math.h>
#include <string.h>
#include <unistd.h>

#define NOW 1700000000

static uint64_t rng = 0x9E3779B97F4A7C15ull;

static double uniform(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0;
}

/* Zipf(alpha) over n ranks by inverse CDF. */
static double *zipf_cdf(size_t n, double alpha)
{
    double *cdf = vg_xmalloc(n * sizeof(*cdf)), sum = 0;
    for (size_t i = 0; i < n; i++)
        cdf[i] = sum += 1.0 / pow((double)(i + 1), alpha);
    for (size_t i = 0; i < n; i++)
        cdf[i] /= sum;
    return cdf;
}

static size_t zipf_draw(const double *cdf, size_t n)
{
    double u = uniform();
    size_t lo = 0, hi = n - 1;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cdf[mid] < u)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static struct vg_cache_meta meta(void)
{
    return (struct vg_cache_meta){.request_time = NOW,
                                  .response_time = NOW,
                                  .date = NOW,
                                  .lifetime = 1 << 30,
                                  .swr = -1,
                                  .sie = -1,
                                  .last_modified = -1};
}

/* One request: a hit, or a miss that stores the object. */
static bool request(struct vg_cache *c, const char *prefix, size_t id, const char *body, size_t body_len)
{
    char key[64];
    int kl = snprintf(key, sizeof(key), "sim.example\n/%s/%zu", prefix, id);
    h2o_iovec_t k = h2o_iovec_init(key, (size_t)kl);
    struct vg_cache_obj *o = vg_cache_lookup(c, k, NULL, NOW, NULL);
    if (o) {
        vg_cache_obj_release(o);
        return true;
    }
    struct vg_cache_meta m = meta();
    o = vg_cache_obj_new(k, h2o_iovec_init("", 0), h2o_iovec_init("", 0), 200, NULL, &m, NULL, 0);
    VG_AN(o);
    VG_AZ(vg_cache_obj_append(o, body, body_len, body_len));
    vg_cache_insert(c, o);
    return false;
}

struct result {
    double all, after_scan;
};

static struct result run(enum vg__cache_policy policy, double alpha, size_t keys, size_t requests, size_t scan,
                         size_t budget)
{
    struct vg_cache_config cfg = {.mem_bytes = budget};
    struct vg__cache_opts opts = {.n_shards = 1, .policy = policy};
    struct vg_cache *c;
    VG_AZ(vg__cache_create_ex(&cfg, &opts, &c));
    static char body[1000];
    double *cdf = zipf_cdf(keys, alpha);
    rng = 0x9E3779B97F4A7C15ull; /* the same stream for every policy */
    size_t hits = 0, after_hits = 0, after_n = 0;
    for (size_t i = 0; i < requests; i++) {
        if (i == requests / 2)
            for (size_t s = 0; s < scan; s++)
                request(c, "scan", s, body, sizeof(body));
        bool hit = request(c, "obj", zipf_draw(cdf, keys), body, sizeof(body));
        hits += hit;
        if (i >= requests / 2 && i < requests / 2 + requests / 10) {
            after_hits += hit;
            after_n++;
        }
    }
    vg_cache_destroy(c);
    free(cdf);
    return (struct result){(double)hits / (double)requests, (double)after_hits / (double)after_n};
}

static void simulate(void)
{
    const size_t keys = 100000, requests = 1000000, scan = 200000, per_obj = 1100;
    printf("Zipf over %zu keys, %zu requests (1000-byte bodies), a scan of %zu new keys at the middle\n", keys,
           requests, scan);
    printf("hit ratio over all requests / over the 100k requests right after the scan\n\n");
    printf("%-6s %-8s %-22s %-22s\n", "alpha", "budget", "S3-FIFO", "LRU");
    const double alphas[] = {0.9, 1.0};
    const double fracs[] = {0.01, 0.05, 0.10};
    for (size_t a = 0; a < 2; a++)
        for (size_t f = 0; f < 3; f++) {
            size_t budget = (size_t)(fracs[f] * (double)keys * per_obj);
            struct result s3 = run(VG__CACHE_S3FIFO, alphas[a], keys, requests, scan, budget);
            struct result lru = run(VG__CACHE_LRU, alphas[a], keys, requests, scan, budget);
            printf("%-6.1f %3.0f%%     %.4f / %.4f        %.4f / %.4f\n", alphas[a], fracs[f] * 100, s3.all,
                   s3.after_scan, lru.all, lru.after_scan);
        }
}

static size_t rss_bytes(void)
{
    long pages = 0, rss = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &rss) != 2)
            rss = 0;
        fclose(f);
    }
    return (size_t)rss * (size_t)sysconf(_SC_PAGESIZE);
}

/* n objects: a 40-byte key, two headers (33 bytes of names and values),
 * a 200-byte body. */
static void overhead(size_t n)
{
    h2o_mem_pool_t pool;
    h2o_mem_init_pool(&pool);
    h2o_headers_t res = {NULL, 0, 0};
    h2o_add_header_by_str(&pool, &res, H2O_STRLIT("content-type"), 0, NULL, H2O_STRLIT("text/html"));
    h2o_add_header_by_str(&pool, &res, H2O_STRLIT("etag"), 0, NULL, H2O_STRLIT("\"5f3c1a\""));
    struct vg_cache_config cfg = {.mem_bytes = (size_t)4 << 30};
    struct vg_cache *c;
    VG_AZ(vg_cache_create(&cfg, &c));
    char key[64], body[200];
    memset(body, 'o', sizeof(body));
    size_t payload = 0, rss0 = rss_bytes();
    struct vg_cache_meta m = meta();
    for (size_t i = 0; i < n; i++) {
        int kl = snprintf(key, sizeof(key), "www.example.com\n/static/img/%08zu.png", i);
        struct vg_cache_obj *o = vg_cache_obj_new(h2o_iovec_init(key, (size_t)kl), h2o_iovec_init("", 0),
                                                  h2o_iovec_init("", 0), 200, &res, &m, NULL, 0);
        VG_AZ(vg_cache_obj_append(o, body, sizeof(body), sizeof(body)));
        vg_cache_insert(c, o);
        payload += (size_t)kl + 12 + 9 + 4 + 8 + sizeof(body);
    }
    size_t rss1 = rss_bytes();
    struct vg_cache_stats st;
    vg_cache_stats(c, &st);
    printf("%zu objects: payload (key + header names/values + body) %.1f bytes each\n", n, (double)payload / n);
    printf("  counted by the store: %.1f bytes of overhead per object\n", (double)(st.bytes - payload) / n);
    printf("  RSS growth:           %.1f bytes of overhead per object\n", ((double)rss1 - rss0 - payload) / n);
    vg_cache_destroy(c);
    h2o_mem_clear_pool(&pool);
}

int main(int argc, char **argv)
{
    vg_log_set_level(VG_LOG_ERROR);
    if (argc > 1 && strcmp(argv[1], "--overhead") == 0) {
        overhead(argc > 2 ? strtoul(argv[2], NULL, 10) : 1000000);
        return 0;
    }
    if (argc > 1 && strcmp(argv[1], "--sim") == 0) {
        simulate();
        return 0;
    }
    overhead(1000000);
    printf("\n");
    simulate();
    return 0;
}
