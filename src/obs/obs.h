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

#endif
