"""FSQ with one-level channels (the reference suite's MagViT tests build ``quantizer_levels=[1] * D``).

A one-level channel holds a single value: digit 0, code 0, radix 1. Its indices must therefore equal the reference's
indices of the same latents without that channel, on every backend. (The reference itself returns NaN codes and
indices cast from NaN for such channels; README, deliberate differences.)
"""

from __future__ import annotations

import pytest
import torch

from aion_fast import dispatch
from aion_fast.codecs import ImageCodec
from aion_fast.modalities import LegacySurveyImage
from aion_fast.quantizers import FiniteScalarQuantizer

aion_quantizers = pytest.importorskip("aion.codecs.quantizers")

#: (levels with one-level channels, the channels that have more than one level)
CASES = [([7, 1, 5, 5, 5], [0, 2, 3, 4]), ([1, 8, 1, 5], [1, 3]), ([2, 1], [0]), ([1, 21, 3], [1, 2])]


@pytest.fixture(params=["torch", "cpp"])
def backend(request, monkeypatch) -> str:
    if request.param == "cpp" and dispatch.load_extension() is None:
        pytest.skip(f"C++ extension not built: {dispatch.extension_error()}")
    monkeypatch.setenv(dispatch.ENV_VAR, request.param)
    return request.param


def _latents(channels: int, batch: int = 3, length: int = 97, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, channels, length, generator=g) * 2.5


@pytest.mark.parametrize("levels,active", CASES)
def test_indices_equal_reference_without_the_one_level_channels(backend, levels, active):
    ours = FiniteScalarQuantizer(levels)
    reference = aion_quantizers.FiniteScalarQuantizer([levels[d] for d in active])
    z = _latents(len(levels))
    expected = reference.encode(z[:, active]).long()
    assert ours.codebook_size == reference.codebook_size
    tokens = ours.encode(z)
    assert tokens.dtype == torch.int64 and tokens.shape == (3, 97)
    assert torch.equal(tokens, expected)
    assert torch.equal(ours.encode(z.movedim(1, -1), channel_first=False), expected)
    # Changing a one-level channel changes nothing.
    shifted = z.clone()
    shifted[:, [d for d in range(len(levels)) if d not in active]] += 100.0
    assert torch.equal(ours.encode(shifted), expected)


@pytest.mark.parametrize("levels,active", CASES)
def test_decode_and_quantize_put_zero_on_one_level_channels(backend, levels, active):
    ours = FiniteScalarQuantizer(levels)
    reference = aion_quantizers.FiniteScalarQuantizer([levels[d] for d in active])
    constant = [d for d in range(len(levels)) if d not in active]
    codes = torch.arange(ours.codebook_size).reshape(1, -1)
    decoded = ours.decode(codes)
    assert decoded.shape == (1, len(levels), ours.codebook_size) and decoded.dtype == torch.float32
    assert torch.equal(decoded[:, active], reference.decode(codes))
    assert torch.equal(decoded[:, constant], torch.zeros_like(decoded[:, constant]))

    z = _latents(len(levels), seed=1).requires_grad_()
    quantized = ours.quantize(z)
    assert torch.equal(quantized[:, active].detach(), reference.quantize(z[:, active].detach()))
    assert torch.equal(quantized[:, constant].detach(), torch.zeros_like(quantized[:, constant]))
    quantized.sum().backward()  # straight-through gradients as the reference's on the other channels, none here
    z_active = z.detach()[:, active].requires_grad_()
    reference.quantize(z_active).sum().backward()
    torch.testing.assert_close(z.grad[:, active], z_active.grad, rtol=1e-6, atol=0)
    assert torch.equal(z.grad[:, constant], torch.zeros_like(z.grad[:, constant]))


def test_all_one_level_channels_give_the_single_code(backend):
    q = FiniteScalarQuantizer([1, 1, 1, 1, 1])
    z = _latents(5)
    assert q.codebook_size == 1
    assert torch.equal(q.encode(z), torch.zeros(3, 97, dtype=torch.int64))
    assert torch.equal(q.decode(torch.zeros(2, 4, dtype=torch.int64)), torch.zeros(2, 5, 4))
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        q.decode(torch.ones(1, 1, dtype=torch.int64))


@pytest.mark.parametrize("embedding_dim", [5, 10])
def test_image_codec_with_one_level_quantizer_like_the_reference_suite(backend, embedding_dim):
    """The reference suite's MagViT configuration: 24x24 tokens per object, decoded back to the input's shape."""
    codec = ImageCodec(
        quantizer_levels=[1] * embedding_dim, hidden_dims=8, multisurvey_projection_dims=12, n_compressions=2,
        num_consecutive=4, embedding_dim=embedding_dim, range_compression_factor=0.01, mult_factor=10,
    )  # fmt: skip
    flux = torch.randn(4, 4, 96, 96, generator=torch.Generator().manual_seed(embedding_dim))
    image = LegacySurveyImage(flux=flux, bands=["DES-G", "DES-R", "DES-I", "DES-Z"])
    tokens = codec.encode(image)
    assert tokens.shape == (4, 24 * 24) and torch.equal(tokens, torch.zeros_like(tokens))
    decoded = codec.decode(tokens, bands=["DES-G", "DES-R", "DES-I", "DES-Z"])
    assert decoded.flux.shape == flux.shape and torch.isfinite(decoded.flux).all()


def test_levels_below_one_rejected():
    with pytest.raises(ValueError, match=">= 1"):
        FiniteScalarQuantizer([5, 0])
