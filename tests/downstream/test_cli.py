"""``aion-fast search`` / ``probe`` end to end on Parquet files, and the PNG plot helpers."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from aion_fast.cli import main
from aion_fast.downstream.plots import plot_predictions, plot_retrieval


def _write(tmp_path, rows=400, dim=20, seed=0):
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((rows, dim)).astype(np.float32)
    ids = np.arange(rows, dtype=np.int64) * 3 + 11
    pq.write_table(
        pa.table(
            {
                "object_id": ids,
                "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), dim),
            }
        ),
        tmp_path / "embeddings.parquet",
    )
    z = vectors[:, :3] @ np.array([0.5, -0.2, 0.1]) + 1.0
    z[::50] = np.nan  # unlabelled objects
    pq.write_table(
        pa.table(
            {
                "object_id": ids[: rows - 20],
                "z": z[: rows - 20],
                "kind": np.where(vectors[: rows - 20, 0] > 0, "a", "b"),
            }
        ),
        tmp_path / "labels.parquet",
    )
    return ids, vectors


def test_search_cli(tmp_path, capsys):
    ids, vectors = _write(tmp_path)
    assert (
        main(
            [
                "search",
                str(tmp_path / "embeddings.parquet"),
                "--query",
                str(ids[4]),
                "--k",
                "3",
                "--plot",
                str(tmp_path / "s.png"),
            ]
        )
        == 0
    )
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split("\t") for line in lines if line.startswith(str(ids[4]) + "\t")]
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    expected = ids[np.argsort(-(unit @ unit[4]))[1:4]]
    assert [int(r[2]) for r in rows] == expected.tolist()
    assert (tmp_path / "s.png").stat().st_size > 1000


@pytest.mark.parametrize("target,head,metric", [("z", "linear", "r2_test"), ("kind", "mlp", "accuracy_test")])
def test_probe_cli(tmp_path, capsys, target, head, metric):
    _write(tmp_path)
    args = [
        "probe",
        str(tmp_path / "embeddings.parquet"),
        "--labels",
        str(tmp_path / "labels.parquet"),
        "--target",
        target,
        "--head",
        head,
        "--epochs",
        "300",
        "--plot",
        str(tmp_path / "p.png"),
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "(28 embeddings without a usable label are not used)" in out or target == "kind"
    result = json.loads(out[out.index("{") : out.rindex("}") + 1])
    assert result[metric] > 0.9
    assert (tmp_path / "p.png").stat().st_size > 1000


def test_plot_helpers_write_png(tmp_path):
    pytest.importorskip("matplotlib")
    images = {i: np.random.default_rng(i).random((16, 16)) for i in range(5)}
    path = plot_retrieval([0], [[1, 2, 3, 4]], [[0.9, 0.8, 0.7, 0.6]], tmp_path / "r.png", images=images)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    path = plot_predictions(np.array([1.0, 2.0, 3.0]), np.array([1.1, 1.9, 3.2]), tmp_path / "p.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_end_to_end_on_the_bundled_sample(tmp_path, capsys):
    """encode the bundled MMU sample, then probe a Gaia scalar and search neighbours, all through the CLI."""
    from pathlib import Path

    import h5py

    from aion_fast.cli import main
    from aion_fast.demo import build_untrained_checkpoint

    sample = Path(__file__).resolve().parents[2] / "aion_fast" / "data" / "sample" / "mmu"
    gaia = sample / "gaia" / "healpix=0" / "001-of-001.hdf5"
    inputs = [str(p) for p in sorted(sample.glob("*/healpix=*/001-of-001.hdf5"))]
    checkpoint = build_untrained_checkpoint(tmp_path / "ckpt")
    out = tmp_path / "embeddings"
    assert main(["encode", *inputs, "--model", str(checkpoint), "--output", str(out), "--quiet"]) == 0
    capsys.readouterr()

    assert main(["probe", str(out), "--labels", str(gaia), "--target", "parallax", "--head", "linear"]) == 0
    printed = capsys.readouterr().out
    result = json.loads(printed[printed.index("{") :])
    assert result["task"] == "regression" and result["test"] >= 3 and np.isfinite(result["r2_test"])

    with h5py.File(gaia, "r") as handle:
        query = int(handle["object_id"][0])
    assert main(["search", str(out), "--query", str(query), "--k", "5"]) == 0  # an integer id
    assert main(["search", str(out), "--query", "ls-synthetic-0003", "--k", "2"]) == 0  # a string id, same index
    printed = capsys.readouterr().out
    assert "ls-synthetic-0003\t2\t" in printed
    lines = [line.split("\t") for line in printed.splitlines() if line.startswith(f"{query}\t")]
    assert [int(rank) for _, rank, _, _ in lines] == [1, 2, 3, 4, 5]
    assert str(query) not in [object_id for _, _, object_id, _ in lines]
