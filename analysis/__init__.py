"""analysis: turn an experiment directory into tables, figures and a report (no Ray, no cluster)."""
from analysis.load import Experiment, ExperimentError, load_experiment

__all__ = ["Experiment", "ExperimentError", "load_experiment", "main_report", "write_report"]


def __getattr__(name: str):
    # The report pulls in matplotlib and scipy (seconds): the study driver reads only
    # analysis.load's column names, and a driver starts at every resume.
    if name in ("main_report", "write_report"):
        from analysis import report

        return getattr(report, name)
    raise AttributeError(f"module 'analysis' has no attribute {name!r}")
