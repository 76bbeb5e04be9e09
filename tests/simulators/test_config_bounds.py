"""Every number a simulated world takes is bounded on both sides, so that a unit slip in a lab file (8 for 8 µm, 25
for 25 °C) is refused at its line instead of failing late, or quietly, in a run."""

import re
from pathlib import Path

import pytest

from hil.errors import ConfigError
from hil.registry import available, lookup
from hil.testing import config_numbers, unbounded_numbers
from simulators.world import World
from tests.lab_text import lab_from_text

WORLD_KINDS = sorted(available("worlds"))


@pytest.mark.parametrize("kind", WORLD_KINDS)
def test_every_number_of_every_world_has_a_lower_and_an_upper_bound(kind: str) -> None:
    """A new field without a bound fails here: name the largest value a bench of the kind could have."""
    config = lookup("worlds", kind).Config
    assert list(config_numbers(config)), f"{kind}: no numbers found; the walk is broken"
    assert unbounded_numbers(config) == []


@pytest.mark.parametrize(("kind", "config", "field", "message"), [
    ("optical_table", {"slm": {"pitch_m": 8}}, "config.slm.pitch_m", "less than or equal to 0.0001 (got 8)"),
    ("optical_table", {"optics": {"wavelength_m": 532}}, "config.optics.wavelength_m",
     "less than or equal to 0.00002 (got 532)"),
    ("optical_table", {"timing": {"slm_settle_s": 10}}, "config.timing.slm_settle_s", "less than or equal to 1 "),
    ("multimode_fiber", {"optics": {"power_w": 250}}, "config.optics.power_w", "less than or equal to 1"),
    ("memristor_crossbar", {"devices": {"g_max_s": 25}}, "config.devices.g_max_s", "less than or equal to 0.01"),
    ("memristor_crossbar", {"programming": {"coefficients_us": [0.26, 1965, -1.17]}},
     "config.programming.coefficients_us.1", "less than or equal to 100"),
    ("oscillator_network", {"network": {"freq_hz": [150, 210e3, 290, 400]}}, "config.network.freq_hz.1",
     "less than or equal to 100000"),
    ("oscillator_network", {"construction": {"damping_spread": 15}}, "config.construction.damping_spread",
     "less than or equal to 1"),
    ("resistive_network", {"devices": {"reference_temperature_k": 25}}, "config.devices.reference_temperature_k",
     "greater than or equal to 200"),
    ("optical_table", {"shot": {"frame_drop_probability": 0.6}}, "config.shot.frame_drop_probability",
     "less than or equal to 0.5"),  # a percentage slip (60 for 0.6 % is refused as well)
    ("multimode_fiber", {"shot": {"frame_drop_probability": 1}}, "config.shot.frame_drop_probability",
     "less than or equal to 0.5"),  # a link that loses every frame: no capture could ever be repeated to success
])
def test_a_unit_slip_is_a_config_error_naming_the_field_and_the_bound(kind, config, field, message) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)) as error:
        lookup("worlds", kind)(config=config)
    assert error.value.field == field


@pytest.mark.parametrize(("config", "message"), [
    ({"optics": {"waist_m": 4e-6}}, r"optics\.waist_m 4e-06 m is under one SLM pixel \(slm\.pitch_m 8e-06 m\), so "
                                    r"the beam would light no pixel; widen it, or use beam: flat"),
    ({"construction": {"black_level_dn": 4095}}, r"construction\.black_level_dn 4095 DN leaves no codes below the "
                                                 r"camera's top code 4095 DN \(bit_depth 12\); lower it"),
    ({"shot": {"read_noise_e": 2000}}, r"shot\.read_noise_e 2000 e⁻ is over a tenth of camera\.full_well_e 10700 "
                                       r"e⁻, so the frames would show noise, not light; lower it"),
    ({"construction": {"dsnu_e": 1100}}, r"construction\.dsnu_e 1100 e⁻ is over a tenth"),
])
@pytest.mark.parametrize("kind", ["optical_table", "multimode_fiber"])
def test_an_slm_camera_bench_that_could_show_no_light_is_refused(kind: str, config, message: str) -> None:
    """Within each field's bounds, but together meaningless: a beam narrower than a pixel (it used to reach the
    system as NaN), a black level at the top code, noise on the scale of the full well (both used to end in an
    exposure search blaming the light)."""
    with pytest.raises(ConfigError, match=message):
        lookup("worlds", kind)(config=config)
    assert isinstance(lookup("worlds", kind)(config={"optics": {"beam": "flat", "waist_m": 4e-6}}), World)


def test_a_lab_file_with_a_unit_slip_names_its_line(tmp_path: Path) -> None:
    text = "worlds:\n  table:\n    kind: optical_table\n    config:\n      slm: {pitch_m: 8}\n"
    with pytest.raises(ConfigError, match=r"lab\.yaml:5: worlds\.table\.config\.slm\.pitch_m: Input should be less "
                                          r"than or equal to 0\.0001 \(got 8\)$"):
        lab_from_text(text, tmp_path).build()
