"""CPU inference of an encoder block in row blocks (family ``blocks`` of :mod:`aion_fast.dispatch`: ``rows``).

Without autograd on a CPU, the position-wise parts of :class:`~aion_fast.model.blocks.EncoderBlock` (norms, ``qkv``,
``proj``, MLP, residuals) run over blocks of ``AION_FAST_CPU_ROW_BLOCK`` rows (default 2,048) of the flattened
``(B * N, D)`` activations; only attention sees the whole tensor. Same operations per row, so the same values (up to
BLAS picking another kernel for another row count). Why: a tall ``(B * N, D)`` sgemm runs well below the speed of
its ~1k-row slices on small CPUs, and a block's MLP activations stay in cache from ``fc1`` to ``fc2``
(bench/RESULTS.md has the figures). ``AION_FAST_CPU_ROW_BLOCK=0`` turns it off.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from aion_fast import settings
from aion_fast.dispatch import Backend, no_reasons, select
from aion_fast.model.attention import AttentionMask
from aion_fast.tensor_utils import linear_into

__all__ = ["BLOCK_BACKENDS", "forward_row_blocks", "use_row_blocks"]


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


def use_row_blocks(block: nn.Module, x: Tensor, mask: AttentionMask) -> bool:
    """Whether :func:`forward_row_blocks` computes this call of encoder block ``block`` (the ``blocks`` choice)."""
    if torch.compiler.is_compiling() or x.device.type != "cpu":  # the row path is eager CPU inference only
        return False
    step = settings.cpu_row_block()
    weight_dtype = getattr(block.attn.qkv.weight, "dtype", None)  # None for a quantized Linear (weight())
    key = (torch.is_grad_enabled(), torch.is_autocast_enabled("cpu"), x.dtype == weight_dtype,
           mask.packed is not None, mask.uniform, 0 < step < x.shape[0] * x.shape[1])  # fmt: skip
    return select("encoder_block", BLOCK_BACKENDS, x, *key, key=key, family="blocks").name == "rows"


def forward_row_blocks(block: nn.Module, x: Tensor, mask: AttentionMask) -> Tensor:
    """An encoder block's forward with the position-wise work in blocks of ``settings.cpu_row_block()`` rows.

    Args:
        block: The :class:`~aion_fast.model.blocks.EncoderBlock` (inference, no drop path).
        x: ``(B, N, D)`` activations.
        mask: Prepared self-attention mask (neither packed nor uniform).

    Returns:
        ``(B, N, D)``, the values of the block's plain forward.
    """
    batch, length, dim = x.shape
    attn, rows, step = block.attn, batch * length, settings.cpu_row_block()
    flat = x.reshape(rows, dim)
    qkv = torch.empty(rows, 3 * dim, dtype=x.dtype)
    for start in range(0, rows, step):
        linear_into(block.norm1(flat[start : start + step]), attn.qkv, qkv[start : start + step])
    heads = attn.attend_projected(qkv.view(batch, length, 3 * dim), mask).reshape(rows, dim)
    out = torch.empty_like(flat)
    for start in range(0, rows, step):
        h = flat[start : start + step] + attn.proj(heads[start : start + step])
        torch.add(h, block.mlp(block.norm2(h)), out=out[start : start + step])
    return out.view(batch, length, dim)
