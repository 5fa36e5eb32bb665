/* verge init NAME: scaffolds a working app in the new directory NAME — a
 * manifest, a Lua handler, a static page and a test that passes under
 * `verge test` — and prints the commands that come next. The app's name
 * is the directory's last component, so it must be a valid app name. An
 * existing directory is used only when it is empty: nothing is ever
 * overwritten. */
#include "base/base.h"
#include "cli.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* %1$s is the app's name. */
static const char manifest[] = "# %1$s: a verge app (schema: docs/manifest.md).\n"
                               "#   verge dev       run it locally, redeployed on every save\n"
                               "#   verge test      run test/*.lua against a local node\n"
                               "name: %1$s\n"
                               "routes:\n"
                               "  - exact: /hello\n"
                               "    handler: edge.lua:hello\n"
                               "  - path: /\n"
                               "    static: public\n";

static const char handler[] = "-- Request handlers (docs/lua-api.md). A handler gets the request and\n"
                              "-- returns the response; verge.log writes to the node's log.\n"
                              "\n"
                              "function hello(req)\n"
                              "  local who = req.query.name or \"world\"\n"
                              "  return {\n"
                              "    status = 200,\n"
                              "    headers = {[\"content-type\"] = \"text/plain\"},\n"
                              "    body = \"hello, \" .. who .. \"\\n\",\n"
                              "  }\n"
                              "end\n";

static const char page[] = "<!doctype html>\n"
                           "<html>\n"
                           "<head><meta charset=\"utf-8\"><title>%1$s</title></head>\n"
                           "<body>\n"
                           "<h1>%1$s</h1>\n"
                           "<p>Served from the edge by verge. Try <a href=\"/hello?name=edge\">/hello</a>.</p>\n"
                           "</body>\n"
                           "</html>\n";

static const char test[] = "-- `verge test` runs this file against a real local node (docs/lua-api.md).\n"
                           "local T = verge.test\n"
                           "\n"
                           "test(\"hello greets by name\", function()\n"
                           "  local r = T.request{path = \"/hello?name=verge\"}\n"
                           "  T.eq(r.status, 200)\n"
                           "  T.eq(r.body, \"hello, verge\\n\")\n"
                           "end)\n"
                           "\n"
                           "test(\"hello has a default\", function()\n"
                           "  T.eq(T.request{path = \"/hello\"}.body, \"hello, world\\n\")\n"
                           "end)\n"
                           "\n"
                           "test(\"the home page is static\", function()\n"
                           "  local r = T.request{path = \"/\"}\n"
                           "  T.eq(r.status, 200)\n"
                           "  T.contains(r.body, \"<h1>%1$s</h1>\")\n"
                           "end)\n";

static void init_usage(FILE *f)
{
    fprintf(f, "usage: verge init NAME\n\n"
               "Creates the directory NAME with a working app: verge.yaml, edge.lua (a handler),\n"
               "public/index.html (a static page) and test/hello.lua (passes under `verge test`).\n"
               "The app is named after the directory: lowercase letters, digits and '-', 1 to 63.\n");
}

/* An app name as the manifest takes it. */
static bool valid_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 63 || s[0] == '-')
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-'))
            return false;
    return true;
}

static bool dir_empty(const char *path)
{
    DIR *d = opendir(path);
    if (!d)
        return false;
    struct dirent *e;
    bool empty = true;
    while (empty && (e = readdir(d)) != NULL)
        empty = strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0;
    closedir(d);
    return empty;
}

/* Creates dir/rel (which must not exist) from fmt with the app's name. */
static int put(const char *dir, const char *rel, const char *fmt, const char *name)
{
    char *path = vg_xasprintf("%s/%s", dir, rel);
    int rc = VG_EIO;
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd >= 0) {
        int n = dprintf(fd, fmt, name);
        rc = close(fd) == 0 && n > 0 ? 0 : VG_EIO;
    }
    if (rc)
        fprintf(stderr, "verge init: cannot write %s: %s\n", path, strerror(errno));
    free(path);
    return rc;
}

static int make_dir(const char *dir, const char *rel)
{
    char *path = rel ? vg_xasprintf("%s/%s", dir, rel) : vg_xstrdup(dir);
    int rc = mkdir(path, 0755) == 0 ? 0 : VG_EIO;
    if (rc)
        fprintf(stderr, "verge init: cannot create %s: %s\n", path, strerror(errno));
    free(path);
    return rc;
}

int vg_cli_init(int argc, char **argv)
{
    static const struct option longopts[] = {{"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        if (c == 'h') {
            init_usage(stdout);
            return 0;
        }
        init_usage(stderr);
        return 2;
    }
    if (argc - optind != 1) {
        init_usage(stderr);
        return 2;
    }
    char *dir = vg_xstrdup(argv[optind]);
    size_t n = strlen(dir);
    while (n > 1 && dir[n - 1] == '/')
        dir[--n] = '\0';
    const char *slash = strrchr(dir, '/');
    const char *name = slash ? slash + 1 : dir;
    int rc = 1;
    struct stat st;
    bool exists = stat(dir, &st) == 0;
    if (!valid_name(name)) {
        fprintf(stderr,
                "verge init: '%s' is not an app name: lowercase letters, digits and '-', 1 to 63, not starting "
                "with '-'\n",
                name);
        rc = 2;
    } else if (exists && !(S_ISDIR(st.st_mode) && dir_empty(dir))) {
        fprintf(stderr, "verge init: %s already exists and is not an empty directory; nothing was changed\n", dir);
    } else if ((!exists && make_dir(dir, NULL) != 0) || make_dir(dir, "public") != 0 || make_dir(dir, "test") != 0 ||
               put(dir, "verge.yaml", manifest, name) != 0 || put(dir, "edge.lua", handler, name) != 0 ||
               put(dir, "public/index.html", page, name) != 0 || put(dir, "test/hello.lua", test, name) != 0) {
        /* the reason is printed; what was created stays for a look */
    } else {
        printf("created %s/: verge.yaml, edge.lua, public/index.html, test/hello.lua\n\n"
               "next:\n"
               "  cd %s\n"
               "  verge dev       # run it on a local edge: control plane + nodes, redeployed on save\n"
               "  verge test      # run test/*.lua against a local node\n"
               "  verge deploy    # ship it to your nodes (--control URL --token T)\n",
               dir, dir);
        rc = 0;
    }
    free(dir);
    return rc;
}
