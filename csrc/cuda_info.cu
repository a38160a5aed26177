// Device queries for s1kernels.info(); compiled only when nvcc is present.
#include <cuda_runtime.h>

#include "s1k/common.h"

extern "C" int s1k_cuda_device_count(int* count) {
  cudaError_t err = cudaGetDeviceCount(count);
  if (err != cudaSuccess) {
    *count = 0;
    cudaGetLastError();  // clear the sticky "no device" error so later calls start clean
    return s1k::kCudaError;
  }
  return s1k::kOk;
}

extern "C" const char* s1k_cuda_error_string(int code) {
  return cudaGetErrorString(static_cast<cudaError_t>(code));
}

extern "C" const char* s1k_cuda_last_error_string() {
  return cudaGetErrorString(cudaGetLastError());
}
