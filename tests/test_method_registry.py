"""What registration does with a method's declaration, and how plugin files and modules are
loaded, called here directly: the project's own methods register once, at import, and the
plugin test's file loads once per process, so neither would show a change in these rules."""
import sys
import uuid

import pytest

from kd.errors import ConfigError
from kd.methods import METHODS, load_plugins
from kd.methods.annealing import AnnealingKD
from kd.methods.base import Method, Param, _check_declaration
from kd.methods.kd import HintonKD


def test_a_params_range_and_description():
    share = Param("share", float, 0.5, "a share", low=0.0, high=1.0, above_low=True)
    assert share.bounds() == "in (0, 1]" and share.rule() == "it must lie in (0, 1]"
    assert Param("share", float, 0.5, "a share", low=0.0, high=1.0).bounds() == "in [0, 1]"
    assert share.describe() == "float, default 0.5, in (0, 1]: a share"
    assert Param("name", str, "x", "free text").describe() == "str, default x: free text"
    assert not share.allows(0.0) and share.allows(1.0) and not share.allows(1.01)


def test_registration_names_a_method_and_labels_it_by_name_unless_it_declares_a_label():
    class Unlabelled(HintonKD):  # inherits Hinton KD's label, which must not show
        pass

    class Labelled(HintonKD):
        label = "My KD"

    _check_declaration("unlabelled", Unlabelled, {})
    _check_declaration("labelled", Labelled, {})
    assert (Unlabelled.name, Unlabelled.label) == ("unlabelled", "unlabelled")
    assert (Labelled.name, Labelled.label) == ("labelled", "My KD")


def test_a_search_may_name_params_budget_fractions_and_settings_and_nothing_else():
    class Ramped(Method):
        params = (Param("ramp_epochs", int, 2, "epochs of the ramp", low=1),)
        budget_fractions = {"ramp_fraction": "ramp_epochs"}
        search_settings = ("ramp_floor",)
        search = {"ramp_epochs": [1, 4], "ramp_fraction": [0.2, 0.8], "ramp_floor": 1}

    _check_declaration("ramped", Ramped, {})  # each of the three kinds of search key is its own
    Ramped.search = {**Ramped.search, "ramp_ceiling": 3}
    with pytest.raises(ValueError, match=r"its search names \['ramp_ceiling'\], which are none of its params"):
        _check_declaration("ramped", Ramped, {})


def test_the_annealing_search_fits_its_budget_with_one_phase_2_epoch_unless_told_more():
    corner = {"tau_max": 4, "stage_epochs": 2}
    assert AnnealingKD.check_search(corner, {}, epochs=9) is None
    assert AnnealingKD.check_search(corner, {}, epochs=8) == (
        "the annealing search can ask for tau_max 4 x stage_epochs 2 plus 1 phase-2 epochs = 9 epochs "
        "(raise epochs or narrow search.annealing)")
    assert "plus 3 phase-2 epochs = 11" in AnnealingKD.check_search(corner, {"min_phase2_epochs": 3}, epochs=10)


PLUGIN = '''
from kd.methods.base import METHODS
from kd.methods.kd import HintonKD


@METHODS.register("{name}")
class Fresh(HintonKD):
    label = "Fresh"
'''


def test_a_plugin_file_registers_its_methods_once_and_every_plugin_file_named_loads(tmp_path):
    names = [f"fresh_{uuid.uuid4().hex[:8]}" for _ in range(2)]
    files = [tmp_path / f"plugin_{i}.py" for i in range(2)]
    for name, path in zip(names, files):
        path.write_text(PLUGIN.format(name=name))
    load_plugins([str(files[0]), "", str(files[0]), str(files[1])])  # named twice: loaded once
    assert all(name in METHODS and METHODS.get(name).label == "Fresh" for name in names)
    fresh = METHODS.get(names[0])
    # importable by its module name, as pickle (Ray's workers, DataLoader processes) finds a class
    assert fresh.__module__.startswith("kd_method_plugin_") and sys.modules[fresh.__module__].Fresh is fresh
    load_plugins([str(files[1])])  # already loaded: no "registered twice"


def test_a_plugin_module_is_imported_by_name(tmp_path, monkeypatch):
    name = f"fresh_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}_module.py").write_text(PLUGIN.format(name=name))
    monkeypatch.syspath_prepend(str(tmp_path))
    load_plugins([f"{name}_module"])
    assert METHODS.get(name).label == "Fresh" and f"{name}_module" in sys.modules


def test_a_plugin_that_is_not_there_is_refused_naming_the_field(tmp_path):
    missing = tmp_path / "nowhere.py"
    with pytest.raises(ConfigError) as refused:
        load_plugins([str(missing)], field="plugins")
    assert str(refused.value) == (f"plugins: {str(missing)!r} is not allowed; there is no such file (a method "
                                  f"plugin: a .py file that registers methods, at the same path on every node)")
    with pytest.raises(ConfigError) as refused:
        load_plugins(["no_such_plugin_module"], field="KD_METHOD_PLUGINS")
    assert str(refused.value) == ("KD_METHOD_PLUGINS: 'no_such_plugin_module' is not allowed; No module named "
                                  "'no_such_plugin_module' (a method plugin: a .py file or a module every node "
                                  "can import)")


def test_a_plugin_that_fails_half_way_is_not_left_loaded(tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('half-way')\n")
    for _ in range(2):  # the second attempt runs the file again rather than finding it loaded
        with pytest.raises(RuntimeError, match="half-way"):
            load_plugins([str(broken)])
