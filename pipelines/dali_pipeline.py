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

from pipelines.degradations import DOWNSAMPLE, graph_steps, graph_types, plan_fields
from pipelines.packed import parse_locator, read_encoded
from pipelines.plans import MEAN_BGR, BatchPlan, ViewSettings  # noqa: F401 (MEAN_BGR: the default)

try:
    import nvidia.dali.math as dmath
    from nvidia.dali import fn, pipeline_def, types
    from nvidia.dali.plugin.pytorch import feed_ndarray

    DALI_AVAILABLE = True
except ImportError:  # pragma: no cover - exercised where DALI is not installed
    DALI_AVAILABLE = False

INTERP = {"linear": "INTERP_LINEAR", "cubic": "INTERP_CUBIC", "nearest": "INTERP_NN"}


def encoded_bytes(path: str) -> np.ndarray:
    """A sample's encoded bytes (a file, a tar member or a record: pipelines/packed.py)."""
    if parse_locator(path) is None:
        return np.fromfile(path, dtype=np.uint8)
    return np.frombuffer(bytearray(read_encoded(path)), dtype=np.uint8)  # writable, for DALI


def _round(x):
    return dmath.floor(x + 0.5)


# The plan fields the graph reads, by name, with their DALI type and how a plan's array becomes
# the graph's input: one list, so that the graph and its feeder cannot disagree on positions.
# Every degradation step's fields follow, from the registry as it is when the graph is built.
VIEW_INPUTS = (
    ("labels", "INT64", lambda plan: plan.labels),
    ("crop_x", "FLOAT", lambda plan: plan.crop_x),
    ("crop_y", "FLOAT", lambda plan: plan.crop_y),
    ("gray", "BOOL", lambda plan: plan.gray),
    ("degrade", "BOOL", lambda plan: plan.degrade),
    ("flip", "INT32", lambda plan: plan.flip),
)


def field_inputs() -> tuple:
    return VIEW_INPUTS + tuple(
        (name, kind, lambda plan, n=name: plan.steps[n]) for name, kind in graph_types().items()
    )


def field_column() -> dict[str, int]:
    return {name: i for i, (name, _, _) in enumerate(field_inputs())}


def _plan_to_arrays(plans: Iterable[BatchPlan]) -> Iterator[tuple]:
    """Two inputs per batch: the encoded images, and every per-sample field as one float64
    array [batch, fields]. One array instead of one input per field: DALI copies each input of
    each sample on its own (about 800 small copies a step with a field per input). float64 holds
    every field exactly (labels below 2**53, the float32 draws, the int32 qualities), so the
    graph casts back to the very values it was given."""
    inputs = field_inputs()
    for plan in plans:
        fields = np.stack([np.asarray(array(plan), np.float64) for _, _, array in inputs], 1)
        yield [encoded_bytes(p) for p in plan.paths], fields


def _inputs(plans: Iterable[BatchPlan]) -> dict:
    """The plans' fields as named graph inputs (each a column of the one field array)."""
    encoded, fields = fn.external_source(
        source=_plan_to_arrays(plans),
        num_outputs=2,
        batch=True,
        dtype=[types.UINT8, types.FLOAT64],
    )
    x = {"encoded": encoded, "fields": fields}
    column = field_column()
    for name, kind, _ in field_inputs():
        x[name] = fn.cast(fields[column[name]], dtype=getattr(types, kind))
    return x


def _decoded(encoded, gray, order, on_gpu: bool):
    image = fn.decoders.image(encoded, device="mixed" if on_gpu else "cpu", output_type=order)
    if gray:
        luma = fn.color_space_conversion(image, image_type=order, output_type=types.GRAY)
        image = fn.cat(luma, luma, luma, axis=2)
    return image


def _geometry(encoded, crop_x, crop_y, size: float, crop: float) -> dict:
    """From the JPEG/PNG header, on the CPU whatever the device of the decoded image (the
    geometry feeds per-sample arguments, which DALI takes from the CPU only): the image resized
    to shorter side `size` in whole pixels, as the twin computes it, and the crop window in it."""
    shape = fn.peek_image_shape(encoded, dtype=types.FLOAT)
    height, width = shape[0], shape[1]
    shorter = dmath.min(height, width)
    full_h, full_w = _round(height * size / shorter), _round(width * size / shorter)
    top = dmath.floor(crop_y * (full_h - crop))
    left = dmath.floor(crop_x * (full_w - crop))
    return {
        "full_h": full_h,
        "full_w": full_w,
        "top": top,
        "left": left,
        "scale_y": height / full_h,
        "scale_x": width / full_w,
    }


def _resized_window(image, g: dict, crop: float, interp, scale_y, scale_x):
    """`image` resized so that only the crop window of the `size` scale is computed."""
    top, left = g["top"], g["left"]
    return fn.resize(
        image,
        size=[crop, crop],
        interp_type=interp,
        antialias=True,
        roi_relative=False,
        roi_start=fn.stack(top * scale_y, left * scale_x),
        roi_end=fn.stack((top + crop) * scale_y, (left + crop) * scale_x),
    )


def _student(image, teacher, x: dict, g: dict, size: float, crop: float, interp):
    """The degraded student view of the samples drawn for it (DALI conditionals), the teacher
    view itself for the others. method.md: the whole shorter-side-`size` image is degraded, and
    only then is the crop taken (pipelines/degradations/ gives the steps and their order)."""
    frame = {
        "size": size,
        "full_h": g["full_h"],
        "full_w": g["full_w"],
        "interp": interp,
        "fields": x,
    }
    if x["degrade"]:
        full = fn.resize(
            image, size=fn.stack(g["full_h"], g["full_w"]), interp_type=interp, antialias=True
        )
        if _any_applied(x, [step for step in graph_steps() if step is not DOWNSAMPLE]):
            # Later steps need the whole image back up before the crop.
            for step in graph_steps():
                if x[step.field] > 0:
                    full = step.dali(full, x[step.field], frame)
            student = fn.slice(
                full,
                start=fn.cast(fn.stack(g["top"], g["left"]), dtype=types.INT32),
                shape=[crop, crop],
                axes=[0, 1],
            )
        else:
            # Down-sampling alone: the up-sampling writes the crop window only.
            def window(small, scale_y, scale_x):
                return _resized_window(small, g, crop, interp, scale_y, scale_x)

            student = DOWNSAMPLE.dali_window(full, x[DOWNSAMPLE.field], frame, window)
    else:
        student = teacher
    return student


def _any_applied(x: dict, steps: list):
    """Per sample: does any of `steps` apply (its field > 0)?"""
    applied = x[steps[0].field] > 0
    for step in steps[1:]:
        applied = applied | (x[step.field] > 0)
    return applied


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
    order = types.RGB if views.channels == "RGB" else types.BGR
    normalize = dict(
        mean=list(views.mean), std=[1.0 / views.scale] * 3, output_layout="CHW", dtype=types.FLOAT
    )

    @pipeline_def(enable_conditionals=True)
    def views_graph():
        x = _inputs(plans)
        image = _decoded(x["encoded"], x["gray"], order, device_id is not None)
        g = _geometry(x["encoded"], x["crop_x"], x["crop_y"], size, crop)
        teacher = _resized_window(image, g, crop, interp, g["scale_y"], g["scale_x"])
        student = _student(image, teacher, x, g, size, crop, interp)
        return (
            fn.crop_mirror_normalize(teacher, mirror=x["flip"], **normalize),
            fn.crop_mirror_normalize(student, mirror=x["flip"], **normalize),
            x["fields"],  # the labels and the step fields, split on the host
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
        teacher, student, fields = pipe.run()
        self.served += 1
        batch = {
            "teacher_view": self._to_torch(teacher, torch.float32, self.device),
            "student_view": self._to_torch(student, torch.float32, self.device),
        }
        # The labels go to the device; the plan's fields stay on the host, in the plan's dtypes,
        # where the steps on the finished view read them.
        dtypes = {"labels": np.int64, **plan_fields()}
        columns = np.array(fields.as_tensor())
        column = field_column()
        for name in dtypes:  # the labels and every step field
            values = columns[:, column[name]].astype(dtypes[name])
            batch[name] = torch.from_numpy(np.ascontiguousarray(values))
        batch["labels"] = batch["labels"].to(self.device)
        return batch


def dali_decode_error(path: str, device_id: int | None = None) -> str | None:
    """Why DALI's decoder (on the same device as training) cannot decode `path`, or None.
    A pipeline per call: used only on the files of a batch that already failed."""
    if not DALI_AVAILABLE:
        return None

    @pipeline_def(batch_size=1, num_threads=1, device_id=device_id, exec_dynamic=False)
    def one_image():
        encoded = fn.external_source(
            source=lambda: [encoded_bytes(path)], batch=True, dtype=types.UINT8
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
