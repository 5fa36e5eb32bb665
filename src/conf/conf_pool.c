/* The one owner of a model's memory: a list of allocations freed together. */
#include "conf/conf_int.h"

#include <stddef.h>
#include <string.h>

struct vg__conf_blk {
    struct vg__conf_blk *next;
    max_align_t data[]; /* keeps every allocation suitably aligned */
};

void *vg__conf_alloc(struct vg__conf_pool *p, size_t n)
{
    VG_ASSERT(n <= SIZE_MAX - sizeof(struct vg__conf_blk));
    struct vg__conf_blk *b = vg_xcalloc(1, sizeof(*b) + n);
    b->next = p->head;
    p->head = b;
    return b->data;
}

void *vg__conf_alloc_array(struct vg__conf_pool *p, size_t n, size_t sz)
{
    VG_ASSERT(sz == 0 || n <= (SIZE_MAX / 2) / sz);
    return vg__conf_alloc(p, n * sz);
}

char *vg__conf_strndup(struct vg__conf_pool *p, const char *s, size_t n)
{
    char *d = vg__conf_alloc(p, n + 1);
    memcpy(d, s, n);
    return d;
}

char *vg__conf_strdup(struct vg__conf_pool *p, const char *s)
{
    return vg__conf_strndup(p, s, strlen(s));
}

void vg__conf_pool_release(struct vg__conf_pool *p)
{
    struct vg__conf_blk *b = p->head;
    while (b) {
        struct vg__conf_blk *next = b->next;
        free(b);
        b = next;
    }
    p->head = NULL;
}
