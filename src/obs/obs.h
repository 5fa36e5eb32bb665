/* obs: metrics (Prometheus text exposition) and the access log.
 *
 * A registry holds series keyed by (name, labels). Looking a series up takes
 * a mutex and is meant for the first use only: callers cache the returned
 * pointer, which stays valid for the registry's lifetime (series are never
 * removed, so counters stay monotonic across manifest reloads). Updates are
 * relaxed atomics: cheap, lock-free, safe from any thread. */
#ifndef VG_OBS_H
#define VG_OBS_H

#include "base/base.h"

struct vg_obs_registry;
struct vg_obs_counter;
struct vg_obs_histogram;

/* Caller owns the result. */
struct vg_obs_registry *vg_obs_registry_create(void);
void vg_obs_registry_destroy(struct vg_obs_registry *r);

/* help is a static string. labels is the label set without braces, e.g.
 * `app="shop",status="200"` (values must already be escaped; use
 * vg_obs_label_escape). The result is owned by the registry. Returns NULL
 * when the registry is full (series are bounded: labels never come from
 * unbounded client input). */
struct vg_obs_counter *vg_obs_counter_get(struct vg_obs_registry *r, const char *name, const char *help,
                                          const char *labels);
void vg_obs_counter_add(struct vg_obs_counter *c, uint64_t v);
uint64_t vg_obs_counter_value(const struct vg_obs_counter *c);

/* Latency histogram in seconds with fixed buckets (0.5 ms .. 10 s). */
struct vg_obs_histogram *vg_obs_histogram_get(struct vg_obs_registry *r, const char *name, const char *help,
                                              const char *labels);
void vg_obs_histogram_observe_us(struct vg_obs_histogram *h, uint64_t us);

/* A gauge computed at scrape time: fn appends lines to buf via
 * vg_obs_buf_printf. Collectors run in registration order. */
struct vg_obs_buf;
typedef void (*vg_obs_collect_fn)(void *data, struct vg_obs_buf *buf);
void vg_obs_collector_add(struct vg_obs_registry *r, vg_obs_collect_fn fn, void *data);
void vg_obs_collector_remove(struct vg_obs_registry *r, vg_obs_collect_fn fn, void *data);
void vg_obs_buf_printf(struct vg_obs_buf *b, const char *fmt, ...) VG_PRINTF(2, 3);

/* Renders every series (Prometheus text format 0.0.4). Caller frees the
 * result with free(). */
char *vg_obs_registry_render(struct vg_obs_registry *r, size_t *len);

/* Escapes a label value (backslash, quote, newline) into dst. */
void vg_obs_label_escape(char *dst, size_t cap, const char *s);

/* ---- traces ------------------------------------------------------------------------ */

/* A request's trace: W3C trace context in (traceparent, tracestate) and
 * out (to origins, subrequests, bus messages), a span per stage recorded
 * into a fixed array (no allocation, two clock reads per span), and at the
 * end one decision: keep it (head-sampled, errored, or slower than the
 * threshold) or forget it. Kept traces become immutable records: a bounded
 * ring per worker answers lookups (`verge trace ID`), the exporter sends
 * them as OTLP/HTTP JSON. */

#define VG_TRACE_MAX_SPANS 24 /* a request uses 6-12; more are dropped, counted in the record */
#define VG_TRACEPARENT_LEN 55 /* "00-" 32 hex "-" 16 hex "-" 2 hex */
#define VG_TRACE_ID_HEX 32

struct vg_trace_parent {
    uint8_t trace_id[16];
    uint8_t span_id[8];
    bool sampled;
};

/* Parses a traceparent header value (W3C Trace Context level 1: version
 * 00; a higher version is read by its first four fields, "ff" refused);
 * all-zero ids and upper-case hex are refused. Untrusted bytes: fuzzed. */
bool vg_trace_parse_traceparent(const char *s, size_t len, struct vg_trace_parent *out);
/* Writes "00-TRACE-SPAN-FLAGS" and a NUL into out. */
void vg_trace_format_traceparent(const uint8_t trace_id[16], const uint8_t span_id[8], bool sampled,
                                 char out[VG_TRACEPARENT_LEN + 1]);
/* Lower-case hex of n bytes and a NUL (out: 2n + 1 bytes). */
void vg_trace_hex(const uint8_t *b, size_t n, char *out);
/* Parses 32 hex digits (either case) into a trace id. */
bool vg_trace_id_parse(const char *hex, size_t len, uint8_t out[16]);

/* Where a span stands in its trace (the root, the request, is 0). */
typedef int vg_span_t;
#define VG_SPAN_NONE (-1)

struct vg_trace;

/* The live trace of one request, in memory the caller provides
 * (vg_trace_size() bytes, e.g. from the request's pool): a child of
 * parent when given, else a new trace id, head-sampled at rate
 * (vg_trace_head_sampled); the root span named root starts now. */
size_t vg_trace_size(void);
struct vg_trace *vg_trace_init(void *mem, const struct vg_trace_parent *parent, double rate, const char *root);
/* vg_trace_init, and when unsampled_stages is false a trace that head
 * sampling skipped is root-only from the start (vg_trace_root_only): the
 * request path's form, which touches only the trace's header and its root
 * span. */
struct vg_trace *vg_trace_start(void *mem, const struct vg_trace_parent *parent, double rate, const char *root,
                                bool unsampled_stages);

/* A trace that was not head-sampled records only its root span from now
 * on (the request's duration, status and failure: enough to keep it when
 * it errs or is slow), so that the 99% of requests nobody looks at cost a
 * few clock readings less; a sampled trace is unaffected. */
void vg_trace_root_only(struct vg_trace *t);

/* struct vg_trace's first member, so that the checks every stage makes
 * (is there a trace, does it record stages) are inline: a root-only
 * request passes through a dozen of them. Private to obs. */
struct vg__trace_head {
    bool root_only;
};
vg_span_t vg__trace_add(struct vg_trace *t, const char *name, vg_span_t parent, uint64_t start, uint64_t end);
vg_span_t vg__trace_begin(struct vg_trace *t, const char *name, vg_span_t parent);
vg_span_t vg__trace_next(struct vg_trace *t, vg_span_t ending, const char *name, vg_span_t parent);
uint64_t vg_trace_clock(void); /* the trace clock: see vg_trace_clock_init below */

/* Whether stages are recorded (a trace, not root-only): callers skip
 * preparing a span's detail otherwise. */
static inline bool vg_trace_recording(const struct vg_trace *t)
{
    return t && !((const struct vg__trace_head *)(const void *)t)->root_only;
}

/* Starts a span (name: a static string) under parent; VG_SPAN_NONE when
 * the trace is full (counted in the record as dropped spans), which every
 * other call accepts and ignores. The span calls also accept a NULL trace
 * (tracing off) and do nothing. */
static inline vg_span_t vg_trace_begin(struct vg_trace *t, const char *name, vg_span_t parent)
{
    return vg_trace_recording(t) ? vg__trace_begin(t, name, parent) : VG_SPAN_NONE;
}
void vg_trace_end(struct vg_trace *t, vg_span_t s);
/* Ends s (when open) at a vg_trace_clock reading already taken. */
void vg_trace_end_at(struct vg_trace *t, vg_span_t s, uint64_t at);
/* s's start (a vg_trace_clock reading; 0 for VG_SPAN_NONE). */
uint64_t vg_trace_span_start(const struct vg_trace *t, vg_span_t s);
/* Ends ending (when open) and starts the next stage at the same instant:
 * one clock reading for both. */
static inline vg_span_t vg_trace_next(struct vg_trace *t, vg_span_t ending, const char *name, vg_span_t parent)
{
    return vg_trace_recording(t) ? vg__trace_next(t, ending, name, parent) : VG_SPAN_NONE;
}
/* A span that already happened, between two vg_trace_clock readings. */
static inline vg_span_t vg_trace_add(struct vg_trace *t, const char *name, vg_span_t parent, uint64_t start,
                                     uint64_t end)
{
    return vg_trace_recording(t) ? vg__trace_add(t, name, parent, start, end) : VG_SPAN_NONE;
}
/* A short detail shown with the span ("hit", "10.0.0.1:80"): copied, at
 * most 63 bytes kept. */
void vg_trace_detail(struct vg_trace *t, vg_span_t s, const char *detail, size_t len);
void vg_trace_fail(struct vg_trace *t, vg_span_t s);

bool vg_trace_sampled(const struct vg_trace *t);
const uint8_t *vg_trace_id(const struct vg_trace *t); /* 16 bytes */
/* The traceparent a callee gets when called from span s. */
void vg_trace_child_header(const struct vg_trace *t, vg_span_t s, char out[VG_TRACEPARENT_LEN + 1]);
/* Microseconds since the root span started. */
uint64_t vg_trace_elapsed_us(const struct vg_trace *t);
/* A Server-Timing header value: `name;desc="detail";dur=MS` per span that
 * has ended, then `total;dur=MS` (the request so far). Returns the length
 * written to buf (NUL-terminated; spans that do not fit are left out). */
size_t vg_trace_server_timing(const struct vg_trace *t, char *buf, size_t cap);
/* The trace clock: cheap readings in private units (the TSC where the
 * kernel trusts it), for spans; vg_trace_clock_ns converts a difference.
 * vg_trace_clock_init measures the TSC's rate (2 ms, once; vg_trace_init
 * calls it, call it at start-up to keep that off a request). */
void vg_trace_clock_init(void);
/* (vg_trace_clock itself is declared above, for the inline span calls.) */
uint64_t vg_trace_clock_ns(uint64_t from, uint64_t to);
/* The trace clock's reading ns nanoseconds ago (events timed on another
 * clock, e.g. a connection's accept). */
uint64_t vg_trace_clock_ago(uint64_t ns);

/* The span stages running now nest under (e.g. the Lua call's, for its
 * kv lookups); 0, the request, unless set. */
void vg_trace_set_current(struct vg_trace *t, vg_span_t s);
vg_span_t vg_trace_current(const struct vg_trace *t);

/* Head sampling, the same on every node for a trace: a parent's sampled
 * flag wins; otherwise a deterministic function of the trace id's random
 * part against rate (0..1). */
bool vg_trace_head_sampled(const struct vg_trace_parent *parent, const uint8_t trace_id[16], double rate);
/* A new random trace id (per-thread generator, seeded from getrandom). */
void vg_trace_new_id(uint8_t out[16]);

/* What a kept trace carries besides its spans. Strings are copied. */
struct vg_trace_meta {
    const char *app, *route, *node, *location;
    int status;
};

/* An immutable kept trace: reference counted, shared by the ring and the
 * exporter. */
struct vg_trace_rec;

/* Ends the root span and decides: a record (the caller's reference) when
 * the trace is sampled, failed (a span failed or status >= 500), or took at
 * least slow_us (0: no threshold); NULL otherwise. */
struct vg_trace_rec *vg_trace_finish(struct vg_trace *t, const struct vg_trace_meta *m, uint64_t slow_us);
void vg_trace_rec_ref(struct vg_trace_rec *r);
void vg_trace_rec_unref(struct vg_trace_rec *r);
const uint8_t *vg_trace_rec_id(const struct vg_trace_rec *r);

/* The record as JSON: {"trace_id", "node", "location", "app", "route",
 * "status", "start_us" (unix), "dropped_spans", "spans": [{"span_id",
 * "parent_id", "name", "detail", "start_us" (offset), "duration_us",
 * "error"}]}. A new jansson reference. */
struct json_t;
struct json_t *vg_trace_rec_json(const struct vg_trace_rec *r);

/* The bounded ring of a worker's kept traces (oldest out first); any
 * thread. */
struct vg_trace_ring;
struct vg_trace_ring *vg_trace_ring_create(size_t cap);
void vg_trace_ring_destroy(struct vg_trace_ring *g);
/* Takes a reference of its own. */
void vg_trace_ring_push(struct vg_trace_ring *g, struct vg_trace_rec *r);
/* Appends the JSON of every record of trace id to arr (a trace may have
 * several records on one node: a subrequest through the same node).
 * Returns how many. */
size_t vg_trace_ring_find(struct vg_trace_ring *g, const uint8_t id[16], struct json_t *arr);

/* The OTLP/HTTP JSON body (ExportTraceServiceRequest) for n records: a
 * new string, free() it. The exporter (node) posts it to a collector. */
char *vg_trace_otlp_json(struct vg_trace_rec *const *recs, size_t n, const char *service, const char *node,
                         const char *location);

/* ---- logs ---------------------------------------------------------------------------- */

/* A node's recent log lines (node log, access log, Lua's verge.log: one
 * JSON object per line) in a fixed byte budget, oldest out first; every
 * line gets a sequence number, so a reader keeps a cursor and asks for
 * what came after it. Any thread; writers hold the lock for a memcpy. */
struct vg_log_ring;
struct vg_log_ring *vg_log_ring_create(size_t bytes);
void vg_log_ring_destroy(struct vg_log_ring *g);
/* Lines longer than a quarter of the budget are cut. */
void vg_log_ring_append(struct vg_log_ring *g, uint64_t time_us, const char *line, size_t len);

struct vg_log_line {
    uint64_t seq, time_us;
    const char *text; /* into the batch's memory, not NUL-terminated */
    size_t len;
};
struct vg_log_batch {
    struct vg_log_line *lines;
    size_t n;
    uint64_t next;   /* the cursor to ask with next time */
    uint64_t missed; /* lines after the cursor that were overwritten before this read */
    char *mem;
};
/* Copies the lines after cursor `after` with time >= since_us, oldest
 * first; free with vg_log_batch_free. */
void vg_log_ring_read(struct vg_log_ring *g, uint64_t after, uint64_t since_us, struct vg_log_batch *out);
void vg_log_batch_free(struct vg_log_batch *b);

/* Log filters: terms separated by ',' (all must hold), each FIELD OP VALUE
 * with OP one of = != > >= < <= ~ (contains); numbers compare as numbers,
 * anything else as strings; a field a line lacks fails the term (!= holds).
 * E.g. "status>=500,app=shop", "msg~timeout". Untrusted (it comes over the
 * network): fuzzed. NULL with a reason when it does not parse. */
struct vg_log_filter;
struct vg_log_filter *vg_log_filter_parse(const char *expr, const char **why);
void vg_log_filter_free(struct vg_log_filter *f);
/* Whether a line (a JSON object) passes; a line that is not JSON never does. */
bool vg_log_filter_match(const struct vg_log_filter *f, const char *line, size_t len);
bool vg_log_filter_match_json(const struct vg_log_filter *f, const struct json_t *obj);

#endif
