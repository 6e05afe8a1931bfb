"""Shell completion of pipelines and run ids (never a traceback into the shell), the params section of
`--help` for pipelines without params or comments, the lineage tree's labels, and how the CLI ends
on an interrupt."""

from __future__ import annotations

import io
from pathlib import Path

import click
import pytest
from rich.console import Console

from skyflow.artifacts import ArtifactRecord
from skyflow.cli.lineage_commands import render_lineage
from skyflow.cli.options import _param_comments, complete_pipeline, complete_run_id
from skyflow.lineage.records import LineageNode, Producer
from skyflow.runner.state import RunStore
from tests.unit.cli.cli_helpers import run

CTX = click.Context(click.Command("skyflow"))
PARAM = click.Argument(["target"])


def completions(items: list[click.shell_completion.CompletionItem]) -> list[tuple[str, str | None]]:
    return [(item.value, item.help) for item in items]


def test_pipeline_completion_offers_pipelines_and_folders_not_hidden_files(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("train.yaml", "tune.py", "notes.txt", ".hidden.yaml"):
        (tmp_path / name).write_text("")
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "nightly.yml").write_text("")
    assert [i.value for i in complete_pipeline(CTX, PARAM, "")] == ["pipelines/", "train.yaml", "tune.py"]
    assert [i.value for i in complete_pipeline(CTX, PARAM, "t")] == ["train.yaml", "tune.py"]
    assert [i.value for i in complete_pipeline(CTX, PARAM, ".")] == [".hidden.yaml"]
    assert [i.value for i in complete_pipeline(CTX, PARAM, "pipelines/n")] == ["pipelines/nightly.yml"]
    assert complete_pipeline(CTX, PARAM, "missing/x") == []


def test_run_id_completion_lists_matching_runs_and_stays_quiet_on_a_broken_db(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SKYFLOW_HOME", str(tmp_path))
    assert complete_run_id(CTX, PARAM, "") == []
    assert not (tmp_path / "state.db").exists()  # completion creates nothing
    state = RunStore(tmp_path / "state.db")
    for run_id in ("rlhf-1", "rlhf-2", "eval-1"):
        state.create_run(run_id, run_id.split("-")[0], "p.yaml", "d", {}, {}, None, ["a"], None)
    assert sorted(completions(complete_run_id(CTX, PARAM, "rlhf"))) == [("rlhf-1", "rlhf running"),
                                                                        ("rlhf-2", "rlhf running")]
    (tmp_path / "state.db").unlink()
    for leftover in tmp_path.glob("state.db-*"):
        leftover.unlink()
    (tmp_path / "state.db").write_bytes(b"this is not a database" * 100)
    assert complete_run_id(CTX, PARAM, "") == []


def test_help_after_a_pipeline_without_params_says_none(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "p.yaml").write_text("name: bare\nstages:\n  a: {run: echo}\n")
    code, out, _ = run(["run", str(tmp_path / "p.yaml"), "--help"], capsys)
    assert code == 0
    assert f"Params of {tmp_path / 'p.yaml'} (set with --set NAME=VALUE):\n  (none)" in out


def test_param_comments_are_read_from_yaml_only_and_never_fail(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text("params:\n  scale: demo  # demo | full\n  seed: 1\n")
    assert _param_comments(str(tmp_path / "p.yaml")) == {"scale": "demo | full"}
    assert _param_comments(str(tmp_path / "pipeline.py:rlhf")) == {}
    (tmp_path / "list.yaml").write_text("- not\n- a mapping\n")
    assert _param_comments(str(tmp_path / "list.yaml")) == {}


def rendered(node: LineageNode) -> str:
    out = io.StringIO()
    Console(file=out, width=300, color_system=None).print(render_lineage(node))
    return out.getvalue()


def test_the_lineage_tree_says_cache_hits_notes_and_repeated_producers() -> None:
    raw = LineageNode(ArtifactRecord("raw", "s3://data/raw", "sha256:" + "1" * 64, 2_000_000_000_000), None)
    prep = Producer(run_id="r1", pipeline="rlhf", stage="prep", state="succeeded", cache_hit=True, code_digest=None,
                    git_commit=None, git_dirty=None, started_at=None, mlflow_run_id="m1", mlflow_experiment_id="7")
    rows = LineageNode(ArtifactRecord("rows", "/store/manifests/x.json", "sha256:" + "2" * 64, 1500), prep,
                       (raw,), note="the depth limit stops this branch")
    twice = LineageNode(ArtifactRecord("rows", "/store/manifests/x.json", "sha256:" + "2" * 64, 1500), prep)
    train = Producer(run_id="r1", pipeline="rlhf", stage="train", state="succeeded", cache_hit=False,
                     code_digest="sha256:" + "c" * 64, git_commit="0123456789abcdef", git_dirty=True,
                     started_at=None, mlflow_run_id="m2", mlflow_experiment_id="7")
    model = LineageNode(ArtifactRecord("model", "/store/manifests/y.json", "sha256:" + "3" * 64, None), train,
                        (rows, twice))
    text = rendered(model)
    assert "made by stage train (run r1, pipeline rlhf, succeeded, code sha256:cccccccccccc, git 0123456789ab+dirty)" \
        in text
    assert "made by stage prep (run r1, pipeline rlhf, succeeded, cache hit)" in text
    assert "the depth limit stops this branch" in text
    assert "made by stage prep (shown above)" in text
    assert "raw  s3://data/raw  sha256:111111111111  2.0 TB" in text
    assert "rows  /store/manifests/x.json  sha256:222222222222  1.5 KB" in text


def test_ctrl_c_in_a_command_ends_the_cli_with_130(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SKYFLOW_HOME", str(tmp_path))

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("skyflow.runner.run_reads.find_run", interrupted)
    assert run(["status"], capsys) == (130, "", "\nAborted.\n")


def test_an_unknown_command_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["stauts"], capsys)
    assert code == 2 and err.startswith("Error: no such command 'stauts'. Did you mean status? Commands: artifacts, ")


def test_the_process_entry_point_runs_main_then_skips_the_final_collections(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib
    import tomllib

    cli_main = importlib.import_module("skyflow.cli.main")
    client = importlib.import_module("skyflow.cli.daemon.client")

    scripts = tomllib.loads((Path(__file__).parents[3] / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["skyflow"] == "skyflow.cli.daemon.client:main"
    assert cli_main.__file__ is not None
    dunder_main = Path(cli_main.__file__).parent.parent / "__main__.py"
    assert "from skyflow.cli.daemon.client import main" in dunder_main.read_text()
    calls: list[str] = []

    def exits() -> None:
        calls.append("main")
        raise SystemExit(3)

    monkeypatch.setattr(cli_main, "main", exits)
    monkeypatch.setattr("skyflow.processes.skip_final_collections", lambda: calls.append("freeze"))
    monkeypatch.setattr(client, "forward", lambda argv: None)  # no daemon serves it: this process runs it
    with pytest.raises(SystemExit) as ended:
        client.main()
    assert ended.value.code == 3 and calls == ["main", "freeze"]
    monkeypatch.setattr(client, "forward", lambda argv: 5)  # a daemon ran it: its status, nothing loaded here
    with pytest.raises(SystemExit) as ended:
        client.main()
    assert ended.value.code == 5 and calls == ["main", "freeze"]
