// Finite scalar quantisation (FSQ, Mentzer et al. 2023, https://arxiv.org/abs/2309.15505): CPU kernels.
//
// Encode maths, per channel d with L = levels[d], h = L // 2 (all float32, one rounding per operation, in this
// order, exactly as the PyTorch reference aion_fast.ops.fsq.torch_fsq_encode evaluates it):
//
//   half_l = (L - 1) (1 + eps) / 2,  offset = 0.5 if L even else 0,  shift = atanh(offset / half_l)
//   t      = tanh(z + shift)                       <- computed by PyTorch and passed in as `tanh_z`
//   b      = t * half_l - offset                   (two roundings: no FMA, see -ffp-contract=off in CMakeLists)
//   q      = round_half_to_even(b)
//   digit  = (q / h) * h + h                       (three roundings)
//   index  = (int32) sum_d digit_d * basis_d,      basis = cumprod([1, L_0, ..., L_{D-2}])
//
// Three encode kernels, in the order the dispatcher (aion_fast/ops/fsq.py) prefers them:
//  * fsq_encode_thresholds: no tanh at all. The reference's level is a non-decreasing step function of the float32
//    x = z + shift, so Python derives, once per levels list, the exact float32 x where each step happens (evaluating
//    the reference's own ops, checked on 8192 values around every step); the kernel counts thresholds <= x.
//  * fsq_encode_strided: tanh through torch's own CPU tanh (MKL VML vsTanh, bound from libtorch_cpu: all 2^32
//    float32 inputs give torch.tanh's bits), then the steps below.
//  * fsq_encode_from_tanh: t computed by PyTorch and passed in (any torch build).
// Other tanh implementations (libm, SLEEF, numpy) differ from torch's in the last bit on many inputs; when b then
// lies within an ulp of a half-integer the rounding flips, so none of them is used.
// The per-row sum is exact in any order when every digit is an exact integer and every partial sum is below
// 2^24; the Python dispatcher only routes here when both hold (levels 2..21; see aion_fast/ops/fsq.py).
//
// Decode: digit_d = floor(index / basis_d) mod L_d, code_d = (digit_d - h_d) / h_d.
//
// fsq_encode_thresholds with unit-stride positions (the codecs' channel-first (B, D, T) latents) and AVX2: 16
// positions in two registers at a time, all D channels: x = z + shift, count -= (x >= t) per threshold (the common
// counts unrolled), index += count * basis; NaN lanes (unordered compares, two channels per compare) become -1.
// Compute-bound (~27 vector ops per channel and 8 positions for L = 5), so large inputs use both cores.
//
// Vectorisation: a chunk of rows is processed as one flat run of rows*D elements against per-channel constants
// tiled to the same length, so the element loop has no modulo and gcc vectorises it; the per-row sums follow.
// Constraints of this file: see cpu_kernels.h (no pybind11, no std templates, no heap, no exceptions).
#include <cstdint>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include "aion_fast/cpu_kernels.h"

namespace aion_fast {
namespace cpu {
namespace {

// Below this many elements a parallel region costs more than it saves.
constexpr std::int64_t kParallelMinElements = 1 << 16;

// Round half to even for |x| < 2^22 in the default rounding mode (torch.round semantics); NaN stays NaN.
// Adding 1.5 * 2^23 pushes the fraction bits out of the mantissa, so the FPU's round-to-nearest-even does it.
inline float round_half_even(float x) {
  constexpr float kMagic = 12582912.0f;  // 1.5 * 2^23
  return (x + kMagic) - kMagic;
}

inline std::int64_t min64(std::int64_t a, std::int64_t b) { return a < b ? a : b; }

// dst[r * D + d] = src[d] for r < rows.
template <typename T>
void tile(T* dst, const T* src, std::int64_t D, std::int64_t rows) {
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t d = 0; d < D; ++d) dst[r * D + d] = src[d];
}

// Positions per parallel work item of the unit-stride threshold encode.
constexpr std::int64_t kThresholdTile = 1024;

#if defined(__AVX2__)
// cnt[v] -= (x[v] >= t) for the K thresholds t = thr[0..K) (K < 0: k of them, a loop).
template <int K>
inline void count_at_least(const __m256* x, __m256i* cnt, const float* thr, std::int32_t k) {
  const std::int32_t n = K >= 0 ? K : k;
  for (std::int32_t t = 0; t < n; ++t) {
    const __m256 th = _mm256_broadcast_ss(thr + t);
    cnt[0] = _mm256_sub_epi32(cnt[0], _mm256_castps_si256(_mm256_cmp_ps(x[0], th, _CMP_GE_OQ)));
    cnt[1] = _mm256_sub_epi32(cnt[1], _mm256_castps_si256(_mm256_cmp_ps(x[1], th, _CMP_GE_OQ)));
  }
}

// 16 positions starting at p (channel d at p + d * s_d): indices into dst, returns how many hold a NaN (index -1).
inline std::int64_t threshold_block16(const float* p, std::int64_t D, std::int64_t s_d, const float* shift,
                                      const float* thresholds, const std::int32_t* first, const std::int32_t* basis,
                                      std::int32_t base, std::int32_t* dst) {
  __m256i acc[2] = {_mm256_set1_epi32(base), _mm256_set1_epi32(base)};
  __m256 nan[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
  __m256 prev[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
  for (std::int64_t d = 0; d < D; ++d, p += s_d) {
    __m256 x[2] = {_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8)};
    if (shift[d] != 0.0f) {  // adding +-0 changes no comparison (-0.0 >= t iff +0.0 >= t), so skip it
      const __m256 sh = _mm256_set1_ps(shift[d]);
      x[0] = _mm256_add_ps(x[0], sh);  // the reference's float32 add
      x[1] = _mm256_add_ps(x[1], sh);
    }
    if (d & 1) {  // one unordered compare flags a NaN in either of two channels
      nan[0] = _mm256_or_ps(nan[0], _mm256_cmp_ps(prev[0], x[0], _CMP_UNORD_Q));
      nan[1] = _mm256_or_ps(nan[1], _mm256_cmp_ps(prev[1], x[1], _CMP_UNORD_Q));
    } else {
      prev[0] = x[0];
      prev[1] = x[1];
    }
    __m256i cnt[2] = {_mm256_setzero_si256(), _mm256_setzero_si256()};
    const float* thr = thresholds + first[d];
    const std::int32_t k = first[d + 1] - first[d];
    switch (k) {  // unrolled for the counts of the codecs' levels (L = 5 and 7, and 8: 4, 6, 7 steps)
      case 4: count_at_least<4>(x, cnt, thr, k); break;
      case 6: count_at_least<6>(x, cnt, thr, k); break;
      case 7: count_at_least<7>(x, cnt, thr, k); break;
      default: count_at_least<-1>(x, cnt, thr, k); break;
    }
    const __m256i b = _mm256_set1_epi32(basis[d]);
    acc[0] = _mm256_add_epi32(acc[0], _mm256_mullo_epi32(cnt[0], b));
    acc[1] = _mm256_add_epi32(acc[1], _mm256_mullo_epi32(cnt[1], b));
  }
  if (D & 1) {
    nan[0] = _mm256_or_ps(nan[0], _mm256_cmp_ps(prev[0], prev[0], _CMP_UNORD_Q));
    nan[1] = _mm256_or_ps(nan[1], _mm256_cmp_ps(prev[1], prev[1], _CMP_UNORD_Q));
  }
  // NaN lanes: all-ones mask OR index = -1
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), _mm256_or_si256(acc[0], _mm256_castps_si256(nan[0])));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + 8), _mm256_or_si256(acc[1], _mm256_castps_si256(nan[1])));
  return __builtin_popcount(static_cast<unsigned>(_mm256_movemask_ps(nan[0]))) +
         __builtin_popcount(static_cast<unsigned>(_mm256_movemask_ps(nan[1])));
}
#endif

// The indices of n unit-stride positions starting at z (channel d at z + d * s_d) into out; returns the NaN count.
std::int64_t threshold_positions(const float* z, std::int64_t D, std::int64_t s_d, std::int64_t n,
                                 const float* shift, const float* thresholds, const std::int32_t* first,
                                 const std::int32_t* basis, std::int32_t base, std::int32_t* __restrict out) {
  std::int64_t n_nan = 0;
  std::int64_t j = 0;
#if defined(__AVX2__)
  for (; j + 16 <= n; j += 16)
    n_nan += threshold_block16(z + j, D, s_d, shift, thresholds, first, basis, base, out + j);
#endif
  for (; j < n; ++j) {  // the tail (everything without AVX2)
    std::int32_t acc = base;
    bool is_nan = false;
    for (std::int64_t d = 0; d < D; ++d) {
      const float x = z[d * s_d + j] + shift[d];
      is_nan |= x != x;
      std::int32_t count = 0;
      for (std::int32_t t = first[d]; t < first[d + 1]; ++t) count += static_cast<std::int32_t>(x >= thresholds[t]);
      acc += count * basis[d];
    }
    n_nan += is_nan;
    out[j] = is_nan ? -1 : acc;
  }
  return n_nan;
}

}  // namespace

std::int64_t fsq_encode_from_tanh(const float* __restrict tanh_z, std::int64_t M, std::int64_t D,
                                  const float* half_l, const float* offset, const float* half_width,
                                  const float* basis, std::int32_t* __restrict out) {
  const std::int64_t chunk = kScratch / D;  // rows per chunk
  alignas(64) float hl[kScratch], off[kScratch], hw[kScratch], bs[kScratch];
  tile(hl, half_l, D, chunk);
  tile(off, offset, D, chunk);
  tile(hw, half_width, D, chunk);
  tile(bs, basis, D, chunk);
  const std::int64_t n_chunks = (M + chunk - 1) / chunk;
  std::int64_t n_nan = 0;

#pragma omp parallel for schedule(static) if (M * D >= kParallelMinElements) reduction(+ : n_nan)
  for (std::int64_t c = 0; c < n_chunks; ++c) {
    alignas(64) float term[kScratch];
    const std::int64_t r0 = c * chunk;
    const std::int64_t rows = min64(chunk, M - r0);
    const std::int64_t n = rows * D;
    const float* __restrict t = tanh_z + r0 * D;
    for (std::int64_t k = 0; k < n; ++k) {  // vectorised: flat, unit stride, no reduction
      float b = t[k] * hl[k];
      b = b - off[k];
      const float q = round_half_even(b);
      float digit = q / hw[k];
      digit = digit * hw[k];
      digit = digit + hw[k];
      term[k] = digit * bs[k];
    }
    for (std::int64_t r = 0; r < rows; ++r) {
      float acc = 0.0f;
      for (std::int64_t d = 0; d < D; ++d) acc += term[r * D + d];
      const bool is_nan = acc != acc;
      n_nan += is_nan;
      out[r0 + r] = is_nan ? -1 : static_cast<std::int32_t>(acc);
    }
  }
  return n_nan;
}

std::int64_t fsq_encode_strided(const float* z, std::int64_t O, std::int64_t D, std::int64_t I, std::int64_t s_o,
                                std::int64_t s_d, std::int64_t s_i, const float* shift, const float* half_l,
                                const float* offset, const float* half_width, const float* basis, VmlTanhFn tanh_fn,
                                std::int64_t tanh_mode, std::int32_t* __restrict out) {
  const std::int64_t tile = kScratch / D;  // positions per tile
  const std::int64_t tiles_per_outer = (I + tile - 1) / tile;
  const std::int64_t n_tiles = O * tiles_per_outer;
  std::int64_t n_nan = 0;

#pragma omp parallel for schedule(static) if (O * I * D >= kParallelMinElements) reduction(+ : n_nan)
  for (std::int64_t k = 0; k < n_tiles; ++k) {
    alignas(64) float x[kScratch];  // (D, n): z + shift, channel-major
    alignas(64) float t[kScratch];  // (D, n): tanh(z + shift)
    alignas(64) float acc[kScratch];
    const std::int64_t o = k / tiles_per_outer;
    const std::int64_t i0 = (k % tiles_per_outer) * tile;
    const std::int64_t n = min64(tile, I - i0);
    // Gather: one contiguous run per channel when the positions are unit-stride (the codecs' channel-first layout).
    for (std::int64_t d = 0; d < D; ++d) {
      const float* __restrict src = z + o * s_o + d * s_d + i0 * s_i;
      float* __restrict dst = x + d * n;
      const float sh = shift[d];
      if (s_i == 1) {
        for (std::int64_t j = 0; j < n; ++j) dst[j] = src[j] + sh;  // vectorised
      } else {
        for (std::int64_t j = 0; j < n; ++j) dst[j] = src[j * s_i] + sh;
      }
    }
    const std::int64_t count = n * D;
    tanh_fn(&count, x, t, &tanh_mode);  // the very function torch.tanh runs on this CPU (see the file comment)
    for (std::int64_t j = 0; j < n; ++j) acc[j] = 0.0f;
    for (std::int64_t d = 0; d < D; ++d) {
      const float hl = half_l[d], off = offset[d], hw = half_width[d], bs = basis[d];
      const float* __restrict td = t + d * n;
      for (std::int64_t j = 0; j < n; ++j) {  // vectorised: unit stride, per-channel constants are scalars
        float b = td[j] * hl;
        b = b - off;
        const float q = round_half_even(b);
        float digit = q / hw;
        digit = digit * hw;
        digit = digit + hw;
        acc[j] += digit * bs;
      }
    }
    std::int32_t* __restrict dst = out + o * I + i0;
    std::int64_t nan_here = 0;
    for (std::int64_t j = 0; j < n; ++j) {  // vectorised (compare, blend, convert)
      const bool is_nan = acc[j] != acc[j];
      nan_here += is_nan;
      dst[j] = is_nan ? -1 : static_cast<std::int32_t>(acc[j]);
    }
    n_nan += nan_here;
  }
  return n_nan;
}

std::int64_t fsq_encode_thresholds(const float* z, std::int64_t O, std::int64_t D, std::int64_t I, std::int64_t s_o,
                                   std::int64_t s_d, std::int64_t s_i, const float* shift, const float* thresholds,
                                   const std::int32_t* first, const std::int32_t* basis, std::int32_t base,
                                   std::int32_t* __restrict out, std::int64_t* __restrict out64) {
  std::int64_t n_nan = 0;
  if (s_i == 1) {
    const std::int64_t tiles_per_outer = (I + kThresholdTile - 1) / kThresholdTile;
    const std::int64_t n_tiles = O * tiles_per_outer;
#pragma omp parallel for schedule(static) if (O * I * D >= kParallelMinElements) reduction(+ : n_nan)
    for (std::int64_t k = 0; k < n_tiles; ++k) {
      const std::int64_t o = k / tiles_per_outer;
      const std::int64_t i0 = (k % tiles_per_outer) * kThresholdTile;
      const std::int64_t n = min64(kThresholdTile, I - i0);
      alignas(64) std::int32_t tile[kThresholdTile];
      std::int32_t* dst = out64 != nullptr ? tile : out + o * I + i0;
      n_nan += threshold_positions(z + o * s_o + i0, D, s_d, n, shift, thresholds, first, basis, base, dst);
      if (out64 != nullptr) {
        std::int64_t* __restrict wide = out64 + o * I + i0;
        for (std::int64_t j = 0; j < n; ++j) wide[j] = tile[j];  // vectorised
      }
    }
    return n_nan;
  }
  const std::int64_t tiles_per_outer = (I + kScratch - 1) / kScratch;
  const std::int64_t n_tiles = O * tiles_per_outer;

#pragma omp parallel for schedule(static) if (O * I * D >= kParallelMinElements) reduction(+ : n_nan)
  for (std::int64_t k = 0; k < n_tiles; ++k) {
    alignas(64) float x[kScratch];
    alignas(64) std::int32_t count[kScratch];
    alignas(64) std::int32_t acc[kScratch];
    alignas(64) std::int32_t nan_mask[kScratch];
    const std::int64_t o = k / tiles_per_outer;
    const std::int64_t i0 = (k % tiles_per_outer) * kScratch;
    const std::int64_t n = min64(kScratch, I - i0);
    for (std::int64_t j = 0; j < n; ++j) {
      acc[j] = base;
      nan_mask[j] = 0;
    }
    for (std::int64_t d = 0; d < D; ++d) {
      const float* __restrict src = z + o * s_o + d * s_d + i0 * s_i;
      const float sh = shift[d];
      if (s_i == 1) {
        for (std::int64_t j = 0; j < n; ++j) x[j] = src[j] + sh;  // vectorised; the reference's float32 add
      } else {
        for (std::int64_t j = 0; j < n; ++j) x[j] = src[j * s_i] + sh;
      }
      for (std::int64_t j = 0; j < n; ++j) {  // vectorised
        count[j] = 0;
        nan_mask[j] |= -static_cast<std::int32_t>(x[j] != x[j]);
      }
      for (std::int32_t t = first[d]; t < first[d + 1]; ++t) {
        const float thr = thresholds[t];
        for (std::int64_t j = 0; j < n; ++j) count[j] += static_cast<std::int32_t>(x[j] >= thr);  // vectorised
      }
      const std::int32_t b = basis[d];
      for (std::int64_t j = 0; j < n; ++j) acc[j] += count[j] * b;  // vectorised
    }
    std::int64_t nan_here = 0;
    for (std::int64_t j = 0; j < n; ++j) nan_here -= nan_mask[j];  // vectorised
    if (out64 != nullptr) {
      std::int64_t* __restrict wide = out64 + o * I + i0;
      for (std::int64_t j = 0; j < n; ++j) wide[j] = nan_mask[j] ? -1 : acc[j];
    } else {
      std::int32_t* __restrict dst = out + o * I + i0;
      for (std::int64_t j = 0; j < n; ++j) dst[j] = nan_mask[j] ? -1 : acc[j];  // vectorised
    }
    n_nan += nan_here;
  }
  return n_nan;
}

std::int64_t fsq_decode(const std::int32_t* __restrict index, std::int64_t M, std::int64_t D,
                        const std::int32_t* levels, float* __restrict out) {
  // x86 has no SIMD integer division, so the quotients are taken in double: for 0 <= a, b < 2^31 the correctly
  // rounded a / b never reaches the next integer (that would need b * (a // b + 1) > 2^53), so truncating it
  // gives the exact floor, and the element loop vectorises.
  const std::int64_t chunk = kScratch / D;
  alignas(64) double bs[kScratch], lv[kScratch];
  alignas(64) float hw[kScratch];
  std::int64_t codebook = 1;
  for (std::int64_t d = 0; d < D; ++d) {
    bs[d] = static_cast<double>(codebook);
    lv[d] = static_cast<double>(levels[d]);
    hw[d] = static_cast<float>(levels[d] / 2);
    codebook *= levels[d];
  }
  tile(bs + D, bs, D, chunk - 1);
  tile(lv + D, lv, D, chunk - 1);
  tile(hw + D, hw, D, chunk - 1);
  const std::int64_t n_chunks = (M + chunk - 1) / chunk;
  std::int64_t n_bad = 0;

#pragma omp parallel for schedule(static) if (M * D >= kParallelMinElements) reduction(+ : n_bad)
  for (std::int64_t c = 0; c < n_chunks; ++c) {
    alignas(64) double a[kScratch];
    const std::int64_t r0 = c * chunk;
    const std::int64_t rows = min64(chunk, M - r0);
    const std::int64_t n = rows * D;
    for (std::int64_t r = 0; r < rows; ++r) {
      const std::int32_t idx = index[r0 + r];
      const bool ok = idx >= 0 && idx < codebook;
      n_bad += !ok;
      for (std::int64_t d = 0; d < D; ++d) a[r * D + d] = ok ? static_cast<double>(idx) : 0.0;
    }
    float* __restrict o = out + r0 * D;
    for (std::int64_t k = 0; k < n; ++k) {  // vectorised
      const double quot = static_cast<double>(static_cast<std::int32_t>(a[k] / bs[k]));  // exact floor
      const double digit = quot - static_cast<double>(static_cast<std::int32_t>(quot / lv[k])) * lv[k];
      o[k] = static_cast<float>(digit - static_cast<double>(hw[k])) / hw[k];
    }
    for (std::int64_t r = 0; r < rows; ++r) {
      const std::int32_t idx = index[r0 + r];
      if (idx < 0 || idx >= codebook)
        for (std::int64_t d = 0; d < D; ++d) o[r * D + d] = __builtin_nanf("");
    }
  }
  return n_bad;
}

}  // namespace cpu
}  // namespace aion_fast
