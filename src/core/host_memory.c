#include "core/host_memory.h"

#include <stdbool.h>
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

// The process's cgroup path for a controller from /proc/self/cgroup:
// "0::/path" (v2) when controller is "", "N:memory:/path" (v1) otherwise.
static bool cgroup_path(const char *controller, char *out, size_t cap) {
    FILE *f = fopen("/proc/self/cgroup", "r");
    if (!f) return false;
    char line[512];
    bool found = false;
    while (!found && fgets(line, sizeof line, f)) {
        char *a = strchr(line, ':'), *b = a ? strchr(a + 1, ':') : NULL;
        if (!b) continue;
        *b = '\0';
        const char *names = a + 1;
        const bool match = *controller ? strstr(names, controller) != NULL : *names == '\0';
        if (!match) continue;
        b[1 + strcspn(b + 1, "\n")] = '\0';
        found = snprintf(out, cap, "%s", strcmp(b + 1, "/") ? b + 1 : "") < (int)cap;
    }
    fclose(f);
    return found;
}

// limit and usage of the process's cgroup (v2, then v1); 0 when unlimited or unknown.
static void cgroup_memory(uint64_t *limit, uint64_t *usage) {
    char rel[384], path[512];
    *limit = *usage = 0;
    if (cgroup_path("", rel, sizeof rel)) {
        snprintf(path, sizeof path, "/sys/fs/cgroup%s/memory.max", rel);
        if ((*limit = read_number(path))) {
            snprintf(path, sizeof path, "/sys/fs/cgroup%s/memory.current", rel);
            *usage = read_number(path);
            return;
        }
    }
    if (cgroup_path("memory", rel, sizeof rel)) {
        snprintf(path, sizeof path, "/sys/fs/cgroup/memory%s/memory.limit_in_bytes", rel);
        if ((*limit = read_number(path))) {
            snprintf(path, sizeof path, "/sys/fs/cgroup/memory%s/memory.usage_in_bytes", rel);
            *usage = read_number(path);
        }
    }
}

void kiln_host_memory(uint64_t *available, uint64_t *total) {
    *total = meminfo("MemTotal");
    *available = meminfo("MemAvailable");
    uint64_t limit, usage;
    cgroup_memory(&limit, &usage); // a v1 "unlimited" reads as a huge number, above MemTotal
    if (limit && (!*total || limit < *total)) {
        const uint64_t left = usage < limit ? limit - usage : 0;
        *total = limit;
        if (left < *available || !*available) *available = left;
    }
}
