/* Fuzzes the control plane's intake of the nodes' live figures: a bus
 * message on verge.stats.report.<node> (untrusted bytes from any bus
 * client) parsed and ingested, twice (a window of two reports), then the
 * table rendered as GET /v1/top would. Nothing may crash or leak. */
#include "control/control_int.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *j = json_loadb((const char *)data, size, 0, NULL);
    if (!j)
        return 0;
    struct vg__control_top *t = vg__control_top_create();
    (void)vg__control_top_ingest(t, NULL, j, 1000, VG__CONTROL_TOP_BUS);
    (void)vg__control_top_ingest(t, "n1", j, 2000, VG__CONTROL_TOP_HEARTBEAT);
    (void)vg__control_top_ingest(t, NULL, j, 3000, VG__CONTROL_TOP_BUS);
    json_t *out = vg__control_top_json(t, 3100);
    json_decref(out);
    struct vg__control_figures f;
    memset(&f, 0, sizeof(f));
    char live[65];
    (void)vg__control_top_node_figures(t, "n1", "web", NULL, &f, live);
    vg__control_top_destroy(t);
    json_decref(j);
    return 0;
}
