"""``aion-fast tokenize``: the bundled sample tokenized equals the codecs applied directly; issues are recorded, not
dropped; resumable; ranks split the inputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from aion_fast import modalities as m
from aion_fast.cli import main as cli_main
from aion_fast.data.make_sample import desi_columns, legacysurvey_columns, write_mmu
from aion_fast.demo import ensure_demo_checkpoint
from aion_fast.jobs.plan import shard_name
from aion_fast.train.tokenize import tokenize_files
from aion_fast.train.tokens import TokenShard, find_token_shards

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = sorted((ROOT / "aion_fast" / "data" / "sample" / "mmu").glob("*/healpix=0/001-of-001.hdf5"))
LS_SCALARS = {
    "FLUX_G": m.LegacySurveyFluxG, "FLUX_R": m.LegacySurveyFluxR, "FLUX_I": m.LegacySurveyFluxI,
    "FLUX_Z": m.LegacySurveyFluxZ, "FLUX_W1": m.LegacySurveyFluxW1, "FLUX_W2": m.LegacySurveyFluxW2,
    "FLUX_W3": m.LegacySurveyFluxW3, "FLUX_W4": m.LegacySurveyFluxW4, "SHAPE_R": m.LegacySurveyShapeR,
    "SHAPE_E1": m.LegacySurveyShapeE1, "SHAPE_E2": m.LegacySurveyShapeE2, "EBV": m.LegacySurveyEBV,
}  # fmt: skip
GAIA_SCALARS = {"phot_g_mean_flux": m.GaiaFluxG, "phot_bp_mean_flux": m.GaiaFluxBp,
                "phot_rp_mean_flux": m.GaiaFluxRp, "parallax": m.GaiaParallax}  # fmt: skip


@pytest.fixture(scope="module")
def checkpoint():
    return ensure_demo_checkpoint()


@pytest.fixture(scope="module")
def sample_tokens(tmp_path_factory, checkpoint):
    out = tmp_path_factory.mktemp("tokens")
    assert cli_main(["tokenize", *map(str, SAMPLE), "--codecs", str(checkpoint), "--output", str(out),
                     "--batch-size", "3", "--quiet"]) == 0  # fmt: skip
    return out


def _direct_tokens(path: Path, checkpoint: Path) -> dict[str, torch.Tensor]:
    """Tokens of every object of an MMU sample file by the codecs, built straight from the HDF5 columns (no
    aion_fast.data.mmu reader: the image codec crops the 160x160 stamps itself)."""
    from aion_fast.codecs import CodecManager

    codecs = CodecManager(repo=checkpoint, device="cpu")
    h5 = h5py.File(path, "r")
    modalities = []
    if "image_array" in h5:
        bands = [b.decode().upper() for b in h5["image_band"][0]]
        assert bands == ["DES-G", "DES-R", "DES-I", "DES-Z"]
        modalities.append(m.LegacySurveyImage(flux=torch.from_numpy(h5["image_array"][()]), bands=bands))
    if "spectrum_flux" in h5:
        mask = torch.from_numpy(h5["spectrum_mask"][()])
        modalities.append(m.DESISpectrum(
            flux=torch.from_numpy(h5["spectrum_flux"][()]).masked_fill(mask, 0.0),
            ivar=torch.from_numpy(h5["spectrum_ivar"][()]).masked_fill(mask, 0.0),
            mask=mask, wavelength=torch.from_numpy(h5["spectrum_lambda"][()])))  # fmt: skip
    for column, cls in (LS_SCALARS | GAIA_SCALARS).items():
        if column in h5:
            modalities.append(cls(value=torch.from_numpy(h5[column][()])))
    if "coeff" in h5:
        modalities += [m.GaiaXpBp(value=torch.from_numpy(h5["coeff"][:, :55])),
                       m.GaiaXpRp(value=torch.from_numpy(h5["coeff"][:, 55:]))]  # fmt: skip
    tokens = codecs.encode(*modalities)
    h5.close()
    return {k: v.reshape(v.shape[0], -1) for k, v in tokens.items()}


def test_sample_tokens_equal_the_codecs_applied_directly(sample_tokens, checkpoint):
    shards = find_token_shards(sample_tokens)
    assert [p.name for p in shards] == [f"{s}__healpix=0__001-of-001" for s in ("desi", "gaia", "legacysurvey")]
    for folder, path in zip(shards, SAMPLE):
        shard = TokenShard(folder)
        direct = _direct_tokens(path, checkpoint)
        assert sorted(shard.keys) == sorted(direct), folder.name
        batch = shard[:]
        for key, expected in direct.items():
            assert batch.tokens[key].dtype == torch.int64
            assert torch.equal(batch.tokens[key], expected.cpu()), (folder.name, key)
            assert bool(batch.present[key].all())
        with h5py.File(path, "r") as h5:
            assert batch.object_ids == [v.decode() if isinstance(v, bytes) else str(v) for v in h5["object_id"][()]]
        assert shard.rows.tolist() == list(range(len(shard)))
        assert shard.issues() == [] and shard.meta["objects_without_modality"] == 0


def test_meta_records_the_job_and_the_input(sample_tokens, checkpoint):
    from aion_fast.jobs.manifest import file_sha256
    from aion_fast.model.checkpoint import checkpoint_digest

    meta = json.loads((sample_tokens / "legacysurvey__healpix=0__001-of-001" / "meta.json").read_text())
    assert meta["format"] == "aion_fast.token_shard/1" and meta["num_objects"] == 8
    assert meta["job"]["codecs_sha256_16"] == checkpoint_digest(Path(checkpoint) / "codecs")
    assert meta["input"]["sha256"] == file_sha256(SAMPLE[2])
    assert meta["keys"]["tok_image"] == {"num_tokens": 576, "kind": "grid", "dtype": "int16", "objects_present": 8}
    assert meta["keys"]["tok_flux_g"]["num_tokens"] == 1 and meta["modalities_without_codec"] == {}


def test_rerun_skips_complete_shards_and_replaces_leftover_tmp(sample_tokens, checkpoint, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(sample_tokens, out)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.npy")}
    (out / "gaia__healpix=0__001-of-001.tmp").mkdir()  # a crashed earlier attempt
    (out / "gaia__healpix=0__001-of-001.tmp" / "junk.npy").write_bytes(b"x")
    shutil.rmtree(out / "gaia__healpix=0__001-of-001")
    summary = tokenize_files(SAMPLE, out, checkpoint)
    assert summary["shards_written"] == ["gaia__healpix=0__001-of-001"]
    assert len(summary["shards_skipped_complete"]) == 2
    assert not list(out.glob("*.tmp"))
    for path, mtime in before.items():
        if "gaia" not in path.parent.name:
            assert path.stat().st_mtime_ns == mtime
    for name in ("gaia__healpix=0__001-of-001", "desi__healpix=0__001-of-001"):
        a, b = TokenShard(sample_tokens / name)[:], TokenShard(out / name)[:]
        assert all(torch.equal(a.tokens[k], b.tokens[k]) for k in a.tokens)


def test_unusable_modalities_and_empty_objects_are_recorded(tmp_path, checkpoint):
    """A cross-matched LS x DESI file: object 0 NaN FLUX_G, 1 an all-masked spectrum, 2 a wrong band list, 3 nothing
    usable. Every object stays in the shard; presence and issues.json say what each has."""
    ls, desi = legacysurvey_columns(n=4), desi_columns()
    desi = {k: np.concatenate([v, v[:1]]) for k, v in desi.items()}
    ls["FLUX_G"][0] = np.nan
    desi["spectrum_mask"][1] = True
    ls["image_band"][2] = ["des-g", "des-r", "des-g", "des-z"]
    ls["image_mask"][3] = False
    desi["spectrum_ivar"][3] = 0
    for name in LS_SCALARS:
        ls[name][3] = np.nan
    columns = {f"legacysurvey_{k}": v for k, v in ls.items()} | {f"desi_{k}": v for k, v in desi.items()}
    columns["object_id"] = np.array([f"obj{i}" for i in range(4)])
    path = write_mmu(tmp_path / "in" / "legacysurvey_x_desi.hdf5", columns, chunk_rows=2)
    tokenize_files([path], tmp_path / "out", checkpoint, modalities=("image", "spectrum", "photometry"), batch_size=2)
    shard = TokenShard(tmp_path / "out" / shard_name(path))
    assert len(shard) == 4 and shard.object_ids.tolist() == ["obj0", "obj1", "obj2", "obj3"]
    has = shard[:].object_present()
    assert has["tok_flux_g"].tolist() == [False, True, True, False]
    assert has["tok_spectrum_desi"].tolist() == [True, False, True, False]
    assert has["tok_image"].tolist() == [True, True, False, False]
    assert not bool(shard[3].tokens["tok_image"].any()), "absent rows hold token 0"
    issues = {(i["object_id"], i["modality"]) for i in shard.issues()}
    assert {("obj0", "LegacySurveyFluxG"), ("obj1", "spectrum"), ("obj2", "image"), ("obj3", "*")} <= issues
    assert shard.meta["objects_without_modality"] == 1 and shard.usable().tolist() == [0, 1, 2]


def test_modalities_without_a_codec_are_reported(tmp_path, checkpoint):
    partial = tmp_path / "ckpt"
    shutil.copytree(checkpoint, partial)
    shutil.rmtree(partial / "codecs" / "FLUX_W4")
    summary = tokenize_files([SAMPLE[2]], tmp_path / "out", partial, modalities=("photometry",))
    assert summary["modalities_without_codec"] == {
        "LegacySurveyFluxW4": "the checkpoint has no codecs/FLUX_W4/config.json"
    }
    shard = TokenShard(tmp_path / "out" / shard_name(SAMPLE[2]))
    assert "tok_flux_w4" not in shard.keys and "tok_flux_g" in shard.keys
    assert shard.meta["modalities_without_codec"] == summary["modalities_without_codec"]


def test_ranks_take_disjoint_inputs(tmp_path, checkpoint, monkeypatch):
    written = []
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        summary = tokenize_files(SAMPLE, tmp_path / "out", checkpoint, modalities=("gaia", "spectrum"))
        assert summary["rank"] == rank and summary["world_size"] == 2
        written.append(set(summary["shards_written"]))
    assert not written[0] & written[1]
    assert written[0] | written[1] == {f"{s}__healpix=0__001-of-001" for s in ("desi", "gaia", "legacysurvey")}


def test_bad_arguments(tmp_path, checkpoint, capsys):
    with pytest.raises(ValueError, match="do not exist"):
        tokenize_files([tmp_path / "missing.hdf5"], tmp_path / "out", checkpoint)
    with pytest.raises(ValueError, match="choose one or more"):
        tokenize_files(SAMPLE, tmp_path / "out", checkpoint, modalities=("pictures",))
    with pytest.raises(ValueError, match="no codecs/ folder"):
        tokenize_files(SAMPLE, tmp_path / "out", tmp_path)
    assert cli_main(["tokenize", str(SAMPLE[0]), "--output", str(tmp_path / "o"), "--batch-size", "0"]) == 2
    assert "--batch-size" in capsys.readouterr().err
    with pytest.raises(ValueError, match="not a token shard"):
        TokenShard(tmp_path)


def test_source_picks_the_survey_of_a_modality_two_surveys_give(tmp_path, checkpoint, capsys):
    """A cross-matched LS x DESI file where both surveys carry FLUX_G (DESI's is its targeting photometry): tokenize
    refuses to guess, and ``--source photometry=SURVEY`` tokenizes that survey's values, as ``encode`` does."""
    from aion_fast.codecs import CodecManager

    ls, desi = legacysurvey_columns(n=3), desi_columns()
    desi["FLUX_G"] = (ls["FLUX_G"] * 2.5).astype(np.float32)
    columns = {f"legacysurvey_{k}": v for k, v in ls.items()} | {f"desi_{k}": v for k, v in desi.items()}
    path = write_mmu(tmp_path / "in" / "legacysurvey_x_desi.hdf5", columns)
    assert cli_main(["tokenize", str(path), "--codecs", str(checkpoint), "--output", str(tmp_path / "none"),
                     "--modalities", "photometry", "--quiet"]) == 2  # fmt: skip
    assert "--source photometry=" in capsys.readouterr().err
    codecs = CodecManager(repo=checkpoint, device="cpu")
    tokens = {}
    for survey, values in (("legacysurvey", ls["FLUX_G"]), ("desi", desi["FLUX_G"])):
        out = tmp_path / survey
        assert cli_main(["tokenize", str(path), "--codecs", str(checkpoint), "--output", str(out), "--modalities",
                         "photometry", "--source", f"photometry={survey}", "--quiet"]) == 0  # fmt: skip
        shard = TokenShard(out / shard_name(path))
        assert shard.meta["job"]["sources"] == {"photometry": survey}
        tokens[survey] = torch.from_numpy(np.asarray(shard[:].tokens["tok_flux_g"])).long().reshape(3, -1)
        expected = codecs.encode(m.LegacySurveyFluxG(value=torch.from_numpy(values)))["tok_flux_g"].reshape(3, -1)
        assert torch.equal(tokens[survey], expected), survey
    assert not torch.equal(tokens["legacysurvey"], tokens["desi"])
    assert cli_main(["tokenize", str(path), "--output", str(tmp_path / "bad"), "--source", "photometry"]) == 2
    assert "GROUP=SURVEY" in capsys.readouterr().err
