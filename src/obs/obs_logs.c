/* The log ring (a node's recent lines, read by cursor) and log filters.
 *
 * The ring is one byte buffer plus a ring of line descriptors: a line is
 * copied whole at the write position (wrapping to the start when it does
 * not fit at the end), and the oldest lines it overwrites are dropped.
 * Readers copy what they want under the lock and filter outside it, so a
 * slow reader never holds a worker up for more than a memcpy. */
#include "obs.h"

#include <jansson.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct entry {
    uint64_t seq, time_us;
    size_t off, len;
};

struct vg_log_ring {
    pthread_mutex_t mu;
    char *buf;
    size_t cap, pos;    /* bytes; next write offset */
    struct entry *ents; /* ring of descriptors, oldest at head */
    size_t ecap, head, n;
    uint64_t next_seq; /* the seq the next line gets (first is 1) */
};

struct vg_log_ring *vg_log_ring_create(size_t bytes)
{
    struct vg_log_ring *g = vg_xcalloc(1, sizeof(*g));
    pthread_mutex_init(&g->mu, NULL);
    g->cap = bytes < 4096 ? 4096 : bytes;
    g->buf = vg_xmalloc(g->cap);
    g->ecap = g->cap / 64 + 1; /* lines are rarely shorter than 64 bytes; if they are, fewer are kept */
    g->ents = vg_xmalloc(g->ecap * sizeof(*g->ents));
    g->next_seq = 1;
    return g;
}

void vg_log_ring_destroy(struct vg_log_ring *g)
{
    if (!g)
        return;
    pthread_mutex_destroy(&g->mu);
    free(g->buf);
    free(g->ents);
    free(g);
}

/* Whether the oldest line overlaps [off, off + len). */
static bool oldest_overlaps(const struct vg_log_ring *g, size_t off, size_t len)
{
    const struct entry *e = &g->ents[g->head];
    return e->off < off + len && off < e->off + e->len;
}

static void drop_oldest(struct vg_log_ring *g)
{
    g->head = (g->head + 1) % g->ecap;
    g->n--;
}

void vg_log_ring_append(struct vg_log_ring *g, uint64_t time_us, const char *line, size_t len)
{
    if (len > g->cap / 4)
        len = g->cap / 4;
    pthread_mutex_lock(&g->mu);
    if (g->pos + len > g->cap)
        g->pos = 0;
    while (g->n && (g->n == g->ecap || oldest_overlaps(g, g->pos, len)))
        drop_oldest(g);
    memcpy(g->buf + g->pos, line, len);
    g->ents[(g->head + g->n) % g->ecap] = (struct entry){g->next_seq++, time_us, g->pos, len};
    g->n++;
    g->pos += len;
    pthread_mutex_unlock(&g->mu);
}

void vg_log_ring_read(struct vg_log_ring *g, uint64_t after, uint64_t since_us, struct vg_log_batch *out)
{
    memset(out, 0, sizeof(*out));
    pthread_mutex_lock(&g->mu);
    uint64_t first = g->n ? g->ents[g->head].seq : g->next_seq;
    out->missed = after + 1 < first ? first - after - 1 : 0;
    out->next = g->next_seq - 1;
    size_t bytes = 0, k0 = after >= first ? (size_t)(after - first + 1) : 0;
    for (size_t k = k0; k < g->n; k++)
        bytes += g->ents[(g->head + k) % g->ecap].len;
    out->lines = vg_xmalloc((g->n - (k0 < g->n ? k0 : g->n) + 1) * sizeof(*out->lines));
    out->mem = vg_xmalloc(bytes + 1);
    size_t o = 0;
    for (size_t k = k0; k < g->n; k++) {
        const struct entry *e = &g->ents[(g->head + k) % g->ecap];
        if (e->time_us < since_us)
            continue;
        memcpy(out->mem + o, g->buf + e->off, e->len);
        out->lines[out->n++] = (struct vg_log_line){e->seq, e->time_us, out->mem + o, e->len};
        o += e->len;
    }
    pthread_mutex_unlock(&g->mu);
}

void vg_log_batch_free(struct vg_log_batch *b)
{
    free(b->lines);
    free(b->mem);
    memset(b, 0, sizeof(*b));
}

/* ---- filters ----------------------------------------------------------------------- */

enum op { OP_EQ, OP_NE, OP_GT, OP_GE, OP_LT, OP_LE, OP_HAS };

struct term {
    char *field, *value;
    enum op op;
    bool numeric;
    double num;
};

struct vg_log_filter {
    struct term *terms;
    size_t n;
};

#define FILTER_MAX_TERMS 16

void vg_log_filter_free(struct vg_log_filter *f)
{
    if (!f)
        return;
    for (size_t i = 0; i < f->n; i++) {
        free(f->terms[i].field);
        free(f->terms[i].value);
    }
    free(f->terms);
    free(f);
}

static bool field_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.';
}

/* The operator at p: its kind and length, 0 when none. */
static size_t op_at(const char *p, enum op *op)
{
    static const struct {
        const char *s;
        enum op op;
    } ops[] = {{">=", OP_GE}, {"<=", OP_LE}, {"!=", OP_NE}, {"=", OP_EQ}, {">", OP_GT}, {"<", OP_LT}, {"~", OP_HAS}};
    for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++)
        if (strncmp(p, ops[i].s, strlen(ops[i].s)) == 0) {
            *op = ops[i].op;
            return strlen(ops[i].s);
        }
    return 0;
}

static bool parse_term(const char *p, size_t len, struct term *t, const char **why)
{
    size_t f = 0;
    while (f < len && field_char(p[f]))
        f++;
    if (f == 0 || f > 64) {
        *why = "a term starts with a field name (letters, digits, '_' or '.')";
        return false;
    }
    size_t ol = f < len ? op_at(p + f, &t->op) : 0;
    if (ol == 0) {
        *why = "a field name is followed by one of = != > >= < <= ~";
        return false;
    }
    t->field = strndup(p, f);
    t->value = strndup(p + f + ol, len - f - ol);
    char *end;
    t->num = strtod(t->value, &end);
    t->numeric = *t->value && !*end;
    if (!t->numeric && t->op != OP_EQ && t->op != OP_NE && t->op != OP_HAS) {
        *why = "> >= < <= compare numbers";
        return false;
    }
    return true;
}

struct vg_log_filter *vg_log_filter_parse(const char *expr, const char **why)
{
    struct vg_log_filter *f = vg_xcalloc(1, sizeof(*f));
    f->terms = vg_xcalloc(FILTER_MAX_TERMS, sizeof(*f->terms));
    const char *p = expr;
    while (*p) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (f->n == FILTER_MAX_TERMS) {
            *why = "at most 16 terms";
            vg_log_filter_free(f);
            return NULL;
        }
        if (!parse_term(p, len, &f->terms[f->n++], why)) {
            vg_log_filter_free(f);
            return NULL;
        }
        p += len + (comma != NULL);
    }
    return f;
}

/* A field's value as text (strings as they are, numbers and booleans as
 * JSON writes them) into buf; NULL when absent or not a scalar. */
static const char *field_text(const json_t *v, char *buf, size_t cap, double *num, bool *is_num)
{
    *is_num = json_is_number(v);
    if (*is_num) {
        *num = json_number_value(v);
        snprintf(buf, cap, json_is_integer(v) ? "%.0f" : "%g", *num);
        return buf;
    }
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        char *end;
        *num = strtod(s, &end);
        *is_num = *s && !*end; /* "status":"503" in a node log line still compares as a number */
        return s;
    }
    if (json_is_boolean(v))
        return json_is_true(v) ? "true" : "false";
    return NULL;
}

static bool term_holds(const struct term *t, const json_t *obj)
{
    char buf[64];
    double num = 0;
    bool is_num;
    const char *s = field_text(json_object_get(obj, t->field), buf, sizeof(buf), &num, &is_num);
    if (!s)
        return t->op == OP_NE;
    bool num_cmp = t->numeric && is_num;
    switch (t->op) {
    case OP_EQ:
        return num_cmp ? num == t->num : strcmp(s, t->value) == 0;
    case OP_NE:
        return num_cmp ? num != t->num : strcmp(s, t->value) != 0;
    case OP_GT:
        return num_cmp && num > t->num;
    case OP_GE:
        return num_cmp && num >= t->num;
    case OP_LT:
        return num_cmp && num < t->num;
    case OP_LE:
        return num_cmp && num <= t->num;
    case OP_HAS:
        return strstr(s, t->value) != NULL;
    }
    return false;
}

bool vg_log_filter_match_json(const struct vg_log_filter *f, const json_t *obj)
{
    if (!json_is_object(obj))
        return false;
    for (size_t i = 0; f && i < f->n; i++)
        if (!term_holds(&f->terms[i], obj))
            return false;
    return true;
}

bool vg_log_filter_match(const struct vg_log_filter *f, const char *line, size_t len)
{
    json_t *obj = json_loadb(line, len, 0, NULL);
    bool ok = vg_log_filter_match_json(f, obj);
    json_decref(obj);
    return ok;
}
