"""Malformed pipelines: each is rejected with FILE:LINE:COL, the bad value, and a fix — no traceback."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from skyflow.cli.main import main
from skyflow.errors import SpecError
from skyflow.spec.loader import load_pipeline

OK_STAGE = "    run: 'true'\n"

# (id, yaml, line, col, fragments that must appear in the message)
CASES: list[tuple[str, str, int, int, tuple[str, ...]]] = [
    ("tab-indent", "name: x\nstages:\n\ta: 1\n", 3, 1, ("invalid YAML", "tab")),
    # found by the fuzzer once (a complex key made ruamel raise TypeError): kept as a regression case
    ("complex-key", "? a: {b: 1}\n", 1, 3, ("a mapping key must be a plain name",)),
    ("complex-key-in-stage", "name: x\nstages:\n  ? {a: 1}\n  : {run: x}\n", 3, 5, ("must be letters",)),
    ("deep-nesting", "a: " + "[" * 3000 + "]" * 3000 + "\n", 1, 1, ("nested too deeply",)),
    ("unclosed-flow", "name: x\nstages: {a: {run: x}\n", 3, 1, ("invalid YAML",)),
    ("duplicate-key", "name: x\nname: y\nstages: {a: {run: x}}\n", 2, 1, ("duplicate key", "name")),
    ("duplicate-stage", "name: x\nstages:\n  a: {run: x}\n  a: {run: y}\n", 4, 3, ("duplicate key", '"a"')),
    ("empty-file", "", 1, 1, ("empty",)),
    ("top-level-list", "- a\n- b\n", 1, 1, ("must be a mapping",)),
    ("missing-name", "stages:\n  a: {run: x}\n", 1, 1, ("missing required field 'name'",)),
    ("bad-name", "name: 'my pipeline'\nstages: {a: {run: x}}\n", 1, 7, ("name", "my pipeline")),
    ("no-stages", "name: x\n", 1, 1, ("missing required field 'stages'",)),
    ("empty-stages", "name: x\nstages: {}\n", 2, 9, ("stages",)),
    ("unknown-top-key", "name: x\nstagse: {}\nstages: {a: {run: x}}\n", 2, 1, ("unknown field 'stagse'", "stages")),
    ("top-level-resources", "name: x\nresources: {}\nstages: {a: {run: x}}\n", 2, 1, ("resources belong to each stage",)),
    ("unknown-stage-key", "name: x\nstages:\n  a:\n    rnu: x\n    run: x\n", 4, 5, ("unknown field 'rnu'", "run")),
    ("stage-gpus", "name: x\nstages:\n  a:\n    run: x\n    resources: {gpus: A100:8}\n", 5, 17,
     ("unknown field 'gpus'", "accelerators: A100:8")),
    ("accelerators-at-stage", "name: x\nstages:\n  a:\n    run: x\n    accelerators: A100:1\n", 5, 5,
     ("belongs under resources",)),
    ("misspelt-accelerator", "name: x\nstages:\n  a:\n    run: x\n    resources: {accelerators: H10:8}\n", 5, 31,
     ("no such accelerator 'H10'", "H100")),
    ("accelerator-zero", "name: x\nstages:\n  a:\n    run: x\n    resources: {accelerators: 'A100:0'}\n", 5, 31,
     ("count",)),
    ("accelerator-1.5", "name: x\nstages:\n  a:\n    run: x\n    resources: {accelerators: 'A100:1.5'}\n", 5, 31,
     ("whole number or a fraction",)),
    ("accelerator-count-word", "name: x\nstages:\n  a:\n    run: x\n    resources: {accelerators: 'A100:eight'}\n",
     5, 31, ("count must be a number", "eight")),
    ("cpus-word", "name: x\nstages:\n  a:\n    run: x\n    resources: {cpus: many}\n", 5, 23, ("cpus", "many", "'8+'")),
    ("memory-negative", "name: x\nstages:\n  a:\n    run: x\n    resources: {memory: -4}\n", 5, 25, ("memory", "-4")),
    ("unknown-cloud", "name: x\nstages:\n  a:\n    run: x\n    resources: {cloud: awz}\n", 5, 24, ("unknown cloud 'awz'", "aws")),
    ("unknown-infra-cloud", "name: x\nstages:\n  a:\n    run: x\n    resources: {infra: gpc/us-central1}\n", 5, 24,
     ("unknown cloud 'gpc'", "gcp")),
    ("infra-and-cloud", "name: x\nstages:\n  a:\n    run: x\n    resources: {infra: aws, cloud: aws}\n", 5, 16,
     ("infra or cloud",)),
    ("use-spot-word", "name: x\nstages:\n  a:\n    run: x\n    resources: {use_spot: maybe}\n", 5, 27, ("use_spot", "maybe")),
    ("disk-tier", "name: x\nstages:\n  a:\n    run: x\n    resources: {disk_tier: fast}\n", 5, 28,
     ("must be one of", "fast")),
    ("bad-port", "name: x\nstages:\n  a:\n    run: x\n    resources: {ports: http}\n", 5, 24, ("ports", "http")),
    ("num-nodes-zero", "name: x\nstages:\n  a:\n    run: x\n    num_nodes: 0\n", 5, 16, ("num_nodes", "0")),
    ("num-nodes-word", "name: x\nstages:\n  a:\n    run: x\n    num_nodes: two\n", 5, 16, ("num_nodes", "two")),
    ("retries-negative", "name: x\nstages:\n  a:\n    run: x\n    retries: -1\n", 5, 14, ("retries", "-1")),
    ("cache-word", "name: x\nstages:\n  a:\n    run: x\n    cache: sometimes\n", 5, 12, ("cache", "sometimes")),
    ("timeout-word", "name: x\nstages:\n  a:\n    run: x\n    timeout: soon\n", 5, 14, ("duration", "soon", "2h")),
    ("nothing-to-run", "name: x\nstages:\n  a:\n    retries: 1\n", 4, 5, ("nothing to run", "run:")),
    ("estimate-unknown-acc", "name: x\nstages:\n  a:\n    run: x\n    estimate: {hours: {A1000: 3}}\n", 5, 23,
     ("estimate", "A1000", "A100")),
    ("estimate-negative", "name: x\nstages:\n  a:\n    run: x\n    estimate: {hours: -2}\n", 5, 23, ("positive",)),
    ("bad-output-name", "name: x\nstages:\n  a:\n    run: x\n    outputs: {my-model: {}}\n", 5, 14, ("my-model",)),
    ("output-size-word", "name: x\nstages:\n  a:\n    run: x\n    outputs: {model: {size_gb: big}}\n", 5, 32, ("size_gb", "big")),
    ("unknown-input-ref", "name: x\nstages:\n  a:\n    run: x\n    inputs: {d: prfs}\ninputs: {prefs: s3://b/p}\n", 5, 17,
     ("'prfs'", "prefs")),
    ("unknown-stage-ref", "name: x\nstages:\n  sft: {run: x, outputs: [model]}\n  b:\n    run: x\n    inputs: {m: sfy.model}\n",
     6, 17, ("names no stage 'sfy'", "sft.model")),
    ("undeclared-output", "name: x\nstages:\n  sft: {run: x, outputs: [model]}\n  b:\n    run: x\n    inputs: {m: sft.modle}\n",
     6, 17, ("declares no output 'modle'", "sft.model")),
    ("self-input", "name: x\nstages:\n  a:\n    run: x\n    outputs: [m]\n    inputs: {m: a.m}\n", 6, 17, ("its own output",)),
    ("cycle", "name: x\nstages:\n  a: {run: x, outputs: [o], inputs: {i: b.o}}\n  b: {run: x, outputs: [o], inputs: {i: a.o}}\n",
     3, 3, ("cycle", "a -> b -> a")),
    ("depends-unknown", "name: x\nstages:\n  a: {run: x}\n  b:\n    run: x\n    depends_on: [aa]\n", 6, 18, ("no stage named 'aa'",)),
    ("depends-self", "name: x\nstages:\n  a:\n    run: x\n    depends_on: a\n", 5, 17, ("itself",)),
    ("depends-cycle", "name: x\nstages:\n  a: {run: x, depends_on: [b]}\n  b: {run: x, depends_on: [a]}\n", 3, 3, ("cycle",)),
    ("stage-input-clash", "name: x\ninputs: {a: s3://b/k}\nstages:\n  a: {run: x}\n", 4, 3, ("both a stage and a pipeline input",)),
    ("bad-cron", "name: x\nstages: {a: {run: x}}\nschedule: {cron: '61 * * * *'}\n", 3, 18, ("cron", "61 * * * *")),
    ("bad-timezone", "name: x\nstages: {a: {run: x}}\nschedule: {cron: '0 3 * * 1', timezone: Europe/Berln}\n", 3, 41,
     ("timezone", "Europe/Berlin")),
    ("schedule-no-trigger", "name: x\nstages: {a: {run: x}}\nschedule: {timezone: UTC}\n", 3, 11, ("no trigger",)),
    ("schedule-concurrency", "name: x\nstages: {a: {run: x}}\nschedule: {cron: '@daily', concurrency: skip}\n", 3, 41,
     ("must be one of", "skip")),
    ("on-change-unknown", "name: x\ninputs: {prefs: s3://b/p}\nstages: {a: {run: x}}\nschedule: {on_change: [prfs]}\n", 4, 24,
     ("on_change", "prefs")),
    ("unknown-param-ref", "name: x\nparams: {steps: 3}\nstages:\n  a:\n    run: 'train --steps ${params.step}'\n", 5, 10,
     ("${params.step}", "steps")),
    ("secret-values", "name: x\nsecrets: {HF_TOKEN: abc}\nstages: {a: {run: x}}\n", 2, 10, ("names only",)),
    ("bad-store", "name: x\nstores: {awz: s3://b}\nstages: {a: {run: x}}\n", 2, 10, ("'awz'", "aws")),
    ("input-size-word", "name: x\ninputs: {p: {uri: s3://b, size_gb: lots}}\nstages: {a: {run: x}}\n", 2, 36, ("size_gb", "lots")),
    ("input-no-uri", "name: x\ninputs: {p: {size_gb: 3}}\nstages: {a: {run: x}}\n", 2, 10, ("missing required field 'uri'",)),
    ("envs-list", "name: x\nstages:\n  a:\n    run: x\n    envs: [A, B]\n", 5, 11, ("envs",)),
    ("networking", "name: x\nstages:\n  a:\n    run: x\n    networking: {vpc_name: v}\n", 5, 5, ("networking", "config:")),
    ("file-mount-encryption", "name: x\nstages:\n  a:\n    run: x\n    file_mounts:\n      /d:\n        source: s3://b\n"
     "        encryption: {type: AES256}\n", 8, 9, ("encryption", "bucket")),
    ("job-recovery-bad", "name: x\nstages:\n  a:\n    run: x\n    resources: {job_recovery: {max_restarts_on_errors: -1}}\n",
     5, 56, ("max_restarts_on_errors",)),
]


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pipeline.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(("text", "line", "col", "fragments"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_rejected_with_position_and_fix(tmp_path: Path, text: str, line: int, col: int,
                                        fragments: tuple[str, ...]) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(SpecError) as info:
        load_pipeline(path)
    message = str(info.value)
    assert f"{path}:{line}:{col}:" in message, message
    for fragment in fragments:
        assert fragment in message, message


def test_there_are_at_least_forty_distinct_cases() -> None:
    assert len({c[0] for c in CASES}) >= 40
    assert len({c[1] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("text", [c[1] for c in CASES], ids=[c[0] for c in CASES])
def test_cli_exits_2_without_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(SystemExit) as info:
        main(["validate", str(path)])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error:")
    assert "Traceback" not in err
    assert str(path) in err


def test_set_unknown_param_is_an_error(tmp_path: Path) -> None:
    path = _write(tmp_path, textwrap.dedent("""\
        name: x
        params: {ppo_steps: 200}
        stages: {a: {run: 'echo ${params.ppo_steps}'}}
    """))
    with pytest.raises(SpecError, match=r"no param 'ppo_step'.*Did you mean ppo_steps"):
        load_pipeline(path, {"ppo_step": 3})
    with pytest.raises(SpecError, match=r"expected int like the default 200"):
        load_pipeline(path, {"ppo_steps": "many"})


def test_every_bad_name_is_reported_at_once_at_its_own_key(tmp_path: Path) -> None:
    path = _write(tmp_path, textwrap.dedent("""\
        name: x
        params: {ok: 1, "bad param": 2}
        inputs: {"in/put": data.csv}
        stages:
          "bad name": {run: x}
          fine: {run: x}
          "also/bad": {run: x}
          -x: {run: x}
        """))
    with pytest.raises(SpecError) as info:
        load_pipeline(path)
    lines = str(info.value).splitlines()
    bad = [line for line in lines if "a name must be letters, digits" in line]
    assert [line.split(": ", 2)[0] for line in bad] == [
        f"{path}:2:17", f"{path}:3:10", f"{path}:5:3", f"{path}:7:3", f"{path}:8:3"], lines
    assert all("Rename it" in line for line in bad)
    assert "got '-x'" in bad[-1] and "got 'also/bad'" in bad[-2]
