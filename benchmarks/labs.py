"""The benchmarks' labs: the part of a lab file that one system needs."""

from __future__ import annotations

import copy

from hil.lab import LabConfig


def worlds_of(config: LabConfig, system: str) -> set[str]:
    """The names of the worlds that simulate ``system``'s instruments."""
    return {config.instruments[name].world for name in config.systems[system].instruments.values()}


def alone(config: LabConfig, system: str) -> LabConfig:
    """A copy of ``config`` holding ``system`` alone: its instruments and their worlds, no other (so that a world
    another system needs, and may refuse, is not built)."""
    instruments = set(config.systems[system].instruments.values())
    worlds = worlds_of(config, system)
    config = copy.deepcopy(config)
    config.systems = {system: config.systems[system]}
    config.instruments = {name: config.instruments[name] for name in config.instruments if name in instruments}
    config.worlds = {name: config.worlds[name] for name in config.worlds if name in worlds}
    return config
