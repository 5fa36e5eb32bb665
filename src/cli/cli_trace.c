/* verge trace ID: finds a trace's records on the nodes that hold them —
 * asked over NATS (every node answers that has it) or over HTTP
 * (GET /_verge/traces/ID on the nodes named) — and draws the waterfall:
 * stage, node, location, start offset, duration and a bar, spans nested
 * under their parents across nodes. --json prints the records. */
#include "base/base.h"
#include "bus/bus.h"
#include "cli.h"
#include "http/http.h"
#include "node/node.h"
#include "obs/obs.h"

#include <getopt.h>
#include <jansson.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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
    const char **nodes, **nats;
    size_t n_nodes, n_nats;
    const char *token;
    uint64_t wait_ms;
    bool json;
};

/* ---- gathering -------------------------------------------------------------------- */

static void append_records(json_t *all, const char *text, size_t len)
{
    json_t *arr = json_loadb(text, len, 0, NULL);
    if (json_is_array(arr))
        json_array_extend(all, arr);
    json_decref(arr);
}

static int from_nodes(const struct trace_args *a, const char *id, json_t *all)
{
    int reached = 0;
    for (size_t i = 0; i < a->n_nodes; i++) {
        struct vg_http_sync_req q = {
            .method = "GET", .url = a->nodes[i], .path_suffix = NULL, .token = a->token, .timeout_ms = 5000};
        char path[128], err[256];
        snprintf(path, sizeof(path), "/_verge/traces/%s", id);
        q.path_suffix = path;
        struct vg_http_sync_res res;
        if (vg_http_sync_request(&q, &res, err, sizeof(err)) != 0) {
            fprintf(stderr, "verge trace: %s: %s\n", a->nodes[i], err);
            continue;
        }
        reached++;
        if (res.status == 200)
            append_records(all, res.body, res.body_len);
        else if (res.status != 404)
            fprintf(stderr, "verge trace: %s answered %d: %.*s", a->nodes[i], res.status, (int)res.body_len, res.body);
        vg_http_sync_res_free(&res);
    }
    return reached;
}

struct gather {
    pthread_mutex_t mu;
    json_t *all;
    int answers;
};

static void on_answer(void *arg, const struct vg_bus_msg *m)
{
    struct gather *g = arg;
    pthread_mutex_lock(&g->mu);
    append_records(g->all, m->data, m->len);
    g->answers++;
    pthread_mutex_unlock(&g->mu);
}

static int from_bus(const struct trace_args *a, const char *id, json_t *all)
{
    struct vg_bus_options o = {.urls = a->nats, .n_urls = a->n_nats, .name = "verge trace"};
    struct vg_bus *bus;
    char err[256], inbox[64];
    if (vg_bus_nats_create(&o, &bus, err, sizeof(err)) != 0) {
        fprintf(stderr, "verge trace: %s\n", err);
        return -1;
    }
    uint8_t rnd[16];
    vg_trace_new_id(rnd);
    char hex[33];
    vg_trace_hex(rnd, 8, hex);
    snprintf(inbox, sizeof(inbox), "_INBOX.verge.trace.%s", hex);
    struct gather g = {.all = all};
    pthread_mutex_init(&g.mu, NULL);
    struct vg_bus_sub *sub;
    int rc = vg_bus_subscribe(bus, inbox, NULL, on_answer, &g, &sub);
    if (rc == 0) {
        rc = vg_bus_publish_reply(bus, VG_NODE_TRACE_SUBJECT, inbox, id, strlen(id));
        usleep((useconds_t)(a->wait_ms * 1000)); /* every holder answers once; we cannot know how many */
        vg_bus_unsubscribe(sub);
    }
    vg_bus_destroy(bus);
    pthread_mutex_destroy(&g.mu);
    if (rc != 0)
        fprintf(stderr, "verge trace: cannot ask over NATS: %s\n", vg_strerror(rc));
    return rc ? -1 : g.answers;
}

/* ---- the waterfall ---------------------------------------------------------------- */

struct row {
    json_t *span, *rec;
    int64_t start_us; /* unix */
    int64_t dur_us;
    int depth;
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
            rows[n++] = (struct row){span,
                                     rec,
                                     t0 + json_integer_value(json_object_get(span, "start_us")),
                                     json_integer_value(json_object_get(span, "duration_us")),
                                     0,
                                     -1};
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
    for (size_t i = 0; i < n; i++) /* bounded: a cycle (bad input) cannot loop forever */
        for (int p = rows[i].parent, hops = 0; p >= 0 && hops < (int)n; p = rows[p].parent, hops++)
            rows[i].depth++;
}

/* Depth-first order: children after their parent, by start time. */
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
    /* roots: spans whose parent is not among the records (the caller's) */
    emit(rows, n, -1, t0, end - t0, 0);
    free(rows);
}

/* ---- command ----------------------------------------------------------------------- */

static int parse(int argc, char **argv, struct trace_args *a)
{
    static const struct option opts[] = {{"node", required_argument, NULL, 'n'},
                                         {"nats", required_argument, NULL, 'b'},
                                         {"wait", required_argument, NULL, 'w'},
                                         {"token", required_argument, NULL, 't'},
                                         {"json", no_argument, NULL, 'j'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'n':
            a->nodes = vg_xrealloc(a->nodes, (a->n_nodes + 1) * sizeof(*a->nodes));
            a->nodes[a->n_nodes++] = optarg;
            break;
        case 'b':
            a->nats = vg_xrealloc(a->nats, (a->n_nats + 1) * sizeof(*a->nats));
            a->nats[a->n_nats++] = optarg;
            break;
        case 'w':
            if (vg_parse_duration_ms(optarg, &a->wait_ms) != 0 || a->wait_ms > 60000) {
                fprintf(stderr, "verge trace: --wait takes a duration up to 60s, like 500ms: %s\n", optarg);
                return 2;
            }
            break;
        case 't':
            a->token = optarg;
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
    return -1;
}

static int run(const struct trace_args *a, const char *id)
{
    uint8_t bin[16];
    if (!vg_trace_id_parse(id, strlen(id), bin)) {
        fprintf(stderr, "verge trace: a trace id is 32 hex digits, not '%s'\n", id);
        return 2;
    }
    char lower[33];
    vg_trace_hex(bin, 16, lower);
    json_t *all = json_array();
    int reached = a->n_nats ? from_bus(a, lower, all) : from_nodes(a, lower, all);
    int rc = 0;
    if (reached < 0 || (!a->n_nats && reached == 0)) {
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
    struct trace_args a = {.token = getenv("VERGE_ADMIN_TOKEN"), .wait_ms = 500};
    int rc = parse(argc, argv, &a);
    if (rc < 0 && optind != argc - 1) {
        trace_usage(stderr);
        rc = 2;
    }
    if (rc < 0) {
        static const char *def = "http://127.0.0.1:8080";
        if (!a.n_nodes && !a.n_nats) {
            a.nodes = vg_xmalloc(sizeof(*a.nodes));
            a.nodes[a.n_nodes++] = def;
        }
        rc = run(&a, argv[optind]);
    }
    free(a.nodes);
    free(a.nats);
    return rc;
}
