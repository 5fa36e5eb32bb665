#include "base.h"

#include <pthread.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

static enum vg_log_level g_level = VG_LOG_INFO;
static bool g_json = true;
static vg_log_tap_fn g_tap;
static void *g_tap_arg;

void vg_log_set_tap(vg_log_tap_fn fn, void *arg)
{
    g_tap_arg = arg;
    __atomic_store_n(&g_tap, fn, __ATOMIC_RELEASE);
}

void vg_log_set_level(enum vg_log_level lvl)
{
    g_level = lvl;
}

void vg_log_set_json(bool json)
{
    g_json = json;
}

bool vg_log_is_json(void)
{
    return g_json;
}

size_t vg_json_escape(char *dst, size_t cap, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
#define PUT(c)                                                                                                         \
    do {                                                                                                               \
        if (o + 1 < cap)                                                                                               \
            dst[o] = (c);                                                                                              \
        o++;                                                                                                           \
    } while (0)
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            PUT('\\');
            PUT((char)c);
        } else if (c == '\n') {
            PUT('\\');
            PUT('n');
        } else if (c < 0x20 || c == 0x7f) {
            PUT('\\');
            PUT('u');
            PUT('0');
            PUT('0');
            PUT(hex[c >> 4]);
            PUT(hex[c & 15]);
        } else {
            PUT((char)c);
        }
    }
#undef PUT
    if (cap)
        dst[o < cap ? o : cap - 1] = '\0';
    return o;
}

void vg_log_raw_line(const char *line, size_t len)
{
    /* one writev per line: lines from several threads never interleave */
    struct iovec iov[2] = {{(void *)line, len}, {"\n", 1}};
    ssize_t r = writev(STDERR_FILENO, iov, 2);
    (void)r;
}

static const char *level_name(enum vg_log_level l)
{
    static const char *names[] = {"debug", "info", "warn", "error"};
    return names[l];
}

bool vg_log_enabled(enum vg_log_level lvl)
{
    return lvl >= g_level;
}

void vg_log(enum vg_log_level lvl, const char *msg, ...)
{
    if (lvl < g_level)
        return;
    const char *kv[2 * VG_LOG_MAX_FIELDS];
    size_t n = 0;
    va_list ap;
    va_start(ap, msg);
    const char *k;
    while (n < VG_LOG_MAX_FIELDS && (k = va_arg(ap, const char *)) != NULL) {
        kv[2 * n] = k;
        kv[2 * n + 1] = va_arg(ap, const char *);
        n++;
    }
    va_end(ap);
    vg_log_fields(lvl, msg, kv, n);
}

/* The JSON form of a line: {"time", "level", "msg", fields...}. */
static size_t format_json(char *line, size_t cap, const char *ts, enum vg_log_level lvl, const char *msg,
                          const char *const *kv, size_t n)
{
    size_t o = 0;
    o += (size_t)snprintf(line + o, cap - o, "{\"time\":\"%s\",\"level\":\"%s\",\"msg\":\"", ts, level_name(lvl));
    o += vg_json_escape(line + o, o < cap ? cap - o : 0, msg, strlen(msg));
    if (o < cap)
        o += (size_t)snprintf(line + o, cap - o, "\"");
    for (size_t i = 0; i < n; i++) {
        const char *v = kv[2 * i + 1] ? kv[2 * i + 1] : "";
        if (o < cap)
            o += (size_t)snprintf(line + o, cap - o, ",\"");
        if (o < cap)
            o += vg_json_escape(line + o, cap - o, kv[2 * i], strlen(kv[2 * i]));
        if (o < cap)
            o += (size_t)snprintf(line + o, cap - o, "\":\"");
        if (o < cap)
            o += vg_json_escape(line + o, cap - o, v, strlen(v));
        if (o < cap)
            o += (size_t)snprintf(line + o, cap - o, "\"");
    }
    if (o < cap)
        o += (size_t)snprintf(line + o, cap - o, "}");
    return o > cap ? cap : o;
}

void vg_log_fields(enum vg_log_level lvl, const char *msg, const char *const *kv, size_t n)
{
    if (lvl < g_level)
        return;
    char line[4096];
    size_t cap = sizeof(line) - 2, o = 0;
    uint64_t now = vg_wall_us();
    time_t secs = (time_t)(now / 1000000u);
    struct tm tm;
    gmtime_r(&secs, &tm);
    char ts[64];
    snprintf(ts, sizeof(ts), "%04d-%02d-%02dT%02d:%02d:%02d.%06uZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
             tm.tm_hour, tm.tm_min, tm.tm_sec, (unsigned)(now % 1000000u));
    vg_log_tap_fn tap = __atomic_load_n(&g_tap, __ATOMIC_ACQUIRE);
    if (g_json || tap)
        o = format_json(line, cap, ts, lvl, msg, kv, n);
    if (tap)
        tap(g_tap_arg, now, line, o); /* the JSON form, whatever goes to stderr */
    if (!g_json) {
        o = (size_t)snprintf(line, cap, "%s %-5s %s", ts + 11, level_name(lvl), msg);
        for (size_t i = 0; i < n && o < cap; i++)
            o += (size_t)snprintf(line + o, cap - o, " %s=%s", kv[2 * i], kv[2 * i + 1] ? kv[2 * i + 1] : "");
        if (o > cap)
            o = cap;
    }
    vg_log_raw_line(line, o);
}
