/* The node agent: keeps this node's apps at the versions the control plane
 * wants (`verge node --control URL`).
 *
 * Two threads of its own, both allowed to block:
 *  - the desired-state thread registers the node, then long-polls
 *    GET /v1/nodes/ID/desired?since=REV&wait=S: a change reaches it as soon
 *    as it commits. For each app whose version changed it downloads the
 *    bundle (unless unpacked already), checks its sha256 against the
 *    version id, unpacks it (vg_bundle_unpack refuses links, traversal and
 *    oversize), validates the manifest and Lua as `verge check` does, and
 *    asks the main thread to switch (the SIGHUP reload path: in-flight
 *    requests finish on the old site, new ones see the new one). A bundle
 *    that fails any step is refused and reported; the old version keeps
 *    serving.
 *  - the heartbeat thread reports every app's version and health.
 * The last versions that went live are written to DATA/agent.json, so a
 * node restarted while the control plane is down serves them again.
 *
 * Unreachable control plane: both threads retry with backoff (100 ms
 * doubling to 5 s) and the node keeps serving what it has. */
#include "bundle/bundle.h"
#include "node_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define POLL_WAIT_S 25
/* With --nats the figures go out on the bus every second (node_stats.c) and
 * the heartbeat is about versions and health; without a bus it carries the
 * control plane's only figures, so it comes every second (one small POST
 * and one SQLite write per node a second: fine for the single nodes that
 * run without a bus; fleets have one). */
#define HEARTBEAT_MS 2000
#define HEARTBEAT_NO_BUS_MS 1000
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000

/* One app as this node runs it (agent thread's view). */
struct agent_app {
    char *name;
    char *version; /* live version ("" when none went live yet) */
    char *failed;  /* the last version refused, or NULL */
    char *error;   /* why it was refused */
    /* the node's figures when the live version went live: the report
     * counts from there, so a rollout gate sees only that version */
    struct vg_node_appstats base;
    uint64_t live_since_ms;
    uint64_t hb_requests; /* at the previous heartbeat, for rps */
};

struct vg_node_agent {
    struct vg_node *node;
    pthread_t poll_thread, hb_thread;
    atomic_bool stop;
    pthread_mutex_t mu; /* guards apps (read by the heartbeat) and the wake-up */
    pthread_cond_t cv;
    pthread_cond_t hb_cv; /* wakes the heartbeat early: report_now */
    bool report_now;      /* under mu: a new desired state was applied, tell the control plane at once */
    struct agent_app *apps;
    size_t n_apps;
    int64_t rev;
    char *state_path;
    int cancel[2]; /* a pipe: writing to it ends any control-plane call in flight */
    bool started;
};

/* ---- small helpers --------------------------------------------------------------- */

/* Sleeps ms, or less when the agent is stopping. */
static void nap(struct vg_node_agent *a, uint64_t ms)
{
    pthread_mutex_lock(&a->mu);
    if (!atomic_load(&a->stop)) {
        struct timespec ts = vg_deadline(CLOCK_REALTIME, ms);
        pthread_cond_timedwait(&a->cv, &a->mu, &ts);
    }
    pthread_mutex_unlock(&a->mu);
}

static uint64_t backoff_next(uint64_t cur)
{
    return cur >= BACKOFF_MAX_MS / 2 ? BACKOFF_MAX_MS : cur * 2;
}

static int call(struct vg_node_agent *a, const char *method, const char *path, json_t *body, uint32_t timeout_ms,
                size_t max, struct vg_http_sync_res *res, char *err, size_t errcap)
{
    const struct vg_node_options *o = &a->node->opt;
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    struct vg_http_sync_req q = {.method = method,
                                 .url = o->control_url,
                                 .path_suffix = path,
                                 .token = o->control_token,
                                 .content_type = text ? "application/json" : NULL,
                                 .body = text,
                                 .body_len = text ? strlen(text) : 0,
                                 .timeout_ms = timeout_ms,
                                 .max_bytes = max,
                                 .cancel_fd = a->cancel[0]};
    int rc = vg_http_sync_request(&q, res, err, errcap);
    free(text);
    return rc;
}

static struct agent_app *app_find(struct vg_node_agent *a, const char *name)
{
    for (size_t i = 0; i < a->n_apps; i++)
        if (strcmp(a->apps[i].name, name) == 0)
            return &a->apps[i];
    return NULL;
}

static struct agent_app *app_get(struct vg_node_agent *a, const char *name)
{
    struct agent_app *x = app_find(a, name);
    if (x)
        return x;
    a->apps = vg_xrealloc(a->apps, (a->n_apps + 1) * sizeof(*a->apps));
    x = &a->apps[a->n_apps++];
    *x = (struct agent_app){.name = vg_xstrdup(name), .version = vg_xstrdup("")};
    return x;
}

static void set_str(char **dst, const char *v)
{
    free(*dst);
    *dst = v ? vg_xstrdup(v) : NULL;
}

/* DATA/apps/APP/VERSION */
static char *version_dir(struct vg_node_agent *a, const char *app, const char *version)
{
    size_t n = strlen(a->node->opt.data_dir) + strlen(app) + strlen(version) + 16;
    char *p = vg_xmalloc(n);
    snprintf(p, n, "%s/apps/%s/%s", a->node->opt.data_dir, app, version);
    return p;
}

static int mkdirs(const char *path)
{
    char tmp[4096];
    if (strlen(path) >= sizeof(tmp))
        return VG_EINVAL;
    strcpy(tmp, path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
            return VG_EIO;
        *p = '/';
    }
    return mkdir(tmp, 0755) != 0 && errno != EEXIST ? VG_EIO : 0;
}

/* ---- last known good ------------------------------------------------------------- */

static void state_save(struct vg_node_agent *a)
{
    json_t *apps = json_object();
    pthread_mutex_lock(&a->mu);
    for (size_t i = 0; i < a->n_apps; i++)
        if (a->apps[i].version[0])
            json_object_set_new(apps, a->apps[i].name, json_string(a->apps[i].version));
    json_t *j = json_pack("{s:I,s:o}", "rev", (json_int_t)a->rev, "apps", apps);
    pthread_mutex_unlock(&a->mu);
    size_t n = strlen(a->state_path) + 8;
    char *tmp = vg_xmalloc(n);
    snprintf(tmp, n, "%s.tmp", a->state_path);
    /* write, fsync, rename: a crash leaves the old file or the new one */
    if (json_dump_file(j, tmp, JSON_COMPACT) == 0) {
        FILE *f = fopen(tmp, "r+");
        if (f) {
            fsync(fileno(f));
            fclose(f);
        }
        if (rename(tmp, a->state_path) != 0)
            vg_log(VG_LOG_WARN, "agent: cannot save its state", "path", a->state_path, "reason", strerror(errno), NULL);
    }
    free(tmp);
    json_decref(j);
}

/* The app directories of the last versions that went live (for start-up). */
static void state_load(struct vg_node_agent *a)
{
    json_error_t je;
    json_t *j = json_load_file(a->state_path, 0, &je);
    if (!j)
        return;
    json_t *apps = json_object_get(j, "apps"), *v;
    const char *name;
    json_object_foreach(apps, name, v)
    {
        if (json_is_string(v) && strlen(json_string_value(v)) == 64) {
            struct agent_app *x = app_get(a, name);
            set_str(&x->version, json_string_value(v));
            x->live_since_ms = vg_wall_us() / 1000; /* the figures start at zero with the process */
        }
    }
    /* the revision is not kept: a restarted node asks for the current state */
    json_decref(j);
}

/* ---- one app version ------------------------------------------------------------- */

/* Makes DATA/apps/APP/VERSION hold the version's checked tree. 0, or an
 * error with the reason in err. */
static int fetch_version(struct vg_node_agent *a, const char *app, const char *version, const char *bundle_path,
                         char *err, size_t errcap)
{
    char *dir = version_dir(a, app, version);
    struct stat st;
    int rc = 0;
    if (stat(dir, &st) == 0 && S_ISDIR(st.st_mode))
        goto out; /* unpacked before (a rollback to it, or a restart) */
    struct vg_http_sync_res res;
    rc = call(a, "GET", bundle_path, NULL, 60000, VG_BUNDLE_MAX_BYTES + 4096, &res, err, errcap);
    if (rc)
        goto out;
    if (res.status != 200) {
        snprintf(err, errcap, "bundle download: HTTP %d", res.status);
        rc = VG_EIO;
        vg_http_sync_res_free(&res);
        goto out;
    }
    char sum[65];
    vg_bundle_sha256_hex(res.body, res.body_len, sum);
    if (strcmp(sum, version) != 0) {
        snprintf(err, errcap, "bundle corrupt: its sha256 is %s", sum);
        rc = VG_EPARSE;
        vg_http_sync_res_free(&res);
        goto out;
    }
    size_t n = strlen(dir) + 16;
    char *tmp = vg_xmalloc(n);
    snprintf(tmp, n, "%s.part", dir);
    (void)vg_bundle_rmtree(tmp);
    struct vg_bundle_limits lim;
    vg_bundle_limits_default(&lim);
    rc = mkdirs(tmp);
    if (rc)
        snprintf(err, errcap, "cannot create %s: %s", tmp, strerror(errno));
    else
        rc = vg_bundle_unpack(res.body, res.body_len, tmp, &lim, NULL, NULL, err, errcap);
    vg_http_sync_res_free(&res);
    if (!rc && rename(tmp, dir) != 0) {
        snprintf(err, errcap, "cannot move %s into place: %s", tmp, strerror(errno));
        rc = VG_EIO;
    }
    if (rc)
        (void)vg_bundle_rmtree(tmp);
    free(tmp);
out:
    free(dir);
    return rc;
}

/* `verge check` on an unpacked version, app name included. */
static int check_version(struct vg_node_agent *a, const char *app, const char *version, char *err, size_t errcap)
{
    char *dir = version_dir(a, app, version);
    struct vg_conf_app *conf = NULL;
    struct vg_conf_error ce;
    int rc = vg_conf_app_load(dir, &conf, &ce);
    if (rc == 0)
        rc = vg_fn_check(conf, &ce);
    if (rc != 0)
        vg_conf_error_format(&ce, err, errcap);
    else if (strcmp(conf->name, app) != 0) {
        snprintf(err, errcap, "the manifest names the app '%s', not '%s'", conf->name, app);
        rc = VG_ECONF;
    }
    if (conf)
        vg_conf_app_destroy(conf);
    free(dir);
    return rc;
}

/* ---- switching -------------------------------------------------------------------- */

/* The app directories for a set of live versions (apps without one left
 * out); the caller frees both levels. */
static char **dirs_of(struct vg_node_agent *a, size_t *n)
{
    char **dirs = vg_xcalloc(a->n_apps ? a->n_apps : 1, sizeof(*dirs));
    *n = 0;
    for (size_t i = 0; i < a->n_apps; i++)
        if (a->apps[i].version[0])
            dirs[(*n)++] = version_dir(a, a->apps[i].name, a->apps[i].version);
    return dirs;
}

/* Asks the main thread to run the apps in dirs; waits for the answer. */
static int activate(struct vg_node_agent *a, char **dirs, size_t n, char *err, size_t errcap)
{
    struct vg_node *node = a->node;
    if (atomic_load(&a->stop)) {
        snprintf(err, errcap, "the node is stopping");
        return VG_EIO;
    }
    pthread_mutex_lock(&node->agent_mu);
    node->agent_dirs = dirs;
    node->n_agent_dirs = n;
    node->agent_done = false;
    pthread_mutex_unlock(&node->agent_mu);
    uv_async_send(&node->agent_async);
    pthread_mutex_lock(&node->agent_mu);
    while (!node->agent_done && !atomic_load(&a->stop))
        pthread_cond_wait(&node->agent_cv, &node->agent_mu);
    int rc = node->agent_done ? node->agent_rc : VG_EIO;
    snprintf(err, errcap, "%s", node->agent_err);
    pthread_mutex_unlock(&node->agent_mu);
    return rc;
}

/* Brings one app to the version desired; on any failure the live version
 * stays and the failure is remembered for the heartbeat. Returns whether
 * the set of live versions changed. */
static bool prepare_app(struct vg_node_agent *a, const char *app, const char *version, const char *bundle)
{
    pthread_mutex_lock(&a->mu);
    struct agent_app *x = app_get(a, app);
    bool same = strcmp(x->version, version) == 0;
    bool refused = x->failed && strcmp(x->failed, version) == 0;
    pthread_mutex_unlock(&a->mu);
    if (same || refused)
        return false;
    char err[1024] = "";
    vg_log(VG_LOG_INFO, "agent: new version", "app", app, "version", version, NULL);
    int rc = fetch_version(a, app, version, bundle, err, sizeof(err));
    if (rc == 0)
        rc = check_version(a, app, version, err, sizeof(err));
    pthread_mutex_lock(&a->mu);
    x = app_get(a, app);
    if (rc) {
        set_str(&x->failed, version);
        set_str(&x->error, err);
        vg_log(VG_LOG_ERROR, "agent: version refused, the live one keeps serving", "app", app, "version", version,
               "reason", err, NULL);
    } else {
        set_str(&x->version, version); /* tentatively: activate() decides */
    }
    pthread_mutex_unlock(&a->mu);
    return rc == 0;
}

/* Unpacked versions of app other than keep1 and keep2 (the live one and
 * the one before it, for a quick way back) are removed: a node that
 * deploys all day must not fill its disk. */
static void prune(struct vg_node_agent *a, const char *app, const char *keep1, const char *keep2)
{
    size_t n = strlen(a->node->opt.data_dir) + strlen(app) + 8;
    char *dir = vg_xmalloc(n);
    snprintf(dir, n, "%s/apps/%s", a->node->opt.data_dir, app);
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.' || strcmp(e->d_name, keep1) == 0 || strcmp(e->d_name, keep2) == 0)
            continue;
        char *victim = vg_xasprintf("%s/%s", dir, e->d_name);
        if (vg_bundle_rmtree(victim) != 0)
            vg_log(VG_LOG_WARN, "agent: cannot remove an old version", "dir", victim, NULL);
        free(victim);
    }
    if (d)
        closedir(d);
    free(dir);
}

/* Applies a desired-state document: {rev, apps: [{app, version, bundle}]}. */
static void apply(struct vg_node_agent *a, json_t *doc)
{
    json_t *list = json_object_get(doc, "apps"), *e;
    size_t i;
    /* remember the live set, to go back to if the switch fails */
    pthread_mutex_lock(&a->mu);
    char **before = vg_xcalloc(a->n_apps + 1, sizeof(*before));
    size_t n_before = a->n_apps;
    for (size_t k = 0; k < a->n_apps; k++)
        before[k] = vg_xstrdup(a->apps[k].version);
    pthread_mutex_unlock(&a->mu);
    bool changed = false;
    json_array_foreach(list, i, e)
    {
        const char *app = json_string_value(json_object_get(e, "app"));
        const char *version = json_string_value(json_object_get(e, "version"));
        const char *bundle = json_string_value(json_object_get(e, "bundle"));
        if (!app || !version || !bundle || strlen(version) != 64)
            continue;
        changed |= prepare_app(a, app, version, bundle);
    }
    /* apps no longer desired stop being served */
    pthread_mutex_lock(&a->mu);
    for (size_t k = 0; k < a->n_apps; k++) {
        bool wanted = false;
        json_array_foreach(list, i, e)
        {
            const char *app = json_string_value(json_object_get(e, "app"));
            wanted |= app && strcmp(app, a->apps[k].name) == 0;
        }
        if (!wanted && a->apps[k].version[0]) {
            set_str(&a->apps[k].version, "");
            changed = true;
        }
    }
    size_t n;
    char **dirs = dirs_of(a, &n);
    pthread_mutex_unlock(&a->mu);
    if (changed) {
        char err[1200];
        int rc = activate(a, dirs, n, err, sizeof(err));
        pthread_mutex_lock(&a->mu);
        for (size_t k = 0; k < a->n_apps; k++) { /* apps are only ever appended: k matches before[k] */
            struct agent_app *x = &a->apps[k];
            const char *old = k < n_before ? before[k] : "";
            if (strcmp(x->version, old) == 0)
                continue;
            if (rc) { /* the node kept its running site: so do we */
                set_str(&x->failed, x->version);
                set_str(&x->error, err);
                set_str(&x->version, old);
            } else if (x->version[0]) { /* live now: an older refusal is history */
                set_str(&x->failed, NULL);
                set_str(&x->error, NULL);
                vg__node_appstats_read(a->node, x->name, &x->base);
                x->live_since_ms = (uint64_t)(vg_wall_us() / 1000);
                x->hb_requests = x->base.requests;
            }
        }
        /* what to keep on disk, decided under the lock, done outside it */
        size_t n_keep = rc ? 0 : a->n_apps;
        char **keep = vg_xcalloc(3 * n_keep + 1, sizeof(*keep));
        for (size_t k = 0; k < n_keep; k++) {
            keep[3 * k] = vg_xstrdup(a->apps[k].name);
            keep[3 * k + 1] = vg_xstrdup(a->apps[k].version);
            keep[3 * k + 2] = vg_xstrdup(k < n_before ? before[k] : "");
        }
        pthread_mutex_unlock(&a->mu);
        if (!rc) {
            vg_log(VG_LOG_INFO, "agent: switched", NULL);
            /* what is live is on record before older versions go from the
             * disk: a restart never looks for a version being removed, and
             * whoever sees the old ones gone sees the new state */
            state_save(a);
        }
        for (size_t k = 0; k < n_keep; k++) {
            prune(a, keep[3 * k], keep[3 * k + 1], keep[3 * k + 2]);
            free(keep[3 * k]);
            free(keep[3 * k + 1]);
            free(keep[3 * k + 2]);
        }
        free(keep);
    }
    for (size_t k = 0; k < n; k++)
        free(dirs[k]);
    free(dirs);
    for (size_t k = 0; k < n_before; k++)
        free(before[k]);
    free(before);
    /* the outcome (live or refused) goes out now, not at the next beat:
     * `verge deploy --wait` and `verge dev` follow the reports */
    pthread_mutex_lock(&a->mu);
    a->report_now = true;
    pthread_cond_broadcast(&a->hb_cv);
    pthread_mutex_unlock(&a->mu);
}

/* ---- threads -------------------------------------------------------------------- */

static int register_node(struct vg_node_agent *a, char *err, size_t errcap)
{
    const struct vg_node_options *o = &a->node->opt;
    json_t *labels = json_object();
    for (size_t i = 0; i < o->n_labels; i++) {
        const char *eq = strchr(o->labels[i], '=');
        if (eq)
            json_object_setn_new(labels, o->labels[i], (size_t)(eq - o->labels[i]), json_string(eq + 1));
    }
    json_t *body = json_pack("{s:s,s:s,s:o}", "id", o->node_id, "location", o->location, "labels", labels);
    struct vg_http_sync_res res;
    int rc = call(a, "POST", "/v1/nodes/register", body, 10000, 0, &res, err, errcap);
    json_decref(body);
    if (rc)
        return rc;
    if (res.status != 200 && res.status != 201) {
        snprintf(err, errcap, "register: HTTP %d: %.*s", res.status, (int)(res.body_len > 200 ? 200 : res.body_len),
                 res.body);
        rc = VG_EIO;
    }
    vg_http_sync_res_free(&res);
    return rc;
}

/* Logs reachability changes only (not every retry). */
static void note_reachable(bool *was, bool now, const char *err)
{
    if (*was == now)
        return;
    *was = now;
    if (now)
        vg_log(VG_LOG_INFO, "agent: control plane reachable", NULL);
    else
        vg_log(VG_LOG_WARN, "agent: control plane unreachable or refusing, serving the last known versions", "reason",
               err, NULL);
}

static void *poll_main(void *arg)
{
    struct vg_node_agent *a = arg;
    char err[512], path[256];
    bool reachable = true, registered = false;
    uint64_t backoff = BACKOFF_MIN_MS;
    while (!atomic_load(&a->stop)) {
        if (!registered) {
            int rc = register_node(a, err, sizeof(err));
            note_reachable(&reachable, rc == 0, err);
            if (rc) {
                nap(a, backoff);
                backoff = backoff_next(backoff);
                continue;
            }
            registered = true;
            backoff = BACKOFF_MIN_MS;
        }
        if (a->rev < 0) /* nothing yet: the current state, at once */
            snprintf(path, sizeof(path), "/v1/nodes/%s/desired", a->node->opt.node_id);
        else
            snprintf(path, sizeof(path), "/v1/nodes/%s/desired?since=%lld&wait=%d", a->node->opt.node_id,
                     (long long)a->rev, POLL_WAIT_S);
        struct vg_http_sync_res res;
        int rc = call(a, "GET", path, NULL, (POLL_WAIT_S + 10) * 1000, 0, &res, err, sizeof(err));
        if (atomic_load(&a->stop)) { /* cancelled by the drain: nothing to report */
            if (rc == 0)
                vg_http_sync_res_free(&res);
            break;
        }
        if (rc == 0 && res.status == 404)
            registered = false; /* the control plane lost us (a new database): register again */
        if (rc == 0 && res.status != 200 && res.status != 304) {
            snprintf(err, sizeof(err), "desired state: HTTP %d", res.status);
            rc = VG_EIO;
        }
        note_reachable(&reachable, rc == 0, err);
        if (rc) {
            if (res.buf)
                vg_http_sync_res_free(&res);
            nap(a, backoff);
            backoff = backoff_next(backoff);
            continue;
        }
        backoff = BACKOFF_MIN_MS;
        json_t *doc = res.status == 200 ? json_loadb(res.body, res.body_len, 0, NULL) : NULL;
        vg_http_sync_res_free(&res);
        if (!doc)
            continue;
        json_int_t rev = json_integer_value(json_object_get(doc, "rev"));
        apply(a, doc);
        json_decref(doc);
        a->rev = rev;
        state_save(a);
    }
    return NULL;
}

static json_t *report(struct vg_node_agent *a, double interval_s)
{
    json_t *apps = json_object();
    pthread_mutex_lock(&a->mu);
    for (size_t i = 0; i < a->n_apps; i++) {
        struct agent_app *x = &a->apps[i];
        json_t *o = json_pack("{s:s,s:s}", "version", x->version, "health", x->version[0] ? "ok" : "none");
        if (x->version[0]) {
            struct vg_node_appstats now;
            vg__node_appstats_read(a->node, x->name, &now);
            json_object_set_new(o, "stats", vg__node_stats_since(&now, &x->base, x->live_since_ms));
            double rps = interval_s > 0 ? (double)(now.requests - x->hb_requests) / interval_s : 0;
            json_object_set_new(o, "rps", json_real(rps));
            x->hb_requests = now.requests;
            json_object_set_new(o, "demand", vg__node_appstats_demand(a->node, x->name));
        }
        if (x->failed) {
            json_object_set_new(o, "failed_version", json_string(x->failed));
            json_object_set_new(o, "error", json_string(x->error ? x->error : ""));
            if (!x->version[0])
                json_object_set_new(o, "health", json_string("failed"));
        }
        json_object_set_new(apps, x->name, o);
    }
    pthread_mutex_unlock(&a->mu);
    /* time_ms, boot: the control plane turns successive reports into rates */
    const struct vg_node *node = a->node;
    return json_pack("{s:o,s:s,s:s,s:I,s:o}", "apps", apps, "location", node->opt.location ? node->opt.location : "",
                     "boot", node->boot_id, "time_ms", (json_int_t)(vg_wall_us() / 1000), "rtt_us",
                     vg__node_rtt_json(a->node));
}

/* Waits a heartbeat interval, or less when there is news or the agent stops. */
static void hb_wait(struct vg_node_agent *a)
{
    struct timespec ts = vg_deadline(CLOCK_REALTIME, a->node->opt.n_nats_urls ? HEARTBEAT_MS : HEARTBEAT_NO_BUS_MS);
    pthread_mutex_lock(&a->mu);
    while (!atomic_load(&a->stop) && !a->report_now)
        if (pthread_cond_timedwait(&a->hb_cv, &a->mu, &ts) != 0)
            break;
    a->report_now = false;
    pthread_mutex_unlock(&a->mu);
}

static void *hb_main(void *arg)
{
    struct vg_node_agent *a = arg;
    char err[512], path[256];
    snprintf(path, sizeof(path), "/v1/nodes/%s/heartbeat", a->node->opt.node_id);
    uint64_t prev = vg_now_ms();
    while (!atomic_load(&a->stop)) {
        uint64_t now = vg_now_ms();
        json_t *body = report(a, (double)(now - prev) / 1000.0);
        prev = now;
        struct vg_http_sync_res res;
        if (call(a, "POST", path, body, 5000, 0, &res, err, sizeof(err)) == 0)
            vg_http_sync_res_free(&res);
        json_decref(body);
        hb_wait(a);
    }
    return NULL;
}

/* ---- public (node-internal) ------------------------------------------------------ */

struct vg_node_agent *vg__node_agent_create(struct vg_node *node)
{
    struct vg_node_agent *a = vg_xcalloc(1, sizeof(*a));
    a->node = node;
    a->rev = -1;
    pthread_mutex_init(&a->mu, NULL);
    pthread_cond_init(&a->cv, NULL);
    pthread_cond_init(&a->hb_cv, NULL);
    VG_AZ(pipe2(a->cancel, O_CLOEXEC | O_NONBLOCK));
    size_t n = strlen(node->opt.data_dir) + 16;
    a->state_path = vg_xmalloc(n);
    snprintf(a->state_path, n, "%s/agent.json", node->opt.data_dir);
    if (mkdirs(node->opt.data_dir) != 0)
        vg_log(VG_LOG_WARN, "agent: cannot create its data directory", "dir", node->opt.data_dir, "reason",
               strerror(errno), NULL);
    state_load(a);
    return a;
}

char **vg__node_agent_dirs(struct vg_node_agent *a, size_t *n)
{
    pthread_mutex_lock(&a->mu);
    char **d = dirs_of(a, n);
    pthread_mutex_unlock(&a->mu);
    return d;
}

void vg__node_agent_forget(struct vg_node_agent *a)
{
    pthread_mutex_lock(&a->mu);
    for (size_t i = 0; i < a->n_apps; i++)
        set_str(&a->apps[i].version, "");
    pthread_mutex_unlock(&a->mu);
}

bool vg__node_agent_live(struct vg_node_agent *a, const char *app, char *version, struct vg_node_appstats *base,
                         uint64_t *live_since_ms)
{
    pthread_mutex_lock(&a->mu);
    struct agent_app *x = app_find(a, app);
    bool live = x && x->version[0];
    if (live) {
        snprintf(version, 65, "%s", x->version);
        *base = x->base;
        *live_since_ms = x->live_since_ms;
    }
    pthread_mutex_unlock(&a->mu);
    return live;
}

void vg__node_agent_start(struct vg_node_agent *a)
{
    VG_AZ(pthread_create(&a->poll_thread, NULL, poll_main, a));
    VG_AZ(pthread_create(&a->hb_thread, NULL, hb_main, a));
    a->started = true;
}

void vg__node_agent_stop(struct vg_node_agent *a)
{
    pthread_mutex_lock(&a->mu);
    atomic_store(&a->stop, true);
    pthread_cond_broadcast(&a->cv);
    pthread_cond_broadcast(&a->hb_cv);
    pthread_mutex_unlock(&a->mu);
    pthread_mutex_lock(&a->node->agent_mu);
    pthread_cond_broadcast(&a->node->agent_cv);
    pthread_mutex_unlock(&a->node->agent_mu);
    char b = 1; /* a long poll, a download: they end now, not at their timeout */
    if (write(a->cancel[1], &b, 1) < 0)
        vg_log(VG_LOG_WARN, "agent: cannot interrupt its calls", "reason", strerror(errno), NULL);
}

void vg__node_agent_destroy(struct vg_node_agent *a)
{
    if (!a)
        return;
    vg__node_agent_stop(a);
    if (a->started) { /* they exit promptly: every wait watches stop or the pipe */
        pthread_join(a->poll_thread, NULL);
        pthread_join(a->hb_thread, NULL);
    }
    for (size_t i = 0; i < a->n_apps; i++) {
        free(a->apps[i].name);
        free(a->apps[i].version);
        free(a->apps[i].failed);
        free(a->apps[i].error);
    }
    free(a->apps);
    free(a->state_path);
    close(a->cancel[0]);
    close(a->cancel[1]);
    pthread_mutex_destroy(&a->mu);
    pthread_cond_destroy(&a->cv);
    pthread_cond_destroy(&a->hb_cv);
    free(a);
}
