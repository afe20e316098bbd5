"""``--resume RUN``: what may change when a run continues, its stored settings checked
as strictly as a new run's flags, and what resuming a finished run does.

A resumed run keeps its own settings (config.json).  Only how it runs may change
(``--threads``, ``--fixed-threads``, ``--backend``, ``--quiet``) and how long (``--epochs``, to train a
finished run further or end an unfinished one sooner -- never below the epochs
done); any other flag is refused by name.  A finished run (metrics.json written:
all its epochs done, or early stopping fired) is reported and left untouched
unless ``--epochs`` asks for more.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Callable, Optional

#: the flags that may accompany --resume (argparse dests)
CHANGEABLE = ("epochs", "threads", "fixed_threads", "backend", "quiet")


class ResumeRefused(ValueError):
    """A --resume that cannot proceed as asked; the message says why and what to do."""


def explicit_flags(build_parser: Callable[[], argparse.ArgumentParser], argv) -> dict:
    """The flags the user actually typed (dest -> value), defaults left out."""
    parser = build_parser()
    for action in parser._actions:                   # argparse has no public "defaults off"
        action.default = argparse.SUPPRESS
    return vars(parser.parse_args(argv))


def check_flags(explicit: dict) -> None:
    extra = sorted(k for k in explicit if k not in CHANGEABLE + ("resume",))
    if extra:
        names = ", ".join("--" + k.replace("_", "-") for k in extra)
        raise ResumeRefused(f"--resume continues a run with its own settings; {names} cannot change "
                            "(only --epochs, --threads, --fixed-threads, --backend, --quiet may); start a new run with "
                            "--out to train differently")


def type_problem(action: argparse.Action, value) -> Optional[str]:
    """What is wrong with ``value`` as flag ``action``'s value (choices, bool, int/float), or None."""
    if action.choices is not None:
        if value is None and action.default is None:
            return None
        return None if value in action.choices else f"must be one of {sorted(action.choices)}"
    if isinstance(action, (argparse._StoreTrueAction, argparse.BooleanOptionalAction)):
        return None if isinstance(value, bool) or (value is None and action.default is None) else "must be true or false"
    if action.type in (int, float) and value is not None:
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not numeric or (action.type is int and not isinstance(value, int)):
            return f"must be {'an integer' if action.type is int else 'a number'}"
    return None


def stored_namespace(parser: argparse.ArgumentParser, settings: dict, where: Path,
                     required=()) -> argparse.Namespace:
    """config.json's settings as the Namespace the flags would have given, every field
    type-checked (an edited file is named with the field, never a traceback);
    ``required``: the fields a resolved run always has (null there is an edit)."""
    values = {}
    for action in parser._actions:
        dest = action.dest
        if dest == "help":
            continue
        if dest not in settings and dest not in required and (action.default is None or action.default is False):
            settings = {**settings, dest: action.default}     # a flag newer than the run: its default
        if dest not in settings:
            raise ResumeRefused(f"{where}: settings have no {dest!r}")
        value = settings[dest]
        if value is None and dest in required:
            raise ResumeRefused(f"{where}: settings {dest!r} is null; a run always records its value")
        if dest == "lr_list" and value is not None:
            if not isinstance(value, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                      and math.isfinite(v) for v in value):
                raise ResumeRefused(f"{where}: settings 'lr_list' must be a list of numbers")
            value = ",".join(repr(float(v)) for v in value)
        elif dest not in ("out", "resume", "data_dir"):
            problem = type_problem(action, value)
            if problem:
                raise ResumeRefused(f"{where}: settings {dest!r} {problem}, got {json.dumps(value)[:60]}")
        elif value is not None and not isinstance(value, str):
            raise ResumeRefused(f"{where}: settings {dest!r} must be a path, got {json.dumps(value)[:60]}")
        values[dest] = value
    return argparse.Namespace(**values)


def finished(run_dir) -> Optional[dict]:
    """metrics.json of a run that has finished (all epochs, or stopped early), else None."""
    path = run_dir.file("metrics.json")
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
        settings = json.loads(run_dir.file("config.json").read_text())["settings"]
        done = len(doc["epochs"])
        complete = bool(doc.get("stopped_early")) or done >= int(settings["epochs"])
    except (OSError, ValueError, KeyError, TypeError):
        return None                      # unreadable: not a finished run; training rewrites it
    return doc if complete else None


def finished_message(run_dir, metrics: dict, asked_epochs: Optional[int]) -> str:
    done = len(metrics["epochs"])
    accuracy = metrics.get("test_accuracy")
    score = f", test accuracy {100 * accuracy:.2f}%" if isinstance(accuracy, (int, float)) else ""
    if metrics.get("stopped_early") and asked_epochs is not None and asked_epochs > done:
        raise ResumeRefused(f"{run_dir.path} stopped early after epoch {done} (its monitored metric had "
                            "stopped improving); more epochs would stop at the same point: start a new run")
    return (f"{run_dir.path} is finished ({done} epochs{score}, see metrics.json); nothing changed. "
            f"To train it further pass --epochs with more than {done}")
