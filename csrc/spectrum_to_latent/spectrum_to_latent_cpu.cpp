// Spectrum resampling onto the codec's latent wavelength grid (AION-1 paper §4.2.1): CPU kernel.
//
// Per row b with scale n_b, observed wavelengths x_0 < ... < x_{L-1} and latent grid u_0 < ... < u_{G-1} (all
// float32, one rounding per operation, in this order, exactly as the PyTorch reference
// aion_fast.ops.spectrum_to_latent.torch_spectrum_to_latent evaluates it):
//
//   f_j = nan_to_num(flux_j), clipped to [-clip_flux, clip_flux] when has_clip_flux
//   s_j = sqrt(min(max(nan_to_num(ivar_j), 0), clip_ivar))      <- computed by PyTorch, passed in as `istd`
//   y0_j = (f_j / n_b - 1) * a,   y1_j = (s_j / n_b) * a         (a = input_scaling)
//   j(u) = clip(#{j : x_j < u} - 1, 0, L - 2)
//   out[b, c, k] = asinhf(yc_j + (u_k - x_j) * ((yc_j - yc_{j+1}) / (x_j - x_{j+1})))   j = j(u_k)
//                  or 0 where u_k < x_0 or u_k > x_{L-1}
//
// nan_to_num maps NaN -> 0 and +-inf -> +-FLT_MAX, like torch.nan_to_num. Because both the grid and each row are
// sorted, #{j : x_j < u_k} is found by ONE merge pass per row (a pointer that only moves forward), O(L + G),
// instead of a binary search per grid point; for sorted rows it equals torch.searchsorted(x, u) exactly. Only the
// two samples around each grid point are cleaned and scaled, so no (B, 2, L) intermediate is built.
// asinhf has the bits of libm's asinhf, the function PyTorch's CPU asinh calls per element: asinhf_array
// (asinhf_glibc.h) runs the verified AVX2 replica of glibc's asinhf, else libm per element, over each finished
// (2, G) output row in place (asinhf(+0) = +0 keeps the zeros outside the spectrum). The square root
// stays in PyTorch: its CPU sqrt is not the correctly rounded sqrtf (on the 2.13 CPU wheel many float32
// results differ from sqrtf by an ulp, and its scalar and vectorised paths disagree), so, as FSQ does with tanh,
// PyTorch computes it on the same (B, L) tensor as the reference and this kernel replays everything else.
// Constraints of this file: see cpu_kernels.h (no pybind11, no std templates, no heap, no exceptions).
#include <cstdint>

#include "aion_fast/asinhf_glibc.h"
#include "spectrum_to_latent_cpu.h"

namespace aion_fast {
namespace cpu {
namespace {

constexpr float kFloatMax = 3.40282346638528859812e+38f;
constexpr std::int64_t kParallelMinPoints = 1 << 14;  // below this many grid outputs, one thread

inline float nan_to_num(float v) {
  if (v != v) return 0.0f;
  if (v == __builtin_inff()) return kFloatMax;
  if (v == -__builtin_inff()) return -kFloatMax;
  return v;
}

}  // namespace

void spectrum_to_latent(const float* __restrict flux, const float* __restrict istd,
                        const float* __restrict wavelength, std::int64_t B, std::int64_t L,
                        const float* __restrict scale, const float* __restrict grid, std::int64_t G,
                        float input_scaling, bool has_clip_flux, float clip_flux, float* __restrict out) {
#pragma omp parallel for schedule(static) if (B * G >= kParallelMinPoints)
  for (std::int64_t b = 0; b < B; ++b) {
    const float* __restrict f = flux + b * L;
    const float* __restrict sd = istd + b * L;
    const float* __restrict x = wavelength + b * L;
    float* __restrict out_flux = out + b * 2 * G;
    float* __restrict out_istd = out_flux + G;
    const float n = scale[b];
    const float first = x[0], last = x[L - 1];
    auto channels = [&](std::int64_t j, float* y0, float* y1) {
      float fj = nan_to_num(f[j]);
      if (has_clip_flux) {
        fj = fj < -clip_flux ? -clip_flux : fj;
        fj = fj > clip_flux ? clip_flux : fj;
      }
      float t = fj / n;
      t = t - 1.0f;
      *y0 = t * input_scaling;
      float s = sd[j] / n;
      *y1 = s * input_scaling;
    };
    std::int64_t count_below = 0;  // #{j : x_j < u}, non-decreasing along the grid
    std::int64_t cached = -1;      // segment whose end-point channels are held below
    float yl0 = 0.0f, yl1 = 0.0f, yr0 = 0.0f, yr1 = 0.0f;
    for (std::int64_t k = 0; k < G; ++k) {
      const float u = grid[k];
      if (u < first || u > last) {
        out_flux[k] = 0.0f;
        out_istd[k] = 0.0f;
        continue;
      }
      while (count_below < L && x[count_below] < u) ++count_below;
      std::int64_t j = count_below - 1;
      j = j < 0 ? 0 : (j > L - 2 ? L - 2 : j);
      if (j != cached) {
        channels(j, &yl0, &yl1);
        channels(j + 1, &yr0, &yr1);
        cached = j;
      }
      const float dx = x[j] - x[j + 1];
      const float du = u - x[j];
      float slope = (yl0 - yr0) / dx;
      float v = du * slope;
      out_flux[k] = yl0 + v;
      slope = (yl1 - yr1) / dx;
      v = du * slope;
      out_istd[k] = yl1 + v;
    }
    asinhf_array(out_flux, out_flux, 2 * G);  // both channels in place; asinhf(+0) = +0 outside the spectrum
  }
}

}  // namespace cpu
}  // namespace aion_fast
