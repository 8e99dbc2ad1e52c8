"""compile.cache: compiled code is kept across processes, so a second run (a device run
after the one that compiled, a restarted job) finds every graph the first one compiled."""

import json
import sys

import pytest

from tests.conftest import child_env, run_cmd

COMPILE_TWICE = """
import json, sys, torch
from crossres_dist.distributed.parallelize import use_compile_cache
use_compile_cache(sys.argv[1])
from torch._dynamo.utils import counters
from crossres_dist.models import ModelSpec, build_model
torch.manual_seed(0)
model = build_model(ModelSpec(layers=(1, 1), width=4, num_classes=5, se_reduction=4))
model.compile()
features, logits = model(torch.randn(2, 3, 28, 28))
logits.sum().backward()
print(json.dumps(dict(counters["inductor"])))
"""


@pytest.mark.launch
def test_a_second_process_finds_the_graphs_the_first_compiled(tmp_path):
    cache = tmp_path / "compile-cache"
    runs = []
    for _ in range(2):
        out = run_cmd(
            [sys.executable, "-c", COMPILE_TWICE, str(cache)], env=child_env(), timeout=400
        )
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    first, second = runs
    assert first.get("fxgraph_cache_miss", 0) >= 2  # forward and backward compiled, and kept
    assert second.get("fxgraph_cache_hit", 0) + second.get("autograd_cache_hit", 0) >= 2
    assert second.get("fxgraph_cache_miss", 0) == 0
    assert (cache / "inductor").is_dir()
