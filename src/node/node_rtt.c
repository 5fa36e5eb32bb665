/* Round trips to clients, by client area (agent mode): the kernel's
 * smoothed RTT of the client's TCP connection (TCP_INFO), read for one
 * request in RTT_EVERY per worker and folded into a per-area moving
 * average. The heartbeat reports them (`rtt_us`), and placement uses them
 * instead of the distance model for (area, this node's location).
 *
 * Only areas the client is really in count: a request whose area
 * X-Verge-Client-Area claimed (dev and tests make demand "from" anywhere
 * that way) is not sampled, since its round trip is the laptop's. */
#include "node_int.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#define RTT_EVERY 64 /* one getsockopt per 64 requests: ~1 µs each */

void vg__node_rtt_sample(struct vg_worker *w, h2o_req_t *req, uint32_t area)
{
    struct vg_node *node = w->node;
    w->rtt_countdown = RTT_EVERY;
    if (!node->rtt_us || area >= vg_geo_set_count(node->geo))
        return;
    if (node->opt.client_area_header &&
        h2o_find_header_by_str(&req->headers, H2O_STRLIT("x-verge-client-area"), -1) >= 0)
        return;
    h2o_socket_t *sock = req->conn->callbacks->get_socket ? req->conn->callbacks->get_socket(req->conn) : NULL;
    int fd = sock ? h2o_socket_get_fd(sock) : -1;
    struct tcp_info ti;
    socklen_t len = sizeof(ti);
    if (fd < 0 || getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0 || ti.tcpi_rtt == 0)
        return;
    /* racy between workers on purpose: a lost update is one lost sample */
    uint32_t old = __atomic_load_n(&node->rtt_us[area], __ATOMIC_RELAXED);
    uint32_t now = old ? old - old / 8 + ti.tcpi_rtt / 8 : ti.tcpi_rtt;
    __atomic_store_n(&node->rtt_us[area], now ? now : 1, __ATOMIC_RELAXED);
}

json_t *vg__node_rtt_json(struct vg_node *node)
{
    json_t *j = json_object();
    for (size_t a = 0; node->rtt_us && a < vg_geo_set_count(node->geo); a++) {
        uint32_t v = __atomic_load_n(&node->rtt_us[a], __ATOMIC_RELAXED);
        if (v)
            json_object_set_new(j, vg_geo_set_at(node->geo, a)->id, json_integer(v));
    }
    return j;
}
