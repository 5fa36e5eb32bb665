/* Traces: W3C traceparent in and out, head sampling, the recorder, the
 * keep decision, records, the ring and the OTLP JSON body. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "obs/obs.h"

#define TP "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

static bool parse(const char *s, struct vg_trace_parent *p)
{
    return vg_trace_parse_traceparent(s, strlen(s), p);
}

static void test_traceparent_parse(void **state)
{
    struct vg_trace_parent p;
    assert_true(parse(TP, &p));
    assert_true(p.sampled);
    assert_int_equal(p.trace_id[0], 0x4b);
    assert_int_equal(p.trace_id[15], 0x36);
    assert_int_equal(p.span_id[7], 0xb7);
    assert_true(parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", &p));
    assert_false(p.sampled);
    /* a later version: its first four fields, more after a '-' */
    assert_true(parse("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future", &p));
    const char *bad[] = {
        "",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",    /* short */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x", /* v00 with more */
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",   /* version ff */
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",   /* zero trace */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",   /* zero span */
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",   /* upper case */
        "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",   /* separator */
        "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",   /* not hex */
        "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",  /* no '-' */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_false(parse(bad[i], &p));
}

static void test_traceparent_round_trip(void **state)
{
    struct vg_trace_parent p;
    char out[VG_TRACEPARENT_LEN + 1];
    assert_true(parse(TP, &p));
    vg_trace_format_traceparent(p.trace_id, p.span_id, p.sampled, out);
    assert_string_equal(out, TP);
    uint8_t id[16];
    assert_true(vg_trace_id_parse("4BF92F3577B34DA6A3CE929D0E0E4736", 32, id));
    assert_memory_equal(id, p.trace_id, 16);
    assert_false(vg_trace_id_parse("4bf9", 4, id));
}

static void test_head_sampling(void **state)
{
    struct vg_trace_parent p;
    uint8_t id[16];
    assert_true(parse(TP, &p));
    assert_true(vg_trace_head_sampled(&p, p.trace_id, 0.0)); /* the parent's flag wins */
    p.sampled = false;
    assert_false(vg_trace_head_sampled(&p, p.trace_id, 1.0));
    int kept = 0;
    for (int i = 0; i < 20000; i++) {
        vg_trace_new_id(id);
        bool a = vg_trace_head_sampled(NULL, id, 0.1);
        assert_int_equal(a, vg_trace_head_sampled(NULL, id, 0.1)); /* a function of the id */
        kept += a;
        assert_true(vg_trace_head_sampled(NULL, id, 1.0));
        assert_false(vg_trace_head_sampled(NULL, id, 0.0));
    }
    assert_in_range(kept, 1600, 2400);
}

struct live {
    void *mem;
    struct vg_trace *t;
};

static struct vg_trace *new_trace(struct live *l, const struct vg_trace_parent *p, bool sampled)
{
    l->mem = malloc(vg_trace_size());
    l->t = vg_trace_init(l->mem, p, sampled ? 1.0 : 0.0, "request");
    return l->t;
}

static const struct vg_trace_meta meta = {
    .app = "shop", .route = "/api", .node = "n1", .location = "fra", .status = 200};

static void test_recorder_and_record(void **state)
{
    struct vg_trace_parent p;
    struct live l;
    assert_true(parse(TP, &p));
    struct vg_trace *t = new_trace(&l, &p, true);
    assert_memory_equal(vg_trace_id(t), p.trace_id, 16);
    vg_span_t route = vg_trace_begin(t, "route", 0);
    vg_trace_end(t, route);
    vg_span_t up = vg_trace_begin(t, "upstream", 0);
    vg_trace_detail(t, up, "127.0.0.1:8080", 14);
    vg_span_t conn = vg_trace_add(t, "upstream connect", up, vg_trace_clock(), vg_trace_clock());
    assert_int_equal(conn, 3);
    vg_trace_end(t, up);
    char child[VG_TRACEPARENT_LEN + 1];
    vg_trace_child_header(t, up, child);
    assert_memory_equal(child, TP, 36); /* same trace id, a new span id */
    assert_string_not_equal(child + 36, TP + 36);
    struct vg_trace_rec *r = vg_trace_finish(t, &meta, 0);
    assert_non_null(r);
    json_t *j = vg_trace_rec_json(r);
    assert_string_equal(json_string_value(json_object_get(j, "trace_id")), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_string_equal(json_string_value(json_object_get(j, "app")), "shop");
    json_t *spans = json_object_get(j, "spans");
    assert_int_equal(json_array_size(spans), 4);
    json_t *root = json_array_get(spans, 0), *s2 = json_array_get(spans, 2), *s3 = json_array_get(spans, 3);
    /* the root's parent is the caller's span; children point at their parent */
    assert_string_equal(json_string_value(json_object_get(root, "parent_id")), "00f067aa0ba902b7");
    assert_string_equal(json_string_value(json_object_get(s2, "detail")), "127.0.0.1:8080");
    assert_string_equal(json_string_value(json_object_get(s3, "parent_id")),
                        json_string_value(json_object_get(s2, "span_id")));
    assert_memory_equal(child + 36, json_string_value(json_object_get(s2, "span_id")), 16);
    json_decref(j);
    vg_trace_rec_unref(r);
    free(l.mem);
}

static void test_full_trace_drops_spans(void **state)
{
    struct live l;
    struct vg_trace *t = new_trace(&l, NULL, true);
    for (int i = 1; i < VG_TRACE_MAX_SPANS; i++)
        assert_int_equal(vg_trace_begin(t, "x", 0), i);
    vg_span_t s = vg_trace_begin(t, "x", 0);
    assert_int_equal(s, VG_SPAN_NONE);
    vg_trace_end(t, s); /* accepted, ignored */
    vg_trace_detail(t, s, "x", 1);
    vg_trace_fail(t, s);
    struct vg_trace_rec *r = vg_trace_finish(t, &meta, 0);
    json_t *j = vg_trace_rec_json(r);
    assert_int_equal(json_integer_value(json_object_get(j, "dropped_spans")), 1);
    assert_true(json_is_true(json_object_get(j, "error"))); /* a failure is kept even when its span was not */
    json_decref(j);
    vg_trace_rec_unref(r);
    free(l.mem);
}

static void test_keep_decision(void **state)
{
    struct live l;
    struct vg_trace_meta m = meta;
    /* not sampled, fine and fast: forgotten */
    assert_null(vg_trace_finish(new_trace(&l, NULL, false), &m, 1000000));
    free(l.mem);
    /* a failed span: kept */
    struct vg_trace *t = new_trace(&l, NULL, false);
    vg_trace_fail(t, vg_trace_begin(t, "lua", 0));
    struct vg_trace_rec *r = vg_trace_finish(t, &m, 0);
    assert_non_null(r);
    vg_trace_rec_unref(r);
    free(l.mem);
    /* a 5xx: kept */
    m.status = 502;
    r = vg_trace_finish(new_trace(&l, NULL, false), &m, 0);
    assert_non_null(r);
    vg_trace_rec_unref(r);
    free(l.mem);
    /* slower than the threshold: kept */
    m.status = 200;
    t = new_trace(&l, NULL, false);
    uint64_t from = vg_trace_clock();
    while (vg_trace_clock_ns(from, vg_trace_clock()) < 2000000)
        ;
    r = vg_trace_finish(t, &m, 1000);
    assert_non_null(r);
    vg_trace_rec_unref(r);
    free(l.mem);
}

static void test_root_only_records_the_request_alone(void **state)
{
    struct live l;
    struct vg_trace *t = new_trace(&l, NULL, false);
    vg_trace_root_only(t);
    assert_false(vg_trace_recording(t));
    assert_int_equal(vg_trace_begin(t, "route", 0), VG_SPAN_NONE);
    vg_span_t h = vg_trace_next(t, VG_SPAN_NONE, "handler", 0);
    assert_int_equal(h, VG_SPAN_NONE);
    vg_trace_fail(t, h); /* still decides the keeping */
    struct vg_trace_rec *r = vg_trace_finish(t, &meta, 0);
    assert_non_null(r);
    json_t *j = vg_trace_rec_json(r);
    assert_int_equal(json_array_size(json_object_get(j, "spans")), 1);
    assert_true(json_is_true(json_object_get(j, "error")));
    json_decref(j);
    vg_trace_rec_unref(r);
    free(l.mem);
    /* a sampled trace records its stages whatever */
    t = new_trace(&l, NULL, true);
    vg_trace_root_only(t);
    assert_true(vg_trace_recording(t));
    assert_int_equal(vg_trace_begin(t, "route", 0), 1);
    free(l.mem);
}

static void test_hex(void **state)
{
    uint8_t b[7] = {0x00, 0x9a, 0xff, 0x10, 0xab, 0x05, 0xc3};
    char out[15];
    vg_trace_hex(b, 7, out);
    assert_string_equal(out, "009aff10ab05c3");
}

/* The SIMD hex against the obvious loop, on every length up to a trace id
 * and on whole traceparents (the form each proxied request writes). */
static void test_hex_matches_reference(void **state)
{
    uint8_t b[40];
    char out[81], want[81];
    for (int round = 0; round < 200; round++) {
        for (size_t i = 0; i < sizeof(b); i++)
            b[i] = (uint8_t)(rand() & 0xff);
        for (size_t n = 0; n <= sizeof(b); n++) {
            for (size_t i = 0; i < n; i++)
                snprintf(want + 2 * i, 3, "%02x", b[i]);
            want[2 * n] = '\0';
            vg_trace_hex(b, n, out);
            assert_string_equal(out, want);
        }
        char tp[VG_TRACEPARENT_LEN + 1], tid[33], sid[17];
        vg_trace_hex(b, 16, tid);
        vg_trace_hex(b + 16, 8, sid);
        snprintf(want, sizeof(want), "00-%s-%s-%s", tid, sid, round & 1 ? "01" : "00");
        vg_trace_format_traceparent(b, b + 16, round & 1, tp);
        assert_string_equal(tp, want);
    }
}

/* vg_trace_start, the request path's form: an unsampled trace without
 * stages is root-only from the start, yet still has its id, its
 * traceparent (flag 00) and the keep decision on errors and slowness. */
static void test_start_root_only(void **state)
{
    void *mem = malloc(vg_trace_size());
    struct vg_trace *t = vg_trace_start(mem, NULL, 0.0, "request", false);
    assert_false(vg_trace_sampled(t));
    assert_false(vg_trace_recording(t));
    assert_int_equal(vg_trace_begin(t, "route", 0), VG_SPAN_NONE);
    char tp[VG_TRACEPARENT_LEN + 1];
    vg_trace_child_header(t, 0, tp);
    struct vg_trace_parent p;
    assert_true(vg_trace_parse_traceparent(tp, strlen(tp), &p));
    assert_false(p.sampled);
    assert_memory_equal(p.trace_id, vg_trace_id(t), 16);
    assert_null(vg_trace_finish(t, &meta, 0)); /* nothing to keep */
    t = vg_trace_start(mem, NULL, 0.0, "request", false);
    struct vg_trace_meta m = meta;
    m.status = 503;
    struct vg_trace_rec *r = vg_trace_finish(t, &m, 0); /* an error is kept, with its status */
    assert_non_null(r);
    json_t *j = vg_trace_rec_json(r);
    assert_int_equal(json_integer_value(json_object_get(j, "status")), 503);
    assert_int_equal(json_array_size(json_object_get(j, "spans")), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(json_object_get(j, "spans"), 0), "name")),
                        "request");
    json_decref(j);
    vg_trace_rec_unref(r);
    /* stages wanted (dev, debug, --trace-unsampled stages): recorded */
    t = vg_trace_start(mem, NULL, 0.0, "request", true);
    assert_true(vg_trace_recording(t));
    assert_int_equal(vg_trace_begin(t, "route", 0), 1);
    /* a parent's flag wins over the rate, and its trace id is kept */
    assert_true(parse(TP, &p));
    t = vg_trace_start(mem, &p, 0.0, "request", false);
    assert_true(vg_trace_sampled(t));
    assert_true(vg_trace_recording(t));
    assert_memory_equal(vg_trace_id(t), p.trace_id, 16);
    vg_trace_child_header(t, 0, tp);
    assert_memory_equal(tp, TP, 36); /* same trace, our span as the parent */
    assert_string_equal(tp + 52, "-01");
    /* head sampling at rate 1: every trace */
    for (int i = 0; i < 100; i++)
        assert_true(vg_trace_sampled(vg_trace_start(mem, NULL, 1.0, "request", false)));
    free(mem);
}

static struct vg_trace_rec *record_with_id(uint8_t first)
{
    struct vg_trace_parent p;
    struct live l;
    assert_true(parse(TP, &p));
    p.trace_id[0] = first;
    struct vg_trace_rec *r = vg_trace_finish(new_trace(&l, &p, true), &meta, 0);
    free(l.mem);
    return r;
}

static void test_ring(void **state)
{
    struct vg_trace_ring *g = vg_trace_ring_create(3);
    for (uint8_t i = 1; i <= 5; i++) {
        struct vg_trace_rec *r = record_with_id(i);
        vg_trace_ring_push(g, r);
        vg_trace_rec_unref(r);
    }
    struct vg_trace_rec *again = record_with_id(5); /* a second record of one trace */
    vg_trace_ring_push(g, again);
    vg_trace_rec_unref(again);
    uint8_t id[16];
    memcpy(id, vg_trace_rec_id(again), 16);
    json_t *arr = json_array();
    assert_int_equal(vg_trace_ring_find(g, id, arr), 2);
    id[0] = 1; /* the oldest went out */
    assert_int_equal(vg_trace_ring_find(g, id, arr), 0);
    id[0] = 4;
    assert_int_equal(vg_trace_ring_find(g, id, arr), 1);
    assert_int_equal(json_array_size(arr), 3);
    json_decref(arr);
    vg_trace_ring_destroy(g);
}

static void test_otlp_json(void **state)
{
    struct vg_trace_rec *r = record_with_id(0x4b);
    char *text = vg_trace_otlp_json(&r, 1, "verge", "n1", "fra");
    json_error_t e;
    json_t *j = json_loads(text, 0, &e);
    assert_non_null(j);
    json_t *rs = json_array_get(json_object_get(j, "resourceSpans"), 0);
    json_t *attr0 = json_array_get(json_object_get(json_object_get(rs, "resource"), "attributes"), 0);
    assert_string_equal(json_string_value(json_object_get(attr0, "key")), "service.name");
    json_t *span = json_array_get(json_object_get(json_array_get(json_object_get(rs, "scopeSpans"), 0), "spans"), 0);
    assert_string_equal(json_string_value(json_object_get(span, "traceId")), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_string_equal(json_string_value(json_object_get(span, "parentSpanId")), "00f067aa0ba902b7");
    assert_int_equal(json_integer_value(json_object_get(span, "kind")), 2);
    const char *start = json_string_value(json_object_get(span, "startTimeUnixNano"));
    assert_true(strtoull(start, NULL, 10) > 1600000000000000000ULL); /* unix ns, as a string */
    json_decref(j);
    free(text);
    vg_trace_rec_unref(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_traceparent_parse),
        cmocka_unit_test(test_traceparent_round_trip),
        cmocka_unit_test(test_head_sampling),
        cmocka_unit_test(test_recorder_and_record),
        cmocka_unit_test(test_full_trace_drops_spans),
        cmocka_unit_test(test_keep_decision),
        cmocka_unit_test(test_ring),
        cmocka_unit_test(test_otlp_json),
        cmocka_unit_test(test_root_only_records_the_request_alone),
        cmocka_unit_test(test_hex),
        cmocka_unit_test(test_hex_matches_reference),
        cmocka_unit_test(test_start_root_only),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
