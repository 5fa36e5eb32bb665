/* verge control (the control plane server) and the commands that talk to
 * it: verge versions, verge token create|list|revoke, verge bundle. The
 * client side goes through vg__cli_control_call (cli_int.h), which
 * `verge deploy` will use too (vg__cli_control_upload). */
#include "base/base.h"
#include "cli.h"
#include "cli_int.h"
#include "control/control.h"
#include "sched/sched.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ==== the server ========================================================== */

static void control_usage(FILE *f)
{
    fprintf(f, "usage: verge control --data DIR [options]\n\n"
               "  --listen ADDR             host:port of the API (default 127.0.0.1:7070)\n"
               "  --data DIR                state: control.db (SQLite), bundles/, admin.token\n"
               "  --bootstrap-token-file F  the first admin token's secret (else $VERGE_CONTROL_TOKEN, else a new\n"
               "                            one written to DIR/admin.token); used only while no token exists\n"
               "  --max-bundle SIZE         largest bundle upload (default 64m; 413 above)\n"
               "  --max-unpacked SIZE       largest unpacked bundle (default 256m)\n"
               "  --max-files N             most files and directories in a bundle (default 10000)\n"
               "  --node-timeout DUR        a node is up if heard from within DUR (default 15s)\n"
               "  --place-interval DUR      placement runs from the nodes' demand this often (default 10s; 0: only\n"
               "                            on deploys and new nodes); scale-in windows count in these runs\n"
               "  --place-drain DUR         a location placement drops serves at most DUR more while the new ones\n"
               "                            come up (default 30s)\n"
               "  --place-threads N         threads a placement run uses (default: the CPUs, at most 4); the plan\n"
               "                            is the same with any number\n"
               "  --place-sites DEG         dynamic placement runs an app at one location per site, the locations\n"
               "                            of one DEG-degree grid cell in one country and region (default 1; 0:\n"
               "                            every location its own site; an app's min still counts locations)\n"
               "  --nats URL                the nodes' bus (repeatable for a cluster): their live figures arrive\n"
               "                            on it every second (GET /v1/top); without it, with their heartbeats\n"
               "  --log-level L             debug|info|warn|error (default info)\n"
               "  --log-format F            json|text (default json)\n\n"
               "The API is documented in docs/api.md. SIGTERM/SIGINT stop it.\n");
}

int vg_cli_control(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"listen", required_argument, NULL, 'l'},
        {"data", required_argument, NULL, 'd'},
        {"bootstrap-token-file", required_argument, NULL, 'b'},
        {"max-bundle", required_argument, NULL, 'm'},
        {"max-unpacked", required_argument, NULL, 'u'},
        {"max-files", required_argument, NULL, 'f'},
        {"node-timeout", required_argument, NULL, 't'},
        {"place-interval", required_argument, NULL, 'i'},
        {"place-drain", required_argument, NULL, 'r'},
        {"place-threads", required_argument, NULL, 'P'},
        {"place-sites", required_argument, NULL, 'S'},
        {"nats", required_argument, NULL, 'n'},
        {"log-level", required_argument, NULL, 'L'},
        {"log-format", required_argument, NULL, 'F'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct vg_control_options o;
    vg_control_options_default(&o);
    static const char *nats[16]; /* as many servers as a cluster has */
    o.bootstrap_token = getenv("VERGE_CONTROL_TOKEN");
    int c;
    uint64_t v;
    static const char *const levels[] = {"debug", "info", "warn", "error"};
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case 'l':
            o.listen = optarg;
            break;
        case 'd':
            o.data_dir = optarg;
            break;
        case 'b':
            o.bootstrap_token_file = optarg;
            break;
        case 'm':
        case 'u':
            if (vg_parse_size(optarg, &v) != 0 || v == 0) {
                fprintf(stderr, "verge control: --%s takes a size (64m, 1g): %s\n",
                        c == 'm' ? "max-bundle" : "max-unpacked", optarg);
                return 2;
            }
            if (c == 'm')
                o.bundle.max_bytes = v;
            else
                o.bundle.max_unpacked = v;
            break;
        case 'f':
            if (vg_parse_count(optarg, 1, UINT64_MAX, &v) != 0) {
                fprintf(stderr, "verge control: --max-files takes a number: %s\n", optarg);
                return 2;
            }
            o.bundle.max_entries = v;
            break;
        case 't':
            if (vg_parse_duration_ms(optarg, &v) != 0 || v == 0) {
                fprintf(stderr, "verge control: --node-timeout takes a duration (15s): %s\n", optarg);
                return 2;
            }
            o.node_timeout_ms = v;
            break;
        case 'i':
        case 'r':
            if (vg_parse_duration_ms(optarg, &v) != 0 || (c == 'i' && v && v < 100)) {
                fprintf(stderr, "verge control: --%s takes a duration (10s; at least 100ms): %s\n",
                        c == 'i' ? "place-interval" : "place-drain", optarg);
                return 2;
            }
            if (c == 'i')
                o.place_interval_ms = v;
            else
                o.place_drain_ms = v;
            break;
        case 'P':
            if (vg_parse_count(optarg, 1, 64, &v) != 0) {
                fprintf(stderr, "verge control: --place-threads takes a number from 1 to 64: %s\n", optarg);
                return 2;
            }
            o.place_threads = (unsigned)v;
            break;
        case 'S':
            if (vg_sched_parse_site_deg(optarg, &o.place_site_deg) != 0) {
                fprintf(stderr, "verge control: --place-sites takes 0 or a number from 0.01 to 10: %s\n", optarg);
                return 2;
            }
            break;
        case 'n':
            if (o.n_nats_urls == VG_ARRAY_LEN(nats)) {
                fprintf(stderr, "verge control: at most %zu --nats URLs\n", VG_ARRAY_LEN(nats));
                return 2;
            }
            nats[o.n_nats_urls++] = optarg;
            o.nats_urls = nats;
            break;
        case 'L': {
            size_t i = 0;
            while (i < VG_ARRAY_LEN(levels) && strcmp(levels[i], optarg) != 0)
                i++;
            if (i == VG_ARRAY_LEN(levels)) {
                fprintf(stderr, "verge control: --log-level takes debug, info, warn or error: %s\n", optarg);
                return 2;
            }
            vg_log_set_level((enum vg_log_level)i);
            break;
        }
        case 'F':
            if (strcmp(optarg, "json") != 0 && strcmp(optarg, "text") != 0) {
                fprintf(stderr, "verge control: --log-format takes json or text: %s\n", optarg);
                return 2;
            }
            vg_log_set_json(strcmp(optarg, "json") == 0);
            break;
        case 'h':
            control_usage(stdout);
            return 0;
        default:
            control_usage(stderr);
            return 2;
        }
    }
    if (optind != argc || !o.data_dir) {
        fprintf(stderr, "verge control: %s\n", o.data_dir ? "unexpected arguments" : "--data DIR is required");
        control_usage(stderr);
        return 2;
    }
    return vg_control_run(&o);
}

/* ==== the client ========================================================== */

int vg__cli_control_init(struct vg__cli_control *cc, const char *url, const char *token, const char *cmd)
{
    if (!url)
        url = getenv("VERGE_CONTROL");
    if (!url)
        url = "http://127.0.0.1:7070";
    if (!token)
        token = getenv("VERGE_TOKEN");
    cc->url = url;
    cc->token = token;
    if (!vg__cli_url_addr(url, cc->host, &cc->port)) {
        fprintf(stderr, "verge %s: --control is http://ADDRESS:PORT: %s\n", cmd, url);
        return 2;
    }
    if (!token || !*token) {
        fprintf(stderr, "verge %s: no API token (--token T or $VERGE_TOKEN)\n", cmd);
        return 2;
    }
    return 0;
}

const char *vg__cli_control_call(const struct vg__cli_control *cc, const char *method, const char *path,
                                 const char *ctype, const void *body, size_t len, struct vg__cli_response *r,
                                 json_t **json)
{
    char *head = vg_xasprintf("%s %s HTTP/1.1\r\nHost: %s:%u\r\nAuthorization: Bearer %s\r\n"
                              "%s%s%sContent-Length: %zu\r\nConnection: close\r\n\r\n",
                              method, path, cc->host, cc->port, cc->token, ctype ? "Content-Type: " : "",
                              ctype ? ctype : "", ctype ? "\r\n" : "", len);
    int fd = vg__cli_dial(cc->host, cc->port);
    const char *err = fd < 0                                      ? "cannot connect to the control plane"
                      : !vg__cli_send_all(fd, head, strlen(head)) ? "cannot send the request"
                      : (len && !vg__cli_send_all(fd, body, len)) ? "cannot send the request body"
                                                                  : vg__cli_read_response(fd, r);
    if (fd >= 0)
        close(fd);
    free(head);
    if (!err && json)
        *json = json_loadb(r->body, r->body_len, 0, NULL);
    return err;
}

/* The error of a non-2xx answer, for stderr. */
static void print_api_error(const char *cmd, const struct vg__cli_response *r, json_t *j)
{
    const char *why = json_string_value(json_object_get(j, "error"));
    fprintf(stderr, "verge %s: the control plane answered %d: %s\n", cmd, r->status, why ? why : "(no reason given)");
    json_t *errs = json_object_get(j, "errors");
    size_t i;
    json_t *e;
    json_array_foreach(errs, i, e)
    {
        const char *t = json_string_value(json_object_get(e, "text"));
        if (t)
            fprintf(stderr, "%s\n", t);
    }
}

int vg__cli_control_upload(const struct vg__cli_control *cc, const char *app, const uint8_t *bundle, size_t len,
                           json_t **version, int *status)
{
    char *path = vg_xasprintf("/v1/apps/%s/versions", app);
    struct vg__cli_response r = {0};
    json_t *j = NULL;
    const char *err = vg__cli_control_call(cc, "POST", path, "application/gzip", bundle, len, &r, &j);
    free(path);
    int rc = 0;
    *status = err ? 0 : r.status;
    if (err) {
        fprintf(stderr, "verge: %s: %s\n", cc->url, err);
        rc = VG_ENET;
    } else if (r.status != 200 && r.status != 201) {
        print_api_error("deploy", &r, j);
        rc = VG_EINVAL;
    }
    free(r.buf);
    if (rc == 0)
        *version = j;
    else
        json_decref(j);
    return rc;
}

static const struct option client_longopts[] = {
    {"control", required_argument, NULL, 'c'}, {"token", required_argument, NULL, 'T'},
    {"json", no_argument, NULL, 'j'},          {"scope", required_argument, NULL, 's'},
    {"output", required_argument, NULL, 'o'},  {"expires", required_argument, NULL, 'e'},
    {"help", no_argument, NULL, 'h'},          {NULL, 0, NULL, 0},
};

int vg__cli_client_opts(int argc, char **argv, struct vg__cli_client_args *a, void (*usage)(FILE *))
{
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "o:", client_longopts, NULL)) != -1) {
        switch (c) {
        case 'c':
            a->url = optarg;
            break;
        case 'T':
            a->token = optarg;
            break;
        case 'j':
            a->json = true;
            break;
        case 's':
            a->scope = optarg;
            break;
        case 'o':
            a->out = optarg;
            break;
        case 'e':
            a->expires = optarg;
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

int vg__cli_call_json(const char *cmd, const struct vg__cli_client_args *a, const char *method, const char *path,
                      json_t *body, json_t **out)
{
    struct vg__cli_control cc;
    int rc = vg__cli_control_init(&cc, a->url, a->token, cmd);
    if (rc)
        return rc;
    char *b = body ? json_dumps(body, JSON_COMPACT) : NULL;
    struct vg__cli_response r = {0};
    json_t *j = NULL;
    const char *err =
        vg__cli_control_call(&cc, method, path, b ? "application/json" : NULL, b, b ? strlen(b) : 0, &r, &j);
    free(b);
    rc = -1;
    if (err) {
        fprintf(stderr, "verge %s: %s: %s\n", cmd, cc.url, err);
        rc = 1;
    } else if (r.status < 200 || r.status > 299) {
        print_api_error(cmd, &r, j);
        rc = 1;
    } else if (!j) {
        fprintf(stderr, "verge %s: the control plane's answer is not JSON\n", cmd);
        rc = 1;
    } else if (a->json) {
        printf("%.*s", (int)r.body_len, r.body);
    }
    free(r.buf);
    if (rc == -1)
        *out = j;
    else
        json_decref(j);
    return rc;
}

static const char *jstr(json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "-";
}

/* ---- verge versions ---- */

static void versions_usage(FILE *f)
{
    fprintf(f, "usage: verge versions [APP] [--control URL] [--token T] [--json]\n\n"
               "  APP            list the app's versions, newest first (* marks the desired one);\n"
               "                 without APP, list the apps\n"
               "  --control URL  the control plane (default $VERGE_CONTROL, else http://127.0.0.1:7070)\n"
               "  --token T      an API token (default $VERGE_TOKEN)\n"
               "  --json         print the control plane's JSON answer\n");
}

int vg_cli_versions(int argc, char **argv)
{
    struct vg__cli_client_args a = {0};
    int rc = vg__cli_client_opts(argc, argv, &a, versions_usage);
    if (rc >= 0)
        return rc;
    if (argc - optind > 1) {
        versions_usage(stderr);
        return 2;
    }
    const char *app = optind < argc ? argv[optind] : NULL;
    char *path = app ? vg_xasprintf("/v1/apps/%s/versions", app) : vg_xstrdup("/v1/apps");
    json_t *j;
    rc = vg__cli_call_json("versions", &a, "GET", path, NULL, &j);
    free(path);
    if (rc >= 0)
        return rc;
    if (a.json) {
        json_decref(j);
        return 0;
    }
    size_t i;
    json_t *e;
    if (app) {
        json_t *vs = json_object_get(j, "versions");
        if (json_array_size(vs) == 0)
            printf("app %s has no versions\n", app);
        else
            printf("  %-64s  %-24s  %10s  %s\n", "VERSION", "CREATED", "BYTES", "BY");
        json_array_foreach(vs, i, e)
        {
            printf("%s %-64s  %-24s  %10lld  %s\n", json_is_true(json_object_get(e, "desired")) ? "*" : " ",
                   jstr(e, "id"), jstr(e, "created_at"), (long long)json_integer_value(json_object_get(e, "size")),
                   jstr(e, "created_by"));
        }
    } else {
        json_t *apps = json_object_get(j, "apps");
        if (json_array_size(apps) == 0)
            printf("no apps yet\n");
        else
            printf("%-24s  %8s  %-12s  %s\n", "APP", "VERSIONS", "DESIRED", "LATEST");
        json_array_foreach(apps, i, e)
        {
            json_t *d = json_object_get(e, "desired");
            const char *dv = json_is_object(d) ? jstr(d, "version") : "-";
            printf("%-24s  %8lld  %-12.12s  %.12s\n", jstr(e, "name"),
                   (long long)json_integer_value(json_object_get(e, "versions")), dv, jstr(e, "latest_version"));
        }
    }
    json_decref(j);
    return 0;
}

/* ---- verge token ---- */

static void token_usage(FILE *f)
{
    fprintf(f, "usage: verge token create NAME --scope read|deploy|admin|node [--expires DUR]\n"
               "       verge token list\n"
               "       verge token revoke NAME\n\n"
               "  create prints the secret once: keep it. Needs an admin token.\n"
               "  --expires DUR  the token stops working after DUR (30d, 12h; default: never)\n"
               "  --control URL  the control plane (default $VERGE_CONTROL, else http://127.0.0.1:7070)\n"
               "  --token T      an admin API token (default $VERGE_TOKEN)\n"
               "  --json         print the control plane's JSON answer\n");
}

int vg_cli_token(int argc, char **argv)
{
    struct vg__cli_client_args a = {0};
    int rc = vg__cli_client_opts(argc, argv, &a, token_usage);
    if (rc >= 0)
        return rc;
    int npos = argc - optind;
    const char *sub = npos > 0 ? argv[optind] : "";
    json_t *j;
    if (strcmp(sub, "create") == 0 && npos == 2) {
        if (!a.scope) {
            fprintf(stderr, "verge token create: --scope is required (read, deploy, admin or node)\n");
            return 2;
        }
        json_t *body = json_pack("{s:s,s:s}", "name", argv[optind + 1], "scope", a.scope);
        if (a.expires)
            json_object_set_new(body, "expires_in", json_string(a.expires));
        rc = vg__cli_call_json("token", &a, "POST", "/v1/tokens", body, &j);
        json_decref(body);
        if (rc >= 0)
            return rc;
        if (!a.json)
            printf("created token '%s' (scope %s); its secret, shown this once:\n%s\n", jstr(j, "name"),
                   jstr(j, "scope"), jstr(j, "secret"));
    } else if (strcmp(sub, "list") == 0 && npos == 1) {
        if ((rc = vg__cli_call_json("token", &a, "GET", "/v1/tokens", NULL, &j)) >= 0)
            return rc;
        if (!a.json) {
            printf("%-24s  %-7s  %-24s  %-16s  %s\n", "NAME", "SCOPE", "CREATED", "BY", "STATE");
            size_t i;
            json_t *e;
            json_array_foreach(json_object_get(j, "tokens"), i, e)
            {
                json_t *rv = json_object_get(e, "revoked_at");
                printf("%-24s  %-7s  %-24s  %-16s  %s%s\n", jstr(e, "name"), jstr(e, "scope"), jstr(e, "created_at"),
                       jstr(e, "created_by"), json_is_string(rv) ? "revoked " : "live",
                       json_is_string(rv) ? json_string_value(rv) : "");
            }
        }
    } else if (strcmp(sub, "revoke") == 0 && npos == 2) {
        char *path = vg_xasprintf("/v1/tokens/%s", argv[optind + 1]);
        rc = vg__cli_call_json("token", &a, "DELETE", path, NULL, &j);
        free(path);
        if (rc >= 0)
            return rc;
        if (!a.json)
            printf("revoked token '%s'\n", jstr(j, "name"));
    } else {
        token_usage(stderr);
        return 2;
    }
    json_decref(j);
    return 0;
}

/* ---- verge bundle ---- */

static void bundle_usage(FILE *f)
{
    fprintf(f, "usage: verge bundle [DIR] -o FILE [--json]\n\n"
               "  Writes the app in DIR (default: the current directory) as a deterministic gzip'd tar and\n"
               "  prints its sha256, which is the version id the control plane gives it. The same tree always\n"
               "  gives the same bytes (sorted entries, no times, owners or names from this machine).\n"
               "  -o, --output FILE  where to write it (\"-\" for stdout)\n"
               "  --json             print {sha256, size, file}\n");
}

int vg__cli_bundle_build(const char *dir, uint8_t **out, size_t *len, char sha[65])
{
    struct vg_bundle_limits lim;
    vg_bundle_limits_default(&lim);
    char err[600];
    int rc = vg_bundle_create(dir, &lim, out, len, err, sizeof(err));
    if (rc) {
        fprintf(stderr, "verge: cannot bundle %s: %s\n", dir, err);
        return rc;
    }
    vg_bundle_sha256_hex(*out, *len, sha);
    return 0;
}

static int write_file(const char *path, const uint8_t *p, size_t n)
{
    if (strcmp(path, "-") == 0)
        return fwrite(p, 1, n, stdout) == n && fflush(stdout) == 0 ? 0 : -1;
    char *tmp = vg_xasprintf("%s.tmp-%d", path, (int)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    int rc = -1;
    if (fd >= 0) {
        size_t off = 0;
        while (off < n) {
            ssize_t w = write(fd, p + off, n - off);
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0)
                break;
            off += (size_t)w;
        }
        bool ok = off == n;
        ok = close(fd) == 0 && ok;
        rc = ok && rename(tmp, path) == 0 ? 0 : -1;
    }
    if (rc)
        unlink(tmp);
    free(tmp);
    return rc;
}

int vg_cli_bundle(int argc, char **argv)
{
    struct vg__cli_client_args a = {0};
    int rc = vg__cli_client_opts(argc, argv, &a, bundle_usage);
    if (rc >= 0)
        return rc;
    if (argc - optind > 1 || !a.out) {
        fprintf(stderr, "verge bundle: %s\n", a.out ? "one DIR at most" : "-o FILE is required");
        bundle_usage(stderr);
        return 2;
    }
    const char *dir = optind < argc ? argv[optind] : ".";
    uint8_t *b;
    size_t n;
    char sha[65];
    if (vg__cli_bundle_build(dir, &b, &n, sha) != 0)
        return 1;
    if (write_file(a.out, b, n) != 0) {
        fprintf(stderr, "verge bundle: cannot write %s: %s\n", a.out, strerror(errno));
        free(b);
        return 1;
    }
    free(b);
    FILE *f = strcmp(a.out, "-") == 0 ? stderr : stdout;
    if (a.json) {
        json_t *j = json_pack("{s:s,s:I,s:s}", "sha256", sha, "size", (json_int_t)n, "file", a.out);
        char *t = json_dumps(j, JSON_COMPACT);
        fprintf(f, "%s\n", t);
        free(t);
        json_decref(j);
    } else
        fprintf(f, "%s\n", sha);
    return 0;
}
