"""LFQ ops: every backend must give the reference's indices and codes exactly."""

from __future__ import annotations

import math

import pytest
import torch

from aion_fast.ops.lfq import lfq_decode, lfq_encode, torch_lfq_decode, torch_lfq_encode

SIZES = [1, 3, 7, 576 * 3]
DIMS = [1, 10, 31]


def assert_indices_equal(ours: torch.Tensor, ref: torch.Tensor) -> None:
    assert ours.dtype == torch.int32, ours.dtype
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    if not torch.equal(ours, ref.to(torch.int32)):
        bad = (ours != ref).nonzero()
        first = tuple(bad[0].tolist())
        msg = f"{len(bad)}/{ours.numel()} indices differ; first at {first}: {int(ours[first])} vs {int(ref[first])}"
        raise AssertionError(msg)


@pytest.mark.parametrize("dim", DIMS)
@pytest.mark.parametrize("m", SIZES)
def test_encode_random_matches_reference(backend, dim, m):
    z = torch.randn(m, dim)
    assert_indices_equal(lfq_encode(z, channel_first=False), torch_lfq_encode(z))


def test_encode_decode_large_inputs(backend):
    """Enough rows for the C++ kernels' OpenMP path (>= 2^16 elements) and several scratch chunks."""
    z = torch.randn(9_001, 10)
    codes = lfq_encode(z, channel_first=False)
    assert_indices_equal(codes, torch_lfq_encode(z))
    assert torch.equal(lfq_decode(codes, 10, 0.25), torch_lfq_decode(codes, 10, 0.25))


def test_encode_bit_order_and_special_values(backend):
    # channel 0 is the most significant bit
    z = -torch.ones(4, 10)
    z[1, 0] = 1.0
    z[2, 9] = 1.0
    z[3] = torch.tensor([math.nan, math.inf, -math.inf, 0.0, -0.0, 1e-45, -1e-45, 1e30, math.nan, 2.0])
    expected = torch.tensor([0, 512, 1, 0b0100010101], dtype=torch.int32)
    assert_indices_equal(lfq_encode(z, channel_first=False), expected)
    assert_indices_equal(torch_lfq_encode(z), expected)


def test_encode_noncontiguous_and_dtypes(backend):
    channel_first = torch.randn(2, 10, 273)  # (B, D, T), the spectrum codec's layout
    before = channel_first.clone()
    z = channel_first.movedim(1, -1)
    assert_indices_equal(lfq_encode(z, channel_first=False), torch_lfq_encode(z.contiguous()))
    assert torch.equal(channel_first, before)
    for dtype in (torch.float16, torch.bfloat16, torch.float64):
        assert_indices_equal(lfq_encode(z.to(dtype), channel_first=False), torch_lfq_encode(z.to(dtype).float()))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert_indices_equal(lfq_encode(z, channel_first=False), torch_lfq_encode(z))


def test_encode_dim_limits():
    with pytest.raises(ValueError, match="31"):
        lfq_encode(torch.randn(3, 32), channel_first=False)
    with pytest.raises(ValueError):
        lfq_encode(torch.randn(3, 0), channel_first=False)


@pytest.mark.parametrize("scale", [1.0, 0.5, 0.1, 3.0])
@pytest.mark.parametrize("dtype", [torch.int32, torch.int64])
def test_decode_every_code_matches_reference(backend, scale, dtype):
    codes = torch.arange(1024, dtype=dtype)
    out = lfq_decode(codes, 10, scale)
    ref = torch_lfq_decode(codes, 10, scale)
    assert out.dtype == torch.float32 and out.shape == (1024, 10)
    assert torch.equal(out, ref)
    assert torch.equal(out.abs(), torch.full_like(out, torch.tensor(scale, dtype=torch.float32).item()))


@pytest.mark.parametrize("dim", DIMS)
@pytest.mark.parametrize("m", SIZES)
def test_round_trip(backend, dim, m):
    z = torch.randn(m, dim)
    codes = lfq_decode(lfq_encode(z, channel_first=False), dim, 0.5)
    assert torch.equal(codes, torch.where(z > 0, 0.5, -0.5))
    assert_indices_equal(lfq_encode(codes, channel_first=False), lfq_encode(z, channel_first=False))


def test_decode_shapes(backend):
    codes = torch.randint(0, 1024, (5, 3), dtype=torch.int32).t()  # non-contiguous
    out = lfq_decode(codes, 10)
    assert out.shape == (3, 5, 10)
    assert torch.equal(out, torch_lfq_decode(codes.contiguous(), 10))


@pytest.mark.parametrize("bad", [-1, 1024, 2**33])
def test_decode_out_of_range_raises(backend, bad):
    codes = torch.tensor([0, bad], dtype=torch.int64)
    with pytest.raises(ValueError, match=r"2\*\*10"):
        lfq_decode(codes, 10)
    if abs(bad) < 2**31:
        with pytest.raises(ValueError, match=r"2\*\*10"):
            lfq_decode(codes.int(), 10)


def test_decode_argument_errors():
    with pytest.raises(TypeError, match="integer"):
        lfq_decode(torch.zeros(3), 10)
    with pytest.raises(ValueError, match="finite"):
        lfq_decode(torch.zeros(3, dtype=torch.int32), 10, math.inf)


def test_reference_package_agrees():
    quantizers = pytest.importorskip("aion.codecs.quantizers")
    oracle = quantizers.LucidrainsLFQ(dim=10, codebook_size=1024).eval()
    z = torch.randn(2, 10, 273)  # (B, D, T)
    z[0, :, :3] = 0.0
    with torch.no_grad():
        codes = oracle.encode(z)
        assert_indices_equal(lfq_encode(z.movedim(1, -1), channel_first=False), codes)
        assert torch.equal(lfq_decode(codes, 10).movedim(-1, 1), oracle.decode(codes))


def test_cpp_path_traces_with_torch_compile(ext):
    z = torch.randn(64, 10)
    ref = torch_lfq_encode(z)
    compiled = torch.compile(lambda x: torch.ops.aion_fast.lfq_encode_cpp(x, False), backend="aot_eager")
    assert_indices_equal(compiled(z), ref)
    compiled_dec = torch.compile(lambda i: torch.ops.aion_fast.lfq_decode_cpp(i, 10, 1.0), backend="aot_eager")
    assert torch.equal(compiled_dec(ref), torch_lfq_decode(ref, 10))
    torch.library.opcheck(torch.ops.aion_fast.lfq_encode_cpp.default, (z, False))
    channel_first = torch.randn(3, 10, 7)
    torch.library.opcheck(torch.ops.aion_fast.lfq_encode_cpp.default, (channel_first, True))
    compiled_cf = torch.compile(lambda x: lfq_encode(x, channel_first=True), backend="aot_eager", fullgraph=True)
    assert_indices_equal(compiled_cf(channel_first), torch_lfq_encode(channel_first.movedim(1, -1)))
    torch.library.opcheck(torch.ops.aion_fast.lfq_decode_cpp.default, (ref, 10, 1.0))


@pytest.mark.parametrize("dim", DIMS)
@pytest.mark.parametrize(("batch", "tokens"), [(1, 272), (3, 7081 // 26), (7, 5), (2, 1), (3, 9000)])
def test_encode_channel_first_matches_reference(backend, dim, batch, tokens):
    """The spectrum codec's (B, D, T) latents read in place (tokens=9000: several C++ tiles and the OpenMP path)."""
    g = torch.Generator().manual_seed(batch * tokens + dim)
    z = torch.randn(batch, dim, tokens, generator=g)
    z[0, 0, 0], z[-1, -1, -1] = math.nan, -0.0
    z[0, :, -1] = torch.tensor([math.inf, -math.inf, 0.0, 1e-45] * 8)[:dim]
    before = z.clone()
    ref = torch_lfq_encode(z.movedim(1, -1))
    assert_indices_equal(lfq_encode(z, channel_first=True), ref)
    view = torch.randn(batch, dim + 3, 2 * tokens, generator=g)[:, 2:-1, 1::2]  # non-contiguous channel-first
    assert_indices_equal(lfq_encode(view, channel_first=True), torch_lfq_encode(view.movedim(1, -1)))
    assert torch.equal(z.view(torch.int32), before.view(torch.int32))  # bitwise: NaN included


@pytest.mark.parametrize("dim", DIMS)
@pytest.mark.parametrize("tokens", [1, 7, 8, 9, 31, 32, 33, 1023, 1025, 2500])
def test_encode_channel_first_block_and_tail_sizes(backend, dim, tokens):
    """Unit-stride positions around the C++ kernel's 8/32-position blocks and 1024-position tiles, with special values
    in every lane, read in place, from inside a wider tensor and broadcast over the batch (stride 0)."""
    g = torch.Generator().manual_seed(tokens * 31 + dim)
    z = torch.randn(3, dim, tokens, generator=g)
    specials = torch.tensor([math.nan, -math.nan, math.inf, -math.inf, 0.0, -0.0, 1e-45, -1e-45, 3.4e38, -3.4e38])
    mask = torch.rand(z.shape, generator=g) < 0.2
    z[mask] = specials[torch.randint(len(specials), (int(mask.sum()),), generator=g)]
    ref = torch_lfq_encode(z.movedim(1, -1))
    assert_indices_equal(lfq_encode(z, channel_first=True), ref)
    wide = torch.randn(3, dim + 1, tokens + 5, generator=g)
    wide[:, 1:, 3 : 3 + tokens] = z
    before = wide.clone()
    view = wide[:, 1:, 3 : 3 + tokens]
    assert view.stride()[1:] == (tokens + 5, 1)
    assert_indices_equal(lfq_encode(view, channel_first=True), ref)
    assert torch.equal(wide.view(torch.int32), before.view(torch.int32))
    assert_indices_equal(lfq_encode(z[:1].expand(4, -1, -1), channel_first=True), ref[:1].expand(4, -1))


def test_encode_fast_path_inputs(monkeypatch):
    """The eager C++ fast path: grad-tracking latents, layouts, inference mode, and forced backends."""
    z = torch.randn(4, 10, 272).requires_grad_()
    ref = torch_lfq_encode(z.detach().movedim(1, -1))
    out = lfq_encode(z, channel_first=True)
    assert_indices_equal(out, ref)
    assert not out.requires_grad and out.is_contiguous()
    assert_indices_equal(lfq_encode(z.detach().movedim(1, -1), channel_first=False), ref)
    assert_indices_equal(lfq_encode(z.detach()[..., None], channel_first=True), ref[..., None])
    with torch.inference_mode():
        assert_indices_equal(lfq_encode(z.detach(), channel_first=True), ref)
    for value in ("torch", "cpp", ""):
        monkeypatch.setenv("AION_FAST_BACKEND", value)
        assert_indices_equal(lfq_encode(z, channel_first=True), ref)
    monkeypatch.setenv("AION_FAST_BACKEND", "nonsense")
    with pytest.raises(ValueError, match="expected one of"):
        lfq_encode(z, channel_first=True)


def test_encode_channel_first_bf16_autocast_and_shapes(backend):
    z = torch.randn(3, 10, 272).to(torch.bfloat16)
    ref = torch_lfq_encode(z.float().movedim(1, -1))
    assert_indices_equal(lfq_encode(z, channel_first=True), ref)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert_indices_equal(lfq_encode(z.float(), channel_first=True), ref)
    assert lfq_encode(torch.empty(0, 10, 4), channel_first=True).shape == (0, 4)
    assert lfq_encode(torch.randn(2, 10, 3, 4), channel_first=True).shape == (2, 3, 4)
    with pytest.raises(ValueError, match="31"):
        lfq_encode(torch.randn(2, 40, 3), channel_first=True)


def test_reference_codec_layout_agrees_with_oracle():
    quantizers = pytest.importorskip("aion.codecs.quantizers")
    oracle = quantizers.LucidrainsLFQ(dim=10, codebook_size=1024).eval()
    for batch in (1, 3, 7):
        z = torch.randn(batch, 10, 272)
        with torch.no_grad():
            assert_indices_equal(lfq_encode(z, channel_first=True), oracle.encode(z))


@pytest.mark.parametrize("channel_first", [True, False])
def test_int64_indices_equal_int32_ones(backend, channel_first):
    """dtype=torch.int64 (the quantizer modules' index type, written by the C++ kernel directly) changes nothing else,
    in each of the kernel's layouts (channels last, positions contiguous, other strides)."""
    z = torch.randn(3, 10, 50, generator=torch.Generator().manual_seed(5))
    z = z if channel_first else z.movedim(1, -1).contiguous()
    narrow = lfq_encode(z, channel_first=channel_first)
    wide = lfq_encode(z, channel_first=channel_first, dtype=torch.int64)
    assert narrow.dtype == torch.int32 and wide.dtype == torch.int64 and torch.equal(wide, narrow.long())
    strided = torch.randn(2, 10, 90)[..., ::3]
    assert torch.equal(lfq_encode(strided, dtype=torch.int64), lfq_encode(strided).long())
    with pytest.raises(ValueError, match="dtype must be torch.int32 or torch.int64"):
        lfq_encode(z, channel_first=channel_first, dtype=torch.int16)
