/* cache coalescing: at most one origin request per key in flight.
 *
 * Each shard keeps its in-flight keys on a list: a node has as many
 * entries as it has concurrent misses on one shard (tens), so a list beats
 * a table here. Waiters are the callers' memory, chained through their
 * `next`; wake runs after the shard lock is dropped. */
#include "cache/cache_int.h"

#include <string.h>

struct vg__cache_flight {
    struct vg__cache_flight *next;
    struct vg_cache_waiter *head, *tail;
    size_t n_waiters;
    size_t key_len;
    char key[];
};

static struct vg__cache_flight **flight_find(struct vg__cache_shard *s, h2o_iovec_t key)
{
    struct vg__cache_flight **pp = &s->flights;
    for (; *pp; pp = &(*pp)->next)
        if ((*pp)->key_len == key.len && memcmp((*pp)->key, key.base, key.len) == 0)
            return pp;
    return pp;
}

enum vg_cache_join vg_cache_join(struct vg_cache *c, h2o_iovec_t key, struct vg_cache_waiter *w, size_t max_waiters)
{
    struct vg__cache_shard *s = vg__cache_shard_of(c, key.base, key.len);
    enum vg_cache_join r = VG_CACHE_WAITER;
    pthread_mutex_lock(&s->lock);
    struct vg__cache_flight **pp = flight_find(s, key), *f = *pp;
    if (!f) {
        f = malloc(sizeof(*f) + key.len);
        if (f) {
            *f = (struct vg__cache_flight){.key_len = key.len};
            memcpy(f->key, key.base, key.len);
            *pp = f;
        }
        r = f ? VG_CACHE_LEADER : VG_CACHE_BYPASS; /* no memory: fetch uncoalesced */
    } else if (f->n_waiters >= max_waiters) {
        r = VG_CACHE_BYPASS;
    } else {
        w->next = NULL;
        if (f->tail)
            f->tail->next = w;
        else
            f->head = w;
        f->tail = w;
        f->n_waiters++;
    }
    pthread_mutex_unlock(&s->lock);
    return r;
}

void vg_cache_leave(struct vg_cache *c, h2o_iovec_t key)
{
    struct vg__cache_shard *s = vg__cache_shard_of(c, key.base, key.len);
    pthread_mutex_lock(&s->lock);
    struct vg__cache_flight **pp = flight_find(s, key), *f = *pp;
    if (f)
        *pp = f->next;
    pthread_mutex_unlock(&s->lock);
    if (!f)
        return;
    /* a woken waiter may free itself: read next first */
    for (struct vg_cache_waiter *w = f->head, *next; w; w = next) {
        next = w->next;
        w->next = NULL;
        w->wake(w);
    }
    free(f);
}

bool vg_cache_cancel_wait(struct vg_cache *c, h2o_iovec_t key, struct vg_cache_waiter *w)
{
    struct vg__cache_shard *s = vg__cache_shard_of(c, key.base, key.len);
    bool found = false;
    pthread_mutex_lock(&s->lock);
    struct vg__cache_flight *f = *flight_find(s, key);
    struct vg_cache_waiter *prev = NULL;
    for (struct vg_cache_waiter *x = f ? f->head : NULL; x; prev = x, x = x->next) {
        if (x != w)
            continue;
        if (prev)
            prev->next = x->next;
        else
            f->head = x->next;
        if (f->tail == x)
            f->tail = prev;
        f->n_waiters--;
        found = true;
        break;
    }
    pthread_mutex_unlock(&s->lock);
    return found;
}
