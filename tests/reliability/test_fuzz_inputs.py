"""Fuzzing every input skyflow reads: each generated case is accepted or rejected with a SkyflowError.

Over 10,000 cases per run in total (see `CASES`): pipeline YAML mutated structurally and as text,
the Python API, catalog CSV and egress YAML files, `--set` and `--deadline`, cron strings and
artifact URIs. A file input that is rejected must say where: `FILE:LINE:COL` for pipelines, catalog
CSV and egress YAML files. No other exception, and no hang: each
case runs under an alarm, so a case that never returns fails the test instead of stalling CI.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import string
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase

from skyflow.catalog.sources import parse_vms_csv, read_egress
from skyflow.errors import CatalogError, SchedulerError, SkyflowError, SpecError
from skyflow.spec.loader import load_pipeline
from skyflow.spec.params import apply_overrides, parse_overrides

pytestmark = pytest.mark.fuzz

# Examples per property; the sum is the number of cases one run tries.
CASES = {
    "yaml_structure": 2600,
    "yaml_text": 1400,
    "python_api": 800,
    "catalog_csv": 1500,
    "egress_yaml": 1000,
    "set_flags": 1200,
    "deadline_flag": 150,
    "cron": 1000,
    "artifact_uris": 600,
}
HANG_S = 30  # far beyond any case's real cost: only a true hang trips it


# Failing examples are saved here and replayed first on every run (commit what it gains). Runs are
# seeded (the same cases each time, so a failure reproduces); SKYFLOW_FUZZ_EXPLORE=1 explores anew.
EXAMPLES = DirectoryBasedExampleDatabase(str(Path(__file__).parent / "fuzz-examples"))
SEED = 20261130


def fuzz_settings(name: str) -> Callable[[Any], Any]:
    chosen = settings(max_examples=CASES[name], deadline=None, database=EXAMPLES, print_blob=True,
                      suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                             HealthCheck.function_scoped_fixture, HealthCheck.data_too_large])

    def apply(test: Any) -> Any:
        test = chosen(test)
        return test if os.environ.get("SKYFLOW_FUZZ_EXPLORE") else seed(SEED)(test)
    return apply


@contextmanager
def no_hang(what: str) -> Iterator[None]:
    def stop(signum: int, frame: Any) -> None:
        raise AssertionError(f"hang: {what} did not return within {HANG_S} s")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.alarm(HANG_S)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def accepted_or_rejected(fn: Callable[[], Any], what: str, allowed: type[SkyflowError] = SkyflowError) -> Any:
    """fn's value, or the SkyflowError it raised; any other exception fails the test."""
    with no_hang(what):
        try:
            return fn()
        except allowed as exc:
            assert str(exc).strip(), f"{what}: empty error message"
            return exc


# -- values that break naive code ------------------------------------------------------------------
NASTY_STRINGS = ["", " ", "..", "../../etc/passwd", "/abs/path", "~", "$(touch pwned)", "`id`", "a'b\"c",
                 "line\nbreak", "\t", "\x00", "é🙂", "A100:0", "A100:-1", "H100:8", "1e309", "nan", "-1", "0",
                 "${params.nope}", "${params.lr}", "$${params.lr}", "s3://", "s3://b/k", "gs://b", "az://c/p",
                 "file:///tmp/x", "memory://x", "x" * 300, "*/5 * * * *", "99 99 99 99 99", "@daily", "2h",
                 "-5m", "1.5", "true", "null", "{", "[", ": x", "- y", "&a", "*a", "!!python/object:os.system"]
NASTY_SCALARS = st.one_of(
    st.sampled_from(NASTY_STRINGS), st.none(), st.booleans(), st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
)
NASTY_VALUES = st.recursive(NASTY_SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(["a", "run", "uri", "cpus", "x", ""]), inner,
                                                 max_size=3)), max_leaves=6)

BASE_PIPELINE: dict[str, Any] = {
    "name": "fuzz",
    "params": {"lr": 0.1, "steps": 10, "tag": "v1", "flag": True},
    "inputs": {"raw": {"uri": "s3://bucket/raw", "size_gb": 2}},
    "stages": {
        "prep": {"run": "echo ${params.tag}", "inputs": {"data": "raw"}, "outputs": {"clean": 1},
                 "resources": {"cpus": "2+", "memory": 4}, "envs": {"A": "1"}, "retries": 1},
        "train": {"run": "python train.py --lr ${params.lr}", "setup": "pip install x",
                  "inputs": {"data": "prep.clean"}, "outputs": ["model"],
                  "resources": {"accelerators": "A100:1", "use_spot": True,
                                "job_recovery": {"max_restarts_on_errors": 2}},
                  "estimate": {"hours": {"A100": 1}}, "timeout": "2h", "secrets": ["HF_TOKEN"]},
        "eval": {"run": "echo ok", "inputs": {"model": "train.model"}, "depends_on": ["prep"], "cache": False},
    },
    "schedule": {"cron": "0 3 * * 1", "timezone": "UTC", "on_change": ["raw"]},
}


def paths_of(tree: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(tree, dict):
        for key, value in tree.items():
            out += paths_of(value, (*prefix, key))
    elif isinstance(tree, list):
        for i, value in enumerate(tree):
            out += paths_of(value, (*prefix, i))
    return out


ALL_PATHS = paths_of(BASE_PIPELINE)[1:]


def mutated(tree: Any, path: tuple[Any, ...], op: str, value: Any, key: str) -> Any:
    """A deep copy of tree with one change at path: replace, delete, add a key, or rename."""
    tree = json.loads(json.dumps(tree))
    parent = tree
    for step in path[:-1]:
        parent = parent[step]
    last = path[-1]
    if op == "replace":
        parent[last] = value
    elif op == "delete":
        del parent[last]
    elif op == "add" and isinstance(parent[last], dict):
        parent[last][key] = value
    elif op == "rename" and isinstance(parent, dict):
        parent[key] = parent.pop(last)
    else:
        parent[last] = value
    return tree


def dump_yaml(tree: Any) -> str:
    from io import StringIO

    from ruamel.yaml import YAML

    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    out = StringIO()
    yaml.dump(tree, out)
    return out.getvalue()


POSITION = re.compile(r"\S+:\d+:\d+: ")


def check_pipeline_file(path: Path, overrides: dict[str, Any] | None = None) -> bool:
    """Load ``path``: a refusal must point into the file, an accepted pipeline must be whole. True if accepted."""
    result = accepted_or_rejected(lambda: load_pipeline(path, overrides), f"loading {path.name}", SpecError)
    if isinstance(result, SpecError):
        for issue in result.issues:
            assert issue.position is not None, f"no position for: {issue.render()}"
            assert Path(issue.position.file).name == path.name, issue.render()
            assert issue.position.line >= 1 and issue.position.col >= 1, issue.render()
        return False
    assert result.stages, "an accepted pipeline has stages"
    result.digest()  # an accepted pipeline is whole enough to fingerprint
    return True


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


# -- pipelines -------------------------------------------------------------------------------------
@fuzz_settings("yaml_structure")
@given(changes=st.lists(st.tuples(st.sampled_from(ALL_PATHS), st.sampled_from(["replace", "delete", "add", "rename"]),
                                  NASTY_VALUES, st.sampled_from(["run", "x", "inputs", "uri", "resources", "stages",
                                                                 "nodes", "cron", "..", ""])), min_size=1, max_size=3))
def test_structured_yaml_mutations(scratch: Path, changes: list[tuple[Any, ...]]) -> None:
    tree: Any = BASE_PIPELINE
    for path, op, value, key in changes:
        try:
            tree = mutated(tree, path, op, value, key)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier change removed this path
    try:
        text = dump_yaml(tree)
    except Exception:  # e.g. a NUL the emitter refuses: not a file a user could have written
        return
    path = scratch / "pipeline.yaml"
    path.write_text(text, encoding="utf-8")
    check_pipeline_file(path)


BASE_TEXT = dump_yaml(BASE_PIPELINE)
TEXT_NOISE = st.text(alphabet=string.printable + "\u00a0é🙂{}[]:-&*!|>'\"#%@`", max_size=8)


@fuzz_settings("yaml_text")
@given(edits=st.lists(st.tuples(st.integers(0, len(BASE_TEXT)), st.integers(0, 12), TEXT_NOISE), min_size=1,
                      max_size=4))
def test_textual_yaml_mutations(scratch: Path, edits: list[tuple[int, int, str]]) -> None:
    text = BASE_TEXT
    for at, cut, insert in edits:
        at = min(at, len(text))
        text = text[:at] + insert + text[at + cut:]
    path = scratch / "pipeline-text.yaml"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    check_pipeline_file(path)


PY_TEMPLATE = '''
from skyflow import Pipeline, Resources, stage, Input

@stage(resources=Resources(**{resources!r}), outputs={outputs!r}, **{options!r})
def work(data, outputs):
    pass

@Pipeline(name={name!r}, params={params!r}, inputs={{"data": Input(uri={uri!r})}})
def pipe(data, params):
    work(data={arg})
'''


@fuzz_settings("python_api")
@given(resources=st.dictionaries(st.sampled_from(["accelerators", "cpus", "memory", "cloud", "use_spot", "disk_size",
                                                  "bogus"]), NASTY_SCALARS, max_size=3),
       outputs=st.one_of(st.lists(st.sampled_from(["model", "bad name", "..", "x/y", ""]), max_size=2),
                         st.dictionaries(st.sampled_from(["model", "../up"]), NASTY_SCALARS, max_size=2)),
       options=st.dictionaries(st.sampled_from(["retries", "timeout", "num_nodes", "cache", "envs", "secrets",
                                                "depends_on", "estimate"]), NASTY_SCALARS, max_size=3),
       name=st.sampled_from(["ok", "bad name", "", "x" * 200, "a/b"]),
       params=st.dictionaries(st.sampled_from(["lr", "n", ""]), NASTY_SCALARS, max_size=2),
       uri=st.sampled_from(NASTY_STRINGS[:30]),
       arg=st.sampled_from(["data", "params.lr", "params.nope", "42", "None", "'../x'"]))
def test_python_api_calls(scratch: Path, resources: dict[str, Any], outputs: Any, options: dict[str, Any],
                          name: str, params: dict[str, Any], uri: str, arg: str) -> None:
    def literal(value: Any) -> Any:  # repr() of nan/inf is not Python source
        if isinstance(value, float) and not math.isfinite(value):
            return str(value)
        if isinstance(value, dict):
            return {k: literal(v) for k, v in value.items()}
        if isinstance(value, list):
            return [literal(v) for v in value]
        return value

    source = PY_TEMPLATE.format(resources=literal(resources), outputs=literal(outputs), options=literal(options),
                                name=name, params=literal(params), uri=uri, arg=arg)
    path = scratch / "fuzz_pipeline.py"
    path.write_text(source)
    result = accepted_or_rejected(lambda: load_pipeline(f"{path}:pipe"), "loading a Python pipeline", SpecError)
    if isinstance(result, SpecError):
        for issue in result.issues:
            assert issue.position is not None, f"no position for: {issue.render()}"
            assert issue.position.line >= 1, issue.render()


# -- catalog files ---------------------------------------------------------------------------------
CSV_HEADER = "InstanceType,AcceleratorName,AcceleratorCount,vCPUs,MemoryGiB,Price,SpotPrice,Region,AvailabilityZone"
CSV_CELLS = st.one_of(st.sampled_from(["", "p4d.24xlarge", "A100", "8", "96", "1152", "32.77", "9.8", "us-east-1",
                                       "us-east-1a", "nan", "-1", "1e400", "abc", '"q,uoted"', '"open', "V1,V2",
                                       "\r", "\ufeff"]), st.text(max_size=6))


@fuzz_settings("catalog_csv")
@given(header=st.one_of(st.just(CSV_HEADER), st.text(max_size=40),
                        st.lists(st.sampled_from(CSV_HEADER.split(",")), max_size=9).map(",".join)),
       rows=st.lists(st.lists(CSV_CELLS, max_size=11).map(",".join), max_size=6),
       newline=st.sampled_from(["\n", "\r\n", "\r"]))
def test_catalog_csv(header: str, rows: list[str], newline: str) -> None:
    text = newline.join([header, *rows])
    result = accepted_or_rejected(lambda: parse_vms_csv(text, "aws", "aws/vms.csv"), "parsing vms.csv",
                                  CatalogError)
    if isinstance(result, CatalogError):
        where = re.match(r"aws/vms\.csv:(\d+):(\d+): \S", str(result))
        assert where and result.path == "aws/vms.csv", str(result)
        physical_lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        line, col = int(where[1]), int(where[2])
        assert 1 <= line <= len(physical_lines), str(result)
        assert 1 <= col <= len(physical_lines[line - 1]) + 1, str(result)
    else:
        for offer in result:
            assert offer.region, offer


EGRESS_VALUES = st.recursive(
    st.one_of(NASTY_SCALARS, st.sampled_from([0.09, {"first_gb": 10, "usd_per_gb": 0.1}, "aws/*", "gcp/us-*"])),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(
        st.sampled_from(["rules", "clouds", "aws", "gcp", "from", "to", "usd_per_gb", "tiers", "internet",
                         "same_region", "inter_region", "x"]), inner, max_size=4)), max_leaves=10)


@fuzz_settings("egress_yaml")
@given(tree=EGRESS_VALUES, raw=st.booleans(), noise=TEXT_NOISE)
def test_egress_yaml(scratch: Path, tree: Any, raw: bool, noise: str) -> None:
    path = scratch / "egress.yaml"
    try:
        text = noise if raw else dump_yaml(tree)
    except Exception:
        return
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    result = accepted_or_rejected(lambda: read_egress(str(path), None), "reading egress.yaml", CatalogError)
    if isinstance(result, CatalogError):
        where = re.match(rf"{re.escape(str(path))}:(\d+):(\d+): \S", str(result))
        assert where and result.path == str(path), str(result)
        yaml_lines = re.split(r"\r\n|[\n\r\x85\u2028\u2029]", text)
        assert 1 <= int(where[1]) <= len(yaml_lines) and int(where[2]) >= 1, str(result)


# -- CLI flags -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_pipeline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("flags") / "flags.yaml"
    path.write_text(dump_yaml({"name": "flags", "params": {"lr": 0.1, "steps": 10, "tag": "v1", "flag": True,
                                                           "opt": None},
                               "stages": {"a": {"run": "echo ${params.tag} ${params.steps}"}}}))
    return path


@fuzz_settings("set_flags")
@given(pairs=st.lists(st.one_of(
    st.tuples(st.sampled_from(["lr", "steps", "tag", "flag", "opt", "nope", "", " lr "]),
              st.sampled_from(["=", "", "=="]), st.one_of(st.sampled_from(NASTY_STRINGS), st.text(max_size=10)))
    .map("".join), st.text(max_size=15)), max_size=4))
def test_set_flags(small_pipeline: Path, pairs: list[str]) -> None:
    overrides = accepted_or_rejected(lambda: parse_overrides(pairs), "parsing --set", SpecError)
    if isinstance(overrides, SpecError):
        return
    defaults = {"lr": 0.1, "steps": 10, "tag": "v1", "flag": True, "opt": None}
    merged = accepted_or_rejected(lambda: apply_overrides(defaults, overrides), "applying --set", SpecError)
    if isinstance(merged, SpecError):
        return
    check_pipeline_file(small_pipeline, overrides)


def plan_with_deadline(pipeline: Path, value: str) -> Any:
    from skyflow.cli.main import cli

    return CliRunner().invoke(cli, ["plan", str(pipeline), "--deadline", value, "--json"], catch_exceptions=True)


@fuzz_settings("deadline_flag")
@given(value=st.one_of(st.sampled_from(["", "1e309", "inf", "2h", "abc", "0.001", "1e-300", "10",
                                        "$(touch pwned)"]), st.floats(min_value=1e-300).map(repr),
                       st.text(max_size=6)))
def test_deadline_flag(small_pipeline: Path, value: str) -> None:
    """click rejects what is not a number (exit 2); skyflow plans, or rejects with a SkyflowError."""
    result = accepted_or_rejected(lambda: plan_with_deadline(small_pipeline, value), "skyflow plan --deadline")
    # `cli` is the command group under `main`, which prints a SkyflowError and exits 2.
    if isinstance(result.exception, SkyflowError):
        return
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"--deadline {value!r} raised {result.exception!r}") from result.exception
    assert result.exit_code in (0, 2), (value, result.exit_code, result.output)


@pytest.mark.parametrize("flag", ["--deadline", "--max-cost"])
@pytest.mark.parametrize("value", ["0", "-1", "-0.5", "-inf"])
def test_a_deadline_or_budget_that_is_not_positive_is_a_user_error(small_pipeline: Path, flag: str,
                                                                  value: str) -> None:
    from skyflow.cli.main import cli

    result = CliRunner().invoke(cli, ["plan", str(small_pipeline), flag, value, "--json"], catch_exceptions=True)
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == 2
    assert flag in result.output and "x>0" in result.output, result.output


# -- cron strings ----------------------------------------------------------------------------------
CRON_FIELDS = st.sampled_from(["*", "0", "59", "60", "*/5", "*/0", "1-5", "5-1", "1,2,3", "L", "W", "#", "?", "MON",
                               "jan", "-1", "99999999999", "1/0", "", "0-", "*/", "H"])


@fuzz_settings("cron")
@given(cron=st.one_of(st.lists(CRON_FIELDS, min_size=1, max_size=7).map(" ".join), st.text(max_size=20),
                      st.sampled_from(["@daily", "@hourly", "@reboot", "@yearly", "0 0 30 2 *", "0 0 31 4 *"])),
       timezone=st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", "Mars/Olympus", "", "../../etc"]),
       at=st.floats(0, 4e9))
def test_cron_strings(scratch: Path, cron: str, timezone: str, at: float) -> None:
    """Cron lines reach the scheduler only through a pipeline's schedule block: what the spec accepts,
    the scheduler's arithmetic must handle."""
    from skyflow.scheduler.timing import due_ticks, next_tick

    tree = mutated(BASE_PIPELINE, ("schedule", "cron"), "replace", cron, "")
    tree["schedule"]["timezone"] = timezone
    path = scratch / "cron.yaml"
    try:
        path.write_text(dump_yaml(tree), encoding="utf-8")
    except Exception:
        return
    if not check_pipeline_file(path):
        return
    tick = accepted_or_rejected(lambda: next_tick(cron, timezone, at), f"next_tick({cron!r})", SchedulerError)
    assert not isinstance(tick, SchedulerError), f"the spec accepted {cron!r} but the scheduler rejects it: {tick}"
    assert tick > at
    accepted_or_rejected(lambda: due_ticks(cron, timezone, at, at + 86400), "due_ticks", SchedulerError)


def test_a_cron_that_never_fires_is_a_spec_error(scratch: Path) -> None:
    path = scratch / "never.yaml"
    tree = mutated(BASE_PIPELINE, ("schedule", "cron"), "replace", "0 0 30 2 *", "")
    path.write_text(dump_yaml(tree))
    with pytest.raises(SpecError, match=r"never\.yaml:\d+:\d+: .*'0 0 30 2 \*' never fires"):
        load_pipeline(path)


# -- artifact URIs ---------------------------------------------------------------------------------
URI_PARTS = st.one_of(st.sampled_from(NASTY_STRINGS), st.text(alphabet=string.printable, max_size=12))
URI = st.tuples(st.sampled_from(["s3://", "gs://", "az://", "file://", "memory://", "ftp://", "S3://", "://", "",
                                 "hdfs://", "c:", "s3:/"]), URI_PARTS).map("".join)


@fuzz_settings("artifact_uris")
@given(uri=URI, where=st.sampled_from(["input", "store", "ref"]))
def test_artifact_uris(scratch: Path, uri: str, where: str) -> None:
    """URIs as a pipeline input and as a stage's store are checked by the spec; as a stored reference,
    one that names an unknown or unreachable scheme is an ArtifactError (no network: only local and
    in-memory stores are opened)."""
    if where == "ref":
        from skyflow.artifacts.refs import ArtifactRef

        scheme = uri.partition("://")[0].lower() if "://" in uri else ""
        if scheme in ("s3", "gs", "az", "hdfs"):
            return  # would reach a real cloud
        data = {"name": "x", "uri": uri, "digest": "sha256:00", "size_bytes": "1", "file_count": 1,
                "store_uri": uri if scheme else str(scratch / "store")}
        accepted_or_rejected(lambda: ArtifactRef.from_dict(data), "opening an artifact reference")
        return
    tree = json.loads(json.dumps(BASE_PIPELINE))
    if where == "input":
        tree["inputs"]["raw"]["uri"] = uri
        tree["stages"]["eval"]["inputs"]["extra"] = uri
    else:
        tree["stores"] = {"aws": uri}
    path = scratch / "uris.yaml"
    try:
        path.write_text(dump_yaml(tree), encoding="utf-8")
    except Exception:
        return
    check_pipeline_file(path)


def test_every_property_counts_toward_ten_thousand_cases() -> None:
    assert sum(CASES.values()) >= 10_000
    tests = {name.removeprefix("test_") for name in globals() if name.startswith("test_")}
    assert {"structured_yaml_mutations", "textual_yaml_mutations", "python_api_calls", "catalog_csv", "egress_yaml",
            "set_flags", "deadline_flag", "cron_strings", "artifact_uris"} <= tests
