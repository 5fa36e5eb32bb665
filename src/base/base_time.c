#include "base.h"

#include <ctype.h>
#include <errno.h>
#include <string.h>
#include <time.h>

uint64_t vg_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

uint64_t vg_now_ms(void)
{
    return vg_now_us() / 1000u;
}

uint64_t vg_wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

struct timespec vg_deadline(clockid_t clock, uint64_t ms)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    ts.tv_sec += (time_t)(ms / 1000);
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

struct unit {
    const char *name;
    uint64_t mul;
};

/* Parses "<digits><unit>" where unit is looked up in units (the first entry
 * with an empty name is the default). Rejects overflow and junk. */
static int parse_with_units(const char *s, const struct unit *units, size_t n_units, uint64_t *out)
{
    if (!s || !isdigit((unsigned char)*s))
        return VG_EINVAL;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno == ERANGE)
        return VG_EINVAL;
    while (*end == ' ')
        end++;
    for (size_t i = 0; i < n_units; i++) {
        if (strcasecmp(end, units[i].name) == 0) {
            if (units[i].mul && v > UINT64_MAX / units[i].mul)
                return VG_EINVAL;
            *out = (uint64_t)v * units[i].mul;
            return 0;
        }
    }
    return VG_EINVAL;
}

int vg_parse_count(const char *s, uint64_t lo, uint64_t hi, uint64_t *out)
{
    static const struct unit none[] = {{"", 1}};
    uint64_t v;
    if (parse_with_units(s, none, 1, &v) != 0 || v < lo || v > hi)
        return VG_EINVAL;
    *out = v;
    return 0;
}

int vg_parse_duration_ms(const char *s, uint64_t *out)
{
    static const struct unit units[] = {
        {"", 1}, {"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}, {"d", 86400000},
    };
    return parse_with_units(s, units, VG_ARRAY_LEN(units), out);
}

int vg_parse_size(const char *s, uint64_t *out)
{
    static const struct unit units[] = {
        {"", 1},          {"b", 1},          {"k", 1024},     {"kb", 1024},     {"kib", 1024},     {"m", 1u << 20},
        {"mb", 1u << 20}, {"mib", 1u << 20}, {"g", 1u << 30}, {"gb", 1u << 30}, {"gib", 1u << 30},
    };
    return parse_with_units(s, units, VG_ARRAY_LEN(units), out);
}
