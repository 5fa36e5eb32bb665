/* HTTP/1 request-head guard.
 *
 * h2o 2.2.5 consumes Content-Length, Transfer-Encoding and Host while
 * parsing and silently resolves conflicts (TE wins over CL, the first CL
 * wins, the last Host wins), so a handler can no longer see the ambiguity
 * that request smuggling relies on. The parse itself is picohttpparser's
 * phr_parse_request, which libh2o exports and calls through its PLT: verge
 * interposes it (ELF symbol interposition, the way allocators replace
 * malloc), calls the real one, and turns a head that smuggling defences
 * forbid into a parse error, which h2o answers with 400 and a close.
 * See docs/decisions.md ("Request smuggling defences"). */
#include "http.h"

#include <dlfcn.h>
#include <string.h>
#include <strings.h>

typedef int (*phr_parse_request_fn)(const char *buf, size_t len, const char **method, size_t *method_len,
                                    const char **path, size_t *path_len, int *minor_version,
                                    struct vg_http_raw_header *headers, size_t *num_headers, size_t last_len);

static bool name_is(const struct vg_http_raw_header *h, const char *name)
{
    size_t n = strlen(name);
    return h->name && h->name_len == n && strncasecmp(h->name, name, n) == 0;
}

/* 1..19 decimal digits: no sign, no list, no overflow of 64 bits. Values
 * are not NUL-terminated. */
static bool all_digits(const char *v, size_t len)
{
    if (len == 0 || len > 19)
        return false;
    for (size_t i = 0; i < len; i++)
        if (v[i] < '0' || v[i] > '9')
            return false;
    return true;
}

int vg_http_guard_check(const struct vg_http_raw_header *h, size_t n, const char **reason)
{
    const struct vg_http_raw_header *cl = NULL;
    bool te = false;
    size_t hosts = 0;
    for (size_t i = 0; i < n; i++) {
        if (!h[i].name) { /* picohttpparser's mark for an obs-fold line */
            *reason = "obsolete line folding in header";
            return -1;
        }
        if (name_is(&h[i], "content-length")) {
            if (cl && (cl->value_len != h[i].value_len || memcmp(cl->value, h[i].value, h[i].value_len) != 0)) {
                *reason = "conflicting Content-Length headers";
                return -1;
            }
            if (!all_digits(h[i].value, h[i].value_len)) {
                *reason = "invalid Content-Length";
                return -1;
            }
            cl = &h[i];
        } else if (name_is(&h[i], "transfer-encoding")) {
            te = true;
        } else if (name_is(&h[i], "host")) {
            hosts++;
        }
    }
    if (cl && te) {
        *reason = "Content-Length with Transfer-Encoding";
        return -1;
    }
    if (hosts > 1) {
        *reason = "more than one Host header";
        return -1;
    }
    return 0;
}

static phr_parse_request_fn real_parse(void)
{
    static phr_parse_request_fn fn;
    phr_parse_request_fn f = __atomic_load_n(&fn, __ATOMIC_ACQUIRE);
    if (!f) {
        f = (phr_parse_request_fn)dlsym(RTLD_NEXT, "phr_parse_request");
        VG_AN(f); /* libh2o is linked in: the symbol must be there */
        __atomic_store_n(&fn, f, __ATOMIC_RELEASE);
    }
    return f;
}

int phr_parse_request(const char *buf, size_t len, const char **method, size_t *method_len, const char **path,
                      size_t *path_len, int *minor_version, struct vg_http_raw_header *headers, size_t *num_headers,
                      size_t last_len);

int phr_parse_request(const char *buf, size_t len, const char **method, size_t *method_len, const char **path,
                      size_t *path_len, int *minor_version, struct vg_http_raw_header *headers, size_t *num_headers,
                      size_t last_len)
{
    int rc = real_parse()(buf, len, method, method_len, path, path_len, minor_version, headers, num_headers, last_len);
    if (rc <= 0)
        return rc;
    const char *reason;
    if (vg_http_guard_check(headers, *num_headers, &reason) == 0)
        return rc;
    char target[128];
    snprintf(target, sizeof(target), "%.*s %.*s", (int)(*method_len > 16 ? 16 : *method_len), *method,
             (int)(*path_len > 100 ? 100 : *path_len), *path);
    vg_log(VG_LOG_WARN, "request rejected", "status", "400", "reason", reason, "request", target, NULL);
    return -1;
}

bool vg_http_guard_active(void)
{
    return dlsym(RTLD_DEFAULT, "phr_parse_request") == (void *)phr_parse_request;
}
