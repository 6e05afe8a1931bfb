"""The recent runs as `skyflow runs` lists them, read from the state DB with plain SQL.

`RunStore` gives whole runs (plans, stages, outputs) and imports what running needs; a listing
needs one row per run, so it reads the `runs` and `stages` tables directly, through `StateDB` (the
same waiting on locks and the same errors for a damaged file).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from skyflow.errors import RunError
from skyflow.statedb import StateDB

__all__ = ["RunSummary", "recent_runs"]

_QUERY = """
SELECT r.run_id, r.pipeline, r.state, r.created_at, r.estimated_usd, r.actual_usd,
  (SELECT COUNT(*) FROM stages s WHERE s.run_id = r.run_id) AS stages,
  (SELECT COUNT(*) FROM stages s WHERE s.run_id = r.run_id AND s.state IN ('succeeded', 'cached')) AS done
FROM runs r {where} ORDER BY r.created_at DESC LIMIT ?
"""


@dataclass(frozen=True)
class RunSummary:
    """One run in a listing: its state, when it was made, its stages done of all, its cost."""

    run_id: str
    pipeline: str
    state: str
    created_at: float
    estimated_usd: float | None
    actual_usd: float | None
    stages_done: int
    stages: int


class _RunListing(StateDB):
    def recent(self, limit: int, pipeline: str | None) -> list[RunSummary]:
        query = _QUERY.format(where="WHERE r.pipeline = ?" if pipeline else "")
        args = (pipeline, limit) if pipeline else (limit,)
        return [RunSummary(row["run_id"], row["pipeline"], row["state"], row["created_at"], row["estimated_usd"],
                           row["actual_usd"], row["done"], row["stages"])
                for row in self._conn().execute(query, args)]


def recent_runs(db_path: Path, *, limit: int = 20, pipeline: str | None = None) -> list[RunSummary]:
    """The newest ``limit`` runs (of ``pipeline``), newest first. A home without a state DB gets one
    made (as every command that reads run state does), which lists nothing."""
    if not db_path.is_file():
        from skyflow.runner.state import RunStore

        RunStore(db_path)
        return []
    return _RunListing(db_path, "", error=RunError).recent(limit, pipeline)
