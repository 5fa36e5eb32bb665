/* verge top: apps x locations, live — requests per second, p50/p99, 5xx
 * rate and cache hit ratio, refreshed every interval. Every node is asked
 * for its counters (over NATS: "verge.stats.query"; over HTTP: GET
 * /_verge/stats); two snapshots of a node give its rates, and the rows sum
 * the nodes of each location (latency from the summed bucket counts). */
#include "base/base.h"
#include "cli.h"
#include "cli_int.h"
#include "node/node.h"

#include <getopt.h>
#include <jansson.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_BUCKETS 32

static void top_usage(FILE *f)
{
    fprintf(f, "usage: verge top [options]\n\n"
               "  --interval DUR  refresh every DUR (default 1s)\n"
               "  --count N       stop after N refreshes (default: until Ctrl-C)\n"
               "  --node URL      ask this node over HTTP (repeatable; default http://127.0.0.1:8080)\n"
               "  --nats URL      ask every node over NATS instead (repeatable for a cluster)\n"
               "  --token T       the nodes' admin token for HTTP (default $VERGE_ADMIN_TOKEN)\n"
               "  --json          one JSON object per refresh\n");
}

struct top_args {
    struct vg__cli_fleet fleet;
    uint64_t interval_ms, count;
    bool json;
};

/* One (app, location) row: the nodes' deltas summed. */
struct row {
    char app[64], location[64];
    int nodes;
    double rps;
    uint64_t requests, errors, cache_hit, cache_all;
    uint64_t lat[MAX_BUCKETS];
};

struct table {
    struct row *rows;
    size_t n;
    uint64_t bounds_us[MAX_BUCKETS];
    size_t n_bounds;
};

static volatile sig_atomic_t stop;

static void on_sigint(int sig)
{
    (void)sig;
    stop = 1;
}

static const char *s(json_t *o, const char *k)
{
    const char *v = json_string_value(json_object_get(o, k));
    return v ? v : "";
}

static uint64_t u(json_t *o, const char *k)
{
    json_int_t v = json_integer_value(json_object_get(o, k));
    return v > 0 ? (uint64_t)v : 0;
}

/* later - earlier, 0 when the counter went backwards (the node restarted). */
static uint64_t delta(uint64_t later, uint64_t earlier)
{
    return later >= earlier ? later - earlier : 0;
}

static struct row *row_for(struct table *t, const char *app, const char *loc)
{
    for (size_t i = 0; i < t->n; i++)
        if (strcmp(t->rows[i].app, app) == 0 && strcmp(t->rows[i].location, loc) == 0)
            return &t->rows[i];
    t->rows = vg_xrealloc(t->rows, (t->n + 1) * sizeof(*t->rows));
    struct row *r = &t->rows[t->n++];
    memset(r, 0, sizeof(*r));
    snprintf(r->app, sizeof(r->app), "%s", app);
    snprintf(r->location, sizeof(r->location), "%s", *loc ? loc : "-");
    return r;
}

static void add_cache(struct row *r, json_t *now, json_t *before)
{
    static const char *const results[] = {"hit", "miss", "stale", "bypass"};
    for (size_t k = 0; k < 4; k++) {
        uint64_t d = delta(u(now, results[k]), u(before, results[k]));
        if (k == 0)
            r->cache_hit += d;
        if (k < 3) /* bypass: not for the cache */
            r->cache_all += d;
    }
}

/* One node's app between two snapshots into its row. */
static void add_app(struct table *t, const char *loc, const char *app, json_t *now, json_t *before, double dt_s)
{
    struct row *r = row_for(t, app, loc);
    uint64_t req = delta(u(now, "requests"), u(before, "requests"));
    r->nodes++;
    r->requests += req;
    r->rps += dt_s > 0 ? (double)req / dt_s : 0;
    r->errors += delta(u(now, "errors_5xx"), u(before, "errors_5xx"));
    json_t *ln = json_object_get(now, "latency"), *lb = json_object_get(before, "latency");
    for (size_t b = 0; b < json_array_size(ln) && b < MAX_BUCKETS; b++)
        r->lat[b] += delta((uint64_t)json_integer_value(json_array_get(ln, b)),
                           (uint64_t)json_integer_value(json_array_get(lb, b)));
    add_cache(r, json_object_get(now, "cache"), json_object_get(before, "cache"));
}

/* Rows from this round's snapshots against the previous round's (by node). */
static void build(struct table *t, json_t *answers, json_t *prev)
{
    size_t i;
    json_t *ans;
    json_array_foreach(answers, i, ans)
    {
        const char *key = json_object_get(ans, "node_url") ? s(ans, "node_url") : s(ans, "node");
        json_t *before = json_object_get(prev, key);
        json_t *bounds = json_object_get(ans, "latency_bounds_us");
        t->n_bounds = json_array_size(bounds) < MAX_BUCKETS ? json_array_size(bounds) : MAX_BUCKETS - 1;
        for (size_t b = 0; b < t->n_bounds; b++)
            t->bounds_us[b] = (uint64_t)json_integer_value(json_array_get(bounds, b));
        if (before) {
            double dt = (double)delta(u(ans, "time_us"), u(before, "time_us")) / 1e6;
            const char *app;
            json_t *now_app;
            json_object_foreach(json_object_get(ans, "apps"), app, now_app)
                add_app(t, s(ans, "location"), app, now_app, json_object_get(json_object_get(before, "apps"), app), dt);
        }
        json_object_set(prev, key, ans);
    }
}

/* The q-quantile in ms from bucket counts (linear within a bucket; past the
 * last bound: the last bound). */
static double quantile_ms(const struct table *t, const struct row *r, double q)
{
    uint64_t total = 0, seen = 0;
    for (size_t b = 0; b <= t->n_bounds; b++)
        total += r->lat[b];
    if (!total)
        return 0;
    double want = q * (double)total;
    for (size_t b = 0; b <= t->n_bounds; b++) {
        if ((double)(seen + r->lat[b]) >= want && r->lat[b]) {
            double lo = b ? (double)t->bounds_us[b - 1] : 0;
            double hi = b < t->n_bounds ? (double)t->bounds_us[b] : lo;
            return (lo + (hi - lo) * (want - (double)seen) / (double)r->lat[b]) / 1000.0;
        }
        seen += r->lat[b];
    }
    return t->n_bounds ? (double)t->bounds_us[t->n_bounds - 1] / 1000.0 : 0;
}

static void print_table(const struct top_args *a, const struct table *t, size_t nodes)
{
    json_t *out = a->json ? json_pack("{s:I, s:[]}", "nodes", (json_int_t)nodes, "rows") : NULL;
    if (!a->json) {
        if (isatty(STDOUT_FILENO))
            printf("\033[H\033[2J");
        printf("verge top: %zu nodes, every %.1fs\n\n", nodes, (double)a->interval_ms / 1000.0);
        printf("%-20s %-10s %5s %10s %8s %8s %6s %7s\n", "APP", "LOCATION", "NODES", "RPS", "P50 ms", "P99 ms", "5XX%",
               "HIT%");
    }
    for (size_t i = 0; i < t->n; i++) {
        const struct row *r = &t->rows[i];
        double p50 = quantile_ms(t, r, 0.5), p99 = quantile_ms(t, r, 0.99);
        double err = r->requests ? 100.0 * (double)r->errors / (double)r->requests : 0;
        double hit = r->cache_all ? 100.0 * (double)r->cache_hit / (double)r->cache_all : -1;
        if (out) {
            json_array_append_new(json_object_get(out, "rows"),
                                  json_pack("{s:s, s:s, s:i, s:f, s:f, s:f, s:f, s:o}", "app", r->app, "location",
                                            r->location, "nodes", r->nodes, "rps", r->rps, "p50_ms", p50, "p99_ms", p99,
                                            "error_pct", err, "cache_hit_pct", hit < 0 ? json_null() : json_real(hit)));
            continue;
        }
        char hs[16] = "-";
        if (hit >= 0)
            snprintf(hs, sizeof(hs), "%.1f", hit);
        printf("%-20.20s %-10.10s %5d %10.1f %8.2f %8.2f %6.2f %7s\n", r->app, r->location, r->nodes, r->rps, p50, p99,
               err, hs);
    }
    if (out) {
        char *text = json_dumps(out, JSON_COMPACT);
        printf("%s\n", text);
        free(text);
        json_decref(out);
    }
    fflush(stdout);
}

static void stats_path(void *arg, const char *url, char *path, size_t cap)
{
    (void)arg;
    (void)url;
    snprintf(path, cap, "/_verge/stats");
}

static int run(struct top_args *a)
{
    if (vg__cli_fleet_open(&a->fleet, "verge top") != 0)
        return 1;
    json_t *prev = json_object();
    signal(SIGINT, on_sigint);
    int rc = 0;
    uint32_t wait = a->interval_ms > 600 ? 300 : (uint32_t)(a->interval_ms / 2);
    for (uint64_t round = 0; !stop && (!a->count || round <= a->count); round++) {
        uint64_t t0 = vg_now_ms();
        json_t *answers = vg__cli_fleet_ask(&a->fleet, VG_NODE_STATS_SUBJECT, "{}", wait, stats_path, NULL);
        struct table t = {0};
        build(&t, answers, prev);
        if (round > 0) /* the first round only sets the baseline */
            print_table(a, &t, json_array_size(answers));
        if (!json_array_size(answers) && round == 0) {
            fprintf(stderr, "verge top: no node answered\n");
            rc = 1;
            stop = 1;
        }
        free(t.rows);
        json_decref(answers);
        uint64_t spent = vg_now_ms() - t0;
        while (!stop && spent < a->interval_ms && (!a->count || round < a->count)) {
            usleep(20000);
            spent = vg_now_ms() - t0;
        }
    }
    json_decref(prev);
    return rc;
}

static int parse(int argc, char **argv, struct top_args *a)
{
    static const struct option opts[] = {VG__CLI_FLEET_OPTIONS,
                                         {"interval", required_argument, NULL, 'i'},
                                         {"count", required_argument, NULL, 'c'},
                                         {"json", no_argument, NULL, 'j'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    int c;
    char *end;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (vg__cli_fleet_arg(&a->fleet, c, optarg))
            continue;
        switch (c) {
        case 'i':
            if (vg_parse_duration_ms(optarg, &a->interval_ms) != 0 || a->interval_ms < 100) {
                fprintf(stderr, "verge top: --interval takes a duration of at least 100ms: %s\n", optarg);
                return 2;
            }
            break;
        case 'c':
            a->count = strtoull(optarg, &end, 10);
            if (*end || !a->count) {
                fprintf(stderr, "verge top: --count takes a positive number: %s\n", optarg);
                return 2;
            }
            break;
        case 'j':
            a->json = true;
            break;
        case 'h':
            top_usage(stdout);
            return 0;
        default:
            top_usage(stderr);
            return 2;
        }
    }
    if (optind != argc) {
        top_usage(stderr);
        return 2;
    }
    return -1;
}

int vg_cli_top(int argc, char **argv)
{
    struct top_args a = {.interval_ms = 1000};
    int rc = parse(argc, argv, &a);
    if (rc < 0) {
        vg__cli_fleet_defaults(&a.fleet);
        rc = run(&a);
        vg__cli_fleet_close(&a.fleet);
    }
    vg__cli_fleet_free_args(&a.fleet);
    return rc;
}
