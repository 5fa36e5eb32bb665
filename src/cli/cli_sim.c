/* verge sim: the placement engine at internet scale on one machine — a
 * seeded world (towers around the bundled cities), synthetic demand with
 * daily cycles and flash crowds, the engine run every step, and per step
 * its decision time, latency, target share, capacity use, churn and
 * policy violations (which must be zero). */
#include "cli.h"
#include "geo/geo.h"
#include "sched/sched.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct sim_opts {
    unsigned long locations, apps, steps, threads;
    uint64_t seed;
    double site_deg; /* the world's sites: a grid cell's side, 0 for one per location */
    bool json;
    const char *csv;
    const char *explain; /* an app's name: its explanation after the last step */
    const char *cities;  /* the seeds: a zone1970.tab file, or "bundled" */
};

#define ZONE_TAB "/usr/share/zoneinfo/zone1970.tab"

struct step_row {
    uint32_t step;
    double decision_ms, update_ms, p50_ms, p95_ms, within, cpu_use, slot_use;
    uint64_t churn, violations, placements, unserved_mrps;
    uint64_t capacity_rejections, displaced; /* records: a candidate full, a location lost to a higher priority */
    uint64_t digest;
};

static void usage(FILE *f)
{
    fprintf(f,
            "usage: verge sim [--locations N] [--apps N] [--steps N] [--seed S] [--cities FILE|bundled] [--json]\n"
            "                 [--csv FILE] [--explain APP] [--threads N] [--sites DEG]\n"
            "  simulates the scheduler: N towers around real places (--cities: tzdata's zone1970.tab, the\n"
            "  default, about 310 places; or 'bundled', the 64 cities of data/locations.csv), N apps with static,\n"
            "  dynamic and enforced policies, demand with daily cycles and flash crowds (one step = %d minutes);\n"
            "  prints per step the decision time, demand-weighted p50/p95 latency, the share of demand within\n"
            "  each app's target, capacity use, churn and policy violations; --explain: an app's decisions\n"
            "  after the last step. Defaults: 10000 locations, 1000 apps, 100 steps, seed 1, 1 thread. The\n"
            "  same seed gives the same decisions (the 'digest'), with any number of threads (they only make\n"
            "  each full placement shorter). --sites: dynamic placement picks sites, the towers of one grid\n"
            "  cell of DEG degrees in one country and region, then one tower in each (default %g; 0: every\n"
            "  tower its own site).\n",
            VG_SCHED_SIM_STEP_MIN, VG_SCHED_SITE_DEG);
}

/* A count in [lo, hi] (vg_parse_count), as an unsigned long. */
static bool parse_ulong(const char *s, unsigned long lo, unsigned long hi, unsigned long *out)
{
    uint64_t v;
    if (vg_parse_count(s, lo, hi, &v) != 0)
        return false;
    *out = (unsigned long)v;
    return true;
}

static int parse_args(int argc, char **argv, struct sim_opts *o)
{
    *o = (struct sim_opts){
        .locations = 10000, .apps = 1000, .steps = 100, .threads = 1, .seed = 1, .site_deg = VG_SCHED_SITE_DEG};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        unsigned long n;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 1;
        } else if (strcmp(a, "--json") == 0) {
            o->json = true;
        } else if (strcmp(a, "--explain") == 0 && v) {
            o->explain = v, i++;
        } else if (strcmp(a, "--cities") == 0 && v) {
            o->cities = v, i++;
        } else if (strcmp(a, "--csv") == 0 && v) {
            o->csv = v, i++;
        } else if (strcmp(a, "--locations") == 0 && v && parse_ulong(v, 1, 100000, &n)) {
            o->locations = n, i++;
        } else if (strcmp(a, "--apps") == 0 && v && parse_ulong(v, 1, 100000, &n)) {
            o->apps = n, i++;
        } else if (strcmp(a, "--steps") == 0 && v && parse_ulong(v, 1, 100000, &n)) {
            o->steps = n, i++;
        } else if (strcmp(a, "--threads") == 0 && v && parse_ulong(v, 1, 64, &n)) {
            o->threads = n, i++;
        } else if (strcmp(a, "--seed") == 0 && v && parse_ulong(v, 0, ULONG_MAX, &n)) {
            o->seed = n, i++;
        } else if (strcmp(a, "--sites") == 0 && v && vg_sched_parse_site_deg(v, &o->site_deg) == 0) {
            i++;
        } else {
            fprintf(stderr,
                    "verge sim: bad or incomplete option '%s' (locations and apps 1..100000, threads 1..64, sites 0 "
                    "or 0.01..10)\n",
                    a);
            usage(stderr);
            return 2;
        }
    }
    return 0;
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* The seeds of the world: tzdata's places (zone1970.tab) by default, the
 * bundled cities (src/geo) with --cities bundled or when tzdata is not
 * there. *what names them for the output. */
static struct vg_sched_sim_point *cities(const char *file, size_t *n, char *what, size_t cap)
{
    struct vg_geo_set *set = NULL;
    if (vg_geo_set_builtin(&set) != 0)
        return NULL;
    struct vg_sched_sim_point *pts = NULL;
    bool bundled = file && strcmp(file, "bundled") == 0;
    const char *path = bundled ? NULL : file ? file : ZONE_TAB;
    FILE *f = path ? fopen(path, "r") : NULL;
    if (!f && file && !bundled) {
        fprintf(stderr, "verge sim: %s: %s\n", file, strerror(errno));
    } else if (f) {
        char *text = malloc(1 << 20);
        size_t len = fread(text, 1, (1 << 20) - 1, f);
        struct vg_geo_seed *seeds = NULL;
        struct vg_geo_error err;
        if (vg_geo_zones_parse(text, len, set, &seeds, n, &err) != 0) {
            fprintf(stderr, "verge sim: %s:%d:%d: %s\n", path, err.line, err.col, err.msg);
        } else {
            pts = calloc(*n, sizeof(*pts));
            for (size_t i = 0; i < *n; i++) {
                pts[i].lat = seeds[i].lat;
                pts[i].lon = seeds[i].lon;
                memcpy(pts[i].country, seeds[i].country, 3);
                snprintf(pts[i].region, sizeof(pts[i].region), "%s", seeds[i].region);
            }
            snprintf(what, cap, "%s (%zu places)", path, *n);
        }
        free(seeds);
        free(text);
        fclose(f);
    } else {
        *n = vg_geo_set_count(set);
        pts = calloc(*n, sizeof(*pts));
        for (size_t i = 0; pts && i < *n; i++) {
            const struct vg_geo_location *l = vg_geo_set_at(set, i);
            pts[i].lat = l->lat;
            pts[i].lon = l->lon;
            memcpy(pts[i].country, l->country, 3);
            snprintf(pts[i].region, sizeof(pts[i].region), "%s", l->region);
        }
        snprintf(what, cap, "the bundled list (%zu cities)", *n);
    }
    vg_geo_set_destroy(set);
    return pts;
}

struct lat_w {
    uint32_t us, mrps;
};

static int cmp_lat(const void *a, const void *b)
{
    const struct lat_w *x = a, *y = b;
    return x->us < y->us ? -1 : x->us > y->us;
}

/* Demand-weighted p50/p95 over every app's served demand, the share of
 * dynamic apps' demand within their targets, unserved demand. */
static void latency_figures(const struct vg_sched_plan *p, const struct vg_sched_app *apps, size_t n_apps,
                            struct step_row *row)
{
    size_t n = 0, cap = 1024;
    struct lat_w *v = malloc(cap * sizeof(*v));
    uint64_t total = 0, within = 0, dyn = 0, unserved = 0;
    for (uint32_t a = 0; a < n_apps; a++) {
        const struct vg_sched_served *s;
        size_t ns = vg_sched_plan_served(p, a, &s);
        struct vg_sched_app_stats st;
        vg_sched_plan_app_stats(p, a, &st);
        unserved += st.demand_mrps - st.served_mrps;
        if (apps[a].mode == VG_SCHED_DYNAMIC)
            dyn += st.demand_mrps, within += st.within_mrps;
        for (size_t i = 0; i < ns; i++) {
            if (s[i].loc == VG_SCHED_NONE || !s[i].mrps)
                continue;
            if (n == cap)
                v = realloc(v, (cap *= 2) * sizeof(*v));
            v[n++] = (struct lat_w){s[i].rtt_us, s[i].mrps};
            total += s[i].mrps;
        }
    }
    qsort(v, n, sizeof(*v), cmp_lat);
    uint64_t acc = 0;
    row->p50_ms = row->p95_ms = 0;
    bool got50 = false;
    for (size_t i = 0; i < n; i++) {
        acc += v[i].mrps;
        if (!got50 && acc * 100 >= total * 50)
            row->p50_ms = v[i].us / 1000.0, got50 = true;
        if (acc * 100 >= total * 95) {
            row->p95_ms = v[i].us / 1000.0;
            break;
        }
    }
    row->within = dyn ? (double)within / (double)dyn : 1.0;
    row->capacity_rejections = row->displaced = 0;
    for (uint32_t a = 0; a < n_apps; a++) {
        const struct vg_sched_why *y;
        size_t ny = vg_sched_plan_explain(p, a, &y);
        for (size_t i = 0; i < ny; i++) {
            row->capacity_rejections += y[i].reason == VG_SCHED_R_CAPACITY;
            row->displaced += y[i].reason == VG_SCHED_R_DISPLACED;
        }
    }
    row->unserved_mrps = unserved;
    free(v);
}

static void progress(unsigned long done, unsigned long total)
{
    int width = 40, fill = (int)(width * done / total);
    fprintf(stderr, "\r[%.*s%*s] step %lu/%lu", fill, "########################################", width - fill, "",
            done, total);
    if (done == total)
        fprintf(stderr, "\r%*s\r", width + 30, "");
    fflush(stderr);
}

static void print_row(const struct step_row *r)
{
    printf("%5u %9.1f %8.3f %7.2f %7.2f %7.1f%% %6.1f%% %6.1f%% %6llu %6llu %10llu\n", r->step, r->decision_ms,
           r->update_ms, r->p50_ms, r->p95_ms, 100 * r->within, 100 * r->cpu_use, 100 * r->slot_use,
           (unsigned long long)r->churn, (unsigned long long)r->violations, (unsigned long long)r->placements);
}

static json_t *row_json(const struct step_row *r)
{
    char dg[20];
    snprintf(dg, sizeof(dg), "%016llx", (unsigned long long)r->digest);
    return json_pack("{s:i,s:f,s:f,s:f,s:f,s:f,s:f,s:f,s:I,s:I,s:I,s:f,s:I,s:I,s:s}", "step", (int)r->step,
                     "decision_ms", r->decision_ms, "update_ms", r->update_ms, "p50_ms", r->p50_ms, "p95_ms", r->p95_ms,
                     "within_target", r->within, "cpu_use", r->cpu_use, "slot_use", r->slot_use, "churn",
                     (json_int_t)r->churn, "violations", (json_int_t)r->violations, "placements",
                     (json_int_t)r->placements, "unserved_rps", r->unserved_mrps / 1000.0, "capacity_rejections",
                     (json_int_t)r->capacity_rejections, "displaced", (json_int_t)r->displaced, "digest", dg);
}

/* One step: a full placement from the previous plan (hysteresis carries
 * over), then the figures, then one app re-placed incrementally (timed):
 * one whose flash crowd starts or ends now, else the step's turn. The
 * update changes the plan the next step starts from, so it is part of the
 * run's decisions (and digest). */
static int run_step(struct vg_sched_sim *sim, uint32_t step, unsigned threads, struct vg_sched_plan **prev,
                    struct step_row *row)
{
    const struct vg_sched_world *w = vg_sched_sim_world(sim);
    size_t n_apps;
    const struct vg_sched_app *apps = vg_sched_sim_apps(sim, &n_apps);
    const struct vg_sched_demand *d = vg_sched_sim_demand(sim, step);
    struct vg_sched_plan *plan = NULL;
    struct vg_sched_error err;
    double t0 = now_ms();
    int rc = vg_sched_place_threads(w, apps, n_apps, d, *prev, threads, &plan, &err);
    row->decision_ms = now_ms() - t0;
    if (rc) {
        fprintf(stderr, "verge sim: step %u: %s\n", step, err.msg);
        return rc;
    }
    row->step = step;
    row->digest = vg_sched_plan_digest(plan);
    latency_figures(plan, apps, n_apps, row);
    struct vg_sched_use use;
    vg_sched_plan_use(w, plan, &use);
    row->cpu_use = use.cpu_total ? (double)use.cpu_used / (double)use.cpu_total : 0;
    row->slot_use = use.slots_total ? (double)use.slots_used / (double)use.slots_total : 0;
    row->placements = use.placements;
    row->churn = *prev ? vg_sched_plan_churn(*prev, plan) : use.placements;
    char why[300];
    row->violations = vg_sched_plan_verify(w, apps, n_apps, plan, why, sizeof(why));
    if (row->violations)
        fprintf(stderr, "verge sim: step %u: %llu violations, e.g. %s\n", step, (unsigned long long)row->violations,
                why);
    uint32_t flash[1], app = step % (uint32_t)n_apps; /* an app whose flash crowd starts or ends, if any */
    if (vg_sched_sim_flash_apps(sim, step, flash, 1) == 1)
        app = flash[0];
    t0 = now_ms();
    rc = vg_sched_update(w, apps, n_apps, d, plan, app, &err);
    row->update_ms = now_ms() - t0;
    size_t after = rc == 0 ? vg_sched_plan_verify(w, apps, n_apps, plan, why, sizeof(why)) : 0;
    if (after)
        fprintf(stderr, "verge sim: step %u: %zu violations after updating %s, e.g. %s\n", step, after, apps[app].name,
                why);
    row->violations += after;
    vg_sched_plan_destroy(*prev);
    *prev = plan;
    return rc;
}

static int write_csv(const char *path, const struct step_row *rows, size_t n)
{
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "verge sim: %s: %s\n", path, strerror(errno));
        return 1;
    }
    fprintf(f, "step,decision_ms,update_ms,p50_ms,p95_ms,within_target,cpu_use,slot_use,churn,violations,placements,"
               "unserved_rps,capacity_rejections,displaced\n");
    for (size_t i = 0; i < n; i++) {
        const struct step_row *r = &rows[i];
        fprintf(f, "%u,%.3f,%.4f,%.3f,%.3f,%.5f,%.5f,%.5f,%llu,%llu,%llu,%.3f,%llu,%llu\n", r->step, r->decision_ms,
                r->update_ms, r->p50_ms, r->p95_ms, r->within, r->cpu_use, r->slot_use, (unsigned long long)r->churn,
                (unsigned long long)r->violations, (unsigned long long)r->placements, r->unserved_mrps / 1000.0,
                (unsigned long long)r->capacity_rejections, (unsigned long long)r->displaced);
    }
    return fclose(f) == 0 ? 0 : 1;
}

/* Why the app named runs where it does, in the last plan. */
static int explain(const struct vg_sched_sim *sim, const struct vg_sched_plan *plan, const char *name, bool json,
                   json_t *doc)
{
    size_t n_apps;
    const struct vg_sched_app *apps = vg_sched_sim_apps(sim, &n_apps);
    const struct vg_sched_world *w = vg_sched_sim_world(sim);
    for (uint32_t a = 0; a < n_apps; a++) {
        if (strcmp(apps[a].name, name) != 0)
            continue;
        if (json) {
            json_object_set_new(doc, "explain", vg_sched_explain_json(w, apps, n_apps, plan, a));
        } else {
            char *text = vg_sched_explain_text(w, apps, n_apps, plan, a);
            fputs(text, stdout);
            free(text);
        }
        return 0;
    }
    fprintf(stderr, "verge sim: no app '%s' (the apps are app0000 to app%04zu)\n", name, n_apps - 1);
    return 2;
}

static void print_summary(const struct sim_opts *o, const struct step_row *rows, size_t n, double build_ms,
                          uint64_t viol, uint64_t digest)
{
    double worst = 0, sum = 0, worst_upd = 0;
    uint64_t churn = 0;
    for (size_t i = 0; i < n; i++) {
        worst = rows[i].decision_ms > worst ? rows[i].decision_ms : worst;
        worst_upd = rows[i].update_ms > worst_upd ? rows[i].update_ms : worst_upd;
        sum += rows[i].decision_ms;
        churn += i ? rows[i].churn : 0;
    }
    printf("world built in %.0f ms; placement: mean %.1f ms, worst %.1f ms; one-app update worst %.3f ms; "
           "churn %.1f per step; violations %llu; digest %016llx (seed %llu)\n",
           build_ms, sum / (double)n, worst, worst_upd, n > 1 ? (double)churn / (double)(n - 1) : 0.0,
           (unsigned long long)viol, (unsigned long long)digest, (unsigned long long)o->seed);
}

int vg_cli_sim(int argc, char **argv)
{
    struct sim_opts o;
    int rc = parse_args(argc, argv, &o);
    if (rc)
        return rc == 1 ? 0 : rc;
    size_t n_cities = 0;
    char seeds[512] = "";
    struct vg_sched_sim_point *pts = cities(o.cities, &n_cities, seeds, sizeof(seeds));
    struct vg_sched_sim *sim = NULL;
    double t0 = now_ms();
    if (!pts || vg_sched_sim_create(pts, n_cities, o.locations, o.apps, o.seed, &sim) != 0 ||
        vg_sched_sim_set_sites(sim, o.site_deg) != 0) {
        fprintf(stderr, "verge sim: cannot build the world\n");
        free(pts);
        return 1;
    }
    double build_ms = now_ms() - t0;
    free(pts);
    struct step_row *rows = calloc(o.steps, sizeof(*rows));
    struct vg_sched_plan *plan = NULL;
    bool bar = isatty(STDERR_FILENO);
    uint64_t viol = 0, digest = 1469598103934665603ull;
    if (!o.json)
        printf(" step  place_ms upd_ms  p50_ms  p95_ms  within    cpu  slots  churn  viol placements\n");
    for (unsigned long s = 0; s < o.steps && rc == 0; s++) {
        rc = run_step(sim, (uint32_t)s, (unsigned)o.threads, &plan, &rows[s]);
        viol += rows[s].violations;
        digest = (digest ^ rows[s].digest) * 1099511628211ull;
        if (bar)
            fprintf(stderr, "\r%*s\r", 72, ""); /* the bar's line, cleared before a row goes out */
        if (rc == 0 && !o.json) {
            print_row(&rows[s]);
            fflush(stdout);
        }
        if (bar)
            progress(s + 1, o.steps);
    }
    if (rc == 0 && o.json) {
        json_t *steps = json_array();
        for (size_t i = 0; i < o.steps; i++)
            json_array_append_new(steps, row_json(&rows[i]));
        char dg[20];
        snprintf(dg, sizeof(dg), "%016llx", (unsigned long long)digest);
        json_t *doc = json_pack("{s:I,s:i,s:i,s:i,s:i,s:i,s:f,s:I,s:s,s:o}", "seed", (json_int_t)o.seed, "locations",
                                (int)o.locations, "apps", (int)o.apps, "steps", (int)o.steps, "threads", (int)o.threads,
                                "step_minutes", VG_SCHED_SIM_STEP_MIN, "build_ms", build_ms, "violations",
                                (json_int_t)viol, "digest", dg, "per_step", steps);
        json_object_set_new(doc, "seeds", json_string(seeds));
        json_object_set_new(doc, "sites", json_integer((json_int_t)vg_sched_world_n_sites(vg_sched_sim_world(sim))));
        json_object_set_new(doc, "site_deg", json_real(o.site_deg));
        if (o.explain)
            rc = explain(sim, plan, o.explain, true, doc);
        char *text = json_dumps(doc, JSON_INDENT(1));
        printf("%s\n", text);
        free(text);
        json_decref(doc);
    } else if (rc == 0) {
        print_summary(&o, rows, o.steps, build_ms, viol, digest);
        printf("seeds: %s; sites: %zu (cells of %g degrees)\n", seeds, vg_sched_world_n_sites(vg_sched_sim_world(sim)),
               o.site_deg);
        if (o.explain)
            rc = explain(sim, plan, o.explain, false, NULL);
    }
    if (rc == 0 && o.csv)
        rc = write_csv(o.csv, rows, o.steps);
    vg_sched_plan_destroy(plan);
    vg_sched_sim_destroy(sim);
    free(rows);
    if (rc < 0)
        return 1;
    return rc ? rc : viol ? 1 : 0;
}
