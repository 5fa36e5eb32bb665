/* verge placement: where the scheduler runs an app and why.
 *
 *   verge placement APP                   the app's locations, their nodes,
 *                                         the demand and every decision
 *   verge placement explain APP LOCATION  the decision about one location
 *   verge placement plan DIR              a dry run of DIR's `placement:`
 *                                         against the live demand: what
 *                                         would move, and why
 *
 * All three ask the control plane (GET /v1/apps/APP/placement, POST
 * /v1/apps/APP/placement/plan); --json prints its answer as is. */
#include "cli.h"
#include "cli_int.h"
#include "conf/conf.h"
#include "control/control.h"

#include <getopt.h> /* optind */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f)
{
    fprintf(f, "usage: verge placement APP [options]\n"
               "       verge placement explain APP LOCATION [options]\n"
               "       verge placement plan DIR [options]\n\n"
               "  --control URL   the control plane (default $VERGE_CONTROL, else the running `verge dev`'s,\n"
               "                  else http://127.0.0.1:7070)\n"
               "  --token T       an API token with read scope (default $VERGE_TOKEN)\n"
               "  --json          print the control plane's answer as JSON\n");
}

static const char *jstr(json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "";
}

/* "n1 (live), n2 (down)" for a location's nodes. */
static void nodes_line(json_t *nodes, const char *version, char *buf, size_t cap)
{
    size_t at = 0, i;
    json_t *n;
    buf[0] = '\0';
    json_array_foreach(nodes, i, n)
    {
        const char *v = jstr(n, "version");
        const char *st = !json_is_true(json_object_get(n, "up")) ? "down"
                         : strcmp(v, version) == 0               ? "live"
                                                                 : "starting";
        if (at < cap)
            at += (size_t)snprintf(buf + at, cap - at, "%s%s (%s)", i ? ", " : "", jstr(n, "id"), st);
    }
    if (!buf[0])
        snprintf(buf, cap, "no node");
}

#define SHOWN_PER_REASON 3
#define REASONS_MAX 32

/* The engine's explanation with the rejected candidates grouped by what
 * was said about them: SHOWN_PER_REASON of each, then a count (64 bundled
 * locations without a node would otherwise fill the screen). */
static void print_text(const char *text)
{
    const char *key[REASONS_MAX];
    size_t key_len[REASONS_MAX], count[REASONS_MAX], n_keys = 0;
    printf("\n");
    for (const char *s = text; s && *s;) {
        const char *e = strchr(s, '\n');
        size_t len = e ? (size_t)(e - s) : strlen(s);
        const char *r = len > 4 && strncmp(s, "  - ", 4) == 0 ? memmem(s, len, ": ", 2) : NULL;
        size_t k = 0;
        if (r) {
            size_t rl = len - (size_t)(r - s);
            while (k < n_keys && (key_len[k] != rl || memcmp(key[k], r, rl) != 0))
                k++;
            if (k == n_keys && n_keys < REASONS_MAX) {
                key[n_keys] = r;
                key_len[n_keys] = rl;
                count[n_keys++] = 0;
            }
        }
        if (!r || k == n_keys || count[k]++ < SHOWN_PER_REASON)
            printf("%.*s\n", (int)len, s);
        s = e ? e + 1 : NULL;
    }
    for (size_t k = 0; k < n_keys; k++)
        if (count[k] > SHOWN_PER_REASON)
            printf("  - (%zu more rejected%.*s)\n", count[k] - SHOWN_PER_REASON, (int)key_len[k], key[k]);
}

static void print_placement(json_t *j)
{
    if (json_is_true(json_object_get(j, "everywhere"))) {
        printf("%s: every location (%s)\n", jstr(j, "app"), jstr(j, "note"));
        return;
    }
    const char *version = jstr(j, "version");
    printf("%s (version %.12s): placement changed %s, last run %s (every %lld ms)\n", jstr(j, "app"), version,
           jstr(j, "changed_at"), jstr(j, "last_run_at"),
           (long long)json_integer_value(json_object_get(j, "interval_ms")));
    if (json_is_string(json_object_get(j, "error")))
        printf("refused: %s\n", jstr(j, "error"));
    printf("\n%-10s %-18s %-3s %-4s %-9s %s\n", "LOCATION", "CITY", "CC", "REG", "STATE", "NODES");
    size_t i;
    json_t *l;
    json_array_foreach(json_object_get(j, "locations"), i, l)
    {
        char nodes[512];
        nodes_line(json_object_get(l, "nodes"), version, nodes, sizeof(nodes));
        printf("%-10s %-18.18s %-3s %-4s %-9s %s\n", jstr(l, "id"), jstr(l, "city"), jstr(l, "country"),
               jstr(l, "region"), jstr(l, "state"), nodes);
    }
    json_t *d = json_object_get(j, "demand_rps"), *v;
    const char *area;
    if (json_object_size(d)) {
        printf("\ndemand by client area:");
        json_object_foreach(d, area, v) printf(" %s %.1f rps", area, json_number_value(v));
        printf("\n");
    }
    if (json_is_string(json_object_get(j, "text")))
        print_text(jstr(j, "text"));
}

/* The engine's text lines about loc ("  + fra ..." / "  - fra ..."). */
static bool print_lines_of(const char *text, const char *loc)
{
    bool any = false;
    size_t n = strlen(loc);
    for (const char *s = text; s && *s;) {
        const char *e = strchr(s, '\n');
        size_t len = e ? (size_t)(e - s) : strlen(s);
        if (len > n + 4 && (s[2] == '+' || s[2] == '-') && strncmp(s + 4, loc, n) == 0 && s[4 + n] == ' ') {
            printf("%.*s\n", (int)len, s + 2);
            any = true;
        }
        s = e ? e + 1 : NULL;
    }
    return any;
}

static int cmd_show(struct vg__cli_client_args *a, const char *app, const char *loc)
{
    char path[160];
    snprintf(path, sizeof(path), "/v1/apps/%s/placement", app);
    json_t *j = NULL;
    int rc = vg__cli_call_json("placement", a, "GET", path, NULL, &j);
    if (rc >= 0)
        return rc;
    rc = 0;
    if (!a->json && !loc) {
        print_placement(j);
    } else if (!a->json) {
        if (json_is_true(json_object_get(j, "everywhere"))) {
            printf("%s runs at every location: its desired version has no placement section\n", app);
        } else if (!print_lines_of(jstr(j, "text"), loc)) {
            printf("%s: %s was not a candidate (no demand from the client areas near it, and it was not needed "
                   "for the minimum)\n",
                   app, loc);
        }
    }
    json_decref(j);
    return rc;
}

static void print_list(const char *what, json_t *a)
{
    size_t i;
    json_t *v;
    printf("%s", what);
    if (!json_array_size(a))
        printf(" -");
    json_array_foreach(a, i, v) printf(" %s", json_string_value(v));
    printf("\n");
}

static int cmd_plan(struct vg__cli_client_args *a, const char *dir)
{
    struct vg_conf_app *conf;
    struct vg_conf_error ce;
    if (vg_conf_app_load(dir, &conf, &ce) != 0) {
        char msg[1200];
        vg_conf_error_format(&ce, msg, sizeof(msg));
        fprintf(stderr, "%s\n", msg);
        return 1;
    }
    json_t *policy = vg_control_placement_json(&conf->placement);
    char path[160];
    snprintf(path, sizeof(path), "/v1/apps/%s/placement/plan", conf->name);
    vg_conf_app_destroy(conf);
    if (!policy) {
        printf("%s has no placement section: it would run at every location\n", dir);
        return 0;
    }
    json_t *j = NULL, *body = json_pack("{s:o}", "placement", policy);
    int rc = vg__cli_call_json("placement", a, "POST", path, body, &j);
    json_decref(body);
    if (rc >= 0)
        return rc;
    if (!a->json) {
        printf("%s: a dry run of %s/verge.yaml against the current demand (nothing is deployed)\n", jstr(j, "app"),
               dir);
        print_list("  would run at:", json_object_get(j, "locations"));
        print_list("  added:       ", json_object_get(j, "added"));
        print_list("  removed:     ", json_object_get(j, "removed"));
        json_t *v;
        const char *other;
        json_object_foreach(json_object_get(j, "others"), other, v)
        {
            printf("  other app %s would move:", other);
            print_list(" added", json_object_get(v, "added"));
            print_list("    removed", json_object_get(v, "removed"));
        }
        if (json_is_string(json_object_get(j, "error")))
            printf("  refused: %s\n", jstr(j, "error"));
        if (json_is_string(json_object_get(j, "text")))
            print_text(jstr(j, "text"));
    }
    json_decref(j);
    return 0;
}

int vg_cli_placement(int argc, char **argv)
{
    struct vg__cli_client_args a = {0};
    int rc = vg__cli_client_opts(argc, argv, &a, usage);
    if (rc >= 0)
        return rc;
    if (a.scope || a.out || a.expires) {
        usage(stderr);
        return 2;
    }
    rc = 2;
    int n = argc - optind;
    char **arg = argv + optind;
    /* next to a running `verge dev`: its control plane, with its read token */
    json_t *session = !a.url && !getenv("VERGE_CONTROL") ? vg__cli_dev_session() : NULL;
    if (session && json_string_value(json_object_get(session, "control_token"))) {
        a.url = json_string_value(json_object_get(session, "control"));
        if (!a.token)
            a.token = json_string_value(json_object_get(session, "control_token"));
    }
    if (n == 3 && strcmp(arg[0], "explain") == 0)
        rc = cmd_show(&a, arg[1], arg[2]);
    else if (n == 2 && strcmp(arg[0], "plan") == 0)
        rc = cmd_plan(&a, arg[1]);
    else if (n == 1 && strcmp(arg[0], "explain") != 0 && strcmp(arg[0], "plan") != 0)
        rc = cmd_show(&a, arg[0], NULL);
    else
        usage(stderr);
    json_decref(session);
    return rc;
}
