"""The report's tables and figures: their keys must be swept (or taken from each row), their metrics known.

Swept keys a table or figure does not name are added as extra rows / hue, so a cell never
averages over a swept setting.
"""

from __future__ import annotations

from fl_privacy.config import ConfigError
from fl_privacy.experiments.spec.model import FigureSpec, TableSpec
from fl_privacy.experiments.spec.names import METRICS, PSEUDO_KEYS, close
from fl_privacy.experiments.spec.schema import Figure, Table


def tables(raw: list[Table], mode: str, keys: list[str]) -> list[TableSpec]:
    """``experiment.table`` resolved; without one, the first two swept keys against the mode's main metric."""
    out = [_table(t, i, mode, keys) for i, t in enumerate(raw)]
    if not out:
        metric = "ssim_mean" if mode == "attack" else "test_accuracy"
        out = [TableSpec(tuple(keys[:1]), tuple(keys[1:2]), (metric,))]
    return out


def figures(raw: list[Figure], mode: str, keys: list[str]) -> list[FigureSpec]:
    return [_figure(f, i, mode, keys) for i, f in enumerate(raw)]


def _check_axis_keys(used: list[str], mode: str, keys: list[str], where: str) -> None:
    allowed = [*keys, *PSEUDO_KEYS[mode]]
    for key in used:
        if key not in allowed:
            raise ConfigError(f"{where}: '{key}' is not a swept key{close(key, allowed)} (allowed: "
                              f"{', '.join(allowed)}{'; round needs mode federation' if key == 'round' else ''})")
    if len(set(used)) != len(used):
        raise ConfigError(f"{where}: a key is used twice in {used}")


def check_metrics(metrics: list[str], mode: str, where: str) -> None:
    """Every metric is one the mode writes (with a "did you mean")."""
    if not metrics:
        raise ConfigError(f"{where}: name at least one metric (known in mode {mode}: {', '.join(METRICS[mode])})")
    for m in metrics:
        if m not in METRICS[mode]:
            raise ConfigError(f"{where}: unknown metric '{m}'{close(m, METRICS[mode])} (known in mode {mode}: "
                              f"{', '.join(METRICS[mode])})")


def _table(raw: Table, index: int, mode: str, keys: list[str]) -> TableSpec:
    where = f"experiment.table[{index}]" if index else "experiment.table"
    rows, columns = list(raw.rows), list(raw.columns)
    _check_axis_keys(rows + columns, mode, keys, where)
    check_metrics(list(raw.metrics), mode, where)
    rows += [k for k in keys if k not in rows and k not in columns]
    return TableSpec(tuple(rows), tuple(columns), tuple(raw.metrics), raw.title, tuple(raw.stats))


def _figure(raw: Figure, index: int, mode: str, keys: list[str]) -> FigureSpec:
    where = f"experiment.figure[{index}]" if index else "experiment.figure"
    if not raw.x:
        wanted = "a metric" if raw.kind == "scatter" else f"a swept key{' or round' if mode == 'federation' else ''}"
        raise ConfigError(f"{where}.x is required ({wanted})")
    hue = list(raw.hue)
    if raw.kind == "scatter":  # x is a metric; every point is one setting of the swept keys
        check_metrics([raw.x], mode, f"{where}.x (kind scatter)")
        _check_axis_keys(hue, mode, keys, where)
        hue += [k for k in keys if k not in hue]
    else:
        _check_axis_keys([raw.x, *hue], mode, keys, where)
        hue += [k for k in keys if k != raw.x and k not in hue]
    check_metrics(list(raw.y), mode, where)
    return FigureSpec(raw.x, tuple(raw.y), tuple(hue), raw.title, raw.name, raw.logx, raw.logy, raw.kind, raw.error)
