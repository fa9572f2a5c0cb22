"""The study on a real local Ray instance: the smoke preset end to end, Optuna bookkeeping,
pruning, divergence, teacher reuse and the dashboard metrics."""
import json
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
    assert set(search.status) <= {"completed", "pruned"}
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


def test_optuna_studies_record_pruned_and_completed(smoke_experiment):
    summary = pd.read_csv(smoke_experiment / "summary.csv")
    storage = optuna.storages.RDBStorage(f"sqlite:///{smoke_experiment / 'optuna.db'}")
    names = sorted(s.study_name for s in optuna.get_all_study_summaries(storage))
    assert names == sorted(f"smoke:{c}" for c in summary.cell.unique())
    for cell, rows in summary[summary.stage == "search"].groupby("cell"):
        study = optuna.load_study(study_name=f"smoke:{cell}", storage=storage)
        trials = study.get_trials()
        assert len(trials) == len(rows)
        states = sorted(t.state.name for t in trials)
        expected = sorted({"completed": "COMPLETE", "pruned": "PRUNED"}[s] for s in rows.status)
        assert states == expected
        for trial in trials:
            last_step = max(trial.intermediate_values)
            # pruned trials keep their last intermediate value (SPEC §6), completed their final one
            assert trial.value == pytest.approx(trial.intermediate_values[last_step])
        completed = rows[rows.status == "completed"]
        values = sorted(t.value for t in trials if t.state.name == "COMPLETE")
        assert values == pytest.approx(sorted(completed.best_val_acc))


def test_test_accuracy_is_the_selected_checkpoints(smoke_experiment):
    summary = pd.read_csv(smoke_experiment / "summary.csv")
    for row in summary[summary.status == "completed"].head(8).itertuples():
        progress = pd.read_csv(smoke_experiment / row.trial_dir / "progress.csv")
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
    logs = []
    cfg = StudyConfig.preset("smoke").replace(students=["mlp1d_8"], methods=["kd"], trials_per_cell=1,
                                              rerun_seeds=0)
    study = Study(cfg, smoke_experiment.parent, "smoke-again", log=logs.append)
    study.prepare(resume=False)
    study.run()
    assert sorted(store.glob("*/model.pt")) == stored
    assert [p.stat().st_mtime_ns for p in stored] == mtimes
    assert not any("training cnn1d_32" in line for line in logs)


def test_a_given_teacher_is_scored_once_per_weights(smoke_experiment, tmp_path):
    import shutil

    import torch

    from kd.store import save_model

    given = tmp_path / "given.pt"
    shutil.copy(next((smoke_experiment.parent / "teachers").glob("*/model.pt")), given)
    cfg = StudyConfig.preset("smoke").replace(students=["mlp1d_8"], methods=["kd"], trials_per_cell=1,
                                              rerun_seeds=0)
    cfg = cfg.replace(train={**cfg.train, "teacher_checkpoint": str(given)})
    storage = tmp_path / "runs"

    def run(name):
        logs = []
        study = Study(cfg, storage, name, log=logs.append)
        study.prepare(resume=False)
        study.run()
        row = pd.read_csv(study.exp_dir / "teachers.csv").iloc[0]
        return any("evaluating the given teacher" in line for line in logs), (row.best_val_acc, row.test_acc)

    evaluated, scores = run("first")
    assert evaluated and 60 < scores[1] <= 100
    # a second study over the same weights reads the stored scores
    assert run("second") == (False, scores)
    # other weights in the same file are scored again
    payload = torch.load(given, weights_only=True)
    state = {k: torch.zeros_like(v) if v.is_floating_point() else v for k, v in payload["state_dict"].items()}
    save_model(given, payload["arch"], payload["num_classes"], state)
    evaluated, changed = run("third")
    assert evaluated and changed != scores


def test_diverging_trials_fail_and_the_study_goes_on(ray_session, tmp_path):
    cfg = StudyConfig.preset("smoke").replace(
        students=["mlp1d_8"], methods=["ce", "kd"], trials_per_cell=2, rerun_seeds=1,
        search={"ce": {"lr": [1.0e6, 1.0e7]}})
    study = Study(cfg, tmp_path, "diverge")
    study.prepare(resume=False)
    study.run()
    summary = pd.read_csv(study.exp_dir / "summary.csv")
    ce = summary[summary.cell == "mlp1d_8-ce"]
    assert (ce.status == "failed").all() and ce.reason.str.startswith("diverged").all()
    kd = summary[(summary.cell == "mlp1d_8-kd") & (summary.stage == "search")]
    assert set(kd.status) <= {"completed", "pruned"} and len(kd) == 2
    assert (summary[summary.stage == "rerun"].cell == "mlp1d_8-kd").all()  # no config to re-run for ce
    storage = optuna.storages.RDBStorage(f"sqlite:///{study.exp_dir / 'optuna.db'}")
    ce_trials = optuna.load_study(study_name="diverge:mlp1d_8-ce", storage=storage).get_trials()
    assert [t.state.name for t in ce_trials] == ["FAIL", "FAIL"]


def test_metrics_port_shows_the_study_metrics(ray_session, tmp_path):
    """Gauges are exported while they are being set, so the port is read during a run."""
    url = f"http://127.0.0.1:{ray_session['metrics_port']}/metrics"
    names = ("ray_kd_trials_started", "ray_kd_trials_completed", "ray_kd_cell_best_val_acc",
             "ray_kd_trial_val_acc", "ray_kd_trial_temperature", "ray_kd_trial_phase", "ray_kd_trial_epoch")
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
        seen |= {n for n in names if n in text}
        lines += [line for line in text.splitlines() if line.startswith("ray_kd_trials_started")]
        if not runner.is_alive():
            break
        time.sleep(0.3)
    runner.join()
    assert seen == set(names)
    assert any('cell="cnn1d_8-annealing"' in line and 'study="metrics"' in line for line in lines)
