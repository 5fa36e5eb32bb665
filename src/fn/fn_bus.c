/* verge.publish: a message from Lua onto the node's bus (NATS with --nats,
 * else in-process). Subjects are the app's own: "verge.app.APP.<subject>",
 * so apps cannot publish into each other's names, and outside NATS
 * clients subscribe to an app's documented subjects. Publishing never
 * waits (libnats buffers, the in-process bus queues), so it is a plain
 * call: true, or nil and the reason. */
#include "fn_int.h"

#include "bus/bus.h"

#include <lauxlib.h>
#include <string.h>

#define APP_PREFIX "verge.app."

static int l_publish(lua_State *L)
{
    struct vg_fn_app *app = vg__fn_app_of(L);
    size_t sl, pl;
    const char *subject = luaL_checklstring(L, 1, &sl);
    const char *payload = luaL_checklstring(L, 2, &pl);
    if (!app->env.bus)
        return luaL_error(L, "verge.publish: no bus on this node");
    char full[VG_BUS_SUBJECT_MAX + 1];
    int n = snprintf(full, sizeof(full), APP_PREFIX "%s.%s", app->conf->name, subject);
    if (n < 0 || (size_t)n >= sizeof(full) || strlen(subject) != sl || !vg_bus_subject_valid(full, false))
        return luaL_error(L,
                          "verge.publish: invalid subject '%s': tokens of printable ASCII separated by '.', "
                          "no spaces or wildcards, at most %d bytes with the app's prefix",
                          subject, VG_BUS_SUBJECT_MAX);
    if (pl > VG_BUS_PAYLOAD_MAX)
        return luaL_error(L, "verge.publish: payload over %d bytes", VG_BUS_PAYLOAD_MAX);
    int rc = vg_bus_publish(app->env.bus, full, payload, pl);
    if (rc) {
        lua_pushnil(L);
        lua_pushstring(L, rc == VG_ELIMIT ? "the bus is disconnected and its buffer is full" : vg_strerror(rc));
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

void vg__fn_open_bus(lua_State *L)
{
    lua_pushcfunction(L, l_publish);
    lua_setfield(L, -2, "publish");
}
