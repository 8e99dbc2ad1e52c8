"""Golden test: DALI's decoder and the twin's turn every image mode a face set may hold into the
same 8-bit BGR pixels (docs/operations.md says how each mode is converted)."""

import numpy as np
from PIL import Image

from pipelines.torchvision_twin import decode
from tests.conftest import needs_dali


def dali_decode(path) -> np.ndarray:
    from nvidia.dali import fn, pipeline_def, types

    @pipeline_def(batch_size=1, num_threads=1, device_id=None, exec_dynamic=False)
    def one():
        encoded = fn.external_source(
            source=lambda: [np.fromfile(path, dtype=np.uint8)], batch=True, dtype=types.UINT8
        )
        return fn.decoders.image(encoded, device="cpu", output_type=types.BGR)

    pipe = one()
    pipe.build()
    (out,) = pipe.run()
    return np.asarray(out[0]).astype(np.float32)


def planted(folder):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (40, 48, 3), np.uint8)
    deep = rng.integers(0, 65536, (40, 48), np.uint16)
    files = {
        "cmyk.jpg": Image.fromarray(rgb).convert("CMYK"),
        "palette.png": Image.fromarray(rgb).convert("P"),
        "rgba.png": Image.fromarray(rgb).convert("RGBA"),
        "la.png": Image.fromarray(rgb).convert("LA"),
        "grey.png": Image.fromarray(rgb).convert("L"),
        "deep16.png": Image.fromarray(deep),
        "tiny.png": Image.fromarray(rgb[:3, :5]),
    }
    for name, image in files.items():
        image.save(folder / name, **({"quality": 95} if name.endswith(".jpg") else {}))
    import cv2

    # 16 bits per channel in colour (PIL reads it as 8-bit RGB by dropping the low byte).
    cv2.imwrite(str(folder / "deep48.png"), rng.integers(0, 65536, (40, 48, 3), np.uint16))
    return sorted(folder.iterdir())


@needs_dali
def test_both_backends_decode_every_mode_to_the_same_pixels(tmp_path):
    for path in planted(tmp_path):
        twin = decode(str(path), gray=False).numpy()
        dali = dali_decode(path)
        assert twin.shape == dali.shape, path.name
        diff = np.abs(twin - dali)
        # Exact for every mode but 16-bit colour, where PIL truncates and DALI rounds: 1 level.
        limit = 1 if path.name == "deep48.png" else 0
        assert diff.max() <= limit, (path.name, diff.max())
    # 16-bit greyscale is scaled, not clipped: mid-grey stays mid-grey.
    mid = tmp_path / "mid16.png"
    Image.fromarray(np.full((8, 8), 32896, np.uint16)).save(mid)
    assert (decode(str(mid), gray=False).numpy() == 128).all()
