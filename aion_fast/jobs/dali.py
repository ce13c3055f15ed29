r"""``--loader dali``: image crop and preprocessing in an NVIDIA DALI pipeline (on the GPU when one is present).

The HDF5 rows are read and checked by :func:`~aion_fast.data.mmu.prepare_rows` as in the default loader (band
order, masks, NaN at bad pixels set to 0, all on host views of the central window). The image stamps of one survey
then go through one DALI pipeline (``fn.external_source``) that does every step of the image codec's preprocessing
(:func:`aion_fast.ops.image_preprocess`), each as one float32 DALI operation in the codec's order:

1. ``fn.slice``: the central 96x96 window (:func:`~aion_fast.data.mmu.crop_window`);
2. per-band clip ``min(max(x, -m_b), m_b)`` (``dali.math.max`` / ``min`` with a (C, 1, 1) constant);
3. HSC zero-point rescale ``x / s`` (Legacy Survey: none);
4. range compression ``((asinh(x / alpha)) * alpha) * kappa`` (``dali.math.asinh``);
5. placement of the C bands in the 9-band layout (``fn.cat`` of band slices and zero planes, absent bands 0) and
   ``fn.transpose`` to channels last.

The outputs, the cropped flux (n, C, 96, 96) and the codec input (n, 96, 96, 9), equal the default loader's crop
and ``image_preprocess`` of it bit for bit (tested in DALI's CPU mode); the job then enters the image codec after
its preprocessing (:meth:`aion_fast.codecs.image.ImageCodec.encode_preprocessed`). Spectra and scalars are read as in
the default loader. DALI is imported only here; without ``nvidia-dali`` the loader raises a ``ValueError`` saying
how to install it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from aion_fast.codecs.preprocessing import CROP_SIZE, zeropoint_scale
from aion_fast.data.mmu import crop_window
from aion_fast.modalities import BAND_CLAMP_MAX, BAND_TO_INDEX

__all__ = ["DaliImagePipeline", "dali_available"]

#: Channels of the image codec's multi-survey layout.
_NUM_BANDS = max(BAND_TO_INDEX.values()) + 1


def dali_available() -> bool:
    """True when ``nvidia.dali`` can be imported."""
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        return False
    return True


class DaliImagePipeline:
    """Crop and preprocessing of image stamps with DALI (see the module docstring).

    Args:
        batch_size: the largest number of stamps per DALI run (more are split).
        device: ``"cuda..."`` runs the operators on that GPU and returns CUDA tensors; anything else runs DALI's CPU
            operators (``device_id=None``) and returns CPU tensors.
        num_threads: DALI CPU threads.
        range_compression_factor: :math:`\\alpha` of the arcsinh compression (the image codec's).
        mult_factor: :math:`\\kappa` (the image codec's).

    Attributes:
        factors: ``(range_compression_factor, mult_factor)``; the job uses the outputs only with a codec that has
            the same ones (else the codec preprocesses the cropped flux itself).
    """

    def __init__(self, batch_size: int, device: str = "cpu", num_threads: int = 2,
                 range_compression_factor: float = 0.01, mult_factor: float = 10.0):  # fmt: skip
        if not dali_available():
            raise ValueError(
                "--loader dali needs NVIDIA DALI: pip install nvidia-dali-cuda130 (or nvidia-dali-cuda120 for CUDA "
                "12); or use --loader torch."
            )
        self.gpu = torch.device(device).type == "cuda"
        self.device_id = (torch.device(device).index or 0) if self.gpu else None
        self.batch_size = int(batch_size)
        self.num_threads = num_threads
        self.factors = (float(range_compression_factor), float(mult_factor))
        self._pipes: dict[tuple, object] = {}

    def _pipeline(self, height: int, width: int, bands: tuple[str, ...]):
        import nvidia.dali.math as dmath
        from nvidia.dali import fn, pipeline_def, types

        top, left = crop_window(height, width)
        bounds = np.array([BAND_CLAMP_MAX[b] for b in bands], dtype=np.float32).reshape(-1, 1, 1)
        channels = [BAND_TO_INDEX[b] for b in bands]
        scale = zeropoint_scale(bands[0].split("-")[0])
        alpha, kappa = (np.float32(f) for f in self.factors)

        @pipeline_def(batch_size=self.batch_size, num_threads=self.num_threads, device_id=self.device_id,
                      exec_async=False, exec_pipelined=False, prefetch_queue_depth=1)  # fmt: skip
        def preprocess_pipeline():
            x = fn.external_source(name="flux", layout="CHW", dtype=types.FLOAT)
            if self.gpu:
                x = x.gpu()
            cropped = fn.slice(x, start=[top, left], shape=[CROP_SIZE, CROP_SIZE], axis_names="HW")
            limit = types.Constant(bounds)
            y = dmath.min(dmath.max(cropped, -limit), limit)
            if scale != 1.0:
                y = y / types.Constant(np.float32(scale))
            y = dmath.asinh(y / types.Constant(alpha)) * types.Constant(alpha) * types.Constant(kappa)
            planes = []
            for channel in range(_NUM_BANDS):
                if channel in channels:
                    band = channels.index(channel)
                    planes.append(y[band : band + 1])
                else:
                    zero = fn.constant(fdata=0.0, shape=[1, CROP_SIZE, CROP_SIZE], dtype=types.FLOAT)
                    planes.append(zero.gpu() if self.gpu else zero)
            placed = fn.transpose(fn.cat(*planes, axis=0), perm=[1, 2, 0])
            return cropped, placed

        pipe = preprocess_pipeline()
        pipe.build()
        return pipe

    def _to_torch(self, outputs) -> torch.Tensor:
        dense = outputs.as_tensor()
        if not self.gpu:
            return torch.from_numpy(np.array(dense))
        from nvidia.dali.plugin.pytorch import feed_ndarray

        out = torch.empty(tuple(dense.shape()), dtype=torch.float32, device=torch.device("cuda", self.device_id))
        feed_ndarray(dense, out, cuda_stream=torch.cuda.current_stream(self.device_id))
        return out

    def __call__(self, stamps: Sequence[np.ndarray], bands: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Crops and preprocesses one survey's stamps.

        Args:
            stamps: n arrays (C, H, W) float32, channels in the codec's band order, finite (bad pixels cleaned).
            bands: the C band names (one survey's, codec order), e.g. ``["DES-G", "DES-R", "DES-I", "DES-Z"]``.

        Returns:
            ``cropped``: (n, C, 96, 96) float32; ``preprocessed``: (n, 96, 96, 9) float32 image-codec input.
            CUDA tensors when the pipeline runs on a GPU.
        """
        if not stamps:
            raise ValueError("DaliImagePipeline: no stamps given; call it with at least one (C, H, W) image.")
        shape = stamps[0].shape
        if len(shape) != 3 or shape[0] != len(bands) or any(s.shape != shape for s in stamps):
            raise ValueError(
                f"DaliImagePipeline: stamps must share one (C, H, W) shape with C = {len(bands)} bands, got "
                f"{sorted({tuple(s.shape) for s in stamps})}; split them by survey and stamp size."
            )
        key = (*shape[1:], tuple(bands))
        if key not in self._pipes:
            self._pipes[key] = self._pipeline(shape[1], shape[2], tuple(bands))
        pipe = self._pipes[key]
        cropped, preprocessed = [], []
        for start in range(0, len(stamps), self.batch_size):
            chunk = stamps[start : start + self.batch_size]
            pipe.feed_input("flux", [np.ascontiguousarray(s, dtype=np.float32) for s in chunk])
            crop_out, placed_out = pipe.run()
            cropped.append(self._to_torch(crop_out))
            preprocessed.append(self._to_torch(placed_out))
        return torch.cat(cropped), torch.cat(preprocessed)
