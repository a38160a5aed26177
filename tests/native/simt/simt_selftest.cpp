// Self-test of the host SIMT emulation (simt.h): small kernels whose results CUDA defines, and
// kernels with planted synchronisation bugs that the emulator must report or expose. Built and
// run by tests/test_decode_simt.py; prints "ok <checks>" or the first failure (exit status 1).
#include <cooperative_groups.h>
#include <cuda_runtime.h>

#include <cstdio>
#include <set>
#include <string>
#include <vector>

namespace cg = cooperative_groups;

namespace {

int checks = 0;

#define CHECK(cond)                                                       \
  do {                                                                    \
    ++checks;                                                             \
    if (!(cond)) {                                                        \
      std::printf("FAILED line %d: %s (%s)\n", __LINE__, #cond,           \
                  simt::last_error_message.c_str());                      \
      std::exit(1);                                                       \
    }                                                                     \
  } while (0)

template <class K, class... A>
bool run(unsigned grid, unsigned block, unsigned cluster, uint64_t seed, K kernel, A... args) {
  simt::config.schedule_seed = seed;
  simt::config.force_cluster = 0;
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = dim3(grid);
  cfg.blockDim = dim3(block);
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeClusterDimension;
  attr[0].val.clusterDim.x = cluster;
  attr[0].val.clusterDim.y = attr[0].val.clusterDim.z = 1;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  return cudaLaunchKernelEx(&cfg, kernel, args...) == cudaSuccess;
}

// Every warp collective, on 64 threads (two warps), against what CUDA defines.
__global__ void collectives(int* out) {
  const int t = threadIdx.x, lane = t & 31;
  int* o = out + t * 8;
  o[0] = __shfl_sync(0xffffffffu, t * 10, 5);
  o[1] = __shfl_up_sync(0xffffffffu, t, 3);
  o[2] = __shfl_xor_sync(0xffffffffu, t, 6);
  o[3] = static_cast<int>(__ballot_sync(0xffffffffu, lane % 3 == 0));
  o[4] = __any_sync(0xffffffffu, t == 40);
  const unsigned peers = __match_any_sync(0xffffffffu, lane / 4);
  o[5] = static_cast<int>(peers);
  // groups of different masks in one warp, then a full-warp __syncwarp: a group that finishes
  // first waits there for the others (independent thread scheduling)
  o[6] = static_cast<int>(__reduce_add_sync(peers, static_cast<unsigned>(lane)));
  __syncwarp();
  o[7] = static_cast<int>(__shfl_sync(0xffffffffu, static_cast<long long>(t) << 33, 31) >> 33);
}

// Each CTA writes its rank; after cl.sync() every CTA reads every other CTA's value.
__global__ void cluster_exchange(int* out) {
  S1K_SHARED(int, mine);
  cg::cluster_group cl = cg::this_cluster();
  if (threadIdx.x == 0) mine = 100 + static_cast<int>(cl.block_rank());
  cl.sync();
  if (threadIdx.x < cl.num_blocks())
    out[blockIdx.x * 8 + threadIdx.x] = *cl.map_shared_rank(&mine, threadIdx.x);
  cl.sync();
}

// Thread 0 writes shared memory, the others read it: with the barrier always 7, without it
// the value depends on the schedule (shared memory starts as random bytes).
template <bool kBarrier>
__global__ void publish(int* out) {
  S1K_SHARED(int, v);
  if (threadIdx.x == 0) v = 7;
  if (kBarrier) __syncthreads();
  __syncwarp();
  out[threadIdx.x] = v;
}

__global__ void skips_barrier(int*) {
  if (threadIdx.x == 3) return;
  __syncthreads();
}

__global__ void collective_never_met(int*) {
  if (threadIdx.x & 1) __syncwarp();
  else __ballot_sync(0xffffffffu, 1);
}

__global__ void reads_exited_cta(int*) {
  S1K_SHARED(int, v);
  cg::cluster_group cl = cg::this_cluster();
  v = 1;
  cl.sync();
  if (cl.block_rank() == 0) {
    __syncthreads();  // rank 1 may exit meanwhile (there is no cluster barrier before its exit)
    (void)*cl.map_shared_rank(&v, 1);
  }
}

}  // namespace

int main() {
  std::vector<int> out(64 * 8);
  for (uint64_t seed = 0; seed < 4; ++seed) {
    CHECK(run(1, 64, 1, seed, collectives, out.data()));
    for (int t = 0; t < 64; ++t) {
      const int lane = t & 31, w = t & ~31;
      const int* o = &out[t * 8];
      CHECK(o[0] == (w + 5) * 10);
      CHECK(o[1] == (lane >= 3 ? t - 3 : t));
      CHECK(o[2] == (w | (lane ^ 6)));
      CHECK(static_cast<unsigned>(o[3]) == 0x49249249u);  // lanes 0, 3, 6, ..., 30
      CHECK(o[4] == (t >= 32));
      CHECK(static_cast<unsigned>(o[5]) == 0xFu << (lane / 4 * 4));
      CHECK(o[6] == 4 * (lane / 4 * 4) + 6);
      CHECK(o[7] == w + 31);
    }
  }
  std::vector<int> ex(8 * 8, -1);
  CHECK(run(8, 64, 4, 1, cluster_exchange, ex.data()));
  for (int b = 0; b < 8; ++b)
    for (int k = 0; k < 4; ++k) CHECK(ex[b * 8 + k] == 100 + k);

  std::vector<int> pub(64);
  std::set<int> seen;
  for (uint64_t seed = 0; seed < 8; ++seed) {
    CHECK(run(1, 64, 1, seed, publish<true>, pub.data()));
    for (int v : pub) CHECK(v == 7);
    CHECK(run(1, 64, 1, seed, publish<false>, pub.data()));
    for (int v : pub) seen.insert(v);
  }
  CHECK(seen.size() > 1);  // the missing barrier shows: some threads read before thread 0 wrote

  CHECK(!run(1, 64, 1, 0, skips_barrier, pub.data()));
  CHECK(simt::last_error_message.find("exited") != std::string::npos ||
        simt::last_error_message.find("deadlock") != std::string::npos);
  CHECK(!run(1, 32, 1, 0, collective_never_met, pub.data()));
  CHECK(simt::last_error_message.find("deadlock") != std::string::npos);
  bool caught = false;
  for (uint64_t seed = 0; seed < 16 && !caught; ++seed) caught = !run(2, 64, 2, seed, reads_exited_cta, pub.data());
  CHECK(caught && simt::last_error_message.find("exited") != std::string::npos);
  std::printf("ok %d\n", checks);
  return 0;
}
