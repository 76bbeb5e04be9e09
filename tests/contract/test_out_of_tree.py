"""A device from outside hil, as a user adds one: named in the lab file by its class (``module:Class``), with no
registration, and run through its capability's contract by that name."""

from pathlib import Path

import numpy as np
import pytest
import torch

from hil import testing
from hil.errors import ConfigError, DeviceError
from hil.registry import available, lookup
from hil.systems.base import PhysicalSystem, PhysicsModel
from tests.lab_text import lab_from_text

#: A class importable from outside the registry's names, standing for a user's own driver.
TARGET = "drivers.keithley2450:Keithley2450"


def test_a_lab_may_name_a_driver_by_its_class_without_registering_it(tmp_path: Path) -> None:
    assert TARGET not in available()
    lab = lab_from_text(f"""
instruments:
  smu: {{driver: "{TARGET}", emulate: {{load_ohm: 100}}}}
""", tmp_path)
    with lab:
        assert "MODEL 2450" in lab["smu"].identify()
        assert lab["smu"].snapshot()["class"] == "drivers.keithley2450.Keithley2450"


def test_the_contract_accepts_a_class_named_by_module_and_class() -> None:
    from drivers.keithley2450 import Keithley2450

    class Named(testing.InstrumentContract):
        registry_name = TARGET

    Named().test_is_the_class_registered_under_its_name(Keithley2450(None))  # type: ignore[arg-type]


@pytest.mark.parametrize(("registry_name", "expected"), [
    (None, r"^Named sets no registry_name; set it to the driver's name as lab\.yaml gives it: "
           r"'drivers\.keithley2450:Keithley2450', or the name it is registered under$"),
    ("acme_smu", r"^registry_name 'acme_smu' of Named: unknown driver 'acme_smu'; known: .*"
                 r"pip install -e PACKAGE; or name the class itself, as package\.module:Class\)$"),
])
def test_a_contract_without_a_registry_name_or_with_an_unknown_one_says_what_to_set(registry_name: str | None,
                                                                                    expected: str) -> None:
    """A contract test class without ``registry_name`` failed with AttributeError: 'Named' object has no attribute
    'registry_name'; one with a name registered nowhere, with the registry's error alone, not saying it came from the
    test class's ``registry_name``."""
    from drivers.keithley2450 import Keithley2450

    class Named(testing.InstrumentContract):
        pass

    if registry_name is not None:
        Named.registry_name = registry_name
    with pytest.raises(pytest.fail.Exception, match=expected):
        Named().test_is_the_class_registered_under_its_name(Keithley2450(None))  # type: ignore[arg-type]


@pytest.mark.parametrize(("kind", "name", "expected"), [
    ("instruments", "acme_missing.smu:AcmeSmu", r"driver 'acme_missing\.smu:AcmeSmu': acme_missing\.smu:AcmeSmu "
                                                r"cannot be loaded: ModuleNotFoundError: .* \(install the package that "
                                                r"holds it, or put its folder on PYTHONPATH\)$"),
    ("instruments", "drivers.keithley2450:Keithley2451", r"driver 'drivers\.keithley2450:Keithley2451': .*"
                                                         r"AttributeError"),
    ("worlds", "acme_worlds:Table", r"world kind 'acme_worlds:Table': .*PYTHONPATH"),
    ("systems", "acme smu", r"unknown system kind 'acme smu'; known: .* or name the class itself, as "
                            r"package\.module:Class\)$"),
])
def test_a_class_that_cannot_be_imported_says_how_to_make_it_importable(kind: str, name: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        lookup(kind, name)


def test_a_class_named_in_a_lab_must_be_an_instrument(tmp_path: Path) -> None:
    lab = lab_from_text("""
instruments:
  smu: {driver: "hil.lab:Lab", resource: "TCPIP::127.0.0.1::1::SOCKET"}
""", tmp_path)
    with pytest.raises(ConfigError, match=r"lab\.yaml:3: instruments\.smu\.driver: driver 'hil\.lab:Lab' is not an "
                                          r"Instrument subclass$"):
        lab.build()


@pytest.mark.parametrize(("text", "message"), [
    ("worlds:\n  w: {kind: 'builtins:dict'}\n",
     r"lab\.yaml:2: worlds\.w\.kind: world kind 'builtins:dict' is not a World subclass$"),
    ("worlds:\n  w: {kind: 'hil.systems.base:PhysicalSystem'}\n",
     r"lab\.yaml:2: worlds\.w\.kind: world kind 'hil\.systems\.base:PhysicalSystem' is not a World subclass$"),
    ("systems:\n  s: {kind: 'hil.instruments:Instrument', instruments: {}}\n",
     r"lab\.yaml:2: systems\.s\.kind: system kind 'hil\.instruments:Instrument' is not a PhysicalSystem subclass$"),
    ("systems:\n  s: {kind: 'hil.systems.base:PhysicalSystem', instruments: {}}\n",
     r"lab\.yaml:2: systems\.s\.kind: system kind 'hil\.systems\.base:PhysicalSystem' is abstract: write "
     r"_run, physics_model$"),
])
def test_a_world_or_system_named_by_its_class_must_be_one(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        lab_from_text(text, tmp_path).build()


class ArraySystem(PhysicalSystem):
    """A user's system whose device call hands back what its instruments read: a float64 numpy array."""

    kind = "array_system"

    def __init__(self, instruments, *, name: str = "", returns: str = "numpy"):
        super().__init__(instruments, name=name, n_in=2, n_out=3, n_params=1, x_bounds=(0.0, 1.0),
                         theta_bounds=(0.0, 1.0), max_batch=4)
        self.returns = returns

    def _run(self, x: torch.Tensor, theta: torch.Tensor) -> object:
        y = np.full((len(x), self.n_out), 0.25) + x.numpy()[:, :1]
        return {"numpy": y, "float64": torch.from_numpy(y), "list": y.tolist(), "text": "0.25"}[self.returns]

    def physics_model(self) -> PhysicsModel:
        raise NotImplementedError


@pytest.mark.parametrize("returns", ["numpy", "float64", "list"])
def test_a_system_may_return_an_array_or_another_dtype_and_gets_float32(returns: str) -> None:
    """A numpy array failed in the twin's data collection ("expected Tensor as element 0"), a float64 tensor in the
    next linear layer ("mat1 and mat2 must have the same dtype"), both as tracebacks mid-run."""
    y = ArraySystem({}, returns=returns).forward(torch.full((5, 2), 0.5), torch.zeros(1))
    assert isinstance(y, torch.Tensor) and y.dtype == torch.float32 and tuple(y.shape) == (5, 3)
    assert torch.all(y == 0.75)


def test_a_system_returning_no_numbers_is_a_device_error() -> None:
    with pytest.raises(DeviceError, match=r"^system 'array_system': _run returned str, not numbers; return a tensor "
                                          r"of shape \(2, 3\)$"):
        ArraySystem({}, returns="text").forward(torch.zeros((2, 2)), torch.zeros(1))
