"""Study configuration and CLI: presets, and every bad input refused before Ray starts."""
import json
import sys
from pathlib import Path

import pytest
import yaml

import run_study
from kd.config import ConfigError
from study.config import StudyConfig, preset_names


def run_cli(args, capsys):
    code = run_study.main(args)
    return code, capsys.readouterr()


def test_presets_are_listed_with_cost(capsys):
    code, out = run_cli(["presets"], capsys)
    assert code == 0
    for name in ("smoke", "mnist1d", "cifar10-paper", "cifar100-paper"):
        assert name in out.out
    assert out.out.count("cost:") == len(preset_names())


def test_runnable_presets_validate():
    smoke, default = StudyConfig.preset("smoke"), StudyConfig.preset("mnist1d")
    assert len(smoke.students) == 2 and set(smoke.methods) == {"ce", "kd", "annealing"}
    assert smoke.trials_per_cell >= 4
    assert len(default.students) >= 3 and len(default.methods) == 5
    assert default.trials_per_cell >= 12 and default.rerun_seeds >= 5  # every headline: 5 seeds or more
    assert default.confirm_top >= 2 and default.confirm_seeds >= 1  # a pick is confirmed on other seeds


@pytest.mark.parametrize("name", preset_names())
def test_every_method_searches_lr_and_weight_decay_over_the_same_ranges(name, tmp_path):
    values = yaml.safe_load((Path("study/presets") / f"{name}.yaml").read_text())
    cfg = StudyConfig.from_dict({**values, "data_dir": str(tmp_path)} if "data_dir" in values or
                                values["dataset"].startswith("cifar") else values)
    spaces = {method: cfg.search_space(method) for method in cfg.methods}
    shared = {(str(s["lr"]), str(s["weight_decay"])) for s in spaces.values()}
    assert len(shared) == 1, spaces
    lr, weight_decay = next(iter(spaces.values()))["lr"], next(iter(spaces.values()))["weight_decay"]
    assert isinstance(lr, list) and len(lr) == 2 and lr[0] < lr[1]  # searched, not fixed
    if "continuation" in cfg.methods and values["dataset"] in ("mnist1d", "cifar10", "cifar100"):
        assert lr[0] <= 0.2 <= lr[1]  # the Continuation-KD paper trains at 0.2


@pytest.mark.parametrize("search, message", [
    ({"annealing": {"lr": [0.01, 0.1]}}, "search.annealing: ['lr'] is not allowed; every method searches lr and "
                                          "weight_decay over the same ranges: set them under search.shared"),
    ({"kd": {"weight_decay": 1e-4}}, "search.kd: ['weight_decay'] is not allowed"),
    ({"everything": {"lr": [0.01, 0.1]}}, "search: unknown key(s) ['everything']"),
    ({"shared": {"temperature": [1, 2]}}, "search.shared: unknown parameter(s) ['temperature']"),
    ({"continuation": {"stage_epochs": [1, 2]}}, "search.continuation: unknown parameter(s) ['stage_epochs']"),
])
def test_a_method_cannot_search_its_own_lr_or_weight_decay(search, message):
    with pytest.raises(Exception) as error:
        StudyConfig.preset("smoke").replace(search=search)
    assert message in str(error.value)


@pytest.mark.parametrize("name, dataset", [("cifar10-paper", "cifar10"), ("cifar100-paper", "cifar100")])
def test_paper_presets_validate_with_a_data_dir(tmp_path, name, dataset):
    with pytest.raises(Exception, match="data_dir"):
        StudyConfig.preset(name)  # no data folder given: refused, naming the field
    values = yaml.safe_load((Path("study/presets") / f"{name}.yaml").read_text())
    cfg = StudyConfig.from_dict({**values, "data_dir": str(tmp_path)})
    assert cfg.dataset == dataset and cfg.teacher == "resnet110" and cfg.assistant == "resnet20"
    assert cfg.students == ["resnet8", "resnet14", "resnet20", "resnet32", "resnet56"]
    # the official budget: 200 + 200 epochs, tau_max up to 10
    run = cfg.train_config("resnet8", "annealing", tau_max=10, stage_epochs=20)
    assert run.epochs == 400 and run.phase1_epochs == 200 and run.num_classes == (100 if dataset == "cifar100" else 10)
    assert cfg.gpus_per_trial == 0.5


def test_unknown_preset(tmp_path, capsys):
    code, out = run_cli(["run", "--preset", "nope", "--storage", str(tmp_path)], capsys)
    assert code == 2 and "preset: unknown preset 'nope'; allowed: cifar10-paper" in out.err


def test_unwritable_storage(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    code, out = run_cli(["run", "--preset", "smoke", "--storage", str(blocker / "runs")], capsys)
    assert code == 2 and "storage:" in out.err and "not a writable folder" in out.err
    code, out = run_cli(["run", "--preset", "smoke", "--storage", "s3://bucket/x"], capsys)
    assert code == 2 and "storage: 's3://bucket/x' is not allowed" in out.err


def test_existing_experiment_needs_resume(tmp_path, capsys):
    (tmp_path / "smoke").mkdir()
    code, out = run_cli(["run", "--preset", "smoke", "--storage", str(tmp_path)], capsys)
    assert code == 2 and "name: 'smoke' is not allowed; experiment" in out.err and "--resume" in out.err
    code, out = run_cli(["run", "--preset", "smoke", "--storage", str(tmp_path), "--name", "other", "--resume"], capsys)
    assert code == 2 and "cannot be resumed" in out.err


def test_a_resume_ignores_a_reworded_description_and_cost_but_not_a_changed_run(tmp_path):
    from study.runner import Study

    first = Study(StudyConfig.preset("smoke"), tmp_path, "smoke", preset="smoke")
    first.prepare(resume=False)
    first.write_info("interrupted")
    reworded = StudyConfig.preset("smoke").replace(description="another line", cost="~2 min")
    Study(reworded, tmp_path, "smoke", preset="smoke").prepare(resume=True)
    with pytest.raises(ConfigError, match=r"differs from the saved one in \['epochs'\]$"):
        Study(reworded.replace(epochs=9, cost="~3 min"), tmp_path, "smoke").prepare(resume=True)
    info = json.loads((tmp_path / "smoke" / "study.json").read_text())
    assert info["config"]["description"] == StudyConfig.preset("smoke").description  # the record stays


def test_search_space_is_define_by_run_and_feasible():
    import optuna

    from study.space import MethodSpace

    cfg = StudyConfig.preset("mnist1d")
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    for method in cfg.methods:
        for _ in range(20):
            trial = study.ask()
            params = MethodSpace(cfg, method)(trial)
            run = cfg.train_config("mlp1d_8", method, **params)  # validates every sampled config
            if method == "annealing":
                assert run.epochs - run.phase1_epochs >= cfg.search_space("annealing")["min_phase2_epochs"]
            if method in ("kd", "takd"):  # the preset's own ranges, not the defaults' sets
                assert 1.0 <= params["temperature"] <= 8.0 and 0.1 <= params["alpha"] <= 0.9
            if method == "continuation":
                assert params["margin"] == 0.0
            if method == "continuation":
                assert "psi_fraction" not in params and 1 <= params["psi_epochs"] <= cfg.epochs
            study.tell(trial, 0.0)
