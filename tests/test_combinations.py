"""Combinations of system, twin and method that the shipped protocols do not exercise (the fiber and the resistive
network): small runs only."""

import errno
import textwrap
from pathlib import Path

import h5py
import pytest
import torch
import yaml

from hil.errors import ConfigError
from hil.protocol import check_protocol
from hil.store import RunStore, save_twin
from hil.twin.collect import collect
from hil.twin.fit import fit_twin, nmse
from hil.twin.models import build_twin
from tests.lab_text import lab_from_text

IDEAL_FIBER = textwrap.dedent("""
    worlds:
      fiber: {kind: multimode_fiber, preset: ideal, seed: 0}
    instruments:
      fiber_slm: {driver: simulated_slm, world: fiber}
      fiber_camera: {driver: simulated_camera, world: fiber}
    systems:
      fiber: {kind: fiber, instruments: {slm: fiber_slm, camera: fiber_camera}}
""")


@pytest.mark.parametrize("kind", ["physics", "residual"])
def test_a_physics_twin_fit_never_leaves_the_twin_worse_than_the_calibration_it_started_from(tmp_path, kind) -> None:
    """On an ideal fiber bench the measured transmission matrix predicts the device to rounding; Adam at the default
    fit rate (0.02) moved each of its 16 384 entries by about that much a step and ended at a held-out NMSE of
    0.14. The fit keeps its starting state unless an epoch beats it on the held-out groups."""
    with lab_from_text(IDEAL_FIBER, tmp_path) as lab:
        system = lab.systems["fiber"]
        system.calibrate()
        data = collect(system, n_thetas=8, inputs_per_theta=48, design="sobol", seed=0)
        train, held_out = data.split(0.25, seed=0)
        twin = build_twin(kind, system, hidden=(8,) if kind == "residual" else None)
        start = nmse(twin, held_out).mean().item()
        assert start < 1e-9  # the calibration alone: the ideal bench's physics
        result = fit_twin(twin, train, held_out, epochs=3, lr=0.02, patience=3, seed=0)
        assert min(result.validation_loss[:3]) > 1e-3  # every epoch of the (physics) fit was worse than its start...
        assert result.best_epoch == -1
        assert nmse(twin, held_out).mean().item() == pytest.approx(start, abs=1e-9)  # ...which is the twin kept
        torch.testing.assert_close(twin(held_out.x[0], held_out.theta[0]), held_out.y[0], rtol=1e-4, atol=1e-5)


def fiber_protocol(tmp_path, twin: dict) -> Path:
    """A protocol for the fiber of the lab in ``tmp_path`` (its 16 inputs from the digits' 64 pixels)."""
    path = tmp_path / "protocol.yaml"
    path.write_text(yaml.safe_dump({
        "name": "fiber", "lab": str(tmp_path / "lab.yaml"), "system": "fiber",
        "dataset": {"name": "digits", "limit": 50},
        "model": {"layers": [{"linear": {"out_features": 16}}, {"physical": {"input_map": "sigmoid"}},
                             {"linear": {"out_features": 10}}]},
        "twin": twin, "method": {"name": "pat"}, "training": {"epochs": 1}, "output": {"root": str(tmp_path)}}))
    return path


def reused_fiber_run(tmp_path, arrays: dict[str, object], kind: str = "physics",
                     hidden: tuple[int, ...] | None = None) -> Path:
    """A run folder in ``tmp_path`` / runs to reuse with ``twin.from_run``: the ideal fiber's twin of ``kind``, and a
    ``data/twin_data.h5`` of ``arrays`` (each a tensor, or None for a group in its place)."""
    store = RunStore.create(tmp_path / "runs", "source")
    store.close()
    with lab_from_text(IDEAL_FIBER, tmp_path) as lab:
        system = lab.systems["fiber"]
        system.calibrate()
        twin = build_twin(kind, system, hidden=hidden)
        twin.spec["held_out_groups"] = [0]  # as a run's fit step records them
        save_twin(twin, store.path / "twin")
    (store.path / "data").mkdir()
    with h5py.File(store.path / "data" / "twin_data.h5", "w") as file:
        for name, array in arrays.items():
            if array is None:
                file.create_group(name)
            else:
                file.create_dataset(name, data=array)
    return store.path


def test_hil_check_takes_a_fiber_protocol_with_a_residual_twin_or_a_reused_twin(tmp_path) -> None:
    """The fiber's physics model is its measured transmission matrix: before calibrating there is none. Checking a
    residual twin's hidden widths built the whole twin, and a reused one was loaded whole, so hil check (and hil run,
    before anything was measured) refused both: "the fiber's transmission matrix is unknown; call calibrate()"."""
    with lab_from_text(IDEAL_FIBER, tmp_path) as lab:
        system = lab.systems["fiber"]
        system.calibrate()
        arrays = collect(system, n_thetas=4, inputs_per_theta=2, design="sobol", seed=0).arrays()
    source = reused_fiber_run(tmp_path, arrays, "residual", (8,))
    for twin in ({"kind": "residual", "hidden": [8]}, {"kind": "residual", "from_run": str(source)}):
        assert "OK — pat on 'fiber' (fiber)" in check_protocol(fiber_protocol(tmp_path, twin))


@pytest.mark.parametrize("file_locks", [True, False])
def test_a_reused_run_whose_data_are_of_another_size_is_refused_at_its_field_before_calibrating(
        tmp_path, monkeypatch: pytest.MonkeyPatch, file_locks: bool) -> None:
    """A fiber twin's parameters do not depend on its θ count, so the twin of a run on a 16-θ fiber loaded for an
    8-θ one, and the run failed after calibrating, at its fidelity step, without a field: "system 'fiber': theta has
    shape (16,), expected 8". The reused data's sizes are checked against the system with the protocol, on a file
    system without locks too (an NFS mount without its lock service), where HDF5's lock on the file failed and the
    check was skipped."""
    source = reused_fiber_run(tmp_path, {"x": torch.zeros(4, 2, 16), "theta": torch.zeros(4, 8),
                                         "y": torch.zeros(4, 2, 8)})
    if not file_locks:
        file = h5py.File

        def hdf5_without_locks(path, mode="r", **options):
            if options.get("locking") is not False:
                raise OSError(errno.ENOLCK, "Unable to synchronously open file (unable to lock file, errno = 37)")
            return file(path, mode, **options)

        monkeypatch.setattr(h5py, "File", hdf5_without_locks)
    with pytest.raises(ConfigError, match=r"protocol.yaml:\d+: twin.from_run: .*twin_data.h5 holds data of 8 θ, "
                                          r"system 'fiber' has 16; point twin.from_run at a run on this system"):
        check_protocol(fiber_protocol(tmp_path, {"kind": "physics", "from_run": str(source)}))


def test_an_oracle_twin_of_a_fiber_whose_block_is_not_the_worlds_macro_pixel_is_refused_by_check(tmp_path) -> None:
    """hil check said OK, and the run failed after calibrating and collecting: the oracle is the world's transmission
    matrix over its macro-pixels, which a system of another block cannot take."""
    lab_text = IDEAL_FIBER.replace("camera: fiber_camera}}", "camera: fiber_camera}, settings: {block: 4}}")
    with lab_from_text(lab_text, tmp_path):
        pass
    with pytest.raises(ConfigError, match=r"protocol\.yaml:\d+: twin\.kind: system 'fiber': block 4 differs from the "
                                          r"fiber's macro-pixels \(8 px\), which an oracle twin cannot represent; "
                                          r"give the system block: 8, or another twin kind$"):
        check_protocol(fiber_protocol(tmp_path, {"kind": "oracle"}))
