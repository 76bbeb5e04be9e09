"""A world, or a simulated instrument on one, given what it cannot take: the error names what and the fix."""

from pathlib import Path

import numpy as np
import pytest
import torch

from hil.errors import ConfigError
from simulators.crossbar import MemristorCrossbar
from tests.lab_text import lab_from_text


@pytest.mark.parametrize(("driver", "world", "said"), [
    ("simulated_analog_output", "table", "simulated analog output needs an analog world, not OpticalTable (kind "
                                         "optical_table); give it a world of kind oscillator_network or "
                                         "resistive_network"),
    ("simulated_analog_input", "table", "simulated analog input needs an analog world, not OpticalTable (kind "
                                        "optical_table); give it a world of kind oscillator_network or "
                                        "resistive_network"),
    ("simulated_slm", "plate", "simulated SLM needs an SLM-and-camera world, not OscillatorNetwork (kind "
                               "oscillator_network); give it a world of kind multimode_fiber or optical_table"),
    ("simulated_camera", "plate", "simulated camera needs an SLM-and-camera world, not OscillatorNetwork (kind "
                                  "oscillator_network); give it a world of kind multimode_fiber or optical_table"),
    ("simulated_crossbar", "table", "simulated crossbar needs a memristor crossbar world, not OpticalTable (kind "
                                    "optical_table); give it a world of kind memristor_crossbar"),
])
def test_an_instrument_on_a_world_of_another_kind_is_told_the_kinds_that_fit(tmp_path: Path, driver: str, world: str,
                                                                          said: str) -> None:
    """It read 'simulated crossbar needs a memristor crossbar world, not OpticalTable': a class name the lab file
    does not hold, and not the kind to write."""
    lab = lab_from_text(f"""
worlds:
  table: {{kind: optical_table}}
  plate: {{kind: oscillator_network}}
instruments:
  x: {{driver: {driver}, world: {world}}}
""", tmp_path)
    with pytest.raises(ConfigError) as caught:
        lab.build()
    assert str(caught.value) == f"{tmp_path / 'lab.yaml'}:6: instruments.x.world: {said}"


@pytest.mark.parametrize("seed", [-1, 1.5, "3", True, None, 2**32])
def test_a_world_built_from_python_with_a_seed_no_generator_takes_is_told_the_seeds_to_give(seed: object) -> None:
    """From Python, seed=1.5 was taken as 1 and True as 1, and -1 was torch's 'expected non-negative integer',
    naming no seed (a lab file's seed was already checked)."""
    with pytest.raises(ConfigError) as caught:
        MemristorCrossbar(seed=seed)  # type: ignore[arg-type]
    assert (caught.value.field, caught.value.detail) == (
        "seed", f"{seed!r} is not a seed; give a whole number in 0..4294967295")
    assert MemristorCrossbar(seed=np.int64(3)).seed == 3


def test_a_world_built_where_torchs_default_dtype_is_float64_is_refused_saying_what_to_do() -> None:
    """Its tensors were made float64, and its first read of a float32 input raised torch's dtype error from deep in
    the simulator (a notebook that had called torch.set_default_dtype(torch.float64))."""
    torch.set_default_dtype(torch.float64)
    try:
        with pytest.raises(ConfigError) as caught:
            MemristorCrossbar()
    finally:
        torch.set_default_dtype(torch.float32)
    assert caught.value.detail == ("torch's default dtype is float64 (torch.set_default_dtype), and hil's simulators "
                                   "compute in float32: call torch.set_default_dtype(torch.float32) before building "
                                   "the lab, and give tensors of your own dtype=torch.float64")
