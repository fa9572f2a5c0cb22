"""Faults on real Ray clusters: several nodes, a node lost mid-run, an interrupted driver.

The study driver runs as a subprocess (`run_study.py run`), as a user runs it; the
clusters are real multi-node `ray.cluster_utils.Cluster`s on this machine.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

# Trials long enough (a few seconds each) to be caught mid-run, with checkpoints at every
# temperature stage of the annealing cell.
FAULT_STUDY = {
    "description": "fault-injection study", "cost": "1-2 min",
    "dataset": "mnist1d", "teacher": "cnn1d_16", "students": ["cnn1d_8"],
    "methods": ["ce", "annealing"], "epochs": 12, "trials_per_cell": 3, "rerun_seeds": 1,
    "grace_epochs": 12, "startup_trials": 3, "pruner": "none",
    "search": {"annealing": {"tau_max": [2, 3], "stage_epochs": [2, 3], "min_phase2_epochs": 2}},
    "train": {"num_samples": 6000, "val_size": 500, "teacher_epochs": 5},
}


def write_study(tmp_path, **changes):
    path = tmp_path / "fault-study.yaml"
    path.write_text(yaml.safe_dump({**FAULT_STUDY, **changes}))
    return path


def start_driver(config, storage, *extra):
    cmd = [sys.executable, "run_study.py", "run", "--config", str(config), "--storage", str(storage),
           "--name", "faults", "--no-report", *extra]
    log = open(Path(storage).parent / f"driver-{time.time_ns()}.log", "w")
    return subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy())


def results(exp_dir, stage="search"):
    """trial folder -> list of result dicts (one per reported epoch)."""
    out = {}
    for trial_dir in sorted((exp_dir / stage).glob("*_search_*" if stage == "search" else "*_*")):
        path = trial_dir / "result.json"
        if path.is_file():
            lines = [json.loads(l) for l in path.read_text().splitlines() if l.strip()]
            out[trial_dir.name] = lines
    return out


def wait_until(predicate, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def check_complete(exp_dir, config):
    summary = pd.read_csv(exp_dir / "summary.csv")
    search = summary[summary.stage == "search"]
    cells = {f"{s}-{m}" for s in config["students"] for m in config["methods"]}
    assert search.groupby("cell").size().to_dict() == {c: config["trials_per_cell"] for c in cells}
    assert set(summary.status) == {"completed"}, summary[["trial_id", "status", "reason"]]
    assert json.loads((exp_dir / "study.json").read_text())["status"] == "finished"
    return summary


@pytest.fixture
def cluster():
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, connect=False,
                      head_node_args={"num_cpus": 1, "include_dashboard": False})
    yield cluster
    cluster.shutdown()


def test_trials_land_on_both_nodes(cluster, tmp_path):
    worker = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    config = write_study(tmp_path)
    driver = start_driver(config, tmp_path / "runs", "--address", cluster.address)
    assert driver.wait(timeout=600) == 0
    summary = check_complete(tmp_path / "runs" / "faults", FAULT_STUDY)
    node_ids = {n.split("/")[1] for n in summary.node}
    assert len(node_ids) == 2
    assert worker.node_id[:8] in node_ids


def node_process_tree(node):
    """Every live pid of a Ray node: its own processes (raylet, agents) and their
    descendants (the worker processes that run trials), read from /proc."""
    roots = {info.process.pid for infos in node.all_processes.values() for info in infos}
    parent_of = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:  # the command name may hold spaces and brackets; the fields after it do not
            parent_of[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
    tree = roots & set(parent_of)
    while children := {pid for pid, parent in parent_of.items() if parent in tree} - tree:
        tree |= children
    return tree


def signal_all(pids, signum):
    for pid in pids:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass


def test_lost_node_trials_resume_from_checkpoints(cluster, tmp_path):
    worker = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    config = write_study(tmp_path)
    exp_dir = tmp_path / "runs" / "faults"
    driver = start_driver(config, tmp_path / "runs", "--address", cluster.address)

    def checkpointed_on_worker():
        for name, rows in results(exp_dir).items():
            if rows and rows[-1].get("node_id") == worker.node_id and not rows[-1].get("finished") \
                    and any(r.get("stage_end") for r in rows) and list((exp_dir / "search" / name).glob("checkpoint_*")) \
                    and not (exp_dir / "search" / name / "final.json").exists():
                return name
        return None

    # The driver logs a trial's results a little after the trial sends them, so a trial seen
    # unfinished may already be done. Freeze the whole worker node, let the driver catch up,
    # and kill the node only if its trial is still unfinished; otherwise thaw it and wait on.
    deadline = time.time() + 300
    while True:
        wait_until(checkpointed_on_worker, max(1, deadline - time.time()),
                   "a checkpointed trial running on the worker node")
        frozen = node_process_tree(worker)
        signal_all(frozen, signal.SIGSTOP)
        time.sleep(3)
        victim = checkpointed_on_worker()
        if victim:
            break
        signal_all(frozen, signal.SIGCONT)
        assert time.time() < deadline, "no trial on the worker node stayed unfinished long enough"
    cluster.remove_node(worker, allow_graceful=False)
    signal_all(frozen, signal.SIGKILL)  # its worker processes, orphaned and still frozen
    cluster.add_node(num_cpus=1)  # capacity comes back as a fresh node
    assert driver.wait(timeout=600) == 0
    check_complete(exp_dir, FAULT_STUDY)
    rows = results(exp_dir)[victim]
    epochs = [r["epoch"] for r in rows]
    nodes = {r["node_id"] for r in rows}
    # the victim ran on two nodes and continued from its last checkpoint (a stage end), not
    # from epoch 1: epochs after that checkpoint may be reported twice, epoch 1 only once
    assert len(nodes) == 2, nodes
    moved = next(i for i in range(1, len(rows)) if rows[i]["node_id"] != rows[i - 1]["node_id"])
    checkpoints = [r["epoch"] for r in rows[:moved] if r.get("stage_end")]
    assert epochs[moved] == max(checkpoints) + 1 > 1
    assert epochs.count(1) == 1 and epochs[-1] == FAULT_STUDY["epochs"]
    assert sorted(set(epochs)) == list(range(1, FAULT_STUDY["epochs"] + 1))


def test_interrupted_driver_resumes_without_rerunning_finished_trials(tmp_path):
    config = write_study(tmp_path, trials_per_cell=4)
    exp_dir = tmp_path / "runs" / "faults"
    driver = start_driver(config, tmp_path / "runs", "--num-cpus", "2")

    def some_finished():
        done = [n for n, rows in results(exp_dir).items() if rows and rows[-1].get("finished")]
        return done if len(done) >= 2 else None

    wait_until(some_finished, 300, "two finished trials")
    driver.send_signal(signal.SIGINT)
    assert driver.wait(timeout=120) == 130
    interrupted = json.loads((exp_dir / "study.json").read_text())
    assert interrupted["status"] == "interrupted" and interrupted["wall_seconds"] > 0
    before = results(exp_dir)
    # A trial the interrupt caught before its first epoch has an empty result.json.
    finished_before = {n: rows for n, rows in before.items() if rows and rows[-1].get("finished")}
    assert 2 <= len(finished_before) < 8

    again = start_driver(config, tmp_path / "runs", "--num-cpus", "2")
    assert again.wait(timeout=60) == 2  # the experiment exists and --resume was not given
    resumed = start_driver(config, tmp_path / "runs", "--num-cpus", "2", "--resume")
    assert resumed.wait(timeout=600) == 0
    summary = check_complete(exp_dir, {**FAULT_STUDY, "trials_per_cell": 4})
    # the wall clock counts both sessions
    assert json.loads((exp_dir / "study.json").read_text())["wall_seconds"] > interrupted["wall_seconds"]
    after = results(exp_dir)
    for name, rows in finished_before.items():
        # Tune may schedule a trial again if the driver stopped between its last report and
        # its bookkeeping; it then only replays its final result, it does not train
        assert after[name][:len(rows)] == rows
        replays = after[name][len(rows):]
        assert all(r.get("replayed") and r["epoch"] == rows[-1]["epoch"] for r in replays), \
            f"finished trial {name} was trained again"
    # Every search trial reached every epoch of its budget. A trial the interrupt caught
    # after it wrote its final marker but before the driver logged its last report replays
    # that report, so its last epoch is a replayed row: a replay only ever stands for the
    # final epoch.
    for name, rows in after.items():
        assert {r["epoch"] for r in rows} == set(range(1, FAULT_STUDY["epochs"] + 1)), name
        assert all(r["epoch"] == FAULT_STUDY["epochs"] and r["finished"] for r in rows if r.get("replayed"))
    # epochs trained: at most the budget once, plus what the unfinished trials repeated from
    # their last checkpoint (less than one stage each)
    epochs_trained = sum(1 for rows in after.values() for r in rows if not r.get("replayed"))
    assert epochs_trained < 8 * FAULT_STUDY["epochs"] + (8 - len(finished_before)) * 3
    assert len(summary[summary.stage == "search"]) == 8
