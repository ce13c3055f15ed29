// Declarations of the CPU ops exported by aion_fast._C: bound in csrc/bindings.cpp, defined (argument checks) in
// csrc/<op>/<op>.cpp, computed by the kernels of csrc/<op>/<op>_cpu.cpp (cpu_kernels.h).
//
// Conventions: every array is a numpy view of a CPU tensor, C-contiguous, checked with the macros of checks.h.
// M is the number of rows (all leading dimensions flattened), D the number of channels. Outputs are written in
// place into caller-allocated arrays; the GIL is released while the loops run.
#pragma once

#include <pybind11/numpy.h>

#include <cstdint>

namespace aion_fast {
namespace py = pybind11;

// FSQ index packing from tanh(z + shift), see csrc/fsq/fsq_cpu.cpp.
//   tanh_z: (M, D) float32, levels: (D,) int32, half_l: (D,) float32, offset: (D,) float32, out: (M,) int32.
// Returns the number of rows containing NaN (their index is written as -1).
std::int64_t fsq_encode_from_tanh(const py::array& tanh_z, const py::array& levels, const py::array& half_l,
                                  const py::array& offset, py::array& out);

// FSQ index -> normalised code.  index: (M,) int32, levels: (D,) int32, out: (M, D) float32.
// Returns the number of indices outside [0, prod(levels)) (their rows are written as NaN).
std::int64_t fsq_decode(const py::array& index, const py::array& levels, py::array& out);

// LFQ sign bits -> index, first channel = most significant bit.  z: (M, D) float32 with 1 <= D <= 31,
// out: (M,) int32.
void lfq_encode(const py::array& z, py::array& out);

// LFQ index -> +-scale codes.  index: (M,) int32, out: (M, D) float32 with 1 <= D <= 31.
// Returns the number of indices outside [0, 2**D) (their rows are written as NaN).
std::int64_t lfq_decode(const py::array& index, double scale, py::array& out);

// Compile-time facts about this build (compiler, flags, OpenMP, CUDA), for diagnostics.
py::dict build_info();

}  // namespace aion_fast
