"""Table of benchmarks/rq1_three_attackers.sh runs: PSNR / SSIM per attacker and E, with n and a 95% bootstrap
CI of the mean PSNR, then Dimitrov vs the naive attacker and vs the known schedule per E (paired by image:
mean PSNR difference, 95% CI, Wilcoxon p)."""

from __future__ import annotations

import json
import re
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from fl_privacy.experiments.stats import bootstrap_ci, paired_comparison


def _cells(root: str) -> dict[tuple[str, int], dict[int, tuple[float, float]]]:
    """(attacker, E) -> image index -> (PSNR, SSIM)."""
    cells: dict[tuple[str, int], dict[int, tuple[float, float]]] = defaultdict(dict)
    for path in sorted(Path(root).glob("*_E*_i*/victims.jsonl")):
        label, e, index = re.match(r"(\w+?)_E(\d+)_i(\d+)", path.parent.name).groups()
        for line in path.read_text().splitlines():
            row = json.loads(line)
            cells[(label, int(e))][int(index)] = (row["psnr_mean"], row["ssim_mean"])
    return cells


def main(root: str) -> None:
    cells = _cells(root)
    steps = sorted({e for _, e in cells})
    print("| attacker | " + " | ".join(f"E = {e}" for e in steps) + " |")
    print("|---|" + "---|" * len(steps))
    for label in ("naive", "known", "dimitrov"):
        row = []
        for e in steps:
            values = np.array(list(cells.get((label, e), {}).values()))
            if not len(values):
                row.append("-")
                continue
            ci = bootstrap_ci(values[:, 0])
            ci_text = f" [{ci[0]:.1f}, {ci[1]:.1f}]" if ci else ""
            row.append(f"{values[:, 0].mean():.2f} dB{ci_text} / {values[:, 1].mean():.3f} (n={len(values)})")
        print(f"| {label} | " + " | ".join(row) + " |")
    print()
    print("| E | comparison (PSNR dB, paired by image) | n | mean difference [95% CI] | Wilcoxon p |")
    print("|---|---|---|---|---|")
    for e in steps:
        for base in ("naive", "known"):
            a, b = cells.get((base, e), {}), cells.get(("dimitrov", e), {})
            common = sorted(set(a) & set(b))
            if len(common) < 2:
                continue
            c = paired_comparison([a[i][0] for i in common], [b[i][0] for i in common], claim="higher")
            ci = f"[{c.ci_low:+.2f}, {c.ci_high:+.2f}]" if c.ci_low is not None else "(n too small for a CI)"
            p = f"{c.wilcoxon_p:.3g}" if c.wilcoxon_p is not None else "-"
            print(f"| {e} | dimitrov - {base} | {c.n} | {c.mean_difference:+.2f} {ci} | {p} |")


if __name__ == "__main__":
    main(sys.argv[1])
