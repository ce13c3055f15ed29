"""ONNX export (dynamo exporter) of the embedding path and of the image / spectrum codec networks.

Every graph is exported from the modules of :mod:`aion_fast.export.graphs` with ``torch.onnx.export(...,
dynamo=True)`` and dynamic batch (and token / pixel) axes, then written as one self-contained ``.onnx`` file (the
weights inside it, one initializer per layer weight: nothing is shared or looped between encoder blocks).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from aion_fast.export.graphs import EncoderGraph

__all__ = [
    "ENCODER_INPUTS",
    "ENCODER_OUTPUTS",
    "NETWORK_INPUT_NAMES",
    "export_codec_network",
    "export_encoder",
    "export_image_network",
    "export_spectrum_network",
]

ENCODER_INPUTS = ("token_rows", "position_rows", "padding")
ENCODER_OUTPUTS = ("context", "pooled")
#: Opset of the exported graphs.
OPSET = 18


def _export(
    module: nn.Module,
    args: tuple[torch.Tensor, ...],
    path: str | os.PathLike,
    input_names: list[str],
    output_names: list[str],
    dynamic_shapes: tuple[dict[int, object], ...],
) -> Path:
    """Exports with the dynamo exporter into a single file at ``path`` (weights embedded, < 2 GB)."""
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = module.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # exporter chatter (axis renames, deprecations of torch internals)
        program = torch.onnx.export(
            module,
            args,
            dynamo=True,
            input_names=input_names,
            output_names=output_names,
            dynamic_shapes=dynamic_shapes,
            opset_version=OPSET,
            optimize=True,
            verbose=False,
        )
    proto = program.model_proto
    onnx.save_model(proto, str(path), save_as_external_data=False)
    return path


def export_encoder(model: nn.Module, path: str | os.PathLike) -> Path:
    """Exports token embeddings + encoder + mean pooling of an :class:`~aion_fast.model.AION`.

    Graph inputs: ``token_rows`` ``(B, N)`` int64, ``position_rows`` ``(B, N)`` int64, ``padding`` ``(B, N)`` bool
    (see :class:`~aion_fast.export.graphs.TokenLayout`); outputs: ``context`` ``(B, R + N, D)`` float32 and
    ``pooled`` ``(B, D)`` float32. ``B`` and ``N`` are dynamic.

    Args:
        model: The transformer (float32 weights are exported).
        path: Output ``.onnx`` file.

    Returns:
        ``path``.
    """
    graph = EncoderGraph(model.float())
    layout = graph.layout
    from aion_fast.model.modality_info import GRID, MODALITY_INFO

    example = {}  # two or more tokens, so that the exporter keeps the token axis dynamic (size 1 specialises)
    for key in layout.domains_in:
        spec = MODALITY_INFO[key]
        example[key] = torch.zeros(2, spec.num_tokens if spec.kind == GRID else 4, dtype=torch.long)
        if sum(ids.shape[1] for ids in example.values()) >= 2:
            break
    rows, positions, padding = layout.prepare(example)
    padding = padding.clone()
    padding[1, -1] = rows.shape[1] > 1  # trace with a real mask
    batch, tokens = torch.export.Dim("batch", min=1), torch.export.Dim("tokens", min=1)
    axes = {0: batch, 1: tokens}
    return _export(graph, (rows, positions, padding), path, list(ENCODER_INPUTS), list(ENCODER_OUTPUTS), (axes,) * 3)


#: Graph input name of each codec's exported encoder network (by ``Codec.network_name``).
NETWORK_INPUT_NAMES = {"image": "projected", "spectrum": "grid_input"}


def export_codec_network(codec: Any, path: str | os.PathLike) -> Path:
    """Exports a codec's :meth:`~aion_fast.codecs.base.Codec.encoder_network` (float32), batch axis dynamic.

    Image: input ``projected`` ``(B, 54, 96, 96)`` (the band projection's output) -> ``latents`` ``(B, 5, 24, 24)``
    (MagViT encoder + pre-quantization convolution). Spectrum: input ``grid_input`` ``(B, 2, G)`` -> ``latents``
    ``(B, 10, G / 32)`` (ConvNeXt encoder, LayerNorm, 1x1 convolution).
    """
    graph = codec.float().encoder_network()
    example = codec.network_example(2)
    name = NETWORK_INPUT_NAMES[codec.network_name]
    with torch.enable_grad():  # the plain (out-of-place, workspace-free) path of the codec networks
        return _export(graph, (example,), path, [name], ["latents"], ({0: torch.export.Dim("batch", min=1)},))


def export_image_network(codec: Any, path: str | os.PathLike) -> Path:
    """:func:`export_codec_network` of an image codec."""
    return export_codec_network(codec, path)


def export_spectrum_network(codec: Any, path: str | os.PathLike) -> Path:
    """:func:`export_codec_network` of a spectrum codec."""
    return export_codec_network(codec, path)
