// Fused decode step on the GPU: one thread block per batch row runs the budget-forcing state
// machine (s1k/budget_forcing.h) and samples the row's next token (s1k/sampling.h) straight
// from its bf16/fp16/fp32 logits. No sort: each filter is a threshold on the logit value,
// found by an 8-bit radix select over the row (2 passes for bf16, 3 for fp16, 4 for fp32),
// with per-warp histograms of counts (top-k) or probability mass (top-p) in shared memory.
// The row is re-read from L2 on each pass; a greedy row reads it once.
//
// Passes over a sampling row:
//   A   max / argmax of the allowed logits, online logsumexp of the raw logits, non-finite check
//   K   top-k threshold (radix select on counts)             only when 0 < top_k < allowed ids
//   P   top-p threshold (radix select on mass of the top-k)  only when top_p < 1
//   G   Gumbel-max draw over the kept ids (Philox per 4 ids) only when temperature > 0;
//       ids too far below the running best to win skip their random numbers
// Rows that emit a forced token (pad, injected sequences) never read their logits.
//
// Everything the step reads or writes lives in device memory (state, budgets, seeds, the
// per-row step counter), so the launch can be captured in a CUDA graph and replayed.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "s1k/decode.h"

namespace {

using s1k::DecodeArgs;

constexpr int kThreads = 512;
constexpr int kWarps = kThreads / 32;
constexpr int kBins = 256;
// Above the largest Gumbel noise -log(-log(u)) for u <= 1 - 2^-24 (16.64), with margin.
constexpr float kGumbelMax = 17.0f;

// ------------------------------------------------------------------ logit loading

template <int DT>
struct Logits;

template <>
struct Logits<s1k::kFloat32> {
  static constexpr int kVec = 4;  // elements per 16-byte load
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
    return s1k::bf16_bits_to_float(static_cast<const uint16_t*>(row)[i]);
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
  __device__ static float one(const void* row, int64_t i) { return h2f(static_cast<const uint16_t*>(row)[i]); }
};

// Calls f(i, x_i) for every i in [0, n) owned by this thread, in increasing i (the argmax
// tie-break relies on it): 16-byte loads when the row is 16-byte aligned, then a scalar
// tail. Never reads at or past n.
template <int DT, class F>
__device__ __forceinline__ void for_each_logit(const void* row, int64_t n, F&& f) {
  using L = Logits<DT>;
  int64_t start = 0;
  if ((reinterpret_cast<uintptr_t>(row) & 15u) == 0) {
    const int64_t nvec = n / L::kVec;
    const uint4* v = static_cast<const uint4*>(row);
    int64_t j = threadIdx.x;
    // two 16-byte loads in flight per thread before either is used
    for (; j + kThreads < nvec; j += 2 * kThreads) {
      const uint4 q0 = __ldg(v + j), q1 = __ldg(v + j + kThreads);
      float x[L::kVec];
      L::unpack(q0, x);
#pragma unroll
      for (int e = 0; e < L::kVec; ++e) f(j * L::kVec + e, x[e]);
      L::unpack(q1, x);
#pragma unroll
      for (int e = 0; e < L::kVec; ++e) f((j + kThreads) * L::kVec + e, x[e]);
    }
    if (j < nvec) {
      float x[L::kVec];
      L::unpack(__ldg(v + j), x);
#pragma unroll
      for (int e = 0; e < L::kVec; ++e) f(j * L::kVec + e, x[e]);
    }
    start = nvec * L::kVec;
  }
  for (int64_t i = start + threadIdx.x; i < n; i += kThreads) f(i, L::one(row, i));
}

// ------------------------------------------------------------------ block reductions

template <class T>
__device__ __forceinline__ T shfl_xor_any(const T& v, int offset) {
  static_assert(sizeof(T) % 4 == 0, "shuffled structs are made of 4-byte words");
  T r;
  const int* src = reinterpret_cast<const int*>(&v);
  int* dst = reinterpret_cast<int*>(&r);
#pragma unroll
  for (int i = 0; i < static_cast<int>(sizeof(T) / 4); ++i) dst[i] = __shfl_xor_sync(0xffffffffu, src[i], offset);
  return r;
}

// Reduces v over the block with op (identity `id`); every thread gets the result.
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
  float lo;            // min finite allowed logit
  int32_t argmax;      // first index of m
  int32_t n_allowed;
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
  r.lo = fminf(a.lo, b.lo);
  r.argmax = take_b ? b.argmax : a.argmax;
  r.n_allowed = a.n_allowed + b.n_allowed;
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

// ------------------------------------------------------------------ radix select

struct Shared {
  int hist_cnt[kWarps][kBins];
  float hist_mass[kWarps][kBins];
  int bin_cnt[kBins];
  float bin_mass[kBins];
  alignas(16) unsigned char red[(kWarps + 1) * sizeof(RowStats)];
  int32_t stop_ids[s1k::kMaxStopIds];
  // the plan of thread 0, broadcast
  int sample, suppress, n_stop;
  float temperature, top_p, min_p;
  int32_t top_k;
  uint64_t seed, step;
  // radix selection results of warp 0, broadcast
  int sel_bin, sel_remaining;
  float sel_above, sel_target;
};

__device__ void clear_hist(Shared& sh, bool with_mass) {
  for (int j = threadIdx.x; j < kWarps * kBins; j += kThreads) {
    (&sh.hist_cnt[0][0])[j] = 0;
    if (with_mass) (&sh.hist_mass[0][0])[j] = 0.f;
  }
}

__device__ void sum_hist(Shared& sh, bool with_mass) {
  for (int b = threadIdx.x; b < kBins; b += kThreads) {
    int c = 0;
    float s = 0.f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) {
      c += sh.hist_cnt[w][b];
      if (with_mass) s += sh.hist_mass[w][b];
    }
    sh.bin_cnt[b] = c;
    sh.bin_mass[b] = s;
  }
}

// Warp 0: the bin holding the `remaining`-th largest element, counting from bin 255 down.
// Lane L covers bins 255-8L down to 248-8L.
__device__ void select_count_bin(Shared& sh, int remaining) {
  const int lane = threadIdx.x & 31, hi = kBins - 1 - 8 * lane;
  int local = 0;
#pragma unroll
  for (int j = 0; j < 8; ++j) local += sh.bin_cnt[hi - j];
  int incl = local;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const int t = __shfl_up_sync(0xffffffffu, incl, o);
    if (lane >= o) incl += t;
  }
  const unsigned hit = __ballot_sync(0xffffffffu, incl >= remaining);
  const int first = hit ? __ffs(hit) - 1 : 31;  // `remaining` never exceeds the bucket's count
  if (lane == first) {
    int acc = incl - local;
    int chosen = hi - 7;
    for (int j = 0; j < 8; ++j) {
      const int b = hi - j;
      if (acc + sh.bin_cnt[b] >= remaining) {
        chosen = b;
        break;
      }
      acc += sh.bin_cnt[b];
    }
    sh.sel_bin = chosen;
    sh.sel_remaining = remaining - acc;
  }
}

// Warp 0: the highest bin at which the mass from the top (`above` + bins so far) reaches the
// target; on the first digit the target is top_p times the bucket's total. When rounding keeps
// the target out of reach, the lowest non-empty bin is taken.
__device__ void select_mass_bin(Shared& sh, float above, float target, bool first_digit, float top_p) {
  const int lane = threadIdx.x & 31, hi = kBins - 1 - 8 * lane;
  float local = 0.f;
  int local_cnt = 0;
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    local += sh.bin_mass[hi - j];
    local_cnt += sh.bin_cnt[hi - j];
  }
  float incl = local;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const float t = __shfl_up_sync(0xffffffffu, incl, o);
    if (lane >= o) incl += t;
  }
  if (first_digit) target = top_p * __shfl_sync(0xffffffffu, incl, 31);
  const unsigned hit = __ballot_sync(0xffffffffu, local_cnt > 0 && above + incl >= target);
  const unsigned nonempty = __ballot_sync(0xffffffffu, local_cnt > 0);
  const int chosen_lane = hit ? __ffs(hit) - 1 : (nonempty ? 31 - __clz(nonempty) : 31);
  if (lane == chosen_lane) {
    float acc = above + (incl - local);
    int chosen = -1, last = hi - 7;
    float chosen_above = acc, last_above = acc;
    for (int j = 0; j < 8; ++j) {
      const int b = hi - j;
      if (sh.bin_cnt[b] == 0) continue;
      if (acc + sh.bin_mass[b] >= target) {
        chosen = b;
        chosen_above = acc;
        break;
      }
      last = b;
      last_above = acc;
      acc += sh.bin_mass[b];
    }
    if (chosen < 0) {
      chosen = last;
      chosen_above = last_above;
    }
    sh.sel_bin = chosen;
    sh.sel_above = chosen_above;
    sh.sel_target = target;
  }
}

struct Allowed {
  const int32_t* stop;
  int n_stop;
  __device__ __forceinline__ bool operator()(int64_t i) const {
    for (int j = 0; j < n_stop; ++j)
      if (stop[j] == i) return false;
    return true;
  }
};

template <class T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Digit 0 (sign and top exponent bits) of real logits falls into a handful of bins, which
// would make the shared-memory atomics of the histogram collide on every lane. When the
// row's finite allowed logits span at most kWindow digit-0 bins, each thread counts into
// registers instead and each warp stores its sums once.
constexpr int kWindow = 8;

// The first digit-0 bin of the register window, or -1 when the row spans too many bins.
__device__ __forceinline__ int digit0_window(float lo, float hi) {
  const int b_lo = static_cast<int>(s1k::float_key(lo) >> 24), b_hi = static_cast<int>(s1k::float_key(hi) >> 24);
  return (lo <= hi && b_hi - b_lo < kWindow) ? b_lo : -1;
}

// Fills the per-warp histograms with digit `shift` of the keys of the selected elements
// that match `prefix` under `mask`; selected(i, x, w) also sets the element's mass w.
template <int DT, bool kMass, class Select>
__device__ void radix_histogram(Shared& sh, const void* row, int64_t n, uint32_t prefix, uint32_t mask, int shift,
                                int window, Select&& selected) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  clear_hist(sh, kMass);
  __syncthreads();
  if (window >= 0) {  // digit 0 only (mask == 0)
    int c[kWindow];
    float m[kWindow];
#pragma unroll
    for (int j = 0; j < kWindow; ++j) {
      c[j] = 0;
      m[j] = 0.f;
    }
    int c_neg_inf = 0;  // -inf has key 0x007FFFFF: digit-0 bin 0, mass 0
    for_each_logit<DT>(row, n, [&](int64_t i, float x) {
      float w = 0.f;
      if (!selected(i, x, w)) return;
      if (x == -INFINITY) {
        ++c_neg_inf;
        return;
      }
      const int rel = static_cast<int>(s1k::float_key(x) >> 24) - window;
#pragma unroll
      for (int j = 0; j < kWindow; ++j) {
        if (rel == j) {
          c[j] += 1;
          if (kMass) m[j] += w;
        }
      }
    });
#pragma unroll
    for (int j = 0; j < kWindow; ++j) {
      c[j] = warp_sum(c[j]);
      if (kMass) m[j] = warp_sum(m[j]);
    }
    c_neg_inf = warp_sum(c_neg_inf);
    if (lane == 0) {
#pragma unroll
      for (int j = 0; j < kWindow; ++j) {
        if (window + j < kBins) {
          sh.hist_cnt[warp][window + j] += c[j];
          if (kMass) sh.hist_mass[warp][window + j] += m[j];
        }
      }
      sh.hist_cnt[warp][0] += c_neg_inf;
    }
  } else {
    for_each_logit<DT>(row, n, [&](int64_t i, float x) {
      const uint32_t key = s1k::float_key(x);
      if ((key & mask) != prefix) return;
      float w = 0.f;
      if (!selected(i, x, w)) return;
      const uint32_t b = (key >> shift) & 0xFFu;
      atomicAdd(&sh.hist_cnt[warp][b], 1);
      if (kMass) atomicAdd(&sh.hist_mass[warp][b], w);
    });
  }
  __syncthreads();
}

// The k-th largest allowed logit (ties counted), 1 <= k < allowed ids.
template <int DT>
__device__ float topk_threshold(Shared& sh, const void* row, int64_t n, const Allowed& allowed, int k, int window) {
  const int warp = threadIdx.x >> 5;
  uint32_t prefix = 0, mask = 0;
  int remaining = k;
  for (int d = 0; d < s1k::radix_digits(DT); ++d) {
    const int shift = 24 - 8 * d;
    radix_histogram<DT, false>(sh, row, n, prefix, mask, shift, d == 0 ? window : -1,
                               [&](int64_t i, float, float&) { return allowed(i); });
    sum_hist(sh, false);
    __syncthreads();
    if (warp == 0) select_count_bin(sh, remaining);
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
__device__ float topp_threshold(Shared& sh, const void* row, int64_t n, const Allowed& allowed, float t_k, float m,
                                float inv_t, float top_p, int window) {
  const int warp = threadIdx.x >> 5;
  uint32_t prefix = 0, mask = 0;
  float above = 0.f, target = 0.f;
  for (int d = 0; d < s1k::radix_digits(DT); ++d) {
    const int shift = 24 - 8 * d;
    radix_histogram<DT, true>(sh, row, n, prefix, mask, shift, d == 0 ? window : -1,
                              [&](int64_t i, float x, float& w) {
                                if (!(x >= t_k) || !allowed(i)) return false;
                                w = __expf((x - m) * inv_t);
                                return true;
                              });
    sum_hist(sh, true);
    __syncthreads();
    if (warp == 0) select_mass_bin(sh, above, target, d == 0, top_p);
    __syncthreads();
    prefix |= static_cast<uint32_t>(sh.sel_bin) << shift;
    mask |= 0xFFu << shift;
    above = sh.sel_above;
    target = sh.sel_target;
    __syncthreads();
  }
  return s1k::key_to_float(s1k::complete_key(prefix, mask));
}

// ------------------------------------------------------------------ the kernel

template <int DT>
__global__ void __launch_bounds__(kThreads, 2) decode_step_kernel(DecodeArgs a) {
  __shared__ Shared sh;
  const int64_t r = blockIdx.x;
  const int64_t n = a.vocab_size;
  const s1k::ForcingTable f = s1k::forcing_table(a, a.table);
  s1k::RowState s{};
  s1k::RowBudget b{};
  s1k::StepPlan plan{};
  if (threadIdx.x == 0) {
    s = s1k::load_row_state(a, r);
    b = s1k::load_row_budget(a, r);
    plan = s1k::plan_step(s, b, f);
    sh.sample = plan.sample;
    sh.suppress = plan.suppress;
    sh.n_stop = plan.suppress ? f.n_end + f.n_eos : 0;
    for (int j = 0; j < f.n_end; ++j) sh.stop_ids[j] = f.ids[f.off_end() + j];
    for (int j = 0; j < f.n_eos; ++j) sh.stop_ids[f.n_end + j] = f.ids[f.off_eos() + j];
    sh.temperature = a.temperature[r];
    sh.top_k = a.top_k[r];
    sh.top_p = a.top_p[r];
    sh.min_p = a.min_p[r];
    sh.seed = static_cast<uint64_t>(a.seed[r]);
    sh.step = static_cast<uint64_t>(a.step[r]);
    if (!plan.sample) {
      a.tokens[r] = plan.token;
      a.logprobs[r] = 0.f;
      s1k::store_row_state(a, r, s);
    }
  }
  __syncthreads();
  if (!sh.sample) return;  // uniform across the block

  const void* row = static_cast<const char*>(a.logits) + r * a.row_stride * Logits<DT>::kBytes;
  const Allowed allowed{sh.stop_ids, sh.n_stop};
  RowStats* red = reinterpret_cast<RowStats*>(sh.red);

  // pass A
  RowStats st{-INFINITY, 0.f, -INFINITY, INFINITY, 0x7fffffff, 0, 0};
  for_each_logit<DT>(row, n, [&](int64_t i, float x) {
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
    if (allowed(i)) {
      st.n_allowed += 1;
      if (x > st.m) {
        st.m = x;
        st.argmax = static_cast<int32_t>(i);
      }
      if (x != -INFINITY) st.lo = fminf(st.lo, x);
    }
  });
  const RowStats id{-INFINITY, 0.f, -INFINITY, INFINITY, 0x7fffffff, 0, 0};
  st = block_reduce(st, [](const RowStats& x, const RowStats& y) { return merge_stats(x, y); }, id, red);

  int32_t error = 0;
  if (st.bad) error = s1k::kErrorNonFinite;
  else if (st.m == -INFINITY) error = s1k::kErrorNoToken;
  int64_t token = st.argmax;

  const float temperature = sh.temperature;
  if (error == 0 && temperature > 0.f) {
    const float inv_t = 1.f / temperature;
    const int window = digit0_window(st.lo, st.m);
    float thr = -INFINITY;
    if (sh.top_k > 0 && sh.top_k < st.n_allowed) thr = topk_threshold<DT>(sh, row, n, allowed, sh.top_k, window);
    if (sh.top_p < 1.f) thr = topp_threshold<DT>(sh, row, n, allowed, thr, st.m, inv_t, sh.top_p, window);
    const float min_p = sh.min_p;
    const float log_min_p = min_p > 0.f ? logf(min_p) : -INFINITY;
    const uint64_t seed = sh.seed, step = sh.step;
    // Every thread starts from the score of the row's maximum (always kept, z = 0): an id
    // whose z trails the best score by more than the largest Gumbel noise cannot win, so its
    // random numbers are never computed. On peaked rows that skips nearly the whole vocabulary.
    const s1k::Philox4 top_words = s1k::decode_philox_group(seed, step, static_cast<uint32_t>(st.argmax >> 2));
    Best best{s1k::gumbel_from_word<float>(s1k::philox_word(top_words, st.argmax & 3)), st.argmax};
    s1k::Philox4 words{};
    int64_t group = -1;
    const float m = st.m;
    for_each_logit<DT>(row, n, [&](int64_t i, float x) {
      if (!(x >= thr)) return;
      const float z = (x - m) * inv_t;
      if (z < best.score - kGumbelMax || !(z >= log_min_p) || !allowed(i)) return;
      if ((i >> 2) != group) {
        group = i >> 2;
        words = s1k::decode_philox_group(seed, step, static_cast<uint32_t>(group));
      }
      const float score = z + s1k::gumbel_from_word<float>(s1k::philox_word(words, static_cast<int>(i & 3)));
      if (score > best.score || (score == best.score && i < best.index)) best = Best{score, static_cast<int32_t>(i)};
    });
    const Best none{-INFINITY, 0x7fffffff};
    best = block_reduce(best, [](const Best& x, const Best& y) { return merge_best(x, y); }, none,
                        reinterpret_cast<Best*>(sh.red));
    if (best.index != 0x7fffffff) token = best.index;
  }

  if (threadIdx.x == 0) {
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

}  // namespace

extern "C" int s1k_decode_step_cuda(const DecodeArgs* args, void* stream) {
  if (args == nullptr) return s1k::kInvalidArgument;
  const DecodeArgs& a = *args;
  if (int code = s1k::validate_decode_args(a)) return code;
  if (a.batch > 0x7fffffff) return s1k::kInvalidArgument;
  const dim3 grid(static_cast<unsigned>(a.batch));
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  switch (a.dtype) {
    case s1k::kFloat32:
      decode_step_kernel<s1k::kFloat32><<<grid, kThreads, 0, st>>>(a);
      break;
    case s1k::kFloat16:
      decode_step_kernel<s1k::kFloat16><<<grid, kThreads, 0, st>>>(a);
      break;
    default:
      decode_step_kernel<s1k::kBFloat16><<<grid, kThreads, 0, st>>>(a);
      break;
  }
  return cudaPeekAtLastError() == cudaSuccess ? s1k::kOk : s1k::kCudaError;
}
