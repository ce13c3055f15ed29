r"""``aion-fast predict-check``: calibration of ``aion-fast predict`` posteriors against true values read from files.

Predictions and true values are joined by object id (the id column each input's reader chooses,
:data:`aion_fast.data.columns.ID_COLUMNS`). With :math:`\hat z` the point estimate (``--point``, default the median)
and :math:`z` the true value, :math:`\delta = (\hat z - z) / (1 + z)` for redshift (:math:`\hat z - z` for other
targets). Reported, as numbers (``metrics.json``) and PNG plots:

* PIT :math:`= F(z^-) + \tfrac12 P(z)`: the posterior's mid-distribution function at the truth, from the binned PDF
  (``--pdf``) or else from the draws (fraction below the truth plus half the ties); its histogram and the KS distance
  :math:`D = \max_i \max(i/n - u_{(i)}, u_{(i)} - (i-1)/n)` from the uniform;
* coverage of the central 68% (``p16``–``p84``) and 95% (``p2_5``–``p97_5``) intervals: the fraction of truths inside;
* bias :math:`\mathrm{mean}(\delta)`, :math:`\mathrm{NMAD} = 1.4826\,\mathrm{median}|\delta - \mathrm{median}\,\delta|`
  and the outlier fraction :math:`|\delta| > 0.15`;
* predicted vs true (plot).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from aion_fast import modalities as m

__all__ = ["OUTLIER_THRESHOLD", "calibration_metrics", "ks_uniform", "pit_from_pdf", "pit_from_samples", "run_check"]

#: :math:`|\delta|` above which an object is an outlier (the photo-z convention).
OUTLIER_THRESHOLD = 0.15
PIT_BINS = 10


def pit_from_pdf(pdf: np.ndarray, values: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """``(n,)`` PIT :math:`\\sum_{v_k < z} p_k + \\tfrac12 \\sum_{v_k = z} p_k` of ``(n, K)`` binned posteriors over
    ``(K,)`` bin values at ``(n,)`` truths."""
    p = pdf.astype(np.float64)
    p = p / p.sum(axis=1, keepdims=True)
    below = values[None, :] < truth[:, None]
    equal = values[None, :] == truth[:, None]
    return (p * below).sum(axis=1) + 0.5 * (p * equal).sum(axis=1)


def pit_from_samples(samples: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """``(n,)`` PIT of ``(n, S)`` draws: fraction below the truth plus half the fraction equal to it."""
    return (samples < truth[:, None]).mean(axis=1) + 0.5 * (samples == truth[:, None]).mean(axis=1)


def ks_uniform(u: np.ndarray) -> float:
    """KS distance between the empirical distribution of ``u`` and the uniform on [0, 1]."""
    u = np.sort(np.asarray(u, dtype=np.float64))
    n = u.size
    i = np.arange(1, n + 1)
    return float(max((i / n - u).max(), (u - (i - 1) / n).max()))


def calibration_metrics(
    truth: np.ndarray,
    point: np.ndarray,
    intervals: dict[str, tuple[np.ndarray, np.ndarray]],
    pit: np.ndarray | None,
    redshift: bool = True,
) -> dict[str, Any]:
    """The numbers of the module docstring.

    Args:
        truth, point: ``(n,)`` true values and point estimates.
        intervals: ``"68"``/``"95"`` -> ``(low, high)`` ``(n,)`` interval bounds.
        pit: ``(n,)`` PIT values, or None.
        redshift: divide the error by ``1 + truth``.
    """
    truth = np.asarray(truth, dtype=np.float64)
    delta = (np.asarray(point, dtype=np.float64) - truth) / ((1.0 + truth) if redshift else 1.0)
    out: dict[str, Any] = {
        "objects": int(truth.size),
        "bias": float(delta.mean()),
        "nmad": float(1.4826 * np.median(np.abs(delta - np.median(delta)))),
        "outlier_fraction": float((np.abs(delta) > OUTLIER_THRESHOLD).mean()),
        "outlier_threshold": OUTLIER_THRESHOLD,
        "delta": "(point - true) / (1 + true)" if redshift else "point - true",
    }
    for name, (low, high) in intervals.items():
        out[f"coverage_{name}"] = float(((truth >= low) & (truth <= high)).mean())
    if pit is not None:
        counts, edges = np.histogram(np.clip(pit, 0.0, 1.0), bins=PIT_BINS, range=(0.0, 1.0))
        out["pit_histogram"] = {"edges": edges.tolist(), "counts": counts.tolist()}
        out["pit_ks"] = ks_uniform(pit)
    return out


def _read_predictions(folder: Path) -> tuple[dict[str, np.ndarray], dict[bytes, bytes]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = sorted(p for p in folder.glob("*.parquet") if p.name != "errors.parquet")
    if not files:
        raise ValueError(f"{folder} holds no prediction files (*.parquet); give the --output of aion-fast predict.")
    tables = [pq.read_table(p) for p in files]
    metadata = tables[0].schema.metadata or {}
    if b"aion_fast.bin_values" not in metadata:
        raise ValueError(
            f"{files[0]} is not the output of aion-fast predict for a one-token target (no bin values in its "
            f"metadata); predict-check calibrates scalar targets such as redshift."
        )
    table = pa.concat_tables([t.replace_schema_metadata(None) for t in tables])
    columns = {}
    for name in table.column_names:
        column = table.column(name)
        if pa.types.is_fixed_size_list(column.type):
            size = column.type.list_size
            flat = column.combine_chunks().flatten().to_numpy(zero_copy_only=False)
            columns[name] = flat.reshape(-1, size).astype(np.float64)
        else:
            columns[name] = np.asarray(column.to_pylist(), dtype=object if name == "object_id" else None)
    return columns, metadata


def read_truth(paths: Sequence[str | os.PathLike], target: type[m.Modality]) -> dict[str, float]:
    """Object id -> true value of a one-token ``target`` from survey files (any format
    :mod:`aion_fast.data.formats` reads, through the job's reader: float32 values, rows where the value is
    missing, NaN or a catalogue placeholder left out).

    Raises:
        ValueError: no file gives the target.
    """
    from aion_fast.data.columns import MODALITY_GROUPS
    from aion_fast.data.formats import discover
    from aion_fast.data.mmu import prepare_rows, row_ranges, selection_of
    from aion_fast.jobs.loader import open_input

    group = next(g for g, classes in MODALITY_GROUPS.items() if target in classes)
    truth: dict[str, float] = {}
    found = False
    for path in discover([str(p) for p in paths]):
        with open_input(path) as source:
            selection = selection_of(source, (group,), accepts=lambda cls: None if cls is target else "not the target")
            if not selection.uses:
                continue
            found = True
            for start, stop in row_ranges(source.num_rows, 65536):
                batch = prepare_rows(source, start, stop, selection)
                for part in batch.parts:
                    if type(part.modality) is target:
                        values = part.modality.value.reshape(-1).double().numpy()
                        for row, value in zip(part.rows.tolist(), values.tolist()):
                            truth[batch.object_id[row]] = value
    if not found:
        raise ValueError(
            f"no --truth file has a {target.__name__} column ({target.name}); give files with the true values."
        )
    return truth


def _plots(output: Path, truth: np.ndarray, point: np.ndarray, pit: np.ndarray | None, metrics: dict, name: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    if pit is not None:
        fig, ax = plt.subplots(figsize=(5, 4))
        ax.hist(np.clip(pit, 0, 1), bins=PIT_BINS, range=(0, 1), density=True, color="tab:blue", alpha=0.8)
        ax.axhline(1.0, color="k", linestyle="--", linewidth=1)
        title = f"PIT ({metrics['objects']} objects), KS = {metrics['pit_ks']:.3f}"
        ax.set(xlabel="PIT", ylabel="density", title=title)
        fig.tight_layout()
        fig.savefig(output / "pit.png", dpi=100)
        plt.close(fig)
        written.append("pit.png")
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(truth, point, s=4, alpha=0.6)
    low, high = float(min(truth.min(), point.min())), float(max(truth.max(), point.max()))
    ax.plot([low, high], [low, high], color="k", linewidth=1)
    title = f"bias {metrics['bias']:.4f}, NMAD {metrics['nmad']:.4f}, outliers {metrics['outlier_fraction']:.3f}"
    ax.set(xlabel=f"true {name}", ylabel=f"predicted {name}", title=title)
    fig.tight_layout()
    fig.savefig(output / "predicted_vs_true.png", dpi=100)
    plt.close(fig)
    written.append("predicted_vs_true.png")
    return written


def run_check(
    predictions: str | os.PathLike,
    truth_paths: Sequence[str | os.PathLike],
    target: str = "redshift",
    point: str = "median",
    output: str | os.PathLike | None = None,
    plots: bool = True,
) -> dict[str, Any]:
    """Joins ``predictions`` (an ``aion-fast predict`` output folder) with true values and writes ``metrics.json``
    (and the PNG plots) into ``output`` (default ``<predictions>/check``).

    Raises:
        ValueError: no predictions, no truth column, no object in common, or a target other than the predicted one.
        ImportError: ``plots`` without matplotlib (the ``downstream`` extra).
    """
    from aion_fast.jobs.predict import target_modality

    if point not in ("mean", "median", "mode"):
        raise ValueError(f"--point {point!r}: choose mean, median or mode.")
    if plots:
        import matplotlib  # noqa: F401 - fail before the work when the extra is absent

    cls = target_modality(target)
    folder = Path(predictions)
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a directory; give the --output folder of aion-fast predict.")
    columns, metadata = _read_predictions(folder)
    predicted = metadata.get(b"aion_fast.target", b"").decode()
    if predicted != cls.__name__:
        raise ValueError(f"{folder} holds predictions of {predicted}, not {cls.__name__}; pass --target {predicted}.")
    truth_of = read_truth(truth_paths, cls)
    ids = columns["object_id"]
    keep = np.array([i in truth_of for i in ids], dtype=bool)
    if not keep.any():
        raise ValueError(
            f"no object id of {folder} is in the --truth files ({len(truth_of)} ids there, e.g. "
            f"{list(truth_of)[:3]}); check that both use the same catalogue ids."
        )
    truth = np.array([truth_of[i] for i in ids[keep]], dtype=np.float64)
    sel = {name: values[keep] for name, values in columns.items()}
    if "pdf" in sel:
        bins = np.array(json.loads(metadata[b"aion_fast.bin_values"]), dtype=np.float64)
        pit, pit_source = pit_from_pdf(sel["pdf"], bins, truth), "pdf"
    elif "samples" in sel:
        pit, pit_source = pit_from_samples(sel["samples"], truth), "samples"
    else:
        pit, pit_source = None, None
    intervals = {"68": (sel["p16"], sel["p84"]), "95": (sel["p2_5"], sel["p97_5"])}
    metrics = calibration_metrics(truth, sel[point], intervals, pit, redshift=cls is m.Z)
    metrics.update({"target": cls.__name__, "point": point, "pit_from": pit_source,
                    "predictions": int(len(ids)), "predictions_without_truth": int((~keep).sum()),
                    "truths": len(truth_of)})  # fmt: skip
    out = Path(output) if output is not None else folder / "check"
    out.mkdir(parents=True, exist_ok=True)
    if plots:
        metrics["plots"] = _plots(out, truth, sel[point], pit, metrics, cls.__name__)
    from aion_fast.jobs.manifest import atomic_write_text

    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2))
    metrics["output"] = str(out)
    return metrics
