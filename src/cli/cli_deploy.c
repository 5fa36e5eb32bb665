/* verge deploy, verge rollback, verge status: the developer's side of the
 * control plane. A deploy bundles the app directory, uploads it as a
 * version and starts a gated rollout of it (POST /v1/apps/APP/deployments:
 * canary, waves, gates from the version's `rollout:` settings); with
 * --wait it follows the deployment step by step and node by node until it
 * is done (exit 0) or rolled back (exit 1, with the reason). --immediate
 * and `verge rollback` set the desired version on every node at once (PUT
 * /v1/apps/APP/desired), which also cancels a rollout in progress. */
#include "cli.h"
#include "cli_int.h"
#include "conf/conf.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define WAIT_POLL_MS 100

struct dargs {
    struct vg__cli_client_args c;
    bool wait, immediate;
    uint64_t timeout_ms;
    const char *to;
};

static int opts(int argc, char **argv, struct dargs *a, void (*usage)(FILE *))
{
    static const struct option longopts[] = {
        {"control", required_argument, NULL, 'c'},
        {"token", required_argument, NULL, 'T'},
        {"json", no_argument, NULL, 'j'},
        {"wait", no_argument, NULL, 'w'},
        {"timeout", required_argument, NULL, 't'},
        {"to", required_argument, NULL, 'o'},
        {"immediate", no_argument, NULL, 'i'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c;
    optind = 1;
    a->timeout_ms = 60000;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case 'c':
            a->c.url = optarg;
            break;
        case 'T':
            a->c.token = optarg;
            break;
        case 'j':
            a->c.json = true;
            break;
        case 'w':
            a->wait = true;
            break;
        case 't':
            if (vg_parse_duration_ms(optarg, &a->timeout_ms) != 0 || !a->timeout_ms) {
                fprintf(stderr, "verge: --timeout takes a duration like 60s: %s\n", optarg);
                return 2;
            }
            break;
        case 'o':
            a->to = optarg;
            break;
        case 'i':
            a->immediate = true;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    return -1;
}

/* ---- following the nodes --------------------------------------------------------- */

enum nstate { N_PENDING, N_LIVE, N_FAILED };

/* One node's state for app@version from its last report. */
static enum nstate node_state(json_t *node, const char *app, const char *version, const char **why)
{
    json_t *r = json_object_get(json_object_get(json_object_get(node, "report"), "apps"), app);
    const char *live = json_string_value(json_object_get(r, "version"));
    const char *failed = json_string_value(json_object_get(r, "failed_version"));
    *why = json_string_value(json_object_get(r, "error"));
    if (live && strcmp(live, version) == 0)
        return N_LIVE;
    if (failed && strcmp(failed, version) == 0)
        return N_FAILED;
    return N_PENDING;
}

/* Polls GET /v1/nodes until every node that is up runs app@version; a
 * line per node as it gets there. Returns an exit status; *out (with
 * --json) is the final per-node state. */
static int follow(const struct dargs *a, const char *app, const char *version, json_t **out)
{
    struct vg__cli_client_args quiet = a->c;
    quiet.json = false;
    uint64_t deadline = vg_now_ms() + a->timeout_ms;
    json_t *seen = json_object(); /* node id -> state printed */
    int rc = 1;
    for (;;) {
        json_t *j = NULL;
        if (vg__cli_call_json("deploy", &quiet, "GET", "/v1/nodes", NULL, &j) >= 0)
            break;
        json_t *nodes = json_object_get(j, "nodes"), *n;
        size_t i, up = 0, live = 0, failed = 0;
        json_array_foreach(nodes, i, n)
        {
            if (!json_is_true(json_object_get(n, "up")))
                continue;
            up++;
            const char *id = json_string_value(json_object_get(n, "id")), *why = NULL;
            enum nstate st = node_state(n, app, version, &why);
            live += st == N_LIVE;
            failed += st == N_FAILED;
            const char *name = st == N_LIVE ? "live" : st == N_FAILED ? "refused" : "pending";
            if (!id || (st == N_PENDING))
                continue;
            if (!json_object_get(seen, id)) {
                if (!a->c.json)
                    printf("  %-20s %-12s %s%s%s\n", id, json_string_value(json_object_get(n, "location")), name,
                           why && st == N_FAILED ? ": " : "", why && st == N_FAILED ? why : "");
                json_object_set_new(seen, id, json_string(name));
            }
        }
        json_decref(j);
        if (failed) {
            fprintf(stderr, "verge deploy: %zu node(s) refused %s; they keep serving the previous version\n", failed,
                    app);
            break;
        }
        if (up && live == up) {
            rc = 0;
            break;
        }
        if (vg_now_ms() >= deadline) {
            fprintf(stderr, "verge deploy: %zu of %zu node(s) run the new version after --timeout\n", live, up);
            break;
        }
        usleep(WAIT_POLL_MS * 1000);
    }
    *out = seen;
    return rc;
}

/* ---- following a rollout ------------------------------------------------------------ */

static const char *jget_s(json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

/* "5xx 0.00% (before 0.00%), p99 0.9 ms (before 0.8 ms), 45 requests" */
static void gate_line(json_t *gate, char *buf, size_t cap)
{
    json_t *o = json_object_get(gate, "old"), *n = json_object_get(gate, "new");
    char np[32] = "-", op[32] = "-";
    if (json_is_number(json_object_get(n, "p99_ms")))
        snprintf(np, sizeof(np), "%.1f ms", json_number_value(json_object_get(n, "p99_ms")));
    if (json_is_number(json_object_get(o, "p99_ms")))
        snprintf(op, sizeof(op), "%.1f ms", json_number_value(json_object_get(o, "p99_ms")));
    snprintf(buf, cap, "5xx %.2f%% (before %.2f%%), p99 %s (before %s), %lld requests",
             json_number_value(json_object_get(n, "error_rate")) * 100,
             json_number_value(json_object_get(o, "error_rate")) * 100, np, op,
             (long long)json_integer_value(json_object_get(n, "requests")));
}

/* Prints what changed since the last look: steps starting, nodes going
 * live, steps passing or failing. seen remembers what was printed. */
static void progress(json_t *d, json_t *seen)
{
    json_t *steps = json_object_get(d, "steps"), *st, *nodes = json_object_get(d, "nodes"), *n;
    const char *version = jget_s(d, "version");
    size_t i, k;
    json_array_foreach(steps, i, st)
    {
        const char *name = jget_s(st, "name"), *state = jget_s(st, "state");
        if (!name || !state || strcmp(state, "pending") == 0)
            continue;
        char key[96];
        snprintf(key, sizeof(key), "%s/start", name);
        if (!json_object_get(seen, key)) {
            json_object_set_new(seen, key, json_true());
            json_t *fresh = json_object_get(st, "new_nodes");
            json_t *pct = json_object_get(st, "percent");
            char what[48] = "";
            if (json_is_integer(pct))
                snprintf(what, sizeof(what), "%lld%% of the nodes, ", (long long)json_integer_value(pct));
            printf("  %s: %s%zu node(s) in all%s", name, what, json_array_size(json_object_get(st, "nodes")),
                   json_array_size(fresh) ? ", new:" : "");
            json_array_foreach(fresh, k, n) printf(" %s", json_string_value(n));
            const char *note = jget_s(st, "note");
            printf("%s%s\n", note ? " — " : "", note ? note : "");
        }
        json_array_foreach(json_object_get(st, "nodes"), k, n)
        {
            const char *id = json_string_value(n);
            json_t *nv;
            size_t j;
            json_array_foreach(nodes, j, nv)
            {
                const char *nid = jget_s(nv, "id"), *lv = jget_s(nv, "live");
                if (!nid || !id || strcmp(nid, id) != 0 || !lv || !version || strcmp(lv, version) != 0)
                    continue;
                snprintf(key, sizeof(key), "node/%s", id);
                if (!json_object_get(seen, key)) {
                    json_object_set_new(seen, key, json_true());
                    printf("    %-20s live\n", id);
                }
            }
        }
        if (strcmp(state, "observing") == 0) {
            snprintf(key, sizeof(key), "%s/observe", name);
            if (!json_object_get(seen, key)) {
                json_object_set_new(seen, key, json_true());
                json_int_t w = json_integer_value(json_object_get(json_object_get(d, "settings"), "window_ms"));
                if (json_is_string(json_object_get(d, "previous_version")))
                    printf("  %s: live; gates observing for %lld ms\n", name, (long long)w);
            }
        }
        if (strcmp(state, "passed") == 0 || strcmp(state, "failed") == 0) {
            snprintf(key, sizeof(key), "%s/end", name);
            if (!json_object_get(seen, key)) {
                json_object_set_new(seen, key, json_true());
                char g[256] = "";
                json_t *gate = json_object_get(st, "gate");
                if (gate)
                    gate_line(gate, g, sizeof(g));
                printf("  %s: %s%s%s\n", name, strcmp(state, "passed") == 0 ? "passed" : "FAILED", *g ? " — " : "", g);
            }
        }
    }
    fflush(stdout);
}

/* Follows deployment id of app until it ends. Returns the exit status;
 * *out is the last deployment document. */
static int follow_rollout(const struct dargs *a, const char *app, long long id, json_t **out)
{
    struct vg__cli_client_args quiet = a->c;
    quiet.json = false;
    char *path = vg_xasprintf("/v1/apps/%s/deployments/%lld", app, id);
    uint64_t deadline = vg_now_ms() + a->timeout_ms;
    json_t *seen = json_object(), *d = NULL;
    int rc = 1;
    for (;;) {
        json_t *j = NULL;
        int r = vg__cli_call_json("deploy", &quiet, "GET", path, NULL, &j);
        if (r >= 0) {
            rc = r;
            break;
        }
        json_decref(d);
        d = j;
        if (!a->c.json)
            progress(d, seen);
        const char *state = jget_s(d, "state");
        if (state && strcmp(state, "done") == 0) {
            rc = 0;
            break;
        }
        if (state && strcmp(state, "rolling") != 0) {
            const char *reason = jget_s(d, "reason");
            fprintf(stderr, "verge deploy: %s %s: %s\n", app,
                    strcmp(state, "rolled_back") == 0 ? "rolled back to the previous version"
                    : strcmp(state, "failed") == 0    ? "failed"
                                                      : "superseded",
                    reason ? reason : "no reason recorded");
            break;
        }
        if (vg_now_ms() >= deadline) {
            fprintf(stderr,
                    "verge deploy: the rollout is still running after --timeout (step %lld); follow it with "
                    "GET %s\n",
                    (long long)json_integer_value(json_object_get(d, "step")), path);
            break;
        }
        usleep(WAIT_POLL_MS * 1000);
    }
    json_decref(seen);
    free(path);
    *out = d;
    return rc;
}

/* ---- verge deploy ------------------------------------------------------------------ */

static void deploy_usage(FILE *f)
{
    fprintf(f,
            "usage: verge deploy [DIR] [--wait] [--immediate] [--timeout DUR] [--control URL] [--token T] [--json]\n\n"
            "  DIR            the app directory (default: the current one); checked like `verge check`\n"
            "                 rolled out as its manifest's `rollout:` says: canary, waves, gates\n"
            "  --wait         follow the rollout per step and per node; exit 0 when done, 1 when rolled back\n"
            "  --immediate    no rollout: every node gets the version at once (cancels a rollout in progress)\n"
            "  --timeout DUR  give up waiting after DUR (default 10m for a rollout, 60s with --immediate)\n"
            "  --control URL  the control plane (default $VERGE_CONTROL, else http://127.0.0.1:7070)\n"
            "  --token T      a deploy-scoped API token (default $VERGE_TOKEN)\n"
            "  --json         one JSON document on stdout\n");
}

/* The app's name from its manifest, errors printed as file:line:col. */
static char *app_name(const char *dir)
{
    struct vg_conf_app *conf;
    struct vg_conf_error ce;
    if (vg_conf_app_load(dir, &conf, &ce) != 0) {
        char msg[1200];
        vg_conf_error_format(&ce, msg, sizeof(msg));
        fprintf(stderr, "%s\n", msg);
        return NULL;
    }
    char *name = vg_xstrdup(conf->name);
    vg_conf_app_destroy(conf);
    return name;
}

/* PUT /v1/apps/APP/desired; prints nothing. */
static int set_desired(const char *cmd, const struct dargs *a, const char *app, const char *version, json_t **out)
{
    struct vg__cli_client_args quiet = a->c;
    quiet.json = false;
    char *path = vg_xasprintf("/v1/apps/%s/desired", app);
    json_t *body = json_pack("{s:s}", "version", version);
    int rc = vg__cli_call_json(cmd, &quiet, "PUT", path, body, out);
    json_decref(body);
    free(path);
    return rc;
}

/* After the desired version is set: the human line or JSON, --wait. */
static int report(const char *cmd, const struct dargs *a, const char *app, const char *version, json_t *extra,
                  uint64_t t0)
{
    json_t *nodes = NULL;
    int rc = 0;
    if (!a->c.json)
        printf("%s: %s is now %.12s%s\n", cmd, app, version, a->wait ? "; waiting for the nodes" : "");
    if (a->wait)
        rc = follow(a, app, version, &nodes);
    uint64_t took = vg_now_ms() - t0;
    if (a->c.json) {
        json_t *j = json_pack("{s:s,s:s,s:I,s:o}", "app", app, "version", version, "ms", (json_int_t)took, "nodes",
                              nodes ? nodes : json_object());
        json_object_update(j, extra);
        json_dumpf(j, stdout, JSON_INDENT(2));
        printf("\n");
        json_decref(j);
    } else {
        json_decref(nodes);
        if (a->wait && rc == 0)
            printf("%s: every node runs %s@%.12s (%llu ms)\n", cmd, app, version, (unsigned long long)took);
    }
    return rc;
}

/* POST /v1/apps/APP/deployments and what follows it. */
static int rollout(const struct dargs *a, const char *app, const char *sha, json_t *extra, uint64_t t0)
{
    struct vg__cli_client_args quiet = a->c;
    quiet.json = false;
    char *path = vg_xasprintf("/v1/apps/%s/deployments", app);
    json_t *body = json_pack("{s:s}", "version", sha), *d = NULL;
    int rc = vg__cli_call_json("deploy", &quiet, "POST", path, body, &d);
    json_decref(body);
    free(path);
    if (rc >= 0)
        return rc;
    if (!json_is_true(json_object_get(d, "changed"))) {
        json_decref(d);
        /* the version everywhere already: --wait still waits for the nodes */
        return report("deploy", a, app, sha, extra, t0);
    }
    long long id = (long long)json_integer_value(json_object_get(d, "id"));
    rc = 0;
    if (!a->c.json) {
        size_t n = json_array_size(json_object_get(d, "steps"));
        printf("deploy: rolling out %s@%.12s (deployment %lld, %zu step%s)%s\n", app, sha, id, n, n == 1 ? "" : "s",
               a->wait ? "" : "; follow it with verge deploy --wait or GET /v1/apps/APP/deployments/ID");
    }
    if (a->wait) {
        json_decref(d);
        d = NULL;
        rc = follow_rollout(a, app, id, &d);
    }
    uint64_t took = vg_now_ms() - t0;
    if (a->c.json && d) {
        json_object_update(d, extra);
        json_object_set_new(d, "ms", json_integer((json_int_t)took));
        json_dumpf(d, stdout, JSON_INDENT(2));
        printf("\n");
    } else if (a->wait && rc == 0) {
        printf("deploy: every node runs %s@%.12s (%llu ms)\n", app, sha, (unsigned long long)took);
    }
    json_decref(d);
    return rc;
}

int vg_cli_deploy(int argc, char **argv)
{
    struct dargs a = {0};
    int rc = opts(argc, argv, &a, deploy_usage);
    if (rc >= 0)
        return rc;
    if (argc - optind > 1) {
        deploy_usage(stderr);
        return 2;
    }
    bool timeout_given = false;
    for (int i = 1; i < argc; i++)
        timeout_given |= strncmp(argv[i], "--timeout", 9) == 0;
    if (!a.immediate && !timeout_given)
        a.timeout_ms = 600000;
    const char *dir = optind < argc ? argv[optind] : ".";
    uint64_t t0 = vg_now_ms();
    char *app = app_name(dir);
    if (!app)
        return 1;
    struct vg__cli_control cc;
    uint8_t *bundle = NULL;
    size_t len = 0;
    char sha[65];
    json_t *ver = NULL, *des = NULL;
    int status;
    rc = 1;
    if (vg__cli_control_init(&cc, a.c.url, a.c.token, "deploy") != 0)
        rc = 2;
    else if (vg__cli_bundle_build(dir, &bundle, &len, sha) == 0 &&
             vg__cli_control_upload(&cc, app, bundle, len, &ver, &status) == 0) {
        json_t *extra =
            json_pack("{s:b,s:I}", "created", json_is_true(json_object_get(ver, "created")), "size", (json_int_t)len);
        if (!a.immediate) {
            rc = rollout(&a, app, sha, extra, t0);
        } else if (set_desired("deploy", &a, app, sha, &des) < 0) {
            json_object_set_new(extra, "changed", json_boolean(json_is_true(json_object_get(des, "changed"))));
            rc = report("deploy", &a, app, sha, extra, t0);
        }
        json_decref(extra);
    }
    json_decref(ver);
    json_decref(des);
    free(bundle);
    free(app);
    return rc;
}

/* ---- verge rollback ----------------------------------------------------------------- */

static void rollback_usage(FILE *f)
{
    fprintf(f, "usage: verge rollback [APP] [--to VERSION] [--wait] [--control URL] [--token T] [--json]\n\n"
               "  makes the version desired before the current one desired again, at once on every node\n"
               "  (no canary); during a rollout, the version it started from (the rollout is cancelled);\n"
               "  --to picks a version by id or unique prefix\n");
}

/* The version to go back to: --to (a unique prefix of a version id), else
 * the one desired before the current one (from the history). */
static char *rollback_target(const struct dargs *a, const char *app)
{
    struct vg__cli_client_args quiet = a->c;
    quiet.json = false;
    json_t *j = NULL, *e;
    size_t i;
    char *path, *found = NULL;
    if (a->to) {
        path = vg_xasprintf("/v1/apps/%s/versions", app);
        if (vg__cli_call_json("rollback", &quiet, "GET", path, NULL, &j) < 0) {
            json_array_foreach(json_object_get(j, "versions"), i, e)
            {
                const char *id = json_string_value(json_object_get(e, "id"));
                if (id && strncmp(id, a->to, strlen(a->to)) == 0) {
                    if (found) {
                        fprintf(stderr, "verge rollback: '%s' names more than one version\n", a->to);
                        free(found);
                        found = NULL;
                        break;
                    }
                    found = vg_xstrdup(id);
                }
            }
            if (!found && !json_array_size(json_object_get(j, "versions")))
                fprintf(stderr, "verge rollback: %s has no versions\n", app);
            else if (!found)
                fprintf(stderr, "verge rollback: no version of %s starts with '%s'\n", app, a->to);
        }
    } else {
        /* a rollout in progress: back to the version it started from */
        path = vg_xasprintf("/v1/apps/%s/deployments?limit=1", app);
        if (vg__cli_call_json("rollback", &quiet, "GET", path, NULL, &j) < 0) {
            json_t *d = json_array_get(json_object_get(j, "deployments"), 0);
            const char *st = json_string_value(json_object_get(d, "state"));
            const char *pv = json_string_value(json_object_get(d, "previous_version"));
            if (st && strcmp(st, "rolling") == 0 && pv)
                found = vg_xstrdup(pv);
        }
        json_decref(j);
        j = NULL;
        free(path);
        if (found)
            return found;
        path = vg_xasprintf("/v1/history?app=%s&limit=1000", app);
        const char *current = NULL;
        if (vg__cli_call_json("rollback", &quiet, "GET", path, NULL, &j) < 0) {
            json_array_foreach(json_object_get(j, "history"), i, e)
            {
                const char *act = json_string_value(json_object_get(e, "action"));
                const char *v = json_string_value(json_object_get(e, "subject"));
                if (!act || strcmp(act, "desired.set") != 0 || !v)
                    continue;
                if (!current)
                    current = v;
                else if (strcmp(v, current) != 0) {
                    found = vg_xstrdup(v);
                    break;
                }
            }
            if (!found)
                fprintf(stderr, "verge rollback: %s has no earlier deployed version\n", app);
        }
    }
    free(path);
    json_decref(j);
    return found;
}

int vg_cli_rollback(int argc, char **argv)
{
    struct dargs a = {0};
    int rc = opts(argc, argv, &a, rollback_usage);
    if (rc >= 0)
        return rc;
    if (argc - optind > 1) {
        rollback_usage(stderr);
        return 2;
    }
    /* without APP: the app of the manifest here, as `verge deploy` takes it */
    char *here = argc - optind == 1 ? NULL : app_name(".");
    if (argc - optind == 0 && !here)
        return 2;
    const char *app = here ? here : argv[optind];
    uint64_t t0 = vg_now_ms();
    char *target = rollback_target(&a, app);
    if (!target) {
        free(here);
        return 1;
    }
    json_t *des = NULL;
    rc = 1;
    if (set_desired("rollback", &a, app, target, &des) < 0) {
        json_t *extra = json_pack("{s:b}", "changed", json_is_true(json_object_get(des, "changed")));
        rc = report("rollback", &a, app, target, extra, t0);
        json_decref(extra);
    }
    json_decref(des);
    free(target);
    free(here);
    return rc;
}

/* ---- verge status ---------------------------------------------------------------------- */

static void status_usage(FILE *f)
{
    fprintf(f, "usage: verge status [--control URL] [--token T] [--json]\n\n"
               "  apps x nodes: the version each node runs, its health and whether it is up (GET /v1/nodes);\n"
               "  then per app, live: requests per second, p99 and 5xx rate over the last second or two, from\n"
               "  the figures `verge top` and the rollout gates read (GET /v1/top). --json: {nodes, top}\n");
}

static double fnum(json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    return json_is_number(v) ? json_number_value(v) : -1;
}

int vg_cli_status(int argc, char **argv)
{
    struct dargs a = {0};
    int rc = opts(argc, argv, &a, status_usage);
    if (rc >= 0)
        return rc;
    struct vg__cli_client_args q = a.c;
    q.json = false; /* both answers, printed together */
    json_t *j = NULL, *top = NULL;
    if ((rc = vg__cli_call_json("status", &q, "GET", "/v1/nodes", NULL, &j)) >= 0)
        return rc;
    if ((rc = vg__cli_call_json("status", &q, "GET", "/v1/top", NULL, &top)) >= 0) {
        json_decref(j);
        return rc;
    }
    if (a.c.json) {
        json_object_set(j, "top", top);
        char *text = json_dumps(j, JSON_COMPACT);
        printf("%s\n", text);
        free(text);
    } else {
        printf("%-20s %-12s %-4s %-16s %-14s %-7s\n", "NODE", "LOCATION", "UP", "APP", "VERSION", "HEALTH");
        json_t *n, *app;
        size_t i;
        const char *name;
        json_array_foreach(json_object_get(j, "nodes"), i, n)
        {
            const char *id = json_string_value(json_object_get(n, "id"));
            const char *loc = json_string_value(json_object_get(n, "location"));
            const char *up = json_is_true(json_object_get(n, "up")) ? "yes" : "no";
            json_t *apps = json_object_get(json_object_get(n, "report"), "apps");
            if (!json_object_size(apps))
                printf("%-20s %-12s %-4s %-16s %-14s %-7s\n", id, loc, up, "-", "-", "-");
            json_object_foreach(apps, name, app)
            {
                const char *v = json_string_value(json_object_get(app, "version"));
                const char *h = json_string_value(json_object_get(app, "health"));
                printf("%-20s %-12s %-4s %-16s %-14.12s %-7s\n", id, loc, up, name, v && *v ? v : "-", h ? h : "-");
            }
        }
        printf("\n%-20s %5s %-24s %10s %8s %7s\n", "APP", "NODES", "LOCATIONS", "RPS", "P99 ms", "5XX%");
        json_array_foreach(json_object_get(top, "apps"), i, app)
        {
            char locs[128] = "", p99[16] = "-";
            size_t k;
            json_t *l;
            json_array_foreach(json_object_get(app, "locations"), k, l)
            {
                size_t o = strlen(locs);
                snprintf(locs + o, sizeof(locs) - o, "%s%s", o ? "," : "", json_string_value(l));
            }
            if (fnum(app, "p99_ms") >= 0)
                snprintf(p99, sizeof(p99), "%.2f", fnum(app, "p99_ms"));
            const char *an = json_string_value(json_object_get(app, "app"));
            printf("%-20s %5lld %-24.24s %10.1f %8s %7.2f\n", an ? an : "-", (long long)fnum(app, "nodes"), locs,
                   fnum(app, "rps"), p99, fnum(app, "error_pct"));
        }
    }
    json_decref(top);
    json_decref(j);
    return 0;
}
