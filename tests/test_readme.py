"""The README's generated tables come from the code that carries them: each block records the
fingerprint of its inputs (code, configs, data), and a block whose inputs have changed since is
stale. Regenerate with the command each message names."""

import pytest

from crossres_dist.demo import DEMO_DATA, DEMO_INPUTS
from crossres_dist.provenance import block, fingerprint
from tests.conftest import REPO

README = (REPO / "README.md").read_text()


def test_demo_tables_are_from_this_code():
    found = block(README, "demo")
    assert found is not None, "README.md has no <!-- demo:start --> ... <!-- demo:end --> block"
    _, stamp = found
    current = fingerprint(DEMO_INPUTS, DEMO_DATA)
    assert stamp == current, (
        f"the README's demo tables were made from other inputs ({stamp}, now {current}): "
        "run `make demo-readme` and commit README.md with the code"
    )


@pytest.mark.parametrize("name", ["study-lfw", "study-orl", "study-orl-degradations"])
def test_study_tables_are_from_this_code(name):
    from bench.recipe_study import STUDY_INPUTS, study_fingerprint

    found = block(README, name)
    assert found is not None, f"README.md has no <!-- {name}:start --> block"
    text, stamp = found
    data = text.split("data: ", 1)[1].split(";", 1)[0] if "data: " in text else ""
    if not data.startswith("embedded:") and not (REPO / data).is_dir():
        pytest.skip(f"{REPO / data} is absent; runs wherever ../shared holds the data (CI does)")
    current = study_fingerprint(data)
    assert stamp == current, (
        f"the README's {name} table was made from other inputs ({stamp}, now {current}); "
        f"rerun bench/recipe_study.py ({STUDY_INPUTS}) and paste its study.md into the block"
    )


def test_benchmark_report_is_from_this_code():
    from bench.benchmark_report import LFW, report_fingerprint

    found = block(README, "benchmarks-fixture")
    assert found is not None, "README.md has no <!-- benchmarks-fixture:start --> block"
    if not LFW.is_dir():
        pytest.skip(f"{LFW} is absent; runs wherever ../shared holds the LFW sample (CI does)")
    _, stamp = found
    current = report_fingerprint(LFW)
    assert stamp == current, (
        f"the README's example benchmark report was made from other inputs ({stamp}, now "
        f"{current}): run `make demo-readme benchmarks-readme`"
    )
