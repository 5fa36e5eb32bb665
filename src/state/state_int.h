/* Internals shared by the state module's files and its unit tests. */
#ifndef VG_STATE_INT_H
#define VG_STATE_INT_H

#include "state.h"

#include <pthread.h>

/* ---- the value record (both scopes) ----
 *
 * A value is stored as a 24-byte header and its payload:
 *   0..3   magic "\0vg1" (a value without it, written by a plain NATS
 *          client into a global bucket, reads as a string)
 *   4      type (enum vg_state_type)
 *   5      flags: 0, or VG__STATE_F_ACK (global: the writer wants to be
 *          told when nodes have applied it; the record then ends with a
 *          16-byte ack request after everything else:
 *            u64 LE  the writer's ack inbox id (verge.kvack.APP.<16 hex>)
 *            u64 LE  the write's id on that writer)
 *   6..7   little-endian u16: bytes of key stored after the payload
 *          (local: keys longer than LMDB's key size are stored hashed,
 *          the full key in the record to check it; else 0)
 *   8..15  little-endian u64: expiry, wall clock ms since the epoch (0: none)
 *   16..23 little-endian u64: when the writer wrote it, wall clock µs
 *          (global: the propagation histogram)
 *   24..   payload: string bytes; integer/float: 8 bytes LE; boolean: 1 byte */
#define VG__STATE_HDR 24
#define VG__STATE_F_ACK 1
#define VG__STATE_ACK_REQ 16 /* bytes of the ack request at a record's end */

/* Who wants to hear that a global write was applied, and which write. */
struct vg__state_ackreq {
    uint64_t inbox; /* the writer's inbox id: the ack subject's last token, in hex */
    uint64_t id;    /* the write, among that writer's */
};

struct vg__state_rec {
    struct vg_state_value v; /* a string points into the record */
    uint64_t expires_ms;
    uint64_t written_us;
    const char *tail_key; /* the stored key, or NULL */
    size_t tail_klen;
    bool ack; /* ackreq is set */
    struct vg__state_ackreq ackreq;
};

/* Bytes a record of v (and tail key, and an ack request) needs. */
size_t vg__state_rec_size(const struct vg_state_value *v, size_t tail_klen, bool ack);
/* Writes the record into out (vg__state_rec_size bytes); ack NULL: none. */
void vg__state_rec_encode(uint8_t *out, const struct vg_state_value *v, uint64_t expires_ms, uint64_t written_us,
                          const char *tail_key, size_t tail_klen, const struct vg__state_ackreq *ack);
/* false when p is not a well-formed record (no magic: see raw_ok). With
 * raw_ok, bytes without the magic decode as a string; bytes with it but
 * shorter than a header are a record cut short (false). */
bool vg__state_rec_decode(const uint8_t *p, size_t len, bool raw_ok, struct vg__state_rec *r);

/* ---- the visibility ack (global) ----
 *
 * What a node publishes on "verge.kvack.<app>.<inbox hex>" after its
 * watcher applied a record carrying an ack request: 28 bytes,
 *   0..3    magic "\0vga"
 *   4..11   u64 LE the write's id (from the ack request)
 *   12..19  u64 LE the revision the node applied
 *   20..27  u64 LE the acking node's inbox id (what tells nodes apart) */
#define VG__STATE_ACK_LEN 28

struct vg__state_ack {
    uint64_t id, rev, node;
};

void vg__state_ack_encode(uint8_t out[VG__STATE_ACK_LEN], const struct vg__state_ack *a);
/* false unless p is exactly one well-formed ack. */
bool vg__state_ack_decode(const uint8_t *p, size_t len, struct vg__state_ack *a);

/* The result of INCR: cur (NULL: missing) + delta, or the init value. */
int vg__state_incr(const struct vg_state_value *cur, const struct vg_state_write *w, struct vg_state_value *out);

/* A queued write with its own copy of key and string value. */
struct vg__state_wreq {
    struct vg__state_wreq *next;
    void *db;
    struct vg_state_write w;
    vg_state_done_fn done;
    void *arg;
    char mem[]; /* key, then a string value */
};
struct vg__state_wreq *vg__state_wreq_new(void *db, const struct vg_state_write *w, vg_state_done_fn done, void *arg);

/* Checks a write's key and value (what vg_state_*_write refuse at once). */
int vg__state_write_check(const struct vg_state_write *w);

/* Copies v into malloc'd memory for a reader: *mem owns a string's bytes. */
void vg__state_value_out(const struct vg_state_value *in, struct vg_state_value *v, char **mem);

/* Clock for expiry: wall clock ms; tests move it. */
typedef uint64_t (*vg__state_clock_fn)(void *ctx);
void vg__state_local_set_clock(struct vg_state_local *s, vg__state_clock_fn fn, void *ctx);

#endif
