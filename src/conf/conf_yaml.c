/* libfyaml events -> vg__conf_node tree.
 *
 * We build our own small tree from the event stream rather than use
 * libfyaml's document API because (a) libfyaml 0.7.12 exposes no position
 * for mapping and sequence nodes, and every error must say file:line:col,
 * and (b) the limits on untrusted input (depth, scalar size, entry count,
 * aliases) are enforced here before anything is stored, so the schema code
 * never sees a document it would have to defend against. */
#include "conf/conf_int.h"

#include <libfyaml.h>
#include <string.h>

struct frame {
    struct vg__conf_node *node;
    struct vg__conf_node *first, *last; /* node's children, linked while it is open */
    const char *name;                   /* key this collection is the value of, or NULL */
};

struct builder {
    struct vg__conf_ld *ld;
    const char *yaml; /* the input: token marks are byte offsets into it */
    size_t len;
    struct frame stack[VG__CONF_MAX_DEPTH];
    int depth;
    struct vg__conf_node *root;
    int docs;
    int line, col; /* position of the latest event that had one */
};

static void note_mark(struct builder *b, struct fy_event *ev)
{
    const struct fy_mark *m = fy_event_start_mark(ev);
    if (m) {
        b->line = m->line + 1;
        b->col = m->column + 1;
    }
}

static struct vg__conf_node *node_new(struct builder *b, enum vg__conf_node_type t)
{
    struct vg__conf_node *n = vg__conf_alloc(&b->ld->tmp, sizeof(*n));
    n->type = t;
    n->line = b->line;
    n->col = b->col;
    return n;
}

/* The key a child collection hangs under, for "'routes' has ..." messages. */
static const char *pending_key(const struct frame *f)
{
    if (f->node->type != VG__CONF_NODE_MAP || f->node->n_kids % 2 == 0 || !f->last)
        return NULL;
    return f->last->type == VG__CONF_NODE_SCALAR ? f->last->str : NULL;
}

static int attach(struct builder *b, struct vg__conf_node *n)
{
    if (b->depth == 0) {
        b->root = n;
        return 0;
    }
    struct frame *f = &b->stack[b->depth - 1];
    size_t max = f->node->type == VG__CONF_NODE_MAP ? 2 * VG__CONF_MAX_ITEMS : VG__CONF_MAX_ITEMS;
    if (f->node->n_kids >= max) {
        char shown[80];
        if (f->name)
            return vg__conf_fail(b->ld, n, "'%s' has more than %d entries",
                                 vg__conf_show(f->name, shown, sizeof(shown)), VG__CONF_MAX_ITEMS);
        return vg__conf_fail(b->ld, n, "more than %d entries in one %s", VG__CONF_MAX_ITEMS,
                             f->node->type == VG__CONF_NODE_MAP ? "mapping" : "list");
    }
    if (f->last)
        f->last->next = n;
    else
        f->first = n;
    f->last = n;
    f->node->n_kids++;
    return 0;
}

static int open_collection(struct builder *b, enum vg__conf_node_type t)
{
    struct vg__conf_node *n = node_new(b, t);
    if (b->depth >= VG__CONF_MAX_DEPTH)
        return vg__conf_fail(b->ld, n, "nesting deeper than %d levels", VG__CONF_MAX_DEPTH);
    const char *name = b->depth ? pending_key(&b->stack[b->depth - 1]) : NULL;
    int rc = attach(b, n);
    if (rc)
        return rc;
    b->stack[b->depth++] = (struct frame){.node = n, .name = name};
    return 0;
}

/* Turns the build-time child list into the kids array. */
static void close_collection(struct builder *b)
{
    VG_ASSERT(b->depth > 0);
    struct frame *f = &b->stack[--b->depth];
    struct vg__conf_node *n = f->node, *c = f->first;
    n->kids = vg__conf_alloc_array(&b->ld->tmp, n->n_kids, sizeof(*n->kids));
    for (size_t i = 0; i < n->n_kids; i++, c = c->next)
        n->kids[i] = c;
}

static bool is_null_text(const char *s, size_t len)
{
    static const char *const nulls[] = {"", "~", "null", "Null", "NULL"};
    for (size_t i = 0; i < VG_ARRAY_LEN(nulls); i++)
        if (len == strlen(nulls[i]) && memcmp(s, nulls[i], len) == 0)
            return true;
    return false;
}

static bool is_blank(char c)
{
    return c == ' ' || c == '\t';
}

/* YAML single-quoted text: '' is one quote; a line break folds to a space,
 * n+1 breaks to n newlines, and the blanks around breaks go. The output is
 * never longer than the input. */
static char *unquote_single(struct vg__conf_pool *pool, const char *s, size_t n, size_t *out_len)
{
    char *out = vg__conf_alloc(pool, n + 1), *o = out;
    size_t i = 0, breaks = 0;
    for (bool first = true; i <= n; first = false) {
        size_t a = i;
        while (i < n && s[i] != '\n' && s[i] != '\r')
            i++;
        size_t z = i;
        bool last = i >= n;
        i += last ? 1 : (s[i] == '\r' && i + 1 < n && s[i + 1] == '\n') ? 2 : 1;
        while (!first && a < z && is_blank(s[a]))
            a++;
        while (!last && z > a && is_blank(s[z - 1]))
            z--;
        if (!first && a == z && !last) {
            breaks++;
            continue;
        }
        if (!first) {
            memset(o, breaks ? '\n' : ' ', breaks ? breaks : 1);
            o += breaks ? breaks : 1;
            breaks = 0;
        }
        for (size_t k = a; k < z; k++) {
            *o++ = s[k];
            k += s[k] == '\'' && k + 1 < z && s[k + 1] == '\'';
        }
    }
    *out_len = (size_t)(o - out);
    return out;
}

/* The text of a scalar token, on the tmp pool. Single-quoted text is
 * decoded here: libfyaml 0.7.12 decodes four quotes in a row as three and
 * leaks memory doing it (libfyaml issue #233; found by fuzz_manifest). */
static const char *scalar_text(struct builder *b, struct fy_token *tok, size_t *len)
{
    if (fy_token_scalar_style(tok) != FYSS_SINGLE_QUOTED) {
        const char *s = fy_token_get_text(tok, len);
        return s ? vg__conf_strndup(&b->ld->tmp, s, *len) : NULL;
    }
    const struct fy_mark *a = fy_token_start_mark(tok), *z = fy_token_end_mark(tok);
    if (!a || !z || a->input_pos > z->input_pos || z->input_pos > b->len)
        return NULL;
    return unquote_single(&b->ld->tmp, b->yaml + a->input_pos, z->input_pos - a->input_pos, len);
}

static int add_scalar(struct builder *b, struct fy_event *ev)
{
    struct fy_token *tok = ev->scalar.value;
    size_t len = 0;
    const char *s = tok ? scalar_text(b, tok, &len) : NULL;
    enum fy_scalar_style style = tok ? fy_token_scalar_style(tok) : FYSS_PLAIN;
    if (!s || (style == FYSS_PLAIN && is_null_text(s, len)))
        return attach(b, node_new(b, VG__CONF_NODE_NULL));
    struct vg__conf_node *n = node_new(b, VG__CONF_NODE_SCALAR);
    if ((style == FYSS_SINGLE_QUOTED || style == FYSS_DOUBLE_QUOTED) && n->col > 1)
        n->col--; /* libfyaml marks the text; point at its opening quote */
    if (len > VG__CONF_MAX_SCALAR)
        return vg__conf_fail(b->ld, n, "value longer than %d bytes", VG__CONF_MAX_SCALAR);
    if (memchr(s, '\0', len))
        return vg__conf_fail(b->ld, n, "value contains a NUL character");
    n->str = s;
    n->len = len;
    return attach(b, n);
}

static int on_event(struct builder *b, struct fy_event *ev)
{
    note_mark(b, ev);
    switch (ev->type) {
    case FYET_DOCUMENT_START:
        if (++b->docs > 1)
            return vg__conf_fail_at(b->ld, b->line, b->col, "only one YAML document is allowed ('---' starts another)");
        return 0;
    case FYET_MAPPING_START:
        return open_collection(b, VG__CONF_NODE_MAP);
    case FYET_SEQUENCE_START:
        return open_collection(b, VG__CONF_NODE_SEQ);
    case FYET_MAPPING_END:
    case FYET_SEQUENCE_END:
        close_collection(b);
        return 0;
    case FYET_SCALAR:
        return add_scalar(b, ev);
    case FYET_ALIAS: /* libfyaml marks the name; point at the '*' */
        return vg__conf_fail_at(b->ld, b->line, b->col > 1 ? b->col - 1 : 1, "YAML aliases (*name) are not supported");
    default:
        return 0;
    }
}

static int syntax_error(struct builder *b, struct fy_diag *diag)
{
    void *it = NULL;
    struct fy_diag_error *e;
    while ((e = fy_diag_errors_iterate(diag, &it))) {
        if (e->type < FYET_ERROR)
            continue;
        /* libfyaml's collected positions are already 1-based. */
        int line = e->line > 0 ? e->line : b->line;
        int col = e->column > 0 ? e->column : b->col;
        return vg__conf_fail_at(b->ld, line, col, "YAML syntax error: %s", e->msg ? e->msg : "invalid YAML");
    }
    return vg__conf_fail_at(b->ld, b->line, b->col, "YAML syntax error");
}

/* Length of the well-formed UTF-8 sequence at s (RFC 3629: no overlongs,
 * surrogates or code points above U+10FFFF), or 0. */
static size_t utf8_len(const unsigned char *s, size_t avail)
{
    unsigned char c = s[0];
    size_t n = c < 0x80 ? 1 : c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3 : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
    if (n == 0 || n > avail)
        return 0;
    unsigned char lo = 0x80, hi = 0xbf; /* allowed range of the second byte */
    if (c == 0xe0)
        lo = 0xa0;
    else if (c == 0xed)
        hi = 0x9f;
    else if (c == 0xf0)
        lo = 0x90;
    else if (c == 0xf4)
        hi = 0x8f;
    if (n > 1 && (s[1] < lo || s[1] > hi))
        return 0;
    for (size_t i = 2; i < n; i++)
        if ((s[i] & 0xc0) != 0x80)
            return 0;
    return n;
}

/* libfyaml 0.7.12 loops forever on some malformed UTF-8 (found by
 * fuzz_manifest: "%a \x97"), and YAML must be Unicode anyway: check it
 * first, and say where the bad byte is. */
static int check_utf8(struct vg__conf_ld *ld, const char *yaml, size_t len)
{
    const unsigned char *s = (const unsigned char *)yaml;
    int line = 1, col = 1;
    for (size_t i = 0, n; i < len; i += n) {
        if (!(n = utf8_len(s + i, len - i)))
            return vg__conf_fail_at(ld, line, col, "invalid UTF-8 (byte 0x%02x): the manifest must be UTF-8 text",
                                    s[i]);
        /* YAML allows no C0 control character but tab, LF and CR (1.2,
         * c-printable): refused with their position, before the parser */
        if ((s[i] < 0x20 && s[i] != '\t' && s[i] != '\n' && s[i] != '\r') || s[i] == 0x7f)
            return vg__conf_fail_at(ld, line, col, "control character 0x%02x: YAML allows only tab, LF and CR", s[i]);
        /* a lone CR is a line break to YAML; refusing it keeps LF the one
         * line end the checks below (and every line number) count, and
         * libfyaml crashed on "\r? key" (fuzz_manifest) */
        if (s[i] == '\r' && (i + 1 == len || s[i + 1] != '\n'))
            return vg__conf_fail_at(ld, line, col, "carriage return without a line feed: end lines with LF or CRLF");
        if (s[i] == '\n') {
            line++;
            col = 1;
        } else {
            col++;
        }
    }
    return 0;
}

/* Block explicit keys ("? key", at the start of a line or after "- ")
 * are refused before libfyaml sees them: the manifest never needs one,
 * and libfyaml 0.7/0.8 crashes freeing its parser after "? a:" followed by
 * tabs and another ':' (found by fuzz_manifest). */
static int check_explicit_keys(struct vg__conf_ld *ld, const char *yaml, size_t len)
{
    int line = 1;
    for (size_t i = 0; i < len;) {
        size_t start = i;
        while (i < len && (yaml[i] == ' ' || yaml[i] == '\t' ||
                           (yaml[i] == '-' && i + 1 < len && (yaml[i + 1] == ' ' || yaml[i + 1] == '\t'))))
            i++;
        if (i < len && yaml[i] == '?' &&
            (i + 1 == len || yaml[i + 1] == ' ' || yaml[i + 1] == '\t' || yaml[i + 1] == '\n' || yaml[i + 1] == '\r'))
            return vg__conf_fail_at(ld, line, (int)(i - start) + 1,
                                    "explicit keys ('? key') are not part of a verge manifest: write 'key: value'");
        const char *nl = memchr(yaml + i, '\n', len - i);
        i = nl ? (size_t)(nl - yaml) + 1 : len;
        line++;
    }
    return 0;
}

static void diag_discard(struct fy_diag *diag, void *user, const char *buf, size_t len)
{
    /* Errors are collected and reported through vg_conf_error instead. */
}

static int run_parser(struct builder *b, struct fy_parser *fyp, struct fy_diag *diag)
{
    struct fy_event *ev;
    while ((ev = fy_parser_parse(fyp))) {
        int rc = on_event(b, ev);
        fy_parser_event_free(fyp, ev);
        if (rc)
            return rc;
    }
    if (fy_parser_get_stream_error(fyp))
        return syntax_error(b, diag);
    return 0;
}

int vg__conf_yaml_parse(struct vg__conf_ld *ld, const char *yaml, size_t len, struct vg__conf_node **root)
{
    int rc = check_utf8(ld, yaml, len);
    if (rc == 0)
        rc = check_explicit_keys(ld, yaml, len);
    if (rc)
        return rc;
    rc = VG_ENOMEM;
    struct builder b = {.ld = ld, .yaml = yaml, .len = len, .line = 1, .col = 1};
    struct fy_diag_cfg dcfg;
    fy_diag_cfg_default(&dcfg);
    dcfg.fp = NULL;
    dcfg.output_fn = diag_discard;
    dcfg.colorize = false;
    struct fy_diag *diag = fy_diag_create(&dcfg);
    struct fy_parser *fyp = NULL;
    if (!diag)
        goto out;
    fy_diag_set_collect_errors(diag, true);
    /* Duplicate keys are reported by the schema walker, with both positions. */
    struct fy_parse_cfg pcfg = {.flags = FYPCF_QUIET | FYPCF_ALLOW_DUPLICATE_KEYS, .diag = diag};
    fyp = fy_parser_create(&pcfg);
    if (!fyp || fy_parser_set_string(fyp, yaml, len) != 0)
        goto out;
    rc = run_parser(&b, fyp, diag);
    if (rc == 0 && !b.root)
        rc = vg__conf_fail_at(ld, 1, 1, "the manifest is empty: expected a mapping with at least 'name' and 'routes'");
    if (rc == 0)
        *root = b.root;
out:
    if (rc == VG_ENOMEM && !ld->failed)
        vg__conf_fail_at(ld, 0, 0, "out of memory while parsing YAML");
    if (fyp)
        fy_parser_destroy(fyp);
    if (diag)
        fy_diag_destroy(diag);
    return rc;
}
