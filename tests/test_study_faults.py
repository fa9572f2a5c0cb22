"""Faults on real Ray clusters: several nodes, a node lost mid-run, drivers killed (SIGKILL,
SIGTERM, SIGINT) at every stage and resumed, a trial whose worker dies.

The study driver runs as a subprocess (`run_study.py run`), as a user runs it; the
clusters are real multi-node `ray.cluster_utils.Cluster`s or the driver's own local Ray
instance. After every fault the study is resumed and must end with every cell's exact trial
count, no finished trial trained again, and the ledger and summary.csv agreeing trial by trial.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

# Trials long enough (a few seconds each) to be caught mid-run, with a checkpoint every 3
# epochs (CE included) and at every temperature stage of the annealing cell. The data and the
# teacher are small: these tests need trials to fault, not a good teacher.
FAULT_STUDY = {
    "description": "fault-injection study", "cost": "about 1 min",
    "dataset": "mnist1d", "teacher": "cnn1d_16", "students": ["cnn1d_8"],
    "methods": ["ce", "annealing"], "epochs": 12, "trials_per_cell": 3, "rerun_seeds": 1,
    "grace_epochs": 12, "startup_trials": 3, "pruner": "none", "checkpoint_every": 3,
    # lr kept low: a trial that diverges would fail, and these tests want every trial to finish
    "search": {"shared": {"lr": [0.01, 0.05]},
               "annealing": {"tau_max": [2, 3], "stage_epochs": [2, 3], "min_phase2_epochs": 2}},
    "train": {"num_samples": 3000, "val_size": 300, "teacher_epochs": 10},
}
CELLS = [f"{s}-{m}" for s in FAULT_STUDY["students"] for m in FAULT_STUDY["methods"]]


def write_study(tmp_path, **changes):
    path = tmp_path / "fault-study.yaml"
    path.write_text(yaml.safe_dump({**FAULT_STUDY, **changes}))
    return path


def start_driver(config, storage, *extra):
    cmd = [sys.executable, "run_study.py", "run", "--config", str(config), "--storage", str(storage),
           "--name", "faults", "--no-report", "--no-dashboard", *extra]
    log_path = Path(storage).parent / f"driver-{time.time_ns()}.log"
    # unbuffered: the tests read the driver's log while it runs
    driver = subprocess.Popen(cmd, cwd=REPO, stdout=open(log_path, "w"), stderr=subprocess.STDOUT,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"})
    driver.log_path = log_path
    return driver


def trial_dirs(exp_dir, kind=""):
    return sorted(p for p in (exp_dir / "trials").glob(f"*_{kind}*") if p.is_dir()) \
        if (exp_dir / "trials").is_dir() else []


def read_lines(path):
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line a kill cut short
            pass
    return rows


def finished(exp_dir, kind=""):
    """Trial folder -> its per-epoch rows, for every trial that wrote its final result."""
    return {d.name: read_lines(d / "epochs.jsonl") for d in trial_dirs(exp_dir, kind) if (d / "final.json").is_file()}


def wait_until(predicate, timeout, what, driver=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        if driver is not None and driver.poll() is not None:
            raise AssertionError(f"the driver exited with {driver.returncode} while waiting for {what}")
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def ledger(exp_dir):
    from optuna.storages.journal import JournalFileBackend

    storage = optuna.storages.JournalStorage(JournalFileBackend(str(exp_dir / "optuna-journal.log")))
    out = {}
    for cell in CELLS:
        for kind in ("", ":rerun"):
            study = optuna.load_study(study_name=f"faults:{cell}{kind}", storage=storage)
            out[(cell, kind)] = (study.get_trials(), set(study.user_attrs.get("replaced", [])))
    return out


def check_complete(exp_dir, config=FAULT_STUDY):
    """Exact counts, only completed trials (and replaced ones, run again), the ledger and
    summary.csv agreeing trial by trial."""
    summary = pd.read_csv(exp_dir / "summary.csv")
    assert json.loads((exp_dir / "study.json").read_text())["status"] == "finished"
    assert set(summary.status) <= {"completed", "replaced"}, summary[["trial_id", "status", "reason"]]
    live = summary[summary.status != "replaced"]
    search = live[live.stage == "search"]
    assert search.groupby("cell").size().to_dict() == {c: config["trials_per_cell"] for c in CELLS}
    assert live[live.stage == "rerun"].groupby("cell").size().to_dict() == {c: config["rerun_seeds"] for c in CELLS}
    for (cell, kind), (trials, replaced) in ledger(exp_dir).items():
        rows = summary[(summary.cell == cell) & ((summary.stage == "search") == (kind == ""))]
        rows = rows.sort_values("optuna_trial")
        ran = [t for t in trials if t.state.name != "WAITING"]
        assert [t.user_attrs["tune_trial"] for t in ran] == list(rows.trial_id)
        assert [("replaced" if t.number in replaced else {"COMPLETE": "completed"}[t.state.name]) for t in ran] \
            == list(rows.status)
    return summary


def assert_not_trained_again(before, exp_dir):
    """Every trial that had finished before a fault: still one run of its epochs, never more,
    and on record as completed (adopted), never replaced by a new run."""
    after = {d.name: read_lines(d / "epochs.jsonl") for d in trial_dirs(exp_dir)}
    for name, rows in before.items():
        assert after[name] == rows, f"finished trial {name} was trained again"
    records = {t.user_attrs["tune_trial"]: (t.state.name, t.number in replaced)
               for trials, replaced in ledger(exp_dir).values() for t in trials}
    for name in before:
        (record,) = [r for tune_id, r in records.items() if name.endswith(f"_{tune_id}")]
        assert record == ("COMPLETE", False), name


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
    summary = check_complete(tmp_path / "runs" / "faults")
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


def test_a_ce_trial_on_a_lost_node_resumes_from_its_last_checkpoint(cluster, tmp_path):
    worker = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    config = write_study(tmp_path)
    exp_dir = tmp_path / "runs" / "faults"
    driver = start_driver(config, tmp_path / "runs", "--address", cluster.address)

    def checkpointed_ce_on_worker():
        for folder in trial_dirs(exp_dir, ""):
            rows = read_lines(folder / "epochs.jsonl")
            if "-ce_search_" in folder.name and rows and rows[-1].get("node_id") == worker.node_id \
                    and (folder / "state.pt").is_file() and not (folder / "final.json").exists():
                return folder
        return None

    # A trial seen unfinished may already be done by the time the node goes. Freeze the whole
    # worker node, and kill it only if its trial is still unfinished; otherwise thaw it and wait on.
    deadline = time.time() + 300
    while True:
        wait_until(checkpointed_ce_on_worker, max(1, deadline - time.time()),
                   "a checkpointed CE trial running on the worker node", driver)
        frozen = node_process_tree(worker)
        signal_all(frozen, signal.SIGSTOP)
        time.sleep(1)
        victim = checkpointed_ce_on_worker()
        if victim:
            break
        signal_all(frozen, signal.SIGCONT)
        assert time.time() < deadline, "no CE trial on the worker node stayed unfinished long enough"
    checkpoint_epoch = torch_epoch(victim / "state.pt")
    cluster.remove_node(worker, allow_graceful=False)
    signal_all(frozen, signal.SIGKILL)  # its worker processes, orphaned and still frozen
    cluster.add_node(num_cpus=1)  # capacity comes back as a fresh node
    assert driver.wait(timeout=600) == 0
    check_complete(exp_dir)
    rows = read_lines(victim / "epochs.jsonl")
    nodes = [r["node_id"] for r in rows]
    # the trial went on on another node from its last checkpoint: the epochs after it were
    # trained twice, the ones before once; a lost node costs at most checkpoint_every epochs
    assert len(set(nodes)) == 2 and nodes[0] == worker.node_id
    moved = next(i for i in range(1, len(rows)) if nodes[i] != nodes[i - 1])
    epochs = [r["epoch"] for r in rows]
    assert epochs[moved] == checkpoint_epoch + 1 > 1
    assert rows[moved - 1]["epoch"] - checkpoint_epoch < FAULT_STUDY["checkpoint_every"] + 1
    assert epochs.count(1) == 1 and sorted(set(epochs)) == list(range(1, FAULT_STUDY["epochs"] + 1))


def torch_epoch(state_file):
    import torch

    return torch.load(state_file, weights_only=False)["epoch"]


def test_killed_drivers_resume_with_exact_counts(tmp_path):
    """SIGKILL in the teacher stage, mid-search (twice in a row), mid-re-runs; then resume."""
    config = write_study(tmp_path, trials_per_cell=4, rerun_seeds=2)
    expected = {**FAULT_STUDY, "trials_per_cell": 4, "rerun_seeds": 2}
    storage, exp_dir = tmp_path / "runs", tmp_path / "runs" / "faults"
    done_before = {}

    def kill_when(predicate, what, resume=True):
        driver = start_driver(config, storage, "--num-cpus", "2", *(["--resume"] if resume else []))
        wait_until(lambda: predicate(driver), 300, what, driver)
        done_before.update(finished(exp_dir))
        driver.kill()
        driver.wait(timeout=60)

    teacher_training = lambda _: (exp_dir / "teachers").is_dir() and not (exp_dir / "teachers" / "teacher.json").exists()
    kill_when(teacher_training, "the teacher stage", resume=False)
    kill_when(lambda _: len(finished(exp_dir, "search")) >= 2, "two finished search trials")
    # killed again at once, while the new session reconciles the ledger and starts its trials
    # (the driver logs this line when its Ray instance is up, just before it reconciles)
    kill_when(lambda driver: "study faults: 2 cells" in driver.log_path.read_text(),
              "the next session's start")
    kill_when(lambda _: len(finished(exp_dir, "rerun")) >= 1, "a finished re-run")
    resumed = start_driver(config, storage, "--num-cpus", "2", "--resume")
    assert resumed.wait(timeout=600) == 0
    summary = check_complete(exp_dir, expected)
    assert_not_trained_again(done_before, exp_dir)
    assert len(done_before) >= 3
    # a replaced trial ran again from its own last state: the same configuration, in a new trial
    for (cell, kind), (trials, replaced) in ledger(exp_dir).items():
        by_number = {t.number: t for t in trials}
        for number in replaced:
            again = [t for t in trials if t.user_attrs.get("resume_from", "").endswith(by_number[number].user_attrs["tune_trial"])]
            if kind == "":
                assert len(again) == 1 and again[0].params == by_number[number].params
    info = json.loads((exp_dir / "study.json").read_text())
    assert info["wall_seconds"] > 0 and 0 < info["utilisation"] <= 1 and len(summary) > 14


def test_sigterm_stops_the_driver_cleanly_and_the_study_resumes(tmp_path):
    config = write_study(tmp_path)
    storage, exp_dir = tmp_path / "runs", tmp_path / "runs" / "faults"
    driver = start_driver(config, storage, "--num-cpus", "2")
    wait_until(lambda: len(finished(exp_dir, "search")) >= 2, 300, "two finished search trials", driver)
    driver.send_signal(signal.SIGTERM)  # what `ray job stop` sends
    assert driver.wait(timeout=120) == 130
    info = json.loads((exp_dir / "study.json").read_text())
    assert info["status"] == "interrupted" and info["wall_seconds"] > 0
    log = driver.log_path.read_text()
    assert "interrupted; resume with: python run_study.py run" in log and "--resume" in log
    done_before = finished(exp_dir)
    again = start_driver(config, storage, "--num-cpus", "2")
    assert again.wait(timeout=60) == 2  # the experiment exists and --resume was not given
    resumed = start_driver(config, storage, "--num-cpus", "2", "--resume")
    assert resumed.wait(timeout=600) == 0
    check_complete(exp_dir)
    assert_not_trained_again(done_before, exp_dir)
    assert json.loads((exp_dir / "study.json").read_text())["wall_seconds"] > info["wall_seconds"]


def test_a_trial_whose_worker_dies_fails_and_the_resume_does_not_run_it_again(tmp_path):
    config = write_study(tmp_path, max_failures=0)
    storage, exp_dir = tmp_path / "runs", tmp_path / "runs" / "faults"
    driver = start_driver(config, storage, "--num-cpus", "2")

    def a_running_trial():
        for folder in trial_dirs(exp_dir, "search"):
            rows = read_lines(folder / "epochs.jsonl")
            if rows and rows[-1]["epoch"] < FAULT_STUDY["epochs"] - 2 and not (folder / "final.json").exists():
                return folder, rows[-1]["pid"]
        return None

    folder, pid = wait_until(a_running_trial, 300, "a running search trial", driver)
    os.kill(pid, signal.SIGKILL)  # the worker process of the trial
    assert driver.wait(timeout=600) == 0
    summary = pd.read_csv(exp_dir / "summary.csv")
    failed = summary[summary.status == "failed"]
    assert len(failed) == 1 and failed.trial_dir.iloc[0].endswith(folder.name)
    assert (summary[summary.stage == "search"].groupby("cell").size() == FAULT_STUDY["trials_per_cell"]).all()
    before = pd.read_csv(exp_dir / "summary.csv")
    resumed = start_driver(config, storage, "--num-cpus", "2", "--resume")
    assert resumed.wait(timeout=300) == 0
    after = pd.read_csv(exp_dir / "summary.csv")
    # nothing to do: the failed trial counts as one of its cell's trials, and is not run again
    assert list(after.trial_id) == list(before.trial_id) and list(after.status) == list(before.status)
