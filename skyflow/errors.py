"""The one error tree every skyflow layer raises from.

    SkyflowError                    root; the CLI prints it without a traceback
     +-- SpecError                  the pipeline as written is wrong (file:line:col issues)
     +-- CatalogError               a price catalog or egress file cannot be read
     +-- PlanningError              no placement satisfies a stage's resources and constraints
     +-- ArtifactError              an artifact cannot be read, written, moved or verified
     +-- BackendError               a backend cannot launch, watch or stop a stage
     +-- LineageError               lineage cannot be recorded or queried
     +-- RunError                   run state is missing or inconsistent (unknown run id, ...)
     |    +-- RunFailed             a run finished with failed stages (exit code 1)
     +-- SchedulerError             a schedule cannot be added, fired or exported

Errors carry fields (stage, uri, location) besides their text, so callers can act on them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

INTERRUPTED_EXIT = 130  # the exit status of a command that Ctrl-C ended, as a shell reports one


@dataclass(frozen=True)
class SourcePosition:
    """Where a value sits in a file; line and col are 1-based."""

    file: str
    line: int
    col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


@dataclass(frozen=True)
class Issue:
    """One problem with user input: where, what, the fix, and close matches."""

    message: str
    position: SourcePosition | None = None
    hint: str | None = None
    matches: tuple[str, ...] = field(default_factory=tuple)

    def render(self) -> str:
        where = f"{self.position}: " if self.position else ""
        text = f"{where}{self.message}"
        if self.matches:
            text = _sentence(text) + " Did you mean " + ", ".join(self.matches) + "?"
        if self.hint:
            text = _sentence(text) + f" {self.hint}"
        return text


def _sentence(text: str) -> str:
    """``text`` ended as a sentence, so that the next one reads apart from it."""
    return text if text.endswith((".", "?", "!", ":", ";")) else f"{text}."


class SkyflowError(Exception):
    """Root of every error skyflow raises on purpose."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class SpecError(SkyflowError):
    """The pipeline (YAML, Python API, CLI flags) is wrong; carries one or more issues."""

    def __init__(self, issues: list[Issue] | Issue | str) -> None:
        if isinstance(issues, str):
            issues = [Issue(issues)]
        elif isinstance(issues, Issue):
            issues = [issues]
        self.issues: tuple[Issue, ...] = tuple(issues)
        super().__init__("\n".join(issue.render() for issue in self.issues))


class CatalogError(SkyflowError):
    """A price catalog or egress rules file is unreadable or malformed."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path


class PlanningError(SkyflowError):
    """No plan satisfies the pipeline's resources and the policy."""

    def __init__(self, message: str, *, stage: str | None = None) -> None:
        super().__init__(message)
        self.stage = stage


class ArtifactError(SkyflowError):
    """An artifact cannot be read, written, moved or verified."""

    exit_code = 1

    def __init__(self, message: str, *, artifact: str | None = None, uri: str | None = None) -> None:
        parts = [p for p in (f"artifact {artifact!r}" if artifact else None, uri) if p]
        prefix = " at ".join(parts)
        super().__init__(f"{prefix}: {message}" if prefix else message)
        self.artifact = artifact
        self.uri = uri


class BackendError(SkyflowError):
    """A backend failed to launch, watch or stop a stage."""

    exit_code = 1

    def __init__(self, message: str, *, stage: str | None = None, backend: str | None = None) -> None:
        super().__init__(message)
        self.stage = stage
        self.backend = backend


class LineageError(SkyflowError):
    """Lineage could not be recorded or queried."""

    exit_code = 1


class RunError(SkyflowError):
    """Run state is missing or inconsistent."""


class RunFailed(RunError):
    """A run finished, but some stages failed."""

    exit_code = 1

    def __init__(self, message: str, *, run_id: str) -> None:
        super().__init__(message)
        self.run_id = run_id


class SchedulerError(SkyflowError):
    """A schedule cannot be added, fired or exported."""
