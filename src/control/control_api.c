/* The /v1 HTTP API (docs/api.md): one h2o handler doing its own routing.
 * Order of checks for every call: token (401), route (404, 405), scope
 * (403), then the handler's own checks (400, 404, 409, 413, 415, 422).
 * Everything runs on the server's one loop thread; a long poll is a
 * request left pending in a list, answered from the loop when the desired
 * state changes or its time is up. */
#include "conf/conf.h"
#include "control_int.h"
#include "fn/fn.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define JSON_BODY_MAX (1u << 20) /* every body but a bundle */
#define MAX_SEGS 6
#define HISTORY_LIMIT_MAX 1000

struct api_handler {
    h2o_handler_t super;
    struct vg_control_server *srv;
};

/* Per request, in its pool. */
struct call {
    h2o_req_t *req;
    struct vg_control_server *srv;
    struct vg__control_actor actor;
    char actor_name[80]; /* a copy: a token change reloads the table */
    const char *seg[MAX_SEGS];
    size_t n_seg;
    uint64_t start_us;
    /* a body read piece by piece (large uploads) */
    uint8_t *body;
    size_t body_len, body_cap, body_limit;
    void (*body_done)(struct call *c, const uint8_t *p, size_t n);
};

#define SCOPE_R (VG__CONTROL_SCOPE_READ | VG__CONTROL_SCOPE_DEPLOY | VG__CONTROL_SCOPE_ADMIN)
#define SCOPE_D (VG__CONTROL_SCOPE_DEPLOY | VG__CONTROL_SCOPE_ADMIN)
#define SCOPE_A VG__CONTROL_SCOPE_ADMIN
#define SCOPE_N VG__CONTROL_SCOPE_NODE

/* ---- responses ---- */

static void log_call(struct call *c, int status)
{
    h2o_req_t *req = c->req;
    char st[8], us[24];
    snprintf(st, sizeof(st), "%d", status);
    snprintf(us, sizeof(us), "%llu", (unsigned long long)(vg_now_us() - c->start_us));
    char method[16], path[256];
    snprintf(method, sizeof(method), "%.*s", (int)(req->method.len < 15 ? req->method.len : 15), req->method.base);
    snprintf(path, sizeof(path), "%.*s", (int)(req->path.len < 255 ? req->path.len : 255), req->path.base);
    vg_log(status >= 500 ? VG_LOG_ERROR : VG_LOG_INFO, "request", "method", method, "path", path, "status", st, "actor",
           c->actor.name ? c->actor.name : "", "duration_us", us, NULL);
}

/* Sends j (taken) as the response body. */
static void send_json(struct call *c, int status, json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
    json_decref(j);
    size_t n = s ? strlen(s) : 0;
    char *body = h2o_mem_alloc_pool(&c->req->pool, n + 1);
    memcpy(body, s ? s : "", n);
    body[n++] = '\n';
    free(s);
    log_call(c, status);
    vg_http_send_text(c->req, status, "application/json", body, n);
}

static void send_error(struct call *c, int status, const char *fmt, ...) VG_PRINTF(3, 4);
static void send_error(struct call *c, int status, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (status == 401)
        h2o_add_header(&c->req->pool, &c->req->res.headers, H2O_TOKEN_WWW_AUTHENTICATE, NULL,
                       H2O_STRLIT("Bearer realm=\"verge\""));
    send_json(c, status, json_pack("{s:s}", "error", msg));
}

static void send_store_error(struct call *c, int rc)
{
    send_error(c, 500, "internal error (%s): see the control plane's log", vg_err_name(rc));
}

/* ---- request helpers ---- */

/* The value of query parameter name (no percent-decoding: the values we
 * take are numbers and names), or NULL. */
static const char *query_param(struct call *c, const char *name)
{
    h2o_req_t *req = c->req;
    if (req->query_at == SIZE_MAX)
        return NULL;
    const char *p = req->path.base + req->query_at + 1, *end = req->path.base + req->path.len;
    size_t nl = strlen(name);
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *e = amp ? amp : end;
        if ((size_t)(e - p) > nl && p[nl] == '=' && memcmp(p, name, nl) == 0)
            return h2o_strdup(&req->pool, p + nl + 1, (size_t)(e - p - nl - 1)).base;
        if ((size_t)(e - p) == nl && memcmp(p, name, nl) == 0)
            return "";
        p = e + 1;
    }
    return NULL;
}

/* A decimal integer in [lo, hi]. */
static bool parse_int(const char *s, int64_t lo, int64_t hi, int64_t *out)
{
    if (!s || !*s)
        return false;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

/* App names as the manifest allows them: lowercase letters, digits, '-',
 * 1 to 63, not starting with '-'. */
static bool app_name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > 63 || s[0] == '-')
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-'))
            return false;
    return true;
}

static bool sha_ok(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++)
        if (!((s[n] >= '0' && s[n] <= '9') || (s[n] >= 'a' && s[n] <= 'f')))
            return false;
    return n == 64;
}

static void call_dispose(void *p)
{
    struct call *c = p;
    free(c->body);
}

static void on_body_piece(void *data, h2o_iovec_t buf, enum vg_http_body_status st, int status, const char *reason)
{
    struct call *c = data;
    if (st == VG_HTTP_BODY_ERROR) {
        send_error(c, status, "%s", reason);
        return;
    }
    if (c->body_len + buf.len > c->body_limit) { /* vg_http_body_read stops it first; kept as a guard */
        send_error(c, 413, "request body larger than %zu bytes", c->body_limit);
        return;
    }
    if (c->body_len + buf.len > c->body_cap) {
        size_t cap = c->body_cap ? c->body_cap : 1u << 20;
        while (cap < c->body_len + buf.len)
            cap *= 2;
        c->body = vg_xrealloc(c->body, cap);
        c->body_cap = cap;
    }
    if (buf.len) {
        memcpy(c->body + c->body_len, buf.base, buf.len);
        c->body_len += buf.len;
    }
    if (st == VG_HTTP_BODY_MORE)
        vg_http_body_read(c->req, c->body_limit, on_body_piece, c);
    else
        c->body_done(c, c->body, c->body_len);
}

/* Calls done with the whole body (at most limit bytes, else 413): now when
 * it is here, later from the loop when it is still arriving. */
static void read_body(struct call *c, size_t limit, void (*done)(struct call *c, const uint8_t *p, size_t n))
{
    h2o_req_t *req = c->req;
    if (!vg_http_body_is_streamed(req)) {
        if (req->entity.len > limit) {
            send_error(c, 413, "request body larger than %zu bytes", limit);
            return;
        }
        done(c, (const uint8_t *)req->entity.base, req->entity.len);
        return;
    }
    size_t declared = vg_http_body_length(req);
    if (declared != SIZE_MAX && declared > limit) {
        send_error(c, 413, "request body larger than %zu bytes", limit);
        return;
    }
    c->body_limit = limit;
    c->body_done = done;
    vg_http_body_read(req, limit, on_body_piece, c);
}

/* A JSON object body, or an answer (400/413) and NULL. The caller owns
 * the result. */
static json_t *json_body(struct call *c, const uint8_t *p, size_t n)
{
    json_error_t jerr;
    json_t *j = json_loadb((const char *)p, n, JSON_REJECT_DUPLICATES, &jerr);
    if (!j) {
        send_error(c, 400, "malformed JSON: %s (line %d, column %d)", jerr.text, jerr.line, jerr.column);
        return NULL;
    }
    if (!json_is_object(j)) {
        json_decref(j);
        send_error(c, 400, "the body must be a JSON object");
        return NULL;
    }
    return j;
}

/* A string member (NULL when absent or not a string). */
static const char *jstr(json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

/* ---- apps ---- */

static void apps_list(struct call *c)
{
    json_t *j;
    int rc = vg__control_apps_list(c->srv->store, &j);
    if (rc)
        return send_store_error(c, rc);
    send_json(c, 200, json_pack("{s:o}", "apps", j));
}

static void app_create_body(struct call *c, const uint8_t *p, size_t n)
{
    json_t *b = json_body(c, p, n);
    if (!b)
        return;
    const char *name = jstr(b, "name");
    if (!name || !app_name_ok(name)) {
        json_decref(b);
        return send_error(c, 400, "'name' must be an app name (lowercase letters, digits and '-', 1 to 63)");
    }
    bool created;
    int rc = vg__control_app_create(c->srv->store, name, c->actor.name, &created);
    json_t *app = NULL;
    if (rc == 0)
        rc = vg__control_app_get(c->srv->store, name, &app);
    json_decref(b);
    if (rc)
        return send_store_error(c, rc);
    json_object_set_new(app, "created", json_boolean(created));
    send_json(c, created ? 201 : 200, app);
}

static void app_create(struct call *c)
{
    read_body(c, JSON_BODY_MAX, app_create_body);
}

static bool check_app(struct call *c, const char *app)
{
    if (!app_name_ok(app)) {
        send_error(c, 404, "no app '%s' (not a valid app name)", app);
        return false;
    }
    return true;
}

static void app_get(struct call *c)
{
    if (!check_app(c, c->seg[1]))
        return;
    json_t *j;
    int rc = vg__control_app_get(c->srv->store, c->seg[1], &j);
    if (rc == VG_ENOENT)
        return send_error(c, 404, "no app '%s'", c->seg[1]);
    if (rc)
        return send_store_error(c, rc);
    send_json(c, 200, j);
}

/* ---- placement ---- */

static void placement_get(struct call *c)
{
    json_t *j = NULL;
    if (!check_app(c, c->seg[1]))
        return;
    int rc = vg__control_app_get(c->srv->store, c->seg[1], &j);
    json_decref(j);
    if (rc == VG_ENOENT)
        return send_error(c, 404, "no app '%s'", c->seg[1]);
    if (rc == 0)
        rc = vg__control_place_get(c->srv, c->seg[1], &j);
    if (rc)
        return send_store_error(c, rc);
    send_json(c, 200, j);
}

/* {"placement": {...}}: the policy as a manifest would give it (the CLI
 * reads the manifest and sends its section). */
static void placement_plan_body(struct call *c, const uint8_t *p, size_t n)
{
    json_t *b = json_body(c, p, n), *out;
    if (!b)
        return;
    char err[256];
    int rc = vg__control_place_plan(c->srv, c->seg[1], json_object_get(b, "placement"), &out, err, sizeof(err));
    json_decref(b);
    if (rc == VG_EINVAL)
        return send_error(c, 400, "%s", err);
    if (rc)
        return send_store_error(c, rc);
    send_json(c, 200, out);
}

static void placement_plan(struct call *c)
{
    if (check_app(c, c->seg[1]))
        read_body(c, JSON_BODY_MAX, placement_plan_body);
}

/* ---- versions ---- */

static void versions_list(struct call *c)
{
    if (!check_app(c, c->seg[1]))
        return;
    json_t *j;
    int rc = vg__control_versions_list(c->srv->store, c->seg[1], &j);
    if (rc == VG_ENOENT)
        return send_error(c, 404, "no app '%s'", c->seg[1]);
    if (rc)
        return send_store_error(c, rc);
    send_json(c, 200, json_pack("{s:s,s:o}", "app", c->seg[1], "versions", j));
}

static void version_get(struct call *c)
{
    if (!check_app(c, c->seg[1]))
        return;
    json_t *j;
    int rc = sha_ok(c->seg[3]) ? vg__control_version_get(c->srv->store, c->seg[1], c->seg[3], &j) : VG_ENOENT;
    if (rc == VG_ENOENT)
        return send_error(c, 404, "app '%s' has no version '%s'", c->seg[1], c->seg[3]);
    if (rc)
        return send_store_error(c, rc);
    send_json(c, 200, j);
}

/* Writes the bundle as bundles/<id>.tar.gz: a temp file, fsync, rename,
 * fsync of the directory, so the name never shows a partial file. */
static int bundle_store(struct vg_control_server *srv, const char *id, const uint8_t *p, size_t n)
{
    char *final = vg_xasprintf("%s/%s.tar.gz", srv->bundles_dir, id);
    char *tmp = vg_xasprintf("%s/.tmp-%s-XXXXXX", srv->bundles_dir, id);
    int rc = VG_EIO, fd = -1, dfd = -1;
    struct stat st;
    if (stat(final, &st) == 0 && (size_t)st.st_size == n) {
        rc = 0; /* written before (a version whose row was lost cannot happen; a retry can) */
        goto out;
    }
    if ((fd = mkstemp(tmp)) < 0)
        goto out;
    for (size_t off = 0; off < n;) {
        ssize_t w = write(fd, p + off, n - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            goto out;
        off += (size_t)w;
    }
    if (fchmod(fd, 0644) != 0 || fsync(fd) != 0 || close(fd) != 0) {
        fd = -1;
        goto out;
    }
    fd = -1;
    if (rename(tmp, final) != 0)
        goto out;
    if ((dfd = open(srv->bundles_dir, O_RDONLY | O_DIRECTORY)) < 0 || fsync(dfd) != 0)
        goto out;
    rc = 0;
out:
    if (rc)
        vg_log(VG_LOG_ERROR, "cannot store a bundle", "path", final, "reason", strerror(errno), NULL);
    if (fd >= 0) {
        close(fd);
        unlink(tmp);
    } else if (rc) {
        unlink(tmp);
    }
    if (dfd >= 0)
        close(dfd);
    free(final);
    free(tmp);
    return rc;
}

/* "/data/tmp/upload-x/verge.yaml" -> "verge.yaml": messages name files
 * inside the bundle. */
static const char *rel_to(const char *path, const char *dir)
{
    size_t n = strlen(dir);
    return strncmp(path, dir, n) == 0 && path[n] == '/' ? path + n + 1 : path;
}

static void rel_msg(const char *msg, const char *dir, char *out, size_t cap)
{
    /* Lua errors carry the path inside the message too */
    size_t n = strlen(dir), o = 0;
    for (const char *m = msg; *m && o + 1 < cap;) {
        if (strncmp(m, dir, n) == 0 && m[n] == '/') {
            m += n + 1;
            continue;
        }
        out[o++] = *m++;
    }
    out[o] = '\0';
}

/* 422 with the manifest checker's error, as `verge check` prints it. */
static void send_invalid(struct call *c, const struct vg_conf_error *err, const char *dir)
{
    char msg[600], text[1300];
    rel_msg(err->msg, dir, msg, sizeof(msg));
    const char *file = rel_to(err->file, dir);
    if (err->line > 0)
        snprintf(text, sizeof(text), "%s:%d:%d: %s", file, err->line, err->col, msg);
    else
        snprintf(text, sizeof(text), "%s: %s", file, msg);
    json_t *e = json_pack("{s:s,s:i,s:i,s:s,s:s}", "file", file, "line", err->line, "col", err->col, "message", msg,
                          "text", text);
    send_json(c, 422, json_pack("{s:s,s:[o]}", "error", "invalid app", "errors", e));
}

static bool content_type_ok(h2o_req_t *req)
{
    ssize_t i = h2o_find_header(&req->headers, H2O_TOKEN_CONTENT_TYPE, -1);
    if (i < 0)
        return false;
    h2o_iovec_t v = req->headers.entries[i].value;
    size_t n = v.len;
    const char *semi = memchr(v.base, ';', v.len);
    if (semi)
        n = (size_t)(semi - v.base);
    while (n && (v.base[n - 1] == ' ' || v.base[n - 1] == '\t'))
        n--;
    static const char *const ok[] = {"application/gzip", "application/x-gzip", "application/octet-stream"};
    for (size_t k = 0; k < VG_ARRAY_LEN(ok); k++)
        if (n == strlen(ok[k]) && strncasecmp(v.base, ok[k], n) == 0)
            return true;
    return false;
}

static void version_upload_body(struct call *c, const uint8_t *p, size_t n)
{
    struct vg_control_server *srv = c->srv;
    const char *app = c->seg[1];
    char id[65];
    vg_bundle_sha256_hex(p, n, id);
    json_t *j;
    int rc = vg__control_version_get(srv->store, app, id, &j);
    if (rc == 0) { /* the same bytes again: the same version */
        json_object_set_new(j, "created", json_false());
        return send_json(c, 200, j);
    }
    if (rc != VG_ENOENT)
        return send_store_error(c, rc);

    char *tmp = vg_xasprintf("%s/upload-XXXXXX", srv->tmp_dir);
    if (!mkdtemp(tmp)) {
        vg_log(VG_LOG_ERROR, "cannot create a temporary directory", "path", tmp, "reason", strerror(errno), NULL);
        free(tmp);
        return send_store_error(c, VG_EIO);
    }
    char err[512];
    uint64_t entries = 0, unpacked = 0;
    struct vg_conf_app *conf = NULL;
    struct vg_conf_error cerr;
    rc = vg_bundle_unpack(p, n, tmp, &srv->opt.bundle, &entries, &unpacked, err, sizeof(err));
    if (rc == VG_ELIMIT) {
        send_error(c, 413, "bundle refused: %s", err);
        goto out;
    }
    if (rc == VG_EPARSE || rc == VG_EINVAL) {
        send_error(c, 400, "bundle refused: %s", err);
        goto out;
    }
    if (rc) {
        vg_log(VG_LOG_ERROR, "cannot unpack a bundle", "reason", err, NULL);
        send_store_error(c, rc);
        goto out;
    }
    /* the checks `verge check` makes: the manifest, then the Lua files */
    if (vg_conf_app_load(tmp, &conf, &cerr) != 0) {
        conf = NULL;
        send_invalid(c, &cerr, tmp);
        goto out;
    }
    if (vg_fn_check(conf, &cerr) != 0) {
        send_invalid(c, &cerr, tmp);
        goto out;
    }
    if (strcmp(conf->name, app) != 0) {
        struct vg_conf_error e = {.line = 0};
        snprintf(e.file, sizeof(e.file), "verge.yaml");
        snprintf(e.msg, sizeof(e.msg), "the manifest names the app '%s' but this upload is for '%s'", conf->name, app);
        send_invalid(c, &e, tmp);
        goto out;
    }
    if ((rc = bundle_store(srv, id, p, n)) != 0) {
        send_store_error(c, rc);
        goto out;
    }
    json_t *rj = vg__control_rollout_settings_json(&conf->rollout);
    char *rollout = json_dumps(rj, JSON_COMPACT);
    json_decref(rj);
    json_t *pj = vg_control_placement_json(&conf->placement);
    char *placement = pj ? json_dumps(pj, JSON_COMPACT) : NULL;
    json_decref(pj);
    struct vg__control_version v = {.id = id,
                                    .app = app,
                                    .size = n,
                                    .entries = entries,
                                    .unpacked = unpacked,
                                    .rollout = rollout,
                                    .placement = placement};
    bool created;
    rc = vg__control_version_add(srv->store, &v, c->actor.name, &created);
    free(rollout);
    free(placement);
    if (rc == VG_EEXIST) {
        send_error(c, 409, "version %s belongs to another app", id);
        goto out;
    }
    if (rc == 0)
        rc = vg__control_version_get(srv->store, app, id, &j);
    if (rc) {
        send_store_error(c, rc);
        goto out;
    }
    json_object_set_new(j, "created", json_boolean(created));
    send_json(c, created ? 201 : 200, j);
out:
    if (conf)
        vg_conf_app_destroy(conf);
    if (vg_bundle_rmtree(tmp) != 0)
        vg_log(VG_LOG_WARN, "cannot remove a temporary directory", "path", tmp, NULL);
    free(tmp);
}

static void version_upload(struct call *c)
{
    if (!app_name_ok(c->seg[1]))
        return send_error(c, 400, "'%s' is not a valid app name (lowercase letters, digits and '-', 1 to 63)",
                          c->seg[1]);
    if (!content_type_ok(c->req))
        return send_error(c, 415, "a bundle is sent as Content-Type: application/gzip");
    read_body(c, (size_t)c->srv->opt.bundle.max_bytes, version_upload_body);
}

static void bundle_get(struct call *c)
{
    const char *id = c->seg[1];
    bool known = false;
    int rc = sha_ok(id) ? vg__control_bundle_known(c->srv->store, id, &known) : 0;
    if (rc)
        return send_store_error(c, rc);
    if (!known)
        return send_error(c, 404, "no bundle '%s'", id);
    char *path = vg_xasprintf("%s/%s.tar.gz", c->srv->bundles_dir, id);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    free(path);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        if (fd >= 0)
            close(fd);
        vg_log(VG_LOG_ERROR, "a known bundle is missing on disk", "id", id, NULL);
        return send_store_error(c, VG_EIO);
    }
    h2o_req_t *req = c->req;
    char *etag = h2o_mem_alloc_pool(&req->pool, 67);
    snprintf(etag, 67, "\"%s\"", id);
    req->res.status = 200;
    req->res.reason = "OK";
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, H2O_STRLIT("application/gzip"));
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ETAG, NULL, etag, 66);
    log_call(c, 200);
    if (vg_http_send_file(req, fd, (size_t)st.st_size))
        return;
    /* TLS or HTTP/2: from memory (bundles are bounded by max_bundle) */
    char *buf = h2o_mem_alloc_pool(&req->pool, (size_t)st.st_size + 1);
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t r = read(fd, buf + got, (size_t)st.st_size - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    close(fd);
    req->res.content_length = got;
    h2o_send_inline(req, buf, got);
}

/* ---- desired state and long polls ---- */

static void desired_set_body(struct call *c, const uint8_t *p, size_t n)
{
    json_t *b = json_body(c, p, n);
    if (!b)
        return;
    const char *version = jstr(b, "version");
    if (!version || !sha_ok(version)) {
        json_decref(b);
        return send_error(c, 400, "'version' must be a version id (64 hex digits)");
    }
    bool changed;
    int64_t dep = 0, rev = 0;
    int rc = vg__control_desired_set(c->srv->store, c->seg[1], version, c->actor.name, &changed, &dep, &rev);
    if (rc == VG_ENOENT) {
        send_error(c, 404, "app '%s' has no version '%s'", c->seg[1], version);
        json_decref(b);
        return;
    }
    if (rc) {
        json_decref(b);
        return send_store_error(c, rc);
    }
    json_t *out = json_pack("{s:s,s:s,s:b,s:I}", "app", c->seg[1], "version", version, "changed", changed, "rev",
                            (json_int_t)rev);
    if (changed)
        json_object_set_new(out, "deployment", json_integer(dep));
    json_decref(b);
    send_json(c, 200, out);
    if (changed)
        vg__control_waiters_notify(c->srv);
}

/* ---- deployments (rollouts) ---- */

static void deployment_start_body(struct call *c, const uint8_t *p, size_t n)
{
    json_t *b = json_body(c, p, n);
    if (!b)
        return;
    const char *version = jstr(b, "version");
    if (!version || !sha_ok(version)) {
        json_decref(b);
        return send_error(c, 400, "'version' must be a version id (64 hex digits)");
    }
    char err[512] = "";
    int64_t id = 0;
    int rc = vg__control_rollout_start(c->srv, c->seg[1], version, c->actor.name, &id, err, sizeof(err));
    if (rc == 0 && id == 0)
        send_json(c, 200, json_pack("{s:s,s:s,s:b}", "app", c->seg[1], "version", version, "changed", 0));
    json_decref(b); /* version points into it */
    if (rc == VG_ENOENT)
        return send_error(c, 404, "%s", err);
    if (rc == VG_EEXIST)
        return send_error(c, 409, "%s", err);
    if (rc)
        return send_store_error(c, rc);
    if (id == 0)
        return;
    json_t *j;
    if ((rc = vg__control_deployment_get(c->srv, c->seg[1], id, &j)) != 0)
        return send_store_error(c, rc);
    json_object_set_new(j, "changed", json_true());
    char *loc = vg_xasprintf("/v1/apps/%s/deployments/%lld", c->seg[1], (long long)id);
    h2o_add_header(&c->req->pool, &c->req->res.headers, H2O_TOKEN_LOCATION, NULL,
                   h2o_strdup(&c->req->pool, loc, SIZE_MAX).base, strlen(loc));
    free(loc);
    send_json(c, 201, j);
}

static void deployment_start(struct call *c)
{
    if (!check_app(c, c->seg[1]))
        return;
    read_body(c, JSON_BODY_MAX, deployment_start_body);
}

static void deployments_list(struct call *c)
{
    if (!check_app(c, c->seg[1]))
        return;
    json_t *a;
    int rc = vg__control_app_get(c->srv->store, c->seg[1], &a);
    if (rc == VG_ENOENT)
        return send_error(c, 404, "no app '%s'", c->seg[1]);
    if (rc)
        return send_store_error(c, rc);
    json_decref(a);
    const char *lim = query_param(c, "limit");
    int64_t limit = 20;
    if (lim && !parse_int(lim, 1, HISTORY_LIMIT_MAX, &limit))
        return send_error(c, 400, "'limit' must be from 1 to %d", HISTORY_LIMIT_MAX);
    json_t *j;
    rc = vg__control_deployments_list(c->srv, c->seg[1], limit, &j);
    if (rc)
        return send_store_error(c, rc);
    send_json(c, 200, json_pack("{s:s,s:o}", "app", c->seg[1], "deployments", j));
}

static void deployment_get(struct call *c)
{
    if (!check_app(c, c->seg[1]))
        return;
    int64_t id;
    if (!parse_int(c->seg[3], 1, INT64_MAX, &id))
        return send_error(c, 404, "no deployment '%s' of app '%s'", c->seg[3], c->seg[1]);
    json_t *j;
    int rc = vg__control_deployment_get(c->srv, c->seg[1], id, &j);
    if (rc == VG_ENOENT)
        return send_error(c, 404, "no deployment %lld of app '%s'", (long long)id, c->seg[1]);
    if (rc)
        return send_store_error(c, rc);
    send_json(c, 200, j);
}

static void desired_set(struct call *c)
{
    if (!check_app(c, c->seg[1]))
        return;
    read_body(c, JSON_BODY_MAX, desired_set_body);
}

static void waiter_unlink(struct vg__control_waiter *w)
{
    if (!w->prev)
        return;
    w->prev->next = w->next;
    w->next->prev = w->prev;
    w->prev = w->next = NULL;
    w->srv->n_waiters--;
}

static void waiter_dispose(void *p)
{
    struct vg__control_waiter *w = p; /* the client went away, or it was answered */
    waiter_unlink(w);
}

static void send_not_modified(h2o_req_t *req, int64_t rev)
{
    char r[24];
    int n = snprintf(r, sizeof(r), "%lld", (long long)rev);
    req->res.status = 304;
    req->res.reason = "Not Modified";
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-verge-rev"), 0, NULL,
                          h2o_strdup(&req->pool, r, (size_t)n).base, (size_t)n);
    h2o_send_inline(req, NULL, 0);
}

/* The desired state for node as the answer to c's request. */
static void send_desired(struct vg_control_server *srv, h2o_req_t *req, const char *node)
{
    json_t *j;
    int rc = vg__control_desired_for_node(srv->store, node, &j);
    if (rc) {
        vg_http_send_text(req, 500, "application/json", H2O_STRLIT("{\"error\":\"internal error\"}\n"));
        return;
    }
    vg__control_place_filter(srv, node, j);
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    size_t n = strlen(s);
    char *body = h2o_mem_alloc_pool(&req->pool, n + 1);
    memcpy(body, s, n);
    body[n++] = '\n';
    free(s);
    vg_http_send_text(req, 200, "application/json", body, n);
}

void vg__control_waiters_notify(struct vg_control_server *srv)
{
    vg__control_place_sync(srv); /* a new desired version may move its app */
    int64_t rev = vg__control_rev(srv->store);
    struct vg__control_waiter *head = &srv->waiters;
    for (struct vg__control_waiter *w = head->next, *next; w != head; w = next) {
        next = w->next;
        if (rev <= w->since)
            continue;
        waiter_unlink(w);
        send_desired(srv, w->req, w->node);
    }
    vg__control_waiters_rearm(srv);
}

void vg__control_waiters_expire(struct vg_control_server *srv)
{
    uint64_t now = vg_now_ms();
    int64_t rev = vg__control_rev(srv->store);
    struct vg__control_waiter *head = &srv->waiters;
    for (struct vg__control_waiter *w = head->next, *next; w != head; w = next) {
        next = w->next;
        if (w->deadline_ms > now)
            continue;
        waiter_unlink(w);
        send_not_modified(w->req, rev);
    }
    vg__control_waiters_rearm(srv);
}

static void on_poll_timer(uv_timer_t *t)
{
    vg__control_waiters_expire(t->data);
}

void vg__control_waiters_rearm(struct vg_control_server *srv)
{
    uint64_t first = UINT64_MAX;
    struct vg__control_waiter *head = &srv->waiters;
    for (struct vg__control_waiter *w = head->next; w != head; w = w->next)
        if (w->deadline_ms < first)
            first = w->deadline_ms;
    if (first == UINT64_MAX) {
        uv_timer_stop(&srv->poll_timer);
        return;
    }
    uint64_t now = vg_now_ms();
    uv_update_time(&srv->uv);
    uv_timer_start(&srv->poll_timer, on_poll_timer, first > now ? first - now : 0, 0);
}

static void node_desired(struct call *c)
{
    struct vg_control_server *srv = c->srv;
    const char *node = c->seg[1];
    const char *since_s = query_param(c, "since"), *wait_s = query_param(c, "wait");
    int64_t since = -1, wait = 0;
    if (since_s && !parse_int(since_s, 0, INT64_MAX, &since))
        return send_error(c, 400, "'since' must be a revision (an integer >= 0)");
    if (wait_s && !parse_int(wait_s, 0, srv->opt.max_wait_s, &wait))
        return send_error(c, 400, "'wait' must be seconds from 0 to %u", srv->opt.max_wait_s);
    bool exists = false;
    int rc = vg__control_node_exists(srv->store, node, &exists);
    if (rc)
        return send_store_error(c, rc);
    if (!exists)
        return send_error(c, 404, "no node '%s' (a node registers first)", node);
    int64_t rev = vg__control_rev(srv->store);
    if (rev > since) {
        log_call(c, 200);
        return send_desired(srv, c->req, node);
    }
    if (wait == 0) {
        log_call(c, 304);
        return send_not_modified(c->req, rev);
    }
    struct vg__control_waiter *w = h2o_mem_alloc_shared(&c->req->pool, sizeof(*w), waiter_dispose);
    *w = (struct vg__control_waiter){.srv = srv,
                                     .req = c->req,
                                     .node = h2o_strdup(&c->req->pool, node, SIZE_MAX).base,
                                     .since = since,
                                     .deadline_ms = vg_now_ms() + (uint64_t)wait * 1000};
    struct vg__control_waiter *head = &srv->waiters;
    w->next = head;
    w->prev = head->prev;
    head->prev->next = w;
    head->prev = w;
    srv->n_waiters++;
    log_call(c, 0); /* status 0: held as a long poll */
    vg__control_waiters_rearm(srv);
}

/* ---- nodes ---- */

/* Labels: strings of at most 1 KiB under keys of at most 128 bytes. */
static bool labels_ok(json_t *labels)
{
    const char *k;
    json_t *v;
    json_object_foreach(labels, k, v)
    {
        if (!json_is_string(v) || strlen(k) > 128 || strlen(json_string_value(v)) > 1024)
            return false;
    }
    return true;
}

static void node_register_body(struct call *c, const uint8_t *p, size_t n)
{
    json_t *b = json_body(c, p, n);
    if (!b)
        return;
    const char *id = jstr(b, "id"), *location = jstr(b, "location");
    json_t *labels = json_object_get(b, "labels");
    const char *why = NULL;
    if (!id || !vg__control_name_ok(id))
        why = "'id' must be a node id ([A-Za-z0-9._-], 1 to 64)";
    else if (!location || !*location || strlen(location) > 128)
        why = "'location' must be a location id (1 to 128 bytes)";
    else if (labels && !json_is_object(labels))
        why = "'labels' must be an object of strings";
    if (!why && labels && !labels_ok(labels))
        why = "'labels' must be an object of strings";
    if (why) {
        json_decref(b);
        return send_error(c, 400, "%s", why);
    }
    json_t *l = labels ? json_incref(labels) : json_object();
    int rc = vg__control_node_register(c->srv->store, id, location, l, c->actor.name);
    json_decref(l);
    if (rc) {
        json_decref(b);
        return send_store_error(c, rc);
    }
    /* a new location has capacity: the scheduler may use it at once */
    if (vg__control_place_run(c->srv, "node") == 0)
        vg__control_waiters_notify(c->srv);
    json_t *out =
        json_pack("{s:s,s:s,s:I}", "id", id, "location", location, "rev", (json_int_t)vg__control_rev(c->srv->store));
    json_decref(b);
    send_json(c, 200, out);
}

static void node_register(struct call *c)
{
    read_body(c, JSON_BODY_MAX, node_register_body);
}

static void node_heartbeat_body(struct call *c, const uint8_t *p, size_t n)
{
    json_t *b = json_body(c, p, n);
    if (!b)
        return;
    json_t *apps = json_object_get(b, "apps");
    if (apps && !json_is_object(apps)) {
        json_decref(b);
        return send_error(c, 400, "'apps' must be an object: {app: {version, health, rps, errors}}");
    }
    const char *app;
    json_t *rep;
    json_object_foreach(apps, app, rep)
    { /* a report about an app the control plane has never heard of is a mistake: nothing is stored */
        json_t *known = NULL;
        int arc = vg__control_app_get(c->srv->store, app, &known);
        json_decref(known);
        if (arc == VG_ENOENT) { /* app points into b: answer before it goes */
            send_error(c, 422, "the report names app '%s', which this control plane does not have", app);
            json_decref(b);
            return;
        }
        if (arc) {
            json_decref(b);
            return send_store_error(c, arc);
        }
    }
    int rc = vg__control_node_heartbeat(c->srv->store, c->seg[1], b);
    if (rc) {
        json_decref(b);
        if (rc == VG_ENOENT)
            return send_error(c, 404, "no node '%s' (a node registers first)", c->seg[1]);
        return send_store_error(c, rc);
    }
    /* the live figures, when no bus brings them (or fresher than the bus's) */
    vg__control_top_ingest(c->srv->top, c->seg[1], b, vg_now_ms(), VG__CONTROL_TOP_HEARTBEAT);
    vg__control_place_report(c->srv, c->seg[1], b);
    json_decref(b);
    send_json(c, 200, json_pack("{s:s,s:I}", "id", c->seg[1], "rev", (json_int_t)vg__control_rev(c->srv->store)));
    vg__control_rollout_tick(c->srv); /* act on the report now */
}

static void node_heartbeat(struct call *c)
{
    read_body(c, JSON_BODY_MAX, node_heartbeat_body);
}

static void nodes_list(struct call *c)
{
    json_t *j;
    int rc = vg__control_nodes_list(c->srv->store, vg_wall_us() / 1000, c->srv->opt.node_timeout_ms, &j);
    if (rc)
        return send_store_error(c, rc);
    send_json(c, 200, json_pack("{s:o}", "nodes", j));
}

/* ---- live figures ---- */

static void top_get(struct call *c)
{
    send_json(c, 200, vg__control_top_json(c->srv->top, vg_now_ms()));
}

/* ---- history ---- */

static void history_list(struct call *c)
{
    const char *app = query_param(c, "app"), *lim = query_param(c, "limit");
    int64_t limit = 100;
    if (lim && !parse_int(lim, 1, HISTORY_LIMIT_MAX, &limit))
        return send_error(c, 400, "'limit' must be from 1 to %d", HISTORY_LIMIT_MAX);
    if (app && !app_name_ok(app))
        return send_error(c, 400, "'app' must be an app name");
    json_t *j;
    int rc = vg__control_history_list(c->srv->store, app, limit, &j);
    if (rc)
        return send_store_error(c, rc);
    send_json(c, 200, json_pack("{s:o}", "history", j));
}

/* ---- tokens ---- */

static void tokens_reload(struct call *c)
{
    if (vg__control_auth_load(c->srv->auth, c->srv->store) != 0)
        vg_log(VG_LOG_ERROR, "cannot reload the token table", NULL);
    c->actor.name = c->actor_name; /* the table's strings were replaced */
}

static void token_create_body(struct call *c, const uint8_t *p, size_t n)
{
    json_t *b = json_body(c, p, n);
    if (!b)
        return;
    const char *name = jstr(b, "name"), *scope_s = jstr(b, "scope");
    unsigned scope = vg__control_scope_parse(scope_s);
    if (!name || !vg__control_name_ok(name)) {
        json_decref(b);
        return send_error(c, 400, "'name' must be a token name ([A-Za-z0-9._-], 1 to 64)");
    }
    if (!scope) {
        json_decref(b);
        return send_error(c, 400, "'scope' must be one of read, deploy, admin, node");
    }
    /* "expires_in": seconds (a number) or a duration ("30d", "12h") */
    json_t *ein = json_object_get(b, "expires_in");
    uint64_t in_ms = 0;
    if (ein &&
        !(json_is_integer(ein) && json_integer_value(ein) > 0 &&
          (in_ms = (uint64_t)json_integer_value(ein) * 1000) > 0) &&
        !(json_is_string(ein) && vg_parse_duration_ms(json_string_value(ein), &in_ms) == 0 && in_ms > 0)) {
        json_decref(b);
        return send_error(c, 400, "'expires_in' must be seconds (> 0) or a duration like \"30d\"");
    }
    int64_t expires_at = in_ms ? (int64_t)(vg_wall_us() / 1000 + in_ms) : 0;
    char secret[69];
    uint8_t hash[32];
    int rc = vg__control_secret_new(secret);
    if (rc == 0) {
        vg__control_secret_hash(secret, strlen(secret), hash);
        rc = vg__control_token_insert(c->srv->store, name, scope, hash, c->actor.name, expires_at);
    }
    if (rc == VG_EEXIST) {
        send_error(c, 409, "a token named '%s' exists (revoked names stay taken)", name);
        json_decref(b);
        return;
    }
    if (rc) {
        json_decref(b);
        return send_store_error(c, rc);
    }
    tokens_reload(c);
    json_t *out = json_pack("{s:s,s:s,s:s}", "name", name, "scope", vg__control_scope_name(scope), "secret", secret);
    json_decref(b);
    send_json(c, 201, out);
}

static void token_create(struct call *c)
{
    read_body(c, JSON_BODY_MAX, token_create_body);
}

static void tokens_list(struct call *c)
{
    json_t *j;
    int rc = vg__control_tokens_list(c->srv->store, &j);
    if (rc)
        return send_store_error(c, rc);
    send_json(c, 200, json_pack("{s:o}", "tokens", j));
}

static void token_revoke(struct call *c)
{
    const char *name = c->seg[1];
    int rc = vg__control_name_ok(name) ? vg__control_token_revoke(c->srv->store, name, c->actor.name) : VG_ENOENT;
    if (rc == VG_ENOENT)
        return send_error(c, 404, "no live token named '%s'", name);
    if (rc)
        return send_store_error(c, rc);
    tokens_reload(c);
    send_json(c, 200, json_pack("{s:s,s:b}", "name", name, "revoked", 1));
}

/* ---- routing ---- */

struct route {
    const char *method;
    const char *pat[MAX_SEGS]; /* "*" matches one segment */
    unsigned scopes;
    void (*fn)(struct call *c);
};

static const struct route routes[] = {
    {"GET", {"apps"}, SCOPE_R, apps_list},
    {"POST", {"apps"}, SCOPE_D, app_create},
    {"GET", {"apps", "*"}, SCOPE_R, app_get},
    {"GET", {"apps", "*", "versions"}, SCOPE_R, versions_list},
    {"POST", {"apps", "*", "versions"}, SCOPE_D, version_upload},
    {"GET", {"apps", "*", "versions", "*"}, SCOPE_R, version_get},
    {"PUT", {"apps", "*", "desired"}, SCOPE_D, desired_set},
    {"GET", {"apps", "*", "deployments"}, SCOPE_R, deployments_list},
    {"POST", {"apps", "*", "deployments"}, SCOPE_D, deployment_start},
    {"GET", {"apps", "*", "deployments", "*"}, SCOPE_R, deployment_get},
    {"GET", {"apps", "*", "placement"}, SCOPE_R, placement_get},
    {"POST", {"apps", "*", "placement", "plan"}, SCOPE_R, placement_plan},
    {"GET", {"bundles", "*"}, SCOPE_R | SCOPE_N, bundle_get},
    {"POST", {"nodes", "register"}, SCOPE_N, node_register},
    {"GET", {"nodes"}, SCOPE_R, nodes_list},
    {"POST", {"nodes", "*", "heartbeat"}, SCOPE_N, node_heartbeat},
    {"GET", {"nodes", "*", "desired"}, SCOPE_R | SCOPE_N, node_desired},
    {"GET", {"history"}, SCOPE_R, history_list},
    {"GET", {"top"}, SCOPE_R, top_get},
    {"GET", {"tokens"}, SCOPE_A, tokens_list},
    {"POST", {"tokens"}, SCOPE_A, token_create},
    {"DELETE", {"tokens", "*"}, SCOPE_A, token_revoke},
};

static bool route_matches_path(const struct route *r, struct call *c)
{
    size_t n = 0;
    while (n < MAX_SEGS && r->pat[n])
        n++;
    if (n != c->n_seg)
        return false;
    for (size_t i = 0; i < n; i++)
        if (strcmp(r->pat[i], "*") != 0 && strcmp(r->pat[i], c->seg[i]) != 0)
            return false;
    return true;
}

/* Splits the path after "/v1/" into c->seg (pool copies); false when it is
 * not a /v1 path or has too many segments. */
static bool split_path(struct call *c)
{
    h2o_iovec_t p = c->req->path_normalized;
    if (p.len < 4 || memcmp(p.base, "/v1/", 4) != 0)
        return false;
    const char *s = p.base + 4, *end = p.base + p.len;
    while (s <= end) {
        const char *slash = memchr(s, '/', (size_t)(end - s));
        const char *e = slash ? slash : end;
        if (c->n_seg == MAX_SEGS)
            return false;
        c->seg[c->n_seg++] = h2o_strdup(&c->req->pool, s, (size_t)(e - s)).base;
        if (!slash)
            break;
        s = slash + 1;
    }
    return true;
}

static bool authenticate(struct call *c)
{
    h2o_req_t *req = c->req;
    ssize_t i = h2o_find_header(&req->headers, H2O_TOKEN_AUTHORIZATION, -1);
    if (i < 0) {
        send_error(c, 401, "an API token is needed: Authorization: Bearer <token>");
        return false;
    }
    h2o_iovec_t v = req->headers.entries[i].value;
    if (v.len < 8 || strncasecmp(v.base, "bearer ", 7) != 0) {
        send_error(c, 401, "the Authorization header must be 'Bearer <token>'");
        return false;
    }
    const char *t = v.base + 7;
    size_t n = v.len - 7;
    while (n && *t == ' ') {
        t++;
        n--;
    }
    int rc = vg__control_auth_check(c->srv->auth, t, n, &c->actor);
    if (rc) {
        send_error(c, 401, rc == VG_ELIMIT ? "the token has expired" : "unknown or revoked token");
        return false;
    }
    snprintf(c->actor_name, sizeof(c->actor_name), "%s", c->actor.name);
    c->actor.name = c->actor_name;
    return true;
}

static int on_req(h2o_handler_t *self, h2o_req_t *req)
{
    struct vg_control_server *srv = ((struct api_handler *)self)->srv;
    struct call *c = h2o_mem_alloc_shared(&req->pool, sizeof(*c), call_dispose);
    *c = (struct call){.req = req, .srv = srv, .start_us = vg_now_us()};

    if (h2o_memis(req->path_normalized.base, req->path_normalized.len, H2O_STRLIT("/_verge/health"))) {
        vg_http_send_text(req, 200, "application/json", H2O_STRLIT("{\"ok\":true}\n"));
        return 0;
    }
    if (!split_path(c)) {
        send_error(c, 404, "no such endpoint (the API is under /v1/, see docs/api.md)");
        return 0;
    }
    if (!authenticate(c))
        return 0;
    const struct route *match = NULL;
    char allow[64] = "";
    bool path_known = false;
    for (size_t i = 0; i < VG_ARRAY_LEN(routes); i++) {
        const struct route *r = &routes[i];
        if (!route_matches_path(r, c))
            continue;
        path_known = true;
        if (h2o_memis(req->method.base, req->method.len, r->method, strlen(r->method))) {
            match = r;
            break;
        }
        size_t o = strlen(allow);
        snprintf(allow + o, sizeof(allow) - o, "%s%s", o ? ", " : "", r->method);
    }
    if (!match && path_known) {
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ALLOW, NULL,
                       h2o_strdup(&req->pool, allow, SIZE_MAX).base, strlen(allow));
        send_error(c, 405, "method %.*s not allowed here (allowed: %s)",
                   (int)(req->method.len > 16 ? 16 : req->method.len), req->method.base, allow);
        return 0;
    }
    if (!match) {
        send_error(c, 404, "no such endpoint (see docs/api.md)");
        return 0;
    }
    if (!(match->scopes & c->actor.scope)) {
        send_error(c, 403, "token '%s' has scope '%s', which may not do this", c->actor.name,
                   vg__control_scope_name(c->actor.scope));
        return 0;
    }
    match->fn(c);
    return 0;
}

void vg__control_api_register(struct vg_control_server *srv)
{
    struct api_handler *h = (struct api_handler *)h2o_create_handler(srv->root, sizeof(*h));
    h->super.on_req = on_req;
    h->srv = srv;
    srv->waiters.next = srv->waiters.prev = &srv->waiters;
    uv_timer_init(&srv->uv, &srv->poll_timer);
    srv->poll_timer.data = srv;
}
