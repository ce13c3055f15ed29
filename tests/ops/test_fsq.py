"""FSQ ops: every backend must give the reference's indices exactly (torch.equal), and decode must invert them."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from aion_fast import dispatch
from aion_fast.ops import fsq as fsq_ops
from aion_fast.ops.fsq import (
    fsq_decode,
    fsq_encode,
    torch_fsq_decode,
    torch_fsq_encode,
    torch_fsq_encode_from_tanh,
)

# image codec (aion_fast/codecs/image.py), scalar-field codec (codecs/scalar_field.py), a larger 6-channel codebook
LEVELS = [(7, 5, 5, 5, 5), (8, 5, 5, 5), (8, 8, 8, 5, 5, 5)]
SIZES = [1, 3, 7, 576 * 3]
EPS = 1e-3


def assert_indices_equal(ours: torch.Tensor, ref: torch.Tensor) -> None:
    assert ours.dtype == torch.int32, ours.dtype
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    if not torch.equal(ours, ref.to(torch.int32)):
        bad = (ours != ref).nonzero()
        first = tuple(bad[0].tolist())
        msg = f"{len(bad)}/{ours.numel()} indices differ; first at {first}: {int(ours[first])} vs {int(ref[first])}"
        raise AssertionError(msg)


def boundary_latents(levels: tuple[int, ...], eps: float = EPS, ulps: int = 3) -> torch.Tensor:
    """(N, D) float32 latents whose bounded value lies on (or a few ulps around) a half-integer in every channel.

    Inverts the bound, z = atanh((k + 1/2 + offset) / half_l) - shift in float64, for every half-integer k + 1/2
    strictly inside the range, then adds the float32 neighbours up to ``ulps`` away.
    """
    c = fsq_ops._constants(levels, eps)
    columns = []
    for d, lv in enumerate(levels):
        half_l, offset, shift = float(c.half_l[d]), float(c.offset[d]), float(c.shift[d])
        ks = np.arange(-lv, lv) + 0.5
        ks = ks[np.abs(ks + offset) < half_l]
        z = np.arctanh((ks + offset) / half_l) - shift
        col = torch.from_numpy(z).float()
        around = [col]
        up, down = col.clone(), col.clone()
        for _ in range(ulps):
            up, down = torch.nextafter(up, torch.tensor(math.inf)), torch.nextafter(down, torch.tensor(-math.inf))
            around += [up, down]
        columns.append(torch.cat(around))
    n = max(len(col) for col in columns)
    return torch.stack([col.repeat(math.ceil(n / len(col)))[:n] for col in columns], dim=-1)


# ---- encode --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("levels", LEVELS)
@pytest.mark.parametrize("m", SIZES)
def test_encode_random_matches_reference(backend, levels, m):
    for scale in (1.0, 3.0):
        z = torch.randn(m, len(levels)) * scale
        assert_indices_equal(fsq_encode(z, levels, EPS, channel_first=False), torch_fsq_encode(z, levels, EPS))


def test_encode_decode_large_inputs(backend):
    """Enough rows for the C++ kernels' OpenMP path (>= 2^16 elements) and several scratch chunks."""
    levels = (7, 5, 5, 5, 5)
    z = torch.randn(20_011, 5) * 2
    codes = fsq_encode(z, levels, channel_first=False)
    assert_indices_equal(codes, torch_fsq_encode(z, levels))
    assert torch.equal(fsq_decode(codes, levels), torch_fsq_decode(codes, levels))


@pytest.mark.parametrize("levels", LEVELS)
def test_encode_at_rounding_boundaries(backend, levels):
    z = boundary_latents(levels)
    ref = torch_fsq_encode(z, levels, EPS)
    assert_indices_equal(fsq_encode(z, levels, EPS, channel_first=False), ref)
    # the construction really straddles boundaries: neighbouring latents land on different levels
    assert len(torch.unique(ref)) > 10


@pytest.mark.parametrize("levels", LEVELS)
def test_encode_extreme_values(backend, levels):
    d = len(levels)
    values = torch.tensor([1e6, -1e6, math.inf, -math.inf, 0.0, -0.0, 1e-30, -1e-30, 3.4e38, -3.4e38])
    z = values[torch.randint(len(values), (257, d))]
    out = fsq_encode(z, levels, EPS, channel_first=False)
    assert_indices_equal(out, torch_fsq_encode(z, levels, EPS))
    assert int(out.min()) >= 0 and int(out.max()) < math.prod(levels)
    # infinities saturate like any large value
    assert_indices_equal(
        fsq_encode(torch.full((1, d), math.inf), levels, channel_first=False),
        fsq_encode(torch.full((1, d), 1e6), levels, channel_first=False),
    )


def test_encode_nan_raises(backend):
    z = torch.randn(9, 5)
    z[4, 2] = math.nan
    with pytest.raises(ValueError, match=r"\bz\b.*NaN"):
        fsq_encode(z, [7, 5, 5, 5, 5], channel_first=False)


def test_encode_noncontiguous_inputs_unchanged(backend):
    levels = (7, 5, 5, 5, 5)
    channel_first = torch.randn(3, 5, 24 * 24)  # (B, D, T), the codec's layout
    z = channel_first.movedim(1, -1)  # (B, T, D) view, not contiguous
    assert not z.is_contiguous()
    before = channel_first.clone()
    assert_indices_equal(fsq_encode(z, levels, channel_first=False), torch_fsq_encode(z.contiguous(), levels))
    strided = torch.randn(40, 5)[::3]
    assert_indices_equal(
        fsq_encode(strided, levels, channel_first=False), torch_fsq_encode(strided.contiguous(), levels)
    )
    assert torch.equal(channel_first, before)


def test_encode_batch_shapes(backend):
    levels = (8, 5, 5, 5)
    z = torch.randn(2, 3, 5, 4)
    out = fsq_encode(z, levels, channel_first=False)
    assert out.shape == (2, 3, 5)
    assert_indices_equal(out, torch_fsq_encode(z, levels))
    assert fsq_encode(torch.empty(0, 4), levels, channel_first=False).shape == (0,)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_encode_computes_in_float32(backend, dtype):
    levels = (7, 5, 5, 5, 5)
    z = torch.randn(100, 5).to(dtype)
    ref = torch_fsq_encode(z.float(), levels)
    assert_indices_equal(fsq_encode(z, levels, channel_first=False), ref)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert_indices_equal(fsq_encode(z, levels, channel_first=False), ref)


def test_encode_shape_errors():
    with pytest.raises(ValueError, match="shape"):
        fsq_encode(torch.randn(4, 3), [7, 5, 5, 5, 5], channel_first=False)
    with pytest.raises(ValueError, match="levels"):
        fsq_encode(torch.randn(4, 2), [7, 1], channel_first=False)
    with pytest.raises(ValueError, match="eps"):
        fsq_encode(torch.randn(4, 2), [7, 2], eps=0.0, channel_first=False)  # atanh(0.5 / 0.5) = inf


# ---- decode --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("levels", LEVELS)
@pytest.mark.parametrize("dtype", [torch.int32, torch.int64])
def test_decode_every_code_matches_reference(backend, levels, dtype):
    codes = torch.arange(math.prod(levels), dtype=dtype)
    out = fsq_decode(codes, levels)
    ref = torch_fsq_decode(codes, levels)
    assert out.dtype == torch.float32 and out.shape == (len(codes), len(levels))
    assert torch.equal(out, ref)
    assert float(out.abs().max()) == 1.0


@pytest.mark.parametrize("levels", LEVELS)
@pytest.mark.parametrize("m", SIZES)
def test_round_trip(backend, levels, m):
    """decode(encode(z)) is the normalised quantised latent round(bound(z)) / (L // 2)."""
    z = torch.randn(m, len(levels)) * 2
    c = fsq_ops._constants(levels, EPS)
    quantized = (torch.tanh(z + c.shift) * c.half_l - c.offset).round() / c.half_width
    assert torch.equal(fsq_decode(fsq_encode(z, levels, EPS, channel_first=False), levels), quantized)


def test_decode_noncontiguous_and_shapes(backend):
    levels = (8, 5, 5, 5)
    codes = torch.randint(0, 1000, (4, 6), dtype=torch.int32).t()
    out = fsq_decode(codes, levels)
    assert out.shape == (6, 4, 4)
    assert torch.equal(out, torch_fsq_decode(codes.contiguous(), levels))


@pytest.mark.parametrize("bad", [-1, 4375, 2**40])
def test_decode_out_of_range_raises(backend, bad):
    codes = torch.tensor([0, bad, 3], dtype=torch.int64)
    with pytest.raises(ValueError, match="4375"):
        fsq_decode(codes, [7, 5, 5, 5, 5])
    if abs(bad) < 2**31:
        with pytest.raises(ValueError, match="4375"):
            fsq_decode(codes.int(), [7, 5, 5, 5, 5])


def test_decode_rejects_float_indices():
    with pytest.raises(TypeError, match="integer"):
        fsq_decode(torch.zeros(3), [7, 5, 5, 5, 5])


# ---- agreement with the reference package (the oracle) --------------------------------------------------------------


@pytest.mark.parametrize("levels", LEVELS)
def test_reference_package_agrees(levels):
    quantizers = pytest.importorskip("aion.codecs.quantizers")
    oracle = quantizers.FiniteScalarQuantizer(list(levels), eps=EPS)
    edges = boundary_latents(levels).t()[None].expand(2, -1, -1)  # (2, D, N)
    z = torch.cat([torch.randn(2, len(levels), 300) * 2, edges], dim=-1)
    codes = oracle.encode(z.clone())
    assert_indices_equal(torch_fsq_encode(z.movedim(1, -1), levels, EPS), codes)
    assert_indices_equal(fsq_encode(z.movedim(1, -1), levels, EPS, channel_first=False), codes)
    assert torch.equal(fsq_decode(codes, levels).movedim(-1, 1), oracle.decode(codes))


# ---- the C++ path's exactness argument ------------------------------------------------------------------------------


def test_float32_digits_exact_up_to_cpp_max_level():
    """(q / h) * h == q in float32 for every reachable q while L <= 21, so C++ may sum digits in any order."""
    for lv in range(2, fsq_ops.CPP_MAX_LEVEL + 1):
        h = torch.tensor(float(lv // 2))
        q = torch.arange(-lv - 2, lv + 3, dtype=torch.float32)
        assert torch.equal(q / h * h, q), lv
    h = torch.tensor(11.0)  # L = 22 breaks it: those levels go to the torch backend
    q = torch.arange(-24, 25, dtype=torch.float32)
    assert not torch.equal(q / h * h, q)


def test_cpp_guard_routes_large_levels_to_torch(monkeypatch):
    levels = (22, 5)
    z = torch.randn(50, 2)
    assert dispatch.select("fsq_encode", fsq_ops._ENCODE_BACKENDS, z, levels, EPS, False).name != "cpp"
    assert_indices_equal(fsq_encode(z, levels, channel_first=False), torch_fsq_encode(z, levels))
    if dispatch.load_extension() is not None:
        monkeypatch.setenv(dispatch.ENV_VAR, "cpp")
        with pytest.raises(dispatch.BackendUnavailableError, match="levels above 21"):
            fsq_encode(z, levels, channel_first=False)


def exact_half_integer_tanh(levels: tuple[int, ...], eps: float = EPS) -> torch.Tensor:
    """(N, D) float32 values t with t * half_l - offset EXACTLY a half-integer in float32, in every channel."""
    c = fsq_ops._constants(levels, eps)
    columns = []
    for d, lv in enumerate(levels):
        ks = torch.arange(-lv, lv, dtype=torch.float64) + 0.5
        t = ((ks + float(c.offset[d])) / float(c.half_l[d])).float()
        cands = [t]
        up, down = t.clone(), t.clone()
        for _ in range(64):
            up, down = torch.nextafter(up, torch.tensor(2.0)), torch.nextafter(down, torch.tensor(-2.0))
            cands += [up, down]
        cands = torch.cat(cands)
        cands = cands[cands.abs() <= 1]
        b = cands * c.half_l[d] - c.offset[d]  # the reference's float32 operations
        hit = cands[(b - b.floor()) == 0.5]
        assert len(hit) > 0, (levels, d)
        columns.append(hit)
    n = max(len(col) for col in columns)
    return torch.stack([col.repeat(math.ceil(n / len(col)))[:n] for col in columns], dim=-1)


@pytest.mark.parametrize("levels", LEVELS)
def test_cpp_rounds_exact_half_integers_to_even(ext, levels):
    t = exact_half_integer_tanh(levels)
    c = fsq_ops._constants(levels, EPS)
    out = torch.empty(t.shape[0], dtype=torch.int32)
    n_nan = ext.fsq_encode_from_tanh(t.numpy(), c.levels.numpy(), c.half_l.numpy(), c.offset.numpy(), out.numpy())
    assert n_nan == 0
    assert_indices_equal(out, torch_fsq_encode_from_tanh(t, levels, EPS))


def test_cpp_path_traces_with_torch_compile(ext):
    levels = [7, 5, 5, 5, 5]
    z = torch.randn(64, 5)
    ref = torch_fsq_encode(z, levels)
    compiled = torch.compile(lambda x: torch.ops.aion_fast.fsq_encode_cpp(x, levels, EPS, False), backend="aot_eager")
    assert_indices_equal(compiled(z), ref)
    codes = ref.clone()
    compiled_dec = torch.compile(lambda i: torch.ops.aion_fast.fsq_decode_cpp(i, levels), backend="aot_eager")
    assert torch.equal(compiled_dec(codes), torch_fsq_decode(codes, levels))
    # the public dispatchers trace into one graph around the custom ops
    roundtrip = torch.compile(
        lambda x: fsq_decode(fsq_encode(x, levels, channel_first=False), levels), backend="aot_eager", fullgraph=True
    )
    assert torch.equal(roundtrip(z), torch_fsq_decode(ref, levels))
    torch.library.opcheck(torch.ops.aion_fast.fsq_encode_cpp.default, (z, levels, EPS, False))
    channel_first = torch.randn(3, 5, 7)
    torch.library.opcheck(torch.ops.aion_fast.fsq_encode_cpp.default, (channel_first, levels, EPS, True))
    compiled_cf = torch.compile(
        lambda x: fsq_encode(x, levels, channel_first=True), backend="aot_eager", fullgraph=True
    )
    assert_indices_equal(compiled_cf(channel_first), torch_fsq_encode(channel_first.movedim(1, -1), levels))
    torch.library.opcheck(torch.ops.aion_fast.fsq_decode_cpp.default, (codes, levels))


# ---- channel-first layout (the codecs' (B, D, T) latents, read in place) ---------------------------------------------


def channel_first_latents(levels: tuple[int, ...], batch: int, tokens: int, seed: int = 0) -> torch.Tensor:
    """(batch, D, tokens) float32: random N(0, 4) draws with boundary values, +-large, +-inf and +-0 mixed in."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(batch, len(levels), tokens, generator=g) * 2
    edges = boundary_latents(levels).t()  # (D, N)
    n = min(tokens, edges.shape[1])
    z[:, :, :n] = edges[:, :n]
    specials = torch.tensor([1e30, -1e30, math.inf, -math.inf, 0.0, -0.0, 3.4e38, -3.4e38])
    z[:, :, -1] = specials[torch.randint(len(specials), (batch, len(levels)), generator=g)]
    return z


@pytest.mark.parametrize("levels", LEVELS)
@pytest.mark.parametrize(("batch", "tokens"), [(1, 576), (3, 144), (7, 31), (2, 1)])
def test_encode_channel_first_matches_reference(backend, levels, batch, tokens):
    z = channel_first_latents(levels, batch, tokens, seed=batch * tokens)
    before = z.clone()
    ref = torch_fsq_encode(z.movedim(1, -1), levels, EPS)
    assert_indices_equal(fsq_encode(z, levels, EPS, channel_first=True), ref)
    # spatial axes of any rank, and non-contiguous channel-first views
    assert_indices_equal(fsq_encode(z.reshape(batch, len(levels), tokens, 1), levels, EPS, channel_first=True),
                         ref.reshape(batch, tokens, 1))  # fmt: skip
    wide = torch.randn(batch, len(levels) + 2, 2 * tokens)
    view = wide[:, 1:-1, ::2]
    assert_indices_equal(fsq_encode(view, levels, EPS, channel_first=True),
                         torch_fsq_encode(view.movedim(1, -1), levels, EPS))  # fmt: skip
    assert torch.equal(z, before)


def test_encode_channel_first_nan_raises_and_shapes(backend):
    levels = (8, 5, 5, 5)
    z = torch.randn(3, 4, 10)
    z[1, 2, 7] = math.nan
    with pytest.raises(ValueError, match=r"\bz\b.*NaN"):
        fsq_encode(z, levels, channel_first=True)
    with pytest.raises(ValueError, match=r"channel_first=True"):
        fsq_encode(torch.randn(3, 10, 4), levels, channel_first=True)
    assert fsq_encode(torch.empty(0, 4, 6), levels, channel_first=True).shape == (0, 6)


@pytest.mark.parametrize("levels", LEVELS)
@pytest.mark.parametrize("tokens", [1, 8, 15, 16, 17, 33, 1023, 1025, 2500])
def test_encode_channel_first_block_and_tail_sizes(backend, levels, tokens):
    """Unit-stride positions around the C++ kernel's 16-position blocks and 1024-position tiles, read in place, from
    inside a wider tensor (channel stride != tokens, unaligned start) and broadcast over the batch (stride 0)."""
    z = channel_first_latents(levels, 2, tokens, seed=tokens)
    ref = torch_fsq_encode(z.movedim(1, -1), levels, EPS)
    assert_indices_equal(fsq_encode(z, levels, EPS, channel_first=True), ref)
    wide = torch.randn(2, len(levels) + 1, tokens + 5)
    wide[:, 1:, 3 : 3 + tokens] = z
    before = wide.clone()
    view = wide[:, 1:, 3 : 3 + tokens]
    assert view.stride()[1:] == (tokens + 5, 1)
    assert_indices_equal(fsq_encode(view, levels, EPS, channel_first=True), ref)
    assert torch.equal(wide, before)
    broadcast = z[:1].expand(3, -1, -1)
    assert_indices_equal(fsq_encode(broadcast, levels, EPS, channel_first=True), ref[:1].expand(3, -1))


@pytest.mark.parametrize("levels", LEVELS)
def test_encode_nan_in_any_channel_and_lane_raises(backend, levels):
    """A NaN in any one channel, at any lane of a 16-position block or in the tail, is found and counted once."""
    d_count = len(levels)
    for d in range(d_count):
        for j in (0, 7, 8, 15, 16, 31, 33, 34):  # 35 tokens: two blocks of 16, a tail of 3
            z = torch.randn(2, d_count, 35)
            z[1, d, j] = math.nan
            with pytest.raises(ValueError, match=r"\bz\b.*NaN in 1 (of 70 )?vectors"):
                fsq_encode(z, levels, EPS, channel_first=True)
    z = torch.randn(2, d_count, 35)
    z[0, :, 5] = math.nan  # every channel of one position: still one vector
    z[1, -1, 20] = math.nan
    z[1, 0, 34] = math.nan
    with pytest.raises(ValueError, match=r"NaN in 3 (of 70 )?vectors"):
        fsq_encode(z, levels, EPS, channel_first=True)


def test_encode_fast_path_inputs(ext, monkeypatch):
    """The eager C++ fast path: grad-tracking latents, every layout and levels type, and the forced backends."""
    levels = [7, 5, 5, 5, 5]
    z = channel_first_latents(tuple(levels), 4, 300).requires_grad_()
    before = z.detach().clone()
    ref = torch_fsq_encode(z.detach().movedim(1, -1), levels, EPS)
    for variant in (levels, tuple(levels), torch.tensor(levels), np.array(levels)):
        out = fsq_encode(z, variant, EPS, channel_first=True)
        assert_indices_equal(out, ref)
        assert not out.requires_grad and out.is_contiguous()
    assert torch.equal(z.detach(), before)
    assert_indices_equal(fsq_encode(z.detach().movedim(1, -1), levels, EPS, channel_first=False), ref)  # channels last
    assert_indices_equal(fsq_encode(z.detach()[..., None], levels, EPS, channel_first=True), ref[..., None])
    with torch.inference_mode():
        assert_indices_equal(fsq_encode(z.detach(), levels, EPS, channel_first=True), ref)
    assert dispatch.direct_extension() is ext
    for value in ("torch", "triton", "nonsense"):
        monkeypatch.setenv(dispatch.ENV_VAR, value)
        assert dispatch.direct_extension() is None  # the dispatcher decides (and raises for "nonsense")
    with pytest.raises(ValueError, match="expected one of"):
        fsq_encode(z, levels, EPS, channel_first=True)
    for value in ("cpp", " CPP ", ""):
        monkeypatch.setenv(dispatch.ENV_VAR, value)
        assert dispatch.direct_extension() is ext
        assert_indices_equal(fsq_encode(z, levels, EPS, channel_first=True), ref)


@pytest.mark.parametrize("levels", LEVELS[:2])
def test_encode_bf16_and_autocast_channel_first(backend, levels):
    """bf16 latents are widened exactly and quantised in float32: indices equal the reference's on z.float()."""
    z = channel_first_latents(levels, 3, 200).to(torch.bfloat16)
    ref = torch_fsq_encode(z.float().movedim(1, -1), levels, EPS)
    assert_indices_equal(fsq_encode(z, levels, EPS, channel_first=True), ref)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert_indices_equal(fsq_encode(z, levels, EPS, channel_first=True), ref)
        assert_indices_equal(fsq_encode(z.float(), levels, EPS, channel_first=True), ref)


def test_reference_codec_layout_agrees_with_oracle():
    """The image codec's exact call: (B, 5, 576) channel-first latents through the reference FSQ encode."""
    quantizers = pytest.importorskip("aion.codecs.quantizers")
    levels = (7, 5, 5, 5, 5)
    oracle = quantizers.FiniteScalarQuantizer(list(levels), eps=EPS)
    for batch in (1, 3, 7):
        z = channel_first_latents(levels, batch, 576, seed=batch)
        assert_indices_equal(fsq_encode(z, levels, EPS, channel_first=True), oracle.encode(z.clone()))


# ---- the C++ path's tanh ---------------------------------------------------------------------------------------------


def test_fused_tanh_is_bound_with_an_mkl_torch(ext):
    reason = fsq_ops.fused_tanh_unavailable_reason()
    if torch.backends.mkl.is_available():
        assert reason is None, reason
    x = torch.cat([torch.randn(100_003) * 5, torch.tensor([math.inf, -math.inf, 0.0, -0.0, 1e-40])])
    if reason is None:
        out = torch.empty_like(x)
        ext.fsq_tanh(x.numpy(), out.numpy())
        assert torch.equal(out.view(torch.int32), torch.tanh(x).view(torch.int32))


@pytest.mark.parametrize("path", ["bound_tanh", "torch_tanh"])
def test_cpp_fallback_paths_are_exact(ext, monkeypatch, path):
    """Without thresholds the C++ path uses torch's bound MKL tanh, else torch's tanh: still the reference's indices."""
    monkeypatch.setattr(fsq_ops, "decision_thresholds", lambda levels, eps: "disabled by the test")
    if path == "torch_tanh":
        monkeypatch.setattr(fsq_ops, "_tanh_status", ["disabled by the test"])
    elif fsq_ops.fused_tanh_unavailable_reason() is not None:
        pytest.skip(fsq_ops.fused_tanh_unavailable_reason())
    monkeypatch.setenv(dispatch.ENV_VAR, "cpp")
    for levels in LEVELS:
        z = channel_first_latents(levels, 3, 100)
        ref = torch_fsq_encode(z.movedim(1, -1), levels, EPS)
        assert_indices_equal(fsq_encode(z, levels, EPS, channel_first=True), ref)
        assert_indices_equal(fsq_encode(z.movedim(1, -1), levels, EPS, channel_first=False), ref)
        z[1, 2, 3] = math.nan
        with pytest.raises(ValueError, match="NaN"):
            fsq_encode(z, levels, EPS, channel_first=True)


def test_cpp_fused_encode_checks_the_output_shape(ext):
    z = torch.randn(2, 5, 3)
    out = torch.empty(2, 4, dtype=torch.int32)
    c = fsq_ops._constants((7, 5, 5, 5, 5), EPS)
    with pytest.raises(ValueError, match="out"):
        ext.fsq_encode(z.numpy(), c.levels.numpy(), c.shift.numpy(), c.half_l.numpy(), c.offset.numpy(), out.numpy())


@pytest.mark.slow
def test_bound_tanh_equals_torch_tanh_on_every_float32(ext):
    """Exhaustive: all 2^32 float32 bit patterns through the bound tanh and torch.tanh (~6 min on 2 cores)."""
    if fsq_ops.fused_tanh_unavailable_reason() is not None:
        pytest.skip(fsq_ops.fused_tanh_unavailable_reason())
    chunk = 1 << 24
    out = torch.empty(chunk)
    for start in range(0, 1 << 32, chunk):
        x = (torch.arange(start, start + chunk, dtype=torch.int64) - (1 << 31)).to(torch.int32).view(torch.float32)
        ext.fsq_tanh(x.numpy(), out.numpy())
        ref = torch.tanh(x)
        same = (out.view(torch.int32) == ref.view(torch.int32)) | (torch.isnan(out) & torch.isnan(ref))
        assert bool(same.all()), f"{int((~same).sum())} differ in chunk starting at bit pattern {start - (1 << 31)}"


# ---- the C++ path's decision thresholds ------------------------------------------------------------------------------


@pytest.mark.parametrize("levels", [*LEVELS, (21, 2, 3), (4, 6)])
def test_decision_thresholds_match_reference_densely(ext, levels):
    """Every float32 latent within 20000 values of each threshold (and the thresholds' neighbours) encodes exactly."""
    th = fsq_ops.decision_thresholds(levels, EPS)
    assert isinstance(th, fsq_ops._Thresholds), th
    c = fsq_ops._constants(levels, EPS)
    for d in range(len(levels)):
        x = th.values[int(th.first[d]) : int(th.first[d + 1])]
        keys = fsq_ops._ordered(x)[:, None] + torch.arange(-20000, 20001)
        z_d = fsq_ops._from_ordered(keys.reshape(-1)) - c.shift[d]  # latents whose x = z + s lands near a step
        z = torch.zeros(len(z_d), len(levels))
        z[:, d] = z_d
        assert_indices_equal(fsq_encode(z, levels, EPS, channel_first=False), torch_fsq_encode(z, levels, EPS))


@pytest.mark.slow
@pytest.mark.parametrize("level", [5, *(pytest.param(level, marks=pytest.mark.heavy) for level in (7, 8))])
def test_decision_thresholds_exhaustive(ext, level):  # ~2.5 min per level: CI proves 5, `-m heavy` the others
    """All 2^32 float32 latents of one channel of each level the codecs use: thresholds == reference (~10 min each)."""
    chunk = 1 << 24
    for start in range(0, 1 << 32, chunk):
        z = (torch.arange(start, start + chunk, dtype=torch.int64) - (1 << 31)).to(torch.int32).view(torch.float32)
        z = z[~torch.isnan(z)][:, None]
        assert_indices_equal(fsq_encode(z, (level,), EPS, channel_first=False), torch_fsq_encode(z, (level,), EPS))


@pytest.mark.parametrize("channel_first", [True, False])
def test_int64_indices_equal_int32_ones(backend, channel_first):
    """dtype=torch.int64 (the quantizer modules' index type, written by the C++ kernel directly) changes nothing else;
    unforced, this is the eager fast path."""
    levels = [7, 5, 5, 5, 5]
    z = torch.randn(3, 5, 40, generator=torch.Generator().manual_seed(4)) * 3
    z = z if channel_first else z.movedim(1, -1)
    z[0, 0, 0] = float("inf")
    narrow = fsq_encode(z, levels, EPS, channel_first=channel_first)
    wide = fsq_encode(z, levels, EPS, channel_first=channel_first, dtype=torch.int64)
    assert narrow.dtype == torch.int32 and wide.dtype == torch.int64 and torch.equal(wide, narrow.long())
    strided = torch.randn(2, 5, 3000)[..., ::2]  # the C++ strided path (tiles of 4096 positions)
    assert torch.equal(fsq_encode(strided, levels, dtype=torch.int64), fsq_encode(strided, levels).long())
    assert fsq_encode(z[:0], levels, channel_first=channel_first, dtype=torch.int64).dtype == torch.int64
    with pytest.raises(ValueError, match="dtype must be torch.int32 or torch.int64"):
        fsq_encode(z, levels, channel_first=channel_first, dtype=torch.float32)
