/* Public entry points: read verge.yaml, own the model, report errors. */
#include "conf/conf_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <string.h>
#include <unistd.h>

#define CONF_MAGIC 0x76636f6eu /* "vcon": checks that destroy gets one of ours */

/* The app handed out is the first member, so destroy can find its pool. */
struct owner {
    struct vg_conf_app app;
    uint32_t magic;
    struct vg__conf_pool pool;
};

static struct owner *owner_of(struct vg_conf_app *app)
{
    struct owner *o = (struct owner *)(void *)((char *)app - offsetof(struct owner, app));
    VG_ASSERT(o->magic == CONF_MAGIC);
    return o;
}

void vg_conf_app_destroy(struct vg_conf_app *app)
{
    if (!app)
        return;
    struct owner *o = owner_of(app);
    vg__conf_pool_release(&o->pool);
    o->magic = 0;
    free(o);
}

void vg_conf_error_format(const struct vg_conf_error *err, char *buf, size_t cap)
{
    if (err->line > 0)
        snprintf(buf, cap, "%s:%d:%d: %s", err->file, err->line, err->col, err->msg);
    else
        snprintf(buf, cap, "%s: %s", err->file, err->msg); /* about the whole file: no position */
}

static int file_error(struct vg_conf_error *err, const char *file, int rc, const char *fmt, ...) VG_PRINTF(4, 5);

static int file_error(struct vg_conf_error *err, const char *file, int rc, const char *fmt, ...)
{
    va_list ap;
    memset(err, 0, sizeof(*err));
    snprintf(err->file, sizeof(err->file), "%s", file);
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    va_end(ap);
    return rc;
}

static int parse_into(struct vg__conf_ld *ld, const char *dir, const char *yaml, size_t len)
{
    char *real = realpath(dir, NULL);
    if (!real)
        return file_error(ld->err, ld->file, errno == ENOENT ? VG_ENOENT : VG_EIO, "app directory '%s': %s", dir,
                          strerror(errno));
    ld->app->dir = vg__conf_strdup(ld->pool, real);
    ld->app->manifest_path = vg__conf_alloc(ld->pool, strlen(real) + sizeof("/verge.yaml"));
    sprintf(ld->app->manifest_path, "%s/verge.yaml", real);
    free(real);
    struct vg__conf_node *root = NULL;
    int rc = vg__conf_yaml_parse(ld, yaml, len, &root);
    return rc ? rc : vg__conf_app_parse(ld, root);
}

int vg_conf_app_load_buffer(const char *dir, const char *file, const char *yaml, size_t len, struct vg_conf_app **out,
                            struct vg_conf_error *err)
{
    struct vg_conf_error local;
    VG_AN(dir);
    VG_AN(out);
    err = err ? err : &local;
    file = file ? file : "verge.yaml";
    memset(err, 0, sizeof(*err));
    if (len > VG__CONF_MAX_BYTES)
        return file_error(err, file, VG_ECONF, "the manifest is larger than 1 MiB (%zu bytes)", len);
    struct owner *o = vg_xcalloc(1, sizeof(*o));
    o->magic = CONF_MAGIC;
    struct vg__conf_ld ld = {.pool = &o->pool, .app = &o->app, .file = file, .err = err};
    int rc = parse_into(&ld, dir, yaml ? yaml : "", len);
    vg__conf_pool_release(&ld.tmp);
    if (rc) {
        vg_conf_app_destroy(&o->app);
        return rc;
    }
    *out = &o->app;
    return 0;
}

/* Reads at most VG__CONF_MAX_BYTES + 1 bytes, so that a huge file or an
 * endless FIFO is refused without being read whole. */
static int read_capped(int fd, char *buf, size_t cap, size_t *len)
{
    size_t n = 0;
    while (n < cap) {
        ssize_t r = read(fd, buf + n, cap - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -1;
        if (r == 0)
            break;
        n += (size_t)r;
    }
    *len = n;
    return 0;
}

int vg_conf_app_load(const char *dir, struct vg_conf_app **out, struct vg_conf_error *err)
{
    struct vg_conf_error local;
    VG_AN(dir);
    VG_AN(out);
    err = err ? err : &local;
    size_t dlen = strlen(dir);
    char *file = vg_xasprintf("%s%sverge.yaml", dir, dlen && dir[dlen - 1] == '/' ? "" : "/");
    char *buf = NULL;
    size_t len = 0;
    int rc, fd = open(file, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        rc = file_error(err, file, errno == ENOENT ? VG_ENOENT : VG_EIO, "cannot open: %s", strerror(errno));
        goto out;
    }
    buf = vg_xmalloc(VG__CONF_MAX_BYTES + 1);
    if (read_capped(fd, buf, VG__CONF_MAX_BYTES + 1, &len) != 0) {
        rc = file_error(err, file, VG_EIO, "cannot read: %s", strerror(errno));
        goto out;
    }
    if (len > VG__CONF_MAX_BYTES) {
        rc = file_error(err, file, VG_ECONF, "the manifest is larger than 1 MiB");
        goto out;
    }
    rc = vg_conf_app_load_buffer(dir, file, buf, len, out, err);
out:
    if (fd >= 0)
        close(fd);
    free(buf);
    free(file);
    return rc;
}
