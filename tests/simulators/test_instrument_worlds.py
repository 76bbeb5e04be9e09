"""A simulated instrument given a world of another kind in a lab file: the error names the kind and the fix."""

from pathlib import Path

import pytest

from hil.errors import ConfigError
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
