// asinhf entry points of aion_fast._C (baseline code): which arcsinh the image/spectrum kernels use, and the test
// hooks of the vector replica of glibc's asinhf (csrc/asinhf/asinhf_cpu.cpp, contract in asinhf_glibc.h).
#include <cstdint>
#include <string>

#include "aion_fast/asinhf_glibc.h"
#include "aion_fast/checks.h"
#include "aion_fast/ops.h"

namespace aion_fast {

py::tuple asinhf_vector_verified() {
  const char* reason = "";
  bool vector = false;
  {
    py::gil_scoped_release release;  // the first call runs the self-check (milliseconds)
    vector = cpu::asinhf_vector_verified(&reason);
  }
  return py::make_tuple(vector, std::string(reason));
}

void asinhf_f32(const py::array& x, py::array& out, const std::string& impl) {
  AION_CHECK_ARRAY(x, float, 1);    // (N,)
  AION_CHECK_ARRAY(out, float, 1);  // (N,)
  AION_CHECK_DIM(out, 0, x.shape(0));
  AION_CHECK_OUTPUT(out);
  void (*fn)(const float*, float*, std::int64_t) = nullptr;
  if (impl == "auto") {
    fn = cpu::asinhf_array;
  } else if (impl == "vector") {
    fn = cpu::asinhf_array_vector;
  } else if (impl == "libm") {
    fn = cpu::asinhf_array_libm;
  } else {
    throw py::value_error("impl: expected 'auto', 'vector' or 'libm', got '" + impl + "'");
  }
  const auto* in = static_cast<const float*>(x.data());
  auto* o = static_cast<float*>(out.mutable_data());
  py::gil_scoped_release release;
  fn(in, o, x.shape(0));
}

py::tuple asinhf_count_mismatches(std::uint32_t first, std::uint32_t stride, std::int64_t count) {
  if (count < 0 || count > (std::int64_t{1} << 32)) {
    throw py::value_error("count: expected 0 <= count <= 2**32 float bit patterns, got " + std::to_string(count));
  }
  std::uint32_t first_mismatch = 0;
  std::int64_t bad = 0;
  {
    py::gil_scoped_release release;
    bad = cpu::asinhf_count_mismatches(first, stride, count, &first_mismatch);
  }
  if (bad == 0) return py::make_tuple(bad, py::none());
  return py::make_tuple(bad, first_mismatch);
}

void asinhf_force_libm(bool force) { cpu::asinhf_force_libm(force); }

}  // namespace aion_fast
