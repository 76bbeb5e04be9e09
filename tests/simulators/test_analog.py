"""The generic simulated analog output and input, on a world that is a voltage divider with a delay."""

from typing import ClassVar

import numpy as np
import pytest
import torch
from pydantic import Field

from hil.config import Strict
from hil.errors import DeviceError
from simulators.analog import AnalogWorld, ConverterConfig, SimulatedAnalogInput, SimulatedAnalogOutput


class DividerConfig(Strict):
    converters: ConverterConfig = Field(default_factory=ConverterConfig)


class Divider(AnalogWorld):
    """Input k sees half of output k, one sample late."""

    kind = "divider"
    Config = DividerConfig
    presets: ClassVar[dict[str, dict]] = {
        "realistic": {}, "ideal": {"converters": {"dac_bits": None, "adc_bits": None}}}
    n_outputs = 2
    n_inputs = 2

    def respond(self, drive_v: torch.Tensor, sample_rate_hz: float) -> torch.Tensor:
        return torch.nn.functional.pad(drive_v, (1, 0))[:, :-1] * 0.5


def bench(preset: str = "ideal", **config):
    world = Divider(preset=preset, config=config)
    return world, SimulatedAnalogOutput(world, name="ao").connect(), SimulatedAnalogInput(world, name="ai").connect()


def test_dc_levels_reach_the_inputs_only_when_the_output_is_on() -> None:
    _, ao, ai = bench()
    ao.set_voltage(1, 2.0)
    np.testing.assert_allclose(ai.acquire(4, 1e3)[0], 0.0)
    ao.set_output(1, True)
    np.testing.assert_allclose(ai.acquire(4, 1e3)[0, 1:], 1.0)


def test_armed_record_follows_the_played_waveform_and_the_clock_advances() -> None:
    world, ao, ai = bench()
    ao.set_output(1, True)
    ao.load_waveform(1, [0.0, 1.0, 2.0, 3.0], 1e3)
    ai.arm(6, 1e3)
    before = world.clock.now()
    ao.play()
    record = ai.fetch()
    np.testing.assert_allclose(record[0], [0.0, 0.0, 0.5, 1.0, 1.5, 0.0])  # holds DC (0 V) after the end
    assert world.clock.now() - before == pytest.approx(6e-3)  # the record outlasts the waveform


def test_converters_round_and_clip() -> None:
    _, ao, ai = bench("realistic", converters={"dac_bits": 4, "adc_bits": 4, "input_range_v": 2.0})
    ao.set_output(1, True)
    ao.set_voltage(1, 1.9)  # DAC: 16 codes of 1.25 V over ±10 V
    assert float(ao._dc[0]) == pytest.approx(2.5)
    assert ai.acquire(3, 1e3)[0, 1] == pytest.approx(1.25)  # a code of 0.25 V each over ±2 V
    ao.set_voltage(1, 8.0)
    assert ai.acquire(3, 1e3)[0, 2] == pytest.approx(1.75)  # clipped to the top code, one step below 2 V


def test_a_record_beyond_the_inputs_narrowed_limit_is_a_device_error() -> None:
    """An input limit narrower than the converter's range is what the sensor may see: a record within it is returned,
    one beyond it (the divider's 0.4 V under a ±0.3 V limit) is refused, naming the peak and the limit."""
    world = Divider(preset="ideal")
    ao = SimulatedAnalogOutput(world, name="ao").connect()
    ai = SimulatedAnalogInput(world, name="ai", limits={"voltage_v": {"min": -0.3, "max": 0.3}}).connect()
    ao.set_voltage(1, 0.6)
    ao.set_output(1, True)
    np.testing.assert_allclose(ai.acquire(4, 1e3)[0, 1:], 0.3)  # at the limit (in float32: 0.30000001 V)
    ao.set_voltage(1, 0.8)
    with pytest.raises(DeviceError, match=r"ai: the record reaches 0.4 V, outside the input's limit -0.3..0.3 V; "
                                          "lower what drives the input or widen its limit"):
        ai.acquire(4, 1e3)


def test_mismatched_sample_clocks_are_refused() -> None:
    _, ao, ai = bench()
    ao.set_output(1, True)
    ao.load_waveform(1, [0.0, 1.0], 1e3)
    ai.arm(2, 2e3)
    with pytest.raises(DeviceError, match=r"^simulated divider: input armed at 2000 Hz but the output plays at 1000 "
                                          r"Hz; they share one sample clock: arm the input at 1000 Hz, or load the "
                                          r"waveform at 2000 Hz$"):  # the fix was left unsaid
        ao.play()


def test_a_fetch_before_any_play_disarms_the_input_and_leaves_the_output_free_to_play() -> None:
    """An input armed and fetched before anything played said so and was no longer armed, but its world still was: a
    later play at another sample rate, for which nothing was armed, was refused as a clock mismatch with the input."""
    _, ao, ai = bench()
    ai.arm(4, 1e3)
    with pytest.raises(DeviceError, match=r"^ai: the armed record was never triggered; arm\(\) again and play the "
                                          r"output before fetch\(\)$"):
        ai.fetch()
    ao.set_output(1, True)
    ao.load_waveform(1, [0.0, 1.0], 2e3)
    ao.play()
    with pytest.raises(DeviceError, match=r"^ai: nothing armed; call arm\(\) before fetch\(\)$"):
        ai.fetch()
    ao.load_waveform(1, [1.0, 2.0], 2e3)
    ai.arm(2, 2e3)
    ao.play()
    np.testing.assert_allclose(ai.fetch()[0], [0.0, 0.5])  # the divider's half, one sample late


def test_waveforms_of_different_lengths_and_rates_played_together_are_refused_with_units() -> None:
    """It read '(got lengths [2, 3], rates [1000.0, 2000.0])': Python lists, a rate's repr, no unit, nothing to do."""
    _, ao, _ = bench()
    ao.load_waveform(1, [0.0, 1.0], 1e3)
    ao.load_waveform(2, [0.0, 1.0, 0.5], 2e3)
    with pytest.raises(DeviceError, match=r"^ao: waveforms played together must share length and sample rate \(got "
                                          r"lengths of 2, 3 samples, rates of 1000, 2000 Hz\); load them alike, or "
                                          r"play them one at a time$"):
        ao.play([1, 2])


def test_a_simulated_instrument_keeps_its_worlds_clock() -> None:
    """The world gives its instruments one clock (the device time they share); another is refused by name."""
    world = Divider(preset="ideal")
    assert SimulatedAnalogOutput(world, name="ao").clock is world.clock
    with pytest.raises(TypeError, match=r"SimulatedAnalogOutput keeps its world's clock; build it without clock=$"):
        SimulatedAnalogOutput(world, name="ao", clock=world.clock)


def test_a_second_analog_output_on_one_world_is_refused_at_its_world(tmp_path) -> None:
    """Two simulated analog outputs given one world passed hil check, and the world followed the one built last: the
    first one's levels and waveforms were ignored, unsaid. The second is refused at its lab line."""
    from hil.errors import ConfigError
    from hil.lab import Lab

    (tmp_path / "lab.yaml").write_text("worlds:\n  osc: {kind: oscillator_network}\ninstruments:\n"
                                       "  drive: {driver: simulated_analog_output, world: osc}\n"
                                       "  spare: {driver: simulated_analog_output, world: osc}\n")
    with pytest.raises(ConfigError, match=r"lab\.yaml:5: instruments\.spare\.world: simulated analog output: its "
                                          r"oscillator_network world is driven by drive already, and an analog world "
                                          r"has one output; give each output a world of its own$"):
        Lab.load(tmp_path / "lab.yaml").build()


def test_the_step_to_a_waveforms_first_sample_is_paced_by_the_ramp_rate() -> None:
    """A step within max_step to the first sample is a step all the same: at 1 V/s, 0.3 V takes 0.3 s, as
    set_voltage's would; a farther one is ramped there first, each step paced (and settled: the DAC's 0.1 ms a
    level)."""
    world = Divider(preset="ideal", config={"converters": {"settle_s": 0.0}})
    ao = SimulatedAnalogOutput(world, name="ao", limits={"voltage_v": {"max_step": 0.5, "ramp_rate": 1.0}}).connect()
    ao.set_output(1, True)
    for first, seconds in [(0.3, 0.3), (1.3, 1.0), (1.3, 0.0)]:
        before = world.clock.now()
        ao.load_waveform(1, [first, 0.0], 1e3)
        assert world.clock.now() - before == pytest.approx(seconds)
