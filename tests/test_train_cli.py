"""``python -m training.train`` with a bad config or ``--set`` exits 2 with the message (unknown key
and the known ones, missing file, malformed override), not a ValueError traceback with status 1."""
from __future__ import annotations

from pathlib import Path

import pytest

from training.train import main

REPO = Path(__file__).resolve().parent.parent
TINY = str(REPO / "configs/train/tiny-test.yaml")


@pytest.mark.parametrize("argv, message", [
    (["--config", TINY, "--set", "training.nonsense=1"],
     "unknown key(s) ['nonsense'] in config section 'training'; known: ["),
    (["--config", str(REPO / "nope.yaml")], "training config not found"),
    (["--config", TINY, "--set", "model=5"], "config section 'model' must be a mapping"),
    (["--config", TINY, "--set", "training.steps=-1"], "training.steps must be > 0"),
    (["--config", TINY, "--set", "nosection"], "must look like section.key=value"),
])
def test_bad_config_exit_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("[train] error: ") and message in err
