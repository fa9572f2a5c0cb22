"""optuna-dashboard (the `dashboard` extra) serves a study's ledger as it is: the real server on
the smoke experiment's journal file, asked for its studies over HTTP."""
import json
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import free_port
from study.config import StudyConfig

pytestmark = pytest.mark.slow


def test_optuna_dashboard_lists_every_cell_of_the_ledger(smoke_experiment):
    command = Path(sys.executable).with_name("optuna-dashboard")
    if not command.is_file() and shutil.which("optuna-dashboard") is None:
        pytest.skip('optuna-dashboard is not installed (pip install -e ".[dashboard]")')
    port = free_port()
    server = subprocess.Popen([str(command), str(smoke_experiment / "optuna-journal.log"), "--port", str(port),
                               "--host", "127.0.0.1", "--quiet"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline, studies = time.time() + 60, None
        while studies is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=2) as answer:
                    studies = json.load(answer)["study_summaries"]
            except OSError:
                assert server.poll() is None, server.stderr.read().decode()
                assert time.time() < deadline, "optuna-dashboard did not answer within 60 s"
                time.sleep(0.3)
    finally:
        server.terminate()
        server.wait(timeout=30)
    cells = [f"{s}-{m}" for s, m in StudyConfig.preset("smoke").cells]
    assert sorted(s["study_name"] for s in studies) == sorted(
        [f"smoke:{c}" for c in cells] + [f"smoke:{c}:rerun" for c in cells])
