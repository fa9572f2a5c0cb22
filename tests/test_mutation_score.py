"""scripts/mutation_score.py names a mutant's function the way scripts/equivalent_mutants.txt
lists them, so the list of equivalent mutants survives mutmut renumbering its mutants."""
import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "mutation_score.py"
spec = importlib.util.spec_from_file_location("mutation_score", SCRIPT)
mutation_score = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mutation_score)


def test_mutant_names_map_to_their_functions():
    assert mutation_score.function_of("kd.losses.x_soft_kl__mutmut_3") == "kd.losses.soft_kl"
    assert mutation_score.function_of("kd.losses.x__check_temperature__mutmut_12") == "kd.losses._check_temperature"
    assert mutation_score.function_of("kd.methods.annealing.xǁAnnealingKDǁlosses__mutmut_3") == \
        "kd.methods.annealing.AnnealingKD.losses"
    assert mutation_score.function_of("study.search.xǁStudyPlannerǁ__init____mutmut_1") == \
        "study.search.StudyPlanner.__init__"


def test_every_listed_survivor_names_a_function_a_line_and_a_reason():
    for path in (mutation_score.EQUIVALENTS, mutation_score.GPU_ONLY):
        table = mutation_score.equivalents(path)
        assert len(table) >= 5, path
        for (function, line), reason in table.items():
            assert function.count(".") >= 2 and line and len(reason) > 20, (path, function)
    # a mutant is explained once: equivalent, or different on a GPU only
    assert not set(mutation_score.equivalents()) & set(mutation_score.equivalents(mutation_score.GPU_ONLY))
