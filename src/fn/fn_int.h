/* Internals shared by the fn module's files and its unit tests. */
#ifndef VG_FN_INT_H
#define VG_FN_INT_H

#include "fn.h"

#include <lauxlib.h>
#include <lualib.h>

/* Each adds its functions to the table on top of the stack (the `verge`
 * table a sandbox sees) and leaves the stack as it found it. The tables
 * are also recorded as loaded modules ("verge.json", "verge.shared", ...)
 * in the registry, so that Lua's argument errors and tracebacks name the
 * functions however they are called. See docs/lua-api-lib.md. */
void vg__fn_open_codec(lua_State *L);                          /* json, base64, hex, crypto */
void vg__fn_open_shared(lua_State *L, struct vg_fn_shared *d); /* shared; d outlives L */

/* ---- shared dictionary internals, open to unit tests ---- */

/* A clock in milliseconds, monotonic; tests inject a fake one. */
typedef uint64_t (*vg__fn_clock_fn)(void *ctx);

/* n_shards: a power of two (1 makes eviction order exact, for tests);
 * now NULL: vg_now_ms. */
struct vg_fn_shared *vg__fn_shared_create_ex(size_t max_bytes, unsigned n_shards, vg__fn_clock_fn now, void *ctx);

/* What one entry is charged against max_bytes. */
size_t vg__fn_shared_entry_cost(size_t klen, size_t vlen);

/* SipHash-2-4 of p under a 16-byte key (the dictionary's hash). */
uint64_t vg__fn_siphash24(const uint8_t key[16], const void *p, size_t n);

#endif
