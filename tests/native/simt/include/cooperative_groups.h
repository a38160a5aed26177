// Host SIMT emulation: the thread-block-cluster part of cooperative_groups that kernels use.
#pragma once
#include "cuda_runtime.h"

namespace cooperative_groups {

class cluster_group {
 public:
  unsigned num_blocks() const { return simt::g_cluster->C; }
  unsigned block_rank() const { return static_cast<unsigned>(simt::cur_thread().cta); }
  unsigned num_threads() const { return simt::g_cluster->C * simt::g_cluster->threads; }
  // Every thread of every CTA of the cluster (barrier.cluster.arrive + wait).
  void sync() const { simt::cluster_sync(); }
  // Distributed shared memory: the same variable in the CTA of rank `rank`.
  template <class T>
  T* map_shared_rank(T* p, unsigned rank) const {
    return simt::map_shared_rank(p, rank);
  }
};

inline cluster_group this_cluster() { return cluster_group{}; }

}  // namespace cooperative_groups
