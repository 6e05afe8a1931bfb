"""SSH node pools against real sshd hosts: on loopback, and in network namespaces with their own addresses."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from skyflow.artifacts import ArtifactRef, fetch_artifact, open_store
from skyflow.backends.ssh import SshBackend
from skyflow.config import SshPool
from skyflow.errors import BackendError
from skyflow.planner import Placement
from tests.integration.backends.conftest import SshHost, SshKeys, SshPoolSetup, make_pool
from tests.integration.backends.contract import make_launch
from tests.integration.conftest import free_port
from tests.integration.runner.conftest import Skyflow, wait_for

MIXED = """\
name: mixed
inputs: {raw: {uri: ./data}}
stages:
  prep:
    run: tr a-z A-Z < $SKYFLOW_INPUT_RAW/words.txt > $SKYFLOW_OUTPUT_CLEAN/words.txt
    inputs: {raw: raw}
    outputs: [clean]
  train:
    resources: {infra: ssh/lab}
    workdir: ./code
    run: |
      bash train.sh
      hostname > $SKYFLOW_OUTPUT_MODEL/where.txt
      echo "$SKYFLOW_OUTPUT_MODEL" > $SKYFLOW_OUTPUT_MODEL/path.txt
    inputs: {data: prep.clean}
    outputs: [model]
  report:
    run: cat $SKYFLOW_INPUT_MODEL/lines.txt > $SKYFLOW_OUTPUT_REPORT/report.txt
    inputs: {model: train.model}
    outputs: [report]
"""

SSH_LAB = Placement(infra="ssh/lab", cloud="ssh", region="lab", zone=None, instance_type="ssh:lab", accelerators={},
                    use_spot=False, num_nodes=1, hourly_usd=0.0, hours=0.0)


def _skyflow_with_pool(tmp_path: Path, setup: SshPoolSetup) -> Skyflow:
    sky = Skyflow(tmp_path / "home", tmp_path / "work")
    sky.workdir.mkdir()
    sky.home.mkdir()
    (sky.home / "config.yaml").write_text(setup.config_yaml("lab"))
    sky.env["SKYFLOW_SSH_KNOWN_HOSTS"] = str(setup.known_hosts)
    return sky


def _read(sky: Skyflow, output: dict[str, object], name: str, into: Path) -> str:
    ref = ArtifactRef(name="o", uri=str(output["uri"]), digest=str(output["digest"]),
                      size_bytes=int(str(output["size_bytes"])), file_count=0,
                      store=open_store(str(sky.home / "artifacts")))
    return (fetch_artifact(ref, into / str(output["digest"])[7:19]) / name).read_text()


def test_pipeline_crosses_between_local_and_the_pool(tmp_path: Path, loopback_pool: SshPoolSetup) -> None:
    sky = _skyflow_with_pool(tmp_path, loopback_pool)
    sky.write("data/words.txt", "alpha\nbeta\ngamma\n")
    sky.write("code/train.sh", 'wc -l < "$SKYFLOW_INPUT_DATA/words.txt" > "$SKYFLOW_OUTPUT_MODEL/lines.txt"\n'
                               'head -1 "$SKYFLOW_INPUT_DATA/words.txt" >> "$SKYFLOW_OUTPUT_MODEL/lines.txt"\n')
    sky.write("mixed.yaml", MIXED)
    code, status, err = sky.run_json("mixed.yaml", "--run-id", "mixed-1", "--no-lineage")
    assert code == 0, (status, err)
    infra = {name: row["infra"] for name, row in status["stages"].items()}
    assert infra == {"prep": "local", "train": "ssh/lab", "report": "local"}
    model = status["stages"]["train"]["outputs"]["model"]
    # the stage saw its remote output directory under the pool's workdir_root, not the runner's
    remote_path = _read(sky, model, "path.txt", tmp_path).strip()
    assert remote_path.startswith(str(loopback_pool.pool.workdir_root) + "/runs/mixed-1/train/attempt-1/node-0/")
    report = status["stages"]["report"]["outputs"]["report"]
    assert _read(sky, report, "report.txt", tmp_path).split() == ["3", "ALPHA"]
    # a finished attempt leaves nothing behind on the host
    assert not list(Path(loopback_pool.pool.workdir_root, "runs", "mixed-1", "train").glob("attempt-1/node-*"))


def test_workdir_sync_sends_only_changed_files(tmp_path: Path, loopback_pool: SshPoolSetup) -> None:
    backend = SshBackend("lab", loopback_pool.pool, known_hosts=str(loopback_pool.known_hosts))
    first = make_launch(tmp_path / "a", "cat train.sh notes.txt > $SKYFLOW_OUTPUT_MODEL/seen.txt",
                        placement=SSH_LAB)
    (first.workdir / "notes.txt").write_text("v1\n")
    first.log_path.parent.mkdir(parents=True, exist_ok=True)
    assert backend.launch(first).wait().ok
    mirror = next(Path(loopback_pool.pool.workdir_root, "workdirs").iterdir())
    unchanged_ctime = (mirror / "train.sh").stat().st_ctime_ns
    (first.workdir / "notes.txt").write_text("v2 is longer\n")
    (first.workdir / "gone.txt").write_text("x")
    again = make_launch(tmp_path / "a", first.run, stage="again", placement=SSH_LAB)
    assert backend.launch(again).wait().ok
    (first.workdir / "gone.txt").unlink()
    third = make_launch(tmp_path / "a", first.run, stage="third", placement=SSH_LAB)
    assert backend.launch(third).wait().ok
    assert (mirror / "train.sh").stat().st_ctime_ns == unchanged_ctime
    assert (mirror / "notes.txt").read_text() == "v2 is longer\n" and not (mirror / "gone.txt").exists()
    assert (third.outputs["model"] / "seen.txt").read_text().endswith("v2 is longer\n")


def test_capacity_is_what_the_hosts_report(loopback_pool: SshPoolSetup) -> None:
    capacity = SshBackend("lab", loopback_pool.pool, known_hosts=str(loopback_pool.known_hosts)).capacity()
    assert capacity.cpus == 2 * len(os.sched_getaffinity(0))
    assert capacity.memory_gb > 0 and capacity.max_parallel == 2
    configured = loopback_pool.pool.model_copy(update={"cpus": 3.0, "accelerators": {"A100": 8}})
    capacity = SshBackend("lab", configured, known_hosts=str(loopback_pool.known_hosts)).capacity()
    assert (capacity.cpus, dict(capacity.gpus)) == (6.0, {"A100": 16})


def test_unreachable_host_is_an_error_naming_it(tmp_path: Path, ssh_keys: SshKeys) -> None:
    port = free_port()  # nothing listens here
    pool = SshPool(hosts=(f"127.0.0.1:{port}",), identity_file=str(ssh_keys.identity_file),
                   workdir_root=str(tmp_path / "remote"))
    backend = SshBackend("lab", pool, known_hosts=None, connect_timeout_s=5)
    launch = make_launch(tmp_path, "true", placement=SSH_LAB)
    with pytest.raises(BackendError, match=rf"cannot reach host 127\.0\.0\.1:{port}: .*Connect call failed"):
        backend.launch(launch)


def test_untrusted_host_key_is_refused_with_the_fix(tmp_path: Path, loopback_pool: SshPoolSetup) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    backend = SshBackend("lab", loopback_pool.pool, known_hosts=str(empty))
    host = loopback_pool.hosts[0]
    with pytest.raises(BackendError, match=rf"host key of .*127\.0\.0\.1:{host.port} is not trusted.*ssh-keyscan"):
        backend.launch(make_launch(tmp_path, "true", placement=SSH_LAB))


def test_too_many_nodes_for_the_pool_is_an_error(tmp_path: Path, loopback_pool: SshPoolSetup) -> None:
    backend = SshBackend("lab", loopback_pool.pool, known_hosts=str(loopback_pool.known_hosts))
    with pytest.raises(BackendError, match="asks for 3 nodes; ssh pool 'lab' has 2 host"):
        backend.launch(make_launch(tmp_path, "true", num_nodes=3, placement=SSH_LAB))


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_killed_runner_leaves_no_stage_running_on_the_host(tmp_path: Path, loopback_pool: SshPoolSetup) -> None:
    sky = _skyflow_with_pool(tmp_path, loopback_pool)
    marker = tmp_path / "pgid"
    sky.write("slow.yaml", f"name: slow\nstages:\n  wait:\n    resources: {{infra: ssh/lab}}\n"
                           f"    run: ps -o pgid= $$ > {marker}; sleep 300 & wait\n")
    runner = sky.start("run", "slow.yaml", "--no-lineage")
    try:
        wait_for(lambda: marker.exists() and marker.read_text().strip() != "", 60, "the remote stage to start")
        pgid = int(marker.read_text())
        assert _group_alive(pgid)
        runner.send_signal(signal.SIGKILL)  # no cleanup from the runner: the host notices the lost connection
        runner.wait(timeout=30)
        wait_for(lambda: not _group_alive(pgid), 30, "the remote stage to stop")
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()


MULTI_NODE = """\
import os, socket, sys
rank, head = int(os.environ["SKYPILOT_NODE_RANK"]), os.environ["SKYPILOT_HEAD_IP"]
out = os.environ["SKYFLOW_OUTPUT_MODEL"]
if rank == 0:
    srv = socket.create_server((head, {port}))
    conn, peer = srv.accept()
    with open(os.path.join(out, "ranks.txt"), "w") as f:
        f.write(f"head {{head}} got {{conn.recv(100).decode()}} from {{peer[0]}}\\n")
        f.write("ips " + ",".join(os.environ["SKYPILOT_NODE_IPS"].split()) + "\\n")
        f.write("nodes " + os.environ["SKYPILOT_NUM_NODES"] + "\\n")
else:
    for _ in range(200):
        try:
            sock = socket.create_connection((head, {port}), timeout=1)
            break
        except OSError:
            import time; time.sleep(0.05)
    sock.sendall(f"rank {{rank}}".encode())
"""


def test_multi_node_stage_spreads_over_hosts_with_ranks_and_head_ip(tmp_path: Path, ssh_keys: SshKeys,
                                                                   netns_hosts: list[SshHost]) -> None:
    setup = make_pool(ssh_keys, netns_hosts, tmp_path / "remote")
    backend = SshBackend("lab", setup.pool.model_copy(update={"python": sys.executable}),
                         known_hosts=str(setup.known_hosts))
    launch = make_launch(tmp_path, f"{sys.executable} node.py", num_nodes=2, placement=SSH_LAB)
    (launch.workdir / "node.py").write_text(MULTI_NODE.format(port=free_port()))
    launch.log_path.parent.mkdir(parents=True, exist_ok=True)
    exit_ = backend.launch(launch).wait()
    assert exit_.ok, launch.log_path.read_text()
    head, other = netns_hosts[0].ip, netns_hosts[1].ip
    assert (launch.outputs["model"] / "ranks.txt").read_text().splitlines() == [
        f"head {head} got rank 1 from {other}", f"ips {head},{other}", "nodes 2"]


def test_multi_node_failure_on_one_host_stops_the_other(tmp_path: Path, loopback_pool: SshPoolSetup) -> None:
    backend = SshBackend("lab", loopback_pool.pool, known_hosts=str(loopback_pool.known_hosts))
    marker = tmp_path / "groups"
    # node 1 fails only once both nodes have written their group, so neither ordering of their
    # start-up can leave a group unrecorded
    launch = make_launch(tmp_path, f'ps -o pgid= $$ >> {marker}; if [ "$SKYPILOT_NODE_RANK" = 1 ]; then '
                                   f'while [ "$(wc -l < {marker})" -lt 2 ]; do sleep 0.05; done; exit 7; fi; '
                                   "sleep 300 & wait", num_nodes=2, placement=SSH_LAB)
    launch.log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    exit_ = backend.launch(launch).wait()
    assert exit_.exit_code == 7 and "node 1" in exit_.reason
    assert time.monotonic() - started < 60
    groups = [int(line) for line in marker.read_text().split()]
    assert len(groups) == 2 and not any(_group_alive(g) for g in groups)


def test_pool_stage_log_is_in_the_run_status(tmp_path: Path, loopback_pool: SshPoolSetup) -> None:
    sky = _skyflow_with_pool(tmp_path, loopback_pool)
    sky.write("hello.yaml", "name: hello\nsecrets: [API_TOKEN]\nstages:\n  greet:\n"
                            "    resources: {infra: ssh/lab}\n    run: echo \"hello from $(hostname) $API_TOKEN\"\n")
    code, status, err = sky.run_json("hello.yaml", "--run-id", "hello-1", "--no-lineage",
                                     env={"API_TOKEN": "tok-5f2a9c"})
    assert code == 0, (status, err)
    log = Path(sky.home, "runs", "hello-1", "greet", "attempt-1", "stage.log").read_text()
    assert "hello from" in log and "tok-5f2a9c" not in log and "********" in log
    assert json.dumps(status).count("tok-5f2a9c") == 0
