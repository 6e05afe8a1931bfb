"""Secrets never stored, unsafe paths refused, hostile strings passed through but never executed."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from skyflow.artifacts.commit import commit_output
from skyflow.artifacts.manifest import digest_bytes
from skyflow.artifacts.refs import ArtifactRef, manifest_key
from skyflow.artifacts.store import open_store
from skyflow.artifacts.sync import fetch_artifact
from skyflow.errors import ArtifactError, SpecError
from skyflow.spec.loader import load_pipeline
from tests.integration.lineage.conftest import MlflowServer
from tests.integration.runner.conftest import Skyflow

pytestmark = pytest.mark.integration

SECRETS = {"HF_TOKEN": "hf_Zq9XsecretTOKEN7741", "DB_PASSWORD": "pa$$w0rd-'quoted'-9d2e"}
LEAKY = """\
name: leaky
secrets: [HF_TOKEN]
params: {note: plain}
stages:
  print:
    secrets: [DB_PASSWORD]
    run: |
      echo "token=$HF_TOKEN"
      echo "password: $DB_PASSWORD" >&2
      printf 'twice %s %s no newline' "$HF_TOKEN" "$HF_TOKEN"
      echo
      echo "$SKYFLOW_PARAMS"
      echo ok > $SKYFLOW_OUTPUT_O/o
    outputs: [o]
  after:
    inputs: {o: print.o}
    secrets: [HF_TOKEN]
    run: 'echo "again $HF_TOKEN"; echo after > $SKYFLOW_OUTPUT_O/o'
    outputs: [o]
"""


def files_holding(root: Path, values: list[str]) -> list[str]:
    """Every file under root (databases, WAL files, logs, artifacts, spools) that holds a value."""
    found = []
    needles = [v.encode() for v in values]
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            found += [f"{path}: {needle.decode()}" for needle in needles if needle in data]
    return found


def run_leaky(skyflow: Skyflow, extra_env: dict[str, str]) -> list[str]:
    """Run the leaky pipeline, then collect what every reading command prints."""
    skyflow.write("leaky.yaml", LEAKY)
    code, status, stderr = skyflow.run_json("leaky.yaml", env={**SECRETS, **extra_env})
    assert code == 0, stderr
    run_id = status["run_id"]
    texts = [json.dumps(status), stderr]
    log = skyflow("logs", run_id, "print", check=True).stdout
    assert re.search(r"token=\*+\npassword: \*+\ntwice \*+ \*+ no newline", log), log
    texts.append(log)
    texts.append(skyflow("logs", run_id, "after", check=True).stdout)
    texts.append(skyflow("status", run_id, check=True).stdout)
    texts.append(skyflow("runs", check=True).stdout)
    texts.append(skyflow("plan", "leaky.yaml", env=SECRETS, check=True).stdout)
    texts.append(skyflow("plan", "leaky.yaml", "--json", env=SECRETS, check=True).stdout)
    uri = status["stages"]["after"]["outputs"]["o"]["uri"]
    lineage = skyflow("lineage", uri, env={**SECRETS, **extra_env}, check=True)
    assert "after" in lineage.stdout and "print" in lineage.stdout
    texts += [lineage.stdout, lineage.stderr]
    return texts


def test_secrets_printed_by_stages_are_nowhere_in_state_logs_plan_or_sqlite_lineage(skyflow: Skyflow) -> None:
    texts = run_leaky(skyflow, {})
    assert (skyflow.home / "mlflow.db").is_file()
    values = list(SECRETS.values())
    assert [t for t in texts if any(v in t for v in values)] == []
    assert files_holding(skyflow.home, values) == []
    assert files_holding(skyflow.workdir, values) == []


@pytest.mark.xdist_group("reliability")
def test_secrets_are_nowhere_in_a_tracking_servers_store(skyflow: Skyflow, tmp_path: Path) -> None:
    server = MlflowServer(tmp_path / "server")
    server.root.mkdir()
    server.start()
    try:
        texts = run_leaky(skyflow, {"MLFLOW_TRACKING_URI": server.uri})
    finally:
        server.stop()
    values = list(SECRETS.values())
    assert [t for t in texts if any(v in t for v in values)] == []
    logs = [path.read_text(errors="replace") for path in (server.root / "artifacts").rglob("*.log")]
    printed = [text for text in logs if re.search(r"token=\*+\npassword: \*+\ntwice \*+ \*+ no newline", text)]
    assert printed, f"the server holds no stage log with the stage's masked lines: {logs}"
    assert files_holding(server.root, values) == []
    assert files_holding(skyflow.home, values) == []


# -- paths -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["../up", "/abs", "a/b", "..", "a.b"])
def test_output_names_that_are_paths_are_rejected(tmp_path: Path, name: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(f"name: p\nstages:\n  a:\n    run: 'true'\n    outputs: ['{name}']\n")
    with pytest.raises(SpecError, match=r"p\.yaml:5:\d+: .*artifact name"):
        load_pipeline(path)


def test_a_symlink_out_of_the_output_dir_fails_the_stage_and_commits_nothing(skyflow: Skyflow, tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("not yours")
    skyflow.write("link.yaml", f"""\
name: link
stages:
  escape:
    run: 'ln -s {outside} $SKYFLOW_OUTPUT_O/leak; ln -s {tmp_path} $SKYFLOW_OUTPUT_O/dir'
    outputs: [o]
""")
    code, status, _ = skyflow.run_json("link.yaml", "--no-lineage")
    assert code == 1 and status["stages"]["escape"]["state"] == "failed"
    assert status["stages"]["escape"]["outputs"] == {}
    store = open_store(str(tmp_path / "store"))
    with pytest.raises(ArtifactError, match="symlink points outside"):
        commit_output(store, _escaping_dir(tmp_path), name="o")
    assert store.list_keys("manifests/") == {}


def _escaping_dir(tmp_path: Path) -> Path:
    out = tmp_path / "out"
    out.mkdir()
    (out / "ok").write_text("fine")
    (out / "leak").symlink_to(tmp_path / "outside.txt")
    return out


@pytest.mark.parametrize("evil", ["../escaped", "/tmp/escaped-abs", "a/../../escaped", "..\\escaped", "c:/x"])
def test_fetching_a_forged_manifest_never_writes_outside_the_target(tmp_path: Path, evil: str) -> None:
    store = open_store(str(tmp_path / "store"))
    body = b"payload"
    store.write_bytes(f"blobs/{digest_bytes(body)}", body)
    forged = json.dumps({"version": 1, "kind": "dir", "files": [[evil, digest_bytes(body), len(body)]]},
                        separators=(",", ":"), sort_keys=True).encode()
    digest = digest_bytes(forged)
    store.write_bytes(manifest_key(digest), forged)
    ref = ArtifactRef(name="x", uri=store.url(manifest_key(digest)), digest=digest, size_bytes=7, file_count=1,
                      store=store)
    target = tmp_path / "fetch" / "here"
    with pytest.raises(ArtifactError, match=r"leave the artifact directory|outside"):
        fetch_artifact(ref, target)
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.read_bytes() == body]
    assert [p.relative_to(tmp_path).parts[0] for p in written] == ["store"]
    assert not Path("/tmp/escaped-abs").exists()


def test_fetching_through_a_symlink_planted_in_the_target_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "src"
    (source / "sub").mkdir(parents=True)
    (source / "sub" / "f").write_text("data")
    store = open_store(str(tmp_path / "store"))
    ref = commit_output(store, source, name="x")
    target = tmp_path / "target"
    target.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (target / "sub").symlink_to(elsewhere)
    with pytest.raises(ArtifactError, match="outside"):
        fetch_artifact(ref, target)
    assert list(elsewhere.iterdir()) == []


# -- shells ----------------------------------------------------------------------------------------
HOSTILE = ["it's \"quoted\"", "$(touch {canary})", "`touch {canary}`", "a\nb\n; touch {canary}", "$HOME ${PATH} \\n",
           "; touch {canary} #", "| touch {canary}", "&& touch {canary}"]


def test_hostile_params_and_envs_reach_the_stage_verbatim_and_run_nothing(skyflow: Skyflow, tmp_path: Path) -> None:
    canary = tmp_path / "CANARY"
    values = [v.replace("{canary}", str(canary)) for v in HOSTILE]
    envs = "\n".join(f"      E{i}: {json.dumps(v)}" for i, v in enumerate(values))
    copies = "; ".join(f"printf '%s' \"$E{i}\" > $SKYFLOW_OUTPUT_O/e{i}" for i in range(len(values)))
    skyflow.write("hostile.yaml", f"""\
name: hostile
params: {{p: plain}}
stages:
  echo:
    envs:
{envs}
    run: |
      {copies}
      printf "%s" "$SKYFLOW_PARAM_P" > $SKYFLOW_OUTPUT_O/param
      printf "%s" "$SKYFLOW_PARAMS" > $SKYFLOW_OUTPUT_O/params
    outputs: [o]
""")
    for value in values:
        code, status, stderr = skyflow.run_json("hostile.yaml", "--set", f"p={value}", "--no-cache",
                                                env={"HOSTILE": value})
        assert code == 0, stderr
        run_dir = _fetched(skyflow, status, tmp_path / status["run_id"])
        assert (run_dir / "param").read_text() == value
        assert json.loads((run_dir / "params").read_text())["p"] == value
        assert [(run_dir / f"e{i}").read_text() for i in range(len(values))] == values
    assert not canary.exists(), "skyflow executed a param or env value"
    assert not any(p.name == "CANARY" for p in skyflow.workdir.rglob("*"))


def _fetched(skyflow: Skyflow, status: dict[str, Any], dest: Path) -> Path:
    out = status["stages"]["echo"]["outputs"]["o"]
    store = open_store(out["uri"].split("/manifests/")[0].removeprefix("file://"))
    ref = ArtifactRef(name="o", uri=out["uri"], digest=out["digest"], size_bytes=out["size_bytes"], file_count=0,
                      store=store)
    return fetch_artifact(ref, dest)


def test_a_hostile_run_id_is_refused_or_kept_verbatim_and_never_executed(skyflow: Skyflow, tmp_path: Path) -> None:
    canary = tmp_path / "CANARY2"
    skyflow.write("ids.yaml", "name: ids\nstages:\n  a: {run: 'echo $SKYFLOW_RUN_ID > $SKYFLOW_OUTPUT_O/id', "
                              "outputs: [o]}\n")
    run_id = f"x$(touch {canary})"
    result = skyflow("run", "ids.yaml", "--run-id", run_id, "--no-lineage", "--json")
    assert not canary.exists()
    assert result.returncode == 2 and "run id" in result.stderr and "not allowed" in result.stderr, result.stderr
    assert skyflow("run", "ids.yaml", "--run-id", "ci-3f2a.9_c", "--no-lineage").returncode == 0


def test_a_skyflow_home_holding_shell_syntax_is_never_expanded(tmp_path: Path) -> None:
    """Stage scripts live under SKYFLOW_HOME; the wrapper that starts them quotes their paths."""
    work = tmp_path / "work"
    work.mkdir()
    sky = Skyflow(tmp_path / 'home "$(touch CANARY)" `touch CANARY2` $HOME', work)
    sky.write("p.yaml", "name: p\nstages:\n  s: {setup: 'true', run: 'echo ran > \"$SKYFLOW_OUTPUT_O/o\"', "
              "outputs: [o]}\n")
    code, status, err = sky.run_json("p.yaml", "--no-lineage", "--infra", "local")
    assert code == 0, err
    assert status["stages"]["s"]["state"] == "succeeded"
    assert list(tmp_path.rglob("CANARY*")) == []
