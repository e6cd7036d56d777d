"""Run the README's long quick-start examples as written (CI runs this after pytest; minutes on 2 cores).

* the GIA-O section: its YAML block saved as ``experiment.yaml``, then its two ``fl-privacy attack``
  commands; the eval-mode one must reconstruct a recognizable image (PSNR >= 18 dB, SSIM >= 0.5; the
  README prints 20.40 dB / 0.788) and the train-mode one must warn about BatchNorm;
* ``fl-privacy run experiments/example_quick.yaml`` (the experiment quick start) must finish its runs.

    python -m tests.readme_examples [WORKDIR]
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def gia_section() -> tuple[str, list[str]]:
    """The GIA-O section's YAML block and its two ``fl-privacy attack experiment.yaml`` commands."""
    text = README.read_text()
    section = text[text.index("## Gradient inversion (GIA-O)"):]
    section = section[:section.index("\n## ", 10)]
    yaml_block = re.search(r"```yaml\n(.*?)```", section, re.DOTALL).group(1)
    bash = re.search(r"```bash\n(fl-privacy attack experiment\.yaml.*?)```", section, re.DOTALL).group(1)
    commands = [c.split("#")[0].strip() for c in bash.replace("\\\n", " ").splitlines() if c.strip()]
    if len(commands) != 2:
        raise SystemExit(f"README's GIA-O section: expected 2 attack commands, found {commands}")
    return yaml_block, commands


def run(command: str, cwd: Path) -> tuple[str, float]:
    words = shlex.split(command)
    assert words[0] == "fl-privacy", command
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "fl_privacy.launch.cli", *words[1:]], cwd=cwd,
                          capture_output=True, text=True, timeout=1800, check=False)
    seconds = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"README command failed ({done.returncode}): {command}\n{done.stderr[-3000:]}")
    return done.stdout + done.stderr, seconds


def newest_victim(out: Path) -> dict:
    runs = sorted((p for p in out.rglob("victims.jsonl")), key=lambda p: p.stat().st_mtime)
    return json.loads(runs[-1].read_text().splitlines()[-1])


def main(workdir: str | None = None) -> None:
    work = Path(workdir or tempfile.mkdtemp(prefix="readme-examples-"))
    work.mkdir(parents=True, exist_ok=True)
    yaml_block, (eval_cmd, train_cmd) = gia_section()
    (work / "experiment.yaml").write_text(yaml_block)
    _, seconds = run(eval_cmd + f" --out {work / 'gia-eval'}", work)
    row = newest_victim(work / "gia-eval")
    print(f"GIA-O, eval mode: PSNR {row['psnr_mean']:.2f} dB, SSIM {row['ssim_mean']:.3f} ({seconds:.0f} s)")
    if row["psnr_mean"] < 18 or row["ssim_mean"] < 0.5:
        raise SystemExit("the README's GIA-O example no longer reconstructs a recognizable image")
    log, seconds = run(train_cmd + f" --out {work / 'gia-train'}", work)
    summary = (work / "gia-train").rglob("summary.md")
    warned = "BatchNorm" in log or any("BatchNorm" in s.read_text() for s in summary)
    row = newest_victim(work / "gia-train")
    print(f"GIA-O, train mode: PSNR {row['psnr_mean']:.2f} dB, SSIM {row['ssim_mean']:.3f}, warned {warned} "
          f"({seconds:.0f} s)")
    if not warned:
        raise SystemExit("the README's train-mode GIA-O example did not warn about BatchNorm")
    out = work / "example_quick"
    _, seconds = run(f"fl-privacy run {ROOT / 'experiments' / 'example_quick.yaml'} --out {out}", ROOT)
    rows = (out / "results.csv").read_text().splitlines()
    print(f"example_quick: {len(rows) - 1} rows in {seconds:.0f} s")
    if len(rows) < 2:
        raise SystemExit("example_quick.yaml wrote no results")


if __name__ == "__main__":
    main(*sys.argv[1:2])
