// aion_fast._C: the private compiled ops. Only m.def lines here; the ops live in csrc/<op>/, their contracts in
// csrc/include/aion_fast/ops.h. Public entry points are the dispatchers in aion_fast/ops/, which wrap these as
// torch.library custom ops.
#include <pybind11/pybind11.h>

#include "aion_fast/ops.h"

namespace py = pybind11;
using namespace pybind11::literals;

namespace aion_fast {
void check_cpu_support();
}

// Bumped whenever a signature below changes; aion_fast/_backend.py refuses a stale build with another number.
constexpr int kApiVersion = 1;

PYBIND11_MODULE(_C, m) {
  aion_fast::check_cpu_support();
  m.doc() = "aion_fast private CPU/CUDA ops (use aion_fast.ops instead)";
  m.attr("API_VERSION") = kApiVersion;
  m.def("build_info", &aion_fast::build_info, "Compiler, arch flags, OpenMP and CUDA of this build.");
  m.def("fsq_encode_from_tanh", &aion_fast::fsq_encode_from_tanh, "tanh_z"_a, "levels"_a, "half_l"_a, "offset"_a,
        "out"_a, "FSQ: tanh(z + shift) (M, D) f32 -> index (M,) i32 into out; returns the number of NaN rows.");
  m.def("fsq_decode", &aion_fast::fsq_decode, "index"_a, "levels"_a, "out"_a,
        "FSQ: index (M,) i32 -> codes (M, D) f32 into out; returns the number of out-of-range indices.");
  m.def("lfq_encode", &aion_fast::lfq_encode, "z"_a, "out"_a, "LFQ: z (M, D) f32 -> index (M,) i32 into out.");
  m.def("lfq_decode", &aion_fast::lfq_decode, "index"_a, "scale"_a, "out"_a,
        "LFQ: index (M,) i32 -> +-scale codes (M, D) f32 into out; returns the number of out-of-range indices.");
}
