/* verge trace ID: finds a trace's records on the nodes that hold them —
 * asked over NATS (every node answers that has it) or over HTTP
 * (GET /_verge/traces/ID on the nodes named) — and draws the waterfall:
 * stage, node, location, start offset, duration and a bar, spans nested
 * under their parents across nodes. --json prints the records. */
#include "base/base.h"
#include "cli.h"
#include "cli_int.h"
#include "node/node.h"
#include "obs/obs.h"

#include <getopt.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#define BAR 32

static void trace_usage(FILE *f)
{
    fprintf(f, "usage: verge trace ID [options]\n\n"
               "  --node URL    ask this node over HTTP (repeatable; default http://127.0.0.1:8080)\n"
               "  --nats URL    ask every node over NATS instead (repeatable for a cluster)\n"
               "  --wait DUR    how long to gather answers over NATS (default 500ms)\n"
               "  --token T     the nodes' admin token for HTTP (default $VERGE_ADMIN_TOKEN)\n"
               "  --json        print the records as JSON\n");
}

struct trace_args {
    struct vg__cli_fleet fleet;
    uint64_t wait_ms;
    bool json;
};

/* ---- the waterfall ---------------------------------------------------------------- */

struct row {
    json_t *span, *rec;
    int64_t start_us; /* unix */
    int64_t dur_us;
    int parent; /* row index, -1 */
};

static const char *str(json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "";
}

static size_t collect_rows(json_t *recs, struct row **out)
{
    size_t n = 0, cap = 0, i, k;
    json_t *rec, *span;
    struct row *rows = NULL;
    json_array_foreach(recs, i, rec)
    {
        int64_t t0 = json_integer_value(json_object_get(rec, "start_us"));
        json_array_foreach(json_object_get(rec, "spans"), k, span)
        {
            if (n == cap)
                rows = vg_xrealloc(rows, (cap = cap ? cap * 2 : 64) * sizeof(*rows));
            rows[n++] = (struct row){span, rec, t0 + json_integer_value(json_object_get(span, "start_us")),
                                     json_integer_value(json_object_get(span, "duration_us")), -1};
        }
    }
    *out = rows;
    return n;
}

static void link_rows(struct row *rows, size_t n)
{
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < n; j++)
            if (i != j && strcmp(str(rows[i].span, "parent_id"), str(rows[j].span, "span_id")) == 0)
                rows[i].parent = (int)j;
}

/* Depth-first: children after their parent, by start time. A cycle (bad
 * input) ends at depth 32. */
static void emit(const struct row *rows, size_t n, int parent, int64_t t0, int64_t total, int depth)
{
    bool *done = vg_xcalloc(n ? n : 1, sizeof(bool));
    for (;;) {
        int best = -1;
        for (size_t i = 0; i < n; i++)
            if (!done[i] && rows[i].parent == parent && (best < 0 || rows[i].start_us < rows[best].start_us))
                best = (int)i;
        if (best < 0 || depth > 32)
            break;
        done[best] = true;
        const struct row *r = &rows[best];
        char bar[BAR + 1], name[48];
        int from = total ? (int)((r->start_us - t0) * BAR / total) : 0;
        int len = total ? (int)((r->dur_us * BAR + total - 1) / total) : 0;
        for (int c = 0; c < BAR; c++)
            bar[c] = c >= from && c < from + (len ? len : 1) ? '#' : '.';
        bar[BAR] = '\0';
        const char *detail = str(r->span, "detail");
        snprintf(name, sizeof(name), "%*s%s%s%s", depth * 2, "", str(r->span, "name"), *detail ? " " : "", detail);
        printf("%-38.38s %-12.12s %-8.8s %9.3f %9.3f %s%s\n", name, str(r->rec, "node"), str(r->rec, "location"),
               (double)(r->start_us - t0) / 1000.0, (double)r->dur_us / 1000.0, bar,
               json_is_true(json_object_get(r->span, "error")) ? " !" : "");
        emit(rows, n, best, t0, total, depth + 1);
    }
    free(done);
}

static void draw(const char *id, json_t *recs)
{
    struct row *rows;
    size_t n = collect_rows(recs, &rows);
    link_rows(rows, n);
    int64_t t0 = INT64_MAX, end = 0;
    for (size_t i = 0; i < n; i++) {
        t0 = rows[i].start_us < t0 ? rows[i].start_us : t0;
        end = rows[i].start_us + rows[i].dur_us > end ? rows[i].start_us + rows[i].dur_us : end;
    }
    printf("trace %s: %zu spans in %zu records, %.3f ms\n\n", id, n, json_array_size(recs),
           n ? (double)(end - t0) / 1000.0 : 0.0);
    printf("%-38s %-12s %-8s %9s %9s\n", "STAGE", "NODE", "LOCATION", "START ms", "DUR ms");
    emit(rows, n, -1, t0, end - t0, 0); /* roots: spans whose parent is not here (the caller's) */
    free(rows);
}

/* ---- command ----------------------------------------------------------------------- */

static int parse(int argc, char **argv, struct trace_args *a)
{
    static const struct option opts[] = {VG__CLI_FLEET_OPTIONS,
                                         {"wait", required_argument, NULL, 'w'},
                                         {"json", no_argument, NULL, 'j'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (vg__cli_fleet_arg(&a->fleet, c, optarg))
            continue;
        switch (c) {
        case 'w':
            if (vg_parse_duration_ms(optarg, &a->wait_ms) != 0 || a->wait_ms > 60000) {
                fprintf(stderr, "verge trace: --wait takes a duration up to 60s, like 500ms: %s\n", optarg);
                return 2;
            }
            break;
        case 'j':
            a->json = true;
            break;
        case 'h':
            trace_usage(stdout);
            return 0;
        default:
            trace_usage(stderr);
            return 2;
        }
    }
    if (optind != argc - 1) {
        trace_usage(stderr);
        return 2;
    }
    return -1;
}

static void trace_path(void *arg, const char *url, char *path, size_t cap)
{
    (void)url;
    snprintf(path, cap, "/_verge/traces/%s", (const char *)arg);
}

/* Every node's records of the trace in one array. */
static json_t *gather(struct trace_args *a, const char *id)
{
    json_t *all = json_array(), *answers, *ans;
    answers = vg__cli_fleet_ask(&a->fleet, VG_NODE_TRACE_SUBJECT, id, (uint32_t)a->wait_ms, trace_path, (void *)id);
    size_t i;
    json_array_foreach(answers, i, ans) if (json_is_array(ans)) json_array_extend(all, ans);
    json_decref(answers);
    return all;
}

static int run(struct trace_args *a, const char *id)
{
    uint8_t bin[16];
    char lower[33];
    if (!vg_trace_id_parse(id, strlen(id), bin)) {
        fprintf(stderr, "verge trace: a trace id is 32 hex digits, not '%s'\n", id);
        return 2;
    }
    vg_trace_hex(bin, 16, lower);
    if (vg__cli_fleet_open(&a->fleet, "verge trace") != 0)
        return 1;
    json_t *all = gather(a, lower);
    int rc = 0;
    if (!a->fleet.bus && a->fleet.http_reached == 0) {
        rc = 1;
    } else if (json_array_size(all) == 0) {
        fprintf(stderr, "verge trace: no node holds trace %s (not kept, or aged out of the rings)\n", lower);
        rc = 1;
    } else if (a->json) {
        char *text = json_dumps(all, JSON_INDENT(2));
        printf("%s\n", text);
        free(text);
    } else {
        draw(lower, all);
    }
    json_decref(all);
    return rc;
}

int vg_cli_trace(int argc, char **argv)
{
    struct trace_args a = {.wait_ms = 500};
    int rc = parse(argc, argv, &a);
    if (rc < 0) {
        vg__cli_fleet_defaults(&a.fleet);
        rc = run(&a, argv[optind]);
        vg__cli_fleet_close(&a.fleet);
    }
    vg__cli_fleet_free_args(&a.fleet);
    return rc;
}
