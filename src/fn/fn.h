/* fn: the Lua 5.4 runtime for edge functions — sandboxed states (one per
 * app per worker), per-app memory caps and per-call CPU budgets, coroutines
 * that yield on asynchronous calls, and the `verge` library handlers see.
 * Built as a general runtime: HTTP handlers are its first trigger; message,
 * ingest and cron handlers reuse it. See docs/lua-api.md. */
#ifndef VG_FN_H
#define VG_FN_H

#include "base/base.h"

#include <lua.h>

/* ---- node-local shared dictionary (verge.shared) --------------------------------- */

/* One per app per node, shared by every worker (thread-safe), kept across
 * reloads. Keys map to strings, numbers or booleans with an optional TTL;
 * max_bytes bounds keys + values + bookkeeping, and a full dictionary
 * evicts expired entries first, then the least recently used. */
struct vg_fn_shared;

struct vg_fn_shared *vg_fn_shared_create(size_t max_bytes);
void vg_fn_shared_destroy(struct vg_fn_shared *d);

#endif
