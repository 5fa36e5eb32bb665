/* verge node: run an edge node. */
#include "cli.h"
#include "node/node.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void node_usage(FILE *f)
{
    fprintf(f, "usage: verge node [--app DIR...] [options]   (default app: the current directory)\n\n"
               "  --app DIR            serve the app in DIR (its verge.yaml); repeatable, selected by Host\n"
               "  --listen ADDR        plain HTTP/1.1 + h2c listener, host:port (default 127.0.0.1:8080)\n"
               "  --tls-listen ADDR    HTTPS listener (HTTP/2 by ALPN); needs --cert and --key\n"
               "  --cert FILE --key FILE  PEM certificate chain and private key for --tls-listen\n"
               "  --workers N          worker event loops (default: one per core)\n"
               "  --access-log on|off  one JSON line per request on stdout (default on)\n"
               "  --log-level L        debug|info|warn|error (default info)\n"
               "  --log-format F       json|text for the node log on stderr (default json)\n"
               "  --drain-timeout DUR  longest wait for in-flight requests on SIGTERM (default 30s)\n"
               "  --cache-memory SIZE  HTTP cache memory budget (default 256m)\n"
               "  --cache-dir DIR      keep the HTTP cache in DIR too (LMDB), so a restart comes back warm\n"
               "  --cache-disk SIZE    budget of --cache-dir (default 1g)\n"
               "  --admin-token T      bearer token for the admin API (POST /_verge/purge); also $VERGE_ADMIN_TOKEN\n"
               "  --dev                development mode\n"
               "  --add-latency DUR    every request waits DUR first, as if the client were far away (max 10s)\n"
               "  --nats URL           NATS server(s) linking this node to the others (purges fan out,\n"
               "                       verge.kv global state in JetStream);\n"
               "                       repeatable for a cluster; without it the node is on its own\n"
               "  --control URL        agent mode: run the apps `verge control` at URL deploys here\n"
               "  --token T            this node's token for --control (also $VERGE_NODE_TOKEN)\n"
               "  --node-id ID         this node's id (default: the host name)\n"
               "  --location ID        its location id (default: local); placement knows the bundled ids\n"
               "  --label KEY=VALUE    sent when registering (repeatable): cpu_m, mem_mib, slots, cost (capacity\n"
               "                       for placement) and tags (comma-separated, e.g. pci)\n"
               "  --client-area-header count a request's demand in the client area its X-Verge-Client-Area\n"
               "                       names (a location id; dev and tests); else as --geoip says, else in this\n"
               "                       node's location\n"
               "  --geoip FILE         with --control: count a request's demand in the bundled location nearest\n"
               "                       to where FILE (a MaxMind DB, e.g. GeoLite2-City.mmdb) puts the client's\n"
               "                       address; addresses it does not place count in this node's location\n"
               "  --data DIR           unpacked versions and the last known good state (default verge-node-data)\n"
               "  --state-dir DIR      verge.kv local state (LMDB; default verge-state, with --control DATA/state)\n"
               "  --trace-sample R     share of traces kept by head sampling, 0..1 (default 0.01); traces that\n"
               "                       errored or were slow are kept whatever R is; off: no traces at all\n"
               "  --trace-slow DUR     keep the trace of any request slower than DUR (default 500ms; 0: off)\n"
               "  --trace-ring N       kept traces per worker for `verge trace` (default 1024)\n"
               "  --trace-unsampled M  what a request that head sampling skipped records: root (its own span:\n"
               "                       kept with status and duration when it errs or is slow; the default) or\n"
               "                       stages (every stage, as a sampled one; about 1%% of a proxied request)\n"
               "  --trace-export URL   send kept traces to an OTLP/HTTP collector (http://HOST:PORT/v1/traces)\n\n"
               "signals: SIGHUP reloads the manifests (a bad one keeps the running config), SIGTERM drains and "
               "exits.\n");
}

static bool push(const char ***list, size_t *n, const char *v)
{
    *list = vg_xrealloc(*list, (*n + 1) * sizeof(**list));
    (*list)[(*n)++] = v;
    return true;
}

static int bad(const char *msg, const char *arg)
{
    fprintf(stderr, "verge node: %s%s%s\n", msg, arg ? ": " : "", arg ? arg : "");
    return 2;
}

/* Parses the command line into *o; returns -1 to run the node, else the
 * exit status (help: 0, usage error: 2). */
static int parse_args(int argc, char **argv, struct vg_node_options *o);

int vg_cli_node(int argc, char **argv)
{
    struct vg_node_options o = {.access_log = true,
                                .drain_timeout_ms = 30000,
                                .cache_memory = 256ull << 20,
                                .cache_disk = 1ull << 30,
                                .admin_token = getenv("VERGE_ADMIN_TOKEN"),
                                .trace_sample = 0.01,
                                .trace_slow_ms = 500,
                                .trace_ring = 1024};
    int rc = parse_args(argc, argv, &o);
    if (rc < 0)
        rc = vg_node_run(&o);
    free(o.app_dirs);
    free(o.nats_urls);
    free(o.labels);
    free(o.listen);
    free(o.tls_listen);
    return rc;
}

/* Agent mode (--control): the token, node id and location it needs. */
static int agent_args(struct vg_node_options *o)
{
    static char host[256];
    if (!o->control_token)
        o->control_token = getenv("VERGE_NODE_TOKEN");
    if (!o->control_token || !*o->control_token)
        return bad("--control needs a node token (--token or $VERGE_NODE_TOKEN)", NULL);
    if (strncmp(o->control_url, "http://", 7) != 0)
        return bad("--control takes http://HOST:PORT", o->control_url);
    if (!o->node_id) {
        if (gethostname(host, sizeof(host) - 1) != 0 || !*host)
            return bad("no --node-id given and no host name", NULL);
        o->node_id = host;
    }
    if (!o->location)
        o->location = "local";
    if (!o->data_dir)
        o->data_dir = "verge-node-data";
    if (!o->state_dir) {
        static char dir[4096];
        snprintf(dir, sizeof(dir), "%s/state", o->data_dir);
        o->state_dir = dir;
    }
    return -1;
}

/* The --trace-* options: -1 when fine, else the exit status. */
static int trace_arg(int c, const char *arg, struct vg_node_options *o)
{
    char *end;
    switch (c) {
    case 1001:
        if ((o->trace_off = strcmp(arg, "off") == 0))
            return -1;
        o->trace_sample = strtod(arg, &end);
        if (*end || end == arg || !(o->trace_sample >= 0 && o->trace_sample <= 1))
            return bad("--trace-sample takes a number from 0 to 1, like 0.01", arg);
        return -1;
    case 1002:
        if (vg_parse_duration_ms(arg, &o->trace_slow_ms) != 0)
            return bad("--trace-slow takes a duration like 500ms (0: off)", arg);
        return -1;
    case 1003: {
        uint64_t n;
        if (vg_parse_count(arg, 1, 1000000, &n) != 0)
            return bad("--trace-ring takes a number from 1 to 1000000", arg);
        o->trace_ring = (size_t)n;
        return -1;
    }
    case 1005:
        if (strcmp(arg, "root") && strcmp(arg, "stages"))
            return bad("--trace-unsampled takes root or stages", arg);
        o->trace_stages = strcmp(arg, "stages") == 0;
        return -1;
    default:
        if (strncmp(arg, "http://", 7) != 0)
            return bad("--trace-export takes an OTLP/HTTP collector URL, http://HOST:PORT/v1/traces", arg);
        o->trace_export = arg;
        return -1;
    }
}

static int parse_args(int argc, char **argv, struct vg_node_options *op)
{
    static const struct option longopts[] = {
        {"app", required_argument, NULL, 'a'},
        {"listen", required_argument, NULL, 'l'},
        {"tls-listen", required_argument, NULL, 't'},
        {"cert", required_argument, NULL, 'c'},
        {"key", required_argument, NULL, 'k'},
        {"workers", required_argument, NULL, 'w'},
        {"access-log", required_argument, NULL, 'A'},
        {"log-level", required_argument, NULL, 'L'},
        {"log-format", required_argument, NULL, 'F'},
        {"drain-timeout", required_argument, NULL, 'D'},
        {"dev", no_argument, NULL, 'd'},
        {"cache-memory", required_argument, NULL, 'M'},
        {"cache-dir", required_argument, NULL, 'C'},
        {"cache-disk", required_argument, NULL, 'K'},
        {"admin-token", required_argument, NULL, 'T'},
        {"control", required_argument, NULL, 'P'},
        {"nats", required_argument, NULL, 'B'},
        {"token", required_argument, NULL, 'N'},
        {"node-id", required_argument, NULL, 'I'},
        {"location", required_argument, NULL, 'O'},
        {"data", required_argument, NULL, 'G'},
        {"add-latency", required_argument, NULL, 'Y'},
        {"state-dir", required_argument, NULL, 'S'},
        {"trace-sample", required_argument, NULL, 1001},
        {"trace-slow", required_argument, NULL, 1002},
        {"trace-ring", required_argument, NULL, 1003},
        {"trace-export", required_argument, NULL, 1004},
        {"trace-unsampled", required_argument, NULL, 1005},
        {"label", required_argument, NULL, 1006},
        {"client-area-header", no_argument, NULL, 1007},
        {"geoip", required_argument, NULL, 1008},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct vg_node_options o = *op;
    int c, rc = -1;
    while (rc < 0 && (c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case 'a':
            push(&o.app_dirs, &o.n_apps, optarg);
            break;
        case 'l':
            push(&o.listen, &o.n_listen, optarg);
            break;
        case 't':
            push(&o.tls_listen, &o.n_tls_listen, optarg);
            break;
        case 'c':
            o.cert = optarg;
            break;
        case 'k':
            o.key = optarg;
            break;
        case 'w': {
            char *end;
            long n = strtol(optarg, &end, 10);
            if (*end || n < 1 || n > 64) {
                rc = bad("--workers takes a number from 1 to 64", optarg);
                break;
            }
            o.workers = (unsigned)n;
            break;
        }
        case 'M':
        case 'K': {
            uint64_t v;
            if (vg_parse_size(optarg, &v) != 0 || v < (1u << 20)) {
                rc = bad(c == 'M' ? "--cache-memory takes a size of at least 1m"
                                  : "--cache-disk takes a size of at "
                                    "least 1m",
                         optarg);
                break;
            }
            *(c == 'M' ? &o.cache_memory : &o.cache_disk) = v;
            break;
        }
        case 'C':
            o.cache_dir = optarg;
            break;
        case 'P':
            o.control_url = optarg;
            break;
        case 'B':
            push(&o.nats_urls, &o.n_nats_urls, optarg);
            break;
        case 'N':
            o.control_token = optarg;
            break;
        case 'I':
            o.node_id = optarg;
            break;
        case 'O':
            o.location = optarg;
            break;
        case 'G':
            o.data_dir = optarg;
            break;
        case 'S':
            o.state_dir = optarg;
            break;
        case 'Y':
            if (vg_parse_duration_ms(optarg, &o.add_latency_ms) != 0 || o.add_latency_ms > 10000) {
                rc = bad("--add-latency takes a duration from 0 to 10s, like 80ms", optarg);
                break;
            }
            break;
        case 'T':
            if (!*optarg) {
                rc = bad("--admin-token must not be empty", NULL);
                break;
            }
            o.admin_token = optarg;
            break;
        case 'A':
            if (strcmp(optarg, "on") && strcmp(optarg, "off")) {
                rc = bad("--access-log takes on or off", optarg);
                break;
            }
            o.access_log = strcmp(optarg, "on") == 0;
            break;
        case 'L': {
            static const char *names[] = {"debug", "info", "warn", "error"};
            size_t i = 0;
            while (i < 4 && strcmp(optarg, names[i]))
                i++;
            if (i == 4) {
                rc = bad("--log-level takes debug, info, warn or error", optarg);
                break;
            }
            vg_log_set_level((enum vg_log_level)i);
            break;
        }
        case 'F':
            if (strcmp(optarg, "json") && strcmp(optarg, "text")) {
                rc = bad("--log-format takes json or text", optarg);
                break;
            }
            vg_log_set_json(strcmp(optarg, "json") == 0);
            break;
        case 'D':
            if (vg_parse_duration_ms(optarg, &o.drain_timeout_ms) != 0) {
                rc = bad("--drain-timeout takes a duration like 30s", optarg);
                break;
            }
            break;
        case 'd':
            o.dev = true;
            break;
        case 1001:
        case 1002:
        case 1003:
        case 1004:
        case 1005:
            rc = trace_arg(c, optarg, &o);
            break;
        case 1006:
            if (!strchr(optarg, '=') || optarg[0] == '=') {
                rc = bad("--label takes KEY=VALUE", optarg);
                break;
            }
            push(&o.labels, &o.n_labels, optarg);
            break;
        case 1007:
            o.client_area_header = true;
            break;
        case 1008:
            if (!*optarg) {
                rc = bad("--geoip takes a MaxMind DB file", NULL);
                break;
            }
            o.geoip = optarg;
            break;
        case 'h':
            node_usage(stdout);
            rc = 0;
            break;
        default:
            node_usage(stderr);
            rc = 2;
            break;
        }
    }
    if (rc < 0 && optind < argc)
        rc = bad("unexpected argument", argv[optind]);
    else if (rc < 0 && o.geoip && !o.control_url)
        rc = bad("--geoip needs --control (only agent mode counts demand by client area)", NULL);
    else if (rc < 0 && o.control_url)
        rc = agent_args(&o);
    else if (rc < 0 && o.n_apps == 0 && access("verge.yaml", F_OK) == 0)
        push(&o.app_dirs, &o.n_apps, "."); /* run the app in this directory, like `verge check` */
    else if (rc < 0 && o.n_apps == 0)
        rc = bad("no --app DIR given and no verge.yaml in the current directory", NULL);
    else if (rc < 0 && o.n_tls_listen && (!o.cert || !o.key))
        rc = bad("--tls-listen needs --cert and --key", NULL);
    if (rc < 0 && o.n_listen == 0 && o.n_tls_listen == 0)
        push(&o.listen, &o.n_listen, "127.0.0.1:8080");
    *op = o; /* the lists are the caller's to free, whatever happened */
    return rc;
}
