"""Read YAML files into pydantic models, with errors that name the file, the line and the field.

Used by lab files and experiment protocols alike. Every model forbids unknown keys. The first problem found is
reported on one line as ``file:line: dotted.field: what is wrong``, with the allowed keys for an unknown key.
Numbers must be finite and written as numbers (unquoted; an integer without a point), and a bool true or
false. Values are plain YAML: a tag other than those of text, numbers, true/false, null, lists and mappings
(``!!binary``, ``!!set``, ``!!python/...``) is refused at its line.
"""

from __future__ import annotations

import math
import os
import re
import stat
import sys
from pathlib import Path
from typing import Annotated, Any, BinaryIO, TypeVar, get_args, get_origin

import numpy as np
import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    ValidationError,
)
from pydantic_core import CoreSchema, core_schema

from hil.errors import ConfigError, counted

M = TypeVar("M", bound=BaseModel)


_INT, _FLOAT = "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"
#: An integer with a leading zero, which YAML 1.1 reads as octal (017 as 15), or as text where it is not (08).
_LEADING_ZERO = re.compile(r"^[-+]?0[0-9_]+$")


class _Refused(yaml.constructor.ConstructorError):
    """Valid YAML, but not a value a hil file holds: a tag that makes no plain value, or a number that YAML 1.1
    reads otherwise than it is written."""


class _Loader(yaml.SafeLoader):
    """YAML's safe loader, reading numbers in exponent notation as YAML 1.2 does: ``1e-3``, ``1.5e7`` and ``2E+6``
    are floats, which YAML 1.1 (PyYAML) reads as text unless written with a point and a signed exponent. A plain
    number that YAML 1.1 reads otherwise than a scientist means is refused at its line: base 60 (``1:20`` is 80) and
    a leading zero (``017`` is the octal 15, ``08`` text). Hexadecimal, binary and ``1_000`` are read as written."""

    def compose_scalar_node(self, anchor: str | None) -> yaml.ScalarNode:
        event = self.peek_event()
        node = super().compose_scalar_node(anchor)
        if event.tag is None and event.style is None:  # plain, so resolved by YAML 1.1's rules
            if node.tag in (_INT, _FLOAT) and ":" in node.value:
                number = self.construct_object(node)
                raise _Refused(None, None, f"YAML 1.1 reads {node.value} as the base-60 number {number!r}; quote it "
                               "if it is text, or write the number you mean", node.start_mark)
            if _LEADING_ZERO.match(node.value):
                reading = f"the octal number {self.construct_object(node)}" if node.tag == _INT else "text"
                raise _Refused(None, None, f"YAML 1.1 reads {node.value}, with its leading zero, as {reading}; write "
                               "the number without the leading zero, or quote it if it is text", node.start_mark)
        return node


class _Dumper(yaml.SafeDumper):
    """YAML's safe dumper, quoting text that `_Loader` would read as a number (``"1e7"``), or refuse (``"08"``)."""


for _yaml in (_Loader, _Dumper):
    _yaml.add_implicit_resolver(_FLOAT, re.compile(r"^[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+$"),
                                list("-+0123456789."))
_Dumper.add_implicit_resolver(_INT, _LEADING_ZERO, list("-+0"))  # not plain text: 08 would be refused


def _construct_int(loader: _Loader, node: yaml.ScalarNode) -> int:
    """An integer as YAML reads it; one with more digits than Python converts is a YAML error at its line."""
    try:
        return yaml.SafeLoader.construct_yaml_int(loader, node)
    except ValueError:
        raise yaml.constructor.ConstructorError(
            None, None, f"an integer of {len(node.value)} characters is more than Python reads; give a smaller number",
            node.start_mark) from None


_Loader.add_constructor(_INT, _construct_int)

#: The tags of the values hil's files hold: text, numbers, true/false, null, lists and mappings (and ``<<`` merges).
PLAIN_TAGS = {f"tag:yaml.org,2002:{name}" for name in ("str", "int", "float", "bool", "null", "seq", "map", "merge")}


def _refuse_tag(loader: _Loader, node: yaml.Node) -> None:
    tag = node.tag.replace("tag:yaml.org,2002:", "!!")
    raise _Refused(None, None, f"tag {tag} refused: hil reads plain values only (text, numbers, true/false, null, "
                   "lists and mappings); remove the tag", node.start_mark)


for _tag in [*_Loader.yaml_constructors, None]:  # None: any tag without a constructor (!!python/..., !local)
    if _tag not in PLAIN_TAGS:
        _Loader.add_constructor(_tag, _refuse_tag)
# YAML 1.1's implicit dates (2024-01-01) and '=' read as text, as in YAML 1.2, rather than as a refused tag
_Loader.yaml_implicit_resolvers = {first: [(tag, pattern) for tag, pattern in resolvers if tag in PLAIN_TAGS]
                                   for first, resolvers in _Loader.yaml_implicit_resolvers.items()}


def yaml_value(text: str) -> Any:
    """One YAML value from ``text``, numbers read as in hil's files (`yaml.YAMLError` if it is not YAML)."""
    return yaml.load(text, Loader=_Loader)  # a SafeLoader: builds plain values only


def dump_yaml(data: Any) -> str:
    """``data`` as YAML that hil's files read back as the same values."""
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False)
Location = tuple[str | int, ...]


#: The scalar types `Strict` reads as written: an integer is not 64.0 nor "3", a number not "0.1", a bool not 1.
_AS_WRITTEN = ("bool", "int", "float")


def strict_scalars(schema: Any) -> Any:
    """A copy of a pydantic core schema whose every bool, integer and number is strict, wherever it is (in a union,
    a list, a mapping); the rest keeps lax mode, so that a YAML list still fills a tuple (``ConfigDict(strict=True)``
    would refuse it). A strict number still takes an integer, and each takes the numpy scalar of its kind."""
    if isinstance(schema, list):
        return [strict_scalars(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    copy = {key: value if key in ("default", "metadata") else strict_scalars(value) for key, value in schema.items()}
    if copy.get("type") in _AS_WRITTEN:
        copy["strict"] = True
        return core_schema.no_info_before_validator_function(_numpy_scalar_as_python, copy)
    return copy


def _numpy_scalar_as_python(value: Any) -> Any:
    """A numpy integer, number or bool given from Python (a value of a numpy sweep) is the Python one it holds."""
    return value.item() if isinstance(value, np.bool_ | np.integer | np.floating) else value


class Strict(BaseModel):
    """Base of every config model: unknown keys are errors, and values are validated on assignment too. A number
    must be written as one: not as text (``'3'``), nor as YAML's true and false (``epochs: true`` is a mistake), and
    an integer without a point (``64.0``); an integer is a number. A bool must be true or false: not 1, nor ``'no'``
    (YAML's unquoted no is already false; quoted, or a number, it is a slip that pydantic's lax mode would take).
    From Python, a numpy scalar is its Python value (``np.int64(3)`` is the integer 3, ``np.bool_(True)`` true)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @classmethod
    def __get_pydantic_core_schema__(cls, source: type[BaseModel], handler: GetCoreSchemaHandler) -> CoreSchema:
        return strict_scalars(handler(source))


#: The largest seed every generator used here accepts (numpy's take 32 bits).
SEED_MAX = 2**32 - 1
#: A random seed: a non-negative integer that every generator used here accepts.
Seed = Annotated[int, Field(ge=0, le=SEED_MAX)]
#: The longest name of a file or folder (bytes in UTF-8), and the longest path, that the system's calls take: a longer
#: one fails them (``File name too long``) wherever it is first used, not at the file's line.
NAME_MAX, PATH_MAX = 255, 4095


def expand_home(path: str) -> str:
    """``path`` with a leading ``~`` or ``~user`` expanded to that home folder, as a shell does; a `ValueError` where
    that home is not known (HOME unset and this user not in the system's table, a container's ``--user``; no such
    user), which pathlib's expansion raises as a bare "Could not determine home directory"."""
    expanded = os.path.expanduser(path)
    if expanded.startswith("~"):
        home = re.split(r"[\\/]", expanded, maxsplit=1)[0]
        raise ValueError(f"{home} stands for your home folder, which is not known here (HOME is not set); set HOME, "
                         "or give a path without ~" if home == "~" else f"{home} stands for the home folder of the "
                         f"user {home[1:]}, whom this system does not know; give a path without ~")
    return expanded


def _openable(path: str) -> str:
    """``path`` with a leading ``~`` expanded (`expand_home`), if the system can open it: no NUL character, no other
    control character (which Windows refuses in a name), no name longer than `NAME_MAX` nor the whole longer than
    `PATH_MAX`."""
    if "\0" in path:
        raise ValueError("a path cannot hold the character NUL (\\0); remove it")
    control = next((character for character in path if character < " "), None)
    if control is not None:  # "C:\temp\runs" in double quotes: YAML reads \t and \r as a tab and a carriage return
        raise ValueError(f"holds the control character {control!r}: in double quotes, YAML reads a backslash and the "
                         "letter after it (\\t, \\n, \\r) as one; write a Windows path in single quotes or with / "
                         "(C:/temp/runs)")
    path = expand_home(path)
    names = re.split(r"[\\/]", path) if sys.platform == "win32" else path.split("/")  # \ separates names on Windows
    long = next((part for part in names if len(part.encode()) > NAME_MAX), None)
    if long is not None:
        which = "its name" if long == path else f"the name {shown(long)} in it"
        raise ValueError(f"{which} is longer than the {NAME_MAX} bytes a file or folder's name may have; shorten it")
    if len(path.encode()) > PATH_MAX:
        raise ValueError(f"longer than the {PATH_MAX} bytes a path may have; shorten it")
    return path


#: What Windows refuses in a file or folder's name (a ``:`` past a drive's would name a hidden stream of a file)
_WINDOWS_REFUSED = re.compile(r'[<>:"|?*]')
#: The names of Windows' devices, which no file or folder there may take, with any extension (``aux``, ``nul.txt``)
_WINDOWS_DEVICE = re.compile(r"(?:con|prn|aux|nul|com[1-9]|lpt[1-9])(?:\..*)?", re.IGNORECASE)
#: What a Windows path begins with before its names: ``\\?\`` (a long path's, past 260 characters) or ``\\.\``,
#: then a drive (``C:``)
_WINDOWS_START = re.compile(r"(?:\\\\[?.]\\)?(?:[A-Za-z]:)?")


def _a_path(path: str) -> str:
    """A file or folder's path (`_openable`); on Windows, each of its names one Windows takes: none holding
    ``<>:"|?*`` (its start aside: ``C:``, ``\\\\?\\C:``), ending in a dot or a space (which Windows drops), or a
    device's name."""
    path = _openable(path)
    if sys.platform != "win32":
        return path
    for name in re.split(r"[\\/]", path[_WINDOWS_START.match(path).end():]):
        refused = _WINDOWS_REFUSED.search(name)
        why = f"holds {refused[0]!r}" if refused else \
            "ends in a dot or a space, which Windows drops" if name not in ("", ".", "..") and name[-1] in ". " else \
            "is the name of a Windows device" if _WINDOWS_DEVICE.fullmatch(name) else None
        if why is not None:
            raise ValueError(f"the name {shown(name)} in it {why}: Windows takes no such file or folder name; rename "
                             "it")
    return path


#: A path as a file writes it; a leading ``~`` is the home folder, as in a shell (``~/runs``, not ``./~/runs``).
UserPath = Annotated[str, AfterValidator(_a_path)]
#: An instrument's resource: a VISA resource, a URL, a ``COM`` port or a device path (`_openable`, and no more: its
#: ``::`` and ``COM3`` are no file names).
UserResource = Annotated[str, AfterValidator(_openable)]


#: The largest learning rate accepted: far above any useful one, and far below the float32 range, beyond which
#: the optimisers' arithmetic overflows (a traceback mid-run instead of an error at the file's line).
LR_MAX = 1e6
#: The smallest learning rate accepted: float32's smallest normal number. Below it the rate itself rounds to 0 (or
#: to a subnormal) in the float32 the model computes in, and training silently changes nothing.
LR_MIN = float(np.finfo(np.float32).tiny)


def _trains(lr: float) -> float:
    """A learning rate that float32 holds (`LR_MIN`)."""
    if lr < LR_MIN:
        raise ValueError(f"too small for the float32 the model computes in (least {LR_MIN:.3g}): it would train "
                         "nothing; give a learning rate such as 0.01")
    return lr


#: A learning rate (per step, of Adam or SGD): more than 0, as float32 holds it, and at most `LR_MAX`.
LearningRate = Annotated[float, Field(gt=0, le=LR_MAX), AfterValidator(_trains)]


#: The largest file read (bytes): a lab file or a protocol is a few kB; a device (``/dev/zero``) or a data file named
#: by mistake is refused after this much, not read until memory runs out.
MAX_BYTES = 64 * 2**20


def _pipe_opened(path: Path) -> BinaryIO:
    """The named pipe ``path`` opened to read without waiting for a program to open it to write, which may never come
    (a run folder's protocol.yaml made one by hand): without a writer, it reads as empty."""
    handle = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    os.set_blocking(handle, True)  # reads wait for a writer's data, once one has opened it
    return open(handle, "rb")


class YamlDocument:
    """A parsed YAML file: its data, the line of every key and item (1-based) for error messages, and the text it was
    parsed from (what a run folder keeps, even if the file changes afterwards)."""

    def __init__(self, data: Any, lines: dict[Location, int], source: str, text: str):
        self.data, self.lines, self.source, self.text = data, lines, source, text

    @classmethod
    def read(cls, path: str | Path | YamlDocument) -> YamlDocument:
        """The document of the file at ``path`` (a document given is returned as it is, read already)."""
        if isinstance(path, YamlDocument):
            return path
        path = Path(path)
        try:
            pipe = stat.S_ISFIFO(path.stat().st_mode)
            with _pipe_opened(path) if pipe else path.open("rb") as file:  # at most one byte past the limit: /dev/zero
                data = file.read(MAX_BYTES + 1)  # or a huge file is not read
            if pipe and not data:
                raise ConfigError("a named pipe that no program writes to; name a YAML file", source=str(path))
            if len(data) > MAX_BYTES:
                raise ConfigError(f"more than {MAX_BYTES // 2**20} MiB, far more than a lab file or protocol holds; "
                                  "name the YAML file", source=str(path))
            text = data.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")  # as read_text reads lines
        except FileNotFoundError:
            where = "" if path.is_absolute() else f" in the working directory, {Path.cwd()}"  # hil run from elsewhere
            raise ConfigError(f"file not found{where}", source=str(path)) from None
        except IsADirectoryError:
            raise ConfigError("a folder, not a file; name a YAML file in it", source=str(path)) from None
        except UnicodeDecodeError as error:
            raise cls._not_utf8(path, error) from None
        except OSError as error:
            raise ConfigError(f"cannot read: {error.strerror or error}; name a YAML file you can read",
                              source=str(path)) from None  # not "[Errno 40] ...: 'lab.yaml'", the path said twice
        return cls.parse(text, str(path))

    @staticmethod
    def _not_utf8(path: Path, error: UnicodeDecodeError) -> ConfigError:
        """The error for a file that is not UTF-8 text (``error``: decoding its bytes failed), at the line of its first
        byte that is not."""
        data = error.object
        line = data[:error.start].count(b"\n") + 1
        field = _field_near(data[:error.start].decode("utf-8"), line)
        return ConfigError(f"not UTF-8 text: byte 0x{data[error.start]:02X} is not a character in UTF-8; save "
                           "the file as UTF-8", source=str(path), line=line, field=field)

    @classmethod
    def parse(cls, text: str, source: str = "<string>") -> YamlDocument:
        try:
            loader = _Loader(text)  # checks the characters: a control character is a ReaderError
        except yaml.reader.ReaderError as error:
            line = text[:error.position].count("\n") + 1
            code = ord(error.character) if isinstance(error.character, str) else error.character
            raise ConfigError(f"invalid YAML: character U+{code:04X} (a control character) is not allowed; delete it",
                              source=source, line=line, field=_field_near(text, line)) from None
        try:
            node = loader.get_single_node()
            lines: dict[Location, int] = {}
            if node is not None:
                _index(node, (), lines, source)
            data = loader.construct_document(node) if node is not None else None
        except yaml.MarkedYAMLError as error:
            line, problem = _where_yaml_breaks(error)
            invalid = "" if isinstance(error, _Refused) else "invalid YAML: "
            raise ConfigError(f"{invalid}{problem}", source=source, line=line,
                              field=_field_near(text, line) if line else None) from None
        except yaml.YAMLError as error:
            raise ConfigError(f"invalid YAML: {' '.join(str(error).split())}", source=source) from None
        except RecursionError:
            raise ConfigError("invalid YAML: nested too deeply", source=source) from None
        finally:
            loader.dispose()
        return cls(data, lines, source, text)

    def line_of(self, location: Location) -> int | None:
        """The line of the deepest part of ``location`` that the file has (a missing key: its parent's line)."""
        for end in range(len(location), -1, -1):
            if location[:end] in self.lines:
                return self.lines[location[:end]]
        return None

    def error(self, message: str, location: Location) -> ConfigError:
        """A `ConfigError` at ``location`` in this file."""
        return ConfigError(message, source=self.source, line=self.line_of(location), field=dotted(location))

    def validate(self, model: type[M], location: Location = (), context: dict[str, Any] | None = None) -> M:
        """Validate the data (or the part at ``location``) against ``model`` (its validators given ``context``);
        the first error, located."""
        data = self.data
        for key in location:
            data = data[key]
        if data is None and not location:
            raise self.error("the file is empty", location)
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise self.error(not_a_mapping(data), location)
        try:
            return model.model_validate(data, context=context)
        except ValidationError as errors:
            first = _first_to_report(errors.errors())
            loc = location + _data_location(data, first["loc"])
            more = len(errors.errors()) - 1
            message = explain(first, model)
            if more:
                message += f" (and {more} more problem{'s' if more > 1 else ''})"
            raise self.error(message, loc) from None


def _first_to_report(errors: list[Any]) -> Any:
    """The error to report of pydantic's list: the first, except that a missing field beside an unknown key (a
    misspelt one, ``trainng:``) gives way to the unknown key, which names the line and the word to correct."""
    first = errors[0]
    if first["type"] == "missing":
        for error in errors:
            if error["type"] == "extra_forbidden" and error["loc"][:-1] == first["loc"][:-1]:
                return error
    return first


#: Where YAML reports a mistake inside a construct it was reading (a quoted text, a {...} or [...], a key without
#: its colon), the mistake is where that construct begins: the parser notices it lines later, or at the file's end.
_OPENED_EARLIER = ("while scanning a quoted scalar", "while scanning a double-quoted scalar",
                   "while scanning a single-quoted scalar", "while parsing a flow", "while scanning a simple key")


def _where_yaml_breaks(error: yaml.MarkedYAMLError) -> tuple[int | None, str]:
    """The line (1-based) to report for a YAML syntax error, and what is wrong: where the construct left open
    begins, saying where the parser noticed, or else where the parser noticed."""
    problem = " ".join(filter(None, [error.context, error.problem]))
    noticed, opened = error.problem_mark, error.context_mark
    if opened is not None and (error.context or "").startswith(_OPENED_EARLIER) \
            and (noticed is None or noticed.line > opened.line):
        where = f" on line {noticed.line + 1}" if noticed is not None else ""
        return opened.line + 1, f"{problem}{where}"
    if "'\\t'" in problem:
        problem += "; use spaces: YAML does not allow a tab there"
    mark = noticed or opened
    return (mark.line + 1 if mark else None), problem


_KEY = re.compile(r"^(\s*)(?:- )?([A-Za-z0-9_.-]+)\s*:")


def _field_near(text: str, line: int) -> str | None:
    """The dotted key path at (or just above) ``line`` of a file that YAML could not parse, from indentation."""
    stack: list[tuple[int, str]] = []
    for raw in text.splitlines()[:line]:
        match = _KEY.match(raw.expandtabs(8))  # a tab indents as far as an editor shows it, not by one column
        if match is None:
            continue
        indent = len(match.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match.group(2)))
    return dotted(tuple(key for _, key in stack))


#: The most values a file may hold once its aliases (``*name``) are expanded: nested aliases grow exponentially.
MAX_VALUES = 100_000


def _index(node: yaml.Node, location: Location, lines: dict[Location, int], source: str) -> None:
    lines[location] = node.start_mark.line + 1
    if len(lines) > MAX_VALUES:
        raise ConfigError(f"more than {MAX_VALUES} values once its aliases (*name) are expanded; write it out, "
                          "or nest aliases less deeply", source=source)
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):
                raise ConfigError("a key must be a plain name, not a list or a mapping", source=source, line=line,
                                  field=dotted(location))
            key = key_node.value
            plain = key_node.tag in ("tag:yaml.org,2002:str", "tag:yaml.org,2002:merge")  # merge: <<: *defaults
            if not plain and not key_node.style:  # on, no, 1, ~: not names
                kind = key_node.tag.rpartition(":")[2]
                raise ConfigError(f"key {shown(key)} reads as {'an' if kind[0] in 'aeiou' else 'a'} {kind} in YAML, "
                                  "not a name; quote it", source=source, line=line,
                                  field=dotted((*location, key)))
            if key in seen:
                raise ConfigError(f"duplicate key {shown(key)} (first on line {seen[key]})", source=source, line=line,
                                  field=dotted((*location, key)))
            seen[key] = line
            _index(value_node, (*location, key), lines, source)
            lines[(*location, key)] = line
    elif isinstance(node, yaml.SequenceNode):
        for position, item in enumerate(node.value):
            _index(item, (*location, position), lines, source)


def dotted(location: Location) -> str | None:
    """``location`` as a message names a field, ``a.b.0``; a part longer than 40 characters (a key pasted 1000 times)
    as its first 20 and its length, so that the message stays one readable line; None for the whole file."""
    parts = [str(part) for part in location]
    return ".".join(part if len(part) <= 40 else f"{part[:20]}…({len(part)} characters)" for part in parts) or None


def _data_location(data: Any, loc: tuple[Any, ...]) -> Location:
    """Keep the parts of a pydantic error location that index the data (dropping union tags and the like)."""
    kept: list[str | int] = []
    for part in loc:
        in_dict = isinstance(data, dict) and part in data
        in_list = isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data)
        if in_dict or in_list:
            data = data[part]
            kept.append(part)
        elif isinstance(data, dict) and isinstance(part, str) and "[" not in part and "-" not in part:
            kept.append(part)  # a missing field: name it, then stop
            break
    return tuple(kept)


def explain(error: Any, model: type[BaseModel] | None) -> str:
    """One pydantic error of validating ``model`` in words: an unknown key with the allowed keys, a missing field,
    or the problem with the value given (``model`` None: a value checked against a type alone, keys unknown)."""
    loc = error["loc"]
    if error["type"] == "extra_forbidden":
        allowed = _allowed_keys(model, loc[:-1])
        hint = "" if allowed is None else f"; allowed: {', '.join(allowed)}" if allowed else "; none is allowed here"
        return f"unknown key {shown(loc[-1])}{hint}"
    if error["type"] == "missing":  # a field, or an item of a fixed-length list (shape: [64] for two)
        return "required field is missing" if isinstance(loc[-1], str) else \
            f"too few items: item {loc[-1]} is missing (counting from 0)"
    if error["type"] in ("too_short", "too_long"):  # not pydantic's "at least 1 item after validation, not 0"
        ctx = error["ctx"]
        bound = f"least {counted(ctx['min_length'], 'item')}" if error["type"] == "too_short" else \
            f"most {counted(ctx['max_length'], 'item')}"
        return f"expected at {bound}, got {ctx['actual_length']}"
    if error["type"] in ("model_type", "dict_type"):  # not "a valid dictionary or instance of LimitConfig"
        allowed = _allowed_keys(model, loc) if error["type"] == "model_type" else None
        return not_a_mapping(error.get("input"), allowed)
    message = {"value_error": error["msg"].removeprefix("Value error, "),
               "bool_type": "expected true or false"}.get(error["type"], error["msg"])
    value = error.get("input")
    if error["type"] in ("int_type", "float_type") and isinstance(value, bool):
        message = "expected a number"
    elif error["type"] == "int_type" and isinstance(value, str):
        message += "; write a whole number such as 3, unquoted"
    elif error["type"] == "float_type" and isinstance(value, str):
        message += "; write a plain number such as 3 or 0.5, unquoted"
    elif error["type"] == "int_type" and isinstance(value, float) and math.isfinite(value):
        message += "; write a whole number, without a point or an exponent"
    return f"{message}{got(value)}"


def not_a_mapping(value: Any, allowed: list[str] | None = None) -> str:
    """What is wrong with ``value`` where a mapping of keys goes (the ``allowed`` keys, where they are known)."""
    hint = f"; allowed keys: {', '.join(allowed)}" if allowed else ""
    given = "a list" if isinstance(value, list) else "null: no value" if value is None else shown(value)
    return f"expected a mapping of keys, got {given}{hint}"


def got(value: Any) -> str:
    """`` (got VALUE)`` for an error message: VALUE as `shown` writes it, YAML's null (a key left without a value)
    as such, not as Python's None; nothing for a mapping or a list."""
    if isinstance(value, dict | list):
        return ""
    return " (got null: no value)" if value is None else f" (got {shown(value)})"


def shown(value: Any) -> str:
    """``value`` as Python writes it, for an error message; when that is longer than 40 characters (a number of 300
    digits, a name pasted 1000 times), its first 20 and its length, so that the message stays one readable line.
    A numpy or torch scalar is shown as the value it holds (``np.float64(1.0)`` as 1.0, ``tensor(True)`` as True,
    a time as numpy writes it), and an array or tensor of values by its kind and shape, not by its repr."""
    shape = getattr(value, "shape", None)
    if isinstance(shape, tuple) and hasattr(value, "tolist"):  # numpy's scalars and arrays, torch's tensors
        if len(shape):
            kind = "numpy array" if isinstance(value, np.ndarray) else type(value).__name__.lower()
            return f"a {kind} of shape {tuple(shape)}"
        if isinstance(value, np.generic | np.ndarray) and value.dtype.kind in "mM":  # not datetime.timedelta(...)
            return str(value)
        value = value.tolist()
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:20]}…, {len(text)} characters"


def _allowed_keys(model: Any, loc: tuple[Any, ...]) -> list[str] | None:
    """The field names of the model found at ``loc`` inside ``model`` (none: a model without fields, such as the
    settings of a method that has none), best effort: None where no model is found."""
    current = model
    for part in loc:
        current = _step(current, part)
        if current is None:
            return None
    current = _unwrap_model(current)
    return list(current.model_fields) if current is not None else None


def _unwrap_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _unwrap_model(arg)
        if found is not None:
            return found
    return None


def _step(annotation: Any, part: Any) -> Any:
    model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    if model is not None:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        return field.annotation if field is not None else None
    origin = get_origin(annotation)
    args = get_args(annotation)
    if origin is dict and len(args) == 2:
        return args[1]
    if origin is list and args:
        return args[0]
    for arg in args:  # a union: follow the member the part fits
        found = _step(arg, part)
        if found is not None:
            return found
    return None
