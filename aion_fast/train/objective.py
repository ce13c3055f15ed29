"""The AION-1 masked multimodal modeling objective: cross-entropy on the target tokens chosen by the masking.

One step: the masks of :func:`aion_fast.train.masking.sample_masks` split each object's present tokens into encoder
inputs (at most ``B_in``) and decoder targets (at most ``B_out``); :meth:`AION.predict_masked
<aion_fast.model.AION.predict_masked>` embeds the inputs (``embed_inputs(num_encoder_tokens=B_in)``), runs the
encoder, builds the decoder queries of the targets (``embed_targets(num_decoder_tokens=B_out)``) with their true ids
in the same order, runs the decoder, and applies each modality's output head to its own queries.

Loss averaging. Every target token weighs the same: the loss of a step is the sum of the cross-entropies of all
target tokens of the *global* batch (every rank's objects) divided by their number. :class:`MaskedModelingObjective`
returns the local sum and count; the trainer divides by the all-reduced count, so gradients do not depend on how the
batch is split over ranks. Per-modality sums and counts come back too, for the metrics log.

Decoder self-attention is the computation inference uses (see :meth:`AION.predict_masked`): with AION-1's
all-hidden decoder mask each target query receives the mean of its object's target queries' values, so the model
trained here is consistent with :meth:`AION.forward` and :func:`aion_fast.generate`.

Every input and output modality of the model takes part in every step (a modality missing from a batch is given as
all-hidden zeros): each parameter then gets a gradient (zero if unused) on every rank, which sharded data parallelism
needs (ranks must reduce the same gradients).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aion_fast.model import AION
from aion_fast.model.modality_info import GRID, MODALITY_INFO

__all__ = ["ATTENTION_MODES", "MaskedModelingObjective", "resolve_attention"]

#: ``padded``: SDPA on padded batches; ``packed``: packed variable-length sequences (flash-attn varlen on GPU when
#: installed); ``auto``: packed where flash-attn can run (CUDA + flash-attn), padded otherwise.
ATTENTION_MODES = ("auto", "padded", "packed")


def resolve_attention(mode: str, device: torch.device | str) -> str:
    """Turns an attention mode of :data:`ATTENTION_MODES` into ``"padded"`` or ``"packed"`` for ``device``."""
    if mode not in ATTENTION_MODES:
        raise ValueError(f"attention={mode!r}; choose one of {list(ATTENTION_MODES)}")
    if mode != "auto":
        return mode
    from aion_fast.model.attention import flash_attn_varlen_func

    # Packed sequences pay off with flash-attn's varlen kernel; without it the SDPA fallback re-pads them.
    return "packed" if torch.device(device).type == "cuda" and flash_attn_varlen_func() is not None else "padded"


class MaskedModelingObjective(nn.Module):
    """Wraps an :class:`~aion_fast.model.AION` so one ``forward`` call computes a masked-modeling loss.

    Being an ``nn.Module`` whose ``forward`` runs the whole step lets FSDP's hooks (gather parameters before,
    reduce gradients after) wrap the step; the transformer is ``self.model``.

    Args:
        model: The transformer to train.
        input_budget: ``B_in``, the encoder token budget per object.
        output_budget: ``B_out``, the decoder query budget per object.
        attention: One of :data:`ATTENTION_MODES`, resolved for the model's device at each call.
    """

    def __init__(self, model: AION, input_budget: int = 256, output_budget: int = 128, attention: str = "auto"):
        super().__init__()
        for name, value in (("input_budget", input_budget), ("output_budget", output_budget)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1 (tokens per object), got {value!r}")
        if attention not in ATTENTION_MODES:
            raise ValueError(f"attention={attention!r}; choose one of {list(ATTENTION_MODES)}")
        self.model = model
        self.input_budget = input_budget
        self.output_budget = output_budget
        self.attention = attention
        self.input_keys = list(model.config.domains_in)
        self.output_keys = list(model.config.domains_out)

    def freeze_unused_parameters(self) -> list[str]:
        """Sets ``requires_grad=False`` on parameters the objective never uses; returns their names.

        These are the decoder-side ``token_emb`` tables of grid modalities (grid queries are the mask token: the
        tables exist only because the checkpoints store them) and, with AION-1's non-causal decoder, the QK-norms of
        the decoder self-attention (uniform attention needs no queries or keys). Frozen, they get no optimizer state
        (which a checkpoint load would otherwise create for parameters that never had a gradient).
        """
        frozen = []
        for key in self.output_keys:
            if MODALITY_INFO[key].kind == GRID:
                frozen.append(f"decoder_embeddings.{key}.token_emb.weight")
        if not self.model.config.decoder_causal_mask:
            for index, block in enumerate(self.model.decoder):
                for norm in ("q_norm", "k_norm"):
                    module = getattr(block.self_attn, norm)
                    if module is not None:
                        frozen += [f"decoder.{index}.self_attn.{norm}.{n}" for n, _ in module.named_parameters()]
        parameters = dict(self.model.named_parameters())
        for name in frozen:
            parameters[name].requires_grad_(False)
        return [f"model.{name}" for name in frozen]

    def forward(
        self, tokens: Mapping[str, Tensor], input_mask: Mapping[str, Tensor], target_mask: Mapping[str, Tensor]
    ) -> dict[str, Tensor]:
        """Cross-entropy of the targets of one (local) batch.

        Args:
            tokens: Token key -> ``(B, n_key)`` int64 ids (``TokenBatch.tokens``); keys the model does not know are
                ignored, model keys missing here are treated as absent.
            input_mask: Token key -> ``(B, n_key)`` bool, True where NOT an input (from ``sample_masks``).
            target_mask: Token key -> ``(B, n_key)`` bool, True where NOT a target.

        Returns:
            ``loss_sum``: fp32 scalar, sum of the target cross-entropies; ``num_targets``: int64 scalar;
            ``key_loss_sum``: ``(K,)`` fp32 per output key (``self.output_keys`` order, detached);
            ``key_count``: ``(K,)`` int64.

        Raises:
            ValueError: Malformed tokens or masks (names the key), or an object with targets but no input.
        """
        batch = _batch_size(tokens)
        device = self.model.device
        tokens_in, mask_in = self._complete(tokens, input_mask, self.input_keys, batch, device, "input_mask")
        tokens_out, mask_out = self._complete(tokens, target_mask, self.output_keys, batch, device, "target_mask")
        has_input = torch.cat([~m for m in mask_in.values()], dim=1).any(dim=1)
        has_target = torch.cat([~m for m in mask_out.values()], dim=1).any(dim=1)
        if bool((has_target & ~has_input).any()):
            rows = torch.nonzero(has_target & ~has_input).flatten().tolist()
            raise ValueError(
                f"objects at rows {rows[:10]} have targets but no input token; the masking must give every object "
                "with a target at least one input (sample_masks does)"
            )
        all_tokens = {**tokens_out, **tokens_in}
        prediction = self.model.predict_masked(
            all_tokens,
            mask_in,
            mask_out,
            num_encoder_tokens=self.input_budget,
            num_decoder_tokens=self.output_budget,
            packed=resolve_attention(self.attention, device) == "packed",
        )
        losses, counts = [], []
        for key in self.output_keys:
            logits = prediction.logits[key].float()
            losses.append(F.cross_entropy(logits, prediction.targets[key], reduction="sum"))
            counts.append(prediction.targets[key].shape[0])
        key_loss_sum = torch.stack(losses)
        return {
            "loss_sum": key_loss_sum.sum(),
            "num_targets": torch.tensor(sum(counts), dtype=torch.int64, device=device),
            "key_loss_sum": key_loss_sum.detach(),
            "key_count": torch.tensor(counts, dtype=torch.int64, device=device),
        }

    @staticmethod
    def _complete(
        tokens: Mapping[str, Tensor],
        mask: Mapping[str, Tensor],
        keys: list[str],
        batch: int,
        device: torch.device,
        name: str,
    ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Ids and masks for every model key: given ones checked and moved, missing ones all-hidden zeros."""
        ids, masks = {}, {}
        for key in keys:
            spec = MODALITY_INFO[key]
            if key in tokens and key in mask:
                value, hidden = tokens[key], mask[key]
                if not isinstance(hidden, Tensor) or hidden.dtype != torch.bool or hidden.shape != value.shape:
                    got = f"{hidden.dtype} {tuple(hidden.shape)}" if isinstance(hidden, Tensor) else type(hidden)
                    raise ValueError(
                        f"{name}[{key!r}] must be a bool tensor shaped like tokens[{key!r}] {tuple(value.shape)}, "
                        f"True = hidden; got {got}"
                    )
                ids[key] = value.to(device=device, dtype=torch.long)
                masks[key] = hidden.to(device)
            else:
                width = spec.num_tokens if spec.kind == GRID else 1
                ids[key] = torch.zeros(batch, width, dtype=torch.long, device=device)
                masks[key] = torch.ones(batch, width, dtype=torch.bool, device=device)
        return ids, masks


def _batch_size(tokens: Mapping[str, Tensor]) -> int:
    if not isinstance(tokens, Mapping) or not tokens:
        raise ValueError("tokens must be a non-empty dict token key -> (B, n_key) int64 tensor (TokenBatch.tokens)")
    sizes = {key: value.shape[0] for key, value in tokens.items() if isinstance(value, Tensor) and value.ndim == 2}
    if len(sizes) != len(tokens):
        bad = [key for key in tokens if key not in sizes]
        raise ValueError(f"tokens{bad} must be (B, n_key) integer tensors")
    if len(set(sizes.values())) != 1:
        raise ValueError(f"tokens must share the batch size B, got {sizes}")
    return next(iter(sizes.values()))
