/* cache objects: the one-block layout (see cache_int.h), building, the
 * accessors, reference counting, and the disk record format. */
#include "cache/cache_int.h"

#include <malloc.h>
#include <string.h>
#include <zlib.h>

#define OBJ_FIXED offsetof(struct vg_cache_obj, data)

/* ---- compact meta ---------------------------------------------------------- */

static int32_t clamp32(int64_t v)
{
    if (v > INT32_MAX)
        return INT32_MAX;
    if (v <= INT32_MIN)
        return INT32_MIN + 1; /* INT32_MIN is the "none" of lm_delta */
    return (int32_t)v;
}

/* swr/sie: -1 stays "none"; any other negative is as good as none too. */
static int32_t clamp_opt(int64_t v)
{
    return v < 0 ? -1 : clamp32(v);
}

static void meta_encode(struct vg_cache_obj *o, const struct vg_cache_meta *m)
{
    o->response_time = m->response_time < 0                    ? 0
                       : m->response_time > VG__CACHE_TIME_MAX ? VG__CACHE_TIME_MAX
                                                               : m->response_time;
    o->req_delta = clamp32(m->response_time - m->request_time);
    o->date_delta = clamp32(m->date - m->response_time);
    o->lm_delta = m->last_modified < 0 ? INT32_MIN : clamp32(m->last_modified - m->response_time);
    o->lifetime = m->lifetime < 0 ? 0 : clamp32(m->lifetime);
    o->swr = clamp_opt(m->swr);
    o->sie = clamp_opt(m->sie);
    o->age = m->age <= 0 ? 0 : m->age > (int64_t)UINT32_MAX ? UINT32_MAX : (uint32_t)m->age;
    o->meta_flags = (uint8_t)m->flags;
}

void vg_cache_obj_meta(const struct vg_cache_obj *o, struct vg_cache_meta *m)
{
    m->response_time = o->response_time;
    m->request_time = o->response_time - o->req_delta;
    m->date = o->response_time + o->date_delta;
    m->age = o->age;
    m->lifetime = o->lifetime;
    m->swr = o->swr;
    m->sie = o->sie;
    m->last_modified = o->lm_delta == INT32_MIN ? -1 : o->response_time + o->lm_delta;
    m->flags = o->meta_flags;
}

int64_t vg__cache_obj_useless_at(const struct vg_cache_obj *o)
{
    int64_t apparent = o->date_delta < 0 ? -(int64_t)o->date_delta : 0;
    int64_t corrected = (int64_t)o->age + (o->req_delta > 0 ? o->req_delta : 0);
    int64_t initial_age = apparent > corrected ? apparent : corrected;
    int64_t extra = o->swr > o->sie ? o->swr : o->sie;
    if (extra < 0)
        extra = 0;
    return o->response_time - initial_age + o->lifetime + extra + VG__CACHE_GRACE;
}

size_t vg__cache_obj_charge(const struct vg_cache_obj *o)
{
    /* + the chunk header glibc keeps in front of every block */
    return malloc_usable_size((void *)o) + sizeof(size_t);
}

/* ---- building ------------------------------------------------------------------ */

static size_t varint_len(size_t v)
{
    return v < 0x80 ? 1 : v < 0x4000 ? 2 : 3;
}

static uint8_t *varint_put(uint8_t *p, size_t v)
{
    for (; v >= 0x80; v >>= 7)
        *p++ = (uint8_t)(v | 0x80);
    *p++ = (uint8_t)v;
    return p;
}

/* NULL when the varint runs past end or beyond 16 bits. */
static const uint8_t *varint_get(const uint8_t *p, const uint8_t *end, size_t *v)
{
    *v = 0;
    for (int shift = 0; p < end && shift <= 14; shift += 7) {
        *v |= (size_t)(*p & 0x7f) << shift;
        if (!(*p++ & 0x80))
            return *v <= VG__CACHE_OBJ_MAX_FIELD ? p : NULL;
    }
    return NULL;
}

static size_t headers_len(const h2o_headers_t *h, bool *ok)
{
    size_t n = 0;
    for (size_t i = 0; h && i < h->size; i++) {
        if (h->entries[i].name->len > VG__CACHE_OBJ_MAX_FIELD || h->entries[i].value.len > VG__CACHE_OBJ_MAX_FIELD)
            *ok = false;
        n += varint_len(h->entries[i].name->len) + varint_len(h->entries[i].value.len) + h->entries[i].name->len +
             h->entries[i].value.len;
    }
    if (h && h->size > VG__CACHE_OBJ_MAX_FIELD)
        *ok = false;
    return n;
}

static size_t tags_len(const h2o_iovec_t *tags, size_t n_tags, bool *ok)
{
    size_t n = 0;
    for (size_t i = 0; i < n_tags; i++) {
        if (tags[i].len > 255)
            *ok = false;
        if (tags[i].len)
            n += 1 + tags[i].len;
    }
    return n;
}

static void put16(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static uint32_t get16(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8;
}

static char *copy_headers(char *p, const h2o_headers_t *h)
{
    for (size_t i = 0; h && i < h->size; i++) {
        const h2o_iovec_t *name = h->entries[i].name, *val = &h->entries[i].value;
        p = (char *)varint_put((uint8_t *)p, name->len);
        p = (char *)varint_put((uint8_t *)p, val->len);
        for (size_t j = 0; j < name->len; j++)
            *p++ = (char)h2o_tolower(name->base[j]);
        memcpy(p, val->base, val->len);
        p += val->len;
    }
    return p;
}

static char *copy_tags(char *p, const h2o_iovec_t *tags, size_t n_tags)
{
    for (size_t i = 0; i < n_tags; i++) {
        if (!tags[i].len)
            continue;
        *p++ = (char)tags[i].len;
        memcpy(p, tags[i].base, tags[i].len);
        p += tags[i].len;
    }
    return p;
}

/* NULL when a field is beyond what the compact layout holds (the response
 * is then simply not stored) or out of memory. */
struct vg_cache_obj *vg_cache_obj_new(h2o_iovec_t key, h2o_iovec_t vary_names, h2o_iovec_t vary_key, int status,
                                      const h2o_headers_t *headers, const struct vg_cache_meta *meta,
                                      const h2o_iovec_t *tags, size_t n_tags)
{
    bool ok = key.len <= VG__CACHE_OBJ_MAX_FIELD && vary_names.len <= VG__CACHE_OBJ_MAX_FIELD &&
              vary_key.len <= VG__CACHE_OBJ_MAX_FIELD && status >= 0 && status <= 999;
    size_t hl = headers_len(headers, &ok), tl = tags_len(tags, n_tags, &ok);
    if (!ok || tl > VG__CACHE_OBJ_MAX_FIELD || hl > UINT32_MAX)
        return NULL;
    size_t head = key.len + vary_names.len + vary_key.len + hl + tl;
    struct vg_cache_obj *o = malloc(OBJ_FIXED + head);
    if (!o)
        return NULL;
    memset(o, 0, OBJ_FIXED);
    atomic_init(&o->refs, 1);
    atomic_init(&o->flags, VG__CACHE_OBJ_BUILDING);
    o->status = (uint16_t)status;
    o->key_len = (uint16_t)key.len;
    o->vn_len = (uint16_t)vary_names.len;
    o->vk_len = (uint16_t)vary_key.len;
    o->n_headers = (uint16_t)(headers ? headers->size : 0);
    o->hdr_len = (uint32_t)hl;
    o->tags_len = (uint16_t)tl;
    meta_encode(o, meta);
    char *p = o->data;
    memcpy(p, key.base, key.len);
    memcpy(p += key.len, vary_names.base, vary_names.len);
    memcpy(p += vary_names.len, vary_key.base, vary_key.len);
    p = copy_headers(p + vary_key.len, headers);
    copy_tags(p, tags, n_tags);
    return o;
}

int vg_cache_obj_append(struct vg_cache_obj *o, const void *p, size_t len, size_t max)
{
    VG_ASSERT(atomic_load(&o->flags) & VG__CACHE_OBJ_BUILDING);
    size_t need = (size_t)o->body_len + len;
    if (need > max || need > UINT32_MAX)
        return VG_ELIMIT;
    if (len == 0)
        return 0; /* the buffer may not exist yet */
    if (need > o->u.build.cap) {
        size_t cap = o->u.build.cap ? o->u.build.cap * 2 : 256;
        while (cap < need)
            cap *= 2;
        char *b = realloc(o->u.build.buf, cap);
        if (!b)
            return VG_ENOMEM;
        o->u.build.buf = b;
        o->u.build.cap = cap;
    }
    memcpy(o->u.build.buf + o->body_len, p, len);
    o->body_len = (uint32_t)need;
    return 0;
}

struct vg_cache_obj *vg__cache_obj_finish(struct vg_cache_obj *o)
{
    if (!(atomic_load(&o->flags) & VG__CACHE_OBJ_BUILDING))
        return o;
    size_t head = vg__cache_obj_head_len(o);
    struct vg_cache_obj *n = malloc(OBJ_FIXED + head + o->body_len);
    if (!n) {
        vg_cache_obj_release(o);
        return NULL;
    }
    memcpy(n, o, OBJ_FIXED + head);
    if (o->body_len)
        memcpy(n->data + head, o->u.build.buf, o->body_len);
    atomic_init(&n->refs, 1);
    atomic_init(&n->flags, atomic_load(&o->flags) & ~VG__CACHE_OBJ_BUILDING);
    n->u.q.prev = n->u.q.next = NULL;
    vg_cache_obj_release(o);
    return n;
}

/* ---- accessors --------------------------------------------------------------------- */

int vg_cache_obj_status(const struct vg_cache_obj *o)
{
    return o->status;
}

size_t vg_cache_obj_n_headers(const struct vg_cache_obj *o)
{
    return o->n_headers;
}

/* A walk from the first header: objects have tens of headers at most and
 * a walk costs less than an index in every object. */
void vg_cache_obj_header(const struct vg_cache_obj *o, size_t i, h2o_iovec_t *name, h2o_iovec_t *value)
{
    VG_ASSERT(i < o->n_headers);
    const uint8_t *p = (const uint8_t *)vg__cache_obj_hdrs(o), *end = p + o->hdr_len;
    for (;; i--) {
        size_t nl, vl;
        p = varint_get(p, end, &nl);
        p = varint_get(p, end, &vl);
        VG_AN(p); /* checked when built or read from disk */
        if (i == 0) {
            *name = h2o_iovec_init(p, nl);
            *value = h2o_iovec_init(p + nl, vl);
            return;
        }
        p += nl + vl;
    }
}

h2o_iovec_t vg_cache_obj_body(const struct vg_cache_obj *o)
{
    if (atomic_load(&o->flags) & VG__CACHE_OBJ_BUILDING)
        return h2o_iovec_init(o->u.build.buf, o->body_len);
    return h2o_iovec_init(o->data + vg__cache_obj_head_len(o), o->body_len);
}

h2o_iovec_t vg_cache_obj_etag(const struct vg_cache_obj *o)
{
    h2o_iovec_t n, v;
    for (size_t i = 0; i < o->n_headers; i++) {
        vg_cache_obj_header(o, i, &n, &v);
        if (h2o_memis(n.base, n.len, H2O_STRLIT("etag")))
            return v;
    }
    return h2o_iovec_init(NULL, 0);
}

bool vg_cache_obj_is_stale_marked(const struct vg_cache_obj *o)
{
    return (atomic_load_explicit(&((struct vg_cache_obj *)o)->flags, memory_order_relaxed) & VG__CACHE_OBJ_STALE) != 0;
}

void vg_cache_obj_retain(struct vg_cache_obj *o)
{
    uint32_t prev = atomic_fetch_add_explicit(&o->refs, 1, memory_order_relaxed);
    VG_ASSERT(prev > 0);
}

void vg_cache_obj_release(struct vg_cache_obj *o)
{
    if (!o)
        return;
    uint32_t prev = atomic_fetch_sub_explicit(&o->refs, 1, memory_order_acq_rel);
    VG_ASSERT(prev > 0);
    if (prev != 1)
        return;
    if (atomic_load(&o->flags) & VG__CACHE_OBJ_BUILDING)
        free(o->u.build.buf);
    free(o);
}

bool vg__cache_obj_has_tag(const struct vg_cache_obj *o, h2o_iovec_t tag)
{
    const uint8_t *p = (const uint8_t *)vg__cache_obj_tags(o), *end = p + o->tags_len;
    while (p < end) {
        size_t l = *p++;
        if (l == tag.len && memcmp(p, tag.base, l) == 0)
            return true;
        p += l;
    }
    return false;
}

bool vg__cache_obj_same_variant(const struct vg_cache_obj *a, const struct vg_cache_obj *b)
{
    return a->vn_len == b->vn_len && a->vk_len == b->vk_len &&
           memcmp(vg__cache_obj_vn(a), vg__cache_obj_vn(b), a->vn_len + (size_t)a->vk_len) == 0;
}

/* ---- variant choice ------------------------------------------------------------------ */

struct vg_cache_obj *vg__cache_choose(struct vg_cache_obj **cands, size_t n, const h2o_headers_t *req_headers)
{
    static const h2o_headers_t none = {NULL, 0, 0};
    /* most recent first (RFC 9111 4.1: the most recent response may be used) */
    for (size_t i = 1; i < n; i++)
        for (size_t j = i; j > 0 && cands[j]->response_time > cands[j - 1]->response_time; j--) {
            struct vg_cache_obj *t = cands[j];
            cands[j] = cands[j - 1];
            cands[j - 1] = t;
        }
    h2o_mem_pool_t pool;
    bool pool_used = false;
    struct vg_cache_obj *found = NULL;
    for (size_t i = 0; i < n && !found; i++) {
        struct vg_cache_obj *o = cands[i];
        if (o->vn_len == 0) {
            if (o->vk_len == 0)
                found = o;
            continue;
        }
        if (!pool_used) {
            h2o_mem_init_pool(&pool);
            pool_used = true;
        }
        h2o_iovec_t names = h2o_iovec_init(vg__cache_obj_vn(o), o->vn_len);
        h2o_iovec_t k = vg_cache_vary_key(&pool, names, req_headers ? req_headers : &none);
        if (k.len == o->vk_len && memcmp(k.base, vg__cache_obj_vk(o), k.len) == 0)
            found = o;
    }
    if (pool_used)
        h2o_mem_clear_pool(&pool);
    return found;
}

/* ---- records ------------------------------------------------------------------------- */

static void put32(uint8_t *p, uint32_t v)
{
    put16(p, v & 0xffff);
    put16(p + 2, v >> 16);
}

static uint32_t get32(const uint8_t *p)
{
    return get16(p) | get16(p + 2) << 16;
}

static void put64(uint8_t *p, uint64_t v)
{
    put32(p, (uint32_t)v);
    put32(p + 4, (uint32_t)(v >> 32));
}

static uint64_t get64(const uint8_t *p)
{
    return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

size_t vg__cache_rec_size(const struct vg_cache_obj *o)
{
    return VG__CACHE_REC_HEAD + vg__cache_obj_head_len(o) + o->body_len + 4;
}

void vg__cache_rec_write(const struct vg_cache_obj *o, uint64_t seq, uint8_t *out)
{
    VG_ASSERT(!(atomic_load(&((struct vg_cache_obj *)o)->flags) & VG__CACHE_OBJ_BUILDING));
    out[0] = VG__CACHE_REC_VERSION;
    out[1] = atomic_load(&((struct vg_cache_obj *)o)->flags) & VG__CACHE_OBJ_STALE;
    put16(out + 2, o->status);
    put64(out + 4, seq);
    put64(out + 12, (uint64_t)o->response_time);
    const int32_t deltas[] = {o->req_delta, o->date_delta, o->lm_delta, o->lifetime, o->swr, o->sie};
    for (size_t i = 0; i < VG_ARRAY_LEN(deltas); i++)
        put32(out + 20 + 4 * i, (uint32_t)deltas[i]);
    put32(out + 44, o->age);
    put16(out + 48, o->meta_flags);
    const uint16_t lens[] = {o->key_len, o->vn_len, o->vk_len, o->n_headers, o->tags_len};
    for (size_t i = 0; i < VG_ARRAY_LEN(lens); i++)
        put16(out + 50 + 2 * i, lens[i]);
    put32(out + 60, o->hdr_len);
    put32(out + 64, o->body_len);
    size_t data = vg__cache_obj_head_len(o) + o->body_len;
    memcpy(out + VG__CACHE_REC_HEAD, o->data, data);
    size_t n = VG__CACHE_REC_HEAD + data;
    put32(out + n, (uint32_t)crc32(0, out, (uInt)n));
}

void vg__cache_rec_set_flags(uint8_t *rec, size_t len, uint8_t flags)
{
    VG_ASSERT(len >= VG__CACHE_REC_HEAD + 4);
    rec[1] = flags;
    put32(rec + len - 4, (uint32_t)crc32(0, rec, (uInt)(len - 4)));
}

/* The headers block must hold exactly n headers and the tags block whole
 * tags: a record that passed its CRC may still come from a buggy writer. */
static bool blocks_valid(const uint8_t *hdrs, size_t hdr_len, size_t n_headers, const uint8_t *tags, size_t tags_len)
{
    const uint8_t *p = hdrs, *end = hdrs + hdr_len;
    for (size_t i = 0; i < n_headers; i++) {
        size_t nl, vl;
        if (!(p = varint_get(p, end, &nl)) || !(p = varint_get(p, end, &vl)) || (size_t)(end - p) < nl + vl)
            return false;
        p += nl + vl;
    }
    if (p != end)
        return false;
    size_t off;
    for (off = 0; off < tags_len; off += 1 + tags[off])
        if (tags_len - off < 1u + tags[off])
            return false;
    return true;
}

int vg__cache_rec_parse(const void *rec, size_t len, struct vg_cache_obj **out, uint64_t *seq)
{
    const uint8_t *r = rec;
    if (len < VG__CACHE_REC_HEAD + 4 || len > UINT32_MAX || r[0] != VG__CACHE_REC_VERSION)
        return VG_EPARSE;
    if (get32(r + len - 4) != (uint32_t)crc32(0, r, (uInt)(len - 4)))
        return VG_EPARSE;
    struct vg_cache_obj h;
    memset(&h, 0, sizeof(h));
    h.status = (uint16_t)get16(r + 2);
    h.response_time = (int64_t)get64(r + 12);
    if (h.response_time < 0 || h.response_time > VG__CACHE_TIME_MAX) /* damaged: its sums would overflow */
        return VG_EPARSE;
    int32_t *deltas[] = {&h.req_delta, &h.date_delta, &h.lm_delta, &h.lifetime, &h.swr, &h.sie};
    for (size_t i = 0; i < VG_ARRAY_LEN(deltas); i++)
        *deltas[i] = (int32_t)get32(r + 20 + 4 * i);
    h.age = get32(r + 44);
    h.meta_flags = (uint8_t)get16(r + 48);
    uint16_t *lens[] = {&h.key_len, &h.vn_len, &h.vk_len, &h.n_headers, &h.tags_len};
    for (size_t i = 0; i < VG_ARRAY_LEN(lens); i++)
        *lens[i] = (uint16_t)get16(r + 50 + 2 * i);
    h.hdr_len = get32(r + 60);
    h.body_len = get32(r + 64);
    size_t data = len - VG__CACHE_REC_HEAD - 4;
    if ((uint64_t)vg__cache_obj_head_len(&h) + h.body_len != data)
        return VG_EPARSE;
    const uint8_t *d = r + VG__CACHE_REC_HEAD, *hdrs = d + h.key_len + h.vn_len + h.vk_len;
    if (!blocks_valid(hdrs, h.hdr_len, h.n_headers, hdrs + h.hdr_len, h.tags_len))
        return VG_EPARSE;
    struct vg_cache_obj *o = malloc(OBJ_FIXED + data);
    if (!o)
        return VG_ENOMEM;
    memcpy(o, &h, OBJ_FIXED);
    memcpy(o->data, d, data);
    atomic_init(&o->refs, 1);
    atomic_init(&o->flags, (r[1] & VG__CACHE_OBJ_STALE) | VG__CACHE_OBJ_ON_DISK);
    *seq = get64(r + 4);
    *out = o;
    return 0;
}

/* ---- hashing ---------------------------------------------------------------------------- */

uint64_t vg__cache_hash(const uint8_t seed[16], const void *p, size_t n)
{
    return vg_siphash24(seed, p, n);
}
