/* cache purge: by URL, prefix or tag, soft (mark stale) or hard (unlink),
 * over the memory and disk tiers.
 *
 * A purge by URL visits one shard (shards are chosen by "host\npath?query"),
 * prefix and tag purges walk every shard's queues under that shard's lock
 * (one shard at a time, so lookups elsewhere go on). A tag index would make
 * tag purges proportional to their hits, but it costs a node per tag per
 * object in every object's budget; purges are rare and a walk of a million
 * objects is tens of milliseconds spread over 32 locks. */
#include "cache/cache_int.h"

#include <string.h>

bool vg__cache_purge_match(const struct vg_cache_obj *o, const struct vg_cache_purge *p)
{
    const char *k = vg__cache_obj_key(o);
    size_t kl = o->key_len, vl = p->value.len;
    switch (p->kind) {
    case VG_CACHE_PURGE_URL:
        return kl >= vl && memcmp(k, p->value.base, vl) == 0 && (kl == vl || k[vl] == '\n');
    case VG_CACHE_PURGE_PREFIX:
        return kl >= vl && memcmp(k, p->value.base, vl) == 0;
    case VG_CACHE_PURGE_TAG:
        return vg__cache_obj_has_tag(o, p->value);
    }
    return false;
}

/* Matches in one shard; *on_disk counts those the disk tier also holds. */
static size_t purge_shard(struct vg__cache_shard *s, const struct vg_cache_purge *p, size_t *on_disk)
{
    struct vg_cache_obj *dead = NULL;
    struct vg__cache_queue *qs[] = {&s->small, &s->main};
    size_t n = 0;
    pthread_mutex_lock(&s->lock);
    for (size_t i = 0; i < VG_ARRAY_LEN(qs); i++) {
        struct vg_cache_obj *o = qs[i]->head, *next;
        for (; o; o = next) {
            next = o->u.q.next;
            if (!vg__cache_purge_match(o, p))
                continue;
            n++;
            uint8_t mark = p->soft ? VG__CACHE_OBJ_STALE : VG__CACHE_OBJ_PURGED;
            if (atomic_fetch_or(&o->flags, mark) & VG__CACHE_OBJ_ON_DISK)
                (*on_disk)++;
            if (!p->soft) {
                vg__cache_unlink(s, o);
                o->u.q.next = dead;
                dead = o;
            }
        }
    }
    pthread_mutex_unlock(&s->lock);
    while (dead) {
        struct vg_cache_obj *next = dead->u.q.next;
        vg_cache_obj_release(dead);
        dead = next;
    }
    return n;
}

size_t vg_cache_purge(struct vg_cache *c, const struct vg_cache_purge *p)
{
    size_t mem = 0, on_disk = 0, disk = 0;
    if (p->kind == VG_CACHE_PURGE_URL) {
        mem = purge_shard(vg__cache_shard_of(c, p->value.base, p->value.len), p, &on_disk);
    } else {
        for (unsigned i = 0; i < c->n_shards; i++)
            mem += purge_shard(&c->shards[i], p, &on_disk);
    }
    if (c->disk)
        disk = vg__cache_disk_purge(c->disk, p);
    /* an object in both tiers counts once */
    size_t total = mem + disk - (on_disk < disk ? on_disk : disk);
    atomic_fetch_add_explicit(&c->shards[0].purged, total, memory_order_relaxed);
    return total;
}
