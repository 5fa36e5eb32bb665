/* verge deploy, verge rollback, verge status: the developer's side of the
 * control plane. A deploy bundles the app directory, uploads it as a
 * version and makes it the app's desired version; with --wait it then
 * follows the nodes' reports until every node that is up runs it (or one
 * refuses it). Rollouts in waves and gates come later (issue 5). */
#include "cli.h"
#include "cli_int.h"
#include "conf/conf.h"

#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define WAIT_POLL_MS 100

struct dargs {
    struct vg__cli_client_args c;
    bool wait;
    uint64_t timeout_ms;
    const char *to;
};

static int opts(int argc, char **argv, struct dargs *a, void (*usage)(FILE *))
{
    static const struct option longopts[] = {
        {"control", required_argument, NULL, 'c'}, {"token", required_argument, NULL, 'T'},
        {"json", no_argument, NULL, 'j'},          {"wait", no_argument, NULL, 'w'},
        {"timeout", required_argument, NULL, 't'}, {"to", required_argument, NULL, 'o'},
        {"help", no_argument, NULL, 'h'},          {NULL, 0, NULL, 0},
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

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
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
    uint64_t deadline = now_ms() + a->timeout_ms;
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
        if (now_ms() >= deadline) {
            fprintf(stderr, "verge deploy: %zu of %zu node(s) run the new version after --timeout\n", live, up);
            break;
        }
        usleep(WAIT_POLL_MS * 1000);
    }
    *out = seen;
    return rc;
}

/* ---- verge deploy ------------------------------------------------------------------ */

static void deploy_usage(FILE *f)
{
    fprintf(f, "usage: verge deploy [DIR] [--wait] [--timeout DUR] [--control URL] [--token T] [--json]\n\n"
               "  DIR            the app directory (default: the current one); checked like `verge check`\n"
               "  --wait         follow the nodes until every node that is up runs the new version\n"
               "  --timeout DUR  give up waiting after DUR (default 60s)\n"
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
    uint64_t took = now_ms() - t0;
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
    const char *dir = optind < argc ? argv[optind] : ".";
    uint64_t t0 = now_ms();
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
             vg__cli_control_upload(&cc, app, bundle, len, &ver, &status) == 0 &&
             set_desired("deploy", &a, app, sha, &des) < 0) {
        json_t *extra = json_pack("{s:b,s:b,s:I}", "created", json_is_true(json_object_get(ver, "created")), "changed",
                                  json_is_true(json_object_get(des, "changed")), "size", (json_int_t)len);
        rc = report("deploy", &a, app, sha, extra, t0);
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
    fprintf(f, "usage: verge rollback APP [--to VERSION] [--wait] [--control URL] [--token T] [--json]\n\n"
               "  makes the version desired before the current one desired again, at once on every node\n"
               "  (no canary); --to picks a version by id or unique prefix\n");
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
    if (argc - optind != 1) {
        rollback_usage(stderr);
        return 2;
    }
    const char *app = argv[optind];
    uint64_t t0 = now_ms();
    char *target = rollback_target(&a, app);
    if (!target)
        return 1;
    json_t *des = NULL;
    rc = 1;
    if (set_desired("rollback", &a, app, target, &des) < 0) {
        json_t *extra = json_pack("{s:b}", "changed", json_is_true(json_object_get(des, "changed")));
        rc = report("rollback", &a, app, target, extra, t0);
        json_decref(extra);
    }
    json_decref(des);
    free(target);
    return rc;
}

/* ---- verge status ---------------------------------------------------------------------- */

static void status_usage(FILE *f)
{
    fprintf(f, "usage: verge status [--control URL] [--token T] [--json]\n\n"
               "  apps x nodes: the version each node runs, its health, and whether it is up\n");
}

int vg_cli_status(int argc, char **argv)
{
    struct dargs a = {0};
    int rc = opts(argc, argv, &a, status_usage);
    if (rc >= 0)
        return rc;
    json_t *j = NULL;
    if ((rc = vg__cli_call_json("status", &a.c, "GET", "/v1/nodes", NULL, &j)) >= 0)
        return rc;
    if (!a.c.json) {
        printf("%-20s %-12s %-4s %-16s %-14s %s\n", "NODE", "LOCATION", "UP", "APP", "VERSION", "HEALTH");
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
                printf("%-20s %-12s %-4s %-16s %-14s %s\n", id, loc, up, "-", "-", "-");
            json_object_foreach(apps, name, app)
            {
                const char *v = json_string_value(json_object_get(app, "version"));
                const char *h = json_string_value(json_object_get(app, "health"));
                printf("%-20s %-12s %-4s %-16s %-14.12s %s\n", id, loc, up, name, v && *v ? v : "-", h ? h : "-");
            }
        }
    }
    json_decref(j);
    return 0;
}
