"""`skyflow ui` serves MLflow's web app, which only the full MLflow has: without it, one clear error."""

from __future__ import annotations

import importlib.util

import pytest

from skyflow.cli.lineage_commands import _need_mlflow_server
from skyflow.errors import LineageError


def test_without_flask_the_ui_is_one_error_naming_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None if name == "flask" else real_find_spec(name))
    with pytest.raises(LineageError, match=r"full MLflow package.*pip install 'mlflow>=3\.17,<4' \(the mlflow extra"):
        _need_mlflow_server()


def test_with_the_full_mlflow_the_ui_can_be_served() -> None:
    _need_mlflow_server()  # the dev install has the full MLflow, with its built web app
