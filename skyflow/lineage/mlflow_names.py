"""The names and limits of skyflow's MLflow layout: tags, keys, dataset digests, filter strings."""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import urlparse

TAG_KIND = "skyflow.kind"  # "pipeline_run" or "stage_run"
TAG_RUN_ID = "skyflow.run_id"
TAG_RUN_KEY = "skyflow.run_key"  # one skyflow run (and its resumes), even where another used its run id
TAG_PIPELINE = "skyflow.pipeline"
TAG_STAGE = "skyflow.stage"
TAG_OUTPUT_URIS = "skyflow.output_uris"
# A parent run a starting stage made before MLflow had loaded (SqliteRunOpener); start_run completes it.
TAG_OPENED_EARLY = "skyflow.opened_early"
TAG_SUPERSEDED_BY = "skyflow.superseded_by"  # an earlier stage run of a resumed run: the run that replaced it
CONTEXT_TAG = "mlflow.data.context"
PARENT_TAG = "mlflow.parentRunId"

# MLflow's limits (mlflow/utils/validation.py).
MAX_PARAM_VALUE = 6000
MAX_TAG_VALUE = 8000
MAX_KEY = 250
MAX_DATASET_DIGEST = 36
_KEY_BAD_CHARS = re.compile(r"[^\w\-. /:]")


def dataset_digest(digest: str) -> str:
    """The form of an artifact digest MLflow can hold (36 chars): no `algo:` prefix, cut to fit."""
    return digest.split(":", 1)[-1][:MAX_DATASET_DIGEST]


def flatten(prefix: str, value: Any) -> dict[str, str]:
    """`{"a": {"b": 1}}` -> `{"prefix.a.b": "1"}`; lists and scalars become strings."""
    if isinstance(value, dict):
        out: dict[str, str] = {}
        for key, item in value.items():
            out.update(flatten(f"{prefix}.{key}" if prefix else str(key), item))
        return out
    if value is None:
        return {}
    text = json.dumps(value) if isinstance(value, list | tuple) else str(value)
    return {prefix: text}


def clean_key(key: str) -> str:
    return _KEY_BAD_CHARS.sub("_", key)[:MAX_KEY]


def cut(value: str, limit: int) -> str:
    return value if len(value) <= limit else value[: limit - 1] + "…"


def source_of(uri: str) -> tuple[str, str]:
    """A dataset's MLflow source type and source for an artifact URI."""
    scheme = urlparse(uri).scheme
    source_type = scheme if scheme and len(scheme) > 1 else "local"  # `C:` is a drive, not a scheme
    return source_type, json.dumps({"uri": uri})


def quote_filter_value(value: str) -> str:
    """Escape a value for an MLflow search filter's single-quoted string."""
    return value.replace("\\", "\\\\").replace("'", "\\'")
