"""Numerical precision of inference: one validated parameter for the codecs, the transformer and the encoding job.

* ``fp32``: today's exact path, the default everywhere. Float32 throughout; on CUDA also without TF32 (cuDNN
  convolutions default to TF32, which would change tokens), so tokens equal the reference's on the same device.
* ``bf16``: the codec networks and the transformer run under ``torch.autocast(dtype=bfloat16)`` (matrix products
  and convolutions in bf16 with fp32 accumulation; norms and softmax as autocast decides). Quantization stays in
  float32 whatever autocast says (:mod:`aion_fast.ops` disables autocast around it), so bf16 changes tokens only
  where the bf16 network moves a latent across a decision boundary. Measured agreement: bench/RESULTS.md.
* ``fast``: float32 arithmetic, but the codec networks leave the reference's kernel choices where another one is
  faster: pre-packed oneDNN weights, layouts kept channels-last, fused activations and residual updates, GEMMs
  in place of degenerate convolutions (:mod:`aion_fast.codecs.nn.fast`). Roundings differ from the exact path's,
  so a few tokens may flip where a latent sits on a decision boundary; on CUDA it also allows TF32. Quantization
  stays float32 and exact. Measured agreement and speed: bench/RESULTS.md.

The default stays ``fp32`` (README, "Precision").
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Mapping

import torch

__all__ = ["DEFAULT_PRECISION", "PRECISIONS", "embedding_cosine", "fast_path_enabled", "precision_context",
           "resolve_precision", "token_agreement"]  # fmt: skip

#: Accepted values, in the order of the CLI's help.
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "fast")
DEFAULT_PRECISION = "fp32"

# Set by precision_context("fast"); a context variable, so threads and concurrent tasks each see their own setting.
_FAST_PATH = contextvars.ContextVar("aion_fast_fast_path", default=False)


def fast_path_enabled() -> bool:
    """Whether the code running now is inside ``precision_context("fast", ...)`` (read by the codec networks)."""
    return _FAST_PATH.get()


def resolve_precision(precision: str | None, device: torch.device | str | None = None, what: str = "precision") -> str:
    """Validates a precision value; None gives the default for ``device`` (``fp32`` on every device today).

    Args:
        precision: ``"fp32"``, ``"bf16"``, ``"fast"`` (any case) or None.
        device: where the work runs (decides the default).
        what: the argument's name in the error message (e.g. ``--precision``).

    Raises:
        ValueError: any other value, naming the accepted ones.
    """
    if precision is None:
        return DEFAULT_PRECISION
    value = str(precision).strip().lower()
    aliases = {"float32": "fp32", "bfloat16": "bf16"}
    value = aliases.get(value, value)
    if value not in PRECISIONS:
        raise ValueError(f"{what}={precision!r}: expected one of {', '.join(PRECISIONS)} (fp32 is the exact path)")
    return value


@contextlib.contextmanager
def precision_context(precision: str, device: torch.device | str) -> Iterator[None]:
    """The context a network runs in at ``precision`` on ``device`` (a validated value, see :func:`resolve_precision`).

    ``bf16``: autocast to bfloat16 on the device. ``fp32``: autocast off, and on CUDA no TF32 in matrix products or
    cuDNN convolutions (restored on exit). ``fast``: autocast off, the codec networks' fast path on
    (:func:`fast_path_enabled`), and on CUDA the process's TF32 settings left as they are.
    """
    device = torch.device(device)
    if precision == "bf16":
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            yield
        return
    if precision == "fast":
        token = _FAST_PATH.set(True)
        try:
            with contextlib.ExitStack() as stack:
                if device.type in ("cpu", "cuda") and torch.is_autocast_enabled(device.type):
                    stack.enter_context(torch.autocast(device_type=device.type, enabled=False))
                yield
        finally:
            _FAST_PATH.reset(token)
        return
    if precision != "fp32":
        raise ValueError(f"precision={precision!r}: expected one of {', '.join(PRECISIONS)}")
    token = _FAST_PATH.set(False)  # an exact section inside a fast one (e.g. the job's comparison pass) is exact
    with contextlib.ExitStack() as stack:
        stack.callback(_FAST_PATH.reset, token)
        if device.type in ("cpu", "cuda") and torch.is_autocast_enabled(device.type):
            stack.enter_context(torch.autocast(device_type=device.type, enabled=False))
        if device.type == "cuda":  # process-wide flags, restored on exit (cuDNN convolutions default to TF32)
            for owner in (torch.backends.cudnn, torch.backends.cuda.matmul):
                if owner.allow_tf32:
                    owner.allow_tf32 = False
                    stack.callback(setattr, owner, "allow_tf32", True)
        yield


def token_agreement(ours: Mapping[str, torch.Tensor], ref: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """Fraction of equal token ids per token key present in both (keys of different shapes raise ValueError)."""
    out = {}
    for key in sorted(set(ours) & set(ref)):
        a, b = ours[key].cpu(), ref[key].cpu()
        if a.shape != b.shape:
            raise ValueError(f"token_agreement: {key} has shapes {tuple(a.shape)} and {tuple(b.shape)}")
        out[key] = float((a == b).float().mean()) if a.numel() else 1.0
    return out


def embedding_cosine(ours: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
    """Cosine similarity of matching ``(B, D)`` embedding rows: ``{"min", "mean"}`` (computed in float64)."""
    if ours.shape != ref.shape:
        raise ValueError(f"embedding_cosine: shapes {tuple(ours.shape)} and {tuple(ref.shape)} differ")
    cos = torch.nn.functional.cosine_similarity(ours.double().cpu(), ref.double().cpu(), dim=-1)
    return {"min": float(cos.min()), "mean": float(cos.mean())}
