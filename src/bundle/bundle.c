/* Bundles: the deterministic gzip'd tar of an app directory (libarchive
 * writes and reads it; docs/decisions.md "Bundles"). The reader takes
 * untrusted bytes (uploads) and is fuzzed (tests/fuzz/fuzz_bundle.c). */
#include "bundle.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <openssl/evp.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

void vg_bundle_limits_default(struct vg_bundle_limits *lim)
{
    *lim = (struct vg_bundle_limits){
        .max_bytes = VG_BUNDLE_MAX_BYTES, .max_unpacked = VG_BUNDLE_MAX_UNPACKED, .max_entries = VG_BUNDLE_MAX_ENTRIES};
}

void vg_bundle_sha256_hex(const void *p, size_t n, char out[65])
{
    unsigned char md[32];
    unsigned int mdlen = 0;
    VG_AN(EVP_Digest(p, n, md, &mdlen, EVP_sha256(), NULL));
    VG_ASSERT(mdlen == 32);
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < 32; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[64] = '\0';
}

static int fail(char *err, size_t cap, int rc, const char *fmt, ...) VG_PRINTF(4, 5);
static int fail(char *err, size_t cap, int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (cap)
        vsnprintf(err, cap, fmt, ap);
    va_end(ap);
    return rc;
}

/* ==== writer ============================================================== */

struct walk_entry {
    char *path; /* relative, no leading "./" */
    bool dir;
    bool exec;
};

struct walk {
    struct walk_entry *v;
    size_t n, cap;
    uint64_t bytes;
    const struct vg_bundle_limits *lim;
    char *err;
    size_t errcap;
};

static void walk_add(struct walk *w, char *path, bool dir, bool exec)
{
    if (w->n == w->cap) {
        w->cap = w->cap ? 2 * w->cap : 64;
        w->v = vg_xrealloc(w->v, w->cap * sizeof(*w->v));
    }
    w->v[w->n++] = (struct walk_entry){path, dir, exec};
}

/* Collects dfd's entries under the relative prefix rel ("" at the top). */
static int walk_dir(struct walk *w, int dfd, const char *rel, unsigned depth)
{
    if (depth > VG_BUNDLE_MAX_DEPTH)
        return fail(w->err, w->errcap, VG_ELIMIT, "%s: deeper than %d directories", rel, VG_BUNDLE_MAX_DEPTH);
    int dup_fd = dup(dfd);
    DIR *d = dup_fd >= 0 ? fdopendir(dup_fd) : NULL;
    if (!d) {
        if (dup_fd >= 0)
            close(dup_fd);
        return fail(w->err, w->errcap, VG_EIO, "%s: %s", *rel ? rel : ".", strerror(errno));
    }
    int rc = 0;
    struct dirent *de;
    while (rc == 0 && (de = readdir(d)) != NULL) {
        const char *name = de->d_name;
        if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0 || strcmp(name, ".git") == 0)
            continue;
        char *path = *rel ? vg_xasprintf("%s/%s", rel, name) : vg_xstrdup(name);
        struct stat st;
        if (strlen(path) > VG_BUNDLE_MAX_PATH) {
            rc = fail(w->err, w->errcap, VG_ELIMIT, "%.64s...: path longer than %d bytes", path, VG_BUNDLE_MAX_PATH);
        } else if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
            rc = fail(w->err, w->errcap, VG_EIO, "%s: %s", path, strerror(errno));
        } else if (S_ISREG(st.st_mode)) {
            w->bytes += (uint64_t)st.st_size;
            walk_add(w, path, false, (st.st_mode & S_IXUSR) != 0);
            path = NULL;
        } else if (S_ISDIR(st.st_mode)) {
            walk_add(w, path, true, true);
            int sub = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (sub < 0)
                rc = fail(w->err, w->errcap, VG_EIO, "%s: %s", w->v[w->n - 1].path, strerror(errno));
            else {
                rc = walk_dir(w, sub, w->v[w->n - 1].path, depth + 1);
                close(sub);
            }
            path = NULL;
        } else {
            rc = fail(w->err, w->errcap, VG_EINVAL,
                      "%s: only regular files and directories go into a bundle (this is a %s)", path,
                      S_ISLNK(st.st_mode) ? "symlink" : "device, FIFO or socket");
        }
        free(path);
        if (rc == 0 && w->n > w->lim->max_entries)
            rc = fail(w->err, w->errcap, VG_ELIMIT, "more than %llu files and directories",
                      (unsigned long long)w->lim->max_entries);
        if (rc == 0 && w->bytes > w->lim->max_unpacked)
            rc = fail(w->err, w->errcap, VG_ELIMIT, "files larger than %llu bytes in total",
                      (unsigned long long)w->lim->max_unpacked);
    }
    closedir(d);
    return rc;
}

static int entry_cmp(const void *a, const void *b)
{
    return strcmp(((const struct walk_entry *)a)->path, ((const struct walk_entry *)b)->path);
}

/* The archive's output: a buffer capped at max_bytes. */
struct out_buf {
    uint8_t *p;
    size_t len, cap;
    uint64_t max;
    bool over;
};

static la_ssize_t out_write(struct archive *a, void *data, const void *buf, size_t n)
{
    struct out_buf *o = data;
    if (o->len + n > o->max) {
        o->over = true;
        archive_set_error(a, EFBIG, "bundle over the size limit");
        return -1;
    }
    if (o->len + n > o->cap) {
        while (o->len + n > o->cap)
            o->cap = o->cap ? 2 * o->cap : 65536;
        o->p = vg_xrealloc(o->p, o->cap);
    }
    memcpy(o->p + o->len, buf, n);
    o->len += n;
    return (la_ssize_t)n;
}

/* One regular file's bytes into the archive. */
static int add_file(struct archive *a, int root, const struct walk_entry *e, char *err, size_t cap)
{
    int fd = openat(root, e->path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return fail(err, cap, VG_EIO, "%s: %s", e->path, strerror(errno));
    int rc = VG_EIO;
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        rc = fail(err, cap, VG_EIO, "%s: no longer a regular file", e->path);
        goto out;
    }
    struct archive_entry *ae = archive_entry_new();
    archive_entry_set_pathname(ae, e->path);
    archive_entry_set_filetype(ae, AE_IFREG);
    archive_entry_set_perm(ae, e->exec ? 0755 : 0644);
    archive_entry_set_size(ae, st.st_size);
    archive_entry_set_mtime(ae, 0, 0);
    archive_entry_set_uid(ae, 0);
    archive_entry_set_gid(ae, 0);
    int r = archive_write_header(a, ae);
    archive_entry_free(ae);
    if (r < ARCHIVE_WARN) {
        rc = fail(err, cap, VG_EIO, "%s: %s", e->path, archive_error_string(a));
        goto out;
    }
    char buf[65536];
    off_t left = st.st_size;
    while (left > 0) {
        ssize_t n = read(fd, buf, sizeof(buf));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            rc = fail(err, cap, VG_EIO, "%s: changed while it was read", e->path);
            goto out;
        }
        if (n > left)
            n = (ssize_t)left; /* grew meanwhile: the header said st_size */
        if (archive_write_data(a, buf, (size_t)n) != n) {
            rc = fail(err, cap, VG_EIO, "%s: %s", e->path, archive_error_string(a));
            goto out;
        }
        left -= n;
    }
    rc = 0;
out:
    close(fd);
    return rc;
}

static int add_dir(struct archive *a, const struct walk_entry *e, char *err, size_t cap)
{
    struct archive_entry *ae = archive_entry_new();
    archive_entry_set_pathname(ae, e->path);
    archive_entry_set_filetype(ae, AE_IFDIR);
    archive_entry_set_perm(ae, 0755);
    archive_entry_set_size(ae, 0);
    archive_entry_set_mtime(ae, 0, 0);
    archive_entry_set_uid(ae, 0);
    archive_entry_set_gid(ae, 0);
    int r = archive_write_header(a, ae);
    archive_entry_free(ae);
    return r < ARCHIVE_WARN ? fail(err, cap, VG_EIO, "%s: %s", e->path, archive_error_string(a)) : 0;
}

int vg_bundle_create(const char *dir, const struct vg_bundle_limits *lim, uint8_t **out, size_t *len, char *err,
                     size_t errcap)
{
    struct walk w = {.lim = lim, .err = err, .errcap = errcap};
    struct out_buf ob = {.max = lim->max_bytes};
    struct archive *a = NULL;
    int rc;
    int root = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (root < 0) {
        rc = fail(err, errcap, errno == ENOENT ? VG_ENOENT : VG_EIO, "%s: %s", dir, strerror(errno));
        goto out;
    }
    if ((rc = walk_dir(&w, root, "", 0)) != 0)
        goto out;
    qsort(w.v, w.n, sizeof(*w.v), entry_cmp);

    rc = VG_EIO;
    a = archive_write_new();
    /* pax where ustar cannot say it (long or non-ASCII names), ustar
     * otherwise; no atime/ctime/names: nothing from the machine */
    if (archive_write_set_format_pax_restricted(a) != ARCHIVE_OK || archive_write_add_filter_gzip(a) != ARCHIVE_OK ||
        archive_write_set_filter_option(a, "gzip", "timestamp", NULL) != ARCHIVE_OK ||
        archive_write_set_filter_option(a, "gzip", "compression-level", "6") != ARCHIVE_OK ||
        /* no zero padding after the gzip stream (the reader refuses trailing bytes) */
        archive_write_set_bytes_in_last_block(a, 1) != ARCHIVE_OK ||
        archive_write_open(a, &ob, NULL, out_write, NULL) != ARCHIVE_OK) {
        fail(err, errcap, VG_EIO, "libarchive: %s", archive_error_string(a));
        goto out;
    }
    for (size_t i = 0; i < w.n; i++) {
        rc = w.v[i].dir ? add_dir(a, &w.v[i], err, errcap) : add_file(a, root, &w.v[i], err, errcap);
        if (rc != 0)
            goto out;
    }
    if (archive_write_close(a) != ARCHIVE_OK) {
        rc = fail(err, errcap, VG_EIO, "libarchive: %s", archive_error_string(a));
        goto out;
    }
    rc = 0;
out:
    if (rc != 0 && ob.over)
        rc = fail(err, errcap, VG_ELIMIT, "bundle larger than %llu bytes", (unsigned long long)lim->max_bytes);
    if (a)
        archive_write_free(a);
    if (root >= 0)
        close(root);
    for (size_t i = 0; i < w.n; i++)
        free(w.v[i].path);
    free(w.v);
    if (rc == 0) {
        *out = ob.p;
        *len = ob.len;
    } else {
        free(ob.p);
    }
    return rc;
}

/* ==== reader ============================================================== */

/* A path from the archive: relative, components neither empty nor "." nor
 * "..", no control bytes. A directory's one trailing '/' is dropped first. */
static const char *path_problem(char *p, bool dir)
{
    size_t n = strlen(p);
    if (dir && n > 1 && p[n - 1] == '/')
        p[--n] = '\0';
    if (n == 0)
        return "empty path";
    if (n > VG_BUNDLE_MAX_PATH)
        return "path too long";
    if (p[0] == '/')
        return "absolute path";
    unsigned depth = 0;
    for (const char *c = p;;) {
        const char *e = strchr(c, '/');
        size_t l = e ? (size_t)(e - c) : strlen(c);
        if (l == 0)
            return "empty path component";
        if ((l == 1 && c[0] == '.') || (l == 2 && c[0] == '.' && c[1] == '.'))
            return "'.' or '..' in path";
        if (++depth > VG_BUNDLE_MAX_DEPTH)
            return "path too deep";
        if (!e)
            break;
        c = e + 1;
    }
    for (const unsigned char *c = (const unsigned char *)p; *c; c++)
        if (*c < 0x20 || *c == 0x7f)
            return "control character in path";
    return NULL;
}

/* Opens (creating as needed) the directory that will hold path's last
 * component; *name points at that component. Never follows a symlink. */
static int open_parent(int root, char *path, const char **name)
{
    int dfd = dup(root);
    char *c = path;
    for (char *slash; dfd >= 0 && (slash = strchr(c, '/')) != NULL; c = slash + 1) {
        *slash = '\0';
        if (mkdirat(dfd, c, 0755) != 0 && errno != EEXIST) {
            *slash = '/';
            close(dfd);
            return -1;
        }
        int sub = openat(dfd, c, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        *slash = '/';
        close(dfd);
        dfd = sub;
    }
    *name = c;
    return dfd;
}

static int write_entry(struct archive *a, int root, char *path, bool dir, bool exec, char *err, size_t cap)
{
    const char *name;
    int pfd = open_parent(root, path, &name);
    if (pfd < 0)
        return fail(err, cap, VG_EINVAL, "%s: a parent is not a directory (%s)", path, strerror(errno));
    int rc = 0;
    if (dir) {
        struct stat st;
        if (mkdirat(pfd, name, 0755) != 0 &&
            !(errno == EEXIST && fstatat(pfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode)))
            rc = fail(err, cap, VG_EINVAL, "%s: cannot create the directory (%s)", path, strerror(errno));
        close(pfd);
        return rc;
    }
    int fd = openat(pfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, exec ? 0755 : 0644);
    close(pfd);
    if (fd < 0)
        return fail(err, cap, errno == EEXIST ? VG_EINVAL : VG_EIO, "%s: cannot create the file (%s)", path,
                    strerror(errno));
    char buf[65536];
    for (;;) {
        la_ssize_t n = archive_read_data(a, buf, sizeof(buf));
        if (n == 0)
            break;
        if (n < 0) {
            rc = fail(err, cap, VG_EPARSE, "%s: %s", path, archive_error_string(a));
            break;
        }
        const char *p = buf;
        while (n > 0) {
            ssize_t w = write(fd, p, (size_t)n);
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0) {
                rc = fail(err, cap, VG_EIO, "%s: %s", path, strerror(errno));
                goto done;
            }
            p += w;
            n -= w;
        }
    }
done:
    if (close(fd) != 0 && rc == 0)
        rc = fail(err, cap, VG_EIO, "%s: %s", path, strerror(errno));
    return rc;
}

/* Reads (and drops) a file's data: the checking-only mode still
 * decompresses everything, so a corrupt stream is found either way. */
static int skip_data(struct archive *a, const char *path, char *err, size_t cap)
{
    char buf[65536];
    la_ssize_t n;
    while ((n = archive_read_data(a, buf, sizeof(buf))) > 0)
        ;
    return n < 0 ? fail(err, cap, VG_EPARSE, "%s: %s", path, archive_error_string(a)) : 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The tar layer's input: the gzip stream inflated here rather than by
 * libarchive's gzip filter, so that every byte it produces is counted and
 * the work a small, highly compressed input can cause is bounded (the tar
 * reader skips some headers inside one libarchive call). One gzip member,
 * nothing after it. */
struct inflater {
    z_stream z;
    const uint8_t *in; /* input not yet handed to zlib (avail_in is 32 bits) */
    size_t in_left;
    uint8_t out[65536];
    uint64_t produced, budget;
    bool done, over;
};

static la_ssize_t inflate_read(struct archive *a, void *data, const void **buf)
{
    struct inflater *s = data;
    s->z.next_out = s->out;
    s->z.avail_out = sizeof(s->out);
    while (!s->done && s->z.avail_out > 0) {
        if (s->z.avail_in == 0 && s->in_left > 0) {
            size_t n = s->in_left < (1u << 30) ? s->in_left : (1u << 30);
            s->z.next_in = (Bytef *)(uintptr_t)s->in;
            s->z.avail_in = (uInt)n;
            s->in += n;
            s->in_left -= n;
        }
        int r = inflate(&s->z, Z_NO_FLUSH);
        if (r == Z_STREAM_END) {
            if (s->z.avail_in > 0 || s->in_left > 0) {
                archive_set_error(a, EINVAL, "bytes after the gzip stream");
                return -1;
            }
            s->done = true;
        } else if (r == Z_BUF_ERROR) {
            archive_set_error(a, EINVAL, "truncated gzip stream");
            return -1;
        } else if (r != Z_OK) {
            archive_set_error(a, EINVAL, "corrupt gzip stream (%s)", s->z.msg ? s->z.msg : "zlib error");
            return -1;
        }
    }
    size_t n = sizeof(s->out) - s->z.avail_out;
    s->produced += n;
    if (s->produced > s->budget) {
        s->over = true;
        archive_set_error(a, EFBIG, "bundle expands beyond its limits");
        return -1;
    }
    *buf = s->out;
    return (la_ssize_t)n;
}

int vg_bundle_unpack(const void *buf, size_t len, const char *dest_dir, const struct vg_bundle_limits *lim,
                     uint64_t *entries_out, uint64_t *unpacked_out, char *err, size_t errcap)
{
    if (len > lim->max_bytes)
        return fail(err, errcap, VG_ELIMIT, "bundle larger than %llu bytes", (unsigned long long)lim->max_bytes);
    const uint8_t *b = buf;
    if (len < 2 || b[0] != 0x1f || b[1] != 0x8b)
        return fail(err, errcap, VG_EPARSE, "not a gzip'd tar (no gzip header)");
    struct inflater *src = vg_xcalloc(1, sizeof(*src));
    /* what the tar layer may read: the files, their headers and padding,
     * and some room for long names */
    src->budget = lim->max_unpacked + (lim->max_entries + 16) * 4096 + (4u << 20);
    src->in = buf;
    src->in_left = len;
    if (inflateInit2(&src->z, 16 + MAX_WBITS) != Z_OK) {
        free(src);
        return fail(err, errcap, VG_ENOMEM, "zlib: cannot initialise");
    }
    int root = -1;
    uint64_t n_entries = 0, total = 0;
    char *prev = NULL;
    struct {
        char **v;
        size_t n, cap;
    } files = {0};
    int rc = VG_EPARSE;
    struct archive *a = archive_read_new();
    if (dest_dir && (root = open(dest_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
        rc = fail(err, errcap, VG_EIO, "%s: %s", dest_dir, strerror(errno));
        goto out;
    }
    if (archive_read_support_format_tar(a) != ARCHIVE_OK ||
        archive_read_open(a, src, NULL, inflate_read, NULL) != ARCHIVE_OK) {
        rc = fail(err, errcap, src->over ? VG_ELIMIT : VG_EPARSE, "not a gzip'd tar: %s", archive_error_string(a));
        goto out;
    }
    for (;;) {
        struct archive_entry *e;
        int r = archive_read_next_header(a, &e);
        if (r == ARCHIVE_EOF)
            break;
        if (r < ARCHIVE_WARN) {
            rc = fail(err, errcap, src->over ? VG_ELIMIT : VG_EPARSE, "corrupt bundle: %s", archive_error_string(a));
            goto out;
        }
        const char *p = archive_entry_pathname(e);
        if (!p) {
            rc = fail(err, errcap, VG_EINVAL, "an entry without a usable path");
            goto out;
        }
        char path[VG_BUNDLE_MAX_PATH + 2];
        size_t pl = strlen(p);
        if (pl > VG_BUNDLE_MAX_PATH + 1) {
            rc = fail(err, errcap, VG_EINVAL, "%.64s...: path too long", p);
            goto out;
        }
        memcpy(path, p, pl + 1);
        mode_t type = archive_entry_filetype(e);
        bool dir = type == AE_IFDIR;
        if (archive_entry_hardlink(e) || archive_entry_symlink(e) || (type != AE_IFREG && !dir)) {
            rc = fail(err, errcap, VG_EINVAL,
                      "%s: only regular files and directories are allowed (links, devices and other types are "
                      "refused)",
                      path);
            goto out;
        }
        const char *why = path_problem(path, dir);
        if (why) {
            rc = fail(err, errcap, VG_EINVAL, "%s: %s", path, why);
            goto out;
        }
        /* entries come sorted (as vg_bundle_create writes them):
         * that refuses duplicates without remembering every path */
        if (prev && strcmp(prev, path) >= 0) {
            rc = fail(err, errcap, VG_EINVAL, "%s: entries out of order or duplicated", path);
            goto out;
        }
        free(prev);
        prev = vg_xstrdup(path);
        /* a file cannot be a directory on the way to a later entry (the
         * same verdict whether or not the tree is written) */
        for (char *sl = strchr(path, '/'); sl; sl = strchr(sl + 1, '/')) {
            *sl = '\0';
            bool clash = files.n && bsearch(&(const char *){path}, files.v, files.n, sizeof(char *), cmp_str);
            *sl = '/';
            if (clash) {
                rc = fail(err, errcap, VG_EINVAL, "%s: a parent is not a directory", path);
                goto out;
            }
        }
        if (!dir) { /* sorted input: the list stays sorted */
            if (files.n == files.cap) {
                files.cap = files.cap ? 2 * files.cap : 64;
                files.v = vg_xrealloc(files.v, files.cap * sizeof(char *));
            }
            files.v[files.n++] = vg_xstrdup(path);
        }
        if (++n_entries > lim->max_entries) {
            rc = fail(err, errcap, VG_ELIMIT, "more than %llu entries", (unsigned long long)lim->max_entries);
            goto out;
        }
        int64_t size = dir ? 0 : archive_entry_size(e);
        if (size < 0 || (!dir && !archive_entry_size_is_set(e))) {
            rc = fail(err, errcap, VG_EINVAL, "%s: no size", path);
            goto out;
        }
        total += (uint64_t)size;
        if (total > lim->max_unpacked) {
            rc = fail(err, errcap, VG_ELIMIT, "files larger than %llu bytes in total",
                      (unsigned long long)lim->max_unpacked);
            goto out;
        }
        bool exec = (archive_entry_perm(e) & 0100) != 0;
        int wr = root >= 0 ? write_entry(a, root, path, dir, exec, err, errcap)
                           : (dir ? 0 : skip_data(a, path, err, errcap));
        if (wr != 0) {
            rc = src->over ? fail(err, errcap, VG_ELIMIT, "bundle expands beyond its limits") : wr;
            goto out;
        }
    }
    rc = 0;
    if (entries_out)
        *entries_out = n_entries;
    if (unpacked_out)
        *unpacked_out = total;
out:
    free(prev);
    for (size_t i = 0; i < files.n; i++)
        free(files.v[i]);
    free(files.v);
    archive_read_free(a);
    inflateEnd(&src->z);
    free(src);
    if (root >= 0)
        close(root);
    return rc;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path) != 0 && errno != ENOENT ? -1 : 0;
}

int vg_bundle_rmtree(const char *dir)
{
    return nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS) == 0 || errno == ENOENT ? 0 : VG_EIO;
}
