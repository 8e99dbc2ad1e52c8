"""The package as a user installs it: the wheel built from this tree, installed without -e into
a fresh virtual environment with no checkout on its path, run from an empty folder. The
dependencies are this environment's (a path line in the new one's site-packages), so nothing is
downloaded; the project itself comes from the wheel alone."""

from __future__ import annotations

import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO, child_env

pytestmark = pytest.mark.launch


def run(cmd: list[str], cwd: Path, timeout: int = 240) -> subprocess.CompletedProcess:
    env = child_env()
    env.pop("PYTHONPATH")  # nothing of the checkout
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{cmd} exited {result.returncode}:\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The bin/ folder of a fresh environment holding the wheel of this tree."""
    root = tmp_path_factory.mktemp("wheel")
    run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         str(REPO), "-w", str(root / "dist")],
        root,
    )  # fmt: skip
    (wheel,) = (root / "dist").glob("crossres_dist-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "crossres_dist/shipped/configs/demo.yaml" in names
    assert sum("shipped/orl_att_faces/s" in n for n in names) == 400
    base = Path(sys.base_prefix) / "bin" / "python3"
    run([str(base), "-m", "venv", str(root / "env")], root)
    (packages,) = (root / "env" / "lib").glob("python3*/site-packages")
    # This environment's packages as a plain path: its .pth files (the editable checkout's
    # among them) are not processed, so the project can only come from the wheel.
    (packages / "crossres_deps.pth").write_text(site.getsitepackages()[0] + "\n")
    bin_dir = root / "env" / "bin"
    run([str(bin_dir / "python"), "-m", "pip", "install", "-q", "--no-deps", "--no-index",
         str(wheel)], root)  # fmt: skip
    return bin_dir


def test_the_installed_tool_runs_its_default_from_an_empty_folder(installed, tmp_path):
    where = run(
        [str(installed / "python"), "-c", "import crossres_dist, pipelines; "
         "print(crossres_dist.__file__); print(pipelines.__file__)"],
        tmp_path,
    ).stdout.split()  # fmt: skip
    assert all(str(installed.parent) in path for path in where)
    helped = run([str(installed / "crossres-train"), "--help"], tmp_path).stdout
    assert "shipped configs (--config NAME): arcface_r50, demo, demo_teacher" in helped
    run(
        [str(installed / "crossres-train"), "--config", "demo_teacher", "run.output_dir=runs",
         "train.max_steps=2", "val.every=2", "train.progress_bar=false"],
        tmp_path,
    )  # fmt: skip
    checkpoint = tmp_path / "runs" / "teacher" / "checkpoints" / "best.pt"
    assert checkpoint.is_file()
    run(
        [str(installed / "crossres-eval"), "--config", "demo_teacher", "--checkpoint",
         str(checkpoint), "--split", "test", "--resolutions", "8", "full", "--no-plots",
         "--tsne-identities", "0", "--out", "eval"],
        tmp_path,
    )  # fmt: skip
    assert (tmp_path / "eval" / "results.json").is_file()
    assert "crossres-pack" in run([str(installed / "crossres-pack"), "--help"], tmp_path).stdout
