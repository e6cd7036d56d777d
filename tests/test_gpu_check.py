"""benchmarks/gpu_check.py runs end to end (CPU, tiny sizes, small model) and writes its JSON and table."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_runs_every_part_on_cpu(tmp_path):
    cmd = [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--tiny", "--model", "lenet",
           "--backend", "inprocess", "--out", str(tmp_path)]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=400)
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    parts = report["parts"]
    assert {k: v["status"] for k, v in parts.items()} == {"speed": "ok", "victims": "ok", "federation": "ok"}
    assert parts["speed"]["graph_full"]["iterations"] == 4 and parts["speed"]["eager"]["iterations_per_s"] > 0
    assert parts["victims"]["victims"] == 2 and parts["victims"]["ratio"] > 0
    assert parts["federation"]["returncode"] == 0 and len(parts["federation"]["attacks"]) == 2
    table = (tmp_path / "gpu_check.md").read_text()
    assert "victims batched" in table and "federation" in table
