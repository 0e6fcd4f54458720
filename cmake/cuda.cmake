# The CUDA backend: built when nvcc is found (and KILN_CUDA is on), else the
# build is CPU-only and says so. Sets KILN_CUDA_LIBS for the backend layer.
set(KILN_CUDA_LIBS "")
set(KILN_HAVE_CUDA OFF)
if(KILN_CUDA)
  include(CheckLanguage)
  check_language(CUDA)
endif()
if(KILN_CUDA AND CMAKE_CUDA_COMPILER)
  # Architectures are given as -gencode flags: sm_80 and sm_89 cover Ampere
  # and Ada, sm_90a Hopper (its arch-specific form, which Hopper-only
  # instructions such as wgmma need; docs/perf.md names the commit of the
  # wgmma prefill kernel that used it).
  set(CMAKE_CUDA_ARCHITECTURES OFF)
  enable_language(CUDA)
  find_package(CUDAToolkit REQUIRED)
  set(KILN_HAVE_CUDA ON)
  file(GLOB kiln_cuda_srcs CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/src/backend/cuda/*.cu
       ${CMAKE_SOURCE_DIR}/src/backend/cuda/*.c)
  add_library(kiln_backend_cuda STATIC ${kiln_cuda_srcs})
  target_include_directories(kiln_backend_cuda PUBLIC ${CMAKE_SOURCE_DIR}/src ${CMAKE_SOURCE_DIR}/include)
  set_target_properties(kiln_backend_cuda PROPERTIES POSITION_INDEPENDENT_CODE ON CUDA_STANDARD 17
                        CUDA_STANDARD_REQUIRED ON)
  set(KILN_CUDA_GENCODE -gencode=arch=compute_80,code=sm_80 -gencode=arch=compute_89,code=sm_89
      -gencode=arch=compute_90a,code=sm_90a)
  target_compile_options(kiln_backend_cuda PRIVATE
    $<$<COMPILE_LANGUAGE:CUDA>:${KILN_CUDA_GENCODE} -Werror=all-warnings -Xcompiler=-Wall,-Wextra,-Werror
    --expt-relaxed-constexpr -lineinfo>)
  target_compile_definitions(kiln_backend_cuda PUBLIC KILN_HAVE_CUDA=1)
  target_link_libraries(kiln_backend_cuda PUBLIC kiln_core CUDA::cudart_static ${CMAKE_DL_LIBS} OpenMP::OpenMP_C)
  set(KILN_CUDA_LIBS kiln_backend_cuda)
  message(STATUS "kiln: CUDA backend ON (nvcc ${CMAKE_CUDA_COMPILER_VERSION}; sm_80, sm_89, sm_90a)")
else()
  message(STATUS "kiln: CUDA backend OFF (no CUDA compiler found, or KILN_CUDA=OFF): CPU-only build")
endif()
