// Fused decode step on the GPU: the budget-forcing state machine (s1k/budget_forcing.h) and
// the sampling of each batch row's next token (s1k/sampling.h) straight from its
// bf16/fp16/fp32 logits. No sort: each filter is a threshold on the logit value, found by an
// 8-bit radix select over the row (2 digits for bf16, 3 for fp16, 4 for fp32).
//
// Work split: a row is shared by a thread-block cluster of C CTAs (C = 1..8, chosen from the
// batch size so that small batches still fill the GPU: B = 64 runs 256 CTAs on 132 SMs). The
// CTAs of a row exchange their partial results through distributed shared memory; every CTA
// merges them in rank order and takes the same decisions, so no CTA waits on a broadcast.
//
// Determinism: element i is always handled by the same (rank, thread) slot, whatever the row's
// alignment (a misaligned row loads the same 16-byte chunks element by element), and every
// histogram holds integers (counts, and probability mass in 32.32 fixed point, see
// s1k/radix_select.h), built with warp-aggregated updates (match.any + redux) and no float
// atomics. Thresholds and the Gumbel-max winner are therefore the same on every run, at every
// batch position and for every C; the logprob is a fixed-order fp32 sum (the same for the same C).
//
// Passes over a sampling row:
//   A   max / argmax of the allowed logits, online logsumexp of the raw logits, non-finite check
//   K   top-k threshold (radix select on counts)             only when 0 < top_k < allowed ids
//   P   top-p threshold (radix select on mass of the top-k)  only when top_p < 1
//   G   Gumbel-max draw over the kept ids (Philox per 4 ids) only when temperature > 0;
//       ids too far below the running best to win skip their random numbers
// Suppressed ids (end of thinking / EOS while thinking must go on) cost once per pass: K and P
// count every element and subtract the suppressed ids afterwards; A and G look an id up in the
// suppressed list only when it would become the new best.
// Rows that emit a forced token (pad, injected sequences) never read their logits.
//
// Everything the step reads or writes lives in device memory (state, budgets, seeds, the
// per-row step counter), so the launch can be captured in a CUDA graph and replayed.
#include <cooperative_groups.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>

#include "s1k/decode.h"
#include "s1k/radix_select.h"

namespace cg = cooperative_groups;

namespace {

using s1k::DecodeArgs;
using s1k::kRadixBins;

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kMaxCluster = 8;  // the portable cluster size limit
// Above the largest Gumbel noise -log(-log(u)) for u <= 1 - 2^-24 (16.64), with margin.
constexpr float kGumbelMax = 17.0f;
constexpr uint32_t kNoBin = 0xFFFFFFFFu;

// ------------------------------------------------------------------ logit loading

template <int DT>
struct Logits;

template <>
struct Logits<s1k::kFloat32> {
  static constexpr int kVec = 4;  // elements per 16-byte chunk
  static constexpr int kBytes = 4;
  __device__ static void unpack(const uint4& q, float* x) {
    x[0] = __uint_as_float(q.x);
    x[1] = __uint_as_float(q.y);
    x[2] = __uint_as_float(q.z);
    x[3] = __uint_as_float(q.w);
  }
  __device__ static float one(const void* row, int64_t i) { return static_cast<const float*>(row)[i]; }
};

template <>
struct Logits<s1k::kBFloat16> {
  static constexpr int kVec = 8;
  static constexpr int kBytes = 2;
  __device__ static void unpack(const uint4& q, float* x) {
    const uint32_t w[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      x[2 * j] = __uint_as_float(w[j] << 16);
      x[2 * j + 1] = __uint_as_float(w[j] & 0xFFFF0000u);
    }
  }
  __device__ static float one(const void* row, int64_t i) {
    return s1k::bf16_bits_to_float(__ldg(static_cast<const uint16_t*>(row) + i));
  }
};

template <>
struct Logits<s1k::kFloat16> {
  static constexpr int kVec = 8;
  static constexpr int kBytes = 2;
  __device__ static float h2f(uint32_t bits16) { return __half2float(__ushort_as_half(static_cast<unsigned short>(bits16))); }
  __device__ static void unpack(const uint4& q, float* x) {
    const uint32_t w[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      x[2 * j] = h2f(w[j] & 0xFFFFu);
      x[2 * j + 1] = h2f(w[j] >> 16);
    }
  }
  __device__ static float one(const void* row, int64_t i) { return h2f(__ldg(static_cast<const uint16_t*>(row) + i)); }
};

// Chunk j (elements j*kVec .. j*kVec+kVec-1) into x; one 16-byte load when the row is aligned
// and the chunk is whole, else element by element. Never reads at or past n.
template <int DT>
__device__ __forceinline__ void load_chunk(const void* row, int64_t n, int64_t j, bool aligned, float* x) {
  using L = Logits<DT>;
  const int64_t i0 = j * L::kVec;
  if (aligned && i0 + L::kVec <= n) {
    L::unpack(__ldg(static_cast<const uint4*>(row) + j), x);
  } else {
#pragma unroll
    for (int e = 0; e < L::kVec; ++e) x[e] = i0 + e < n ? L::one(row, i0 + e) : 0.f;
  }
}

// The row's slice of this CTA. Calls f(i, x_i, valid) for every element slot of this thread, in
// increasing i (the argmax tie-break relies on it); the trip count is uniform across each warp,
// so f may use warp-synchronous intrinsics. Chunk j belongs to rank (j / kThreads) % C, thread
// j % kThreads: a fixed owner per element, independent of the row's alignment.
template <int DT, class F>
__device__ __forceinline__ void for_each_logit(const void* row, int64_t n, int rank, int C, F&& f) {
  using L = Logits<DT>;
  const bool aligned = (reinterpret_cast<uintptr_t>(row) & 15u) == 0;
  const int64_t stride = static_cast<int64_t>(C) * kThreads;
  const int64_t warp_base = static_cast<int64_t>(rank) * kThreads + (threadIdx.x & ~31);
  const int lane = threadIdx.x & 31;
  // two chunks in flight per thread before either is used
  for (int64_t jw = warp_base; jw * L::kVec < n; jw += 2 * stride) {
    const int64_t j0 = jw + lane, j1 = jw + stride + lane;
    float x0[L::kVec], x1[L::kVec];
    load_chunk<DT>(row, n, j0, aligned, x0);
    const bool second = (jw + stride) * L::kVec < n;  // warp-uniform
    if (second) load_chunk<DT>(row, n, j1, aligned, x1);
#pragma unroll
    for (int e = 0; e < L::kVec; ++e) f(j0 * L::kVec + e, x0[e], j0 * L::kVec + e < n);
    if (second) {
#pragma unroll
      for (int e = 0; e < L::kVec; ++e) f(j1 * L::kVec + e, x1[e], j1 * L::kVec + e < n);
    }
  }
}

// ------------------------------------------------------------------ reductions

// The words go through memcpy, not an int* view of the struct: such a view breaks C++'s
// aliasing rules, and an optimiser that relies on them may read the words before the struct's
// fields are stored (g++ -O2 did, under the host SIMT emulation: tests/test_decode_simt.py).
template <class T>
__device__ __forceinline__ T shfl_xor_any(const T& v, int offset) {
  static_assert(sizeof(T) % 4 == 0, "shuffled structs are made of 4-byte words");
  int w[sizeof(T) / 4];
  memcpy(w, &v, sizeof(T));
#pragma unroll
  for (int i = 0; i < static_cast<int>(sizeof(T) / 4); ++i) w[i] = __shfl_xor_sync(0xffffffffu, w[i], offset);
  T r;
  memcpy(&r, w, sizeof(T));
  return r;
}

// Reduces v over the block with op in a fixed tree (identity `id`); every thread gets the result.
template <class T, class Op>
__device__ T block_reduce(T v, Op op, T id, T* smem /* kWarps + 1 */) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = op(v, shfl_xor_any(v, o));
  if (lane == 0) smem[warp] = v;
  __syncthreads();
  if (warp == 0) {
    T w = lane < kWarps ? smem[lane] : id;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) w = op(w, shfl_xor_any(w, o));
    if (lane == 0) smem[kWarps] = w;
  }
  __syncthreads();
  const T r = smem[kWarps];
  __syncthreads();
  return r;
}

struct RowStats {
  float m_raw, s_raw;  // online logsumexp of the raw logits
  float m;             // max allowed logit
  int32_t argmax;      // first index of m
  int32_t bad;         // saw NaN or +inf
};

__device__ __forceinline__ RowStats merge_stats(const RowStats& a, const RowStats& b) {
  RowStats r;
  r.m_raw = fmaxf(a.m_raw, b.m_raw);
  const float sa = a.m_raw == -INFINITY ? 0.f : a.s_raw * __expf(a.m_raw - r.m_raw);
  const float sb = b.m_raw == -INFINITY ? 0.f : b.s_raw * __expf(b.m_raw - r.m_raw);
  r.s_raw = sa + sb;
  const bool take_b = b.m > a.m || (b.m == a.m && b.argmax < a.argmax);
  r.m = take_b ? b.m : a.m;
  r.argmax = take_b ? b.argmax : a.argmax;
  r.bad = a.bad | b.bad;
  return r;
}

struct Best {
  float score;
  int32_t index;
};

__device__ __forceinline__ Best merge_best(const Best& a, const Best& b) {
  return (b.score > a.score || (b.score == a.score && b.index < a.index)) ? b : a;
}

// ------------------------------------------------------------------ shared memory

// What one CTA publishes to the others of its cluster; double-buffered by exchange parity, so
// one cluster barrier per exchange suffices (a CTA cannot be two exchanges ahead of a reader).
struct Exchange {
  uint32_t cnt[kRadixBins];
  uint64_t mass[kRadixBins];
  RowStats stats;
  Best best;
};

struct Shared {
  uint32_t warp_cnt[kWarps][kRadixBins];  // per-warp histograms: each warp owns its own
  uint64_t warp_mass[kWarps][kRadixBins];
  uint32_t cnt[kRadixBins];  // the row's histogram (all ranks, suppressed ids subtracted)
  uint64_t mass[kRadixBins];
  Exchange xch[2];
  alignas(16) unsigned char red[(kWarps + 1) * sizeof(RowStats)];
  int32_t stop_ids[s1k::kMaxStopIds];  // distinct suppressed ids below vocab_size
  int n_stop, sample;
  // radix selection results of warp 0
  int sel_bin;
  int64_t sel_remaining;
  uint64_t sel_above;
  double sel_target;
};

// False for a suppressed id.
__device__ __forceinline__ bool allowed(const Shared& sh, int64_t i) {
  for (int j = 0; j < sh.n_stop; ++j)
    if (sh.stop_ids[j] == i) return false;
  return true;
}

// ------------------------------------------------------------------ radix select

// One digit's histogram of the whole row: per-warp counts (and masses) of digit `shift` of the
// keys of the elements that match `prefix` under `mask` and pass sel(x, &q) (q = fixed-point
// mass), summed over the cluster in rank order into sh.cnt / sh.mass, suppressed ids included.
template <int DT, bool kMass, class Sel>
__device__ void row_histogram(Shared& sh, cg::cluster_group& cl, int parity, const void* row, int64_t n, int rank,
                              int C, uint32_t prefix, uint32_t mask, int shift, Sel&& sel) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  for (int j = threadIdx.x; j < kWarps * kRadixBins; j += kThreads) {
    (&sh.warp_cnt[0][0])[j] = 0;
    if (kMass) (&sh.warp_mass[0][0])[j] = 0;
  }
  __syncthreads();
  for_each_logit<DT>(row, n, rank, C, [&](int64_t, float x, bool valid) {
    uint32_t bin = kNoBin;
    uint64_t q = 0;
    if (valid) {
      const uint32_t key = s1k::float_key(x);
      if ((key & mask) == prefix && sel(x, q)) bin = (key >> shift) & 0xFFu;
    }
    if (!__any_sync(0xffffffffu, bin != kNoBin)) return;  // most slots after digit 0
    // Warp aggregation: the lanes of one bin form a group; its lowest lane adds the group's
    // count and mass to the warp's own histogram (distinct bins: no atomics needed).
    const unsigned peers = __match_any_sync(0xffffffffu, bin);
    uint64_t group_mass = 0;
    if (kMass) {  // q <= 2^32: two 16-bit halves of a 32-lane sum cannot overflow 32 bits
      const uint32_t hi = __reduce_add_sync(peers, static_cast<uint32_t>(q >> 16));
      const uint32_t lo = __reduce_add_sync(peers, static_cast<uint32_t>(q & 0xFFFFu));
      group_mass = (static_cast<uint64_t>(hi) << 16) + lo;
    }
    if (bin != kNoBin && lane == __ffs(peers) - 1) {
      sh.warp_cnt[warp][bin] += __popc(peers);
      if (kMass) sh.warp_mass[warp][bin] += group_mass;
    }
    __syncwarp();
  });
  __syncthreads();
  Exchange& out = sh.xch[parity];
  for (int b = threadIdx.x; b < kRadixBins; b += kThreads) {
    uint32_t c = 0;
    uint64_t s = 0;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) {
      c += sh.warp_cnt[w][b];
      if (kMass) s += sh.warp_mass[w][b];
    }
    out.cnt[b] = c;
    out.mass[b] = s;
  }
  cl.sync();
  for (int b = threadIdx.x; b < kRadixBins; b += kThreads) {
    uint32_t c = 0;
    uint64_t s = 0;
    for (int k = 0; k < C; ++k) {
      const Exchange* other = cl.map_shared_rank(&sh.xch[parity], k);
      c += other->cnt[b];
      if (kMass) s += other->mass[b];
    }
    sh.cnt[b] = c;
    sh.mass[b] = s;
  }
  __syncthreads();
}

// Takes the suppressed ids back out of the row's histogram (thread 0; at most kMaxStopIds).
template <int DT, bool kMass, class Sel>
__device__ void subtract_stop_ids(Shared& sh, const void* row, uint32_t prefix, uint32_t mask, int shift, Sel&& sel) {
  if (threadIdx.x == 0) {
    for (int j = 0; j < sh.n_stop; ++j) {
      const float x = Logits<DT>::one(row, sh.stop_ids[j]);
      const uint32_t key = s1k::float_key(x);
      uint64_t q = 0;
      if ((key & mask) != prefix || !sel(x, q)) continue;
      const uint32_t b = (key >> shift) & 0xFFu;
      sh.cnt[b] -= 1;
      if (kMass) sh.mass[b] -= q;
    }
  }
  __syncthreads();
}

// Warp 0: the bin holding the `remaining`-th largest element, counting from bin 255 down.
__device__ void select_count_bin(Shared& sh, int64_t remaining) {
  const int lane = threadIdx.x & 31, hi = kRadixBins - 1 - 8 * lane;
  int64_t local = 0;
#pragma unroll
  for (int j = 0; j < 8; ++j) local += sh.cnt[hi - j];
  int64_t incl = local;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const int64_t t = __shfl_up_sync(0xffffffffu, incl, o);
    if (lane >= o) incl += t;
  }
  const unsigned hit = __ballot_sync(0xffffffffu, incl >= remaining);
  const int first = hit ? __ffs(hit) - 1 : 31;  // `remaining` never exceeds the bucket's count
  if (lane == first) {
    const s1k::CountPick p = s1k::pick_count_in_group(sh.cnt, hi, incl - local, remaining);
    sh.sel_bin = p.bin;
    sh.sel_remaining = p.remaining;
  }
}

// Warp 0: the highest non-empty bin at which the mass from the top (`above` + bins so far)
// reaches the target; on the first digit the target is top_p times the row's kept mass.
__device__ void select_mass_bin(Shared& sh, uint64_t above, double target, bool first_digit, float top_p) {
  const int lane = threadIdx.x & 31, hi = kRadixBins - 1 - 8 * lane;
  uint64_t local = 0;
  uint32_t local_cnt = 0;
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    local += sh.mass[hi - j];
    local_cnt += sh.cnt[hi - j];
  }
  uint64_t incl = local;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const uint64_t t = __shfl_up_sync(0xffffffffu, incl, o);
    if (lane >= o) incl += t;
  }
  if (first_digit) target = static_cast<double>(top_p) * static_cast<double>(__shfl_sync(0xffffffffu, incl, 31));
  const unsigned hit = __ballot_sync(0xffffffffu, local_cnt > 0 && static_cast<double>(above + incl) >= target);
  const unsigned nonempty = __ballot_sync(0xffffffffu, local_cnt > 0);
  const int chosen_lane = hit ? __ffs(hit) - 1 : (nonempty ? 31 - __clz(nonempty) : 31);
  if (lane == chosen_lane) {
    const s1k::MassPick p = s1k::pick_mass_in_group(sh.cnt, sh.mass, hi, above + (incl - local), target);
    sh.sel_bin = p.bin;
    sh.sel_above = p.above;
    sh.sel_target = target;
  }
}

// The k-th largest allowed logit (ties counted), 1 <= k < allowed ids.
template <int DT>
__device__ float topk_threshold(Shared& sh, cg::cluster_group& cl, int& parity, const void* row, int64_t n, int rank,
                                int C, int64_t k) {
  uint32_t prefix = 0, mask = 0;
  int64_t remaining = k;
  const auto all = [](float, uint64_t&) { return true; };
  for (int d = 0; d < s1k::radix_digits(DT); ++d) {
    const int shift = 24 - 8 * d;
    row_histogram<DT, false>(sh, cl, parity, row, n, rank, C, prefix, mask, shift, all);
    parity ^= 1;
    subtract_stop_ids<DT, false>(sh, row, prefix, mask, shift, all);
    if (threadIdx.x < 32) select_count_bin(sh, remaining);
    __syncthreads();
    prefix |= static_cast<uint32_t>(sh.sel_bin) << shift;
    mask |= 0xFFu << shift;
    remaining = sh.sel_remaining;
    __syncthreads();
  }
  return s1k::key_to_float(s1k::complete_key(prefix, mask));
}

// The largest logit value t whose mass {x >= t} (over allowed x >= t_k) reaches top_p of that set.
template <int DT>
__device__ float topp_threshold(Shared& sh, cg::cluster_group& cl, int& parity, const void* row, int64_t n, int rank,
                                int C, float t_k, float m, float inv_t, float top_p) {
  uint32_t prefix = 0, mask = 0;
  uint64_t above = 0;
  double target = 0.0;
  const auto kept = [=](float x, uint64_t& q) {
    if (!(x >= t_k)) return false;
    q = s1k::mass_fixed(__expf((x - m) * inv_t));
    return true;
  };
  for (int d = 0; d < s1k::radix_digits(DT); ++d) {
    const int shift = 24 - 8 * d;
    row_histogram<DT, true>(sh, cl, parity, row, n, rank, C, prefix, mask, shift, kept);
    parity ^= 1;
    subtract_stop_ids<DT, true>(sh, row, prefix, mask, shift, kept);
    if (threadIdx.x < 32) select_mass_bin(sh, above, target, d == 0, top_p);
    __syncthreads();
    prefix |= static_cast<uint32_t>(sh.sel_bin) << shift;
    mask |= 0xFFu << shift;
    above = sh.sel_above;
    target = sh.sel_target;
    __syncthreads();
  }
  return s1k::key_to_float(s1k::complete_key(prefix, mask));
}

// Merges what every CTA of the cluster published in slot `parity`, in rank order.
template <class T, class Get, class Op>
__device__ T cluster_merge(cg::cluster_group& cl, Shared& sh, int parity, int C, Get&& get, Op&& op) {
  cl.sync();
  T r = get(*cl.map_shared_rank(&sh.xch[parity], 0));
  for (int k = 1; k < C; ++k) r = op(r, get(*cl.map_shared_rank(&sh.xch[parity], k)));
  return r;
}

// ------------------------------------------------------------------ the kernel

template <int DT>
__global__ void __launch_bounds__(kThreads, 2) decode_step_kernel(DecodeArgs a) {
  S1K_SHARED(Shared, sh);
  cg::cluster_group cl = cg::this_cluster();
  const int C = static_cast<int>(cl.num_blocks()), rank = static_cast<int>(cl.block_rank());
  const int64_t r = blockIdx.x / C;
  const int64_t n = a.vocab_size;
  const s1k::ForcingTable f = s1k::forcing_table(a, a.table);
  s1k::RowState s{};
  s1k::RowBudget b{};
  s1k::StepPlan plan{};
  if (threadIdx.x == 0) {  // every CTA plans (a pure function of the row's state) ...
    s = s1k::load_row_state(a, r);
    b = s1k::load_row_budget(a, r);
    plan = s1k::plan_step(s, b, f);
    sh.sample = plan.sample;
    sh.n_stop = plan.suppress ? s1k::distinct_stop_ids(f, n, sh.stop_ids) : 0;
  }
  cl.sync();  // ... and has read the state before rank 0 may write it
  if (!sh.sample) {  // uniform across the cluster
    if (rank == 0 && threadIdx.x == 0) {
      a.tokens[r] = plan.token;
      a.logprobs[r] = 0.f;
      s1k::store_row_state(a, r, s);
    }
    return;
  }

  const void* row = static_cast<const char*>(a.logits) + r * a.row_stride * Logits<DT>::kBytes;
  int parity = 0;

  // pass A
  RowStats st{-INFINITY, 0.f, -INFINITY, 0x7fffffff, 0};
  for_each_logit<DT>(row, n, rank, C, [&](int64_t i, float x, bool valid) {
    if (!valid) return;
    if (isnan(x) || x == INFINITY) {
      st.bad = 1;
      return;
    }
    if (x > st.m_raw) {
      st.s_raw = st.s_raw * __expf(st.m_raw - x) + 1.f;  // m_raw == -inf gives 0 * 0 + 1
      st.m_raw = x;
    } else if (x != -INFINITY) {
      st.s_raw += __expf(x - st.m_raw);
    }
    if (x > st.m && allowed(sh, i)) {  // the suppressed list is read only for a new maximum
      st.m = x;
      st.argmax = static_cast<int32_t>(i);
    }
  });
  const RowStats id{-INFINITY, 0.f, -INFINITY, 0x7fffffff, 0};
  const auto stats_op = [](const RowStats& x, const RowStats& y) { return merge_stats(x, y); };
  st = block_reduce(st, stats_op, id, reinterpret_cast<RowStats*>(sh.red));
  if (threadIdx.x == 0) sh.xch[parity].stats = st;
  st = cluster_merge<RowStats>(cl, sh, parity, C, [](const Exchange& e) { return e.stats; }, stats_op);
  parity ^= 1;

  int32_t error = 0;
  if (st.bad) error = s1k::kErrorNonFinite;
  else if (st.m == -INFINITY) error = s1k::kErrorNoToken;
  int64_t token = st.argmax;

  const float temperature = a.temperature[r];
  if (error == 0 && temperature > 0.f) {
    const float inv_t = 1.f / temperature;
    const int32_t top_k = a.top_k[r];
    const float top_p = a.top_p[r];
    const int64_t n_allowed = n - sh.n_stop;
    float thr = -INFINITY;
    if (top_k > 0 && top_k < n_allowed) thr = topk_threshold<DT>(sh, cl, parity, row, n, rank, C, top_k);
    if (top_p < 1.f) thr = topp_threshold<DT>(sh, cl, parity, row, n, rank, C, thr, st.m, inv_t, top_p);
    const float min_p = a.min_p[r];
    const float log_min_p = min_p > 0.f ? logf(min_p) : -INFINITY;
    const uint64_t seed = static_cast<uint64_t>(a.seed[r]), step = static_cast<uint64_t>(a.step[r]);
    // Every thread starts from the score of the row's maximum (always kept, z = 0): an id
    // whose z trails the best score by more than the largest Gumbel noise cannot win, so its
    // random numbers are never computed. On peaked rows that skips nearly the whole vocabulary.
    const s1k::Philox4 top_words = s1k::decode_philox_group(seed, step, static_cast<uint32_t>(st.argmax >> 2));
    Best best{s1k::gumbel_from_word<float>(s1k::philox_word(top_words, st.argmax & 3)), st.argmax};
    s1k::Philox4 words{};
    int64_t group = -1;
    const float m = st.m;
    for_each_logit<DT>(row, n, rank, C, [&](int64_t i, float x, bool valid) {
      if (!valid || !(x >= thr)) return;
      const float z = (x - m) * inv_t;
      if (z < best.score - kGumbelMax || !(z >= log_min_p)) return;
      if ((i >> 2) != group) {
        group = i >> 2;
        words = s1k::decode_philox_group(seed, step, static_cast<uint32_t>(group));
      }
      const float score = z + s1k::gumbel_from_word<float>(s1k::philox_word(words, static_cast<int>(i & 3)));
      if ((score > best.score || (score == best.score && i < best.index)) && allowed(sh, i))
        best = Best{score, static_cast<int32_t>(i)};
    });
    const Best none{-INFINITY, 0x7fffffff};
    const auto best_op = [](const Best& x, const Best& y) { return merge_best(x, y); };
    best = block_reduce(best, best_op, none, reinterpret_cast<Best*>(sh.red));
    if (threadIdx.x == 0) sh.xch[parity].best = best;
    best = cluster_merge<Best>(cl, sh, parity, C, [](const Exchange& e) { return e.best; }, best_op);
    if (best.index != 0x7fffffff) token = best.index;
  }
  cl.sync();  // no CTA leaves while another may still read its shared memory

  if (rank == 0 && threadIdx.x == 0) {
    float logprob = 0.f;
    bool use_logprob = false;
    const int64_t emitted = s1k::finish_step(s, b, f, plan, token, error, &use_logprob);
    // (x - m) first: it is exact for x near m, where m + log(s) would round at the scale of m
    if (use_logprob) logprob = (Logits<DT>::one(row, token) - st.m_raw) - logf(st.s_raw);
    a.tokens[r] = emitted;
    a.logprobs[r] = logprob;
    s1k::store_row_state(a, r, s);
  }
}

// CTAs per row: the smallest power of two that gives at least one CTA per SM, at most
// kMaxCluster, and no more CTAs than the row has 16-byte chunks for a full pass of threads.
int cluster_size(int64_t batch, int64_t vocab, int dtype) {
  static int sms = 0;
  if (sms == 0) {
    int dev = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess)
      sms = 132;
  }
  const int64_t chunks = vocab / (dtype == s1k::kFloat32 ? 4 : 8);
  int c = 1;
  while (c < kMaxCluster && batch * c < sms && chunks >= static_cast<int64_t>(2 * c) * kThreads) c *= 2;
  return c;
}

template <int DT>
cudaError_t launch(const DecodeArgs& a, cudaStream_t stream) {
  const int c = cluster_size(a.batch, a.vocab_size, a.dtype);
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = dim3(static_cast<unsigned>(a.batch * c));
  cfg.blockDim = dim3(kThreads);
  cfg.dynamicSmemBytes = 0;
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeClusterDimension;
  attr[0].val.clusterDim.x = c;
  attr[0].val.clusterDim.y = 1;
  attr[0].val.clusterDim.z = 1;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  return cudaLaunchKernelEx(&cfg, decode_step_kernel<DT>, a);
}

}  // namespace

extern "C" int s1k_decode_step_cuda(const DecodeArgs* args, void* stream) {
  if (args == nullptr) return s1k::kInvalidArgument;
  const DecodeArgs& a = *args;
  if (int code = s1k::validate_decode_args(a)) return code;
  if (a.batch * kMaxCluster > 0x7fffffff) return s1k::kInvalidArgument;
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  cudaError_t err;
  switch (a.dtype) {
    case s1k::kFloat32:
      err = launch<s1k::kFloat32>(a, st);
      break;
    case s1k::kFloat16:
      err = launch<s1k::kFloat16>(a, st);
      break;
    default:
      err = launch<s1k::kBFloat16>(a, st);
      break;
  }
  return err == cudaSuccess && cudaPeekAtLastError() == cudaSuccess ? s1k::kOk : s1k::kCudaError;
}
