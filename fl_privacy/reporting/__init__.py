"""Run directories: resolved config, per-round records, recorded updates, summary."""

from fl_privacy.reporting.run_dir import RunDirectory, environment_info
from fl_privacy.reporting.summary import write_summary

__all__ = ["RunDirectory", "environment_info", "write_summary"]
