"""image_preprocess: every backend must equal the codec's PyTorch preprocessing bit for bit (float32)."""

from __future__ import annotations

import pytest
import torch

from aion_fast.codecs.preprocessing import survey_bands, zeropoint_scale
from aion_fast.modalities import BAND_CLAMP_MAX, BAND_TO_INDEX
from aion_fast.ops.image_preprocess import center_crop, crop_origin, image_preprocess, torch_image_preprocess


def survey_args(survey: str) -> dict:
    bands = survey_bands(survey)
    return {
        "channels": [BAND_TO_INDEX[b] for b in bands],
        "clamp_max": [BAND_CLAMP_MAX[b] for b in bands],
        "zeropoint_scale": zeropoint_scale(survey),
    }


def realistic_images(batch: int, bands: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """Sky noise to bright cores: values from 1e-6 to beyond every clip bound, both signs, some exact zeros."""
    g = torch.Generator().manual_seed(seed)
    magnitude = torch.logspace(-6, 4, height * width).view(1, 1, height, width)
    flux = torch.randn(batch, bands, height, width, generator=g) * magnitude
    flux[..., ::17, ::13] = 0.0
    return flux


def assert_bitwise_equal(ours: torch.Tensor, ref: torch.Tensor) -> None:
    assert ours.shape == ref.shape and ours.dtype == ref.dtype == torch.float32
    differ = ours != ref
    assert not bool(differ.any()), f"{int(differ.sum())}/{ours.numel()} values differ, first at {differ.nonzero()[0]}"


@pytest.mark.parametrize("survey", ["DES", "HSC"])
@pytest.mark.parametrize(("batch", "height", "width"), [(1, 96, 96), (3, 101, 99), (7, 160, 160)])
def test_matches_reference_exactly(backend, survey, batch, height, width):
    args = survey_args(survey)
    flux = realistic_images(batch, len(args["channels"]), height, width, seed=batch)
    before = flux.clone()
    ours = image_preprocess(flux, **args)
    assert_bitwise_equal(ours, torch_image_preprocess(flux, **args))
    assert torch.equal(flux, before), "the caller's tensor was modified"


def test_band_subset_and_order(backend):
    channels, clamp_max = [BAND_TO_INDEX["DES-Z"], BAND_TO_INDEX["DES-G"]], [BAND_CLAMP_MAX["DES-Z"], 0.5]
    flux = realistic_images(3, 2, 100, 97)
    ours = image_preprocess(flux, channels, clamp_max, crop_size=33)
    assert_bitwise_equal(ours, torch_image_preprocess(flux, channels, clamp_max, crop_size=33))
    absent = [c for c in range(9) if c not in channels]
    assert not bool(ours[..., absent].any())


def test_non_contiguous_and_float64(backend):
    args = survey_args("DES")
    base = realistic_images(3, 4, 120, 110).double()
    strided = base.transpose(2, 3)  # non-contiguous (B, C, 110, 120)
    assert_bitwise_equal(image_preprocess(strided, **args), torch_image_preprocess(strided, **args))
    channels_last = base.float().contiguous(memory_format=torch.channels_last)
    assert_bitwise_equal(image_preprocess(channels_last, **args), torch_image_preprocess(channels_last, **args))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_window_names_rows(backend, bad):
    args = survey_args("DES")
    flux = realistic_images(4, 4, 100, 100)
    flux[2, 1, 50, 50] = bad
    flux[0, 0, 0, 0] = bad  # outside the central window: ignored
    with pytest.raises(ValueError, match=r"batch rows \[2\]"):
        image_preprocess(flux, **args)


def test_crop_origin_is_the_one_central_window():
    """Odd margins leave the extra pixel at the bottom/right; the data readers cut the same window."""
    from aion_fast.data.mmu import crop_window

    assert (
        crop_origin(96, 96, 96) == (0, 0)
        and crop_origin(101, 100, 96) == (2, 2)
        and crop_origin(97, 160, 96) == (0, 32)
    )
    assert crop_window(101, 100) == crop_origin(101, 100, 96)
    x = torch.arange(101 * 100.0).reshape(1, 1, 101, 100)
    window = center_crop(x, 96)
    assert window.data_ptr() == x[..., 2:, 2:].data_ptr() and torch.equal(window, x[..., 2:98, 2:98])  # a view
    with pytest.raises(ValueError, match="LegacySurveyImage.flux is 95x200 pixels but the codec needs at least 96x96"):
        crop_origin(95, 200, 96, "LegacySurveyImage.flux")


def test_bad_arguments_raise_value_error():
    args = survey_args("DES")
    with pytest.raises(ValueError, match="at least 96x96"):
        image_preprocess(torch.zeros(1, 4, 95, 100), **args)
    with pytest.raises(ValueError, match="4 bands but got 5 channels"):
        image_preprocess(torch.zeros(1, 4, 96, 96), [0, 1, 2, 3, 4], [1.0] * 4)
    with pytest.raises(ValueError, match="distinct"):
        image_preprocess(torch.zeros(1, 2, 96, 96), [1, 1], [1.0, 1.0])
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        image_preprocess(torch.zeros(4, 96, 96), **args)
    with pytest.raises(ValueError, match="floating"):
        image_preprocess(torch.zeros(1, 4, 96, 96, dtype=torch.int32), **args)


def test_compiles_with_torch_compile(backend):
    if backend != "cpp":
        pytest.skip("the registered custom op is the C++ path")
    args = survey_args("DES")
    flux = realistic_images(2, 4, 96, 96)
    compiled = torch.compile(lambda x: image_preprocess(x, **args) * 2.0, fullgraph=True)
    assert_bitwise_equal(compiled(flux), torch_image_preprocess(flux, **args) * 2.0)


def test_bfloat16_input(backend):
    """bf16 images are upcast exactly: the result is bit-identical to float32 images holding the same values, and
    within 2^-8 relative (+1e-6 absolute) of the float32 original (arcsinh's condition number is at most 1)."""
    args = survey_args("HSC")
    flux = realistic_images(3, 5, 97, 101, seed=5)
    low = flux.bfloat16()
    ours = image_preprocess(low, **args)
    assert_bitwise_equal(ours, torch_image_preprocess(low.float(), **args))
    exact = torch_image_preprocess(flux, **args)
    assert bool(((ours - exact).abs() <= 2**-8 * exact.abs() + 1e-6).all())
