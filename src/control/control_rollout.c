/* The rollout driver: a gated deployment gives its version to the nodes
 * step by step (canary, then cumulative waves), waits until each step's
 * nodes report it live, watches the gates over a window, and either moves
 * on, finishes (the version becomes the app's desired version everywhere)
 * or rolls every node back at once (docs/api.md "Deployments").
 *
 * Everything a rollout knows is in its deployments row (the plan and the
 * progress as JSON, in `rollout`) and in node_desired (the nodes it has
 * reached), written in one transaction per transition; a control plane
 * restarted mid-rollout picks it up at the next tick from there. The
 * driver runs on the server's loop thread: a timer ticks every TICK_MS
 * while the process runs, and every heartbeat ticks too, so a report is
 * acted on as soon as it arrives. Each transition that changes what a node
 * should run bumps the desired-state revision and wakes the long polls. */
#include "control_int.h"

#include <math.h>
#include <sqlite3.h>
#include <string.h>

#define TICK_MS 50

static int64_t wall_ms(void)
{
    return (int64_t)(vg_wall_us() / 1000);
}

/* ---- settings ---- */

json_t *vg__control_rollout_settings_json(const struct vg_conf_rollout *r)
{
    json_t *waves = json_array();
    for (size_t i = 0; i < r->n_waves; i++)
        json_array_append_new(waves, json_integer(r->waves[i]));
    json_t *canary = r->canary_percent ? json_sprintf("%u%%", r->canary) : json_integer(r->canary);
    return json_pack("{s:o,s:o,s:I,s:I,s:f,s:f,s:I}", "canary", canary, "waves", waves, "window_ms",
                     (json_int_t)r->window_ms, "min_requests", (json_int_t)r->min_requests, "max_error_rate",
                     r->max_error_rate, "max_p99_ratio", r->max_p99_ratio, "healthy_timeout_ms",
                     (json_int_t)r->healthy_timeout_ms);
}

static void settings_from_json(struct vg_conf_rollout *r, json_t *j)
{
    vg_conf_rollout_default(r);
    if (!json_is_object(j))
        return;
    json_t *c = json_object_get(j, "canary"), *w = json_object_get(j, "waves"), *v;
    if (json_is_integer(c) && json_integer_value(c) >= 0) {
        r->canary = (uint32_t)json_integer_value(c);
        r->canary_percent = false;
    } else if (json_is_string(c)) {
        r->canary = (uint32_t)atoi(json_string_value(c));
        r->canary_percent = true;
    }
    size_t i;
    if (json_is_array(w) && json_array_size(w) >= 1 && json_array_size(w) <= VG_CONF_ROLLOUT_MAX_WAVES) {
        r->n_waves = 0;
        json_array_foreach(w, i, v) r->waves[r->n_waves++] = (uint32_t)json_integer_value(v);
    }
    if ((v = json_object_get(j, "window_ms")) && json_is_integer(v))
        r->window_ms = (uint64_t)json_integer_value(v);
    if ((v = json_object_get(j, "min_requests")) && json_is_integer(v))
        r->min_requests = (uint64_t)json_integer_value(v);
    if ((v = json_object_get(j, "max_error_rate")) && json_is_number(v))
        r->max_error_rate = json_number_value(v);
    if ((v = json_object_get(j, "max_p99_ratio")) && json_is_number(v))
        r->max_p99_ratio = json_number_value(v);
    if ((v = json_object_get(j, "healthy_timeout_ms")) && json_is_integer(v))
        r->healthy_timeout_ms = (uint64_t)json_integer_value(v);
}

/* One rolling deployment as the driver sees it. */
struct dep {
    int64_t id;
    char *app, *version, *prev, *created_by;
    json_t *doc; /* the plan and progress: settings, baseline, step, steps[] */
    bool over;   /* done, rolled back or failed in this tick */
    struct vg_conf_rollout set;
};

static void dep_free(struct dep *d)
{
    free(d->app);
    free(d->version);
    free(d->prev);
    free(d->created_by);
    json_decref(d->doc);
}

static int dep_save_doc(struct vg_control_server *srv, struct dep *d)
{
    char *s = json_dumps(d->doc, JSON_COMPACT);
    sqlite3_stmt *st = vg__control_sql_prep(srv, "UPDATE deployments SET rollout = ? WHERE id = ?");
    vg__control_sql_text(st, 1, s);
    vg__control_sql_int(st, 2, d->id);
    free(s);
    return vg__control_sql_run(srv, st, "rollout save");
}

/* ---- nodes ---- */

/* The nodes that are up, in id order (vg__control_nodes_list's order). */
static json_t *nodes_now(struct vg_control_server *srv)
{
    json_t *all = NULL;
    if (vg__control_nodes_list(srv->store, (uint64_t)wall_ms(), srv->opt.node_timeout_ms, &all) != 0)
        return NULL;
    return all;
}

static json_t *app_report(json_t *node, const char *app)
{
    return json_object_get(json_object_get(json_object_get(node, "report"), "apps"), app);
}

static bool node_up(json_t *node)
{
    return json_is_true(json_object_get(node, "up"));
}

static bool in_list(json_t *list, const char *id)
{
    size_t i;
    json_t *v;
    json_array_foreach(list, i, v) if (json_is_string(v) && strcmp(json_string_value(v), id) == 0) return true;
    return false;
}

static size_t up_count(json_t *nodes)
{
    size_t n = 0, i;
    json_t *x;
    json_array_foreach(nodes, i, x) n += node_up(x);
    return n;
}

/* How many of `up` nodes a step covers in all. */
static size_t step_target(const struct vg_conf_rollout *r, json_t *step, size_t up)
{
    json_t *pct = json_object_get(step, "percent"), *count = json_object_get(step, "count");
    if (json_is_integer(count))
        return (size_t)json_integer_value(count) < up ? (size_t)json_integer_value(count) : up;
    double p = (double)json_integer_value(pct);
    size_t n = (size_t)ceil(p * (double)up / 100.0 - 1e-9);
    if (p > 0 && up && n == 0)
        n = 1;
    return n < up ? n : up;
}

/* Sums the figures of the up nodes running `version` for app: their
 * latest reports, as GET /v1/top reads them (control_top.c). */
static void figures_of(struct vg_control_server *srv, json_t *nodes, const char *app, const char *version,
                       struct vg__control_figures *f)
{
    memset(f, 0, sizeof(*f));
    size_t i;
    json_t *n;
    json_array_foreach(nodes, i, n)
    {
        const char *id = json_string_value(json_object_get(n, "id"));
        if (node_up(n) && id && version)
            (void)vg__control_top_node_figures(srv->top, id, app, version, f, NULL);
    }
}

/* ---- transitions ---- */

/* The rollout's nodes reached so far (a JSON array of ids, borrowed). */
static json_t *assigned(struct dep *d)
{
    json_t *a = json_object_get(d->doc, "assigned");
    if (!json_is_array(a)) {
        a = json_array();
        json_object_set_new(d->doc, "assigned", a);
    }
    return a;
}

static json_t *cur_step(struct dep *d)
{
    return json_array_get(json_object_get(d->doc, "steps"),
                          (size_t)json_integer_value(json_object_get(d->doc, "step")));
}

static void set_time(json_t *o, const char *key, int64_t ms)
{
    json_object_set_new(o, key, json_integer(ms));
}

/* Gives the new version to newly reached nodes and saves the doc, in one
 * transaction with the revision bump. */
static int assign_nodes(struct vg_control_server *srv, struct dep *d, json_t *fresh)
{
    int rc = vg__control_store_begin(srv->store);
    if (rc)
        return rc;
    int64_t rev = 0;
    rc = vg__control_store_rev_next(srv->store, &rev);
    size_t i;
    json_t *v;
    json_array_foreach(fresh, i, v)
    {
        if (rc)
            break;
        sqlite3_stmt *st =
            vg__control_sql_prep(srv, "INSERT INTO node_desired(app, node, version, deployment, rev) VALUES(?,?,?,?,?)"
                                      " ON CONFLICT(app, node) DO UPDATE SET version = excluded.version,"
                                      " deployment = excluded.deployment, rev = excluded.rev");
        vg__control_sql_text(st, 1, d->app);
        vg__control_sql_text(st, 2, json_string_value(v));
        vg__control_sql_text(st, 3, d->version);
        vg__control_sql_int(st, 4, d->id);
        vg__control_sql_int(st, 5, rev);
        rc = vg__control_sql_run(srv, st, "node desired set");
    }
    if (rc == 0)
        rc = dep_save_doc(srv, d);
    if ((rc = vg__control_store_end(srv->store, rc)) == 0) {
        vg__control_store_rev_committed(srv->store, rev);
        vg__control_waiters_notify(srv);
    }
    return rc;
}

/* The last step passed: the version becomes the app's desired version on
 * every node (including nodes that came up during the rollout). */
static int finish(struct vg_control_server *srv, struct dep *d)
{
    int64_t now = wall_ms(), rev = 0;
    json_object_set_new(d->doc, "step", json_null());
    int rc = vg__control_store_begin(srv->store);
    if (rc)
        return rc;
    rc = vg__control_store_rev_next(srv->store, &rev);
    sqlite3_stmt *st;
    if (rc == 0) {
        st = vg__control_sql_prep(srv,
                                  "UPDATE deployments SET state = 'superseded', finished_at = coalesce(finished_at, ?)"
                                  " WHERE app = ? AND state = 'done'");
        vg__control_sql_int(st, 1, now);
        vg__control_sql_text(st, 2, d->app);
        rc = vg__control_sql_run(srv, st, "deployment supersede");
    }
    if (rc == 0) {
        char *s = json_dumps(d->doc, JSON_COMPACT);
        st = vg__control_sql_prep(
            srv, "UPDATE deployments SET state = 'done', finished_at = ?, rev = ?, rollout = ? WHERE id = ?");
        vg__control_sql_int(st, 1, now);
        vg__control_sql_int(st, 2, rev);
        vg__control_sql_text(st, 3, s);
        vg__control_sql_int(st, 4, d->id);
        free(s);
        rc = vg__control_sql_run(srv, st, "deployment done");
    }
    if (rc == 0) {
        st = vg__control_sql_prep(
            srv, "INSERT INTO desired(app, version, deployment, rev) VALUES(?,?,?,?) ON CONFLICT(app) DO UPDATE"
                 " SET version = excluded.version, deployment = excluded.deployment, rev = excluded.rev");
        vg__control_sql_text(st, 1, d->app);
        vg__control_sql_text(st, 2, d->version);
        vg__control_sql_int(st, 3, d->id);
        vg__control_sql_int(st, 4, rev);
        rc = vg__control_sql_run(srv, st, "desired set");
    }
    if (rc == 0) {
        st = vg__control_sql_prep(srv, "DELETE FROM node_desired WHERE app = ?");
        vg__control_sql_text(st, 1, d->app);
        rc = vg__control_sql_run(srv, st, "node desired clear");
    }
    if (rc == 0)
        rc = vg__control_store_history(srv->store, "rollout", "deployment.done", d->app, d->version,
                                       json_pack("{s:I,s:I}", "deployment", (json_int_t)d->id, "rev", (json_int_t)rev));
    if (rc == 0)
        rc = vg__control_store_history(srv->store, d->created_by, "desired.set", d->app, d->version,
                                       json_pack("{s:I,s:I}", "deployment", (json_int_t)d->id, "rev", (json_int_t)rev));
    if ((rc = vg__control_store_end(srv->store, rc)) == 0) {
        d->over = true;
        vg__control_store_rev_committed(srv->store, rev);
        vg__control_waiters_notify(srv);
        vg_log(VG_LOG_INFO, "rollout done", "app", d->app, "version", d->version, NULL);
    }
    return rc;
}

/* A gate failed, a node refused the version or nodes did not come up: every
 * node goes back to the previous version at once (the rows that gave them
 * the new one go), in one transaction. */
static int roll_back(struct vg_control_server *srv, struct dep *d, json_t *step, const char *reason)
{
    int64_t now = wall_ms(), rev = 0;
    const char *state = d->prev ? "rolled_back" : "failed";
    if (step) {
        json_object_set_new(step, "state", json_string("failed"));
        set_time(step, "ended_at", now);
    }
    set_time(d->doc, "detected_at", now);
    int rc = vg__control_store_begin(srv->store);
    if (rc)
        return rc;
    rc = vg__control_store_rev_next(srv->store, &rev);
    sqlite3_stmt *st;
    if (rc == 0) {
        st = vg__control_sql_prep(srv, "DELETE FROM node_desired WHERE app = ?");
        vg__control_sql_text(st, 1, d->app);
        rc = vg__control_sql_run(srv, st, "node desired clear");
    }
    if (rc == 0) {
        char *s = json_dumps(d->doc, JSON_COMPACT);
        st = vg__control_sql_prep(
            srv, "UPDATE deployments SET state = ?, reason = ?, finished_at = ?, rollout = ? WHERE id = ?");
        vg__control_sql_text(st, 1, state);
        vg__control_sql_text(st, 2, reason);
        vg__control_sql_int(st, 3, now);
        vg__control_sql_text(st, 4, s);
        vg__control_sql_int(st, 5, d->id);
        free(s);
        rc = vg__control_sql_run(srv, st, "deployment rolled back");
    }
    if (rc == 0)
        rc = vg__control_store_history(
            srv->store, "rollout", d->prev ? "deployment.rollback" : "deployment.fail", d->app, d->version,
            json_pack("{s:I,s:s,s:s?,s:s?,s:I}", "deployment", (json_int_t)d->id, "reason", reason, "step",
                      step ? json_string_value(json_object_get(step, "name")) : NULL, "back_to", d->prev, "rev",
                      (json_int_t)rev));
    if ((rc = vg__control_store_end(srv->store, rc)) == 0) {
        d->over = true;
        vg__control_store_rev_committed(srv->store, rev);
        vg__control_waiters_notify(srv);
        vg_log(VG_LOG_WARN, d->prev ? "rollout rolled back" : "rollout failed", "app", d->app, "version", d->version,
               "reason", reason, NULL);
    }
    return rc;
}

/* A node of the step that refused the version, or NULL. */
static json_t *refusal(struct dep *d, json_t *nodes, const char **node_id)
{
    size_t i;
    json_t *n;
    json_array_foreach(nodes, i, n)
    {
        const char *id = json_string_value(json_object_get(n, "id"));
        json_t *r = app_report(n, d->app);
        const char *fv = json_string_value(json_object_get(r, "failed_version"));
        if (id && node_up(n) && in_list(assigned(d), id) && fv && strcmp(fv, d->version) == 0) {
            *node_id = id;
            return r;
        }
    }
    return NULL;
}

/* Moves to the next step, or finishes after the last. */
static int step_pass(struct vg_control_server *srv, struct dep *d, json_t *step)
{
    json_object_set_new(step, "state", json_string("passed"));
    set_time(step, "ended_at", wall_ms());
    int64_t k = json_integer_value(json_object_get(d->doc, "step"));
    if ((size_t)k + 1 >= json_array_size(json_object_get(d->doc, "steps")))
        return finish(srv, d);
    json_object_set_new(d->doc, "step", json_integer(k + 1));
    return dep_save_doc(srv, d);
}

/* Starts step k: reaches the nodes it adds. A step that adds no node (the
 * canary covered them already) passes at once. */
static int step_start(struct vg_control_server *srv, struct dep *d, json_t *nodes, bool *again)
{
    json_t *step = cur_step(d), *a = assigned(d);
    size_t up = up_count(nodes), target = step_target(&d->set, step, up), have = 0, i;
    json_t *n, *fresh = json_array();
    json_array_foreach(nodes, i, n) if (node_up(n) && in_list(a, json_string_value(json_object_get(n, "id")))) have++;
    json_array_foreach(nodes, i, n)
    {
        const char *id = json_string_value(json_object_get(n, "id"));
        if (have >= target)
            break;
        if (!id || !node_up(n) || in_list(a, id))
            continue;
        json_array_append_new(fresh, json_string(id));
        json_array_append_new(a, json_string(id));
        have++;
    }
    int64_t now = wall_ms();
    set_time(step, "started_at", now);
    json_object_set(step, "new_nodes", fresh);
    json_object_set_new(step, "nodes", json_deep_copy(a));
    int rc;
    if (json_array_size(fresh) == 0) { /* the canary reached them all, or no node is up */
        json_object_set_new(step, "note", json_string(have ? "no new nodes" : "no node is up"));
        rc = step_pass(srv, d, step);
    } else {
        json_object_set_new(step, "state", json_string("waiting"));
        rc = assign_nodes(srv, d, fresh);
    }
    *again = true;
    json_decref(fresh);
    return rc;
}

/* One deployment, one move at most per call; *again asks for another call
 * in the same tick (a transition that the next state can act on at once). */
static int advance(struct vg_control_server *srv, struct dep *d, json_t *nodes, bool *again)
{
    *again = false;
    if (d->over)
        return 0;
    json_t *step = cur_step(d);
    if (!step)
        return finish(srv, d);
    const char *state = json_string_value(json_object_get(step, "state"));
    if (!state || strcmp(state, "pending") == 0)
        return step_start(srv, d, nodes, again);
    int64_t now = wall_ms();
    char reason[512];
    const char *who = NULL;
    json_t *r = refusal(d, nodes, &who);
    if (r) {
        const char *err = json_string_value(json_object_get(r, "error"));
        snprintf(reason, sizeof(reason), "node %s refused the version: %s", who, err ? err : "no reason given");
        return roll_back(srv, d, step, reason);
    }
    if (strcmp(state, "waiting") == 0) {
        json_t *a = assigned(d), *n, *pending = json_array();
        size_t i;
        json_array_foreach(nodes, i, n)
        {
            const char *id = json_string_value(json_object_get(n, "id"));
            const char *v = json_string_value(json_object_get(app_report(n, d->app), "version"));
            if (id && node_up(n) && in_list(a, id) && !(v && strcmp(v, d->version) == 0))
                json_array_append_new(pending, json_string(id));
        }
        size_t waiting = json_array_size(pending);
        if (waiting == 0) {
            json_decref(pending);
            json_object_set_new(step, "state", json_string("observing"));
            set_time(step, "live_at", now);
            *again = true;
            return dep_save_doc(srv, d);
        }
        int64_t started = json_integer_value(json_object_get(step, "started_at"));
        if (now - started > (int64_t)d->set.healthy_timeout_ms) {
            char *ids = json_dumps(pending, JSON_COMPACT);
            snprintf(reason, sizeof(reason), "%zu node(s) did not report the version live within %llu ms: %s", waiting,
                     (unsigned long long)d->set.healthy_timeout_ms, ids ? ids : "");
            free(ids);
            json_decref(pending);
            return roll_back(srv, d, step, reason);
        }
        json_decref(pending);
        return 0;
    }
    if (strcmp(state, "observing") != 0)
        return 0;
    /* the gates */
    if (!d->prev)
        return step_pass(srv, d, step); /* a first deployment: nothing to compare with */
    struct vg__control_figures neu, old;
    figures_of(srv, nodes, d->app, d->version, &neu);
    figures_of(srv, nodes, d->app, d->prev, &old);
    const char *old_from = "nodes on the previous version";
    if (old.requests == 0) { /* every node is on the new version: the figures from before the rollout */
        vg__control_figures_from_json(&old, json_object_get(d->doc, "baseline"));
        old_from = "the previous version before the rollout";
    }
    struct vg__control_gate g = {.min_requests = d->set.min_requests,
                                 .max_error_rate = d->set.max_error_rate,
                                 .max_p99_ratio = d->set.max_p99_ratio};
    int64_t live_at = json_integer_value(json_object_get(step, "live_at"));
    char why[256];
    enum vg__control_verdict v =
        vg__control_gate_judge(&g, &old, &neu, now - live_at >= (int64_t)d->set.window_ms, why, sizeof(why));
    json_t *gate = json_pack("{s:o,s:o,s:s,s:s}", "old", vg__control_figures_json(&old), "new",
                             vg__control_figures_json(&neu), "old_from", old_from, "verdict",
                             v == VG__CONTROL_GATE_PASS   ? "pass"
                             : v == VG__CONTROL_GATE_FAIL ? "fail"
                                                          : "wait");
    if (*why)
        json_object_set_new(gate, "why", json_string(why));
    bool same = json_equal(gate, json_object_get(step, "gate"));
    json_object_set_new(step, "gate", gate);
    if (v == VG__CONTROL_GATE_FAIL) {
        snprintf(reason, sizeof(reason), "%s failed its gate: %s", json_string_value(json_object_get(step, "name")),
                 why);
        return roll_back(srv, d, step, reason);
    }
    if (v == VG__CONTROL_GATE_PASS) {
        *again = true;
        return step_pass(srv, d, step);
    }
    return same ? 0 : dep_save_doc(srv, d);
}

static bool dep_load(sqlite3_stmt *st, struct dep *d)
{
    memset(d, 0, sizeof(*d));
    d->id = sqlite3_column_int64(st, 0);
    d->app = vg_xstrdup(vg__control_sql_col(st, 1) ? vg__control_sql_col(st, 1) : "");
    d->version = vg_xstrdup(vg__control_sql_col(st, 2) ? vg__control_sql_col(st, 2) : "");
    d->prev = vg__control_sql_col(st, 3) ? vg_xstrdup(vg__control_sql_col(st, 3)) : NULL;
    d->created_by = vg_xstrdup(vg__control_sql_col(st, 5) ? vg__control_sql_col(st, 5) : "");
    d->doc = vg__control_sql_col(st, 4) ? json_loads(vg__control_sql_col(st, 4), 0, NULL) : NULL;
    if (!json_is_object(d->doc))
        return false;
    settings_from_json(&d->set, json_object_get(d->doc, "settings"));
    return true;
}

void vg__control_rollout_tick(struct vg_control_server *srv)
{
    if (!srv->store)
        return;
    sqlite3_stmt *st =
        vg__control_sql_prep(srv, "SELECT id, app, version, prev_version, rollout, created_by FROM deployments"
                                  " WHERE state = 'rolling' ORDER BY id");
    if (!st)
        return;
    struct dep *deps = NULL;
    size_t n = 0, cap = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        if (n == cap) {
            cap = cap ? 2 * cap : 4;
            deps = vg_xrealloc(deps, cap * sizeof(*deps));
        }
        if (dep_load(st, &deps[n]))
            n++;
        else
            dep_free(&deps[n]);
    }
    sqlite3_finalize(st);
    if (!n) {
        free(deps);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        bool again = true;
        for (int moves = 0; again && moves < 2 * VG_CONF_ROLLOUT_MAX_WAVES + 4; moves++) {
            /* the app's nodes: those at the locations it is placed on */
            json_t *all = nodes_now(srv), *nodes = all ? vg__control_place_nodes(srv, deps[i].app, all) : NULL;
            json_decref(all);
            int rc = advance(srv, &deps[i], nodes, &again);
            json_decref(nodes);
            if (rc != 0)
                break;
        }
        dep_free(&deps[i]);
    }
    free(deps);
}

static void on_tick(uv_timer_t *t)
{
    vg__control_rollout_tick(t->data);
}

void vg__control_rollout_init(struct vg_control_server *srv)
{
    uv_timer_init(&srv->uv, &srv->rollout_timer);
    srv->rollout_timer.data = srv;
    uv_timer_start(&srv->rollout_timer, on_tick, TICK_MS, TICK_MS);
}

/* ---- starting one ---- */

int vg__control_rollout_start(struct vg_control_server *srv, const char *app, const char *version, const char *actor,
                              int64_t *id, char *err, size_t errcap)
{
    *id = 0; /* stays 0 when the version is the app's already */
    /* the version (and its settings) */
    sqlite3_stmt *st = vg__control_sql_prep(srv, "SELECT rollout FROM versions WHERE app = ? AND id = ?");
    vg__control_sql_text(st, 1, app);
    vg__control_sql_text(st, 2, version);
    if (!st)
        return VG_EIO;
    if (sqlite3_step(st) != SQLITE_ROW) {
        sqlite3_finalize(st);
        snprintf(err, errcap, "app '%s' has no version '%s'", app, version);
        return VG_ENOENT;
    }
    json_t *settings = vg__control_sql_col(st, 0) ? json_loads(vg__control_sql_col(st, 0), 0, NULL) : NULL;
    sqlite3_finalize(st);
    struct vg_conf_rollout set;
    settings_from_json(&set, settings);
    json_decref(settings);
    settings = vg__control_rollout_settings_json(&set);

    /* one rollout per app at a time */
    st = vg__control_sql_prep(srv, "SELECT id, version, rollout FROM deployments WHERE app = ? AND state = 'rolling'");
    vg__control_sql_text(st, 1, app);
    if (st && sqlite3_step(st) == SQLITE_ROW) {
        json_t *doc = vg__control_sql_col(st, 2) ? json_loads(vg__control_sql_col(st, 2), 0, NULL) : NULL;
        snprintf(err, errcap,
                 "app '%s' has a rollout in progress (deployment %lld, to %.12s, step %lld of %zu); wait for it to "
                 "finish, or cancel it with `verge rollback %s` (PUT /v1/apps/%s/desired)",
                 app, (long long)sqlite3_column_int64(st, 0),
                 vg__control_sql_col(st, 1) ? vg__control_sql_col(st, 1) : "?",
                 (long long)json_integer_value(json_object_get(doc, "step")) + 1,
                 json_array_size(json_object_get(doc, "steps")), app, app);
        json_decref(doc);
        sqlite3_finalize(st);
        json_decref(settings);
        return VG_EEXIST;
    }
    sqlite3_finalize(st);

    /* the previous version */
    char *prev = NULL;
    st = vg__control_sql_prep(srv, "SELECT version FROM desired WHERE app = ?");
    vg__control_sql_text(st, 1, app);
    if (st && sqlite3_step(st) == SQLITE_ROW && vg__control_sql_col(st, 0))
        prev = vg_xstrdup(vg__control_sql_col(st, 0));
    sqlite3_finalize(st);
    if (prev && strcmp(prev, version) == 0) {
        free(prev);
        json_decref(settings);
        return 0; /* already the version everywhere */
    }

    /* the plan */
    json_t *steps = json_array();
    if (set.canary > 0) {
        json_t *c = json_pack("{s:s,s:s}", "name", "canary", "state", "pending");
        json_object_set_new(c, set.canary_percent ? "percent" : "count", json_integer(set.canary));
        json_array_append_new(steps, c);
    }
    for (size_t i = 0; i < set.n_waves; i++) {
        char name[32];
        snprintf(name, sizeof(name), "wave %zu", i + 1);
        json_array_append_new(
            steps, json_pack("{s:s,s:s,s:I}", "name", name, "state", "pending", "percent", (json_int_t)set.waves[i]));
    }
    json_t *nodes = nodes_now(srv);
    struct vg__control_figures base;
    figures_of(srv, nodes, app, prev, &base);
    json_decref(nodes);
    json_t *doc = json_pack("{s:s,s:o,s:o,s:I,s:o,s:[]}", "strategy", "gated", "settings", settings, "steps", steps,
                            "step", (json_int_t)0, "baseline", vg__control_figures_save(&base), "assigned");

    char *s = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    int64_t now = wall_ms();
    int rc = vg__control_store_begin(srv->store);
    if (rc == 0) {
        st = vg__control_sql_prep(
            srv, "INSERT INTO deployments(app, version, state, rev, created_by, created_at, prev_version,"
                 " rollout) VALUES(?,?,'rolling',?,?,?,?,?)");
        vg__control_sql_text(st, 1, app);
        vg__control_sql_text(st, 2, version);
        vg__control_sql_int(st, 3, vg__control_rev(srv->store));
        vg__control_sql_text(st, 4, actor);
        vg__control_sql_int(st, 5, now);
        vg__control_sql_text(st, 6, prev);
        vg__control_sql_text(st, 7, s);
        rc = vg__control_sql_run(srv, st, "deployment insert");
        *id = sqlite3_last_insert_rowid(vg__control_store_db(srv->store));
        if (rc == 0)
            rc = vg__control_store_history(srv->store, actor, "deployment.start", app, version,
                                           json_pack("{s:I,s:s?}", "deployment", (json_int_t)*id, "from", prev));
        rc = vg__control_store_end(srv->store, rc);
    }
    free(s);
    free(prev);
    if (rc)
        return rc;
    vg_log(VG_LOG_INFO, "rollout started", "app", app, "version", version, "actor", actor, NULL);
    vg__control_rollout_tick(srv); /* the first step now, not at the next tick */
    return 0;
}

/* ---- reading them ---- */

static json_t *time_or_null(sqlite3_stmt *st, int i)
{
    if (sqlite3_column_type(st, i) == SQLITE_NULL)
        return json_null();
    char b[32];
    vg__control_time_format(sqlite3_column_int64(st, i), b);
    return json_string(b);
}

/* The per-node view: what each node that is up should run for the app and
 * what it reports. */
static json_t *nodes_view(struct vg_control_server *srv, const char *app, const char *state, const char *version,
                          const char *prev, json_t *assigned_nodes)
{
    json_t *nodes = nodes_now(srv), *out = json_array(), *n;
    size_t i;
    json_array_foreach(nodes, i, n)
    {
        const char *id = json_string_value(json_object_get(n, "id"));
        if (!id)
            continue;
        const char *target = prev;
        if (strcmp(state, "done") == 0 || (strcmp(state, "rolling") == 0 && in_list(assigned_nodes, id)))
            target = version;
        json_t *r = app_report(n, app);
        json_t *o = json_pack("{s:s,s:b,s:o,s:O}", "id", id, "up", node_up(n), "target",
                              target ? json_string(target) : json_null(), "live",
                              json_object_get(r, "version") ? json_object_get(r, "version") : json_null());
        if (json_object_get(r, "health"))
            json_object_set(o, "health", json_object_get(r, "health"));
        if (json_object_get(r, "failed_version"))
            json_object_set(o, "failed_version", json_object_get(r, "failed_version"));
        if (json_object_get(r, "rps"))
            json_object_set(o, "rps", json_object_get(r, "rps"));
        struct vg__control_figures f = {0}; /* what the gates read for this node */
        if (vg__control_top_node_figures(srv->top, id, app, NULL, &f, NULL)) {
            json_t *fj = vg__control_figures_json(&f);
            json_object_del(fj, "nodes");
            json_object_set_new(o, "stats", fj);
        }
        json_array_append_new(out, o);
    }
    json_decref(nodes);
    return out;
}

#define DEP_COLS                                                                                                       \
    "SELECT id, app, version, prev_version, state, reason, created_by, created_at, finished_at, rollout, rev"          \
    " FROM deployments"

static json_t *dep_row(struct vg_control_server *srv, sqlite3_stmt *st, bool detail)
{
    const char *state = vg__control_sql_col(st, 4) ? vg__control_sql_col(st, 4) : "";
    json_t *doc = vg__control_sql_col(st, 9) ? json_loads(vg__control_sql_col(st, 9), 0, NULL) : NULL;
    json_t *j = json_pack(
        "{s:I,s:s,s:s,s:s?,s:s,s:s?,s:s,s:o,s:o,s:I,s:s}", "id", (json_int_t)sqlite3_column_int64(st, 0), "app",
        vg__control_sql_col(st, 1) ? vg__control_sql_col(st, 1) : "", "version",
        vg__control_sql_col(st, 2) ? vg__control_sql_col(st, 2) : "", "previous_version", vg__control_sql_col(st, 3),
        "state", state, "reason", vg__control_sql_col(st, 5), "created_by",
        vg__control_sql_col(st, 6) ? vg__control_sql_col(st, 6) : "", "created_at", time_or_null(st, 7), "finished_at",
        time_or_null(st, 8), "rev", (json_int_t)sqlite3_column_int64(st, 10), "strategy", doc ? "gated" : "immediate");
    json_t *steps = json_object_get(doc, "steps");
    json_int_t k =
        json_is_integer(json_object_get(doc, "step")) ? json_integer_value(json_object_get(doc, "step")) : -1;
    json_object_set_new(j, "step", k >= 0 && strcmp(state, "rolling") == 0 ? json_integer(k + 1) : json_null());
    json_object_set_new(j, "steps", steps ? json_incref(steps) : json_array());
    if (doc) {
        json_object_set(j, "settings", json_object_get(doc, "settings"));
        if (json_object_get(doc, "detected_at"))
            json_object_set(j, "detected_at_ms", json_object_get(doc, "detected_at"));
    }
    if (detail)
        json_object_set_new(j, "nodes",
                            nodes_view(srv, vg__control_sql_col(st, 1) ? vg__control_sql_col(st, 1) : "", state,
                                       vg__control_sql_col(st, 2), vg__control_sql_col(st, 3),
                                       json_object_get(doc, "assigned")));
    json_decref(doc);
    return j;
}

int vg__control_deployments_list(struct vg_control_server *srv, const char *app, int64_t limit, json_t **out)
{
    sqlite3_stmt *st = vg__control_sql_prep(srv, DEP_COLS " WHERE app = ? ORDER BY id DESC LIMIT ?");
    if (!st)
        return VG_EIO;
    vg__control_sql_text(st, 1, app);
    vg__control_sql_int(st, 2, limit);
    json_t *arr = json_array();
    int r;
    while ((r = sqlite3_step(st)) == SQLITE_ROW)
        json_array_append_new(arr, dep_row(srv, st, false));
    sqlite3_finalize(st);
    if (r != SQLITE_DONE) {
        json_decref(arr);
        return VG_EIO;
    }
    *out = arr;
    return 0;
}

int vg__control_deployment_get(struct vg_control_server *srv, const char *app, int64_t id, json_t **out)
{
    sqlite3_stmt *st = vg__control_sql_prep(srv, DEP_COLS " WHERE app = ? AND id = ?");
    if (!st)
        return VG_EIO;
    vg__control_sql_text(st, 1, app);
    vg__control_sql_int(st, 2, id);
    int r = sqlite3_step(st);
    if (r == SQLITE_ROW)
        *out = dep_row(srv, st, true);
    sqlite3_finalize(st);
    return r == SQLITE_ROW ? 0 : r == SQLITE_DONE ? VG_ENOENT : VG_EIO;
}
