"""The lab file (``lab.yaml``) and the `Lab` that builds, connects and closes its instruments.

A lab file names each instrument, its driver (a registry name), and where it is: a VISA or serial ``resource``
on a bench, ``emulate`` to serve the driver's emulator in this process (no hardware needed), or a simulated
``world``. ``limits`` narrows the driver's limits for this bench; ``settings`` are the driver's own options.
``worlds`` declares simulated benches (kind, preset, seed, config overrides); ``systems`` assembles physical
systems from the instruments (kind, the instrument of each role, settings).

On leaving a ``with Lab.load(path) as lab:`` block, normally, on an exception or on Ctrl-C, every connected
instrument is put in its safe state and closed; a second Ctrl-C during that clean-up is held until it is done.
"""

from __future__ import annotations

import collections.abc
import inspect
import math
import os
import typing
import weakref
from collections.abc import Collection
from pathlib import Path
from types import NoneType, UnionType
from typing import Any, Literal, NoReturn, Union

from pydantic import Field, TypeAdapter, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_core import CoreConfig, SchemaValidator

from hil.config import Seed, Strict, UserPath, UserResource, YamlDocument, explain, got, shown, strict_scalars
from hil.errors import (
    ConfigError,
    DeviceError,
    HilError,
    InstrumentBusy,
    error_reason,
    one_line,
    raised_in_plugin,
    signals_held,
    with_type,
)
from hil.hooks import is_hils
from hil.instruments import Instrument
from hil.registry import instrument_class, subclass_of
from hil.systems.base import PhysicalSystem
from hil.transport import MAX_TIMEOUT_S, Transport, has_serial_line, instrument_key, open_transport, transport_class

#: Keyword arguments every instrument takes from the framework, not from ``settings``.
FRAMEWORK_ARGUMENTS = {"self", "transport", "world", "name", "limits", "clock"}

#: What a class's construction may raise for settings it cannot work with (a size it cannot allocate, a value that
#: overflows its arithmetic or divides by zero): reported at the settings, not as a traceback.
BUILD_ERRORS = (ArithmeticError, MemoryError, RuntimeError, TypeError, ValueError)


def _plain(annotation: Any) -> bool:
    """Whether ``annotation`` is built only of what a YAML file writes: numbers, true/false, text, null, a choice
    of literals, and lists of these. Settings of other types (a path, a class) are left to the class to check."""
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return True
    if origin in (Union, UnionType, list, tuple, collections.abc.Sequence):
        return all(_plain(arg) for arg in typing.get_args(annotation) if arg is not Ellipsis)
    return annotation in (int, float, bool, str, NoneType)


def settings_inits(cls: type, base: type = object) -> list[Any]:
    """The ``__init__`` functions whose keywords are ``cls``'s settings: its own and, where one passes ``**kwargs``
    on, that of the next class of its MRO that writes one (a system that subclasses another takes the other's settings
    too), up to ``base``'s, left out (`PhysicalSystem`'s sizes and bounds, which a system passes on itself)."""
    inits = []
    for klass in cls.__mro__:
        if klass is base or klass is object:
            break
        init = vars(klass).get("__init__")
        if init is None:
            continue
        inits.append(init)
        if not _takes_any_keyword(inspect.signature(init).parameters):
            break
    return inits or [cls.__init__]


def settings_parameters(cls: type, base: type = object) -> dict[str, inspect.Parameter]:
    """The named parameters of ``cls``'s `settings_inits` (the first, a subclass's, where two name one)."""
    parameters: dict[str, inspect.Parameter] = {}
    for init in settings_inits(cls, base):
        for name, parameter in inspect.signature(init).parameters.items():
            if parameter.kind not in (parameter.VAR_KEYWORD, parameter.VAR_POSITIONAL):
                parameters.setdefault(name, parameter)
    return parameters


def setting_types(cls: type, base: type = object) -> dict[str, Any]:
    """The annotations of ``cls``'s settings (`settings_inits`) that `check_setting` can check (see `_plain`); none
    where they cannot be resolved (a plugin's annotations naming what its module imports only for type checkers)."""
    hints: dict[str, Any] = {}
    for init in reversed(settings_inits(cls, base)):  # a subclass's annotation wins
        try:
            hints.update(typing.get_type_hints(init))
        except Exception:  # any failure to resolve them: the class checks its settings alone
            return {}
    return {name: annotation for name, annotation in hints.items() if name != "return" and _plain(annotation)}


#: Settings are checked as written: no conversion of a scalar (true is not 1, 2.0 is not an integer, "5" is not a
#: number, as in a protocol: `hil.config.Strict`), and numbers must be finite; a YAML list fills a tuple.
_AS_WRITTEN = CoreConfig(allow_inf_nan=False)


def check_setting(value: Any, annotation: Any) -> tuple[tuple[str | int, ...], str] | None:
    """None if ``value`` is of the type ``annotation`` names, as written (see `_AS_WRITTEN`); else where in it the
    problem is (an item's index) and what it is."""
    try:
        SchemaValidator(strict_scalars(TypeAdapter(annotation).core_schema), _AS_WRITTEN).validate_python(value)
    except ValidationError as errors:
        first = errors.errors()[0]
        where = tuple(part for part in first["loc"] if isinstance(part, int))
        return where, explain(first, None)  # as a protocol's values are said: "write a plain number, unquoted"
    return None


def first_not_finite(value: Any, where: tuple[str | int, ...] = ()) -> tuple[tuple[str | int, ...], str] | None:
    """None if ``value`` holds no NaN or infinity, at any depth of its lists and mappings; else where the first is
    and what is wrong, as `check_setting` says it: the check of a setting whose type the class leaves open."""
    if isinstance(value, float):
        return None if math.isfinite(value) else (where, "Input should be a finite number" + got(value))
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        found = first_not_finite(item, (*where, key))
        if found is not None:
            return found
    return None


def _takes_any_keyword(parameters: collections.abc.Mapping[str, inspect.Parameter]) -> bool:
    """Whether a signature's parameters end with ``**kwargs``."""
    return any(p.kind is p.VAR_KEYWORD for p in parameters.values())


class LimitConfig(Strict):
    """Narrowed limit fields; any left out keep the driver's value."""

    min: float | None = Field(None, description="lowest value, in the limit's unit (voltage_v: V)")
    max: float | None = Field(None, description="highest value, in the limit's unit")
    max_step: float | None = Field(None, description="largest change one command may make, in the limit's unit; a "
                                   "larger move is ramped")
    ramp_rate: float | None = Field(None, description="fastest change of a ramp, in the limit's unit per second; "
                                    "needs max_step")  # Strict refuses NaN and infinities in each


class InstrumentConfig(Strict):
    """One instrument: its driver, where it is (exactly one of resource, emulate, world), limits, settings."""

    driver: str
    resource: UserResource | None = None  # a serial device path may begin with ~, as every other path here
    emulate: bool | dict[str, Any] = False
    world: str | None = None
    timeout_s: float = Field(2.0, ge=1e-3, le=MAX_TIMEOUT_S, description="reply timeout (s); at least 1 ms, VISA's "
                             "resolution, and at most VISA's longest, 4294967 s (49 days)")
    visa_library: UserPath = Field("@py", description="pyvisa's VISA library for a VISA resource: @py (pyvisa-py, "
                                   "installed with hil), or '' (falling back to pyvisa-py where none is found), @ivi "
                                   "or a library's path for the system's VISA (NI-VISA, Keysight IO Libraries), which "
                                   "opens USB and GPIB resources on its own")
    traffic_log: UserPath | None = Field(None, description="file that records every exchange (appended), each "
                                         "line naming the instrument; instruments given one file share it, in the "
                                         "order of their exchanges; if the disk refuses it later, logging stops with "
                                         "a warning and the instruments go on")
    baudrate: int | None = Field(None, ge=50, le=4_000_000, description="a serial line's speed (bit/s) where the "
                                 "resource is one: a device path (/dev/ttyUSB0, COM3) or a VISA ASRL resource "
                                 "(ASRL/dev/ttyUSB0::INSTR); default: the driver's, else 9600")
    limits: dict[str, LimitConfig] = Field(default_factory=dict)
    settings: dict[str, Any] = Field(default_factory=dict)

    @field_validator("traffic_log")
    @classmethod
    def _log_in_a_folder(cls, value: str | None, info: ValidationInfo) -> str | None:
        """A file that can be made (or appended to), where the lab's relative paths lie (`Lab.load`'s ``folder``,
        given as the validation's context: the path comes back under it; without one, the working directory)."""
        if value is None:
            return value
        if not value.strip():
            raise ValueError("a blank name; name a file (e.g. logs/awg.log)")
        value = os.path.join((info.context or {}).get("folder", ""), value)  # as written, where no folder is given
        path = Path(value)
        try:  # a folder above it that cannot be looked into (another's home) fails the look, as the log would
            if path.is_dir():
                raise ValueError(f"{value!r} is a folder; name a file in it")
            existing = next(parent for parent in path.absolute().parents if parent.exists())
        except OSError as error:
            raise ValueError(f"{value!r} cannot be reached ({error.strerror or error}); name a file in a folder you "
                             "can write to") from None
        if not existing.is_dir():  # the log's folders are made at the first transfer, below a folder
            raise ValueError(f"{str(existing)!r} is a file, so {value!r} cannot be made")
        made = path.exists()  # a log appended to; else one to make in the folder found
        if not os.access(path if made else existing, os.W_OK if made else os.W_OK | os.X_OK):  # else found at open
            shown = "it" if made else repr(str(existing))
            raise ValueError(f"{value!r} cannot be written ({shown} cannot be written to); name a file in a folder "
                             "you can write to")
        return value

    @model_validator(mode="after")
    def _one_location(self) -> InstrumentConfig:
        given = [key for key, value in (("resource", self.resource), ("emulate", self.emulate is not False),
                                        ("world", self.world)) if value]  # emulate: {} is emulate without options
        if len(given) != 1:
            raise ValueError("give exactly one of resource (a bench instrument), emulate (true, or emulator "
                             f"options) or world (a simulator); got {given or 'none'}")
        unused = sorted({"timeout_s", "traffic_log", "visa_library", "baudrate"} & self.model_fields_set) \
            if self.world else []
        if unused:
            raise ValueError(f"{', '.join(unused)} set for a simulated instrument (world), which has no transport; "
                             "leave them out")
        return self


class WorldConfig(Strict):
    """A simulated world: its kind, a preset of non-idealities, overrides of any config field, the seed."""

    kind: str
    preset: str = Field("realistic", description="one of the kind's presets (the built-in worlds': ideal, "
                        "realistic, harsh)")
    seed: Seed = Field(0, description="draws the construction non-idealities (the device) and the later noise")
    realtime: bool = Field(False, description="also wait the modelled device time in wall time, as the bench "
                           "would take it (the virtual clock counts it either way)")
    config: dict[str, Any] = Field(default_factory=dict, description="fields of the preset overridden, by section")


class SystemConfig(Strict):
    """A physical system: its kind, the instrument playing each of its roles, and its settings."""

    kind: str
    instruments: dict[str, str]
    settings: dict[str, Any] = Field(default_factory=dict)


class LabConfig(Strict):
    """The whole lab file."""

    description: str = ""
    worlds: dict[str, WorldConfig] = Field(default_factory=dict)
    instruments: dict[str, InstrumentConfig] = Field(default_factory=dict)
    systems: dict[str, SystemConfig] = Field(default_factory=dict)


def reads_as(data: Any) -> Literal["lab", "protocol"] | None:
    """What a parsed YAML file reads as: the kind of file more of whose own keys it has (a lab file's worlds,
    instruments and systems; a protocol's name, system, model, ...), so that one misspelt key does not make a lab
    file a protocol; None for neither (no such key, as many of each, or not a mapping)."""
    from hil.protocol import Protocol  # imported here: hil.protocol builds on this module

    keys = set(data) if isinstance(data, dict) else set()
    lab = len(keys & (set(LabConfig.model_fields) - set(Protocol.model_fields)))
    protocol = len(keys & (set(Protocol.model_fields) - set(LabConfig.model_fields)))
    return "lab" if lab > protocol else "protocol" if protocol > lab else None


#: The labs open in this process: another may not open a bench instrument one of them has connected (`Lab.open`).
_OPEN_LABS: weakref.WeakSet[Lab] = weakref.WeakSet()


class Lab:
    """Builds the instruments of a lab file, connects them, and always leaves them safe.

    ``build()`` constructs every instrument (starting emulators, which touch no hardware) and so checks the
    drivers, settings and limits; ``open()`` also connects them, each claimed first; ``read_identities()`` reads each
    one's identity and changes nothing on it.
    """

    def __init__(self, config: LabConfig, document: YamlDocument | None = None):
        self.config = config
        self.document = document
        self.source = document.source if document else "<lab>"
        self.worlds: dict[str, Any] = {}
        self.instruments: dict[str, Instrument] = {}
        self.systems: dict[str, PhysicalSystem] = {}
        self._servers: dict[str, Any] = {}  # the emulator serving each emulated instrument, by its name
        self._unserved: set[str] = set()  # emulated instruments whose emulators were stopped
        self._connected: list[Instrument] = []
        self._transports: dict[str, Transport] = {}  # the transport the lab made for each bench instrument, by its name
        self._open = False

    @classmethod
    def load(cls, path: str | Path | YamlDocument, folder: str | Path | None = None) -> Lab:
        """The lab of a lab file (or of its document, read already); a protocol given for one is named as such, not
        as a dozen unknown keys. ``folder``: where the file's relative paths (a ``traffic_log``) lie, if not in the
        working directory (a resumed run's: the folder the run started in)."""
        document = YamlDocument.read(path)
        try:
            return cls(document.validate(LabConfig, context={"folder": folder} if folder is not None else None),
                       document)
        except ConfigError:
            if reads_as(document.data) == "protocol":
                raise ConfigError(f"{document.source} is a protocol, not a lab file; give a lab file (e.g. lab.yaml) "
                                  "with --lab or as the protocol's lab:") from None
            raise

    def _check_settings(self, cls: type, settings: dict[str, Any], where: tuple[str, ...],
                        base: type = object) -> None:
        """Refuse a setting whose value is not of the type its class's ``__init__`` annotates (see `check_setting`,
        `setting_types`), or, where `check_setting` cannot check the annotation (``Any``, none, a path, a mapping, a
        class), holds a NaN or an infinity, before the class sees it: a `ConfigError` at the setting, or at the item
        of a list."""
        types = setting_types(cls, base)
        for key, value in settings.items():
            problem = check_setting(value, types[key]) if key in types else first_not_finite(value)
            if problem is not None:
                raise self._error(problem[1], (*where, "settings", key, *problem[0]))

    def _settings_error(self, error: BaseException, location: tuple[str, ...]) -> ConfigError:
        """The `ConfigError`, at ``location``, for an exception a class raised while built from its settings."""
        if isinstance(error, OverflowError):  # a setting too large for the arithmetic the class does with it
            return self._error(f"a value is too large ({one_line(error)}); give smaller settings", location)
        if isinstance(error, MemoryError) or "allocate" in str(error):
            return self._error(f"a value is too large: building with it needs more memory than this machine has "
                               f"({with_type(error)}); give smaller settings", location)
        return self._error(one_line(error) if isinstance(error, TypeError | ValueError) else with_type(error), location)

    def _error(self, message: str, location: tuple[str | int, ...]) -> ConfigError:
        if self.document is not None:
            return self.document.error(message, location)
        return ConfigError(message, source=self.source, field=".".join(map(str, location)))

    # -- building -----------------------------------------------------------------------------------------------
    def build(self) -> dict[str, Instrument]:
        """Construct every world, instrument and system without connecting; a problem is a `ConfigError`
        located in the file. Returns the instruments."""
        self._forget_unserved()
        try:
            for name, world in self.config.worlds.items():
                if name not in self.worlds:
                    self.worlds[name] = self._build_world(name, world)
            for name, config in self.config.instruments.items():
                if name not in self.instruments:
                    self.instruments[name] = self._build_one(name, config)
            for name, system in self.config.systems.items():
                if name not in self.systems:
                    self.systems[name] = self._build_system(name, system)
        except BaseException:
            self._stop_servers()
            raise
        _in_order(self.instruments, self.config.instruments)  # one rebuilt after a reopen is connected in its turn
        _in_order(self.systems, self.config.systems)
        return self.instruments

    def _build_world(self, name: str, config: WorldConfig) -> Any:
        where = ("worlds", name)
        try:
            from simulators.world import World  # the simulators' base, imported only for a lab with worlds

            cls = subclass_of("worlds", config.kind, World)
        except ConfigError as error:
            raise self._error(error.detail, (*where, "kind")) from None
        if cls.kind == World.kind:  # the base's placeholder: every such world would draw from the same streams
            raise self._error(f"world kind {config.kind!r} ({cls.__module__}.{cls.__qualname__}) does not set kind, "
                              "the name its seeds are derived from (worlds of different kinds with one seed are "
                              "independent devices); set kind = \"...\" on the class", (*where, "kind"))
        try:
            return cls(preset=config.preset, config=config.config, seed=config.seed, realtime=config.realtime)
        except ConfigError as error:
            field = tuple(error.field.split(".")) if error.field else ()
            raise self._error(error.detail, (*where, *field)) from None
        except BUILD_ERRORS as error:  # a value its Config allows, but the simulation cannot work with
            raise self._error(f"the {config.preset} {config.kind} cannot be simulated with this config "
                              f"({with_type(error)}); give values of a size a bench could "
                              "have", (*where, "config")) from None
        except HilError:
            raise
        except Exception as error:  # a slip of a plugin world's own (a KeyError in its _construct)
            raise self._plugin_slip(cls, error, (*where, "kind")) from error

    def _build_system(self, name: str, config: SystemConfig) -> PhysicalSystem:
        where = ("systems", name)
        try:
            cls = subclass_of("systems", config.kind, PhysicalSystem)
        except ConfigError as error:
            raise self._error(error.detail, (*where, "kind")) from None
        if cls.kind == PhysicalSystem.kind:  # the base's placeholder: a twin saved of it would fit any such system
            raise self._error(f"system kind {config.kind!r} ({cls.__module__}.{cls.__qualname__}) does not set kind, "
                              "the name its twins are saved under (a twin.from_run of another kind is refused); set "
                              "kind = \"...\" on the class", (*where, "kind"))
        instruments = {}
        for role, instrument in config.instruments.items():
            if not cls.roles:
                raise self._error(f"system kind {config.kind!r} ({cls.__module__}.{cls.__qualname__}) declares no "
                                  "roles; set roles = {\"<role>\": <capability>, ...} on the class (e.g. {\"output\": "
                                  "AnalogOutput}): the capability each role's instrument must have",
                                  (*where, "instruments", role))
            if role not in cls.roles:
                raise self._error(f"system kind {config.kind!r} has no role {shown(role)}; its roles: "
                                  f"{', '.join(cls.roles)}", (*where, "instruments", role))
            if instrument not in self.instruments:
                raise self._error(f"no instrument named {shown(instrument)} in this lab", (*where, "instruments", role))
            instruments[role] = self.instruments[instrument]
        missing = sorted(set(cls.roles) - set(instruments))
        if missing:  # before the class runs: its own __init__ may read a role before the base checks them
            raise self._error(f"system {name!r} needs instrument(s) for {', '.join(missing)}; system kind "
                              f"{config.kind!r} has the roles {', '.join(cls.roles)}", (*where, "instruments"))
        worlds = {instrument.world: role for role, instrument in instruments.items()  # type: ignore[attr-defined]
                  if getattr(instrument, "world", None) is not None}
        if len(worlds) > 1:
            names = {id(world): name for name, world in self.worlds.items()}
            roles = ", ".join(f"{role} on {names.get(id(world), '?')!r}" for world, role in worlds.items())
            raise self._error(f"the simulated instruments of one system must share one world (the physics that links "
                              f"them); here: {roles}", (*where, "instruments"))
        bench = [f"{role} ({config.instruments[role]!r})" for role, instrument in instruments.items()
                 if getattr(instrument, "world", None) is None]
        if worlds and bench:  # nothing links a simulated world to a bench instrument: every call would fail
            are = "is a bench instrument" if len(bench) == 1 else "are bench instruments"
            raise self._error(f"{', '.join(bench)} {are} and the others simulated, which see only their world; give "
                              "every role a simulated instrument or every role a bench one", (*where, "instruments"))
        parameters = inspect.signature(cls.__init__).parameters
        if "name" not in parameters and not _takes_any_keyword(parameters):
            raise self._error(f"system kind {config.kind!r} cannot be built: its __init__ does not take the name "
                              "the lab gives it; write def __init__(self, instruments, *, name='', <settings>) and "
                              "pass name on to PhysicalSystem.__init__", (*where, "kind"))
        allowed = sorted(set(settings_parameters(cls, PhysicalSystem)) - {"self", "instruments", "name"})
        for key in config.settings:
            if key not in allowed:
                raise self._error(f"unknown setting {shown(key)} for {config.kind}; allowed: "
                                  f"{', '.join(allowed) or 'none'}", (*where, "settings", key))
        self._check_settings(cls, config.settings, where, PhysicalSystem)
        try:
            return cls(instruments, name=name, **config.settings)
        except ConfigError as error:
            field = tuple(error.field.split(".")) if error.field else ()
            if field[:1] != ("instruments",):
                field = ("settings", *field)
            raise self._error(error.detail, (*where, *field)) from None
        except BUILD_ERRORS as error:
            raise self._settings_error(error, (*where, "settings")) from None
        except HilError:
            raise
        except Exception as error:  # a slip of a plugin system's own (a KeyError, an AttributeError in its __init__)
            raise self._plugin_slip(cls, error, (*where, "kind")) from error

    def _plugin_slip(self, cls: type, error: Exception, location: tuple[str, ...]) -> Exception:
        """The error to raise for ``error``, which building ``cls`` raised outside the settings' errors: a plugin
        class's slip as a `ConfigError` at ``location`` naming the class, the error and the plugin's line; hil's own
        (its bug) as it is."""
        if is_hils(cls.__module__):
            return error
        where = raised_in_plugin(error, inspect.getsourcefile(cls) or "")
        return self._error(f"{cls.__module__}.{cls.__qualname__} raised {type(error).__name__}: "
                           f"{error_reason(error)} ({where}); fix it there", location)

    def _build_one(self, name: str, config: InstrumentConfig) -> Instrument:
        where = ("instruments", name)
        try:
            cls = instrument_class(config.driver)
        except ConfigError as error:
            raise self._error(error.detail, (*where, "driver")) from None
        if inspect.isabstract(cls):
            hooks = ", ".join(sorted(cls.__abstractmethods__))
            raise self._error(f"{config.driver} ({cls.__module__}.{cls.__qualname__}) cannot be used: it does not "
                              f"implement {hooks}", (*where, "driver"))
        parameters = inspect.signature(cls.__init__).parameters
        untaken = [key for key in ("name", "limits") if key not in parameters]
        if untaken and not _takes_any_keyword(parameters):
            first = "world" if "world" in parameters else "transport"
            raise self._error(f"{config.driver} ({cls.__module__}.{cls.__qualname__}) cannot be built: its __init__ "
                              f"does not take {' and '.join(untaken)}, which the lab gives every instrument; write "
                              f"def __init__(self, {first}, *, <options>, **common) and pass **common on to "
                              "super().__init__()", (*where, "driver"))
        allowed = sorted(set(settings_parameters(cls)) - FRAMEWORK_ARGUMENTS)
        for key in config.settings:
            if key not in allowed:
                raise self._error(f"unknown setting {shown(key)} for {config.driver}; allowed: "
                                  f"{', '.join(allowed) or 'none'}", (*where, "settings", key))
        self._check_settings(cls, config.settings, where)
        limits = {key: value.model_dump(exclude_none=True) for key, value in config.limits.items()}
        common: dict[str, Any] = {"name": name, "limits": limits, **config.settings}
        try:
            if config.world is not None:
                if "world" not in parameters:
                    raise self._error(f"{config.driver} is a bench driver; give it a resource or emulate, "
                                      "not a world", (*where, "world"))
                return cls(world=self._world(config.world, (*where, "world")), **common)
            if "transport" not in parameters:
                if "world" in parameters:
                    raise self._error(f"{config.driver} takes no transport, so it needs a world: give it world: (a "
                                      "world of this lab), not a resource or emulate", where)
                raise self._error(f"{config.driver} ({cls.__module__}.{cls.__qualname__}) takes no transport, which "
                                  "the lab passes a bench driver by that name: write def __init__(self, transport, *, "
                                  "<options>, **common), passing **common on to super().__init__() (or, for a SCPI "
                                  "instrument, list ScpiDriver before the capability class: its __init__ takes it)",
                                  (*where, "driver"))
            resource = config.resource or self._start_emulator(name, cls, config, where)
            options = self._transport_options(cls, config, resource, where)
            transport = open_transport(resource, timeout_s=config.timeout_s, traffic_log=config.traffic_log,
                                       visa_library=config.visa_library, **options)
            transport.owner = name  # its errors, and its lines in a traffic log other instruments share, name it
            self._transports[name] = transport
            instrument = cls(transport, **common)
            instrument.held_until_closed = name not in self._servers  # a bench's: its output outlives the object
            if name in self._servers:
                # an emulator serves its instrument for as long as the lab is not closed and the instrument is kept:
                # one taken from a lab dropped unclosed (``smu = Lab.load(...).open()["smu"]``) still works, and one
                # dropped with its lab (``lab = Lab.load(...).open()`` in a notebook cell run again) stops it, which
                # would keep a socket and its threads serving for the rest of the session
                weakref.finalize(instrument, self._servers[name].stop)
            return instrument
        except ConfigError as error:
            if error.source:
                raise
            field = tuple(error.field.split(".")) if error.field else ()
            if field[:1] and field[0] in config.settings:  # a driver names its own option: it is under settings
                field = ("settings", *field)
            raise self._error(error.detail, (*where, *field)) from None
        except DeviceError as error:  # e.g. a simulated instrument given a world of another kind
            raise self._error(str(error), (*where, "world") if config.world is not None else where) from None
        except (ArithmeticError, TypeError, ValueError) as error:  # not RuntimeError: the transport's are its own
            raise self._settings_error(error, (*where, "settings")) from None

    def _transport_options(self, cls: type[Instrument], config: InstrumentConfig, resource: str,
                           where: tuple[str, ...]) -> dict[str, Any]:
        """The driver's ``transport_options``, with the lab's ``baudrate``, that the transport the resource picks
        takes. A serial line's own (a baud rate) are left out for an emulator served over TCP, which has no line; for
        a VISA resource without one (LAN, USB, GPIB) the driver's are a `ConfigError` at the resource, and the lab's
        ``baudrate`` the transport's `ConfigError` at ``baudrate``, not a TypeError at the settings."""
        options = dict(getattr(cls, "transport_options", {}))
        kind = transport_class(resource, config.visa_library)
        taken = {name for klass in kind.__mro__ if "__init__" in vars(klass)
                 for name, parameter in inspect.signature(klass.__init__).parameters.items()
                 if parameter.kind is parameter.KEYWORD_ONLY}
        if not has_serial_line(resource):
            taken.discard("baudrate")
        untaken = sorted(set(options) - taken)
        if untaken and config.resource is not None:
            raise self._error(f"{config.driver}'s transport_options give {', '.join(untaken)}, which {kind.__name__} "
                              f"({resource}) does not take; a serial line's options need a serial resource: its "
                              "device path (/dev/ttyUSB0, COM3) or ASRL resource (ASRL/dev/ttyUSB0::INSTR)",
                              (*where, "resource"))
        options = {key: value for key, value in options.items() if key in taken}  # an emulator's TCP link: no line
        if config.baudrate is not None and (config.resource is not None or "baudrate" in taken):
            options["baudrate"] = config.baudrate  # a resource without a line refuses it, at baudrate
        return options

    def _world(self, name: str, where: tuple[str | int, ...]) -> Any:
        if name not in self.worlds:
            raise self._error(f"no world named {shown(name)} in this lab", where)
        return self.worlds[name]

    def _start_emulator(self, name: str, cls: type[Instrument], config: InstrumentConfig,
                        where: tuple[str, ...]) -> str:
        from simulators.emulators.server import serve

        options = dict(config.emulate) if isinstance(config.emulate, dict) else {}
        via = options.pop("via", "tcp")
        try:
            server = serve(cls, options, via, name=config.driver)
        except ConfigError as error:
            raise self._error(error.detail, (*where, "emulate", *([error.field] if error.field else []))) from None
        self._servers[name] = server
        return server.resource

    # -- connecting and closing ---------------------------------------------------------------------------------
    def open(self, only: Collection[str] | None = None) -> Lab:
        """Build the lab and connect its instruments (``only``: just these, e.g. the ones a run uses; the others
        stay untouched, and may be off; a name the lab does not have is a `ConfigError`); if one fails, the others are
        made safe and closed. ``with lab.open(...):`` connects no more than ``open`` did; ``with lab:`` on a lab not
        open yet opens every instrument."""
        if isinstance(only, str):  # one name, not its letters
            only = [only]
        self.build()
        self._open = True
        try:
            unknown = [name for name in only or () if name not in self.instruments]
            if unknown:  # a misspelt name would leave its instrument unconnected, and said nowhere
                raise ConfigError(f"no instrument named {unknown[0]!r} to open; the lab has: "
                                  f"{', '.join(self.instruments)}", source=self.source)
            self._refuse_held_here(name for name in self.instruments if only is None or name in only)
            self._claim(name for name in self.instruments if only is None or name in only)
            _OPEN_LABS.add(self)
            self._adopt_connected()
            for name, instrument in self.instruments.items():
                if instrument.connected or (only is not None and name not in only):
                    continue
                try:
                    instrument.connect()
                except HilError as error:
                    _raise_naming(name, error)
                self._connected.append(instrument)
        except BaseException:
            self.close()
            raise
        return self

    def _adopt_connected(self) -> None:
        """Count the lab's instruments that the caller connected (``lab["smu"].connect()``, before `open` or after
        it) among those that `close` and `safe_state` reach: the lab leaves every instrument of its own safe."""
        for instrument in self.instruments.values():
            if instrument.connected and instrument not in self._connected:
                self._connected.append(instrument)

    def _refuse_held_here(self, names: collections.abc.Iterable[str]) -> None:
        """Refuse (`InstrumentBusy`) the bench instruments ``names`` where another open lab of this process has the
        same instrument connected, before anything is sent to any: the claim on an instrument (`_claim`) is this
        process's, so a second lab of one lab file (``lab = Lab.load(...).open()`` run again with the first still
        open) would command it alongside the first, whose close would then switch its output off."""
        held = {instrument_key(transport.resource): (lab, name) for lab in list(_OPEN_LABS) if lab is not self
                for name, transport in lab._transports.items()
                if name in lab.instruments and lab.instruments[name].connected}
        for name in names:
            transport = self._transports.get(name)
            if transport is None or self.instruments[name].connected:
                continue
            lab, other = held.get(instrument_key(transport.resource), (None, ""))
            if lab is not None:
                raise InstrumentBusy(f"instrument {name!r} ({transport.resource}) is connected by another lab of this "
                                     f"process ({lab.source}, as {other!r}); close that lab first (lab.close())")

    def _claim(self, names: collections.abc.Iterable[str]) -> None:
        """Claim the bench instruments ``names`` for this process before anything is sent to any: one that another
        process holds is refused (`InstrumentBusy`) while none of the others has been connected, set, or made safe
        (which would switch off an output someone else's measurement uses). `close` releases them."""
        for name in names:
            transport = self._transports.get(name)
            if transport is not None and not self.instruments[name].connected:
                transport.claim()

    def read_identities(self) -> dict[str, str]:
        """Build the lab and read each instrument's identity without changing anything on it
        (`Instrument.read_identity`: no setting sent, no safe state), every bench instrument claimed first; then close
        the links and stop the emulators. For a look at a bench that may be in use (``hil devices``)."""
        self.build()
        try:
            self._claim(self.instruments)
            identities = {}
            for name, instrument in self.instruments.items():
                try:
                    identities[name] = instrument.read_identity()
                except HilError as error:
                    _raise_naming(name, error)
        finally:
            self.close()
        return identities

    def close(self) -> None:
        """Safe state and close every connected instrument (in reverse order), then close the links the lab made (one
        that a driver failing at connect left open) and stop the emulators.

        Every instrument is tried even if one fails; the first failure is raised at the end. Opening the lab again
        builds the instruments the emulators served, and the systems built on them, anew on new emulators (emulated
        devices come back as if power-cycled)."""
        self._open = False
        _OPEN_LABS.discard(self)
        first_error: BaseException | None = None
        self._adopt_connected()
        with signals_held():
            while self._connected:
                instrument = self._connected.pop()
                try:
                    instrument.close()
                except Exception as error:
                    first_error = first_error or error
            for transport in self._transports.values():  # closed by their instruments, but for a failed connect's:
                transport.close()  # a driver of its own protocol that failed after opening its link left it open
            self._stop_servers()
        if first_error is not None:
            raise first_error

    def _stop_servers(self) -> None:
        """Stop the emulators, and retire the instruments they served: a handle on one kept from before (``awg =
        lab["awg"]``) says to take the instrument anew, not to check its cable."""
        while self._servers:
            name, server = self._servers.popitem()
            server.stop()
            self._unserved.add(name)
            if name in self.instruments:
                self.instruments[name].retire(
                    f"its emulator was stopped as its lab ({self.source}) closed; open the lab again and take the "
                    f"instrument anew, lab[{name!r}], and any system using it, lab.system(...)")

    def _forget_unserved(self) -> None:
        """Forget the instruments whose emulators were stopped, and the systems built on them, so that `build`
        makes them anew on new emulators."""
        for name in self._unserved:
            self.instruments.pop(name, None)
            for system, config in self.config.systems.items():
                if name in config.instruments.values():
                    self.systems.pop(system, None)
        self._unserved.clear()

    def safe_state(self) -> None:
        """Put every connected instrument in its safe state without closing (e.g. on an interlock).

        Every instrument is tried even if one fails, or a Ctrl-C, SIGTERM or SIGHUP comes (held until the end, as in
        `close`); the first failure is raised at the end.
        """
        first_error: Exception | None = None
        self._adopt_connected()
        with signals_held():
            for instrument in reversed(self._connected):
                try:
                    instrument.safe_state()
                except Exception as error:
                    first_error = first_error or error
        if first_error is not None:
            raise first_error

    def __repr__(self) -> str:
        """``<Lab lab.yaml, open (2 of 11 instruments connected): instruments awg, smu, …; systems optical, …>``."""
        if self._open:
            connected = sum(instrument.connected for instrument in self.instruments.values())
            state = f"open ({connected} of {len(self.instruments)} instruments connected)"
        else:
            state = "built, not open" if self.instruments or self.systems else "not built"
        return (f"<Lab {self.source}, {state}: instruments {', '.join(self.config.instruments) or 'none'}; "
                f"systems {', '.join(self.config.systems) or 'none'}>")

    def __enter__(self) -> Lab:
        return self if self._open else self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def system(self, name: str) -> PhysicalSystem:
        """The system ``name``; an unknown name is a `ConfigError` listing the lab's systems, and one of a lab not
        built yet a `ConfigError` saying to open it."""
        if name not in self.systems:
            raise self._not_there("system", name, self.config.systems, self.systems)
        return self.systems[name]

    def __getitem__(self, name: str) -> Instrument:
        """The instrument ``name``; a `ConfigError` as for `system`."""
        if name not in self.instruments:
            raise self._not_there("instrument", name, self.config.instruments, self.instruments)
        return self.instruments[name]

    def _not_there(self, what: str, name: str, declared: Collection[str], built: Collection[str]) -> ConfigError:
        """The error for the ``what`` (instrument, system) ``name`` that the lab has not built: one the file does not
        declare, listing those it declares and those ``built`` beside them (added by hand: ``lab.instruments["probe"]
        = ...``), or one of a lab not built yet (``Lab.load(...)`` without `open` or `build`)."""
        if name in declared:
            return ConfigError(f"{what} {name!r} is not built yet; call lab.open() first (or lab.build(), which "
                               "connects nothing)", source=self.source)
        known = [*declared, *(other for other in built if other not in declared)]
        return ConfigError(f"no {what} named {shown(name)}; the lab has: {', '.join(known) or 'none'}",
                           source=self.source)


def _in_order(items: dict[str, Any], order: collections.abc.Iterable[str]) -> None:
    """Reorder ``items`` in place to follow ``order`` (names not in it keep their place at the end)."""
    named = [name for name in order if name in items]
    for name in [*named, *(name for name in items if name not in named)]:
        items[name] = items.pop(name)


def _raise_naming(name: str, error: HilError) -> NoReturn:
    """Raise ``error`` of the lab's instrument ``name`` as it is where the driver named the instrument, else as the
    same kind of error with the name said first."""
    if str(error).startswith((f"{name}:", f"{name} (")):  # the driver named itself
        raise error
    raise type(error)(f"instrument {name!r}: {error}") from error
