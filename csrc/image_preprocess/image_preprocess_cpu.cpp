// Fused image preprocessing of the image codec (AION-1 paper §4.1.1): CPU kernel.
//
// For every pixel of the central S x S window of a (B, C, H, W) float32 image and every present band i placed at
// channel ch_i of the NB-channel layout (all float32, one rounding per operation, in this order, exactly as the
// PyTorch reference aion_fast.ops.image_preprocess.torch_image_preprocess evaluates it):
//
//   v = min(max(x, -m_i), m_i)           per-band clip (NaN stays NaN)
//   v = v / s                            zero-point rescale (s = 10^((27 - 22.5) / 2.5) for HSC, 1 otherwise)
//   v = v / alpha; v = asinhf(v)         arcsinh range compression ...
//   v = v * alpha; v = v * kappa         ... and its multiplier
//   out[b, y, x, ch_i] = v               channels-last, absent channels 0
//
// asinhf is libm's (glibc), the function PyTorch's CPU asinh calls per element, so the values are bit-identical;
// it is a scalar call (no exact SIMD version exists: glibc's asinhf is not correctly rounded, ~15% of its float32
// results differ from the correctly rounded value, so only its own algorithm reproduces it). The row is therefore
// done in three loops over a stack buffer: clip and divisions (vectorised), asinhf, multiplications and placement
// (vectorised), so only the libm call itself is scalar. It is ~85% of this kernel's time.
// One parallel task per output row (b, y): the input is read once, the output written once.
// Constraints of this file: see cpu_kernels.h (no pybind11, no std templates, no heap, no exceptions).
#include <math.h>

#include <cstdint>

#include "image_preprocess_cpu.h"

namespace aion_fast {
namespace cpu {
namespace {

constexpr std::int64_t kMaxRow = 256;           // window pixels per stack buffer
constexpr std::int64_t kParallelMin = 1 << 15;  // below this many pixels, one thread (OpenMP start-up dominates)

}  // namespace

std::int64_t image_preprocess(const float* __restrict flux, std::int64_t B, std::int64_t C, std::int64_t H,
                              std::int64_t W, std::int64_t top, std::int64_t left, std::int64_t S,
                              const std::int32_t* channel, const float* clamp_max, float zeropoint_scale,
                              float alpha, float kappa, std::int64_t NB, float* __restrict out,
                              std::int32_t* __restrict nonfinite) {
  for (std::int64_t b = 0; b < B; ++b) nonfinite[b] = 0;
  std::int64_t n_bad_rows = 0;

#pragma omp parallel for schedule(static) reduction(+ : n_bad_rows) if (B * S * S * C >= kParallelMin)
  for (std::int64_t row = 0; row < B * S; ++row) {
    const std::int64_t b = row / S, y = row % S;
    float* __restrict o = out + row * S * NB;
    for (std::int64_t k = 0; k < S * NB; ++k) o[k] = 0.0f;
    std::int32_t bad = 0;
    float buffer[kMaxRow];
    for (std::int64_t i = 0; i < C; ++i) {
      const float* __restrict src = flux + ((b * C + i) * H + top + y) * W + left;
      const float hi = clamp_max[i], lo = -hi;
      const std::int64_t ch = channel[i];
      for (std::int64_t x0 = 0; x0 < S; x0 += kMaxRow) {
        const std::int64_t n = S - x0 < kMaxRow ? S - x0 : kMaxRow;
        // vectorised: finiteness, clip, the two divisions
        for (std::int64_t x = 0; x < n; ++x) {
          float v = src[x0 + x];
          bad |= (v - v) != 0.0f;  // NaN or +-inf
          v = v < lo ? lo : v;
          v = v > hi ? hi : v;
          v = v / zeropoint_scale;
          v = v / alpha;
          buffer[x] = v;
        }
        for (std::int64_t x = 0; x < n; ++x) buffer[x] = asinhf(buffer[x]);  // libm, scalar
        for (std::int64_t x = 0; x < n; ++x) {
          float v = buffer[x] * alpha;
          v = v * kappa;
          o[(x0 + x) * NB + ch] = v;
        }
      }
    }
    if (bad) {
#pragma omp atomic
      nonfinite[b] += 1;
      n_bad_rows += 1;
    }
  }
  return n_bad_rows;
}

}  // namespace cpu
}  // namespace aion_fast
