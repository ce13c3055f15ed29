// Winograd tile transforms (AION-1's fast CPU path; Lavin & Gray 2016, arXiv:1509.09308), channels-last so that
// the innermost loop runs over a block of channels in contiguous memory and vectorises. One parallel task per tile;
// each transform is two passes of small dense products (tile sizes are template parameters so that the loops over
// the tile unroll), accumulating a few vectors of channels in registers.
#include "winograd_conv2d_cpu.h"

#include <cstring>

namespace aion_fast {
namespace cpu {
namespace {

constexpr int kBlock = 16;                     // channels per inner block: two AVX2 registers per accumulator
constexpr std::int64_t kParallelMinTiles = 16;  // below this many tiles, one thread

// acc[c] = sum_q s[q * stride] * src[q * src_step][c] over the block; the loop over q unrolls (N is a template
// parameter) and runs dense: a branch per zero coefficient costs more than the multiply it saves.
template <int N>
inline void combine(const float* s, int stride, const float (*src)[kBlock], int src_step, float* acc) {
  float a[kBlock] = {};
#pragma GCC unroll 8
  for (int q = 0; q < N; ++q) {
    const float w = s[q * stride];
    const float* row = src[q * src_step];
    for (int c = 0; c < kBlock; ++c) a[c] += w * row[c];
  }
  for (int c = 0; c < kBlock; ++c) acc[c] = a[c];
}

template <int N>
void input_transform(const float* x, std::int64_t H, std::int64_t W, std::int64_t C, const float* bt, int m, int pad,
                     std::int64_t tiles_h, std::int64_t tiles_w, std::int64_t tile_begin, std::int64_t tile_count,
                     float* v) {
  const std::int64_t per_image = tiles_h * tiles_w;
#pragma omp parallel for schedule(static) if (tile_count >= kParallelMinTiles)
  for (std::int64_t k = 0; k < tile_count; ++k) {
    const std::int64_t t = tile_begin + k;
    const std::int64_t b = t / per_image, ty = (t % per_image) / tiles_w, tx = t % tiles_w;
    const std::int64_t y0 = ty * m - pad, x0 = tx * m - pad;
    alignas(64) float d[N * N][kBlock];
    alignas(64) float rows[N * N][kBlock];
    alignas(64) float acc[kBlock];
    for (std::int64_t c0 = 0; c0 < C; c0 += kBlock) {
      const std::int64_t cw = C - c0 < kBlock ? C - c0 : kBlock;
      for (int i = 0; i < N; ++i) {
        const std::int64_t y = y0 + i;
        for (int j = 0; j < N; ++j) {
          const std::int64_t xx = x0 + j;
          float* dst = d[i * N + j];
          if (y >= 0 && y < H && xx >= 0 && xx < W) {
            const float* src = x + ((b * H + y) * W + xx) * C + c0;
            if (cw == kBlock) {
              for (int c = 0; c < kBlock; ++c) dst[c] = src[c];
            } else {
              for (int c = 0; c < kBlock; ++c) dst[c] = c < cw ? src[c] : 0.0f;
            }
          } else {
            for (int c = 0; c < kBlock; ++c) dst[c] = 0.0f;
          }
        }
      }
      // rows = B^T d (over the tile's rows): rows[i][j] = sum_q bt[i][q] d[q][j]
      for (int i = 0; i < N; ++i)
        for (int j = 0; j < N; ++j) combine<N>(bt + i * N, 1, d + j, N, rows[i * N + j]);
      // v = rows B (over the columns): v[i][j] = sum_q rows[i][q] bt[j][q], the tile's planes written contiguously
      for (int i = 0; i < N; ++i) {
        for (int j = 0; j < N; ++j) {
          combine<N>(bt + j * N, 1, rows + i * N, 1, acc);
          float* dst = v + (k * N * N + i * N + j) * C + c0;
          if (cw == kBlock) {
            for (int c = 0; c < kBlock; ++c) dst[c] = acc[c];
          } else {
            std::memcpy(dst, acc, sizeof(float) * cw);
          }
        }
      }
    }
  }
}

template <int N>
void output_transform(const float* mt, const float* at, const float* bias, int m, std::int64_t H_out,
                      std::int64_t W_out, std::int64_t C, std::int64_t tiles_h, std::int64_t tiles_w,
                      std::int64_t tile_begin, std::int64_t tile_count, float* out) {
  const std::int64_t per_image = tiles_h * tiles_w;
#pragma omp parallel for schedule(static) if (tile_count >= kParallelMinTiles)
  for (std::int64_t k = 0; k < tile_count; ++k) {
    const std::int64_t t = tile_begin + k;
    const std::int64_t b = t / per_image, ty = (t % per_image) / tiles_w, tx = t % tiles_w;
    alignas(64) float e[N * N][kBlock];
    alignas(64) float rows[N * N][kBlock];
    alignas(64) float acc[kBlock];
    for (std::int64_t c0 = 0; c0 < C; c0 += kBlock) {
      const std::int64_t cw = C - c0 < kBlock ? C - c0 : kBlock;
      for (int p = 0; p < N * N; ++p) {
        const float* src = mt + (p * tile_count + k) * C + c0;
        if (cw == kBlock) {
          for (int c = 0; c < kBlock; ++c) e[p][c] = src[c];
        } else {
          for (int c = 0; c < kBlock; ++c) e[p][c] = c < cw ? src[c] : 0.0f;
        }
      }
      // rows = A^T e (m x N): rows[i][j] = sum_q at[i][q] e[q][j]
      for (int i = 0; i < m; ++i)
        for (int j = 0; j < N; ++j) combine<N>(at + i * N, 1, e + j, N, rows[i * N + j]);
      // y = rows A + bias (m x m)
      for (int i = 0; i < m; ++i) {
        const std::int64_t y = ty * m + i;
        if (y >= H_out) break;
        for (int j = 0; j < m; ++j) {
          const std::int64_t xx = tx * m + j;
          if (xx >= W_out) break;
          combine<N>(at + j * N, 1, rows + i * N, 1, acc);
          float* dst = out + ((b * H_out + y) * W_out + xx) * C + c0;
          if (bias != nullptr) {
            for (int c = 0; c < cw; ++c) dst[c] = acc[c] + bias[c0 + c];
          } else {
            for (int c = 0; c < cw; ++c) dst[c] = acc[c];
          }
        }
      }
    }
  }
}

}  // namespace

void winograd_input_transform(const float* x, std::int64_t B, std::int64_t H, std::int64_t W, std::int64_t C,
                              const float* bt, int n, int m, int pad, std::int64_t tiles_h, std::int64_t tiles_w,
                              std::int64_t tile_begin, std::int64_t tile_count, float* v) {
  (void)B;
  switch (n) {
    case 4: return input_transform<4>(x, H, W, C, bt, m, pad, tiles_h, tiles_w, tile_begin, tile_count, v);
    case 6: return input_transform<6>(x, H, W, C, bt, m, pad, tiles_h, tiles_w, tile_begin, tile_count, v);
    case 8: return input_transform<8>(x, H, W, C, bt, m, pad, tiles_h, tiles_w, tile_begin, tile_count, v);
    default: return;  // the wrapper admits only n in {4, 6, 8}
  }
}

void winograd_output_transform(const float* mt, const float* at, const float* bias, int n, int m, std::int64_t B,
                               std::int64_t H_out, std::int64_t W_out, std::int64_t C, std::int64_t tiles_h,
                               std::int64_t tiles_w, std::int64_t tile_begin, std::int64_t tile_count, float* out) {
  (void)B;
  switch (n) {
    case 4: return output_transform<4>(mt, at, bias, m, H_out, W_out, C, tiles_h, tiles_w, tile_begin, tile_count, out);
    case 6: return output_transform<6>(mt, at, bias, m, H_out, W_out, C, tiles_h, tiles_w, tile_begin, tile_count, out);
    case 8: return output_transform<8>(mt, at, bias, m, H_out, W_out, C, tiles_h, tiles_w, tile_begin, tile_count, out);
    default: return;
  }
}

}  // namespace cpu
}  // namespace aion_fast
