// The GPU benchmark suite of `kiln bench --gpu-suite`.
#ifndef KILN_CLI_BENCH_GPU_H
#define KILN_CLI_BENCH_GPU_H

#include "kiln.h"

// Runs every workload `reps` times (medians printed); returns 0 when all ran.
int bench_gpu_suite(kiln_model *model, const char *path, int reps);

#endif
