/* Client areas: where a request's demand is counted (agent mode).
 *
 * The area is, in this order: the bundled location X-Verge-Client-Area
 * names (with --client-area-header), the bundled location nearest to the
 * position a GeoIP database (--geoip, a MaxMind DB read with
 * libmaxminddb) gives the client's address, and the node's own location.
 *
 * The database is opened once at start and never changes while the node
 * runs, so what an address maps to never changes either: each worker keeps
 * a small direct-mapped cache of address -> area (its own, no locks, no
 * shared cache lines) and a steady client pays one hash and one compare
 * per request instead of a lookup in the database's search tree. */
#include "node_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <maxminddb.h>
#include <netinet/in.h>
#include <string.h>

#define AREA_CACHE_BITS 10 /* 1,024 addresses, 24 KiB per worker */
#define AREA_CACHE_SLOTS (1u << AREA_CACHE_BITS)

struct area_slot {
    uint8_t addr[16]; /* IPv6, or IPv4-mapped (::ffff:a.b.c.d) */
    uint32_t area;
    uint32_t used;
};

struct vg__node_area_cache {
    struct area_slot slot[AREA_CACHE_SLOTS];
};

int vg__node_geoip_open(struct vg_node *node)
{
    const char *path = node->opt.geoip;
    MMDB_s *db = vg_xcalloc(1, sizeof(*db));
    int st = MMDB_open(path, MMDB_MODE_MMAP, db);
    if (st != MMDB_SUCCESS) {
        char why[300];
        if (st == MMDB_FILE_OPEN_ERROR || st == MMDB_IO_ERROR)
            snprintf(why, sizeof(why), "%s: %s", MMDB_strerror(st), strerror(errno));
        else
            snprintf(why, sizeof(why), "%s", MMDB_strerror(st));
        vg_log(VG_LOG_ERROR, "cannot open the GeoIP database", "file", path, "reason", why, NULL);
        free(db);
        return VG_EINVAL;
    }
    node->geoip = db;
    size_t n = node->geo ? vg_geo_set_count(node->geo) : 0;
    node->area_xyz = vg_xcalloc(n ? n : 1, sizeof(*node->area_xyz));
    for (size_t i = 0; i < n; i++) {
        const struct vg_geo_location *g = vg_geo_set_at(node->geo, i);
        vg_geo_to_xyz(g->lat, g->lon, &node->area_xyz[i]);
    }
    char ipv[8], nodes[24];
    snprintf(ipv, sizeof(ipv), "%u", (unsigned)db->metadata.ip_version);
    snprintf(nodes, sizeof(nodes), "%u", (unsigned)db->metadata.node_count);
    vg_log(VG_LOG_INFO, "GeoIP database open", "file", path, "type",
           db->metadata.database_type ? db->metadata.database_type : "", "ip_version", ipv, "nodes", nodes, NULL);
    return 0;
}

void vg__node_geoip_close(struct vg_node *node)
{
    if (node->geoip) {
        MMDB_close(node->geoip);
        free(node->geoip);
        node->geoip = NULL;
    }
    free(node->area_xyz);
    node->area_xyz = NULL;
}

struct vg__node_area_cache *vg__node_area_cache_create(struct vg_node *node)
{
    return node->geoip ? vg_xcalloc(1, sizeof(struct vg__node_area_cache)) : NULL;
}

void vg__node_area_cache_destroy(struct vg__node_area_cache *c)
{
    free(c);
}

/* The address as 16 bytes (IPv4 mapped into IPv6); false for a peer with
 * no IP address (a background refresh's stand-in connection). */
static bool addr_key(const struct sockaddr *sa, socklen_t len, uint8_t key[16])
{
    if (len >= (socklen_t)sizeof(struct sockaddr_in) && sa->sa_family == AF_INET) {
        memset(key, 0, 10);
        key[10] = key[11] = 0xff;
        memcpy(key + 12, &((const struct sockaddr_in *)sa)->sin_addr, 4);
        return true;
    }
    if (len >= (socklen_t)sizeof(struct sockaddr_in6) && sa->sa_family == AF_INET6) {
        memcpy(key, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
        return true;
    }
    return false;
}

static uint32_t addr_hash(const uint8_t key[16])
{
    uint64_t lo, hi;
    memcpy(&lo, key, 8);
    memcpy(&hi, key + 8, 8);
    uint64_t h = (lo * 0x9e3779b97f4a7c15ull ^ hi) * 0xff51afd7ed558ccdull;
    return (uint32_t)(h >> (64 - AREA_CACHE_BITS));
}

/* The database's answer for an address: an IPv4-mapped address is looked
 * up as IPv4 (an IPv4-only database refuses IPv6 addresses, and IPv6
 * databases alias the IPv4 tree anyway). */
static uint32_t geoip_area(struct vg_node *node, const uint8_t key[16])
{
    struct sockaddr_storage ss = {0};
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (memcmp(key, mapped, 12) == 0) {
        struct sockaddr_in *in = (struct sockaddr_in *)&ss;
        in->sin_family = AF_INET;
        memcpy(&in->sin_addr, key + 12, 4);
    } else {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
        in6->sin6_family = AF_INET6;
        memcpy(&in6->sin6_addr, key, 16);
    }
    int err = MMDB_SUCCESS;
    MMDB_lookup_result_s r = MMDB_lookup_sockaddr(node->geoip, (struct sockaddr *)&ss, &err);
    if (err != MMDB_SUCCESS || !r.found_entry)
        return node->own_area; /* not in the database (private, or an IPv6 address in an IPv4 one) */
    /* the record's "location" map once (finding it skips the keys before
     * it: city, continent, country with their names in every language),
     * then the two keys inside it; MMDB_aget_value with fixed paths, as
     * MMDB_get_value allocates its path on every call */
    static const char *const loc_path[] = {"location", NULL}, *const lat_path[] = {"latitude", NULL},
                             *const lon_path[] = {"longitude", NULL};
    MMDB_entry_data_s loc, lat, lon;
    if (MMDB_aget_value(&r.entry, &loc, loc_path) != MMDB_SUCCESS || !loc.has_data || loc.type != MMDB_DATA_TYPE_MAP)
        return node->own_area; /* an entry with no position (a country's, an anycast network's) */
    MMDB_entry_s in_loc = {.mmdb = node->geoip, .offset = loc.offset};
    if (MMDB_aget_value(&in_loc, &lat, lat_path) != MMDB_SUCCESS ||
        MMDB_aget_value(&in_loc, &lon, lon_path) != MMDB_SUCCESS || !lat.has_data || !lon.has_data ||
        lat.type != MMDB_DATA_TYPE_DOUBLE || lon.type != MMDB_DATA_TYPE_DOUBLE)
        return node->own_area;
    if (!(fabs(lat.double_value) <= 90 && fabs(lon.double_value) <= 180))
        return node->own_area;
    struct vg_geo_xyz p;
    vg_geo_to_xyz(lat.double_value, lon.double_value, &p);
    return (uint32_t)vg_geo_nearest_xyz(node->area_xyz, vg_geo_set_count(node->geo), &p);
}

uint32_t vg__node_area_of_addr(struct vg_node *node, struct vg__node_area_cache *c, const struct sockaddr *sa,
                               socklen_t len)
{
    uint8_t key[16];
    if (!node->geoip || !node->geo || !c || !addr_key(sa, len, key))
        return node->own_area;
    struct area_slot *s = &c->slot[addr_hash(key)];
    if (s->used && memcmp(s->addr, key, 16) == 0)
        return s->area;
    uint32_t area = geoip_area(node, key);
    memcpy(s->addr, key, 16);
    s->area = area;
    s->used = 1;
    return area;
}

uint32_t vg__node_client_area(struct vg_worker *w, h2o_req_t *req)
{
    struct vg_node *node = w->node;
    if (node->opt.client_area_header) {
        ssize_t i = h2o_find_header_by_str(&req->headers, H2O_STRLIT("x-verge-client-area"), -1);
        h2o_iovec_t v = i >= 0 ? req->headers.entries[i].value : h2o_iovec_init(NULL, 0);
        char id[VG_GEO_ID_MAX];
        if (v.len && v.len < sizeof(id)) {
            memcpy(id, v.base, v.len);
            id[v.len] = '\0';
            size_t a = vg_geo_set_index(node->geo, id);
            if (a < vg_geo_set_count(node->geo))
                return (uint32_t)a;
        }
    }
    if (!node->geoip)
        return node->own_area;
    struct sockaddr_storage ss;
    socklen_t len = req->conn->callbacks->get_peername(req->conn, (struct sockaddr *)&ss);
    return vg__node_area_of_addr(node, w->area_cache, (struct sockaddr *)&ss, len);
}
