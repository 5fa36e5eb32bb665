/* Upstream connections: the parsing of origin responses (heads with
 * picohttpparser, bodies by Content-Length, chunked or until close). */
#include "proxy_int.h"

#include <string.h>

/* ---- response heads --------------------------------------------------------------------- */

static bool is_tchar(unsigned char ch)
{
    return ch > 0x20 && ch < 0x7f && !strchr("\"(),/:;<=>?@[\\]{}", ch);
}

/* Control bytes other than HTAB: picohttpparser is lenient about what it
 * accepts, and these could smuggle something into the client's response. */
static bool text_bad(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
            return true;
    }
    return false;
}

static bool field_bad(const struct phr_header *h)
{
    for (size_t i = 0; i < h->name_len; i++)
        if (!is_tchar((unsigned char)h->name[i]))
            return true;
    return h->name_len == 0 || text_bad(h->value, h->value_len);
}

static bool name_is(const struct phr_header *h, const char *lc, size_t len)
{
    return h2o_lcstris(h->name, h->name_len, lc, len);
}

/* 1..19 decimal digits, nothing else (no sign, no list, no overflow). */
static size_t parse_length(const char *v, size_t len)
{
    size_t n = 0;
    if (len == 0 || len > 19)
        return SIZE_MAX;
    for (size_t i = 0; i < len; i++) {
        if (v[i] < '0' || v[i] > '9')
            return SIZE_MAX;
        n = n * 10 + (size_t)(v[i] - '0');
    }
    return n;
}

/* Transfer-Encoding: only "chunked" alone is understood (as nginx does);
 * anything else leaves no way to find the body's end but the close, and
 * a coding the client would not be told about. */
static bool te_is_chunked(h2o_iovec_t v)
{
    while (v.len && (v.base[0] == ' ' || v.base[0] == '\t'))
        v.base++, v.len--;
    while (v.len && (v.base[v.len - 1] == ' ' || v.base[v.len - 1] == '\t'))
        v.len--;
    return h2o_lcstris(v.base, v.len, H2O_STRLIT("chunked"));
}

/* Reads the framing and connection headers into r. Returns why the head
 * cannot be forwarded, or NULL. */
static const char *read_fields(struct vg__proxy_resp *r, bool *te, bool *close, bool *keep)
{
    size_t n_te = 0;
    for (size_t i = 0; i < r->n_headers; i++) {
        const struct phr_header *h = &r->headers[i];
        if (h->name == NULL)
            return "obsolete line folding in response header";
        if (field_bad(h))
            return "invalid byte in response header";
        h2o_iovec_t v = h2o_iovec_init(h->value, h->value_len);
        if (name_is(h, H2O_STRLIT("content-length"))) {
            size_t n = parse_length(h->value, h->value_len);
            if (n == SIZE_MAX || (r->content_length != SIZE_MAX && n != r->content_length))
                return "invalid or conflicting content-length";
            r->content_length = n;
        } else if (name_is(h, H2O_STRLIT("transfer-encoding"))) {
            if (++n_te > 1 || !te_is_chunked(v))
                return "unsupported transfer-encoding";
            *te = true;
        } else if (name_is(h, H2O_STRLIT("connection"))) {
            *close = *close || vg__proxy_list_has(v, H2O_STRLIT("close"));
            *keep = *keep || vg__proxy_list_has(v, H2O_STRLIT("keep-alive"));
        }
    }
    return NULL;
}

int vg__proxy_resp_parse(const char *buf, size_t len, size_t last_len, bool head_request, struct vg__proxy_resp *r,
                         const char **why)
{
    const char *msg;
    size_t msg_len;
    r->n_headers = VG__PROXY_MAX_HEADERS;
    int n = phr_parse_response(buf, len, &r->minor_version, &r->status, &msg, &msg_len, r->headers, &r->n_headers,
                               last_len);
    if (n == -2 && len <= VG__PROXY_MAX_HEAD)
        return VG__PROXY_HEAD_PARTIAL;
    if (n < 0 || (size_t)n > VG__PROXY_MAX_HEAD) {
        *why = n == -1 ? "malformed response head" : "response head too large";
        return -1;
    }
    if (r->status < 100 || r->status > 999 || text_bad(msg, msg_len)) {
        *why = "malformed response head";
        return -1;
    }
    if (r->status == 101) {
        *why = "unexpected 101 response (no upgrade was asked for)";
        return -1;
    }
    r->reason = h2o_iovec_init(msg, msg_len);
    r->content_length = SIZE_MAX;
    bool te = false, close = false, keep = false;
    if ((*why = read_fields(r, &te, &close, &keep)) != NULL)
        return -1;
    r->chunked = te;
    r->keepalive = r->minor_version >= 1 ? !close : keep && !close;
    if (head_request || r->status < 200 || r->status == 204 || r->status == 304)
        r->framing = VG__PROXY_BODY_NONE;
    else if (te)
        r->framing = VG__PROXY_BODY_CHUNKED;
    else if (r->content_length != SIZE_MAX)
        r->framing = VG__PROXY_BODY_LENGTH;
    else
        r->framing = VG__PROXY_BODY_CLOSE;
    if (r->framing == VG__PROXY_BODY_CLOSE || (te && r->content_length != SIZE_MAX) ||
        (r->status == 204 && r->content_length != SIZE_MAX && r->content_length != 0))
        r->keepalive = false;
    return n;
}

/* ---- response bodies ------------------------------------------------------------------ */

void vg__proxy_body_init(struct vg__proxy_body *b, const struct vg__proxy_resp *r)
{
    *b = (struct vg__proxy_body){.framing = r->framing, .left = r->content_length};
    b->chunked.consume_trailer = 1; /* trailers are dropped: h2o cannot send them on */
}

enum vg__proxy_body_status vg__proxy_body_decode(struct vg__proxy_body *b, char *buf, size_t *len, size_t *extra)
{
    *extra = 0;
    switch (b->framing) {
    case VG__PROXY_BODY_NONE:
        *extra = *len;
        *len = 0;
        return VG__PROXY_BODY_DONE;
    case VG__PROXY_BODY_LENGTH:
        if (*len < b->left) {
            b->left -= *len;
            return VG__PROXY_BODY_MORE;
        }
        *extra = *len - b->left;
        *len = b->left;
        b->left = 0;
        return VG__PROXY_BODY_DONE;
    case VG__PROXY_BODY_CHUNKED: {
        ssize_t rc = phr_decode_chunked(&b->chunked, buf, len);
        if (rc == -2)
            return VG__PROXY_BODY_MORE;
        if (rc < 0)
            return VG__PROXY_BODY_BAD;
        *extra = (size_t)rc;
        return VG__PROXY_BODY_DONE;
    }
    case VG__PROXY_BODY_CLOSE:
        return VG__PROXY_BODY_MORE;
    }
    return VG__PROXY_BODY_BAD;
}
