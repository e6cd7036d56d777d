"""Self-contained HTML pages: Jinja2 templates, images inlined as data URIs, Markdown rendered in place.

A page must open from a laptop's file browser, offline, after the run folder was
copied anywhere: no script, stylesheet, font or image is fetched from elsewhere.
"""

from __future__ import annotations

import base64
import math
import mimetypes
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import escape

_IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".svg": "image/svg+xml",
                ".gif": "image/gif"}


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    """Templates of ``page_templates`` (a module, so Flower's app bundle carries them), HTML-escaped."""
    from fl_privacy.reporting.page_templates import TEMPLATES

    env = jinja2.Environment(loader=jinja2.DictLoader(TEMPLATES), autoescape=True, trim_blocks=True,
                             lstrip_blocks=True)  # a field a record lacks renders empty, not an error
    env.filters["num"] = number
    env.filters["pretty"] = pretty
    return env


def render(template: str, **context: Any) -> str:
    return environment().get_template(template).render(**context)


def write_page(path: Path, html: str) -> Path:
    """Write via a temporary file and rename, so a browser reloading the page never sees half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_text(html, encoding="utf-8")
    partial.replace(path)
    return path


def data_uri(path: Path) -> str | None:
    """The file as a ``data:`` URI (None when missing), so the page carries its own pictures."""
    if not path.is_file():
        return None
    kind = _IMAGE_TYPES.get(path.suffix.lower()) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"data:{kind};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def image(root: Path, relative: str | None, caption: str = "") -> dict[str, str] | None:
    """An inlined picture of a run folder, with its file name kept as the caption's source."""
    if not relative:
        return None
    uri = data_uri(root / relative)
    return {"src": uri, "file": str(relative), "caption": caption} if uri else None


def markdown(text: str, base: Path | None = None) -> str:
    """Markdown (tables included) to HTML; images relative to ``base`` are inlined, others dropped."""
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": False}).enable("table")

    def render_image(renderer, tokens, index, options, env):  # markdown-it render rule signature
        token = tokens[index]
        source = str(token.attrGet("src") or "")
        uri = data_uri(base / source) if base is not None and not re.match(r"^[a-z]+:", source) else None
        alt = escape(token.content)
        if uri is None:
            return f'<span class="missing">[{alt}: {escape(source)} not found]</span>'
        return f'<figure><img src="{uri}" alt="{alt}"><figcaption>{alt}</figcaption></figure>'

    md.add_render_rule("image", render_image)
    return md.render(_unlink_remote(text))


def _unlink_remote(text: str) -> str:
    """Markdown links to the web stay readable text (the page must not point at anything online)."""
    return re.sub(r"\[([^\]]*)\]\((?:https?:)?//[^)]*\)", r"\1", text)


def number(value: Any, digits: int = 4) -> str:
    """A table cell: ``–`` for missing/NaN, yes/no, integers as such, floats with ``digits`` significant digits."""
    if value is None or value == "" or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return format(value, f".{digits}g")
    return str(value)


def pretty(value: Any) -> str:
    """A parameter value in words: lists joined, dicts as ``k=v``."""
    if isinstance(value, dict):
        return ", ".join(f"{k}={pretty(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(pretty(v) for v in value) or "–"
    if isinstance(value, float):
        return number(value, 6)
    return number(value)
