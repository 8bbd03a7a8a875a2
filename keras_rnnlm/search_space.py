"""What ``python -m keras_rnnlm.tune`` searches: config keys and the values each may take.

A search file is TOML whose keys are config keys (as in ``--set``), each given
- a list, the choices: ``model.units = [128, 256, 512]``;
- a table, an interval of a number: ``{min = 1e-4, max = 1e-2, log = true}`` (spread by
  ratio) or ``{min = 0.0, max = 0.5, step = 0.1}`` (a grid); integer keys take integers.

Every choice and both ends of every interval go through the config's own check of that
key (:func:`keras_rnnlm.config.checked_value`) before anything runs, so a value out of
range is the same one-line error ``--set`` gives. What only a combination of values
breaks (``model.tie_embeddings`` with other sizes) fails that trial alone, with the
config's message.

Example (``configs/search/default.toml``):
    model.units = [128, 256, 512]
    train.learning_rate = {min = 3e-4, max = 1e-2, log = true}
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from keras_rnnlm.config import (
    Config, checked_value, config_from_dict, config_keys, config_to_dict, key_type, read_toml, unknown_key_message,
)
from keras_rnnlm.errors import RnnlmError

INTERVAL_KEYS = {"min", "max", "step", "log"}
# Set by tune itself: the trials' folders, and what they read.
NOT_SEARCHED = {"name", "corpus.paths", "corpus.valid_paths"}


@dataclass(frozen=True)
class Dimension:
    """One searched config key.

    Args:
        key: The config key, e.g. ``"model.units"``.
        kind: The key's type: int, float, bool or str.
        choices: The values to choose among; empty for an interval.
        low, high: An interval's ends, both included.
        step: An interval's grid step; None: any value.
        log: Spread the interval's values by ratio, not difference.
    """

    key: str
    kind: type
    choices: tuple = ()
    low: float | int | None = None
    high: float | int | None = None
    step: float | int | None = None
    log: bool = False

    @property
    def extremes(self) -> tuple:
        """The values that the config's validation must accept for every value to be valid."""
        return self.choices or (self.low, self.high)

    def describe(self) -> str:
        """The dimension as the search file writes it."""
        if self.choices:
            return f"{self.key} = {list(self.choices)}"
        extra = f", step = {self.step}" if self.step is not None else ", log = true" if self.log else ""
        return f"{self.key} = {{min = {self.low}, max = {self.high}{extra}}}"


def read_search(path: str | Path) -> tuple[Dimension, ...]:
    """Reads a search file and checks every value it allows: each choice and both ends of
    each interval, each as its config key takes it.

    Args:
        path: The search file.

    Returns:
        The dimensions, in the file's order.

    Raises:
        RnnlmError: The file is missing or not TOML, names an unknown key or one that
            cannot be searched, gives a key values of the wrong kind, or allows a value
            that the key refuses.
    """
    values = read_toml(path, "search file", "configs/search/default.toml")
    dimensions = tuple(_dimension(key, value, path) for key, value in _leaves(values, path))
    if not dimensions:
        raise RnnlmError(f"search file {path} names no config key to search; add one, e.g. model.units = [128, 256]")
    for dimension in dimensions:
        for value in dimension.extremes:
            try:
                checked_value(dimension.key, value)
            except RnnlmError as error:
                raise RnnlmError(f"search file {path}: {error}") from None
    return dimensions


def config_with(config: Config, values: dict) -> Config:
    """``config`` with the values of some keys replaced, validated.

    Args:
        config: The base config.
        values: Config keys (``"model.units"``) and their values.

    Raises:
        RnnlmError: A value the config refuses, alone or with the others.
    """
    tables = config_to_dict(config)
    for key, value in values.items():
        *sections, name = key.split(".")
        table = tables
        for section in sections:
            table = table[section]
        table[name] = value
    return config_from_dict(tables)


def _leaves(values: dict, path) -> list[tuple[str, object]]:
    """The file's keys and values: a table under a key names an interval, not a section."""
    known = set(config_keys())
    leaves = []
    for name, value in values.items():
        if name in known or not isinstance(value, dict):
            leaves.append((name, value))
            continue
        for key, item in value.items():
            leaves.append((f"{name}.{key}", item))
    for key, _ in leaves:
        if key not in known:
            raise RnnlmError(f"search file {path}: {unknown_key_message(key, sorted(known))}")
        if key in NOT_SEARCHED:
            raise RnnlmError(f"search file {path}: {key} cannot be searched (tune sets it); remove it")
    return leaves


def _dimension(key: str, value, path) -> Dimension:
    kind = key_type(key)
    where = f"search file {path}: {key}"
    if isinstance(value, list):
        if not value:
            raise RnnlmError(f"{where} lists no choices; give at least one, e.g. {key} = [...]")
        if len(set(map(repr, value))) < len(value):
            raise RnnlmError(f"{where} lists a choice twice; list each once")
        return Dimension(key, kind, choices=tuple(value))
    if not isinstance(value, dict):
        raise RnnlmError(f"{where} must be a list of choices or an interval {{min = ..., max = ...}}, got {value!r}")
    if kind not in (int, float):
        raise RnnlmError(f"{where} is not a number, so it takes a list of choices, not an interval")
    if unknown := set(value) - INTERVAL_KEYS:
        raise RnnlmError(f"{where} has {', '.join(sorted(unknown))}; an interval has min, max and optionally step or log")
    if "min" not in value or "max" not in value:
        raise RnnlmError(f"{where} needs both min and max, e.g. {{min = 1, max = 4}}")
    low, high, step, log = value["min"], value["max"], value.get("step"), value.get("log", False)
    number = (int,) if kind is int else (int, float)
    for name, item in (("min", low), ("max", high), ("step", step)):
        if item is not None and (isinstance(item, bool) or not isinstance(item, number)):
            raise RnnlmError(f"{where}: {name} must be {'an integer' if kind is int else 'a number'}, got {item!r}")
    if not isinstance(log, bool):
        raise RnnlmError(f"{where}: log must be true or false, got {log!r}")
    if not low < high:
        raise RnnlmError(f"{where}: min ({low}) must be below max ({high})")
    if step is not None and (log or not 0 < step <= high - low):
        raise RnnlmError(f"{where}: step must be above 0 and at most max - min, and not given with log = true")
    if log and low <= 0:
        raise RnnlmError(f"{where}: log = true needs min above 0, got {low}")
    return Dimension(key, kind, low=kind(low), high=kind(high), step=None if step is None else kind(step), log=log)
