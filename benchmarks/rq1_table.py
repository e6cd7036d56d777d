"""Table of benchmarks/rq1_three_attackers.sh runs: PSNR / SSIM per attacker and E (mean over the victims run)."""

from __future__ import annotations

import json
import re
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np


def main(root: str) -> None:
    cells: dict[tuple[str, int], list[tuple[float, float]]] = defaultdict(list)
    for path in sorted(Path(root).glob("*_E*_i*/victims.jsonl")):
        label, e, _ = re.match(r"(\w+?)_E(\d+)_i(\d+)", path.parent.name).groups()
        for line in path.read_text().splitlines():
            row = json.loads(line)
            cells[(label, int(e))].append((row["psnr_mean"], row["ssim_mean"]))
    steps = sorted({e for _, e in cells})
    print("| attacker | " + " | ".join(f"E = {e}" for e in steps) + " |")
    print("|---|" + "---|" * len(steps))
    for label in ("naive", "known", "dimitrov"):
        row = []
        for e in steps:
            values = np.array(cells.get((label, e), []))
            row.append("-" if not len(values) else
                       f"{values[:, 0].mean():.2f} dB / {values[:, 1].mean():.3f} (n={len(values)})")
        print(f"| {label} | " + " | ".join(row) + " |")


if __name__ == "__main__":
    main(sys.argv[1])
