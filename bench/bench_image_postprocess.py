"""``image_postprocess`` throughput (54 -> 9 projection, sinh, rescale, band selection): the reference ``aion`` code
vs aion_fast's PyTorch path (``torch``) vs its C++ path (``cpp``).

Every aion_fast result is checked against the reference's before timing, within 1e-5 relative (the reference's
``F.linear`` bias addition and PyTorch's two-faced CPU sinh round differently in the last bit, amplified by sinh;
the codec tests use the same bound).
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import shapes
import torch

pytest.importorskip("aion", reason="needs the reference package aion (polymathic-aion): pip install -e .[test]")
from aion.codecs.image import AutoencoderImageCodec as RefImageCodec
from aion.codecs.modules.subsampler import SubsampledLinear as RefSubsampledLinear
from aion.codecs.preprocessing.image import ImagePadder
from conftest import OP_IMPLS, op_batch, run_timed

from aion_fast.codecs.preprocessing import band_indices
from aion_fast.ops import image_postprocess


def _reference_image_postprocess(h: torch.Tensor, layer: RefSubsampledLinear, bands: list[str]) -> torch.Tensor:
    """The reference codec's decode steps after the MagViT decoder, with its own modules and method."""
    everything = torch.ones(h.shape[0], 9, dtype=torch.bool)
    compressed = RefImageCodec._reverse_range_compress(
        SimpleNamespace(mult_factor=10.0, range_compression_factor=0.01), layer(h, everything)
    )
    return ImagePadder().backward(compressed, bands)  # DES: the reference's rescaler multiplies by 1


@pytest.mark.parametrize("impl_env", OP_IMPLS, indirect=True)
def test_image_postprocess(benchmark, record, bench_device, impl_env):
    batch = op_batch(bench_device)
    torch.manual_seed(0)
    layer = RefSubsampledLinear(54, 9, subsample_in=False).to(bench_device)
    h = (torch.randn(batch, 54, shapes.IMAGE_SIZE, shapes.IMAGE_SIZE) * 0.3).to(bench_device)
    h = h.contiguous(memory_format=torch.channels_last)  # the MagViT decoder's output layout
    bands = shapes.LEGACY_BANDS
    benchmark.group = f"image_postprocess B={batch} 54x96x96 -> {len(bands)}x96x96"
    record(impl_env, batch)
    if impl_env == "reference":
        fn = lambda: _reference_image_postprocess(h, layer, bands)  # noqa: E731
    else:
        fn = lambda: image_postprocess(h, layer.weight, layer.bias, band_indices(bands))  # noqa: E731
        with torch.no_grad():
            ours, ref = fn(), _reference_image_postprocess(h, layer, bands)
        assert bool(((ours - ref).abs() <= 1e-5 * ref.abs()).all())
    with torch.no_grad():
        run_timed(benchmark, fn, bench_device, rounds=10)
