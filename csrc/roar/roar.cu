// ROAR sampling step on CUDA: the same maths as the CPU kernel (roar_math.h, __host__ __device__), so a seed gives
// the same tokens on both (up to exp() rounding differences, which can only matter when a uniform falls within
// ~1e-16 of a CDF boundary). Kept simple rather than fast: one thread per sampled (row, slot) runs the sequential
// sampler over V with its scratch in global memory, then one thread per row draws the next reveal permutation.
// A step samples at most a few hundred thousand tokens, a few milliseconds next to the decoder call.
#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "roar_kernels.h"
#include "roar_math.h"

namespace aion_fast {
namespace cuda {
namespace {

void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) throw std::runtime_error(std::string("roar_step_cuda: ") + what + ": " +
                                                      cudaGetErrorString(status));
}

__global__ void sample_kernel(RoarStepArgs a, double* scratch_f64, std::int32_t* scratch_i32,
                              unsigned long long* bad) {
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= a.R * a.N) return;
  const std::int64_t r = i / a.N;
  const std::int64_t pos = a.positions[i];
  const double u = roar::uniform53(roar::chain_block(a.seed, a.step, a.object_ids[r], a.sample_ids[r], pos));
  double* z = scratch_f64 + i * 2 * a.V;
  const std::int64_t token = roar::sample_token(a.logits + i * a.V, a.V, a.temperature, a.top_k, a.top_p, u, z,
                                                z + a.V, scratch_i32 + i * a.V);
  if (token < 0) {
    atomicAdd(bad, 1ull);
    return;
  }
  a.tokens[r * a.L + pos] = token;
  a.input_mask[r * a.L + pos] = 0;
  a.target_mask[r * a.L + pos] = 1;
}

__global__ void select_kernel(RoarStepArgs a, std::int64_t* keys, std::int32_t* idx, unsigned long long* bad) {
  const std::int64_t r = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= a.R) return;
  const std::int64_t unknown =
      roar::select_positions(a.target_mask + r * a.L, a.L, a.seed, a.next_step, a.object_ids[r], a.sample_ids[r],
                             a.next_count, a.next_positions + r * a.next_count, keys + r * a.L, idx + r * a.L);
  if (unknown < a.next_count) atomicAdd(bad, 1ull);
}

}  // namespace

void roar_step(const RoarStepArgs& a, void* stream_ptr, std::int64_t* bad_count) {
  cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
  auto* bad = reinterpret_cast<unsigned long long*>(bad_count);
  constexpr int kThreads = 128;
  const std::int64_t samples = a.R * a.N;
  if (samples > 0) {
    double* scratch_f64 = nullptr;
    std::int32_t* scratch_i32 = nullptr;
    check(cudaMallocAsync(&scratch_f64, sizeof(double) * samples * 2 * a.V, stream), "scratch allocation");
    check(cudaMallocAsync(&scratch_i32, sizeof(std::int32_t) * samples * a.V, stream), "scratch allocation");
    const unsigned blocks = static_cast<unsigned>((samples + kThreads - 1) / kThreads);
    sample_kernel<<<blocks, kThreads, 0, stream>>>(a, scratch_f64, scratch_i32, bad);
    check(cudaGetLastError(), "sample kernel launch");
    check(cudaFreeAsync(scratch_f64, stream), "scratch release");
    check(cudaFreeAsync(scratch_i32, stream), "scratch release");
  }
  if (a.next_count > 0 && a.R > 0) {
    std::int64_t* keys = nullptr;
    std::int32_t* idx = nullptr;
    check(cudaMallocAsync(&keys, sizeof(std::int64_t) * a.R * a.L, stream), "scratch allocation");
    check(cudaMallocAsync(&idx, sizeof(std::int32_t) * a.R * a.L, stream), "scratch allocation");
    const unsigned blocks = static_cast<unsigned>((a.R + kThreads - 1) / kThreads);
    select_kernel<<<blocks, kThreads, 0, stream>>>(a, keys, idx, bad);
    check(cudaGetLastError(), "select kernel launch");
    check(cudaFreeAsync(keys, stream), "scratch release");
    check(cudaFreeAsync(idx, stream), "scratch release");
  }
}

}  // namespace cuda
}  // namespace aion_fast
