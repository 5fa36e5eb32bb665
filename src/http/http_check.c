#include "http.h"

#include <string.h>

/* RFC 9110 token characters (ALPHA, DIGIT and "!#$%&'*+-.^_`|~"), one
 * bit per character code below 128: scripts' response headers are checked
 * on every request. */
static const uint64_t TCHAR[2] = {0x03ff6cfa00000000ull, 0x57ffffffc7fffffeull};

static bool is_tchar(unsigned char c)
{
    return c < 128 && (TCHAR[c >> 6] >> (c & 63) & 1);
}

bool vg_http_value_ok(h2o_iovec_t v)
{
    for (size_t i = 0; i < v.len; i++) {
        unsigned char c = (unsigned char)v.base[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return false;
    }
    return true;
}

bool vg_http_name_ok(h2o_iovec_t n)
{
    if (n.len == 0)
        return false;
    for (size_t i = 0; i < n.len; i++)
        if (!is_tchar((unsigned char)n.base[i]))
            return false;
    return true;
}

static bool digits_only(h2o_iovec_t v)
{
    size_t i = 0, j = v.len;
    while (i < j && (v.base[i] == ' ' || v.base[i] == '\t'))
        i++;
    while (j > i && (v.base[j - 1] == ' ' || v.base[j - 1] == '\t'))
        j--;
    if (i == j || j - i > 19)
        return false;
    for (; i < j; i++)
        if (v.base[i] < '0' || v.base[i] > '9')
            return false;
    return true;
}

int vg_http_req_check(h2o_req_t *req, const char **reason)
{
    const h2o_iovec_t *cl = NULL;
    bool te = false;
    for (size_t i = 0; i < req->headers.size; i++) {
        const h2o_header_t *h = &req->headers.entries[i];
        /* HPACK lets any byte through: it ends here */
        if (!vg_http_name_ok(*h->name) || !vg_http_value_ok(h->value)) {
            *reason = "invalid header field";
            return 400;
        }
        if (h->name == &H2O_TOKEN_CONTENT_LENGTH->buf) {
            if (!digits_only(h->value)) {
                *reason = "invalid Content-Length";
                return 400;
            }
            if (cl && !h2o_memis(cl->base, cl->len, h->value.base, h->value.len)) {
                *reason = "conflicting Content-Length headers";
                return 400;
            }
            cl = &h->value;
        } else if (h->name == &H2O_TOKEN_TRANSFER_ENCODING->buf) {
            te = true;
        }
    }
    if (cl && te) {
        *reason = "Content-Length with Transfer-Encoding";
        return 400;
    }
    return 0;
}

size_t vg_http_req_header_bytes(h2o_req_t *req)
{
    size_t n = req->input.method.len + req->input.path.len + 12;
    for (size_t i = 0; i < req->headers.size; i++)
        n += req->headers.entries[i].name->len + req->headers.entries[i].value.len + 4;
    return n;
}

/* ---- query strings ------------------------------------------------------------------- */

static int hexval(int c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

size_t vg_http_form_decode(const char *s, size_t n, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        int h, l;
        if (s[i] == '+') {
            out[o++] = ' ';
        } else if (s[i] == '%' && i + 2 < n && (h = hexval((unsigned char)s[i + 1])) >= 0 &&
                   (l = hexval((unsigned char)s[i + 2])) >= 0) {
            out[o++] = (char)(h * 16 + l);
            i += 2;
        } else {
            out[o++] = s[i];
        }
    }
    return o;
}

bool vg_http_query_param(h2o_req_t *req, const char *name, h2o_iovec_t *value)
{
    if (req->query_at == SIZE_MAX)
        return false;
    size_t nl = strlen(name);
    const char *p = req->path.base + req->query_at + 1, *end = req->path.base + req->path.len;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p)), *stop = amp ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(stop - p));
        const char *kend = eq ? eq : stop;
        if ((size_t)(kend - p) == nl && memcmp(p, name, nl) == 0) {
            const char *v = eq ? eq + 1 : stop;
            char *buf = h2o_mem_alloc_pool(&req->pool, (size_t)(stop - v) + 1);
            size_t len = vg_http_form_decode(v, (size_t)(stop - v), buf);
            buf[len] = '\0';
            *value = h2o_iovec_init(buf, len);
            return true;
        }
        p = stop + 1;
    }
    return false;
}

/* ---- the request's trace ------------------------------------------------------------ */

const h2o_iovec_t vg__http_env_trace = {H2O_STRLIT("verge.trace")};

void vg_http_req_set_trace(h2o_req_t *req, struct vg_trace *t)
{
    h2o_vector_reserve(&req->pool, &req->env, req->env.size + 2);
    req->env.entries[req->env.size++] = vg__http_env_trace;
    req->env.entries[req->env.size++] = h2o_iovec_init((char *)t, 0);
}

void vg_http_req_set_trace_in(h2o_req_t *req, struct vg_trace *t, h2o_iovec_t slot[2])
{
    if (req->env.capacity) {
        vg_http_req_set_trace(req, t);
        return;
    }
    slot[0] = vg__http_env_trace;
    slot[1] = h2o_iovec_init((char *)t, 0);
    req->env.entries = slot;
    req->env.size = req->env.capacity = 2;
}

struct vg_trace *vg__http_req_trace_find(h2o_req_t *req)
{
    for (size_t i = 0; i + 1 < req->env.size; i += 2)
        if (h2o_memis(req->env.entries[i].base, req->env.entries[i].len, vg__http_env_trace.base,
                      vg__http_env_trace.len))
            return (struct vg_trace *)req->env.entries[i + 1].base;
    return NULL;
}
