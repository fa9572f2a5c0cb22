"""A node that does not mount the study's storage, for real: a `ray start` worker node in its
own mount namespace, where the storage folder is an empty tmpfs, joined to a
`ray.cluster_utils.Cluster`. The driver refuses to start while such a node is in the cluster,
and a trial that lands on it (a node that joined later) fails at once, naming the node and the
path."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RAY_BIN = str(Path(sys.executable).with_name("ray"))
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def can_hide_folders() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"], capture_output=True)
    return probe.returncode == 0


def on_cluster(address: str, code: str, timeout: float = 300) -> str:
    """Runs `code` in a driver of its own connected to the cluster (this test process may hold
    the session's local Ray instance) and returns what it printed."""
    run = subprocess.run([sys.executable, "-c", f"import ray\nray.init(address={address!r}, log_to_driver=False)\n{code}"],
                         cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    return run.stdout


@pytest.fixture(scope="module")
def blind_cluster(tmp_path_factory):
    """A head that sees the storage and a worker node (custom resource `blind`) that does not."""
    if not can_hide_folders():
        pytest.skip("needs root and unshare(1) to start a node in a mount namespace of its own")
    from ray.cluster_utils import Cluster

    storage = tmp_path_factory.mktemp("shared") / "runs"
    storage.mkdir()
    cluster = Cluster(initialize_head=True, connect=False, head_node_args={"num_cpus": 1, "include_dashboard": False})
    log = open(storage.parent / "blind-node.log", "w")
    # the storage folder of this node is an empty tmpfs: what a node without the NFS mount sees
    node = subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c",
         f"mount -t tmpfs none {storage} && exec {RAY_BIN} start --address={cluster.address} --num-cpus=1 "
         f"--resources='{{\"blind\": 1}}' --block --disable-usage-stats"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        blind_ip = on_cluster(cluster.address, """
import time
deadline = time.time() + 120
while not any(n["Alive"] and n["Resources"].get("blind") for n in ray.nodes()):
    assert time.time() < deadline, "the blind node did not join"
    time.sleep(0.5)
print(next(n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"] and n["Resources"].get("blind")))
""").strip()
        yield cluster, storage, blind_ip
    finally:
        os.killpg(node.pid, signal.SIGTERM)  # `ray start --block` stops what it started
        try:
            node.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(node.pid, signal.SIGKILL)
        cluster.shutdown()


def test_the_driver_refuses_a_cluster_with_a_node_that_cannot_see_the_storage(blind_cluster, tmp_path):
    cluster, storage, blind_ip = blind_cluster
    run = subprocess.run([sys.executable, "run_study.py", "run", "--preset", "smoke", "--storage", str(storage),
                          "--name", "refused", "--address", cluster.address, "--no-report"],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 2, run.stdout[-2000:] + run.stderr[-2000:]
    assert f"node {os.uname().nodename} ({blind_ip}) cannot see the study's storage {storage / 'refused'}" \
        in run.stderr
    assert not list((storage / "refused").glob("trials/*"))  # nothing ran


def test_a_trial_on_a_node_that_cannot_see_the_storage_fails_at_once_naming_node_and_path(blind_cluster):
    cluster, storage, blind_ip = blind_cluster
    exp_dir = storage / "late-node"
    exp_dir.mkdir()
    (exp_dir / "study.json").write_text(json.dumps({"name": "late-node"}))
    # the study's own trainable, on the blind node only (as if that node had joined after the start)
    printed = on_cluster(cluster.address, f"""
import time
from ray import tune
from study.trainable import run_trial
trainable = tune.with_resources(tune.with_parameters(run_trial, study_values={{}}, exp_dir={str(exp_dir)!r},
                                                     bank_root={str(storage)!r}), {{"cpu": 1, "blind": 1}})
tuner = tune.Tuner(trainable, param_space={{"cell": "mlp1d_8-ce", "stage": "search"}},
                   run_config=tune.RunConfig(storage_path={str(storage.parent / "tune")!r}, verbose=0,
                                             failure_config=tune.FailureConfig(max_failures=0)))
started = time.monotonic()
(result,) = tuner.fit()
print("seconds", time.monotonic() - started)
print("error", result.error)
""")
    seconds = float(printed.split("seconds ", 1)[1].split()[0])
    message = printed.split("error ", 1)[1]
    assert seconds < 120  # at once: no teacher waited for, nothing trained
    assert f"node {os.uname().nodename} ({blind_ip}) cannot see the study's storage {exp_dir}" in message
    assert not (exp_dir / "trials").exists()  # nothing written on the shared side
