// CPU twin of the similarity top-k's selection: folds one chunk of scores (the output of a
// blocked matrix product) into each row's running top-k list.
//
// Why: after the matrix product, ranking every score of a chunk (torch.topk) costs about
// as much as the product itself. Here each row keeps its k best (score, index) pairs sorted
// and a score is first compared with the row's k-th best; after the first chunk almost every
// score fails that test, so the pass is one streaming comparison per score, done 16 scores
// at a time without a branch. Only a block holding a candidate is walked one by one.
//
// Self-kNN reads each product twice: the score of rows i < j is the same dot product x_i . x_j,
// so the caller computes only the blocks on and above the diagonal and folds each one a
// second time transposed (s1k_topk_fold_cpu with transpose = 1): column c's list takes row r
// of the chunk as a candidate. The scaling is then (dot * ry[c]) * rx[r], the order in which
// the list's own row would scale it, so both folds see the same fp32 score.
//
// Order: higher score first, then lower index (the family's key order). Chunks arrive in
// increasing column order and columns inside a chunk are walked in increasing order, so a
// new score equal to a kept one always has the higher index: it is kept only when strictly
// above the k-th best, and inserted after every kept entry with a score >= its own. That is
// exactly the order the (score, index) keys give; -0.0 and +0.0 compare equal here as they
// do in the keys.
#include <algorithm>
#include <cstdint>
#include <thread>
#include <vector>

#include "s1k/common.h"

namespace {

constexpr int64_t kBlock = 16;  // scores tested per branch-free step

struct Chunk {
  const float* scores;  // [rows, cols], row stride ld
  int64_t rows, cols, ld;
  const float* rx;      // [rows] inverse norms of the chunk's rows, or null (raw inner products)
  const float* ry;      // [cols] inverse norms of the chunk's columns, or null
  int64_t row0, col0;   // global index of the chunk's first row / column
  int exclude_self;     // skip column row0 + r in row r
  int64_t k;
  float* best_s;        // [rows, k] running scores, descending (-inf where not filled yet)
  int64_t* best_i;      // [rows, k] running indices
};

// Inserts (s, col) into a row's sorted list, which holds a k-th entry below s.
inline void insert(float* bs, int64_t* bi, int64_t k, float s, int64_t col) {
  int64_t p = k - 1;
  while (p > 0 && bs[p - 1] < s) {  // entries with a score >= s stay ahead (lower index)
    bs[p] = bs[p - 1];
    bi[p] = bi[p - 1];
    --p;
  }
  bs[p] = s;
  bi[p] = col;
}

void fold_rows(const Chunk& c, int64_t r_begin, int64_t r_end) {
  std::vector<float> scaled(c.rx != nullptr ? c.cols : 0);
  for (int64_t r = r_begin; r < r_end; ++r) {
    const float* s = c.scores + r * c.ld;
    if (c.rx != nullptr) {
      // the torch path's arithmetic: (dot * rx[i]) * ry[j] in fp32
      const float a = c.rx[r];
      for (int64_t j = 0; j < c.cols; ++j) scaled[j] = s[j] * a * c.ry[j];
      s = scaled.data();
    }
    float* bs = c.best_s + r * c.k;
    int64_t* bi = c.best_i + r * c.k;
    const int64_t self = c.exclude_self ? c.row0 + r - c.col0 : -1;  // the row's own column here
    float thr = bs[c.k - 1];
    int64_t j = 0;
    for (; j + kBlock <= c.cols; j += kBlock) {
      int any = 0;
      for (int64_t t = 0; t < kBlock; ++t) any |= s[j + t] > thr;  // vectorised: no branch inside
      if (!any) continue;
      for (int64_t t = j; t < j + kBlock; ++t) {
        if (s[t] > thr && t != self) {
          insert(bs, bi, c.k, s[t], c.col0 + t);
          thr = bs[c.k - 1];
        }
      }
    }
    for (; j < c.cols; ++j) {
      if (s[j] > thr && j != self) {
        insert(bs, bi, c.k, s[j], c.col0 + j);
        thr = bs[c.k - 1];
      }
    }
  }
}

// The transposed fold over columns [c_begin, c_end): row r of the chunk is a candidate for the
// list of column c. Rows arrive in increasing index order, so the tie rule above still holds.
void fold_cols(const Chunk& c, int64_t c_begin, int64_t c_end) {
  const int64_t w = c_end - c_begin;
  std::vector<float> thr(w), scaled(w);
  for (int64_t t = 0; t < w; ++t) thr[t] = c.best_s[(c.col0 + c_begin + t) * c.k + c.k - 1];
  for (int64_t r = 0; r < c.rows; ++r) {
    const float* s = c.scores + r * c.ld + c_begin;
    if (c.rx != nullptr) {
      const float a = c.rx[r];
      for (int64_t t = 0; t < w; ++t) scaled[t] = s[t] * c.ry[c_begin + t] * a;
      s = scaled.data();
    }
    const int64_t cand = c.row0 + r;
    for (int64_t j = 0; j < w; j += kBlock) {
      const int64_t e = std::min(w, j + kBlock);
      int any = 0;
      for (int64_t t = j; t < e; ++t) any |= s[t] > thr[t];
      if (!any) continue;
      for (int64_t t = j; t < e; ++t) {
        const int64_t row = c.col0 + c_begin + t;
        if (s[t] > thr[t] && row != cand) {
          float* bs = c.best_s + row * c.k;
          insert(bs, c.best_i + row * c.k, c.k, s[t], cand);
          thr[t] = bs[c.k - 1];
        }
      }
    }
  }
}

}  // namespace

extern "C" int s1k_topk_fold_cpu(const float* scores, int64_t rows, int64_t cols, int64_t ld, const float* rx,
                                 const float* ry, int64_t row0, int64_t col0, int exclude_self, int64_t k,
                                 float* best_s, int64_t* best_i, int transpose, int threads) {
  // best_s/best_i: the lists of the chunk's rows (transpose = 0, first row row0) or of every
  // row of the pool (transpose = 1, indexed by col0 + c)
  if (rows < 0 || cols < 0 || ld < cols || k < 1 || threads < 1 || (rx == nullptr) != (ry == nullptr))
    return s1k::kInvalidArgument;
  const Chunk c{scores, rows, cols, ld, rx, ry, row0, col0, exclude_self, k, best_s, best_i};
  // Lists are independent: split them evenly (rows, or columns when transposed) over threads.
  const int64_t lists = transpose ? cols : rows;
  const auto run = [&c, transpose](int64_t a, int64_t b) { transpose ? fold_cols(c, a, b) : fold_rows(c, a, b); };
  const int64_t n_threads = std::min<int64_t>(threads, std::max<int64_t>(1, lists / 64));
  const int64_t per = (lists + n_threads - 1) / n_threads;
  std::vector<std::thread> pool;
  for (int64_t t = 1; t < n_threads; ++t) pool.emplace_back(run, std::min(lists, t * per), std::min(lists, (t + 1) * per));
  run(0, std::min(lists, per));
  for (auto& th : pool) th.join();
  return s1k::kOk;
}
