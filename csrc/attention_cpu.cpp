// One decode step's attention on the CPU, fused with what surrounds it: RoPE on this token's
// q and k, the k/v writes into the static cache, and attention of each query head over its
// row's filled cache prefix (positions 0..pos[b]).
//
// Why: with one query per row the attention itself is a few MFLOP, but torch spends it in a
// dozen calls per layer (split, two RoPEs of five ops each, two scatters, a mask, SDPA whose
// CPU kernel tiles for long queries). Here it is one call per layer, no allocation per head
// beyond a scores row, and rows x kv-heads spread over threads.
//
// RoPE is the model's rotate-half form computed as torch computes it (x * cos, then plus
// rotated * sin, each rounded to fp32: this file is built with -ffp-contract=off), so the
// cached keys are the same bits the torch path writes. The attention sums in another order
// than torch's SDPA (as any other attention kernel would): fp32 differences in the last bits.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <thread>
#include <vector>

#include "s1k/common.h"

namespace {

struct DecodeAttention {
  const float* qkv;  // [B, (H + 2 Hkv) D]: q heads, then k heads, then v heads
  int64_t qkv_stride;
  const float* cos;  // [B, D] at each row's position
  const float* sin;
  const int64_t* pos;  // [B] this token's position
  float* k_cache;      // [B, Hkv, S, D], row stride cache_stride, head stride S * D
  float* v_cache;
  int64_t cache_stride, S;
  int64_t B, H, Hkv, D;
  float scale;
  float* out;  // [B, H D]
  int64_t out_stride;
};

void rope(const float* x, const float* c, const float* s, int64_t D, float* y) {
  const int64_t half = D / 2;
  for (int64_t d = 0; d < half; ++d) {
    const float a = x[d] * c[d];
    const float b = -x[d + half] * s[d];
    y[d] = a + b;
  }
  for (int64_t d = half; d < D; ++d) {
    const float a = x[d] * c[d];
    const float b = x[d - half] * s[d];
    y[d] = a + b;
  }
}

// Rows x kv-heads items [begin, end): item i is row i / Hkv, kv head i % Hkv.
void run_items(const DecodeAttention& a, int64_t begin, int64_t end) {
  const int64_t D = a.D, rep = a.H / a.Hkv;
  std::vector<float> q(D), acc(D), scores;
  for (int64_t item = begin; item < end; ++item) {
    const int64_t b = item / a.Hkv, g = item % a.Hkv, p = a.pos[b];
    const float* row = a.qkv + b * a.qkv_stride;
    const float* c = a.cos + b * D;
    const float* s = a.sin + b * D;
    float* kc = a.k_cache + b * a.cache_stride + g * a.S * D;
    float* vc = a.v_cache + b * a.cache_stride + g * a.S * D;
    rope(row + (a.H + g) * D, c, s, D, kc + p * D);
    std::copy(row + (a.H + a.Hkv + g) * D, row + (a.H + a.Hkv + g + 1) * D, vc + p * D);
    scores.resize(p + 1);
    for (int64_t h = g * rep; h < (g + 1) * rep; ++h) {
      rope(row + h * D, c, s, D, q.data());
      float m = -INFINITY;
      for (int64_t t = 0; t <= p; ++t) {
        const float* k = kc + t * D;
        // eight partial sums: the compiler vectorises this without reassociating anything
        float part[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        int64_t d = 0;
        for (; d + 8 <= D; d += 8)
          for (int j = 0; j < 8; ++j) part[j] += q[d + j] * k[d + j];
        float dot = ((part[0] + part[4]) + (part[1] + part[5])) + ((part[2] + part[6]) + (part[3] + part[7]));
        for (; d < D; ++d) dot += q[d] * k[d];
        scores[t] = dot * a.scale;
        m = std::max(m, scores[t]);
      }
      float sum = 0.f;
      std::fill(acc.begin(), acc.end(), 0.f);
      for (int64_t t = 0; t <= p; ++t) {
        const float w = std::exp(scores[t] - m);
        sum += w;
        const float* v = vc + t * D;
        for (int64_t d = 0; d < D; ++d) acc[d] += w * v[d];
      }
      float* o = a.out + b * a.out_stride + h * D;
      const float inv = 1.f / sum;
      for (int64_t d = 0; d < D; ++d) o[d] = acc[d] * inv;
    }
  }
}

}  // namespace

extern "C" int s1k_decode_attention_cpu(const float* qkv, int64_t qkv_stride, const float* cos, const float* sin,
                                        const int64_t* pos, float* k_cache, float* v_cache, int64_t cache_stride,
                                        int64_t S, int64_t B, int64_t H, int64_t Hkv, int64_t D, float scale,
                                        float* out, int64_t out_stride, int threads) {
  if (B < 0 || H < 1 || Hkv < 1 || H % Hkv != 0 || D < 2 || D % 2 != 0 || S < 1 || threads < 1 ||
      qkv_stride < (H + 2 * Hkv) * D || out_stride < H * D || cache_stride < Hkv * S * D)
    return s1k::kInvalidArgument;
  int64_t work = 0;
  for (int64_t b = 0; b < B; ++b) {
    if (pos[b] < 0 || pos[b] >= S) return s1k::kInvalidArgument;  // outside the cache
    work += (pos[b] + 1) * H * D;
  }
  const DecodeAttention a{qkv, qkv_stride, cos, sin, pos, k_cache, v_cache, cache_stride, S, B, H, Hkv, D, scale,
                          out, out_stride};
  const int64_t items = B * Hkv;
  // A thread costs tens of microseconds to start: only worth it past ~1M multiply-adds.
  const int64_t n_threads = std::max<int64_t>(1, std::min<int64_t>({threads, items, work / (1 << 19)}));
  const int64_t per = (items + n_threads - 1) / n_threads;
  std::vector<std::thread> pool;
  for (int64_t t = 1; t < n_threads; ++t)
    pool.emplace_back(run_items, std::cref(a), std::min(items, t * per), std::min(items, (t + 1) * per));
  run_items(a, 0, std::min(items, per));
  for (auto& th : pool) th.join();
  return s1k::kOk;
}
