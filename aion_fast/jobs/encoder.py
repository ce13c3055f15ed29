"""Batch encoding of the ``aion-fast encode`` job: an :class:`~aion_fast.data.mmu.ObjectBatch` -> tokens -> embeddings.

Objects are grouped by which multi-token modalities (image, spectrum, Gaia XP) they have, so no object is padded
with hundreds of absent image or spectrum tokens; within a group, absent single-token modalities (a NaN flux) go to
:func:`aion_fast.embed` as ``input_mask`` and are excluded from the mean.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from aion_fast.data.mmu import Issue, ObjectBatch, Part
from aion_fast.modalities import LegacySurveyCatalog

__all__ = ["BatchEncoder", "batch_tokens", "model_inputs", "presence_groups"]


class BatchEncoder:
    """Tokenizes and embeds :class:`~aion_fast.data.mmu.ObjectBatch` objects with one model on one device.

    Args:
        checkpoint: directory or hub id holding the transformer and the codecs.
        device: where to run.
        precision: ``"fp32"`` (exact) or ``"bf16"`` for the codec networks and the transformer
            (:mod:`aion_fast.precision`; quantization stays fp32).
    """

    def __init__(self, checkpoint: str | os.PathLike, device: str | torch.device = "cpu", precision: str = "fp32"):
        from aion_fast.codecs import CodecManager
        from aion_fast.export.runtime import is_exported, load_for_encoding
        from aion_fast.model import AION

        self.device = torch.device(device)
        self.precision = precision
        if is_exported(checkpoint):  # a directory written by `aion-fast export` (ONNX / INT8)
            if precision != "fp32":
                raise ValueError(f"--precision {precision}: {checkpoint} is an exported model whose precision is built "
                                 f"in; leave --precision out.")  # fmt: skip
            self.model, self.codecs = load_for_encoding(checkpoint, self.device)
            return
        self.model = AION.from_pretrained(checkpoint, encoder_only=True, precision=precision).eval().to(self.device)
        self.codecs = CodecManager(repo=checkpoint, device=self.device, precision=precision)

    def compare_with_fp32(self, batch: ObjectBatch) -> dict[str, Any]:
        """Token agreement and embedding cosine of this encoder's precision against fp32 on one batch.

        Returns:
            ``{"precision", "objects", "token_agreement": key -> fraction, "embedding_cosine": {"min", "mean"}}``.
        """
        from aion_fast.precision import embedding_cosine, token_agreement

        ours_tokens, _ = self.tokens(batch)
        ours_rows, ours = self(batch)
        low, model_low = self.codecs.precision, self.model.precision
        try:
            self.codecs.precision = self.model.precision = "fp32"
            ref_tokens, _ = self.tokens(batch)
            ref_rows, ref = self(batch)
        finally:
            self.codecs.precision, self.model.precision = low, model_low
        if not np.array_equal(ours_rows, ref_rows):
            raise RuntimeError(f"fp32 and {self.precision} passes encoded different objects")
        return {
            "precision": self.precision,
            "objects": len(ours_rows),
            "token_agreement": token_agreement(ours_tokens, ref_tokens),
            "embedding_cosine": embedding_cosine(ours, ref),
        }

    def tokens(self, batch: ObjectBatch) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """:func:`batch_tokens` with this encoder's codecs and device."""
        return batch_tokens(self.codecs, batch, self.device)

    def model_inputs(
        self, batch: ObjectBatch
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """:func:`model_inputs` with this encoder's codecs and device."""
        return model_inputs(self.codecs, batch, self.device)

    def __call__(self, batch: ObjectBatch) -> tuple[np.ndarray, torch.Tensor]:
        """Embeds the objects of ``batch`` that have at least one usable modality.

        One host sync per batch from this code (the embeddings' copy to the CPU): which objects have which
        modality is known on the host from the codecs' row positions, so the groups are formed with numpy and
        their row indices go to the device in one non-blocking upload (what the codecs and the model do inside
        is theirs).

        Returns:
            ``rows``: (n,) int64 positions in the batch, increasing; ``vectors``: (n, D) float32 on the CPU.
        """
        from aion_fast.embedding import embed

        tokens, present, holes = _model_inputs(self.codecs, batch, self.device)
        if not tokens:
            return np.zeros(0, dtype=np.int64), torch.zeros(0, self.model.config.dim)
        encoded_rows, vectors = [], []
        for rows, _, group_tokens, input_mask in _groups(tokens, present, holes):
            vectors.append(embed(self.model, group_tokens, pooling="mean", input_mask=input_mask).float())
            encoded_rows.append(rows)
        if not vectors:
            return np.zeros(0, dtype=np.int64), torch.zeros(0, self.model.config.dim)
        rows = np.concatenate(encoded_rows)
        order = np.argsort(rows, kind="stable")
        host = torch.cat(vectors).cpu()  # the one host sync of the batch
        return rows[order], host[torch.from_numpy(order)]


def _upload(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """A host array as a tensor on ``device`` without a host sync (pinned memory, non-blocking copy on CUDA)."""
    host = torch.from_numpy(np.ascontiguousarray(array))
    if device.type == "cuda":
        return host.pin_memory().to(device, non_blocking=True)
    return host.to(device)


def model_inputs(
    codecs: Any, batch: ObjectBatch, device: str | torch.device
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """``(tokens, present, holes)`` for the model: :func:`batch_tokens`, with the empty slots of sequence modalities
    (the catalog codec's mask value) set to id 0 and returned as ``holes`` (token key -> (B, T) bool, absent)."""
    device = torch.device(device)
    tokens, present, holes = _model_inputs(codecs, batch, device)
    return tokens, {k: _upload(v, device) for k, v in present.items()}, holes


def _model_inputs(
    codecs: Any, batch: ObjectBatch, device: torch.device
) -> tuple[dict[str, torch.Tensor], dict[str, np.ndarray], dict[str, torch.Tensor]]:
    """:func:`model_inputs` with ``present`` as (B,) numpy bool (host side, no sync)."""
    tokens, present = _batch_tokens(codecs, batch, device)
    holes = {}
    key = LegacySurveyCatalog.token_key
    if key in tokens:
        holes[key] = tokens[key] == codecs.codec(LegacySurveyCatalog).mask_value
        tokens[key] = tokens[key].masked_fill(holes[key], 0)
    return tokens, present, holes


def presence_groups(
    tokens: dict[str, torch.Tensor], present: dict[str, torch.Tensor], holes: dict[str, torch.Tensor] | None = None
) -> Iterator[tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor] | None]]:
    """Objects with at least one present modality, grouped by which multi-token modalities they have.

    Args:
        tokens, present: from :func:`batch_tokens` (``present`` may also be (B,) numpy bool arrays).
        holes: token key -> (B, T) bool, tokens absent inside present objects (empty catalog slots).

    Yields:
        ``(rows, group_tokens, input_mask)``: (n,) positions in the batch (increasing, on the tokens' device),
        token key -> (n, T) ids of the keys some object of the group has, and the ``input_mask`` (True = absent) of
        the keys not every object of the group has, or with holes (None when nothing is absent).
    """
    host = {
        k: v.cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v, dtype=bool) for k, v in present.items()
    }
    for _, rows, group_tokens, input_mask in _groups(tokens, host, holes or {}):
        yield rows, group_tokens, input_mask


def _groups(
    tokens: dict[str, torch.Tensor], present: dict[str, np.ndarray], holes: dict[str, torch.Tensor]
) -> Iterator[tuple[np.ndarray, torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor] | None]]:
    """:func:`presence_groups` from host presence: ``(host rows, device rows, group_tokens, input_mask)``.

    The grouping is numpy; every group's row positions and the presence table reach the device in two
    non-blocking uploads, so no step here waits for the device.
    """
    keys = list(tokens)
    multi = [i for i, k in enumerate(keys) if tokens[k].shape[1] > 1]
    single = [i for i, k in enumerate(keys) if tokens[k].shape[1] == 1]
    table = np.stack([present[k] for k in keys])  # (K, B) bool
    rows_any = np.flatnonzero(table.any(axis=0))
    if not len(rows_any):
        return
    group_rows: dict[bytes, list[int]] = {}  # by multi-token pattern, in order of each group's first object
    for row, pattern in zip(rows_any.tolist(), table[multi][:, rows_any].T, strict=True):
        group_rows.setdefault(pattern.tobytes(), []).append(row)
    device = next(iter(tokens.values())).device
    all_rows = _upload(np.concatenate(list(group_rows.values())).astype(np.int64), device)
    table_dev = _upload(table, device)
    start = 0
    for rows in map(np.asarray, group_rows.values()):
        rows_dev = all_rows[start : start + len(rows)]
        start += len(rows)
        has = table[:, rows]  # (K, n), host
        group_keys = [i for i in multi + single if has[i].any()]
        group_tokens = {keys[i]: tokens[keys[i]].index_select(0, rows_dev) for i in group_keys}
        input_mask = {}
        for i in group_keys:
            k = keys[i]
            if k in holes or not has[i].all():
                absent = (~table_dev[i].index_select(0, rows_dev))[:, None].expand(-1, tokens[k].shape[1])
                input_mask[k] = absent | holes[k].index_select(0, rows_dev) if k in holes else absent
        yield rows, rows_dev, group_tokens, input_mask or None


def batch_tokens(
    codecs: Any, batch: ObjectBatch, device: str | torch.device
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Tokens of every modality of a batch of rows, and which objects have each (the job's and ``aion-fast
    tokenize``'s step from rows to tokens).

    Parts of one token key go to :meth:`~aion_fast.codecs.CodecManager.encode_batches` together (one network pass
    for spectra of several lengths; DALI-preprocessed images enter after preprocessing).

    Returns:
        ``tokens``: token key -> (B, T) int64 on ``device``, zeros for objects without the modality;
        ``present``: token key -> (B,) bool.
    """
    device = torch.device(device)
    tokens, present = _batch_tokens(codecs, batch, device)
    return tokens, {k: _upload(v, device) for k, v in present.items()}


def _batch_tokens(
    codecs: Any, batch: ObjectBatch, device: torch.device
) -> tuple[dict[str, torch.Tensor], dict[str, np.ndarray]]:
    """:func:`batch_tokens` with ``present`` as (B,) numpy bool: the rows come from the parts (host), and every
    part's row positions go to the device in one non-blocking upload."""
    by_key: dict[str, list[Part]] = {}
    for part in batch.parts:
        by_key.setdefault(part.modality.token_key, []).append(part)
    encoded = [(key, *done) for key, parts in by_key.items() for done in _encode_isolated(codecs, parts, batch)]
    if not encoded:
        return {}, {}
    index = _upload(np.concatenate([np.asarray(rows, dtype=np.int64) for _, rows, _ in encoded]), device)
    tokens: dict[str, torch.Tensor] = {}
    present: dict[str, np.ndarray] = {}
    start = 0
    for key, rows, out in encoded:
        out = out.to(device).reshape(out.shape[0], -1).to(torch.int64)
        if key not in tokens:
            tokens[key] = torch.zeros(batch.size, out.shape[1], dtype=torch.int64, device=device)
            present[key] = np.zeros(batch.size, dtype=bool)
        tokens[key].index_copy_(0, index[start : start + len(rows)], out)
        present[key][rows] = True
        start += len(rows)
    return tokens, present


def _encode_isolated(codecs: Any, parts: list[Part], batch: ObjectBatch) -> list[tuple[np.ndarray, torch.Tensor]]:
    """``(rows, tokens)`` per part of one token key; a codec refusal costs only the objects it is about.

    All parts go to the codec together (one pass where the codec can share work); if the codec raises ValueError
    (e.g. a spectrum off its wavelength grid), each part is retried alone and then row by row, and each refused
    object goes to the batch's ledger with the codec's reason.
    """
    ready = [None if p.preprocessed is None else (p.preprocessed, p.preprocessed_with) for p in parts]
    try:
        return [(p.rows, t) for p, t in zip(parts, codecs.encode_batches([p.modality for p in parts], ready))]
    except ValueError:
        pass
    out = []
    for part, prepared in zip(parts, ready):
        try:
            out.append((part.rows, codecs.encode_batches([part.modality], [prepared])[0]))
            continue
        except ValueError:
            pass
        kept, encoded = [], []
        for i, row in enumerate(part.rows.tolist()):
            one = _rows_of(part.modality, i)
            one_ready = None if prepared is None else (prepared[0][i : i + 1], prepared[1])
            try:
                encoded.append(codecs.encode_batches([one], [one_ready])[0])
                kept.append(row)
            except ValueError as error:
                batch.issues.append(Issue(row, type(part.modality).__name__, " ".join(str(error).split())))
        if kept:
            out.append((np.asarray(kept, dtype=np.int64), torch.cat(encoded)))
    return out


def _rows_of(modality: Any, i: int) -> Any:
    """Row ``i`` of a modality batch as a batch of one (tensor fields sliced on their first axis)."""
    fields = {f.name: getattr(modality, f.name) for f in dataclasses.fields(modality)}
    return type(modality)(**{k: v[i : i + 1] if isinstance(v, torch.Tensor) else v for k, v in fields.items()})
