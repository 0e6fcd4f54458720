#include "core/host_memory.h"

#include <stdio.h>
#include <string.h>

// "Key:   123 kB" from /proc/meminfo, in bytes; 0 when absent.
static uint64_t meminfo(const char *key) {
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f) return 0;
    char line[256];
    uint64_t v = 0;
    const size_t n = strlen(key);
    while (fgets(line, sizeof line, f))
        if (strncmp(line, key, n) == 0 && line[n] == ':') {
            unsigned long long kb = 0;
            if (sscanf(line + n + 1, "%llu", &kb) == 1) v = (uint64_t)kb * 1024;
            break;
        }
    fclose(f);
    return v;
}

// A number alone in a file ("max" or unreadable: 0).
static uint64_t read_number(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    unsigned long long v = 0;
    const int got = fscanf(f, "%llu", &v);
    fclose(f);
    return got == 1 ? (uint64_t)v : 0;
}

void kiln_host_memory(uint64_t *available, uint64_t *total) {
    *total = meminfo("MemTotal");
    *available = meminfo("MemAvailable");
    // cgroup v2, then v1 (a v1 "unlimited" reads as a huge number).
    uint64_t limit = read_number("/sys/fs/cgroup/memory.max"), usage = read_number("/sys/fs/cgroup/memory.current");
    if (!limit) {
        limit = read_number("/sys/fs/cgroup/memory/memory.limit_in_bytes");
        usage = read_number("/sys/fs/cgroup/memory/memory.usage_in_bytes");
    }
    if (limit && (!*total || limit < *total)) {
        const uint64_t left = usage < limit ? limit - usage : 0;
        *total = limit;
        if (left < *available || !*available) *available = left;
    }
}
