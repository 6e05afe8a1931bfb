"""Copy a process's output to its log, with every secret value masked as it is captured."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import IO

MASK = "********"


def mask_secrets(text: str, secrets: Sequence[str]) -> str:
    for value in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(value, MASK)
    return text


class LogPump(threading.Thread):
    """Reads a pipe line by line, masks secrets, appends to the log, and hands lines to a listener."""

    def __init__(self, source: IO[bytes], log: IO[bytes], secrets: Sequence[str], prefix: str = "",
                 on_line: Callable[[str], None] | None = None) -> None:
        super().__init__(daemon=True)
        self.source = source
        self.log = log
        self.secrets = [s for s in secrets if s]
        self.prefix = prefix
        self.on_line = on_line

    def run(self) -> None:
        for raw in iter(self.source.readline, b""):
            line = mask_secrets(raw.decode("utf-8", "replace"), self.secrets)
            self.log.write((self.prefix + line).encode())
            self.log.flush()
            if self.on_line:
                self.on_line((self.prefix + line).rstrip("\n"))
        self.source.close()


def main(argv: list[str]) -> int:
    """`python -m skyflow.backends.masking LOG`: copy stdin to LOG with secrets masked.

    Long-running service processes outlive the runner, so their output goes through this small
    process instead of a thread of the runner. Secret values arrive in SKYFLOW_MASK_VALUES (JSON).
    """
    import json
    import os
    import sys

    secrets = json.loads(os.environ.pop("SKYFLOW_MASK_VALUES", "[]"))
    with open(argv[0], "ab") as log:
        pump = LogPump(sys.stdin.buffer, log, secrets)
        pump.run()
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
