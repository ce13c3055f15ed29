r"""ROAR sampling step: sample revealed positions from decoder logits, then choose the next positions to reveal.

One call per ROAR step (AION-1 paper §7.1, after 4M, Mizrahi et al. 2023), for each chain ``r`` (draw
``sample_ids[r]`` of object ``object_ids[r]``): sample a token for each of its ``N`` query slots from ``logits``
and reveal it at ``positions[r, n]`` (write ``tokens``, clear ``input_mask``, set ``target_mask``); then return the
first ``next_count`` still-unknown positions of a fresh random permutation, ``(R, next_count)``.

Random numbers: Philox4x32-10 (Salmon et al. 2011) with key = seed, counter = (position | step << 16,
object mod 2^32, object div 2^32, sample); words 0-1 are the position's 63-bit sort key (ties by position), words
2-3 the 53-bit uniform :math:`u` of its token. A chain's draws depend only on the seed and its identifiers, so they
are the same on any batch split, CPU or GPU. Sampling at temperature :math:`\tau > 0`, in float64:

.. math::

    z_i = x_i / \tau, \qquad w_i = e^{z_i - \max_j z_j}

top-k zeroes :math:`w_i` below the k-th largest :math:`z` (ties kept); top-p keeps the smallest prefix in
(:math:`z` descending, index ascending) order holding at least :math:`p` of the tempered mass (the reference applies
it to the untempered softmax). Token: the first :math:`i` with :math:`\sum_{j \le i} w_j > u \sum_j w_j` (the last
nonzero class if rounding leaves none); :math:`\tau = 0` takes the first argmax.

Backends: ``torch`` (:func:`torch_roar_step`, reference), ``cpp`` (``aion_fast._C`` on CPU, and its CUDA kernel in
CUDA builds). Float64 ``exp`` may differ in the last bit between PyTorch and libm/CUDA, so tokens could differ only
when :math:`u \sum w` lands within ~1e-16 relative of a boundary. Logits with NaN or +inf, or only -inf, raise.
"""

from __future__ import annotations

import torch

from aion_fast import dispatch
from aion_fast.dispatch import Backend

__all__ = ["philox4x32_10", "roar_step", "torch_roar_sample", "torch_roar_select", "torch_roar_step"]

_MASK32 = 0xFFFFFFFF
_PHILOX_M = (0xD2511F53, 0xCD9E8D57)
_PHILOX_W = (0x9E3779B9, 0xBB67AE85)
#: Positions and steps share the first counter word, 16 bits each.
MAX_POSITIONS = 1 << 16
MAX_STEPS = 1 << 16


# ---- PyTorch reference (oracle and fallback) -------------------------------------------------------------------------


def _mulhilo(a: int, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """High and low 32-bit words of the 64-bit product of the constant ``a`` and uint32 values ``b`` (int64)."""
    low_part = (b & 0xFFFF) * a  # < 2^48
    high_part = (b >> 16) * a  # < 2^48
    t = low_part + ((high_part & 0xFFFF) << 16)  # < 2^49
    return ((t >> 32) + (high_part >> 16)) & _MASK32, t & _MASK32


def philox4x32_10(counter: torch.Tensor, key: tuple[int, int]) -> torch.Tensor:
    """Philox4x32-10 (Random123's ``philox4x32``): ``(..., 4)`` int64 uint32 counter words, two key words -> blocks."""
    c0, c1, c2, c3 = (counter[..., i] & _MASK32 for i in range(4))
    k0, k1 = key[0] & _MASK32, key[1] & _MASK32
    for round_index in range(10):
        if round_index:
            k0, k1 = (k0 + _PHILOX_W[0]) & _MASK32, (k1 + _PHILOX_W[1]) & _MASK32
        hi0, lo0 = _mulhilo(_PHILOX_M[0], c0)
        hi1, lo1 = _mulhilo(_PHILOX_M[1], c2)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return torch.stack([c0, c1, c2, c3], dim=-1)


def _chain_blocks(
    seed: int, step: int, object_ids: torch.Tensor, sample_ids: torch.Tensor, positions: torch.Tensor
) -> torch.Tensor:
    """``(R, K, 4)`` Philox blocks of chains ``(object_ids, sample_ids)`` (R,) at ``positions`` (R, K)."""
    obj = object_ids[:, None].expand_as(positions)
    counter = torch.stack(
        [positions | (step << 16), obj & _MASK32, (obj >> 32) & _MASK32, sample_ids[:, None].expand_as(positions)],
        dim=-1,
    )
    return philox4x32_10(counter, (seed & _MASK32, (seed >> 32) & _MASK32))


def _uniform53(blocks: torch.Tensor) -> torch.Tensor:
    """Uniform float64 in [0, 1) from words 2 and 3 of Philox blocks ``(..., 4)``."""
    return ((blocks[..., 2] >> 5).double() * 67108864.0 + (blocks[..., 3] >> 6).double()) / 9007199254740992.0


def _invalid_rows(logits: torch.Tensor) -> torch.Tensor:
    """``(M,)`` bool: rows of ``(M, V)`` logits with NaN or +inf, or only -inf."""
    return torch.isnan(logits).any(-1) | (logits == float("inf")).any(-1) | (logits == float("-inf")).all(-1)


def torch_roar_sample(
    logits: torch.Tensor, uniforms: torch.Tensor, temperature: float, top_k: int = 0, top_p: float = 0.0
) -> torch.Tensor:
    """Reference sampler (maths in the module docstring): ``(M, V)`` float32 logits and ``(M,)`` float64 uniforms
    in [0, 1) -> ``(M,)`` int64 tokens. ``temperature`` 0 is greedy; ``top_k`` 0 or >= V and ``top_p`` 0 or 1 are
    off. ValueError for a row with NaN or +inf, or only -inf.
    """
    bad = _invalid_rows(logits)
    if bool(bad.any()):
        raise ValueError(
            f"roar sampling: logits rows {torch.nonzero(bad).flatten()[:10].tolist()} hold NaN/+inf or only -inf; "
            "check the model's outputs (e.g. a NaN weight or input)"
        )
    if temperature == 0:
        return logits.argmax(dim=-1)
    vocab = logits.shape[-1]
    z = logits.double() / temperature
    w = torch.exp(z - z.max(dim=-1, keepdim=True).values)
    use_k, use_p = 0 < top_k < vocab, 0.0 < top_p < 1.0
    if use_k or use_p:
        order = torch.sort(z, dim=-1, descending=True, stable=True).indices
        if use_k:
            w = torch.where(z < z.gather(-1, order[:, top_k - 1 : top_k]), 0.0, w)
        if use_p:
            cum = w.gather(-1, order).cumsum(dim=-1)
            mass_before = torch.cat([torch.zeros_like(cum[:, :1]), cum[:, :-1]], dim=-1)
            removed_sorted = mass_before > top_p * cum[:, -1:]
            w = torch.where(torch.zeros_like(removed_sorted).scatter(-1, order, removed_sorted), 0.0, w)
    cum = w.cumsum(dim=-1)
    tokens = (cum <= (uniforms * cum[:, -1])[:, None]).sum(dim=-1)
    last_nonzero = vocab - 1 - (w > 0).flip(-1).to(torch.uint8).argmax(dim=-1)
    return torch.where(tokens >= vocab, last_nonzero, tokens)


def torch_roar_select(
    target_mask: torch.Tensor,
    count: int,
    seed: int,
    step: int,
    object_ids: torch.Tensor,
    sample_ids: torch.Tensor,
) -> torch.Tensor:
    """Reference reveal permutation: ``(R, count)`` int64, the first ``count`` positions of each row's random order
    among those still unknown in the ``(R, L)`` bool ``target_mask`` (True = already revealed)."""
    rows, length = target_mask.shape
    positions = torch.arange(length, device=target_mask.device).expand(rows, -1)
    keys = _chain_blocks(seed, step, object_ids, sample_ids, positions)
    keys = ((keys[..., 0] >> 1) << 32) | keys[..., 1]
    by_key = torch.sort(keys, dim=-1, stable=True).indices  # ties keep position order
    known_first_last = torch.sort(target_mask.gather(-1, by_key).to(torch.uint8), dim=-1, stable=True).indices
    return by_key.gather(-1, known_first_last)[:, :count]


def torch_roar_step(
    logits: torch.Tensor,
    positions: torch.Tensor,
    tokens: torch.Tensor,
    input_mask: torch.Tensor,
    target_mask: torch.Tensor,
    object_ids: torch.Tensor,
    sample_ids: torch.Tensor,
    seed: int,
    step: int,
    next_step: int,
    next_count: int,
    temperature: float,
    top_k: int = 0,
    top_p: float = 0.0,
) -> torch.Tensor:
    """Reference ROAR step (arguments as :func:`roar_step`); updates the state tensors in place."""
    rows, slots = positions.shape
    if slots:
        group = rows // logits.shape[0]
        flat_logits = logits.repeat_interleave(group, dim=0).reshape(rows * slots, -1)
        uniforms = _uniform53(_chain_blocks(seed, step, object_ids, sample_ids, positions)).reshape(-1)
        sampled = torch_roar_sample(flat_logits, uniforms, temperature, top_k, top_p).reshape(rows, slots)
        tokens.scatter_(1, positions, sampled)
        input_mask.scatter_(1, positions, False)
        target_mask.scatter_(1, positions, True)
    return torch_roar_select(target_mask, next_count, seed, next_step, object_ids, sample_ids)


# ---- Compiled paths (aion_fast._C) -----------------------------------------------------------------------------------


def _cpp_roar_step(logits, positions, tokens, input_mask, target_mask, object_ids, sample_ids, seed, step,
                   next_step, next_count, temperature, top_k, top_p) -> torch.Tensor:  # fmt: skip
    ext = dispatch.load_extension()
    rows = positions.shape[0]
    if logits.shape[0] != rows:  # logits shared by groups of consecutive chains: the kernel reads one row per chain
        logits = logits.repeat_interleave(rows // logits.shape[0], dim=0)
    next_positions = torch.empty((rows, next_count), dtype=torch.int64)
    bad = ext.roar_step(
        logits.contiguous().numpy(), positions.contiguous().numpy(), tokens.numpy(), input_mask.numpy(),
        target_mask.numpy(), object_ids.contiguous().numpy(), sample_ids.contiguous().numpy(), next_positions.numpy(),
        seed, step, next_step, temperature, top_k, top_p,
    )  # fmt: skip
    if bad:
        raise ValueError(
            f"roar_step: {bad} logit rows hold NaN/+inf or only -inf; check the model's outputs (e.g. a NaN weight)"
        )
    return next_positions


#: Bytes of device scratch one CUDA step may hold at once (the launches reuse it chunk after chunk).
CUDA_SCRATCH_BYTES = 256 << 20


def cuda_scratch_plan(
    samples: int, rows: int, vocab: int, length: int, budget: int | None = None
) -> tuple[int, int, int]:
    """(bytes, sample_chunk, row_chunk) of the CUDA step's scratch: 20 * V bytes per sample, 12 * L per row.

    Chunks are as large as ``budget`` (default :data:`CUDA_SCRATCH_BYTES`) allows, at least one sample / row (so a
    vocabulary above ``budget / 20`` still runs, one sample per launch), and no larger than the work.
    """
    budget = CUDA_SCRATCH_BYTES if budget is None else budget
    sample_chunk = max(1, min(samples, budget // (20 * vocab)))
    row_chunk = max(1, min(rows, budget // (12 * length)))
    return max(sample_chunk * 20 * vocab, row_chunk * 12 * length, 8), sample_chunk, row_chunk


def _cuda_roar_step(logits, positions, tokens, input_mask, target_mask, object_ids, sample_ids, seed, step,
                    next_step, next_count, temperature, top_k, top_p) -> torch.Tensor:  # fmt: skip
    ext = dispatch.load_extension()
    device = tokens.device
    rows = positions.shape[0]
    if logits.shape[0] != rows:
        logits = logits.repeat_interleave(rows // logits.shape[0], dim=0)
    logits, positions = logits.contiguous(), positions.contiguous()
    object_ids, sample_ids = object_ids.contiguous(), sample_ids.contiguous()
    vocab, length = logits.shape[-1], tokens.shape[1]
    nbytes, sample_chunk, row_chunk = cuda_scratch_plan(rows * positions.shape[1], rows, vocab, length)
    with torch.cuda.device(device):  # the kernels launch on the tensors' device, whatever the current one
        # Scratch from PyTorch's caching allocator on the stream the kernels run on: freed (for reuse on that
        # stream) when this function returns, without waiting for the kernels.
        scratch = torch.empty(nbytes, dtype=torch.uint8, device=device)
        next_positions = torch.empty((rows, next_count), dtype=torch.int64, device=device)
        bad = torch.zeros(1, dtype=torch.int64, device=device)
        ext.roar_step_cuda(
            logits.data_ptr(), positions.data_ptr(), tokens.data_ptr(), input_mask.data_ptr(), target_mask.data_ptr(),
            object_ids.data_ptr(), sample_ids.data_ptr(), next_positions.data_ptr(), bad.data_ptr(), rows,
            positions.shape[1], vocab, length, next_count, seed, step, next_step, temperature, top_k, top_p,
            scratch.data_ptr(), nbytes, sample_chunk, row_chunk, torch.cuda.current_stream(device).cuda_stream,
        )  # fmt: skip
    n_bad = int(bad)  # the op's one host sync: invalid logits must raise before the step's tokens are used
    if n_bad:
        raise ValueError(f"roar_step: {n_bad} logit rows hold NaN/+inf or only -inf; check the model's outputs")
    return next_positions


def _cpp_reasons(logits: torch.Tensor, *_: object) -> list[str]:
    """Why ``aion_fast._C`` cannot run this step: CPU tensors need the extension, CUDA tensors its CUDA kernel."""
    if logits.device.type not in ("cpu", "cuda"):
        return [f"tensor on {logits.device.type}; the extension has CPU and CUDA kernels only"]
    ext = dispatch.load_extension()
    if ext is None:
        return [f"the C++ extension is not available ({dispatch.extension_error()})"]
    if not hasattr(ext, "roar_step"):
        return ["aion_fast._C was built before the ROAR op existed; rebuild it"]
    if logits.device.type == "cuda" and not ext.roar_has_cuda():
        return ["aion_fast._C was built without CUDA sources (no nvcc at build time)"]
    return []


def _run_ext_impl(logits, positions, tokens, input_mask, target_mask, object_ids, sample_ids, seed, step, next_step,
                  next_count, temperature, top_k, top_p) -> torch.Tensor:  # fmt: skip
    kernel = _cuda_roar_step if logits.device.type == "cuda" else _cpp_roar_step
    return kernel(logits, positions, tokens, input_mask, target_mask, object_ids, sample_ids, seed % 2**64, step,
                  next_step, next_count, temperature, top_k, top_p)  # fmt: skip


# Registered so torch.compile can trace a generation step; eager calls skip the registration (its first call imports
# torch._dynamo, which is slow), as in aion_fast/ops/fsq.py. The schema's ints are int64: seeds >= 2^63 travel as their
# two's-complement value and are taken modulo 2^64 again inside.
@torch.library.custom_op(
    "aion_fast::roar_step_ext", mutates_args=("tokens", "input_mask", "target_mask"), device_types=("cpu", "cuda")
)
def _roar_step_ext(
    logits: torch.Tensor,
    positions: torch.Tensor,
    tokens: torch.Tensor,
    input_mask: torch.Tensor,
    target_mask: torch.Tensor,
    object_ids: torch.Tensor,
    sample_ids: torch.Tensor,
    seed: int,
    step: int,
    next_step: int,
    next_count: int,
    temperature: float,
    top_k: int,
    top_p: float,
) -> torch.Tensor:
    return _run_ext_impl(logits, positions, tokens, input_mask, target_mask, object_ids, sample_ids, seed, step,
                         next_step, next_count, temperature, top_k, top_p)  # fmt: skip


@_roar_step_ext.register_fake
def _(logits, positions, tokens, input_mask, target_mask, object_ids, sample_ids, seed, step, next_step, next_count,
      temperature, top_k, top_p) -> torch.Tensor:  # fmt: skip
    return positions.new_empty((positions.shape[0], next_count))


def _run_cpp(logits: torch.Tensor, *args: object) -> torch.Tensor:
    if torch.compiler.is_compiling():
        positions, tokens, input_mask, target_mask, object_ids, sample_ids, seed, *rest = args
        signed_seed = seed - 2**64 if seed >= 2**63 else seed
        return _roar_step_ext(
            logits, positions, tokens, input_mask, target_mask, object_ids, sample_ids, signed_seed, *rest
        )
    return _run_ext_impl(logits, *args)


_STEP_BACKENDS = (
    Backend("triton", dispatch.triton_kernel_missing, dispatch.no_kernel),
    Backend("cpp", _cpp_reasons, _run_cpp),
    Backend("torch", dispatch.no_reasons, torch_roar_step),
)


def _check_state(name: str, tensor: torch.Tensor, dtype: torch.dtype, shape: tuple[int, ...], device) -> None:
    if not isinstance(tensor, torch.Tensor) or tensor.dtype != dtype or tuple(tensor.shape) != shape:
        got = f"{tensor.dtype} {tuple(tensor.shape)}" if isinstance(tensor, torch.Tensor) else type(tensor).__name__
        raise ValueError(f"roar_step: {name} must be a {dtype} tensor of shape {shape}, got {got}")
    if tensor.device != device:
        raise ValueError(f"roar_step: {name} is on {tensor.device} but logits are on {device}; move it there")


def roar_step(
    logits: torch.Tensor,
    positions: torch.Tensor,
    tokens: torch.Tensor,
    input_mask: torch.Tensor,
    target_mask: torch.Tensor,
    object_ids: torch.Tensor,
    sample_ids: torch.Tensor,
    *,
    seed: int,
    step: int,
    next_step: int,
    next_count: int,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 0.0,
) -> torch.Tensor:
    """One fused ROAR step: sample and reveal ``positions``, then draw the next step's positions.

    The state tensors ``tokens``, ``input_mask`` and ``target_mask`` belong to the generation loop and are updated
    in place (they must be contiguous); every other argument is read only.

    Args:
        logits: ``(G, N, V)`` float32 decoder logits of the ``N`` query slots, ``G`` dividing ``R``: chain ``r``
            reads ``logits[r // (R // G)]`` (``G = R`` is one row per chain; ``G < R`` shares the logits of
            consecutive chains, e.g. every sample of an object before anything is revealed). ``N`` may be 0.
        positions: ``(R, N)`` int64 target position of each slot; distinct and still unknown in their row.
        tokens: ``(R, L)`` int64 target tokens (revealed ones are written).
        input_mask: ``(R, L)`` bool, True where the target token is not yet an input.
        target_mask: ``(R, L)`` bool, True where the position is no longer a target.
        object_ids: ``(R,)`` int64 object identifier of each chain (any 64-bit value).
        sample_ids: ``(R,)`` int64 draw index of each chain, in [0, 2^32).
        seed: Generator key, in [0, 2^64).
        step: Index of this step (keys the uniforms of its tokens), in [0, 65536).
        next_step: Index of the next step (keys its permutation), in [0, 65536).
        next_count: Positions to choose for the next step (0 after the last step).
        temperature: ``>= 0``; 0 is greedy (argmax).
        top_k: Keep the ``top_k`` largest logits; 0 is off.
        top_p: Nucleus mass in [0, 1]; 0 (or 1) is off.

    Returns:
        ``(R, next_count)`` int64 positions of the next step.

    Raises:
        ValueError: Shapes, dtypes or ranges above are violated (the message names the argument), or logits hold
            NaN/+inf or only -inf.
        BackendUnavailableError: ``AION_FAST_BACKEND`` forces a backend that cannot run this call.
    """
    if not isinstance(logits, torch.Tensor) or logits.ndim != 3 or logits.dtype != torch.float32:
        raise ValueError("roar_step: logits must be a float32 tensor of shape (G, N, V); cast with .float()")
    if tokens.ndim != 2:
        raise ValueError(f"roar_step: tokens must have shape (R, L), got {tuple(tokens.shape)}")
    rows, length = tokens.shape
    slots = logits.shape[1]
    device = logits.device
    if logits.shape[0] < 1 or rows % logits.shape[0]:
        raise ValueError(f"roar_step: logits has {logits.shape[0]} rows, which must divide the R = {rows} chains")
    _check_state("positions", positions, torch.int64, (rows, slots), device)
    _check_state("tokens", tokens, torch.int64, (rows, length), device)
    _check_state("input_mask", input_mask, torch.bool, (rows, length), device)
    _check_state("target_mask", target_mask, torch.bool, (rows, length), device)
    _check_state("object_ids", object_ids, torch.int64, (rows,), device)
    _check_state("sample_ids", sample_ids, torch.int64, (rows,), device)
    for name, state in (("tokens", tokens), ("input_mask", input_mask), ("target_mask", target_mask)):
        if not state.is_contiguous():
            raise ValueError(f"roar_step: {name} is updated in place and must be contiguous; pass .contiguous()")
    if not 1 <= length <= MAX_POSITIONS:
        raise ValueError(f"roar_step: tokens has L = {length} positions; must lie in [1, {MAX_POSITIONS}]")
    if not (0 <= step < MAX_STEPS and 0 <= next_step < MAX_STEPS):
        raise ValueError(f"roar_step: step={step} and next_step={next_step} must lie in [0, {MAX_STEPS})")
    if not 0 <= int(seed) < 2**64:
        raise ValueError(f"roar_step: seed={seed} must lie in [0, 2^64)")
    if not temperature >= 0:
        raise ValueError(f"roar_step: temperature={temperature} must be >= 0 (0 = greedy)")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
        raise ValueError(f"roar_step: top_k={top_k!r} must be an integer >= 0 (0 = off)")
    if not 0.0 <= top_p <= 1.0:
        raise ValueError(f"roar_step: top_p={top_p} must lie in [0, 1] (0 = off)")
    if not torch.compiler.is_compiling():  # value checks read tensor data: eager only (compiled code traces)
        if sample_ids.numel() and (int(sample_ids.min()) < 0 or int(sample_ids.max()) >= 2**32):
            raise ValueError("roar_step: sample_ids must lie in [0, 2^32)")
        if slots:
            if int(positions.min()) < 0 or int(positions.max()) >= length:
                raise ValueError(f"roar_step: positions must lie in [0, L = {length})")
            sorted_positions = positions.sort(dim=-1).values
            if bool((sorted_positions[:, 1:] == sorted_positions[:, :-1]).any()) or bool(
                target_mask.gather(1, positions).any()
            ):
                raise ValueError("roar_step: positions must be distinct and still unknown (target_mask False) per row")
        unknown_after = length - slots - int(target_mask.sum(dim=-1).max()) if rows else 0
        if next_count < 0 or (rows and next_count > unknown_after):
            raise ValueError(
                f"roar_step: next_count={next_count} must lie in [0, {unknown_after}] (positions still unknown after "
                "this step)"
            )
    backend = dispatch.select("roar_step", _STEP_BACKENDS, logits)
    return backend.run(
        logits.detach(), positions, tokens, input_mask, target_mask, object_ids, sample_ids, int(seed), step,
        next_step, next_count, float(temperature), top_k, float(top_p),
    )  # fmt: skip
