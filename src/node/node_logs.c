/* Logs on a node: every line the node writes (its log, the access log,
 * Lua's verge.log) also goes into a bounded ring, and queries read it:
 * GET /_verge/logs over HTTP, "verge.logs.query" over the bus. Filtering
 * and sampling happen here, on the node, so tailing a busy app costs the
 * node one copy and a filter pass per poll and sends the terminal at most
 * `limit` lines (evenly sampled; the answer says how many matched). */
#include "node_int.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#define LOGS_LIMIT_DEFAULT 500
#define LOGS_LIMIT_MAX 5000

static void tap(void *arg, uint64_t time_us, const char *json, size_t len)
{
    struct vg_node *node = arg;
    vg_log_ring_append(node->log_ring, time_us, json, len);
}

void vg__node_logs_init(struct vg_node *node)
{
    node->log_ring = vg_log_ring_create(node->opt.log_ring_bytes ? node->opt.log_ring_bytes : 8u << 20);
    uint8_t r[16];
    vg_trace_new_id(r);
    vg_trace_hex(r, 8, node->boot_id);
    vg_log_set_tap(tap, node);
}

void vg__node_logs_fini(struct vg_node *node)
{
    vg_log_set_tap(NULL, NULL);
    vg_log_ring_destroy(node->log_ring);
    node->log_ring = NULL;
}

/* ---- queries ------------------------------------------------------------------------ */

struct logs_query {
    uint64_t after, since_us;
    const char *boot; /* the boot the cursor belongs to: another one means "from the start" */
    const char *app, *location;
    struct vg_log_filter *filter;
    size_t limit;
};

static bool wanted(const struct logs_query *q, json_t *obj)
{
    if (q->app) {
        const char *a = json_string_value(json_object_get(obj, "app"));
        if (!a || strcmp(a, q->app) != 0)
            return false;
    }
    return vg_log_filter_match_json(q->filter, obj);
}

static json_t *answer(struct vg_node *node, const struct logs_query *q)
{
    const char *loc = node->opt.location ? node->opt.location : "";
    json_t *out = json_pack("{s:s, s:s, s:s}", "node", node->node_id, "location", loc, "boot", node->boot_id);
    json_t *lines = json_array();
    struct vg_log_batch b;
    bool same_boot = !q->boot || strcmp(q->boot, node->boot_id) == 0;
    vg_log_ring_read(node->log_ring, same_boot ? q->after : 0, q->since_us, &b);
    size_t matched = 0;
    if (!q->location || strcmp(q->location, loc) == 0) {
        for (size_t i = 0; i < b.n; i++) {
            json_t *obj = json_loadb(b.lines[i].text, b.lines[i].len, 0, NULL);
            if (obj && wanted(q, obj)) {
                json_object_set_new(obj, "seq", json_integer((json_int_t)b.lines[i].seq));
                json_object_set_new(obj, "time_us", json_integer((json_int_t)b.lines[i].time_us));
                json_array_append_new(lines, obj);
                matched++;
            } else {
                json_decref(obj);
            }
        }
    }
    json_t *kept = lines;
    if (matched > q->limit) { /* evenly spread: a tail shows the shape of the traffic, not its first lines */
        kept = json_array();
        for (size_t k = 0; k < q->limit; k++)
            json_array_append(kept, json_array_get(lines, k * matched / q->limit));
        json_decref(lines);
    }
    json_object_set_new(out, "next", json_integer((json_int_t)b.next));
    json_object_set_new(out, "matched", json_integer((json_int_t)matched));
    json_object_set_new(out, "missed", json_integer((json_int_t)b.missed));
    json_object_set_new(out, "lines", kept);
    vg_log_batch_free(&b);
    return out;
}

/* ---- GET /_verge/logs?after=&boot=&since_us=&app=&location=&filter=&limit= --------- */

static const char *param(h2o_req_t *req, const char *name)
{
    h2o_iovec_t v;
    return vg_http_query_param(req, name, &v) ? v.base : NULL;
}

static uint64_t param_u64(h2o_req_t *req, const char *name, uint64_t def)
{
    const char *s = param(req, name);
    char *end;
    unsigned long long v = s ? strtoull(s, &end, 10) : 0;
    return s && *s && !*end ? (uint64_t)v : def;
}

void vg__node_logs_endpoint(struct vg_worker *w, h2o_req_t *req)
{
    struct vg_node *node = w->node;
    if (!vg__node_admin_diag_ok(node, req, "/_verge/logs"))
        return;
    struct logs_query q = {.after = param_u64(req, "after", 0),
                           .since_us = param_u64(req, "since_us", 0),
                           .boot = param(req, "boot"),
                           .app = param(req, "app"),
                           .location = param(req, "location"),
                           .limit = param_u64(req, "limit", LOGS_LIMIT_DEFAULT)};
    const char *expr = param(req, "filter"), *why = NULL;
    if (expr && !(q.filter = vg_log_filter_parse(expr, &why))) {
        char msg[256];
        int n = snprintf(msg, sizeof(msg), "bad filter: %s\n", why);
        vg_http_send_text(req, 400, "text/plain; charset=utf-8", msg, (size_t)n);
        return;
    }
    if (q.limit == 0 || q.limit > LOGS_LIMIT_MAX)
        q.limit = LOGS_LIMIT_MAX;
    json_t *out = answer(node, &q);
    vg_log_filter_free(q.filter);
    char *text = json_dumps(out, JSON_COMPACT);
    json_decref(out);
    vg_http_send_text(req, 200, "application/json", text, strlen(text));
    free(text);
}

/* ---- over the bus ------------------------------------------------------------------------ */

/* The query is JSON: {"cursors": {NODE: {"boot": B, "after": N}}, "since_us",
 * "app", "location", "filter", "limit"}; every node answers (a follow needs
 * every node's cursor), with the same JSON as over HTTP. */
static void on_logs_query(void *arg, const struct vg_bus_msg *m)
{
    struct vg_node *node = arg;
    json_t *in = m->reply ? json_loadb(m->data, m->len, 0, NULL) : NULL;
    if (!json_is_object(in)) {
        json_decref(in);
        return;
    }
    json_t *cur = json_object_get(json_object_get(in, "cursors"), node->node_id);
    json_int_t limit = json_integer_value(json_object_get(in, "limit"));
    struct logs_query q = {.after = (uint64_t)json_integer_value(json_object_get(cur, "after")),
                           .boot = json_string_value(json_object_get(cur, "boot")),
                           .since_us = (uint64_t)json_integer_value(json_object_get(in, "since_us")),
                           .app = json_string_value(json_object_get(in, "app")),
                           .location = json_string_value(json_object_get(in, "location")),
                           .limit = limit > 0 && limit <= LOGS_LIMIT_MAX ? (size_t)limit : LOGS_LIMIT_DEFAULT};
    const char *expr = json_string_value(json_object_get(in, "filter")), *why = NULL;
    json_t *out;
    if (expr && !(q.filter = vg_log_filter_parse(expr, &why)))
        out = json_pack("{s:s, s:s}", "node", node->node_id, "error", why);
    else
        out = answer(node, &q);
    vg_log_filter_free(q.filter);
    json_decref(in);
    char *text = json_dumps(out, JSON_COMPACT);
    while (strlen(text) > VG_BUS_PAYLOAD_MAX - 4096 && json_array_size(json_object_get(out, "lines")) > 1) {
        json_t *lines = json_object_get(out, "lines"); /* over a message: keep every other line */
        for (size_t k = json_array_size(lines) - 1; k > 0; k -= 2)
            json_array_remove(lines, k);
        free(text);
        text = json_dumps(out, JSON_COMPACT);
    }
    json_decref(out);
    if (vg_bus_publish(node->bus, m->reply, text, strlen(text)) != 0)
        vg_log(VG_LOG_WARN, "cannot answer a log query", "reason", "the bus refused the answer (too large?)", NULL);
    free(text);
}

void vg__node_logs_subscribe(struct vg_node *node)
{
    if (node->bus && vg_bus_subscribe(node->bus, VG_NODE_LOGS_SUBJECT, NULL, on_logs_query, node, &node->logs_sub) != 0)
        vg_log(VG_LOG_WARN, "log queries over the bus are off", "reason", "cannot subscribe", NULL);
}

void vg__node_logs_unsubscribe(struct vg_node *node)
{
    if (node->logs_sub)
        vg_bus_unsubscribe(node->logs_sub);
    node->logs_sub = NULL;
}
