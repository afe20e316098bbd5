"""Recipes: a training setup as data, every knob written out, and the one rule that
turns a recipe plus the flags a user typed into a run's settings.

A recipe file (``fastlenet/recipes/<name>.json``, or any path)::

    {"format": "fastlenet-recipe", "version": 1, "name": "mnist-bn-plateau",
     "description": "...", "published": "where the setup comes from",
     "settings": {"dataset": "mnist", "model": "lenet5-bn", "epochs": 30, ...}}

``settings`` holds knobs (:data:`BUILTIN` lists every one, with the value used when
neither a flag nor the recipe gives it).  The shipped recipes write out every knob;
a user's recipe may leave some out (they take the built-in default, and
``config.json`` says so).

Resolution (:func:`resolve`): a flag wins; else the recipe's value; else the
built-in default.  One exception keeps a recipe's values from leaking into a setup
they were not written for: a knob that belongs to a choice the user changed (an
optimizer's learning rate, momentum and weight decay; a schedule's parameters; a
model's activation, pooling, initialisation and batch-norm settings) is taken from
the recipe only while that choice is the recipe's.  ``--optimizer sgd`` under an Adam
recipe gets SGD's own defaults (PyTorch's: lr 0.01, momentum 0, no weight decay),
never the recipe's Adam values.  Every value's source is recorded:
``flag``, ``recipe NAME``, ``default`` or ``default for OPTIMIZER``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

FORMAT = "fastlenet-recipe"
VERSION = 1
RECIPE_DIR = Path(__file__).with_name("recipes")
NAMES = tuple(sorted(p.stem for p in RECIPE_DIR.glob("*.json")))
MAX_RECIPE_BYTES = 1 << 16

#: every knob a recipe may set -> its built-in default
BUILTIN: Dict[str, object] = {
    "dataset": "mnist", "model": "lenet5", "activation": None, "pool": None, "dense_activation": None,
    "init": "auto", "bn_momentum": None, "bn_eps": None,
    "epochs": 10, "batch_size": 128, "optimizer": "adam", "lr": None, "momentum": None, "nesterov": None,
    "weight_decay": None, "label_smoothing": 0.0,
    "schedule": "none", "step_size": 5, "gamma": 0.5, "min_lr": 0.0, "plateau_factor": 0.1,
    "plateau_patience": 10, "plateau_style": "torch", "lr_list": None,
    "early_stopping": None, "monitor": "val_accuracy", "min_delta": 0.0, "restore_best": True,
    "augment": False, "max_shift": 2, "rotate": 0.0, "erase": 0.0, "elastic": 0.0, "val_split": 0.0, "val_from": "stratified", "standardize": False,
    "pad32": False, "test_weights": "best", "tta": "none",
}
#: each optimizer's own defaults (PyTorch's torch.optim values)
OPTIMIZER_DEFAULTS = {
    "sgd": {"lr": 0.01, "momentum": 0.0, "nesterov": False, "weight_decay": 0.0},
    "adam": {"lr": 0.001, "momentum": 0.0, "nesterov": False, "weight_decay": 0.0},
    "adamw": {"lr": 0.001, "momentum": 0.0, "nesterov": False, "weight_decay": 0.01},
}
#: choice -> the knobs that belong to it (taken from a recipe only while the choice is the recipe's)
GROUPS = {
    "optimizer": ("lr", "momentum", "nesterov", "weight_decay", "lr_list"),
    "schedule": ("step_size", "gamma", "min_lr", "plateau_factor", "plateau_patience", "plateau_style"),
    "model": ("activation", "pool", "dense_activation", "init", "bn_momentum", "bn_eps", "pad32"),
}
#: values a run resumed from an older config.json had, for knobs added since
LEGACY = {"init": "auto", "plateau_style": "exact", "val_from": "stratified", "test_weights": "best",
          "restore_best": True, "bn_momentum": None, "bn_eps": None, "rotate": 0.0, "erase": 0.0,
          "elastic": 0.0, "tta": "none"}


class RecipeError(ValueError):
    """A recipe file that cannot be used; the message names the file and the field."""


@dataclass(frozen=True)
class Recipe:
    name: str
    settings: Dict[str, object]
    description: str = ""
    published: str = ""
    path: Optional[Path] = field(default=None, compare=False)


def _read(source: Union[str, Path]) -> Tuple[dict, Path]:
    path = RECIPE_DIR / f"{source}.json" if str(source) in NAMES else Path(source)
    if not path.is_file():
        raise RecipeError(f"--recipe {source}: no such recipe or file; recipes: {', '.join(NAMES)} "
                          "(--recipe list describes them)")
    if path.stat().st_size > MAX_RECIPE_BYTES:
        raise RecipeError(f"--recipe {source}: {path.stat().st_size:,} bytes is too large for a recipe file")
    try:
        return json.loads(path.read_text(encoding="utf-8")), path
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise RecipeError(f"--recipe {source}: not valid JSON ({type(exc).__name__}: {exc})") from None


def load(source: Union[str, Path], check_value=None) -> Recipe:
    """The recipe named ``source`` (shipped) or at path ``source``, its structure checked;
    ``check_value(key, value)`` returns a problem (str) for a bad value, or None."""
    doc, path = _read(source)
    where = f"recipe {source}"
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise RecipeError(f"{where}: not a fastlenet recipe (needs \"format\": \"{FORMAT}\")")
    if doc.get("version") != VERSION:
        raise RecipeError(f"{where}: recipe version {doc.get('version')!r} is not supported (this is {VERSION})")
    unknown = sorted(set(doc) - {"format", "version", "name", "description", "published", "settings"})
    if unknown:
        raise RecipeError(f"{where}: unknown field {unknown[0]!r}")
    settings = doc.get("settings")
    if not isinstance(settings, dict):
        raise RecipeError(f"{where}: 'settings' must be an object of knob -> value")
    for key, value in settings.items():
        if key not in BUILTIN:
            raise RecipeError(f"{where}: settings {key!r} is not a knob (knobs: {', '.join(BUILTIN)})")
        problem = check_value(key, value) if check_value else None
        if problem:
            raise RecipeError(f"{where}: settings {key!r} {problem}, got {json.dumps(value)[:60]}")
    if "dataset" not in settings:
        raise RecipeError(f"{where}: settings must name its 'dataset'")
    texts = {k: doc.get(k, "") for k in ("name", "description", "published")}
    if not all(isinstance(v, str) for v in texts.values()):
        raise RecipeError(f"{where}: 'name', 'description' and 'published' must be strings")
    return Recipe(texts["name"] or path.stem, dict(settings), texts["description"], texts["published"], path)


def resolve(flags: Dict[str, object], recipe: Recipe) -> Tuple[Dict[str, object], Dict[str, str]]:
    """(settings, sources): every knob's value and where it came from (module doc)."""
    values: Dict[str, object] = {}
    sources: Dict[str, str] = {}
    by_recipe = f"recipe {recipe.name}"

    def take(key: str, follows_recipe: bool = True) -> None:
        if flags.get(key) is not None:
            values[key], sources[key] = flags[key], "flag"
        elif key in recipe.settings and follows_recipe:
            values[key], sources[key] = recipe.settings[key], by_recipe
        elif key in GROUPS["optimizer"] and key in OPTIMIZER_DEFAULTS[values["optimizer"]]:
            values[key] = OPTIMIZER_DEFAULTS[values["optimizer"]][key]
            sources[key] = f"default for {values['optimizer']}"
        else:
            values[key], sources[key] = BUILTIN[key], "default"

    for lead in ("dataset", *GROUPS):
        take(lead)
    owner = {k: lead for lead, keys in GROUPS.items() for k in keys}
    for key in BUILTIN:
        if key not in values:
            lead = owner.get(key)
            take(key, lead is None or values[lead] == recipe.settings.get(lead, BUILTIN[lead]))
    return values, sources


def missing_knobs(recipe: Recipe) -> List[str]:
    """The knobs a recipe leaves to the built-in defaults (none, for the shipped ones)."""
    return [k for k in BUILTIN if k not in recipe.settings]


def listing() -> str:
    """One line per shipped recipe: name, dataset, model, and its description."""
    lines = []
    for name in NAMES:
        r = load(name)
        lines.append(f"{name:<30} {r.settings['dataset']:<14} {str(r.settings.get('model')):<16} {r.description}")
    return "\n".join(lines)
