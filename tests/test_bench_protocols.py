"""The same protocol on the simulator and on the bench: the experiments of a system that real drivers can serve run
with only the lab file changed, its instruments the Keysight 33500B's driver and a digitiser's, at TCP resources
served by their emulators on 127.0.0.1 (`tests.analog_bench`), nothing simulated in the lab file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import yaml

from hil.cli import main
from hil.lab import Lab
from hil.systems.optical import OpticalSystem
from hil.systems.oscillator import OscillatorSystem
from hil.systems.resistive import ResistiveNetworkSystem
from simulators.analog import SimulatedAnalogInput, SimulatedAnalogOutput
from simulators.optical import OpticalTable, SimulatedCamera, SimulatedSLM
from simulators.oscillator import OscillatorNetwork
from simulators.resistive import ResistiveNetwork
from tests.analog_bench import analog_bench, bench_lab

REPO = Path(__file__).resolve().parents[1]
#: The default lab's oscillator settings, with a shorter ring-down (its residue under 1 %), for a short test.
OSCILLATOR = "{n_in: 12, n_params: 12, n_windows: 2, gap_s: 0.05, sample_rate_hz: 4000}"


def small(experiment: str, lab: Path, root: Path) -> Path:
    """``experiment`` with its lab replaced and its sizes cut to a few device calls; returns the protocol's path."""
    protocol = yaml.safe_load((REPO / "experiments" / f"{experiment}.yaml").read_text())
    protocol.update(lab=str(lab), output={"root": str(root / "runs")}, evaluation={"every_epoch": False})
    protocol["dataset"].update(limit=8, test_fraction=0.05)
    protocol["training"].update(epochs=1, batch_size=8)
    protocol["twin"].update(collect={"thetas": 2, "inputs_per_theta": 4, "repeats": 2, "repeat_thetas": 1},
                            fidelity={"directions": 1, "repeats": 1})
    protocol["twin"]["fit"].update(epochs=1)
    root.mkdir()
    path = root / f"{experiment}.yaml"
    path.write_text(yaml.safe_dump(protocol))
    return path


def test_the_oscillator_experiments_run_on_the_bench_drivers_with_only_the_lab_changed(tmp_path, capsys) -> None:
    """Each oscillator experiment passes hil check over the real drivers, and physics-aware training (which also uses
    the device in training) runs: the device time measured, the AWG's channel left off at 0 V."""
    with analog_bench(OscillatorNetwork(seed=0)) as (awg, daq, emulator):
        lab = bench_lab(tmp_path / "lab.yaml", awg, daq, "oscillator", OSCILLATOR)
        for experiment in ("oscillator_insilico_vowels", "oscillator_pat_vowels"):
            protocol = small(experiment, lab, tmp_path / experiment)
            assert main(["check", str(protocol)]) == 0
        assert main(["run", str(protocol)]) == 0, capsys.readouterr().err
        summary = next((tmp_path / experiment / "runs").glob("*/report/summary.md")).read_text()
        assert "device time (measured: the wall time of its device calls)" in summary
        assert not emulator.channels[1].output_on and emulator.channels[1].offset_emf_v == 0


def test_the_oscillator_reads_the_first_channels_of_an_input_with_more_than_it_senses(tmp_path) -> None:
    """A DAQ card of 8 channels, the 4 sensors on its first: the system was refused ('daq has 8 channels but sensed
    lists 4 oscillators'), as the simulated input always has exactly one channel per sensed oscillator."""
    x, theta = torch.linspace(-1, 1, 24).reshape(2, 12), torch.zeros(12)
    outputs = []
    for channels in (4, 8):
        with analog_bench(OscillatorNetwork(preset="ideal", seed=0), channels=channels) as (awg, daq, _):
            lab = bench_lab(tmp_path / f"lab{channels}.yaml", awg, daq, "oscillator", OSCILLATOR, channels)
            with Lab.load(lab).open() as opened:
                outputs.append(opened.system("oscillator")(x, theta))
    assert outputs[1].shape == (2, 8)
    torch.testing.assert_close(outputs[1], outputs[0])


def test_the_oscillator_on_the_bench_drivers_gives_what_it_gives_on_the_simulated_instruments(tmp_path) -> None:
    """The same x and θ on an ideal network give the same outputs through the 33500B's driver (its float32 block
    scaled by amplitude and offset, a burst per call) as through the simulated output and input."""
    g = torch.Generator().manual_seed(0)
    x, theta = 2 * torch.rand(3, 12, generator=g) - 1, 2 * torch.rand(12, generator=g) - 1
    world = OscillatorNetwork(preset="ideal", seed=0)
    simulated = OscillatorSystem({"output": SimulatedAnalogOutput(world, name="ao").connect(),
                                  "input": SimulatedAnalogInput(world, name="ai").connect()},
                                 **yaml.safe_load(OSCILLATOR))
    with analog_bench(OscillatorNetwork(preset="ideal", seed=0)) as (awg, daq, _):
        lab = bench_lab(tmp_path / "lab.yaml", awg, daq, "oscillator", OSCILLATOR)
        with Lab.load(lab).open() as opened:
            torch.testing.assert_close(opened.system("oscillator")(x, theta), simulated(x, theta))


class BigEndianInput(SimulatedAnalogInput):
    """A digitiser's driver that reads its record as a binary block in the instrument's byte order, big-endian
    (IEEE 488.2's default, ``FORM:BORD NORM``), as `hil.transport.Transport.query_binary(..., big_endian=True)` and
    pyvisa return it: an array of dtype >f4."""

    def _fetch_hw(self) -> np.ndarray:
        return super()._fetch_hw().astype(">f4")


class BigEndianCamera(SimulatedCamera):
    """A camera's driver that reads its frames as 16-bit words in the camera's byte order, big-endian (>u2)."""

    words = ">u2"

    def _capture_hw(self, n_frames: int) -> tuple[np.ndarray, np.ndarray]:
        images, indices = super()._capture_hw(n_frames)
        return np.asarray(images).astype(self.words), indices


class NativeCamera(BigEndianCamera):
    """The same frames in this machine's byte order."""

    words = "=u2"


def test_readings_in_the_instruments_byte_order_give_what_the_simulated_instruments_give() -> None:
    """The resistive network and the optical system raised torch's TypeError ('given numpy array has byte order
    different from the native byte order') for a record or frames of a big-endian binary block, which a simulated
    instrument never returns."""
    world = ResistiveNetwork(preset="ideal")
    output = SimulatedAnalogOutput(world, name="ao").connect()
    network = ResistiveNetworkSystem({"output": output, "input": BigEndianInput(world, name="ai").connect()})
    plain = ResistiveNetworkSystem({"output": output, "input": SimulatedAnalogInput(world, name="ai").connect()})
    x, theta = torch.rand(5, network.n_in), torch.full((network.n_params,), 1.2)
    torch.testing.assert_close(network(x, theta), plain(x, theta))
    optical = []
    for camera in (BigEndianCamera, NativeCamera):
        table = OpticalTable(preset="ideal")
        system = OpticalSystem({"slm": SimulatedSLM(table, name="slm").connect(),
                                "camera": camera(table, name="camera").connect()})
        system.calibrate()
        optical.append(system(torch.rand(3, system.n_in, generator=torch.Generator().manual_seed(0)),
                              torch.zeros(system.n_params)))
    torch.testing.assert_close(*optical)
