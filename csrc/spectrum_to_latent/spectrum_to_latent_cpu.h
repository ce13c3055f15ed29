// Raw-pointer CPU kernel of the spectrum-to-latent-grid resampling (spectrum_to_latent_cpu.cpp; rules of cpu_kernels.h).
#pragma once

#include <cstdint>

namespace aion_fast {
namespace cpu {

// flux/istd/wavelength: (B, L) C-contiguous, istd = sqrt of the cleaned, clipped ivar, wavelength strictly
// increasing per row, L >= 2; scale: (B,); grid: (G,) increasing; out: (B, 2, G) (channel 0: normalised flux,
// 1: normalised inverse standard deviation).
void spectrum_to_latent(const float* flux, const float* istd, const float* wavelength, std::int64_t B,
                        std::int64_t L, const float* scale, const float* grid, std::int64_t G, float input_scaling,
                        bool has_clip_flux, float clip_flux, float* out);

}  // namespace cpu
}  // namespace aion_fast
