/* The placement engine's benchmark (make bench-sched): a full placement of
 * N apps over M locations on one thread (pinned to one core by the
 * caller) and on two (both cores of the machine: the bench widens its own
 * CPU mask for those runs), an incremental update after one app's demand
 * changes, placements per second against published figures of
 * general-purpose schedulers, and the optimality gap against exhaustive
 * search on small worlds. Numbers: docs/decisions.md, "Scheduler". */
#include "geo/geo.h"
#include "sched/sched.h"

#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define KUBE_PODS_PER_S 300.0  /* kube-scheduler, 30k nodes (scheduling throughput SLO tests) */
#define NOMAD_C1M_PER_S 3750.0 /* Nomad C1M: 1M containers on 5k hosts in under 5 minutes */
#define FULL_RUNS 7
#define PAR_THREADS 2
#define UPDATES 200

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Busy and all jiffies of the CPUs in set since boot (/proc/stat). */
static void cpu_jiffies(const cpu_set_t *set, unsigned long long *busy, unsigned long long *all)
{
    *busy = *all = 0;
    FILE *f = fopen("/proc/stat", "r");
    char line[512];
    while (f && fgets(line, sizeof(line), f)) {
        int cpu;
        unsigned long long v[8];
        if (sscanf(line, "cpu%d %llu %llu %llu %llu %llu %llu %llu %llu", &cpu, &v[0], &v[1], &v[2], &v[3], &v[4],
                   &v[5], &v[6], &v[7]) != 9 ||
            cpu < 0 || cpu >= CPU_SETSIZE || !CPU_ISSET(cpu, set))
            continue;
        unsigned long long sum = v[0] + v[1] + v[2] + v[3] + v[4] + v[5] + v[6] + v[7];
        *all += sum;
        *busy += sum - v[3] - v[4]; /* less idle and iowait */
    }
    if (f)
        fclose(f);
}

static struct vg_sched_sim_point *cities(size_t *n)
{
    struct vg_geo_set *set = NULL;
    if (vg_geo_set_builtin(&set) != 0)
        exit(1);
    *n = vg_geo_set_count(set);
    struct vg_sched_sim_point *pts = calloc(*n, sizeof(*pts));
    for (size_t i = 0; i < *n; i++) {
        const struct vg_geo_location *l = vg_geo_set_at(set, i);
        pts[i].lat = l->lat;
        pts[i].lon = l->lon;
        memcpy(pts[i].country, l->country, 3);
        snprintf(pts[i].region, sizeof(pts[i].region), "%s", l->region);
    }
    vg_geo_set_destroy(set);
    return pts;
}

static void full_and_incremental(size_t n_locs, size_t n_apps)
{
    size_t n_cities;
    struct vg_sched_sim_point *pts = cities(&n_cities);
    struct vg_sched_sim *sim = NULL;
    double t0 = now_ms();
    if (vg_sched_sim_create(pts, n_cities, n_locs, n_apps, 1, &sim) != 0)
        exit(1);
    double build = now_ms() - t0;
    const struct vg_sched_world *w = vg_sched_sim_world(sim);
    size_t na;
    const struct vg_sched_app *apps = vg_sched_sim_apps(sim, &na);
    const struct vg_sched_demand *d = vg_sched_sim_demand(sim, 90); /* 15:00 UTC: Europe and the Americas busy */
    double full[FULL_RUNS], par[FULL_RUNS];
    struct vg_sched_plan *plan = NULL;
    struct vg_sched_error err;
    /* one thread on the core we were given, two on every core: run
     * alternately, so that both see the same machine */
    cpu_set_t one, all;
    if (sched_getaffinity(0, sizeof(one), &one) != 0)
        exit(1);
    CPU_ZERO(&all);
    for (int c = 0; c < PAR_THREADS; c++)
        CPU_SET(c, &all);
    /* the other cores should be idle while one thread runs: if they are
     * not, other work holds them, and the two-thread figures say so */
    cpu_set_t others;
    CPU_XOR(&others, &all, &one);
    CPU_AND(&others, &others, &all);
    unsigned long long o_busy = 0, o_all = 0;
    uint64_t digest[2] = {0, 0};
    for (int r = 0; r < 2 * FULL_RUNS; r++) {
        unsigned threads = r % 2 ? PAR_THREADS : 1;
        if (sched_setaffinity(0, sizeof(cpu_set_t), threads > 1 ? &all : &one) != 0)
            threads = 1;
        vg_sched_plan_destroy(plan);
        plan = NULL;
        unsigned long long b0, a0, b1, a1;
        cpu_jiffies(&others, &b0, &a0);
        t0 = now_ms();
        if (vg_sched_place_threads(w, apps, na, d, NULL, threads, &plan, &err) != 0) {
            fprintf(stderr, "place: %s\n", err.msg);
            exit(1);
        }
        (r % 2 ? par : full)[r / 2] = now_ms() - t0;
        cpu_jiffies(&others, &b1, &a1);
        if (threads == 1)
            o_busy += b1 - b0, o_all += a1 - a0;
        digest[r % 2] = vg_sched_plan_digest(plan);
    }
    if (sched_setaffinity(0, sizeof(one), &one) != 0)
        exit(1);
    if (digest[0] != digest[1]) {
        fprintf(stderr, "place: %d threads gave another plan than one\n", PAR_THREADS);
        exit(1);
    }
    qsort(full, FULL_RUNS, sizeof(*full), cmp_d);
    qsort(par, FULL_RUNS, sizeof(*par), cmp_d);
    struct vg_sched_use use;
    vg_sched_plan_use(w, plan, &use);
    char why[200];
    size_t viol = vg_sched_plan_verify(w, apps, na, plan, why, sizeof(why));

    /* incremental: one app's demand triples (a flash crowd), that app is re-placed */
    struct vg_sched_demand *d2 = malloc(na * sizeof(*d2));
    memcpy(d2, d, na * sizeof(*d2));
    double upd[UPDATES];
    for (int u = 0; u < UPDATES; u++) {
        uint32_t a = (uint32_t)((u * 7919u) % na);
        struct vg_sched_demand_entry *e = malloc((d[a].n + 1) * sizeof(*e));
        for (size_t i = 0; i < d[a].n; i++)
            e[i] = (struct vg_sched_demand_entry){d[a].e[i].area, d[a].e[i].mrps * (i % 2 ? 3 : 1)};
        d2[a] = (struct vg_sched_demand){e, d[a].n};
        t0 = now_ms();
        if (vg_sched_update(w, apps, na, d2, plan, a, &err) != 0)
            exit(1);
        upd[u] = now_ms() - t0;
        d2[a] = d[a];
        free(e);
    }
    qsort(upd, UPDATES, sizeof(*upd), cmp_d);
    viol += vg_sched_plan_verify(w, apps, na, plan, why, sizeof(why));
    double med = full[FULL_RUNS / 2], pps = (double)use.placements / (med / 1000.0), aps = (double)na / (med / 1000.0);
    double pmed = par[FULL_RUNS / 2], ppps = (double)use.placements / (pmed / 1000.0);
    printf("world: %zu locations, %zu client areas, %zu apps (built in %.0f ms)\n", n_locs, vg_sched_world_n_areas(w),
           na, build);
    printf("full placement, 1 thread: median %.1f ms, best %.1f ms, worst %.1f ms of %d (floor < 1000 ms); %llu "
           "placements, %.1f%% of slots; violations %zu\n",
           med, full[0], full[FULL_RUNS - 1], FULL_RUNS, (unsigned long long)use.placements,
           100.0 * (double)use.slots_used / (double)use.slots_total, viol);
    printf("full placement, %d threads on %d cores: median %.1f ms, best %.1f ms, worst %.1f ms of %d (the same plan: "
           "digest %016llx)\n",
           PAR_THREADS, PAR_THREADS, pmed, par[0], par[FULL_RUNS - 1], FULL_RUNS, (unsigned long long)digest[0]);
    printf("incremental update (one app's demand changed): median %.3f ms, p99 %.3f ms, max %.3f ms of %d "
           "(floor < 10 ms)\n",
           upd[UPDATES / 2], upd[UPDATES * 99 / 100], upd[UPDATES - 1], UPDATES);
    printf("throughput, 1 thread: %.0f placements/s (%.0f apps/s): %.0fx kube-scheduler (%.0f pods/s), %.1fx Nomad "
           "C1M (%.0f/s); incremental: %.0f app re-placements/s\n",
           pps, aps, pps / KUBE_PODS_PER_S, KUBE_PODS_PER_S, pps / NOMAD_C1M_PER_S, NOMAD_C1M_PER_S,
           1000.0 / upd[UPDATES / 2]);
    printf("throughput, %d threads: %.0f placements/s: %.0fx kube-scheduler, %.1fx Nomad C1M\n", PAR_THREADS, ppps,
           ppps / KUBE_PODS_PER_S, ppps / NOMAD_C1M_PER_S);
    if (o_all) {
        double share = 100.0 * (double)o_busy / (double)o_all;
        printf("the other core%s, while one thread ran: %.0f%% busy%s\n", CPU_COUNT(&others) > 1 ? "s" : "", share,
               share > 10 ? " with other work: the two-thread figures are low" : "");
    }
    vg_sched_plan_destroy(plan);
    free(d2);
    vg_sched_sim_destroy(sim);
    free(pts);
}

/* Small worlds of 12 random towers around random cities, 40 client areas:
 * the greedy (+ local search) against every subset of the same size. */
static void optimality_gap(int instances)
{
    size_t n_cities;
    struct vg_sched_sim_point *pts = cities(&n_cities);
    struct vg_sched_rng r;
    vg_sched_rng_seed(&r, 2026);
    double sum = 0, worst = 0;
    int optimal = 0, n = 0;
    for (int inst = 0; inst < instances; inst++) {
        struct vg_sched_location locs[12];
        struct vg_sched_area areas[40];
        size_t c0 = vg_sched_rng_below(&r, n_cities);
        for (size_t i = 0; i < 12 + 40; i++) {
            /* a cluster of nearby cities (the next few in the list share regions often) */
            const struct vg_sched_sim_point *c = &pts[(c0 + vg_sched_rng_below(&r, 8)) % n_cities];
            double lat = c->lat + (vg_sched_rng_unit(&r) - 0.5) * 6, lon = c->lon + (vg_sched_rng_unit(&r) - 0.5) * 6;
            lat = lat > 89 ? 89 : lat < -89 ? -89 : lat;
            lon = lon > 180 ? lon - 360 : lon < -180 ? lon + 360 : lon;
            if (i < 12) {
                memset(&locs[i], 0, sizeof(locs[i]));
                snprintf(locs[i].id, sizeof(locs[i].id), "l%u", (unsigned)i);
                memcpy(locs[i].country, c->country, 3);
                memcpy(locs[i].region, c->region, sizeof(locs[i].region));
                locs[i].lat = lat, locs[i].lon = lon;
                locs[i].cpu_m = 8000, locs[i].mem_mib = 8192, locs[i].slots = 8, locs[i].cost = 1;
            } else {
                struct vg_sched_area *a = &areas[i - 12];
                memset(a, 0, sizeof(*a));
                memcpy(a->country, c->country, 3);
                memcpy(a->region, c->region, sizeof(a->region));
                a->lat = lat, a->lon = lon;
            }
        }
        struct vg_sched_world *w = NULL;
        if (vg_sched_world_create(locs, 12, areas, 40, NULL, 0, &w) != 0)
            exit(1);
        struct vg_sched_demand_entry e[40];
        for (uint32_t i = 0; i < 40; i++)
            e[i] = (struct vg_sched_demand_entry){i, 100 + (uint32_t)vg_sched_rng_below(&r, 100000)};
        struct vg_sched_demand d = {e, 40};
        struct vg_sched_app app = {.name = "gap",
                                   .cpu_m = 100,
                                   .mem_mib = 64,
                                   .mode = VG_SCHED_DYNAMIC,
                                   .target_us = 1000,
                                   .percentile = 100,
                                   .min_locs = 1,
                                   .max_locs = 2 + (uint32_t)vg_sched_rng_below(&r, 5),
                                   .scale_in_steps = 1};
        struct vg_sched_plan *p = NULL;
        struct vg_sched_error err;
        if (vg_sched_place(w, &app, 1, &d, NULL, &p, &err) != 0)
            exit(1);
        const uint32_t *chosen;
        size_t k = vg_sched_plan_locations(p, 0, &chosen);
        uint32_t best[12];
        uint64_t opt = vg_sched_exact(w, &app, &d, k, best), got = vg_sched_cost(w, &app, &d, chosen, k);
        if (opt != UINT64_MAX && opt > 0) {
            double gap = (double)(got - opt) / (double)opt;
            sum += gap;
            worst = gap > worst ? gap : worst;
            optimal += got == opt;
            n++;
        }
        vg_sched_plan_destroy(p);
        vg_sched_world_destroy(w);
    }
    printf("optimality gap (12 locations, 40 areas, 2-6 chosen; %d instances): mean %.3f%%, worst %.3f%%, optimal "
           "in %d (%.0f%%)\n",
           n, 100 * sum / n, 100 * worst, optimal, 100.0 * optimal / n);
    free(pts);
}

int main(int argc, char **argv)
{
    /* bench/sched.sh [LOCATIONS [APPS [GAP_INSTANCES]]] */
    size_t locs = argc > 1 ? strtoul(argv[1], NULL, 10) : 10000, apps = argc > 2 ? strtoul(argv[2], NULL, 10) : 1000;
    int gap = argc > 3 ? atoi(argv[3]) : 300;
    full_and_incremental(locs, apps);
    if (gap > 0)
        optimality_gap(gap);
    return 0;
}
