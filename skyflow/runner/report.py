"""Machine-readable run status (the exact shape scripts and CI rely on)."""

from __future__ import annotations

from typing import Any

from skyflow.runner.state import RunRow


def run_status_json(run: RunRow) -> dict[str, Any]:
    """{"run_id", "pipeline", "state", "stages": {name: {state, attempts, infra, cost_usd, outputs}}}"""
    return {
        "run_id": run.run_id,
        "pipeline": run.pipeline,
        "state": run.state,
        "stages": {
            name: {
                "state": row.state,
                "attempts": row.attempts,
                "infra": row.infra or "local",
                "cost_usd": round(row.cost_usd or 0.0, 6),
                "outputs": {o.name: {"uri": o.uri, "digest": o.digest, "size_bytes": o.size_bytes}
                            for o in row.outputs.values()},
            }
            for name, row in run.stages.items()
        },
    }
