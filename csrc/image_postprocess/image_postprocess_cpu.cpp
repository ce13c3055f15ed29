// Image decode epilogue of the image codec (inverse of AION-1 paper §4.1.1): CPU kernel.
//
// After the 54 -> NB projection p = h W^T (a BLAS product done by PyTorch, whose float32 sums this kernel cannot
// replay), for every pixel and every requested band i at channel ch_i, all float32, one rounding per operation in
// the order of aion_fast.ops.image_postprocess.torch_image_postprocess:
//
//   v = p[ch_i] + bias[ch_i]             the projection's bias
//   v = v / kappa; v = v / alpha         undo the multiplier and the arcsinh scale ...
//   v = sinh(v); v = v * alpha           ... inverse range compression
//   v = v * s                            HSC zero-point rescale (s = 10^1.8; 1 for the Legacy Survey)
//   out[b, i, y, x] = v                  channels-first, requested bands only, in the requested order
//
// sinh: PyTorch's CPU sinh is not one function (its vectorised loop and its scalar tail round differently, see the
// op's docstring), so no kernel can equal it bit for bit. This kernel evaluates sinh in double precision (exp by
// range reduction and a degree-11 polynomial, a Taylor series near 0) and rounds once to float32: within one float32
// ulp of the exact value, and the loop vectorises (AVX2, 4 doubles), unlike per-element libm sinhf calls.
// One parallel task per (image, band, block of pixels): the gather of channel ch_i reads the projection once.
// Constraints of this file: see cpu_kernels.h (no pybind11, no std templates, no heap, no exceptions).
#include <cstdint>

#include "image_postprocess_cpu.h"

// The selects of sinh_f32 compare possibly-NaN values; under the default -ftrapping-math GCC will not if-convert them
// and the loops stay scalar. This file never reads the floating-point exception flags, so they may be ignored; values
// are unchanged (-ffp-contract=off still holds: no fused multiply-add).
#if defined(__clang__)
#pragma clang fp exceptions(ignore)
#elif defined(__GNUC__)
#pragma GCC optimize("no-trapping-math")
#endif

namespace aion_fast {
namespace cpu {
namespace {

constexpr std::int64_t kBlock = 1024;           // pixels per task
constexpr std::int64_t kParallelMin = 1 << 15;  // below this many outputs, one thread (OpenMP start-up dominates)

inline std::uint64_t bits_of(double x) {
  std::uint64_t u;
  __builtin_memcpy(&u, &x, sizeof u);
  return u;
}

inline double double_of(std::uint64_t u) {
  double x;
  __builtin_memcpy(&x, &u, sizeof x);
  return x;
}

// sinh(x) for float32 x, computed in double and rounded once. Branch-free (selects), so loops over it vectorise.
//   |x| < 1/2: odd Taylor series to x^13 (truncation < 1e-16 relative);
//   else: e = exp(min(|x|, 100)) = 2^k exp(r), r = |x| - k ln2 in [-ln2/2, ln2/2] (Cody-Waite, two-part ln2),
//         exp(r) by its Taylor polynomial to r^12 (< 1e-15 relative), sinh = e/2 - 1/(2e).
//   |x| >= 100 gives sinh(100) ~ 1.3e43, which rounds to +-inf in float32 like the exact value; NaN stays NaN.
inline float sinh_f32(float xf) {
  const double x = xf;
  const double a = x < 0.0 ? -x : x;
  const double a2 = a * a;
  double small = 1.0 / 6227020800.0;  // 1/13!
  small = small * a2 + 1.0 / 39916800.0;
  small = small * a2 + 1.0 / 362880.0;
  small = small * a2 + 1.0 / 5040.0;
  small = small * a2 + 1.0 / 120.0;
  small = small * a2 + 1.0 / 6.0;
  small = (small * a2) * a + a;

  const double ac = a < 100.0 ? a : 100.0;  // NaN -> 100 here; restored below
  constexpr double kLog2e = 1.4426950408889634;
  constexpr double kLn2Hi = 0.693145751953125;  // 17 significant bits: k * kLn2Hi is exact for k < 2^36
  constexpr double kLn2Lo = 1.4286068203094172e-06;
  constexpr double kShift = 6755399441055744.0;  // 1.5 * 2^52: adding it rounds to an integer in the low bits
  const double shifted = ac * kLog2e + kShift;
  const double k = shifted - kShift;
  const double r = (ac - k * kLn2Hi) - k * kLn2Lo;
  double p = 1.0 / 479001600.0;  // 1/12!
  p = p * r + 1.0 / 39916800.0;
  p = p * r + 1.0 / 3628800.0;
  p = p * r + 1.0 / 362880.0;
  p = p * r + 1.0 / 40320.0;
  p = p * r + 1.0 / 5040.0;
  p = p * r + 1.0 / 720.0;
  p = p * r + 1.0 / 120.0;
  p = p * r + 1.0 / 24.0;
  p = p * r + 1.0 / 6.0;
  p = p * r + 0.5;
  p = p * r + 1.0;
  p = p * r + 1.0;
  const std::uint64_t exponent = (bits_of(shifted) - bits_of(kShift) + 1023u) << 52;  // 2^k, 0 <= k <= 145
  const double e = p * double_of(exponent);
  const double big = 0.5 * e - 0.5 / e;

  double result = a < 0.5 ? small : big;
  result = x < 0.0 ? -result : result;
  const float out = static_cast<float>(result);
  return xf != xf ? xf : out;
}

}  // namespace

void sinh_f32_array(const float* __restrict x, std::int64_t n, float* __restrict out) {
  for (std::int64_t k = 0; k < n; ++k) out[k] = sinh_f32(x[k]);
}

void image_postprocess(const float* __restrict projected, std::int64_t B, std::int64_t HW, std::int64_t NB,
                       const float* __restrict bias, const std::int32_t* __restrict channel, std::int64_t C,
                       float alpha, float kappa, float zeropoint_scale, float* __restrict out) {
  const std::int64_t blocks = (HW + kBlock - 1) / kBlock;
  const std::int64_t tasks = B * C * blocks;
  const bool parallel = B * C * HW >= kParallelMin;
#pragma omp parallel for schedule(static) if (parallel)
  for (std::int64_t task = 0; task < tasks; ++task) {
    const std::int64_t plane = task / blocks;  // b * C + i
    const std::int64_t start = (task % blocks) * kBlock;
    const std::int64_t stop = start + kBlock < HW ? start + kBlock : HW;
    const std::int64_t b = plane / C, i = plane % C;
    const std::int64_t ch = channel[i];
    const float shift = bias[ch];
    const float* __restrict src = projected + (b * HW) * NB + ch;
    float* __restrict dst = out + plane * HW;
    float buffer[kBlock];
    const std::int64_t n = stop - start;
    for (std::int64_t k = 0; k < n; ++k) {
      float v = src[(start + k) * NB] + shift;
      v = v / kappa;
      v = v / alpha;
      buffer[k] = v;
    }
    for (std::int64_t k = 0; k < n; ++k) {
      float v = sinh_f32(buffer[k]);
      v = v * alpha;
      v = v * zeropoint_scale;
      dst[start + k] = v;
    }
  }
}

}  // namespace cpu
}  // namespace aion_fast
