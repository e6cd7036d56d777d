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
    assert {k: v["status"] for k, v in parts.items()} == {
        "variants": "ok", "restarts": "ok", "victims": "ok", "quality": "ok", "speed": "ok", "federation": "ok"}
    variants = parts["variants"]["variants"]
    assert variants and all(r["iterations_per_s"] > 0 for r in variants.values())
    best = parts["variants"]["best_variant"]
    assert best in variants and parts["speed"]["variant"] == best  # the later parts use the fastest variant
    assert parts["speed"]["iterations"] >= 2 and parts["speed"]["seconds"] > 0
    assert parts["restarts"]["ratio"] > 0 and parts["victims"]["2"]["ratio"] > 0
    assert set(parts["quality"]) >= {"float32", "tf32", "bf16", "bf16_minus_float32_psnr"}
    assert all(len(parts["quality"][p]["psnr"]) == 2 for p in ("float32", "tf32", "bf16"))
    assert parts["federation"]["returncode"] == 0 and len(parts["federation"]["attacks"]) == 2
    table = (tmp_path / "gpu_check.md").read_text()
    assert "victims batched" in table and "federation" in table and "8 restarts" in table and "bf16" in table
