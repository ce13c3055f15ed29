// Declarations of the CPU ops exported by aion_fast._C: bound in csrc/bindings.cpp, defined (argument checks) in
// csrc/<op>/<op>.cpp, computed by the kernels of csrc/<op>/<op>_cpu.cpp (cpu_kernels.h).
//
// Conventions: every array is a numpy view of a CPU tensor, C-contiguous, checked with the macros of checks.h.
// M is the number of rows (all leading dimensions flattened), D the number of channels. Outputs are written in
// place into caller-allocated arrays; the GIL is released while the loops run.
#pragma once

#include <pybind11/numpy.h>

#include <cstdint>
#include <string>

namespace aion_fast {
namespace py = pybind11;

// FSQ index packing from tanh(z + shift), see csrc/fsq/fsq_cpu.cpp.
//   tanh_z: (M, D) float32, levels: (D,) int32, half_l: (D,) float32, offset: (D,) float32, out: (M,) int32.
// Returns the number of rows containing NaN (their index is written as -1).
std::int64_t fsq_encode_from_tanh(const py::array& tanh_z, const py::array& levels, const py::array& half_l,
                                  const py::array& offset, py::array& out);

// Binds the element-wise tanh that FSQ encode uses: MKL VML's VMSTANH_64_ from the already-loaded shared library
// at `library_path` (libtorch_cpu, whose CPU torch.tanh runs exactly that function). Never loads a library.
// Returns "" on success, else why not.
std::string fsq_bind_tanh(const std::string& library_path);

// The bound tanh: x (N,) float32 -> out (N,) float32 (for the dispatcher's one-off check against torch.tanh).
void fsq_tanh(const py::array& x, py::array& out);

// Fused FSQ encode, tanh included (bound with fsq_bind_tanh).  z: (O, D, I) float32 with any strides (read in
// place), shift/half_l/offset: (D,) float32, levels: (D,) int32, out: (O, I) int32.
// Returns the number of positions with a NaN (index -1).
std::int64_t fsq_encode(const py::array& z, const py::array& levels, const py::array& shift, const py::array& half_l,
                        const py::array& offset, py::array& out);

// FSQ encode by exact decision thresholds (derived and verified in aion_fast/ops/fsq.py).  z: (O, D, I) float32,
// any strides (read in place); shift: (D,) float32; thresholds: (T,) float32 ascending per channel; first: (D + 1,)
// int32 offsets into thresholds; basis: (D,) int32; out: (O, I) int32. Returns the number of NaN positions (-1).
std::int64_t fsq_encode_thresholds(const py::array& z, const py::array& shift, const py::array& thresholds,
                                   const py::array& first, const py::array& basis, std::int64_t base,
                                   py::array& out);

// FSQ index -> normalised code.  index: (M,) int32, levels: (D,) int32, out: (M, D) float32.
// Returns the number of indices outside [0, prod(levels)) (their rows are written as NaN).
std::int64_t fsq_decode(const py::array& index, const py::array& levels, py::array& out);

// LFQ sign bits -> index, first channel = most significant bit.  z: (O, D, I) float32 with 1 <= D <= 31 and any
// strides (read in place), out: (O, I) int32.
void lfq_encode(const py::array& z, py::array& out);

// LFQ index -> +-scale codes.  index: (M,) int32, out: (M, D) float32 with 1 <= D <= 31.
// Returns the number of indices outside [0, 2**D) (their rows are written as NaN).
std::int64_t lfq_decode(const py::array& index, double scale, py::array& out);

// Fused image preprocessing (csrc/image_preprocess/): crop window [top, top + S) x [left, left + S) of
// flux (B, C, H, W) float32 -> clip, rescale, arcsinh -> out (B, S, S, NB) float32 channels-last at channel (C,)
// int32 (absent channels 0); clamp_max: (C,) float32; nonfinite: (B,) int32 counts of window rows with NaN/inf.
// Returns the total number of window rows with NaN/inf.
std::int64_t image_preprocess(const py::array& flux, std::int64_t top, std::int64_t left, std::int64_t crop_size,
                              const py::array& channel, const py::array& clamp_max, double zeropoint_scale,
                              double range_compression_factor, double mult_factor, py::array& out,
                              py::array& nonfinite);

// Spectrum -> latent grid (csrc/spectrum_to_latent/): flux, istd (sqrt of the cleaned ivar), wavelength (B, L) float32,
// scale (B,) float32, grid (G,) float32 -> out (B, 2, G) float32 (cleaned, normalised, interpolated, arcsinh).
void spectrum_to_latent(const py::array& flux, const py::array& istd, const py::array& wavelength,
                        const py::array& scale, const py::array& grid, double input_scaling, bool has_clip_flux,
                        double clip_flux, py::array& out);

// Image decode epilogue (csrc/image_postprocess/): projected (B, H, W, NB) float32 (the 54 -> NB projection before
// its bias), bias (NB,) float32, channel (C,) int32 -> out (B, C, H, W) float32: bias, / kappa, / alpha, sinh,
// * alpha, * zeropoint_scale, for the requested channels.
void image_postprocess(const py::array& projected, const py::array& bias, const py::array& channel,
                       double range_compression_factor, double mult_factor, double zeropoint_scale, py::array& out);

// sinh of a float32 array (N,) into out (N,), as evaluated by image_postprocess (for tests).
void sinh_f32(const py::array& x, py::array& out);

// Spectrum decode epilogue (csrc/spectrum_to_observed/): values (B, K, G) float32 on grid (G,) -> flux (B, M) float32
// and mask (B, M) bool at wavelength (B, M) float32 (None: the grid itself), flux scaled by (B,) scale (None: not).
// Returns the number of mask values it could not decide (see the kernel; the caller recomputes the mask).
std::int64_t spectrum_to_observed(const py::array& values, const py::array& grid, const py::object& wavelength,
                                  const py::object& scale, py::array& flux, py::array& mask);

// ROAR sampling step (csrc/roar/): sample the N query slots of R chains from logits (R, N, V) float32 at
// positions (R, N) int64, reveal them in tokens (R, L) int64 / input_mask, target_mask (R, L) bool, then choose the
// next step's positions (R, next_count) int64 into next_positions; random numbers from Philox4x32-10 keyed by
// (seed, step, object_ids[r], sample_ids[r], position). Returns the number of invalid logit rows plus rows short of
// unknown positions (0 on success).
std::int64_t roar_step(const py::array& logits, const py::array& positions, py::array& tokens, py::array& input_mask,
                       py::array& target_mask, const py::array& object_ids, const py::array& sample_ids,
                       py::array& next_positions, std::uint64_t seed, std::int64_t step, std::int64_t next_step,
                       double temperature, std::int64_t top_k, double top_p);

// The same step on CUDA device pointers (R, N, V, L, next_count give the shapes above; bad_count: one zeroed device
// int64 that receives the error count; scratch: scratch_bytes of 8-byte aligned device memory, reused by launches of
// sample_chunk samples and row_chunk rows (roar_kernels.h, RoarScratch); stream: a cudaStream_t of the current
// device). Raises ValueError in builds without CUDA.
std::int64_t roar_step_cuda(std::uintptr_t logits, std::uintptr_t positions, std::uintptr_t tokens,
                            std::uintptr_t input_mask, std::uintptr_t target_mask, std::uintptr_t object_ids,
                            std::uintptr_t sample_ids, std::uintptr_t next_positions, std::uintptr_t bad_count,
                            std::int64_t R, std::int64_t N, std::int64_t V, std::int64_t L, std::int64_t next_count,
                            std::uint64_t seed, std::int64_t step, std::int64_t next_step, double temperature,
                            std::int64_t top_k, double top_p, std::uintptr_t scratch, std::int64_t scratch_bytes,
                            std::int64_t sample_chunk, std::int64_t row_chunk, std::uintptr_t stream);

// Whether roar_step_cuda has a kernel in this build.
bool roar_has_cuda();

// One Philox4x32-10 block (the generator of roar_step), for known-answer tests.
py::tuple philox4x32_10(std::uint32_t c0, std::uint32_t c1, std::uint32_t c2, std::uint32_t c3, std::uint32_t k0,
                        std::uint32_t k1);

// arcsinh of the image/spectrum kernels (csrc/asinhf/, asinhf_glibc.h): (True, why) when they use the verified
// vector replica of glibc's asinhf, (False, why not) when they call libm's asinhf per element.
py::tuple asinhf_vector_verified();

// asinhf of a float32 array x (N,) into out (N,); impl: "auto" (what the kernels use), "vector" (the replica, even
// unverified) or "libm" (for tests).
void asinhf_f32(const py::array& x, py::array& out, const std::string& impl);

// Compares the vector replica with libm's asinhf on the float bit patterns first + k * stride (mod 2^32),
// k < count <= 2^32: returns (number that differ, first differing pattern or None).
py::tuple asinhf_count_mismatches(std::uint32_t first, std::uint32_t stride, std::int64_t count);

// Test hook: True forces the kernels onto libm's asinhf, False restores the self-check's verdict.
void asinhf_force_libm(bool force);

// Winograd convolution tile transforms (csrc/winograd_conv2d/): x (B, H, W, C) f32 channels-last -> (T_c, n^2, C)
// into out for tiles [tile_begin, tile_begin + T_c) with bt (n, n) and output tile m; and back, mt (n^2, T_c, C) ->
// out (B, H_out, W_out, C) with at (m, n) and an optional (C,) bias.
void winograd_input_transform(const py::array& x, const py::array& bt, std::int64_t m, std::int64_t pad,
                              std::int64_t tiles_h, std::int64_t tiles_w, std::int64_t tile_begin, py::array& out);
void winograd_output_transform(const py::array& mt, const py::array& at, const py::object& bias, std::int64_t tiles_h,
                               std::int64_t tiles_w, std::int64_t tile_begin, py::array& out);

// Compile-time facts about this build (compiler, flags, OpenMP, CUDA) and which asinhf the kernels use, for
// diagnostics.
py::dict build_info();

}  // namespace aion_fast
