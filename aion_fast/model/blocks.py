"""Transformer building blocks: norms, MLPs, attention and the pre-norm encoder/decoder blocks.

Attention runs through :func:`torch.nn.functional.scaled_dot_product_attention` (fused FlashAttention-2 /
memory-efficient kernels on GPU, a fused kernel on CPU). Masks follow the reference convention (True = the key is
hidden from the query) until they reach SDPA, where they are inverted once per forward by :class:`AttentionMask`.

The reference fills hidden scores with ``-finfo.max`` before a softmax. For a query whose keys are *all* hidden that
yields equal weights, i.e. the mean of the values over every key. :class:`AttentionMask` detects such rows once, SDPA
runs with them unmasked (no NaN), and their output is replaced by the value mean, which is what the reference returns.
This case is not exotic: :meth:`AION.forward` always builds a decoder self-attention mask that hides every key.
Training (:meth:`AION.predict_masked`) keeps that computation but averages over a row's *selected* queries only
(``AttentionMask.uniform_keys``), so a padded training row computes what inference computes on its queries alone.

Packed (variable-length) sequences. With ``AttentionMask.packed`` set, blocks take ``(1, T, D)`` tensors holding
the present tokens of every sample back to back (no padding), and attention runs per sample through
:func:`varlen_attention`: flash-attn's ``flash_attn_varlen_func`` on CUDA half/bf16 tensors when flash-attn is
installed, otherwise ``scaled_dot_product_attention`` under a block-diagonal mask (or, for large packs, on the
sequences re-padded with a key-padding mask). Both give the padded path's result.

CPU inference in row blocks. Without autograd on a CPU, :class:`EncoderBlock` runs its position-wise parts (norms,
``qkv``, ``proj``, MLP, residuals) over blocks of ``AION_FAST_CPU_ROW_BLOCK`` rows (default 2,048) of the flattened ``(B
* N, D)`` activations instead of the whole batch at once; only attention sees the whole tensor. Same operations per row,
so the same values (bit for bit here; tests/model allows fp32 rounding in case BLAS picks another kernel for another row
count). Why: MKL's sgemm on a tall ``(B * N, 128) x (128, 384)`` product runs at ~92 GFLOP/s on the 2-core AVX2 CPU of
bench/RESULTS.md and at ~160 GFLOP/s on 1,024-row slices of it, and a block's MLP activations stay in cache between the
activation, the gate and ``fc2``. One encoder block on 588 tokens (best of 6, that CPU): width 128, 64 objects 376 ->
249 ms; width 768 (base), 8 objects 510 -> 478 ms, 32 objects 2388 -> 1951 ms; blocks of 1,024 to 4,096 rows are within
~5% of 2,048. ``AION_FAST_CPU_ROW_BLOCK=0`` turns it off.

State-dict names match the reference (``attn.qkv``, ``attn.q_norm``, ``cross_attn.kv``, ``mlp.fc1``...).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from aion_fast import settings
from aion_fast._backend import Backend, no_reasons, select
from aion_fast._utils import linear_into

__all__ = [
    "AttentionMask",
    "PackedLayout",
    "CrossAttention",
    "DecoderBlock",
    "DropPath",
    "EncoderBlock",
    "GatedMlp",
    "LayerNorm",
    "Mlp",
    "SelfAttention",
    "as_attention_mask",
    "attend",
    "sdpa_varlen_attention",
    "segment_mean",
    "flash_attn_varlen_func",
    "varlen_attention",
    "varlen_backend",
]

NORM_EPS = 1e-6


class LayerNorm(nn.Module):
    """LayerNorm whose bias can be switched off.

    Without bias, ``bias`` is a persistent all-zero buffer rather than absent, because the reference checkpoints
    store it under that name.

    Args:
        dim: Normalized (last) dimension.
        eps: Variance epsilon.
        bias: Whether the bias is a learnable parameter.
    """

    def __init__(self, dim: int, eps: float = NORM_EPS, bias: bool = True):
        super().__init__()
        self.dim = dim
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        if bias:
            self.bias = nn.Parameter(torch.zeros(dim))
        else:
            self.register_buffer("bias", torch.zeros(dim))

    def forward(self, x: Tensor) -> Tensor:
        """Normalizes ``(..., dim)`` over the last axis."""
        bias = self.bias
        if bias.dtype != self.weight.dtype:  # the zero buffer beside weights cast by mixed precision (FSDP bf16)
            bias = bias.to(self.weight.dtype)
        return F.layer_norm(x, (self.dim,), self.weight, bias, self.eps)


class DropPath(nn.Module):
    """Stochastic depth: zeroes the whole residual branch of a random subset of samples while training.

    Args:
        drop_prob: Probability of dropping a sample's branch; kept branches are scaled by ``1 / (1 - drop_prob)``.
    """

    def __init__(self, drop_prob: float):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: Tensor) -> Tensor:
        """Applies stochastic depth to ``(B, ...)``; identity in eval mode."""
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep_prob = 1.0 - self.drop_prob
        keep = torch.empty((x.shape[0],) + (1,) * (x.ndim - 1), dtype=x.dtype, device=x.device).bernoulli_(keep_prob)
        return x * keep / keep_prob

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


class Mlp(nn.Module):
    """Two-layer feed-forward network ``fc2(act(fc1(x)))``.

    Args:
        dim: Input and output width.
        hidden_dim: Hidden width.
        act_layer: Activation module class.
        bias: Whether the linear layers have biases.
    """

    def __init__(self, dim: int, hidden_dim: int, act_layer: type[nn.Module], bias: bool):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim, bias=bias)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_dim, dim, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        """Maps ``(..., dim)`` to ``(..., dim)``."""
        return self.fc2(self.act(self.fc1(x)))


class GatedMlp(nn.Module):
    """Gated feed-forward network (SwiGLU with ``act_layer=nn.SiLU``): ``fc2(act(fc1(x)) * fc3(x))``.

    The hidden width is ``int(2 * hidden_dim / 3)`` so the three matrices cost about as much as a plain MLP with
    ``hidden_dim`` (Shazeer 2020, arXiv:2002.05202).

    Args:
        dim: Input and output width.
        hidden_dim: Hidden width of the equivalent plain MLP (``int(dim * mlp_ratio)``).
        act_layer: Activation module class applied to the gate branch.
        bias: Whether the linear layers have biases.
    """

    def __init__(self, dim: int, hidden_dim: int, act_layer: type[nn.Module], bias: bool):
        super().__init__()
        gated_dim = int(2 * hidden_dim / 3)
        self.fc1 = nn.Linear(dim, gated_dim, bias=bias)
        self.act = act_layer()
        self.fc2 = nn.Linear(gated_dim, dim, bias=bias)
        self.fc3 = nn.Linear(dim, gated_dim, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        """Maps ``(..., dim)`` to ``(..., dim)``."""
        return self.fc2(self.act(self.fc1(x)) * self.fc3(x))


@dataclass(frozen=True)
class PackedLayout:
    """Where each sample's tokens lie in a packed ``(T, ...)`` tensor (samples back to back, no padding).

    Attributes:
        cu_seqlens_q: ``(B + 1,)`` int32 offsets of the query samples (``cu[b]:cu[b + 1]`` is sample ``b``).
        cu_seqlens_k: ``(B + 1,)`` int32 offsets of the key samples (the same tensor for self-attention).
        max_seqlen_q: Longest query sample.
        max_seqlen_k: Longest key sample.
        segment_q: ``(Tq,)`` int64 sample index of every packed query.
        segment_k: ``(Tk,)`` int64 sample index of every packed key.
    """

    cu_seqlens_q: Tensor
    cu_seqlens_k: Tensor
    max_seqlen_q: int
    max_seqlen_k: int
    segment_q: Tensor
    segment_k: Tensor

    @property
    def batch(self) -> int:
        """Number of samples ``B``."""
        return self.cu_seqlens_q.shape[0] - 1

    @classmethod
    def from_lengths(cls, lengths_q: Tensor, lengths_k: Tensor | None = None) -> PackedLayout:
        """Builds the layout from per-sample lengths ``(B,)`` (``lengths_k`` defaults to ``lengths_q``)."""
        self_attention = lengths_k is None
        lengths_k = lengths_q if self_attention else lengths_k

        def offsets(lengths: Tensor) -> Tensor:
            return F.pad(lengths.cumsum(0), (1, 0)).to(torch.int32)

        def segments(lengths: Tensor) -> Tensor:
            return torch.repeat_interleave(torch.arange(lengths.shape[0], device=lengths.device), lengths)

        cu_q, seg_q = offsets(lengths_q), segments(lengths_q)
        cu_k, seg_k = (cu_q, seg_q) if self_attention else (offsets(lengths_k), segments(lengths_k))
        return cls(cu_q, cu_k, int(lengths_q.max()), int(lengths_k.max()), seg_q, seg_k)


@dataclass(frozen=True)
class AttentionMask:
    """An attention mask prepared once per forward and shared by every block that uses it.

    Attributes:
        allowed: SDPA boolean mask, True = may attend, shape ``(B, 1, Lq or 1, Lk)``; ``None`` = attend everywhere.
        fully_hidden_rows: ``(B, 1, Lq or 1, 1)`` bool, True for queries whose keys are all hidden (their output is
            the mean of the values); ``None`` if there are none.
        uniform: Every query of every sample has all keys hidden: attention reduces to the value mean.
        uniform_keys: With ``uniform``: ``(B, Lk)`` bool, True for the keys the mean runs over (a training row's
            selected queries); ``None`` = every key (the reference's behaviour).
        packed: Tensors are packed ``(1, T, D)`` sequences laid out as described (``allowed`` is then unused).
    """

    allowed: Tensor | None = None
    fully_hidden_rows: Tensor | None = None
    uniform: bool = False
    uniform_keys: Tensor | None = None
    packed: PackedLayout | None = None

    @classmethod
    def from_hidden(cls, hidden: Tensor | None) -> AttentionMask:
        """Prepares a reference-convention mask.

        Args:
            hidden: ``(B, Lq or 1, Lk)`` bool, True where the key is hidden from the query; ``None`` for no mask.

        Returns:
            The prepared mask; no mask at all when nothing is hidden, so SDPA can pick its fastest kernel.
        """
        if hidden is None or not bool(hidden.any()):
            return cls()
        row_hidden = hidden.all(dim=-1, keepdim=True)
        if bool(row_hidden.all()):
            return cls(uniform=True)
        allowed = ~hidden
        fully_hidden_rows = None
        if bool(row_hidden.any()):
            allowed = allowed | row_hidden
            fully_hidden_rows = row_hidden[:, None]
        return cls(allowed=allowed[:, None], fully_hidden_rows=fully_hidden_rows)


def as_attention_mask(mask: AttentionMask | Tensor | None, name: str = "mask") -> AttentionMask:
    """The prepared mask of a block or attention call, which also takes the reference's boolean masks.

    Args:
        mask: An :class:`AttentionMask`; a bool ``(B, Lq or 1, Lk)`` tensor, True where the key is hidden (the
            reference's ``(B, 1, N)`` encoder mask from ``embed_inputs``, its ``(B, M, M)`` decoder mask); or ``None``.
        name: The argument's name, for the error message.

    Raises:
        ValueError: A tensor that is not bool or not 3-D.
    """
    if isinstance(mask, AttentionMask):
        return mask
    if mask is None:
        return AttentionMask()
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool or mask.ndim != 3:
        got = f"{mask.dtype} tensor of shape {tuple(mask.shape)}" if isinstance(mask, Tensor) else type(mask).__name__
        raise ValueError(
            f"{name} must be a bool tensor of shape (B, 1, N) or (B, M, N), True where the key is hidden (as "
            f"embed_inputs returns), an AttentionMask, or None; got {got}"
        )
    return AttentionMask.from_hidden(mask)


def attend(q: Tensor, k: Tensor, v: Tensor, mask: AttentionMask) -> Tensor:
    """Multi-head scaled dot-product attention with the reference's masking semantics.

    Args:
        q: ``(B, H, Lq, d)`` queries.
        k: ``(B, H, Lk, d)`` keys.
        v: ``(B, H, Lk, d)`` values.
        mask: Prepared mask (see :class:`AttentionMask`).

    Returns:
        ``(B, H, Lq, d)``.
    """
    if mask.packed is not None:
        layout = mask.packed
        q, k, v = (t[0].transpose(0, 1) for t in (q, k, v))  # (T, H, d)
        if mask.uniform:
            out = segment_mean(v, layout.segment_k, layout.batch)[layout.segment_q]
        else:
            out = varlen_attention(q, k, v, layout)
        return out.transpose(0, 1)[None]
    if mask.uniform:
        if mask.uniform_keys is not None:
            weights = mask.uniform_keys[:, None, :, None].to(v.dtype)
            mean = (v * weights).sum(dim=-2, keepdim=True) / weights.sum(dim=-2, keepdim=True).clamp_min(1.0)
            return mean.expand(*q.shape[:-1], v.shape[-1])
        return v.mean(dim=-2, keepdim=True).expand(*q.shape[:-1], v.shape[-1])
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask.allowed)
    if mask.fully_hidden_rows is not None:
        out = torch.where(mask.fully_hidden_rows, v.mean(dim=-2, keepdim=True), out)
    return out


def segment_mean(values: Tensor, segments: Tensor, batch: int) -> Tensor:
    """Mean of the packed rows of every sample.

    Args:
        values: ``(T, ...)`` packed rows.
        segments: ``(T,)`` int64 sample index of every row.
        batch: Number of samples ``B``.

    Returns:
        ``(B, ...)``; zero for a sample without rows.
    """
    sums = values.new_zeros((batch, *values.shape[1:])).index_add_(0, segments, values)
    counts = torch.bincount(segments, minlength=batch).clamp_min(1).to(values.dtype)
    return sums / counts.reshape(batch, *([1] * (values.ndim - 1)))


#: The SDPA fallback masks a packed ``(Tq, Tk)`` block-diagonal matrix up to this many entries, and re-pads beyond.
BLOCK_DIAGONAL_MAX_ELEMENTS = 1 << 24


@functools.lru_cache(maxsize=1)
def flash_attn_varlen_func():
    """flash-attn's ``flash_attn_varlen_func``, or None when flash-attn is not installed (imported once)."""
    try:
        from flash_attn import flash_attn_varlen_func as func
    except ImportError:
        return None
    return func


def _flash_reasons(q: Tensor, *_: object) -> list[str]:
    reasons = []
    if q.shape[-1] % 8 or q.shape[-1] > 256:
        reasons.append(f"head dim {q.shape[-1]} is not a multiple of 8 up to 256")
    if flash_attn_varlen_func() is None:
        reasons.append("flash-attn is not installed (pip install flash-attn --no-build-isolation)")
    return reasons


def _run_flash(q: Tensor, k: Tensor, v: Tensor, layout: PackedLayout) -> Tensor:
    return flash_attn_varlen_func()(
        q, k, v, layout.cu_seqlens_q, layout.cu_seqlens_k, layout.max_seqlen_q, layout.max_seqlen_k, 0.0
    )


#: Packed (varlen) attention backends in priority order (family ``attention`` of :mod:`aion_fast.settings`):
#: flash-attn's varlen kernel on CUDA half/bf16, else SDPA (block-diagonal mask or re-padding).
VARLEN_BACKENDS = (
    Backend("flash", _flash_reasons, _run_flash, devices=("cuda",), dtypes=(torch.float16, torch.bfloat16)),
    Backend("sdpa", no_reasons, lambda q, k, v, layout: sdpa_varlen_attention(q, k, v, layout)),
)


def varlen_backend(q: Tensor) -> tuple[str, list[str]]:
    """The packed-attention backend for queries like ``q``, and why flash-attn was not chosen.

    Args:
        q: ``(T, H, d)`` packed queries.

    Returns:
        ``("flash" or "sdpa", reasons flash-attn is not used)``; cached per device type, dtype and head dim.

    Raises:
        BackendUnavailableError: ``AION_FAST_BACKEND`` forces ``flash`` and it cannot run (the reasons are listed).
    """
    backend = select("varlen_attention", VARLEN_BACKENDS, q, key=(q.shape[-1],), family="attention")
    if backend.name == "flash":
        return "flash", []
    if settings.forced_backend("attention") == "sdpa":
        return "sdpa", [f"{settings.BACKEND_ENV} forces sdpa"]
    return "sdpa", VARLEN_BACKENDS[0].not_supported_reasons(q)


def varlen_attention(q: Tensor, k: Tensor, v: Tensor, layout: PackedLayout) -> Tensor:
    """Softmax attention of every packed query sample to the key sample of the same index.

    Args:
        q: ``(Tq, H, d)`` packed queries.
        k: ``(Tk, H, d)`` packed keys.
        v: ``(Tk, H, d)`` packed values.
        layout: Sample offsets of queries and keys.

    Returns:
        ``(Tq, H, d)``; a query whose sample has no key gets zeros.
    """
    if q.is_cuda and torch.is_autocast_enabled("cuda"):
        # Under autocast, QK-norm (a LayerNorm) returns float32 q and k beside bf16 v: give flash-attn one dtype.
        dtype = torch.get_autocast_dtype("cuda")
        q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    backend = select("varlen_attention", VARLEN_BACKENDS, q, key=(q.shape[-1],), family="attention")
    return backend.run(q, k, v, layout)


def sdpa_varlen_attention(
    q: Tensor, k: Tensor, v: Tensor, layout: PackedLayout, max_block_elements: int = BLOCK_DIAGONAL_MAX_ELEMENTS
) -> Tensor:
    """The ``scaled_dot_product_attention`` fallback of :func:`varlen_attention` (same arguments and result).

    Up to ``max_block_elements`` query-key pairs it runs one SDPA call over the whole pack under a block-diagonal
    mask; beyond, it scatters the samples into a padded ``(B, L, H, d)`` batch and masks the key padding.
    """
    seg_q, seg_k = layout.segment_q, layout.segment_k
    if q.shape[0] * k.shape[0] <= max_block_elements:
        allowed = seg_q[:, None] == seg_k[None, :]
        keyless = ~allowed.any(dim=1)
        if bool(keyless.any()):
            allowed = allowed | keyless[:, None]
        out = F.scaled_dot_product_attention(
            q.transpose(0, 1)[None], k.transpose(0, 1)[None], v.transpose(0, 1)[None], attn_mask=allowed
        )[0].transpose(0, 1)
        return out.masked_fill(keyless[:, None, None], 0.0)

    batch = layout.batch
    pos_q = torch.arange(q.shape[0], device=q.device) - layout.cu_seqlens_q.long()[seg_q]
    pos_k = torch.arange(k.shape[0], device=k.device) - layout.cu_seqlens_k.long()[seg_k]

    def pad(packed: Tensor, segments: Tensor, positions: Tensor, length: int) -> Tensor:
        padded = packed.new_zeros(batch, length, *packed.shape[1:])
        padded[segments, positions] = packed
        return padded.transpose(1, 2)  # (B, H, L, d)

    lengths_k = layout.cu_seqlens_k.long().diff()
    allowed = torch.arange(layout.max_seqlen_k, device=k.device)[None, :] < lengths_k[:, None]
    keyless = lengths_k == 0
    allowed = (allowed | keyless[:, None])[:, None, None, :]
    out = F.scaled_dot_product_attention(
        pad(q, seg_q, pos_q, layout.max_seqlen_q),
        pad(k, seg_k, pos_k, layout.max_seqlen_k),
        pad(v, seg_k, pos_k, layout.max_seqlen_k),
        attn_mask=allowed,
    )
    out = out.transpose(1, 2)[seg_q, pos_q]
    return out.masked_fill(keyless[seg_q][:, None, None], 0.0)


class SelfAttention(nn.Module):
    """Multi-head self-attention with a fused ``qkv`` projection and optional QK-norm.

    Args:
        dim: Model width ``D``.
        num_heads: Number of heads ``H``; ``D`` must be divisible by it.
        qkv_bias: Bias on the ``qkv`` projection.
        proj_bias: Bias on the output projection.
        qk_norm: Apply a per-head LayerNorm to queries and keys.
        norm_bias: Bias of the QK-norm LayerNorms.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool, proj_bias: bool, qk_norm: bool, norm_bias: bool):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim, bias=proj_bias)
        if qk_norm:
            self.q_norm = LayerNorm(self.head_dim, bias=norm_bias)
            self.k_norm = LayerNorm(self.head_dim, bias=norm_bias)
        else:
            self.q_norm = self.k_norm = None

    def forward(self, x: Tensor, mask: AttentionMask | Tensor | None = None) -> Tensor:
        """Attends ``x`` to itself.

        Args:
            x: ``(B, N, D)``.
            mask: Prepared ``(B, 1, N, N)``-style mask, or a reference bool mask (see :func:`as_attention_mask`).

        Returns:
            ``(B, N, D)``.
        """
        mask = as_attention_mask(mask)
        batch, length, dim = x.shape
        if mask.uniform:
            # Every key is hidden: the output is the value mean, the same for all queries, so q and k are not needed.
            bias = None if self.qkv.bias is None else self.qkv.bias[2 * dim :]
            values = F.linear(x, self.qkv.weight[2 * dim :], bias)
            if mask.packed is not None:  # (1, T, D): the mean of each packed sample
                layout = mask.packed
                means = segment_mean(values[0], layout.segment_k, layout.batch)
                return self.proj(means)[layout.segment_q][None]
            if mask.uniform_keys is not None:  # the mean over each row's selected keys
                weights = mask.uniform_keys[..., None].to(values.dtype)
                mean = (values * weights).sum(dim=1, keepdim=True) / weights.sum(dim=1, keepdim=True).clamp_min(1.0)
                return self.proj(mean).expand(batch, length, dim)
            return self.proj(values.mean(dim=1, keepdim=True)).expand(batch, length, dim)
        return self.proj(self.attend_projected(self.qkv(x), mask))

    def attend_projected(self, qkv: Tensor, mask: AttentionMask) -> Tensor:
        """Attention on the fused projections, before ``proj``: per-head split, QK-norm, :func:`attend`.

        Args:
            qkv: ``(B, N, 3 * D)`` output of ``self.qkv``.
            mask: Prepared mask, not uniform.

        Returns:
            ``(B, N, D)`` heads side by side.
        """
        batch, length, width = qkv.shape
        q, k, v = qkv.view(batch, length, 3, self.num_heads, self.head_dim).unbind(2)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        out = attend(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), mask)
        return out.transpose(1, 2).reshape(batch, length, width // 3)


class CrossAttention(nn.Module):
    """Multi-head cross-attention from queries ``x`` to a context, with optional QK-norm.

    Args:
        dim: Model width ``D``.
        num_heads: Number of heads ``H``.
        qkv_bias: Bias on the ``q`` and ``kv`` projections.
        proj_bias: Bias on the output projection.
        qk_norm: Apply a per-head LayerNorm to queries and keys.
        norm_bias: Bias of the QK-norm LayerNorms.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool, proj_bias: bool, qk_norm: bool, norm_bias: bool):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim, bias=proj_bias)
        if qk_norm:
            self.q_norm = LayerNorm(self.head_dim, bias=norm_bias)
            self.k_norm = LayerNorm(self.head_dim, bias=norm_bias)
        else:
            self.q_norm = self.k_norm = None

    def forward(self, x: Tensor, context: Tensor, mask: AttentionMask | Tensor | None = None) -> Tensor:
        """Attends queries to the context.

        Args:
            x: ``(B, M, D)`` queries.
            context: ``(B, N, D)`` keys/values source.
            mask: Prepared ``(B, 1, 1, N)``-style key mask, or a reference bool ``(B, 1, N)`` mask.

        Returns:
            ``(B, M, D)``.
        """
        mask = as_attention_mask(mask)
        batch, length, dim = x.shape
        q = self.q(x).view(batch, length, self.num_heads, self.head_dim)
        k, v = self.kv(context).view(batch, context.shape[1], 2, self.num_heads, self.head_dim).unbind(2)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        out = attend(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), mask)
        return self.proj(out.transpose(1, 2).reshape(batch, length, dim))


def _build_mlp(dim: int, mlp_ratio: float, act_layer: type[nn.Module], bias: bool, gated: bool) -> nn.Module:
    hidden_dim = int(dim * mlp_ratio)
    return (GatedMlp if gated else Mlp)(dim, hidden_dim, act_layer, bias)


@dataclass(frozen=True)
class BlockOptions:
    """Hyper-parameters shared by all encoder and decoder blocks (see :class:`aion_fast.model.config.AIONConfig`)."""

    dim: int
    num_heads: int
    mlp_ratio: float
    qkv_bias: bool
    proj_bias: bool
    mlp_bias: bool
    norm_bias: bool
    gated_mlp: bool
    qk_norm: bool
    act_layer: type[nn.Module]


def _rows_reasons(x: Tensor, grad: bool, autocast: bool, same_dtype: bool, packed: bool, uniform: bool,
                  enough_rows: bool) -> list[str]:  # fmt: skip
    reasons = []
    if grad:
        reasons.append("autograd is on (the row path is for inference)")
    if autocast:
        reasons.append("CPU autocast is on")
    if not same_dtype:
        reasons.append("activations and weights differ in dtype")
    if packed or uniform:
        reasons.append("packed or uniform attention")
    if not enough_rows:
        reasons.append("fewer rows than AION_FAST_CPU_ROW_BLOCK (or 0: off)")
    return reasons


#: Encoder-block paths (family ``blocks``): CPU inference in row blocks, else the plain forward.
BLOCK_BACKENDS = (
    Backend("rows", _rows_reasons, lambda *_: None, devices=("cpu",)),
    Backend("plain", no_reasons, lambda *_: None),
)


class EncoderBlock(nn.Module):
    """Pre-norm encoder block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``.

    Args:
        options: Shared block hyper-parameters.
        drop_path: Stochastic-depth rate of this block.
        use_checkpoint: Recompute activations in the backward pass instead of storing them (training only).
    """

    def __init__(self, options: BlockOptions, drop_path: float = 0.0, use_checkpoint: bool = False):
        super().__init__()
        o = options
        self.use_checkpoint = use_checkpoint
        self.norm1 = LayerNorm(o.dim, bias=o.norm_bias)
        self.attn = SelfAttention(o.dim, o.num_heads, o.qkv_bias, o.proj_bias, o.qk_norm, o.norm_bias)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = LayerNorm(o.dim, bias=o.norm_bias)
        self.mlp = _build_mlp(o.dim, o.mlp_ratio, o.act_layer, o.mlp_bias, o.gated_mlp)

    def _forward(self, x: Tensor, mask: AttentionMask) -> Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), mask))
        return x + self.drop_path(self.mlp(self.norm2(x)))

    def _row_blocks_apply(self, x: Tensor, mask: AttentionMask) -> bool:
        """Whether :meth:`_forward_row_blocks` computes this call (the ``blocks`` family's choice; module docstring)."""
        if torch.compiler.is_compiling() or x.device.type != "cpu":  # the row path is eager CPU inference only
            return False
        step = settings.cpu_row_block()
        weight_dtype = getattr(self.attn.qkv.weight, "dtype", None)  # None for a quantized Linear (weight())
        key = (torch.is_grad_enabled(), torch.is_autocast_enabled("cpu"), x.dtype == weight_dtype,
               mask.packed is not None, mask.uniform, 0 < step < x.shape[0] * x.shape[1])  # fmt: skip
        return select("encoder_block", BLOCK_BACKENDS, x, *key, key=key, family="blocks").name == "rows"

    def _forward_row_blocks(self, x: Tensor, mask: AttentionMask) -> Tensor:
        """:meth:`_forward` with the position-wise work in blocks of ``settings.cpu_row_block()`` rows (inference only).

        Args:
            x: ``(B, N, D)`` activations.
            mask: Prepared self-attention mask (neither packed nor uniform).

        Returns:
            ``(B, N, D)``, the same values as :meth:`_forward`.
        """
        batch, length, dim = x.shape
        attn, rows, step = self.attn, batch * length, settings.cpu_row_block()
        flat = x.reshape(rows, dim)
        qkv = torch.empty(rows, 3 * dim, dtype=x.dtype)
        for start in range(0, rows, step):
            linear_into(self.norm1(flat[start : start + step]), attn.qkv, qkv[start : start + step])
        heads = attn.attend_projected(qkv.view(batch, length, 3 * dim), mask).reshape(rows, dim)
        out = torch.empty_like(flat)
        for start in range(0, rows, step):
            h = flat[start : start + step] + attn.proj(heads[start : start + step])
            torch.add(h, self.mlp(self.norm2(h)), out=out[start : start + step])
        return out.view(batch, length, dim)

    def forward(self, x: Tensor, mask: AttentionMask | Tensor | None = None) -> Tensor:
        """Maps ``(B, N, D)`` to ``(B, N, D)`` under the key-padding mask: prepared, or the reference's bool
        ``(B, 1, N)`` mask (True = absent, as ``embed_inputs`` returns it), or ``None``."""
        mask = as_attention_mask(mask)
        if self.use_checkpoint and self.training and torch.is_grad_enabled():
            return checkpoint(self._forward, x, mask, use_reentrant=False)
        if self._row_blocks_apply(x, mask):
            return self._forward_row_blocks(x, mask)
        return self._forward(x, mask)


class DecoderBlock(nn.Module):
    """Pre-norm decoder block: self-attention, cross-attention to the encoder context, MLP.

    Args:
        options: Shared block hyper-parameters.
        drop_path: Stochastic-depth rate of this block.
        use_checkpoint: Recompute activations in the backward pass instead of storing them (training only).
    """

    def __init__(self, options: BlockOptions, drop_path: float = 0.0, use_checkpoint: bool = False):
        super().__init__()
        o = options
        self.use_checkpoint = use_checkpoint
        self.norm1 = LayerNorm(o.dim, bias=o.norm_bias)
        self.self_attn = SelfAttention(o.dim, o.num_heads, o.qkv_bias, o.proj_bias, o.qk_norm, o.norm_bias)
        self.cross_attn = CrossAttention(o.dim, o.num_heads, o.qkv_bias, o.proj_bias, o.qk_norm, o.norm_bias)
        self.query_norm = LayerNorm(o.dim, bias=o.norm_bias)
        self.context_norm = LayerNorm(o.dim, bias=o.norm_bias)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = LayerNorm(o.dim, bias=o.norm_bias)
        self.mlp = _build_mlp(o.dim, o.mlp_ratio, o.act_layer, o.mlp_bias, o.gated_mlp)

    def _forward(self, x: Tensor, context: Tensor, self_mask: AttentionMask, cross_mask: AttentionMask) -> Tensor:
        x = x + self.drop_path(self.self_attn(self.norm1(x), self_mask))
        x = x + self.drop_path(self.cross_attn(self.query_norm(x), self.context_norm(context), cross_mask))
        return x + self.drop_path(self.mlp(self.norm2(x)))

    def forward(
        self,
        x: Tensor,
        context: Tensor,
        self_mask: AttentionMask | Tensor | None = None,
        cross_mask: AttentionMask | Tensor | None = None,
        *,
        sa_mask: Tensor | None = None,
        xa_mask: Tensor | None = None,
    ) -> Tensor:
        """Updates decoder queries.

        Args:
            x: ``(B, M, D)`` decoder tokens.
            context: ``(B, N, D)`` encoder context.
            self_mask: Prepared ``(B, 1, M, M)``-style decoder self-attention mask, or a bool ``(B, M, M)`` one.
            cross_mask: Prepared ``(B, 1, 1, N)``-style encoder key-padding mask, or a bool ``(B, 1, N)`` one.
            sa_mask, xa_mask: The reference's keyword names of ``self_mask`` and ``cross_mask``.

        Returns:
            ``(B, M, D)``.
        """
        if sa_mask is not None or xa_mask is not None:
            if self_mask is not None or cross_mask is not None:
                raise ValueError("give the masks as self_mask/cross_mask or as sa_mask/xa_mask, not both")
            self_mask, cross_mask = sa_mask, xa_mask
        self_mask = as_attention_mask(self_mask, "self_mask")
        cross_mask = as_attention_mask(cross_mask, "cross_mask")
        if self.use_checkpoint and self.training and torch.is_grad_enabled():
            return checkpoint(self._forward, x, context, self_mask, cross_mask, use_reentrant=False)
        return self._forward(x, context, self_mask, cross_mask)
