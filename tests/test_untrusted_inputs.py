"""Files from somewhere else: a checkpoint, a lab file or a protocol handed on by another scientist, or crafted, is
refused in one line naming it, and runs no code by naming it."""

import re
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from hil.config import YamlDocument
from hil.errors import ConfigError
from hil.lab import InstrumentConfig
from hil.protocol import (
    DatasetConfig,
    OutputConfig,
    TwinConfig,
    check_from_run,
    check_protocol,
    check_resumed_data,
    load_data,
    load_lab,
    load_protocol,
)
from hil.state import capture, restore
from hil.store import RunFileError
from simulators.crossbar import MemristorCrossbar
from tests.test_combinations import fiber_protocol, reused_fiber_run

#: A module with an effect on import, standing for any module a crafted checkpoint could name.
EFFECT = """
import pathlib
pathlib.Path(__file__).with_name("imported").write_text("the module ran")
class Anything:
    pass
"""


@pytest.fixture
def effect_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``effect_module:Anything`` importable; the file its import writes (absent until then)."""
    (tmp_path / "effect_module.py").write_text(EFFECT)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "effect_module", raising=False)
    return tmp_path / "imported"


@pytest.mark.parametrize("saved", [
    {"clock": {"__object__": {}, "__class__": "effect_module:Anything"}},  # a state holder of another package
    {"mode": {"__enum__": "A", "__class__": "effect_module:Anything"}},  # an enum of a module not imported
], ids=["state holder", "enum"])
def test_a_checkpoint_naming_a_class_of_another_package_imports_nothing(effect_module: Path, saved: dict) -> None:
    """A checkpoint's state holders and enums name their classes, ``module:Class``; restoring imported whatever
    module a checkpoint named (running its code) and built its class: a crafted checkpoint.pt, sealed with its
    SHA-256 as any can be, ran code on ``hil run --resume``. Only the classes capture saves are taken now."""
    world = MemristorCrossbar(preset="ideal")
    with pytest.raises(RunFileError, match=r"^runs/x/checkpoint\.pt: the state saved of MemristorCrossbar cannot be "
                       r"restored \(.*effect_module:Anything.*\); it is not this run's checkpoint"):
        restore(world, saved, source="runs/x/checkpoint.pt")
    assert not effect_module.exists() and "effect_module" not in sys.modules


@pytest.mark.parametrize("saved", [
    {"mode": {"__enum__": "A", "__class__": "os:system"}},  # imported already, and not an enum
    {"clock": {"__object__": {}, "__class__": "os.path:join"}},
    {"clock": {"__object__": {}, "__class__": 5}},
    {"rng": {"__generator_state__": "not a state"}},
    {"clock": {"__object__": {}}},  # no class
], ids=["a function for an enum", "a function for a holder", "a number for a class", "a generator", "no class"])
def test_state_that_capture_cannot_have_made_is_a_one_line_refusal(saved: dict) -> None:
    """Such state failed with a TypeError or a KeyError's traceback in the middle of a resume."""
    world = MemristorCrossbar(preset="ideal")
    with pytest.raises(RunFileError, match=r"^x/checkpoint\.pt: the state saved of MemristorCrossbar cannot be "
                                           r"restored \([^\n]*\); it is not this run's checkpoint[^\n]*$"):
        restore(world, saved, source="x/checkpoint.pt")


def test_a_worlds_own_state_still_restores_through_a_weights_only_load(tmp_path: Path) -> None:
    """What capture saves (hil's and the simulators' state holders) is still taken, into a world that lacks them."""
    world = MemristorCrossbar(seed=2)
    world.clock.sleep(1.5)
    torch.save(capture(world), tmp_path / "state.pt")
    fresh = MemristorCrossbar(seed=2)
    del fresh.clock
    restore(fresh, torch.load(tmp_path / "state.pt", weights_only=True))
    assert type(fresh.clock) is type(world.clock) and fresh.clock.now() == 1.5


@pytest.mark.parametrize(("model", "text", "field"), [
    (OutputConfig, 'root: "runs\\0/x"', "root"),
    (InstrumentConfig, 'driver: keithley_2450\nemulate: true\ntraffic_log: "logs/\\0.log"', "traffic_log"),
    (TwinConfig, 'from_run: "runs/a\\0"', "from_run"),
    (DatasetConfig, 'name: idx\npath: "data\\0"', "path"),
    (InstrumentConfig, 'driver: keithley_2450\nresource: "/dev/tty\\0S0"', "resource"),
])
def test_a_path_holding_a_nul_is_refused_at_its_line(model: type, text: str, field: str) -> None:
    """Python refuses a NUL in a path where it is used: ``output.root: "runs\\0/x"`` passed hil check and hil run
    ended in a ValueError's traceback as it made the run folder."""
    line = text.count("\n") + 1
    with pytest.raises(ConfigError, match=rf"^p\.yaml:{line}: {field}: a path cannot hold the character NUL \(\\0\); "
                                          r"remove it \(got '[^\n]*'\)$"):
        YamlDocument.parse(text, "p.yaml").validate(model)


@pytest.mark.parametrize(("path", "said"), [
    ("x" * 256, "its name is longer than the 255 bytes"),
    ("runs/" + "é" * 128 + "/a", r"the name 'éé[^\n]* in it is longer than the 255 bytes"),  # 256 bytes in UTF-8
    ("a/" * 2048, "longer than the 4095 bytes a path may have"),
])
def test_a_path_too_long_for_the_system_is_refused_at_its_line(path: str, said: str) -> None:
    """A lab, twin.from_run or dataset.path of a name over 255 bytes failed hil check and hil run with the system's
    'File name too long' and the path alone (exit status 1), naming neither the protocol nor its line."""
    with pytest.raises(ConfigError, match=rf"^p\.yaml:1: from_run: {said}"):
        YamlDocument.parse(f"from_run: {path}", "p.yaml").validate(TwinConfig)


def test_a_path_of_names_the_system_takes_is_kept() -> None:
    name = "x" * 255
    assert YamlDocument.parse(f"from_run: runs/{name}", "p.yaml").validate(TwinConfig).from_run == f"runs/{name}"


def test_a_reused_runs_data_holding_a_group_where_an_array_goes_is_refused_at_its_field(tmp_path: Path) -> None:
    """twin.from_run names another's run folder; a twin_data.h5 edited or made by hand, with a group for x, failed
    hil check (and hil run) with an AttributeError's traceback ('Group' object has no attribute 'shape')."""
    source = reused_fiber_run(tmp_path, {"x": None, "theta": torch.zeros(4, 16), "y": torch.zeros(4, 2, 8)})
    with pytest.raises(ConfigError, match=r"^\S*protocol.yaml:\d+: twin.from_run: \S*twin_data.h5 holds no data a "
                                          r"run wrote: x is a Group, not an array; point twin.from_run at a run"):
        check_protocol(fiber_protocol(tmp_path, {"kind": "physics", "from_run": str(source)}))


@pytest.fixture
def locked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder that cannot be looked into (another user's home, mode 700): a look at a path below it raises
    PermissionError, as the system's stat does (made so by patching: tests may run as root, whom no mode stops)."""
    folder = tmp_path / "colleague"
    stat = Path.stat

    def refused(self: Path, **kwargs: object) -> object:
        if str(self).startswith(f"{folder}/"):
            raise PermissionError(13, "Permission denied", str(self))
        return stat(self, **kwargs)

    monkeypatch.setattr(Path, "stat", refused)
    return folder


def test_a_lab_files_traffic_log_in_a_folder_that_cannot_be_looked_into_is_refused_at_its_line(locked: Path) -> None:
    """A lab file from a colleague logging to their home: hil check ended with '[Errno 13] Permission denied' and
    the path alone, exit status 1, naming neither the lab file nor its line."""
    text = f"driver: keithley_2450\nemulate: true\ntraffic_log: {locked}/logs/smu.log"
    with pytest.raises(ConfigError, match=r"^lab\.yaml:3: traffic_log: '\S+/colleague/logs/smu\.log' cannot be "
                                          r"reached \(Permission denied\); name a file in a folder you can write to"):
        YamlDocument.parse(text, "lab.yaml").validate(InstrumentConfig)


@pytest.mark.parametrize(("field", "line", "look", "said"), [
    ("lab", 2, load_lab, "lab file '{locked}/lab.yaml' cannot be reached (Permission denied); name a lab file you can "
                         "read"),
    ("from_run", 5, check_from_run, "{locked}/runs/a cannot be reached (Permission denied); name a run folder you can "
                                    "read"),
    ("path", 6, load_data, "dataset folder '{locked}/mnist' cannot be reached (Permission denied); name a folder you "
                           "can read"),
    ("path", 6, check_resumed_data, "dataset folder '{locked}/mnist' cannot be reached (Permission denied); name a "
                                    "folder you can read"),
], ids=["lab", "twin.from_run", "dataset.path", "a resumed run's dataset.path"])
def test_a_protocols_path_in_a_folder_that_cannot_be_looked_into_is_refused_at_its_line(
        locked: Path, tmp_path: Path, field: str, line: int, look: Callable, said: str) -> None:
    """As the traffic log: hil check and hil run said '[Errno 13] Permission denied' and the path alone."""
    twin = f"  from_run: {locked}/runs/a" if field == "from_run" else "  kind: physics"
    dataset = f"{{name: idx, path: {locked}/mnist}}" if field == "path" else "{name: digits}"
    text = (f"name: p\nlab: {locked if field == 'lab' else tmp_path}/lab.yaml\nsystem: s\ntwin:\n{twin}\n"
            f"dataset: {dataset}\nmodel: {{layers: [{{linear: {{out_features: 10}}}}]}}\n"
            "method: {name: insilico}\ntraining: {epochs: 1}\n")
    protocol, document = load_protocol(YamlDocument.parse(text, "p.yaml"))
    said = re.escape(said.format(locked=locked))
    with pytest.raises(ConfigError, match=rf"^p\.yaml:{line}: (twin\.|dataset\.)?{field}: {said}$"):
        look(protocol, document)


@pytest.mark.parametrize("text", ["x" * 1000 + ": 1", ("k" * 1000 + ": 1\n") * 2, "collect: {" + "y" * 1000 + ": 1}"],
                         ids=["unknown", "duplicate", "nested"])
def test_a_key_pasted_many_times_is_shown_short(text: str) -> None:
    """A key of 1000 characters was echoed whole, twice (as the field, and as the key), in a 2000-character line; a
    value so long was already shown by its start and length."""
    with pytest.raises(ConfigError) as raised:
        YamlDocument.parse(text, "p.yaml").validate(TwinConfig)
    assert len(str(raised.value)) < 250 and "…(1000 characters)" in str(raised.value)


def test_a_named_pipe_for_a_yaml_file_is_refused_not_waited_on(tmp_path: Path) -> None:
    """A run folder handed on whose protocol.yaml is a named pipe: hil runs (which reads the name there) waited for
    a writer, for ever; so did hil check given one."""
    import os
    import threading

    pipe = tmp_path / "protocol.yaml"
    os.mkfifo(pipe)
    raised: list[BaseException] = []

    def read() -> None:
        try:
            YamlDocument.read(pipe)
        except BaseException as error:
            raised.append(error)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(20)  # not a timing: a reader still waiting after 20 s waits for a writer
    if reader.is_alive():
        os.close(os.open(pipe, os.O_WRONLY | os.O_NONBLOCK))  # the writer it waits for: it ends
        reader.join()
        pytest.fail("the named pipe was waited on")
    assert [str(error) for error in raised] == [f"{pipe}: a named pipe that no program writes to; name a YAML file"]
