/* Reading the YAML tree: error reporting, the mapping walker with its
 * "did you mean" suggestions, and typed scalar readers. Every message names
 * what was expected, so an app developer can fix the manifest from the
 * message alone. */
#include "conf/conf_int.h"

#include <ctype.h>
#include <errno.h>
#include <string.h>

static void set_error(struct vg__conf_ld *ld, int line, int col, const char *fmt, va_list ap)
{
    if (ld->failed)
        return; /* the first error is the one worth fixing first */
    ld->failed = true;
    snprintf(ld->err->file, sizeof(ld->err->file), "%s", ld->file);
    ld->err->line = line;
    ld->err->col = col;
    vsnprintf(ld->err->msg, sizeof(ld->err->msg), fmt, ap);
}

int vg__conf_fail(struct vg__conf_ld *ld, const struct vg__conf_node *n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    set_error(ld, n ? n->line : 0, n ? n->col : 0, fmt, ap);
    va_end(ap);
    return VG_ECONF;
}

int vg__conf_fail_at(struct vg__conf_ld *ld, int line, int col, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    set_error(ld, line, col, fmt, ap);
    va_end(ap);
    return VG_ECONF;
}

const char *vg__conf_show(const char *s, char *buf, size_t cap)
{
    static const size_t clip = 60; /* keeps a message within vg_conf_error.msg */
    size_t o = 0;
    VG_ASSERT(cap >= clip + 8);
    for (size_t i = 0; s[i] && o + 5 < cap; i++) {
        if (i == clip) {
            memcpy(buf + o, "...", 3);
            o += 3;
            break;
        }
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f)
            o += (size_t)snprintf(buf + o, cap - o, "\\x%02x", c);
        else
            buf[o++] = (char)c;
    }
    buf[o] = '\0';
    return buf;
}

const char *vg__conf_node_kind(const struct vg__conf_node *n)
{
    switch (n ? n->type : VG__CONF_NODE_NULL) {
    case VG__CONF_NODE_SEQ:
        return "a list";
    case VG__CONF_NODE_MAP:
        return "a mapping";
    case VG__CONF_NODE_SCALAR:
        return "a single value";
    default:
        return "nothing";
    }
}

const char *vg__conf_suggest(const char *s, const char *const *cands, size_t n)
{
    const char *best = NULL;
    size_t best_d = 3; /* suggest only within distance 2: further is noise */
    for (size_t i = 0; i < n; i++) {
        size_t d = vg_edit_distance(s, cands[i]);
        if (d < best_d) {
            best_d = d;
            best = cands[i];
        }
    }
    return best;
}

static const struct vg__conf_node *pos_or(const struct vg__conf_node *val, const struct vg__conf_node *key)
{
    return val && val->line > 0 ? val : key;
}

/* "expected X for 'key', got ..." with the offending value shown. */
static int expected(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                    const char *what)
{
    char k[80], v[80];
    const char *kn = key && key->str ? vg__conf_show(key->str, k, sizeof(k)) : "value";
    if (val && val->type == VG__CONF_NODE_SCALAR)
        return vg__conf_fail(ld, pos_or(val, key), "expected %s for '%s', got '%s'", what, kn,
                             vg__conf_show(val->str, v, sizeof(v)));
    return vg__conf_fail(ld, pos_or(val, key), "expected %s for '%s', got %s", what, kn, vg__conf_node_kind(val));
}

static const struct vg__conf_key *find_key(const char *name, const struct vg__conf_key *keys, size_t n_keys,
                                           size_t *idx)
{
    for (size_t i = 0; i < n_keys; i++) {
        if (strcmp(name, keys[i].name) == 0) {
            *idx = i;
            return &keys[i];
        }
    }
    return NULL;
}

static int unknown_key(struct vg__conf_ld *ld, const struct vg__conf_node *k, const char *what,
                       const struct vg__conf_key *keys, size_t n_keys)
{
    const char *names[64];
    char shown[80], list[400];
    size_t o = 0;
    VG_ASSERT(n_keys <= VG_ARRAY_LEN(names));
    list[0] = '\0';
    for (size_t i = 0; i < n_keys; i++) {
        names[i] = keys[i].name;
        if (o < sizeof(list))
            o += (size_t)snprintf(list + o, sizeof(list) - o, "%s%s", i ? ", " : "", keys[i].name);
    }
    const char *s = vg__conf_suggest(k->str, names, n_keys);
    vg__conf_show(k->str, shown, sizeof(shown));
    if (s)
        return vg__conf_fail(ld, k, "unknown key '%s' in %s; did you mean '%s'?", shown, what, s);
    return vg__conf_fail(ld, k, "unknown key '%s' in %s (expected one of: %s)", shown, what, list);
}

int vg__conf_map_check(struct vg__conf_ld *ld, const struct vg__conf_node *n, const char *what,
                       const struct vg__conf_key *keys, size_t n_keys)
{
    if (!n || n->type != VG__CONF_NODE_MAP)
        return vg__conf_fail(ld, n, "expected a mapping for %s, got %s", what, vg__conf_node_kind(n));
    const struct vg__conf_node *seen[64] = {0};
    VG_ASSERT(n_keys <= VG_ARRAY_LEN(seen));
    for (size_t i = 0; i < n->n_kids; i += 2) {
        const struct vg__conf_node *k = n->kids[i];
        size_t idx;
        if (k->type != VG__CONF_NODE_SCALAR)
            return vg__conf_fail(ld, k, "expected a name as key in %s, got %s", what, vg__conf_node_kind(k));
        if (!find_key(k->str, keys, n_keys, &idx))
            return unknown_key(ld, k, what, keys, n_keys);
        if (seen[idx])
            return vg__conf_fail(ld, k, "duplicate key '%s' in %s (first given at line %d)", keys[idx].name, what,
                                 seen[idx]->line);
        seen[idx] = k;
    }
    for (size_t i = 0; i < n_keys; i++)
        if (keys[i].required && !seen[i])
            return vg__conf_fail(ld, n, "missing required key '%s' in %s", keys[i].name, what);
    return 0;
}

int vg__conf_map_parse(struct vg__conf_ld *ld, const struct vg__conf_node *n, const struct vg__conf_key *keys,
                       size_t n_keys, void *obj)
{
    for (size_t i = 0; i < n->n_kids; i += 2) {
        size_t idx;
        const struct vg__conf_key *k = find_key(n->kids[i]->str, keys, n_keys, &idx);
        VG_AN(k); /* vg__conf_map_check ran first */
        int rc = k->parse ? k->parse(ld, n->kids[i], n->kids[i + 1], obj) : 0;
        if (rc)
            return rc;
    }
    return 0;
}

int vg__conf_map_walk(struct vg__conf_ld *ld, const struct vg__conf_node *n, const char *what,
                      const struct vg__conf_key *keys, size_t n_keys, void *obj)
{
    int rc = vg__conf_map_check(ld, n, what, keys, n_keys);
    return rc ? rc : vg__conf_map_parse(ld, n, keys, n_keys, obj);
}

const struct vg__conf_node *vg__conf_map_get(const struct vg__conf_node *map, const char *key)
{
    for (size_t i = 0; map && map->type == VG__CONF_NODE_MAP && i < map->n_kids; i += 2)
        if (map->kids[i]->str && strcmp(map->kids[i]->str, key) == 0)
            return map->kids[i + 1];
    return NULL;
}

int vg__conf_list(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                  bool allow_scalar, struct vg__conf_node *const **items, size_t *n)
{
    static struct vg__conf_node *const none[1];
    if (val && val->type == VG__CONF_NODE_SEQ) {
        *items = val->n_kids ? val->kids : none;
        *n = val->n_kids;
        return 0;
    }
    if (allow_scalar && val && val->type == VG__CONF_NODE_SCALAR) {
        /* The tree is ours and lives as long as the load: the address of the
         * one child slot is stable. */
        struct vg__conf_node **one = vg__conf_alloc(&ld->tmp, sizeof(*one));
        *one = (struct vg__conf_node *)val;
        *items = one;
        *n = 1;
        return 0;
    }
    return expected(ld, key, val, allow_scalar ? "a value or a list" : "a list");
}

int vg__conf_want_scalar(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                         const char *what)
{
    if (val && val->type == VG__CONF_NODE_SCALAR)
        return 0;
    return expected(ld, key, val, what);
}

int vg__conf_want_str(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                      char **out)
{
    int rc = vg__conf_want_scalar(ld, key, val, "a string");
    if (rc)
        return rc;
    *out = vg__conf_strndup(ld->pool, val->str, val->len);
    return 0;
}

static bool parse_uint(const char *s, uint64_t *out)
{
    if (!isdigit((unsigned char)*s))
        return false;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end)
        return false;
    *out = v;
    return true;
}

int vg__conf_want_uint(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                       uint64_t min, uint64_t max, uint64_t *out)
{
    char what[96];
    snprintf(what, sizeof(what), "an integer between %llu and %llu", (unsigned long long)min, (unsigned long long)max);
    uint64_t v = 0;
    if (vg__conf_want_scalar(ld, key, val, what) || !parse_uint(val->str, &v) || v < min || v > max)
        return expected(ld, key, val, what);
    *out = v;
    return 0;
}

int vg__conf_want_u32(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                      uint32_t min, uint32_t max, uint32_t *out)
{
    uint64_t v = 0;
    int rc = vg__conf_want_uint(ld, key, val, min, max, &v);
    if (rc == 0)
        *out = (uint32_t)v;
    return rc;
}

/* "250ms", "5s", "2m", "1h" in the largest exact unit, for range messages. */
static const char *fmt_ms(uint64_t ms, char *buf, size_t cap)
{
    static const struct {
        uint64_t mul;
        const char *unit;
    } units[] = {{3600000, "h"}, {60000, "m"}, {1000, "s"}, {1, "ms"}};
    for (size_t i = 0; i < VG_ARRAY_LEN(units); i++) {
        if (ms % units[i].mul == 0 && (ms || units[i].mul == 1000)) {
            snprintf(buf, cap, "%llu%s", (unsigned long long)(ms / units[i].mul), units[i].unit);
            return buf;
        }
    }
    snprintf(buf, cap, "%llums", (unsigned long long)ms);
    return buf;
}

int vg__conf_want_duration(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                           uint64_t min_ms, uint64_t max_ms, uint64_t *out)
{
    uint64_t v = 0;
    const char *what = "a duration like 5s, 250ms or 2m";
    if (vg__conf_want_scalar(ld, key, val, what) || vg_parse_duration_ms(val->str, &v) != 0)
        return expected(ld, key, val, what);
    if (v < min_ms || v > max_ms) {
        char range[96], a[32], b[32];
        snprintf(range, sizeof(range), "a duration between %s and %s", fmt_ms(min_ms, a, sizeof(a)),
                 fmt_ms(max_ms, b, sizeof(b)));
        return expected(ld, key, val, range);
    }
    *out = v;
    return 0;
}

/* "16k", "64g", in the largest exact binary unit. */
static const char *fmt_size(uint64_t n, char *buf, size_t cap)
{
    static const char units[] = "gmk";
    for (int i = 0; i < 3; i++) {
        uint64_t mul = 1ull << (10 * (3 - i));
        if (n && n % mul == 0) {
            snprintf(buf, cap, "%llu%c", (unsigned long long)(n / mul), units[i]);
            return buf;
        }
    }
    snprintf(buf, cap, "%llu", (unsigned long long)n);
    return buf;
}

int vg__conf_want_size(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                       uint64_t min, uint64_t max, uint64_t *out)
{
    uint64_t v = 0;
    const char *what = "a size like 16k, 8m or 1g";
    if (vg__conf_want_scalar(ld, key, val, what) || vg_parse_size(val->str, &v) != 0)
        return expected(ld, key, val, what);
    if (v < min || v > max) {
        char range[96], a[32], b[32];
        snprintf(range, sizeof(range), "a size between %s and %s", fmt_size(min, a, sizeof(a)),
                 fmt_size(max, b, sizeof(b)));
        return expected(ld, key, val, range);
    }
    *out = v;
    return 0;
}

int vg__conf_want_bool(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                       bool *out)
{
    const char *what = "true or false";
    if (vg__conf_want_scalar(ld, key, val, what))
        return VG_ECONF;
    if (strcasecmp(val->str, "true") == 0)
        *out = true;
    else if (strcasecmp(val->str, "false") == 0)
        *out = false;
    else
        return expected(ld, key, val, what);
    return 0;
}

int vg__conf_want_enum(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                       const char *const *names, size_t n, int *out)
{
    char what[200] = "", shown[80];
    size_t o = 0;
    for (size_t i = 0; i < n && o < sizeof(what); i++)
        o += (size_t)snprintf(what + o, sizeof(what) - o, "%s%s", i == 0 ? "" : i + 1 == n ? " or " : ", ", names[i]);
    if (vg__conf_want_scalar(ld, key, val, what))
        return VG_ECONF;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(val->str, names[i]) == 0) {
            *out = (int)i;
            return 0;
        }
    }
    const char *s = vg__conf_suggest(val->str, names, n);
    if (s)
        return vg__conf_fail(ld, val, "unknown %s '%s'; did you mean '%s'?", key->str,
                             vg__conf_show(val->str, shown, sizeof(shown)), s);
    return expected(ld, key, val, what);
}
