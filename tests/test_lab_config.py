"""hil.config's rules for the values of lab files and protocols: true and false are not numbers, wherever a number
goes (in a list, a tuple or a mapping), and are taken where the annotation takes them; numbers are read as written
(not as text, an integer not as 64.0); a seed fits every generator."""

import re
import sys
from typing import Any

import numpy as np
import pytest
import yaml
from pydantic import Field

from hil.config import MAX_BYTES, Seed, Strict, YamlDocument, dump_yaml, yaml_value
from hil.errors import ConfigError
from hil.lab import LabConfig
from hil.methods.base import NoSettings
from hil.protocol import EvaluationConfig, Protocol, TrainingConfig
from simulators.optical import OpticalTable


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
    firsts: list[int] = Field([1], min_length=1, max_length=2)


@pytest.mark.parametrize(("text", "expected"), [
    ("pair: [1.0, true]", r"^x\.yaml:1: pair\.1: expected a number \(got True\)$"),  # the item, not its list
    ("many: [1.0, 2.0, false]", r"^x\.yaml:1: many\.2: expected a number \(got False\)$"),
    ("gains: {left: 1.0, right: yes}", r"^x\.yaml:1: gains\.right: expected a number \(got True\)$"),
    ("seed: 4294967296", r"^x\.yaml:1: seed: Input should be less than or equal to 4294967295 \(got 4294967296\)$"),
    ("seed: -1", r"^x\.yaml:1: seed: Input should be greater than or equal to 0 \(got -1\)$"),
    ("seed: -1\nmany: [x]", r"^x\.yaml:2: many\.0: .* \(got 'x'\) \(and 1 more problem\)$"),
    ("pair: [1.0]", r"^x\.yaml:1: pair: too few items: item 1 is missing \(counting from 0\)$"),  # was 'required
    # field is missing' of a field written there
    ("parts:\n  - {size: 2}\n  - {sise: 3}", r"^x\.yaml:3: parts\.1\.sise: unknown key 'sise'; allowed: size$"),
    ("- pair\n- seed", r"^x\.yaml:1: expected a mapping of keys, got a list$"),
    # a model's place: pydantic said 'Input should be a valid dictionary or instance of Part'
    ("parts: [3]", r"^x\.yaml:1: parts\.0: expected a mapping of keys, got 3; allowed keys: size$"),
    ("parts: [null]", r"^x\.yaml:1: parts\.0: expected a mapping of keys, got null: no value; allowed keys: size$"),
    ("parts: [[1]]", r"^x\.yaml:1: parts\.0: expected a mapping of keys, got a list; allowed keys: size$"),
    ("gains: left", r"^x\.yaml:1: gains: expected a mapping of keys, got 'left'$"),  # 'a valid dictionary'
    # pydantic's 'List should have at least 1 item after validation, not 0'
    ("seed:", r"^x\.yaml:1: seed: Input should be a valid integer \(got null: no value\)$"),  # was '(got None)'
    ("firsts: []", r"^x\.yaml:1: firsts: expected at least 1 item, got 0$"),
    ("firsts: [1, 2, 3]", r"^x\.yaml:1: firsts: expected at most 2 items, got 3$"),

    ("seed: [1, 2]", r"^x\.yaml:1: seed: Input should be a valid integer$"),  # a list is not echoed in (got ...)
    ("seed: {a: 1}", r"^x\.yaml:1: seed: Input should be a valid integer$"),  # nor a mapping
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


class Switches(Strict):
    """A plugin world's config with a bool in every kind of place: alone, beside null or a mapping, in a mapping."""

    flag: bool = False
    maybe: bool | None = None
    emulate: bool | dict[str, Any] = False
    per_channel: dict[str, bool] = Field(default_factory=dict)
    pair: tuple[float, float] = (0.0, 0.0)


@pytest.mark.parametrize(("text", "expected"), [
    ("flag: 'no'", r"^x\.yaml:1: flag: expected true or false \(got 'no'\)$"),
    ("flag: 1", r"^x\.yaml:1: flag: expected true or false \(got 1\)$"),
    ("flag: 'off'", r"^x\.yaml:1: flag: expected true or false \(got 'off'\)$"),
    ("maybe: 0", r"^x\.yaml:1: maybe: expected true or false \(got 0\)$"),
    ("emulate: 1", r"^x\.yaml:1: emulate: expected true or false \(got 1\)"),
    ("per_channel:\n  a: true\n  b: 'yes'", r"^x\.yaml:3: per_channel\.b: expected true or false \(got 'yes'\)$"),
])
def test_a_bool_field_takes_true_or_false_only(text: str, expected: str) -> None:
    """Pydantic's lax mode took 1, 'no' and 'off' for a bool: a quoted word or a number there is a slip."""
    with pytest.raises(ConfigError, match=expected):
        YamlDocument.parse(text, "x.yaml").validate(Switches)


def test_bools_as_yaml_writes_them_are_taken_and_other_fields_stay_lax() -> None:
    """YAML's own no and on are bools; a list still fills a tuple (a strict model would refuse that)."""
    config = YamlDocument.parse("flag: on\nmaybe: no\nemulate: {port: 5}\nper_channel: {a: off}\npair: [1, 2]\n",
                                "x.yaml").validate(Switches)
    assert (config.flag, config.maybe, config.emulate, config.per_channel, config.pair) == \
        (True, False, {"port": 5}, {"a": False}, (1.0, 2.0))
    with pytest.raises(ValueError, match="boolean"):  # assignment is validated as strictly
        config.flag = 1


def test_every_bool_field_of_the_lab_protocol_and_simulator_models_is_strict() -> None:
    """The rule is in the base model, so the built-in models get it, and so does a world's config."""
    lab = YamlDocument.parse("worlds:\n  x:\n    kind: optical_table\n    realtime: 'no'\n", "lab.yaml")
    with pytest.raises(ConfigError, match=r"^lab\.yaml:4: worlds\.x\.realtime: expected true or false \(got 'no'\)$"):
        lab.validate(LabConfig)
    with pytest.raises(ConfigError, match=r"^p\.yaml:2: twin: expected true or false \(got 'off'\)$"):
        YamlDocument.parse("every_epoch: true\ntwin: 'off'\n", "p.yaml").validate(EvaluationConfig)
    with pytest.raises(ConfigError, match=r"^config\.shot\.shot_noise: expected true or false \(got 1\)$"):
        OpticalTable.resolve("realistic", {"shot": {"shot_noise": 1}})


@pytest.mark.parametrize(("text", "expected"), [
    ("seed: " + "9" * 300, r"^x\.yaml:1: seed: Input should be less than or equal to 4294967295 "
                           r"\(got 99999999999999999999…, 300 characters\)$"),
    ("flag: '" + "n" * 500 + "'", r"^x\.yaml:1: flag: expected true or false \(got 'nnnnnnnnnnnnnnnnnnn…, "
                                  r"502 characters\)$"),
    ("seed: 12345678901234567890123456789012345678901",  # 41 digits: long enough to be cut
     r"\(got 12345678901234567890…, 41 characters\)$"),
    ("seed: 1234567890123456789012345678901234567890",  # 40: shown whole
     r"\(got 1234567890123456789012345678901234567890\)$"),
])
def test_a_long_value_is_shown_by_its_start_and_its_length(text: str, expected: str) -> None:
    """A number of hundreds of digits was echoed in full in the message's (got ...)."""
    class Both(Numbers, Switches):
        """Numbers and bools."""

    with pytest.raises(ConfigError, match=expected):
        YamlDocument.parse(text, "x.yaml").validate(Both)


@pytest.mark.parametrize(("text", "tag"), [
    ("description: !!binary aGVsbG8=", "!!binary"),  # was read as the text 'hello'
    ("description: !!set {a, b}", "!!set"),
    ("description: !!omap [a: 1]", "!!omap"),
    ("description: !!pairs [a: 1]", "!!pairs"),
    ("description: !!timestamp 2024-01-01", "!!timestamp"),
    ("description: !!python/object:os.system x", "!!python/object:os.system"),
    ("description: !!python/str x", "!!python/str"),
    ("description: !local x", "!local"),
])
def test_a_tag_that_makes_no_plain_value_is_refused_at_its_line(text: str, tag: str) -> None:
    """Every tag but those of text, numbers, true/false, null, lists and mappings is refused in the same words,
    wherever it is: a field of any type, or an ``Any`` one whose value would reach a driver or a world."""
    message = (f"tag {tag} refused: hil reads plain values only (text, numbers, true/false, null, lists and "
               "mappings); remove the tag")
    with pytest.raises(ConfigError, match=rf"^x\.yaml:1: description: {re.escape(message)}$"):
        YamlDocument.parse(text, "x.yaml")
    nested = f"worlds:\n  x:\n    kind: optical_table\n    config:\n      {text.replace('description', 'a')}\n"
    with pytest.raises(ConfigError, match=rf"^x\.yaml:5: worlds\.x\.config\.a: {re.escape(message)}$"):
        YamlDocument.parse(nested, "x.yaml")
    with pytest.raises(yaml.YAMLError, match=re.escape(message)):  # a command line's KEY=VALUE
        yaml_value(text.partition(": ")[2])


def test_tags_of_plain_values_are_taken_and_dates_and_equals_signs_are_text() -> None:
    """YAML 1.1's implicit dates (and ``=``, a 'value' key) read as text, as in YAML 1.2: a date is no plain
    value, and ``=`` was refused as a tag that no constructor knew."""
    data = YamlDocument.parse("a: !!str 12\nb: !!float 1\nc: !!int '3'\nd: 2024-01-01\ne: =\nf: 2024-01-01 10:00:00\n"
                              "2024-01-02: g\n").data
    assert data == {"a": "12", "b": 1.0, "c": 3, "d": "2024-01-01", "e": "=", "f": "2024-01-01 10:00:00",
                    "2024-01-02": "g"}
    assert yaml_value("2024-01-01") == "2024-01-01"


class Required(Strict):
    """A protocol's shape: a field that must be given, beside one that may be."""

    training: Part
    seed: int = 0


@pytest.mark.parametrize(("text", "expected"), [
    # a misspelt required key is two problems, the key that is not known and the one that is then missing: the
    # first names the line and the word to correct; 'training: required field is missing' at line 1 did neither
    ("seed: 1\ntrainng: {size: 2}", r"^x\.yaml:2: trainng: unknown key 'trainng'; allowed: training, seed "
                                    r"\(and 1 more problem\)$"),
    ("training: {sise: 2}\n", r"^x\.yaml:1: training\.sise: unknown key 'sise'; allowed: size$"),
    ("seed: 1\n", r"^x\.yaml:1: training: required field is missing$"),  # missing alone: still said so
])
def test_a_misspelt_required_key_is_reported_as_the_unknown_key_at_its_line(text: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        YamlDocument.parse(text, "x.yaml").validate(Required)


class Sections(Strict):
    """A protocol's shape: a section that must be given, beside one that may be."""

    training: Part
    evaluation: Part = Part()


def test_a_missing_field_gives_way_only_to_an_unknown_key_beside_it() -> None:
    """An unknown key in another section is no misspelling of the missing field: the missing one is reported."""
    with pytest.raises(ConfigError, match=r"^x\.yaml:1: training: required field is missing \(and 1 more problem\)$"):
        YamlDocument.parse("evaluation: {sise: 2}\n", "x.yaml").validate(Sections)
    with pytest.raises(ConfigError, match=r"^x\.yaml:1: trainig: unknown key 'trainig'; allowed: training, evaluation "
                                          r"\(and 1 more problem\)$"):
        YamlDocument.parse("trainig: {size: 2}\n", "x.yaml").validate(Sections)


class Column(Strict):
    """A world's config whose default is a mapping that reads like a schema: it is a value, and stays as written."""

    column: dict[str, str] = Field(default={"name": "on", "type": "bool"})
    flag: bool = False


def test_a_default_value_is_left_as_written_by_the_strict_bool_rule() -> None:
    assert Column().column == {"name": "on", "type": "bool"}
    assert YamlDocument.parse("flag: true\n", "x.yaml").validate(Column).column == {"name": "on", "type": "bool"}


def test_a_folder_given_for_a_yaml_file_is_refused_as_a_folder(tmp_path) -> None:
    """``hil check experiments`` said 'cannot read: [Errno 21] Is a directory: ...'."""
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(tmp_path))}: a folder, not a file; name a YAML file in "
                                          r"it$"):
        YamlDocument.read(tmp_path)


def test_a_file_that_cannot_be_read_is_said_without_errno_or_its_path_again(tmp_path) -> None:
    """A symbolic link to itself said 'loop.yaml: cannot read: [Errno 40] Too many levels of symbolic links:
    'loop.yaml''."""
    loop = tmp_path / "loop.yaml"
    loop.symlink_to(loop)
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(loop))}: cannot read: Too many levels of symbolic links; "
                                          r"name a YAML file you can read$"):
        YamlDocument.read(loop)


def test_a_file_far_larger_than_a_yaml_file_is_refused_before_it_is_read_whole(tmp_path) -> None:
    """``hil devices --lab /dev/zero`` (a mistyped path) read until memory ran out: a MemoryError traceback. A
    sparse file stands in for the device: refused after MAX_BYTES, one line naming it."""
    big = tmp_path / "big.yaml"
    with big.open("wb") as file:
        file.truncate(MAX_BYTES + 1)
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(big))}: more than 64 MiB, far more than a lab file or "
                                          r"protocol holds; name the YAML file$"):
        YamlDocument.read(big)
    (tmp_path / "crlf.yaml").write_bytes(b"a: 1\r\nb: 2\rc: [\r\n")  # lines as read_text read them
    with pytest.raises(ConfigError, match=r"^.*crlf\.yaml:4: c: invalid YAML"):
        YamlDocument.read(tmp_path / "crlf.yaml")


def test_a_file_of_exactly_max_bytes_is_read_and_one_byte_more_is_refused(tmp_path, monkeypatch) -> None:
    """The limit is on more than MAX_BYTES: a file of the limit itself is read (a smaller limit stands in)."""
    import hil.config

    monkeypatch.setattr(hil.config, "MAX_BYTES", 16)
    path = tmp_path / "limit.yaml"
    path.write_bytes(b"a: 1\nb: 2222222\n")  # 16 bytes
    assert YamlDocument.read(path).data == {"a": 1, "b": 2222222}
    path.write_bytes(b"a: 1\nb: 22222222\n")
    with pytest.raises(ConfigError, match=r"more than 0 MiB, far more than a lab file"):
        YamlDocument.read(path)


def test_a_file_of_old_mac_line_ends_is_located_by_its_lines(tmp_path) -> None:
    """Lines ended by a lone CR count as lines, as read_text read them, where hil finds a line itself (a control
    character)."""
    path = tmp_path / "cr.yaml"
    path.write_bytes(b"a: 1\rb: 2\rc: \x01\n")
    with pytest.raises(ConfigError, match=r"^.*cr\.yaml:3: c: invalid YAML: character U\+0001"):
        YamlDocument.read(path)


#: A protocol whose every number is as written, for the next test to spoil one of.
PROTOCOL = """name: p
system: s
seed: 0
dataset: {name: digits}
model:
  layers:
    - linear: {out_features: 10}
twin:
  collect: {thetas: 24}
method: {name: pat}
training:
  epochs: 2
  batch_size: 64
  lr: 0.1
"""


@pytest.mark.parametrize(("old", "new", "expected"), [
    ("lr: 0.1", "lr: 1e-320", r"^x\.yaml:14: training\.lr: too small for the float32 the model computes in "
                              r"\(least 1\.18e-38\): it would train nothing; give a learning rate such as 0\.01 "
                              r"\(got 1e-320\)$"),
    ("lr: 0.1", "lr: 0.1\n  physical_lr: 1e-39", r"^x\.yaml:15: training\.physical_lr: too small for the float32"),
    ("collect: {thetas: 24}", "collect: {thetas: 24}\n  fit: {lr: 5e-324}", r"^x\.yaml:10: twin\.fit\.lr: too small"),
])
def test_a_learning_rate_that_float32_rounds_to_nothing_is_refused(old: str, new: str, expected: str) -> None:
    """A learning rate of 1e-320 was taken (more than 0), and rounded to 0 in float32: a run that trained nothing."""
    assert old in PROTOCOL
    with pytest.raises(ConfigError, match=expected):
        YamlDocument.parse(PROTOCOL.replace(old, new), "x.yaml").validate(Protocol)
    small = YamlDocument.parse(PROTOCOL.replace("lr: 0.1", "lr: 1e-30"), "x.yaml").validate(Protocol)
    assert small.training.lr == 1e-30


@pytest.mark.parametrize(("written", "expected"), [
    ("0", r"training\.lr: Input should be greater than 0 \(got 0\)$"),
    ("-0.1", r"training\.lr: Input should be greater than 0 \(got -0\.1\)$"),  # not "too small for float32"
    ("1000001", r"training\.lr: Input should be less than or equal to 1000000 \(got 1000001\)$"),
    ("1.1754943508222875e-38", None),  # float32's smallest normal number itself (LR_MIN) trains
    ("1e6", None),  # LR_MAX itself
])
def test_a_learning_rates_bounds_are_said_and_its_ends_are_taken(written: str, expected: str | None) -> None:
    document = YamlDocument.parse(PROTOCOL.replace("lr: 0.1", f"lr: {written}"), "x.yaml")
    if expected is None:
        assert document.validate(Protocol).training.lr == float(written)
    else:
        with pytest.raises(ConfigError, match=expected):
            document.validate(Protocol)


@pytest.mark.parametrize(("written", "expected"), [
    ("seed: '3'", r"^x\.yaml:3: seed: Input should be a valid integer; write a whole number such as 3, unquoted "
                  r"\(got '3'\)$"),  # not "such as 3 or 0.5": 0.5 is then refused
    ("batch_size: 64.0", r"^x\.yaml:13: training\.batch_size: Input should be a valid integer; write a whole number, "
                         r"without a point or an exponent \(got 64\.0\)$"),
    ("thetas: 1e3", r"^x\.yaml:9: twin\.collect\.thetas: Input should be a valid integer; write a whole number"),
    ("lr: '0.1'", r"^x\.yaml:14: training\.lr: Input should be a valid number; write a plain number such as 3 or "
                  r"0\.5, unquoted \(got '0\.1'\)$"),
    ("lr: +.5", r"^x\.yaml:14: training\.lr: Input should be a valid number; write a plain number such as 3 or 0\.5, "
                r"unquoted \(got '\+\.5'\)$"),  # YAML 1.1 reads +.5 as text
    ("out_features: '10'", r"^x\.yaml:7: model\.layers\.0\.linear\.out_features: Input should be a valid integer; "
                           r"write a whole number such as 3, unquoted \(got '10'\)$"),
    ("epochs: two", r"^x\.yaml:12: training\.epochs: Input should be a valid integer; write a whole number such as 3, "
                    r"unquoted \(got 'two'\)$"),
])
def test_a_protocols_numbers_are_read_as_written(written: str, expected: str) -> None:
    """Pydantic's lax mode took 64.0 and '3' for an integer and '0.1' for a number: a protocol's numbers are now as
    strict as its bools (and a lab file's), by one rule of `Strict`."""
    key = written.partition(":")[0]
    text = re.sub(rf"{key}: [^,}}\n]+", written, PROTOCOL)
    assert text != PROTOCOL
    YamlDocument.parse(PROTOCOL, "x.yaml").validate(Protocol)
    with pytest.raises(ConfigError, match=expected):
        YamlDocument.parse(text, "x.yaml").validate(Protocol)


def test_an_integer_is_taken_where_a_number_goes_and_a_lab_files_numbers_are_as_strict() -> None:
    training = YamlDocument.parse("epochs: 2\nlr: 1\n", "x.yaml").validate(TrainingConfig)
    assert training.lr == 1.0 and isinstance(training.lr, float)
    with pytest.raises(ConfigError, match=r"^lab\.yaml:4: instruments\.awg\.timeout_s: Input should be a valid number; "
                                          r"write a plain number such as 3 or 0\.5, unquoted \(got '2'\)$"):
        YamlDocument.parse("instruments:\n  awg:\n    driver: keysight_33500b\n    timeout_s: '2'\n    resource: x\n",
                           "lab.yaml").validate(LabConfig)
    with pytest.raises(ConfigError, match=r"^lab\.yaml:3: worlds\.x\.seed: Input should be a valid integer"):
        YamlDocument.parse("worlds:\n  x:\n    seed: 1.0\n    kind: optical_table\n", "lab.yaml").validate(LabConfig)
    with pytest.raises(ValueError, match="valid integer"):  # assignment is validated as strictly
        training.epochs = "3"  # type: ignore[assignment]


def test_numpy_scalars_from_python_are_their_python_values_and_as_strict() -> None:
    """A value of a numpy sweep (``for rows in np.arange(…)``) was refused as "not a valid integer" by every integer
    field, at construction and at assignment; a numpy number or bool is still no integer."""
    training = TrainingConfig(epochs=np.int64(3), lr=np.float32(0.5))
    training.batch_size = np.int32(16)
    assert (training.epochs, training.batch_size, training.lr) == (3, 16, 0.5)
    assert type(training.epochs) is int and type(training.batch_size) is int
    for value in (np.float64(3.0), np.bool_(True)):
        with pytest.raises(ValueError, match="valid integer"):
            training.epochs = value  # type: ignore[assignment]
    evaluation = EvaluationConfig.model_validate({"twin": np.bool_(False)})
    assert evaluation.twin is False
    with pytest.raises(ValueError, match="valid boolean"):
        EvaluationConfig.model_validate({"twin": np.int64(0)})
    assert OpticalTable.resolve("realistic", {"slm": {"bit_depth": np.uint8(6)}}).slm.bit_depth == 6


@pytest.mark.parametrize(("written", "problem"), [
    ("1:20", "YAML 1.1 reads 1:20 as the base-60 number 80; quote it if it is text, or write the number you mean"),
    ("-1:20.5", "YAML 1.1 reads -1:20.5 as the base-60 number -80.5; quote it if it is text, or write the number "
                "you mean"),
    ("190:20:30", "YAML 1.1 reads 190:20:30 as the base-60 number 685230;"),
    ("017", "YAML 1.1 reads 017, with its leading zero, as the octal number 15; write the number without the "
            "leading zero, or quote it if it is text"),
    ("+0_17", "YAML 1.1 reads +0_17, with its leading zero, as the octal number 15;"),
    ("08", "YAML 1.1 reads 08, with its leading zero, as text; write the number without the leading zero, or quote "
           "it if it is text"),
])
def test_a_number_yaml_1_1_reads_otherwise_than_written_is_refused_at_its_line(written: str, problem: str) -> None:
    """PyYAML read 1:20 as 80 and 017 as 15, in a lab file as in a protocol: no scientist means that."""
    for text, where in ((f"name: p\ntraining:\n  epochs: {written}\n", r"x\.yaml:3: training\.epochs"),
                        (f"systems:\n  s:\n    settings: [1, {written}]\n", r"x\.yaml:3: systems\.s\.settings"),
                        (f"a:\n  {written}: b\n", r"x\.yaml:2: a\S*")):  # a key too
        with pytest.raises(ConfigError, match=rf"^{where}: {re.escape(problem)}"):
            YamlDocument.parse(text, "x.yaml")
    with pytest.raises(yaml.constructor.ConstructorError, match=re.escape(problem)):  # hil emulate's KEY=VALUE,
        yaml_value(written)  # which says the problem of a ConstructorError


def test_numbers_yaml_reads_as_written_are_taken_and_quoted_text_stays_text() -> None:
    """Hexadecimal, binary and underscores mean what they say; a quoted time, or a name with a leading zero, is
    text; and `dump_yaml` quotes such text, so a run's resolved files read back."""
    data = YamlDocument.parse("a: 0x1F\nb: 0b101\nc: 1_000\nd: 010.5\ne: 0\nf: '1:20'\ng: '08'\nh: 1:60\ni: 0.5\n"
                              "j: -0\n").data
    assert data == {"a": 31, "b": 5, "c": 1000, "d": 10.5, "e": 0, "f": "1:20", "g": "08", "h": "1:60", "i": 0.5,
                    "j": 0}
    text = {"t": "1:20", "u": "08", "v": "017", "w": "-1:20.5", "x": "0_1"}
    assert YamlDocument.parse(dump_yaml(text)).data == text


def test_nan_and_infinity_are_refused_wherever_a_number_goes() -> None:
    """YAML reads .nan and .inf; no limit, setting or protocol number takes them (a lab's limits and settings are
    pinned in test_lab)."""
    with pytest.raises(ConfigError, match=r"^x\.yaml:1: lr: Input should be a finite number \(got inf\)$"):
        YamlDocument.parse("lr: .inf\nepochs: 1\n", "x.yaml").validate(TrainingConfig)
    with pytest.raises(ConfigError, match=r"^config\.shot\.read_noise_e: Input should be a finite number \(got nan\)$"):
        OpticalTable.resolve("realistic", {"shot": {"read_noise_e": yaml_value(".nan")}})


def test_a_value_tagged_as_text_is_text_whatever_it_looks_like() -> None:
    """``!!str`` says what YAML is to read: ``!!str 017`` and ``!!str 1:20`` are text, as quoted, not refused as a
    number YAML 1.1 misreads."""
    assert YamlDocument.parse("a: !!str 017\nb: !!str 1:20\nc: !!str 08\n").data == {"a": "017", "b": "1:20",
                                                                                  "c": "08"}


def test_text_that_reads_as_a_refused_number_after_a_sign_is_written_quoted() -> None:
    """`dump_yaml` writes a run's resolved files: a text "-08" or "+08" written plain would be refused when the run
    folder's file is read back (a resume, `hil check`)."""
    text = {"a": "-08", "b": "+08", "c": "-0_1", "d": "+017"}
    assert YamlDocument.parse(dump_yaml(text)).data == text


class Method(Strict):
    """A protocol's method part, whose settings model may have no fields (a method without settings)."""

    settings: NoSettings = Field(default_factory=NoSettings)


def test_a_key_where_none_is_allowed_says_so() -> None:
    """A setting given to a method that takes none read 'unknown key 'refine_every'' and stopped there, as if the
    allowed keys were unknown."""
    with pytest.raises(ConfigError, match=r"^x\.yaml:1: settings\.refine_every: unknown key 'refine_every'; none is "
                                          r"allowed here$"):
        YamlDocument.parse("settings: {refine_every: 1}", "x.yaml").validate(Method)
    with pytest.raises(ConfigError, match=r"^x\.yaml:1: settings\.a: unknown key 'a'; none is allowed here$"):
        YamlDocument.parse("settings: {a: 1}", "x.yaml").validate(NoSettings, ("settings",))  # as build_method does


@pytest.mark.parametrize(("model", "text", "control"), [
    ("OutputConfig", 'root: "C:\\temp\\runs"', r"'\\t'"),
    ("TwinConfig", 'from_run: "D:\\runs\\new"', r"'\\r'"),
])
def test_a_windows_path_in_double_quotes_whose_backslashes_yaml_reads_as_escapes_is_refused(
        model: str, text: str, control: str) -> None:
    """A Windows path "C:\\temp\\runs" in double quotes is C:, a tab, emp, a carriage return and uns to YAML: hil check
    passed it, and the run failed as Windows refused the name, or made a folder of that name elsewhere. In single
    quotes, the path is taken as written."""
    from hil import protocol

    config = getattr(protocol, model)
    field = text.partition(":")[0]
    with pytest.raises(ConfigError, match=rf"^p\.yaml:1: {field}: holds the control character {control}: in double "
                                          r"quotes, YAML reads a backslash [^\n]* write a Windows path in single "
                                          r"quotes or with / "):
        YamlDocument.parse(text, "p.yaml").validate(config)
    single = YamlDocument.parse(text.replace('"', "'"), "p.yaml").validate(config)
    assert getattr(single, field) == text.partition(": ")[2].strip('"')


def test_a_long_windows_path_of_short_names_is_taken_and_a_long_name_in_it_named(monkeypatch) -> None:
    """A Windows path's names are separated by backslashes: one of 300 characters in short names (taken where long
    paths are enabled) was refused as a single name longer than 255 bytes."""
    from hil.protocol import OutputConfig

    short, long = "D:\\" + "\\".join(["x" * 99] * 3), "D:\\runs\\" + "y" * 256 + "\\a"
    with monkeypatch.context() as windows:  # as Windows names itself, for these two checks alone
        windows.setattr(sys, "platform", "win32")
        taken = YamlDocument.parse(f"root: '{short}'", "p.yaml").validate(OutputConfig).root
        with pytest.raises(ConfigError, match=r"^p\.yaml:1: root: the name 'yyy[^\n]* in it is longer than the 255 "):
            YamlDocument.parse(f"root: '{long}'", "p.yaml").validate(OutputConfig)
    assert taken == short


@pytest.mark.parametrize(("model", "text", "said"), [
    ("TwinConfig", "from_run: 'runs\\aux'", "the name 'aux' in it is the name of a Windows device"),
    ("InstrumentConfig", "driver: keithley_2450\nemulate: true\ntraffic_log: logs/smu:1.log",
     r"the name 'smu:1\.log' in it holds ':'"),
    ("OutputConfig", "root: 'D:\\runs. '", r"the name 'runs\. ' in it ends in a dot or a space, which Windows drops"),
    ("DatasetConfig", "name: idx\npath: data/a?b", r"the name 'a\?b' in it holds '\?'"),
])
def test_a_name_windows_takes_for_no_file_is_refused_at_its_line_there(model: str, text: str, said: str,
                                                                        monkeypatch) -> None:
    """Windows takes no file or folder named aux (a device), with a : (a hidden stream of the file before it), or
    ending in a dot or a space (dropped): hil check passed such a path there, and the run failed as it made the
    folder, or wrote its traffic log into a hidden stream. Elsewhere such names are files like any other."""
    from hil import lab, protocol

    config = getattr(protocol, model, None) or getattr(lab, model)
    field = text.splitlines()[-1].partition(":")[0]
    line = text.count("\n") + 1
    assert YamlDocument.parse(text, "p.yaml").validate(config) is not None  # taken here
    with monkeypatch.context() as windows:  # as Windows names itself, for this check alone
        windows.setattr(sys, "platform", "win32")
        with pytest.raises(ConfigError, match=rf"^p\.yaml:{line}: {field}: {said}: Windows takes no such file or "
                                              r"folder name; rename it \(got "):
            YamlDocument.parse(text, "p.yaml").validate(config)


def test_windows_takes_a_drive_a_resource_and_ordinary_names(monkeypatch) -> None:
    """A drive's colon, a VISA resource's and a COM port are no file names Windows refuses."""
    from hil.lab import InstrumentConfig
    from hil.protocol import OutputConfig

    with monkeypatch.context() as windows:  # as Windows names itself, for these checks alone
        windows.setattr(sys, "platform", "win32")
        root = YamlDocument.parse("root: 'C:\\Users\\lab\\runs.d\\v1.2'", "p.yaml").validate(OutputConfig).root
        resources = [YamlDocument.parse(f"driver: keithley_2450\nresource: '{resource}'", "p.yaml")
                     .validate(InstrumentConfig).resource for resource in ("COM3", "TCPIP::10.0.0.2::5025::SOCKET")]
    assert root == "C:\\Users\\lab\\runs.d\\v1.2" and resources == ["COM3", "TCPIP::10.0.0.2::5025::SOCKET"]
