// Raw-pointer ROAR kernels: CPU in roar_cpu.cpp (AION_FAST_ARCH flags, the constraints of cpu_kernels.h), CUDA in
// roar.cu. Argument checks happen in roar.cpp. Maths and random-number layout: roar_math.h.
#pragma once

#include <cstdint>

namespace aion_fast {

// One ROAR step for R chains (rows) over a target of L positions and a vocabulary of V tokens:
//   1. sample the N query slots of every row from logits at temperature / top_k / top_p, with the uniform of
//      (seed, step, object_ids[r], sample_ids[r], positions[r, n]), and reveal them: tokens[r, pos] = token,
//      input_mask[r, pos] = 0 (present), target_mask[r, pos] = 1 (no longer a target);
//   2. choose the next_count positions of step next_step among those still unknown (next_positions[r, :]).
// Shapes: logits (R, N, V) float32; positions (R, N) int64; tokens (R, L) int64; input_mask, target_mask (R, L)
// uint8 (bool); object_ids, sample_ids (R,) int64; next_positions (R, next_count) int64. N or next_count may be 0.
struct RoarStepArgs {
  const float* logits;
  const std::int64_t* positions;
  std::int64_t* tokens;
  std::uint8_t* input_mask;
  std::uint8_t* target_mask;
  const std::int64_t* object_ids;
  const std::int64_t* sample_ids;
  std::int64_t* next_positions;
  std::int64_t R, N, V, L;
  std::uint64_t seed;
  std::int64_t step, next_step, next_count;
  double temperature;
  std::int64_t top_k;
  double top_p;
};

namespace cpu {

// Scratch slots the CPU kernel needs (one per OpenMP thread).
std::int64_t roar_scratch_slots();

// CPU kernel, parallel over rows. scratch_f64: slots * 2V doubles, scratch_i64: slots * L int64, scratch_i32:
// slots * max(V, L) int32. Returns the number of (row, slot) samples whose logits were invalid (NaN, +inf, or all
// -inf; those tokens are left unrevealed) plus the number of rows with fewer than next_count unknown positions.
std::int64_t roar_step(const RoarStepArgs& args, double* scratch_f64, std::int64_t* scratch_i64,
                       std::int32_t* scratch_i32);

}  // namespace cpu

namespace cuda {

// Device scratch of the CUDA step, allocated by the caller (PyTorch's caching allocator, on the stream the step runs
// on), 8-byte aligned. The sampler needs 20 * V bytes per (row, slot) sample and the position draw 12 * L bytes per
// row; the step runs in launches of at most `sample_chunk` samples and `row_chunk` rows, reusing the same bytes, so
// memory stays bounded for any vocabulary: bytes >= max(sample_chunk * 20 * V, row_chunk * 12 * L).
struct RoarScratch {
  void* data;
  std::int64_t bytes;
  std::int64_t sample_chunk;
  std::int64_t row_chunk;
};

// CUDA kernel on device pointers (same layout), on `stream` (a cudaStream_t) of the current device. bad_count: one
// device int64, zeroed by the caller, incremented like the CPU return value. Defined in roar.cu, only in builds
// with CUDA. Never synchronises with the host.
void roar_step(const RoarStepArgs& args, const RoarScratch& scratch, void* stream, std::int64_t* bad_count);

}  // namespace cuda
}  // namespace aion_fast
