"""Triton image preprocessing kernel against the PyTorch reference (spectra: test_spectrum_to_latent_kernels.py).

Under the interpreter the arcsinh is a formula (no libdevice), so values are compared with a stated tolerance:
2e-6 relative to each value (float32; the formula's error, a few ulps) and 1e-7 absolute near 0. On a GPU the same
tolerance applies; bit equality with PyTorch's CUDA asinh has not been measured yet (no device in CI).
"""

from __future__ import annotations

import torch

from aion_fast.ops.image_preprocess import torch_image_preprocess
from tests.ops.test_image_preprocess import realistic_images, survey_args

RTOL, ATOL = 2e-6, 1e-7


def assert_close(ours: torch.Tensor, ref: torch.Tensor) -> None:
    ours, ref = ours.cpu(), ref.cpu()
    assert ours.shape == ref.shape
    both_nan = torch.isnan(ours) & torch.isnan(ref)
    err = torch.where(both_nan, 0.0, (ours - ref).abs())
    bound = RTOL * ref.abs() + ATOL
    bad = ~(err <= torch.where(both_nan, 1.0, bound))
    assert not bool(bad.any()), f"{int(bad.sum())} values outside tolerance, max err {float(err.max()):.3e}"


def test_image_preprocess_kernel(device):
    from aion_fast.kernels.image_preprocess import image_preprocess_fwd

    for survey, (batch, size, crop) in (("DES", (3, 37, 31)), ("HSC", (1, 40, 40))):
        args = survey_args(survey)
        flux = realistic_images(batch, len(args["channels"]), size, size + 1, seed=batch)
        ref = torch_image_preprocess(flux.to(device), **args, crop_size=crop)  # same-device oracle
        ours, nonfinite = image_preprocess_fwd(
            flux.to(device), args["channels"], args["clamp_max"], args["zeropoint_scale"], 0.01, 10.0, crop, 9
        )
        assert_close(ours, ref)
        assert nonfinite.shape == (batch * len(args["channels"]),) and not bool(nonfinite.any())
        assert not bool(ours[..., [c for c in range(9) if c not in args["channels"]]].cpu().any())
        # non-finite values inside the window are counted per (image, band); outside it they are not read
        bad = flux.clone()
        top = (size - crop) // 2
        bad[0, 1, top + 2, top + 3], bad[-1, 0, top, top] = float("nan"), float("inf")
        if size > crop:  # outside the window: never read, never counted
            bad[0, 0, 0, -1] = float("nan")
        counts = image_preprocess_fwd(
            bad.to(device), args["channels"], args["clamp_max"], args["zeropoint_scale"], 0.01, 10.0, crop, 9
        )[1].cpu()
        expected = torch.zeros(batch * len(args["channels"]), dtype=torch.int32)
        expected[1] += 1
        expected[(batch - 1) * len(args["channels"])] += 1
        assert torch.equal(counts, expected)
