/* The manifest's `rollout:` section: how the control plane stages a new
 * version of the app over the nodes (canary, waves) and the gates each
 * step must pass (docs/manifest.md "rollout"). */
#include "conf/conf_int.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

void vg_conf_rollout_default(struct vg_conf_rollout *r)
{
    *r = (struct vg_conf_rollout){
        .canary = 1,
        .waves = {100},
        .n_waves = 1,
        .window_ms = 30000,
        .min_requests = 20,
        .max_error_rate = 0.01,
        .max_p99_ratio = 1.5,
        .healthy_timeout_ms = 60000,
    };
}

/* "12", "12.5": a plain decimal, no exponent, no sign, no hex (strtod
 * alone takes "inf", "0x1p3" and " 1"). */
static bool parse_decimal(const char *s, size_t len, double *out)
{
    if (len == 0 || len > 32)
        return false;
    size_t dots = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '.')
            dots++;
        else if (s[i] < '0' || s[i] > '9')
            return false;
    }
    if (dots > 1 || s[0] == '.' || s[len - 1] == '.')
        return false;
    char buf[40];
    memcpy(buf, s, len);
    buf[len] = '\0';
    errno = 0;
    char *end;
    double v = strtod(buf, &end);
    if (errno || *end || !isfinite(v))
        return false;
    *out = v;
    return true;
}

/* A percentage "N%" (integer N in [lo, 100]); *ok false when val is not
 * written as one. */
static bool parse_percent(const struct vg__conf_node *val, uint32_t lo, uint32_t *out)
{
    if (val->type != VG__CONF_NODE_SCALAR || val->len < 2 || val->str[val->len - 1] != '%')
        return false;
    uint32_t v = 0;
    for (size_t i = 0; i + 1 < val->len; i++) {
        if (val->str[i] < '0' || val->str[i] > '9' || i >= 3)
            return false;
        v = v * 10 + (uint32_t)(val->str[i] - '0');
    }
    if (v < lo || v > 100)
        return false;
    *out = v;
    return true;
}

static int parse_canary(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                        void *obj)
{
    struct vg_conf_rollout *r = obj;
    const char *what = "a node count like 1 or a percentage like \"10%\" (0 for no canary)";
    uint32_t pct;
    if (parse_percent(val, 0, &pct)) {
        r->canary = pct;
        r->canary_percent = true;
        return 0;
    }
    if (val->type == VG__CONF_NODE_SCALAR && memchr(val->str, '%', val->len)) {
        char shown[80];
        return vg__conf_fail(ld, val, "expected %s for 'canary', got '%s' (a percentage is 0%% to 100%%)", what,
                             vg__conf_show(val->str, shown, sizeof(shown)));
    }
    r->canary_percent = false;
    uint64_t n = 0;
    if (val->type != VG__CONF_NODE_SCALAR || val->len == 0 || val->len > 6 ||
        strspn(val->str, "0123456789") != val->len) {
        char shown[80];
        if (val->type != VG__CONF_NODE_SCALAR)
            return vg__conf_fail(ld, val, "expected %s for 'canary', got %s", what, vg__conf_node_kind(val));
        return vg__conf_fail(ld, val, "expected %s for 'canary', got '%s'", what,
                             vg__conf_show(val->str, shown, sizeof(shown)));
    }
    for (size_t i = 0; i < val->len; i++)
        n = n * 10 + (uint64_t)(val->str[i] - '0');
    r->canary = (uint32_t)n;
    return 0;
}

static int parse_waves(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                       void *obj)
{
    struct vg_conf_rollout *r = obj;
    struct vg__conf_node *const *items;
    size_t n;
    int rc = vg__conf_list(ld, key, val, false, &items, &n);
    if (rc)
        return rc;
    if (n == 0)
        return vg__conf_fail(ld, val, "'waves' needs at least one wave, the last one 100%%");
    if (n > VG_CONF_ROLLOUT_MAX_WAVES)
        return vg__conf_fail(ld, items[VG_CONF_ROLLOUT_MAX_WAVES], "'waves' has more than %d waves",
                             VG_CONF_ROLLOUT_MAX_WAVES);
    for (size_t i = 0; i < n; i++) {
        const struct vg__conf_node *it = items[i];
        uint32_t v = 0;
        bool ok = parse_percent(it, 1, &v);
        if (!ok && it->type == VG__CONF_NODE_SCALAR && !memchr(it->str, '%', it->len)) {
            uint64_t u;
            if (vg__conf_want_uint(ld, key, it, 1, 100, &u) != 0)
                return VG_ECONF;
            v = (uint32_t)u;
            ok = true;
        }
        if (!ok) {
            char shown[80];
            return vg__conf_fail(ld, it, "expected a cumulative percentage from 1 to 100 in 'waves', got %s%s%s",
                                 it->type == VG__CONF_NODE_SCALAR ? "'" : "",
                                 it->type == VG__CONF_NODE_SCALAR ? vg__conf_show(it->str, shown, sizeof(shown))
                                                                  : vg__conf_node_kind(it),
                                 it->type == VG__CONF_NODE_SCALAR ? "'" : "");
        }
        if (i > 0 && v <= r->waves[i - 1])
            return vg__conf_fail(ld, it, "'waves' are cumulative percentages and must increase: %u%% after %u%%", v,
                                 r->waves[i - 1]);
        r->waves[i] = v;
    }
    if (r->waves[n - 1] != 100)
        return vg__conf_fail(ld, items[n - 1], "the last wave must be 100%% (every node), got %u%%", r->waves[n - 1]);
    r->n_waves = n;
    return 0;
}

static int parse_window(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                        void *obj)
{
    return vg__conf_want_duration(ld, key, val, 0, VG__CONF_MAX_DURATION_MS,
                                  &((struct vg_conf_rollout *)obj)->window_ms);
}

static int parse_healthy_timeout(struct vg__conf_ld *ld, const struct vg__conf_node *key,
                                 const struct vg__conf_node *val, void *obj)
{
    return vg__conf_want_duration(ld, key, val, 100, VG__CONF_MAX_DURATION_MS,
                                  &((struct vg_conf_rollout *)obj)->healthy_timeout_ms);
}

static int parse_min_requests(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                              void *obj)
{
    return vg__conf_want_uint(ld, key, val, 0, 1000000000, &((struct vg_conf_rollout *)obj)->min_requests);
}

/* A number in [lo, hi]; with allow_percent, "N%" means N/100. */
static int want_number(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                       double lo, double hi, bool allow_percent, const char *what, double *out)
{
    double v;
    bool pct = allow_percent && val->type == VG__CONF_NODE_SCALAR && val->len > 1 && val->str[val->len - 1] == '%';
    if (val->type == VG__CONF_NODE_SCALAR && parse_decimal(val->str, val->len - (pct ? 1 : 0), &v)) {
        if (pct)
            v /= 100;
        if (v >= lo && v <= hi) {
            *out = v;
            return 0;
        }
    }
    if (val->type != VG__CONF_NODE_SCALAR)
        return vg__conf_fail(ld, val, "expected %s for '%s', got %s", what, key->str, vg__conf_node_kind(val));
    char shown[80];
    return vg__conf_fail(ld, val, "expected %s for '%s', got '%s'", what, key->str,
                         vg__conf_show(val->str, shown, sizeof(shown)));
}

static int parse_max_error_rate(struct vg__conf_ld *ld, const struct vg__conf_node *key,
                                const struct vg__conf_node *val, void *obj)
{
    return want_number(ld, key, val, 0, 1, true, "a rate from 0 to 1 like 0.01, or a percentage like 1%",
                       &((struct vg_conf_rollout *)obj)->max_error_rate);
}

static int parse_max_p99_ratio(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                               void *obj)
{
    return want_number(ld, key, val, 1, 1000, false, "a ratio from 1 to 1000 like 1.5",
                       &((struct vg_conf_rollout *)obj)->max_p99_ratio);
}

int vg__conf_rollout_parse(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                           void *obj)
{
    static const struct vg__conf_key keys[] = {
        {"canary", parse_canary, false},
        {"waves", parse_waves, false},
        {"window", parse_window, false},
        {"min_requests", parse_min_requests, false},
        {"max_error_rate", parse_max_error_rate, false},
        {"max_p99_ratio", parse_max_p99_ratio, false},
        {"healthy_timeout", parse_healthy_timeout, false},
    };
    return vg__conf_map_walk(ld, val, "'rollout'", keys, VG_ARRAY_LEN(keys), &ld->app->rollout);
}
