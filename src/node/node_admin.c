/* What the node's admin endpoints (/_verge/purge, /_verge/publish/…)
 * share: the bearer token, JSON error answers, and which app a call is
 * for. One copy, so that every admin endpoint checks the token the same
 * way. */
#include "node_int.h"

#include <string.h>

void vg__node_admin_error(h2o_req_t *req, int status, const char *why)
{
    char buf[300];
    char esc[200];
    vg_json_escape(esc, sizeof(esc), why, strlen(why));
    snprintf(buf, sizeof(buf), "{\"error\":\"%s\"}\n", esc);
    if (status == 401)
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_WWW_AUTHENTICATE, NULL, H2O_STRLIT("Bearer"));
    vg_http_send_text(req, status, "application/json", buf, strlen(buf));
}

/* Constant time in the token's length: the comparison does not tell how
 * much of a guess was right. */
bool vg__node_admin_token_equal(h2o_iovec_t v, const char *token)
{
    size_t tl = strlen(token);
    if (v.len != tl)
        return false;
    unsigned char diff = 0;
    for (size_t k = 0; k < tl; k++)
        diff |= (unsigned char)(v.base[k] ^ token[k]);
    return diff == 0;
}

bool vg__node_admin_token_ok(h2o_req_t *req, const char *token)
{
    ssize_t i = h2o_find_header(&req->headers, H2O_TOKEN_AUTHORIZATION, -1);
    if (!token || i < 0)
        return false;
    h2o_iovec_t v = req->headers.entries[i].value;
    if (v.len < 7 || !h2o_lcstris(v.base, 7, H2O_STRLIT("bearer ")))
        return false;
    return vg__node_admin_token_equal(h2o_iovec_init(v.base + 7, v.len - 7), token);
}

const struct vg_app_rt *vg__node_admin_app(struct vg_site *site, const char *name, size_t len, const char **why)
{
    if (!name && site->n_apps == 1)
        return &site->apps[0];
    if (!name) {
        *why = "this node serves several apps: name one with \"app\"";
        return NULL;
    }
    for (size_t a = 0; a < site->n_apps; a++)
        if (strlen(site->apps[a].conf->name) == len && memcmp(site->apps[a].conf->name, name, len) == 0)
            return &site->apps[a];
    *why = "no such app on this node";
    return NULL;
}

bool vg__node_admin_diag_ok(struct vg_node *node, h2o_req_t *req, const char *what)
{
    if (node->opt.dev || vg__node_admin_token_ok(req, node->opt.admin_token))
        return true;
    vg_log(VG_LOG_WARN, "diagnostics query refused", "endpoint", what, "reason",
           node->opt.admin_token ? "missing or wrong token" : "no --admin-token on this node", NULL);
    vg__node_admin_error(req, 401, "a valid admin token is required (Authorization: Bearer TOKEN)");
    return false;
}
