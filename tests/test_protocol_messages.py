"""What hil check says of a protocol's mistakes: where, what, and what to give instead."""

from pathlib import Path
from types import SimpleNamespace

import pytest

from hil.config import YamlDocument
from hil.errors import ConfigError
from hil.protocol import check_protocol, check_twin, load_protocol

REPO = Path(__file__).resolve().parent.parent


def test_an_oracle_twin_of_a_bench_system_says_why_and_the_kinds_to_give(tmp_path: Path) -> None:
    """It read 'an oracle twin needs a simulated system', nothing said of why, nor of the kinds that would do."""
    text = (REPO / "experiments" / "crossbar_pat_digits.yaml").read_text(encoding="utf-8")
    path = tmp_path / "p.yaml"
    path.write_text(text.replace("  kind: physics", "  kind: oracle"), encoding="utf-8")
    protocol, document = load_protocol(YamlDocument.read(path))
    bench = SimpleNamespace(instruments={"crossbar": object()})  # an instrument of no simulated world
    with pytest.raises(ConfigError) as caught:
        check_twin(protocol, bench, document)  # type: ignore[arg-type]
    assert str(caught.value) == (f"{path}:14: twin.kind: an oracle twin needs a simulated system (it is the world's "
                                 "hidden calibration), and 'crossbar' plays on the bench; give kind physics, neural or "
                                 "residual")


@pytest.mark.parametrize(("dataset", "layers", "said"), [
    # a first physical layer has no layer before it: the data give its inputs
    ("{name: vowels}", "[{physical: {}}, {linear: {out_features: 5}}]",
     "model.layers.0: the physical layer on 'crossbar' takes 64 inputs, but the vowels data have 12 features; put a "
     "linear layer of out_features: 64 before it"),
    ("{name: digits}", "[{linear: {out_features: 10}}, {activation: tanh}, {physical: {}}, {linear: {out_features: "
     "10}}]", "model.layers.2: the physical layer on 'crossbar' takes 64 inputs, but the layer before gives 10; give "
              "the linear layer before it out_features: 64"),
])
def test_a_physical_layer_of_another_width_is_told_where_its_inputs_come_from_and_the_fix(
        tmp_path: Path, dataset: str, layers: str, said: str) -> None:
    """A first physical layer on data of another width read 'the physical layer on 'crossbar' takes 64 inputs, but
    the layer before gives 12', of a layer that does not exist; and no message said what to change."""
    path = tmp_path / "p.yaml"
    path.write_text(f"name: p\nlab: {REPO / 'lab.yaml'}\nsystem: crossbar\ndataset: {dataset}\n"
                    f"model: {{layers: {layers}}}\nmethod: {{name: insilico}}\ntraining: {{epochs: 1}}\n"
                    f"output: {{root: {tmp_path}}}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        check_protocol(path)
    assert str(caught.value) == f"{path}:5: {said}"


def test_a_layer_of_two_kinds_is_said_in_words_with_the_fix() -> None:
    """It read "got ['linear', 'activation']", a Python list, and nothing to do."""
    text = (REPO / "experiments" / "crossbar_pat_digits.yaml").read_text(encoding="utf-8")
    text = text.replace("    - linear: {out_features: 10}", "    - {linear: {out_features: 10}, activation: tanh}")
    with pytest.raises(ConfigError, match=r"^p\.yaml:12: model\.layers\.1: a layer is exactly one of physical, linear, "
                                          r"activation, batchnorm; got linear and activation; make each a layer of its "
                                          r"own$"):
        load_protocol(YamlDocument.parse(text, "p.yaml"))


def test_a_protocol_without_lab_whose_default_lab_is_not_there_says_it_is_the_default(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A protocol that leaves lab: out, run where there is no lab.yaml, read "lab file 'lab.yaml' not found (relative
    to the working directory); name a lab file, e.g. lab.yaml": the very name it had looked for, as if written."""
    text = (REPO / "experiments" / "crossbar_pat_digits.yaml").read_text(encoding="utf-8")
    path = tmp_path / "p.yaml"
    path.write_text(text.replace("lab: lab.yaml\n", ""), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as caught:
        check_protocol(path)
    assert str(caught.value) == (f"{path}:1: lab: the protocol gives no lab:, and its default, lab.yaml, is not found "
                                 f"in the working directory, {Path.cwd()}; run hil in the lab file's folder, or give "
                                 "lab: the lab file's path")
