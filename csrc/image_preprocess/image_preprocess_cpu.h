// Raw-pointer CPU kernel of the fused image preprocessing (image_preprocess_cpu.cpp; rules of cpu_kernels.h).
#pragma once

#include <cstdint>

namespace aion_fast {
namespace cpu {

// flux: (B, C, H, W) C-contiguous; window rows [top, top + S), columns [left, left + S); channel/clamp_max: (C,);
// out: (B, S, S, NB), absent channels written 0; nonfinite: (B,) number of window rows holding NaN/inf per image.
// Returns the total number of window rows holding NaN/inf.
std::int64_t image_preprocess(const float* flux, std::int64_t B, std::int64_t C, std::int64_t H, std::int64_t W,
                              std::int64_t top, std::int64_t left, std::int64_t S, const std::int32_t* channel,
                              const float* clamp_max, float zeropoint_scale, float alpha, float kappa,
                              std::int64_t NB, float* out, std::int32_t* nonfinite);

}  // namespace cpu
}  // namespace aion_fast
