"""Export for INT8 inference: ONNX graphs quantized with ONNX Runtime, and a PyTorch INT8/FP8 path for GPUs.

``aion-fast export --model CKPT --output aion-int8/ --format onnx --precision int8 --calibration MMU_FILES...``
writes a self-describing directory that ``--model`` accepts (``aion-fast encode ... --model aion-int8/``).
From Python: :func:`export` (checkpoint -> directory), :func:`load_exported` (directory -> model, codecs) and
:func:`quantize` (a loaded model or codec -> its INT8 counterpart, usable by :func:`aion_fast.embed` /
``CodecManager``).

Attributes are imported on first use, so ``import aion_fast.export`` needs neither onnx nor onnxruntime.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "export": "aion_fast.export.api",
    "quantize": "aion_fast.export.api",
    "read_calibration_objects": "aion_fast.export.api",
    "load_exported": "aion_fast.export.runtime",
    "load_for_encoding": "aion_fast.export.runtime",
    "is_exported": "aion_fast.export.runtime",
    "read_export_metadata": "aion_fast.export.runtime",
    "ExportFormatError": "aion_fast.export.runtime",
    "OnnxEmbedder": "aion_fast.export.runtime",
    "OnnxCodecManager": "aion_fast.export.runtime",
    "quantize_torch": "aion_fast.export.torch_int8",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'aion_fast.export' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
