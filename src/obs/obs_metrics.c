#include "obs.h"

#include <pthread.h>
#include <stdarg.h>
#include <string.h>

#define MAX_SERIES 8192
#define N_BUCKETS 14

static const uint64_t bucket_us[N_BUCKETS] = {500,    1000,   2500,   5000,    10000,   25000,   50000,
                                              100000, 250000, 500000, 1000000, 2500000, 5000000, 10000000};

enum kind { COUNTER, HISTOGRAM };

struct series {
    enum kind kind;
    char *name, *help, *labels;
    struct vg_obs_counter *counter;
    struct vg_obs_histogram *hist;
};

struct vg_obs_counter {
    uint64_t v;
};

struct vg_obs_histogram {
    uint64_t buckets[N_BUCKETS]; /* non-cumulative; summed at render */
    uint64_t count, sum_us;
};

struct collector {
    vg_obs_collect_fn fn;
    void *data;
};

struct vg_obs_registry {
    pthread_mutex_t mu;
    struct series *series;
    size_t n, cap;
    struct collector *collectors;
    size_t n_collectors;
};

struct vg_obs_buf {
    char *p;
    size_t len, cap;
};

struct vg_obs_registry *vg_obs_registry_create(void)
{
    struct vg_obs_registry *r = vg_xcalloc(1, sizeof(*r));
    pthread_mutex_init(&r->mu, NULL);
    return r;
}

void vg_obs_registry_destroy(struct vg_obs_registry *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n; i++) {
        free(r->series[i].name);
        free(r->series[i].help);
        free(r->series[i].labels);
        free(r->series[i].counter);
        free(r->series[i].hist);
    }
    free(r->series);
    free(r->collectors);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

/* Finds or adds a series; called with r->mu held. */
static struct series *series_get(struct vg_obs_registry *r, enum kind k, const char *name, const char *help,
                                 const char *labels)
{
    for (size_t i = 0; i < r->n; i++) {
        struct series *s = &r->series[i];
        if (s->kind == k && strcmp(s->name, name) == 0 && strcmp(s->labels, labels) == 0)
            return s;
    }
    if (r->n == MAX_SERIES)
        return NULL;
    if (r->n == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 64;
        r->series = vg_xrealloc(r->series, r->cap * sizeof(*r->series));
    }
    struct series *s = &r->series[r->n++];
    *s = (struct series){.kind = k, .name = vg_xstrdup(name), .help = vg_xstrdup(help), .labels = vg_xstrdup(labels)};
    if (k == COUNTER)
        s->counter = vg_xcalloc(1, sizeof(*s->counter));
    else
        s->hist = vg_xcalloc(1, sizeof(*s->hist));
    return s;
}

struct vg_obs_counter *vg_obs_counter_get(struct vg_obs_registry *r, const char *name, const char *help,
                                          const char *labels)
{
    pthread_mutex_lock(&r->mu);
    struct series *s = series_get(r, COUNTER, name, help, labels);
    pthread_mutex_unlock(&r->mu);
    return s ? s->counter : NULL;
}

struct vg_obs_histogram *vg_obs_histogram_get(struct vg_obs_registry *r, const char *name, const char *help,
                                              const char *labels)
{
    pthread_mutex_lock(&r->mu);
    struct series *s = series_get(r, HISTOGRAM, name, help, labels);
    pthread_mutex_unlock(&r->mu);
    return s ? s->hist : NULL;
}

void vg_obs_counter_add(struct vg_obs_counter *c, uint64_t v)
{
    if (c)
        __atomic_fetch_add(&c->v, v, __ATOMIC_RELAXED);
}

uint64_t vg_obs_counter_value(const struct vg_obs_counter *c)
{
    return c ? __atomic_load_n(&c->v, __ATOMIC_RELAXED) : 0;
}

void vg_obs_histogram_observe_us(struct vg_obs_histogram *h, uint64_t us)
{
    if (!h)
        return;
    size_t b = 0;
    while (b < N_BUCKETS && us > bucket_us[b])
        b++;
    if (b < N_BUCKETS)
        __atomic_fetch_add(&h->buckets[b], 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&h->count, 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&h->sum_us, us, __ATOMIC_RELAXED);
}

void vg_obs_collector_add(struct vg_obs_registry *r, vg_obs_collect_fn fn, void *data)
{
    pthread_mutex_lock(&r->mu);
    r->collectors = vg_xrealloc(r->collectors, (r->n_collectors + 1) * sizeof(*r->collectors));
    r->collectors[r->n_collectors++] = (struct collector){fn, data};
    pthread_mutex_unlock(&r->mu);
}

void vg_obs_collector_remove(struct vg_obs_registry *r, vg_obs_collect_fn fn, void *data)
{
    pthread_mutex_lock(&r->mu);
    for (size_t i = 0; i < r->n_collectors; i++) {
        if (r->collectors[i].fn == fn && r->collectors[i].data == data) {
            memmove(&r->collectors[i], &r->collectors[i + 1], (r->n_collectors - i - 1) * sizeof(*r->collectors));
            r->n_collectors--;
            break;
        }
    }
    pthread_mutex_unlock(&r->mu);
}

void vg_obs_buf_printf(struct vg_obs_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if (b->len + (size_t)n + 1 > b->cap) {
        b->cap = (b->len + (size_t)n + 1) * 2;
        b->p = vg_xrealloc(b->p, b->cap);
    }
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

static void render_series(struct vg_obs_buf *b, const struct series *s, const char **last_name)
{
    if (!*last_name || strcmp(*last_name, s->name) != 0) {
        vg_obs_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", s->name, s->help, s->name,
                          s->kind == COUNTER ? "counter" : "histogram");
        *last_name = s->name;
    }
    const char *sep = s->labels[0] ? "," : "";
    if (s->kind == COUNTER) {
        vg_obs_buf_printf(b, "%s%s%s%s %llu\n", s->name, *sep ? "{" : "", s->labels, *sep ? "}" : "",
                          (unsigned long long)vg_obs_counter_value(s->counter));
        return;
    }
    uint64_t cum = 0;
    for (size_t i = 0; i < N_BUCKETS; i++) {
        cum += __atomic_load_n(&s->hist->buckets[i], __ATOMIC_RELAXED);
        vg_obs_buf_printf(b, "%s_bucket{%s%sle=\"%g\"} %llu\n", s->name, s->labels, sep, (double)bucket_us[i] / 1e6,
                          (unsigned long long)cum);
    }
    uint64_t count = __atomic_load_n(&s->hist->count, __ATOMIC_RELAXED);
    vg_obs_buf_printf(b, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", s->name, s->labels, sep, (unsigned long long)count);
    vg_obs_buf_printf(b, "%s_sum%s%s%s %.6f\n", s->name, *sep ? "{" : "", s->labels, *sep ? "}" : "",
                      (double)__atomic_load_n(&s->hist->sum_us, __ATOMIC_RELAXED) / 1e6);
    vg_obs_buf_printf(b, "%s_count%s%s%s %llu\n", s->name, *sep ? "{" : "", s->labels, *sep ? "}" : "",
                      (unsigned long long)count);
}

static int cmp_series(const void *a, const void *b)
{
    const struct series *x = *(const struct series *const *)a, *y = *(const struct series *const *)b;
    int c = strcmp(x->name, y->name);
    return c ? c : strcmp(x->labels, y->labels);
}

char *vg_obs_registry_render(struct vg_obs_registry *r, size_t *len)
{
    struct vg_obs_buf b = {vg_xmalloc(4096), 0, 4096};
    b.p[0] = '\0';
    pthread_mutex_lock(&r->mu);
    /* group each metric family together, as the exposition format requires */
    const struct series **sorted = vg_xmalloc((r->n ? r->n : 1) * sizeof(*sorted));
    for (size_t i = 0; i < r->n; i++)
        sorted[i] = &r->series[i];
    qsort(sorted, r->n, sizeof(*sorted), cmp_series);
    const char *last = NULL;
    for (size_t i = 0; i < r->n; i++)
        render_series(&b, sorted[i], &last);
    free(sorted);
    for (size_t i = 0; i < r->n_collectors; i++)
        r->collectors[i].fn(r->collectors[i].data, &b);
    pthread_mutex_unlock(&r->mu);
    *len = b.len;
    return b.p;
}

void vg_obs_label_escape(char *dst, size_t cap, const char *s)
{
    size_t o = 0;
    for (; *s && o + 2 < cap; s++) {
        if (*s == '\\' || *s == '"') {
            dst[o++] = '\\';
            dst[o++] = *s;
        } else if (*s == '\n') {
            dst[o++] = '\\';
            dst[o++] = 'n';
        } else {
            dst[o++] = *s;
        }
    }
    if (cap)
        dst[o < cap ? o : cap - 1] = '\0';
}
