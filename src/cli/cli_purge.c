/* verge purge: remove objects from a node's HTTP cache (POST /_verge/purge). */
#include "base/base.h"
#include "cli.h"
#include "cli_int.h"

#include <getopt.h>
#include <jansson.h>
#include <string.h>
#include <unistd.h>

static void purge_usage(FILE *f)
{
    fprintf(f, "usage: verge purge (--url URL | --prefix URL | --tag TAG) [options]\n\n"
               "  --url URL        one URL, every variant (http://host/path?query)\n"
               "  --prefix URL     every URL starting with it (http://host/path)\n"
               "  --tag TAG        every object tagged TAG (Surrogate-Key / Cache-Tag)\n"
               "  --soft           mark stale instead of removing (stale-while-revalidate still applies)\n"
               "  --app NAME       the app, when the node serves several\n"
               "  --node URL       the node (default http://127.0.0.1:8080)\n"
               "  --token T        the node's admin token (default $VERGE_ADMIN_TOKEN)\n"
               "  --json           print the node's answer as JSON\n");
}

struct purge_args {
    const char *url, *prefix, *tag, *app, *node, *token;
    bool soft, json;
};

/* "http://127.0.0.1:8080" -> address and port. */
static bool node_addr(const char *node, char host[64], uint16_t *port)
{
    const char *p = strncmp(node, "http://", 7) == 0 ? node + 7 : node;
    const char *colon = strchr(p, ':');
    size_t hl = colon ? (size_t)(colon - p) : strcspn(p, "/");
    if (!hl || hl >= 64)
        return false;
    memcpy(host, p, hl);
    host[hl] = '\0';
    if (strcmp(host, "localhost") == 0)
        strcpy(host, "127.0.0.1");
    long n = colon ? strtol(colon + 1, NULL, 10) : 80;
    if (n < 1 || n > 65535)
        return false;
    *port = (uint16_t)n;
    return true;
}

static char *request_body(const struct purge_args *a)
{
    json_t *j = json_object();
    if (a->url)
        json_object_set_new(j, "url", json_string(a->url));
    if (a->prefix)
        json_object_set_new(j, "prefix", json_string(a->prefix));
    if (a->tag)
        json_object_set_new(j, "tag", json_string(a->tag));
    if (a->app)
        json_object_set_new(j, "app", json_string(a->app));
    if (a->soft)
        json_object_set_new(j, "soft", json_true());
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    return s;
}

static int send_purge(const struct purge_args *a)
{
    char host[64];
    uint16_t port;
    if (!node_addr(a->node, host, &port)) {
        fprintf(stderr, "verge purge: --node is http://ADDRESS:PORT: %s\n", a->node);
        return 2;
    }
    char *body = request_body(a);
    char *req = vg_xasprintf("POST /_verge/purge HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n"
                             "Content-Type: application/json\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n%s",
                             host, a->token ? a->token : "", strlen(body), body);
    free(body);
    int fd = vg__cli_dial(host, port);
    struct vg__cli_response r = {0};
    const char *err = fd < 0                                    ? "cannot connect to the node"
                      : !vg__cli_send_all(fd, req, strlen(req)) ? "cannot send the request"
                                                                : vg__cli_read_response(fd, &r);
    if (fd >= 0)
        close(fd);
    free(req);
    int rc = 0;
    json_t *j = err ? NULL : json_loadb(r.body, r.body_len, 0, NULL);
    if (err) {
        fprintf(stderr, "verge purge: %s: %s\n", a->node, err);
        rc = 1;
    } else if (r.status != 200) {
        const char *why = json_string_value(json_object_get(j, "error"));
        fprintf(stderr, "verge purge: the node answered %d: %s\n", r.status, why ? why : "(no reason given)");
        rc = 1;
    } else if (a->json) {
        printf("%.*s", (int)r.body_len, r.body);
    } else {
        json_int_t n = json_integer_value(json_object_get(j, "purged"));
        printf("purged %lld object%s\n", (long long)n, n == 1 ? "" : "s");
    }
    json_decref(j);
    free(r.buf);
    return rc;
}

int vg_cli_purge(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"url", required_argument, NULL, 'u'},  {"prefix", required_argument, NULL, 'p'},
        {"tag", required_argument, NULL, 't'},  {"app", required_argument, NULL, 'a'},
        {"node", required_argument, NULL, 'n'}, {"token", required_argument, NULL, 'T'},
        {"soft", no_argument, NULL, 's'},       {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},       {NULL, 0, NULL, 0},
    };
    struct purge_args a = {.node = "http://127.0.0.1:8080", .token = getenv("VERGE_ADMIN_TOKEN")};
    int c;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case 'u':
            a.url = optarg;
            break;
        case 'p':
            a.prefix = optarg;
            break;
        case 't':
            a.tag = optarg;
            break;
        case 'a':
            a.app = optarg;
            break;
        case 'n':
            a.node = optarg;
            break;
        case 'T':
            a.token = optarg;
            break;
        case 's':
            a.soft = true;
            break;
        case 'j':
            a.json = true;
            break;
        case 'h':
            purge_usage(stdout);
            return 0;
        default:
            purge_usage(stderr);
            return 2;
        }
    }
    if (!!a.url + !!a.prefix + !!a.tag != 1 || optind != argc) {
        fprintf(stderr, "verge purge: give exactly one of --url, --prefix or --tag\n");
        purge_usage(stderr);
        return 2;
    }
    return send_purge(&a);
}
