// Spectrum decode epilogue (AION-1 paper §4.2): latent grid -> requested wavelengths, flux scale, mask. CPU kernel.
//
// Per row b with decoder output y^(c)_k on the latent grid u_0 < ... < u_{G-1} (c = 0: normalised flux, c = 1: mask
// logit), requested wavelengths w_m and flux scale n_b, all float32, one rounding per operation, in the order of
// aion_fast.ops.spectrum_to_observed.torch_spectrum_to_observed:
//
//   j(w) = clip(#{k : u_k < w} - 1, 0, G - 2)
//   v^(c) = y^(c)_j + (w - u_j) * ((y^(c)_j - y^(c)_{j+1}) / (u_j - u_{j+1}))
//                                                 (0 where w < u_0 or w > u_{G-1})
//   flux = (v^(0) + 1) * n_b                      (v^(0) when no scale is given)
//   mask = round(sigmoid(v^(1))) != 0             (all false for a flux-only decoder, K = 1)
//
// The segment is found from the uniform grid in O(1): a closed-form guess ceil((w - u_0) / step) corrected by
// comparing with the stored float32 grid values (which are not exactly uniform), so #{k : u_k < w} is exact: the
// same count torch.searchsorted returns, without a binary search (and for any order of the requested wavelengths).
// Mask: sigmoid(v) <= 1/2 for v <= 0, so round() gives 0; for v > kMaskAmbiguous = 1e-6 it exceeds 1/2 by more
// than its rounding error, so round() gives 1; NaN gives NaN, which is true as a bool. In the band between,
// PyTorch's result depends on its exp's last bit: such values are counted and the caller recomputes the mask with
// PyTorch (rare for real logits: the band is 1e-6 wide).
// Constraints of this file: see cpu_kernels.h (no pybind11, no std templates, no heap, no exceptions).
#include <cstdint>

#include "spectrum_to_observed_cpu.h"

namespace aion_fast {
namespace cpu {
namespace {

// sigmoid(1e-6) = 1/2 + 2.5e-7, four float32 ulps above 1/2: PyTorch's 1 / (1 + exp(-x)) rounds to more than 1/2
// there even with a 2-ulp exp. (With a correctly rounded exp the switch is at 1.5 * 2^-24 ~ 8.9e-8.)
constexpr float kMaskAmbiguous = 1e-6f;
constexpr std::int64_t kParallelMinPoints = 1 << 14;

inline std::uint8_t mask_of(float logit, std::int64_t* ambiguous) {
  if (logit != logit) return 1;
  if (logit <= 0.0f) return 0;
  if (logit > kMaskAmbiguous) return 1;
  *ambiguous += 1;
  return 0;
}

}  // namespace

std::int64_t spectrum_to_observed(const float* __restrict values, std::int64_t B, std::int64_t K, std::int64_t G,
                                  const float* __restrict grid, const float* __restrict wavelength, std::int64_t M,
                                  const float* __restrict scale, float* __restrict flux,
                                  std::uint8_t* __restrict mask) {
  std::int64_t ambiguous = 0;
  const float first = grid[0], last = grid[G - 1];
  const double origin = first;
  const double inv_step = static_cast<double>(G - 1) / (static_cast<double>(last) - origin);
  const bool parallel = B * M >= kParallelMinPoints;
#pragma omp parallel for schedule(static) reduction(+ : ambiguous) if (parallel)
  for (std::int64_t b = 0; b < B; ++b) {
    const float* __restrict y0 = values + b * K * G;
    const float* __restrict y1 = y0 + G;
    const float n = scale ? scale[b] : 1.0f;
    float* __restrict out_flux = flux + b * M;
    std::uint8_t* __restrict out_mask = mask + b * M;
    if (!wavelength) {  // on the latent grid itself
      for (std::int64_t k = 0; k < G; ++k) {
        float v = y0[k];
        if (scale) {
          v = v + 1.0f;
          v = v * n;
        }
        out_flux[k] = v;
      }
      if (K == 2) {
        for (std::int64_t k = 0; k < G; ++k) out_mask[k] = mask_of(y1[k], &ambiguous);
      } else {
        for (std::int64_t k = 0; k < G; ++k) out_mask[k] = 0;
      }
      continue;
    }
    const float* __restrict w = wavelength + b * M;
    for (std::int64_t m = 0; m < M; ++m) {
      const float u = w[m];
      float v0, v1;
      if (u != u) {
        v0 = v1 = u;  // NaN in, NaN out (as the reference)
      } else if (u < first || u > last) {
        v0 = v1 = 0.0f;
      } else {
        // count = #{k : grid[k] < u}: closed-form guess, then exact correction against the stored grid
        double guess = (static_cast<double>(u) - origin) * inv_step;
        std::int64_t count = static_cast<std::int64_t>(guess);
        count = count < 0 ? 0 : (count > G ? G : count);
        while (count > 0 && grid[count - 1] >= u) --count;
        while (count < G && grid[count] < u) ++count;
        std::int64_t j = count - 1;
        j = j < 0 ? 0 : (j > G - 2 ? G - 2 : j);
        const float dx = grid[j] - grid[j + 1];
        const float du = u - grid[j];
        float slope = (y0[j] - y0[j + 1]) / dx;
        v0 = y0[j] + du * slope;
        if (K == 2) {
          slope = (y1[j] - y1[j + 1]) / dx;
          v1 = y1[j] + du * slope;
        } else {
          v1 = 0.0f;
        }
      }
      if (scale) {
        v0 = v0 + 1.0f;
        v0 = v0 * n;
      }
      out_flux[m] = v0;
      out_mask[m] = K == 2 ? mask_of(v1, &ambiguous) : 0;
    }
  }
  return ambiguous;
}

}  // namespace cpu
}  // namespace aion_fast
