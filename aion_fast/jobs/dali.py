"""``--loader dali``: the central image crop done by an NVIDIA DALI pipeline (on the GPU when one is present).

The HDF5 rows are read by :func:`~aion_fast.data.mmu.prepare_rows` as in the default loader; the image stamps and
their good-pixel masks are fed to a DALI pipeline through ``fn.external_source`` and cut with ``fn.slice`` at the
window :func:`~aion_fast.data.mmu.crop_window` gives, so the preprocessed tensors equal the default loader's
(``numpy_crop``) exactly. DALI is imported only here; without ``nvidia-dali`` the loader raises a ``ValueError``
saying how to install it.
"""

from __future__ import annotations

import numpy as np

from aion_fast.codecs.preprocessing import CROP_SIZE
from aion_fast.data.mmu import crop_window

__all__ = ["DaliCropper", "dali_available"]


def dali_available() -> bool:
    """True when ``nvidia.dali`` can be imported."""
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        return False
    return True


class DaliCropper:
    """Central ``CROP_SIZE`` crop of image stamps and masks with a DALI pipeline.

    Args:
        batch_size: the largest number of stamps per call.
        device: ``"cuda..."`` runs the slice on the GPU (``device_id`` of that device); anything else runs DALI's
            CPU operators (``device_id=None``).
        num_threads: DALI CPU threads.
    """

    def __init__(self, batch_size: int, device: str = "cpu", num_threads: int = 2):
        if not dali_available():
            raise ValueError(
                "--loader dali needs NVIDIA DALI: pip install nvidia-dali-cuda130 (or nvidia-dali-cuda120 for CUDA "
                "12); or use --loader torch."
            )
        import torch

        self.gpu = torch.device(device).type == "cuda"
        self.device_id = (torch.device(device).index or 0) if self.gpu else None
        self.batch_size = int(batch_size)
        self.num_threads = num_threads
        self._pipes: dict[tuple[int, int], object] = {}

    def _pipeline(self, height: int, width: int):
        from nvidia.dali import fn, pipeline_def

        top, left = crop_window(height, width)

        @pipeline_def(batch_size=self.batch_size, num_threads=self.num_threads, device_id=self.device_id,
                      exec_async=False, exec_pipelined=False, prefetch_queue_depth=1)  # fmt: skip
        def crop_pipeline():
            flux = fn.external_source(name="flux", layout="CHW", dtype=None)
            good = fn.external_source(name="good", layout="CHW", dtype=None)
            if self.gpu:
                flux, good = flux.gpu(), good.gpu()
            window = {"start": [top, left], "shape": [CROP_SIZE, CROP_SIZE], "axis_names": "HW"}
            return fn.slice(flux, **window), fn.slice(good, **window)

        pipe = crop_pipeline()
        pipe.build()
        return pipe

    def __call__(self, flux: np.ndarray, good: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, C, H, W) float32 flux and (N, C or 1, H, W) bool good masks -> both cut to the central window."""
        key = flux.shape[2:]
        if key not in self._pipes:
            self._pipes[key] = self._pipeline(*key)
        pipe = self._pipes[key]
        flux_out, good_out = [], []
        for start in range(0, flux.shape[0], self.batch_size):
            stop = min(start + self.batch_size, flux.shape[0])
            pipe.feed_input("flux", [np.ascontiguousarray(f) for f in flux[start:stop]])
            pipe.feed_input("good", [np.ascontiguousarray(g).view(np.uint8) for g in good[start:stop]])
            cropped_flux, cropped_good = pipe.run()
            if self.gpu:
                cropped_flux, cropped_good = cropped_flux.as_cpu(), cropped_good.as_cpu()
            flux_out += [np.asarray(cropped_flux.at(i)) for i in range(stop - start)]
            good_out += [np.asarray(cropped_good.at(i)).view(bool) for i in range(stop - start)]
        return np.stack(flux_out), np.stack(good_out)
