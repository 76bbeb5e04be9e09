"""Capture and restore the mutable state of simulated worlds, simulated instruments and systems.

A checkpoint must hold everything that decides what a simulated bench does next: its random generators, its virtual
clock, its slow state (drift, power wander), what is programmed or shown. `capture` walks an object's attributes and
keeps tensors (cloned), generator states (torch's, numpy's ``Generator`` and ``RandomState``, and Python's
``random.Random``, each restored into the one its object built), numbers, strings, enum members (restored as the same
member), numpy arrays of numbers and containers of them, and descends into plain state holders (clocks, slow-state
processes) of hil, of its simulators and of the package that defines the captured object (a plugin world's own helpers);
it does not descend into other worlds, instruments, systems, transports, modules or configuration models, which are
captured on their own or are fixed, nor into an object whose class sets ``transient = True`` (a world's scratch buffers,
a lens's cached matrices: what a call overwrites or rebuilds, tens of MB a checkpoint need not hold). `restore` puts the
values back. A class a checkpoint names (a state holder's, an enum's) is one capture could have saved: a state holder's
of those same packages, an enum of them or of a module already imported; restore imports nothing else and builds nothing
else, so a checkpoint handed on (or crafted) cannot run code by naming it, and one that does not fit is a
`RunFileError`. Everything captured is a tensor or a plain value, so the torch file a checkpoint holds loads with
``torch.load(..., weights_only=True)``. That torch file follows a line and a checksum in ``checkpoint.pt``
(`hil.store.seal_checkpoint`), so ``torch.load("checkpoint.pt")`` fails on it: the README's "What a run stores" shows
how to read it without hil.

On a real bench a device's state cannot be put back; a resumed bench run continues from the device as it is.
"""

from __future__ import annotations

import enum
import random
import sys
import threading
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel

from hil.errors import ConfigError, RunFileError, error_reason
from hil.registry import TARGET, load_target

_GENERATOR = "__generator_state__"
_NUMPY_GENERATOR = "__numpy_generator_state__"
_PYTHON_RANDOM = "__python_random_state__"
#: The random generators of numpy and of Python that a world may draw from, besides torch's.
OTHER_GENERATORS = (np.random.Generator, np.random.RandomState, random.Random)
_NUMPY = "__numpy__"
_ENUM = "__enum__"
_OBJECT = "__object__"
_CLASS = "__class__"


def _stops(value: Any) -> bool:
    """Objects captured on their own, or holding nothing to restore."""
    from hil.instruments import Instrument
    from hil.systems.base import PhysicalSystem
    from hil.transport import Transport

    world = any(base.__name__ == "World" and base.__module__ == "simulators.world" for base in type(value).__mro__)
    transient = getattr(type(value), "transient", False) is True  # buffers and caches a call overwrites or rebuilds
    return world or transient or isinstance(value, Instrument | PhysicalSystem | Transport | BaseModel
                                            | torch.nn.Module)


def _package(value: Any) -> str:
    return type(value).__module__.partition(".")[0]


def _is_state_holder(value: Any, packages: frozenset[str]) -> bool:
    return hasattr(value, "__dict__") and _package(value) in packages and not _stops(value)


def _capture_value(value: Any, seen: set[int], packages: frozenset[str]) -> tuple[bool, Any]:
    if isinstance(value, np.generic):  # before float: numpy's float64 is one, and not plain data to torch.load
        item = value.item()  # a datetime64's is a datetime, which is not either (or, in ns, an int, which is not it)
        plain = isinstance(item, bool | int | float | complex | str | bytes) and value.dtype.kind not in "mM"
        return (True, item) if plain else (False, None)
    if isinstance(value, enum.Enum):  # before int: an IntEnum is one; restored as the same member, by name (a flag,
        # which may combine members, by value)
        member = value.value if isinstance(value, enum.Flag) else value.name
        return True, {_ENUM: member, _CLASS: f"{type(value).__module__}:{type(value).__qualname__}"}
    if value is None or isinstance(value, bool | int | float | str):  # a subclass is not plain data to torch.load
        return (True, value) if value is None or type(value) in (bool, int, float, str) else (False, None)
    if isinstance(value, torch.Tensor):
        return True, value.detach().clone()
    if isinstance(value, torch.Generator):
        return True, {_GENERATOR: value.get_state()}
    if isinstance(value, np.random.Generator | np.random.RandomState):  # a dict of numbers, text and arrays
        state = value.bit_generator.state if isinstance(value, np.random.Generator) else value.get_state(legacy=False)
        return True, {_NUMPY_GENERATOR: _plain_state(state)}
    if isinstance(value, random.Random):
        version, internal, gauss_next = value.getstate()
        return True, {_PYTHON_RANDOM: [version, list(internal), gauss_next]}
    if isinstance(value, np.ndarray):  # in native byte order, as torch needs; one of strings or objects is left out
        try:
            return True, {_NUMPY: torch.from_numpy(value.astype(value.dtype.newbyteorder("=")))}
        except TypeError:
            return False, None
    if isinstance(value, list | tuple):
        items = [_capture_value(v, seen, packages) for v in value]
        if all(ok for ok, _ in items):
            return True, [v for _, v in items]
        return False, None
    if isinstance(value, dict):
        if not all(isinstance(k, str | int) for k in value):
            return False, None
        items = {k: _capture_value(v, seen, packages) for k, v in value.items()}
        if all(ok for ok, _ in items.values()):
            return True, {"__dict__": [[k, v] for k, (_, v) in items.items()]}
        return False, None
    if _is_state_holder(value, packages) and id(value) not in seen:
        name = f"{type(value).__module__}:{type(value).__qualname__}"
        return True, {_OBJECT: capture(value, seen, packages), _CLASS: name}
    return False, None


def _plain_state(value: Any) -> Any:
    """A numpy generator's state (dicts of numbers, text and arrays) as plain dicts, lists, numbers and text."""
    if isinstance(value, dict):
        return {key: _plain_state(item) for key, item in value.items()}
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    return value


def capture(obj: Any, seen: set[int] | None = None, packages: frozenset[str] | None = None) -> dict[str, Any]:
    """The restorable state of ``obj``'s attributes (see the module docstring for what is kept)."""
    seen = set() if seen is None else seen
    packages = frozenset({"hil", "simulators", _package(obj)}) if packages is None else packages
    seen.add(id(obj))
    state = {}
    for name, value in vars(obj).items():
        if isinstance(value, type(threading.Lock())):
            continue
        ok, captured = _capture_value(value, seen, packages)
        if ok:
            state[name] = captured
    return state


def _class(saved: dict[str, Any], packages: frozenset[str], enum_class: bool) -> type:
    """The class a captured state holder or enum member names, if it is one `capture` could have saved (see the
    module docstring); else a `ValueError` saying why, having imported nothing."""
    name = saved[_CLASS]
    if not isinstance(name, str) or not TARGET.fullmatch(name):
        raise ValueError(f"{name!r} is not a class's name")
    module = name.partition(":")[0]
    if module.partition(".")[0] not in packages and not (enum_class and module in sys.modules):
        raise ValueError(f"it names the class {name}, not of {', '.join(sorted(packages))}, whose state a checkpoint "
                         "holds; it was not imported")
    try:
        cls = load_target(name)
    except ConfigError as error:
        raise ValueError(error.detail) from None
    if not isinstance(cls, type) or (enum_class and not issubclass(cls, enum.Enum)):
        raise ValueError(f"{name} is not {'an enum' if enum_class else 'a class'}")
    return cls


def _restore_value(current: Any, saved: Any, packages: frozenset[str]) -> Any:
    if isinstance(saved, dict) and _GENERATOR in saved:
        generator = current if isinstance(current, torch.Generator) else torch.Generator()  # one not built yet
        generator.set_state(saved[_GENERATOR])
        return generator
    if isinstance(saved, dict) and _NUMPY_GENERATOR in saved:  # into the world's own, as it built it
        if isinstance(current, np.random.Generator):
            current.bit_generator.state = saved[_NUMPY_GENERATOR]
        elif isinstance(current, np.random.RandomState):
            current.set_state(saved[_NUMPY_GENERATOR])
        else:
            raise ValueError(f"a numpy generator's state, where a {type(current).__name__} is")
        return current
    if isinstance(saved, dict) and _PYTHON_RANDOM in saved:
        if not isinstance(current, random.Random):
            raise ValueError(f"a random.Random's state, where a {type(current).__name__} is")
        version, internal, gauss_next = saved[_PYTHON_RANDOM]
        current.setstate((version, tuple(internal), gauss_next))
        return current
    if isinstance(saved, dict) and _NUMPY in saved:
        return saved[_NUMPY].numpy().copy()
    if isinstance(saved, dict) and _ENUM in saved:
        cls = _class(saved, packages, enum_class=True)
        return cls(saved[_ENUM]) if issubclass(cls, enum.Flag) else cls[saved[_ENUM]]
    if isinstance(saved, dict) and _OBJECT in saved:
        cls = _class(saved, packages, enum_class=False)  # module:Qualified.Name, a class nested in another too
        if type(current) is not cls:
            current = cls.__new__(cls)  # e.g. a cache that this process has not built yet
        _restore(current, saved[_OBJECT], packages)
        return current
    if isinstance(saved, dict) and "__dict__" in saved:
        current_items = current if isinstance(current, dict) else {}
        return {k: _restore_value(current_items.get(k), v, packages) for k, v in saved["__dict__"]}
    if isinstance(saved, list):
        current_items = list(current) if isinstance(current, list | tuple) else [None] * len(saved)
        current_items += [None] * (len(saved) - len(current_items))
        values = [_restore_value(c, s, packages) for c, s in zip(current_items, saved, strict=False)]
        return tuple(values) if isinstance(current, tuple) else values
    if isinstance(saved, torch.Tensor):
        return saved.clone()
    return saved


def _kind(value: Any) -> str:
    """What sort of value ``value`` is, as far as a restored attribute must stay the same sort (a number may become
    a float, a tuple a list): a checkpoint's plain value in place of a tensor or a counter failed only later, in the
    run. A numpy scalar is the sort of its value (a checkpoint holds it as a plain one)."""
    if isinstance(value, np.generic) and not isinstance(value, np.datetime64 | np.timedelta64):
        value = value.item()
    for kind, types in (("enum member", enum.Enum), ("number", int | float | np.number), ("text", str),
                        ("tensor", torch.Tensor), ("generator", (torch.Generator, *OTHER_GENERATORS)),
                        ("array", np.ndarray),
                        ("sequence", list | tuple), ("mapping", dict)):
        if isinstance(value, types):
            return kind
    return "object"


def _restore(obj: Any, state: dict[str, Any], packages: frozenset[str]) -> None:
    for name, saved in state.items():
        current = getattr(obj, name, None)
        value = _restore_value(current, saved, packages)
        if current is not None and value is not None and _kind(current) != _kind(value):
            raise ValueError(f"{name} is a {_kind(value)} there, where a {_kind(current)} goes")
        object.__setattr__(obj, name, value)


def restore(obj: Any, state: dict[str, Any], source: str | None = None) -> None:
    """Put back what `capture` saved; state that `capture` cannot have made of ``obj`` (a checkpoint handed on, or
    crafted) is a `RunFileError` naming ``source`` (the checkpoint file), where given."""
    try:
        if not isinstance(state, dict):
            raise ValueError(f"a {type(state).__name__}, not a mapping of attributes")
        _restore(obj, state, frozenset({"hil", "simulators", _package(obj)}))
    except (AttributeError, IndexError, KeyError, RuntimeError, TypeError, ValueError) as error:
        where = f"{source}: " if source else ""
        name = getattr(obj, "name", None)
        what = f"{type(obj).__name__}{f' {name!r}' if isinstance(name, str) and name else ''}"
        raise RunFileError(f"{where}the state saved of {what} cannot be restored ({type(error).__name__}: "
                           f"{error_reason(error)}); it is not this run's checkpoint: restore the run's own from a "
                           "backup, or start a new run") from None
