/* What both scopes share: keys, the value record, INCR, queued writes. */
#include "state_int.h"

#include <stdlib.h>
#include <string.h>

const char *const VG_STATE_SCOPE_NAMES[VG_STATE_SCOPES] = {"local", "global"};
const char *const VG_STATE_OP_NAMES[VG_STATE_C_OPS] = {"get", "set", "delete", "incr"};
const char *const VG_STATE_RESULT_NAMES[VG_STATE_R_RESULTS] = {"ok", "miss", "conflict", "error"};

bool vg_state_key_valid(const char *key, size_t len, const char **why)
{
    const char *w = NULL;
    if (len == 0)
        w = "the key is empty";
    else if (len > VG_STATE_MAX_KEY)
        w = "the key is longer than 1024 bytes";
    else if (key[0] == '.' || key[len - 1] == '.')
        w = "a key cannot start or end with '.'";
    for (size_t i = 0; !w && i < len; i++) {
        char c = key[i];
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
            c == '/' || c == '=')
            continue;
        if (c == '.' && key[i + 1] != '.')
            continue;
        w = c == '.' ? "a key cannot contain \"..\""
                     : "a key is made of letters, digits and - _ / = . (NATS KV keys; no spaces, ':' or '*')";
    }
    if (w && why)
        *why = w;
    return w == NULL;
}

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static const uint8_t MAGIC[4] = {0, 'v', 'g', '1'};

static size_t payload_size(const struct vg_state_value *v)
{
    switch (v->type) {
    case VG_STATE_STRING:
        return v->str.len;
    case VG_STATE_INTEGER:
    case VG_STATE_NUMBER:
        return 8;
    case VG_STATE_BOOLEAN:
        return 1;
    }
    VG_ASSERT(!"bad value type");
    return 0;
}

size_t vg__state_rec_size(const struct vg_state_value *v, size_t tail_klen, bool ack)
{
    return VG__STATE_HDR + payload_size(v) + tail_klen + (ack ? VG__STATE_ACK_REQ : 0);
}

void vg__state_rec_encode(uint8_t *out, const struct vg_state_value *v, uint64_t expires_ms, uint64_t written_us,
                          const char *tail_key, size_t tail_klen, const struct vg__state_ackreq *ack)
{
    VG_ASSERT(tail_klen <= 0xffff);
    memcpy(out, MAGIC, 4);
    out[4] = (uint8_t)v->type;
    out[5] = ack ? VG__STATE_F_ACK : 0;
    out[6] = (uint8_t)tail_klen;
    out[7] = (uint8_t)(tail_klen >> 8);
    put64(out + 8, expires_ms);
    put64(out + 16, written_us);
    uint8_t *p = out + VG__STATE_HDR;
    switch (v->type) {
    case VG_STATE_STRING:
        if (v->str.len)
            memcpy(p, v->str.ptr, v->str.len);
        p += v->str.len;
        break;
    case VG_STATE_INTEGER:
        put64(p, (uint64_t)v->i);
        p += 8;
        break;
    case VG_STATE_NUMBER: {
        uint64_t bits;
        memcpy(&bits, &v->n, 8);
        put64(p, bits);
        p += 8;
        break;
    }
    case VG_STATE_BOOLEAN:
        *p++ = v->b ? 1 : 0;
        break;
    }
    if (tail_klen)
        memcpy(p, tail_key, tail_klen);
    p += tail_klen;
    if (ack) {
        put64(p, ack->inbox);
        put64(p + 8, ack->id);
    }
}

bool vg__state_rec_decode(const uint8_t *p, size_t len, bool raw_ok, struct vg__state_rec *r)
{
    memset(r, 0, sizeof(*r));
    bool magic = len >= 4 && memcmp(p, MAGIC, 4) == 0;
    if (!magic) {
        if (!raw_ok || len > VG_STATE_MAX_VALUE)
            return false;
        r->v.type = VG_STATE_STRING;
        r->v.str.ptr = (const char *)p;
        r->v.str.len = len;
        return true;
    }
    /* the magic and less than a header: a record cut short, not a plain
     * value (it would read as a string of verge's own header bytes) */
    if (len < VG__STATE_HDR)
        return false;
    size_t tail = (size_t)p[6] | (size_t)p[7] << 8;
    size_t areq = p[5] == VG__STATE_F_ACK ? VG__STATE_ACK_REQ : 0;
    if ((p[5] & ~VG__STATE_F_ACK) != 0 || len < VG__STATE_HDR + tail + areq)
        return false;
    size_t plen = len - VG__STATE_HDR - tail - areq;
    if (areq) {
        r->ack = true;
        r->ackreq.inbox = get64(p + len - areq);
        r->ackreq.id = get64(p + len - areq + 8);
    }
    const uint8_t *pl = p + VG__STATE_HDR;
    r->expires_ms = get64(p + 8);
    r->written_us = get64(p + 16);
    r->tail_key = tail ? (const char *)pl + plen : NULL;
    r->tail_klen = tail;
    r->v.type = (enum vg_state_type)p[4];
    switch (p[4]) {
    case VG_STATE_STRING:
        if (plen > VG_STATE_MAX_VALUE)
            return false;
        r->v.str.ptr = (const char *)pl;
        r->v.str.len = plen;
        return true;
    case VG_STATE_INTEGER: /* lengths first: the bytes may come from anyone (fuzz_kv_record) */
        if (plen != 8)
            return false;
        r->v.i = (int64_t)get64(pl);
        return true;
    case VG_STATE_NUMBER: {
        if (plen != 8)
            return false;
        uint64_t bits = get64(pl);
        memcpy(&r->v.n, &bits, 8);
        return true;
    }
    case VG_STATE_BOOLEAN:
        if (plen != 1 || pl[0] > 1)
            return false;
        r->v.b = pl[0] != 0;
        return true;
    }
    return false;
}

static const uint8_t ACK_MAGIC[4] = {0, 'v', 'g', 'a'};

void vg__state_ack_encode(uint8_t out[VG__STATE_ACK_LEN], const struct vg__state_ack *a)
{
    memcpy(out, ACK_MAGIC, 4);
    put64(out + 4, a->id);
    put64(out + 12, a->rev);
    put64(out + 20, a->node);
}

bool vg__state_ack_decode(const uint8_t *p, size_t len, struct vg__state_ack *a)
{
    if (len != VG__STATE_ACK_LEN || memcmp(p, ACK_MAGIC, 4) != 0)
        return false;
    a->id = get64(p + 4);
    a->rev = get64(p + 12);
    a->node = get64(p + 20);
    return true;
}

static double as_double(const struct vg_state_value *v)
{
    return v->type == VG_STATE_INTEGER ? (double)v->i : v->n;
}

struct vg_state_value vg_state_value_add(const struct vg_state_value *a, const struct vg_state_value *b)
{
    struct vg_state_value r;
    if (a->type == VG_STATE_INTEGER && b->type == VG_STATE_INTEGER) {
        r.type = VG_STATE_INTEGER;
        r.i = (int64_t)((uint64_t)a->i + (uint64_t)b->i); /* wraps like Lua */
    } else {
        r.type = VG_STATE_NUMBER;
        r.n = as_double(a) + as_double(b);
    }
    return r;
}

int vg__state_incr(const struct vg_state_value *cur, const struct vg_state_write *w, struct vg_state_value *out)
{
    struct vg_state_value zero = {.type = VG_STATE_INTEGER, .i = 0};
    const struct vg_state_value *base = cur ? cur : w->init.type ? &w->init : &zero;
    if (base->type != VG_STATE_INTEGER && base->type != VG_STATE_NUMBER)
        return VG_EINVAL;
    const struct vg_state_value *d = &w->value;
    VG_ASSERT(d->type == VG_STATE_INTEGER || d->type == VG_STATE_NUMBER);
    *out = vg_state_value_add(base, d);
    return 0;
}

int vg__state_write_check(const struct vg_state_write *w)
{
    if (!vg_state_key_valid(w->key, w->klen, NULL))
        return VG_EINVAL;
    if (w->op == VG_STATE_SET && w->value.type == VG_STATE_STRING && w->value.str.len > VG_STATE_MAX_VALUE)
        return VG_ELIMIT;
    if (w->op == VG_STATE_INCR && w->value.type != VG_STATE_INTEGER && w->value.type != VG_STATE_NUMBER)
        return VG_EINVAL;
    return 0;
}

struct vg__state_wreq *vg__state_wreq_new(void *db, const struct vg_state_write *w, vg_state_done_fn done, void *arg)
{
    size_t slen = w->op == VG_STATE_SET && w->value.type == VG_STATE_STRING ? w->value.str.len : 0;
    struct vg__state_wreq *q = vg_xmalloc(sizeof(*q) + w->klen + slen + 1);
    q->next = NULL;
    q->db = db;
    q->w = *w;
    q->done = done;
    q->arg = arg;
    memcpy(q->mem, w->key, w->klen);
    q->mem[w->klen] = 0;
    q->w.key = q->mem;
    if (slen) {
        memcpy(q->mem + w->klen + 1, w->value.str.ptr, slen);
        q->w.value.str.ptr = q->mem + w->klen + 1;
    }
    return q;
}

void vg__state_value_out(const struct vg_state_value *in, struct vg_state_value *v, char **mem)
{
    *v = *in;
    *mem = NULL;
    if (in->type != VG_STATE_STRING)
        return;
    *mem = vg_xmalloc(in->str.len + 1);
    if (in->str.len)
        memcpy(*mem, in->str.ptr, in->str.len);
    (*mem)[in->str.len] = 0;
    v->str.ptr = *mem;
}
