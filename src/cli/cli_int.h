/* Internals shared by the cli's files: a small blocking HTTP/1.1 client
 * for talking to a node (`verge test`, `verge purge`) and to the control
 * plane (cli_control.c). */
#ifndef VG_CLI_INT_H
#define VG_CLI_INT_H

#include "http/phr.h"

#include <jansson.h>

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

/* GET/POST/PUT/DELETE path; on 2xx *out is the JSON answer (caller's) and
 * the raw body is printed when --json. Returns an exit status, -1 on
 * success. */
int vg__cli_call_json(const char *cmd, const struct vg__cli_client_args *a, const char *method, const char *path,
                      json_t *body, json_t **out);

#endif
