// aion_fast._C: the private compiled ops. Only m.def lines here; the ops live in csrc/<op>/, their contracts in
// csrc/include/aion_fast/ops.h. Public entry points are the dispatchers in aion_fast/ops/, which wrap these as
// torch.library custom ops.
#include <pybind11/pybind11.h>

#include "aion_fast/ops.h"
#include "aion_fast/quantizers.h"

namespace py = pybind11;
using namespace pybind11::literals;

namespace aion_fast {
void check_cpu_support();
}

// Bumped whenever a signature below changes; aion_fast/dispatch.py refuses a stale build with another number.
constexpr int kApiVersion = 8;

PYBIND11_MODULE(_C, m) {
  aion_fast::check_cpu_support();
  m.doc() = "aion_fast private CPU/CUDA ops (use aion_fast.ops instead)";
  m.attr("API_VERSION") = kApiVersion;
  m.def("build_info", &aion_fast::build_info, "Compiler, arch flags, OpenMP and CUDA of this build.");
  m.def("fsq_encode_from_tanh", &aion_fast::fsq_encode_from_tanh, "tanh_z"_a, "levels"_a, "half_l"_a, "offset"_a,
        "out"_a, "FSQ: tanh(z + shift) (M, D) f32 -> index (M,) i32 into out; returns the number of NaN rows.");
  m.def("fsq_decode", &aion_fast::fsq_decode, "index"_a, "levels"_a, "out"_a,
        "FSQ: index (M,) i32 -> codes (M, D) f32 into out; returns the number of out-of-range indices.");
  m.def("fsq_bind_tanh", &aion_fast::fsq_bind_tanh, "library_path"_a,
        "FSQ: bind MKL VML tanh from the loaded libtorch_cpu; returns '' on success, else the reason.");
  m.def("fsq_tanh", &aion_fast::fsq_tanh, "x"_a, "out"_a, "FSQ: the bound tanh, x (N,) f32 -> out (N,) f32.");
  m.def("fsq_encode", &aion_fast::fsq_encode, "z"_a, "levels"_a, "shift"_a, "half_l"_a, "offset"_a, "out"_a,
        "FSQ: z (O, D, I) f32 any strides -> index (O, I) i32 into out, tanh included; returns the NaN count.");
  m.def("fsq_encode_thresholds", &aion_fast::fsq_encode_thresholds, "z"_a, "shift"_a, "thresholds"_a, "first"_a,
        "basis"_a, "base"_a, "out"_a,
        "FSQ: z (O, D, I) f32 any strides -> index (O, I) i32 by decision thresholds; returns the NaN count.");
  m.def("lfq_encode", &aion_fast::lfq_encode, "z"_a, "out"_a,
        "LFQ: z (O, D, I) f32 any strides -> index (O, I) i32 into out.");
  m.def("fsq_encode_thresholds_new", &aion_fast::fsq_encode_thresholds_new, "z"_a, "shift"_a, "thresholds"_a,
        "first"_a, "basis"_a, "base"_a, "wide"_a = false,
        "FSQ: fsq_encode_thresholds into a new (O, I) i32 (wide: i64) array; returns (indices, NaN count).");
  m.def("lfq_encode_new", &aion_fast::lfq_encode_new, "z"_a, "wide"_a = false,
        "LFQ: lfq_encode into a new (O, I) i32 (wide: i64) array.");
  m.def("lfq_decode", &aion_fast::lfq_decode, "index"_a, "scale"_a, "out"_a,
        "LFQ: index (M,) i32 -> +-scale codes (M, D) f32 into out; returns the number of out-of-range indices.");
  m.def("image_preprocess", &aion_fast::image_preprocess, "flux"_a, "top"_a, "left"_a, "crop_size"_a, "channel"_a,
        "clamp_max"_a, "zeropoint_scale"_a, "range_compression_factor"_a, "mult_factor"_a, "out"_a, "nonfinite"_a,
        "Image: crop, clip, rescale, arcsinh, place (B, C, H, W) f32 -> (B, S, S, NB) f32 into out; returns the "
        "number of window rows with NaN/inf (per image in nonfinite).");
  m.def("spectrum_to_latent", &aion_fast::spectrum_to_latent, "flux"_a, "istd"_a, "wavelength"_a, "scale"_a,
        "grid"_a, "input_scaling"_a, "has_clip_flux"_a, "clip_flux"_a, "out"_a,
        "Spectrum: clean, normalise, interpolate onto the grid, arcsinh (B, L) f32 -> (B, 2, G) f32 into out.");
  m.def("image_postprocess", &aion_fast::image_postprocess, "projected"_a, "bias"_a, "channel"_a,
        "range_compression_factor"_a, "mult_factor"_a, "zeropoint_scale"_a, "out"_a,
        "Image decode: bias, inverse arcsinh, rescale, band selection (B, H, W, NB) f32 -> (B, C, H, W) f32 into out.");
  m.def("winograd_input_transform", &aion_fast::winograd_input_transform, "x"_a, "bt"_a, "m"_a, "pad"_a,
        "tiles_h"_a, "tiles_w"_a, "tile_begin"_a, "out"_a,
        "Winograd input tiles: x (B, H, W, C) f32 -> B^T d B (T_c, n^2, C) f32 into out.");
  m.def("winograd_output_transform", &aion_fast::winograd_output_transform, "mt"_a, "at"_a, "bias"_a, "tiles_h"_a,
        "tiles_w"_a, "tile_begin"_a, "out"_a,
        "Winograd output tiles: (n^2, T_c, C) f32 -> A^T M A + bias into out (B, H_out, W_out, C) f32.");
  m.def("sinh_f32", &aion_fast::sinh_f32, "x"_a, "out"_a, "float32 sinh of image_postprocess, (N,) -> (N,) into out.");
  m.def("spectrum_to_observed", &aion_fast::spectrum_to_observed, "values"_a, "grid"_a, "wavelength"_a, "scale"_a,
        "flux"_a, "mask"_a,
        "Spectrum decode: (B, K, G) f32 on the grid -> flux (B, M) f32 and mask (B, M) bool at wavelength; returns "
        "the number of undecided mask values.");
  m.def("asinhf_vector_verified", &aion_fast::asinhf_vector_verified,
        "(bool, reason): whether image_preprocess/spectrum_to_latent use the verified vector asinhf, else libm's.");
  m.def("asinhf_f32", &aion_fast::asinhf_f32, "x"_a, "out"_a, "impl"_a = "auto",
        "asinhf of x (N,) f32 into out; impl 'auto' (the kernels' choice), 'vector' or 'libm'.");
  m.def("asinhf_count_mismatches", &aion_fast::asinhf_count_mismatches, "first"_a, "stride"_a, "count"_a,
        "(n, first): vector asinhf vs libm asinhf on bit patterns first + k * stride (mod 2**32), k < count.");
  m.def("asinhf_force_libm", &aion_fast::asinhf_force_libm, "force"_a,
        "Test hook: True forces the kernels onto libm asinhf, False restores the self-check's verdict.");
  m.def("roar_step", &aion_fast::roar_step, "logits"_a, "positions"_a, "tokens"_a, "input_mask"_a, "target_mask"_a,
        "object_ids"_a, "sample_ids"_a, "next_positions"_a, "seed"_a, "step"_a, "next_step"_a, "temperature"_a,
        "top_k"_a, "top_p"_a,
        "ROAR: sample and reveal logits (R, N, V) f32 at positions (R, N), then draw next_positions (R, K); "
        "returns the number of invalid rows.");
  m.def("roar_step_cuda", &aion_fast::roar_step_cuda, "logits"_a, "positions"_a, "tokens"_a, "input_mask"_a,
        "target_mask"_a, "object_ids"_a, "sample_ids"_a, "next_positions"_a, "bad_count"_a, "R"_a, "N"_a, "V"_a,
        "L"_a, "next_count"_a, "seed"_a, "step"_a, "next_step"_a, "temperature"_a, "top_k"_a, "top_p"_a, "scratch"_a,
        "scratch_bytes"_a, "sample_chunk"_a, "row_chunk"_a, "stream"_a,
        "ROAR step on CUDA device pointers (same contract as roar_step).");
  m.def("roar_has_cuda", &aion_fast::roar_has_cuda, "Whether roar_step_cuda has a kernel in this build.");
  m.def("philox4x32_10", &aion_fast::philox4x32_10, "c0"_a, "c1"_a, "c2"_a, "c3"_a, "k0"_a, "k1"_a,
        "One Philox4x32-10 block: counter (c0..c3), key (k0, k1) -> 4 uint32 words.");
}
