/* Traces: W3C trace context, the live per-request recorder, the keep
 * decision and the immutable records it produces.
 *
 * The recorder is built for the request path: a fixed array of spans in
 * memory the caller gives (the request's pool), static span names, two
 * vDSO clock reads per span and no locking. Only a kept trace costs an
 * allocation (its record). */
#include "obs.h"

#include <jansson.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#if defined(__x86_64__)
#include <x86intrin.h>
#endif
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#define DETAIL_MAX 24 /* "127.0.0.1:8080", "hit", a subject: longer ones are cut */

/* 56 bytes: a trace's spans live in the request's pool, whose first chunk
 * they should not outgrow (a bigger array cost a malloc per request). */
struct span {
    const char *name;
    uint64_t start, end; /* trace clock readings (end 0: open), in a record too */
    int16_t parent;
    bool error;
    char detail[DETAIL_MAX];
};

struct vg_trace {
    struct vg__trace_head head; /* first: obs.h's inline checks read it (root_only: not head-sampled and
                                   stages not wanted, only the request's own span is timed) */
    uint8_t trace_id[16];
    uint8_t parent_span[8]; /* the caller's span (from traceparent) */
    bool has_parent, sampled, failed;
    uint64_t span_base; /* span i's id is span_base + i: unique within the trace */
    uint16_t n, dropped;
    int16_t current;
    struct span spans[VG_TRACE_MAX_SPANS];
};

_Static_assert(offsetof(struct vg_trace, head) == 0, "obs.h reads the head at the trace's address");

struct vg_trace_rec {
    int refs; /* atomic */
    uint8_t trace_id[16];
    uint8_t parent_span[8];
    bool has_parent, error;
    uint64_t span_base, wall_start;
    /* the spans as recorded (trace clock readings): converted to offsets in
     * ns when read (rec_span), not when made, so that a kept trace costs a
     * copy; t0 is the root's start, open_end where a span still open ends */
    uint64_t t0, open_end;
    int status;
    uint16_t n, dropped;
    char *app, *route, *node, *location; /* inside this allocation */
    struct span spans[];
};

/* ---- trace context --------------------------------------------------------------- */

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Lower-case hex only, as the W3C grammar says. */
static bool unhex_lower(const char *s, size_t n, uint8_t *out)
{
    bool nonzero = false;
    for (size_t i = 0; i < n; i++) {
        int hi = hexval(s[2 * i]), lo = hexval(s[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return false;
        out[i] = (uint8_t)(hi << 4 | lo);
        nonzero |= out[i] != 0;
    }
    return nonzero;
}

bool vg_trace_parse_traceparent(const char *s, size_t len, struct vg_trace_parent *out)
{
    uint8_t version, flags;
    if (len < VG_TRACEPARENT_LEN || s[2] != '-' || s[35] != '-' || s[52] != '-')
        return false;
    if (hexval(s[0]) < 0 || hexval(s[1]) < 0 || hexval(s[53]) < 0 || hexval(s[54]) < 0)
        return false;
    version = (uint8_t)(hexval(s[0]) << 4 | hexval(s[1]));
    flags = (uint8_t)(hexval(s[53]) << 4 | hexval(s[54]));
    if (version == 0xff || (version == 0 && len != VG_TRACEPARENT_LEN))
        return false;
    if (version > 0 && len > VG_TRACEPARENT_LEN && s[VG_TRACEPARENT_LEN] != '-')
        return false; /* a later version may append fields, after a '-' */
    if (!unhex_lower(s + 3, 16, out->trace_id) || !unhex_lower(s + 36, 8, out->span_id))
        return false;
    out->sampled = flags & 1;
    return true;
}

/* Every request formats a traceparent for its origin: 4 bytes into 8
 * hex digits at a time, with integer arithmetic (SWAR) instead of a
 * lookup per nibble. */
static inline void hex4(const uint8_t *in, char *out)
{
    uint64_t x = (uint64_t)in[0] << 24 | (uint64_t)in[1] << 16 | (uint64_t)in[2] << 8 | in[3];
    x = ((x & 0xffff0000u) << 16) | (x & 0xffffu); /* each nibble into a byte, first digit in the top byte */
    x = ((x & 0x0000ff000000ff00ull) << 8) | (x & 0x000000ff000000ffull);
    x = ((x & 0x00f000f000f000f0ull) << 4) | (x & 0x000f000f000f000full);
    uint64_t letters = ((x + 0x0606060606060606ull) >> 4) & 0x0101010101010101ull; /* 1 where > 9 */
    x += 0x3030303030303030ull + letters * ('a' - '0' - 10);
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    x = __builtin_bswap64(x); /* the first digit (the top byte) to the lowest address */
#endif
    memcpy(out, &x, 8);
}

#if defined(__SSE2__)
/* 16 bytes into 32 hex digits in a dozen instructions: nibbles split and
 * interleaved, each becomes '0' + n, plus 39 where it is above 9. */
static inline __m128i hex_digits(__m128i nibbles)
{
    __m128i letters = _mm_and_si128(_mm_cmpgt_epi8(nibbles, _mm_set1_epi8(9)), _mm_set1_epi8('a' - '0' - 10));
    return _mm_add_epi8(_mm_add_epi8(nibbles, _mm_set1_epi8('0')), letters);
}

static inline void hex16(const uint8_t *in, char *out)
{
    __m128i v = _mm_loadu_si128((const __m128i *)(const void *)in), m = _mm_set1_epi8(0x0f);
    __m128i hi = _mm_and_si128(_mm_srli_epi16(v, 4), m), lo = _mm_and_si128(v, m);
    _mm_storeu_si128((__m128i *)(void *)out, hex_digits(_mm_unpacklo_epi8(hi, lo)));
    _mm_storeu_si128((__m128i *)(void *)(out + 16), hex_digits(_mm_unpackhi_epi8(hi, lo)));
}

static inline void hex8(const uint8_t *in, char *out)
{
    __m128i v = _mm_loadl_epi64((const __m128i *)(const void *)in), m = _mm_set1_epi8(0x0f);
    __m128i hi = _mm_and_si128(_mm_srli_epi16(v, 4), m), lo = _mm_and_si128(v, m);
    _mm_storeu_si128((__m128i *)(void *)out, hex_digits(_mm_unpacklo_epi8(hi, lo)));
}
#else
static inline void hex8(const uint8_t *in, char *out)
{
    hex4(in, out);
    hex4(in + 4, out + 8);
}

static inline void hex16(const uint8_t *in, char *out)
{
    hex8(in, out);
    hex8(in + 8, out + 16);
}
#endif

void vg_trace_hex(const uint8_t *b, size_t n, char *out)
{
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        hex16(b + i, out + 2 * i);
    if (i + 8 <= n) {
        hex8(b + i, out + 2 * i);
        i += 8;
    }
    for (; i + 4 <= n; i += 4)
        hex4(b + i, out + 2 * i);
    static const char digits[] = "0123456789abcdef";
    for (; i < n; i++) {
        out[2 * i] = digits[b[i] >> 4];
        out[2 * i + 1] = digits[b[i] & 15];
    }
    out[2 * n] = '\0';
}

bool vg_trace_id_parse(const char *hex, size_t len, uint8_t out[16])
{
    char lower[32];
    if (len != 32)
        return false;
    for (size_t i = 0; i < 32; i++)
        lower[i] = (hex[i] >= 'A' && hex[i] <= 'F') ? (char)(hex[i] - 'A' + 'a') : hex[i];
    return unhex_lower(lower, 16, out);
}

static inline void format_traceparent(const uint8_t trace_id[16], const uint8_t span_id[8], bool sampled,
                                      char out[VG_TRACEPARENT_LEN + 1])
{
    memcpy(out, "00-", 3);
    hex16(trace_id, out + 3); /* every proxied request formats one: no loop, no NUL in between */
    out[35] = '-';
    hex8(span_id, out + 36);
    memcpy(out + 52, sampled ? "-01" : "-00", 4);
}

void vg_trace_format_traceparent(const uint8_t trace_id[16], const uint8_t span_id[8], bool sampled,
                                 char out[VG_TRACEPARENT_LEN + 1])
{
    format_traceparent(trace_id, span_id, sampled, out);
}

/* ---- ids and sampling ------------------------------------------------------------ */

/* wyrand: one multiply per 64 bits; ids need uniqueness, not secrecy.
 * One state per thread (a worker's), seeded from getrandom on first use. */
static _Thread_local uint64_t rng_state;

__attribute__((noinline, cold)) static void rng_seed(void)
{
    if (getrandom(&rng_state, sizeof(rng_state), 0) != sizeof(rng_state))
        rng_state = vg_wall_us() ^ (uint64_t)(uintptr_t)&rng_state;
}

static inline uint64_t wyrand(uint64_t *state)
{
    *state += 0xa0761d6478bd642fULL;
    __uint128_t m = (__uint128_t)*state * (*state ^ 0xe7037ed1a0b428dbULL);
    return (uint64_t)(m >> 64) ^ (uint64_t)m;
}

static uint64_t rng_next(void)
{
    if (__builtin_expect(rng_state == 0, 0))
        rng_seed();
    return wyrand(&rng_state);
}

void vg_trace_new_id(uint8_t out[16])
{
    do {
        uint64_t a = rng_next(), b = rng_next();
        memcpy(out, &a, 8);
        memcpy(out + 8, &b, 8);
    } while (!(out[0] | out[8])); /* never all zero (nearly impossible; cheap to rule out) */
}

/* The random part of a trace id (its last 7 bytes, big-endian). */
static inline uint64_t id_random_part(const uint8_t trace_id[16])
{
    uint64_t x;
    memcpy(&x, trace_id + 8, 8);
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    x = __builtin_bswap64(x);
#endif
    return x & ((1ULL << 56) - 1);
}

/* A trace is head-sampled when its random part is below this: the
 * smallest integer not below rate * 2^56 (0 keeps none, 2^56 all). */
static uint64_t sample_threshold(double rate)
{
    if (!(rate > 0.0)) /* NaN too */
        return 0;
    if (rate >= 1.0)
        return 1ULL << 56;
    double r = rate * (double)(1ULL << 56);
    uint64_t t = (uint64_t)r;
    return (double)t < r ? t + 1 : t;
}

bool vg_trace_head_sampled(const struct vg_trace_parent *parent, const uint8_t trace_id[16], double rate)
{
    if (parent)
        return parent->sampled;
    /* the last 7 bytes are random in W3C level 2 ids (as in OpenTelemetry's
     * TraceIdRatioBased): every node decides the same for the same trace */
    return id_random_part(trace_id) < sample_threshold(rate);
}

/* sample_threshold of the rate last asked for, per thread (a node has one). */
static _Thread_local double thr_rate = -1.0;
static _Thread_local uint64_t thr_value;

/* ---- the live recorder ----------------------------------------------------------- */

/* The trace clock: the TSC where the kernel itself keeps time with it
 * (an invariant TSC: ~15 ns a read here against ~35 ns for a vDSO
 * clock_gettime), else CLOCK_MONOTONIC in ns. Readings are converted to ns
 * only when a record is made. The TSC's rate is measured once, over 2 ms
 * against CLOCK_MONOTONIC (error ~2e-5). */
static bool use_tsc;
static double ns_per_tick = 1.0;
static pthread_once_t clock_once = PTHREAD_ONCE_INIT;
static bool clock_ready; /* set (release) once clock_init has run: a trace's start skips pthread_once */

__attribute__((noinline)) static uint64_t mono_ns(void) /* not inlined: keeps the TSC path's callers lean */
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void clock_init(void)
{
#if defined(__x86_64__)
    char src[32] = "";
    FILE *f = fopen("/sys/devices/system/clocksource/clocksource0/current_clocksource", "r");
    if (f) {
        if (!fgets(src, sizeof(src), f))
            src[0] = '\0';
        fclose(f);
    }
    if (strcmp(src, "tsc\n") != 0)
        return;
    uint64_t n0 = mono_ns(), t0 = __rdtsc(), n1, t1;
    do {
        n1 = mono_ns();
        t1 = __rdtsc();
    } while (n1 - n0 < 2000000);
    if (t1 <= t0)
        return;
    ns_per_tick = (double)(n1 - n0) / (double)(t1 - t0);
    use_tsc = true;
#endif
}

static void clock_init_once(void)
{
    clock_init();
    __atomic_store_n(&clock_ready, true, __ATOMIC_RELEASE);
}

__attribute__((noinline, cold)) static void clock_init_slow(void)
{
    pthread_once(&clock_once, clock_init_once);
}

void vg_trace_clock_init(void)
{
    if (!__atomic_load_n(&clock_ready, __ATOMIC_ACQUIRE))
        clock_init_slow();
}

static inline uint64_t clock_now(void)
{
#if defined(__x86_64__)
    if (use_tsc)
        return __rdtsc();
#endif
    return mono_ns();
}

uint64_t vg_trace_clock(void)
{
    return clock_now();
}

uint64_t vg_trace_clock_ago(uint64_t ns)
{
    uint64_t now = vg_trace_clock(), ticks = (uint64_t)((double)ns / ns_per_tick);
    return ticks < now ? now - ticks : 1;
}

uint64_t vg_trace_clock_ns(uint64_t from, uint64_t to)
{
    return to > from ? (uint64_t)((double)(to - from) * ns_per_tick) : 0;
}

size_t vg_trace_size(void)
{
    return sizeof(struct vg_trace);
}

struct vg_trace *vg_trace_init(void *mem, const struct vg_trace_parent *parent, double rate, const char *root)
{
    return vg_trace_start(mem, parent, rate, root, true);
}

/* Every request starts here, so it is written for the 99% that head
 * sampling skips: one pass over the header fields, the ids from one
 * generator state held in a register, the root span filled in place (the
 * other spans' memory is not touched until a stage records one). No call
 * on the way (the clock's fallback aside): the once-per-thread set-up is
 * start_first's. */
static inline __attribute__((always_inline)) struct vg_trace *
start_trace(void *mem, const struct vg_trace_parent *parent, double rate, const char *root, bool unsampled_stages)
{
    struct vg_trace *t = mem;
    uint64_t st = rng_state;
    if (parent) {
        memcpy(t->trace_id, parent->trace_id, 16);
        memcpy(t->parent_span, parent->span_id, 8);
        t->sampled = parent->sampled;
    } else {
        uint64_t a, b;
        do {
            a = wyrand(&st);
            b = wyrand(&st);
        } while ((a | b) == 0); /* never all zero (nearly impossible; cheap to rule out) */
        memcpy(t->trace_id, &a, 8);
        memcpy(t->trace_id + 8, &b, 8);
        t->sampled = id_random_part(t->trace_id) < (rate == thr_rate ? thr_value : sample_threshold(rate));
    }
    t->span_base = (wyrand(&st) & ~0xffULL) | 0x100; /* + index: never zero, unique per trace */
    rng_state = st;
    t->has_parent = parent != NULL;
    t->failed = false;
    t->head.root_only = !t->sampled && !unsampled_stages;
    t->n = 1;
    t->dropped = 0;
    t->current = 0;
    struct span *r = &t->spans[0];
    r->name = root;
    r->start = clock_now();
    r->end = 0;
    r->parent = VG_SPAN_NONE;
    r->error = false;
    r->detail[0] = '\0';
    return t;
}

__attribute__((noinline, cold)) static struct vg_trace *
start_first(void *mem, const struct vg_trace_parent *parent, double rate, const char *root, bool unsampled_stages)
{
    vg_trace_clock_init();
    if (rng_state == 0)
        rng_seed();
    thr_value = sample_threshold(rate);
    thr_rate = rate;
    return start_trace(mem, parent, rate, root, unsampled_stages);
}

struct vg_trace *vg_trace_start(void *mem, const struct vg_trace_parent *parent, double rate, const char *root,
                                bool unsampled_stages)
{
    if (__builtin_expect(!__atomic_load_n(&clock_ready, __ATOMIC_ACQUIRE) || rng_state == 0 || rate != thr_rate, 0))
        return start_first(mem, parent, rate, root, unsampled_stages);
    return start_trace(mem, parent, rate, root, unsampled_stages);
}

void vg_trace_root_only(struct vg_trace *t)
{
    if (t && !t->sampled)
        t->head.root_only = true;
}

/* The spans' out-of-line halves: obs.h's inline wrappers have checked
 * that t records stages (so t->n >= 1: the root is there). */
static inline vg_span_t add_span(struct vg_trace *t, const char *name, vg_span_t parent, uint64_t start, uint64_t end)
{
    if (t->n == VG_TRACE_MAX_SPANS) {
        t->dropped++;
        return VG_SPAN_NONE;
    }
    struct span *s = &t->spans[t->n];
    s->name = name;
    s->start = start;
    s->end = end;
    s->parent = (int16_t)parent;
    s->error = false;
    s->detail[0] = '\0';
    return t->n++;
}

vg_span_t vg__trace_add(struct vg_trace *t, const char *name, vg_span_t parent, uint64_t start, uint64_t end)
{
    return add_span(t, name, parent, start, end);
}

vg_span_t vg__trace_begin(struct vg_trace *t, const char *name, vg_span_t parent)
{
    return add_span(t, name, parent, clock_now(), 0);
}

vg_span_t vg__trace_next(struct vg_trace *t, vg_span_t ending, const char *name, vg_span_t parent)
{
    uint64_t now = clock_now(); /* one reading: the next stage starts as the last one ends */
    if (ending >= 0 && t->spans[ending].end == 0)
        t->spans[ending].end = now;
    return add_span(t, name, parent, now, 0);
}

void vg_trace_end_at(struct vg_trace *t, vg_span_t s, uint64_t at)
{
    if (t && s >= 0 && t->spans[s].end == 0)
        t->spans[s].end = at;
}

void vg_trace_end(struct vg_trace *t, vg_span_t s)
{
    if (t && s >= 0 && t->spans[s].end == 0)
        t->spans[s].end = vg_trace_clock();
}

uint64_t vg_trace_span_start(const struct vg_trace *t, vg_span_t s)
{
    return t && s >= 0 ? t->spans[s].start : 0;
}

void vg_trace_detail(struct vg_trace *t, vg_span_t s, const char *detail, size_t len)
{
    if (!t || s < 0)
        return;
    if (len >= DETAIL_MAX)
        len = DETAIL_MAX - 1;
    memcpy(t->spans[s].detail, detail, len);
    t->spans[s].detail[len] = '\0';
}

void vg_trace_fail(struct vg_trace *t, vg_span_t s)
{
    if (!t)
        return;
    t->failed = true; /* even when s was not recorded: the trace is kept */
    if (s >= 0)
        t->spans[s].error = true;
}

void vg_trace_set_current(struct vg_trace *t, vg_span_t s)
{
    if (t)
        t->current = (int16_t)(s < 0 ? 0 : s);
}

vg_span_t vg_trace_current(const struct vg_trace *t)
{
    return t ? t->current : VG_SPAN_NONE;
}

bool vg_trace_sampled(const struct vg_trace *t)
{
    return t->sampled;
}

const uint8_t *vg_trace_id(const struct vg_trace *t)
{
    return t->trace_id;
}

static inline void span_id_of(uint64_t base, int i, uint8_t out[8])
{
    uint64_t id = base + (uint64_t)i; /* big-endian on the wire */
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    id = __builtin_bswap64(id);
#else
    ;
#endif
    memcpy(out, &id, 8);
}

void vg_trace_child_header(const struct vg_trace *t, vg_span_t s, char out[VG_TRACEPARENT_LEN + 1])
{
    uint8_t sid[8];
    span_id_of(t->span_base, s < 0 ? 0 : s, sid);
    format_traceparent(t->trace_id, sid, t->sampled, out);
}

uint64_t vg_trace_elapsed_us(const struct vg_trace *t)
{
    return vg_trace_clock_ns(t->spans[0].start, vg_trace_clock()) / 1000;
}

static bool quotable(const char *s)
{
    return !strpbrk(s, "\"\\");
}

size_t vg_trace_server_timing(const struct vg_trace *t, char *buf, size_t cap)
{
    size_t o = 0;
    for (uint16_t i = 1; i < t->n; i++) {
        const struct span *s = &t->spans[i];
        if (!s->end)
            continue;
        char item[160];
        double ms = (double)vg_trace_clock_ns(s->start, s->end) / 1e6;
        int n = s->detail[0] && quotable(s->detail)
                    ? snprintf(item, sizeof(item), "%s;desc=\"%s\";dur=%.3f, ", s->name, s->detail, ms)
                    : snprintf(item, sizeof(item), "%s;dur=%.3f, ", s->name, ms);
        if (n > 0 && (size_t)n < sizeof(item) && o + (size_t)n + 32 < cap) {
            memcpy(buf + o, item, (size_t)n);
            o += (size_t)n;
        }
    }
    double total = (double)vg_trace_clock_ns(t->spans[0].start, vg_trace_clock()) / 1e6;
    int n = snprintf(buf + o, cap - o, "total;dur=%.3f", total); /* fits: the loop kept 32 bytes */
    return n > 0 ? o + (size_t)n : o;
}

/* ---- keep or forget -------------------------------------------------------------- */

static char *put_str(char **at, const char *s, size_t n)
{
    char *r = *at;
    memcpy(r, s ? s : "", n);
    r[n] = '\0';
    *at += n + 1;
    return r;
}

/* Out of line: vg_trace_finish's common path (forget) stays a leaf. */
__attribute__((noinline)) static struct vg_trace_rec *make_record(const struct vg_trace *t,
                                                                  const struct vg_trace_meta *m)
{
    const char *s4[4] = {m->app, m->route, m->node, m->location};
    size_t len[4], strs = 4;
    for (int i = 0; i < 4; i++)
        strs += len[i] = s4[i] ? strlen(s4[i]) : 0;
    size_t spans = sizeof(struct span) * t->n;
    struct vg_trace_rec *r = vg_xmalloc(sizeof(*r) + spans + strs);
    r->refs = 1;
    memcpy(r->trace_id, t->trace_id, 16);
    memcpy(r->parent_span, t->parent_span, 8);
    r->has_parent = t->has_parent;
    r->error = t->failed || m->status >= 500;
    r->span_base = t->span_base;
    uint64_t now = vg_trace_clock();
    r->t0 = t->spans[0].start;
    r->open_end = t->spans[0].end ? t->spans[0].end : now; /* open spans end with the request */
    r->wall_start = vg_wall_us() * 1000 - vg_trace_clock_ns(r->t0, now);
    r->status = m->status;
    r->n = t->n;
    r->dropped = t->dropped;
    memcpy(r->spans, t->spans, spans);
    char *at = (char *)r->spans + spans;
    r->app = put_str(&at, m->app, len[0]);
    r->route = put_str(&at, m->route, len[1]);
    r->node = put_str(&at, m->node, len[2]);
    r->location = put_str(&at, m->location, len[3]);
    return r;
}

struct vg_trace_rec *vg_trace_finish(struct vg_trace *t, const struct vg_trace_meta *m, uint64_t slow_us)
{
    struct span *root = &t->spans[0];
    if (!root->end)
        root->end = clock_now();
    if (t->sampled || t->failed || m->status >= 500 ||
        (slow_us && root->end > root->start &&
         (double)(int64_t)(root->end - root->start) * ns_per_tick >= (double)slow_us * 1000.0))
        return make_record(t, m);
    return NULL;
}

void vg_trace_rec_ref(struct vg_trace_rec *r)
{
    __atomic_fetch_add(&r->refs, 1, __ATOMIC_RELAXED);
}

void vg_trace_rec_unref(struct vg_trace_rec *r)
{
    if (r && __atomic_sub_fetch(&r->refs, 1, __ATOMIC_ACQ_REL) == 0)
        free(r);
}

const uint8_t *vg_trace_rec_id(const struct vg_trace_rec *r)
{
    return r->trace_id;
}

/* ---- JSON ---------------------------------------------------------------------------- */

static json_t *hex_json(const uint8_t *b, size_t n)
{
    char buf[33];
    vg_trace_hex(b, n, buf);
    return json_string(buf);
}

static json_t *span_json(const struct vg_trace_rec *r, uint16_t i)
{
    const struct span *s = &r->spans[i];
    uint64_t start = vg_trace_clock_ns(r->t0, s->start), end = vg_trace_clock_ns(r->t0, s->end ? s->end : r->open_end);
    uint8_t sid[8], pid[8];
    span_id_of(r->span_base, i, sid);
    json_t *o = json_object();
    json_object_set_new(o, "span_id", hex_json(sid, 8));
    if (s->parent >= 0) {
        span_id_of(r->span_base, s->parent, pid);
        json_object_set_new(o, "parent_id", hex_json(pid, 8));
    } else {
        json_object_set_new(o, "parent_id", r->has_parent ? hex_json(r->parent_span, 8) : json_null());
    }
    json_object_set_new(o, "name", json_string(s->name));
    if (s->detail[0])
        json_object_set_new(o, "detail", json_string(s->detail));
    json_object_set_new(o, "start_us", json_integer((json_int_t)(start / 1000)));
    json_object_set_new(o, "duration_us", json_integer((json_int_t)((end - start) / 1000)));
    json_object_set_new(o, "error", json_boolean(s->error));
    return o;
}

json_t *vg_trace_rec_json(const struct vg_trace_rec *r)
{
    json_t *o = json_object(), *spans = json_array();
    json_object_set_new(o, "trace_id", hex_json(r->trace_id, 16));
    json_object_set_new(o, "node", json_string(r->node));
    json_object_set_new(o, "location", json_string(r->location));
    json_object_set_new(o, "app", json_string(r->app));
    json_object_set_new(o, "route", json_string(r->route));
    json_object_set_new(o, "status", json_integer(r->status));
    json_object_set_new(o, "error", json_boolean(r->error));
    json_object_set_new(o, "start_us", json_integer((json_int_t)(r->wall_start / 1000)));
    json_object_set_new(o, "dropped_spans", json_integer(r->dropped));
    for (uint16_t i = 0; i < r->n; i++)
        json_array_append_new(spans, span_json(r, i));
    json_object_set_new(o, "spans", spans);
    return o;
}
