/* base: error codes, assertions, logging and small helpers shared by every
 * module. Everything here is dependency-free (libc only). */
#ifndef VG_BASE_H
#define VG_BASE_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define VG_MUST_CHECK __attribute__((warn_unused_result))
#define VG_PRINTF(f, a) __attribute__((format(printf, f, a)))
#define VG_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* One table for every error code: generates the enum, vg_strerror() and
 * vg_err_name() (libuv's UV_ERRNO_MAP idea). Codes are negative. */
#define VG_ERRNO_MAP(X)                                                                                                \
    X(ENOMEM, -1, "out of memory")                                                                                     \
    X(EINVAL, -2, "invalid argument")                                                                                  \
    X(EIO, -3, "input/output error")                                                                                   \
    X(ENOENT, -4, "no such file or directory")                                                                         \
    X(ECONF, -5, "invalid configuration")                                                                              \
    X(ELIMIT, -6, "limit exceeded")                                                                                    \
    X(ENET, -7, "network error")                                                                                       \
    X(ETLS, -8, "TLS error")                                                                                           \
    X(EEXIST, -9, "already exists")                                                                                    \
    X(EPARSE, -10, "parse error")                                                                                      \
    X(ETIMEDOUT, -11, "timed out")

enum vg_err {
#define VG_ERR_ENUM(name, val, msg) VG_##name = (val),
    VG_ERRNO_MAP(VG_ERR_ENUM)
#undef VG_ERR_ENUM
};

const char *vg_strerror(int err);
const char *vg_err_name(int err);

/* A broken invariant is a bug: abort loudly with the place (Varnish's AN/AZ). */
void vg_panic(const char *file, int line, const char *cond) __attribute__((noreturn));
#define VG_ASSERT(c) ((c) ? (void)0 : vg_panic(__FILE__, __LINE__, #c))
#define VG_AN(p) VG_ASSERT((p) != 0)
#define VG_AZ(e) VG_ASSERT((e) == 0)

/* Allocation that cannot fail silently: aborts on OOM. For process-lifetime
 * and configuration memory only; per-request memory uses the request pool
 * so that a request failing never takes the process down. */
void *vg_xmalloc(size_t n);
void *vg_xcalloc(size_t n, size_t sz);
void *vg_xrealloc(void *p, size_t n);
char *vg_xstrdup(const char *s);
char *vg_xstrndup(const char *s, size_t n);
char *vg_xasprintf(const char *fmt, ...) VG_PRINTF(1, 2);

/* Logging: one JSON object per line on stderr (or the file set by
 * vg_log_open). Fields are given as alternating key/value C strings ending
 * in NULL; values are JSON-escaped. */
enum vg_log_level { VG_LOG_DEBUG, VG_LOG_INFO, VG_LOG_WARN, VG_LOG_ERROR };
void vg_log_set_level(enum vg_log_level lvl);
/* Whether lines of lvl are written (to skip formatting fields otherwise). */
bool vg_log_enabled(enum vg_log_level lvl);
void vg_log_set_json(bool json);
bool vg_log_is_json(void);
void vg_log(enum vg_log_level lvl, const char *msg, ...) __attribute__((sentinel));
/* The same with n key/value pairs in kv[0..2n) (keys are escaped too: they
 * may come from user code). At most VG_LOG_MAX_FIELDS pairs. */
#define VG_LOG_MAX_FIELDS 32
void vg_log_fields(enum vg_log_level lvl, const char *msg, const char *const *kv, size_t n);
void vg_log_raw_line(const char *line, size_t len); /* writes line + '\n' atomically */
/* A copy of every line logged (its JSON form, whatever the format on
 * stderr, with its wall-clock time in µs) goes to fn, on the logging
 * thread: e.g. the node's log ring. NULL stops it. */
typedef void (*vg_log_tap_fn)(void *arg, uint64_t time_us, const char *json, size_t len);
void vg_log_set_tap(vg_log_tap_fn fn, void *arg);

/* JSON string escaping into a caller buffer; returns bytes that would be
 * written (like snprintf), never writes more than cap (NUL-terminated when cap>0). */
size_t vg_json_escape(char *dst, size_t cap, const char *s, size_t len);

/* Monotonic and wall clock. */
uint64_t vg_now_ms(void);
uint64_t vg_now_us(void);
uint64_t vg_wall_us(void);
/* clock's time ms from now, for pthread_cond_timedwait (whose condition
 * variable uses that clock). */
struct timespec vg_deadline(clockid_t clock, uint64_t ms);

/* Parses a duration like "250ms", "5s", "2m", "1h" (bare numbers are
 * milliseconds) into milliseconds, and a size like "16k", "8KiB", "1m",
 * "1g" (bare numbers are bytes) into bytes. 0 on success. */
int vg_parse_duration_ms(const char *s, uint64_t *out) VG_MUST_CHECK;
int vg_parse_size(const char *s, uint64_t *out) VG_MUST_CHECK;
/* Parses a plain decimal count in [lo, hi] (no sign, no unit, no junk).
 * 0 on success. */
int vg_parse_count(const char *s, uint64_t lo, uint64_t hi, uint64_t *out) VG_MUST_CHECK;

/* SipHash-2-4 of p under a 16-byte key: a seeded hash for tables whose
 * keys come from clients (they cannot aim keys at one slot). */
uint64_t vg_siphash24(const uint8_t key[16], const void *p, size_t n);

/* Levenshtein distance, for "did you mean" suggestions. */
size_t vg_edit_distance(const char *a, const char *b);

#endif
