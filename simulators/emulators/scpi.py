"""A SCPI instrument emulator: parses program messages the way an instrument does and keeps its error queue.

Subclasses declare handlers with `@scpi("[SOURce#:]VOLTage:OFFSet")`: the pattern accepts the short form (the
capitals) or the long form of every node, case-insensitively; ``[...]`` is optional; ``#`` is an optional
numeric suffix (1 when omitted) passed to the handler before the parameters; a trailing ``?`` makes a query,
whose handler returns the reply. A handler raises `ScpiError` to put an error in the queue; an unknown header,
a missing or extra parameter and a malformed number do so too, as on the instrument. After an error the rest of
the program message is skipped and a failed query sends no reply, so the client times out, as on a bench.

A header after ``;`` is taken from the root: it must start with ``:``, be a common command (``*``), or follow a
header whose path is the root. On an instrument any other header is relative to the previous header's path; that
rule is not emulated, and such a header is refused with -113, so that a driver relying on it fails here rather
than on a bench.
"""

from __future__ import annotations

import inspect
import math
import re
import sys
import threading
import traceback
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any


class Text(str):
    """String program data: a parameter the message sent quoted (``"defbuffer1"``), told apart from character data
    (``CURR``), which an instrument that asks for a string refuses (`string`)."""


Param = str | bytes

#: Standard SCPI error codes used by the emulators.
UNDEFINED_HEADER = (-113, "Undefined header")
MISSING_PARAMETER = (-109, "Missing parameter")
PARAMETER_NOT_ALLOWED = (-108, "Parameter not allowed")
DATA_TYPE_ERROR = (-104, "Data type error")
INVALID_BLOCK = (-161, "Invalid block data")
ILLEGAL_VALUE = (-224, "Illegal parameter value")
OUT_OF_RANGE = (-222, "Data out of range")
SETTINGS_CONFLICT = (-221, "Settings conflict")
TOO_MUCH_DATA = (-223, "Too much data")
SYNTAX_ERROR = (-102, "Syntax error")
QUEUE_OVERFLOW = (-350, "Queue overflow")
DEVICE_SPECIFIC = -300  # "Device-specific error": here, a handler of the emulator raised

#: The largest binary block an emulated instrument's input buffer takes (bytes): 16 MiB, far above the largest
#: waveform the emulated instruments hold (65 536 float32 points, 256 kB); a header announcing more is refused
#: (-223), not waited for.
MAX_BLOCK_BYTES = 1 << 24


class ScpiError(Exception):
    """An error the emulated instrument puts in its error queue."""

    def __init__(self, error: tuple[int, str], detail: str = ""):
        self.code, self.message = error
        if detail:
            self.message = f"{self.message}; {detail}"
        super().__init__(f"{self.code},{self.message}")


def scpi(*patterns: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Mark a method as the handler of one or more SCPI header patterns."""

    def mark(function: Callable[..., Any]) -> Callable[..., Any]:
        function._scpi_patterns = (*getattr(function, "_scpi_patterns", ()), *patterns)  # type: ignore[attr-defined]
        return function

    return mark


_TOKEN = re.compile(r"\[|\]|:|#|\?|\*?[A-Za-z][A-Za-z0-9]*")
_HEADER = re.compile(rb"[^\s;]+")


def compile_header(pattern: str) -> re.Pattern[str]:
    """A regex that matches every spelling of a SCPI header pattern, capturing the numeric suffixes.

    The root colon is optional in every spelling, whether the pattern is written with it (``:FORMat``) or not;
    a common command (``*RST``) takes none.
    """
    pattern = pattern.removeprefix(":")
    parts = [] if pattern.startswith("*") else [":?"]
    position = 0
    for token in _TOKEN.finditer(pattern):
        if token.start() != position:
            raise ValueError(f"bad SCPI pattern {pattern!r} at {position}")
        position = token.end()
        text = token.group()
        if text == "[":
            parts.append("(?:")
        elif text == "]":
            parts.append(")?")
        elif text == ":":
            parts.append(":")
        elif text == "#":
            parts.append(r"(\d*)")
        elif text == "?":
            parts.append(r"\?")
        else:
            star = text.startswith("*")
            word = text.lstrip("*")
            short = re.match(r"[A-Z0-9]*", word).group() or word  # type: ignore[union-attr]
            forms = sorted({short.upper(), word.upper()}, key=len, reverse=True)
            parts.append(("\\*" if star else "") + "(?:" + "|".join(forms) + ")")
    if position != len(pattern):
        raise ValueError(f"bad SCPI pattern {pattern!r} at {position}")
    return re.compile("".join(parts), re.IGNORECASE)


def split_messages(buffer: bytes, terminator: bytes = b"\n") -> tuple[list[bytes], bytes]:
    """Split a byte stream into complete program messages, ended by ``terminator`` (its last byte: ``\\n`` for
    ``\\r\\n`` too, or ``\\r``) outside strings and binary blocks (a quote or ``#`` that begins a parameter).

    Returns the messages without their terminator (and without stray ``\\r`` or ``\\n`` at either end, never
    taken from inside a block) and the unfinished remainder.
    """
    end = terminator[-1]
    messages: list[bytes] = []
    start = index = kept = 0  # kept: where the message's last block ended; its bytes are data, not line endings
    quote: int | None = None
    # where the parser is: before a unit's header, in it, where a parameter may begin (after the header's white
    # space, or a ','), or in a parameter (A#15, 1 "), where a quote or '#' begins nothing
    place = "unit"
    while index < len(buffer):
        byte = buffer[index]
        parameter = place == "parameter"
        if quote is not None:
            if byte == quote and buffer[index + 1:index + 2] == bytes([quote]):
                index += 1  # a doubled quote: one inside the string
            elif byte == quote:
                quote, place = None, "word"
            index += 1
        elif byte in b"\"'" and parameter:
            quote = byte
            index += 1
        elif byte == ord("#") and index + 1 < len(buffer) and ord("1") <= buffer[index + 1] <= ord("9") and parameter:
            n_digits = buffer[index + 1] - ord("0")
            header_end = index + 2 + n_digits
            if header_end > len(buffer):
                break
            digits = buffer[index + 2:header_end]
            if not digits.isdigit() or int(digits) > MAX_BLOCK_BYTES:
                index += 1  # not a block after all, or one too large to wait for; the parser will complain
                continue
            block_end = header_end + int(digits)
            if block_end > len(buffer):
                break
            index = kept = block_end
            place = "word"
        elif byte == end:
            if kept > start:  # a block: strip line endings before it and after it only
                messages.append(buffer[start:kept].lstrip(b"\r\n") + buffer[kept:index].rstrip(b"\r\n"))
            else:
                messages.append(buffer[start:index].strip(b"\r\n"))
            start = index = index + 1
            place = "unit"
        else:
            place = _next_place(place, byte)
            index += 1
    return messages, buffer[start:]


def _next_place(place: str, byte: int) -> str:
    """Where `split_messages` is in a unit after ``byte`` (not in a string or block), as `iter_units` reads it."""
    if byte == ord(";"):
        return "unit"
    if byte in b" \t\r":
        return "parameter" if place == "header" else place
    if byte == ord(","):
        return "header" if place in ("unit", "header") else "parameter"
    return {"unit": "header", "parameter": "word"}.get(place, place)


def parse_message(message: bytes) -> list[tuple[str, list[Param]]]:
    """Parse one program message into (header, parameters) units; blocks become bytes, strings lose their quotes
    (and a doubled quote inside one, ``"a""b"``, is one) and are `Text`."""
    return list(iter_units(message))


def iter_units(message: bytes) -> Iterator[tuple[str, list[Param]]]:
    """The units of `parse_message` one at a time, each parsed when asked for: as on an instrument, a unit is
    executed before the next is parsed, so a syntax error stops the message there, after what came before it."""
    index, length = 0, len(message)
    at_root = True  # the previous (non-common) header's path is the root

    def skip_space(at: int) -> int:
        while at < length and message[at] in b" \t\r":
            at += 1
        return at

    while True:
        index = skip_space(index)
        if index >= length:
            break
        match = _HEADER.match(message, index)
        if match is None:
            raise ScpiError(SYNTAX_ERROR, f"empty command at byte {index}")
        header = match.group().decode("ascii", errors="replace")
        if not header.startswith("*"):
            if not (at_root or header.startswith(":")):
                raise ScpiError(UNDEFINED_HEADER, f"{header} after ';' would be relative to the previous header's "
                                "path; start it with ':'")
            at_root = ":" not in header.lstrip(":")
        index = skip_space(match.end())
        params: list[Param] = []
        while index < length and message[index] != ord(";"):
            if message[index] == ord("#") and message[index + 1:index + 2].isdigit():
                n_digits = message[index + 1] - ord("0")
                digits = message[index + 2:index + 2 + n_digits]
                if n_digits == 0 or len(digits) != n_digits or not digits.isdigit():
                    raise ScpiError(INVALID_BLOCK, "indefinite or malformed block header")
                if int(digits) > MAX_BLOCK_BYTES:
                    raise ScpiError(TOO_MUCH_DATA, f"block announces {int(digits)} bytes, more than the "
                                    f"{MAX_BLOCK_BYTES} the input buffer holds")
                start = index + 2 + n_digits
                end = start + int(digits)
                if end > length:
                    raise ScpiError(INVALID_BLOCK, f"block announces {int(digits)} bytes, got {length - start}")
                params.append(bytes(message[start:end]))
                index = end
            elif message[index] in b"\"'":
                quote = message[index:index + 1]
                end = message.find(quote, index + 1)
                while end >= 0 and message[end + 1:end + 2] == quote:  # a doubled quote is one inside the string
                    end = message.find(quote, end + 2)
                if end < 0:
                    raise ScpiError(SYNTAX_ERROR, "unterminated string")
                params.append(Text(message[index + 1:end].replace(quote * 2, quote).decode("ascii", errors="replace")))
                index = end + 1
            else:
                end = index
                while end < length and message[end] not in b",;":
                    end += 1
                text = message[index:end].decode("ascii", errors="replace").strip()
                if not text:
                    raise ScpiError(SYNTAX_ERROR, f"empty parameter after {header}")
                params.append(text)
                index = end
            index = skip_space(index)
            if index < length and message[index] == ord(","):
                index = skip_space(index + 1)
                if index >= length or message[index] == ord(";"):
                    raise ScpiError(SYNTAX_ERROR, f"missing parameter after ',' in {header}")
            elif index < length and message[index] != ord(";"):
                raise ScpiError(SYNTAX_ERROR, f"expected ',' or ';' after a parameter of {header}")
        yield header, params
        index += 1


#: IEEE 488.2 decimal numeric program data (NRf): a mantissa with an optional point and exponent, which may have white
#: space before and after its ``E``.
_DECIMAL = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:\s*E\s*[+-]?\d+)?")


def number(text: Param, minimum: float | None = None, maximum: float | None = None,
           default: float | None = None) -> float:
    """A numeric parameter; accepts MINimum, MAXimum and DEFault where bounds are given; range-checked. A quoted
    string is not one (-104)."""
    if isinstance(text, bytes):
        raise ScpiError(DATA_TYPE_ERROR, "block where a number was expected")
    if isinstance(text, Text):
        raise ScpiError(DATA_TYPE_ERROR, f"string {text!r} where a number was expected")
    word = text.strip().upper()
    if word in ("MIN", "MINIMUM") and minimum is not None:
        return minimum
    if word in ("MAX", "MAXIMUM") and maximum is not None:
        return maximum
    if word in ("DEF", "DEFAULT") and default is not None:
        return default
    if not _DECIMAL.fullmatch(word):  # float() would also take Python's 1_000, inf and nan
        raise ScpiError(DATA_TYPE_ERROR, f"{text!r} is not a number")
    value = float("".join(word.split()))  # float() takes no white space about the E
    if value != value or (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ScpiError(OUT_OF_RANGE, f"{text} outside {minimum}..{maximum}")
    return value


def _not_a_string(text: Param) -> None:
    """Refuse string data (`Text`) where character data (a keyword) is expected, with -104 as an instrument does."""
    if isinstance(text, Text):
        raise ScpiError(DATA_TYPE_ERROR, f"string {text!r} where a keyword was expected")


def string(text: Param) -> str:
    """A string parameter: sent quoted, else -104 "Data type error", as where an instrument's syntax asks for
    ``"<name>"``."""
    if not isinstance(text, Text):
        raise ScpiError(DATA_TYPE_ERROR, f"{text!r} is not a quoted string")
    return str(text)


def boolean(text: Param) -> bool:
    """An ON/OFF/1/0 parameter (not a quoted string: -104)."""
    _not_a_string(text)
    word = text.strip().upper() if isinstance(text, str) else ""
    if word in ("ON", "1"):
        return True
    if word in ("OFF", "0"):
        return False
    raise ScpiError(ILLEGAL_VALUE, f"{text!r} is not ON, OFF, 1 or 0")


def choice(text: Param, *options: str) -> str:
    """One of ``options`` (given in SCPI short/long capitalisation, e.g. ``"VOLTage"``); returns its long form. A
    quoted string is not one (-104)."""
    _not_a_string(text)
    word = text.strip().upper() if isinstance(text, str) else ""
    for option in options:
        if compile_header(option).fullmatch(word):
            return option.upper()
    raise ScpiError(ILLEGAL_VALUE, f"{text!r} is not one of {', '.join(options)}")


class ScpiEmulator:
    """Base of the SCPI emulators: common commands, the error queue and the dispatcher.

    `handle` takes one program message and returns the reply bytes (without terminator), or None when the
    message holds no query or a query failed. It is thread-safe: one message is handled at a time.

    ``__init__`` ends by calling `reset`, so a subclass sets what its ``reset`` reads (a world, options) before
    calling ``super().__init__()``.
    """

    identity = "hil,SCPI emulator,0,0"
    error_queue_size = 20
    #: How many of the last messages `received` keeps for a test to look at: an emulator serving a long run or
    #: ``hil emulate`` for days must not grow with every command.
    received_kept = 100_000
    #: How many bytes of the last messages `received` keeps (the newest whole, whatever its length): a waveform
    #: upload is one message of up to 256 kB, which the count alone would keep by the thousand.
    received_bytes_kept = 16 * 2**20

    def __init__(self) -> None:
        self.errors: deque[tuple[int, str]] = deque()
        self.event_status_enable = 0  # *ESE; *RST leaves it as it is
        self.lock = threading.RLock()
        self.received: deque[bytes] = deque(maxlen=self.received_kept)
        self._received_bytes = 0  # of the messages `received` holds
        self._handlers: list[tuple[re.Pattern[str], Callable[..., Any], bool]] = []
        for klass in reversed(type(self).__mro__):
            for name, attribute in vars(klass).items():
                for pattern in getattr(attribute, "_scpi_patterns", ()):
                    self._handlers.append((compile_header(pattern), getattr(self, name), pattern.endswith("?")))
        self.reset()

    def reset(self) -> None:
        """Return to the power-on state (``*RST``); subclasses extend it."""

    def handle(self, message: bytes) -> bytes | None:
        with self.lock:
            self._remember(message)
            replies: list[bytes] = []
            try:
                for header, params in iter_units(message):
                    reply = self._dispatch(header, params)
                    if reply is not None:
                        replies.append(reply if isinstance(reply, bytes) else str(reply).encode("ascii"))
            except ScpiError as error:
                self.push_error((error.code, error.message))
                return None
            except Exception as error:  # the emulator's own bug: reported in the queue, and serving goes on
                traceback.print_exc(file=sys.stderr)
                text = (f"Device-specific error; {type(self).__name__} failed on {message[:60]!r}: "
                        f"{type(error).__name__}: {error}")  # as an error string may be: ASCII, no '"', ≤ 255
                self.push_error((DEVICE_SPECIFIC, text.replace('"', "'").encode("ascii", "replace").decode()[:255]))
                return None
            return b";".join(replies) if replies else None

    def _remember(self, message: bytes) -> None:
        """Append ``message`` to `received`, dropping the oldest beyond `received_kept` messages or
        `received_bytes_kept` bytes."""
        received = self.received
        if not received:  # emptied by a test, perhaps: nothing is counted
            self._received_bytes = 0
        elif len(received) == received.maxlen:  # the oldest goes as the message comes
            self._received_bytes -= len(received[0])
        received.append(message)
        self._received_bytes += len(message)
        while self._received_bytes > self.received_bytes_kept and len(received) > 1:
            self._received_bytes -= len(received.popleft())

    def _dispatch(self, header: str, params: list[Param]) -> Any:
        for pattern, handler, _is_query in self._handlers:
            match = pattern.fullmatch(header)
            if match is None:
                continue
            suffixes = [int(group) if group else 1 for group in match.groups()]
            arguments = [*suffixes, *params]
            try:
                inspect.signature(handler).bind(*arguments)
            except TypeError:
                needed = len([p for p in inspect.signature(handler).parameters.values()
                              if p.default is inspect.Parameter.empty and p.kind == p.POSITIONAL_OR_KEYWORD])
                raise ScpiError(MISSING_PARAMETER if len(arguments) < needed else PARAMETER_NOT_ALLOWED,
                                header) from None
            return handler(*arguments)
        raise ScpiError(UNDEFINED_HEADER, header)

    def push_error(self, error: tuple[int, str]) -> None:
        """Add an error to the queue; a full queue keeps its oldest entries and ends with ``Queue overflow``. The
        message is made what an instrument's error string is, printable ASCII without a double quote: what a client
        sent that is not (line noise) is quoted escaped, as ``\\xff``."""
        code, message = error
        error = (code, "".join(c if " " <= c <= "~" else c.encode("unicode_escape").decode() for c in message)
                 .replace('"', "'"))
        if len(self.errors) >= self.error_queue_size:
            self.errors[-1] = QUEUE_OVERFLOW
        else:
            self.errors.append(error)

    def format_error(self, code: int, message: str) -> str:
        """How ``SYSTem:ERRor?`` prints one entry; instruments differ."""
        return f'{code:+d},"{message}"'

    # -- IEEE 488.2 common commands ---------------------------------------------------------------------------
    @scpi("*IDN?")
    def _idn(self) -> str:
        return self.identity

    @scpi("*RST")
    def _rst(self) -> None:
        self.reset()

    @scpi("*CLS")
    def _cls(self) -> None:
        self.errors.clear()

    @scpi("*ESE")
    def _ese(self, value: Param) -> None:
        """The event status enable register (0..255); it only matters for service requests, not emulated."""
        self.event_status_enable = math.floor(number(value, 0, 255) + 0.5)  # 488.2 rounds a non-integer

    @scpi("*ESE?")
    def _ese_query(self) -> str:
        return str(self.event_status_enable)

    @scpi("*OPC?")
    def _opc_query(self) -> str:
        return "1"

    @scpi("*OPC", "*WAI")
    def _opc(self) -> None:
        """Every command completes before the next is read, so there is nothing to wait for."""

    @scpi("*TST?")
    def _tst(self) -> str:
        return "0"

    @scpi("SYSTem:ERRor[:NEXT]?")
    def _error_next(self) -> str:
        code, message = self.errors.popleft() if self.errors else (0, "No error")
        return self.format_error(code, message)

    @scpi("SYSTem:ERRor:COUNt?")
    def _error_count(self) -> str:
        return str(len(self.errors))
