"""analysis: turn an experiment directory into tables, figures and a report (no Ray, no cluster)."""
from analysis.load import Experiment, ExperimentError, load_experiment
from analysis.report import main_report, write_report

__all__ = ["Experiment", "ExperimentError", "load_experiment", "main_report", "write_report"]
