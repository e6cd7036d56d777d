"""Load a page in headless Chromium (Debian's package): did every image load, and is the screenshot a page?"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

# Appended to a copy of the page (the page itself has no script): after load, record each <img>'s state.
_PROBE = """<script>
window.addEventListener('load', function () {
  var state = Array.prototype.map.call(document.images, function (img) {
    return {complete: img.complete, width: img.naturalWidth, height: img.naturalHeight, alt: img.alt};
  });
  var out = document.createElement('pre');
  out.id = 'image-probe';
  out.textContent = 'IMAGES=' + JSON.stringify(state) + '=END';
  document.body.appendChild(out);
});
</script>"""


@dataclass
class BrowserResult:
    images: list[dict]
    distinct_colours: int
    ink_fraction: float
    """Share of screenshot pixels that are not the background colour."""


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _run(args: list[str], timeout: float = 90) -> subprocess.CompletedProcess:
    base = [chromium() or "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            "--no-first-run", "--disable-dev-shm-usage", "--allow-file-access-from-files"]
    return subprocess.run(base + args, capture_output=True, text=True, timeout=timeout, check=False)


def load_in_browser(page: Path, workdir: Path, size: tuple[int, int] = (1280, 2400)) -> BrowserResult:
    """Screenshot the page as is, and dump the DOM of a probed copy after the load event."""
    import numpy as np
    from PIL import Image

    shot = workdir / "screenshot.png"
    _run([f"--window-size={size[0]},{size[1]}", f"--screenshot={shot}", page.resolve().as_uri()])
    if not shot.exists():
        raise AssertionError("chromium wrote no screenshot")
    pixels = np.asarray(Image.open(shot).convert("RGB")).reshape(-1, 3)
    colours = len(np.unique(pixels[:: max(1, len(pixels) // 200_000)], axis=0))
    background = np.median(pixels, axis=0)
    ink = float(np.mean(np.abs(pixels - background).sum(axis=1) > 30))
    probed = workdir / page.name
    probed.write_text(page.read_text(encoding="utf-8").replace("</body>", _PROBE + "</body>"), encoding="utf-8")
    dom = _run(["--virtual-time-budget=10000", "--dump-dom", probed.resolve().as_uri()]).stdout
    found = re.search(r'<pre id="image-probe">IMAGES=(.*?)=END</pre>', dom, re.DOTALL)
    if not found:
        raise AssertionError(f"the probe did not run; DOM tail: {dom[-500:]!r}")
    images = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    return BrowserResult(images, colours, ink)
