// Stands in for the CUDA backend in a CPU-only build (no nvcc at build time).
#include "backend/backend.h"

#ifndef KILN_HAVE_CUDA
kiln_status kiln_backend_cuda_create(int device, kiln_backend **out) {
    (void)device;
    *out = NULL;
    return kiln_fail(KILN_ERR_UNSUPPORTED,
                     "this kiln was built without CUDA (no nvcc was found when it was built); install the CUDA "
                     "toolkit and rebuild, or run with --device cpu");
}

int kiln_cuda_device_count(void) { return 0; }
#else
typedef int kiln_cuda_stub_unused; // ISO C wants a declaration in every file
#endif
