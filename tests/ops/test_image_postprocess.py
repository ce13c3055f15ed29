"""image_postprocess: every backend within 1e-6 relative of the codec's PyTorch decode epilogue (float32).

PyTorch's CPU sinh is itself two functions (vectorised loop, glibc scalar tail) that differ in the last bit, so the
backends are compared with a relative tolerance, not bit for bit (see the op's docstring).
"""

from __future__ import annotations

import pytest
import torch

from aion_fast import dispatch
from aion_fast.codecs.preprocessing import band_indices, survey_bands, zeropoint_scale
from aion_fast.ops.image_postprocess import image_postprocess, torch_image_postprocess

RTOL = 1e-6


def projection(dim: int = 54, bands: int = 9, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(bands, dim, generator=g) / dim**0.5, torch.randn(bands, generator=g) * 0.1


def decoder_output(batch: int, height: int, width: int, dim: int = 54, seed: int = 0) -> torch.Tensor:
    """Features whose compressed fluxes span sky noise to bright cores: sinh arguments from ~1e-6 to ~60."""
    g = torch.Generator().manual_seed(seed)
    spread = torch.logspace(-6, 0.8, height * width).view(1, 1, height, width)
    return torch.randn(batch, dim, height, width, generator=g) * spread


def assert_close_rel(ours: torch.Tensor, ref: torch.Tensor, rtol: float = RTOL) -> None:
    assert ours.shape == ref.shape and ours.dtype == ref.dtype == torch.float32 and ours.is_contiguous()
    both_nan = torch.isnan(ours) & torch.isnan(ref)
    err = torch.where(both_nan, 0.0, (ours.double() - ref.double()).abs())
    bad = ~(err <= rtol * ref.double().abs())
    bad &= ~(ours == ref) & ~both_nan  # equal infinities, NaN where the reference has NaN
    assert not bool(bad.any()), f"{int(bad.sum())}/{ours.numel()} beyond {rtol} relative, first at {bad.nonzero()[0]}"


@pytest.mark.parametrize("survey", ["DES", "HSC"])
@pytest.mark.parametrize(("batch", "height", "width"), [(1, 96, 96), (3, 7, 5), (7, 24, 31)])
def test_matches_reference(backend, survey, batch, height, width):
    weight, bias = projection()
    h = decoder_output(batch, height, width, seed=batch)
    channels = band_indices(survey_bands(survey))
    before = h.clone()
    ours = image_postprocess(h, weight, bias, channels, zeropoint_scale(survey))
    assert ours.shape == (batch, len(channels), height, width)
    assert_close_rel(ours, torch_image_postprocess(h, weight, bias, channels, zeropoint_scale(survey)))
    assert torch.equal(h, before), "the caller's tensor was modified"


def test_band_subset_order_and_layouts(backend):
    weight, bias = projection(seed=3)
    h = decoder_output(3, 20, 18, seed=3)
    channels = [8, 0, 5]
    ref = torch_image_postprocess(h, weight, bias, channels)
    assert_close_rel(image_postprocess(h.contiguous(memory_format=torch.channels_last), weight, bias, channels), ref)
    transposed = h.transpose(2, 3).contiguous().transpose(2, 3)  # non-contiguous (B, D, H, W)
    assert not transposed.is_contiguous()
    assert_close_rel(image_postprocess(transposed, weight, bias, channels), ref)
    assert_close_rel(image_postprocess(h.double(), weight, bias, channels), ref)


def test_bfloat16_input_is_upcast_exactly(backend):
    """bf16 features are exactly representable in float32: the result is the float32 epilogue of those values."""
    weight, bias = projection(seed=4)
    h = decoder_output(2, 12, 12, seed=4).bfloat16()
    ours = image_postprocess(h, weight, bias, [0, 1, 2, 3])
    assert_close_rel(ours, torch_image_postprocess(h.float(), weight, bias, [0, 1, 2, 3]))


def test_non_finite_values_propagate(backend):
    weight, bias = projection(seed=5)
    h = decoder_output(2, 8, 8, seed=5)
    h[1, 3, 2, 2] = float("nan")
    h[0, 0, 4, 4] = float("inf")
    ours = image_postprocess(h, weight, bias, [0, 1, 2, 3])
    ref = torch_image_postprocess(h, weight, bias, [0, 1, 2, 3])
    assert bool(ours[1, :, 2, 2].isnan().all()) and not bool(ours[1, :, 2, 3].isnan().any())
    assert torch.equal(ours.isnan(), ref.isnan()) and torch.equal(ours.isinf(), ref.isinf())
    assert_close_rel(ours, ref)


def test_cpp_sinh_is_the_rounded_exact_value(ext):
    """The C++ sinh (double precision, rounded once) equals float32(sinh in float64) on 2e5 spread inputs."""
    x = torch.cat([torch.randn(200_000) * torch.logspace(-8, 1.94, 200_000), torch.tensor([0.0, -0.0, 0.5, 89.4])])
    out = torch.empty_like(x)
    ext.sinh_f32(x.numpy(), out.numpy())
    assert torch.equal(out, x.double().sinh().float())


def test_bad_arguments_raise_value_error():
    weight, bias = projection()
    h = torch.zeros(1, 54, 4, 4)
    with pytest.raises(ValueError, match=r"\(B, D, H, W\)"):
        image_postprocess(h[0], weight, bias, [0])
    with pytest.raises(ValueError, match=r"weight must be \(NB, 54\)"):
        image_postprocess(h, weight[:, :50], bias, [0])
    with pytest.raises(ValueError, match="distinct values in \\[0, 9\\)"):
        image_postprocess(h, weight, bias, [0, 9])
    with pytest.raises(ValueError, match="distinct"):
        image_postprocess(h, weight, bias, [])
    with pytest.raises(ValueError, match="must be positive"):
        image_postprocess(h, weight, bias, [0], zeropoint_scale=0.0)


def test_compiles_with_torch_compile(backend):
    if backend != "cpp":
        pytest.skip("the registered custom op is the C++ path")
    weight, bias = projection()
    h = decoder_output(2, 10, 10)
    compiled = torch.compile(lambda x: image_postprocess(x, weight, bias, [1, 2]) * 2.0, fullgraph=True)
    assert_close_rel(compiled(h), torch_image_postprocess(h, weight, bias, [1, 2]) * 2.0)


def test_triton_backend_refuses_cpu_tensors(monkeypatch):
    monkeypatch.setenv(dispatch.ENV_VAR, "triton")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)  # with the interpreter on, forced Triton takes CPU tensors
    weight, bias = projection()
    with pytest.raises(dispatch.BackendUnavailableError, match="not on CUDA"):
        image_postprocess(torch.zeros(1, 54, 2, 2), weight, bias, [0])
