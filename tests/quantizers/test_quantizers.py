"""Quantizers against the reference package's on identical state: indices exact, codes within fp32 tolerance."""

from __future__ import annotations

import math

import pytest
import torch

pytest.importorskip("aion", reason="needs the reference package aion (polymathic-aion): pip install -e .[test]")
from aion.codecs.quantizers import FiniteScalarQuantizer as RefFSQ
from aion.codecs.quantizers import LucidrainsLFQ as RefLFQ
from aion.codecs.quantizers import ScalarLinearQuantizer as RefLinear
from aion.codecs.quantizers.scalar import (
    ComposedScalarQuantizer as RefComposed,
)
from aion.codecs.quantizers.scalar import (
    IdentityQuantizer as RefIdentity,
)
from aion.codecs.quantizers.scalar import (
    MultiScalarCompressedReservoirQuantizer as RefMulti,
)
from aion.codecs.quantizers.scalar import (
    ScalarLogReservoirQuantizer as RefLogReservoir,
)
from aion.codecs.quantizers.scalar import (
    ScalarReservoirQuantizer as RefReservoir,
)

from aion_fast.quantizers import (
    ComposedScalarQuantizer,
    FiniteScalarQuantizer,
    IdentityQuantizer,
    LookupFreeQuantizer,
    MultiScalarCompressedReservoirQuantizer,
    ScalarLinearQuantizer,
    ScalarLogReservoirQuantizer,
    ScalarReservoirQuantizer,
)
from tests.utils import assert_close_rel, assert_tokens_equal

FSQ_LEVELS = [[7, 5, 5, 5, 5], [8, 5, 5, 5], [8, 8, 8, 5, 5, 5], [3, 4]]


@pytest.mark.parametrize("levels", FSQ_LEVELS)
@pytest.mark.parametrize("shape", [(1, 24, 24), (3, 7, 5), (7, 1, 1)])
def test_fsq_matches_reference(levels, shape):
    ours, ref = FiniteScalarQuantizer(levels), RefFSQ(levels)
    assert list(ours.state_dict()) == list(ref.state_dict())
    b, h, w = shape
    z = torch.randn(b, len(levels), h, w) * 2
    z_before = z.clone()
    tokens = ours.encode(z)
    assert tokens.dtype == torch.int64 and tokens.shape == (b, h, w)
    assert_tokens_equal(tokens, ref.encode(z), "fsq indices")
    assert torch.equal(z, z_before)
    assert_close_rel(ours.decode(tokens), ref.decode(tokens.int()).float())
    assert_close_rel(ours.quantize(z), ref.quantize(z))
    assert int(tokens.min()) >= 0 and int(tokens.max()) < math.prod(levels)


def test_fsq_rounding_boundaries_and_large_values():
    levels = [7, 5, 5, 5, 5]
    ours, ref = FiniteScalarQuantizer(levels), RefFSQ(levels)
    half = torch.tensor([(v - 1) * (1 + 1e-3) / 2 for v in levels])
    offset = torch.tensor([0.0 if v % 2 else 0.5 for v in levels])
    shift = torch.atanh(offset / half)
    # Latents whose bounded value lands exactly on k + 0.5 (the rounding boundary), plus huge and infinite values.
    k = torch.arange(-2, 2).float()[:, None] + 0.5
    z_boundary = torch.atanh(((k + offset) / half).clamp(-0.999, 0.999)) - shift
    z = torch.cat([z_boundary, torch.full((2, 5), 1e6), torch.full((2, 5), -1e6)]).T[None]  # (1, 5, 8)
    z = torch.cat([z, torch.full((1, 5, 1), float("inf")), torch.full((1, 5, 1), float("-inf"))], dim=2)
    assert_tokens_equal(ours.encode(z), ref.encode(z), "fsq boundary indices")


def test_fsq_channel_last_layout_and_non_contiguous():
    q = FiniteScalarQuantizer([8, 5, 5, 5])
    z = torch.randn(3, 4, 6, 6)
    channel_last = z.permute(0, 2, 3, 1)  # non-contiguous view
    assert_tokens_equal(q.encode(channel_last, channel_first=False), q.encode(z))
    assert q.decode(q.encode(z), channel_first=False).shape == (3, 6, 6, 4)


def test_fsq_fp32_under_autocast():
    q = FiniteScalarQuantizer([7, 5, 5, 5, 5])
    z = torch.randn(2, 5, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        tokens = q.encode(z)
        quantized = q.quantize(z)
    assert_tokens_equal(tokens, q.encode(z))
    assert quantized.dtype == torch.float32


def test_fsq_bad_inputs():
    q = FiniteScalarQuantizer([7, 5, 5, 5, 5])
    with pytest.raises(ValueError, match="5 channels"):
        q.encode(torch.randn(2, 4, 3))
    with pytest.raises(ValueError, match=r"\[0, 4375\)"):
        q.decode(torch.tensor([[4375]]))
    with pytest.raises(ValueError, match="levels"):
        FiniteScalarQuantizer([0, 5])
    with pytest.raises(ValueError, match="levels"):
        FiniteScalarQuantizer([])


@pytest.mark.parametrize("batch,length", [(1, 272), (3, 17), (7, 1)])
def test_lfq_matches_reference(batch, length):
    ours, ref = LookupFreeQuantizer(dim=10, codebook_size=1024), RefLFQ(dim=10, codebook_size=1024)
    assert list(ours.state_dict()) == list(ref.state_dict())
    z = torch.randn(batch, 10, length)
    z[0, :, 0] = 0.0  # exact zeros are "not positive"
    tokens = ours.encode(z)
    assert tokens.dtype == torch.int64 and tokens.shape == (batch, length)
    assert_tokens_equal(tokens, ref.eval().encode(z), "lfq indices")
    assert_close_rel(ours.decode(tokens), ref.decode(tokens))


def test_lfq_with_projection_matches_reference():
    ref = RefLFQ(dim=16, codebook_size=1024).eval()
    ours = LookupFreeQuantizer(dim=16, codebook_size=1024)
    ours.load_state_dict(ref.state_dict())
    z = torch.randn(3, 16, 9)
    assert_tokens_equal(ours.encode(z), ref.encode(z))
    assert_close_rel(ours.decode(ours.encode(z)), ref.decode(ref.encode(z)))


def test_lfq_training_loss_matches_reference():
    ref = RefLFQ(dim=10, codebook_size=1024).train()
    ours = LookupFreeQuantizer(dim=10, codebook_size=1024)
    z = torch.randn(4, 10, 33)
    ref_q, ref_loss, _ = ref(z)
    our_q, our_loss, _ = ours(z)
    assert_close_rel(our_q, ref_q)
    assert_close_rel(our_loss, ref_loss, rtol=1e-5)
    z.requires_grad_(True)
    ours(z)[1].backward()
    assert z.grad is not None and torch.isfinite(z.grad).all()


def test_lfq_nan_maps_to_bit_zero():
    q = LookupFreeQuantizer(dim=10, codebook_size=1024)
    z = torch.full((1, 10, 2), float("nan"))
    assert q.encode(z).tolist() == [[0, 0]]


def _fitted(ref_quantizer, values):
    ref_quantizer._update_reservoirs(values)
    return ref_quantizer


def test_reservoir_quantizers_match_reference():
    data = torch.randn(3000) * 3 + 1
    ref = _fitted(RefReservoir(1024, 2000), data)
    ours = ScalarReservoirQuantizer(1024, 2000)
    ours.load_state_dict(ref.state_dict())
    probe = torch.cat([torch.randn(500) * 5, ref._index_to_val[:50], torch.tensor([-1e9, 1e9])])
    assert_tokens_equal(ours.encode(probe), ref.encode(probe))
    codes = ours.encode(probe)
    assert_close_rel(ours.decode(codes), ref.decode(codes))

    flux = torch.rand(3000) * 100 - 5  # negative fluxes hit the log floor
    ref_log = _fitted(RefLogReservoir(1024, 2000), flux)
    ours_log = ScalarLogReservoirQuantizer(1024, 2000)
    ours_log.load_state_dict(ref_log.state_dict())
    probe = torch.cat([torch.rand(500) * 200 - 10, torch.tensor([0.0, math.exp(-3.0)])])
    assert_tokens_equal(ours_log.encode(probe), ref_log.encode(probe))
    assert_close_rel(ours_log.decode(ours_log.encode(probe)), ref_log.decode(ref_log.encode(probe)))


def test_multi_scalar_quantizer_matches_reference():
    coefficients = torch.randn(2000, 55) * torch.logspace(2, -1, 55)
    ref = RefMulti(["arcsinh"], ["sinh"], 256, 1000, num_quantizers=55)
    ref._update_reservoirs(coefficients)
    ours = MultiScalarCompressedReservoirQuantizer(["arcsinh"], ["sinh"], 256, 1000, num_quantizers=55)
    ours.load_state_dict(ref.state_dict())
    probe = torch.randn(7, 55) * 50
    tokens = ours.encode(probe)
    assert tokens.shape == (7, 55)
    assert_tokens_equal(tokens, ref.encode(probe))
    assert_close_rel(ours.decode(tokens), ref.decode(tokens))


def test_linear_composed_identity_match_reference():
    ours, ref = ScalarLinearQuantizer(1024, (0.0, 1.0)), RefLinear(1024, (0.0, 1.0))
    z = torch.cat([torch.rand(300), torch.tensor([-0.5, 0.0, 1.0, 3.0])])
    assert_tokens_equal(ours.encode(z), ref.encode(z))
    assert_close_rel(ours.decode(ours.encode(z)), ref.decode(ref.encode(z)))

    from collections import OrderedDict

    ref_res = _fitted(RefReservoir(64, 500), torch.randn(800))
    ref_c = RefComposed(OrderedDict(X=RefIdentity(96), E=ref_res))
    res = ScalarReservoirQuantizer(64, 500)
    res.load_state_dict(ref_res.state_dict())
    ours_c = ComposedScalarQuantizer(OrderedDict(X=IdentityQuantizer(96), E=res))
    assert list(ours_c.state_dict()) == list(ref_c.state_dict())
    columns = {"X": torch.randint(0, 96, (40,)), "E": torch.randn(40)}
    codes = ours_c.encode(columns)
    assert_tokens_equal(codes, ref_c.encode(columns))
    codes[0, 1] = 10_000  # out of range for column E -> -1
    decoded, ref_decoded = ours_c.decode(codes), ref_c.decode(codes.clone())
    for name in columns:
        assert_close_rel(decoded[name].float(), ref_decoded[name].float())
    assert decoded["E"][0] == -1


def test_reservoir_update_is_algorithm_r():
    """Every stream position ends in the reservoir with probability k/n (chi-square over positions)."""
    k, n, trials = 20, 200, 400
    counts = torch.zeros(n)
    generator = torch.Generator().manual_seed(1)
    for _ in range(trials):
        q = ScalarReservoirQuantizer(8, k)
        for start in range(0, n, 37):  # batches of awkward size
            q.update(torch.arange(start, min(start + 37, n)).float(), generator=generator)
        kept = q._reservoir.long()
        assert kept.unique().numel() == k  # distinct stream items, nothing lost or duplicated
        counts[kept] += 1
    expected = trials * k / n
    groups = counts.reshape(10, 20).sum(1)  # 10 groups of 20 consecutive positions
    chi2 = float(((groups - expected * 20) ** 2 / (expected * 20)).sum())
    assert chi2 < 27.9  # 99.9% quantile of chi-square with 9 degrees of freedom


def test_reservoir_update_refuses_nan():
    with pytest.raises(ValueError, match="NaN"):
        ScalarReservoirQuantizer(8, 10).update(torch.tensor([1.0, float("nan")]))
