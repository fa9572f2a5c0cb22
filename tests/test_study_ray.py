"""The study on a real local Ray instance: the smoke preset end to end, Optuna bookkeeping,
pruning, divergence, teacher reuse and the dashboard metrics."""
import json
import shutil
import threading
import time
import urllib.request

import optuna
import pandas as pd
import pytest

from study.config import StudyConfig
from study.runner import Study

pytestmark = pytest.mark.slow


def test_smoke_study_accounts_for_every_trial(smoke_experiment):
    cfg = StudyConfig.preset("smoke")
    summary = pd.read_csv(smoke_experiment / "summary.csv")
    search = summary[summary.stage == "search"]
    # every cell got exactly its trials, each finished one way or another
    assert search.groupby("cell").size().to_dict() == {f"{s}-{m}": cfg.trials_per_cell for s, m in cfg.cells}
    assert set(search.status) <= {"completed", "pruned", "failed"}
    # every method searches lr up to 0.5: a failure is a run that diverged there, nothing else
    assert search[search.status == "failed"].reason.str.startswith("diverged").all()
    assert (search[search.status == "completed"].epochs_run == cfg.epochs).all()
    pruned = search[search.status == "pruned"]
    assert (pruned.epochs_run < cfg.epochs).all()
    # re-runs: each cell's best completed config, with rerun_seeds new seeds, all completed
    rerun = summary[summary.stage == "rerun"]
    assert rerun.groupby("cell").size().to_dict() == {f"{s}-{m}": cfg.rerun_seeds for s, m in cfg.cells}
    assert (rerun.status == "completed").all()
    for cell, rows in rerun.groupby("cell"):
        completed = search[(search.cell == cell) & (search.status == "completed")]
        best = completed.loc[completed.best_val_acc.idxmax()]
        assert set(rows.config) == {best.config}
        assert sorted(rows.seed) == [cfg.seed + 1 + i for i in range(cfg.rerun_seeds)]
    assert (summary.capacity_ratio == summary.teacher_params / summary.student_params).all()


def ledger(exp_dir):
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(str(exp_dir / "optuna-journal.log")))


def test_optuna_studies_record_pruned_and_completed(smoke_experiment):
    summary = pd.read_csv(smoke_experiment / "summary.csv")
    storage = ledger(smoke_experiment)
    names = sorted(s.study_name for s in optuna.get_all_study_summaries(storage))
    assert names == sorted(f"smoke:{c}{kind}" for c in summary.cell.unique() for kind in ("", ":rerun"))
    for cell, rows in summary.groupby("cell"):
        # the ledger and summary.csv agree trial by trial: same trials, same Tune ids, same states
        reruns = optuna.load_study(study_name=f"smoke:{cell}:rerun", storage=storage).get_trials()
        rerun_rows = rows[rows.stage != "search"].sort_values("optuna_trial")
        assert [t.user_attrs["tune_trial"] for t in reruns] == list(rerun_rows.trial_id)
        assert [t.user_attrs["seed"] for t in reruns] == list(rerun_rows.seed)
        assert all(t.state.name == "COMPLETE" for t in reruns)
        rows = rows[rows.stage == "search"].sort_values("optuna_trial")
        study = optuna.load_study(study_name=f"smoke:{cell}", storage=storage)
        trials = study.get_trials()
        assert len(trials) == len(rows)
        assert [t.user_attrs["tune_trial"] for t in trials] == list(rows.trial_id)
        states = sorted(t.state.name for t in trials)
        expected = sorted({"completed": "COMPLETE", "pruned": "PRUNED", "failed": "FAIL"}[s] for s in rows.status)
        assert states == expected
        for trial in trials:
            if trial.state.name == "PRUNED":  # they keep their last intermediate value (SPEC §6)
                assert trial.value == pytest.approx(trial.intermediate_values[max(trial.intermediate_values)])
        completed = rows[rows.status == "completed"]
        values = sorted(t.value for t in trials if t.state.name == "COMPLETE")
        assert values == pytest.approx(sorted(completed.best_val_acc))


def test_test_accuracy_is_the_selected_checkpoints(smoke_experiment):
    summary = pd.read_csv(smoke_experiment / "summary.csv")
    for row in summary[summary.status == "completed"].head(8).itertuples():
        progress = pd.read_json(smoke_experiment / row.trial_dir / "epochs.jsonl", lines=True)
        assert list(progress.epoch) == list(range(1, row.epochs_run + 1))  # every epoch, not only reports
        final_phase = progress[progress.phase == progress.phase.max()]
        chosen = final_phase.loc[final_phase.val_acc.idxmax()]  # first epoch with the best val
        assert row.best_val_acc == chosen.val_acc
        assert row.test_acc == chosen.test_acc


def test_experiment_records_config_versions_and_teachers(smoke_experiment):
    info = json.loads((smoke_experiment / "study.json").read_text())
    assert info["status"] == "finished" and info["config"] == StudyConfig.preset("smoke").to_dict()
    assert {"torch", "ray", "optuna", "python"} <= set(info["versions"])
    assert info["versions"]["ray"] == "2.60.0" and len(info["git_revision"]) in (40, 7) or info["git_revision"] == "unknown"
    assert info["hardware"]["cpus"] == 2
    teachers = pd.read_csv(smoke_experiment / "teachers.csv")
    assert list(teachers.role) == ["teacher"] and teachers.arch[0] == "cnn1d_32"
    assert 60 < teachers.test_acc[0] <= 100


def test_later_study_reuses_the_stored_teacher(smoke_experiment, tmp_path):
    store = smoke_experiment.parent / "teachers"
    stored = sorted(store.glob("*/model.pt"))
    mtimes = [p.stat().st_mtime_ns for p in stored]
    cfg = StudyConfig.preset("smoke").replace(students=["mlp1d_8"], methods=["kd"], trials_per_cell=1,
                                              rerun_seeds=0)
    study = Study(cfg, smoke_experiment.parent, "smoke-again")
    study.prepare(resume=False)
    study.run()
    assert sorted(store.glob("*/model.pt")) == stored
    assert [p.stat().st_mtime_ns for p in stored] == mtimes  # not trained again
    first = pd.read_csv(smoke_experiment / "teachers.csv").iloc[0]
    again = pd.read_csv(study.exp_dir / "teachers.csv").iloc[0]
    assert (again.path, again.test_acc, again.seconds) == (first.path, first.test_acc, first.seconds)


def test_a_given_teacher_is_scored_once_per_weights(smoke_experiment, tmp_path):
    import shutil

    import torch

    from kd.checkpoints import save_model

    given = tmp_path / "given.pt"
    shutil.copy(next((smoke_experiment.parent / "teachers").glob("*/model.pt")), given)
    cfg = StudyConfig.preset("smoke").replace(students=["mlp1d_8"], methods=["kd"], trials_per_cell=1,
                                              rerun_seeds=0)
    cfg = cfg.replace(train={**cfg.train, "teacher_checkpoint": str(given)})
    storage = tmp_path / "runs"

    def run(name):
        study = Study(cfg, storage, name)
        study.prepare(resume=False)
        study.run()
        row = pd.read_csv(study.exp_dir / "teachers.csv").iloc[0]
        kept = {p: p.stat().st_mtime_ns for p in (storage / "teachers" / "given").glob("*.json")}
        return kept, (row.best_val_acc, row.test_acc, row.seconds)

    kept, scores = run("first")
    assert len(kept) == 1 and 60 < scores[1] <= 100
    # a second study over the same weights reads the stored scores (the scoring time included)
    assert run("second") == (kept, scores)
    # other weights in the same file are scored again, into a file of their own
    payload = torch.load(given, weights_only=True)
    state = {k: torch.zeros_like(v) if v.is_floating_point() else v for k, v in payload["state_dict"].items()}
    save_model(given, payload["arch"], payload["num_classes"], state)
    kept_now, changed = run("third")
    assert len(kept_now) == 2 and changed[:2] != scores[:2]


def test_diverging_trials_fail_and_the_study_goes_on(ray_session, tmp_path):
    # lr is searched alike for every method: at these values every trial diverges
    cfg = StudyConfig.preset("smoke").replace(
        students=["mlp1d_8"], methods=["ce", "kd"], trials_per_cell=2, rerun_seeds=1,
        search={"shared": {"lr": [1.0e6, 1.0e7]}})
    study = Study(cfg, tmp_path, "diverge")
    study.prepare(resume=False)
    study.run()
    summary = pd.read_csv(study.exp_dir / "summary.csv")
    assert len(summary) == 4 and (summary.stage == "search").all()  # no completed config: nothing re-run
    assert (summary.status == "failed").all() and summary.reason.str.startswith("diverged").all()
    assert json.loads((study.exp_dir / "study.json").read_text())["status"] == "finished"
    storage = ledger(study.exp_dir)
    for cell in ("mlp1d_8-ce", "mlp1d_8-kd"):
        trials = optuna.load_study(study_name=f"diverge:{cell}", storage=storage).get_trials()
        assert [t.state.name for t in trials] == ["FAIL", "FAIL"]


def test_metrics_port_shows_the_study_metrics(ray_session, tmp_path):
    """Gauges are exported while they are being set, so the port is read during a run."""
    url = f"http://127.0.0.1:{ray_session['metrics_port']}/metrics"
    # exact names, as Prometheus reads them (counters end in _total), README "Monitoring"
    names = ("ray_kd_trials_started_total", "ray_kd_trials_completed_total", "ray_kd_cell_best_val_acc",
             "ray_kd_cell_running_trials", "ray_kd_cell_temperature_max", "ray_kd_study_utilisation")
    cfg = StudyConfig.preset("smoke").replace(
        students=["cnn1d_8"], methods=["annealing"], trials_per_cell=2, rerun_seeds=0, epochs=12,
        train={"num_samples": 6000, "val_size": 300, "teacher_epochs": 3})
    study = Study(cfg, tmp_path, "metrics")
    study.prepare(resume=False)
    runner = threading.Thread(target=study.run)
    runner.start()
    seen, lines = set(), []
    while runner.is_alive() or len(seen) < len(names):
        text = urllib.request.urlopen(url, timeout=10).read().decode()
        samples = [line for line in text.splitlines() if line.startswith("ray_kd_")]
        seen |= {line.split("{")[0].split(" ")[0] for line in samples} & set(names)
        lines += samples
        if not runner.is_alive():
            break
        time.sleep(0.3)
    runner.join()
    assert seen == set(names)
    assert any(line.startswith("ray_kd_trials_started_total{") and 'cell="cnn1d_8-annealing"' in line
               and 'study="metrics"' in line for line in lines)
    assert not any("trial=" in line for line in lines)  # per cell, never per trial: bounded series


def test_a_resumed_study_starts_its_best_validation_gauge_from_the_ledger(smoke_experiment, tmp_path, monkeypatch):
    """Each cell's best so far, as the resumed driver's metrics callback is given it, is the best
    validation score of the cell's completed and pruned trials in the first session's summary."""
    from study import metrics

    given = {}

    class Recording(metrics.StudyMetrics):
        def __init__(self, study, slots, best_on_record=None):
            given.update(best_on_record or {})
            super().__init__(study, slots, best_on_record)

    monkeypatch.setattr(metrics, "StudyMetrics", Recording)
    storage = tmp_path / "storage"
    shutil.copytree(smoke_experiment.parent, storage)  # the experiment and its teacher store
    study = Study(StudyConfig.preset("smoke"), storage, smoke_experiment.name, preset="smoke")
    study.prepare(resume=True)
    study.run()  # finished already: the session ends at once
    summary = pd.read_csv(smoke_experiment / "summary.csv")
    scored = summary[summary.status.isin(["completed", "pruned"])]
    assert given == pytest.approx(scored.groupby("cell").best_val_acc.max().to_dict())
