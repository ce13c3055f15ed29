// ROAR sampling maths shared by the CPU kernel (roar_cpu.cpp) and the CUDA kernel (roar.cu), so that both compute
// the same numbers in the same order. Everything here has internal linkage (anonymous namespace): the CPU kernels
// are compiled with the AION_FAST_ARCH flags and must define no COMDAT symbol a baseline object could share (see
// cpu_kernels.h). Only included by those two files.
//
// Random numbers: Philox4x32-10 (Salmon et al. 2011, "Parallel random numbers: as easy as 1, 2, 3", SC'11), a
// counter-based generator: block = Philox(key, counter), no state. Here
//   key     = (seed mod 2^32, seed div 2^32)
//   counter = (position | step << 16, object mod 2^32, object div 2^32, sample)
// so every (seed, step, chain = (object, sample), position) owns one 128-bit block, whatever the batch layout.
// Words 0-1 give the position's 63-bit ordering key for the reveal permutation of that step, words 2-3 the 53-bit
// uniform u in [0, 1) that samples its token. aion_fast/ops/roar.py (torch_roar_*) replays all of it in PyTorch.
//
// Sampling one token from logits x (V,) at temperature T > 0, top-k k, top-p p (all float64 after the cast):
//   z_i = x_i / T;  m = max_i z_i;  w_i = exp(z_i - m)
//   top-k (0 < k < V):  w_i = 0 where z_i < (k-th largest z)          (ties with the k-th value are kept)
//   top-p (0 < p < 1):  in the order (z desc, index asc), w_j = 0 once the mass before j exceeds p * sum(w)
//   token = first i with cumsum(w)_i > u * sum(w)  (sums left to right; the last nonzero w if none)
// T = 0 is greedy: the first index of max x (filters cannot remove the argmax, so they are skipped).
#pragma once

#include <cmath>
#include <cstdint>

#ifdef __CUDACC__
#define AION_HD __host__ __device__ __forceinline__
#else
#define AION_HD inline
#endif

namespace aion_fast {
namespace roar {
namespace {

constexpr std::uint32_t kPhiloxM0 = 0xD2511F53u;
constexpr std::uint32_t kPhiloxM1 = 0xCD9E8D57u;
constexpr std::uint32_t kPhiloxW0 = 0x9E3779B9u;
constexpr std::uint32_t kPhiloxW1 = 0xBB67AE85u;
// Positions and steps share counter word 0 (16 bits each).
constexpr std::int64_t kMaxPositions = 1 << 16;
constexpr std::int64_t kMaxSteps = 1 << 16;

struct Block {
  std::uint32_t w[4];
};

AION_HD void mulhilo(std::uint32_t a, std::uint32_t b, std::uint32_t* hi, std::uint32_t* lo) {
  const std::uint64_t p = static_cast<std::uint64_t>(a) * static_cast<std::uint64_t>(b);
  *hi = static_cast<std::uint32_t>(p >> 32);
  *lo = static_cast<std::uint32_t>(p);
}

// Philox4x32 with 10 rounds.
AION_HD Block philox4x32_10(std::uint32_t c0, std::uint32_t c1, std::uint32_t c2, std::uint32_t c3, std::uint32_t k0,
                            std::uint32_t k1) {
  for (int round = 0; round < 10; ++round) {
    if (round > 0) {
      k0 += kPhiloxW0;
      k1 += kPhiloxW1;
    }
    std::uint32_t hi0, lo0, hi1, lo1;
    mulhilo(kPhiloxM0, c0, &hi0, &lo0);
    mulhilo(kPhiloxM1, c2, &hi1, &lo1);
    const std::uint32_t n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
    c0 = n0;
    c1 = lo1;
    c2 = n2;
    c3 = lo0;
  }
  Block b;
  b.w[0] = c0;
  b.w[1] = c1;
  b.w[2] = c2;
  b.w[3] = c3;
  return b;
}

// The block of (seed, step, object, sample, position).
AION_HD Block chain_block(std::uint64_t seed, std::int64_t step, std::int64_t object, std::int64_t sample,
                          std::int64_t position) {
  const std::uint64_t obj = static_cast<std::uint64_t>(object);
  return philox4x32_10(static_cast<std::uint32_t>(position) | (static_cast<std::uint32_t>(step) << 16),
                       static_cast<std::uint32_t>(obj), static_cast<std::uint32_t>(obj >> 32),
                       static_cast<std::uint32_t>(sample), static_cast<std::uint32_t>(seed),
                       static_cast<std::uint32_t>(seed >> 32));
}

// 63-bit ordering key of a position for the reveal permutation (smaller = revealed earlier; ties by position).
AION_HD std::int64_t order_key(const Block& b) {
  return static_cast<std::int64_t>((static_cast<std::uint64_t>(b.w[0] >> 1) << 32) | b.w[1]);
}

// Uniform double in [0, 1) with 53 random bits.
AION_HD double uniform53(const Block& b) {
  return (static_cast<double>(b.w[2] >> 5) * 67108864.0 + static_cast<double>(b.w[3] >> 6)) *
         (1.0 / 9007199254740992.0);
}

// Strict order (z desc, index asc) of vocabulary entries, used by top-k / top-p.
struct ByLogitDesc {
  const double* z;
  AION_HD bool operator()(std::int32_t a, std::int32_t b) const { return z[a] > z[b] || (z[a] == z[b] && a < b); }
};

// Strict order (key asc, position asc) of positions, used by the reveal permutation.
struct ByKeyAsc {
  const std::int64_t* key;
  AION_HD bool operator()(std::int32_t a, std::int32_t b) const {
    return key[a] < key[b] || (key[a] == key[b] && a < b);
  }
};

// Heap sort of idx[0, n) by the strict total order `first` (in place, no allocation, deterministic).
template <typename Order>
AION_HD void sift_down(Order first, std::int32_t* idx, std::int64_t root, std::int64_t n) {
  while (2 * root + 1 < n) {
    std::int64_t child = 2 * root + 1;
    if (child + 1 < n && first(idx[child], idx[child + 1])) ++child;  // the heap top comes last in the order
    if (!first(idx[root], idx[child])) return;
    const std::int32_t t = idx[root];
    idx[root] = idx[child];
    idx[child] = t;
    root = child;
  }
}

template <typename Order>
AION_HD void heap_sort(Order first, std::int32_t* idx, std::int64_t n) {
  for (std::int64_t start = n / 2 - 1; start >= 0; --start) sift_down(first, idx, start, n);
  for (std::int64_t end = n - 1; end > 0; --end) {
    const std::int32_t t = idx[0];
    idx[0] = idx[end];
    idx[end] = t;
    sift_down(first, idx, 0, end);
  }
}

// One token from logits (V,), see the file comment. z, w: (V,) float64 scratch, idx: (V,) int32 scratch.
// Returns -1 when the logits hold a NaN or +inf, or are all -inf.
AION_HD std::int64_t sample_token(const float* logits, std::int64_t V, double temperature, std::int64_t top_k,
                                  double top_p, double u, double* z, double* w, std::int32_t* idx) {
  std::int64_t best = -1;
  double m = -INFINITY;
  for (std::int64_t i = 0; i < V; ++i) {
    const double x = static_cast<double>(logits[i]);
    if (x != x || x == INFINITY) return -1;
    if (best < 0 || x > m) {
      if (x > -INFINITY) best = i;
      if (x > m) m = x;
    }
  }
  if (best < 0) return -1;
  if (temperature == 0.0) return best;

  m = -INFINITY;
  for (std::int64_t i = 0; i < V; ++i) {
    z[i] = static_cast<double>(logits[i]) / temperature;
    if (z[i] > m) m = z[i];
  }
  for (std::int64_t i = 0; i < V; ++i) w[i] = exp(z[i] - m);

  const bool use_k = top_k > 0 && top_k < V;
  const bool use_p = top_p > 0.0 && top_p < 1.0;
  if (use_k || use_p) {
    for (std::int64_t i = 0; i < V; ++i) idx[i] = static_cast<std::int32_t>(i);
    heap_sort(ByLogitDesc{z}, idx, V);
    if (use_k) {
      const double threshold = z[idx[top_k - 1]];
      for (std::int64_t i = 0; i < V; ++i)
        if (z[i] < threshold) w[i] = 0.0;
    }
    if (use_p) {
      double total = 0.0;
      for (std::int64_t j = 0; j < V; ++j) total += w[idx[j]];
      const double limit = top_p * total;
      double before_mass = 0.0;
      for (std::int64_t j = 0; j < V; ++j) {
        const double wj = w[idx[j]];
        if (before_mass > limit) w[idx[j]] = 0.0;
        before_mass += wj;
      }
    }
  }

  double total = 0.0;
  for (std::int64_t i = 0; i < V; ++i) total += w[i];
  const double target = u * total;
  double cum = 0.0;
  std::int64_t last = -1;
  for (std::int64_t i = 0; i < V; ++i) {
    if (w[i] > 0.0) {
      cum += w[i];
      last = i;
      if (cum > target) return i;
    }
  }
  return last;
}

// The `count` still-unknown positions (target_mask == 0) of one row with the smallest (order key, position), in
// that order, written to out. keys: (L,) int64 scratch, idx: (L,) int32 scratch. Returns the number of unknown
// positions (nothing is written when it is below count).
AION_HD std::int64_t select_positions(const std::uint8_t* target_mask, std::int64_t L, std::uint64_t seed,
                                      std::int64_t step, std::int64_t object, std::int64_t sample, std::int64_t count,
                                      std::int64_t* out, std::int64_t* keys, std::int32_t* idx) {
  std::int64_t n = 0;
  for (std::int64_t p = 0; p < L; ++p) {
    if (target_mask[p]) continue;
    keys[p] = order_key(chain_block(seed, step, object, sample, p));
    idx[n++] = static_cast<std::int32_t>(p);
  }
  if (count > n) return n;
  heap_sort(ByKeyAsc{keys}, idx, n);
  for (std::int64_t j = 0; j < count; ++j) out[j] = idx[j];
  return n;
}

}  // namespace
}  // namespace roar
}  // namespace aion_fast
