"""Methods declare their parameters, search space and looks; everything else reads them, and
nothing written before they did changes meaning.

tests/data/format-v1/ was written by the code before methods declared themselves: a tiny
study (MNIST-1D, ce/kd/takd/annealing/continuation, two students) with its ledger, summary,
teachers, per-epoch files, one saved training state, the teacher store's config files and
the report (figures off) that code wrote.
"""
import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from analysis import figures, tables
from analysis.report import write_report
from kd import METHODS, ConfigError, TrainConfig
from kd.__main__ import build_parser
from kd.config import ALWAYS_RECORDED, method_params
from kd.methods import Method, Param, ordered
from kd.store import assistant_config, teacher_config
from study.config import StudyConfig
from study.runner import Study
from study.space import MethodSpace, corner_params

FORMAT_V1 = Path(__file__).parent / "data" / "format-v1"
EXPERIMENT = FORMAT_V1 / "experiment"

# Content hashes computed by the code before this change (kd/store.py names stored teachers
# with their first 16 characters): a changed key silently retrains every stored teacher.
PINNED_KEYS = {
    "default": "5412ecea796db2c53ee72e684032797847c0aae392dd6625f8eba9847a7ec93f",
    "tiny_teacher": "affc2b39275835331b1c997287c5301e31ef6a99bfdd90d062b86c9db33a5e1e",
    "assistant": "a11be42350256ae913adf6488ec1533453ead7126c38fff7072ec9949a4d272b",
    "annealing": "301afa68f6ef734179ca25b2ef47c01e0059ef3455421aff58c37f19dc1499fc",
    "continuation": "bb2901e56687fd36a1a0e6bad32426ae5181820aaf26a8ba1b53acde740987cd",
    "kd_cifar": "09e2f64e798ae43324a3e33667efd0628398bc64e93812c92f71f5abf19ecd64",
}


def pinned_configs() -> dict[str, TrainConfig]:
    return {
        "default": TrainConfig(),
        "tiny_teacher": teacher_config(TrainConfig(model="mlp1d_8", teacher="cnn1d_16", num_samples=1200,
                                                   val_size=200, teacher_epochs=8)),
        "assistant": assistant_config(TrainConfig(model="mlp1d_8", method="takd", teacher="cnn1d_32",
                                                  assistant="cnn1d_16", epochs=20),
                                      "/storage/teachers/cnn1d_32-0123456789abcdef/model.pt"),
        "annealing": TrainConfig(method="annealing", model="mlp1d_8", teacher="cnn1d_64", epochs=40, tau_max=5,
                                 stage_epochs=4),
        "continuation": TrainConfig(method="continuation", model="mlp1d_16", teacher="cnn1d_32", epochs=20,
                                    tau_max=4, psi_epochs=8, margin=0.5, lr=0.3, weight_decay=1e-4,
                                    lr_schedule="cosine", grad_clip=2.0, seed=3),
        "kd_cifar": TrainConfig(dataset="cifar100", data_dir="/data/cifar", method="kd", model="resnet20",
                                teacher="resnet56", temperature=4.0, alpha=0.9, epochs=240, device="cuda", amp=False),
    }


@pytest.mark.parametrize("name", sorted(PINNED_KEYS))
def test_keys_of_configs_written_before_are_unchanged(name):
    assert pinned_configs()[name].key() == PINNED_KEYS[name]


def test_stored_teachers_keep_their_keys_and_records():
    folders = sorted((FORMAT_V1 / "teachers").iterdir())
    assert [f.name.split("-")[0] for f in folders] == ["cnn1d_16", "cnn1d_8"]
    for folder in folders:
        record = json.loads((folder / "config.json").read_text())
        cfg = TrainConfig.from_dict(record)
        assert cfg.to_dict() == record
        assert folder.name == f"{cfg.model}-{cfg.key()[:16]}"


def test_a_saved_training_state_still_belongs_to_its_config():
    # kd.train refuses a resume whose saved config differs from cfg.to_dict()
    saved = torch.load(EXPERIMENT / "trials" / "mlp1d_8-annealing_search_4e425242" / "state.pt",
                       weights_only=False)["config"]
    assert saved["method"] == "annealing" and saved["tau_max"] == 2
    assert TrainConfig.from_dict(saved).to_dict() == saved


def test_a_new_method_parameter_enters_the_record_only_away_from_its_default(monkeypatch):
    class Sharpened(Method):
        params = (Param("sharpness", float, 2.0, "how sharp", low=0.0),)

    before = pinned_configs()["annealing"]
    monkeypatch.setitem(METHODS._entries, "sharpened", Sharpened)  # registered for this test only
    cfg = pinned_configs()["annealing"]
    assert cfg.sharpness == 2.0 and "sharpness" not in cfg.to_dict()
    assert cfg.key() == PINNED_KEYS["annealing"] and cfg == before
    sharper = cfg.replace(sharpness=3.0)
    assert sharper.to_dict()["sharpness"] == 3.0 and sharper.key() != cfg.key() and sharper != cfg
    assert set(ALWAYS_RECORDED) <= set(cfg.to_dict())  # recorded at their defaults, as they always were
    assert cfg.to_dict()["psi_epochs"] == 45


def test_the_study_record_is_unchanged_and_resumable():
    saved = json.loads((EXPERIMENT / "study.json").read_text())["config"]
    assert "plugins" not in saved
    assert StudyConfig(**saved).to_dict() == saved  # the runner's --resume check


def tables_under(report: str, heading: str) -> str:
    """The Markdown tables of one section of a report."""
    section = report.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return "\n".join(line for line in section.splitlines() if line.startswith("|"))


def test_an_experiment_written_before_gets_the_same_report(tmp_path):
    """Labels, method order, rules, searched ranges and teachers as the code before wrote them."""
    paths = write_report(EXPERIMENT, tmp_path / "report", figures_too=False)
    new, old = paths["report.md"].read_text(), (EXPERIMENT / "report" / "report.md").read_text()
    for heading in ("Verdict", "How each method was run", "Teacher-student gap", "Gain over CE",
                    "Ranking per capacity level", "Best configurations"):
        assert tables_under(new, heading) == tables_under(old, heading), heading
    assert "| Annealing-KD vs CE (no teacher) |" in tables_under(new, "Verdict").replace(" | ", " |\n| ")
    ranking = tables_under(new, "Ranking per capacity level").splitlines()[0]
    assert ranking == ("| student | capacity ratio | CE (no teacher) | Hinton KD | TAKD | Annealing-KD | "
                       "Continuation-KD |")


def test_its_summary_is_rebuilt_with_the_same_columns_and_values(tmp_path):
    shutil.copytree(EXPERIMENT, tmp_path / "before")
    study = Study(StudyConfig(**json.loads((EXPERIMENT / "study.json").read_text())["config"]), tmp_path, "before")
    rebuilt = study.write_summary()
    old = pd.read_csv(EXPERIMENT / "summary.csv")
    assert list(rebuilt.columns) == list(old.columns)
    rebuilt = pd.read_csv(tmp_path / "before" / "summary.csv")
    same = [c for c in old.columns if c not in ("seconds", "node")]  # Tune's, in files the fixture left out
    pd.testing.assert_frame_equal(rebuilt[same], old[same])


# ---------------------------------------------------------------------------- declarations
def test_declarations_drive_labels_order_and_style():
    assert ordered() == sorted(METHODS.names(), key=lambda m: METHODS.get(m).order)
    assert ordered()[:2] == ["ce", "kd"]
    assert figures.style("annealing") == ("#D55E00", "^", "Annealing-KD")
    assert figures.style("not-a-method") == (Method.colour, Method.marker, "not-a-method")
    assert tables.method_key("continuation") < tables.method_key("not-a-method")


def test_a_subclass_is_never_labelled_as_its_parent(monkeypatch):
    from kd.methods.kd import HintonKD

    monkeypatch.setattr(METHODS, "_entries", dict(METHODS._entries))  # registered for this test only

    class SharperKD(HintonKD):  # declares no label of its own
        pass

    METHODS.register("sharper_kd")(SharperKD)
    assert figures.style("sharper_kd")[2] == "sharper_kd" and figures.style("kd")[2] == "Hinton KD"
    assert figures.style("takd")[2] == "TAKD"


def test_every_method_parameter_is_an_option_naming_its_methods():
    train = build_parser()._subparsers._group_actions[0].choices["train"]
    text = " ".join(train.format_help().split())
    for name, (param, users) in method_params().items():
        assert f"--{name.replace('_', '-')}" in text
        assert f"{', '.join(users)}: {param.help}" in text
    assert "kd, takd: softmax temperature (default: 4.0)" in text
    assert "annealing, continuation: maximum temperature (default: 10)" in text


@pytest.mark.parametrize("changes, message", [
    (dict(method="kd", temperature=0.0), "temperature: 0.0 is not allowed; it must be > 0"),
    (dict(method="ce", alpha=1.5), "alpha: 1.5 is not allowed; it must lie in [0, 1]"),
    (dict(method="ce", margin=-1.0), "margin: -1.0 is not allowed; it must be >= 0"),
    (dict(method="annealing", stage_epochs=0), "stage_epochs: 0 is not allowed; it must be an integer >= 1"),
    (dict(method="kd", temperature="hot"), "temperature: 'hot' is not allowed; it must be a number"),
    (dict(method="annealing", tau_max=2.5), "tau_max: 2.5 is not allowed; it must be an integer"),
])
def test_declared_ranges_and_types_are_checked(changes, message):
    with pytest.raises(ConfigError) as refused:
        TrainConfig.from_dict({"model": "mlp1d_8", "teacher": "cnn1d_16", "epochs": 10, **changes})
    assert str(refused.value) == message


def test_a_clashing_parameter_is_refused_naming_both_methods():
    class Clash(Method):
        params = (Param("alpha", float, 1.0, "weight of the target-class term", low=0.0),)

    with pytest.raises(ValueError) as refused:
        METHODS.register("clash")(Clash)
    message = str(refused.value)
    assert message.startswith("method 'clash': parameter 'alpha' is declared by method 'kd' too, differently (kd: "
                              "float, default 0.9, in [0, 1]: weight of the distillation term; clash: float, "
                              "default 1.0, >= 0: weight of the target-class term)")
    assert "clash" not in METHODS


def test_a_search_over_undeclared_names_is_refused():
    class Typo(Method):
        params = (Param("typo_weight", float, 1.0, "a weight", low=0.0),)
        search = {"typo_wieght": [0.1, 1.0]}

    with pytest.raises(ValueError, match=r"method 'typo': its search names \['typo_wieght'\]"):
        METHODS.register("typo")(Typo)
    assert "typo" not in METHODS


def test_a_parameter_named_like_a_config_field_is_refused(monkeypatch):
    class Shadow(Method):
        params = (Param("lr", float, 0.1, "a second learning rate", low=0.0),)

    monkeypatch.setitem(METHODS._entries, "shadow", Shadow)  # registered for this test only
    with pytest.raises(ConfigError, match=r"method 'shadow': parameter 'lr' is a TrainConfig field already"):
        TrainConfig()


def test_the_study_reads_the_declared_search_spaces():
    import optuna

    study = StudyConfig.preset("smoke").replace(methods=["ce", "kd", "takd", "annealing", "continuation"],
                                                assistant="cnn1d_16", epochs=12)
    for method in study.methods:
        space = study.search_space(method)
        assert {k: space[k] for k in ("lr", "weight_decay")} == study.search_space("ce")
        assert {k: v for k, v in space.items() if k not in ("lr", "weight_decay")} == \
            {**METHODS.get(method).search, **study.search.get(method, {})}
    # a budget fraction becomes its parameter in epochs; a search setting is never sampled
    trial = optuna.create_study().ask()
    params = MethodSpace(study, "continuation")(trial)
    assert "psi_fraction" not in params and params["psi_epochs"] == max(1, round(trial.params["psi_fraction"] * 12))
    assert "min_phase2_epochs" not in MethodSpace(study, "annealing")(optuna.create_study().ask())
    assert corner_params(study, "continuation")["psi_epochs"] == round(0.8 * 12)
    with pytest.raises(ConfigError, match=re.escape("epochs: 12 is not allowed; the annealing search can ask for "
                                                    "tau_max 8 x stage_epochs 3 plus 2 phase-2 epochs = 26")):
        study.replace(search={"annealing": {"tau_max": [2, 8], "stage_epochs": [1, 3]}})
