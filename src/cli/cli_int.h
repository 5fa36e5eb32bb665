/* Internals shared by the cli's files: a small blocking HTTP/1.1 client
 * for talking to a node (`verge test`, `verge purge`) and to the control
 * plane (cli_control.c). */
#ifndef VG_CLI_INT_H
#define VG_CLI_INT_H

#include "http/phr.h"

#include <jansson.h>

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VG__CLI_RESPONSE_MAX (64u << 20)

struct vg__cli_response {
    int status;
    char *buf; /* the whole response (malloc'd: free it) */
    size_t len, head_len;
    struct phr_header headers[100];
    size_t n_headers;
    char *body;
    size_t body_len;
};

/* A connected socket to host (an IPv4 address) and port with 30 s send
 * and receive timeouts, or -1. */
int vg__cli_dial(const char *host, uint16_t port);
bool vg__cli_send_all(int fd, const char *p, size_t n);
/* Reads until the peer closes (send "Connection: close"); NULL or why not. */
const char *vg__cli_read_response(int fd, struct vg__cli_response *r);

/* "http://127.0.0.1:7070" -> address ("localhost" becomes 127.0.0.1) and
 * port (default 80). */
bool vg__cli_url_addr(const char *url, char host[64], uint16_t *port);

/* ---- the control plane's client (cli_control.c) ---- */

struct vg__cli_control {
    const char *url, *token;
    char host[64];
    uint16_t port;
};

/* Fills cc from --control/--token or $VERGE_CONTROL/$VERGE_TOKEN (the URL
 * defaults to http://127.0.0.1:7070). Prints why not and returns 2 when
 * unusable. */
int vg__cli_control_init(struct vg__cli_control *cc, const char *url, const char *token, const char *cmd);

/* One API call with the bearer token: body (len bytes, ctype) may be NULL.
 * Returns NULL or why it failed; on success r is filled (free r->buf) and,
 * when json is not NULL, *json is the parsed body or NULL (caller's). */
const char *vg__cli_control_call(const struct vg__cli_control *cc, const char *method, const char *path,
                                 const char *ctype, const void *body, size_t len, struct vg__cli_response *r,
                                 json_t **json);

/* Builds the bundle of dir (vg_bundle_create with the default
 * limits) and its sha256; prints why not. *out is the caller's. */
int vg__cli_bundle_build(const char *dir, uint8_t **out, size_t *len, char sha[65]);

/* Uploads a bundle as a version of app (POST /v1/apps/APP/versions): what
 * `verge deploy` does before it sets the desired version. On success
 * *version is the version's JSON (caller's; "created" tells whether it is
 * new); otherwise the reason was printed (the 422 lines as file:line:col).
 * *status is the HTTP status (0 when no answer came). */
int vg__cli_control_upload(const struct vg__cli_control *cc, const char *app, const uint8_t *bundle, size_t len,
                           json_t **version, int *status);

/* Common options of the client commands. */
struct vg__cli_client_args {
    const char *url, *token, *scope, *out, *expires;
    bool json;
};

/* Parses the client commands' options (--control, --token, --json,
 * --scope, --output/-o, --expires, --help) anywhere among the arguments;
 * positional ones are left in argv[optind..]. Returns -1 to go on, else
 * an exit status. */
int vg__cli_client_opts(int argc, char **argv, struct vg__cli_client_args *a, void (*usage)(FILE *));

/* GET/POST/PUT/DELETE path; on 2xx *out is the JSON answer (caller's) and
 * the raw body is printed when --json. Returns an exit status, -1 on
 * success. */
int vg__cli_call_json(const char *cmd, const struct vg__cli_client_args *a, const char *method, const char *path,
                      json_t *body, json_t **out);

/* ---- asking every node (cli_fleet.c): verge trace, logs, top ---- */

struct vg_bus;
struct vg_bus_sub;

/* The nodes: --nats URL (every node answers on the bus) or --node URL
 * (HTTP, one by one; default http://127.0.0.1:8080), --token for HTTP. */
struct vg__cli_fleet {
    const char **nodes, **nats;
    size_t n_nodes, n_nats;
    const char *token;
    size_t http_reached; /* nodes that answered at all over HTTP */
    bool opened;
    json_t *session; /* the dev session read by vg__cli_fleet_defaults (owns the strings used) */
    /* NATS */
    struct vg_bus *bus;
    struct vg_bus_sub *sub;
    char inbox[64];
    pthread_mutex_t mu;
    json_t *answers; /* under mu */
};

/* Long options shared by the commands: 'N' --node, 'b' --nats, 't' --token.
 * Takes opt's argument when it is one of those. */
bool vg__cli_fleet_arg(struct vg__cli_fleet *f, int opt, const char *arg);
#define VG__CLI_FLEET_OPTIONS                                                                                          \
    {"node", required_argument, NULL, 'N'}, {"nats", required_argument, NULL, 'b'},                                    \
    {                                                                                                                  \
        "token", required_argument, NULL, 't'                                                                          \
    }
/* $VERGE_ADMIN_TOKEN, and when no node was named: the running `verge dev`
 * session's nodes (its bus, or its pops' URLs; vg__cli_dev_session_path),
 * else http://127.0.0.1:8080. */
void vg__cli_fleet_defaults(struct vg__cli_fleet *f);

/* Where `verge dev` says what it runs ({"pid", "nodes": [URL...], "nats",
 * "control", "control_token": a read-scope token; mode 0600}), so that
 * `verge trace`, `logs` and `top` find a local session without options:
 * $VERGE_DEV_FILE, else /tmp/verge-dev-UID.json. */
const char *vg__cli_dev_session_path(char *buf, size_t cap);
/* That file's contents when its process is alive, else NULL; the caller
 * owns it. */
json_t *vg__cli_dev_session(void);
void vg__cli_fleet_free_args(struct vg__cli_fleet *f);

/* Connects (NATS) and listens on a reply inbox; prints why not (cmd: the
 * prefix) and returns 1 on failure. Close it in any case. */
int vg__cli_fleet_open(struct vg__cli_fleet *f, const char *cmd);
void vg__cli_fleet_close(struct vg__cli_fleet *f);

/* HTTP: the path to GET on the node at url. */
typedef void (*vg__cli_fleet_path_fn)(void *arg, const char *url, char *path, size_t cap);
/* Asks every node; returns a JSON array of their parsed answers (HTTP
 * objects get "node_url"). NATS: payload on subject, answers gathered for
 * wait_ms; HTTP: path_for(arg, url) on each node. The caller owns it. */
json_t *vg__cli_fleet_ask(struct vg__cli_fleet *f, const char *subject, const char *payload, uint32_t wait_ms,
                          vg__cli_fleet_path_fn path_for, void *arg);

#endif
