"""fp32 vs INT8 throughput (objects/s) of the exported graphs through ONNX Runtime on this machine's CPU.

Groups (one per graph and size), implementations in each:

* ``torch-fp32``: the same computation in aion_fast's PyTorch modules (``aion_fast.embed`` / the codec network),
  for orientation;
* ``onnx-fp32``: the exported fp32 graph in ONNX Runtime;
* ``onnx-int8``: the INT8 graph in ONNX Runtime: dynamic INT8 MatMuls for the transformer, static INT8
  (calibrated on the bundled sample's real images / spectra) Conv+MatMul for the codecs, *every* layer quantized
  (no sensitivity search, so the timing is INT8's best case; weight type QUInt8 unless the CPU has VNNI).

Sizes: ``demo`` (the untrained demo checkpoint: width 128, 2 blocks; small codecs) and ``base`` (the released
AION-1-B / codec sizes with random weights; export takes minutes). ``AION_FAST_BENCH_EXPORT_SIZES=demo`` limits the
run. Inputs: B=8 objects; the transformer sees 852 tokens per object (576 image + 273 spectrum + 3 fluxes), the
image network (B, 54, 96, 96), the spectrum network (B, 2, G).

INT8 on a CPU without VNNI (this project's 2-core EPYC) is expected near 1.1x for the transformer (ENVIRONMENT.md);
the speed-up INT8 exists for is on VNNI/AMX CPUs and on GPUs (see the PyTorch INT8/FP8 path, validated on GPU).

Run: ``python -m pytest bench/bench_export.py -o python_files='bench_*.py' \
    --benchmark-json=bench/results/export-cpu-2core-<commit>.json``
then ``python bench/bench_export.py bench/results/export-cpu-2core-<commit>.json`` prints fp32 / INT8 ratios per group.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

SIZES = [s for s in os.environ.get("AION_FAST_BENCH_EXPORT_SIZES", "demo,base").split(",") if s]
SAMPLE = Path(__file__).resolve().parents[1] / "aion_fast" / "data" / "sample" / "mmu"
IMPLS = ("torch-fp32", "onnx-fp32", "onnx-int8")
BATCH = 8


def _models(size: str, tmp: Path):
    """(AION model, ImageCodec, SpectrumCodec) of the given size, fp32 eval."""
    from aion_fast import modalities as m
    from aion_fast.codecs.image import ImageCodec
    from aion_fast.codecs.spectrum import SpectrumCodec
    from aion_fast.demo import build_untrained_checkpoint
    from aion_fast.model import AION, architecture

    if size == "demo":
        root = build_untrained_checkpoint(tmp / "demo")
        return (
            AION.from_pretrained(root),
            ImageCodec.from_pretrained(root, modality=m.LegacySurveyImage),
            SpectrumCodec.from_pretrained(root, modality=m.DESISpectrum),
        )
    sys.path.insert(0, str(Path(__file__).parent))
    import shapes

    keys = ["tok_image", "tok_spectrum_desi", "tok_flux_g", "tok_flux_r", "tok_flux_z"]
    torch.manual_seed(0)
    return (
        AION(architecture(keys, keys)).eval(),
        ImageCodec(**shapes.IMAGE_CODEC).eval(),
        SpectrumCodec(**shapes.SPECTRUM_CODEC).eval(),
    )


def _sample_modalities():
    from aion_fast.export.api import read_calibration_objects

    files = [str(SAMPLE / s / "healpix=0/001-of-001.hdf5") for s in ("legacysurvey", "desi")]
    parts = [p.modality for obj in read_calibration_objects(files, ["image", "spectrum"]) for p in obj.parts]
    images = [p for p in parts if type(p).__name__ == "LegacySurveyImage"]
    spectra = [p for p in parts if type(p).__name__ == "DESISpectrum"]
    return images, spectra


@pytest.fixture(scope="module", params=SIZES)
def graphs(request, tmp_path_factory):
    """Per size: the torch callables, fp32 / INT8 ONNX sessions and one input batch per graph."""
    from aion_fast.export.api import _capture_network_inputs
    from aion_fast.export.graphs import EncoderGraph
    from aion_fast.export.int8 import default_weight_type, quantize_dynamic_matmuls, quantize_static_convs
    from aion_fast.export.onnx import export_encoder, export_image_network, export_spectrum_network
    from aion_fast.export.runtime import _session

    size = request.param
    tmp = tmp_path_factory.mktemp(f"export_{size}")
    model, image_codec, spectrum_codec = _models(size, tmp)
    images, spectra = _sample_modalities()
    weight_type = default_weight_type()
    logging.disable(logging.WARNING)
    warnings.simplefilter("ignore")

    generator = torch.Generator().manual_seed(0)
    tokens = {
        "tok_image": torch.randint(0, 4375, (BATCH, 576), generator=generator),
        "tok_spectrum_desi": torch.randint(0, 1024, (BATCH, 273), generator=generator),
        **{k: torch.randint(0, 1024, (BATCH, 1), generator=generator) for k in ("tok_flux_g", "tok_flux_r")},
        "tok_flux_z": torch.randint(0, 1024, (BATCH, 1), generator=generator),
    }
    encoder = EncoderGraph(model)
    feeds = dict(zip(("token_rows", "position_rows", "padding"), (t.numpy() for t in encoder.layout.prepare(tokens))))
    export_encoder(model, tmp / "encoder.onnx")
    quantize_dynamic_matmuls(tmp / "encoder.onnx", tmp / "encoder_int8.onnx", weight_type)

    image_inputs = _capture_network_inputs(image_codec, images)
    image_batch = np.concatenate(image_inputs)[np.arange(BATCH) % sum(x.shape[0] for x in image_inputs)]
    export_image_network(image_codec, tmp / "image.onnx")
    quantize_static_convs(tmp / "image.onnx", tmp / "image_int8.onnx", "projected", image_inputs, weight_type)

    spectrum_inputs = _capture_network_inputs(spectrum_codec, spectra)
    spectrum_batch = np.concatenate(spectrum_inputs)[np.arange(BATCH) % sum(x.shape[0] for x in spectrum_inputs)]
    export_spectrum_network(spectrum_codec, tmp / "spectrum.onnx")
    quantize_static_convs(tmp / "spectrum.onnx", tmp / "spectrum_int8.onnx", "grid_input", spectrum_inputs, weight_type)

    image_graph, spectrum_graph = image_codec.encoder_network(), spectrum_codec.encoder_network()

    def torch_encoder():
        import aion_fast

        return aion_fast.embed(model, tokens)

    def torch_network(graph, batch):
        def run():
            with torch.inference_mode():
                return graph(torch.from_numpy(batch))

        return run

    def onnx(path, feed):
        session = _session(path)
        return lambda: session.run(None, feed)

    return {
        "size": size,
        "weight_type": weight_type,
        "transformer": {
            "torch-fp32": torch_encoder,
            "onnx-fp32": onnx(tmp / "encoder.onnx", feeds),
            "onnx-int8": onnx(tmp / "encoder_int8.onnx", feeds),
        },
        "image_network": {
            "torch-fp32": torch_network(image_graph, image_batch),
            "onnx-fp32": onnx(tmp / "image.onnx", {"projected": image_batch}),
            "onnx-int8": onnx(tmp / "image_int8.onnx", {"projected": image_batch}),
        },
        "spectrum_network": {
            "torch-fp32": torch_network(spectrum_graph, spectrum_batch),
            "onnx-fp32": onnx(tmp / "spectrum.onnx", {"grid_input": spectrum_batch}),
            "onnx-int8": onnx(tmp / "spectrum_int8.onnx", {"grid_input": spectrum_batch}),
        },
    }


@pytest.mark.parametrize("graph", ["transformer", "image_network", "spectrum_network"])
@pytest.mark.parametrize("impl", IMPLS)
def test_export_throughput(benchmark, record, graphs, graph, impl):
    from conftest import run_timed

    from aion_fast.export.int8 import cpu_has_vnni

    benchmark.group = f"export-{graph}-{graphs['size']}"
    record(impl, BATCH)
    benchmark.extra_info.update({"weight_type": graphs["weight_type"], "cpu_has_vnni": cpu_has_vnni()})
    rounds = 3 if graphs["size"] == "base" else 10
    run_timed(benchmark, graphs[graph][impl], "cpu", rounds=rounds, warmup_rounds=1)


def summarise(path: str) -> str:
    """Markdown table of a benchmark JSON: medians, objects/s and fp32 / INT8 ratios per group."""
    data = json.loads(Path(path).read_text())
    groups: dict[str, dict[str, float]] = {}
    for bench in data["benchmarks"]:
        if bench["group"].startswith("export-"):
            groups.setdefault(bench["group"], {})[bench["extra_info"]["impl"]] = bench["stats"]["median"]
    lines = [
        "| graph | torch fp32 (obj/s) | ONNX fp32 (obj/s) | ONNX INT8 (obj/s) | INT8 / ONNX fp32 | INT8 / torch fp32 |",
        "|---|---|---|---|---|---|",
    ]
    for group, medians in sorted(groups.items()):
        rate = {impl: BATCH / seconds for impl, seconds in medians.items()}
        int8_vs_onnx = medians["onnx-fp32"] / medians["onnx-int8"]
        int8_vs_torch = medians["torch-fp32"] / medians["onnx-int8"]
        lines.append(
            f"| {group.removeprefix('export-')} | {rate['torch-fp32']:.1f} | {rate['onnx-fp32']:.1f} | "
            f"{rate['onnx-int8']:.1f} | **{int8_vs_onnx:.2f}x** | {int8_vs_torch:.2f}x |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    print(summarise(sys.argv[1]))
