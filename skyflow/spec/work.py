"""What a stage's run time depends on, as one key: past durations are matched by it.

Two runs of a stage do the same work when the pipeline, the stage, what it runs (its ``setup`` and
``run`` commands and ``envs`` after params are substituted) and its node count are the same. A param
the stage does not use (in a command or a variable) does not change the key; ``--set scale=full``
on a stage that runs ``--scale ${params.scale}`` does. Inputs' contents do not take part: the same
work on new data of the same kind takes about as long.
"""

from __future__ import annotations

import hashlib
import json

from skyflow.spec.models import Stage

__all__ = ["work_key"]


def work_key(pipeline: str, name: str, stage: Stage) -> str:
    """A short digest naming the work ``stage`` of ``pipeline`` does (see the module docstring)."""
    what = {"pipeline": pipeline, "stage": name, "setup": stage.setup, "run": stage.run,
            "envs": sorted((k, v) for k, v in stage.envs.items()), "num_nodes": stage.num_nodes}
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]
