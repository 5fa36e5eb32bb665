/* vg_control_run: the control plane's process. One thread: an h2o evloop
 * (verge's HTTP/1 and h2o's HTTP/2 through vg_http_accept, as on a node)
 * with a libuv loop embedded for signals and the long-poll timer; the
 * SQLite store is used from this thread only. */
#include "control_int.h"
#include "net/net.h"
#include "sched/sched.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define BODY_BUFFER_BYTES (64 * 1024)

/* Placement runs on the control plane's loop: the cores make it shorter
 * (the plan is the same); past a few the commits' order is the limit. */
#define PLACE_THREADS_DEFAULT_MAX 4

void vg_control_options_default(struct vg_control_options *opt)
{
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    *opt = (struct vg_control_options){.listen = "127.0.0.1:7070",
                                       .node_timeout_ms = 15000,
                                       .max_wait_s = 60,
                                       .place_interval_ms = 10000,
                                       .place_drain_ms = 30000,
                                       .place_site_deg = VG_SCHED_SITE_DEG,
                                       .place_threads = cpus < 1                           ? 1
                                                        : cpus > PLACE_THREADS_DEFAULT_MAX ? PLACE_THREADS_DEFAULT_MAX
                                                                                           : (unsigned)cpus};
    vg_bundle_limits_default(&opt->bundle);
}

static int mkdir_p(const char *dir, mode_t mode)
{
    return mkdir(dir, mode) == 0 || errno == EEXIST ? 0 : -1;
}

/* Writes secret to path (mode 0600) via a temp file and rename. */
static int write_secret(const char *path, const char *secret)
{
    char *tmp = vg_xasprintf("%s.tmp", path);
    int rc = -1;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd >= 0) {
        size_t n = strlen(secret);
        bool ok =
            fchmod(fd, 0600) == 0 && write(fd, secret, n) == (ssize_t)n && write(fd, "\n", 1) == 1 && fsync(fd) == 0;
        ok = close(fd) == 0 && ok;
        rc = ok && rename(tmp, path) == 0 ? 0 : -1;
    }
    if (rc)
        unlink(tmp);
    free(tmp);
    return rc;
}

/* A secret from a file: its first line, trimmed. */
static char *read_secret_file(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    char line[512];
    char *s = fgets(line, sizeof(line), f) ? line : NULL;
    fclose(f);
    if (!s)
        return NULL;
    size_t n = strlen(s);
    while (n && (s[n - 1] == '\n' || s[n - 1] == '\r' || s[n - 1] == ' ' || s[n - 1] == '\t'))
        s[--n] = '\0';
    return vg_xstrdup(s);
}

/* With no token at all in the database, the first admin token: from
 * --bootstrap-token-file, $VERGE_CONTROL_TOKEN, or a new one written to
 * DIR/admin.token. */
static int bootstrap(struct vg_control_server *srv)
{
    int64_t n;
    int rc = vg__control_tokens_count(srv->store, &n);
    if (rc || n > 0)
        return rc;
    char *secret = NULL, generated[69];
    const char *from;
    char *path = NULL;
    if (srv->opt.bootstrap_token_file) {
        secret = read_secret_file(srv->opt.bootstrap_token_file);
        from = srv->opt.bootstrap_token_file;
        if (!secret) {
            vg_log(VG_LOG_ERROR, "cannot read the bootstrap token file", "path", from, "reason", strerror(errno), NULL);
            return VG_EIO;
        }
    } else if (srv->opt.bootstrap_token) {
        secret = vg_xstrdup(srv->opt.bootstrap_token);
        from = "$VERGE_CONTROL_TOKEN";
    } else {
        if ((rc = vg__control_secret_new(generated)) != 0)
            return rc;
        secret = vg_xstrdup(generated);
        path = vg_xasprintf("%s/admin.token", srv->opt.data_dir);
        from = path;
        /* the file first: a token whose secret nobody has would lock everyone out */
        if (write_secret(path, secret) != 0) {
            vg_log(VG_LOG_ERROR, "cannot write the admin token", "path", path, "reason", strerror(errno), NULL);
            free(secret);
            free(path);
            return VG_EIO;
        }
    }
    if (strlen(secret) < 16 || strlen(secret) > 256) {
        vg_log(VG_LOG_ERROR, "the bootstrap token must be 16 to 256 bytes", "from", from, NULL);
        free(secret);
        free(path);
        return VG_EINVAL;
    }
    uint8_t hash[32];
    vg__control_secret_hash(secret, strlen(secret), hash);
    rc = vg__control_token_insert(srv->store, "admin", VG__CONTROL_SCOPE_ADMIN, hash, "bootstrap", 0);
    if (rc == 0)
        vg_log(VG_LOG_INFO, "created the admin token (scope admin)", "secret_in", from, NULL);
    free(secret);
    free(path);
    return rc;
}

static void on_accept(h2o_socket_t *listener, const char *err)
{
    struct vg_control_server *srv = listener->data;
    if (err)
        return;
    h2o_socket_t *sock;
    while ((sock = h2o_evloop_socket_accept(listener)) != NULL) {
        static h2o_accept_ctx_t accept_ctx; /* one listener, one context */
        accept_ctx = (h2o_accept_ctx_t){.ctx = &srv->ctx, .hosts = srv->gconf.hosts};
        vg_http_accept(srv->http1, &accept_ctx, sock);
    }
}

static void on_signal(uv_signal_t *s, int signum)
{
    struct vg_control_server *srv = s->data;
    vg_log(VG_LOG_INFO, "stopping", "signal", signum == SIGTERM ? "TERM" : "INT", NULL);
    srv->stop = true;
}

static void on_uv_ready(h2o_socket_t *sock, const char *err)
{
    struct vg_control_server *srv = sock->data;
    uv_run(&srv->uv, UV_RUN_NOWAIT);
}

static void run(struct vg_control_server *srv)
{
    while (!srv->stop) {
        uv_update_time(&srv->uv);
        if (uv_backend_timeout(&srv->uv) == 0)
            uv_run(&srv->uv, UV_RUN_NOWAIT);
        if (srv->stop)
            break;
        int t = uv_backend_timeout(&srv->uv);
        if (vg_http_loop_run(srv->loop, t < 0 ? INT32_MAX : t) != 0 && errno != EINTR) {
            vg_log(VG_LOG_ERROR, "event loop failed", "reason", strerror(errno), NULL);
            break;
        }
    }
}

static int open_listener(struct vg_control_server *srv)
{
    char err[256];
    int fd;
    if (vg_net_listen(srv->opt.listen, false, 512, &fd, err, sizeof(err)) != 0) {
        vg_log(VG_LOG_ERROR, "cannot listen", "addr", srv->opt.listen, "reason", err, NULL);
        return VG_ENET;
    }
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    char resolved[128] = "";
    if (getsockname(fd, (struct sockaddr *)&ss, &len) == 0)
        vg_net_addr_format((struct sockaddr *)&ss, resolved, sizeof(resolved));
    srv->listener = h2o_evloop_socket_create(srv->loop, fd, H2O_SOCKET_FLAG_DONT_READ);
    srv->listener->data = srv;
    h2o_socket_read_start(srv->listener, on_accept);
    vg_log(VG_LOG_INFO, "listening", "addr", resolved, NULL);
    return 0;
}

static int open_data(struct vg_control_server *srv)
{
    const char *dir = srv->opt.data_dir;
    srv->bundles_dir = vg_xasprintf("%s/bundles", dir);
    srv->tmp_dir = vg_xasprintf("%s/tmp", dir);
    if (mkdir_p(dir, 0700) != 0 || mkdir_p(srv->bundles_dir, 0755) != 0) {
        vg_log(VG_LOG_ERROR, "cannot create the data directory", "dir", dir, "reason", strerror(errno), NULL);
        return VG_EIO;
    }
    /* uploads being checked when the process last stopped */
    if (vg_bundle_rmtree(srv->tmp_dir) != 0 || mkdir_p(srv->tmp_dir, 0700) != 0) {
        vg_log(VG_LOG_ERROR, "cannot reset the temporary directory", "dir", srv->tmp_dir, "reason", strerror(errno),
               NULL);
        return VG_EIO;
    }
    char *db = vg_xasprintf("%s/control.db", dir);
    char err[512];
    int rc = vg__control_store_open(db, &srv->store, err, sizeof(err));
    if (rc)
        vg_log(VG_LOG_ERROR, "cannot open the database", "path", db, "reason", err, NULL);
    free(db);
    return rc;
}

static void http_init(struct vg_control_server *srv)
{
    h2o_config_init(&srv->gconf);
    srv->gconf.server_name = h2o_iovec_init(H2O_STRLIT("verge-control"));
    srv->gconf.max_request_entity_size = (size_t)srv->opt.bundle.max_bytes;
    /* a long poll holds a stream open up to max_wait_s */
    srv->gconf.http2.idle_timeout = ((uint64_t)srv->opt.max_wait_s + 30) * 1000;
    srv->hostconf = h2o_config_register_host(&srv->gconf, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    srv->root = h2o_config_register_path(srv->hostconf, "/", 0);
    srv->http1_settings = (struct vg_http1_settings){
        .header_timeout_ms = 10000,
        .idle_timeout_ms = ((uint64_t)srv->opt.max_wait_s + 30) * 1000,
        .max_header_bytes = 16384,
        .max_body_bytes = (size_t)srv->opt.bundle.max_bytes,
        .body_buffer_bytes = BODY_BUFFER_BYTES,
    };
    srv->loop = h2o_evloop_create();
    uv_loop_init(&srv->uv);
    srv->uv.data = srv;
    srv->uv_watch = h2o_evloop_socket_create(srv->loop, uv_backend_fd(&srv->uv), H2O_SOCKET_FLAG_DONT_READ);
    srv->uv_watch->data = srv;
    h2o_socket_read_start(srv->uv_watch, on_uv_ready);
    vg__control_api_register(srv);
    vg__control_rollout_init(srv);
    if (vg__control_place_init(srv) != 0)
        vg_log(VG_LOG_ERROR, "placement: cannot load the bundled locations; apps run everywhere", NULL);
    h2o_context_init(&srv->ctx, srv->loop, &srv->gconf);
    srv->http1 = vg_http1_ctx_create(&srv->ctx, &srv->http1_settings);
}

int vg_control_run(const struct vg_control_options *opt)
{
    static struct vg_control_server srv; /* one per process; signals need it anyway */
    srv.opt = *opt;
    signal(SIGPIPE, SIG_IGN);
    if (!opt->data_dir) {
        vg_log(VG_LOG_ERROR, "no data directory (--data DIR)", NULL);
        return 1;
    }
    if (open_data(&srv) != 0)
        return 1;
    srv.auth = vg__control_auth_create();
    if (bootstrap(&srv) != 0 || vg__control_auth_load(srv.auth, srv.store) != 0) {
        vg_log(VG_LOG_ERROR, "cannot set up API tokens", NULL);
        return 1;
    }
    srv.top = vg__control_top_create();
    if (opt->n_nats_urls) { /* the nodes' live figures; without a bus, the heartbeats carry them */
        char err[512];
        if (vg__control_top_connect(srv.top, opt->nats_urls, opt->n_nats_urls, err, sizeof(err)) != 0) {
            vg_log(VG_LOG_ERROR, "cannot reach NATS", "reason", err, NULL);
            return 1;
        }
    }
    http_init(&srv);
    if (open_listener(&srv) != 0)
        return 1;
    uv_signal_init(&srv.uv, &srv.sigterm);
    uv_signal_init(&srv.uv, &srv.sigint);
    srv.sigterm.data = srv.sigint.data = &srv;
    uv_signal_start(&srv.sigterm, on_signal, SIGTERM);
    uv_signal_start(&srv.sigint, on_signal, SIGINT);
    char rev[24];
    snprintf(rev, sizeof(rev), "%lld", (long long)vg__control_rev(srv.store));
    vg_log(VG_LOG_INFO, "control plane started", "data", opt->data_dir, "rev", rev, NULL);

    run(&srv);
    vg_http_loop_done();

    /* Pending long polls and connections die with the process; what is
     * committed is in the database already. */
    h2o_socket_read_stop(srv.listener);
    h2o_socket_close(srv.listener);
    vg__control_place_fini(&srv);
    vg__control_store_close(srv.store);
    srv.store = NULL;
    vg__control_auth_destroy(srv.auth);
    srv.auth = NULL;
    vg__control_top_destroy(srv.top);
    srv.top = NULL;
    vg_log(VG_LOG_INFO, "stopped", NULL);
    return 0;
}
