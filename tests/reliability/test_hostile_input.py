"""Hostile and huge input: a YAML alias bomb, a multi-line secret, a 64 MiB line, a `\\r` progress bar."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import pytest

from skyflow.backends.masking import MASK, masked_lines, secret_pieces
from tests.integration.runner.conftest import Skyflow

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("hostile")]

# Nine levels of ten aliases: 10**9 strings once expanded, from 440 bytes.
BOMB = """\
name: bomb
x-a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]
x-b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]
x-c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]
x-d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]
x-e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]
x-f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]
x-g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f,*f]
x-h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g,*g]
x-i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h,*h]
stages:
  s: {run: echo, outputs: [o]}
"""


def test_a_yaml_alias_bomb_is_refused_at_its_position(skyflow: Skyflow) -> None:
    skyflow.write("bomb.yaml", BOMB)
    # The limit only ends a hang: the expansion used to run for minutes and take gigabytes.
    result = skyflow("plan", "bomb.yaml", timeout=60)
    assert result.returncode == 2, result.stderr
    assert re.match(r"error: bomb\.yaml:\d+:\d+: invalid YAML", result.stderr), result.stderr
    assert "aliases expand this document to more than 100000 values" in result.stderr
    assert "Traceback" not in result.stderr


def test_anchors_and_aliases_of_an_ordinary_pipeline_still_work(skyflow: Skyflow) -> None:
    skyflow.write("anchors.yaml", """\
name: anchors
stages:
  a: {run: 'echo a > $SKYFLOW_OUTPUT_O/o', outputs: &outs [o], resources: &common {cpus: 1}}
  b: {run: 'echo b > $SKYFLOW_OUTPUT_O/o', outputs: *outs, resources: *common}
""")
    assert skyflow("plan", "anchors.yaml", "--json", check=True).returncode == 0


PEM = """-----BEGIN PRIVATE KEY-----
MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj
MzEfYyjiWA4R4/M2bS1GB4t7NXp98C3SC6dVMvDuictGeurT8jNbvJZHtCSuYEvu
NMoSfm76oqFvAp8Gy0iz5sxjZmSnXyCdPEovGhLa0VzMaQ8s+CLOyS56YyCFGeJZ
-----END PRIVATE KEY-----"""
LEAKY_PEM = """\
name: pem
secrets: [DEPLOY_KEY]
stages:
  show:
    run: |
      echo "key follows:"
      echo "$DEPLOY_KEY"
      printf '%s' "$DEPLOY_KEY" | tr '\\n' '\\r'
      echo
      echo ok > $SKYFLOW_OUTPUT_O/o
    outputs: [o]
"""


def test_a_multi_line_secret_is_masked_on_every_line(skyflow: Skyflow) -> None:
    skyflow.write("pem.yaml", LEAKY_PEM)
    code, status, err = skyflow.run_json("pem.yaml", "--no-lineage", "--infra", "local",
                                         env={"DEPLOY_KEY": PEM})
    assert code == 0, err
    log = skyflow("logs", status["run_id"], "show", check=True).stdout
    assert "key follows:" in log
    secret_lines = [line for line in PEM.splitlines() if len(line) > 8]
    texts = [log, *(p.read_text(errors="replace") for p in (skyflow.home / "runs").rglob("*.log"))]
    assert not [line for line in secret_lines for text in texts if line in text], log
    assert log.count("********") >= 2 * len(secret_lines)


def peak_rss_kb(pid: int) -> int | None:
    """The process's high-water resident set (VmHWM), or None once it has exited."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    return next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")), None)


def run_measuring_rss(skyflow: Skyflow, pipeline: str) -> tuple[int, int, str]:
    """Run ``pipeline``; (exit code, the runner's peak RSS in KiB, stderr)."""
    runner = skyflow.start("run", pipeline, "--no-lineage", "--infra", "local", "--json")
    peak = [0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            rss = peak_rss_kb(runner.pid)
            if rss is None:
                return
            peak[0] = max(peak[0], rss)
            stop.wait(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        _, err = runner.communicate(timeout=300)
    finally:
        stop.set()
        sampler.join(timeout=5)
        if runner.poll() is None:
            runner.kill()
    return runner.returncode, peak[0], err


# Generous: the runner takes about 75 MiB here either way; reading such output whole took 260-300 MiB.
RSS_BOUND_KB = 180 * 1024

ONE_LINE = """\
name: oneline
stages:
  line:
    run: |
      python -c "import sys; sys.stdout.write('x' * (64 << 20)); sys.stdout.flush()"
      echo done > $SKYFLOW_OUTPUT_O/o
    outputs: [o]
"""
PROGRESS = """\
name: progress
stages:
  bar:
    run: |
      python -c "
      import sys
      for i in range(1_000_000):
          sys.stdout.write(f'\\r{i:>10} it ' + '#' * (i % 50) + ' ' * (50 - i % 50))
      "
      echo done > $SKYFLOW_OUTPUT_O/o
    outputs: [o]
"""


@pytest.mark.parametrize(("pipeline", "text"), [(ONE_LINE, "x" * 100), (PROGRESS, "    999999 it ")],
                         ids=["64MiB-line", "cr-progress"])
def test_huge_lines_and_progress_bars_keep_the_runner_memory_bounded(skyflow: Skyflow, pipeline: str,
                                                                     text: str) -> None:
    skyflow.write("out.yaml", pipeline)
    code, peak_kb, err = run_measuring_rss(skyflow, "out.yaml")
    assert code == 0, err
    print(f"runner peak RSS {peak_kb / 1024:.0f} MiB")
    assert 0 < peak_kb < RSS_BOUND_KB
    (log,) = (skyflow.home / "runs").rglob("stage.log")
    with open(log, "rb") as f:
        longest = max(len(line) for line in f)
    assert longest <= (1 << 20) + 1  # cut at 1 MiB
    with open(log, "rb") as f:
        assert any(text.encode() in line for line in f)



def test_a_line_cut_for_length_never_splits_a_secret_whatever_the_chunking() -> None:
    pieces = [p.encode() for p in secret_pieces(["S3CRET-VALUE-42", PEM])]
    data = b"x" * 13 + b"S3CRET-VALUE-42" + b"y" * 40 + b"\r\n" + PEM.encode().split(b"\n")[1] + b"\rtail"
    for size in range(1, 40):
        chunks = [data[i:i + size] for i in range(0, len(data), size)]
        lines = list(masked_lines(chunks, pieces, max_bytes=16))
        text = b"\n".join(lines)
        assert b"S3CRET" not in text and b"MIIEvQ" not in text, (size, lines)
        assert text.replace(MASK.encode(), b"").replace(b"\n", b"") == b"x" * 13 + b"y" * 40 + b"tail"
        assert max(len(line) for line in lines) <= 16 + len(MASK)


def test_carriage_returns_end_lines_and_crlf_is_one_line_end() -> None:
    chunks = [b"\r 10%\r 20%", b"\r 30%\r", b"\ndone\r\n", b"last"]
    assert list(masked_lines(chunks, [])) == [b" 10%", b" 20%", b" 30%", b"done", b"last"]
