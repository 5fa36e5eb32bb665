#include "http.h"

#include <string.h>

/* RFC 9110 token characters, for header names. */
static bool is_tchar(unsigned char c)
{
    if (c >= 'a' && c <= 'z')
        return true;
    if (c >= 'A' && c <= 'Z')
        return true;
    if (c >= '0' && c <= '9')
        return true;
    return c && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* field-value: VCHAR, obs-text, SP and HTAB; no CR, LF, NUL or other CTLs. */
static bool value_ok(h2o_iovec_t v)
{
    for (size_t i = 0; i < v.len; i++) {
        unsigned char c = (unsigned char)v.base[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return false;
    }
    return true;
}

static bool name_ok(h2o_iovec_t n)
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
        if (!name_ok(*h->name) || !value_ok(h->value)) {
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
