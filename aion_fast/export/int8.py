"""INT8 quantization of exported ONNX graphs with ONNX Runtime's tools, and the per-layer sensitivity report.

- Transformer (:class:`~aion_fast.export.graphs.EncoderGraph`): *dynamic* quantization of the ``MatMul`` nodes
  (weights INT8 offline, activations quantized per call from their observed range); embeddings, norms, softmax stay
  fp32.
- Codecs (image MagViT, spectrum ConvNeXt): *static* quantization of ``Conv`` (and ``MatMul``) nodes, activation
  ranges calibrated on real batches (min-max), per-channel weights, QOperator format (``QLinearConv``...). ONNX
  Runtime recommends QDQ, but on the demo codecs the accuracy-driven search below kept 9 of 25 image layers fp32
  with QDQ against 5 with QOperator (same calibration), so QOperator is used.
- Weight type: QUInt8 on CPUs without VNNI (the u8s8 kernels there saturate the 16-bit intermediate sums and lose
  ~25-30% accuracy, see ONNX Runtime's quantization notes and ENVIRONMENT.md); QInt8 where VNNI/AMX exists.
- Sensitivity: each candidate node is quantized *alone* and the damage it does on the calibration inputs is
  measured (1 - cosine of pooled embeddings for the transformer, fraction of changed tokens for the codecs). Nodes
  whose damage exceeds a threshold stay fp32 in the final model; the report lists every node.
"""

from __future__ import annotations

import functools
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "LayerSensitivity",
    "cpu_has_vnni",
    "default_weight_type",
    "quantizable_nodes",
    "quantize_dynamic_matmuls",
    "quantize_static_convs",
    "sensitivity_report",
]


@functools.cache
def cpu_has_vnni() -> bool:
    """True when the CPU has an 8-bit dot-product instruction (AVX512-VNNI, AVX-VNNI or AMX), per /proc/cpuinfo."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(flag in flags for flag in ("avx512_vnni", "avx_vnni", "amx_int8"))


def default_weight_type() -> str:
    """``"QUInt8"`` without VNNI (u8u8 kernels, exact 32-bit sums), ``"QInt8"`` with it."""
    return "QInt8" if cpu_has_vnni() else "QUInt8"


def _quant_type(name: str) -> Any:
    from onnxruntime.quantization import QuantType

    if name not in ("QInt8", "QUInt8"):
        raise ValueError(f"weight_type must be 'QInt8' or 'QUInt8', got {name!r}")
    return getattr(QuantType, name)


def quantizable_nodes(model_path: str | os.PathLike, op_types: Sequence[str]) -> list[str]:
    """Names of the nodes of ``op_types`` whose second input is a weight (an initializer), in graph order."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    weights = {init.name for init in model.graph.initializer}
    return [
        node.name
        for node in model.graph.node
        if node.op_type in op_types and len(node.input) > 1 and node.input[1] in weights
    ]


def quantize_dynamic_matmuls(
    model_path: str | os.PathLike,
    output_path: str | os.PathLike,
    weight_type: str,
    nodes_to_quantize: Sequence[str] | None = None,
    nodes_to_exclude: Sequence[str] = (),
) -> Path:
    """Dynamic INT8 quantization of the weight ``MatMul`` nodes (``DynamicQuantizeMatMul`` / ``MatMulInteger``).

    Args:
        model_path: fp32 ONNX file.
        output_path: where to write the INT8 model (single file).
        weight_type: ``"QUInt8"`` or ``"QInt8"``.
        nodes_to_quantize: restrict to these node names (default: every weight MatMul).
        nodes_to_exclude: node names kept fp32.

    Returns:
        ``output_path``.
    """
    from onnxruntime.quantization import quantize_dynamic

    quantize_dynamic(
        str(model_path),
        str(output_path),
        op_types_to_quantize=["MatMul"],
        per_channel=False,
        weight_type=_quant_type(weight_type),
        nodes_to_quantize=list(nodes_to_quantize) if nodes_to_quantize is not None else None,
        nodes_to_exclude=list(nodes_to_exclude),
    )
    return Path(output_path)


class _ArrayReader:
    """ONNX Runtime calibration reader over a list of input arrays for a single-input graph."""

    def __init__(self, input_name: str, batches: Sequence[np.ndarray]):
        self._items = iter([{input_name: np.ascontiguousarray(b, dtype=np.float32)} for b in batches])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._items, None)


def quantize_static_convs(
    model_path: str | os.PathLike,
    output_path: str | os.PathLike,
    input_name: str,
    calibration: Sequence[np.ndarray],
    weight_type: str,
    op_types: Sequence[str] = ("Conv", "MatMul"),
    nodes_to_quantize: Sequence[str] | None = None,
    nodes_to_exclude: Sequence[str] = (),
    calibration_cache: str | os.PathLike | None = None,
) -> Path:
    """Static INT8 quantization (QOperator format: QLinearConv / QLinearMatMul) with per-channel weights and min-max
    activation ranges calibrated on real batches.

    Args:
        model_path: fp32 ONNX file with one float input ``input_name``.
        output_path: where to write the INT8 model.
        input_name: the graph input fed by ``calibration``.
        calibration: network inputs of real objects, each ``(b, ...)`` float32.
        weight_type: ``"QUInt8"`` or ``"QInt8"``; activations are always QUInt8.
        op_types: node types to quantize.
        nodes_to_quantize: restrict to these node names (default: all of ``op_types`` with weights).
        nodes_to_exclude: node names kept fp32.
        calibration_cache: JSON file of activation ranges: read when it exists (no calibration run), else written.
            Fill it with a call that quantizes every node, so that it holds every range.

    Returns:
        ``output_path``.

    Raises:
        ValueError: empty calibration set.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if not calibration and not (calibration_cache is not None and Path(calibration_cache).is_file()):
        raise ValueError("calibration is empty: static quantization needs at least one batch of real inputs")
    quantize_static(
        str(model_path),
        str(output_path),
        _ArrayReader(input_name, calibration),
        quant_format=QuantFormat.QOperator,
        op_types_to_quantize=list(op_types),
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=_quant_type(weight_type),
        nodes_to_quantize=list(nodes_to_quantize) if nodes_to_quantize is not None else None,
        nodes_to_exclude=list(nodes_to_exclude),
        calibrate_method=CalibrationMethod.MinMax,
        calibration_cache_path=str(calibration_cache) if calibration_cache is not None else None,
        extra_options={"CalibTensorRangeSymmetric": False},
    )
    return Path(output_path)


#: One row of the sensitivity report: node name, op type, and the damage it does when quantized alone.
LayerSensitivity = dict[str, Any]


def sensitivity_report(
    model_path: str | os.PathLike,
    nodes: Sequence[str],
    quantize_only: Callable[[Path, Sequence[str]], None],
    damage: Callable[[Path], float],
    threshold: float,
) -> list[LayerSensitivity]:
    """Quantizes each node alone and measures the damage, largest first.

    Args:
        model_path: fp32 ONNX file (only used to name op types).
        nodes: candidate node names.
        quantize_only: ``(output path, [node])`` -> writes a model with only that node quantized.
        damage: ``model path -> float`` damage on the calibration inputs (0 = identical to fp32).
        threshold: nodes whose damage exceeds it are marked ``keep_fp32``.

    Returns:
        One dict per node: ``node``, ``op_type``, ``damage``, ``keep_fp32``; sorted by damage, largest first.
    """
    import onnx

    op_of = {n.name: n.op_type for n in onnx.load(str(model_path), load_external_data=False).graph.node}
    rows = []
    with tempfile.TemporaryDirectory(prefix="aion_fast_sens_") as tmp:
        for index, node in enumerate(nodes):
            path = Path(tmp) / f"single_{index}.onnx"
            quantize_only(path, [node])
            value = float(damage(path))
            rows.append(
                {"node": node, "op_type": op_of.get(node, "?"), "damage": value, "keep_fp32": value > threshold}
            )
            path.unlink(missing_ok=True)
    return sorted(rows, key=lambda row: -row["damage"])
