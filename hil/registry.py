"""Names used in lab files, mapped to instrument classes.

Built-in drivers and simulators are listed here as ``module:Class`` strings, imported only when used. Other
packages add their own through the ``hil.instruments`` entry-point group, e.g. in their pyproject.toml::

    [project.entry-points."hil.instruments"]
    acme_slm = "acme_hil.slm:AcmeSLM"
"""

from __future__ import annotations

import importlib
from functools import cache
from importlib.metadata import entry_points

from hil.errors import ConfigError
from hil.instruments import Instrument

ENTRY_POINT_GROUP = "hil.instruments"

BUILTIN: dict[str, str] = {
    "keysight_33500b": "drivers.keysight_33500b:Keysight33500B",
    "keithley_2450": "drivers.keithley2450:Keithley2450",
}


@cache
def available() -> dict[str, str]:
    """Every registered name and its ``module:Class`` target, built-ins first; a plugin cannot shadow one."""
    names = dict(BUILTIN)
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        names.setdefault(entry.name, entry.value)
    return names


def load_target(target: str) -> type:
    """Import ``module:Class``."""
    module_name, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module_name), attribute)


def instrument_class(name: str) -> type[Instrument]:
    """The class registered under ``name``; an unknown name is a `ConfigError` listing the known ones."""
    targets = available()
    if name not in targets:
        raise ConfigError(f"unknown driver {name!r}; known: {', '.join(sorted(targets))}")
    cls = load_target(targets[name])
    if not (isinstance(cls, type) and issubclass(cls, Instrument)):
        raise ConfigError(f"driver {name!r} ({targets[name]}) is not an Instrument subclass")
    return cls
