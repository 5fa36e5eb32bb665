#include "base.h"

#include <string.h>

const char *vg_strerror(int err)
{
    switch (err) {
    case 0:
        return "success";
#define VG_ERR_STR(name, val, msg)                                                                                     \
    case val:                                                                                                          \
        return msg;
        VG_ERRNO_MAP(VG_ERR_STR)
#undef VG_ERR_STR
    }
    return "unknown error";
}

const char *vg_err_name(int err)
{
    switch (err) {
    case 0:
        return "OK";
#define VG_ERR_NAME(name, val, msg)                                                                                    \
    case val:                                                                                                          \
        return "VG_" #name;
        VG_ERRNO_MAP(VG_ERR_NAME)
#undef VG_ERR_NAME
    }
    return "VG_UNKNOWN";
}

void vg_panic(const char *file, int line, const char *cond)
{
    fprintf(stderr, "verge: assertion failed at %s:%d: %s\n", file, line, cond);
    fflush(stderr);
    abort();
}

static void *oom(void)
{
    vg_panic(__FILE__, __LINE__, "out of memory");
}

void *vg_xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    return p ? p : oom();
}

void *vg_xcalloc(size_t n, size_t sz)
{
    void *p = calloc(n ? n : 1, sz ? sz : 1);
    return p ? p : oom();
}

void *vg_xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    return q ? q : oom();
}

char *vg_xstrdup(const char *s)
{
    return vg_xstrndup(s, strlen(s));
}

char *vg_xstrndup(const char *s, size_t n)
{
    char *d = vg_xmalloc(n + 1);
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

char *vg_xasprintf(const char *fmt, ...)
{
    va_list ap;
    char *s;
    va_start(ap, fmt);
    int n = vasprintf(&s, fmt, ap);
    va_end(ap);
    return n < 0 ? oom() : s;
}

size_t vg_edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 64 || lb > 64)
        return (size_t)-1; /* keys are short; refuse quadratic work on junk */
    size_t row[65];
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t prev = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t cur = row[j];
            size_t sub = prev + (a[i - 1] != b[j - 1]);
            size_t best = row[j] + 1 < row[j - 1] + 1 ? row[j] + 1 : row[j - 1] + 1;
            row[j] = sub < best ? sub : best;
            prev = cur;
        }
    }
    return row[lb];
}
