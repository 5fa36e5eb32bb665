/* control: the control plane — apps, versions (content-addressed bundles),
 * nodes, desired state, API tokens and an append-only history, kept in
 * SQLite and served as an HTTP JSON API (/v1/..., docs/api.md).
 *
 * Two parts are public:
 *   bundles  the deterministic gzip'd tar of an app directory (writer, used
 *            by `verge bundle` and later `verge deploy`) and its reader for
 *            untrusted bytes (the server, the fuzzer);
 *   server   vg_control_run, the `verge control` process.
 * The store (control_store.c) and the HTTP handlers are internal
 * (control_int.h). */
#ifndef VG_CONTROL_H
#define VG_CONTROL_H

#include "base/base.h"

/* ==== bundles ============================================================= */

/* What a bundle may hold. Every limit is a hard refusal (VG_ELIMIT). */
struct vg_control_bundle_limits {
    uint64_t max_bytes;    /* the compressed bundle */
    uint64_t max_unpacked; /* sum of the regular files' sizes */
    uint64_t max_entries;  /* files + directories */
};

#define VG_CONTROL_BUNDLE_MAX_BYTES (64ull << 20)
#define VG_CONTROL_BUNDLE_MAX_UNPACKED (256ull << 20)
#define VG_CONTROL_BUNDLE_MAX_ENTRIES 10000
#define VG_CONTROL_BUNDLE_MAX_PATH 1024 /* bytes of one entry's path */
#define VG_CONTROL_BUNDLE_MAX_DEPTH 32  /* directory levels */

/* The defaults above. */
void vg_control_bundle_limits_default(struct vg_control_bundle_limits *lim);

/* sha256 of n bytes as 64 lower-case hex digits and a NUL. */
void vg_control_sha256_hex(const void *p, size_t n, char out[65]);

/* Builds the bundle of the app directory dir: a gzip'd tar (pax/ustar) of
 * its regular files and directories, entries sorted by path (bytewise),
 * mtime 0, uid/gid 0, no user/group names, modes 0755 (directories and
 * files with an owner execute bit) or 0644, a gzip header without name or
 * time. `.git` directories are left out. The same tree always gives the
 * same bytes, so sha256(bundle) names a version. Symlinks, devices, FIFOs
 * and sockets are refused (VG_EINVAL, err names the path), as is a bundle
 * over lim->max_bytes or a tree over the other limits (VG_ELIMIT).
 * On success *out (malloc'd) and *len are the caller's. */
int vg_control_bundle_create(const char *dir, const struct vg_control_bundle_limits *lim, uint8_t **out, size_t *len,
                             char *err, size_t errcap) VG_MUST_CHECK;

/* Reads untrusted bundle bytes. Every entry must be a regular file or a
 * directory whose path is relative, at most VG_CONTROL_BUNDLE_MAX_PATH
 * bytes and VG_CONTROL_BUNDLE_MAX_DEPTH levels, with no empty, "." or ".."
 * component; links, devices and other types are refused, so are duplicate
 * paths and anything over lim. With dest_dir set, the tree is written
 * under that existing, empty directory (files 0644/0755, directories
 * 0755; nothing is ever written outside it); with dest_dir NULL the bytes
 * are only checked. Returns 0, VG_EPARSE (not a gzip'd tar, or a corrupt
 * one), VG_EINVAL (a refused entry), VG_ELIMIT or VG_EIO (writing), with
 * the reason in err. The counts are filled when not NULL. On failure
 * dest_dir may hold part of the tree: the caller removes it. */
int vg_control_bundle_unpack(const void *buf, size_t len, const char *dest_dir,
                             const struct vg_control_bundle_limits *lim, uint64_t *entries, uint64_t *unpacked,
                             char *err, size_t errcap) VG_MUST_CHECK;

/* Removes dir and everything under it (never following symlinks). */
int vg_control_rmtree(const char *dir);

/* ==== server ============================================================== */

struct vg_control_options {
    const char *listen;               /* "127.0.0.1:7070" */
    const char *data_dir;             /* control.db, bundles/, tmp/, admin.token */
    const char *bootstrap_token_file; /* the first admin token's secret, or NULL */
    const char *bootstrap_token;      /* the same given directly ($VERGE_CONTROL_TOKEN), or NULL */
    struct vg_control_bundle_limits bundle;
    uint64_t node_timeout_ms; /* a node is "up" if it was heard from this recently */
    uint32_t max_wait_s;      /* the longest long poll (?wait=) */
};

void vg_control_options_default(struct vg_control_options *opt);

/* Runs the control plane until SIGTERM/SIGINT. Returns the process exit
 * status (0 after a clean stop, 1 when it could not start). */
int vg_control_run(const struct vg_control_options *opt);

#endif
