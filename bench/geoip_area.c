/* The per-request cost of a client area with --geoip (node_area.c):
 * vg__node_client_area on a request whose connection's peer is
 *   - the same address every time (a steady client: the worker's cache),
 *   - a different address every time (1M random IPv4 addresses, so nearly
 *     every call misses the 1,024-slot cache and looks up the database:
 *     its search tree, two values, the nearest of the 64 locations),
 * and, for reference, with no database (the node's own area).
 *
 *   make bench-geoip GEOIP_DB=FILE   (default: a synthetic database that
 *                                     bench/geoip_mkdb.pl writes)
 *   build/bench/geoip_area FILE [hit|miss N]   (one case, N calls: for
 *                                     valgrind --tool=callgrind) */
#include "node/node_int.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define ROUNDS 7
#define CALLS 2000000
#define ADDRS (1u << 20)

static struct sockaddr_in peer = {.sin_family = AF_INET};

static socklen_t get_peername(h2o_conn_t *conn, struct sockaddr *sa)
{
    memcpy(sa, &peer, sizeof(peer));
    return sizeof(peer);
}

static const h2o_conn_callbacks_t callbacks = {.get_peername = get_peername};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static struct vg_node node;
static struct vg_worker worker;
static h2o_conn_t conn = {.callbacks = &callbacks};
static h2o_req_t req;
static uint32_t *addrs;
static volatile uint32_t sink;

/* calls to vg__node_client_area: the same peer, or the next of addrs */
static void calls(size_t n, bool vary)
{
    for (size_t i = 0; i < n; i++) {
        if (vary)
            peer.sin_addr.s_addr = addrs[i & (ADDRS - 1)];
        sink += vg__node_client_area(&worker, &req);
    }
}

static double ns_per_call(bool vary)
{
    double r[ROUNDS];
    for (int k = 0; k < ROUNDS; k++) {
        uint64_t t0 = now_ns();
        calls(CALLS, vary);
        r[k] = (double)(now_ns() - t0) / CALLS;
    }
    qsort(r, ROUNDS, sizeof(r[0]), cmp);
    return r[ROUNDS / 2];
}

int main(int argc, char **argv)
{
    if (argc != 2 && argc != 4) {
        fprintf(stderr, "usage: %s FILE.mmdb [hit|miss N]\n", argv[0]);
        return 2;
    }
    node.opt.geoip = argv[1];
    node.opt.location = "fra";
    if (vg_geo_set_builtin(&node.geo) != 0 || vg__node_geoip_open(&node) != 0)
        return 1;
    node.own_area = 0;
    worker.node = &node;
    worker.area_cache = vg__node_area_cache_create(&node);
    req.conn = &conn;
    addrs = malloc(ADDRS * sizeof(*addrs));
    uint64_t x = 42;
    for (size_t i = 0; i < ADDRS; i++) { /* xorshift: random unicast IPv4 */
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        addrs[i] = htonl((uint32_t)(((1 + x % 223) << 24) | ((x >> 8) & 0xffffff)));
    }
    peer.sin_addr.s_addr = addrs[0];
    size_t found = 0;
    for (size_t i = 0; i < 10000; i++) {
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = addrs[i]};
        found += vg__node_area_of_addr(&node, worker.area_cache, (struct sockaddr *)&a, sizeof(a)) != node.own_area;
    }
    if (argc == 4) {
        calls(1, false); /* the cache holds the steady peer */
        calls(strtoul(argv[3], NULL, 10), strcmp(argv[2], "miss") == 0);
    } else {
        double hit = ns_per_call(false), miss = ns_per_call(true);
        struct vg__node_area_cache *c = worker.area_cache;
        struct MMDB_s *db = node.geoip;
        node.geoip = NULL, worker.area_cache = NULL;
        double none = ns_per_call(false);
        node.geoip = db, worker.area_cache = c;
        printf("vg__node_client_area, ns per call (median of %d rounds of %d calls)\n", ROUNDS, CALLS);
        printf("  cache hit (steady client):          %6.1f\n", hit);
        printf("  cache miss (a new address per call): %6.1f\n", miss);
        printf("  no database (own area):             %6.1f\n", none);
        printf("(the database placed %zu of 10000 random addresses away from fra)\n", found);
    }
    vg__node_area_cache_destroy(worker.area_cache);
    vg__node_geoip_close(&node);
    vg_geo_set_destroy(node.geo);
    free(addrs);
    return 0;
}
