"""The SCPI emulator framework: header spellings, message framing around binary blocks, the error queue."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulators.emulators.scpi import (
    MAX_BLOCK_BYTES,
    ScpiEmulator,
    ScpiError,
    Text,
    boolean,
    choice,
    compile_header,
    number,
    parse_message,
    scpi,
    split_messages,
)


@pytest.mark.parametrize("spelling", ["SOUR1:VOLT:OFFS", "source1:voltage:offset", ":VOLT:OFFS", "Sour2:Volt:Offset",
                                      "SOURCE:VOLT:OFFSET"])
def test_header_accepts_short_and_long_forms(spelling: str) -> None:
    assert compile_header("[SOURce#:]VOLTage:OFFSet").fullmatch(spelling)


@pytest.mark.parametrize("spelling", ["SOU1:VOLT:OFFS", "SOUR1:VOLTA:OFFS", "SOUR1:VOLT", "SOUR1:VOLT:OFFS?"])
def test_header_refuses_other_spellings(spelling: str) -> None:
    assert compile_header("[SOURce#:]VOLTage:OFFSet").fullmatch(spelling) is None


@pytest.mark.parametrize("pattern", [":FORMat[:DATA]", "FORMat[:DATA]"])
@pytest.mark.parametrize("spelling", ["FORM", ":FORM", "format:data"])
def test_header_takes_the_root_colon_as_optional_however_the_pattern_is_written(pattern: str, spelling: str) -> None:
    assert compile_header(pattern).fullmatch(spelling)


def test_header_captures_suffixes_with_default() -> None:
    pattern = compile_header("OUTPut#[:STATe]?")
    assert pattern.fullmatch("OUTP2:STAT?").groups() == ("2",)
    assert pattern.fullmatch("output?").groups() == ("",)


@pytest.mark.parametrize("last", [b"\n", b"\r"])
def test_split_messages_keeps_a_blocks_last_byte_even_a_line_ending(last: bytes) -> None:
    block = b"#14ab\x00" + last
    assert split_messages(b"DATA " + block + b"\r\n") == ([b"DATA " + block], b"")
    assert split_messages(b"DATA " + block + b"\r", b"\r") == ([b"DATA " + block], b"")


def test_split_messages_skips_newlines_inside_blocks_and_keeps_remainder() -> None:
    stream = b'DATA w,#14a\nb;*OPC?\nVOLT 1\nVOLT 2\r\nDATA x,#15ab'
    messages, rest = split_messages(stream)
    assert messages == [b"DATA w,#14a\nb;*OPC?", b"VOLT 1", b"VOLT 2"]
    assert rest == b"DATA x,#15ab"


def test_a_block_cut_anywhere_on_the_wire_even_in_its_header_is_waited_for() -> None:
    """A waveform upload arrives in TCP segments, which may end inside the block's header (``#2`` with its byte count
    still to come) or its data (whose bytes may be line endings): no message ends there, and the whole block is framed
    once the rest has come."""
    message = b"DATA w,#211" + bytes(range(11))  # its data ends in b"\n"
    for cut in range(1, len(message) + 1):
        complete, remainder = split_messages(message[:cut])  # as the server frames what has come so far
        assert (complete, remainder) == ([], message[:cut]), cut
        assert split_messages(remainder + message[cut:] + b"\n") == ([message], b""), cut


def test_a_hash_inside_a_word_begins_no_block_and_the_line_ending_after_it_ends_the_message() -> None:
    """A block begins a parameter, as the parser reads it: ``A#15`` is a malformed word, refused when parsed, and
    was taken for a block of 5 bytes that swallowed the line ending and the query after it, which went unanswered."""
    assert split_messages(b"FUNC:ARB A#15\n*IDN?\n") == ([b"FUNC:ARB A#15", b"*IDN?"], b"")
    assert split_messages(b"#15\n*IDN?\n") == ([b"#15", b"*IDN?"], b"")
    assert split_messages(b"DATA w, #15\n\nabc\n") == ([b"DATA w, #15\n\nabc"], b"")  # after a space, one


def test_a_quote_inside_a_word_begins_no_string_and_the_line_ending_after_it_ends_the_message() -> None:
    """A string begins a parameter, as the parser reads it: ``1"`` is a malformed number, refused when parsed, and
    its quote was taken to open a string that swallowed every line ending after it, and the queries."""
    assert split_messages(b'VOLT 1"\n*IDN?\n') == ([b'VOLT 1"', b"*IDN?"], b"")
    assert split_messages(b'DISP "a""b\n"\n*IDN?\n') == ([b'DISP "a""b\n"', b"*IDN?"], b"")  # a"b<LF>, one string


def test_a_quote_or_hash_after_a_space_inside_a_parameter_begins_nothing() -> None:
    """The parser reads ``1 "`` and ``A #15`` as one malformed parameter each (up to a ',' or ';'): a quote or ``#``
    after any space was taken to begin a string or block, which swallowed the line ending and the query after it."""
    assert split_messages(b'VOLT 1 "\n*IDN?\n') == ([b'VOLT 1 "', b"*IDN?"], b"")
    assert split_messages(b"FUNC:ARB A #15\n*IDN?\n") == ([b"FUNC:ARB A #15", b"*IDN?"], b"")
    assert split_messages(b'A 1, "x\ny" ; :B "\n"\n') == ([b'A 1, "x\ny" ; :B "\n"'], b"")  # each begins one


def test_split_messages_ignores_newline_in_quotes() -> None:
    assert split_messages(b'DISP:TEXT "a\nb"\n') == ([b'DISP:TEXT "a\nb"'], b"")


def test_parse_message_units_parameters_blocks_and_strings() -> None:
    units = parse_message(b'SOUR1:VOLT 1.5 ; :TRAC:DATA? 1, 10, "defbuffer1", READ;:DATA w,#13x;,;*WAI')
    assert units == [("SOUR1:VOLT", ["1.5"]), (":TRAC:DATA?", ["1", "10", "defbuffer1", "READ"]),
                     (":DATA", ["w", b"x;,"]), ("*WAI", [])]
    assert isinstance(units[1][1][2], Text) and not isinstance(units[1][1][3], Text)  # quoted, and not


@pytest.mark.parametrize("message", [b"VOLT 1,", b"VOLT 1,,2", b'VOLT "open', b"DATA #15ab", b"DATA #0ab",
                                     b'DISP "a" 5',  # a string, then no ',' before what follows
                                     b"SOUR1:FUNC DC;VOLT:OFFS 1"])  # relative after ';': refused, not guessed
def test_parse_message_rejects_malformed(message: bytes) -> None:
    with pytest.raises(ScpiError):
        parse_message(message)


def test_parameter_helpers() -> None:
    assert number("MAX", 0, 5) == 5 and number("1e-3") == 1e-3
    with pytest.raises(ScpiError, match="-222"):
        number("7", 0, 5)
    with pytest.raises(ScpiError, match="-222"):
        number("-1", 0, 5)
    with pytest.raises(ScpiError, match="-104"):
        number("volts")
    assert number("+.5") == 0.5 and number("-2.") == -2.0 and number("1.5E+3") == 1500.0 and number(" 7 ") == 7.0
    for python_only in ("1_0", "inf", "nan", "Infinity", "0x10"):  # float() takes them; an instrument does not
        with pytest.raises(ScpiError, match="-104"):
            number(python_only)
    assert boolean("on") is True and boolean("0") is False
    for word in ("maybe", "TRUE"):
        with pytest.raises(ScpiError, match="-224"):
            boolean(word)
    assert choice("volt", "VOLTage", "CURRent") == "VOLTAGE"
    for word, options in (("VOL", ("VOLTage", "CURRent")), ("CH", ("CH1", "CH2"))):  # neither short nor long form
        with pytest.raises(ScpiError, match="-224"):
            choice(word, *options)


def test_a_quoted_string_is_no_number_boolean_or_keyword() -> None:
    """IEEE 488.2 string data (``"1"``, ``"ON"``) is not the numeric or character data these parameters are; an
    instrument refuses it (-104 "Data type error") where the emulator took it, so a driver that quoted one passed."""
    for helper, text in ((number, "1"), (boolean, "ON"), (lambda t: choice(t, "VOLTage"), "VOLT")):
        assert helper(text) in (1.0, True, "VOLTAGE")
        with pytest.raises(ScpiError, match="-104"):
            helper(Text(text))
    (_, params), = parse_message(b'SOUR:VOLT "1"')
    with pytest.raises(ScpiError, match="-104"):
        number(params[0])


#: Property tests here: few examples, the same ones on every run (CI must be reproducible).
few = settings(max_examples=200, deadline=None, derandomize=True, database=None)


@st.composite
def decimal_spellings(draw: st.DrawFn) -> tuple[str, str]:
    """An IEEE 488.2 decimal number (NRf) as a client may spell it, white space about its ``E`` included, and the
    same number as Python writes it."""
    sign = draw(st.sampled_from(["", "+", "-"]))
    digits = st.text("0123456789", min_size=1, max_size=4)
    mantissa = draw(st.sampled_from(["{}", "{}.", "{}.{}", ".{}"])).format(draw(digits), draw(digits))
    if not draw(st.booleans()):
        return sign + mantissa, sign + mantissa
    space = st.sampled_from(["", " ", "\t", "  "])
    e = draw(st.sampled_from("Ee"))
    exponent = draw(st.sampled_from(["", "+", "-"])) + draw(st.text("0123456789", min_size=1, max_size=2))
    return f"{sign}{mantissa}{draw(space)}{e}{draw(space)}{exponent}", f"{sign}{mantissa}e{exponent}"


@few
@given(decimal_spellings())
def test_a_decimal_number_is_read_however_it_is_spelt(spelling: tuple[str, str]) -> None:
    """488.2 allows white space before and after the exponent's ``E`` (``1 E 3``): float() does not, and a number
    so spelt was the emulator's own ValueError (-300) instead of the number."""
    sent, python = spelling
    assert number(sent) == float(python)


def _block(data: bytes) -> bytes:
    return b"#" + str(len(str(len(data)))).encode() + str(len(data)).encode() + data


@st.composite
def program_messages(draw: st.DrawFn) -> tuple[bytes, list[tuple[str, list[str | bytes]]]]:
    """A well-formed program message of a few units, and what it says: each unit's header and parameters, the
    parameters numbers and words, strings of any ASCII (their quote doubled inside, line endings and ';' too), and
    blocks of any bytes."""
    wire, units = [], []
    for position in range(draw(st.integers(1, 3))):
        nodes = draw(st.lists(st.sampled_from(["SOUR1", "volt", "Data", "ARB", "OFFS2"]), min_size=1, max_size=3))
        header = (":" if position or draw(st.booleans()) else "") + ":".join(nodes) + draw(st.sampled_from(["", "?"]))
        sent, said = [], []
        for kind in draw(st.lists(st.sampled_from(["number", "word", "string", "block"]), max_size=3)):
            if kind == "number":
                said.append(repr(draw(st.floats(allow_nan=False, allow_infinity=False))))
                sent.append(said[-1].encode())
            elif kind == "word":
                said.append(draw(st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,8}", fullmatch=True)))
                sent.append(said[-1].encode())
            elif kind == "string":
                quote, text = draw(st.sampled_from("\"'")), draw(st.text(st.characters(max_codepoint=127), max_size=12))
                said.append(text)
                sent.append((quote + text.replace(quote, 2 * quote) + quote).encode())
            else:
                said.append(draw(st.binary(max_size=40)))
                sent.append(_block(said[-1]))
        wire.append(header.encode() + (b" " + b",".join(sent) if sent else b""))
        units.append((header, said))
    return b";".join(wire), units


@settings(few, max_examples=100)
@given(st.lists(program_messages(), min_size=1, max_size=4), st.sampled_from([b"\n", b"\r"]), st.data())
def test_messages_cut_anywhere_on_the_wire_are_framed_and_parsed_back_to_what_they_say(
        messages: list[tuple[bytes, list]], terminator: bytes, data: st.DataObject) -> None:
    """As the server reads them: the stream arrives in pieces cut anywhere, line endings inside strings and blocks
    end nothing, and each message parses back to its units (a doubled quote in a string, as 488.2 writes one inside
    it, was a syntax error)."""
    stream = b"".join(wire + terminator for wire, _ in messages)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=4)))
    framed, buffer = [], b""
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        complete, buffer = split_messages(buffer + stream[start:end], terminator)
        framed += complete
    assert framed == [wire for wire, _ in messages] and buffer == b""
    for wire, units in messages:
        assert parse_message(wire) == units


class Counter(ScpiEmulator):
    def reset(self) -> None:
        self.count = 0

    @scpi("COUNt")
    def set_count(self, value: str) -> None:
        self.count = int(number(value, 0, 100))

    @scpi("COUNt?")
    def get_count(self) -> str:
        return str(self.count)


def test_dispatch_queries_and_common_commands() -> None:
    emulator = Counter()
    assert emulator.handle(b"COUN 5;COUNT?;*OPC?") == b"5;1"
    assert emulator.handle(b"*RST;COUN?") == b"0"


def test_errors_go_to_the_queue_and_stop_the_message() -> None:
    emulator = Counter()
    assert emulator.handle(b"COUN 500;COUN?") is None  # out of range: the query after it is not answered
    assert emulator.handle(b"COUN") is None
    assert emulator.handle(b"COUN 1,2") is None
    assert emulator.handle(b"BOGUS") is None
    assert emulator.handle(b"COUN 1 2") is None
    assert emulator.handle(b"SYST:ERR:COUN?") == b"5"
    replies = [emulator.handle(b"SYST:ERR?") for _ in range(6)]
    assert [r.split(b",")[0] for r in replies] == [b"-222", b"-109", b"-108", b"-113", b"-104", b"+0"]


def test_a_block_announcing_more_than_the_input_buffer_is_refused_not_waited_for() -> None:
    """`#9999999999` would have the emulator wait for some 10 GB; the message ends at its terminator instead."""
    messages, rest = split_messages(b"COUN #9999999999ab\nCOUN?\n")
    assert messages == [b"COUN #9999999999ab", b"COUN?"] and rest == b""
    emulator = Counter()
    assert emulator.handle(messages[0]) is None
    assert emulator.handle(b"SYST:ERR?").startswith(b"-223,")
    small = b"DATA w,#18" + bytes(8)  # a block all the same
    assert split_messages(small + b"\n") == ([small], b"")


def test_a_block_of_exactly_the_input_buffer_is_taken_whole() -> None:
    """The limit is on more than MAX_BLOCK_BYTES: a block of the limit itself is split and parsed as one, a terminator
    in its data included."""
    data = b"\n" + bytes(MAX_BLOCK_BYTES - 1)
    block = b"#8" + str(MAX_BLOCK_BYTES).encode() + data
    messages, rest = split_messages(b"DATA w," + block + b"\nCOUN?\n")
    assert [len(message) for message in messages] == [len(b"DATA w,") + len(block), 5] and rest == b""
    [(header, params)] = parse_message(messages[0])
    assert header == "DATA" and params[0] == "w" and params[1] == data


def test_an_error_quoting_bytes_that_are_no_text_is_read_back_in_ascii(capsys) -> None:
    """Line noise (a serial line at the wrong speed, a client sending garbage) put its bytes into the -113 message;
    reading that error back then failed in the emulator (a traceback on the server, no reply, the client timed out)
    where an instrument answers in ASCII."""
    emulator = Counter()
    assert emulator.handle(b'\xff\xfe\x00BOGUS"') is None
    assert emulator.handle(b"SYST:ERR?") == b'-113,"Undefined header; \\ufffd\\ufffd\\x00BOGUS\'"'
    assert emulator.handle(b"SYST:ERR?") == b'+0,"No error"'
    assert capsys.readouterr().err == ""


def test_error_queue_overflow_keeps_oldest_and_marks_overflow() -> None:
    emulator = Counter()
    for _ in range(emulator.error_queue_size + 5):
        emulator.handle(b"BOGUS")
    assert len(emulator.errors) == emulator.error_queue_size
    assert emulator.errors[0][0] == -113 and emulator.errors[-1] == (-350, "Queue overflow")


@pytest.mark.parametrize(("pattern", "spelling"), [("*IDN?", ":*IDN?"), ("*RST", ":*rst")])
def test_header_refuses_a_colon_before_a_common_command(pattern: str, spelling: str) -> None:
    """IEEE 488.2 (7.6.1): a common command header is ``*`` and its mnemonic, with no root colon to take."""
    assert compile_header(pattern).fullmatch(spelling) is None
    assert compile_header(pattern).fullmatch(spelling[1:])


def test_a_malformed_unit_stops_the_message_where_it_is_and_what_came_before_it_is_done() -> None:
    """An instrument parses and executes one unit after another: the units before a syntax error take effect."""
    emulator = Counter()
    assert emulator.handle(b"COUN 5;COUN 1,") is None
    assert emulator.count == 5 and emulator.errors[0][0] == -102
    assert emulator.handle(b"COUN 7;SYST:ERR:COUN?;COUN 8") is None  # COUN relative to SYST:ERR: refused
    assert emulator.count == 7 and emulator.errors[1][0] == -113


def test_the_messages_kept_for_tests_are_the_last_ones_not_all() -> None:
    class Forgetful(Counter):
        received_kept = 3

    emulator = Forgetful()
    for value in range(5):
        emulator.handle(f"COUN {value}".encode())
    assert list(emulator.received) == [b"COUN 2", b"COUN 3", b"COUN 4"]


def test_the_messages_kept_for_tests_are_bounded_in_bytes_too() -> None:
    """`received` kept its last 100 000 messages however long: an emulated 33500B given a 32 kB waveform per upload
    grew by that much per upload for thousands of them (6.8 MB per 200 uploads, once its played bursts were bounded).
    It keeps the last `received_bytes_kept` bytes, the newest message whole."""
    class Forgetful(Counter):
        received_bytes_kept = 20

    emulator = Forgetful()
    for value in range(5):
        emulator.handle(f"COUN {value}".encode())  # 6 bytes each
    assert list(emulator.received) == [b"COUN 2", b"COUN 3", b"COUN 4"]
    emulator.handle(b"COUN 1;COUN 2;COUN 3;COUN 4")  # 27 bytes
    assert list(emulator.received) == [b"COUN 1;COUN 2;COUN 3;COUN 4"]
    emulator.received.clear()
    for value in range(4):
        emulator.handle(f"COUN {value}".encode())
    assert list(emulator.received) == [b"COUN 1", b"COUN 2", b"COUN 3"]

    class Few(Counter):
        received_kept, received_bytes_kept = 2, 12

    emulator = Few()
    for value in range(4):
        emulator.handle(f"COUN {value}".encode())
    assert list(emulator.received) == [b"COUN 2", b"COUN 3"]  # 12 bytes: those the count dropped are not counted


def test_a_handler_that_raises_is_a_device_specific_error_and_the_emulator_serves_on(capsys) -> None:
    """An emulator's own bug goes to the error queue (-300, naming the exception) and to stderr with its traceback;
    it used to end the thread serving the emulator, which a driver saw as an instrument that stopped answering."""
    class Broken(Counter):
        @scpi("BOOM")
        def boom(self) -> None:
            raise ZeroDivisionError('division by "zero" µ')

    emulator = Broken()
    assert emulator.handle(b"COUN 3;BOOM;COUN 4") is None
    assert emulator.count == 3
    assert emulator.handle(b"COUN?") == b"3"
    code, message = emulator.errors[0]
    assert code == -300 and message.startswith("Device-specific error; Broken failed on b'COUN 3;BOOM;COUN 4': "
                                               "ZeroDivisionError: division by 'zero' ?")
    assert "Traceback" in capsys.readouterr().err
    assert emulator.handle(b"SYST:ERR?").startswith(b'-300,"Device-specific error; Broken failed')


@pytest.mark.parametrize(("sent", "kept"), [(b"*ESE 1.6", b"2"), (b"*ESE 1.4", b"1"), (b"*ESE 2.5", b"3")])
def test_a_non_integer_register_value_is_rounded(sent: bytes, kept: bytes) -> None:
    """IEEE 488.2 rounds a non-integer value of an integer setting; int() truncated 1.6 to 1."""
    emulator = Counter()
    emulator.handle(sent)
    assert emulator.handle(b"*ESE?") == kept


def test_clear_status_empties_the_error_queue() -> None:
    emulator = Counter()
    emulator.handle(b"BOGUS")
    assert emulator.handle(b"*CLS;SYST:ERR?") == b'+0,"No error"'
