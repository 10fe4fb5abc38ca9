"""`make demo` on a fresh machine: the embedded defaults, offline. The demo resolves its master for its
own simulator, so the rule that a real feed never gets a generated master cannot reach for the network."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_the_demo_runs_offline_on_a_fresh_data_directory(tmp_path: Path) -> None:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("TICKGATE_FEED_URL", "TICKGATE_INSTRUMENTS"))
    }
    env["TICKGATE_DATA_DIR"] = str(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "tickgate", "demo", "--duration", "6"],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    assert "Scrip master" in out
    assert "Traceback" not in out
    assert list((tmp_path / "masters").glob("generated-*.csv"))
