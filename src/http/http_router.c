#include "http.h"

#include <string.h>
#include <strings.h>

/* Glob matching with a step budget: patterns come from the manifest but
 * paths from clients, and backtracking over several stars can otherwise be
 * made exponential. 4096 steps cover any sane route. */
struct glob {
    const char *pat, *pend, *str, *send;
    unsigned budget;
};

static bool glob_at(struct glob *g, const char *p, const char *s)
{
    while (p < g->pend) {
        if (g->budget == 0) /* stays 0: every pending branch then fails */
            return false;
        g->budget--;
        if (*p == '*') {
            bool deep = p + 1 < g->pend && p[1] == '*';
            const char *rest = p + (deep ? 2 : 1);
            /* try every split point: the star eats s..t */
            for (const char *t = s;; t++) {
                if (glob_at(g, rest, t))
                    return true;
                if (t == g->send || (!deep && *t == '/') || g->budget == 0)
                    return false;
            }
        }
        if (s == g->send || *p != *s)
            return false;
        p++;
        s++;
    }
    return s == g->send;
}

static bool prefix_match(const char *pattern, const char *path, size_t len)
{
    size_t pl = strlen(pattern);
    if (pl == 0 || (pl == 1 && pattern[0] == '/'))
        return true;
    if (pattern[pl - 1] == '/') /* "/api/" asks for the slash explicitly */
        return len >= pl && memcmp(path, pattern, pl) == 0;
    if (len < pl || memcmp(path, pattern, pl) != 0)
        return false;
    return len == pl || path[pl] == '/';
}

bool vg_http_path_match(enum vg_conf_match_kind kind, const char *pattern, const char *path, size_t len)
{
    switch (kind) {
    case VG_CONF_MATCH_PREFIX:
        return prefix_match(pattern, path, len);
    case VG_CONF_MATCH_EXACT:
        return strlen(pattern) == len && memcmp(pattern, path, len) == 0;
    case VG_CONF_MATCH_GLOB: {
        struct glob g = {pattern, pattern + strlen(pattern), path, path + len, 4096};
        return glob_at(&g, g.pat, g.str);
    }
    }
    return false;
}

static size_t host_len_without_port(const char *host, size_t len)
{
    if (len && host[0] == '[') { /* [v6]:port */
        const char *end = memchr(host, ']', len);
        return end ? (size_t)(end - host) + 1 : len;
    }
    const char *colon = memchr(host, ':', len);
    return colon ? (size_t)(colon - host) : len;
}

bool vg_http_host_match(const char *pattern, const char *host, size_t len)
{
    len = host_len_without_port(host, len);
    if (len && host[len - 1] == '.') /* "example.com." is the same name */
        len--;
    if (strcmp(pattern, "*") == 0)
        return true;
    if (pattern[0] == '*' && pattern[1] == '.') {
        size_t sl = strlen(pattern + 1); /* ".suffix" */
        return len > sl && strncasecmp(host + len - sl, pattern + 1, sl) == 0;
    }
    return strlen(pattern) == len && strncasecmp(pattern, host, len) == 0;
}

int vg_http_app_select(struct vg_conf_app *const *apps, size_t n_apps, const char *host, size_t len)
{
    int wildcard = -1, fallback = -1;
    for (size_t i = 0; i < n_apps; i++) {
        const struct vg_conf_app *a = apps[i];
        if (a->n_hosts == 0 && fallback < 0)
            fallback = (int)i;
        for (size_t h = 0; h < a->n_hosts; h++) {
            if (!vg_http_host_match(a->hosts[h], host, len))
                continue;
            if (a->hosts[h][0] != '*')
                return (int)i;
            if (wildcard < 0)
                wildcard = (int)i;
        }
    }
    return wildcard >= 0 ? wildcard : fallback;
}

int vg_http_route_find(const struct vg_conf_app *app, const char *host, size_t hlen, const char *path, size_t plen,
                       uint32_t method, uint32_t *allowed)
{
    int rc = VG_HTTP_ROUTE_NONE;
    uint32_t allow = 0;
    for (size_t i = 0; i < app->n_routes; i++) {
        const struct vg_conf_route *r = &app->routes[i];
        if (r->host && !vg_http_host_match(r->host, host, hlen))
            continue;
        if (!vg_http_path_match(r->match, r->path, path, plen))
            continue;
        if ((r->methods & method) || r->methods == VG_CONF_METHOD_ALL)
            return (int)i;
        rc = VG_HTTP_ROUTE_BAD_METHOD;
        allow |= r->methods;
    }
    if (allowed)
        *allowed = allow;
    return rc;
}

void vg_http_methods_format(uint32_t mask, char *buf, size_t cap)
{
    static const char *names[] = {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"};
    size_t o = 0;
    if (cap)
        buf[0] = '\0';
    for (size_t i = 0; i < VG_ARRAY_LEN(names); i++)
        if ((mask & (1u << i)) && o < cap)
            o += (size_t)snprintf(buf + o, cap - o, "%s%s", o ? ", " : "", names[i]);
}
