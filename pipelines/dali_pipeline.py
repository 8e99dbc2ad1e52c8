"""The DALI graph that makes the teacher and student views from one decode.

One graph for both devices: with a GPU, decoding is ``mixed`` (nvJPEG) and every resize, crop and
normalisation that follows runs on the GPU because its input lives there; without one
(``device_id=None``) the same operators run on the CPU.

Why the graph looks the way it does (the CPU twin of this graph is resize-bound):
- the teacher view is one resize whose region of interest is the crop window, so only the 224x224
  pixels that survive the crop are ever computed at the 256 scale;
- a non-degraded student view *is* the teacher view (same crop, same grayscale draw);
- only the samples drawn for degradation pay for it, through DALI conditionals, and their
  up-sampling also writes only the crop window;
- on the CPU, batches are dealt in turn to several single-threaded pipelines (`DaliViews`).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator

import numpy as np
import torch

from .plans import MEAN_BGR, BatchPlan, ViewSettings  # noqa: F401 (MEAN_BGR: the default)

try:
    import nvidia.dali.math as dmath
    from nvidia.dali import fn, pipeline_def, types
    from nvidia.dali.plugin.pytorch import feed_ndarray

    DALI_AVAILABLE = True
except ImportError:  # pragma: no cover - exercised where DALI is not installed
    DALI_AVAILABLE = False

INTERP = {"linear": "INTERP_LINEAR", "cubic": "INTERP_CUBIC", "nearest": "INTERP_NN"}


def _round(x):
    return dmath.floor(x + 0.5)


def _plan_to_arrays(plans: Iterable[BatchPlan]) -> Iterator[tuple]:
    for plan in plans:
        yield (
            [np.fromfile(p, dtype=np.uint8) for p in plan.paths],
            plan.labels,
            plan.crop_x,
            plan.crop_y,
            plan.gray,
            plan.degrade,
            plan.resolution,
            plan.flip.astype(np.int32),
            plan.blur_sigma,
            plan.jpeg_quality.astype(np.int32),
            plan.noise_sigma,
            plan.noise_seed,
        )


def build_pipeline(
    plans: Iterable[BatchPlan],
    views: ViewSettings,
    batch_size: int,
    device_id: int | None,
    num_threads: int,
    seed: int,
    interpolation: str = "linear",
    prefetch: int = 2,
):
    """A built DALI pipeline that executes `plans` in order (an iterator, possibly endless)."""
    if not DALI_AVAILABLE:
        raise RuntimeError("nvidia-dali is not installed; use data.backend=torchvision")
    size, crop = float(views.resize_shorter), float(views.crop)
    interp = getattr(types, INTERP[interpolation])
    on_gpu = device_id is not None

    @pipeline_def(enable_conditionals=True)
    def views_graph():
        (
            encoded,
            labels,
            crop_x,
            crop_y,
            gray,
            degrade,
            resolution,
            flip,
            blur_sigma,
            jpeg_quality,
            noise_sigma,
            noise_seed,
        ) = fn.external_source(
            source=_plan_to_arrays(plans),
            num_outputs=12,
            batch=True,
            dtype=[
                types.UINT8,
                types.INT64,
                types.FLOAT,
                types.FLOAT,
                types.BOOL,
                types.BOOL,
                types.FLOAT,
                types.INT32,
                types.FLOAT,
                types.INT32,
                types.FLOAT,
                types.INT64,
            ],
        )
        order = types.RGB if views.channels == "RGB" else types.BGR
        image = fn.decoders.image(encoded, device="mixed" if on_gpu else "cpu", output_type=order)
        if gray:
            luma = fn.color_space_conversion(image, image_type=order, output_type=types.GRAY)
            image = fn.cat(luma, luma, luma, axis=2)
        # From the JPEG/PNG header, on the CPU whatever the device of the decoded image: the
        # geometry below feeds per-sample arguments, which DALI takes from the CPU only.
        shape = fn.peek_image_shape(encoded, dtype=types.FLOAT)
        height, width = shape[0], shape[1]
        shorter = dmath.min(height, width)
        # The image resized to shorter side `size`, in whole pixels, as the twin computes it.
        full_h, full_w = _round(height * size / shorter), _round(width * size / shorter)
        top = dmath.floor(crop_y * (full_h - crop))
        left = dmath.floor(crop_x * (full_w - crop))
        scale_y, scale_x = height / full_h, width / full_w
        teacher = fn.resize(
            image,
            size=[crop, crop],
            interp_type=interp,
            antialias=True,
            roi_relative=False,
            roi_start=fn.stack(top * scale_y, left * scale_x),
            roi_end=fn.stack((top + crop) * scale_y, (left + crop) * scale_x),
        )
        if degrade:
            # method.md: the whole shorter-side-`size` image is degraded, and only then is the
            # crop taken (pipelines/degradations.py gives the steps' order).
            full = fn.resize(
                image, size=fn.stack(full_h, full_w), interp_type=interp, antialias=True
            )
            small_h = dmath.max(_round(full_h * resolution / size), 1.0)
            small_w = dmath.max(_round(full_w * resolution / size), 1.0)
            up_y, up_x = small_h / full_h, small_w / full_w
            if (blur_sigma > 0) | (jpeg_quality > 0):
                # Later steps need the whole image back up before the crop.
                if resolution > 0:
                    small = fn.resize(
                        full, size=fn.stack(small_h, small_w), interp_type=interp, antialias=True
                    )
                    full = fn.resize(
                        small, size=fn.stack(full_h, full_w), interp_type=interp, antialias=True
                    )
                if blur_sigma > 0:
                    full = fn.gaussian_blur(full, sigma=blur_sigma)
                if jpeg_quality > 0:
                    full = fn.jpeg_compression_distortion(full, quality=jpeg_quality)
                student = fn.slice(
                    full,
                    start=fn.cast(fn.stack(top, left), dtype=types.INT32),
                    shape=[crop, crop],
                    axes=[0, 1],
                )
            else:
                # Down-sampling alone: the up-sampling writes the crop window only.
                small = fn.resize(
                    full, size=fn.stack(small_h, small_w), interp_type=interp, antialias=True
                )
                student = fn.resize(
                    small,
                    size=[crop, crop],
                    interp_type=interp,
                    antialias=True,
                    roi_relative=False,
                    roi_start=fn.stack(top * up_y, left * up_x),
                    roi_end=fn.stack((top + crop) * up_y, (left + crop) * up_x),
                )
        else:
            student = teacher
        normalize = dict(
            mean=list(views.mean),
            std=[1.0 / views.scale] * 3,
            output_layout="CHW",
            dtype=types.FLOAT,
            mirror=flip,
        )
        return (
            fn.crop_mirror_normalize(teacher, **normalize),
            fn.crop_mirror_normalize(student, **normalize),
            labels,
            resolution,
            noise_sigma,
            noise_seed,
        )

    pipe = views_graph(
        batch_size=batch_size,
        num_threads=num_threads,
        device_id=device_id,
        seed=seed,
        prefetch_queue_depth=prefetch,
        exec_dynamic=False,
    )
    pipe.build()
    return pipe


def deal(plans: Iterable[BatchPlan], n: int) -> list[Iterator[BatchPlan]]:
    """`n` iterators over one plan stream, dealt round-robin: the i-th yields plans i, i+n, ...
    All of them are pulled from the thread that runs the pipelines, so the shared buffer of
    `itertools.tee` needs no lock."""
    if n == 1:
        return [iter(plans)]
    copies = itertools.tee(plans, n)
    return [itertools.islice(copy, i, None, n) for i, copy in enumerate(copies)]


def default_pipeline_count(on_gpu: bool, num_threads: int) -> int:
    """On a GPU one pipeline per device does the work. On the CPU, `num_threads` single-threaded
    pipelines, each making whole batches (like DataLoader workers), keep every core busy: one
    pipeline with N threads splits each operator over the samples of a batch and waits at the
    end of every operator, and the few samples of a conditional branch leave threads idle
    (bench/pipeline.py, 2 cores: 1 pipeline x 2 threads about 1,090 images/s, 2 pipelines x 1
    thread about 1,250-1,300; 3, 4 or 6 pipelines are no better)."""
    return 1 if on_gpu else max(1, num_threads)


class DaliViews:
    """Iterates DALI batches as torch tensors on `device` (copied out of DALI's buffers, which
    are recycled by the prefetch queue). Batch k comes from pipeline k mod P, so the order of the
    plans, and with it every result, does not depend on the number of pipelines P."""

    def __init__(
        self,
        plans: Iterable[BatchPlan],
        views: ViewSettings,
        batch_size: int,
        device: torch.device,
        num_threads: int,
        seed: int,
        interpolation: str = "linear",
        pipelines: int = 0,
    ):
        device_id = device.index if device.type == "cuda" else None
        if device.type == "cuda" and device_id is None:
            device_id = torch.cuda.current_device()
        on_gpu = device_id is not None
        count = pipelines or default_pipeline_count(on_gpu, num_threads)
        # The CPU threads are shared out among the pipelines; on a GPU they only feed it.
        threads_each = num_threads if on_gpu else max(1, num_threads // count)
        self.device = device
        self.pipes = [
            build_pipeline(
                source, views, batch_size, device_id, threads_each, seed + i, interpolation
            )
            for i, source in enumerate(deal(plans, count))
        ]
        self.served = 0

    def _to_torch(self, tensor_list, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        dense = tensor_list.as_tensor()
        out = torch.empty(dense.shape(), dtype=dtype, device=device)
        stream = torch.cuda.current_stream(device) if device.type == "cuda" else None
        feed_ndarray(dense, out, cuda_stream=stream)
        return out

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        pipe = self.pipes[self.served % len(self.pipes)]
        teacher, student, labels, resolution, noise_sigma, noise_seed = pipe.run()
        self.served += 1
        cpu = torch.device("cpu")
        return {
            "teacher_view": self._to_torch(teacher, torch.float32, self.device),
            "student_view": self._to_torch(student, torch.float32, self.device),
            "labels": self._to_torch(labels, torch.int64, cpu).to(self.device),
            "resolution": self._to_torch(resolution, torch.float32, cpu),
            "noise_sigma": self._to_torch(noise_sigma, torch.float32, cpu),
            "noise_seed": self._to_torch(noise_seed, torch.int64, cpu),
        }


def dali_decode_error(path: str, device_id: int | None = None) -> str | None:
    """Why DALI's decoder (on the same device as training) cannot decode `path`, or None.
    A pipeline per call: used only on the files of a batch that already failed."""
    if not DALI_AVAILABLE:
        return None

    @pipeline_def(batch_size=1, num_threads=1, device_id=device_id, exec_dynamic=False)
    def one_image():
        encoded = fn.external_source(
            source=lambda: [np.fromfile(path, dtype=np.uint8)], batch=True, dtype=types.UINT8
        )
        return fn.decoders.image(
            encoded, device="mixed" if device_id is not None else "cpu", output_type=types.BGR
        )

    try:
        pipe = one_image()
        pipe.build()
        pipe.run()
    except Exception as err:  # DALI raises RuntimeError with the decoder's message
        lines = [line.strip(" :") for line in str(err).splitlines() if line.strip(" :")]
        useful = [line for line in lines if line.startswith(("Failed", "Unsupported", "Could"))]
        return (useful or lines or [type(err).__name__])[0][:200]
    finally:
        pipe = None
    return None
