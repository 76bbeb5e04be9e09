"""hil.hooks: a plugin's hooks report their own slips in one line, and work as they are written."""

import numpy as np
import pytest

from hil.errors import DeviceError
from hil.instruments import Readings
from simulators.resistive import ResistiveNetwork
from tests.test_instruments import BareSmu


class StaticHidden(ResistiveNetwork):
    """A plugin world whose hidden parameters are a constant, written as a static method."""

    kind = "static_hidden"

    @staticmethod
    def hidden_parameters() -> dict[str, float]:
        return {"offset_v": 0.0}


class StaticSmu(BareSmu):
    """A plugin driver whose identity and reading need no instrument state, written as static methods."""

    @staticmethod
    def _identify_hw() -> str:
        return "acme,static"

    @staticmethod
    def _measure_hw() -> Readings:
        return Readings(np.zeros(1), np.zeros(1), np.zeros(1, dtype=bool))


def test_a_plugins_hook_written_as_a_static_method_is_called_as_one() -> None:
    """Wrapped as a method, a static hook was handed the instance: "DeviceError: simulated static_hidden: ...
    hidden_parameters raised TypeError: ... takes 0 positional arguments but 1 was given (hil/hooks.py:28)"."""
    assert StaticHidden().hidden_parameters() == {"offset_v": 0.0}
    with StaticSmu(name="smu") as smu:
        assert smu.identify() == "acme,static"
        smu.configure("voltage", 1e-3)
        assert smu.measure().voltage_v.tolist() == [0.0]


class Slipping(StaticSmu):
    def _configure_hw(self, mode, compliance, nplc) -> None:
        raise KeyError(mode)


def test_a_plugins_method_hook_beside_static_ones_still_reports_its_slip_in_one_line() -> None:
    with Slipping(name="smu") as smu, pytest.raises(DeviceError, match=r"^smu: tests\.test_hooks\.Slipping\."
                                                                      r"_configure_hw raised KeyError: 'voltage' \("):
        smu.configure("voltage", 1e-3)
