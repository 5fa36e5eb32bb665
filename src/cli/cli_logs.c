/* verge logs: recent and live log lines of every node, merged in time
 * order. Nodes are asked over NATS ("verge.logs.query": every node
 * answers) or over HTTP (GET /_verge/logs on the nodes named); each keeps a
 * cursor per node, so a follow (-f) polls for what came after it. The
 * nodes filter and sample; when a node had more lines than the limit, a
 * note on stderr says how many it sampled. Human lines by default, the
 * nodes' JSON objects with --json. */
#include "base/base.h"
#include "cli.h"
#include "cli_int.h"
#include "node/node.h"
#include "obs/obs.h"

#include <getopt.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void logs_usage(FILE *f)
{
    fprintf(f, "usage: verge logs [-f] [options]\n\n"
               "  -f, --follow       keep printing new lines (Ctrl-C stops)\n"
               "  --app NAME         lines of this app only\n"
               "  --location ID      lines of nodes in this location only\n"
               "  --since DUR        history from this long ago (default 10m)\n"
               "  --filter EXPR      e.g. 'status>=500', 'level=error', 'msg~timeout' (terms joined by ',')\n"
               "  --limit N          lines per node per poll before the node samples (default 500)\n"
               "  --node URL         ask this node over HTTP (repeatable; default http://127.0.0.1:8080)\n"
               "  --nats URL         ask every node over NATS instead (repeatable for a cluster)\n"
               "  --token T          the nodes' admin token for HTTP (default $VERGE_ADMIN_TOKEN)\n"
               "  --json             print each line as the node's JSON object (plus node and location)\n");
}

struct logs_args {
    struct vg__cli_fleet fleet;
    const char *app, *location, *filter;
    uint64_t since_ms, limit;
    bool follow, json;
};

/* Per node: where its lines stop (boot + seq). */
struct cursors {
    json_t *map; /* NODE -> {"boot", "after"} */
};

static volatile sig_atomic_t stop;

static void on_sigint(int sig)
{
    (void)sig;
    stop = 1;
}

/* ---- printing ---------------------------------------------------------------------- */

static const char *s(json_t *o, const char *k)
{
    const char *v = json_string_value(json_object_get(o, k));
    return v ? v : "";
}

static void clock_of(json_int_t us, char out[16])
{
    time_t secs = (time_t)(us / 1000000);
    struct tm tm;
    localtime_r(&secs, &tm);
    snprintf(out, 16, "%02d:%02d:%02d.%03d", tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(us / 1000 % 1000));
}

static void print_human(json_t *l)
{
    char t[16];
    clock_of(json_integer_value(json_object_get(l, "time_us")), t);
    if (strcmp(s(l, "type"), "access") == 0) {
        printf("%s %-10.10s %3lld %s %s %.1fms app=%s%s%s trace=%s\n", t, s(l, "node"),
               (long long)json_integer_value(json_object_get(l, "status")), s(l, "method"), s(l, "path"),
               (double)json_integer_value(json_object_get(l, "duration_us")) / 1000.0, s(l, "app"),
               *s(l, "upstream") ? " <- " : "", s(l, "upstream"), s(l, "trace_id"));
        return;
    }
    printf("%s %-10.10s %-5s %s", t, s(l, "node"), s(l, "level"), s(l, "msg"));
    const char *k;
    json_t *v;
    json_object_foreach(l, k, v)
    {
        static const char *const skip[] = {"time", "time_us", "seq", "level", "msg", "node", "location"};
        bool shown = true;
        for (size_t i = 0; i < sizeof(skip) / sizeof(skip[0]); i++)
            shown &= strcmp(k, skip[i]) != 0;
        if (shown && json_is_string(v))
            printf(" %s=%s", k, json_string_value(v));
    }
    printf("\n");
}

static int by_time(const void *a, const void *b)
{
    json_int_t x = json_integer_value(json_object_get(*(json_t *const *)a, "time_us"));
    json_int_t y = json_integer_value(json_object_get(*(json_t *const *)b, "time_us"));
    return x < y ? -1 : x > y;
}

/* Prints every line of every answer, merged by time; notes sampling and
 * moves the cursors on. */
static void print_answers(const struct logs_args *a, json_t *answers, struct cursors *c)
{
    size_t n = 0, i, k;
    json_t *ans, *line;
    json_array_foreach(answers, i, ans) n += json_array_size(json_object_get(ans, "lines"));
    json_t **all = vg_xmalloc((n ? n : 1) * sizeof(*all));
    n = 0;
    json_array_foreach(answers, i, ans)
    {
        const char *node = s(ans, "node");
        if (json_object_get(ans, "error")) {
            fprintf(stderr, "verge logs: %s: %s\n", node, s(ans, "error"));
            continue;
        }
        json_t *lines = json_object_get(ans, "lines");
        json_int_t matched = json_integer_value(json_object_get(ans, "matched"));
        if (matched > (json_int_t)json_array_size(lines))
            fprintf(stderr, "(%s: %lld lines matched, %zu shown: sampled)\n", node, (long long)matched,
                    json_array_size(lines));
        json_array_foreach(lines, k, line)
        {
            json_object_set_new(line, "node", json_string(node));
            json_object_set_new(line, "location", json_string(s(ans, "location")));
            all[n++] = line;
        }
        /* over HTTP by the URL asked (one node may sit behind several), else by node id */
        const char *key = json_object_get(ans, "node_url") ? s(ans, "node_url") : node;
        json_object_set_new(c->map, key,
                            json_pack("{s:s, s:O}", "boot", s(ans, "boot"), "after", json_object_get(ans, "next")));
    }
    qsort(all, n, sizeof(*all), by_time);
    for (i = 0; i < n; i++) {
        if (a->json) {
            char *text = json_dumps(all[i], JSON_COMPACT);
            printf("%s\n", text);
            free(text);
        } else {
            print_human(all[i]);
        }
    }
    fflush(stdout);
    free(all);
}

/* ---- asking ---------------------------------------------------------------------------- */

struct poll {
    const struct logs_args *a;
    const struct cursors *c;
    uint64_t since_us;
};

static json_t *query_json(const struct poll *p)
{
    json_t *q = json_pack("{s:O, s:I, s:I}", "cursors", p->c->map, "since_us", (json_int_t)p->since_us, "limit",
                          (json_int_t)p->a->limit);
    const char *opt[][2] = {{"app", p->a->app}, {"location", p->a->location}, {"filter", p->a->filter}};
    for (size_t k = 0; k < 3; k++)
        if (opt[k][1])
            json_object_set_new(q, opt[k][0], json_string(opt[k][1]));
    return q;
}

static void add_param(char *path, size_t cap, const char *k, const char *v)
{
    size_t o = strlen(path);
    o += (size_t)snprintf(path + o, cap - o, "&%s=", k);
    for (; *v && o + 4 < cap; v++)
        o += (size_t)snprintf(path + o, cap - o, (*v >= 'a' && *v <= 'z') || (*v >= '0' && *v <= '9') ? "%c" : "%%%02X",
                              (unsigned char)*v);
}

/* HTTP: the query in the URL, the cursor kept by the URL asked. */
static void logs_path(void *arg, const char *url, char *path, size_t cap)
{
    const struct poll *p = arg;
    json_t *cur = json_object_get(p->c->map, url);
    snprintf(path, cap, "/_verge/logs?after=%lld&since_us=%llu&limit=%llu",
             (long long)json_integer_value(json_object_get(cur, "after")), (unsigned long long)p->since_us,
             (unsigned long long)p->a->limit);
    const char *opt[][2] = {{"boot", json_string_value(json_object_get(cur, "boot"))},
                            {"app", p->a->app},
                            {"location", p->a->location},
                            {"filter", p->a->filter}};
    for (size_t k = 0; k < 4; k++)
        if (opt[k][1])
            add_param(path, cap, opt[k][0], opt[k][1]);
}

static int run(struct logs_args *a)
{
    struct cursors c = {.map = json_object()};
    struct poll p = {.a = a, .c = &c, .since_us = vg_wall_us() - a->since_ms * 1000};
    int rc = vg__cli_fleet_open(&a->fleet, "verge logs");
    signal(SIGINT, on_sigint);
    while (rc == 0) {
        json_t *q = query_json(&p);
        char *payload = json_dumps(q, JSON_COMPACT);
        json_decref(q);
        json_t *answers = vg__cli_fleet_ask(&a->fleet, VG_NODE_LOGS_SUBJECT, payload, 400, logs_path, &p);
        free(payload);
        if (!json_array_size(answers) && !a->follow) {
            fprintf(stderr, "verge logs: no node answered\n");
            rc = 1;
        }
        print_answers(a, answers, &c);
        json_decref(answers);
        for (int t = 0; a->follow && t < 5 && !stop; t++)
            usleep(100000);
        if (!a->follow || stop)
            break;
    }
    json_decref(c.map);
    return rc;
}

/* ---- command ----------------------------------------------------------------------------- */

static int parse(int argc, char **argv, struct logs_args *a)
{
    static const struct option opts[] = {
        {"follow", no_argument, NULL, 'f'},         {"app", required_argument, NULL, 'a'},
        {"location", required_argument, NULL, 'l'}, {"since", required_argument, NULL, 's'},
        {"filter", required_argument, NULL, 'F'},   {"limit", required_argument, NULL, 'n'},
        {"node", required_argument, NULL, 'N'},     {"nats", required_argument, NULL, 'b'},
        {"token", required_argument, NULL, 't'},    {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},           {NULL, 0, NULL, 0}};
    int c;
    const char *why;
    while ((c = getopt_long(argc, argv, "f", opts, NULL)) != -1) {
        if (vg__cli_fleet_arg(&a->fleet, c, optarg))
            continue;
        switch (c) {
        case 'f':
            a->follow = true;
            break;
        case 'a':
            a->app = optarg;
            break;
        case 'l':
            a->location = optarg;
            break;
        case 's':
            if (vg_parse_duration_ms(optarg, &a->since_ms) != 0) {
                fprintf(stderr, "verge logs: --since takes a duration like 10m: %s\n", optarg);
                return 2;
            }
            break;
        case 'F': {
            struct vg_log_filter *f = vg_log_filter_parse(optarg, &why);
            if (!f) {
                fprintf(stderr, "verge logs: --filter '%s': %s\n", optarg, why);
                return 2;
            }
            vg_log_filter_free(f);
            a->filter = optarg;
            break;
        }
        case 'n':
            a->limit = strtoull(optarg, NULL, 10);
            if (a->limit < 1 || a->limit > 5000) {
                fprintf(stderr, "verge logs: --limit takes 1 to 5000: %s\n", optarg);
                return 2;
            }
            break;
        case 'j':
            a->json = true;
            break;
        case 'h':
            logs_usage(stdout);
            return 0;
        default:
            logs_usage(stderr);
            return 2;
        }
    }
    if (optind != argc) {
        logs_usage(stderr);
        return 2;
    }
    return -1;
}

int vg_cli_logs(int argc, char **argv)
{
    struct logs_args a = {.since_ms = 600000, .limit = 500};
    int rc = parse(argc, argv, &a);
    if (rc < 0) {
        vg__cli_fleet_defaults(&a.fleet);
        rc = run(&a);
        vg__cli_fleet_close(&a.fleet);
    }
    vg__cli_fleet_free_args(&a.fleet);
    return rc;
}
