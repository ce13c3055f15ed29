// FSQ / LFQ entry points of aion_fast._C that allocate their output (the eager fast paths of aion_fast/ops/fsq.py and
// aion_fast/ops/lfq.py): same checks and kernels as the out-array versions in ops.h, minus the caller's allocation.
// Defined in csrc/fsq/fsq.cpp and csrc/lfq/lfq.cpp, bound in csrc/bindings.cpp.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>

namespace aion_fast {
namespace py = pybind11;

// fsq_encode_thresholds (ops.h) into a new (O, I) int32 array (int64 with wide: the quantizer modules' index
// dtype, written by the kernel, no second pass); returns (indices, number of NaN positions).
py::tuple fsq_encode_thresholds_new(const py::array& z, const py::array& shift, const py::array& thresholds,
                                    const py::array& first, const py::array& basis, std::int64_t base, bool wide);

// lfq_encode (ops.h) into a new (O, I) int32 array (int64 with wide).  z: (O, D, I) float32, 1 <= D <= 31, any
// strides.
py::array lfq_encode_new(const py::array& z, bool wide);

}  // namespace aion_fast
