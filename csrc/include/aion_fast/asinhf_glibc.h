// Element-wise float32 arcsinh bit-identical to the platform's libm asinhf (csrc/asinhf/asinhf_cpu.cpp).
//
// PyTorch's CPU torch.asinh calls libm's asinhf per element, and glibc's asinhf (up to 2.40) is not correctly
// rounded, so only its own algorithm reproduces its bits. asinhf_cpu.cpp holds an AVX2/FMA replica of glibc
// 2.36's asinhf (fdlibm's branches, log1pf, and the FMA variant of the ARM optimized-routines logf that x86-64
// glibc selects at run time). It is used only after a one-time self-check against the libm asinhf actually loaded
// in this process (~236k probes covering every branch, its edges, random magnitudes and a stride over all 2^32
// float bit patterns, once per process); on any difference (another glibc, e.g. >= 2.41 with the CORE-MATH asinhf, musl, a build
// without AVX2/FMA) or when AION_FAST_ASINHF_LIBM=1 is set, asinhf_array calls libm's asinhf per element instead.
// Either way asinhf_array returns the platform libm's bits. Rules of cpu_kernels.h apply (no std templates, no heap,
// no exceptions): the kernels of csrc/<op>/<op>_cpu.cpp call these functions directly.
#pragma once

#include <cstdint>

namespace aion_fast {
namespace cpu {

// out[k] = asinhf(in[k]) for 0 <= k < n (in == out allowed), bits of the platform's libm asinhf: the verified
// vector replica, else the libm call. The first call runs the self-check (thread-safe, a few milliseconds).
void asinhf_array(const float* in, float* out, std::int64_t n);

// Whether asinhf_array uses the vector replica (runs the self-check if it has not run yet). *reason (if not null)
// receives a static string saying why or why not.
bool asinhf_vector_verified(const char** reason);

// Test hook: force asinhf_array onto the libm call (true) or back to the self-check's verdict (false).
void asinhf_force_libm(bool force);

// The vector replica itself, whatever the self-check said (libm per element when built without AVX2/FMA).
void asinhf_array_vector(const float* in, float* out, std::int64_t n);

// libm's asinhf per element.
void asinhf_array_libm(const float* in, float* out, std::int64_t n);

// Compares the vector replica with libm asinhf on the `count` float bit patterns first + k * stride (mod 2^32),
// k = 0 .. count - 1 (OpenMP). Returns the number of patterns whose result bits differ; *first_mismatch receives
// the pattern of the smallest such k (unchanged when none).
std::int64_t asinhf_count_mismatches(std::uint32_t first, std::uint32_t stride, std::int64_t count,
                                     std::uint32_t* first_mismatch);

}  // namespace cpu
}  // namespace aion_fast
