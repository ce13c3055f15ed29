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
// asinhf must return the bits of libm's asinhf, the function PyTorch's CPU asinh calls per element. glibc's is not
// correctly rounded (many of its float32 results differ from the correctly rounded value), so only its own
// algorithm reproduces it: asinhf_array (csrc/asinhf/, asinhf_glibc.h) is an AVX2 replica of glibc 2.36's asinhf,
// used after a one-time self-check against the loaded libm, else (another libm, a build without AVX2/FMA,
// AION_FAST_ASINHF_LIBM=1) the libm call per element; `_C.asinhf_vector_verified()` says which. Per row and pass the
// bands are clipped and divided side by side into one stack buffer (vectorised), asinhf_array runs once over all of
// them, then the multiplications and placement (vectorised arithmetic, strided stores). asinhf dominates this
// kernel's time, hence the vector replica rather than the per-element libm call.
// One parallel task per output row (b, y): the input is read once, the output written once.
// Constraints of this file: see cpu_kernels.h (no pybind11, no std templates, no heap, no exceptions).
#include <cstdint>

#include "aion_fast/asinhf_glibc.h"
#include "image_preprocess_cpu.h"

namespace aion_fast {
namespace cpu {
namespace {

constexpr std::int64_t kMaxRow = 256;           // window pixels per band and pass
constexpr std::int64_t kBuffer = 1024;          // floats of the per-row stack buffer (several bands per asinhf call)
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
    alignas(32) float buffer[kBuffer];
    for (std::int64_t x0 = 0; x0 < S; x0 += kMaxRow) {
      const std::int64_t n = S - x0 < kMaxRow ? S - x0 : kMaxRow;
      const std::int64_t group = kBuffer / n;  // bands per asinhf call (>= 4)
      for (std::int64_t i0 = 0; i0 < C; i0 += group) {
        const std::int64_t bands = C - i0 < group ? C - i0 : group;
        // vectorised: finiteness, clip, the two divisions, for `bands` bands side by side in the buffer
        for (std::int64_t j = 0; j < bands; ++j) {
          const std::int64_t i = i0 + j;
          const float* __restrict src = flux + ((b * C + i) * H + top + y) * W + left + x0;
          const float hi = clamp_max[i], lo = -hi;
          float* __restrict v_out = buffer + j * n;
          for (std::int64_t x = 0; x < n; ++x) {
            float v = src[x];
            bad |= (v - v) != 0.0f;  // NaN or +-inf
            v = v < lo ? lo : v;
            v = v > hi ? hi : v;
            v = v / zeropoint_scale;
            v = v / alpha;
            v_out[x] = v;
          }
        }
        asinhf_array(buffer, buffer, bands * n);  // libm's bits: vector replica when verified, else libm
        for (std::int64_t j = 0; j < bands; ++j) {
          const float* __restrict v_in = buffer + j * n;
          float* __restrict o_band = o + x0 * NB + channel[i0 + j];
          for (std::int64_t x = 0; x < n; ++x) {
            float v = v_in[x] * alpha;
            v = v * kappa;
            o_band[x * NB] = v;
          }
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
