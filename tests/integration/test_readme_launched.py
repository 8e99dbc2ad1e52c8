"""Publishing a result (`python -m tools.published run`): a command that fails publishes nothing."""

import pytest

from tools import published as results

pytestmark = pytest.mark.launch


def test_a_failed_benchmark_command_publishes_nothing_and_says_so_in_one_line(capsys):
    name = "test-failed-command"
    code = results.main(
        ["run", name, "--allow-dirty", "--", "python3", "-c", "import sys; sys.exit(3)"]
    )
    error = capsys.readouterr().err
    assert code == 2 and not (results.RESULTS / name).exists()
    assert error.count("\n") == 1 and "exited with 3" in error and f"results/{name}" in error
