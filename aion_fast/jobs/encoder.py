"""Batch encoding of the ``aion-fast encode`` job: an :class:`~aion_fast.data.mmu.ObjectBatch` -> tokens -> embeddings.

Objects are grouped by which multi-token modalities (image, spectrum, Gaia XP) they have, so no object is padded
with hundreds of absent image or spectrum tokens; within a group, absent single-token modalities (a NaN flux) go to
:func:`aion_fast.embed` as ``input_mask`` and are excluded from the mean.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import torch

from aion_fast.data.mmu import ObjectBatch, Part

__all__ = ["BatchEncoder", "presence_groups"]


class BatchEncoder:
    """Tokenizes and embeds :class:`~aion_fast.data.mmu.ObjectBatch` objects with one model on one device.

    Args:
        checkpoint: directory or hub id holding the transformer and the codecs.
        device: where to run.
    """

    def __init__(self, checkpoint: str | os.PathLike, device: str | torch.device = "cpu"):
        from aion_fast.codecs import CodecManager
        from aion_fast.export.runtime import is_exported, load_for_encoding
        from aion_fast.model import AION

        self.device = torch.device(device)
        if is_exported(checkpoint):  # a directory written by `aion-fast export` (ONNX / INT8)
            self.model, self.codecs = load_for_encoding(checkpoint, self.device)
            return
        self.model = AION.from_pretrained(checkpoint, encoder_only=True).eval().to(self.device)
        self.codecs = CodecManager(repo=checkpoint, device=self.device)

    def tokens(self, batch: ObjectBatch) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Tokens of every modality for the whole batch, and which objects have each.

        Reads only ``self.codecs`` and ``self.device`` (``aion_fast.train.tokenize`` calls it on its own object).
        Parts of one token key share codec calls where that leaves the tokens unchanged: spectra of several lengths
        go through one pass of the spectrum network, and image parts preprocessed by the DALI loader skip the
        codec's own preprocessing.

        Returns:
            ``tokens``: token key -> (B, T) int64, zeros for objects without the modality;
            ``present``: token key -> (B,) bool.
        """
        by_key: dict[str, list[Part]] = {}
        for part in batch.parts:
            by_key.setdefault(part.modality.token_key, []).append(part)
        tokens: dict[str, torch.Tensor] = {}
        present: dict[str, torch.Tensor] = {}
        for key, parts in by_key.items():
            ready = [None if p.preprocessed is None else (p.preprocessed, p.preprocessed_with) for p in parts]
            encoded_parts = self.codecs.encode_batches([p.modality for p in parts], ready)
            for part, encoded in zip(parts, encoded_parts):
                encoded = encoded.to(self.device).reshape(encoded.shape[0], -1)
                rows = torch.as_tensor(part.rows, device=self.device)
                if key not in tokens:
                    tokens[key] = torch.zeros(batch.size, encoded.shape[1], dtype=torch.int64, device=self.device)
                    present[key] = torch.zeros(batch.size, dtype=torch.bool, device=self.device)
                tokens[key][rows] = encoded
                present[key][rows] = True
        return tokens, present

    def __call__(self, batch: ObjectBatch) -> tuple[np.ndarray, torch.Tensor]:
        """Embeds the objects of ``batch`` that have at least one usable modality.

        Returns:
            ``rows``: (n,) int64 positions in the batch, increasing; ``vectors``: (n, D) float32 on the CPU.
        """
        from aion_fast.embedding import embed

        tokens, present = self.tokens(batch)
        if not tokens:
            return np.zeros(0, dtype=np.int64), torch.zeros(0, self.model.config.dim)
        vectors = torch.empty(batch.size, self.model.config.dim)
        encoded_rows = []
        for rows, group_tokens, input_mask in presence_groups(tokens, present):
            vectors[rows.cpu()] = embed(self.model, group_tokens, pooling="mean", input_mask=input_mask).cpu()
            encoded_rows.append(rows.cpu())
        encoded_rows = torch.sort(torch.cat(encoded_rows)).values if encoded_rows else torch.zeros(0, dtype=torch.long)
        return encoded_rows.numpy(), vectors[encoded_rows]


def presence_groups(
    tokens: dict[str, torch.Tensor], present: dict[str, torch.Tensor]
) -> Iterator[tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor] | None]]:
    """Objects with at least one present modality, grouped by which multi-token modalities they have.

    Args:
        tokens, present: from :meth:`BatchEncoder.tokens`.

    Yields:
        ``(rows, group_tokens, input_mask)``: (n,) positions in the batch (increasing), token key -> (n, T) ids of
        the keys some object of the group has, and the ``input_mask`` (True = absent) of the single-token keys not
        every object of the group has (None when all are present).
    """
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
        input_mask = {
            k: (~present[k][rows])[:, None].expand(-1, tokens[k].shape[1])
            for k in keys
            if not bool(present[k][rows].all())
        }
        yield rows, group_tokens, input_mask or None
