"""Launch for real: a one-node SLURM cluster (sbatch, job arrays, requeue), mpirun, multi-node
torchrun; and the bootstrap's choice and errors with environments set by the test."""

import pytest

from crossres_dist.distributed import LaunchError, detect


# ----------------------------------------------------------------------------- bootstrap
def test_detects_torchrun():
    env = {
        "RANK": "3",
        "WORLD_SIZE": "8",
        "LOCAL_RANK": "1",
        "MASTER_ADDR": "n1",
        "MASTER_PORT": "29500",
        "SLURM_PROCID": "0",
        "SLURM_STEP_ID": "0",
    }  # torchrun inside a SLURM job wins
    info = detect(env)
    assert (
        info.launcher,
        info.rank,
        info.world_size,
        info.local_rank,
        info.master_addr,
        info.master_port,
    ) == ("torchrun", 3, 8, 1, "n1", 29500)


def test_half_set_torchrun_environment_names_the_missing_variable():
    with pytest.raises(LaunchError, match="MASTER_PORT is not set"):
        detect({"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "x"})


def test_single_process_and_forced_launcher():
    assert detect({}).launcher == "single"
    with pytest.raises(LaunchError, match="torchrun environment is incomplete: RANK"):
        detect({}, force="torchrun")
