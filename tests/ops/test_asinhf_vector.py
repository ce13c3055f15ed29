"""The vector asinhf of the image/spectrum kernels must return the platform libm's asinhf bits for every float32.

PyTorch's CPU ``torch.asinh`` calls libm's ``asinhf`` per element; csrc/asinhf/asinhf_cpu.cpp replicates glibc
2.36's algorithm with AVX2/FMA and is used only after a self-check against the loaded libm. These tests compare
the replica itself (``impl="vector"``, whatever the self-check said) with libm and with ``torch.asinh``, and check
that the kernels stay exact on the libm fallback.
"""

from __future__ import annotations

import math
import os
import platform
import subprocess
import sys

import numpy as np
import pytest
import torch

from aion_fast import dispatch
from aion_fast.ops.image_preprocess import image_preprocess, torch_image_preprocess
from aion_fast.ops.spectrum_to_latent import spectrum_to_latent, torch_spectrum_to_latent
from tests.ops.test_image_preprocess import realistic_images, survey_args
from tests.ops.test_spectrum_to_latent import GRID, spectra

# asinhf's branch edges (|x| = 2^-15, 2, 2^15, inf) and the range's (0, smallest normal, largest finite)
BRANCH_EDGES = [0x38000000, 0x40000000, 0x47000000, 0x7F800000, 0x00800000, 0x7F7FFFFF, 0x00000000]
# inputs where log1pf's argument crosses its own edges: 0.41422 (k = 0 path), 1 + arg = 2, 2 sqrt(2), 4
LOG1P_ARGUMENT_EDGES = [0.41421356, 1.0, 1.8284271, 3.0]
SPECIALS = [
    0x7FC00000, 0xFFC00000, 0x7F800001, 0xFF800001, 0x7FC12345, 0xFFA54321, 0x7FFFFFFF, 0xFFFFFFFF,  # NaNs
    0x7F800000, 0xFF800000, 0x00000000, 0x80000000,  # +-inf, +-0
    0x00000001, 0x80000001, 0x007FFFFF, 0x807FFFFF, 0x00400000,  # subnormals
]  # fmt: skip


def bits_to_float(bits: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(bits, dtype=np.uint32).view(np.float32)


def windows(centres: list[int], half_width: int) -> np.ndarray:
    """All patterns within half_width ulp of each centre, both signs (uint32)."""
    offsets = np.arange(-half_width, half_width + 1, dtype=np.int64)
    magnitude = (np.asarray(centres, dtype=np.int64)[:, None] & 0x7FFFFFFF) + offsets[None, :]
    magnitude = magnitude[(magnitude >= 0) & (magnitude <= 0x7FFFFFFF)]
    return np.concatenate([magnitude, magnitude | 0x80000000]).astype(np.uint32)


def asinhf(ext, x: np.ndarray, impl: str) -> np.ndarray:
    out = np.empty_like(x)
    ext.asinhf_f32(x, out, impl)
    return out


def assert_same_bits(ours: np.ndarray, expected: np.ndarray, inputs: np.ndarray) -> None:
    a, b = ours.view(np.uint32), expected.view(np.uint32)
    differ = np.flatnonzero(a != b)
    assert differ.size == 0, (
        f"{differ.size}/{a.size} results differ, first: input bits {inputs.view(np.uint32)[differ[0]]:#010x} -> "
        f"{a[differ[0]]:#010x}, expected {b[differ[0]]:#010x}"
    )


@pytest.fixture
def libm_forced(ext):
    """Forces the kernels onto libm's asinhf for one test (test hook), then restores the self-check's verdict."""
    ext.asinhf_force_libm(True)
    yield ext
    ext.asinhf_force_libm(False)


# An odd multiplier: k * GOLDEN_STRIDE mod 2^32 visits every pattern once, and neighbours in a vector of 8 take
# different branches (the packing path of the kernel), where a stride of 1 mostly fills vectors of one branch.
GOLDEN_STRIDE = 0x9E3779B1


def test_stride_over_all_float_patterns(ext):
    """Every 4099th of the 2^32 float32 bit patterns (two phases), then 2^22 scattered ones: vector == libm."""
    count = (1 << 32) // 4099 + 1
    for first in (0, 2050):
        assert ext.asinhf_count_mismatches(first, 4099, count) == (0, None)
    assert ext.asinhf_count_mismatches(12345, GOLDEN_STRIDE, 1 << 22) == (0, None)


def test_branch_edges_specials_and_torch(ext):
    """+-1024 ulp around every branch edge, the log1pf argument edges, NaN payloads, +-inf, +-0, subnormals."""
    log1p_inputs = [int(np.float32(math.sinh(math.log1p(a))).view(np.uint32)) for a in LOG1P_ARGUMENT_EDGES]
    bits = np.concatenate([windows(BRANCH_EDGES, 1024), windows(log1p_inputs, 1024), np.array(SPECIALS, np.uint32)])
    x = bits_to_float(bits)
    vector = asinhf(ext, x, "vector")
    assert_same_bits(vector, asinhf(ext, x, "libm"), x)
    assert_same_bits(vector, torch.asinh(torch.from_numpy(x)).numpy(), x)
    assert_same_bits(asinhf(ext, x, "auto"), vector, x)


@pytest.mark.parametrize("scale", [1e-3, 1.0, 30.0, 1e4, 1e7])
def test_realistic_values_and_tails_match_torch(ext, scale):
    """Normal values of every scale, every length 0..40 (the vector tail), both equal to torch.asinh's bits."""
    g = torch.Generator().manual_seed(int(scale * 1000) % 9973)
    x = (torch.randn(200_003, generator=g) * scale).numpy()
    assert_same_bits(asinhf(ext, x, "vector"), torch.asinh(torch.from_numpy(x)).numpy(), x)
    for n in range(41):
        part = np.ascontiguousarray(x[:n])
        assert_same_bits(asinhf(ext, part, "vector"), torch.asinh(torch.from_numpy(part)).numpy(), part)


def test_in_place_is_allowed_and_bad_impl_raises(ext):
    x = np.linspace(-5, 5, 1001, dtype=np.float32)
    expected = torch.asinh(torch.from_numpy(x)).numpy()
    ext.asinhf_f32(x, x, "vector")
    assert_same_bits(x, expected, x)
    with pytest.raises(ValueError, match="impl"):
        ext.asinhf_f32(x, x, "fast")


def test_verdict_on_this_platform(ext):
    """On glibc 2.36 with an x86-64-v3 build the self-check must pass; elsewhere it says why not."""
    active, reason = ext.asinhf_vector_verified()
    assert isinstance(active, bool) and reason
    info = ext.build_info()
    assert (info["asinhf_vector"], info["asinhf"]) == (active, reason)
    libc, version = platform.libc_ver()
    v3 = "x86-64-v3" in info["arch_flags"]
    if libc == "glibc" and version == "2.36" and v3:
        assert active, reason


def test_fallback_hook_keeps_kernels_exact(libm_forced, monkeypatch):
    """With the kernels forced onto libm's asinhf they report it and still equal the reference bit for bit."""
    ext = libm_forced
    active, reason = ext.asinhf_vector_verified()
    assert not active and "forced" in reason
    monkeypatch.setenv(dispatch.ENV_VAR, "cpp")
    args = survey_args("HSC")
    flux = realistic_images(2, len(args["channels"]), 100, 100, seed=5)
    assert torch.equal(image_preprocess(flux, **args), torch_image_preprocess(flux, **args))
    s = spectra(3, 4646, 3550.0, 1.4, seed=7)
    ours = spectrum_to_latent(**s, grid=GRID, clip_ivar=100.0)
    assert torch.equal(ours, torch_spectrum_to_latent(**s, grid=GRID, clip_ivar=100.0))
    x = np.linspace(-100, 100, 999, dtype=np.float32)
    assert_same_bits(asinhf(ext, x, "auto"), asinhf(ext, x, "libm"), x)


def test_vector_path_keeps_kernels_exact(ext, monkeypatch):
    """The same kernels on the vector replica (when verified here) equal the reference bit for bit."""
    monkeypatch.setenv(dispatch.ENV_VAR, "cpp")
    args = survey_args("DES")
    flux = realistic_images(3, len(args["channels"]), 160, 160, seed=11)
    assert torch.equal(image_preprocess(flux, **args), torch_image_preprocess(flux, **args))
    s = spectra(4, 7781, 3600.0, 0.8, seed=3)
    ours = spectrum_to_latent(**s, grid=GRID, clip_flux=3.0)
    assert torch.equal(ours, torch_spectrum_to_latent(**s, grid=GRID, clip_flux=3.0))


def test_environment_variable_forces_libm(ext):
    """AION_FAST_ASINHF_LIBM=1 at start-up makes the self-check choose libm (fresh process)."""
    code = (
        "from aion_fast import dispatch; ext = dispatch.load_extension(); "
        "import numpy as np; x = np.linspace(-9, 9, 77, dtype=np.float32); o = np.empty_like(x); "
        "ext.asinhf_f32(x, o, 'auto'); l = np.empty_like(x); ext.asinhf_f32(x, l, 'libm'); "
        "print(ext.asinhf_vector_verified(), bool((o.view(np.uint32) == l.view(np.uint32)).all()))"
    )
    env = {**os.environ, "AION_FAST_ASINHF_LIBM": "1"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "(False, 'libm asinhf: forced by AION_FAST_ASINHF_LIBM') True" in result.stdout


@pytest.mark.slow
def test_exhaustive_all_float_patterns(ext):
    """All 2^32 float32 bit patterns, twice: in order (2^31 non-negative, then the 2^31 negative: vectors of one
    branch) and scattered (mixed vectors through the packing path). Vector replica == libm for every one."""
    assert ext.asinhf_count_mismatches(0, 1, 1 << 31) == (0, None)
    assert ext.asinhf_count_mismatches(1 << 31, 1, 1 << 31) == (0, None)
    assert ext.asinhf_count_mismatches(0, GOLDEN_STRIDE, 1 << 32) == (0, None)
