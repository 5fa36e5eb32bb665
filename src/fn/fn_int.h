/* Internals shared by the fn module's files and its unit tests. */
#ifndef VG_FN_INT_H
#define VG_FN_INT_H

#include "fn.h"

#include <lauxlib.h>
#include <lualib.h>

/* Each adds its functions to the table on top of the stack (the `verge`
 * table a sandbox sees) and leaves the stack as it found it. */
void vg__fn_open_codec(lua_State *L);                          /* json, base64, hex, crypto */
void vg__fn_open_shared(lua_State *L, struct vg_fn_shared *d); /* shared */

#endif
