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

        Returns:
            ``rows``: (n,) int64 positions in the batch, increasing; ``vectors``: (n, D) float32 on the CPU.
        """
        from aion_fast.embedding import embed

        tokens, present, holes = self.model_inputs(batch)
        if not tokens:
            return np.zeros(0, dtype=np.int64), torch.zeros(0, self.model.config.dim)
        vectors = torch.empty(batch.size, self.model.config.dim)
        encoded_rows = []
        for rows, group_tokens, input_mask in presence_groups(tokens, present, holes):
            vectors[rows.cpu()] = embed(self.model, group_tokens, pooling="mean", input_mask=input_mask).cpu()
            encoded_rows.append(rows.cpu())
        encoded_rows = torch.sort(torch.cat(encoded_rows)).values if encoded_rows else torch.zeros(0, dtype=torch.long)
        return encoded_rows.numpy(), vectors[encoded_rows]


def model_inputs(
    codecs: Any, batch: ObjectBatch, device: str | torch.device
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """``(tokens, present, holes)`` for the model: :func:`batch_tokens`, with the empty slots of sequence modalities
    (the catalog codec's mask value) set to id 0 and returned as ``holes`` (token key -> (B, T) bool, absent)."""
    tokens, present = batch_tokens(codecs, batch, device)
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
        tokens, present: from :func:`batch_tokens`.
        holes: token key -> (B, T) bool, tokens absent inside present objects (empty catalog slots).

    Yields:
        ``(rows, group_tokens, input_mask)``: (n,) positions in the batch (increasing), token key -> (n, T) ids of
        the keys some object of the group has, and the ``input_mask`` (True = absent) of the keys not every object
        of the group has, or with holes (None when nothing is absent).
    """
    holes = holes or {}
    multi = [k for k in tokens if tokens[k].shape[1] > 1]
    single = [k for k in tokens if tokens[k].shape[1] == 1]
    any_present = torch.stack([present[k] for k in tokens]).any(dim=0).cpu()
    has_multi = {k: present[k].cpu().tolist() for k in multi}
    groups: dict[tuple[bool, ...], list[int]] = {}
    for row in torch.nonzero(any_present).flatten().tolist():
        groups.setdefault(tuple(has_multi[k][row] for k in multi), []).append(row)
    device = next(iter(tokens.values())).device
    for pattern, group_rows in groups.items():
        rows = torch.tensor(group_rows, device=device)
        keys = [k for k, has in zip(multi, pattern) if has] + [k for k in single if bool(present[k][rows].any())]
        group_tokens = {k: tokens[k][rows] for k in keys}
        absent = {k: (~present[k][rows])[:, None].expand(-1, tokens[k].shape[1]) for k in keys}
        input_mask = {
            k: absent[k] | holes[k][rows] if k in holes else absent[k]
            for k in keys
            if k in holes or not bool(present[k][rows].all())
        }
        yield rows, group_tokens, input_mask or None


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
    by_key: dict[str, list[Part]] = {}
    for part in batch.parts:
        by_key.setdefault(part.modality.token_key, []).append(part)
    tokens: dict[str, torch.Tensor] = {}
    present: dict[str, torch.Tensor] = {}
    for key, parts in by_key.items():
        for rows, encoded in _encode_isolated(codecs, parts, batch):
            encoded = encoded.to(device).reshape(encoded.shape[0], -1)
            rows = torch.as_tensor(rows, device=device)
            if key not in tokens:
                tokens[key] = torch.zeros(batch.size, encoded.shape[1], dtype=torch.int64, device=device)
                present[key] = torch.zeros(batch.size, dtype=torch.bool, device=device)
            tokens[key][rows] = encoded
            present[key][rows] = True
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
