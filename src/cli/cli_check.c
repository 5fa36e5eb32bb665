/* verge check DIR...: validate manifests; errors as file:line:col. */
#include "cli.h"
#include "conf/conf.h"
#include "fn/fn.h"

#include <jansson.h>
#include <string.h>
#include <unistd.h>

int vg_cli_check(int argc, char **argv)
{
    bool json = false;
    int n_dirs = 0, failed = 0;
    json_t *out = json_array();
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0) {
            json = true;
            continue;
        }
        if (strcmp(argv[i], "--help") == 0) {
            printf("usage: verge check [--json] [DIR...]\n  validates DIR/verge.yaml (default: ./verge.yaml); exits 1 "
                   "on the first error "
                   "in any app, printing file:line:col: message\n");
            json_decref(out);
            return 0;
        }
    }
    const char *here[] = {"verge", "."};
    bool default_dir = true;
    for (int i = 1; i < argc; i++)
        if (argv[i][0] != '-')
            default_dir = false;
    if (default_dir && access("verge.yaml", F_OK) == 0) { /* no DIR: the app in this directory */
        argc = 2;
        argv = (char **)here;
    }
    for (int i = 1; i < argc; i++) {
        if (argv[i][0] == '-')
            continue;
        n_dirs++;
        struct vg_conf_app *app = NULL;
        struct vg_conf_error err;
        int rc = vg_conf_app_load(argv[i], &app, &err);
        if (rc == 0 && (rc = vg_fn_check(app, &err)) != 0) { /* Lua files must load too */
            vg_conf_app_destroy(app);
            app = NULL;
        }
        if (rc != 0) {
            char msg[1200];
            vg_conf_error_format(&err, msg, sizeof(msg));
            failed++;
            if (json)
                json_array_append_new(out, json_pack("{s:s,s:b,s:s,s:i,s:i,s:s}", "dir", argv[i], "ok", 0, "file",
                                                     err.file, "line", err.line, "col", err.col, "message", err.msg));
            else
                fprintf(stderr, "%s\n", msg);
            continue;
        }
        if (json)
            json_array_append_new(out, json_pack("{s:s,s:b,s:s,s:i,s:i}", "dir", argv[i], "ok", 1, "app", app->name,
                                                 "routes", (int)app->n_routes, "origins", (int)app->n_origins));
        else
            printf("%s: ok (app %s, %zu routes, %zu origins)\n", app->manifest_path, app->name, app->n_routes,
                   app->n_origins);
        vg_conf_app_destroy(app);
    }
    if (n_dirs == 0) {
        fprintf(stderr, "usage: verge check [--json] [DIR...] (no verge.yaml in the current directory)\n");
        json_decref(out);
        return 2;
    }
    if (json) {
        char *s = json_dumps(out, JSON_INDENT(2));
        printf("%s\n", s);
        free(s);
    }
    json_decref(out);
    return failed ? 1 : 0;
}
