"""`skyflow lineage` and `skyflow ui`: read the lineage that runs left in MLflow."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import subprocess
import sys
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from rich.tree import Tree

    from skyflow.lineage.records import LineageNode

tracking_uri_option = click.option(
    "--tracking-uri",
    metavar="URI",
    default=None,
    help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///$SKYFLOW_HOME/mlflow.db).",
)


@click.command()
@click.argument("artifact", metavar="ARTIFACT")
@tracking_uri_option
@click.option("--json", "as_json", is_flag=True, help="Print the tree as JSON (schema: docs/cli.md).")
def lineage(artifact: str, tracking_uri: str | None, as_json: bool) -> None:
    """Show where ARTIFACT (a URI, a path or a digest) came from, back to the raw data.

    \b
    skyflow lineage ./report                  # an output copied out by `skyflow artifacts get`
    skyflow lineage sha256:3f2a9c --json
    """
    from skyflow.errors import LineageError
    from skyflow.home import skyflow_home
    from skyflow.lineage.drain import wait_for_drain
    from skyflow.lineage.recorder import resolve_tracking_uri
    from skyflow.lineage.trace import trace_artifact

    uri = resolve_tracking_uri(tracking_uri, skyflow_home())
    wait_for_drain(uri, skyflow_home())  # records a just-finished run left to the background
    try:
        node = trace_artifact(uri, artifact)
    except LineageError:
        digest = _content_digest(artifact)
        if digest is None:
            raise
        node = trace_artifact(uri, digest)
    if as_json:
        click.echo(json.dumps(dataclasses.asdict(node), indent=2))
        return
    from rich.console import Console

    console = Console()
    if not console.is_terminal:
        console = Console(width=400)  # piped: keep each line whole rather than cut at 80 columns
    console.print(render_lineage(node))


def _content_digest(artifact: str) -> str | None:
    """The artifact digest of a file or folder on this machine (a copy `skyflow artifacts get` made,
    or any with the same content), so that a path finds the run that made that content."""
    from pathlib import Path

    path = Path(artifact)
    if "://" in artifact or not path.exists():
        return None
    from skyflow.artifacts.manifest import build_manifest

    return build_manifest(path)[0].digest


def render_lineage(node: LineageNode) -> Tree:
    """A rich tree: each artifact, the stage run that made it, and that run's inputs below it."""
    from rich.tree import Tree

    tree = Tree(_label(node))
    shown = {node.artifact.digest}
    _add_inputs(tree, node, shown)
    return tree


def _add_inputs(branch: Tree, node: LineageNode, shown: set[str]) -> None:
    for child in node.inputs:
        if child.producer is not None and child.artifact.digest in shown:
            branch.add(_label(child, repeated=True))
            continue
        shown.add(child.artifact.digest)
        _add_inputs(branch.add(_label(child)), child, shown)


def _label(node: LineageNode, *, repeated: bool = False) -> str:
    from rich.markup import escape

    art = node.artifact
    size = f"  {_size(art.size_bytes)}" if art.size_bytes is not None else ""
    line = f"[bold]{escape(art.name)}[/]  {escape(art.uri)}  [dim]{escape(_short(art.digest))}{size}[/]"
    producer = node.producer
    if producer is None:
        return line + "\n[green]raw data[/] [dim](no recorded stage wrote it)[/]"
    if repeated:
        return line + f"\n[dim]made by stage {escape(producer.stage)} (shown above)[/]"
    facts = [f"run {escape(producer.run_id)}", f"pipeline {escape(producer.pipeline)}", producer.state]
    if producer.cache_hit:
        facts.append("cache hit")
    if producer.code_digest:
        facts.append(f"code {escape(_short(producer.code_digest))}")
    if producer.git_commit:
        facts.append(f"git {escape(producer.git_commit[:12])}{'+dirty' if producer.git_dirty else ''}")
    text = line + f"\nmade by stage [cyan]{escape(producer.stage)}[/] [dim]({', '.join(facts)})[/]"
    text += f"\n[dim]mlflow run {producer.mlflow_run_id} in experiment {producer.mlflow_experiment_id}[/]"
    if node.note:
        text += f"\n[yellow]{escape(node.note)}[/]"
    return text


def _short(digest: str) -> str:
    algo, _, hexpart = digest.rpartition(":")
    return f"{algo}:{hexpart[:12]}" if algo else digest[:12]


def _size(size_bytes: int) -> str:
    size = float(size_bytes)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size_bytes} B"


@click.command()
@click.argument("pipeline", metavar="[PIPELINE]", required=False)
@tracking_uri_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to serve the UI on.")
@click.option("--port", default=5000, show_default=True, type=int, help="Port to serve the UI on.")
def ui(pipeline: str | None, tracking_uri: str | None, host: str, port: int) -> None:
    """Serve the MLflow UI on the lineage store (until Ctrl-C), opened on PIPELINE's runs.

    PIPELINE is a pipeline name or file; without it, the pipeline that ran last.

    \b
    skyflow ui
    skyflow ui examples/rlhf/pipeline.yaml --port 5001
    """
    from skyflow.home import skyflow_home
    from skyflow.lineage.drain import wait_for_drain
    from skyflow.lineage.mlflow_client import artifact_root_for
    from skyflow.lineage.recorder import check_tracking_uri, describe_tracking, resolve_tracking_uri
    from skyflow.lineage.views import experiment_url, pipeline_experiment

    uri = resolve_tracking_uri(tracking_uri, skyflow_home())
    check_tracking_uri(uri)
    server = uri.startswith(("http://", "https://"))
    if not server:
        wait_for_drain(uri, skyflow_home())
    found = pipeline_experiment(uri, _pipeline_name(pipeline))
    base = uri if server else f"http://{host}:{port}"
    url = experiment_url(base, found[0]) if found else base
    what = (f"pipeline {found[1]}'s runs in the model-training view (select runs to compare their charts)"
            if found else "no skyflow runs yet")
    if server:
        click.echo(f"Lineage is on {describe_tracking(uri)}, which serves its own UI: open {url}\n  ({what})")
        return
    _need_mlflow_server()
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri]
    root = artifact_root_for(uri)
    if root:
        command += ["--default-artifact-root", root]
    command += ["--host", host, "--port", str(port), "--workers", "1"]
    # Without this the server forks a pool of job workers (~2 GB) that a UI does not need.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    click.echo(f"MLflow UI for {describe_tracking(uri)}: open {url}\n  ({what}; Ctrl-C to stop)")
    code = _serve_until_stopped(command, env)
    if code not in (0, None):
        from skyflow.errors import LineageError

        raise LineageError(f"the MLflow server exited with code {code}; see its output above.")


def _need_mlflow_server() -> None:
    """The UI is served by the full MLflow package (its server and web app), an extra of skyflow."""
    import importlib.util

    from skyflow.errors import LineageError

    ui_files = importlib.util.find_spec("mlflow.server")
    built = ui_files is not None and ui_files.origin is not None and os.path.isdir(
        os.path.join(os.path.dirname(ui_files.origin), "js", "build"))
    if importlib.util.find_spec("flask") is None or not built:
        raise LineageError("skyflow ui serves MLflow's own UI, which comes with the full MLflow package, not the "
                           "mlflow-skinny that skyflow needs for lineage: pip install 'mlflow>=3.17,<4' (the mlflow "
                           "extra of skyflow-llmops; lineage is recorded without it; a server elsewhere works too).")


def _serve_until_stopped(command: list[str], env: dict[str, str]) -> int | None:
    """Run the MLflow server in a process group of its own until it exits, or until Ctrl-C, SIGTERM
    or SIGHUP reach this process: then the whole group (mlflow server and its uvicorn workers) is
    stopped, so nothing is left holding the port. None when stopped that way."""
    import signal

    from skyflow.processes import kill_process_groups
    from skyflow.signals import MAIN_THREAD_WAKE_S

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGHUP)}
    proc: subprocess.Popen[bytes] | None = None
    try:
        proc = subprocess.Popen(command, env=env, start_new_session=True)
        while True:  # not one wait: the handler runs in this thread, which must wake (see skyflow.signals)
            with contextlib.suppress(subprocess.TimeoutExpired):
                return proc.wait(timeout=MAIN_THREAD_WAKE_S)
    except KeyboardInterrupt:
        return None
    finally:
        if proc is not None:
            kill_process_groups([proc.pid], own=[proc])
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _pipeline_name(pipeline: str | None) -> str | None:
    """A pipeline name as given, or the name inside a pipeline file."""
    if pipeline is None or not os.path.exists(pipeline.split(":")[0]):
        return pipeline
    from skyflow.spec.loader import load_pipeline

    return load_pipeline(pipeline).name
