/* Fuzzes the bundle reader with untrusted bytes (an upload). The first
 * byte picks how the rest is used: odd, it is gzip'd here first, so that
 * mutations reach the tar layer instead of dying in the deflate stream;
 * even, it is the bundle as sent. Any input must end in 0 or an error with
 * a reason, within the limits; and whenever it is accepted, unpacking it
 * into a directory must give the same verdict and stay inside it. */
#include "bundle/bundle.h"

#include <dirent.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

static uint8_t *gzip_of(const uint8_t *p, size_t n, size_t *len)
{
    z_stream z = {0};
    VG_AZ(deflateInit2(&z, 1, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY));
    size_t cap = deflateBound(&z, (uLong)n) + 64;
    uint8_t *out = vg_xmalloc(cap);
    z.next_in = (Bytef *)(uintptr_t)p;
    z.avail_in = (uInt)n;
    z.next_out = out;
    z.avail_out = (uInt)cap;
    VG_ASSERT(deflate(&z, Z_FINISH) == Z_STREAM_END);
    *len = cap - z.avail_out;
    deflateEnd(&z);
    return out;
}

static char base[64];

static void remove_base(void)
{
    vg_bundle_rmtree(base);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > (1u << 20))
        return 0;
    size_t len = size - 1;
    uint8_t *gz = NULL;
    const uint8_t *in = data + 1;
    if (data[0] & 1) {
        gz = gzip_of(data + 1, size - 1, &len);
        in = gz;
    }
    struct vg_bundle_limits lim = {.max_bytes = 2u << 20, .max_unpacked = 1u << 20, .max_entries = 64};
    char err[512] = "";
    uint64_t entries = 0, bytes = 0;
    int rc = vg_bundle_unpack(in, len, NULL, &lim, &entries, &bytes, err, sizeof(err));
    if (rc != 0) {
        VG_ASSERT(err[0] != '\0');
        VG_ASSERT(rc == VG_EPARSE || rc == VG_EINVAL || rc == VG_ELIMIT);
    } else {
        VG_ASSERT(entries <= lim.max_entries && bytes <= lim.max_unpacked);
        /* accepted: written out, it must be accepted again, all of it
         * under the directory */
        if (!base[0]) {
            snprintf(base, sizeof(base), "/tmp/fuzz-bundle-%d", (int)getpid());
            mkdir(base, 0700);
            atexit(remove_base);
        }
        char dest[96];
        snprintf(dest, sizeof(dest), "%s/d", base);
        vg_bundle_rmtree(dest);
        VG_AZ(mkdir(dest, 0700));
        uint64_t e2 = 0, b2 = 0;
        int rc2 = vg_bundle_unpack(in, len, dest, &lim, &e2, &b2, err, sizeof(err));
        VG_ASSERT(rc2 == 0 || rc2 == VG_EIO); /* EIO: a name the file system refuses (too long) */
        VG_ASSERT(rc2 != 0 || (e2 == entries && b2 == bytes));
        VG_AZ(vg_bundle_rmtree(dest));
        DIR *d = opendir(base); /* nothing beside dest: no entry climbed out */
        VG_AN(d);
        struct dirent *de;
        while ((de = readdir(d)) != NULL)
            VG_ASSERT(strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0);
        closedir(d);
    }
    free(gz);
    return 0;
}
