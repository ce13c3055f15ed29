// Raw-pointer CPU kernels of the Winograd convolution's tile transforms (winograd_conv2d_cpu.cpp; rules of
// cpu_kernels.h). The products between the transforms are torch.bmm calls made by aion_fast/ops/winograd_conv2d.py.
#pragma once

#include <cstdint>

namespace aion_fast {
namespace cpu {

// Largest tile n = m + r - 1 and output tile m the kernels take (F(4x4, 3x3): n = 6; F(2x2, 7x7): n = 8).
constexpr int kWinogradMaxTile = 8;

// Tiles [tile_begin, tile_begin + tile_count) of x (B, H, W, C) channels-last, tile t = (b, ty, tx) in row-major
// order over (B, tiles_h, tiles_w), tile origin (ty m - pad, tx m - pad), zeros outside the image:
// v[t - tile_begin, i n + j, c] = (B^T d B)[i, j] with bt (n, n). v: (tile_count, n^2, C), tile-major so that each
// tile's writes are contiguous (the products read it as n^2 strided (tile_count, C) matrices at no extra cost).
void winograd_input_transform(const float* x, std::int64_t B, std::int64_t H, std::int64_t W, std::int64_t C,
                              const float* bt, int n, int m, int pad, std::int64_t tiles_h, std::int64_t tiles_w,
                              std::int64_t tile_begin, std::int64_t tile_count, float* v);

// The inverse: for the same tiles, out[b, ty m + i, tx m + j, c] = (A^T M A)[i, j] + bias[c] where inside the
// (B, H_out, W_out, C) output; mt: (n^2, tile_count, C), at: (m, n), bias: (C,) or null.
void winograd_output_transform(const float* mt, const float* at, const float* bias, int n, int m, std::int64_t B,
                               std::int64_t H_out, std::int64_t W_out, std::int64_t C, std::int64_t tiles_h,
                               std::int64_t tiles_w, std::int64_t tile_begin, std::int64_t tile_count, float* out);

}  // namespace cpu
}  // namespace aion_fast
