/* verge dev [DIR]: the whole platform on this machine.
 *
 * verge dev runs, as its own child processes, one `verge control` and N
 * `verge node --control` processes ("pops"), each given a location of
 * the bundled list (src/geo). It deploys DIR through the control plane's
 * API exactly as `verge deploy` does (bundle, upload, PUT desired), so dev
 * and production differ only in addresses, and follows the nodes' reports
 * (GET /v1/nodes) until every pop serves the version.
 *
 * Then it watches DIR (inotify, recursively) and deploys again after each
 * save (100 ms of quiet, at most 500 ms after the first change); a
 * manifest or Lua error is printed as file:line:col and the pops keep the
 * last good version. Every child's stdout and stderr lines are shown with
 * the child's name; in human mode the JSON access and log lines become
 * short lines, with --json they pass through as JSON lines (with "proc").
 *
 * One thread: a poll loop over the children's pipes, a signalfd and the
 * inotify fd. API calls block it for a few milliseconds at a time, which
 * the pipes absorb. Children are in their own process group (Ctrl-C
 * reaches verge dev only, which stops them: SIGTERM, then SIGKILL after
 * STOP_TIMEOUT_MS) and get SIGTERM from the kernel if verge dev dies
 * (PR_SET_PDEATHSIG), so none outlives it. */
#include "base/base.h"
#include "cli.h"
#include "cli_int.h"
#include "conf/conf.h"
#include "geo/geo.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define DEV_MAX_POPS 64
#define DEV_DEFAULT_PORT 7070  /* the control plane's default: `verge status` finds it */
#define DEBOUNCE_MS 100        /* quiet after the last change before deploying */
#define DEBOUNCE_MAX_MS 500    /* ... but no longer than this after the first */
#define START_TIMEOUT_MS 30000 /* the control plane up, every pop live */
#define LIVE_TIMEOUT_MS 10000  /* a redeploy live on every pop */
#define CHECK_MS 25            /* reports polled while a version goes live */
#define NOWHERE_MS 3000        /* an app placed on no pop this long after start-up is an error */
#define STOP_TIMEOUT_MS 5000   /* SIGTERM to SIGKILL */
#define LINE_CAP 16384         /* longer lines are cut in pieces */
#define WATCH_DEPTH 32

struct stream {
    int fd; /* -1 once closed */
    char *buf;
    size_t len;
};

struct child {
    char name[16];   /* "control", "pop-3" */
    char prefix[40]; /* "[control]", "[pop-3 sin]" */
    pid_t pid;
    bool exited;
    int status;
    struct stream out, err;
    uint16_t port;
    const struct vg_geo_location *loc; /* pops */
    double km;                         /* from the developer */
    uint64_t rtt_ms;                   /* --latency */
};

struct watch {
    int wd;
    char *path;
};

struct dev {
    /* options */
    const char *dir;
    unsigned pops, base;
    bool latency, json;
    const char *from_id;
    /* set up */
    struct vg_geo_set *geo;
    const struct vg_geo_location *from;
    char self[PATH_MAX];
    char tmp[PATH_MAX];
    char admin[80], node_token[80], read_token[80];
    char url[40];
    struct vg__cli_control cc;
    struct child kids[DEV_MAX_POPS + 2]; /* [0]: the control plane, [1..pops], then nats-server */
    char nats_url[40];                   /* with more than one pop: the pops' bus */
    size_t n_kids;
    int sigfd, ino;
    struct watch *watches;
    size_t n_watches;
    /* running */
    bool stop, stopping;
    uint64_t stop_at; /* when the first Ctrl-C/SIGTERM came */
    int exit_code;
    char *app;
    char live[65];    /* what every pop serves */
    size_t placed;    /* pops the app runs on (its placement; else all) */
    char pending[65]; /* deployed, not yet live everywhere */
    uint64_t pending_save, pending_deadline, next_check;
    uint64_t first_change, last_change; /* 0: none waiting */
};

/* ---- output ------------------------------------------------------------------ */

static void emit_json(json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT);
    if (s) {
        printf("%s\n", s);
        free(s);
    }
    json_decref(j);
    fflush(stdout);
}

/* A note from verge dev itself: "[dev] ..." (human) or {"event": ...}. */
static void note(const struct dev *d, const char *fmt, ...) VG_PRINTF(2, 3);
static void note(const struct dev *d, const char *fmt, ...)
{
    if (d->json)
        return;
    va_list ap;
    va_start(ap, fmt);
    printf("[dev] ");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    fflush(stdout);
}

static void event(const struct dev *d, const char *name, json_t *fields)
{
    if (!d->json) {
        json_decref(fields);
        return;
    }
    json_t *j = json_pack("{s:s}", "event", name);
    json_object_update(j, fields);
    json_decref(fields);
    emit_json(j);
}

/* A JSON log record as "level msg k=v ..." (time left out: the terminal
 * shows lines as they come). */
static void print_record(const char *prefix, json_t *j)
{
    const char *lvl = json_string_value(json_object_get(j, "level"));
    const char *msg = json_string_value(json_object_get(j, "msg"));
    printf("%s %-5s %s", prefix, lvl ? lvl : "", msg ? msg : "");
    const char *k;
    json_t *v;
    json_object_foreach(j, k, v)
    {
        if (!strcmp(k, "time") || !strcmp(k, "level") || !strcmp(k, "msg"))
            continue;
        if (json_is_string(v))
            printf(" %s=%s", k, json_string_value(v));
        else {
            char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
            printf(" %s=%s", k, s ? s : "?");
            free(s);
        }
    }
    printf("\n");
}

/* The control plane's request lines for the pops' own traffic (register,
 * long polls, heartbeats, bundles) and for verge dev's polling of the
 * reports: the same few lines every second, hidden in human mode. */
static bool is_chatter(const struct child *c, json_t *j)
{
    const char *msg = json_string_value(json_object_get(j, "msg"));
    const char *actor = json_string_value(json_object_get(j, "actor"));
    const char *method = json_string_value(json_object_get(j, "method"));
    json_t *st = json_object_get(j, "status");
    if (c->loc || !msg || strcmp(msg, "request") != 0 || !actor || !method)
        return false;
    int status =
        json_is_integer(st) ? (int)json_integer_value(st) : atoi(json_string_value(st) ? json_string_value(st) : "0");
    if (status >= 500)
        return false;
    return strcmp(actor, "dev-nodes") == 0 || (strcmp(actor, "admin") == 0 && strcmp(method, "GET") == 0);
}

/* One line a child wrote. */
static void child_line(const struct dev *d, const struct child *c, bool is_err, const char *line, size_t len)
{
    json_t *j = len && line[0] == '{' ? json_loadb(line, len, 0, NULL) : NULL;
    if (j && !json_is_object(j)) {
        json_decref(j);
        j = NULL;
    }
    if (d->json) {
        if (!j)
            j = json_pack("{s:s,s:s%}", "stream", is_err ? "stderr" : "stdout", "line", line, len);
        json_object_set_new(j, "proc", json_string(c->name));
        if (c->loc)
            json_object_set_new(j, "location", json_string(c->loc->id));
        emit_json(j);
        return;
    }
    if (!j) {
        printf("%s %.*s\n", c->prefix, (int)len, line);
    } else if (json_is_string(json_object_get(j, "type")) &&
               !strcmp(json_string_value(json_object_get(j, "type")), "access")) {
        const char *m = json_string_value(json_object_get(j, "method"));
        const char *p = json_string_value(json_object_get(j, "path"));
        double us = (double)json_integer_value(json_object_get(j, "duration_us"));
        printf("%s %s %s %d %.1fms\n", c->prefix, m ? m : "-", p ? p : "-",
               (int)json_integer_value(json_object_get(j, "status")), us / 1000.0);
    } else if (!is_chatter(c, j)) {
        print_record(c->prefix, j);
    }
    json_decref(j);
    fflush(stdout);
}

/* Reads what is there; prints whole lines. false at EOF (fd closed). */
static bool stream_read(const struct dev *d, const struct child *c, struct stream *s, bool is_err)
{
    for (;;) {
        if (s->len == LINE_CAP) { /* a very long line: out in pieces */
            child_line(d, c, is_err, s->buf, s->len);
            s->len = 0;
        }
        ssize_t n = read(s->fd, s->buf + s->len, LINE_CAP - s->len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return true;
        if (n <= 0) {
            if (s->len)
                child_line(d, c, is_err, s->buf, s->len);
            s->len = 0;
            close(s->fd);
            s->fd = -1;
            return false;
        }
        s->len += (size_t)n;
        char *start = s->buf, *nl;
        while ((nl = memchr(start, '\n', s->len - (size_t)(start - s->buf))) != NULL) {
            child_line(d, c, is_err, start, (size_t)(nl - start));
            start = nl + 1;
        }
        s->len -= (size_t)(start - s->buf);
        memmove(s->buf, start, s->len);
    }
}

/* ---- children ------------------------------------------------------------------ */

static void child_init(struct child *c, const char *name, const struct vg_geo_location *loc)
{
    snprintf(c->name, sizeof(c->name), "%s", name);
    if (loc)
        snprintf(c->prefix, sizeof(c->prefix), "[%s %s]", name, loc->id);
    else
        snprintf(c->prefix, sizeof(c->prefix), "[%s]", name);
    c->loc = loc;
    c->out = (struct stream){.fd = -1, .buf = vg_xmalloc(LINE_CAP)};
    c->err = (struct stream){.fd = -1, .buf = vg_xmalloc(LINE_CAP)};
}

/* Starts `verge ARGV...` (this binary; exe, found on PATH, when not NULL)
 * with its output on pipes; env: one NAME=VALUE to add, or NULL. */
static int spawn_exe(struct dev *d, struct child *c, const char *exe, char **argv, const char *env)
{
    int o[2], e[2];
    if (pipe2(o, O_CLOEXEC) != 0)
        return VG_EIO;
    if (pipe2(e, O_CLOEXEC) != 0) {
        close(o[0]);
        close(o[1]);
        return VG_EIO;
    }
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        /* its own group: the terminal's Ctrl-C goes to verge dev, which
         * stops the children itself */
        setpgid(0, 0);
        /* dies with verge dev, even a SIGKILLed one (before exec: the
         * setting survives it) */
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent)
            _exit(1); /* verge dev died before the line above */
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGPIPE, SIG_DFL);
        int null = open("/dev/null", O_RDONLY);
        if (null >= 0)
            dup2(null, STDIN_FILENO);
        dup2(o[1], STDOUT_FILENO);
        dup2(e[1], STDERR_FILENO);
        if (env)
            putenv((char *)env);
        if (exe)
            execvp(exe, argv);
        else
            execv(d->self, argv);
        dprintf(STDERR_FILENO, "cannot run %s: %s\n", exe ? exe : d->self, strerror(errno));
        _exit(127);
    }
    close(o[1]);
    close(e[1]);
    if (pid < 0) {
        close(o[0]);
        close(e[0]);
        return VG_EIO;
    }
    c->pid = pid;
    c->out.fd = o[0];
    c->err.fd = e[0];
    fcntl(o[0], F_SETFL, O_NONBLOCK);
    fcntl(e[0], F_SETFL, O_NONBLOCK);
    return 0;
}

static int spawn(struct dev *d, struct child *c, char **argv, const char *env)
{
    return spawn_exe(d, c, NULL, argv, env);
}

static struct child *child_by_pid(struct dev *d, pid_t pid)
{
    for (size_t i = 0; i < d->n_kids; i++)
        if (d->kids[i].pid == pid)
            return &d->kids[i];
    return NULL;
}

static void describe_exit(int status, char *buf, size_t cap)
{
    if (WIFEXITED(status))
        snprintf(buf, cap, "exited with status %d", WEXITSTATUS(status));
    else
        snprintf(buf, cap, "killed by signal %d", WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

static void reap(struct dev *d)
{
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        struct child *c = child_by_pid(d, pid);
        if (!c)
            continue;
        c->exited = true;
        c->status = status;
        if (d->stopping)
            continue;
        char how[64];
        describe_exit(status, how, sizeof(how));
        if (!d->json)
            fprintf(stderr, "verge dev: %s %s\n", c->name, how);
        event(d, "exited", json_pack("{s:s,s:s}", "proc", c->name, "how", how));
        if (c == &d->kids[0]) { /* nothing works without the control plane */
            d->stop = true;
            d->exit_code = 1;
        }
    }
}

static void on_signal(struct dev *d)
{
    struct signalfd_siginfo si;
    while (read(d->sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
        if (si.ssi_signo == SIGCHLD) {
            reap(d);
            continue;
        }
        if (d->stopping && vg_now_ms() - d->stop_at >= 500) { /* a second Ctrl-C: no more waiting */
            for (size_t i = 0; i < d->n_kids; i++)
                if (d->kids[i].pid > 0 && !d->kids[i].exited)
                    kill(d->kids[i].pid, SIGKILL);
            continue;
        }
        if (!d->stop)
            d->stop_at = vg_now_ms();
        d->stop = true;
    }
}

/* ---- watching DIR ------------------------------------------------------------------ */

static bool ignored_name(const char *name)
{
    size_t n = strlen(name);
    /* .git, editors' swap and backup files, vim's write test "4913" */
    return name[0] == '.' || (n && name[n - 1] == '~') || strcmp(name, "4913") == 0;
}

static void watch_tree(struct dev *d, const char *path, int depth)
{
    int wd = inotify_add_watch(d->ino, path,
                               IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_CREATE | IN_DELETE | IN_ONLYDIR);
    if (wd < 0) {
        if (!d->json)
            fprintf(stderr, "verge dev: cannot watch %s: %s\n", path, strerror(errno));
        return;
    }
    bool known = false;
    for (size_t i = 0; i < d->n_watches; i++)
        known |= d->watches[i].wd == wd;
    if (!known) {
        d->watches = vg_xrealloc(d->watches, (d->n_watches + 1) * sizeof(*d->watches));
        d->watches[d->n_watches++] = (struct watch){wd, vg_xstrdup(path)};
    }
    if (depth >= WATCH_DEPTH)
        return;
    DIR *dir = opendir(path);
    if (!dir)
        return;
    struct dirent *e;
    while ((e = readdir(dir)) != NULL) {
        if (ignored_name(e->d_name))
            continue;
        char *sub = vg_xasprintf("%s/%s", path, e->d_name);
        struct stat st;
        if (lstat(sub, &st) == 0 && S_ISDIR(st.st_mode))
            watch_tree(d, sub, depth + 1);
        free(sub);
    }
    closedir(dir);
}

static void on_inotify(struct dev *d)
{
    char buf[8192] __attribute__((aligned(__alignof__(struct inotify_event))));
    for (;;) {
        ssize_t n = read(d->ino, buf, sizeof(buf));
        if (n <= 0)
            return;
        for (char *p = buf; p < buf + n;) {
            struct inotify_event *ev = (struct inotify_event *)p;
            p += sizeof(*ev) + ev->len;
            if (ev->mask & IN_IGNORED) { /* the directory went away */
                for (size_t i = 0; i < d->n_watches; i++) {
                    if (d->watches[i].wd == ev->wd) {
                        free(d->watches[i].path);
                        d->watches[i] = d->watches[--d->n_watches];
                        break;
                    }
                }
                continue;
            }
            if (ev->mask & IN_Q_OVERFLOW) {
                d->last_change = vg_now_ms();
                d->first_change = d->first_change ? d->first_change : d->last_change;
                continue;
            }
            if (!ev->len || ignored_name(ev->name))
                continue;
            if ((ev->mask & IN_ISDIR) && (ev->mask & (IN_CREATE | IN_MOVED_TO))) {
                for (size_t i = 0; i < d->n_watches; i++) {
                    if (d->watches[i].wd == ev->wd) {
                        char *sub = vg_xasprintf("%s/%s", d->watches[i].path, ev->name);
                        watch_tree(d, sub, 1);
                        free(sub);
                        break;
                    }
                }
            }
            if ((ev->mask & IN_CREATE) && !(ev->mask & IN_ISDIR))
                continue; /* an empty new file: its IN_CLOSE_WRITE follows */
            d->last_change = vg_now_ms();
            if (!d->first_change)
                d->first_change = d->last_change;
        }
    }
}

/* ---- the loop ----------------------------------------------------------------------- */

/* Waits up to timeout_ms (-1: no limit) for something to happen and
 * handles it: children's lines, signals, file changes. */
static void pump(struct dev *d, int timeout_ms)
{
    struct pollfd pfd[2 + 2 * (DEV_MAX_POPS + 2)];
    struct stream *which[2 * (DEV_MAX_POPS + 2)];
    struct child *whose[2 * (DEV_MAX_POPS + 2)];
    nfds_t n = 0;
    pfd[n++] = (struct pollfd){.fd = d->sigfd, .events = POLLIN};
    pfd[n++] = (struct pollfd){.fd = d->ino, .events = POLLIN};
    for (size_t i = 0; i < d->n_kids; i++) {
        struct stream *s[2] = {&d->kids[i].out, &d->kids[i].err};
        for (int k = 0; k < 2; k++) {
            if (s[k]->fd < 0)
                continue;
            which[n - 2] = s[k];
            whose[n - 2] = &d->kids[i];
            pfd[n++] = (struct pollfd){.fd = s[k]->fd, .events = POLLIN};
        }
    }
    int r = poll(pfd, n, timeout_ms);
    if (r <= 0)
        return;
    for (nfds_t i = 2; i < n; i++)
        if (pfd[i].revents)
            stream_read(d, whose[i - 2], which[i - 2], which[i - 2] == &whose[i - 2]->err);
    if (pfd[1].revents)
        on_inotify(d);
    if (pfd[0].revents)
        on_signal(d);
}

/* SIGTERM to every child, SIGKILL to those left after STOP_TIMEOUT_MS;
 * their last lines are printed. */
static void stop_children(struct dev *d)
{
    d->stopping = true;
    /* the pops first, then nats-server, then the control plane: the pops
     * drain while what they talk to is still there */
    size_t order[DEV_MAX_POPS + 2], m = 0;
    for (size_t i = 1; i < d->n_kids && i <= d->pops; i++)
        order[m++] = i;
    if (d->n_kids > d->pops + 1)
        order[m++] = d->pops + 1;
    order[m++] = 0;
    for (size_t k = 0; k < m; k++)
        if (d->kids[order[k]].pid > 0 && !d->kids[order[k]].exited)
            kill(d->kids[order[k]].pid, SIGTERM);
    uint64_t deadline = vg_now_ms() + STOP_TIMEOUT_MS;
    for (;;) {
        reap(d);
        size_t alive = 0;
        for (size_t i = 0; i < d->n_kids; i++)
            alive += d->kids[i].pid > 0 && !d->kids[i].exited;
        uint64_t now = vg_now_ms();
        if (!alive || now >= deadline)
            break;
        pump(d, (int)(deadline - now < 50 ? deadline - now : 50));
    }
    for (size_t i = 0; i < d->n_kids; i++) {
        struct child *c = &d->kids[i];
        if (c->pid > 0 && !c->exited) {
            if (!d->json)
                fprintf(stderr, "verge dev: %s did not stop within %d s: killed\n", c->name, STOP_TIMEOUT_MS / 1000);
            kill(c->pid, SIGKILL);
            waitpid(c->pid, &c->status, 0);
            c->exited = true;
        }
        /* what they wrote last */
        if (c->out.fd >= 0)
            while (stream_read(d, c, &c->out, false))
                if (poll(&(struct pollfd){.fd = c->out.fd, .events = POLLIN}, 1, 100) <= 0)
                    break;
        if (c->err.fd >= 0)
            while (stream_read(d, c, &c->err, true))
                if (poll(&(struct pollfd){.fd = c->err.fd, .events = POLLIN}, 1, 100) <= 0)
                    break;
    }
}

/* ---- the control plane's API ---------------------------------------------------------- */

/* One call; *out (caller's) is the JSON answer of a 2xx. On another
 * status *out is the answer too, and *status says which; returns why the
 * call failed, or NULL. */
static const char *api(const struct dev *d, const char *method, const char *path, json_t *body, const char *ctype,
                       const void *raw, size_t raw_len, int *status, json_t **out)
{
    char *b = body ? json_dumps(body, JSON_COMPACT) : NULL;
    struct vg__cli_response r = {0};
    *out = NULL;
    const char *err = vg__cli_control_call(&d->cc, method, path, b ? "application/json" : ctype, b ? b : raw,
                                           b ? strlen(b) : raw_len, &r, out);
    free(b);
    *status = err ? 0 : r.status;
    free(r.buf);
    return err;
}

static bool control_ready(struct dev *d)
{
    int status;
    json_t *j;
    const char *err = api(d, "GET", "/_verge/health", NULL, NULL, NULL, 0, &status, &j);
    json_decref(j);
    return !err && status == 200;
}

/* The app's manifest: its name, or the error printed as file:line:col. */
static char *load_app(struct dev *d)
{
    struct vg_conf_app *conf;
    struct vg_conf_error ce;
    if (vg_conf_app_load(d->dir, &conf, &ce) != 0) {
        char msg[1200];
        vg_conf_error_format(&ce, msg, sizeof(msg));
        fprintf(stderr, "%s\n", msg);
        event(d, "error",
              json_pack("{s:[{s:s,s:i,s:i,s:s,s:s}]}", "errors", "file", ce.file, "line", ce.line, "col", ce.col,
                        "message", ce.msg, "text", msg));
        return NULL;
    }
    char *name = vg_xstrdup(conf->name);
    vg_conf_app_destroy(conf);
    return name;
}

/* `verge deploy` without --wait: bundle, upload, PUT desired. sha is the
 * version. Errors are printed (the checker's as file:line:col). */
static int deploy(struct dev *d, char sha[65])
{
    char *app = load_app(d);
    if (!app)
        return VG_ECONF;
    uint8_t *bundle = NULL;
    size_t len = 0;
    int rc = vg__cli_bundle_build(d->dir, &bundle, &len, sha);
    if (rc) {
        event(d, "error", json_pack("{s:s}", "error", "cannot bundle the app directory"));
        free(app);
        return rc;
    }
    int status;
    json_t *j = NULL;
    char *path = vg_xasprintf("/v1/apps/%s/versions", app);
    const char *err = api(d, "POST", path, NULL, "application/gzip", bundle, len, &status, &j);
    free(path);
    free(bundle);
    rc = VG_EINVAL;
    if (!err && (status == 200 || status == 201)) {
        json_decref(j);
        json_t *body = json_pack("{s:s}", "version", sha);
        path = vg_xasprintf("/v1/apps/%s/desired", app);
        err = api(d, "PUT", path, body, NULL, NULL, 0, &status, &j);
        free(path);
        json_decref(body);
        if (!err && status == 200)
            rc = 0;
    }
    if (rc) {
        const char *why = err ? err : json_string_value(json_object_get(j, "error"));
        json_t *errs = json_object_get(j, "errors"), *e;
        size_t i;
        if (!json_array_size(errs))
            fprintf(stderr, "verge dev: the control plane %s %d: %s\n", err ? "failed" : "answered", status,
                    why ? why : "(no reason given)");
        json_array_foreach(errs, i, e)
        {
            const char *t = json_string_value(json_object_get(e, "text"));
            fprintf(stderr, "%s\n", t ? t : "?");
        }
        fflush(stderr);
        json_t *ev = json_pack("{s:s,s:i}", "error", why ? why : "", "status", status);
        if (errs)
            json_object_set(ev, "errors", errs);
        event(d, "error", ev);
    } else if (!d->app || strcmp(d->app, app) != 0) {
        free(d->app);
        d->app = app;
        app = NULL;
    }
    json_decref(j);
    free(app);
    return rc;
}

/* How many pops the scheduler runs the app on: all of them without a
 * `placement:` section, else those at its placed locations. */
static size_t pops_placed(struct dev *d)
{
    int status;
    json_t *j;
    char path[128];
    snprintf(path, sizeof(path), "/v1/apps/%s/placement", d->app);
    const char *err = api(d, "GET", path, NULL, NULL, NULL, 0, &status, &j);
    size_t n = d->pops;
    if (!err && status == 200 && !json_is_true(json_object_get(j, "everywhere"))) {
        n = 0;
        json_t *l;
        size_t i;
        json_array_foreach(json_object_get(j, "locations"), i, l)
        {
            const char *id = json_string_value(json_object_get(l, "id"));
            for (size_t k = 1; id && k <= d->pops; k++)
                n += !strcmp(json_string_value(json_object_get(l, "state")) ?: "", "placed") &&
                     !strcmp(d->kids[k].loc->id, id);
        }
    }
    json_decref(j);
    return n;
}

/* From the nodes' reports: how many pops serve sha (and how many should:
 * *want), and the first refusal (why: a copy, caller's) if one refused it. */
static int pops_state(struct dev *d, const char *sha, size_t *live, size_t *want, char **refused_by, char **why)
{
    int status;
    json_t *j;
    *want = pops_placed(d);
    const char *err = api(d, "GET", "/v1/nodes", NULL, NULL, NULL, 0, &status, &j);
    *live = 0;
    if (err || status != 200) {
        json_decref(j);
        return VG_ENET;
    }
    json_t *n;
    size_t i;
    json_array_foreach(json_object_get(j, "nodes"), i, n)
    {
        json_t *r = json_object_get(json_object_get(json_object_get(n, "report"), "apps"), d->app);
        const char *v = json_string_value(json_object_get(r, "version"));
        const char *f = json_string_value(json_object_get(r, "failed_version"));
        if (v && !strcmp(v, sha))
            (*live)++;
        else if (f && !strcmp(f, sha) && !*why) {
            const char *e = json_string_value(json_object_get(r, "error"));
            *why = vg_xstrdup(e ? e : "refused");
            const char *id = json_string_value(json_object_get(n, "id"));
            *refused_by = vg_xstrdup(id ? id : "?");
        }
    }
    json_decref(j);
    return 0;
}

/* ---- start-up ---------------------------------------------------------------------------- */

static bool port_free(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)); /* what the servers do */
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bool ok = bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
    close(fd);
    return ok;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    remove(path);
    return 0;
}

static void secret(char out[80])
{
    uint8_t r[32];
    size_t got = 0;
    while (got < sizeof(r)) {
        ssize_t n = getrandom(r + got, sizeof(r) - got, 0);
        VG_ASSERT(n > 0 || errno == EINTR);
        if (n > 0)
            got += (size_t)n;
    }
    strcpy(out, "vgt_");
    for (size_t i = 0; i < sizeof(r); i++)
        sprintf(out + 4 + 2 * i, "%02x", r[i]);
}

static int write_secret(const char *path, const char *s)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return VG_EIO;
    bool ok = dprintf(fd, "%s\n", s) > 0;
    return close(fd) == 0 && ok ? 0 : VG_EIO;
}

static int start_control(struct dev *d)
{
    char *data = vg_xasprintf("%s/control", d->tmp), *tok = vg_xasprintf("%s/admin.token", d->tmp);
    char listen[32];
    snprintf(listen, sizeof(listen), "127.0.0.1:%u", d->base);
    int rc = write_secret(tok, d->admin);
    if (rc == 0) {
        char *argv[] = {"verge",
                        "control",
                        "--data",
                        data,
                        "--listen",
                        listen,
                        "--bootstrap-token-file",
                        tok,
                        "--node-timeout",
                        "5s",
                        "--log-format",
                        "json",
                        "--place-interval",
                        "2s",
                        NULL,
                        NULL,
                        NULL};
        if (d->nats_url[0]) { /* the pops' live figures reach it over their bus (GET /v1/top) */
            argv[14] = "--nats";
            argv[15] = d->nats_url;
        }
        child_init(&d->kids[0], "control", NULL);
        d->kids[0].port = (uint16_t)d->base;
        if (d->n_kids < 1)
            d->n_kids = 1;
        rc = spawn(d, &d->kids[0], argv, NULL);
    }
    free(data);
    free(tok);
    if (rc) {
        fprintf(stderr, "verge dev: cannot start the control plane\n");
        return rc;
    }
    uint64_t deadline = vg_now_ms() + START_TIMEOUT_MS;
    while (!d->stop && !d->kids[0].exited && vg_now_ms() < deadline) {
        if (control_ready(d))
            return 0;
        pump(d, 50);
    }
    if (!d->stop || d->kids[0].exited)
        fprintf(stderr, "verge dev: the control plane did not start%s\n",
                d->kids[0].exited ? " (its log is above)" : " in time");
    return VG_EIO;
}

static int node_token(struct dev *d)
{
    json_t *body = json_pack("{s:s,s:s}", "name", "dev-nodes", "scope", "node"), *j;
    int status;
    const char *err = api(d, "POST", "/v1/tokens", body, NULL, NULL, 0, &status, &j);
    json_decref(body);
    const char *s = json_string_value(json_object_get(j, "secret"));
    int rc = 0;
    if (err || status != 201 || !s || strlen(s) >= sizeof(d->node_token)) {
        fprintf(stderr, "verge dev: cannot create a node token: %s (status %d)\n", err ? err : "refused", status);
        rc = VG_EIO;
    } else {
        snprintf(d->node_token, sizeof(d->node_token), "%s", s);
    }
    json_decref(j);
    return rc;
}

/* A read-scope token for the session file: `verge top` reads the control
 * plane's figures with it (the admin token stays out of files). */
static int read_token(struct dev *d)
{
    json_t *body = json_pack("{s:s,s:s}", "name", "dev-read", "scope", "read"), *j;
    int status;
    const char *err = api(d, "POST", "/v1/tokens", body, NULL, NULL, 0, &status, &j);
    json_decref(body);
    const char *s = json_string_value(json_object_get(j, "secret"));
    int rc = 0;
    if (err || status != 201 || !s || strlen(s) >= sizeof(d->read_token)) {
        fprintf(stderr, "verge dev: cannot create a read token: %s (status %d)\n", err ? err : "refused", status);
        rc = VG_EIO;
    } else {
        snprintf(d->read_token, sizeof(d->read_token), "%s", s);
    }
    json_decref(j);
    return rc;
}

/* With more than one pop, a nats-server of its own (JetStream on, its
 * store in the temporary directory) links them, as production links
 * locations: the pops get --nats, and so does the control plane (their
 * live figures), which is why it starts first. Its slot is after the
 * pops'. */
static int start_nats(struct dev *d)
{
    if (d->pops < 2)
        return 0;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof(sa);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &sl) != 0) {
        if (fd >= 0)
            close(fd);
        fprintf(stderr, "verge dev: no free port for nats-server\n");
        return VG_EIO;
    }
    close(fd);
    unsigned port = ntohs(sa.sin_port);
    for (unsigned k = 0; k <= d->pops; k++) /* not started yet: no pipes to watch */
        d->kids[k].out.fd = d->kids[k].err.fd = -1;
    struct child *c = &d->kids[d->pops + 1];
    child_init(c, "nats", NULL);
    c->port = (uint16_t)port;
    d->n_kids = d->pops + 2;
    char p[8], *store = vg_xasprintf("%s/jetstream", d->tmp), *log = vg_xasprintf("%s/nats.log", d->tmp);
    snprintf(p, sizeof(p), "%u", port);
    char *argv[] = {"nats-server", "-a", "127.0.0.1", "-p", p, "-js", "-sd", store, "-l", log, NULL};
    int rc = spawn_exe(d, c, "nats-server", argv, NULL);
    free(store);
    free(log);
    snprintf(d->nats_url, sizeof(d->nats_url), "nats://127.0.0.1:%u", port);
    uint64_t deadline = vg_now_ms() + START_TIMEOUT_MS;
    while (rc == 0 && !d->stop && !c->exited && vg_now_ms() < deadline) {
        if (!port_free((uint16_t)port)) /* it listens */
            return 0;
        pump(d, 20);
    }
    fprintf(stderr, "verge dev: nats-server did not start%s (scripts/deps.sh installs it)\n",
            c->exited ? "" : " in time");
    return VG_EIO;
}

static int start_pops(struct dev *d)
{
    static char env[128];
    snprintf(env, sizeof(env), "VERGE_NODE_TOKEN=%s", d->node_token);
    for (unsigned k = 1; k <= d->pops; k++) {
        struct child *c = &d->kids[k];
        char name[16], listen[32], latency[32], *data;
        snprintf(name, sizeof(name), "pop-%u", k);
        const struct vg_geo_location *loc = vg_geo_set_at(d->geo, (k - 1) % vg_geo_set_count(d->geo));
        child_init(c, name, loc);
        if (d->n_kids < k + 1)
            d->n_kids = k + 1;
        c->port = (uint16_t)(d->base + k);
        c->km = vg_geo_distance_km(d->from, loc);
        c->rtt_ms = (vg_geo_rtt_us(c->km) + 500) / 1000;
        snprintf(listen, sizeof(listen), "127.0.0.1:%u", c->port);
        snprintf(latency, sizeof(latency), "%llums", (unsigned long long)(d->latency ? c->rtt_ms : 0));
        data = vg_xasprintf("%s/%s", d->tmp, name);
        char *argv[] = {"verge",
                        "node",
                        "--control",
                        d->url,
                        "--node-id",
                        name,
                        "--location",
                        (char *)loc->id,
                        "--data",
                        data,
                        "--listen",
                        listen,
                        "--workers",
                        "1",
                        "--drain-timeout",
                        "1s",
                        "--dev",
                        "--log-format",
                        "json",
                        "--add-latency",
                        latency,
                        "--client-area-header", /* demand from anywhere, generated locally */
                        NULL,
                        NULL,
                        NULL};
        if (d->nats_url[0]) { /* the pops' bus: purges (and later state) reach every location */
            argv[22] = "--nats";
            argv[23] = d->nats_url;
        }
        int rc = spawn(d, c, argv, env);
        free(data);
        if (rc) {
            fprintf(stderr, "verge dev: cannot start %s\n", name);
            return rc;
        }
    }
    return 0;
}

/* Follows the reports until every pop serves sha (start-up). */
static int wait_live(struct dev *d, const char *sha)
{
    uint64_t deadline = vg_now_ms() + START_TIMEOUT_MS;
    while (!d->stop && vg_now_ms() < deadline) {
        size_t live = 0, want = 0;
        char *who = NULL, *why = NULL;
        pops_state(d, sha, &live, &want, &who, &why);
        if (why) {
            fprintf(stderr, "verge dev: %s refused the app: %s\n", who, why);
            free(who);
            free(why);
            return VG_EINVAL;
        }
        if (want && live >= want) {
            d->placed = want;
            return 0;
        }
        if (!want && vg_now_ms() + START_TIMEOUT_MS > deadline + NOWHERE_MS) {
            fprintf(stderr,
                    "verge dev: the app's placement puts it on none of the %u pops' locations (its enforcements or "
                    "static list exclude them): widen it, or start more pops (--pops N)\n",
                    d->pops);
            return VG_EINVAL;
        }
        for (size_t i = 1; i < d->n_kids; i++) { /* the pops and nats-server */
            if (d->kids[i].exited) {
                fprintf(stderr, "verge dev: %s stopped during start-up (its log is above)\n", d->kids[i].name);
                return VG_EIO;
            }
        }
        pump(d, CHECK_MS);
    }
    if (!d->stop)
        fprintf(stderr, "verge dev: the pops did not all run the app within %d s\n", START_TIMEOUT_MS / 1000);
    return VG_EIO;
}

static void print_ready(struct dev *d, uint64_t took)
{
    if (d->json) {
        json_t *pops = json_array();
        for (size_t i = 1; i <= d->pops; i++) {
            struct child *c = &d->kids[i];
            char url[48];
            snprintf(url, sizeof(url), "http://127.0.0.1:%u/", c->port);
            json_array_append_new(pops, json_pack("{s:s,s:s,s:s,s:s,s:s,s:f,s:f,s:s,s:i,s:f,s:I}", "id", c->name,
                                                  "location", c->loc->id, "city", c->loc->city, "country",
                                                  c->loc->country, "region", c->loc->region, "lat", c->loc->lat, "lon",
                                                  c->loc->lon, "url", url, "port", (int)c->port, "distance_km", c->km,
                                                  "latency_ms", (json_int_t)(d->latency ? c->rtt_ms : 0)));
        }
        json_t *j = json_pack("{s:s,s:s,s:s,s:s,s:{s:s,s:s},s:s,s:b,s:o,s:I}", "event", "ready", "app", d->app,
                              "version", d->live, "dir", d->dir, "control", "url", d->url, "token", d->admin, "from",
                              d->from->id, "latency", d->latency, "pops", pops, "ms", (json_int_t)took);
        json_object_set_new(j, "nats", d->nats_url[0] ? json_string(d->nats_url) : json_null());
        emit_json(j);
        return;
    }
    if (d->placed < d->pops)
        printf("\nverge dev: %s@%.12s runs on %zu of %u locations (%.1f s): its placement decides where, from the "
               "demand (verge placement %s)\n\n",
               d->app, d->live, d->placed, d->pops, (double)took / 1000.0, d->app);
    else
        printf("\nverge dev: %s@%.12s runs on %u location%s (%.1f s)\n\n", d->app, d->live, d->pops,
               d->pops == 1 ? "" : "s", (double)took / 1000.0);
    for (size_t i = 1; i <= d->pops; i++) {
        struct child *c = &d->kids[i];
        char where[80];
        snprintf(where, sizeof(where), "%s, %s", c->loc->city, c->loc->country);
        printf("  %-7s %-4s %-24s http://127.0.0.1:%u/", c->name, c->loc->id, where, c->port);
        if (d->latency)
            printf("   +%llu ms (%.0f km from %s)", (unsigned long long)c->rtt_ms, c->km, d->from->id);
        printf("\n");
    }
    printf("\n  control plane   %s   (VERGE_CONTROL=%s VERGE_TOKEN=%s verge status)\n", d->url, d->url, d->admin);
    if (d->nats_url[0])
        printf("  bus             %s   (nats-server with JetStream, linking the pops)\n", d->nats_url);
    printf("\n  diagnostics     verge trace ID | verge logs -f | verge top   (they find this session)\n");
    printf("\nwatching %s for changes; Ctrl-C stops everything\n\n", d->dir);
    fflush(stdout);
}

/* ---- hot redeploy -------------------------------------------------------------------------- */

static void redeploy(struct dev *d)
{
    uint64_t saved = d->first_change;
    d->first_change = d->last_change = 0;
    char sha[65];
    if (deploy(d, sha) != 0) {
        note(d, "not deployed; the pops keep serving %.12s", d->live);
        return;
    }
    if (!strcmp(sha, d->live) && !d->pending[0]) {
        note(d, "no change in the bundle");
        return;
    }
    note(d, "deploying %s@%.12s", d->app, sha);
    memcpy(d->pending, sha, sizeof(d->pending));
    d->pending_save = saved;
    d->pending_deadline = vg_now_ms() + LIVE_TIMEOUT_MS;
    d->next_check = 0;
}

static void check_pending(struct dev *d)
{
    uint64_t now = vg_now_ms();
    if (now < d->next_check)
        return;
    d->next_check = now + CHECK_MS;
    size_t live = 0, want = 0;
    char *who = NULL, *why = NULL;
    if (pops_state(d, d->pending, &live, &want, &who, &why) != 0)
        return;
    if (why) {
        if (!d->json)
            fprintf(stderr, "verge dev: %s refused %.12s: %s\n", who, d->pending, why);
        note(d, "the pops keep serving %.12s", d->live);
        event(d, "refused",
              json_pack("{s:s,s:s,s:s,s:s}", "version", d->pending, "pop", who, "error", why, "live", d->live));
        d->pending[0] = '\0';
    } else if (want && live >= want) {
        memcpy(d->live, d->pending, sizeof(d->live));
        d->pending[0] = '\0';
        d->placed = want;
        uint64_t ms = now - d->pending_save;
        note(d, "%s@%.12s live on %zu pop%s, %llu ms after the save", d->app, d->live, want, want == 1 ? "" : "s",
             (unsigned long long)ms);
        event(d, "deployed", json_pack("{s:s,s:s,s:I}", "app", d->app, "version", d->live, "ms", (json_int_t)ms));
    } else if (now >= d->pending_deadline) {
        if (!d->json)
            fprintf(stderr, "verge dev: %zu of %zu pops run %.12s after %d s\n", live, want, d->pending,
                    LIVE_TIMEOUT_MS / 1000);
        d->pending[0] = '\0';
    }
    free(who);
    free(why);
}

static void run(struct dev *d)
{
    while (!d->stop) {
        int timeout = -1;
        uint64_t now = vg_now_ms();
        if (d->first_change) {
            uint64_t due = d->last_change + DEBOUNCE_MS;
            if (due > d->first_change + DEBOUNCE_MAX_MS)
                due = d->first_change + DEBOUNCE_MAX_MS;
            if (due <= now) {
                redeploy(d);
                continue;
            }
            timeout = (int)(due - now);
        }
        if (d->pending[0]) {
            check_pending(d);
            if (timeout < 0 || timeout > CHECK_MS)
                timeout = CHECK_MS;
        }
        pump(d, timeout);
    }
}

/* ---- the command -------------------------------------------------------------------------- */

static void dev_usage(FILE *f)
{
    fprintf(f,
            "usage: verge dev [DIR] [--pops N] [--latency [--from LOC]] [--port BASE] [--json]\n\n"
            "Runs the platform here: a control plane and N edge nodes (pops) on 127.0.0.1, each at a\n"
            "simulated location; deploys DIR (default: the current directory) through the control\n"
            "plane as `verge deploy` does, redeploys it on every save, and streams every log.\n\n"
            "  --pops N       edge nodes, 1 to %d (default 1); pop-K gets the K-th location of the list\n"
            "  --latency      delay each pop's answers by the round trip between you and its location\n"
            "  --from LOC     where you are, for --latency (default: the list's first, fra)\n"
            "  --port BASE    control plane on BASE, pop-K on BASE+K (default %d)\n"
            "  --json         JSON lines: a \"ready\" document with the URLs, then events and logs\n"
            "  --locations    print the bundled locations and exit\n\n"
            "Ctrl-C stops every process and removes the temporary state.\n",
            DEV_MAX_POPS, DEV_DEFAULT_PORT);
}

static int print_locations(void)
{
    struct vg_geo_set *set;
    if (vg_geo_set_builtin(&set) != 0)
        return 1;
    for (size_t i = 0; i < vg_geo_set_count(set); i++) {
        const struct vg_geo_location *l = vg_geo_set_at(set, i);
        printf("%-5s %-16s %s  %-3s %9.4f %9.4f\n", l->id, l->city, l->country, l->region, l->lat, l->lon);
    }
    vg_geo_set_destroy(set);
    return 0;
}

static int parse(int argc, char **argv, struct dev *d)
{
    static const struct option longopts[] = {
        {"pops", required_argument, NULL, 'n'}, {"latency", no_argument, NULL, 'l'},
        {"from", required_argument, NULL, 'f'}, {"port", required_argument, NULL, 'p'},
        {"json", no_argument, NULL, 'j'},       {"locations", no_argument, NULL, 'L'},
        {"help", no_argument, NULL, 'h'},       {NULL, 0, NULL, 0},
    };
    int c;
    char *end;
    long v;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case 'n':
            v = strtol(optarg, &end, 10);
            if (*end || !*optarg || v < 1 || v > DEV_MAX_POPS) {
                fprintf(stderr, "verge dev: --pops takes a number from 1 to %d: %s\n", DEV_MAX_POPS, optarg);
                return 2;
            }
            d->pops = (unsigned)v;
            break;
        case 'p':
            v = strtol(optarg, &end, 10);
            if (*end || !*optarg || v < 1 || v > 65535) {
                fprintf(stderr, "verge dev: --port takes a port number: %s\n", optarg);
                return 2;
            }
            d->base = (unsigned)v;
            break;
        case 'l':
            d->latency = true;
            break;
        case 'f':
            d->from_id = optarg;
            break;
        case 'j':
            d->json = true;
            break;
        case 'L':
            return print_locations();
        case 'h':
            dev_usage(stdout);
            return 0;
        default:
            dev_usage(stderr);
            return 2;
        }
    }
    if (argc - optind > 1) {
        dev_usage(stderr);
        return 2;
    }
    d->dir = optind < argc ? argv[optind] : ".";
    if (d->base + d->pops > 65535) {
        fprintf(stderr, "verge dev: --port %u leaves no room for %u pops\n", d->base, d->pops);
        return 2;
    }
    return -1;
}

/* Everything that can be refused before anything starts. */
static int preflight(struct dev *d)
{
    struct stat st;
    char *m = vg_xasprintf("%s/verge.yaml", d->dir);
    bool ok = stat(m, &st) == 0 && S_ISREG(st.st_mode);
    free(m);
    if (!ok) {
        fprintf(stderr, "verge dev: %s has no verge.yaml (`verge init NAME` scaffolds an app)\n", d->dir);
        return 1;
    }
    if (vg_geo_set_builtin(&d->geo) != 0)
        return 1;
    d->from = vg_geo_set_at(d->geo, 0);
    if (d->from_id && !(d->from = vg_geo_set_find(d->geo, d->from_id))) {
        fprintf(stderr, "verge dev: --from: no location '%s' (`verge dev --locations` lists them)\n", d->from_id);
        return 2;
    }
    for (unsigned p = d->base; p <= d->base + d->pops; p++) {
        if (!port_free((uint16_t)p)) {
            fprintf(stderr,
                    "verge dev: 127.0.0.1:%u is in use; --port BASE moves the stack (control plane on BASE, "
                    "pop-K on BASE+K)\n",
                    p);
            return 1;
        }
    }
    char *app = load_app(d);
    if (!app)
        return 1;
    free(app);
    ssize_t n = readlink("/proc/self/exe", d->self, sizeof(d->self) - 1);
    if (n <= 0) {
        fprintf(stderr, "verge dev: cannot find its own executable: %s\n", strerror(errno));
        return 1;
    }
    d->self[n] = '\0';
    return 0;
}

static int setup(struct dev *d)
{
    const char *t = getenv("TMPDIR");
    snprintf(d->tmp, sizeof(d->tmp), "%s/verge-dev-XXXXXX", t && *t ? t : "/tmp");
    if (!mkdtemp(d->tmp)) {
        fprintf(stderr, "verge dev: cannot create a temporary directory in %s: %s\n", t && *t ? t : "/tmp",
                strerror(errno));
        d->tmp[0] = '\0';
        return VG_EIO;
    }
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGCHLD);
    sigprocmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    d->sigfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    d->ino = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (d->sigfd < 0 || d->ino < 0) {
        fprintf(stderr, "verge dev: %s: %s\n", d->sigfd < 0 ? "signalfd" : "inotify", strerror(errno));
        return VG_EIO;
    }
    watch_tree(d, d->dir, 0);
    secret(d->admin);
    snprintf(d->url, sizeof(d->url), "http://127.0.0.1:%u", d->base);
    return vg__cli_control_init(&d->cc, d->url, d->admin, "dev") == 0 ? 0 : VG_EINVAL;
}

static void teardown(struct dev *d)
{
    stop_children(d);
    if (d->tmp[0])
        nftw(d->tmp, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    for (size_t i = 0; i < d->n_kids; i++) {
        free(d->kids[i].out.buf);
        free(d->kids[i].err.buf);
    }
    for (size_t i = 0; i < d->n_watches; i++)
        free(d->watches[i].path);
    free(d->watches);
    if (d->sigfd >= 0)
        close(d->sigfd);
    if (d->ino >= 0)
        close(d->ino);
    free(d->app);
    vg_geo_set_destroy(d->geo);
}

/* What `verge trace`, `logs` and `top` read to find this session's nodes
 * without options (vg__cli_dev_session_path). */
static void session_write(const struct dev *d)
{
    json_t *nodes = json_array();
    for (size_t i = 1; i <= d->pops; i++) {
        char url[48];
        snprintf(url, sizeof(url), "http://127.0.0.1:%u", d->kids[i].port);
        json_array_append_new(nodes, json_string(url));
    }
    json_t *j = json_pack("{s:I, s:o, s:s, s:s}", "pid", (json_int_t)getpid(), "nodes", nodes, "control", d->url,
                          "control_token", d->read_token);
    json_object_set_new(j, "nats", d->nats_url[0] ? json_string(d->nats_url) : json_null());
    char buf[96];
    const char *path = vg__cli_dev_session_path(buf, sizeof(buf));
    /* a token inside: the user's only, and never through a planted link */
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    bool ok = fd >= 0 && fchmod(fd, 0600) == 0 && json_dumpfd(j, fd, JSON_COMPACT) == 0;
    if (fd >= 0)
        ok = close(fd) == 0 && ok;
    if (!ok)
        fprintf(stderr, "[dev] cannot write %s: verge trace/logs/top will need --node, --nats or --control\n", path);
    json_decref(j);
}

static void session_remove(void)
{
    char buf[96];
    const char *path = vg__cli_dev_session_path(buf, sizeof(buf));
    json_t *s = json_load_file(path, 0, NULL);
    if (json_integer_value(json_object_get(s, "pid")) == (json_int_t)getpid())
        unlink(path); /* ours, not a newer session's */
    json_decref(s);
}

int vg_cli_dev(int argc, char **argv)
{
    struct dev d = {.pops = 1, .base = DEV_DEFAULT_PORT, .sigfd = -1, .ino = -1};
    int rc = parse(argc, argv, &d);
    if (rc >= 0)
        return rc;
    setvbuf(stdout, NULL, _IOLBF, 0);
    rc = preflight(&d);
    if (rc) {
        vg_geo_set_destroy(d.geo);
        return rc;
    }
    uint64_t t0 = vg_now_ms();
    rc = 1;
    char sha[65];
    if (setup(&d) == 0 && start_nats(&d) == 0 && start_control(&d) == 0 && node_token(&d) == 0 && read_token(&d) == 0 &&
        deploy(&d, sha) == 0 && start_pops(&d) == 0 && wait_live(&d, sha) == 0) {
        memcpy(d.live, sha, sizeof(d.live));
        print_ready(&d, vg_now_ms() - t0);
        session_write(&d);
        run(&d);
        session_remove();
        rc = d.exit_code;
    } else if (d.stop) {
        rc = d.exit_code; /* Ctrl-C during start-up: 0; the control plane died: 1 */
    }
    if (!d.json)
        printf("[dev] stopping\n");
    teardown(&d);
    event(&d, "stopped", json_pack("{s:i}", "exit", rc));
    return rc;
}
