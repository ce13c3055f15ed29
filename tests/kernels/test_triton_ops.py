"""The preprocessing/postprocessing launchers registered with ``torch.library.triton_op`` (what torch.compile traces).

Each registered op runs the same kernel as its eager launcher, so their outputs are equal bit for bit (on CUDA, or
under ``TRITON_INTERPRET=1`` on CPU tensors). On CUDA, a ``torch.compile``-d call of the public ops (forced to
Triton, ``fullgraph=True``) traces through the registrations and gives the eager result. That test cannot run under
the interpreter: there ``torch.library.wrap_triton`` hands back the interpreted kernel, which would launch on
torch.compile's fake tensors.
"""

from __future__ import annotations

import pytest
import torch

from aion_fast.ops.image_postprocess import _project
from aion_fast.ops.spectrum_to_latent import _istd, latent_wavelength
from tests.ops.test_image_postprocess import decoder_output, projection
from tests.ops.test_image_preprocess import realistic_images, survey_args
from tests.ops.test_spectrum_to_latent import spectra

OP_NAMES = (
    "image_preprocess_triton",
    "image_postprocess_triton",
    "spectrum_to_latent_triton",
    "spectrum_to_observed_triton",
)


def _equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.equal(torch.nan_to_num(a.cpu()), torch.nan_to_num(b.cpu())) and torch.equal(a.isnan(), b.isnan())


def test_every_launcher_is_a_registered_triton_op(device):
    import aion_fast.kernels.image_postprocess  # noqa: F401  (registration happens at import)
    import aion_fast.kernels.image_preprocess  # noqa: F401
    import aion_fast.kernels.spectrum_to_latent  # noqa: F401
    import aion_fast.kernels.spectrum_to_observed  # noqa: F401

    for name in OP_NAMES:
        assert hasattr(torch.ops.aion_fast, name), name


def test_image_ops_equal_their_eager_launchers(device):
    from aion_fast.kernels.image_postprocess import image_postprocess_fwd, image_postprocess_op
    from aion_fast.kernels.image_preprocess import image_preprocess_fwd, image_preprocess_op

    args = survey_args("HSC")
    flux = realistic_images(2, len(args["channels"]), 41, 40, seed=3).to(device)
    flux[1, 2, 20, 20] = float("inf")
    call = (args["channels"], args["clamp_max"], args["zeropoint_scale"], 0.01, 10.0, 32, 9)
    for got, want in zip(image_preprocess_op(flux, *call), image_preprocess_fwd(flux, *call), strict=True):
        assert _equal(got, want)
    assert int(image_preprocess_op(flux, *call)[1].sum()) == 1
    weight, bias = projection()
    projected = _project(decoder_output(2, 12, 10, seed=1), weight).contiguous().to(device)
    channels = [8, 4, 5]
    assert _equal(
        image_postprocess_op(projected, bias.to(device), channels, 63.0957, 0.01, 10.0),
        image_postprocess_fwd(projected, bias.to(device), channels, 63.0957, 0.01, 10.0),
    )


def test_spectrum_ops_equal_their_eager_launchers(device):
    from aion_fast.kernels.spectrum_to_latent import spectrum_to_latent_fwd, spectrum_to_latent_op
    from aion_fast.kernels.spectrum_to_observed import spectrum_to_observed_fwd, spectrum_to_observed_op

    grid = latent_wavelength(3500.0, 0.8, 1500).to(device)
    s = {k: v.to(device) for k, v in spectra(2, 900, 3400.0, 1.3, seed=5).items()}
    for clip in (None, 5.0):
        call = (s["flux"], _istd(s["ivar"], 100.0), s["wavelength"], s["scale"], grid, 0.2, clip)
        assert _equal(spectrum_to_latent_op(*call), spectrum_to_latent_fwd(*call))
    values = torch.randn(2, 2, 1500, generator=torch.Generator().manual_seed(0)).to(device)
    wavelength = (3600.0 + 0.7 * torch.arange(1000, dtype=torch.float32)).expand(2, 1000).to(device)
    scale = torch.tensor([0.5, 2.0], device=device)
    for w, n, k in ((wavelength, scale, 2), (None, None, 2), (wavelength, None, 1)):
        got = spectrum_to_observed_op(values[:, :k], grid, w, n)
        want = spectrum_to_observed_fwd(values[:, :k], grid, w, n)
        assert all(_equal(a, b) for a, b in zip(got, want, strict=True))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (see the module docstring)")
def test_compiled_ops_trace_the_triton_registrations(monkeypatch):
    """fullgraph=True: the registered ops (not the eager launchers, which torch.compile cannot see) are traced."""
    from aion_fast import dispatch
    from aion_fast.ops import image_postprocess, image_preprocess, spectrum_to_latent, spectrum_to_observed

    monkeypatch.setenv("AION_FAST_BACKEND", "triton")
    dispatch.clear_choices()
    torch._dynamo.reset()
    forced = "cuda"
    args = survey_args("DES")
    flux = realistic_images(2, len(args["channels"]), 40, 40, seed=7).to(forced)
    weight, bias = projection()
    h = decoder_output(2, 16, 16, seed=2).to(forced)
    s = {k: v.to(forced) for k, v in spectra(2, 700, 3400.0, 1.3, seed=2).items()}
    grid = latent_wavelength(3500.0, 0.8, 1200).to(forced)

    def run(flux, h, sf, si, sw, ss):
        pre = image_preprocess(flux, args["channels"], args["clamp_max"], args["zeropoint_scale"], crop_size=32)
        post = image_postprocess(h, weight.to(forced), bias.to(forced), [0, 1, 2, 3], 1.0)
        latent = spectrum_to_latent(sf, si, sw, ss, grid)
        observed = spectrum_to_observed(latent, grid, sw, ss)
        return pre, post, latent, *observed

    eager = run(flux, h, s["flux"], s["ivar"], s["wavelength"], s["scale"])
    compiled = torch.compile(run, fullgraph=True)(flux, h, s["flux"], s["ivar"], s["wavelength"],
                                                                   s["scale"])  # fmt: skip
    dispatch.clear_choices()
    for got, want in zip(compiled, eager, strict=True):
        assert _equal(got, want)
