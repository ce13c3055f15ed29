// Raw-pointer CPU kernel of the image decode epilogue (image_postprocess_cpu.cpp; rules of cpu_kernels.h).
#pragma once

#include <cstdint>

namespace aion_fast {
namespace cpu {

// projected: (B, H*W, NB) C-contiguous (the 54 -> NB projection before its bias); bias: (NB,); channel: (C,) in
// [0, NB); out: (B, C, H*W). out[b, i, p] = s * (alpha * sinh(((projected[b, p, ch_i] + bias[ch_i]) / kappa) / alpha)).
void image_postprocess(const float* projected, std::int64_t B, std::int64_t HW, std::int64_t NB, const float* bias,
                       const std::int32_t* channel, std::int64_t C, float alpha, float kappa, float zeropoint_scale,
                       float* out);

// float32 sinh evaluated in double precision (|error| < 1 float32 ulp; vectorisable), exposed for tests.
void sinh_f32_array(const float* x, std::int64_t n, float* out);

}  // namespace cpu
}  // namespace aion_fast
