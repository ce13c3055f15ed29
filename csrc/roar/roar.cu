// ROAR sampling step on CUDA: the same maths as the CPU kernel (roar_math.h, __host__ __device__), so a seed gives
// the same tokens on both (up to exp() rounding differences, which can only matter when a uniform falls within
// ~1e-16 of a CDF boundary). Kept simple rather than fast: one thread per sampled (row, slot) runs the sequential
// sampler over V with its scratch in global memory, then one thread per row draws the next reveal permutation.
// A step samples at most a few hundred thousand tokens, a few milliseconds next to the decoder call.
// Scratch comes from the caller (PyTorch's allocator on this stream) and is reused chunk after chunk, so memory is
// bounded whatever R * N * V is; no allocation, no host synchronisation here.
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

__global__ void sample_kernel(RoarStepArgs a, std::int64_t begin, std::int64_t end, double* scratch_f64,
                              std::int32_t* scratch_i32, unsigned long long* bad) {
  const std::int64_t slot = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;  // in this chunk
  const std::int64_t i = begin + slot;
  if (i >= end) return;
  const std::int64_t r = i / a.N;
  const std::int64_t pos = a.positions[i];
  const double u = roar::uniform53(roar::chain_block(a.seed, a.step, a.object_ids[r], a.sample_ids[r], pos));
  double* z = scratch_f64 + slot * 2 * a.V;
  const std::int64_t token = roar::sample_token(a.logits + i * a.V, a.V, a.temperature, a.top_k, a.top_p, u, z,
                                                z + a.V, scratch_i32 + slot * a.V);
  if (token < 0) {
    atomicAdd(bad, 1ull);
    return;
  }
  a.tokens[r * a.L + pos] = token;
  a.input_mask[r * a.L + pos] = 0;
  a.target_mask[r * a.L + pos] = 1;
}

__global__ void select_kernel(RoarStepArgs a, std::int64_t begin, std::int64_t end, std::int64_t* keys,
                              std::int32_t* idx, unsigned long long* bad) {
  const std::int64_t slot = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;  // in this chunk
  const std::int64_t r = begin + slot;
  if (r >= end) return;
  const std::int64_t unknown =
      roar::select_positions(a.target_mask + r * a.L, a.L, a.seed, a.next_step, a.object_ids[r], a.sample_ids[r],
                             a.next_count, a.next_positions + r * a.next_count, keys + slot * a.L, idx + slot * a.L);
  if (unknown < a.next_count) atomicAdd(bad, 1ull);
}

}  // namespace

void roar_step(const RoarStepArgs& a, const RoarScratch& scratch, void* stream_ptr, std::int64_t* bad_count) {
  cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
  auto* bad = reinterpret_cast<unsigned long long*>(bad_count);
  constexpr int kThreads = 128;
  auto* bytes = static_cast<char*>(scratch.data);
  const std::int64_t samples = a.R * a.N;
  if (samples > 0) {
    const std::int64_t chunk = scratch.sample_chunk;
    if (chunk < 1 || chunk * 20 * a.V > scratch.bytes) throw std::invalid_argument("roar_step_cuda: scratch too small");
    auto* scratch_f64 = reinterpret_cast<double*>(bytes);
    auto* scratch_i32 = reinterpret_cast<std::int32_t*>(bytes + sizeof(double) * chunk * 2 * a.V);
    for (std::int64_t begin = 0; begin < samples; begin += chunk) {
      const std::int64_t end = begin + chunk < samples ? begin + chunk : samples;
      const unsigned blocks = static_cast<unsigned>((end - begin + kThreads - 1) / kThreads);
      sample_kernel<<<blocks, kThreads, 0, stream>>>(a, begin, end, scratch_f64, scratch_i32, bad);
      check(cudaGetLastError(), "sample kernel launch");
    }
  }
  if (a.next_count > 0 && a.R > 0) {
    const std::int64_t chunk = scratch.row_chunk;
    if (chunk < 1 || chunk * 12 * a.L > scratch.bytes) throw std::invalid_argument("roar_step_cuda: scratch too small");
    auto* keys = reinterpret_cast<std::int64_t*>(bytes);
    auto* idx = reinterpret_cast<std::int32_t*>(bytes + sizeof(std::int64_t) * chunk * a.L);
    for (std::int64_t begin = 0; begin < a.R; begin += chunk) {
      const std::int64_t end = begin + chunk < a.R ? begin + chunk : a.R;
      const unsigned blocks = static_cast<unsigned>((end - begin + kThreads - 1) / kThreads);
      select_kernel<<<blocks, kThreads, 0, stream>>>(a, begin, end, keys, idx, bad);
      check(cudaGetLastError(), "select kernel launch");
    }
  }
}

}  // namespace cuda
}  // namespace aion_fast
