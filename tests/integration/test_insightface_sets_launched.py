"""The launched half of tests/unit/test_insightface_sets.py: Packed sets as insightface's tools write them, built here from 20 LFW people with a writer of"""

# The fixtures come from the unit half and are requested by name: not redefinitions.
# ruff: noqa: F811

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from crossres_dist.data import check as check_data
from pipelines.packed import parse_locator
from tests import mxnet_recordio
from tests.conftest import REPO, child_env, needs_lfw

pytestmark = needs_lfw


@pytest.mark.launch
def test_check_data_on_a_read_only_set_writes_its_manifest_to_the_cache(
    tmp_path, people, monkeypatch
):
    if shutil.which("unshare") is None:
        pytest.skip(
            "util-linux's unshare is not installed: no read-only bind mount (runs where it is, "
            "as root: CI)"
        )
    mxnet_recordio.face2rec2(tmp_path / "rec", people[:60])
    cache = tmp_path / "cache"
    script = (
        f"mount --bind -o ro {tmp_path / 'rec'} {tmp_path / 'rec'} && "
        f"{sys.executable} -m crossres_dist.data.check {tmp_path / 'rec'} --min-images 1"
    )
    done = subprocess.run(
        ["unshare", "--mount", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env=child_env(XDG_CACHE_HOME=str(cache)),
    )
    if "unshare failed" in done.stderr or "Operation not permitted" in done.stderr:
        pytest.skip(f"no mount namespace here ({done.stderr.strip()}); runs as root (CI)")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"manifest: {tmp_path / 'rec'} is read-only: written to the cache instead" in done.stdout
    (written,) = (cache / "crossres-dist" / "manifests").glob("*.jsonl")
    assert f"manifest: {written} (training re-checks" in done.stdout
    assert not (tmp_path / "rec" / ".crossres-manifest.jsonl").exists()
    # Training's data.manifest=auto finds it there.
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    assert check_data.find_manifest(str(tmp_path / "rec")) == written
    entries = [json.loads(line) for line in written.read_text().splitlines()]
    assert {parse_locator(e["path"])[0] for e in entries} == {str(tmp_path / "rec" / "train.rec")}
