/* Values that name places: URL paths, host names, addresses, and files of
 * the app directory. */
#include "conf/conf_int.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <string.h>
#include <sys/stat.h>

/* '**' is only meaningful as a whole path segment; "a**b" or "***" is
 * almost certainly a typo, so refuse it early. */
static const char *glob_problem(const char *p)
{
    for (const char *seg = p; seg; seg = strchr(seg + 1, '/')) {
        const char *s = seg + 1, *end = strchr(s, '/');
        size_t len = end ? (size_t)(end - s) : strlen(s);
        const char *dbl = strstr(s, "**");
        if (dbl && dbl < s + len && !(len == 2 && dbl == s))
            return "'**' must be a whole path segment, like /img/**/x.png";
    }
    return NULL;
}

static const char *path_problem(const char *p, unsigned flags)
{
    if (p[0] != '/')
        return "a path must start with '/'";
    for (const unsigned char *c = (const unsigned char *)p; *c; c++) {
        if (*c <= 0x20 || *c == 0x7f)
            return "a path must not contain spaces or control characters";
        if (*c == '#')
            return "a path must not contain '#'";
        if (*c == '?' && !(flags & VG__CONF_PATH_QUERY))
            return "a path must not contain a query ('?')";
        if (*c == '*' && !(flags & VG__CONF_PATH_GLOB))
            return "'*' is not a wildcard here; use 'glob:' for patterns";
        if (c[0] == '/' && c[1] == '.' && c[2] == '.' && (c[3] == '/' || c[3] == '\0'))
            return "a path must not contain '..' segments";
    }
    return (flags & VG__CONF_PATH_GLOB) ? glob_problem(p) : NULL;
}

int vg__conf_want_path(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                       unsigned flags, char **out)
{
    int rc = vg__conf_want_scalar(ld, key, val, "a path like /api");
    if (rc)
        return rc;
    const char *why = path_problem(val->str, flags);
    if (why) {
        char shown[80];
        return vg__conf_fail(ld, val, "invalid path '%s' for '%s': %s", vg__conf_show(val->str, shown, sizeof(shown)),
                             key->str, why);
    }
    *out = vg__conf_strndup(ld->pool, val->str, val->len);
    return 0;
}

/* DNS-ish names: dot-separated labels of letters, digits, '-' and '_'. */
static bool valid_hostname(const char *h, size_t len)
{
    if (len == 0 || len > 253 || h[0] == '.' || h[len - 1] == '.')
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)h[i];
        if (c == '.' ? h[i + 1] == '.' : !(isalnum(c) || c == '-' || c == '_'))
            return false;
    }
    return true;
}

int vg__conf_want_host_pattern(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                               char **out)
{
    const char *what = "a host name like api.example.com, *.example.com or *";
    int rc = vg__conf_want_scalar(ld, key, val, what);
    if (rc)
        return rc;
    const char *h = val->str;
    bool ok = strcmp(h, "*") == 0 ||
              (strncmp(h, "*.", 2) == 0 ? valid_hostname(h + 2, val->len - 2) : valid_hostname(h, val->len));
    if (!ok) {
        char shown[80];
        return vg__conf_fail(ld, val, "expected %s for '%s', got '%s'", what, key->str,
                             vg__conf_show(h, shown, sizeof(shown)));
    }
    char *s = vg__conf_strndup(ld->pool, h, val->len);
    for (char *c = s; *c; c++)
        *c = (char)tolower((unsigned char)*c); /* Host matching is case-insensitive */
    *out = s;
    return 0;
}

static bool parse_port(const char *s, uint16_t *port)
{
    unsigned v = 0;
    if (!*s)
        return false;
    for (; *s; s++) {
        if (!isdigit((unsigned char)*s) || (v = v * 10 + (unsigned)(*s - '0')) > 65535)
            return false;
    }
    *port = (uint16_t)v;
    return v > 0;
}

static bool valid_ipv6(const char *h, size_t len)
{
    char buf[64];
    struct in6_addr a;
    if (len == 0 || len >= sizeof(buf))
        return false;
    memcpy(buf, h, len);
    buf[len] = '\0';
    return inet_pton(AF_INET6, buf, &a) == 1;
}

int vg__conf_split_hostport(const char *s, bool allow_empty_host, bool need_port, const char **host, size_t *host_len,
                            uint16_t *port, const char **why)
{
    const char *rest;
    *port = 0;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (!close || !valid_ipv6(s + 1, (size_t)(close - s - 1)))
            return *why = "invalid IPv6 address in brackets", -1;
        *host = s + 1;
        *host_len = (size_t)(close - s - 1);
        rest = close + 1;
    } else {
        const char *colon = strchr(s, ':');
        if (colon && strchr(colon + 1, ':'))
            return *why = "IPv6 addresses need brackets, like [::1]:9000", -1;
        *host = s;
        *host_len = colon ? (size_t)(colon - s) : strlen(s);
        rest = s + *host_len;
        if (*host_len == 0 ? !allow_empty_host : !valid_hostname(s, *host_len))
            return *why = *host_len ? "invalid host name" : "missing host", -1;
    }
    if (*rest == '\0' && !need_port)
        return 0;
    if (*rest != ':')
        return *why = "missing ':port'", -1;
    if (!parse_port(rest + 1, port))
        return *why = "the port must be a number between 1 and 65535", -1;
    return 0;
}

static int fs_error(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                    const char *path, const char *why)
{
    char shown[80];
    return vg__conf_fail(ld, val, "'%s' for '%s': %s %s", vg__conf_show(val->str, shown, sizeof(shown)), key->str, path,
                         why);
}

int vg__conf_want_fs_path(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                          bool want_dir, char **out)
{
    int rc = vg__conf_want_scalar(ld, key, val, want_dir ? "a directory" : "a file name");
    if (rc)
        return rc;
    if (val->len == 0)
        return vg__conf_fail(ld, val, "expected %s for '%s', got an empty string", want_dir ? "a directory" : "a file",
                             key->str);
    char *joined = val->str[0] == '/' ? vg_xstrdup(val->str) : vg_xasprintf("%s/%s", ld->app->dir, val->str);
    char *real = realpath(joined, NULL);
    struct stat st;
    if (!real)
        rc = fs_error(ld, key, val, joined, errno == ENOENT ? "does not exist" : strerror(errno));
    else if (stat(real, &st) != 0)
        rc = fs_error(ld, key, val, real, strerror(errno));
    else if (want_dir && !S_ISDIR(st.st_mode))
        rc = fs_error(ld, key, val, real, "is not a directory");
    else if (!want_dir && !S_ISREG(st.st_mode))
        rc = fs_error(ld, key, val, real, "is not a regular file");
    else
        *out = vg__conf_strdup(ld->pool, real);
    free(real);
    free(joined);
    return rc;
}

static bool lua_identifier(const char *s, size_t n)
{
    if (n == 0 || n > 128 || (s[0] >= '0' && s[0] <= '9'))
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_'))
            return false;
    }
    return true;
}

/* The file must stay inside the app: bundles carry the app directory and
 * nothing else, and a sandbox that could load /etc files would not be one. */
static int fnref_file(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                      const char *file, struct vg_conf_fnref *out)
{
    char *joined = vg_xasprintf("%s/%s", ld->app->dir, file);
    char *real = realpath(joined, NULL);
    size_t dl = strlen(ld->app->dir);
    struct stat st;
    int rc = 0;
    if (!real)
        rc = fs_error(ld, key, val, joined, errno == ENOENT ? "does not exist" : strerror(errno));
    else if (stat(real, &st) != 0)
        rc = fs_error(ld, key, val, real, strerror(errno));
    else if (!S_ISREG(st.st_mode))
        rc = fs_error(ld, key, val, real, "is not a regular file");
    else if (strncmp(real, ld->app->dir, dl) != 0 || real[dl] != '/')
        rc = fs_error(ld, key, val, real, "is outside the app directory");
    else
        out->file = vg__conf_strdup(ld->pool, real);
    free(real);
    free(joined);
    return rc;
}

int vg__conf_want_fnref(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                        struct vg_conf_fnref *out)
{
    int rc = vg__conf_want_scalar(ld, key, val, "a Lua function as 'file.lua:name'");
    if (rc)
        return rc;
    char shown[80];
    vg__conf_show(val->str, shown, sizeof(shown));
    const char *colon = strrchr(val->str, ':');
    size_t flen = colon ? (size_t)(colon - val->str) : val->len;
    const char *func = colon ? colon + 1 : "handle";
    if (flen < 5 || strncmp(val->str + flen - 4, ".lua", 4) != 0)
        return vg__conf_fail(ld, val, "expected a Lua function as 'file.lua:name' for '%s', got '%s'", key->str, shown);
    if (!lua_identifier(func, strlen(func)))
        return vg__conf_fail(ld, val, "'%s' for '%s': '%s' is not a Lua function name (letters, digits, '_')", shown,
                             key->str, func);
    char *file = vg_xstrndup(val->str, flen);
    rc = fnref_file(ld, key, val, file, out);
    free(file);
    if (rc)
        return rc;
    out->rel = vg__conf_strdup(ld->pool, val->str);
    out->rel[flen] = '\0';
    out->func = vg__conf_strdup(ld->pool, func);
    out->line = val->line;
    out->col = val->col;
    return 0;
}
