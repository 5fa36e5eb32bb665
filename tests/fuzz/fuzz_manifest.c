/* Fuzzes the manifest loader with untrusted YAML: any input must end in a
 * model or an error, never a crash, a leak or unbounded work. Static dirs
 * and TLS files resolve against /tmp, so most of them fail to exist: that
 * is an error path worth covering too. */
#include "conf/conf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct vg_conf_app *app = NULL;
    struct vg_conf_error err;
    if (vg_conf_app_load_buffer("/tmp", "fuzz.yaml", (const char *)data, size, &app, &err) == 0)
        vg_conf_app_destroy(app);
    else
        VG_ASSERT(app == NULL && err.file[0] != '\0' && err.msg[0] != '\0');
    return 0;
}
