"""Small helpers shared across the package."""

from __future__ import annotations

from typing import Any

import torch


def as_normal_tensor(value: Any) -> Any:
    """Returns a tensor made under ``torch.inference_mode`` as an ordinary tensor (anything else unchanged).

    Codecs and ``embed`` run their networks in inference mode; what they return must still be usable where autograd
    is on (``model.encode(tokens)`` outside ``no_grad``, a probe trained on embeddings), so it leaves as a normal
    tensor. The copy is one small clone of the outputs.
    """
    if isinstance(value, torch.Tensor) and value.is_inference():
        with torch.inference_mode(False):
            return value.clone()
    return value


def linear_into(x: torch.Tensor, layer: torch.nn.Linear, out: torch.Tensor) -> torch.Tensor:
    """``out[:] = layer(x)`` for 2-D ``x`` (rows, in) and ``out`` (rows, out) without a temporary: the addmm (or mm,
    without bias) that ``F.linear`` runs on 2-D input, so the values are the same."""
    if torch.is_autocast_enabled(x.device.type):  # ``out=`` calls have no autocast rule: linear, then copy
        return out.copy_(torch.nn.functional.linear(x, layer.weight, layer.bias))
    if layer.bias is None:
        return torch.mm(x, layer.weight.t(), out=out)
    return torch.addmm(layer.bias, x, layer.weight.t(), out=out)
