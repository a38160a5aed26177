// The integer pieces of the decode kernel's radix select (csrc/decode.cu), shared with the
// host harness (tests/native/radix_select_check.cpp) so the selection rules are tested on a CPU.
//
// Determinism: every histogram the kernel builds holds integers. Counts are counts; the
// probability mass of an element is its fp32 weight w = exp((x - max) / T) in [0, 1] as a
// 32.32 fixed-point integer (mass_fixed), so sums do not depend on the order in which threads,
// warps or thread blocks add them. The same (seed, step) therefore picks the same thresholds,
// and the same token, whatever the batch position, the row's alignment or the number of
// thread blocks that share the row.
#pragma once
#include <cmath>
#include <cstdint>

#include "s1k/budget_forcing.h"
#include "s1k/common.h"

namespace s1k {

constexpr int kRadixBins = 256;

// w in [0, 1] as round(w * 2^32); w * 2^32 is exact in fp32, so the rounding is the only step.
// Values above 1 (a suppressed id above the allowed maximum) clamp to 1: they are subtracted
// again with the same value, so they never count.
S1K_HD uint64_t mass_fixed(float w) {
  w = w < 0.f ? 0.f : (w > 1.f ? 1.f : w);
#if defined(__CUDA_ARCH__)
  return __float2ull_rn(w * 4294967296.0f);
#else
  return static_cast<uint64_t>(std::nearbyint(static_cast<double>(w * 4294967296.0f)));
#endif
}

// The distinct suppressed ids below n (end-of-thinking and EOS ids may repeat across the two
// lists): the histograms count every element and these are subtracted once per pass.
S1K_HD int distinct_stop_ids(const ForcingTable& f, int64_t n, int32_t* out /* kMaxStopIds */) {
  int m = 0;
  for (int j = 0; j < f.n_end + f.n_eos; ++j) {
    const int32_t id = j < f.n_end ? f.ids[f.off_end() + j] : f.ids[f.off_eos() + (j - f.n_end)];
    if (id < 0 || id >= n) continue;
    bool seen = false;
    for (int k = 0; k < m; ++k) seen = seen || out[k] == id;
    if (!seen) out[m++] = id;
  }
  return m;
}

// Bins are scanned from the top (bin 255 = the largest keys) in groups of 8, one group per
// lane of a warp: lane L holds bins 255-8L .. 248-8L. The kernel finds the lane with a warp
// prefix sum; these functions finish inside that lane's group.

struct CountPick {
  int32_t bin;        // the bin holding the `remaining`-th largest element
  int64_t remaining;  // its rank inside that bin
};

// acc = the count above this group; `remaining` (>= 1) lies inside the group or below it.
S1K_HD CountPick pick_count_in_group(const uint32_t* cnt, int hi, int64_t acc, int64_t remaining) {
  for (int j = 0; j < 8; ++j) {
    const int b = hi - j;
    if (acc + cnt[b] >= remaining) return CountPick{b, remaining - acc};
    acc += cnt[b];
  }
  return CountPick{hi - 7, remaining - acc};
}

struct MassPick {
  int32_t bin;     // the highest non-empty bin where the mass from the top reaches the target
  uint64_t above;  // mass above that bin
};

// acc = the mass above this group. When the target is not reached in the group (it is reached
// further down, or only rounding kept it out of reach), the group's lowest non-empty bin.
S1K_HD MassPick pick_mass_in_group(const uint32_t* cnt, const uint64_t* mass, int hi, uint64_t acc, double target) {
  MassPick last{hi - 7, acc};
  for (int j = 0; j < 8; ++j) {
    const int b = hi - j;
    if (cnt[b] == 0) continue;
    if (static_cast<double>(acc + mass[b]) >= target) return MassPick{b, acc};
    last = MassPick{b, acc};
    acc += mass[b];
  }
  return last;
}

}  // namespace s1k
