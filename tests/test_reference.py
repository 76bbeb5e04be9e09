"""The README against the code: its YAML examples load; its protocol reference names every key a protocol accepts
(no more), each at the code's default; its lab-file section names every key a lab file accepts and every setting of
each built-in system at its default; its Drivers section names each driver's and emulator's options, and its section
on simulated benches each world's config sections and presets."""

from __future__ import annotations

import inspect
import math
import re
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from hil.config import YamlDocument
from hil.lab import Lab, LabConfig, reads_as
from hil.methods.base import METHODS, method_class
from hil.protocol import Protocol, check_protocol
from hil.registry import BUILTIN, lookup

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")
YAML_BLOCKS = re.findall(r"^( *)```yaml\n(.*?)^\1```", README, re.S | re.M)  # (indent, text)


def _blocks() -> list[str]:
    """Each ```yaml block of the README, unindented (a block in a list item is indented with it)."""
    return ["".join(line[len(indent):] + "\n" for line in text.splitlines()) for indent, text in YAML_BLOCKS]


def _section(title: str) -> str:
    """The README's text from the heading ``## title`` to the next one."""
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start:end if end != -1 else None]


def _models(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models within a field's annotation (a list of them, one of a union, ...)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [model for arg in typing.get_args(annotation) for model in _models(arg)]


def _model_keys(model: type[BaseModel], prefix: str = "") -> set[str]:
    """Every key a model accepts, dotted, its submodels' included (a list's items under the list's key)."""
    keys: set[str] = set()
    for name, info in model.model_fields.items():
        keys.add(prefix + name)
        for sub in _models(info.annotation):
            keys |= _model_keys(sub, f"{prefix}{name}.")
    return keys


def _yaml_keys(data: Any, prefix: str = "", free: tuple[str, ...] = ()) -> set[str]:
    """Every key of parsed YAML, dotted as `_model_keys` dots them; below a key in ``free`` (a mapping whose keys are
    names, not fields) only that key."""
    keys: set[str] = set()
    if isinstance(data, list):
        for item in data:
            keys |= _yaml_keys(item, prefix, free)
    elif isinstance(data, dict):
        for name, value in data.items():
            keys.add(prefix + name)
            if prefix + name not in free:
                keys |= _yaml_keys(value, f"{prefix}{name}.", free)
    return keys


def _protocol_reference() -> dict[str, Any]:
    """The README's protocol reference: the YAML block of its section "The protocol file"."""
    blocks = re.findall(r"^```yaml\n(.*?)^```", _section("The protocol file"), re.S | re.M)
    assert len(blocks) == 1, f"expected one YAML block in README.md's protocol reference, found {len(blocks)}"
    return yaml.safe_load(blocks[0])


def _method_keys() -> set[str]:
    return {f"method.settings.{name}" for method in METHODS for name in method_class(method).Settings.model_fields}


def test_the_readme_has_yaml_examples() -> None:
    assert len(_blocks()) >= 2  # a lab file, a protocol: a change to the extraction that finds none fails here


@pytest.mark.parametrize("index", range(len(YAML_BLOCKS)))
def test_each_yaml_example_loads(index: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A lab example loads and builds, a protocol example passes `hil check` on the repository's lab, as the
    README says they would."""
    block = _blocks()[index]
    path = tmp_path / "example.yaml"
    path.write_text(block, encoding="utf-8")
    if reads_as(yaml.safe_load(block)) == "protocol":
        monkeypatch.chdir(REPO)  # its lab: and output.root are relative to the working directory
        assert "OK" in check_protocol(path, REPO / "lab.yaml")
    else:
        monkeypatch.chdir(tmp_path)  # a traffic_log is made relative to it (not written by a check)
        lab = Lab.load(YamlDocument.read(path))
        try:
            lab.build()
        finally:
            lab.close()


def test_protocol_reference_names_every_key_the_code_accepts() -> None:
    accepted = _model_keys(Protocol) | _method_keys()
    documented = _yaml_keys(_protocol_reference(), free=("dataset.sha256",))
    assert sorted(accepted - documented) == [], "keys a protocol accepts that README.md's protocol reference lacks"
    assert sorted(documented - accepted) == [], "keys in README.md's protocol reference that no protocol accepts"


#: Keys the reference gives an example for, though they have a default: a layer's kind (a layer is exactly one of
#: them) and the method's settings (compared, key by key, with the method's own defaults).
EXAMPLES = {"model.layers.activation", "model.layers.batchnorm", "method.settings"}


def _differing_defaults(instance: BaseModel, prefix: str = "") -> list[str]:
    """The fields of a validated model (and its submodels) whose value is not the field's default; required ones
    are left out, having none, and `EXAMPLES`."""
    differing = []
    for name, info in type(instance).model_fields.items():
        value = getattr(instance, name)
        items = value if isinstance(value, list) else [value]
        if any(isinstance(item, BaseModel) for item in items):
            for item in items:
                if isinstance(item, BaseModel):
                    differing += _differing_defaults(item, f"{prefix}{name}.")
        elif not info.is_required() and prefix + name not in EXAMPLES \
                and value != info.get_default(call_default_factory=True):
            differing.append(f"{prefix}{name}: {value!r}, default {info.get_default(call_default_factory=True)!r}")
    return differing


def test_protocol_reference_gives_the_code_defaults() -> None:
    """Every key the reference shows that has a default is shown at it (the required ones, with examples)."""
    reference = _protocol_reference()
    protocol = Protocol.model_validate(reference)
    differing = _differing_defaults(protocol)
    settings = method_class(protocol.method.name).Settings.model_validate(protocol.method.settings)
    differing += _differing_defaults(settings, "method.settings.")
    assert differing == []


def test_lab_section_names_every_key_a_lab_file_accepts() -> None:
    section = _section("The lab file")
    named = set(re.findall(r"`([a-z_]+)", section))  # `key`, `key: value`
    named |= {key.rsplit(".", 1)[-1] for block in _blocks() if reads_as(yaml.safe_load(block)) != "protocol"
              for key in _yaml_keys(yaml.safe_load(block))}
    missing = sorted(key for key in _model_keys(LabConfig) if key.rsplit(".", 1)[-1] not in named)
    assert missing == [], "keys a lab file accepts that README.md's lab-file section does not name"


def _system_rows() -> dict[str, tuple[str, str]]:
    """The README's table of built-in systems: each kind's roles and settings cells."""
    rows = re.findall(r"^\| `([a-z_]+)` \| ([^|]*) \| ([^|]*) \|$", _section("The lab file"), re.M)
    return {kind: (roles, settings) for kind, roles, settings in rows}


def _setting_value(text: str) -> Any:
    """A setting's value as the table writes it (π for math.pi; 5.32e-7 is a number, as in hil's lab files)."""
    if text == "π":
        return math.pi
    try:
        return float(text)
    except ValueError:
        return yaml.safe_load(text)


def _same(documented: Any, default: Any) -> bool:
    if isinstance(default, (tuple, list)):
        return isinstance(documented, list) and len(documented) == len(default) and all(
            _same(d, c) for d, c in zip(documented, default, strict=True))
    if isinstance(default, (int, float)) and not isinstance(default, bool):
        return isinstance(documented, (int, float)) and math.isclose(documented, default, rel_tol=1e-9)
    return documented == default


@pytest.mark.parametrize("kind", sorted(BUILTIN["systems"]))
def test_systems_table_gives_each_setting_at_its_default(kind: str) -> None:
    """Each built-in system's row names its roles and every keyword argument its lab settings take, at the default
    of its ``__init__``."""
    cls = lookup("systems", kind)
    rows = _system_rows()
    assert kind in rows, f"README.md's table of systems has no row for {kind}"
    roles, cell = rows[kind]
    assert re.findall(r"`([a-z_]+)`", roles) == list(cls.roles)
    documented = {key: _setting_value(value) for key, value in re.findall(r"`([a-z_0-9]+): ([^`]+)`", cell)}
    parameters = {name: parameter.default for name, parameter in inspect.signature(cls.__init__).parameters.items()
                  if parameter.kind is parameter.KEYWORD_ONLY and name != "name"}
    assert sorted(documented) == sorted(parameters)
    differing = {key: (documented[key], default) for key, default in parameters.items()
                 if not _same(documented[key], default)}
    assert differing == {}


def _system_hooks() -> list[str]:
    """What the built-in systems set or write of `PhysicalSystem`'s own (a class attribute, a hook): what a system
    of one's own may need too."""
    from hil.systems.base import PhysicalSystem

    used = {name for kind in BUILTIN["systems"] for klass in lookup("systems", kind).__mro__
            if issubclass(klass, PhysicalSystem) and klass is not PhysicalSystem for name in vars(klass)}
    return sorted(name for name in used & set(vars(PhysicalSystem))
                  if not name.startswith("__") and name != "_abc_impl")


@pytest.mark.parametrize("name", _system_hooks())
def test_adding_a_system_names_each_hook_the_built_in_systems_use(name: str) -> None:
    """The README's way to a system of one's own named `kind`, `roles`, `_run`, `physics_model`, ... but not
    `theta_periodic`, which a system of phases (a Mach-Zehnder mesh's) sets so that training wraps θ rather than
    clamping it at its bounds, nor `rewrite_parameters` or `snapshot`."""
    system_part = _section("Adding a device").partition("**A protocol**")[2]
    assert f"`{name}" in system_part, f"README.md's paragraph on adding a system does not name {name}"


@pytest.mark.parametrize("driver", sorted(name for name, target in BUILTIN["instruments"].items()
                                          if target.startswith("drivers.")))
def test_drivers_section_names_each_driver_option(driver: str) -> None:
    """A driver's keyword arguments (its lab `settings:`) and its emulator's (`emulate: {...}`) are named in the
    README's Drivers section."""
    from hil.lab import FRAMEWORK_ARGUMENTS
    from hil.registry import load_target

    cls = lookup("instruments", driver)
    section = _section("Drivers")
    options = [name for name, parameter in inspect.signature(cls.__init__).parameters.items()
               if parameter.kind is parameter.KEYWORD_ONLY and name not in FRAMEWORK_ARGUMENTS]
    emulator = load_target(cls.emulator)
    options += [name for name in inspect.signature(emulator.__init__).parameters if name != "self"]
    assert [name for name in options if f"`{name}`" not in section] == []


@pytest.mark.parametrize("kind", sorted(BUILTIN["worlds"]))
def test_simulated_benches_section_names_each_world_and_its_config_sections(kind: str) -> None:
    """A world's `config:` sections (its Config's fields) are named in the README's section on simulated benches,
    with its presets."""
    cls = lookup("worlds", kind)
    section = _section("Simulated benches")
    named = set(re.findall(r"`([a-z_]+)`", section))
    assert kind in named
    assert sorted(set(cls.Config.model_fields) - named) == []
    assert sorted(set(cls.presets) - named) == []
