// Build facts and the load-time CPU check of aion_fast._C.
//
// This file and bindings.cpp are compiled for the baseline target of the toolchain (no AION_FAST_ARCH flags), so
// the check below runs before any instruction the CPU may lack: an extension built for x86-64-v3 and copied to an
// older CPU fails to import with a clear ImportError, and aion_fast falls back to PyTorch.
#include <pybind11/pybind11.h>

#include <string>

#include "aion_fast/ops.h"

#ifndef AION_FAST_ARCH_FLAGS
#define AION_FAST_ARCH_FLAGS ""
#endif

namespace aion_fast {

py::dict build_info() {
  py::dict info;
#if defined(__clang__)
  info["compiler"] = std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
  info["compiler"] = std::string("gcc ") + __VERSION__;
#else
  info["compiler"] = "unknown";
#endif
  info["arch_flags"] = AION_FAST_ARCH_FLAGS;
#ifdef AION_FAST_WITH_OPENMP
  info["openmp"] = true;
#else
  info["openmp"] = false;
#endif
#ifdef AION_FAST_WITH_CUDA
  info["cuda"] = true;
#else
  info["cuda"] = false;
#endif
  const py::tuple asinhf = asinhf_vector_verified();  // runs the one-time self-check of csrc/asinhf/
  info["asinhf_vector"] = asinhf[0];
  info["asinhf"] = asinhf[1];
  return info;
}

void check_cpu_support() {
#if defined(AION_FAST_REQUIRES_X86_64_V3) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  if (!(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("bmi2"))) {
    throw py::import_error(
        "aion_fast._C was built for x86-64-v3 (AVX2/FMA/BMI2) but this CPU lacks them; rebuild it here with "
        "`pip install -e .`, or build a portable one with AION_FAST_ARCH=baseline");
  }
#endif
}

}  // namespace aion_fast
