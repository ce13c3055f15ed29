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
// Why tanh stays in PyTorch: torch's vectorised tanhf (SLEEF, <= 1 ulp) and libm's tanhf disagree in the last
// bit on ~0.05% of inputs; when `b` then lies within an ulp of a half-integer the rounding flips and the index
// differs. Taking t from torch makes every later step a bit-identical replay of the reference.
// The per-row sum is exact in any order when every digit is an exact integer and every partial sum is below
// 2^24; the Python dispatcher only routes here when both hold (levels 2..21; see aion_fast/ops/fsq.py).
//
// Decode: digit_d = floor(index / basis_d) mod L_d, code_d = (digit_d - h_d) / h_d.
//
// Vectorisation: a chunk of rows is processed as one flat run of rows*D elements against per-channel constants
// tiled to the same length, so the element loop has no modulo and gcc vectorises it; the per-row sums follow.
// Constraints of this file: see cpu_kernels.h (no pybind11, no std templates, no heap, no exceptions).
#include <cstdint>

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
