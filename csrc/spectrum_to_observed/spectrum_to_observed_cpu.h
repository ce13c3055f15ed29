// Raw-pointer CPU kernel of the spectrum decode epilogue (spectrum_to_observed_cpu.cpp; rules of cpu_kernels.h).
#pragma once

#include <cstdint>

namespace aion_fast {
namespace cpu {

// values: (B, K, G) C-contiguous decoder output on the latent grid (K = 1: flux; 2: flux and mask logit);
// grid: (G,) increasing, G >= 2; wavelength: (B, M) requested wavelengths, or nullptr for the grid itself (M = G);
// scale: (B,) flux scale n, or nullptr for normalised output; flux: (B, M); mask: (B, M) bytes 0/1.
// Returns the number of mask logits in the band (0, 1e-6] where PyTorch's round(sigmoid(.)) cannot be
// decided without replaying its sigmoid (written 0; the caller recomputes the mask).
std::int64_t spectrum_to_observed(const float* values, std::int64_t B, std::int64_t K, std::int64_t G,
                                  const float* grid, const float* wavelength, std::int64_t M, const float* scale,
                                  float* flux, std::uint8_t* mask);

}  // namespace cpu
}  // namespace aion_fast
