"""``python -m fl_privacy.config``: print pyproject's ``[tool.flwr.app.config]`` table."""

from fl_privacy.config.runconfig import run_config_toml

print(run_config_toml(), end="")
