"""``python -m tests.battery [case name ...]``: run the bad-input battery and print each case's category."""

from __future__ import annotations

import collections
import sys
import tempfile
from pathlib import Path

from tests.battery.cases import run_all


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        rows = run_all(Path(tmp), sys.argv[1:] or None)
    width = max(len(name) for name, _, _ in rows)
    for name, category, text in rows:
        first = text.strip().splitlines()[-1] if text.strip() else ""
        print(f"{name:<{width}}  {category:<10}  {first[:150]}")
    counts = collections.Counter(category for _, category, _ in rows)
    print("\n" + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) + f" (of {len(rows)})")
    return 0 if set(counts) == {"clear"} else 1


if __name__ == "__main__":
    sys.exit(main())
