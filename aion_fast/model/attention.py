"""Attention for the transformer blocks: prepared masks, and the backends chosen by :mod:`aion_fast.dispatch`.

Masks use the reference convention (True = key hidden) until SDPA, where :class:`AttentionMask` inverts them once per
forward. The reference fills hidden scores with ``-finfo.max``, so a query with *all* keys hidden gets the value mean:
such rows run unmasked and are replaced by that mean (the decoder self-attention of :meth:`AION.forward` is always
such a mask; training averages over a row's selected queries, ``AttentionMask.uniform_keys``). Paths (family
``attention``): dense SDPA (no mask when nothing is hidden); key padding (:class:`KeyPadding`, present tokens first:
flash-attn varlen, else mask-free SDPA per key length so CUDA keeps its fused kernels, else SDPA under the mask);
packed (:class:`PackedLayout`, training: flash-attn varlen, else SDPA block-diagonal or re-padded).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from aion_fast import settings
from aion_fast.dispatch import Backend, no_reasons, select

__all__ = [
    "AttentionMask",
    "KeyPadding",
    "PackedLayout",
    "as_attention_mask",
    "attend",
    "flash_attn_varlen_func",
    "key_padding_backend",
    "sdpa_varlen_attention",
    "segment_mean",
    "varlen_attention",
    "varlen_backend",
]


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


#: Key padding spread over more distinct lengths than this runs under the boolean mask (unless ``sdpa`` is forced):
#: one SDPA launch per length stops paying off.
MAX_KEY_LENGTH_BUCKETS = 16


@dataclass(frozen=True)
class KeyPadding:
    """Key padding with every sample's present keys first: sample ``b`` sees keys ``[0, lengths[b])``.

    Attributes:
        lengths: ``(B,)`` int64 present keys per sample, each >= 1.
        buckets: One ``(L, rows)`` per distinct length ``L``: ``rows`` the ``(b_L,)`` int64 samples with ``L`` keys
            (``None`` when every sample has ``L``).
        present: ``(B, Lk)`` bool, True for the present keys.
    """

    lengths: Tensor
    buckets: tuple[tuple[int, Tensor | None], ...]
    present: Tensor

    @property
    def max_length(self) -> int:
        """Longest present key sequence."""
        return max(length for length, _ in self.buckets)


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
        key_padding: With ``allowed``: the same key padding by lengths (present keys first), for the mask-free paths.
    """

    allowed: Tensor | None = None
    fully_hidden_rows: Tensor | None = None
    uniform: bool = False
    uniform_keys: Tensor | None = None
    packed: PackedLayout | None = None
    key_padding: KeyPadding | None = None

    @classmethod
    def from_hidden(cls, hidden: Tensor | None) -> AttentionMask:
        """Prepares a ``(B, Lq or 1, Lk)`` bool mask, True = hidden (``None``: no mask); nothing hidden gives no
        mask at all, so SDPA can pick its fastest kernel."""
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

    @classmethod
    def from_key_padding(cls, padding: Tensor | None) -> AttentionMask:
        """Prepares a ``(B, Lk)`` bool key-padding mask, True = absent (``None``: all present).

        Nothing hidden gives no mask; present keys first with at least one per sample give the bool mask plus its
        :class:`KeyPadding` (for the mask-free paths); anything else :meth:`from_hidden`'s mask.
        """
        if padding is None:
            return cls()
        present = ~padding
        lengths = present.sum(dim=1)
        any_hidden, holes, keyless = torch.stack(  # one host sync for the three questions
            [padding.any(), (padding[:, :-1] & present[:, 1:]).any(), (lengths == 0).any()]
        ).tolist()
        if not any_hidden:
            return cls()
        if holes or keyless:  # a present key after an absent one, or a sample without keys
            return cls.from_hidden(padding[:, None, :])
        values, counts = torch.unique(lengths, return_counts=True)
        values, counts = torch.stack([values, counts]).tolist()
        if len(values) == 1:
            buckets = ((int(values[0]), None),)
        else:
            rows = torch.argsort(lengths, stable=True).split(counts)
            buckets = tuple((int(length), group) for length, group in zip(values, rows, strict=True))
        return cls(allowed=present[:, None, None, :], key_padding=KeyPadding(lengths, buckets, present))


def as_attention_mask(mask: AttentionMask | Tensor | None, name: str = "mask") -> AttentionMask:
    """An :class:`AttentionMask` as is; a bool ``(B, Lq or 1, Lk)`` reference mask (True = hidden, e.g.
    ``embed_inputs``' ``(B, 1, N)``) prepared; ``None`` for no mask. ValueError (naming ``name``) for other tensors."""
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
    """SDPA with the reference's masking: ``(B, H, Lq, d)`` q, ``(B, H, Lk, d)`` k, v -> ``(B, H, Lq, d)``."""
    if mask.packed is not None:
        layout = mask.packed
        q, k, v = (t[0].transpose(0, 1) for t in (q, k, v))  # (T, H, d)
        if mask.uniform:
            out = segment_mean(v, layout.segment_k, layout.batch)[layout.segment_q]
        else:
            out = varlen_attention(q, k, v, layout)
        return out.transpose(0, 1)[None]
    if mask.key_padding is not None:
        return key_padding_attention(q, k, v, mask)
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
    """``(B, ...)`` mean of the packed ``(T, ...)`` rows of each sample (``segments``: (T,) int64); 0 for empty ones."""
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
    """``("flash" or "sdpa", reasons flash-attn is not used)`` for ``(T, H, d)`` packed queries, cached per device
    type, dtype and head dim; BackendUnavailableError when ``flash`` is forced and cannot run."""
    backend = select("varlen_attention", VARLEN_BACKENDS, q, key=(q.shape[-1],), family="attention")
    if backend.name == "flash":
        return "flash", []
    if settings.forced_backend("attention") == "sdpa":
        return "sdpa", [f"{settings.BACKEND_ENV} forces sdpa"]
    return "sdpa", VARLEN_BACKENDS[0].not_supported_reasons(q)


def varlen_attention(q: Tensor, k: Tensor, v: Tensor, layout: PackedLayout) -> Tensor:
    """Attention of each packed query sample to the key sample of the same index: ``(Tq, H, d)`` q, ``(Tk, H, d)``
    k, v -> ``(Tq, H, d)`` (zeros for a sample without keys)."""
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


# ---- key padding (inference groups with absent tokens) ------------------------------------------------------------


def _sdpa_masked(q: Tensor, k: Tensor, v: Tensor, mask: AttentionMask) -> Tensor:
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask.allowed)


def sdpa_bucketed_attention(q: Tensor, k: Tensor, v: Tensor, mask: AttentionMask) -> Tensor:
    """Key-padded attention without a mask: one SDPA call per distinct key length, so CUDA may run its fused
    kernels; same result as the bool mask. ``(B, H, Lq, d)`` q, ``(B, H, Lk, d)`` k, v -> ``(B, H, Lq, d)``."""
    buckets = mask.key_padding.buckets
    if len(buckets) == 1:
        length = buckets[0][0]
        return F.scaled_dot_product_attention(q, k[:, :, :length], v[:, :, :length])
    out = torch.empty(*q.shape[:-1], v.shape[-1], dtype=q.dtype, device=q.device)
    for length, rows in buckets:
        out[rows] = F.scaled_dot_product_attention(q[rows], k[rows, :, :length], v[rows, :, :length])
    return out


def _flash_key_padding(q: Tensor, k: Tensor, v: Tensor, mask: AttentionMask) -> Tensor:
    """flash-attn varlen on key-padded tensors: queries dense (``Lq`` per sample), keys packed to the present ones."""
    padding = mask.key_padding
    batch, heads, length_q, _ = q.shape
    layout = PackedLayout(
        cu_seqlens_q=torch.arange(0, (batch + 1) * length_q, length_q, dtype=torch.int32, device=q.device),
        cu_seqlens_k=F.pad(padding.lengths.cumsum(0), (1, 0)).to(torch.int32),
        max_seqlen_q=length_q,
        max_seqlen_k=padding.max_length,
        segment_q=torch.empty(0, dtype=torch.int64, device=q.device),  # unused by flash-attn
        segment_k=torch.empty(0, dtype=torch.int64, device=q.device),
    )
    packed_q = q.transpose(1, 2).reshape(batch * length_q, heads, -1)
    packed_k, packed_v = (t.transpose(1, 2)[padding.present] for t in (k, v))
    out = _run_flash(packed_q, packed_k, packed_v, layout)
    return out.view(batch, length_q, heads, -1).transpose(1, 2)


def _bucket_reasons(q: Tensor, many_lengths: bool) -> list[str]:
    if settings.forced_backend("attention") == "sdpa":
        return []
    reasons = []
    if q.device.type == "cpu":
        reasons.append("on CPU the fused SDPA kernel takes the mask at no extra cost; buckets only add copies")
    if many_lengths:
        reasons.append(f"more than {MAX_KEY_LENGTH_BUCKETS} distinct key lengths")
    return reasons


#: Key-padded attention backends in priority order (family ``attention``): flash-attn varlen, mask-free SDPA per
#: key length, SDPA under the boolean mask (the last is chosen only unforced).
KEY_PADDING_BACKENDS = (
    Backend("flash", _flash_reasons, _flash_key_padding, devices=("cuda",), dtypes=(torch.float16, torch.bfloat16)),
    Backend("sdpa", _bucket_reasons, sdpa_bucketed_attention),
    Backend("masked", no_reasons, _sdpa_masked),
)


def key_padding_backend(q: Tensor, mask: AttentionMask) -> str:
    """Name of the backend :func:`attend` runs for key-padded queries like ``q``: ``flash``, ``sdpa`` or ``masked``."""
    many = len(mask.key_padding.buckets) > MAX_KEY_LENGTH_BUCKETS
    return select("key_padding_attention", KEY_PADDING_BACKENDS, q, many, key=(q.shape[-1], many),
                  family="attention").name  # fmt: skip


def key_padding_attention(q: Tensor, k: Tensor, v: Tensor, mask: AttentionMask) -> Tensor:
    """:func:`attend` for a mask with :attr:`AttentionMask.key_padding` (same arguments and result)."""
    if q.is_cuda and torch.is_autocast_enabled("cuda"):  # QK-norm gives float32 q, k beside bf16 v under autocast
        dtype = torch.get_autocast_dtype("cuda")
        q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    many = len(mask.key_padding.buckets) > MAX_KEY_LENGTH_BUCKETS
    backend = select("key_padding_attention", KEY_PADDING_BACKENDS, q, many, key=(q.shape[-1], many),
                     family="attention")  # fmt: skip
    return backend.run(q, k, v, mask)
