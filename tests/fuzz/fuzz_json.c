/* Fuzzes verge.json with arbitrary bytes. Whatever decodes must encode, and
 * from then on encoding is a fixed point: encode(decode(s)) == s for every
 * s that encode produced. Each input then runs again under a memory cap
 * that fails part-way, so the error paths unwind (and must free) too. */
#include "fn/fn_int.h"

#include <string.h>

struct cap {
    size_t used, limit;
};

static void *capped_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    struct cap *c = ud;
    if (!ptr)
        osize = 0;
    if (nsize == 0) {
        c->used -= osize;
        free(ptr);
        return NULL;
    }
    if (nsize > osize && c->used + (nsize - osize) > c->limit)
        return NULL;
    void *p = realloc(ptr, nsize);
    if (p)
        c->used = c->used - osize + nsize;
    return p;
}

static lua_State *new_state(struct cap *c)
{
    lua_State *L = lua_newstate(capped_alloc, c);
    VG_AN(L);
    lua_newtable(L);
    vg__fn_open_codec(L);
    lua_getfield(L, -1, "json");
    lua_replace(L, 1); /* the stack holds verge.json alone */
    return L;
}

/* json[fn](top value); the result replaces the argument. */
static int call(lua_State *L, const char *fn)
{
    lua_getfield(L, 1, fn);
    lua_insert(L, -2);
    return lua_pcall(L, 1, 1, 0);
}

static void round_trip(const uint8_t *data, size_t size)
{
    struct cap c = {0, SIZE_MAX};
    lua_State *L = new_state(&c);
    lua_pushlstring(L, (const char *)data, size);
    if (call(L, "decode") == LUA_OK) {
        if (call(L, "encode") != LUA_OK)
            vg_panic(__FILE__, __LINE__, lua_tostring(L, -1)); /* decoded, so encodable */
        lua_pushvalue(L, -1);
        if (call(L, "decode") != LUA_OK || call(L, "encode") != LUA_OK)
            vg_panic(__FILE__, __LINE__, lua_tostring(L, -1));
        size_t n1, n2;
        const char *s1 = lua_tolstring(L, -2, &n1), *s2 = lua_tolstring(L, -1, &n2);
        VG_ASSERT(n1 == n2 && memcmp(s1, s2, n1) == 0);
    }
    lua_close(L);
}

static void capped(const uint8_t *data, size_t size)
{
    struct cap c = {0, SIZE_MAX};
    lua_State *L = new_state(&c);
    lua_pushlstring(L, (const char *)data, size);
    c.limit = c.used + 2048 + size * 2;
    if (call(L, "decode") == LUA_OK)
        (void)call(L, "encode");
    c.limit = SIZE_MAX;
    lua_close(L);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    round_trip(data, size);
    capped(data, size);
    return 0;
}
