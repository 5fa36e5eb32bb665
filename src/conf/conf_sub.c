/* The `subscriptions:` section: bus subjects whose messages run a Lua
 * handler. Subjects are relative to the app's own prefix
 * (verge.app.<name>.), the same names verge.publish uses. */
#include "conf/conf_int.h"

#include <string.h>

/* NATS subject grammar (as src/bus checks it; conf sits beside bus, not
 * above it): tokens of printable ASCII without spaces, separated by '.';
 * '*' as a whole token matches one token, '>' as the whole last token one
 * or more. NULL when s is valid, else why not. */
static const char *subject_error(const char *s, size_t len)
{
    if (len == 0)
        return "it is empty";
    if (len > VG_CONF_SUB_SUBJECT_MAX)
        return "it is too long";
    const char *tok = s;
    for (const char *p = s;; p++) {
        if (*p == '.' || *p == '\0') {
            size_t tl = (size_t)(p - tok);
            if (tl == 0)
                return "it has an empty token ('..', or a '.' at either end)";
            if (tl == 1 && tok[0] == '>' && *p != '\0')
                return "'>' may only be the last token";
            if (*p == '\0')
                return NULL;
            tok = p + 1;
            continue;
        }
        unsigned char c = (unsigned char)*p;
        if (c <= 0x20 || c >= 0x7f)
            return "it has a space or a byte that is not printable ASCII";
        if ((c == '*' || c == '>') && !(p == tok && (p[1] == '.' || p[1] == '\0')))
            return "a wildcard ('*' or '>') must be a whole token";
    }
}

static int parse_subject(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                         void *obj)
{
    struct vg_conf_sub *s = obj;
    const char *what = "a subject like 'orders.*' (tokens separated by '.', '*' or a final '>' as wildcards)";
    int rc = vg__conf_want_scalar(ld, key, val, what);
    if (rc)
        return rc;
    const char *why = subject_error(val->str, val->len);
    if (why) {
        char shown[80];
        return vg__conf_fail(ld, val, "invalid subject '%s': %s; expected %s, at most %d bytes",
                             vg__conf_show(val->str, shown, sizeof(shown)), why, what, VG_CONF_SUB_SUBJECT_MAX);
    }
    s->subject = vg__conf_strndup(ld->pool, val->str, val->len);
    return 0;
}

static int parse_handler(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                         void *obj)
{
    return vg__conf_want_fnref(ld, key, val, &((struct vg_conf_sub *)obj)->handler);
}

static int parse_deliver(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                         void *obj)
{
    static const char *const names[] = {"one", "all"};
    int v = 0;
    int rc = vg__conf_want_enum(ld, key, val, names, VG_ARRAY_LEN(names), &v);
    ((struct vg_conf_sub *)obj)->deliver_all = v == 1;
    return rc;
}

static int parse_item(struct vg__conf_ld *ld, const struct vg__conf_node *n, struct vg_conf_sub *s)
{
    static const struct vg__conf_key keys[] = {
        {"subject", parse_subject, true},
        {"handler", parse_handler, true},
        {"deliver", parse_deliver, false},
    };
    s->line = n->line;
    s->col = n->col;
    int rc = vg__conf_map_walk(ld, n, "a subscription", keys, VG_ARRAY_LEN(keys), s);
    if (rc)
        return rc;
    /* two subscriptions on one subject would share a queue group (deliver:
     * one) or run twice per message (all): either is a mistake */
    for (size_t i = 0; i < ld->app->n_subs; i++)
        if (strcmp(ld->app->subs[i].subject, s->subject) == 0)
            return vg__conf_fail(ld, vg__conf_map_get(n, "subject"),
                                 "subject '%s' is already subscribed (line %d): one handler per subject", s->subject,
                                 ld->app->subs[i].line);
    return 0;
}

int vg__conf_subs_parse(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                        void *obj)
{
    if (val->type != VG__CONF_NODE_SEQ)
        return vg__conf_fail(ld, val, "expected a list of subscriptions for 'subscriptions', got %s",
                             vg__conf_node_kind(val));
    struct vg_conf_app *app = ld->app;
    app->subs = vg__conf_alloc_array(ld->pool, val->n_kids ? val->n_kids : 1, sizeof(*app->subs));
    for (size_t i = 0; i < val->n_kids; i++) {
        int rc = parse_item(ld, val->kids[i], &app->subs[i]);
        if (rc)
            return rc;
        app->n_subs++;
    }
    return 0;
}
