"""``aion_fast.export.export`` (checkpoint -> exported directory) and ``aion_fast.export.quantize`` (in memory).

INT8 by ONNX Runtime, with accuracy-driven mixed precision:

1. Export the fp32 graph and check it against PyTorch on the calibration objects.
2. Rank the weight layers by the damage each does when quantized alone (the sensitivity report).
3. Quantize every layer; if the calibration score misses its target (min per-object embedding cosine for the
   transformer, token agreement for a codec), keep the fewest most-damaging layers in fp32 that reach it (bisection
   over the ranking).

Held-out objects (never used for calibration) then give the accuracy figures written to ``export.json``.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from aion_fast.export.runtime import (
    CODEC_NETWORK_FILES,
    FORMAT_VERSION,
    METADATA_NAME,
    ExportFormatError,
    OnnxEmbedder,
    check_format,
    onnx_backed_codec,
)

__all__ = ["export", "quantize", "read_calibration_objects"]

#: Codec folder exported for each ``--modalities`` group that has a codec network.
_GROUP_CODECS = {"image": "image", "spectrum": "spectrum"}
DEFAULT_EMBEDDING_TARGET = 0.995
DEFAULT_TOKEN_TARGET = 0.995


# ---------------------------------------------------------------------------------------------------------------
# Calibration objects


def read_calibration_objects(files: Sequence[str | os.PathLike], groups: Sequence[str]) -> list[Any]:
    """Reads every object of MMU files as a one-object :class:`~aion_fast.data.mmu.ObjectBatch`.

    Args:
        files: MMU ``.hdf5`` files.
        groups: modality groups to read (``image``, ``spectrum``, ``photometry``...).

    Returns:
        Objects with at least one usable modality, in file and row order.

    Raises:
        ValueError: a file does not exist.
    """
    from aion_fast.data.formats import open_source
    from aion_fast.data.mmu import prepare_rows

    missing = [str(f) for f in files if not Path(f).is_file()]
    if missing:
        raise ValueError(f"calibration files {missing[:5]} do not exist; pass MMU .hdf5 files")
    objects = []
    for file in files:
        with open_source(file) as source:
            for row in range(source.num_rows):
                batch = prepare_rows(source, row, row + 1, groups)
                if batch.parts:
                    objects.append(batch)
    return objects


def _split_holdout(objects: list[Any], every: int = 2) -> tuple[list[Any], list[Any]]:
    """Every ``every``-th object of each modality pattern (from the second) is held out; the rest calibrates."""
    calibration, held_out, seen = [], [], {}
    for obj in objects:
        pattern = tuple(sorted(type(part.modality).__name__ for part in obj.parts))
        index = seen[pattern] = seen.get(pattern, -1) + 1
        (held_out if index % every == every - 1 else calibration).append(obj)
    return calibration, held_out


def _object_tokens(codecs: Any, obj: Any) -> dict[str, Tensor]:
    """Token key -> (1, T) tokens of one object's modalities."""
    tokens = {}
    for part in obj.parts:
        key = part.modality.token_key
        tokens[key] = codecs.encode(part.modality)[key].reshape(1, -1).cpu()
    return tokens


def _embed_objects(model: Any, token_dicts: Sequence[Mapping[str, Tensor]]) -> Tensor:
    from aion_fast.embedding import embed

    return torch.cat([embed(model, tokens, pooling="mean").float().cpu() for tokens in token_dicts])


# ---------------------------------------------------------------------------------------------------------------
# Mixed-precision search


def _weight_sizes(model_path: Path, nodes: Sequence[str]) -> dict[str, int]:
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    sizes = {init.name: int(np.prod(init.dims)) for init in model.graph.initializer}
    by_name = {node.name: node for node in model.graph.node}
    return {name: sizes.get(by_name[name].input[1], 0) for name in nodes}


def _quantize_to_target(
    fp32_path: Path,
    output_path: Path,
    nodes: Sequence[str],
    write: Callable[[Path, Sequence[str] | None, Sequence[str]], None],
    score: Callable[[Path], float],
    target: float,
    sensitivity: bool,
) -> dict[str, Any]:
    """Quantizes ``nodes``, keeping the most damaging ones fp32 until ``score >= target`` (see module docstring).

    Args:
        fp32_path: the fp32 graph.
        output_path: where the final graph goes.
        nodes: candidate node names.
        write: ``(path, nodes_to_quantize or None, nodes_to_exclude)`` writes a quantized graph.
        score: ``path -> float``, higher is better (1 = identical to fp32).
        target: score to reach.
        sensitivity: measure every node alone first (else: quantize everything once, no search).

    Returns:
        Summary: candidates, kept_fp32, score, target, met, quantized_weight_fraction, sensitivity (rows).
    """
    from aion_fast.export.int8 import sensitivity_report

    report: list[dict[str, Any]] = []
    if sensitivity and nodes:
        report = sensitivity_report(
            fp32_path, nodes, lambda path, only: write(path, only, ()), lambda path: 1.0 - score(path), 0.0
        )
    order = [row["node"] for row in report]
    scores: dict[int, float] = {}

    def score_keeping(count: int) -> float:  # the `count` most damaging nodes stay fp32
        if count not in scores:
            write(output_path, None, order[:count])
            scores[count] = score(output_path)
        return scores[count]

    # Smallest prefix of the damage ranking to keep fp32 that meets the target, by bisection (the score grows,
    # up to noise, with every layer kept fp32); the final file is rewritten for the chosen prefix.
    low, high = 0, len(order)
    if score_keeping(0) < target and order:
        while high - low > 1:
            middle = (low + high) // 2
            if score_keeping(middle) >= target:
                high = middle
            else:
                low = middle
        chosen = high
    else:
        chosen = 0
    kept = order[:chosen]
    value = score_keeping(chosen)
    write(output_path, None, kept)
    for row in report:
        row["keep_fp32"] = row["node"] in kept
    sizes = _weight_sizes(fp32_path, nodes)
    total = sum(sizes.values()) or 1
    return {
        "candidates": len(nodes),
        "kept_fp32": kept,
        "score": value,
        "target": target,
        "met": value >= target,
        "quantized_weight_fraction": sum(v for k, v in sizes.items() if k not in kept) / total,
        "sensitivity": report,
    }


# ---------------------------------------------------------------------------------------------------------------
# Graph builders


def _as_float32_eval(module: nn.Module) -> nn.Module:
    """``module`` itself when already fp32 on the CPU in eval mode, else a CPU fp32 eval copy (caller untouched)."""
    import copy

    tensors = [*module.parameters(), *module.buffers()]
    if not module.training and all(
        t.device.type == "cpu" and (not t.is_floating_point() or t.dtype == torch.float32) for t in tensors
    ):
        return module
    return copy.deepcopy(module).to("cpu", torch.float32).eval()


def _build_encoder(
    model: nn.Module,
    directory: Path,
    precision: str,
    token_dicts: Sequence[Mapping[str, Tensor]],
    weight_type: str,
    target: float,
    sensitivity: bool,
) -> dict[str, Any]:
    """Writes ``directory/encoder.onnx`` (fp32 or INT8) and returns its summary."""
    from aion_fast.export.accuracy import cosine_summary
    from aion_fast.export.int8 import quantizable_nodes, quantize_dynamic_matmuls
    from aion_fast.export.onnx import export_encoder

    model = _as_float32_eval(model)
    final = directory / "encoder.onnx"
    fp32 = directory / ("encoder.onnx" if precision == "fp32" else "encoder_fp32.tmp.onnx")
    export_encoder(model, fp32)
    summary: dict[str, Any] = {"file": final.name, "precision": precision, "inside_graph": [
        "token embedding lookups", "position + modality embeddings", "encoder blocks", "final norm",
        "context projection", "mean pooling over present tokens"]}  # fmt: skip
    reference = _embed_objects(model, token_dicts) if token_dicts else None
    if reference is not None:
        exported = _embed_objects(OnnxEmbedder(fp32, model.config.to_dict()), token_dicts)
        summary["onnx_fp32_vs_pytorch_max_relative"] = float(
            ((exported - reference).abs().amax(dim=1) / reference.abs().amax(dim=1)).max()
        )
    if precision == "fp32":
        return summary

    def write(path: Path, only: Sequence[str] | None, exclude: Sequence[str]) -> None:
        quantize_dynamic_matmuls(fp32, path, weight_type, nodes_to_quantize=only, nodes_to_exclude=exclude)

    def score(path: Path) -> float:
        if reference is None:
            return 1.0
        candidate = _embed_objects(OnnxEmbedder(path, model.config.to_dict()), token_dicts)
        return cosine_summary(reference, candidate)["min"]

    nodes = quantizable_nodes(fp32, ["MatMul"])
    summary["quantization"] = {
        "kind": "dynamic",
        "op_types": ["MatMul"],
        "weight_type": weight_type,
        "score_name": "min cosine of pooled embeddings on calibration objects",
        **_quantize_to_target(fp32, final, nodes, write, score, target, sensitivity and reference is not None),
    }
    fp32.unlink()
    return summary


def _capture_network_inputs(codec: Any, modalities: Sequence[Any]) -> list[np.ndarray]:
    """Inputs of the codec network (what the exported graph receives) for each modality batch."""
    with torch.inference_mode():
        inputs = [codec.network_input(codec.preprocess(modality)) for modality in modalities]
    return [np.ascontiguousarray(x.detach().float().cpu().numpy()) for x in inputs]


def _network_tokens(codec: nn.Module, session: Any, inputs: Sequence[np.ndarray]) -> Tensor:
    name = session.get_inputs()[0].name
    latents = [torch.from_numpy(session.run(None, {name: x})[0]) for x in inputs]
    return torch.cat([codec.quantizer.encode(z).reshape(z.shape[0], -1) for z in latents])


def _build_codec_network(
    codec: nn.Module,
    folder: str,
    directory: Path,
    precision: str,
    modalities: Sequence[Any],
    weight_type: str,
    target: float,
    sensitivity: bool,
) -> dict[str, Any]:
    """Writes ``directory/codecs/<folder>/network.onnx`` and returns its summary."""
    from aion_fast.export.int8 import quantizable_nodes, quantize_static_convs
    from aion_fast.export.onnx import NETWORK_INPUT_NAMES, export_codec_network
    from aion_fast.export.runtime import _session

    codec = _as_float32_eval(codec)
    final = directory / CODEC_NETWORK_FILES[folder]
    fp32 = final if precision == "fp32" else final.with_name("network_fp32.tmp.onnx")
    export_codec_network(codec, fp32)
    summary: dict[str, Any] = {
        "file": str(final.relative_to(directory)),
        "precision": precision,
        "inside_graph": ["MagViT encoder", "pre-quantization 1x1 conv"]
        if folder == "image"
        else ["ConvNeXt encoder", "LayerNorm", "1x1 quant conv"],
        "outside_graph": ["input validation and preprocessing (PyTorch)", "FSQ/LFQ quantizer (PyTorch)"],
    }
    if precision == "fp32":
        return summary
    if not modalities:
        raise ValueError(
            f"INT8 {folder} codec needs calibration objects with {folder} data for static quantization; pass "
            "--calibration MMU files that hold them (or drop the modality from --modalities)"
        )
    inputs = _capture_network_inputs(codec, modalities)
    input_name = NETWORK_INPUT_NAMES[folder]
    reference = _network_tokens(codec, _session(fp32), inputs)
    op_types = ["Conv", "MatMul"]

    cache = final.with_name("calibration_ranges.tmp.json")
    cache.unlink(missing_ok=True)
    quantize_static_convs(fp32, final, input_name, inputs, weight_type, op_types, calibration_cache=cache)

    def write(path: Path, only: Sequence[str] | None, exclude: Sequence[str]) -> None:
        quantize_static_convs(
            fp32,
            path,
            input_name,
            inputs,
            weight_type,
            op_types,
            nodes_to_quantize=only,
            nodes_to_exclude=exclude,
            calibration_cache=cache,
        )

    def score(path: Path) -> float:
        return float((_network_tokens(codec, _session(path), inputs) == reference).double().mean())

    summary["quantization"] = {
        "kind": "static",
        "op_types": op_types,
        "weight_type": weight_type,
        "activation_type": "QUInt8",
        "calibration_batches": len(inputs),
        "calibration_objects": int(sum(x.shape[0] for x in inputs)),
        "score_name": "token agreement on calibration objects",
        **_quantize_to_target(fp32, final, quantizable_nodes(fp32, op_types), write, score, target, sensitivity),
    }
    fp32.unlink()
    cache.unlink()
    return summary


# ---------------------------------------------------------------------------------------------------------------
# Checkpoint -> exported directory


def default_model_label() -> str:
    """How the export records the checkpoint used when no ``model`` is given."""
    from aion_fast.hub import default_model

    return default_model()[1]


def _local_checkpoint(model: str | os.PathLike | None) -> Path:
    from aion_fast.hub import default_model

    if model is None:
        return default_model()[0]
    if Path(model).is_dir():
        if (Path(model) / METADATA_NAME).is_file():
            raise ValueError(f"--model {model} is already an exported directory; export from the original checkpoint")
        return Path(model)
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(str(model)))


def _held_out_accuracy(
    checkpoint: Path, directory: Path, calibration: list[Any], held_out: list[Any]
) -> dict[str, Any]:
    """fp32 PyTorch pipeline vs the exported one: held-out cosine and token agreement, kNN on all objects."""
    from aion_fast.codecs import CodecManager
    from aion_fast.export.accuracy import cosine_summary, knn_overlap
    from aion_fast.export.runtime import load_exported
    from aion_fast.model import AION

    reference_model = AION.from_pretrained(checkpoint)
    reference_codecs = CodecManager(repo=checkpoint)
    model, codecs = load_exported(directory)
    objects = calibration + held_out
    reference_tokens = [_object_tokens(reference_codecs, obj) for obj in objects]
    exported_tokens = [_object_tokens(codecs, obj) for obj in objects]
    reference = _embed_objects(reference_model, reference_tokens)
    candidate = _embed_objects(model, exported_tokens)
    n_cal = len(calibration)
    result: dict[str, Any] = {"calibration_objects": n_cal, "held_out_objects": len(held_out)}
    if held_out:
        result["held_out_embedding_cosine"] = cosine_summary(reference[n_cal:], candidate[n_cal:])
        agreement: dict[str, list[float]] = {}
        for ref_t, cand_t in zip(reference_tokens[n_cal:], exported_tokens[n_cal:]):
            for key in ref_t:
                if key.startswith(("tok_image", "tok_spectrum")):  # the codecs with an exported network
                    agreement.setdefault(key, []).append(float((ref_t[key] == cand_t[key]).double().mean()))
        result["held_out_token_agreement"] = {k: float(np.mean(v)) for k, v in agreement.items()}
    k = min(10, len(objects) - 1)
    if k >= 1:
        unit = torch.nn.functional.normalize(reference.double(), dim=1)
        similarity = (unit @ unit.T).fill_diagonal_(-1.0)
        result["knn"] = {
            "k": k,
            "objects": len(objects),
            "overlap": knn_overlap(reference, candidate, k),
            "fp32_closest_pair_cosine": float(similarity.max()),  # near-ties make neighbour ranks fragile
        }
    return result


def export(
    model: str | os.PathLike | None,
    output: str | os.PathLike,
    *,
    format: str = "onnx",
    precision: str = "int8",
    modalities: Sequence[str] = ("image", "spectrum", "photometry"),
    calibration: Sequence[str | os.PathLike] = (),
    holdout: bool = True,
    weight_type: str | None = None,
    torch_method: str | None = None,
    embedding_target: float = DEFAULT_EMBEDDING_TARGET,
    token_target: float = DEFAULT_TOKEN_TARGET,
    sensitivity: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Exports a checkpoint into a self-describing directory that ``--model`` accepts everywhere.

    Args:
        model: checkpoint directory or hub id; ``None`` = the bundled demo model (``aion_fast.hub.default_model``).
        output: directory to write (must not hold an export unless ``overwrite``).
        format: ``"onnx"`` (ONNX Runtime) or ``"torch"`` (PyTorch INT8/FP8 applied when loaded, for GPUs).
        precision: ``"fp32"`` / ``"int8"`` for onnx; ``"int8"`` / ``"fp8"`` for torch.
        modalities: ``--modalities`` groups; ``image`` and ``spectrum`` export those codecs' networks.
        calibration: MMU files; their objects calibrate the INT8 codecs and rank layer sensitivity.
        holdout: hold every second object of each modality pattern out of calibration and report accuracy on it.
        weight_type: ``"QUInt8"`` / ``"QInt8"``; default: QUInt8 unless the CPU has VNNI.
        torch_method: for format torch, one of :data:`aion_fast.export.torch_int8.TORCH_METHODS`.
        embedding_target: min per-object embedding cosine the INT8 transformer must reach on calibration objects.
        token_target: token agreement each INT8 codec must reach on calibration objects.
        sensitivity: run the per-layer sensitivity search (else quantize every layer once).
        overwrite: replace an existing export in ``output``.

    Returns:
        The metadata written to ``output/export.json``.

    Raises:
        ExportFormatError: unsupported format / precision (before any work).
        ValueError: bad modalities, missing calibration for INT8 codecs, output already holding an export.
    """
    import aion_fast
    from aion_fast.codecs import CodecManager
    from aion_fast.data.mmu import MODALITY_GROUPS
    from aion_fast.export.int8 import cpu_has_vnni, default_weight_type
    from aion_fast.export.torch_int8 import TORCH_METHODS, default_torch_method
    from aion_fast.model import AION

    check_format(format, precision)
    unknown = sorted(set(modalities) - set(MODALITY_GROUPS))
    if unknown or not modalities:
        raise ValueError(f"modalities {list(modalities)}: choose one or more of {list(MODALITY_GROUPS)}")
    if torch_method is not None and torch_method not in TORCH_METHODS:
        raise ExportFormatError(f"torch_method {torch_method!r} is not supported; choose one of {list(TORCH_METHODS)}")
    if format == "onnx" and precision == "int8" and not calibration and set(modalities) & set(_GROUP_CODECS):
        raise ValueError(
            f"INT8 {sorted(set(modalities) & set(_GROUP_CODECS))} codec(s) need calibration objects for static "
            "quantization; pass --calibration MMU files that hold them (or drop them from --modalities)"
        )
    output = Path(output)
    if (output / METADATA_NAME).exists() and not overwrite:
        raise ValueError(f"{output} already holds an exported model; pass overwrite=True (--overwrite) to replace it")
    checkpoint = _local_checkpoint(model)
    weight_type = weight_type or default_weight_type()

    work = Path(tempfile.mkdtemp(prefix=".export-", dir=output.parent if output.parent.exists() else None))
    try:
        shutil.copy2(checkpoint / "config.json", work / "config.json")
        if (checkpoint / "codecs").is_dir():
            shutil.copytree(checkpoint / "codecs", work / "codecs")
        objects = read_calibration_objects(calibration, modalities) if calibration else []
        calibration_objects, held_out = _split_holdout(objects) if holdout and len(objects) > 1 else (objects, [])
        metadata: dict[str, Any] = {
            "format": format,
            "format_version": FORMAT_VERSION,
            "precision": precision,
            "aion_fast_version": aion_fast.__version__,
            "source_model": str(model) if model is not None else default_model_label(),
            "modalities": list(modalities),
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "cpu_has_vnni": cpu_has_vnni(),
            "calibration": {
                "files": [str(f) for f in calibration],
                "objects": len(objects),
                "calibration_objects": len(calibration_objects),
                "held_out_objects": len(held_out),
                "split": "every 2nd object of each modality pattern held out" if held_out else "none",
            },
            "files": {},
        }
        if format == "torch":
            shutil.copy2(checkpoint / "model.safetensors", work / "model.safetensors")
            metadata["torch_method"] = torch_method or default_torch_method(precision, "cuda")
            metadata["note"] = "weights stored in full precision; quantized when loaded (torchao on GPU)"
        else:
            fp32_model = AION.from_pretrained(checkpoint)
            codecs = CodecManager(repo=checkpoint)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                token_dicts = [_object_tokens(codecs, obj) for obj in calibration_objects]
                metadata["encoder"] = _build_encoder(
                    fp32_model, work, precision, token_dicts, weight_type, embedding_target, sensitivity
                )
                metadata["files"]["encoder"] = "encoder.onnx"
                metadata["codecs"] = {}
                for group in modalities:
                    folder = _GROUP_CODECS.get(group)
                    if folder is None or not (work / "codecs" / folder).is_dir():
                        continue
                    parts = [p.modality for obj in calibration_objects for p in obj.parts]
                    parts = [p for p in parts if _codec_folder(p) == folder]
                    codec = codecs.codec(type(parts[0])) if parts else _any_codec(codecs, folder)
                    metadata["codecs"][folder] = _build_codec_network(
                        codec, folder, work, precision, parts, weight_type, token_target, sensitivity
                    )
                    metadata["files"][f"codec_{folder}"] = CODEC_NETWORK_FILES[folder]
        (work / METADATA_NAME).write_text(json.dumps(metadata, indent=2))
        if format == "onnx" and objects:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                metadata["accuracy"] = _held_out_accuracy(checkpoint, work, calibration_objects, held_out)
            (work / METADATA_NAME).write_text(json.dumps(metadata, indent=2))
        if output.exists():
            shutil.rmtree(output)
        work.rename(output)
    finally:
        if work.exists():
            shutil.rmtree(work)
    return metadata


def _codec_folder(modality: Any) -> str:
    from aion_fast.codecs.registry import codec_class_for

    return codec_class_for(type(modality)).folder(type(modality)).split("/", 1)[1]


def _any_codec(codecs: Any, folder: str) -> nn.Module:
    from aion_fast import modalities as m

    return codecs.codec(m.LegacySurveyImage if folder == "image" else m.DESISpectrum)


# ---------------------------------------------------------------------------------------------------------------
# In-memory quantization


def quantize(
    model: nn.Module,
    precision: str = "int8",
    calibration: Iterable[Any] | None = None,
    *,
    backend: str = "onnx",
    method: str | None = None,
    weight_type: str | None = None,
    target: float | None = None,
    sensitivity: bool = True,
) -> Any:
    """Quantizes a loaded model or codec, returning something usable where the original was.

    Args:
        model: an :class:`~aion_fast.model.AION` (returns a model for :func:`aion_fast.embed`), or an ImageCodec /
            SpectrumCodec (returns a codec for ``encode`` and a :class:`CodecManager`).
        precision: ``"int8"`` (or ``"fp32"`` for a plain ONNX export; ``"fp8"`` with ``backend="torch"``).
        calibration: for AION: token dicts (``{token_key: (B, n) ids}``) to rank layers and check the target;
            for codecs: modality batches (e.g. ``LegacySurveyImage``), required for INT8 (static quantization).
        backend: ``"onnx"`` (ONNX Runtime, CPU) or ``"torch"`` (torchao / torch.ao, see ``method``).
        method: torch backend method (default: torchao dynamic int8 on CUDA, ``torch-dynamic`` on CPU).
        weight_type: ONNX weight type (default: QUInt8 unless the CPU has VNNI).
        target: min calibration cosine (AION) or token agreement (codecs); defaults 0.995 / 0.99.
        sensitivity: run the per-layer sensitivity search.

    Returns:
        The quantized model; the caller's ``model`` is not modified. ONNX results carry ``quantization_summary``.

    Raises:
        ValueError: unsupported backend / precision / model type, or INT8 codecs without calibration.
    """
    from aion_fast.export.int8 import default_weight_type
    from aion_fast.export.torch_int8 import default_torch_method, quantize_torch
    from aion_fast.model import AION

    if backend not in ("onnx", "torch"):
        raise ExportFormatError(f"backend {backend!r} is not supported; choose 'onnx' or 'torch'")
    check_format(backend, precision)
    if backend == "torch":
        if not isinstance(model, AION):
            raise ValueError(f"backend 'torch' quantizes AION models, got {type(model).__name__}")
        device = next(model.parameters()).device
        return quantize_torch(model, method or default_torch_method(precision, device))
    weight_type = weight_type or default_weight_type()
    items = list(calibration) if calibration is not None else []
    with tempfile.TemporaryDirectory(prefix="aion_fast_quantize_") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        directory = Path(tmp)
        if isinstance(model, AION):
            summary = _build_encoder(
                model, directory, precision, items, weight_type, target or DEFAULT_EMBEDDING_TARGET, sensitivity
            )
            result = OnnxEmbedder(directory / "encoder.onnx", model.config.to_dict())
        elif getattr(model, "network_name", None) is not None:  # an image or spectrum codec
            folder = model.network_name
            summary = _build_codec_network(
                model, folder, directory, precision, items, weight_type, target or DEFAULT_TOKEN_TARGET, sensitivity
            )
            result = onnx_backed_codec(model, directory / CODEC_NETWORK_FILES[folder])
        else:
            raise ValueError(
                f"quantize takes an AION model, an ImageCodec or a SpectrumCodec, got {type(model).__name__}"
            )
    result.quantization_summary = summary
    return result
