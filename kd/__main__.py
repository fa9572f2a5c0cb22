"""python -m kd: train one teacher or student without Ray; list models and methods; a quick demo.

Every TrainConfig field is an option of `train`, each method's parameters included (method
plugins named in KD_METHOD_PLUGINS too). Progress goes to stderr one line per epoch; the
last line on stdout is a JSON object with the final metrics.
"""
from __future__ import annotations

import argparse
import json
import sys

from kd.config import ConfigError, TrainConfig, method_params
from kd.methods import METHODS, ordered
from kd.models import MODELS, build_model, count_parameters, model_input
from kd.registry import UnknownNameError
from kd.store import TeacherStore


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    for option in TrainConfig.options():
        flag = "--" + option.name.replace("_", "-")
        if option.type is bool:
            parser.add_argument(flag, dest=option.name, action=argparse.BooleanOptionalAction,
                                default=option.default, help=option.help)
        else:
            parser.add_argument(flag, dest=option.name, type=option.type, default=option.default,
                                choices=option.choices, help=option.help)


def progress_line(role: str):
    def report(metrics, save_state=None):
        schedule = f" T={metrics['T']}" if metrics.get("T") is not None else ""
        print(f"[{role}] epoch {metrics['epoch']:>3} phase {metrics['phase']}({metrics['phase_name']})"
              f"{schedule} lr={metrics['lr']:.4g} loss={metrics['train_loss']:.4f} "
              f"val={metrics['val_acc']:.2f} test={metrics['test_acc']:.2f} "
              f"({metrics['samples_per_s']:.0f} samples/s)", file=sys.stderr, flush=True)
    return report


def cmd_train(args: argparse.Namespace) -> int:
    from kd.train import train

    values = {option.name: getattr(args, option.name) for option in TrainConfig.options()}
    cfg = TrainConfig.from_dict(values)
    cfg = TeacherStore(args.store).resolve(cfg, report=progress_line("teacher"))
    result = train(cfg, report=progress_line(cfg.model))
    result.pop("state_dict")
    print(json.dumps({"model": cfg.model, "method": cfg.method, **result}))
    return 0


TEXT_EXAMPLES = ("bert_L2_H128", "bert_L4_H256", "bert_L4_H512", "bert_L8_H512")


def cmd_models(args: argparse.Namespace) -> int:
    for name in MODELS.names():
        classes = 10 if model_input(name) == "signal" else args.num_classes
        params = count_parameters(build_model(name, classes))
        print(f"{name:<12} {model_input(name):<7} {params:>10,} parameters ({classes} classes)")
    print(f"text families: {', '.join(MODELS.pattern_labels())}; e.g. (BERT uncased vocabulary, "
          f"max_length 128, 2 classes):")
    for name in TEXT_EXAMPLES:
        model = build_model(name, 2, vocab_size=30522, pad_token_id=0, max_length=128)
        print(f"{name:<12} {'text':<7} {count_parameters(model):>10,} parameters (2 classes)")
    return 0


def cmd_methods(args: argparse.Namespace) -> int:
    """Every registered method as it describes itself: what it needs, its paper, its parameters."""
    params = method_params()
    for name in ordered():
        method = METHODS.get(name)
        needs = "an assistant" if method.needs_assistant else "a teacher" if method.needs_teacher else "no teacher"
        print(f"{name} ({method.label}): needs {needs}; {method.reference}")
        if method.rule:
            print(f"    {method.rule}")
        for param in method.params:
            shared = [m for m in params[param.name][1] if m != name]
            print(f"    --{param.name.replace('_', '-')} ({param.describe()})"
                  + (f", shared with {', '.join(shared)}" if shared else ""))
        print(f"    study search by default: {json.dumps(method.search) if method.search else 'lr and weight decay only'}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """The default MNIST-1D teacher and one student per method, as a results table."""
    from kd.train import train

    base = TrainConfig(model=args.student, teacher=args.teacher, assistant=args.assistant,
                       epochs=args.epochs, teacher_epochs=args.epochs, tau_max=args.tau_max,
                       stage_epochs=args.stage_epochs)
    store = TeacherStore(args.store)
    rows = []
    teacher_cfg = None
    for method in ordered():
        cfg = store.resolve(base.replace(method=method), report=progress_line("teacher"))
        result = train(cfg, report=progress_line(f"{method}"))
        rows.append((method, result["best_val_acc"], result["test_acc"], result["seconds"]))
        teacher_cfg = cfg
    from kd.store import teacher_config

    teacher_metrics = store.metrics(teacher_config(teacher_cfg))
    print(f"\nMNIST-1D: teacher {args.teacher} test {teacher_metrics['test_acc']:.2f}% ; "
          f"student {args.student}, {args.epochs} epochs, selection on validation")
    print(f"{'method':<14}{'val %':>8}{'test %':>8}{'seconds':>9}")
    for method, val, test, seconds in rows:
        print(f"{method:<14}{val:>8.2f}{test:>8.2f}{seconds:>9.1f}")
    return 0


class DefaultsOnce(argparse.ArgumentDefaultsHelpFormatter):
    """Adds "(default: ...)" to an option's help unless the help already speaks of its default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        return text if "default" in text.lower() else super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m kd", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p_train = sub.add_parser("train", help="train one teacher or student", formatter_class=DefaultsOnce)
    _add_config_options(p_train)
    p_train.add_argument("--store", default="runs/teachers",
                         help="teacher store: teachers and assistants are trained once and kept here")
    p_train.set_defaults(run=cmd_train)
    p_models = sub.add_parser("models", help="list the registered architectures with parameter counts")
    p_models.add_argument("--num-classes", type=int, default=10, help="classes for the image models")
    p_models.set_defaults(run=cmd_models)
    p_methods = sub.add_parser("methods", help="list the registered methods: needs, paper, parameters, search")
    p_methods.set_defaults(run=cmd_methods)
    p_demo = sub.add_parser("demo", help="MNIST-1D teacher + one student per method, as a table",
                            formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p_demo.add_argument("--teacher", default="cnn1d_64")
    p_demo.add_argument("--assistant", default="cnn1d_16")
    p_demo.add_argument("--student", default="mlp1d_8")
    p_demo.add_argument("--epochs", type=int, default=60)
    p_demo.add_argument("--tau-max", type=int, default=10)
    p_demo.add_argument("--stage-epochs", type=int, default=3)
    p_demo.add_argument("--store", default="runs/teachers")
    p_demo.set_defaults(run=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ConfigError, UnknownNameError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
