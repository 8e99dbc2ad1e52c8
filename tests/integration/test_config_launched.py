"""The launched half of tests/unit/test_config.py:"""

import pytest

from crossres_dist.settings_help import settings_help
from tests.conftest import REPO


@pytest.mark.launch
def test_every_setting_is_documented_and_listed_by_train_help():
    import subprocess
    import sys

    rows = settings_help()
    undocumented = [name for name, _, _, meaning in rows if len(meaning) < 10]
    assert not undocumented, f"add a comment above these fields in config.py: {undocumented}"
    text = subprocess.run(
        [sys.executable, "-m", "crossres_dist.train", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for name, kind, default, _ in rows:
        assert f"  {name} ({kind}, default {default!r})" in text, name
    assert "  method.lambda_feat (float, default 0.1)" in text
