/* Placeholder so the module links while its parts land. */
#include "fn_int.h"

struct vg_fn_shared {
    size_t max_bytes;
};

struct vg_fn_shared *vg_fn_shared_create(size_t max_bytes)
{
    struct vg_fn_shared *d = vg_xcalloc(1, sizeof(*d));
    d->max_bytes = max_bytes;
    return d;
}

void vg_fn_shared_destroy(struct vg_fn_shared *d)
{
    free(d);
}

void vg__fn_open_shared(lua_State *L, struct vg_fn_shared *d)
{
    (void)L;
    (void)d;
}
