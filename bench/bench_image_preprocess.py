"""``image_preprocess`` throughput (crop, clip, rescale, arcsinh, placement): the reference ``aion`` code vs
aion_fast's PyTorch path (``torch``, ``AION_FAST_BACKEND=torch``) vs its C++ path (``cpp``, ``aion_fast._C``).

Inputs are realistic Legacy Survey cut-outs from :mod:`shapes`; every aion_fast result is checked bit-identical to
the reference's before timing. The C++ kernel must reproduce glibc's ``asinhf`` bit for bit (PyTorch's CPU arcsinh
is a per-element ``asinhf`` call): it runs an AVX2 replica of it, verified against the loaded libm at first use,
else the scalar libm call (``aion_fast._C.asinhf_vector_verified()`` says which; csrc/asinhf/asinhf_cpu.cpp).
"""

from __future__ import annotations

import pytest
import shapes
import torch

pytest.importorskip("aion", reason="needs the reference package aion (polymathic-aion): pip install -e .[test]")
from aion.codecs.preprocessing.image import Clamp, RescaleToLegacySurvey
from conftest import OP_IMPLS, op_batch, run_timed

from aion_fast.codecs.preprocessing import band_indices, zeropoint_scale
from aion_fast.modalities import BAND_CLAMP_MAX
from aion_fast.ops import image_preprocess
from aion_fast.ops.image_preprocess import center_crop


def _reference_image_preprocess(flux: torch.Tensor, bands: list[str], survey: str) -> torch.Tensor:
    """The reference codec's steps up to the padded 9-band input, with its own modules (no projection)."""
    x = center_crop(flux.clone(), shapes.IMAGE_SIZE)  # its Clamp writes into its input: give it a copy
    x = Clamp()(x, bands)
    x = RescaleToLegacySurvey().forward(x, survey)
    x = torch.arcsinh(x / 0.01) * 0.01 * 10.0
    padded = torch.zeros(x.shape[0], 9, *x.shape[2:], dtype=x.dtype)
    padded[:, band_indices(bands)] = x
    return padded.permute(0, 2, 3, 1)


@pytest.mark.parametrize("impl_env", OP_IMPLS, indirect=True)
@pytest.mark.parametrize("survey", ["DES", "HSC"])
def test_image_preprocess(benchmark, record, bench_device, impl_env, survey):
    bands = shapes.LEGACY_BANDS if survey == "DES" else shapes.HSC_BANDS
    batch = op_batch(bench_device)
    flux = shapes.legacy_images(batch).to(bench_device)
    if survey == "HSC":
        flux = torch.cat([flux, flux[:, :1]], dim=1)
    benchmark.group = f"image_preprocess {survey} B={batch} {len(bands)}x160x160 -> 96x96x9"
    record(impl_env, batch)
    args = (band_indices(bands), [BAND_CLAMP_MAX[b] for b in bands], zeropoint_scale(survey))
    if impl_env == "reference":
        fn = lambda: _reference_image_preprocess(flux, bands, survey)  # noqa: E731
    else:
        fn = lambda: image_preprocess(flux, *args)  # noqa: E731
        assert torch.equal(fn(), _reference_image_preprocess(flux, bands, survey))
    run_timed(benchmark, fn, bench_device, rounds=30)
