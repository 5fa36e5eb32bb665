/* The rollout gates' arithmetic, pure: figures summed from the nodes'
 * reports, quantiles from latency histograms (`verge top`'s too,
 * control_top.c), and the verdict of one step
 * (docs/api.md "Deployments"). No I/O, no clock: the driver
 * (control_rollout.c) passes in what it has observed. */
#include "control_int.h"

#include <math.h>
#include <string.h>

const double vg__control_latency_le_ms[VG__CONTROL_LAT_BUCKETS - 1] = {0.5, 1,   2.5, 5,    10,   25,   50,
                                                                       100, 250, 500, 1000, 2500, 5000, 10000};

/* A report's integer, 0 when absent or not a non-negative integer. */
static uint64_t juint(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return json_is_integer(v) && json_integer_value(v) > 0 ? (uint64_t)json_integer_value(v) : 0;
}

bool vg__control_figures_add(struct vg__control_figures *f, json_t *stats)
{
    if (!json_is_object(stats))
        return false;
    uint64_t req = juint(stats, "requests"), err = juint(stats, "errors_5xx");
    if (err > req)
        return false;
    json_t *le = json_object_get(stats, "latency_le_ms"), *counts = json_object_get(stats, "latency_counts");
    bool hist = json_is_array(counts) && json_array_size(counts) == VG__CONTROL_LAT_BUCKETS;
    /* bounds other than the contract's would make the sums meaningless */
    if (hist && le) {
        hist = json_is_array(le) && json_array_size(le) == VG__CONTROL_LAT_BUCKETS - 1;
        for (size_t i = 0; hist && i < VG__CONTROL_LAT_BUCKETS - 1; i++)
            hist = fabs(json_number_value(json_array_get(le, i)) - vg__control_latency_le_ms[i]) < 1e-9;
    }
    f->requests += req;
    f->errors += err;
    f->nodes++;
    if (hist) {
        for (size_t i = 0; i < VG__CONTROL_LAT_BUCKETS; i++) {
            json_t *c = json_array_get(counts, i);
            uint64_t n = json_is_integer(c) && json_integer_value(c) > 0 ? (uint64_t)json_integer_value(c) : 0;
            f->counts[i] += n;
            f->timed += n;
        }
    }
    return true;
}

double vg__control_figures_error_rate(const struct vg__control_figures *f)
{
    return f->requests ? (double)f->errors / (double)f->requests : 0;
}

void vg__control_figures_merge(struct vg__control_figures *f, const struct vg__control_figures *add)
{
    f->requests += add->requests;
    f->errors += add->errors;
    f->timed += add->timed;
    f->nodes += add->nodes;
    for (size_t i = 0; i < VG__CONTROL_LAT_BUCKETS; i++)
        f->counts[i] += add->counts[i];
}

double vg__control_figures_p99_ms(const struct vg__control_figures *f)
{
    return vg__control_figures_quantile_ms(f, 0.99);
}

double vg__control_figures_quantile_ms(const struct vg__control_figures *f, double q)
{
    if (!f->timed)
        return -1;
    /* as Prometheus' histogram_quantile: the rank's place inside its
     * bucket, linearly; a rank in the +Inf bucket is the last bound */
    double rank = q * (double)f->timed;
    uint64_t cum = 0;
    for (size_t i = 0; i < VG__CONTROL_LAT_BUCKETS; i++) {
        uint64_t before = cum;
        cum += f->counts[i];
        if ((double)cum < rank || f->counts[i] == 0)
            continue;
        if (i == VG__CONTROL_LAT_BUCKETS - 1)
            return vg__control_latency_le_ms[i - 1];
        double lo = i ? vg__control_latency_le_ms[i - 1] : 0, hi = vg__control_latency_le_ms[i];
        return lo + (hi - lo) * ((rank - (double)before) / (double)f->counts[i]);
    }
    return vg__control_latency_le_ms[VG__CONTROL_LAT_BUCKETS - 2];
}

/* A float comparison that does not flip on the last bit: the boundary
 * itself passes (0.02 - 0.01 is 0.010000000000000002 in doubles). */
#define EPS 1e-9

enum vg__control_verdict vg__control_gate_judge(const struct vg__control_gate *g, const struct vg__control_figures *old,
                                                const struct vg__control_figures *neu, bool window_over, char *why,
                                                size_t cap)
{
    snprintf(why, cap, "%s", "");
    if (neu->requests < g->min_requests) {
        snprintf(why, cap, "%llu of %llu requests", (unsigned long long)neu->requests,
                 (unsigned long long)g->min_requests);
        return VG__CONTROL_GATE_WAIT;
    }
    double nr = vg__control_figures_error_rate(neu), or = vg__control_figures_error_rate(old);
    if (neu->requests && nr - or > g->max_error_rate + EPS) {
        snprintf(why, cap, "5xx rate %.2f%% against %.2f%% for the previous version (allowed: +%.2f%%)", nr * 100,
                 or *100, g->max_error_rate * 100);
        return VG__CONTROL_GATE_FAIL;
    }
    double np = vg__control_figures_p99_ms(neu), op = vg__control_figures_p99_ms(old);
    if (np >= 0 && op > 0 && np > op * g->max_p99_ratio + EPS && np - op > VG__CONTROL_P99_SLACK_MS) {
        snprintf(why, cap, "p99 %.1f ms against %.1f ms for the previous version (%.2fx, allowed: %.2fx)", np, op,
                 np / op, g->max_p99_ratio);
        return VG__CONTROL_GATE_FAIL;
    }
    return window_over ? VG__CONTROL_GATE_PASS : VG__CONTROL_GATE_WAIT;
}

json_t *vg__control_figures_json(const struct vg__control_figures *f)
{
    double p99 = vg__control_figures_p99_ms(f);
    json_t *j = json_pack("{s:I,s:I,s:I,s:f}", "nodes", (json_int_t)f->nodes, "requests", (json_int_t)f->requests,
                          "errors_5xx", (json_int_t)f->errors, "error_rate", vg__control_figures_error_rate(f));
    json_object_set_new(j, "p99_ms", p99 >= 0 ? json_real(round(p99 * 1000) / 1000) : json_null());
    return j;
}

void vg__control_figures_from_json(struct vg__control_figures *f, json_t *j)
{
    memset(f, 0, sizeof(*f));
    f->requests = juint(j, "requests");
    f->errors = juint(j, "errors_5xx");
    f->nodes = juint(j, "nodes");
    json_t *c = json_object_get(j, "counts");
    for (size_t i = 0; i < VG__CONTROL_LAT_BUCKETS && json_is_array(c); i++) {
        json_t *v = json_array_get(c, i);
        f->counts[i] = json_is_integer(v) && json_integer_value(v) > 0 ? (uint64_t)json_integer_value(v) : 0;
        f->timed += f->counts[i];
    }
}

json_t *vg__control_figures_save(const struct vg__control_figures *f)
{
    json_t *j = vg__control_figures_json(f), *c = json_array();
    for (size_t i = 0; i < VG__CONTROL_LAT_BUCKETS; i++)
        json_array_append_new(c, json_integer((json_int_t)f->counts[i]));
    json_object_set_new(j, "counts", c);
    return j;
}
