"""winograd_conv2d: exact transforms, and every backend within float32 rounding of a float64 direct convolution.

Tolerance, measured in this session as the max error relative to max|ref| (random weights scaled by 1/sqrt(fan_in),
batch 3, C_in 19 / 54, sizes below, three seeds): the cpp path reaches ~2e-6 for F(4, 3), ~4.6e-6 for F(2, 7) and
~4e-7 for F(2, 3); the float32 direct convolution (F.conv2d) ~1e-6 to 2.6e-6 on the same cases. The error grows
with C_in r^2 for both: at the codec's 7x7 512 -> 512 layer (bench/bench_winograd_conv2d.py) the cpp path measured
8.2e-6 and the direct float32 convolution 7.7e-6. ``TOL`` = 2e-5 keeps a margin of about 4x over the worst figure
here (2.4x at that layer) while still catching a wrong coefficient or a misplaced tile (errors of 1e-2 or more).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from aion_fast import dispatch
from aion_fast.codecs.nn import fast
from aion_fast.ops import winograd_conv2d as wg_ops
from aion_fast.ops.winograd_conv2d import (
    DEFAULT_TILE,
    torch_winograd_conv2d,
    winograd_conv2d,
    winograd_matrices,
    winograd_weight,
)
from aion_fast.precision import precision_context

PAIRS = [(4, 3), (2, 7), (2, 3)]  # (m, r): every supported F(m x m, r x r)
# (C_in, H, W): C_in not a multiple of the C++ channel block (16); images smaller than one tile; a 1 x 1 image; and
# one large enough (720 tiles for m = 2) to span several blocks of _BLOCK_TILES = 256 tiles and the OpenMP path
SIZES = [(19, 13, 11), (54, 5, 7), (19, 1, 1), (54, 29, 31)]
BATCH, C_OUT = 3, 10
TOL = 2e-5  # relative to max|ref|; measured figures in the module docstring


def conv_inputs(c_in: int, h: int, w: int, r: int, bias: bool = True, seed: int = 0):
    """x (BATCH, c_in, h, w), weight (C_OUT, c_in, r, r) scaled like a trained layer, optional small bias."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(BATCH, c_in, h, w, generator=g)
    weight = torch.randn(C_OUT, c_in, r, r, generator=g) / (c_in * r * r) ** 0.5
    b = torch.randn(C_OUT, generator=g) * 0.1 if bias else None
    return x, weight, b


def reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """The float64 direct convolution with r // 2 zero padding."""
    b64 = None if bias is None else bias.double()
    return F.conv2d(x.double(), weight.double(), b64, padding=weight.shape[-1] // 2)


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    assert out.shape == ref.shape, (out.shape, ref.shape)
    return float((out.double() - ref).abs().max() / ref.abs().max())


@pytest.fixture
def cpp(monkeypatch) -> None:
    """Forces the cpp backend; skips, with the reason, when aion_fast._C is not built."""
    if dispatch.load_extension() is None:
        pytest.skip(f"C++ extension not built: {dispatch.extension_error()}")
    monkeypatch.setenv(dispatch.ENV_VAR, "cpp")


# ---- transforms ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("m", "r"), PAIRS)
def test_matrices_compute_the_correlation(m, r):
    """1-D: A^T [(G g) * (B^T d)] = sum_k g[k] d[i + k]; 2-D: the nested form equals the 2-D correlation."""
    at, g_mat, bt = winograd_matrices(m, r)
    n = m + r - 1
    assert at.shape == (m, n) and g_mat.shape == (n, r) and bt.shape == (n, n)
    assert at.dtype == g_mat.dtype == bt.dtype == torch.float64
    gen = torch.Generator().manual_seed(m * 10 + r)
    for _ in range(5):
        g = torch.randn(r, dtype=torch.float64, generator=gen)
        d = torch.randn(n, dtype=torch.float64, generator=gen)
        want = torch.stack([(g * d[i : i + r]).sum() for i in range(m)])
        torch.testing.assert_close(at @ ((g_mat @ g) * (bt @ d)), want, rtol=0, atol=1e-12)
    g2 = torch.randn(r, r, dtype=torch.float64, generator=gen)
    d2 = torch.randn(n, n, dtype=torch.float64, generator=gen)
    y = at @ ((g_mat @ g2 @ g_mat.T) * (bt @ d2 @ bt.T)) @ at.T
    torch.testing.assert_close(y, F.conv2d(d2[None, None], g2[None, None])[0, 0], rtol=0, atol=1e-12)


def test_matrices_refuse_unsupported_pairs():
    with pytest.raises(ValueError, match=r"F\(4, 5\)"):
        winograd_matrices(4, 5)


@pytest.mark.parametrize(("m", "r"), PAIRS)
def test_winograd_weight_is_g_g_gt(m, r):
    weight = torch.randn(5, 3, r, r)
    _, g_mat, _ = winograd_matrices(m, r)
    n = m + r - 1
    u = winograd_weight(weight, m)
    assert u.shape == (n * n, 3, 5) and u.dtype == torch.float32 and u.is_contiguous()
    want = g_mat @ weight[2, 1].double() @ g_mat.T  # filter (o=2, c=1)
    torch.testing.assert_close(u[:, 1, 2].view(n, n).double(), want, rtol=1e-6, atol=1e-6)


# ---- accuracy --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("m", "r"), PAIRS)
@pytest.mark.parametrize(("c_in", "h", "w"), SIZES)
@pytest.mark.parametrize("bias", [True, False])
def test_matches_float64_direct_convolution(backend, m, r, c_in, h, w, bias):
    x, weight, b = conv_inputs(c_in, h, w, r, bias, seed=c_in * h + w)
    ref = reference(x, weight, b)
    out = winograd_conv2d(x, weight, b, m)
    assert out.dtype == torch.float32
    err = relative_error(out, ref)
    assert err < TOL, f"{backend} F({m}, {r}): relative error {err:.2e} >= {TOL:.0e}"
    direct = relative_error(F.conv2d(x, weight, b, padding=r // 2), ref)
    assert direct < TOL, f"the float32 direct convolution itself is off: {direct:.2e}"


@pytest.mark.parametrize("r", sorted(DEFAULT_TILE))
def test_default_tile(cpp, r):
    """m=None takes DEFAULT_TILE[r] and gives the same bits as passing it."""
    x, weight, b = conv_inputs(19, 13, 11, r)
    assert torch.equal(winograd_conv2d(x, weight, b), winograd_conv2d(x, weight, b, DEFAULT_TILE[r]))


@pytest.mark.parametrize(("m", "r"), PAIRS)
def test_precomputed_transformed_weight_is_bit_equal(cpp, m, r):
    x, weight, b = conv_inputs(54, 13, 11, r)
    plain = winograd_conv2d(x, weight, b, m)
    assert torch.equal(winograd_conv2d(x, weight, b, m, transformed=winograd_weight(weight, m)), plain)


@pytest.mark.parametrize(("m", "r"), PAIRS)
def test_blocking_over_tiles(cpp, monkeypatch, m, r):
    """An odd block of 5 tiles (last block partial) agrees with one block holding every tile.

    Not bit for bit: sgemm picks other kernels for 5-row products, and the output transform amplifies the changed
    roundings; measured up to 1.1e-6 (F(4, 3)) and 2.2e-6 (F(2, 7)) of max|out| over blocks of 1, 3, 5, 7 tiles.
    """
    x, weight, b = conv_inputs(19, 13, 11, r)
    tiles = BATCH * -(-13 // m) * -(-11 // m)
    monkeypatch.setattr(wg_ops, "_BLOCK_TILES", tiles)
    whole = winograd_conv2d(x, weight, b, m)
    ext = dispatch.load_extension()
    calls = []
    transform = ext.winograd_input_transform

    def counting(*args):
        calls.append(args[6])  # tile_begin
        return transform(*args)

    monkeypatch.setattr(ext, "winograd_input_transform", counting)
    monkeypatch.setattr(wg_ops, "_BLOCK_TILES", 5)
    blocked = winograd_conv2d(x, weight, b, m)
    assert calls == list(range(0, tiles, 5)) and tiles % 5 != 0
    assert relative_error(blocked, whole.double()) < 1e-5
    assert relative_error(blocked, reference(x, weight, b)) < TOL


def test_unforced_cpu_float32_call_runs_the_cpp_transforms(monkeypatch):
    ext = dispatch.load_extension()
    if ext is None:
        pytest.skip(f"C++ extension not built: {dispatch.extension_error()}")
    monkeypatch.delenv(dispatch.ENV_VAR, raising=False)
    calls = []
    transform = ext.winograd_output_transform
    monkeypatch.setattr(ext, "winograd_output_transform", lambda *args: calls.append(1) or transform(*args))
    x, weight, b = conv_inputs(19, 13, 11, 3)
    with torch.inference_mode():
        out = winograd_conv2d(x, weight, b)
    assert calls and relative_error(out, reference(x, weight, b)) < TOL


# ---- layout and inputs -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("channels_last", [True, False])
def test_layout_and_input_unchanged(cpp, channels_last):
    x, weight, b = conv_inputs(19, 13, 11, 3)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    assert x.is_contiguous(memory_format=torch.channels_last) == channels_last
    before, w_before, b_before = x.clone(), weight.clone(), b.clone()
    out = winograd_conv2d(x, weight, b)
    assert out.shape == (BATCH, C_OUT, 13, 11)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(x, before) and torch.equal(weight, w_before) and torch.equal(b, b_before)
    assert relative_error(out, reference(x, weight, b)) < TOL


def test_strided_input(cpp):
    """A non-contiguous view (every other channel and column) is read correctly."""
    x, weight, b = conv_inputs(38, 13, 22, 3)
    view = x[:, ::2, :, ::2]
    assert not view.is_contiguous() and not view.is_contiguous(memory_format=torch.channels_last)
    weight = weight[:, :19]
    assert relative_error(winograd_conv2d(view, weight, b), reference(view, weight, b)) < TOL


# ---- bad input -------------------------------------------------------------------------------------------------------


def test_bad_arguments_raise_value_error(backend):
    x, weight, b = conv_inputs(19, 5, 7, 3)
    m, n = 4, 6
    with pytest.raises(ValueError, match=r"weight \(C_out, C_in, r, r\).*weight \(10, 18, 3, 3\)"):
        winograd_conv2d(x, weight[:, :18], b)
    with pytest.raises(ValueError, match=r"weight.*\(10, 19, 3, 5\)"):
        winograd_conv2d(x, torch.randn(10, 19, 3, 5))
    with pytest.raises(ValueError, match=r"x \(B, C_in, H, W\).*x \(19, 5, 7\)"):
        winograd_conv2d(x[0], weight)
    with pytest.raises(ValueError, match="5x5 filter"):
        winograd_conv2d(x, torch.randn(10, 19, 5, 5))
    with pytest.raises(ValueError, match="1x1 filter"):
        winograd_conv2d(x, torch.randn(10, 19, 1, 1))
    with pytest.raises(ValueError, match="output tile 3"):
        winograd_conv2d(x, weight, b, m=3)
    with pytest.raises(ValueError, match=r"bias must have shape \(10,\), got \(9,\)"):
        winograd_conv2d(x, weight, b[:9])
    with pytest.raises(ValueError, match=r"bias must have shape \(10,\), got \(1, 10\)"):
        winograd_conv2d(x, weight, b[None])
    with pytest.raises(ValueError, match=rf"transformed must be .* \({n * n}, 19, 10\), got \(16, 19, 10\)"):
        winograd_conv2d(x, weight, b, m, transformed=winograd_weight(weight, 2))  # the F(2, 3) transform
    with pytest.raises(ValueError, match="transformed"):
        winograd_conv2d(x, weight, b, m, transformed=winograd_weight(weight, m).transpose(1, 2))


def test_extension_wrappers_check_their_arrays(ext):
    at, _, bt = (mat.to(torch.float32).numpy() for mat in winograd_matrices(4, 3))
    x = torch.randn(1, 6, 6, 3).numpy()
    v = torch.empty(4, 36, 3).numpy()
    ext.winograd_input_transform(x, bt, 4, 1, 2, 2, 0, v)  # valid call
    with pytest.raises(TypeError, match="float32"):
        ext.winograd_input_transform(x.astype("float64"), bt, 4, 1, 2, 2, 0, v)
    with pytest.raises(ValueError, match=r"n in \{4, 6, 8\}.*n = 5"):
        ext.winograd_input_transform(x, torch.zeros(5, 5).numpy(), 4, 1, 2, 2, 0, torch.empty(4, 25, 3).numpy())
    mt = torch.randn(36, 4, 3).numpy()
    out = torch.empty(1, 6, 6, 3).numpy()
    ext.winograd_output_transform(mt, at, None, 2, 2, 0, out)  # valid call
    with pytest.raises(TypeError, match="float32"):
        ext.winograd_output_transform(mt.astype("float64"), at, None, 2, 2, 0, out)
    with pytest.raises(ValueError, match=r"n in \{4, 6, 8\}.*n = 5"):
        ext.winograd_output_transform(torch.randn(25, 4, 3).numpy(), torch.zeros(4, 5).numpy(), None, 2, 2, 0, out)


# ---- autograd --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("r", sorted(DEFAULT_TILE))
def test_autograd_takes_the_torch_backend(monkeypatch, r):
    monkeypatch.delenv(dispatch.ENV_VAR, raising=False)
    x, weight, b = conv_inputs(19, 13, 11, r)
    grad = torch.randn(BATCH, C_OUT, 13, 11)
    leaves = [t.clone().requires_grad_() for t in (x, weight, b)]
    winograd_conv2d(*leaves).backward(grad)
    ref_leaves = [t.clone().requires_grad_() for t in (x, weight, b)]
    F.conv2d(*ref_leaves, padding=r // 2).backward(grad)
    for ours, ref, name in zip(leaves, ref_leaves, ("x", "weight", "bias")):
        assert ours.grad is not None, name
        torch.testing.assert_close(ours.grad, ref.grad, msg=name)


def test_forced_cpp_refuses_autograd(cpp):
    x, weight, b = conv_inputs(19, 5, 7, 3)
    with pytest.raises(dispatch.BackendUnavailableError, match="autograd"):
        winograd_conv2d(x.requires_grad_(), weight, b)


def test_torch_backend_is_the_direct_convolution():
    x, weight, b = conv_inputs(19, 5, 7, 7)
    assert torch.equal(torch_winograd_conv2d(x, weight, b), F.conv2d(x, weight, b, padding=3))


# ---- edge cases ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(0, 19, 5, 7), (2, 19, 0, 7)])
def test_empty_input(cpp, shape):
    x, weight = torch.randn(shape), torch.randn(C_OUT, 19, 3, 3)
    out = winograd_conv2d(x, weight)  # F.conv2d itself refuses an empty image (H = 0): the shape is the contract
    assert out.shape == (shape[0], C_OUT, shape[2], shape[3])


def test_bias_gradient(monkeypatch):
    monkeypatch.delenv(dispatch.ENV_VAR, raising=False)
    x, weight, b = conv_inputs(19, 5, 7, 3)
    b.requires_grad_()
    out = winograd_conv2d(x, weight, b)
    assert out.requires_grad


# ---- the codec networks' fast path -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("conv", "winograd"),
    [
        (nn.Conv2d(64, 64, 3, padding=1), True),
        (nn.Conv2d(64, 64, 7, padding=3), True),
        (nn.Conv2d(64, 64, 3, stride=2, padding=1), False),  # stride 2: oneDNN
        (nn.Conv2d(64, 48, 1), False),  # 1 x 1: oneDNN
        (nn.Conv2d(16, 64, 3, padding=1), False),  # fewer than WINOGRAD_MIN_CHANNELS in: oneDNN
    ],
    ids=["3x3", "7x7", "3x3-stride2", "1x1", "3x3-narrow"],
)
def test_fast_codec_conv2d(monkeypatch, conv, winograd):
    if not torch.backends.mkldnn.is_available():
        pytest.skip("the fast path needs oneDNN (torch.backends.mkldnn)")
    calls = []

    def spy(*args):
        calls.append(1)
        return winograd_conv2d(*args)

    monkeypatch.setattr(fast, "winograd_conv2d", spy)
    x = torch.randn(2, conv.in_channels, 13, 11)
    with torch.no_grad():
        ref = F.conv2d(x.double(), conv.weight.double(), conv.bias.double(), conv.stride, conv.padding)
    with precision_context("fast", "cpu"), torch.inference_mode():
        out = fast.conv2d(conv, x)
        again = fast.conv2d(conv, x)  # the cached transformed / packed weight
    assert bool(calls) == winograd
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert relative_error(out, ref) < TOL
    assert torch.equal(again, out)
