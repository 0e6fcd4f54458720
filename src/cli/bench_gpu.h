// The GPU benchmark suite of `kiln bench --gpu-suite`.
#ifndef KILN_CLI_BENCH_GPU_H
#define KILN_CLI_BENCH_GPU_H

#include <stdbool.h>

#include "kiln.h"

// Runs the workloads `reps` times each (medians printed); returns 0 when all
// ran. only: a comma-separated subset (decode512, decode4096, prefill512,
// prefill2048, batch8, batch32, batch64), or NULL for all. ceilings: measure
// the card's read bandwidth and GEMM rate first (fractions print n/a without).
int bench_gpu_suite(kiln_model *model, const char *path, int reps, const char *only, bool ceilings);
// Whether every name in the comma-separated list is a workload.
bool bench_gpu_workload_known(const char *only);

#endif
