"""`python -m skyflow.lineage.drain URI HOME`: send the records that finished runs left spooled.

A short `skyflow run` does not wait seconds for MLflow to load; it leaves its records (already
scrubbed, on disk) to this process, which adopts every unlocked spool file of that tracking URI and
sends it. Readers call `wait_for_drain` first so they see every record.
"""

from __future__ import annotations

import fcntl
import sys
import time
from pathlib import Path

DRAIN_TIMEOUT_S = 600.0


def main(argv: list[str]) -> int:
    from skyflow.lineage.mlflow_recorder import MlflowRecorder

    tracking_uri, home = argv[0], Path(argv[1])
    recorder = MlflowRecorder(tracking_uri, [], skyflow_home=home)
    recorder.close(timeout_s=DRAIN_TIMEOUT_S)
    return 0


def wait_for_drain(tracking_uri: str, skyflow_home: Path, timeout_s: float = 60.0) -> bool:
    """Make sure every spooled record of ``tracking_uri`` is in the store before reading it.

    Waits while another process holds a spool file; sends unlocked leftovers itself. True when
    nothing is left (False: the store is unreachable or a writer is still busy after the timeout).
    """
    from skyflow.lineage.spool import spool_dir

    directory = spool_dir(skyflow_home, tracking_uri)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        waiting = [p for p in directory.glob("*.jsonl") if _has_records(p)]
        if not waiting:
            return True
        if all(_locked(p) for p in waiting):
            time.sleep(0.1)
            continue
        from skyflow.lineage.mlflow_recorder import MlflowRecorder  # only when there is something to send

        recorder = MlflowRecorder(tracking_uri, [], skyflow_home=skyflow_home)
        recorder.close(timeout_s=max(1.0, deadline - time.monotonic()))
        if recorder.pending:
            return False
    return False


def _has_records(path: Path) -> bool:
    try:
        return path.stat().st_size > 0
    except FileNotFoundError:
        return False


def _locked(path: Path) -> bool:
    try:
        with path.open("a") as handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    except FileNotFoundError:
        return False
    return False


if __name__ == "__main__":
    from skyflow.processes import skip_final_collections

    try:
        sys.exit(main(sys.argv[1:]))
    finally:
        skip_final_collections()
