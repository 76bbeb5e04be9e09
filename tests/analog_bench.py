"""A bench of real drivers for the systems on an analog output and input, served over TCP on 127.0.0.1: the
Keysight 33500B's emulator drives a simulated world (an oscillator network, a resistive network) and a digitiser of a
line protocol of its own records the world's response, as a DAQ card wired to the same bench would. The 33500B's
real driver and this digitiser's driver then run a protocol with nothing simulated in the lab file."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hil.errors import DeviceError
from hil.instruments import AnalogInput
from hil.limits import Limit
from hil.transport import Transport, definite_block
from simulators.analog import AnalogWorld
from simulators.emulators.keysight_33500b import Keysight33500BEmulator
from simulators.emulators.server import TcpServer

#: The digitiser's input range (V) and fastest sample clock (Hz).
RANGE_V = 10.0
MAX_RATE_HZ = 1e6


class DigitiserEmulator:
    """A digitiser whose channels read ``world``'s inputs, driven by ``awg``'s channel ``channel`` (world output 0):
    ``ARM n rate`` arms a record of n samples per channel, started by the AWG's next burst or by ``TRIG``;
    ``FETCH?`` returns it channel after channel as a definite-length block of big-endian float32 (IEEE 488.2's
    default byte order; ``ERR`` if none was armed or triggered); ``*IDN?``
    identifies. A setting answers ``OK``. A record longer than the burst sees the burst's last level held. Of its
    ``channels``, those beyond the world's inputs are unwired and read 0 V."""

    def __init__(self, awg: Keysight33500BEmulator, world: AnalogWorld, channel: int = 1, channels: int = 4):
        self.awg, self.world, self.channel, self.channels = awg, world, channel, channels
        self.armed: tuple[int, float, int] | None = None  # samples, rate, bursts fired when armed
        self.triggered = False

    def handle(self, message: bytes) -> bytes:
        words = message.decode().split()
        if words == ["*IDN?"]:
            return b"ACME,DIG4,0001,1.0"
        if words[:1] == ["ARM"] and len(words) == 3:
            self.armed, self.triggered = (int(words[1]), float(words[2]), self.awg._fired), False
            return b"OK"
        if words == ["TRIG"] and self.armed is not None:
            self.triggered = True
            return b"OK"
        if words == ["FETCH?"] and self.armed is not None:
            return self._record()
        return b"ERR"

    def _record(self) -> bytes:
        n_samples, rate, fired = self.armed  # type: ignore[misc]
        self.armed = None
        bursts = [p for p in self.awg.played[len(self.awg.played) - (self.awg._fired - fired):]
                  if p.channel == self.channel]
        if bursts:
            drive = np.asarray(bursts[0].volts_v, dtype=np.float32)
            if abs(bursts[0].sample_rate_hz - rate) > 1e-9 * rate:
                return b"ERR sample rates differ"
        elif self.triggered:
            drive = np.zeros(0, dtype=np.float32)
        else:
            return b"ERR not triggered"
        held = drive[-1] if len(drive) else 0.0
        drive = np.concatenate([drive, np.full(max(0, n_samples - len(drive)), held, np.float32)])[:n_samples]
        drive_v = torch.zeros(self.world.n_outputs, n_samples)
        drive_v[0] = torch.as_tensor(drive)
        response = torch.zeros(self.channels, n_samples)
        response[: self.world.n_inputs] = self.world.respond(drive_v, rate).clamp(-RANGE_V, RANGE_V)
        self.world.clock.sleep(n_samples / rate)  # the world's state moves on by the record's time
        return definite_block(response.reshape(-1).numpy(), "f", big_endian=True)


class Digitiser(AnalogInput):
    """The digitiser's driver: `DigitiserEmulator`'s protocol, ``channels`` channels of ±10 V."""

    def __init__(self, transport: Transport, *, channels: int = 4, **common: Any):
        self.transport, self.n_channels = transport, channels
        super().__init__(**common)

    def hardware_limits(self) -> dict[str, Limit]:
        return {"voltage_v": Limit("V", -RANGE_V, RANGE_V), "sample_rate_hz": Limit("Hz", 1.0, MAX_RATE_HZ)}

    def _connect_hw(self) -> None:
        self.transport.open()
        self._identity = self.transport.query("*IDN?")
        super()._connect_hw()

    def _close_hw(self) -> None:
        self.transport.close()

    def _identify_hw(self) -> str:
        return self._identity

    def _send(self, command: str) -> None:
        reply = self.transport.query(command)
        if reply != "OK":
            raise DeviceError(f"{self.name}: {command!r} was answered {reply!r}")

    def _arm_hw(self, n_samples: int, sample_rate_hz: float) -> None:
        self._n_samples = n_samples
        self._send(f"ARM {n_samples} {sample_rate_hz!r}")

    def _trigger_hw(self) -> None:
        self._send("TRIG")

    def _fetch_hw(self) -> np.ndarray:
        """The record as the block holds it: big-endian float32 (>f4), as pyvisa returns it."""
        return self.transport.query_binary("FETCH?", "f", big_endian=True).reshape(self.n_channels, -1)


@contextlib.contextmanager
def analog_bench(world: AnalogWorld, channels: int = 4) -> Iterator[tuple[str, str, Keysight33500BEmulator]]:
    """Serve a 33500B emulator and a digitiser of ``channels`` reading ``world`` as it drives it; yields both
    resources and the AWG's emulator."""
    awg = Keysight33500BEmulator()
    with TcpServer(awg) as awg_server, TcpServer(DigitiserEmulator(awg, world, channels=channels)) as daq_server:
        yield awg_server.resource, daq_server.resource, awg


def bench_lab(path: Path, awg: str, daq: str, system: str, settings: str, channels: int = 4) -> Path:
    """Write a lab file at ``path`` of the two instruments at their resources (the digitiser of ``channels``) and one
    system of ``system`` kind on them, with ``settings`` (YAML flow text)."""
    path.write_text(f"instruments:\n"
                    f"  awg:\n    driver: keysight_33500b\n    resource: '{awg}'\n    timeout_s: 10\n"
                    f"    limits: {{voltage_v: {{min: -2.5, max: 2.5}}}}\n"
                    f"  daq: {{driver: '{__name__}:Digitiser', resource: '{daq}', timeout_s: 10, "
                    f"settings: {{channels: {channels}}}}}\n"
                    f"systems:\n  {system}:\n    kind: {system}\n    instruments: {{output: awg, input: daq}}\n"
                    f"    settings: {settings}\n")
    return path


