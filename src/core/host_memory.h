// How much memory the host can still give this process: the kernel's
// MemAvailable, capped by the cgroup's limit less its usage (containers,
// CI runners), so that a too-large allocation is refused with numbers
// before the OOM killer ends the process.
#ifndef KILN_CORE_HOST_MEMORY_H
#define KILN_CORE_HOST_MEMORY_H

#include <stdint.h>

// Bytes available now and the total (the cgroup limit where lower than the
// machine's); both 0 when they cannot be read.
void kiln_host_memory(uint64_t *available, uint64_t *total);

#endif
