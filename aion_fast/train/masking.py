r"""The AION-1 modality masking strategy (paper §5.2): which present tokens are encoder inputs and which are targets.

For every object of a batch, :func:`sample_masks` draws two disjoint subsets of its present tokens:

**Inputs** (budget ``B_in``, default 256). One present modality is picked uniformly at random and a uniform random
number ``n ~ U{1, ..., min(b_in, count)}`` of its tokens (a uniformly random subset) become inputs; the remaining
``b_in - n`` input slots are filled with tokens drawn uniformly at random (each token equally likely) from the
object's other present modalities.

**Targets** (budget ``B_out``, default 128), from the tokens that are not inputs. One modality with tokens left is
picked uniformly at random and draws an unconstrained (up to the whole budget) number of targets, a fraction
``u ~ Beta(a, b)`` skewed toward zero (default ``Beta(1, 3)``, mean 1/4): ``ceil(u * min(b_out, left))``, at least
one. The rest of the budget is then filled by uniform random draws over the tokens left in the other modalities;
their number is also drawn down by an independent ``v ~ Beta(a, b)``: ``floor(v * (b_out - first))``. So the number
of target tokens per object and per modality is skewed toward zero, as the paper asks (its MaskGIT-style argument:
at inference, cosine-schedule iterative sampling queries few tokens per step).

Choices the paper leaves open, made here:

* **Objects with fewer tokens than** ``B_in + B_out``: the input budget of an object with ``T`` present tokens is
  ``b_in = min(B_in, max(1, floor(T * B_in / (B_in + B_out))), max(1, G - 1))`` (``G``: its grid tokens) and the
  target budget ``b_out = min(B_out, tokens left)``: the tokens are shared in the budgets' ratio, so a Gaia object
  (111 tokens) still gets targets rather than spending every token as input. Every object with a grid token has at
  least one input (the encoder never sees an all-padding row) and, when two or more grid tokens exist, at least one
  target. Objects without any present token get no inputs and no targets (the training data excludes them).
* **Sequence modalities** (``kind == "sequence"`` in :data:`~aion_fast.model.modality_info.MODALITY_INFO`: the
  Legacy Survey ``catalog``) are taken whole: all their present entries become inputs, or all become targets, or
  neither; they count toward the budgets by their number of present entries. A target sequence gives
  :meth:`AION.embed_targets <aion_fast.model.AION.embed_targets>` next-token queries between consecutive present
  entries (its first entry is never predicted); a partial sequence would give gaps. A sequence that would overflow
  the remaining budget is skipped and that budget refilled with grid tokens. A sequence picked as the first input
  modality is taken whole if it fits ``B_in`` (even beyond the object's share ``b_in``), so an object whose only
  modality is a sequence gets it all as input and no target (and none at all if it is longer than ``B_in``).

Output conventions are those of the model: ``input_mask[key]`` is True where a token is **not** an input (the
``mask`` of :meth:`AION.embed_inputs`), ``target_mask[key]`` True where it is **not** a target (the ``target_mask``
of :meth:`AION.embed_targets`). Absent tokens are True in both.

Vectorised over the batch: the tokens of all keys are concatenated to one ``(B, N)`` matrix; each stage (inputs,
targets) sorts one random permutation per row and takes prefixes of it with cumulative sums; the only Python loops
run over token keys (for the sequence rule). Random numbers come from the given ``torch.Generator`` (Beta draws
through a NumPy generator seeded from it), so the same generator state gives the same masks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import torch
from torch import Tensor

from aion_fast.model.modality_info import MODALITY_INFO, SEQUENCE

__all__ = ["DEFAULT_TARGET_BETA", "sample_masks", "sequence_token_keys"]

#: (a, b) of the Beta distribution of target fractions; a < b skews it toward zero (Beta(1, 3): mean 0.25,
#: P(u < 0.5) = 0.875). The paper does not give its parameters.
DEFAULT_TARGET_BETA: tuple[float, float] = (1.0, 3.0)


def sequence_token_keys(keys: Iterable[str]) -> set[str]:
    """The keys among ``keys`` that are sequence modalities (taken whole by the masking)."""
    return {key for key in keys if key in MODALITY_INFO and MODALITY_INFO[key].kind == SEQUENCE}


def _check_present(present: Mapping[str, Tensor]) -> tuple[list[str], int, torch.device]:
    if not isinstance(present, Mapping) or not present:
        raise ValueError("present must be a non-empty dict token key -> bool tensor (B, n_key), True = token exists")
    batch_sizes = {}
    devices = set()
    for key, value in present.items():
        if not isinstance(value, Tensor) or value.dtype != torch.bool or value.ndim != 2:
            got = f"{value.dtype} tensor of shape {tuple(value.shape)}" if isinstance(value, Tensor) else type(value)
            raise ValueError(
                f"present[{key!r}] must be a bool tensor of shape (B, n_key), True where the token exists; got {got}. "
                f"Use TokenBatch.present, or expand a per-object (B,) flag with flag[:, None].expand(-1, n_key)."
            )
        batch_sizes[key] = value.shape[0]
        devices.add(value.device)
    if len(set(batch_sizes.values())) != 1:
        raise ValueError(f"present tensors must share the batch size B, got {batch_sizes}")
    if len(devices) != 1:
        raise ValueError(f"present tensors must be on one device, got {sorted(map(str, devices))}")
    batch = next(iter(batch_sizes.values()))
    if batch == 0:
        raise ValueError("present describes an empty batch (B = 0); give at least one object")
    return list(present), batch, devices.pop()


def _check_budget(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1 (tokens per object), got {value!r}")
    return value


def _choose_key(eligible: Tensor, generator: torch.Generator) -> Tensor:
    """Per row, a uniformly random column among the True ones of ``eligible`` (B, K); -1 where none."""
    noise = torch.rand(eligible.shape, generator=generator, device=generator.device).to(eligible.device)
    noise = noise.masked_fill(~eligible, -1.0)
    choice = noise.argmax(dim=1)
    return torch.where(eligible.any(dim=1), choice, torch.full_like(choice, -1))


def _take(eligible: Tensor, count: Tensor, order: Tensor) -> Tensor:
    """Per row, the first ``count[b]`` eligible columns in the order ``order`` (all of them if fewer).

    Args:
        eligible: (B, N) bool.
        count: (B,) int64 (<= 0 takes nothing).
        order: (B, N) int64 permutation of the columns per row (a random one gives a uniformly random subset).

    Returns:
        (B, N) bool selection.
    """
    eligible_sorted = eligible.gather(1, order)
    chosen_sorted = eligible_sorted & (eligible_sorted.cumsum(dim=1) <= count[:, None])
    return torch.zeros_like(eligible).scatter(1, order, chosen_sorted)


def _take_units(
    eligible: Tensor, count: Tensor, order: Tensor, sequence_columns: list[slice], grid_columns: Tensor | None
) -> Tensor:
    """:func:`_take`, with each sequence modality's tokens taken all together or not at all.

    ``order`` puts a sequence's tokens next to each other (:func:`_random_order`); a sequence cut by the budget is
    dropped and the budget it leaves is refilled with grid tokens.
    """
    chosen = _take(eligible, count, order)
    if not sequence_columns:
        return chosen
    for columns in sequence_columns:
        whole = (chosen[:, columns] | ~eligible[:, columns]).all(dim=1, keepdim=True)
        chosen[:, columns] &= whole
    left = (count - chosen.sum(dim=1)).clamp(min=0)
    if bool((left > 0).any()):
        chosen |= _take(eligible & ~chosen & grid_columns, left, order)
    return chosen


def _random_order(
    batch: int, num_tokens: int, sequence_columns: list[slice], generator: torch.Generator, device: torch.device
) -> Tensor:
    """(B, N) int64: a uniformly random order of the columns per row, each sequence's columns kept together.

    Sorting 31-bit random integers (a sequence's columns share its first column's) with a stable sort; ties between
    other columns have probability ~N^2 / 2^32 per row and only keep their column order.
    """
    priority = torch.randint(
        0, 2**31 - 1, (batch, num_tokens), generator=generator, device=generator.device, dtype=torch.int32
    ).to(device)
    for columns in sequence_columns:
        priority[:, columns] = priority[:, columns.start : columns.start + 1]
    return priority.sort(dim=1, stable=True).indices


def _beta(shape: int, concentration: tuple[float, float], generator: torch.Generator, device: torch.device) -> Tensor:
    """(shape,) float64 Beta(a, b) draws, reproducible from ``generator`` (NumPy's sampler, seeded from it)."""
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device).item())
    draws = np.random.default_rng(seed).beta(concentration[0], concentration[1], size=shape)
    return torch.from_numpy(draws).to(device)


def sample_masks(
    present: Mapping[str, Tensor],
    input_budget: int = 256,
    output_budget: int = 128,
    *,
    generator: torch.Generator,
    target_beta: tuple[float, float] = DEFAULT_TARGET_BETA,
    sequence_keys: Iterable[str] | None = None,
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Draws AION-1 input and target masks for a batch (see the module docstring for the strategy).

    Args:
        present: token key -> bool ``(B, n_key)``, True where the object has that token (e.g.
            ``TokenBatch.present``). Never modified.
        input_budget: ``B_in``, the most input tokens per object.
        output_budget: ``B_out``, the most target tokens per object.
        generator: source of every random draw (its device may differ from ``present``'s).
        target_beta: ``(a, b)`` of the Beta distribution of target fractions (``a < b`` skews toward zero).
        sequence_keys: keys taken whole (default: the ``"sequence"`` keys of ``MODALITY_INFO``, i.e. ``catalog``).

    Returns:
        ``(input_mask, target_mask)``: token key -> bool ``(B, n_key)`` on ``present``'s device. ``input_mask`` is
        True where the token is NOT an input (``AION.embed_inputs``'s ``mask``), ``target_mask`` True where it is
        NOT a target (``AION.embed_targets``'s ``target_mask``). Inputs and targets are disjoint subsets of the
        present tokens, with at most ``input_budget`` and ``output_budget`` tokens per object.

    Raises:
        ValueError: malformed ``present`` (not bool (B, n), batch sizes or devices differ, empty), budgets < 1,
            non-positive Beta parameters, or no generator.
    """
    keys, batch, device = _check_present(present)
    input_budget = _check_budget("input_budget", input_budget)
    output_budget = _check_budget("output_budget", output_budget)
    if not isinstance(generator, torch.Generator):
        raise ValueError("generator must be a torch.Generator (e.g. torch.Generator().manual_seed(seed))")
    if len(target_beta) != 2 or not all(float(c) > 0 for c in target_beta):
        raise ValueError(f"target_beta must be two positive numbers (a, b), a < b skews toward 0; got {target_beta}")
    sequences = sequence_token_keys(keys) if sequence_keys is None else set(sequence_keys) & set(keys)

    widths = [present[key].shape[1] for key in keys]
    starts = np.concatenate([[0], np.cumsum(widths)]).tolist()
    exists = torch.cat([present[key] for key in keys], dim=1)  # (B, N)
    num_keys, num_tokens = len(keys), exists.shape[1]
    key_of = torch.repeat_interleave(torch.arange(num_keys, device=device), torch.tensor(widths, device=device))
    is_sequence = torch.tensor([key in sequences for key in keys], dtype=torch.bool, device=device)
    sequence_columns = [slice(starts[i], starts[i + 1]) for i, key in enumerate(keys) if key in sequences]
    grid_columns = ~is_sequence[key_of][None, :] if sequence_columns else None

    def per_key(selection: Tensor) -> Tensor:
        """(B, N) bool -> (B, K) int64 count of selected tokens per key."""
        counts = torch.zeros(batch, num_keys, dtype=torch.int64, device=device)
        return counts.index_add_(1, key_of, selection.to(torch.int64))

    def random_order() -> Tensor:
        return _random_order(batch, num_tokens, sequence_columns, generator, device)

    # ---- inputs
    available = per_key(exists)  # (B, K)
    total = available.sum(dim=1)  # (B,)
    grid_total = total - (available * is_sequence[None, :]).sum(dim=1)
    share = ((total * input_budget) // (input_budget + output_budget)).clamp(min=1)
    in_budget = torch.minimum(share, (grid_total - 1).clamp(min=1)).clamp(max=input_budget)  # (B,)
    in_budget = torch.where(total > 0, in_budget, torch.zeros_like(in_budget))
    first_ok = (available > 0) & (~is_sequence[None, :] | (available <= input_budget))
    first = _choose_key(first_ok, generator)  # (B,)
    has_first = first >= 0
    first_safe = first.clamp(min=0)
    first_available = available.gather(1, first_safe[:, None])[:, 0]
    uniform = torch.rand(batch, generator=generator, device=generator.device, dtype=torch.float64).to(device)
    grid_count = 1 + (uniform * torch.minimum(in_budget, first_available)).long()
    first_count = torch.where(is_sequence[first_safe], first_available, grid_count)
    first_count = torch.where(has_first, first_count, torch.zeros_like(first_count))
    in_first = key_of[None, :] == first[:, None]  # (B, N); never True where first == -1
    input_order = random_order()
    inputs = _take(exists & in_first, first_count, input_order)
    fill = (in_budget - inputs.sum(dim=1)).clamp(min=0)
    inputs |= _take_units(exists & ~in_first, fill, input_order, sequence_columns, grid_columns)

    # ---- targets
    left = exists & ~inputs
    left_per_key = per_key(left)
    out_budget = left_per_key.sum(dim=1).clamp(max=output_budget)
    target_ok = (left_per_key > 0) & (~is_sequence[None, :] | (left_per_key <= out_budget[:, None]))
    target_first = _choose_key(target_ok, generator)
    has_target = target_first >= 0
    target_safe = target_first.clamp(min=0)
    first_left = left_per_key.gather(1, target_safe[:, None])[:, 0]
    fraction_first = _beta(batch, target_beta, generator, device)
    fraction_rest = _beta(batch, target_beta, generator, device)
    grid_targets = torch.ceil(fraction_first * torch.minimum(out_budget, first_left)).long().clamp(min=1)
    first_targets = torch.where(is_sequence[target_safe], first_left, grid_targets)
    first_targets = torch.where(has_target, first_targets, torch.zeros_like(first_targets))
    in_target_first = key_of[None, :] == target_first[:, None]
    target_order = random_order()
    targets = _take(left & in_target_first, first_targets, target_order)
    rest_count = torch.floor(fraction_rest * (out_budget - targets.sum(dim=1))).long().clamp(min=0)
    targets |= _take_units(left & ~in_target_first, rest_count, target_order, sequence_columns, grid_columns)

    input_mask = {key: ~inputs[:, starts[i] : starts[i + 1]] for i, key in enumerate(keys)}
    target_mask = {key: ~targets[:, starts[i] : starts[i + 1]] for i, key in enumerate(keys)}
    return input_mask, target_mask
