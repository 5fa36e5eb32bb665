/* verge top: apps x locations, live — requests per second, p50/p99, 5xx
 * rate and cache hit ratio, refreshed every interval. From the control
 * plane (--control, or the running `verge dev` session's): GET /v1/top,
 * which has the rates already (control_top.c). Or directly: every node is
 * asked for its counters (over NATS: "verge.stats.query"; over HTTP: GET
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
               "  --control URL   read the control plane's figures (GET /v1/top); --token is then its API\n"
               "                  token (default $VERGE_TOKEN)\n"
               "  --node URL      ask this node over HTTP (repeatable; default http://127.0.0.1:8080)\n"
               "  --nats URL      ask every node over NATS instead (repeatable for a cluster)\n"
               "  --token T       the nodes' admin token for HTTP (default $VERGE_ADMIN_TOKEN)\n"
               "  --json          one JSON object per refresh (with --control: GET /v1/top's body)\n\n"
               "Without --control, --node or --nats: the running `verge dev` session's control plane.\n");
}

struct top_args {
    struct vg__cli_fleet fleet;
    uint64_t interval_ms, count;
    bool json;
    const char *control; /* --control */
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

static void print_head(const struct top_args *a, size_t nodes, const char *from)
{
    if (isatty(STDOUT_FILENO))
        printf("\033[H\033[2J");
    printf("verge top: %zu nodes, every %.1fs%s%s\n\n", nodes, (double)a->interval_ms / 1000.0, from ? ", from " : "",
           from ? from : "");
    printf("%-20s %-10s %5s %10s %8s %8s %6s %7s\n", "APP", "LOCATION", "NODES", "RPS", "P50 ms", "P99 ms", "5XX%",
           "HIT%");
}

/* p50/p99 < 0: none (no timed request); hit < 0: no cacheable request. */
static void print_row(const char *app, const char *loc, long long nodes, double rps, double p50, double p99, double err,
                      double hit)
{
    char hs[16] = "-", p50s[16] = "-", p99s[16] = "-";
    if (hit >= 0)
        snprintf(hs, sizeof(hs), "%.1f", hit);
    if (p50 >= 0)
        snprintf(p50s, sizeof(p50s), "%.2f", p50);
    if (p99 >= 0)
        snprintf(p99s, sizeof(p99s), "%.2f", p99);
    printf("%-20.20s %-10.10s %5lld %10.1f %8s %8s %6.2f %7s\n", app, loc, nodes, rps, p50s, p99s, err, hs);
}

static void print_table(const struct top_args *a, const struct table *t, size_t nodes)
{
    json_t *out = a->json ? json_pack("{s:I, s:[]}", "nodes", (json_int_t)nodes, "rows") : NULL;
    if (!a->json)
        print_head(a, nodes, NULL);
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
        print_row(r->app, r->location, r->nodes, r->rps, p50, p99, err, hit);
    }
    if (out) {
        char *text = json_dumps(out, JSON_COMPACT);
        printf("%s\n", text);
        free(text);
        json_decref(out);
    }
    fflush(stdout);
}

/* A number of GET /v1/top's, -1 when null or absent. */
static double num(json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    return json_is_number(v) ? json_number_value(v) : -1;
}

/* The control plane's figures: its rows as they are. */
static int run_control(struct top_args *a, const char *url, const char *token)
{
    struct vg__cli_control cc;
    int rc = vg__cli_control_init(&cc, url, token, "top");
    if (rc)
        return rc;
    signal(SIGINT, on_sigint);
    for (uint64_t round = 0; !stop && (!a->count || round < a->count); round++) {
        uint64_t t0 = vg_now_ms();
        struct vg__cli_response r = {0};
        json_t *j = NULL;
        const char *err = vg__cli_control_call(&cc, "GET", "/v1/top", NULL, NULL, 0, &r, &j);
        if (err || r.status != 200 || !json_is_object(j)) {
            const char *msg = json_string_value(json_object_get(j, "error"));
            if (err)
                fprintf(stderr, "verge top: %s: %s\n", cc.url, err);
            else
                fprintf(stderr, "verge top: %s: GET /v1/top answered %d: %s\n", cc.url, r.status,
                        msg ? msg : "no figures");
            free(r.buf);
            json_decref(j);
            rc = 1;
            break;
        }
        if (a->json) {
            printf("%.*s", (int)r.body_len, r.body);
        } else {
            print_head(a, (size_t)num(j, "nodes"), cc.url);
            size_t i;
            json_t *row;
            json_array_foreach(json_object_get(j, "rows"), i, row)
                print_row(s(row, "app"), s(row, "location"), (long long)num(row, "nodes"), num(row, "rps"),
                          num(row, "p50_ms"), num(row, "p99_ms"), num(row, "error_pct"), num(row, "cache_hit_pct"));
        }
        fflush(stdout);
        free(r.buf);
        json_decref(j);
        while (!stop && vg_now_ms() - t0 < a->interval_ms && (!a->count || round + 1 < a->count))
            usleep(20000);
    }
    return rc;
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
                                         {"control", required_argument, NULL, 'C'},
                                         {"interval", required_argument, NULL, 'i'},
                                         {"count", required_argument, NULL, 'c'},
                                         {"json", no_argument, NULL, 'j'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (vg__cli_fleet_arg(&a->fleet, c, optarg))
            continue;
        switch (c) {
        case 'C':
            a->control = optarg;
            break;
        case 'i':
            if (vg_parse_duration_ms(optarg, &a->interval_ms) != 0 || a->interval_ms < 100) {
                fprintf(stderr, "verge top: --interval takes a duration of at least 100ms: %s\n", optarg);
                return 2;
            }
            break;
        case 'c':
            if (vg_parse_count(optarg, 1, UINT64_MAX, &a->count) != 0) {
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
    if (optind != argc || (a->control && (a->fleet.n_nodes || a->fleet.n_nats))) {
        if (optind == argc)
            fprintf(stderr, "verge top: --control, or --node/--nats: one source\n");
        top_usage(stderr);
        return 2;
    }
    return -1;
}

int vg_cli_top(int argc, char **argv)
{
    struct top_args a = {.interval_ms = 1000};
    int rc = parse(argc, argv, &a);
    json_t *session = NULL;
    if (rc < 0 && !a.control && !a.fleet.n_nodes && !a.fleet.n_nats && (session = vg__cli_dev_session()) != NULL &&
        json_string_value(json_object_get(session, "control_token"))) /* a dev session: its control plane */
        rc = run_control(&a, json_string_value(json_object_get(session, "control")),
                         a.fleet.token ? a.fleet.token : json_string_value(json_object_get(session, "control_token")));
    else if (rc < 0 && a.control)
        rc = run_control(&a, a.control, a.fleet.token);
    if (rc < 0) {
        vg__cli_fleet_defaults(&a.fleet);
        rc = run(&a);
        vg__cli_fleet_close(&a.fleet);
    }
    json_decref(session);
    vg__cli_fleet_free_args(&a.fleet);
    return rc;
}
