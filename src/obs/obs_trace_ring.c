/* Kept traces: the bounded ring a node answers `verge trace ID` from, and
 * the OTLP/HTTP JSON encoding the exporter sends. */
#include "obs.h"

#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct vg_trace_ring {
    pthread_mutex_t mu; /* the writer (one worker) and lookups: rarely contended */
    struct vg_trace_rec **slot;
    size_t cap, next;
};

struct vg_trace_ring *vg_trace_ring_create(size_t cap)
{
    struct vg_trace_ring *g = vg_xcalloc(1, sizeof(*g));
    pthread_mutex_init(&g->mu, NULL);
    g->cap = cap ? cap : 1;
    g->slot = vg_xcalloc(g->cap, sizeof(*g->slot));
    return g;
}

void vg_trace_ring_destroy(struct vg_trace_ring *g)
{
    if (!g)
        return;
    for (size_t i = 0; i < g->cap; i++)
        vg_trace_rec_unref(g->slot[i]);
    free(g->slot);
    pthread_mutex_destroy(&g->mu);
    free(g);
}

void vg_trace_ring_push(struct vg_trace_ring *g, struct vg_trace_rec *r)
{
    vg_trace_rec_ref(r);
    pthread_mutex_lock(&g->mu);
    struct vg_trace_rec *old = g->slot[g->next];
    g->slot[g->next] = r;
    g->next = (g->next + 1) % g->cap;
    pthread_mutex_unlock(&g->mu);
    vg_trace_rec_unref(old); /* outside the lock: may free */
}

size_t vg_trace_ring_find(struct vg_trace_ring *g, const uint8_t id[16], json_t *arr)
{
    size_t found = 0;
    pthread_mutex_lock(&g->mu);
    for (size_t i = 0; i < g->cap; i++) {
        struct vg_trace_rec *r = g->slot[i];
        if (r && memcmp(vg_trace_rec_id(r), id, 16) == 0) {
            json_array_append_new(arr, vg_trace_rec_json(r));
            found++;
        }
    }
    pthread_mutex_unlock(&g->mu);
    return found;
}

/* ---- OTLP/HTTP JSON ---------------------------------------------------------------- */

static json_t *kv_string(const char *key, const char *value)
{
    return json_pack("{s:s, s:{s:s}}", "key", key, "value", "stringValue", value ? value : "");
}

static json_t *kv_int(const char *key, json_int_t v)
{
    /* OTLP JSON carries 64-bit integers as strings */
    char buf[24];
    snprintf(buf, sizeof(buf), "%lld", (long long)v);
    return json_pack("{s:s, s:{s:s}}", "key", key, "value", "intValue", buf);
}

static json_t *ns_string(uint64_t ns)
{
    char buf[24];
    snprintf(buf, sizeof(buf), "%llu", (unsigned long long)ns);
    return json_string(buf);
}

/* One span of a record, from its JSON form (the one place spans are
 * walked): OTLP wants ids in hex, times in unix ns as strings. */
static json_t *otlp_span(json_t *rec, json_t *s, size_t i)
{
    uint64_t t0 = (uint64_t)json_integer_value(json_object_get(rec, "start_us")) * 1000;
    uint64_t start = t0 + (uint64_t)json_integer_value(json_object_get(s, "start_us")) * 1000;
    uint64_t end = start + (uint64_t)json_integer_value(json_object_get(s, "duration_us")) * 1000;
    json_t *attrs = json_array();
    if (i == 0) {
        json_array_append_new(attrs, kv_string("verge.app", json_string_value(json_object_get(rec, "app"))));
        json_array_append_new(attrs, kv_string("verge.route", json_string_value(json_object_get(rec, "route"))));
        json_array_append_new(attrs,
                              kv_int("http.response.status_code", json_integer_value(json_object_get(rec, "status"))));
    }
    json_t *detail = json_object_get(s, "detail");
    if (detail)
        json_array_append_new(attrs, kv_string("verge.detail", json_string_value(detail)));
    json_t *o = json_pack("{s:O, s:O, s:O, s:i, s:o, s:o, s:o, s:{s:i}}", "traceId", json_object_get(rec, "trace_id"),
                          "spanId", json_object_get(s, "span_id"), "name", json_object_get(s, "name"), "kind",
                          i == 0 ? 2 : 1, /* SERVER for the request, INTERNAL for its stages */
                          "startTimeUnixNano", ns_string(start), "endTimeUnixNano", ns_string(end), "attributes", attrs,
                          "status", "code", json_is_true(json_object_get(s, "error")) ? 2 : 0);
    json_t *parent = json_object_get(s, "parent_id");
    if (json_is_string(parent))
        json_object_set(o, "parentSpanId", parent);
    return o;
}

char *vg_trace_otlp_json(struct vg_trace_rec *const *recs, size_t n, const char *service, const char *node,
                         const char *location)
{
    json_t *spans = json_array();
    for (size_t k = 0; k < n; k++) {
        json_t *rec = vg_trace_rec_json(recs[k]), *rs = json_object_get(rec, "spans");
        for (size_t i = 0; i < json_array_size(rs); i++)
            json_array_append_new(spans, otlp_span(rec, json_array_get(rs, i), i));
        json_decref(rec);
    }
    json_t *res = json_array();
    json_array_append_new(res, kv_string("service.name", service));
    json_array_append_new(res, kv_string("verge.node", node));
    if (location)
        json_array_append_new(res, kv_string("verge.location", location));
    json_t *body = json_pack("{s:[{s:{s:o}, s:[{s:{s:s}, s:o}]}]}", "resourceSpans", "resource", "attributes", res,
                             "scopeSpans", "scope", "name", "verge", "spans", spans);
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    return text;
}
