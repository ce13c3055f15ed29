"""``aion-fast search`` and ``aion-fast probe``: similarity search and probes over embedding Parquet files."""

from __future__ import annotations

import argparse
import json
import os
from typing import TYPE_CHECKING

import numpy as np

from aion_fast.downstream.parquet import id_array, id_key

if TYPE_CHECKING:
    from aion_fast.cli import Subcommands


def _read_labels(path: str, id_column: str, target: str) -> tuple[np.ndarray, np.ndarray]:
    """``(ids, values)`` of a Parquet, CSV or HDF5 label table (HDF5: e.g. the MMU file the objects came from)."""
    if path.endswith((".hdf5", ".h5")):
        import h5py

        with h5py.File(path, "r") as handle:
            columns = list(handle.keys())
            for name in (id_column, target):
                if name not in columns or handle[name].ndim != 1:
                    raise ValueError(f"{path}: no 1-D dataset {name!r} (datasets: {columns}); use --id-column/--target")
            return id_array(handle[id_column][:]), handle[target][:]
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    table = pacsv.read_csv(path) if path.endswith(".csv") else pq.read_table(path)
    for name in (id_column, target):
        if name not in table.column_names:
            raise ValueError(f"{path}: no column {name!r} (columns: {table.column_names}); use --id-column/--target")
    return id_array(table[id_column].to_numpy(zero_copy_only=False)), table[target].to_numpy(zero_copy_only=False)


def _exists(path: str, option: str) -> None:
    from pathlib import Path

    if not Path(path).exists():
        raise ValueError(f"{option} {path} does not exist; give a Parquet file or directory written by aion-fast "
                         f"encode.")  # fmt: skip


def _search(args: argparse.Namespace) -> int:
    from aion_fast.downstream.search import EmbeddingIndex

    _exists(args.embeddings, "embeddings")
    if args.k < 1:
        raise ValueError(f"--k must be >= 1 (neighbours per query), got {args.k}.")

    index = EmbeddingIndex.from_parquet(args.embeddings, kind=args.kind)
    ids, scores = index.search_ids(args.query, k=args.k, exclude_self=not args.include_self)
    recall = "" if index.recall is None else f", measured recall@10 {index.recall:.3f} vs exact"
    print(f"{len(index)} objects indexed ({index.kind}{recall})")
    print("query_id\trank\tobject_id\tcosine")
    for query, row_ids, row_scores in zip(args.query, ids, scores):
        for rank, (object_id, score) in enumerate(zip(row_ids, row_scores), start=1):
            print(f"{query}\t{rank}\t{object_id}\t{score:.4f}")
    if args.plot:
        from aion_fast.downstream.plots import plot_retrieval

        print(f"plot -> {plot_retrieval(args.query, ids, scores, args.plot)}")
    return 0


def _probe(args: argparse.Namespace) -> int:
    from aion_fast.downstream.metrics import accuracy, confusion_matrix, r2_score
    from aion_fast.downstream.parquet import read_embeddings
    from aion_fast.downstream.probes import LinearProbe, MLPProbe, fit_probe, infer_task, train_test_split

    _exists(args.embeddings, "embeddings")
    if not os.path.isfile(args.labels):
        raise ValueError(f"--labels {args.labels} is not a file; give a Parquet, CSV or HDF5 table of labels.")
    if args.epochs < 1:
        raise ValueError(f"--epochs must be >= 1, got {args.epochs}: a probe trained for 0 epochs scores nothing.")
    if args.hidden < 1:
        raise ValueError(f"--hidden must be >= 1, got {args.hidden}.")
    if not 0 < args.test_fraction < 1:
        raise ValueError(f"--test-fraction must be in (0, 1), got {args.test_fraction}.")
    ids, vectors = read_embeddings(args.embeddings)
    label_ids, values = _read_labels(args.labels, args.id_column, args.target)
    task = infer_task(values) if args.task == "auto" else args.task
    if task == "regression":
        values = values.astype(np.float64)
    keep = ~np.isnan(values) if task == "regression" else np.array([v is not None for v in values])
    label_of = {id_key(object_id): value for object_id, value in zip(label_ids[keep].tolist(), values[keep])}
    rows = np.array([i for i, object_id in enumerate(ids.tolist()) if id_key(object_id) in label_of], dtype=np.int64)
    print(
        f"{len(ids)} embeddings, {len(label_ids)} labels: {len(rows)} objects with both "
        f"({len(ids) - len(rows)} embeddings without a usable label are not used)"
    )
    if len(rows) < 10:
        raise ValueError(
            f"only {len(rows)} embedded objects have a {args.target!r} label; a probe with a held-out "
            "split needs at least 10"
        )
    X = vectors[rows]
    y = np.array([label_of[id_key(i)] for i in ids[rows].tolist()])
    train_rows, test_rows = train_test_split(
        len(rows), args.test_fraction, y if task == "classification" else None, args.seed
    )
    out = 1 if task == "regression" else len(np.unique(y[train_rows]))
    probe = LinearProbe(X.shape[1], out) if args.head == "linear" else MLPProbe(X.shape[1], out, hidden=args.hidden)
    fit_probe(probe, X[train_rows], y[train_rows], task=task, epochs=args.epochs, seed=args.seed)
    pred = probe.predict(X[test_rows])
    result = {
        "task": task,
        "head": args.head,
        "target": args.target,
        "train_val": len(train_rows),
        "test": len(test_rows),
        "best_epoch": probe.history.best_epoch,
    }
    if task == "regression":
        result["r2_test"] = round(r2_score(y[test_rows], pred), 4)
    else:
        result["accuracy_test"] = round(accuracy(y[test_rows], pred), 4)
        matrix, labels = confusion_matrix(y[test_rows], pred)
        result["confusion_matrix"] = {"labels": [str(v) for v in labels], "rows_true_cols_pred": matrix.tolist()}
    print(json.dumps(result, indent=2))
    if args.plot:
        from aion_fast.downstream.plots import plot_predictions

        print(f"plot -> {plot_predictions(y[test_rows], pred, args.plot, title=args.target)}")
    return 0


def register(commands: Subcommands) -> None:
    """Adds ``search`` (neighbours of objects by id) and ``probe`` (fit and score a head on labelled embeddings)."""
    search = commands.add_parser("search", help="nearest neighbours (cosine) of objects in embedding Parquet files")
    search.add_argument("embeddings", help="Parquet file or directory (e.g. the output of `aion-fast encode`)")
    search.add_argument("--query", nargs="+", required=True, metavar="OBJECT_ID", help="query object id(s)")
    search.add_argument("--k", type=int, default=10, help="neighbours per query (default 10)")
    search.add_argument(
        "--kind",
        choices=["auto", "flat", "ivf", "hnsw"],
        default="auto",
        help="index kind (default: exact below 200k rows, IVF above)",
    )
    search.add_argument("--include-self", action="store_true", help="keep the query object in its own results")
    search.add_argument("--plot", default=None, metavar="PNG", help="also save a plot of similarity vs rank")
    search.set_defaults(run=_search)

    probe = commands.add_parser("probe", help="train a probe on embeddings and report held-out R² or accuracy")
    probe.add_argument("embeddings", help="Parquet file or directory of embeddings")
    probe.add_argument(
        "--labels", required=True, help="Parquet, CSV or HDF5 (e.g. an MMU file) with an id column and the target"
    )
    probe.add_argument("--target", required=True, help="label column to predict")
    probe.add_argument("--id-column", default="object_id", help="id column of the label file (default object_id)")
    probe.add_argument("--head", choices=["linear", "mlp"], default="mlp", help="probe head (default mlp)")
    probe.add_argument(
        "--task",
        choices=["auto", "regression", "classification"],
        default="auto",
        help="default: regression for float targets, classification otherwise",
    )
    probe.add_argument("--hidden", type=int, default=256, help="MLP hidden width (default 256)")
    probe.add_argument("--epochs", type=int, default=500, help="maximum epochs (early stopping on validation)")
    probe.add_argument("--test-fraction", type=float, default=0.2, help="held-out fraction (default 0.2)")
    probe.add_argument("--seed", type=int, default=0)
    probe.add_argument("--plot", default=None, metavar="PNG", help="also save predictions vs truth")
    probe.set_defaults(run=_probe)


__all__ = ["register"]
