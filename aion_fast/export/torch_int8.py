"""PyTorch INT8 / FP8 inference of the embedding path (the GPU route), chosen by ``method``.

Only the layers of the embedding path are quantized: the ``nn.Linear`` layers of the encoder blocks and the
context projection. Embeddings, norms, attention arithmetic and the whole decoder keep their dtype, so
:meth:`AION.forward` and generation still run (in the original precision).

Methods:

- ``"torchao-int8-weight-only"``: INT8 weights, bf16/fp32 activations (torchao ``Int8WeightOnlyConfig``); memory
  bound decoding and small batches.
- ``"torchao-int8-dynamic"``: INT8 weights and per-token dynamically quantized INT8 activations (torchao
  ``Int8DynamicActivationInt8WeightConfig``): INT8 tensor-core matmuls on GPUs.
- ``"torchao-fp8"``: FP8 e4m3 weights and dynamic activations (``Float8DynamicActivationFloat8WeightConfig``); needs a
  GPU of compute capability >= 8.9 (Ada, Hopper).
- ``"torch-dynamic"``: ``torch.ao.quantization.quantize_dynamic`` (qint8 ``nn.Linear``, fbgemm): the CPU route.

torchao is optional (``pip install torchao``); without it the torchao methods raise a ``ValueError`` saying so.
On this project's CPU (no VNNI) torchao's int8 matmuls are far slower than fp32; they are meant for GPUs.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["TORCH_METHODS", "default_torch_method", "quantize_torch"]

TORCH_METHODS = ("torchao-int8-weight-only", "torchao-int8-dynamic", "torchao-fp8", "torch-dynamic")


def default_torch_method(precision: str, device: torch.device | str) -> str:
    """The method for ``precision`` (``"int8"`` / ``"fp8"``) on ``device``: torchao dynamic int8 on CUDA,
    ``torch-dynamic`` on CPU, ``torchao-fp8`` for fp8."""
    if precision == "fp8":
        return "torchao-fp8"
    return "torchao-int8-dynamic" if torch.device(device).type == "cuda" else "torch-dynamic"


def _embedding_path_linears(model: nn.Module) -> list[str]:
    """Names of the Linear modules of the encoder blocks and the context projection of an AION model."""
    names = [f"encoder.{name}" for name, mod in model.encoder.named_modules() if isinstance(mod, nn.Linear)]
    return [*names, "decoder_proj_context"]


def _check_fp8_device(model: nn.Module) -> None:
    device = next(model.parameters()).device
    if device.type != "cuda":
        raise ValueError("torchao-fp8 needs the model on a CUDA GPU of compute capability >= 8.9 (Ada/Hopper)")
    major, minor = torch.cuda.get_device_capability(device)
    if (major, minor) < (8, 9):
        raise ValueError(f"torchao-fp8 needs compute capability >= 8.9, this GPU has {major}.{minor}; use int8")


def quantize_torch(model: nn.Module, method: str = "torch-dynamic", inplace: bool = False) -> nn.Module:
    """Quantizes the embedding path of an :class:`~aion_fast.model.AION` model for inference.

    Args:
        model: The model (eval mode; any device, fp32 or bf16 weights).
        method: One of :data:`TORCH_METHODS`.
        inplace: Quantize ``model`` itself instead of a deep copy (default: the caller's model is untouched).

    Returns:
        The quantized model (same class, same ``embed`` / ``encode`` API); ``quantization_method`` records
        ``method``.

    Raises:
        ValueError: Unknown method, torchao missing, or FP8 on a device that lacks it.
    """
    if method not in TORCH_METHODS:
        raise ValueError(f"method {method!r} is not supported; choose one of {list(TORCH_METHODS)}")
    if not hasattr(model, "encoder") or not hasattr(model, "decoder_proj_context"):
        raise ValueError(f"quantize_torch expects an aion_fast AION model, got {type(model).__name__}")
    target = model if inplace else copy.deepcopy(model)
    target.eval()
    wanted = set(_embedding_path_linears(target))
    if method == "torch-dynamic":
        from torch.ao.quantization import quantize_dynamic

        if next(target.parameters()).device.type != "cpu":
            raise ValueError("method 'torch-dynamic' runs on the CPU only; use a torchao method on GPUs")
        torch.backends.mha.set_fastpath_enabled(False)
        for name in sorted(wanted):
            parent_name, _, child = name.rpartition(".")
            parent = target.get_submodule(parent_name) if parent_name else target
            linear = getattr(parent, child)
            quantized = quantize_dynamic(nn.Sequential(linear.float()), {nn.Linear}, dtype=torch.qint8)[0]
            setattr(parent, child, quantized)
    else:
        try:
            from torchao.quantization import (
                Float8DynamicActivationFloat8WeightConfig,
                Int8DynamicActivationInt8WeightConfig,
                Int8WeightOnlyConfig,
                quantize_,
            )
        except ImportError as error:
            raise ValueError(f"method {method!r} needs torchao: pip install torchao ({error})") from error
        if method == "torchao-fp8":
            _check_fp8_device(target)
            config = Float8DynamicActivationFloat8WeightConfig()
        elif method == "torchao-int8-dynamic":
            config = Int8DynamicActivationInt8WeightConfig()
        else:
            config = Int8WeightOnlyConfig()
        quantize_(target, config, filter_fn=lambda module, fqn: isinstance(module, nn.Linear) and fqn in wanted)
    target.quantization_method = method
    return target
