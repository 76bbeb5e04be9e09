"""hil.config's rules for the values of lab files and protocols: true and false are not numbers, wherever a number
goes (in a list, a tuple or a mapping), and are taken where the annotation takes them; a seed fits every generator."""

from typing import Any

import pytest
from pydantic import Field

from hil.config import Seed, Strict, YamlDocument
from hil.errors import ConfigError


class Part(Strict):
    """An item of a list of models, such as a protocol's layers."""

    size: int = 1


class Numbers(Strict):
    """A plugin world's config, with every kind of place a number goes."""

    pair: tuple[float, float] = (0.0, 0.0)
    many: tuple[float, ...] = ()
    gains: dict[str, float] = Field(default_factory=dict)
    flag_or_count: bool | int = 0
    anything: Any = None
    seed: Seed = 0
    parts: list[Part] = Field(default_factory=list)


@pytest.mark.parametrize(("text", "expected"), [
    ("pair: [1.0, true]", r"^x\.yaml:1: pair: expected numbers, not true or false"),
    ("many: [1.0, 2.0, false]", r"^x\.yaml:1: many: expected numbers, not true or false"),
    ("gains: {left: 1.0, right: yes}", r"^x\.yaml:1: gains: expected numbers, not true or false"),
    ("seed: 4294967296", r"^x\.yaml:1: seed: Input should be less than or equal to 4294967295 \(got 4294967296\)$"),
    ("seed: -1", r"^x\.yaml:1: seed: Input should be greater than or equal to 0 \(got -1\)$"),
    ("seed: -1\nmany: [x]", r"^x\.yaml:2: many\.0: .* \(got 'x'\) \(and 1 more problem\)$"),
    ("pair: [1.0]", r"^x\.yaml:1: pair: too few items: item 1 is missing \(counting from 0\)$"),  # was 'required
    # field is missing' of a field written there
    ("parts:\n  - {size: 2}\n  - {sise: 3}", r"^x\.yaml:3: parts\.1\.sise: unknown key 'sise'; allowed: size$"),
    ("- pair\n- seed", r"^x\.yaml:1: expected a mapping of keys, got list$"),
])
def test_a_value_no_generator_or_number_takes_is_refused_at_its_line(text: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        YamlDocument.parse(text, "x.yaml").validate(Numbers)


def test_true_and_false_are_taken_where_the_annotation_takes_them() -> None:
    """Only a place that takes nothing but numbers refuses them: ``bool | int`` and ``Any`` take them as written."""
    config = YamlDocument.parse("flag_or_count: true\nanything: false\nseed: 4294967295\n").validate(Numbers)
    assert (config.flag_or_count, config.anything, config.seed) == (True, False, 2**32 - 1)


def test_a_flow_mapping_the_file_ends_in_is_reported_on_its_line_alone() -> None:
    """Where YAML notices an open ``{`` on the line it opens on, no 'on line N' repeats that line."""
    with pytest.raises(ConfigError, match=r"^x\.yaml:1: a: invalid YAML: while parsing a flow mapping expected ',' or "
                                          r"'}', but got '<stream end>'$"):
        YamlDocument.parse("a: {b: 1", "x.yaml")
