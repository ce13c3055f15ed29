"""Export for INT8 inference: ONNX fp32 == PyTorch, INT8 accuracy on held-out sample objects, loading through
``--model`` (encode job), the PyTorch INT8 path, and clear errors for unsupported formats and versions.

The demo checkpoint has RANDOM weights; the accuracy figures measure how faithfully INT8 reproduces *this* fp32
model, not science quality. One export (module fixture) serves most tests: it takes ~1 min on 2 CPU cores.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

import aion_fast
from aion_fast.export import ExportFormatError, export, load_exported, quantize, quantize_torch
from aion_fast.export.accuracy import cosine_summary, knn_overlap
from aion_fast.export.api import _embed_objects, _object_tokens, read_calibration_objects
from aion_fast.jobs.encode import EncodeOptions, run_encode
from aion_fast.model import AION
from tests.utils import assert_close_rel

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = sorted(str(p) for p in (ROOT / "aion_fast/data/sample/mmu").glob("*/healpix=*/001-of-001.hdf5"))
GROUPS = ["image", "spectrum", "photometry", "gaia"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from aion_fast.demo import build_untrained_checkpoint

    return build_untrained_checkpoint(tmp_path_factory.mktemp("ckpt"))


@pytest.fixture(scope="module")
def exported(checkpoint, tmp_path_factory):
    """The demo checkpoint exported as ONNX INT8, calibrated on half the sample (the other half held out)."""
    logging.disable(logging.WARNING)  # ONNX Runtime's "consider pre-processing" notes
    try:
        out = tmp_path_factory.mktemp("export") / "aion-int8"
        metadata = export(checkpoint, out, format="onnx", precision="int8", modalities=GROUPS, calibration=SAMPLE)
    finally:
        logging.disable(logging.NOTSET)
    return out, metadata


@pytest.fixture(scope="module")
def sample_objects():
    return read_calibration_objects(SAMPLE, GROUPS)


def test_export_directory_is_self_describing(exported):
    out, metadata = exported
    on_disk = json.loads((out / "export.json").read_text())
    assert on_disk["format"] == "onnx" and on_disk["precision"] == "int8"
    assert on_disk["aion_fast_version"] == aion_fast.__version__
    assert (out / "config.json").is_file() and (out / "encoder.onnx").is_file()
    assert (out / "codecs/image/network.onnx").is_file() and (out / "codecs/spectrum/network.onnx").is_file()
    assert not list(out.rglob("*.tmp*")), "temporary files left behind"
    calibration = on_disk["calibration"]
    assert calibration["objects"] == 27 and calibration["calibration_objects"] + calibration["held_out_objects"] == 27
    assert on_disk["cpu_has_vnni"] in (True, False)
    for section in (on_disk["encoder"], *on_disk["codecs"].values()):
        quant = section["quantization"]
        assert quant["weight_type"] == ("QInt8" if on_disk["cpu_has_vnni"] else "QUInt8")
        rows = quant["sensitivity"]
        assert len(rows) == quant["candidates"] > 0
        assert [r["damage"] for r in rows] == sorted((r["damage"] for r in rows), reverse=True)
        assert {r["node"] for r in rows if r["keep_fp32"]} == set(quant["kept_fp32"])
        assert quant["met"] and quant["score"] >= quant["target"]
        assert 0.0 < quant["quantized_weight_fraction"] <= 1.0
    assert on_disk["encoder"]["quantization"]["kind"] == "dynamic"
    assert on_disk["codecs"]["image"]["quantization"]["kind"] == "static"
    # INT8 graphs really hold integer kernels
    import onnx

    ops = {n.op_type for n in onnx.load(str(out / "encoder.onnx")).graph.node}
    assert ops & {"DynamicQuantizeMatMul", "MatMulInteger", "DynamicQuantizeLinear"}, ops
    ops = {n.op_type for n in onnx.load(str(out / "codecs/image/network.onnx")).graph.node}
    assert "QLinearConv" in ops, ops


def test_onnx_fp32_encoder_equals_pytorch(exported, checkpoint, sample_objects):
    """fp32 graph vs aion_fast.embed: sample objects, and random tokens with padding, other batch/token counts."""
    out, metadata = exported
    assert metadata["encoder"]["onnx_fp32_vs_pytorch_max_relative"] <= 1e-5
    model = AION.from_pretrained(checkpoint)
    fp32 = quantize(model, precision="fp32")  # same export path, no quantization
    codecs = aion_fast.CodecManager(repo=checkpoint)
    for obj in sample_objects[::4]:
        tokens = _object_tokens(codecs, obj)
        assert_close_rel(aion_fast.embed(fp32, tokens), aion_fast.embed(model, tokens), rtol=1e-5, what="sample")
    tokens = {
        "tok_image": torch.randint(0, 4375, (3, 576)),
        "tok_spectrum_desi": torch.randint(0, 1024, (3, 273)),
        "tok_flux_g": torch.randint(0, 1024, (3,)),
    }
    mask = {"tok_spectrum_desi": torch.tensor([True, False, True])[:, None].expand(-1, 273).clone()}
    for pooling in ("mean", "none"):
        ours, ref = aion_fast.embed(fp32, tokens, pooling, mask), aion_fast.embed(model, tokens, pooling, mask)
        assert_close_rel(ours, ref, rtol=1e-5, what=f"padded batch, pooling={pooling}")
    few = {"tok_flux_g": torch.randint(0, 1024, (5, 1)), "tok_z": torch.randint(0, 1024, (5, 1))}
    assert_close_rel(aion_fast.embed(fp32, few), aion_fast.embed(model, few), rtol=1e-5, what="2 tokens, B=5")
    kept = aion_fast.embed(fp32, tokens, "none", mask, num_encoder_tokens=100)
    assert_close_rel(kept, aion_fast.embed(model, tokens, "none", mask, num_encoder_tokens=100), rtol=1e-5)


@pytest.mark.parametrize("kind", ["image", "spectrum"])
def test_onnx_fp32_codec_networks_equal_pytorch(checkpoint, sample_objects, kind):
    """fp32 codec graphs: latents within 1e-5 relative of PyTorch on the sample, tokens identical, input unchanged."""
    from aion_fast import modalities as m
    from aion_fast.export.api import _capture_network_inputs

    modality = m.LegacySurveyImage if kind == "image" else m.DESISpectrum
    codec = aion_fast.CodecManager(repo=checkpoint).codec(modality)
    batches = [p.modality for obj in sample_objects for p in obj.parts if isinstance(p.modality, modality)]
    fp32 = quantize(codec, precision="fp32")
    graph = codec.encoder_network()
    for batch, network_input in zip(batches, _capture_network_inputs(codec, batches)):
        with torch.inference_mode():
            reference = graph(torch.from_numpy(network_input))
        ours = fp32.network()(torch.from_numpy(network_input))
        assert_close_rel(ours, reference, rtol=1e-5, what=f"{kind} latents")
        before = {k: v.clone() for k, v in vars(batch).items() if isinstance(v, torch.Tensor)}
        assert torch.equal(fp32.encode(batch), codec.encode(batch))
        assert all(torch.equal(v, getattr(batch, k)) for k, v in before.items()), "input modified"


def test_int8_accuracy_on_held_out_objects(exported):
    """Acceptance figures of the issue, measured by export() on objects that were not used for calibration."""
    _, metadata = exported
    accuracy = metadata["accuracy"]
    assert accuracy["held_out_objects"] >= 10
    cosine = accuracy["held_out_embedding_cosine"]
    assert cosine["median"] >= 0.995 and cosine["p1"] >= 0.98, cosine
    agreement = accuracy["held_out_token_agreement"]
    assert set(agreement) == {"tok_image", "tok_spectrum_desi"}
    assert all(value >= 0.99 for value in agreement.values()), agreement


def test_encode_job_runs_the_exported_model(exported, checkpoint, tmp_path):
    """``aion-fast encode --model EXPORTED`` writes embeddings close to the fp32 run on the same sample."""
    out, _ = exported
    options = dict(modalities=("image", "spectrum", "photometry", "gaia"), batch_size=16, workers=0, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_encode(SAMPLE, tmp_path / "int8", EncodeOptions(model=str(out), **options))
        run_encode(SAMPLE, tmp_path / "fp32", EncodeOptions(model=str(checkpoint), **options))
    for name in sorted(p.name for p in (tmp_path / "fp32").glob("*.parquet") if p.name != "errors.parquet"):
        ours, ref = (pq.read_table(tmp_path / run / name).to_pydict() for run in ("int8", "fp32"))
        assert ours["object_id"] == ref["object_id"]
        summary = cosine_summary(torch.tensor(ref["embedding"]), torch.tensor(ours["embedding"]))
        assert summary["median"] >= 0.995 and summary["p1"] >= 0.98, (name, summary)
    manifest = json.loads((tmp_path / "int8" / "manifest.json").read_text())
    assert manifest["job"]["model"] == str(out)


def test_exported_codecs_and_embedder_work_with_codec_manager(exported, sample_objects):
    out, _ = exported
    model, codecs = load_exported(out)
    image = next(p.modality for obj in sample_objects for p in obj.parts if type(p.modality).__name__.endswith("Image"))
    tokens = codecs.encode(image)
    assert tokens["tok_image"].shape == (1, 576) and tokens["tok_image"].dtype == torch.int64
    assert hasattr(codecs.codec(type(image)), "onnx_network_file")
    assert aion_fast.embed(model, tokens).shape == (1, model.config.dim)
    decoded = codecs.decode(tokens, type(image), bands=["DES-G", "DES-R", "DES-I", "DES-Z"])
    assert decoded.flux.shape == (1, 4, 96, 96)


def test_other_major_version_and_bad_directories_are_refused(exported, tmp_path):
    out, _ = exported
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    metadata = json.loads((copy / "export.json").read_text())
    major = int(aion_fast.__version__.split(".")[0])
    (copy / "export.json").write_text(json.dumps({**metadata, "aion_fast_version": f"{major + 1}.0.0"}))
    with pytest.raises(ExportFormatError, match=r"exported by aion_fast .* major version"):
        load_exported(copy)
    (copy / "export.json").write_text(json.dumps({**metadata, "precision": "int4"}))
    with pytest.raises(ExportFormatError, match="precision 'int4' is not supported"):
        load_exported(copy)
    with pytest.raises(ExportFormatError, match="export.json is missing"):
        load_exported(tmp_path)
    with pytest.raises(ValueError, match="already holds an exported model"):
        export(None, out, calibration=SAMPLE)


@pytest.mark.parametrize(
    ("fmt", "precision", "message"),
    [
        ("tflite", "int8", "format 'tflite' is not supported"),
        ("onnx", "int4", "precision 'int4' is not supported for format 'onnx'"),
        ("onnx", "fp8", "precision 'fp8' is not supported for format 'onnx'"),
        ("torch", "fp32", "precision 'fp32' is not supported for format 'torch'"),
    ],
)
def test_unsupported_format_or_precision_is_refused_before_any_work(tmp_path, fmt, precision, message):
    with pytest.raises(ExportFormatError, match=message):
        export("/nonexistent/checkpoint", tmp_path / "out", format=fmt, precision=precision)
    assert not (tmp_path / "out").exists()


def test_int8_codecs_need_calibration(checkpoint, tmp_path):
    with pytest.raises(ValueError, match="need calibration objects"):
        export(checkpoint, tmp_path / "out", modalities=["image"], calibration=[])
    assert not (tmp_path / "out").exists()


def test_quantize_rejects_other_objects(checkpoint):
    with pytest.raises(ValueError, match="AION model, an ImageCodec or a SpectrumCodec"):
        quantize(torch.nn.Linear(4, 4), precision="int8", sensitivity=False)
    with pytest.raises(ExportFormatError, match="backend 'tensorrt'"):
        quantize(AION.from_pretrained(checkpoint), backend="tensorrt")


def test_quantize_onnx_int8_transformer_keeps_embeddings_and_neighbours(checkpoint, sample_objects):
    """``quantize(model, "int8", calibration=...)`` -> usable by embed; held-out cosine and k=10 neighbour overlap.

    The untrained demo model's token embeddings (std 0.02) are drowned by the unit-amplitude sin-cos positions, so
    its sample embeddings nearly coincide (closest pair cosine 0.999999) and neighbour ranks are decided by 1e-6
    differences (its overlap, ~0.84, is reported by export.json and bench, not asserted). Here the token tables are
    redrawn at unit scale so that objects differ through their tokens, as they must in a model worth searching.
    """
    model = AION.from_pretrained(checkpoint)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for embedding in model.encoder_embeddings.values():
            embedding.token_emb.weight.normal_(0.0, 1.0, generator=generator)
    codecs = aion_fast.CodecManager(repo=checkpoint)
    token_dicts = [_object_tokens(codecs, obj) for obj in sample_objects]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    int8 = quantize(model, precision="int8", calibration=token_dicts[::2], sensitivity=False)  # search: see fixture
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items()), "caller's model changed"
    assert int8.quantization_summary["quantization"]["kept_fp32"] == []
    reference, candidate = _embed_objects(model, token_dicts), _embed_objects(int8, token_dicts)
    held_out = cosine_summary(reference[1::2], candidate[1::2])
    assert held_out["median"] >= 0.995 and held_out["p1"] >= 0.98, held_out
    assert knn_overlap(reference, candidate, k=10) >= 0.9


@pytest.mark.parametrize("method", ["torch-dynamic", "torchao-int8-weight-only", "torchao-int8-dynamic"])
def test_pytorch_int8_path_on_cpu(checkpoint, method):
    """The PyTorch INT8 path runs (slowly for torchao on this CPU) and keeps embeddings; decoder untouched."""
    if method.startswith("torchao"):
        pytest.importorskip("torchao")
    model = AION.from_pretrained(checkpoint)
    tokens = {"tok_image": torch.randint(0, 4375, (2, 576)), "tok_flux_g": torch.randint(0, 1024, (2, 1))}
    reference = aion_fast.embed(model, tokens)
    quantized = quantize(model, precision="int8", backend="torch", method=method)
    assert quantized is not model and type(model.encoder[0].attn.qkv) is torch.nn.Linear, "caller's model changed"
    assert type(quantized.encoder[0].attn.qkv) is not torch.nn.Linear or method.startswith("torchao")
    summary = cosine_summary(reference, aion_fast.embed(quantized, tokens))
    assert summary["min"] >= 0.995, summary
    logits = quantized(tokens, "tok_z")["tok_z"]  # decoder path still runs
    assert torch.isfinite(logits).all()


def test_torch_format_export_loads_through_model(checkpoint, tmp_path):
    out = tmp_path / "aion-torch-int8"
    metadata = export(checkpoint, out, format="torch", precision="int8", torch_method="torch-dynamic")
    assert metadata["torch_method"] == "torch-dynamic" and (out / "model.safetensors").is_file()
    model, codecs = load_exported(out)
    assert model.quantization_method == "torch-dynamic"
    tokens = {"tok_flux_g": torch.randint(0, 1024, (2, 1)), "tok_z": torch.randint(0, 1024, (2, 1))}
    reference = aion_fast.embed(AION.from_pretrained(checkpoint), tokens)
    assert cosine_summary(reference, aion_fast.embed(model, tokens))["min"] >= 0.995


def test_torchao_fp8_refuses_cpu(checkpoint):
    pytest.importorskip("torchao")
    with pytest.raises(ValueError, match="CUDA GPU of compute capability >= 8.9"):
        quantize_torch(AION.from_pretrained(checkpoint), method="torchao-fp8")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("method", ["torchao-int8-dynamic", "torchao-int8-weight-only", "torchao-fp8"])
def test_pytorch_int8_and_fp8_on_gpu(checkpoint, method):
    pytest.importorskip("torchao")
    if method == "torchao-fp8" and torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("FP8 needs compute capability >= 8.9")
    model = AION.from_pretrained(checkpoint, device="cuda", dtype=torch.bfloat16)
    tokens = {"tok_image": torch.randint(0, 4375, (8, 576), device="cuda")}
    reference = aion_fast.embed(model, tokens).float()
    quantized = quantize_torch(model, method=method)
    summary = cosine_summary(reference.cpu(), aion_fast.embed(quantized, tokens).float().cpu())
    assert summary["median"] >= 0.995 and summary["p1"] >= 0.98, summary


def test_cli_export_help_and_format_error(tmp_path, capsys):
    from aion_fast.cli import main

    assert main(["export", "--output", str(tmp_path / "x"), "--format", "tflite"]) == 2
    err = capsys.readouterr().err
    assert "format 'tflite'" in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    with pytest.raises(ExportFormatError, match="format 'tflite'"):
        main(["--debug", "export", "--output", str(tmp_path / "x"), "--format", "tflite"])
    proc = subprocess.run(
        [sys.executable, "-m", "aion_fast.cli", "export", "--help"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0 and "--calibration" in proc.stdout and "--precision" in proc.stdout


def test_importing_export_is_lean():
    code = (
        "import sys, aion_fast.export, aion_fast.export.runtime;"
        "bad = [m for m in ('onnx', 'onnxruntime', 'onnxscript', 'torchao') if m in sys.modules];"
        "assert not bad, bad"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
