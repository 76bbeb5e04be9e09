"""Names of classes in a lab file: a class nested in another is named by its dotted path after the colon."""

import re
from pathlib import Path
from typing import Any, ClassVar

import pytest

from drivers.keithley2450 import Keithley2450
from hil.errors import ConfigError
from hil.registry import instrument_class, lookup
from simulators.emulators.keithley2450 import Keithley2450Emulator
from tests.lab_text import lab_from_text


class Bench:
    """A user's module that groups its drivers in a class."""

    class Smu(Keithley2450):
        """A Keithley 2450 by another name, standing for a user's driver nested in ``Bench``."""


NESTED = f"{__name__}:Bench.Smu"


def test_a_nested_class_is_named_by_its_dotted_path(tmp_path: Path) -> None:
    """``module:Outer.Inner`` was "unknown driver" (the name was not read as a class): only ``module:Class`` was."""
    assert instrument_class(NESTED) is Bench.Smu
    lab = lab_from_text(f"""
instruments:
  smu: {{driver: "{NESTED}", emulate: {{load_ohm: 100}}}}
""", tmp_path)
    with lab:
        assert "MODEL 2450" in lab["smu"].identify()
        assert lab["smu"].snapshot()["class"] == f"{__name__}.Bench.Smu"


@pytest.mark.parametrize(("name", "missing"), [
    (f"{__name__}:Bench.Smv", rf"{__name__}:Bench has no attribute 'Smv'"),
    (f"{__name__}:Bensh.Smu", rf"module '{__name__}' has no attribute 'Bensh'"),
    (f"{__name__}:Bench.Smu.Channel", rf"{__name__}:Bench\.Smu has no attribute 'Channel'"),
])
def test_a_missing_part_of_a_dotted_path_is_named(name: str, missing: str) -> None:
    with pytest.raises(ConfigError, match=rf"^driver '{name}': {name} cannot be loaded: AttributeError: "
                                          rf"{missing}$") as caught:
        lookup("instruments", name)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("name", [f"{__name__}:Bench.", f"{__name__}:Bench..Smu", f"{__name__}:.Bench"])
def test_a_dotted_path_with_an_empty_part_is_no_class_name(name: str) -> None:
    """Only ``module:Name.Name...`` names a class; anything else after the colon is an unknown name, not imported."""
    with pytest.raises(ConfigError, match=rf"^unknown driver '{re.escape(name)}'; known: "):
        lookup("instruments", name)


def test_a_class_named_with_a_dot_for_the_colon_is_told_where_the_colon_goes() -> None:
    """``driver: drivers.keithley2450.Keithley2450`` was an unknown driver, the colon's place left to guess."""
    with pytest.raises(ConfigError, match=r"^unknown driver 'drivers\.keithley2450\.Keithley2450' \(a class is named "
                                          r"with a colon before it: 'drivers\.keithley2450:Keithley2450'\); known: "):
        lookup("instruments", "drivers.keithley2450.Keithley2450")


class EmulatorAsAClass(Keithley2450):
    """A driver that gives its emulator as the class itself, not as its name."""

    emulator: ClassVar[Any] = Keithley2450Emulator


class EmulatorWithADot(Keithley2450):
    """A driver that names its emulator with a dot for the colon."""

    emulator: ClassVar[str] = "simulators.emulators.keithley2450.Keithley2450Emulator"


@pytest.mark.parametrize(("driver", "expected"), [
    ("EmulatorAsAClass", r"the class simulators\.emulators\.keithley2450\.Keithley2450Emulator itself, not its "
                         r"name: write it as text, 'simulators\.emulators\.keithley2450:Keithley2450Emulator'$"),
    ("EmulatorWithADot", r"'simulators\.emulators\.keithley2450\.Keithley2450Emulator' is not a class's name: write "
                         r"it 'module:Class', a colon before the class "
                         r"\('simulators\.emulators\.keithley2450:Keithley2450Emulator'\)$"),
])
def test_an_emulator_not_named_module_colon_class_is_told_how_to_name_it(tmp_path: Path, driver: str,
                                                                        expected: str) -> None:
    """The class itself ended in a traceback (AttributeError: ... has no attribute 'partition'); a dot for the colon
    in "No module named '...Keithley2450Emulator'; '...keithley2450' is not a package"."""
    lab = lab_from_text(f"""
instruments:
  smu: {{driver: "{__name__}:{driver}", emulate: true}}
""", tmp_path)
    with pytest.raises(ConfigError, match=rf"lab\.yaml:3: instruments\.smu\.emulate: emulator of "
                                          rf"{re.escape(__name__)}:{driver}: {expected}") as caught:
        lab.build()
    assert "\n" not in str(caught.value)


def test_a_module_that_fails_on_import_is_said_in_one_line_at_its_line(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A plugin whose import raised an error of several lines printed them all after 'hil: error:', and no line of
    the plugin said where: now one line, ending with the plugin's line that raised (or called what raised)."""
    (tmp_path / "acme_broken.py").write_text("x = 1\nraise ValueError('first line\\nsecond line')\n")
    (tmp_path / "acme_numpy.py").write_text("import numpy as np\n\nnp.zeros((2, 2)) @ np.zeros((3, 3))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError) as caught:
        lookup("instruments", "acme_broken:Smu")
    assert str(caught.value) == (f"driver 'acme_broken:Smu': acme_broken:Smu cannot be loaded: ValueError: first line "
                                 f"second line (at {tmp_path / 'acme_broken.py'}:2)")
    with pytest.raises(ConfigError, match=rf"^driver 'acme_numpy:Smu': acme_numpy:Smu cannot be loaded: ValueError: "
                                          rf"matmul: .* \(at {re.escape(str(tmp_path / 'acme_numpy.py'))}:3\)$"):
        lookup("instruments", "acme_numpy:Smu")


@pytest.mark.parametrize(("group", "name", "meant"), [
    ("instruments", "keysight33500b", "keysight_33500b"), ("instruments", "Keithley_2450", "keithley_2450"),
    ("worlds", "optical_tabel", "optical_table"), ("systems", "crosbar", "crossbar"),
])
def test_a_slip_of_a_registered_name_is_told_the_name_it_probably_meant(group: str, name: str, meant: str) -> None:
    """A misspelt driver or kind was listed with every known name, the one meant left to find among them."""
    with pytest.raises(ConfigError, match=rf"^unknown [a-z ]+ '{name}' \(did you mean '{meant}'\?\); known: "):
        lookup(group, name)
    with pytest.raises(ConfigError, match=r"^unknown driver 'acme_smu'; known: "):  # nothing near: nothing said
        lookup("instruments", "acme_smu")


def test_a_plugin_not_installed_is_told_to_install_it_at_its_line(tmp_path: Path) -> None:
    """A lab naming a driver of a package that is not installed (the commonest slip with a plugin) is one line at the
    driver's field, saying which module is missing and to install the package or put it on the path."""
    lab = lab_from_text('instruments:\n  smu: {driver: "acme_not_installed.smu:Smu", resource: '
                        '"TCPIP::192.0.2.1::5025::SOCKET"}\n', tmp_path)
    with pytest.raises(ConfigError) as caught:
        lab.build()
    assert str(caught.value) == (
        f"{tmp_path / 'lab.yaml'}:2: instruments.smu.driver: driver 'acme_not_installed.smu:Smu': "
        "acme_not_installed.smu:Smu cannot be loaded: ModuleNotFoundError: No module named 'acme_not_installed' "
        "(install the package that holds it, or put its folder on PYTHONPATH)")
