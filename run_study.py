#!/usr/bin/env python
"""Annealing-KD studies on Ray Tune + Optuna.

  python run_study.py presets                       list the presets and their cost
  python run_study.py run --preset smoke            run a study (local Ray, or --address)
  python run_study.py run --preset mnist1d --resume continue an interrupted study
  python run_study.py report runs/mnist1d           write the comparison report

The whole configuration is validated before Ray starts; an experiment directory holds
everything the report needs (see README, "The experiment directory").
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from kd.config import ConfigError
from kd.registry import UnknownNameError


def cmd_presets(args: argparse.Namespace) -> int:
    import yaml

    from study.config import PRESET_DIR, preset_names

    for name in preset_names():
        # Read raw: a CIFAR preset only validates once --data-dir names a real folder.
        values = yaml.safe_load((PRESET_DIR / f"{name}.yaml").read_text())
        cells = len(values["students"]) * len(values["methods"])
        tasks = f"{len(values['tasks'])} tasks x " if values.get("tasks") else ""
        print(f"{name:<18} {values['description']}\n{'':<18} {tasks}{cells} cells x {values['trials_per_cell']} "
              f"trials x {values['epochs']} epochs; cost: {values['cost']}")
    return 0


def load_study_config(args: argparse.Namespace):
    from study.config import StudyConfig

    cfg = StudyConfig.preset(args.preset) if args.preset else StudyConfig.from_file(args.config)
    overrides = {k: v for k, v in {
        "trials_per_cell": args.num_samples, "max_concurrent": args.max_concurrent,
        "gpus_per_trial": args.gpus_per_trial, "cpus_per_trial": args.cpus_per_trial,
        "seed": args.seed}.items() if v is not None}
    if args.data_dir is not None:
        overrides["data_dir"] = args.data_dir
    return cfg.replace(**overrides) if overrides else cfg


def cmd_run(args: argparse.Namespace) -> int:
    from study.runner import Study

    if args.address and args.num_cpus:
        raise ConfigError(f"num-cpus: {args.num_cpus} is not allowed with --address {args.address}; an existing "
                          f"cluster has its own CPUs (--num-cpus sizes the local instance started without --address)")
    cfg = load_study_config(args)
    name = args.name or args.preset or Path(args.config).stem
    study = Study(cfg, args.storage, name, preset=args.preset, verbose=args.verbose)
    study.prepare(args.resume)  # every check that needs no cluster, before Ray starts

    import optuna
    import ray

    # The progress display says what Tune's status block and Optuna's per-study lines said
    optuna.logging.set_verbosity(optuna.logging.INFO if args.verbose else optuna.logging.WARNING)
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    if args.address:
        context = ray.init(address=args.address, log_to_driver=False)
    else:
        # address "local": never attach to a Ray instance someone else left running on this machine
        context = ray.init(address="local", include_dashboard=args.dashboard, dashboard_host="127.0.0.1",
                           log_to_driver=False, **({"num_cpus": args.num_cpus} if args.num_cpus else {}))
        if args.dashboard and context.dashboard_url:
            print(f"Ray dashboard: http://{context.dashboard_url} (sign in with the token `ray get-auth-token` "
                  f"prints)", flush=True)
    # SIGTERM (`ray job stop`, a scheduler's kill) takes Ctrl+C's path: Tune only stops cleanly
    # on SIGINT, and ray.init's own SIGTERM handler would exit without saying the study stopped
    signal.signal(signal.SIGTERM, lambda *_: os.kill(os.getpid(), signal.SIGINT))
    try:
        exp_dir = study.run()
    except KeyboardInterrupt:
        study.write_info("interrupted")
        print(f"interrupted; resume with: python run_study.py run {' '.join(sys.argv[2:])} --resume",
              file=sys.stderr)
        return 130
    finally:
        ray.shutdown()
    if args.report:
        from analysis.report import main_report

        return main_report(exp_dir, None, None)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from analysis.report import main_report

    return main_report(args.exp_dir, args.out, args.compare, args.figures)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("presets", help="list the presets").set_defaults(run=cmd_presets)

    run = sub.add_parser("run", help="run (or resume) a study",
                         formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    source = run.add_mutually_exclusive_group(required=True)
    source.add_argument("--preset", help="a preset name (see `presets`)")
    source.add_argument("--config", help="a study YAML file with the preset keys")
    run.add_argument("--storage", default="runs", help="experiment storage: a local or NFS path "
                     "shared by all nodes; experiments are <storage>/<name>")
    run.add_argument("--name", help="experiment name (default: the preset or config file name)")
    run.add_argument("--address", default=None, help="attach to this Ray cluster ('auto': the one this "
                     "machine or Ray job belongs to); default: start a new local Ray instance")
    run.add_argument("--resume", action="store_true", help="continue an existing experiment")
    run.add_argument("--num-samples", type=int, help="search trials per cell (overrides the preset)")
    run.add_argument("--max-concurrent", type=int, help="trials running at once")
    run.add_argument("--gpus-per-trial", type=float, help="GPUs per trial (fractions pack trials)")
    run.add_argument("--cpus-per-trial", type=float, help="CPUs per trial")
    run.add_argument("--seed", type=int, help="seed of the samplers and search trials")
    run.add_argument("--data-dir", help="dataset folder (CIFAR presets; GLUE presets: local GLUE files "
                     "instead of the Hub)")
    run.add_argument("--num-cpus", type=int, help="CPUs of the local Ray instance (default: all)")
    run.add_argument("--dashboard", action=argparse.BooleanOptionalAction, default=True,
                     help="start the Ray dashboard with the local instance, on 127.0.0.1")
    run.add_argument("--verbose", action="store_true",
                     help="Tune's status block and Optuna's log lines as well as the progress display")
    run.add_argument("--report", action=argparse.BooleanOptionalAction, default=True,
                     help="write the report when the study finishes")
    run.set_defaults(run=cmd_run)

    report = sub.add_parser("report", help="write the comparison report of an experiment")
    report.add_argument("exp_dir", help="experiment directory (<storage>/<name>)")
    report.add_argument("--out", help="output folder (default: EXP_DIR/report)")
    report.add_argument("--compare", help="a second experiment directory, shown side by side")
    report.add_argument("--figures", action=argparse.BooleanOptionalAction, default=True,
                        help="draw the figures (--no-figures: tables and text only, in seconds)")
    report.set_defaults(run=cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ConfigError, UnknownNameError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
