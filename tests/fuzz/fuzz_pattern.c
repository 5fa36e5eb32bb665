/* Fuzzes the worst-case bound on Lua patterns (src/fn/fn_pattern.c): the
 * shape parser must stay inside the pattern whatever its bytes, and a
 * pattern the bound lets through must come back from Lua's own matcher
 * (an answer or an error), never hang: libFuzzer's -timeout catches one
 * that does. */
#include "fn/fn_int.h"

static lua_State *strings(void)
{
    static lua_State *L;
    if (!L) {
        L = luaL_newstate();
        luaL_openlibs(L);
        lua_getglobal(L, "string");
        vg__fn_pattern_guard(L, -1);
        lua_pop(L, 1);
    }
    return L;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    (void)vg__fn_pattern_cost((const char *)data, size, 1000, true);
    (void)vg__fn_pattern_cost((const char *)data, size, 0, false);
    lua_State *L = strings();
    static const char *const fns[] = {"find", "match", "gsub"};
    for (size_t i = 0; i < 3; i++) {
        lua_getglobal(L, "pcall");
        lua_getglobal(L, "string");
        lua_getfield(L, -1, fns[i]);
        lua_remove(L, -2);
        lua_pushliteral(L, "(ab)[c]%d a=1 ((x))");
        lua_pushlstring(L, (const char *)data, size);
        if (i == 2)
            lua_pushliteral(L, "%0");
        lua_call(L, i == 2 ? 4 : 3, 0);
    }
    lua_settop(L, 0);
    return 0;
}
