/* bundle: the deployable form of an app directory — a deterministic gzip'd
 * tar whose sha256 names a version — its writer (`verge bundle`, `verge
 * deploy`) and its reader for untrusted bytes (the control plane on
 * upload, the node agent on download, the fuzzer). */
#ifndef VG_BUNDLE_H
#define VG_BUNDLE_H

#include "base/base.h"

/* What a bundle may hold. Every limit is a hard refusal (VG_ELIMIT). */
struct vg_bundle_limits {
    uint64_t max_bytes;    /* the compressed bundle */
    uint64_t max_unpacked; /* sum of the regular files' sizes */
    uint64_t max_entries;  /* files + directories */
};

#define VG_BUNDLE_MAX_BYTES (64ull << 20)
#define VG_BUNDLE_MAX_UNPACKED (256ull << 20)
#define VG_BUNDLE_MAX_ENTRIES 10000
#define VG_BUNDLE_MAX_PATH 1024 /* bytes of one entry's path */
#define VG_BUNDLE_MAX_DEPTH 32  /* directory levels */

/* The defaults above. */
void vg_bundle_limits_default(struct vg_bundle_limits *lim);

/* sha256 of n bytes as 64 lower-case hex digits and a NUL. */
void vg_bundle_sha256_hex(const void *p, size_t n, char out[65]);

/* Builds the bundle of the app directory dir: a gzip'd tar (pax/ustar) of
 * its regular files and directories, entries sorted by path (bytewise),
 * mtime 0, uid/gid 0, no user/group names, modes 0755 (directories and
 * files with an owner execute bit) or 0644, a gzip header without name or
 * time. `.git` directories are left out. The same tree always gives the
 * same bytes, so sha256(bundle) names a version. Symlinks, devices, FIFOs
 * and sockets are refused (VG_EINVAL, err names the path), as is a bundle
 * over lim->max_bytes or a tree over the other limits (VG_ELIMIT).
 * On success *out (malloc'd) and *len are the caller's. */
int vg_bundle_create(const char *dir, const struct vg_bundle_limits *lim, uint8_t **out, size_t *len, char *err,
                     size_t errcap) VG_MUST_CHECK;

/* Reads untrusted bundle bytes. Every entry must be a regular file or a
 * directory whose path is relative, at most VG_BUNDLE_MAX_PATH
 * bytes and VG_BUNDLE_MAX_DEPTH levels, with no empty, "." or ".."
 * component; links, devices and other types are refused, so are duplicate
 * paths and anything over lim. With dest_dir set, the tree is written
 * under that existing, empty directory (files 0644/0755, directories
 * 0755; nothing is ever written outside it); with dest_dir NULL the bytes
 * are only checked. Returns 0, VG_EPARSE (not a gzip'd tar, or a corrupt
 * one), VG_EINVAL (a refused entry), VG_ELIMIT or VG_EIO (writing), with
 * the reason in err. The counts are filled when not NULL. On failure
 * dest_dir may hold part of the tree: the caller removes it. */
int vg_bundle_unpack(const void *buf, size_t len, const char *dest_dir, const struct vg_bundle_limits *lim,
                     uint64_t *entries, uint64_t *unpacked, char *err, size_t errcap) VG_MUST_CHECK;

/* Removes dir and everything under it (never following symlinks). */
int vg_bundle_rmtree(const char *dir);

#endif
