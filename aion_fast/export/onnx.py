"""ONNX export (dynamo exporter) of the embedding path and of the image / spectrum codec networks.

Every graph is exported from the modules of :mod:`aion_fast.export.graphs` with ``torch.onnx.export(...,
dynamo=True)`` and dynamic batch (and token / pixel) axes, then written as one self-contained ``.onnx`` file (the
weights inside it, one initializer per layer weight: nothing is shared or looped between encoder blocks).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
from torch import nn

from aion_fast.export.graphs import EncoderGraph, ImageNetworkGraph, SpectrumNetworkGraph

__all__ = ["ENCODER_INPUTS", "ENCODER_OUTPUTS", "export_encoder", "export_image_network", "export_spectrum_network"]

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


def export_image_network(codec: nn.Module, path: str | os.PathLike) -> Path:
    """Exports the image codec's MagViT encoder + pre-quantization convolution.

    Graph input ``projected`` ``(B, 54, 96, 96)`` (the band projection's output); output ``latents``
    ``(B, 5, 24, 24)``; ``B`` dynamic.
    """
    graph = ImageNetworkGraph(codec.float())
    from aion_fast.codecs.preprocessing import CROP_SIZE

    example = torch.randn(2, codec.subsample_in.dim_out, CROP_SIZE, CROP_SIZE)
    return _export(graph, (example,), path, ["projected"], ["latents"], ({0: torch.export.Dim("batch", min=1)},))


def export_spectrum_network(codec: nn.Module, path: str | os.PathLike) -> Path:
    """Exports the spectrum codec's ConvNeXt encoder, LayerNorm and 1x1 convolution.

    Graph input ``grid_input`` ``(B, 2, G)`` (flux and inverse sigma resampled on the latent grid); output
    ``latents`` ``(B, 10, G / 32)``; ``B`` dynamic.
    """
    graph = SpectrumNetworkGraph(codec.float())
    length = int(codec.latent_grid.wavelength.shape[0])
    example = torch.randn(2, 2, length)
    with torch.enable_grad():  # the plain (workspace-free) path of the ConvNeXt blocks
        return _export(graph, (example,), path, ["grid_input"], ["latents"], ({0: torch.export.Dim("batch", min=1)},))
