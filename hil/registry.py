"""Names used in lab files, mapped to classes: instruments, simulated worlds and physical systems.

Built-ins are listed here as ``module:Class`` strings, imported only when used. Other packages add their own
through the entry-point groups ``hil.instruments``, ``hil.worlds`` and ``hil.systems``, e.g. in their
pyproject.toml::

    [project.entry-points."hil.instruments"]
    acme_slm = "acme_hil.slm:AcmeSLM"

A lab file may also name a class directly, ``driver: acme_hil.slm:AcmeSLM`` (likewise a world's or a system's
``kind``; a nested class by its dotted path, ``acme_hil.slm:Acme.SLM``): nothing to register, only the module must
be importable (an installed package, or its folder on ``PYTHONPATH``). That is the quickest way to try a new device;
a name is the way to share it.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import inspect
import re
import traceback
import warnings
from collections.abc import Collection
from functools import cache
from importlib.metadata import entry_points
from typing import Any, TypeVar

from hil.config import shown
from hil.errors import ConfigError, raised_at, with_type
from hil.instruments import Instrument

BUILTIN: dict[str, dict[str, str]] = {
    "instruments": {
        "keysight_33500b": "drivers.keysight_33500b:Keysight33500B",
        "keithley_2450": "drivers.keithley2450:Keithley2450",
        "simulated_slm": "simulators.optical:SimulatedSLM",
        "simulated_camera": "simulators.optical:SimulatedCamera",
        "simulated_crossbar": "simulators.crossbar:SimulatedCrossbar",
        "simulated_analog_output": "simulators.analog:SimulatedAnalogOutput",
        "simulated_analog_input": "simulators.analog:SimulatedAnalogInput",
    },
    "worlds": {
        "optical_table": "simulators.optical:OpticalTable",
        "multimode_fiber": "simulators.fiber:MultimodeFiber",
        "memristor_crossbar": "simulators.crossbar:MemristorCrossbar",
        "oscillator_network": "simulators.oscillator:OscillatorNetwork",
        "resistive_network": "simulators.resistive:ResistiveNetwork",
    },
    "systems": {
        "optical": "hil.systems.optical:OpticalSystem",
        "fiber": "hil.systems.fiber:FiberSystem",
        "crossbar": "hil.systems.crossbar:CrossbarSystem",
        "oscillator": "hil.systems.oscillator:OscillatorSystem",
        "resistive_network": "hil.systems.resistive:ResistiveNetworkSystem",
    },
}
T = TypeVar("T")
KINDS = {"instruments": "driver", "worlds": "world kind", "systems": "system kind"}
#: A class named directly, ``package.module:Class`` (``package.module:Outer.Inner`` for a nested one), instead of
#: by a registered name.
TARGET = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


@cache
def available(group: str = "instruments") -> dict[str, str]:
    """Every registered name of a group and its ``module:Class`` target. A plugin cannot shadow a built-in: one
    that tries is left out, with a warning."""
    names = dict(BUILTIN[group])
    for entry in entry_points(group=f"hil.{group}"):
        if names.get(entry.name, entry.value) != entry.value:
            warnings.warn(f"the entry point {entry.name!r} = {entry.value!r} (group hil.{group}) is ignored: the name "
                          f"is taken by {names[entry.name]}; register it under another name", stacklevel=2)
            continue
        names.setdefault(entry.name, entry.value)
    return names


def load_target(target: str) -> Any:
    """Import ``module:Class``, or ``module:Outer.Inner`` (a dotted attribute path); a target that cannot be imported
    is a `ConfigError` naming it and why (for a missing attribute, which one and where it was looked for), and so is
    one that is not written ``module:Class`` (a driver's ``emulator`` given as the class itself, or with a dot for
    the colon), saying how to write it."""
    if isinstance(target, type):
        raise ConfigError(f"the class {target.__module__}.{target.__qualname__} itself, not its name: write it as "
                          f"text, '{target.__module__}:{target.__qualname__}'")
    if not isinstance(target, str):
        raise ConfigError(f"{target!r} is not a class's name: write it as text, 'module:Class'")
    if not TARGET.fullmatch(target):
        candidate = _with_a_colon(target)
        raise ConfigError(f"{target!r} is not a class's name: write it 'module:Class', a colon before the class"
                          f"{f' ({candidate!r})' if candidate else ''}")
    module_name, _, path = target.partition(":")
    try:
        found = importlib.import_module(module_name)
        parts = path.split(".")
        for depth, part in enumerate(parts):
            if not hasattr(found, part):
                owner = f"{module_name}:{'.'.join(parts[:depth])}" if depth else f"module {module_name!r}"
                raise AttributeError(f"{owner} has no attribute {part!r}")
            found = getattr(found, part)
        return found
    except Exception as error:  # an import error, or any error raised while importing the module
        raise ConfigError(f"{target} cannot be loaded: {with_type(error)}{_where_in(module_name, error)}") from error


def _where_in(module_name: str, error: BaseException) -> str:
    """`` (at FILE:LINE)``: the line of the module ``module_name`` that raised ``error`` while it was imported (a
    plugin's bug), or that called the library which raised it; nothing where the module has no such line (it was not
    found, or lacks the class)."""
    try:
        spec = importlib.util.find_spec(module_name)
    except Exception:  # a parent package that fails to import, or a name that is no module's
        return ""
    origin = spec.origin if spec is not None else None
    if not origin or not any(frame.filename == origin for frame in traceback.extract_tb(error.__traceback__)):
        return ""
    return f" (at {raised_at(error, within=origin)})"


def _with_a_colon(name: str) -> str | None:
    """``package.module:Class`` for a class named with a dot for the colon, ``package.module.Class``; else None."""
    module, _, last = name.rpartition(".")
    candidate = f"{module}:{last}"
    return candidate if ":" not in name and last[:1].isupper() and TARGET.fullmatch(candidate) else None


def _meant(name: str, names: Collection[str]) -> str | None:
    """The registered name ``name`` is a slip of (``keysight33500b``, ``optical_tabel``, a letter's case), if one
    is close enough; else None."""
    lowered = {known.lower(): known for known in names}
    close = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.75)
    return lowered[close[0]] if close else None


def lookup(group: str, name: str) -> type:
    """The class registered under ``name`` in ``group``, or the class ``name`` itself where it is written
    ``module:Class``; an unknown name is a `ConfigError` listing the known."""
    targets = available(group)
    if name not in targets and not TARGET.fullmatch(name):
        candidate, meant = _with_a_colon(name), _meant(name, targets)
        colon = f" (a class is named with a colon before it: {candidate!r})" if candidate else \
            f" (did you mean {meant!r}?)" if meant else ""
        raise ConfigError(f"unknown {KINDS[group]} {shown(name)}{colon}; known: {', '.join(sorted(targets))} (a "
                          f"package's entry points appear once it is installed: pip install -e PACKAGE; or name the "
                          f"class itself, as package.module:Class)")
    try:
        return load_target(targets.get(name, name))
    except ConfigError as error:
        hint = ""
        if name not in targets and isinstance(error.__cause__, ModuleNotFoundError):
            hint = " (install the package that holds it, or put its folder on PYTHONPATH)"
        raise ConfigError(f"{KINDS[group]} {name!r}: {error.detail}{hint}") from error.__cause__


def instrument_class(name: str) -> type[Instrument]:
    """The instrument class registered under ``name`` (or named ``module:Class``)."""
    return subclass_of("instruments", name, Instrument)


def subclass_of(group: str, name: str, base: type[T]) -> type[T]:
    """`lookup`, refusing (`ConfigError`) what is not a subclass of ``base``, and a world's or system's class that
    leaves abstract methods unwritten (an instrument's missing hooks are named where it is built)."""
    cls = lookup(group, name)
    target = available(group).get(name)
    what = f"{KINDS[group]} {name!r}{f' ({target})' if target else ''}"
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise ConfigError(f"{what} is not {'an' if base.__name__[0] in 'AEIOU' else 'a'} {base.__name__} subclass")
    if group != "instruments" and inspect.isabstract(cls):
        raise ConfigError(f"{what} is abstract: write {', '.join(sorted(cls.__abstractmethods__))}")
    return cls
