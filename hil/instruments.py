"""The device layer: one abstract class per capability.

Each public method validates its arguments (shape, dtype, range, limits, NaN), then calls a ``_..._hw`` hook that
a driver or a simulator implements, and records the new state once the hook has returned (a level or a switch is
None, unknown, while it runs: a call that fails leaves it so); nothing reaches a hook that the limits refuse.
Every instrument has ``connect``/``close`` (also as a context manager), ``identify()``, ``snapshot()`` and
``safe_state()`` (outputs off, zero volts, a blank SLM), which the framework calls on exit, on error and on
Ctrl-C. Operations are batch-first: an SLM shows a sequence, a camera captures N frames, a source-measure unit
runs a list sweep (in one round trip where the instrument has list sweeps) and a crossbar reads many input
vectors, each in one round trip.
"""

from __future__ import annotations

import atexit
import itertools
import math
import os
import warnings
import weakref
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np

from hil.clock import Clock, WallClock
from hil.errors import (
    ConfigError,
    DeviceError,
    FramesDropped,
    LimitError,
    brief,
    error_reason,
)
from hil.hooks import is_hils, report_hooks
from hil.limits import LIMIT_FIELDS, Limit, as_numbers, limit_as_dict, narrow_limits, native_copy, real_number
from hil.physics.crossbar import pair_differences

#: The instruments connected and not closed yet, in the order they connected (`_close_at_exit`).
_CONNECTED: weakref.WeakValueDictionary[int, Instrument] = weakref.WeakValueDictionary()
#: Those of them that a lab built on a bench (`Instrument.held_until_closed`), held until closed: one dropped
#: unclosed (by a script's function that opened a lab and returned) still sources, and is made safe at exit.
_HELD: dict[int, Instrument] = {}
_connections = itertools.count()


def _close_at_exit() -> None:
    """Put every instrument this process connected and did not close (a script or a notebook's kernel that never
    closed its lab) in its safe state as the interpreter ends, and close it, the last connected first; each is tried,
    and a failure is a warning naming the instrument."""
    from hil.errors import signals_held

    with signals_held():
        for key in sorted(_CONNECTED, reverse=True):
            instrument = _CONNECTED.get(key)
            if instrument is None:
                continue
            try:
                instrument.close()
            except Exception as error:
                warnings.warn(f"{instrument.name}: going to the safe state as Python exits failed "
                              f"({type(error).__name__}: {error_reason(error)})", stacklevel=1)


def _forget_connections() -> None:
    """In a forked process, which holds none of its parent's connections: its exit must not send the parent's
    instruments to their safe state (a helper's ``sys.exit`` would switch off the output its parent is measuring)."""
    _CONNECTED.clear()
    _HELD.clear()


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=_forget_connections)


class Instrument(ABC):
    """Base of every instrument, real or simulated.

    ``limits`` narrows the hardware's limits (`hardware_limits`) for this bench; widening is a config error.
    ``clock`` measures device time (the wall clock unless a simulator shares its virtual clock).
    """

    #: What the instrument is, as named in tables and snapshots ("analog output", "camera", ...).
    capability: ClassVar[str] = "instrument"
    #: Whether the instrument is kept, once connected, until it is closed (`_close_at_exit`): a lab sets it on its
    #: bench instruments, whose devices go on with their outputs where the instrument is dropped unclosed (a
    #: simulator or an emulator goes with it).
    held_until_closed: bool = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A driver's ``_..._hw`` hooks, its own and its mixins' (`ScpiDriver`'s), raise a `DeviceError` naming the
        instrument, the hook and where it failed in place of an exception of their own (a ``float()`` of a reply it
        cannot read): one line, the original chained. The simulators' hooks and hil's (hil's own computation) are
        left as they are."""
        super().__init_subclass__(**kwargs)
        if is_hils(cls.__module__):
            return
        # the class's own hooks, and those of a mixin that is no Instrument (as ScpiDriver)
        names = {name for base in cls.__mro__ for name in vars(base) if name.startswith("_") and name.endswith("_hw")}
        report_hooks(cls, names, lambda self: self.name, "fix the driver there (a reply it cannot read is a "
                     "DeviceError naming the command and the reply)")

    def __init__(self, *, name: str = "", limits: Mapping[str, Mapping[str, Any]] | None = None,
                 clock: Clock | None = None):
        self.name = name or type(self).__name__
        self.limits: dict[str, Limit] = narrow_limits(self._hardware_limits_checked(), limits)
        self.clock: Clock = clock or WallClock()
        self.identity: str | None = None
        self._connected = False
        self._connection: int | None = None  # its key in `_CONNECTED` while connected
        self._retired: str | None = None  # why it can no longer be connected (`retire`)

    def _hardware_limits_checked(self) -> dict[str, Limit]:
        """`hardware_limits`, a `Limit` it cannot build named as the driver's fault (``field="driver"``): a lab
        file cannot narrow a limit that was never built, so its own fields are the wrong place to point at."""
        try:
            limits = self.hardware_limits()
        except ConfigError as error:
            if error.field not in (None, *LIMIT_FIELDS):
                raise
            raise ConfigError(f"{type(self).__name__}.hardware_limits() gives a limit hil refuses ("
                              f"{f'{error.field}: ' if error.field else ''}{error.detail}); fix the driver's limit, "
                              "as a lab file can only narrow it", field="driver") from None
        missing = [name for name in self._capability_limits() if name not in limits]
        if missing:  # else a KeyError where the capability first checks a value against it (the safe state, say)
            raise ConfigError(f"{type(self).__name__}.hardware_limits() leaves out {', '.join(missing)}, which every "
                              f"{self.capability} has; return {'it' if len(missing) == 1 else 'them'} too, as "
                              f"hil.limits.Limit", field="driver")
        return limits

    def _capability_limits(self) -> dict[str, Limit]:
        """The limits the capability's own `hardware_limits` gives (their names are the ones it checks values
        against); none for a class that subclasses `Instrument` directly."""
        for cls in type(self).__mro__:
            if cls.__module__ == __name__ and "hardware_limits" in vars(cls) and cls is not Instrument:
                return cls.hardware_limits(self)
        return {}

    # -- what a driver or simulator provides --------------------------------------------------------------------
    @abstractmethod
    def hardware_limits(self) -> dict[str, Limit]:
        """What the hardware can do (after the instance's own settings, e.g. the output load)."""

    def _connect_hw(self) -> None:  # noqa: B027 - an optional hook
        """Open the connection and read the instrument's present state."""

    def _close_hw(self) -> None:  # noqa: B027 - an optional hook
        """Release the connection."""

    @abstractmethod
    def _identify_hw(self) -> str:
        """The instrument's identity (maker, model, serial, firmware)."""

    @abstractmethod
    def _safe_state_hw(self) -> None:
        """Put the hardware in its safe state; called with the instrument connected."""

    def _snapshot_hw(self) -> dict[str, Any]:
        """Settings worth storing with a run, beyond the recorded state."""
        return {}

    # -- life cycle ---------------------------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._connected

    def connect(self) -> Instrument:
        """Connect and identify; returns self so that ``with inst.connect():`` reads naturally."""
        if self._retired is not None:
            raise DeviceError(f"{self.name}: {self._retired}")
        if not self._connected:
            self._connect_hw()
            self._connected = True
            self._track_connection()
            try:
                identity = self._identify_hw()
                if not isinstance(identity, str):  # e.g. None, where the hook left out its return
                    raise DeviceError(f"{self.name}: {type(self).__name__}._identify_hw() returned {brief(identity)}, "
                                      "not the identity; return the instrument's identity as text (maker, model, "
                                      "serial, firmware)")
                self.identity = identity
            except BaseException:
                self.close()
                raise
        return self

    def close(self) -> None:
        """Put the instrument in its safe state, then disconnect; safe to call twice."""
        if not self._connected:
            return
        try:
            self.safe_state()
        finally:
            self._connected = False
            _CONNECTED.pop(self._connection, None)
            _HELD.pop(self._connection, None)
            self._close_hw()

    def _track_connection(self) -> None:
        """Have the instrument closed (in its safe state) as the interpreter ends if nothing closes it before: the
        hook is registered anew at each connection, so that it runs before the exit hooks registered earlier (those
        that stop a lab's emulators, which the safe state of an emulated instrument needs)."""
        atexit.unregister(_close_at_exit)
        atexit.register(_close_at_exit)
        self._connection = next(_connections)
        _CONNECTED[self._connection] = self
        if self.held_until_closed:
            _HELD[self._connection] = self

    def __repr__(self) -> str:
        """``<Keithley2450 'smu': source-measure unit, connected>``."""
        state = "connected" if getattr(self, "_connected", False) else "not connected"
        return f"<{type(self).__qualname__} {getattr(self, 'name', '?')!r}: {self.capability}, {state}>"

    def __enter__(self) -> Instrument:
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def identify(self) -> str:
        """The identity read at connect (maker, model, serial, firmware)."""
        self._require_connected()
        assert self.identity is not None
        return self.identity

    def read_identity(self) -> str:
        """The identity, read without changing anything on the instrument, which may be in use (sourcing for
        someone's measurement): no setting is sent and no safe state gone to (`_read_identity_hw`); a connected
        instrument gives the one read at connect. For a look at a bench (``hil devices``)."""
        if self._connected:
            return self.identify()
        identity = self._read_identity_hw()
        if not isinstance(identity, str):
            raise DeviceError(f"{self.name}: {type(self).__name__}._read_identity_hw() returned {brief(identity)}, not "
                              "the identity; return the instrument's identity as text")
        return identity

    def _read_identity_hw(self) -> str:
        """Connect, read the identity and disconnect, sending nothing that changes a setting or an output. This
        default runs `_connect_hw`, `_identify_hw` and `_close_hw`, without the safe state: a driver whose
        `_connect_hw` sends settings overrides it (`drivers.scpi.ScpiDriver` does: ``*IDN?`` alone)."""
        self._connect_hw()
        try:
            return self._identify_hw()
        finally:
            self._close_hw()

    def safe_state(self) -> None:
        """Outputs off, zero volts, blank pattern: nothing that can harm the device, the sample or a person."""
        if self._connected:
            self._safe_state_hw()

    def snapshot(self) -> dict[str, Any]:
        """A JSON-ready dict of the instrument's identity, limits and settings, stored with every run."""
        return {
            "name": self.name,
            "class": f"{type(self).__module__}.{type(self).__qualname__}",
            "capability": self.capability,
            "identity": self.identity,
            "limits": {key: limit_as_dict(limit) for key, limit in self.limits.items()},
            **self._snapshot_hw(),
        }

    # -- helpers for subclasses ---------------------------------------------------------------------------------
    def retire(self, reason: str) -> None:
        """Refuse to connect the instrument from now on, saying ``reason`` (a sentence without its name): it is
        gone for good, as an emulated instrument whose emulator its lab stopped on closing."""
        self._retired = reason

    def _require_connected(self) -> None:
        if not self._connected:
            raise DeviceError(f"{self.name}: {self._retired or 'not connected; call connect() first'}")

    def _what(self, quantity: str) -> str:
        return f"{self.name} {quantity}"

    def _require_level_within(self, limit: str, level: float | None, what: str, quantity: str) -> None:
        """Refuse to switch on an output whose ``level`` is unknown (another function left by another program, a
        change or play that failed part-way), or known and outside the limits (left by an earlier session with wider
        limits): either could put anything on the device."""
        allowed = self.limits[limit]
        if level is None:
            raise LimitError(f"{self.name}: {what} is at an unknown level; set a {quantity} (after safe_state() if "
                             "a ramp from the unknown level is refused) before switching the output on")
        if not allowed.min <= level <= allowed.max:
            raise LimitError(f"{self.name}: {what} is at {level:g} {allowed.unit}, outside the limit "
                             f"{allowed.min:g}..{allowed.max:g} {allowed.unit}; set a {quantity} within it before "
                             "switching the output on")

    def _check(self, limit: str, value: float, quantity: str | None = None) -> float:
        return self.limits[limit].check(value, self._what(quantity or limit))

    def _check_array(self, limit: str, values: Any, quantity: str | None = None) -> Any:
        return self.limits[limit].check_array(values, self._what(quantity or limit))

    def _check_switch(self, enabled: bool) -> bool:
        """``enabled`` as a bool; anything but True or False (e.g. the text "off", which is truthy) is refused."""
        if not isinstance(enabled, bool | np.bool_):
            raise LimitError(f"{self.name}: an output is switched with True (on) or False (off), got {enabled!r}")
        return bool(enabled)

    def _check_channel(self, channel: int, n_channels: int) -> int:
        if isinstance(channel, bool) or not isinstance(channel, int | np.integer) or not 1 <= channel <= n_channels:
            raise LimitError(f"{self.name}: channel {channel!r} does not exist; channels are 1..{n_channels}")
        return int(channel)


def require_before_capability(cls: type, mixin: type) -> None:
    """Refuse a class that lists ``mixin`` after its capability class: a mixin that takes the instrument's own
    constructor arguments (a transport, a world) must come first, or the capability's ``__init__`` receives them."""
    if issubclass(cls, Instrument) and cls.__mro__.index(mixin) > cls.__mro__.index(Instrument):
        capability = next((base.__name__ for base in cls.__mro__ if base in Instrument.__subclasses__()),
                          "the capability")
        raise TypeError(f"{cls.__name__}: list {mixin.__name__} before the capability class: "
                        f"class {cls.__name__}({mixin.__name__}, {capability})")


def _as_array(values: Any, name: str, what: str) -> Any:
    """A torch tensor as it is (simulators stay in torch), detached: values sent to a device carry no gradient, and
    a simulator's in-place arithmetic refuses a tensor that requires one; anything else as a float numpy array
    (`as_numbers`, whose error names the instrument ``name`` and ``what``)."""
    if type(values).__module__.startswith("torch"):
        return values.detach() if getattr(values, "requires_grad", False) else values  # detach(): 1 µs a call
    return as_numbers(values, f"{name}: {what}")


#: SCPI's infinity (9.9e37; SCPI 1999, Vol. 1, 7.2.1.5), the least in size of its special values: a level of this
#: size or more, ±infinity or not-a-number (9.91e37) as an instrument answers a level it cannot give, is no present
#: level, where the ramp back to rest would be refused.
SCPI_INFINITY = 9.9e37


def _known_level(level: Any) -> float | None:
    """A present level as a float if it is a finite number; None (unknown) for None, NaN, infinities (SCPI's 9.9e37
    and 9.91e37 among them) and what is no number: a driver's reading of NaN says nothing about the output, and a
    ramp from it is refused (the safe state switches such a channel off first)."""
    try:
        number = real_number(level)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if math.isfinite(number) and abs(number) < SCPI_INFINITY else None


def shape_differs(actual: Sequence[int], shape: tuple[int | None, ...]) -> bool:
    """Whether ``actual`` is not ``shape``, whose None sizes take any size."""
    # zip without strict=, the lengths being compared first: a keyword to zip doubles the cost of this test (1.5 µs
    # against 0.75 µs), which runs on every forward pass and instrument read
    return len(actual) != len(shape) or any(wanted is not None and wanted != size
                                            for wanted, size in zip(shape, actual))  # noqa: B905


def _check_shape(name: str, what: str, array: Any, shape: tuple[int | None, ...]) -> None:
    if shape_differs(array.shape, shape):
        actual = tuple(array.shape)
        wanted = "×".join("N" if s is None else str(s) for s in shape)
        raise LimitError(f"{name}: {what} has shape {'×'.join(map(str, actual)) or 'scalar'}, expected {wanted}")


# ---------------------------------------------------------------------------------------------------------------
class SpatialLightModulator(Instrument):
    """A phase-only SLM of ``shape`` = (rows, cols) pixels with ``bit_depth``-bit gray levels.

    Patterns are phases in radians, within the ``phase_rad`` limit (0..2π by default); the SLM's lookup table
    maps them to gray levels. ``show_sequence`` loads N patterns that are played one per trigger, in step with
    a camera's triggered capture, so a batch costs one upload.
    """

    capability = "spatial light modulator"
    shape: tuple[int, int]
    bit_depth: int
    #: Largest number of patterns one sequence may hold.
    max_sequence: int = 1024

    def hardware_limits(self) -> dict[str, Limit]:
        return {"phase_rad": Limit("rad", 0.0, 2 * math.pi)}

    def show(self, phase_rad: Any) -> None:
        """Display one pattern (rows × cols, radians) until the next call."""
        self._require_connected()
        phase_rad = _as_array(phase_rad, self.name, "pattern")
        _check_shape(self.name, "pattern", phase_rad, self.shape)
        self._show_hw(self._check_array("phase_rad", phase_rad, "pattern phase"))

    def show_sequence(self, phases_rad: Any) -> None:
        """Load N patterns (N × rows × cols, radians) to be shown one per trigger."""
        self._require_connected()
        phases_rad = _as_array(phases_rad, self.name, "sequence")
        _check_shape(self.name, "sequence", phases_rad, (None, *self.shape))
        if not 1 <= len(phases_rad) <= self.max_sequence:
            raise LimitError(f"{self.name}: a sequence holds 1..{self.max_sequence} patterns, got {len(phases_rad)}")
        self._show_sequence_hw(self._check_array("phase_rad", phases_rad, "sequence phase"))

    def _safe_state_hw(self) -> None:
        self._show_hw(np.zeros(self.shape, dtype=np.float32))

    @abstractmethod
    def _show_hw(self, phase_rad: Any) -> None:
        """Display one pattern (rows × cols, radians within the limits) until the next call."""

    @abstractmethod
    def _show_sequence_hw(self, phases_rad: Any) -> None:
        """Load N patterns (N × rows × cols, radians), shown one per external trigger in order."""


#: A camera's area of interest: (top, left, height, width) in sensor pixels.
Roi = tuple[int, int, int, int]


@dataclass(frozen=True)
class Frames:
    """Frames from a camera: ``images`` (N × rows × cols of the AOI, digital numbers), the hardware frame
    ``indices`` (N, consecutive) and the ``exposure_s`` (s) they were taken at."""

    images: Any
    indices: np.ndarray
    exposure_s: float


class Camera(Instrument):
    """An area camera of ``shape`` = (rows, cols) pixels with ``bit_depth``-bit output.

    ``capture(n)`` returns N frames with their hardware frame counter; a gap in the counter or too few frames (a
    dropped frame) raises `FramesDropped` instead of silently shifting every later frame onto the wrong input. With
    ``trigger="external"`` each frame waits for a trigger, e.g. from an SLM playing a sequence.

    ``set_roi(top, left, height, width)`` reads out only that area of interest (AOI, sensor pixels; the "ROI" or
    "AOI" of scientific cameras, which raises their frame rate); frames then have its shape (`frame_shape`).
    ``set_roi(None)`` restores the full frame. A camera that cannot do it raises `DeviceError` for a window. A
    driver leaves ``roi`` matching the camera at connect (reading the camera's AOI, or setting the full frame):
    cameras keep their AOI between sessions, and `capture` refuses frames of another shape.

    ``saturation_dn`` is the level (DN) at which pixels saturate where the full well fills before the ADC's top
    code (a low gain setting); a driver that knows it sets it. None: the ADC's top code, 2^bit_depth − 1.
    """

    capability = "camera"
    shape: tuple[int, int]
    bit_depth: int
    max_frames: int = 1024
    saturation_dn: float | None = None

    def __init__(self, **common: Any):
        super().__init__(**common)
        self.exposure_s: float | None = None
        self.trigger: Literal["software", "external"] = "software"
        #: The area of interest read out, (top, left, height, width) in sensor pixels; None: the full frame.
        self.roi: Roi | None = None

    def hardware_limits(self) -> dict[str, Limit]:
        return {"exposure_s": Limit("s", 10e-6, 1.0)}

    @property
    def full_scale_dn(self) -> float:
        """The highest level (DN) a pixel reads before it saturates: ``saturation_dn``, or the ADC's top code."""
        top = float(2**self.bit_depth - 1)
        return top if self.saturation_dn is None else min(float(self.saturation_dn), top)

    @property
    def frame_shape(self) -> tuple[int, int]:
        """The shape (rows, cols) of the frames `capture` returns now: the AOI's, or the sensor's."""
        return tuple(self.shape) if self.roi is None else (self.roi[2], self.roi[3])  # type: ignore[return-value]

    def set_roi(self, top: int | None, left: int | None = None, height: int | None = None,
                width: int | None = None) -> None:
        """Read out only rows top..top+height−1 and columns left..left+width−1 (sensor pixels); ``set_roi(None)``:
        the full frame."""
        self._require_connected()
        window = (top, left, height, width)
        if all(value is None for value in window):
            roi = None
        else:
            rows, cols = self.shape
            if not all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in window):
                raise LimitError(f"{self.name}: an AOI is four integers (top, left, height, width), got {window!r}")
            top, left, height, width = (int(v) for v in window)  # type: ignore[arg-type]
            if min(top, left) < 0 or min(height, width) < 1 or top + height > rows or left + width > cols:
                raise LimitError(f"{self.name}: AOI of {height}×{width} px at ({top}, {left}) is empty or off the "
                                 f"{rows}×{cols} sensor")
            roi = (top, left, height, width)
        self._set_roi_hw(roi)
        self.roi = roi

    def set_exposure(self, exposure_s: float) -> None:
        """Set the exposure time in seconds; a setting that fails leaves it unknown, so capture waits for another."""
        self._require_connected()
        exposure_s = self._check("exposure_s", exposure_s)
        self.exposure_s = None  # unknown until the camera has taken the new value
        self._set_exposure_hw(exposure_s)
        self.exposure_s = exposure_s

    def set_trigger(self, trigger: Literal["software", "external"]) -> None:
        """``software``: capture starts at once; ``external``: one frame per trigger (e.g. from the SLM)."""
        self._require_connected()
        if not isinstance(trigger, str) or trigger not in ("software", "external"):
            raise LimitError(f"{self.name}: trigger must be 'software' or 'external', got {trigger!r}")
        self._set_trigger_hw(trigger)
        self.trigger = trigger

    def capture(self, n_frames: int = 1) -> Frames:
        """Capture ``n_frames`` frames; raises `FramesDropped` if frames are missing (a gap in the frame counter, or
        too few). The frames are the caller's: a driver's may lie in a buffer it fills anew at every capture (a camera
        SDK's), so they are copied, as a crossbar's reads are, in this machine's byte order (`native_copy`)."""
        self._require_connected()
        if isinstance(n_frames, bool) or not isinstance(n_frames, int | np.integer) \
                or not 1 <= n_frames <= self.max_frames:
            raise LimitError(f"{self.name}: n_frames must be an integer in 1..{self.max_frames}, got {n_frames!r}")
        if self.exposure_s is None:
            raise DeviceError(f"{self.name}: exposure unknown; call set_exposure() before capture()")
        images, indices = self._capture_hw(int(n_frames))
        if isinstance(images, str | bytes) or np.ndim(images) != 3:  # None, a scalar, one frame without its axis
            raise DeviceError(f"{self.name}: the frames are {brief(images)}, not an array of frames × rows × "
                              "columns")
        indices = self._frame_indices(indices)
        if len(indices) != len(images) or len(images) > n_frames:
            raise DeviceError(f"{self.name}: asked for {n_frames} frame(s), got {len(images)} with "
                              f"{len(indices)} frame indices")
        gaps = np.nonzero(np.diff(indices) != 1)[0]
        if len(gaps):
            at = gaps[0]
            raise FramesDropped(f"{self.name}: frame(s) dropped after frame index {indices[at]} "
                                f"(next index {indices[at + 1]})")
        if len(images) < n_frames:
            raise FramesDropped(f"{self.name}: asked for {n_frames} frame(s), got {len(images)}")
        if tuple(np.shape(images)[1:]) != self.frame_shape:
            raise DeviceError(f"{self.name}: frames of {tuple(np.shape(images)[1:])} px, expected {self.frame_shape}")
        if not is_hils(type(self)._capture_hw.__module__):  # hil's simulators return new tensors
            images = images.detach().clone() if hasattr(images, "detach") else native_copy(images)
        return Frames(images=images, indices=indices, exposure_s=self.exposure_s)

    def _frame_indices(self, indices: Any) -> np.ndarray:
        """A driver's frame counter values as a 1-D int64 array; what is not one of whole numbers (1.5 would be
        truncated to 1, NaN, None, text, beyond int64) is a `DeviceError`."""
        try:
            raw = np.asarray(indices)
        except (TypeError, ValueError):  # ragged
            raw = np.asarray(None)
        if raw.ndim == 1 and raw.dtype.kind in "iuf":
            with np.errstate(invalid="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                whole = raw.astype(np.int64)
            if np.isfinite(raw).all() and (whole == raw).all():
                return whole
        raise DeviceError(f"{self.name}: frame indices {brief(indices)} are not integers")

    def _safe_state_hw(self) -> None:
        """Cameras hold no dangerous state; stop any acquisition."""

    def _snapshot_hw(self) -> dict[str, Any]:
        return {"exposure_s": self.exposure_s, "trigger": self.trigger, "shape": list(self.shape),
                "roi": None if self.roi is None else list(self.roi), "bit_depth": self.bit_depth,
                "saturation_dn": self.saturation_dn}

    @abstractmethod
    def _set_exposure_hw(self, exposure_s: float) -> None:
        """Set the exposure time (s), within the limits."""

    def _set_trigger_hw(self, trigger: str) -> None:
        """Select ``trigger``. A camera without this hook has no trigger input: it captures at once, as in "software"
        mode, which it therefore takes, and refuses "external"."""
        if trigger != "software":
            raise DeviceError(f"{self.name}: trigger mode {trigger!r} is not supported by this camera")

    def _set_roi_hw(self, roi: Roi | None) -> None:
        """Apply an AOI (top, left, height, width), or the full frame for None (all a camera without AOI does)."""
        if roi is not None:
            raise DeviceError(f"{self.name}: AOI not supported by this camera; use set_roi(None) (full frame)")

    @abstractmethod
    def _capture_hw(self, n_frames: int) -> tuple[Any, Any]:
        """Return (images N × `frame_shape`, frame indices N) of frames exposed after this call: frames left over
        from a capture that failed are discarded first, since a system that captures again would pair them with the
        wrong patterns (their indices run on)."""


class AnalogOutput(Instrument):
    """Voltage outputs on ``n_channels`` channels (1-based): DC levels, and waveforms played on trigger where the
    driver writes the waveform hooks.

    DC changes larger than the ``voltage_v`` limit's ``max_step`` are ramped, each step checked; a ramp from an
    unknown level is refused. ``load_waveform`` checks every sample; ``play`` starts loaded waveforms once. A
    loaded waveform holds its channel at its first sample before and after each play (its level, as a DC level
    is); a live channel further than ``max_step`` from that sample is ramped there before the waveform is loaded,
    and the step to it is paced by ``ramp_rate`` as a ramp's steps are.
    A DC level (`set_voltage`, the safe state) replaces the loaded waveform. Within a waveform the samples are
    the caller's: ``max_step`` does not apply between them. A driver sets ``n_channels`` and ``waveform_points``
    (the fewest and most samples its memory takes).

    Waveforms are optional. An output of DC levels only (a microcontroller's DAC, a multichannel DC source) leaves
    both waveform hooks, `_load_waveform_hw` and `_play_hw`, unwritten: `plays_waveforms` is then False, it has
    no ``sample_rate_hz`` limit, `load_waveform` and `play` refuse, and a system that drives an output with
    waveforms refuses it when built. A driver that writes only one of the two is refused when built.
    """

    capability = "analog output"
    n_channels: int = 1
    #: Fewest and most points one waveform may have.
    waveform_points: tuple[int, int] = (2, 1_000_000)

    def __init__(self, **common: Any):
        unwritten = _unwritten_waveform_hooks(type(self))
        if len(unwritten) == 1:
            written = next(hook for hook in WAVEFORM_HOOKS if hook not in unwritten)
            raise ConfigError(f"{type(self).__name__} writes {written} but not {unwritten[0]}: write both to play "
                              "waveforms, or neither for an output of DC levels only", field="driver")
        super().__init__(**common)
        self.level_v: dict[int, float | None] = {}
        self.output_on: dict[int, bool | None] = {}
        self.waveform_samples: dict[int, int] = {}

    def hardware_limits(self) -> dict[str, Limit]:
        volts = {"voltage_v": Limit("V", -10.0, 10.0)}
        return {**volts, "sample_rate_hz": Limit("Hz", 1.0, 1e6)} if self.plays_waveforms else volts

    @property
    def plays_waveforms(self) -> bool:
        """Whether the driver writes the waveform hooks; an output without them sets DC levels only."""
        return not _unwritten_waveform_hooks(type(self))

    def _require_waveforms(self) -> None:
        if not self.plays_waveforms:
            raise DeviceError(f"{self.name}: plays DC levels only ({type(self).__name__} writes no waveform hooks); "
                              "set each level with set_voltage(), or use an analog output that plays waveforms")

    def _connect_hw(self) -> None:
        self.waveform_samples.clear()
        for channel in range(1, self.n_channels + 1):
            self.level_v[channel] = _known_level(self._read_level_hw(channel))
            self.output_on[channel] = self._read_output_hw(channel)

    def set_voltage(self, channel: int, voltage_v: float) -> None:
        """Set a channel's DC level in volts, ramping in steps of at most ``max_step``."""
        self._require_connected()
        channel = self._check_channel(channel, self.n_channels)
        limit = self.limits["voltage_v"]
        steps = limit.ramp(self.level_v.get(channel), voltage_v, self._what(f"channel {channel} voltage"))
        previous = self.level_v.get(channel)
        self.waveform_samples.pop(channel, None)  # a DC level replaces a loaded waveform
        for value in steps:
            self.level_v[channel] = None  # unknown until the instrument has taken the new value
            self._set_level_hw(channel, value)
            self.level_v[channel] = value
            if previous is not None:
                self.clock.sleep(limit.step_interval_s(value - previous))
            previous = value

    def set_output(self, channel: int, enabled: bool) -> None:
        """Switch a channel's output relay on or off; not on while its level is unknown or outside the limits."""
        self._require_connected()
        channel = self._check_channel(channel, self.n_channels)
        enabled = self._check_switch(enabled)
        if enabled:
            self._require_level_within("voltage_v", self.level_v.get(channel), f"channel {channel}", "voltage")
        self.output_on[channel] = None
        self._set_output_hw(channel, bool(enabled))
        self.output_on[channel] = bool(enabled)

    def load_waveform(self, channel: int, samples_v: Any, sample_rate_hz: float) -> None:
        """Load a waveform (volts, one sample per 1/``sample_rate_hz`` s) to be played by `play`; a live channel
        is first ramped to the first sample if it is further than ``max_step`` from it."""
        self._require_connected()
        self._require_waveforms()
        channel = self._check_channel(channel, self.n_channels)
        # a copy (as_numbers returns a float64 array as it is): a driver may keep the samples and upload them at play,
        # when the caller's array may have changed since it was checked here
        samples = np.array(as_numbers(samples_v, f"{self.name}: channel {channel} waveform"))
        low, high = self.waveform_points
        if samples.ndim != 1 or not low <= len(samples) <= high:
            raise LimitError(f"{self.name}: channel {channel} waveform has shape {samples.shape}; the instrument "
                             f"takes 1-D waveforms of {low}..{high} points")
        self._check_array("voltage_v", samples, f"channel {channel} waveform")
        rate = self._check("sample_rate_hz", sample_rate_hz)
        self._check_waveform_hw(channel, samples)
        first, level = float(samples[0]), _known_level(self.level_v.get(channel))
        max_step = self.limits["voltage_v"].max_step
        if self.output_on.get(channel) is not False and max_step is not None and \
                (level is None or abs(first - level) > max_step):
            self.set_voltage(channel, first)
        held = self.level_v.get(channel)
        self.waveform_samples.pop(channel, None)
        try:
            self._load_waveform_hw(channel, samples, rate)
        except BaseException:
            self.level_v[channel] = None  # somewhere between the old level and the waveform's
            raise
        self.waveform_samples[channel] = len(samples)
        self.level_v[channel] = first
        if held is not None:  # the step to the first sample is paced as a ramp's step is
            self.clock.sleep(self.limits["voltage_v"].step_interval_s(first - held))

    def play(self, channels: Sequence[int] | None = None) -> None:
        """Play the loaded waveforms of ``channels`` (all loaded ones by default) once, together; returns when they
        have ended. A play that fails or is interrupted leaves their levels unknown (somewhere in the waveform), so
        the safe state switches them off first."""
        self._require_connected()
        self._require_waveforms()
        if channels is None:
            chosen = sorted(self.waveform_samples)
        elif isinstance(channels, str | bytes) or not isinstance(channels, Iterable) or np.ndim(channels) == 0:
            raise LimitError(f"{self.name}: play takes a list of channels (1..{self.n_channels}), or None for every "
                             f"loaded one; got {channels!r}")
        else:
            chosen = [self._check_channel(channel, self.n_channels) for channel in channels]
            if not chosen:
                raise LimitError(f"{self.name}: play was given no channel; name the channels to play "
                                 f"(1..{self.n_channels}), or None for every loaded one")
        if not chosen:
            raise DeviceError(f"{self.name}: no waveform loaded; call load_waveform() before play()")
        for channel in chosen:
            if channel not in self.waveform_samples:
                raise DeviceError(f"{self.name}: no waveform loaded on channel {channel}; call load_waveform()")
            if chosen.count(channel) > 1:
                raise LimitError(f"{self.name}: channel {channel} given {chosen.count(channel)} times; a play plays "
                                 "each channel once, so name it once")
        try:
            self._play_hw(chosen)
        except BaseException:
            for channel in chosen:
                self.level_v[channel] = None
            raise

    def _safe_state_hw(self) -> None:
        """Ramp every channel to 0 V (the ``voltage_v`` limit's `Limit.rest`: its value nearest 0 V where it excludes
        0 V) and switch it off; a channel at an unknown level is switched off first.

        A channel goes off even if its ramp fails. Every channel is tried even if one fails or is interrupted
        (Ctrl-C); the first failure is raised afterwards.
        """
        first_error: BaseException | None = None
        rest = self.limits["voltage_v"].rest
        for channel in range(1, self.n_channels + 1):
            try:
                if _known_level(self.level_v.get(channel)) is None:
                    self.set_output(channel, False)
                    self.waveform_samples.pop(channel, None)
                    self._set_level_hw(channel, rest)
                    self.level_v[channel] = rest
                else:
                    try:
                        self.set_voltage(channel, rest)
                    finally:
                        self.set_output(channel, False)
            except BaseException as error:
                first_error = first_error or error
        if first_error is not None:
            raise first_error

    def _snapshot_hw(self) -> dict[str, Any]:
        return {"level_v": dict(self.level_v), "output_on": dict(self.output_on),
                "waveform_samples": dict(self.waveform_samples)}

    @abstractmethod
    def _read_level_hw(self, channel: int) -> float | None:
        """The present DC level in volts, or None if the hardware cannot tell."""

    @abstractmethod
    def _read_output_hw(self, channel: int) -> bool | None:
        """Whether the channel's output is on, or None if the hardware cannot tell."""

    @abstractmethod
    def _set_level_hw(self, channel: int, voltage_v: float) -> None:
        """Hold the channel at a DC level (V): one step of a ramp, already checked."""

    @abstractmethod
    def _set_output_hw(self, channel: int, enabled: bool) -> None:
        """Switch the channel's output on (True) or off."""

    def _check_waveform_hw(self, channel: int, samples_v: np.ndarray) -> None:
        """Refuse, before anything is sent or ramped, a waveform this instrument cannot load now (none by
        default)."""

    def _load_waveform_hw(self, channel: int, samples_v: np.ndarray, sample_rate_hz: float) -> None:
        """Load the waveform and hold the channel at its first sample; ``level_v[channel]`` is still the level
        the channel holds now. Unwritten, with `_play_hw`, by an output of DC levels only."""

    def _play_hw(self, channels: list[int]) -> None:
        """Play the loaded waveforms of ``channels`` once, together; each channel then holds its first sample.
        Unwritten, with `_load_waveform_hw`, by an output of DC levels only."""


#: The hooks that play an analog output's waveforms: a driver writes both, or neither for DC levels only.
WAVEFORM_HOOKS = ("_load_waveform_hw", "_play_hw")


def _unwritten_waveform_hooks(cls: type[AnalogOutput]) -> list[str]:
    """The waveform hooks that ``cls`` leaves at `AnalogOutput`'s default."""
    return [hook for hook in WAVEFORM_HOOKS if getattr(cls, hook) is getattr(AnalogOutput, hook)]


class AnalogInput(Instrument):
    """Voltage inputs on ``n_channels`` channels, acquired as records of N samples at a sample rate.

    ``arm`` prepares a record that starts on the next trigger (e.g. an analog output's `play`); ``fetch``
    returns it. ``acquire`` does both with an immediate trigger. Where a lab narrows the ``voltage_v`` limit to
    what the sensor may see, a record that leaves it is a `DeviceError`: the bench went where it must not.
    """

    capability = "analog input"
    n_channels: int = 1
    max_samples: int = 1_000_000

    def __init__(self, **common: Any):
        super().__init__(**common)
        self._armed: tuple[int, float] | None = None

    def hardware_limits(self) -> dict[str, Limit]:
        return {"voltage_v": Limit("V", -10.0, 10.0), "sample_rate_hz": Limit("Hz", 1.0, 1e6)}

    def arm(self, n_samples: int, sample_rate_hz: float) -> None:
        """Prepare a record of ``n_samples`` per channel at ``sample_rate_hz``, started by the next trigger."""
        self._require_connected()
        if isinstance(n_samples, bool) or not isinstance(n_samples, int | np.integer) \
                or not 1 <= n_samples <= self.max_samples:
            raise LimitError(f"{self.name}: n_samples must be an integer in 1..{self.max_samples}, "
                             f"got {n_samples!r}")
        rate = self._check("sample_rate_hz", sample_rate_hz)
        self._armed = None  # an arm that fails leaves no earlier record to fetch
        self._arm_hw(int(n_samples), rate)
        self._armed = (int(n_samples), rate)

    def fetch(self) -> np.ndarray:
        """The armed record, channels × samples in volts; raises `DeviceError` if none was armed. The record is the
        caller's: a driver's may lie in a buffer it fills anew at every record (a DAQ library's), so it is copied, in
        this machine's byte order (`native_copy`: a big-endian block's >f4, which torch refuses)."""
        self._require_connected()
        if self._armed is None:
            raise DeviceError(f"{self.name}: nothing armed; call arm() before fetch()")
        n_samples, _ = self._armed
        self._armed = None
        try:
            record = np.asarray(self._fetch_hw())
        except (TypeError, ValueError) as error:  # ragged
            raise DeviceError(f"{self.name}: record is no array of volts ({error})") from None
        if record.dtype.kind not in "iuf":
            raise DeviceError(f"{self.name}: record holds {record.dtype.name} values, not volts")
        if record.shape != (self.n_channels, n_samples):
            raise DeviceError(f"{self.name}: record has shape {record.shape}, expected "
                              f"{(self.n_channels, n_samples)}")
        if not np.isfinite(record).all():
            raise DeviceError(f"{self.name}: record holds non-finite values")
        if not is_hils(type(self)._fetch_hw.__module__):  # hil's simulators return new arrays
            record = native_copy(record)
        allowed = self.limits["voltage_v"]
        if allowed == self.hardware_limits()["voltage_v"]:
            return record  # the converter's own range: a real one clips there
        low, high = float(record.min()), float(record.max())
        slack = 1e-6 * (allowed.max - allowed.min)  # a reading at the limit, rounded to float32
        if low < allowed.min - slack or high > allowed.max + slack:
            peak = low if low < allowed.min else high
            raise DeviceError(f"{self.name}: the record reaches {peak:g} V, outside the input's limit "
                              f"{allowed.min:g}..{allowed.max:g} V; lower what drives the input or widen its limit")
        return record

    def acquire(self, n_samples: int, sample_rate_hz: float) -> np.ndarray:
        """Arm, trigger at once and fetch: channels × samples in volts."""
        self.arm(n_samples, sample_rate_hz)
        self._trigger_hw()
        return self.fetch()

    def _safe_state_hw(self) -> None:
        """Inputs hold no dangerous state; abort any armed record."""
        self._armed = None

    @abstractmethod
    def _arm_hw(self, n_samples: int, sample_rate_hz: float) -> None:
        """Prepare to record ``n_samples`` per channel at ``sample_rate_hz`` (Hz) from the next trigger."""

    @abstractmethod
    def _trigger_hw(self) -> None:
        """Start the armed record now (a software trigger)."""

    @abstractmethod
    def _fetch_hw(self) -> Any:
        """The armed record: n_channels × n_samples volts."""


@dataclass(frozen=True)
class Readings:
    """Source-measure readings: ``voltage_v``, ``current_a`` and whether the compliance limit was hit, per point."""

    voltage_v: np.ndarray
    current_a: np.ndarray
    in_compliance: np.ndarray


SourceMode = Literal["voltage", "current"]
#: The wait a sweep may take at each point, before it measures.
SWEEP_DELAY_S = Limit("s", 0.0, 10.0)


class SourceMeter(Instrument):
    """A source-measure unit: sources a voltage (or a current), measures both, with a compliance limit.

    Levels are checked against ``voltage_v`` / ``current_a``; level changes larger than ``max_step`` are
    ramped. ``sweep`` runs a list of levels, in one round trip where the instrument has list sweeps (else point
    by point); consecutive points (and the first from the present level) may differ by at most ``max_step``.

    A driver reads at connect (`_connect_hw`, or `ScpiDriver._prepare_hw`) what it can of the present state into
    ``output_on``, ``mode`` and ``level``; what it leaves None is unknown, and the safe state then switches the
    output off before anything else. The compliance is never read: `configure` must set it before sourcing.
    """

    capability = "source-measure unit"
    max_sweep_points: int = 2500

    def __init__(self, **common: Any):
        super().__init__(**common)
        self.mode: SourceMode | None = None
        self.level = None
        self.compliance: float | None = None
        self.nplc: float | None = None
        self.output_on: bool | None = None

    @property
    def level(self) -> float | None:
        """The present source level (V or A); None where unknown: never read, being changed, or set (by a driver's
        reading) to NaN or to what is no number, from which no ramp may start."""
        return self._level

    @level.setter
    def level(self, value: Any) -> None:
        self._level = _known_level(value)

    def hardware_limits(self) -> dict[str, Limit]:
        return {"voltage_v": Limit("V", -200.0, 200.0), "current_a": Limit("A", -1.0, 1.0),
                "nplc": Limit("PLC", 0.01, 10.0)}

    def _limit_of(self, mode: SourceMode) -> str:
        if not isinstance(mode, str) or mode not in ("voltage", "current"):
            raise LimitError(f"{self.name}: source mode must be 'voltage' or 'current', got {mode!r}")
        return "voltage_v" if mode == "voltage" else "current_a"

    def configure(self, mode: SourceMode, compliance: float, nplc: float = 1.0) -> None:
        """Choose what to source, the compliance (A when sourcing voltage, V when sourcing current; a magnitude,
        and ± it must lie within the limit) and the integration time in power-line cycles. Changing the mode first
        ramps a live output to zero (`Limit.rest`) and switches it off; a live output at an unknown level is switched
        off before its level is set to zero."""
        self._require_connected()
        compliance_limit = "current_a" if self._limit_of(mode) == "voltage_v" else "voltage_v"
        compliance = abs(self._check(compliance_limit, compliance, "compliance"))
        if compliance == 0:
            raise LimitError(f"{self.name}: compliance must be non-zero")
        allowed = self.limits[compliance_limit]
        if not allowed.min <= -compliance <= compliance <= allowed.max:
            quantity = "voltage" if compliance_limit == "voltage_v" else "current"
            raise LimitError(f"{self.name}: a compliance of {compliance:g} {allowed.unit} lets the {quantity} reach "
                             f"±{compliance:g} {allowed.unit}, outside the limit {allowed.describe()}; give a smaller "
                             "compliance, or a lab limit that holds both signs")
        nplc = self._check("nplc", nplc)
        if mode != self.mode or self.level is None:  # the level goes to rest: from an unknown one, output off
            if self.output_on is not False:
                if self.mode is not None and self.level is not None:
                    self._ramp_to(self._rest())
                self.set_output(False)
            self.level = None
        self._configure_hw(mode, compliance, nplc)
        self.mode, self.compliance, self.nplc = mode, compliance, nplc
        if self.level is None:
            rest = self._rest()
            self._set_level_hw(rest)
            self.level = rest

    def set_level(self, level: float) -> None:
        """Set the source level (V or A by mode), ramping in steps of at most ``max_step``."""
        self._require_configured()
        self._ramp_to(level)

    def _rest(self, mode: SourceMode | None = None) -> float:
        """The level of the safe state in ``mode`` (default: the present one): 0, or the allowed value nearest it
        (`Limit.rest`)."""
        return self.limits[self._limit_of(mode or self.mode)].rest  # type: ignore[arg-type]

    def _ramp_to(self, level: float) -> None:
        """Ramp the source from its known level to ``level`` in the present mode."""
        limit = self.limits[self._limit_of(self.mode)]  # type: ignore[arg-type]
        previous = self.level
        for value in limit.ramp(self.level, level, self._what(f"source {self.mode}")):
            self.level = None  # unknown until the instrument has taken the new value
            self._set_level_hw(value)
            self.level = value
            if previous is not None:
                self.clock.sleep(limit.step_interval_s(value - previous))
            previous = value

    def set_output(self, enabled: bool) -> None:
        """Switch the output relay on (only once configured: the compliance must be known, and the level within the
        limits) or off."""
        enabled = self._check_switch(enabled)
        if enabled:
            self._require_configured()
            self._require_level_within(self._limit_of(self.mode), self.level,  # type: ignore[arg-type]
                                       f"the {self.mode} source", "level")
        self._require_connected()
        self.output_on = None
        self._set_output_hw(bool(enabled))
        self.output_on = bool(enabled)

    def measure(self) -> Readings:
        """One reading at the present level (arrays of length 1)."""
        self._require_configured()
        return self._checked_readings(self._measure_hw(), 1, "_measure_hw")

    def sweep(self, levels: Any, delay_s: float = 0.0) -> Readings:
        """Source each level in turn and measure after ``delay_s`` (s): in one round trip where the instrument has
        list sweeps, else point by point (`_sweep_hw`). Returns `Readings` of one point per level.

        The output must be on. Consecutive points (the first from the present level) may differ by at most
        ``max_step``, and ``delay_s`` (`SWEEP_DELAY_S`) must space them at ``ramp_rate`` or slower. Afterwards the
        source stays at the last level; after a failed sweep the level is unknown (the safe state then switches off
        first).
        """
        self._require_configured()
        levels = as_numbers(levels, f"{self.name}: sweep levels")
        if levels.ndim != 1 or not 1 <= len(levels) <= self.max_sweep_points:
            raise LimitError(f"{self.name}: a sweep takes 1..{self.max_sweep_points} levels, got shape "
                             f"{levels.shape}")
        name = self._limit_of(self.mode)  # type: ignore[arg-type]
        self._check_array(name, levels, "sweep level")
        limit = self.limits[name]
        delay_s = SWEEP_DELAY_S.check(delay_s, self._what("sweep delay_s"))
        if limit.max_step is not None:
            if self.level is None:
                raise LimitError(f"{self.name}: the present level is unknown, so the sweep's first point could "
                                 "jump; call set_level() first")
            jumps = np.abs(np.diff(np.concatenate([[self.level], levels])))
            if (jumps > limit.max_step * (1 + 1e-9)).any():
                at = int(np.argmax(jumps > limit.max_step * (1 + 1e-9)))
                raise LimitError(f"{self.name}: sweep point {at} jumps {jumps[at]:g} {limit.unit}, more than "
                                 f"max_step {limit.max_step:g}; add intermediate points")
            slowest = limit.step_interval_s(float(jumps.max()))
            if delay_s < slowest * (1 - 1e-9):
                raise LimitError(f"{self.name}: sweep steps of up to {jumps.max():g} {limit.unit} every "
                                 f"{delay_s:g} s exceed ramp_rate {limit.ramp_rate:g} {limit.unit}/s; use a "
                                 f"delay of at least {slowest:g} s")
        if not self.output_on:
            raise DeviceError(f"{self.name}: output is off; call set_output(True) before sweep()")
        self._check_sweep_hw(levels, delay_s)
        self.level = None  # unknown until the sweep has completed
        readings = self._sweep_hw(levels, delay_s)
        self.level = float(levels[-1])
        return self._checked_readings(readings, len(levels), "_sweep_hw")

    def _checked_readings(self, readings: Any, points: int, hook: str) -> Readings:
        """A driver's `Readings` of ``points`` points, its fields as new float (voltage, current) and bool arrays (a
        driver's may lie in buffers it reuses); anything else is a `DeviceError` naming the instrument and ``hook``."""
        if not isinstance(readings, Readings):
            raise DeviceError(f"{self.name}: {hook} returned {type(readings).__name__}, not Readings; fix the "
                              f"driver's {hook}")
        try:
            fields = [np.array(readings.voltage_v, dtype=float), np.array(readings.current_a, dtype=float),
                      np.array(readings.in_compliance, dtype=bool)]
        except (TypeError, ValueError):
            raise DeviceError(f"{self.name}: {hook} returned readings that are not numbers; fix the driver's "
                              f"{hook}") from None
        shapes = [field.shape for field in fields]
        if any(shape != (points,) for shape in shapes):
            got = ", ".join("×".join(map(str, shape)) or "scalar" for shape in shapes)
            raise DeviceError(f"{self.name}: {hook} returned readings of {got} points (voltage, current, "
                              f"compliance), expected {points} each; fix the driver's {hook}")
        return Readings(*fields)

    def _require_configured(self) -> None:
        """Sourcing needs the mode and the compliance set by this session: a compliance left on the instrument
        by another session is unknown, and could let the device under test take any current."""
        self._require_connected()
        if self.mode is None or self.compliance is None:
            raise DeviceError(f"{self.name}: not configured; call configure(mode, compliance) first")

    def _safe_state_hw(self) -> None:
        """Ramp the source to zero (`Limit.rest`: the allowed level nearest zero where the limit excludes it), then
        switch the output off (even if the ramp fails); at an unknown level, switch off first."""
        if self.mode is not None and self.level is not None:
            try:
                self._ramp_to(self._rest())
            finally:
                self.set_output(False)
        else:
            self.set_output(False)
            if self.mode is not None:
                rest = self._rest()
                self._set_level_hw(rest)
                self.level = rest

    def _snapshot_hw(self) -> dict[str, Any]:
        return {"mode": self.mode, "level": self.level, "compliance": self.compliance, "nplc": self.nplc,
                "output_on": self.output_on}

    @abstractmethod
    def _configure_hw(self, mode: SourceMode, compliance: float, nplc: float) -> None:
        """Source ``mode`` with the compliance (A when sourcing voltage, V when sourcing current, a positive
        magnitude) and the integration time (power-line cycles); the base class then sets the level to 0 if it was
        unknown. Values are already checked."""

    @abstractmethod
    def _set_level_hw(self, level: float) -> None:
        """Source ``level`` (V or A by mode): one step of a ramp, already checked against the limits."""

    @abstractmethod
    def _set_output_hw(self, enabled: bool) -> None:
        """Close (True) or open the output relay."""

    @abstractmethod
    def _measure_hw(self) -> Readings:
        """One reading at the present level: `Readings` of length 1 with the voltage (V) and the current (A), and
        whether the compliance limited the source (False if the instrument cannot tell)."""

    def _check_sweep_hw(self, levels: np.ndarray, delay_s: float) -> None:
        """Refuse, before anything is sent, a sweep this instrument cannot run (none by default)."""

    def _sweep_hw(self, levels: np.ndarray, delay_s: float) -> Readings:
        """Point by point, for an instrument without list sweeps: set each level, wait ``delay_s``, measure (a round
        trip per point). A driver whose instrument has list sweeps overrides this to run one in a round trip. Each
        point's reading is checked as `measure`'s is, so that a slip is said at the driver's ``_measure_hw``."""
        points = []
        for level in levels:
            self._set_level_hw(float(level))
            self.clock.sleep(delay_s)
            points.append(self._checked_readings(self._measure_hw(), 1, "_measure_hw"))
        return Readings(*(np.concatenate([getattr(p, field) for p in points])
                          for field in ("voltage_v", "current_a", "in_compliance")))


class CrossbarArray(Instrument):
    """A crossbar of ``shape`` = (rows, cols) programmable conductances.

    ``program`` writes target conductances (siemens, within ``conductance_s``); ``read`` applies many input
    vectors of row voltages (batch × rows, within ``read_voltage_v``) and returns the column currents
    (batch × cols, amperes), in one round trip; ``read_pairs`` returns the differences of adjacent column pairs
    (batch × pairs, amperes), the read-out of weights held as device pairs.
    """

    capability = "crossbar array"
    shape: tuple[int, int]
    max_batch: int = 4096
    #: Which system programmed the array last (its token; None: unknown), so that systems sharing one array each
    #: program it again where another has since.
    programmed_by: str | None = None

    def hardware_limits(self) -> dict[str, Limit]:
        return {"conductance_s": Limit("S", 0.0, 1e-3), "read_voltage_v": Limit("V", -0.5, 0.5)}

    def program(self, conductances_s: Any) -> None:
        """Program every device to a target conductance (rows × cols, siemens)."""
        self._require_connected()
        conductances_s = _as_array(conductances_s, self.name, "conductances")
        _check_shape(self.name, "conductances", conductances_s, self.shape)
        self._program_hw(self._check_array("conductance_s", conductances_s, "conductance"))

    def read(self, voltages_v: Any) -> Any:
        """Column currents (batch × cols, A) for row voltages (batch × rows, V): a new float array or tensor, the
        caller's to modify in place, as `read_pairs` gives. A driver's `_read_hw` may return a buffer it reuses (or
        one decoded from its reply's bytes, read-only), so what it returns is checked and copied; a reply of another
        shape, or not of numbers, is a `DeviceError` naming it."""
        voltages_v = self._checked_voltages(voltages_v)
        currents = self._read_hw(voltages_v)
        if is_hils(type(self)._read_hw.__module__):  # hil's simulators: new tensors
            return currents
        return self._currents(currents, (voltages_v.shape[0], self.shape[1]), "column currents", "_read_hw",
                              copy=True)

    def read_pairs(self, voltages_v: Any, pairs: int) -> Any:
        """Differential read-out of the first ``pairs`` column pairs: ``I_2j − I_2j+1`` (batch × pairs, A) for row
        voltages (batch × rows, V), the output of weights held as device pairs on adjacent columns. A new array,
        the caller's to modify in place: a driver's own `_read_pairs_hw` may return a buffer it keeps (or one
        decoded from its reply's bytes), so what it returns is checked and copied."""
        if self.shape[1] < 2:
            raise LimitError(f"{self.name}: a differential read needs a pair of columns; the crossbar has "
                             f"{self.shape[1]}: read it with read()")
        if not (type(pairs) is int or isinstance(pairs, np.integer)) or not 1 <= pairs <= self.shape[1] // 2:  # no bool
            raise LimitError(f"{self.name}: a differential read takes 1..{self.shape[1] // 2} column pairs "
                             f"({self.shape[1]} columns), got {pairs!r}")
        voltages_v = self._checked_voltages(voltages_v)
        differences = self._read_pairs_hw(voltages_v, int(pairs))
        if is_hils(type(self)._read_pairs_hw.__module__):  # the default's subtraction and hil's simulators: new arrays
            return differences
        return self._currents(differences, (voltages_v.shape[0], int(pairs)), "pair differences", "_read_pairs_hw",
                              copy=True)

    def _checked_voltages(self, voltages_v: Any) -> Any:
        """Read voltages (batch × rows) as `read` takes them, refused outside the shape, batch and limits."""
        self._require_connected()
        voltages_v = _as_array(voltages_v, self.name, "read voltages")
        _check_shape(self.name, "read voltages", voltages_v, (None, self.shape[0]))
        vectors = voltages_v.shape[0]  # not len(): a Python-level method on a tensor
        if not 1 <= vectors <= self.max_batch:
            raise LimitError(f"{self.name}: a read takes 1..{self.max_batch} vectors, got {vectors}")
        return self._check_array("read_voltage_v", voltages_v, "read voltage")

    def _safe_state_hw(self) -> None:
        """Conductances are non-volatile and row drivers idle at 0 V between reads: nothing to undo."""

    @abstractmethod
    def _program_hw(self, conductances_s: Any) -> None:
        """Program every device (rows × cols, S, within the limits)."""

    @abstractmethod
    def _read_hw(self, voltages_v: Any) -> Any:
        """Column currents (batch × cols, A) for row voltages (batch × rows, V, within the limits)."""

    def _read_pairs_hw(self, voltages_v: Any, pairs: int) -> Any:
        """``I_2j − I_2j+1`` (batch × pairs, A) for row voltages (within the limits). Default: every column read
        (`_read_hw`), then subtracted; a chip that subtracts its pairs before digitising them, or a simulator that
        can compute the differences alone, overrides it (a driver's may return a buffer it reuses: `read_pairs`
        hands its caller a copy)."""
        currents = self._currents(self._read_hw(voltages_v), (voltages_v.shape[0], self.shape[1]), "column currents",
                                  "_read_hw")
        return pair_differences(currents, pairs)

    def _currents(self, currents: Any, expected: tuple[int, int], what: str, hook: str, copy: bool = False) -> Any:
        """A driver's ``what`` (``expected`` shape, A) as a float array, as it is (a float numpy array or tensor)
        or converted; a copy where ``copy``. Anything else is a `DeviceError` naming the instrument and ``hook``."""
        dtype = getattr(currents, "dtype", None)  # a torch dtype says is_floating_point, a numpy one its kind
        floats = getattr(dtype, "is_floating_point", False) is True or getattr(dtype, "kind", "") == "f"
        tensor = hasattr(currents, "detach")
        if floats and tuple(currents.shape) == expected and (tensor or not copy):
            return currents.detach().clone() if copy else currents
        try:  # a list, integers, booleans, a numpy copy (in native byte order: torch takes no other)
            converted = np.array(currents, dtype=float)
        except (TypeError, ValueError, RuntimeError):
            returned = type(currents).__name__ + ("" if dtype is None else f" of {dtype}")
            raise DeviceError(f"{self.name}: a read returned {returned}, not {what}; fix the driver's {hook}") from None
        if converted.shape != expected:
            raise DeviceError(f"{self.name}: a read returned shape {tuple(converted.shape)}, expected "
                              f"{expected[0]}×{expected[1]} {what}; fix the driver's {hook}")
        return converted
