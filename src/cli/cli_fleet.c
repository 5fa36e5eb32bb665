/* Asking every node at once, for `verge trace`, `verge logs` and
 * `verge top`: over NATS, one publish with a reply inbox and the answers
 * gathered for a while (how many nodes there are is not known); over HTTP,
 * one GET per node named. */
#include "base/base.h"
#include "bus/bus.h"
#include "cli_int.h"
#include "http/http.h"
#include "obs/obs.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void on_answer(void *arg, const struct vg_bus_msg *m)
{
    struct vg__cli_fleet *f = arg;
    json_t *ans = json_loadb(m->data, m->len, 0, NULL);
    pthread_mutex_lock(&f->mu);
    if (ans)
        json_array_append(f->answers, ans);
    pthread_mutex_unlock(&f->mu);
    json_decref(ans);
}

int vg__cli_fleet_open(struct vg__cli_fleet *f, const char *cmd)
{
    pthread_mutex_init(&f->mu, NULL);
    f->answers = json_array();
    f->opened = true;
    if (!f->n_nats)
        return 0;
    struct vg_bus_options o = {.urls = f->nats, .n_urls = f->n_nats, .name = cmd};
    char err[256];
    if (vg_bus_nats_create(&o, &f->bus, err, sizeof(err)) != 0) {
        fprintf(stderr, "%s: %s\n", cmd, err);
        return 1;
    }
    uint8_t rnd[16];
    char hex[33];
    vg_trace_new_id(rnd);
    vg_trace_hex(rnd, 8, hex);
    snprintf(f->inbox, sizeof(f->inbox), "_INBOX.verge.cli.%s", hex);
    if (vg_bus_subscribe(f->bus, f->inbox, NULL, on_answer, f, &f->sub) != 0) {
        fprintf(stderr, "%s: cannot subscribe on NATS\n", cmd);
        return 1;
    }
    return 0;
}

void vg__cli_fleet_close(struct vg__cli_fleet *f)
{
    if (!f->opened)
        return;
    f->opened = false;
    if (f->sub)
        vg_bus_unsubscribe(f->sub);
    vg_bus_destroy(f->bus);
    f->sub = NULL;
    f->bus = NULL;
    json_decref(f->answers);
    pthread_mutex_destroy(&f->mu);
}

static json_t *ask_bus(struct vg__cli_fleet *f, const char *subject, const char *payload, uint32_t wait_ms)
{
    if (vg_bus_publish_reply(f->bus, subject, f->inbox, payload, strlen(payload)) != 0)
        fprintf(stderr, "verge: cannot ask the nodes over NATS\n");
    usleep(wait_ms * 1000u);
    pthread_mutex_lock(&f->mu);
    json_t *out = f->answers;
    f->answers = json_array();
    pthread_mutex_unlock(&f->mu);
    return out;
}

static json_t *ask_http(struct vg__cli_fleet *f, vg__cli_fleet_path_fn path_for, void *arg)
{
    json_t *answers = json_array();
    for (size_t i = 0; i < f->n_nodes; i++) {
        char path[2048], err[256];
        path_for(arg, f->nodes[i], path, sizeof(path));
        struct vg_http_sync_req q = {
            .method = "GET", .url = f->nodes[i], .path_suffix = path, .token = f->token, .timeout_ms = 5000};
        struct vg_http_sync_res res;
        if (vg_http_sync_request(&q, &res, err, sizeof(err)) != 0) {
            fprintf(stderr, "verge: %s: %s\n", f->nodes[i], err);
            continue;
        }
        json_t *ans = res.status == 200 ? json_loadb(res.body, res.body_len, 0, NULL) : NULL;
        if (ans) {
            if (json_is_object(ans))
                json_object_set_new(ans, "node_url", json_string(f->nodes[i]));
            json_array_append_new(answers, ans);
        } else if (res.status != 404) {
            fprintf(stderr, "verge: %s answered %d: %.*s\n", f->nodes[i], res.status, (int)res.body_len, res.body);
        }
        f->http_reached++;
        vg_http_sync_res_free(&res);
    }
    return answers;
}

json_t *vg__cli_fleet_ask(struct vg__cli_fleet *f, const char *subject, const char *payload, uint32_t wait_ms,
                          vg__cli_fleet_path_fn path_for, void *arg)
{
    return f->bus ? ask_bus(f, subject, payload, wait_ms) : ask_http(f, path_for, arg);
}

bool vg__cli_fleet_arg(struct vg__cli_fleet *f, int opt, const char *arg)
{
    const char ***list = opt == 'N' ? &f->nodes : opt == 'b' ? &f->nats : NULL;
    size_t *n = opt == 'N' ? &f->n_nodes : &f->n_nats;
    if (opt == 't') {
        f->token = arg;
        return true;
    }
    if (!list)
        return false;
    *list = vg_xrealloc(*list, (*n + 1) * sizeof(**list));
    (*list)[(*n)++] = arg;
    return true;
}

const char *vg__cli_dev_session_path(char *buf, size_t cap)
{
    const char *env = getenv("VERGE_DEV_FILE");
    if (env && *env)
        return env;
    snprintf(buf, cap, "/tmp/verge-dev-%u.json", (unsigned)getuid());
    return buf;
}

json_t *vg__cli_dev_session(void)
{
    char buf[96];
    json_t *s = json_load_file(vg__cli_dev_session_path(buf, sizeof(buf)), 0, NULL);
    json_int_t pid = json_integer_value(json_object_get(s, "pid"));
    if (!s || pid <= 0 || kill((pid_t)pid, 0) != 0) {
        json_decref(s);
        return NULL;
    }
    return s;
}

/* The running dev session's nodes, when there is one (its process alive). */
static bool from_dev_session(struct vg__cli_fleet *f)
{
    json_t *s = vg__cli_dev_session();
    if (!s)
        return false;
    f->session = s;
    const char *nats = json_string_value(json_object_get(s, "nats"));
    if (nats)
        return vg__cli_fleet_arg(f, 'b', nats);
    size_t i;
    json_t *u;
    json_array_foreach(json_object_get(s, "nodes"), i, u) if (json_is_string(u))
        vg__cli_fleet_arg(f, 'N', json_string_value(u));
    return f->n_nodes > 0;
}

void vg__cli_fleet_defaults(struct vg__cli_fleet *f)
{
    if (!f->token)
        f->token = getenv("VERGE_ADMIN_TOKEN");
    if (!f->n_nodes && !f->n_nats && !from_dev_session(f))
        vg__cli_fleet_arg(f, 'N', "http://127.0.0.1:8080");
}

void vg__cli_fleet_free_args(struct vg__cli_fleet *f)
{
    free(f->nodes);
    free(f->nats);
    f->nodes = f->nats = NULL;
    json_decref(f->session);
    f->session = NULL;
}
