"""What every SCPI driver shares: a transport, typed queries, and the error-queue check.

A driver *has* a transport (it is not one), so the same driver runs over TCP, USB, GPIB or a serial line, and
against an emulator in CI. Compose it before the capability class: ``class X(ScpiDriver, AnalogOutput)``. A driver
needs no ``__init__`` of its own (this one takes the transport); one that has options takes them as keywords,
``def __init__(self, transport, *, option=..., **common)``, and they are its ``settings`` in a lab file. It
overrides `ScpiDriver._prepare_hw` to check the model, send what it relies on and read the present state.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, ClassVar

from hil.errors import DeviceError, HilError, TransportError, excerpt
from hil.instruments import require_before_capability
from hil.transport import Transport

#: Resynchronisation markers: ``*ESE`` values without the bits (1 and 6) some instruments do not keep.
MARKERS = tuple(n for n in range(1, 256) if not n & 0b0100_0010)


class ScpiDriver:
    """Mixin giving a SCPI instrument its transport and the helpers its driver needs."""

    #: Options of the transport a lab opens for this driver (`hil.transport.open_transport`), where the instrument
    #: differs from the defaults, e.g. {"read_termination": "\r", "write_termination": "\r"} for one that ends lines
    #: with a carriage return. The timeout and the traffic log come from the lab file.
    transport_options: ClassVar[dict[str, Any]] = {}
    #: Upper bound on error-queue reads in one check (an instrument queue holds about 20).
    max_error_reads = 32
    #: "Query INTERRUPTED": what an IEEE 488.2 instrument queues when a query arrives before its last reply was read.
    QUERY_INTERRUPTED = -410
    #: "Undefined header": what an instrument queues for a command its firmware does not know (and sends no reply).
    UNDEFINED_HEADER = -113

    def __init_subclass__(cls, **options: Any):
        super().__init_subclass__(**options)
        require_before_capability(cls, ScpiDriver)

    def __init__(self, transport: Transport, **common: Any):
        self.transport = transport
        self.idn = ""
        self._markers = itertools.cycle(MARKERS)
        self._interrupted = 0  # queries a resynchronisation may have interrupted since the last error check
        super().__init__(**common)
        if transport is not None:  # None only where a test builds a driver to read its limits
            transport.owner = self.name  # type: ignore[attr-defined]

    @property
    def resource(self) -> str:
        return self.transport.resource

    def _connect_hw(self) -> None:
        """Open the transport, clear stale status, read the identity, let the driver prepare, then let the
        capability class read the present state. The outputs are left as they are."""
        self.transport.open()
        self._interrupted = 0
        self.idn = ""  # perhaps another instrument on the port now: a resynchronisation matches its marker alone
        try:
            self.transport.write("*CLS")
            self.idn = self.query("*IDN?")
            self._prepare_hw()
            super()._connect_hw()  # type: ignore[misc]
        except BaseException:
            self.transport.close()
            raise

    def _read_identity_hw(self) -> str:
        """``*IDN?`` alone, on a link opened for it and closed after: no ``*CLS``, no setting, no safe state, so that
        a look at an instrument in use changes nothing on it (`Instrument.read_identity`)."""
        self.transport.open()
        try:
            return self.query("*IDN?")
        finally:
            self.transport.close()

    def _prepare_hw(self) -> None:
        """Check the model in ``self.idn`` and send the settings the driver relies on (formats, units)."""

    def _safe_state_hw(self) -> None:
        """The capability's safe state (`_safe_state_checked`). Where the instrument closed or reset the connection
        (a LAN reset, a firewall's idle timeout), the output it may still drive is out of reach until the link is
        opened again: it is, once per safe state, and the safe state is tried on the new link after the identity
        is checked. Where it cannot be opened (an instrument switched off), the first failure is raised."""
        lost: TransportError | None = None
        if self.transport.is_open or not self.transport.link_lost:  # else an earlier reconnection failed
            try:
                return self._safe_state_checked()
            except TransportError as error:
                if not self.transport.link_lost:
                    raise
                lost = error
        self._reconnect(lost)
        self._safe_state_checked()

    def _reconnect(self, error: TransportError | None) -> None:
        """Open the lost link again and check that the instrument answering is this one; ``error`` (what the lost
        link did) is raised where the link cannot be opened, else the failure to open it."""
        try:
            self.transport.reopen()
        except TransportError:
            if error is None:
                raise
            raise error from None
        identity = self.query("*IDN?")
        if identity != self.idn:
            lost = f"{error}; on" if error is not None else f"{self.name}: on"  # type: ignore[attr-defined]
            raise DeviceError(f"{lost} the new connection made to reach the safe state, {self.resource} answers "
                              f"{excerpt(identity)}, not {self.name}'s identity {excerpt(self.idn)}: nothing was "  # type: ignore[attr-defined]
                              "sent; check which instrument is at that address")

    def _safe_state_checked(self) -> None:
        """The capability's safe state. Errors left in the queue by earlier commands are read first, so that they
        cannot stop the way there, and raised once the instrument is safe; so is a failure to read them (e.g. a
        timeout), or a Ctrl-C or SIGTERM while they are read, which does not stop the way there either. Where the
        link answers, the outputs are then read (`_read_outputs_hw`), so that the way down starts from where they
        are, not from where this driver left them; a failure to read them is raised at the end too."""
        stale: BaseException | None = None
        try:
            self.check_errors()
        except BaseException as error:
            stale = error
        if stale is None or isinstance(stale, DeviceError):
            try:
                self._read_outputs_hw()
            except BaseException as error:  # the interrupt stays an interrupt; else the first failure is said
                stale = error if stale is None or not isinstance(error, Exception) else stale
        try:
            super()._safe_state_hw()  # type: ignore[misc]
        except Exception as error:
            if stale is None:
                raise
            if not isinstance(stale, Exception):  # the interrupt stays an interrupt
                raise stale from error
            raise type(error)(f"{error} (and before it: {stale})") from error
        if isinstance(stale, DeviceError):
            raise DeviceError(f"{stale} (found when going to the safe state, which was reached)")
        if stale is not None:
            raise stale

    def _read_outputs_hw(self) -> None:
        """Before the safe state: read the outputs' state and levels where the instrument may have changed them
        unseen (its protection, its front panel, another program), correcting what this driver holds; a level it
        holds as unknown stays unknown (the instrument may still be on its way). Nothing by default."""

    def _close_hw(self) -> None:
        self.transport.close()

    def _identify_hw(self) -> str:
        return self.idn

    def write(self, command: str) -> None:
        """Send ``command`` (no reply is read; `check_errors` tells whether it was taken)."""
        self.transport.write(command)

    def query(self, command: str) -> str:
        """The reply to ``command``, stripped. A link out of step (after a timeout, or a reply not of its query's
        form) is resynchronised first (`_resynchronise`); an empty reply marks it out of step, and one that came
        with another line unread is a `DeviceError`."""
        with self.transport.transaction():  # a timeout in another thread may not come between the check and the query
            if self.transport.out_of_step:
                self._resynchronise()
            reply = self.transport.query(command).strip()
            if not reply:  # no SCPI reply is empty: a line ending too many, and the true reply may follow it
                self.transport.out_of_step = True
            elif self.transport.unread():  # a line unasked for came with it, before or after: which is the reply?
                raise self.unexpected_reply(f"reply {excerpt(reply)} to {command!r} came with more after it")
            return reply

    def _resynchronise(self) -> None:
        """After a timeout, the late reply may still arrive and would answer the next query instead. Ask for a
        marker no earlier reply can hold (``*ESE n;*ESE?;*IDN?``, n new each time, `MARKERS`) and discard every
        line up to its answer (with the identity read at connect, if one was yet), then restore ``*ESE 0``. On a
        GPIB or VXI-11 link the instrument may discard the late reply instead and queue -410 "Query INTERRUPTED":
        the next error check expects one per resynchronisation."""
        with self.transport.transaction():
            self._interrupted += 1
            expected = next(self._markers)
            self.transport.write(f"*ESE {expected};*ESE?;*IDN?")
            for _ in range(self.max_error_reads):
                marker, _, identity = self.transport.read().strip().partition(";")
                if _integer(marker) == expected and (not self.idn or identity.strip() == self.idn):
                    self.transport.out_of_step = False
                    self.transport.write("*ESE 0")
                    return
        raise DeviceError(f"{self.name}: out of step with the instrument after a timeout (no answer to its "  # type: ignore[attr-defined]
                          f"marker among {self.max_error_reads} replies); power-cycle it and connect again")

    def unexpected_reply(self, detail: str) -> DeviceError:
        """The error for a reply not of the form its query asks for (``detail`` says which): garbled on the line, or
        one meant for another query (an unsolicited line, a reply late for the last), after which every reply would
        answer the query before it. The link is marked out of step, so the next query resynchronises first."""
        self.transport.out_of_step = True
        return DeviceError(f"{self.name}: {detail}; check that the resource is this instrument and that no other "  # type: ignore[attr-defined]
                           "program talks to it (the next query resynchronises the link)")

    def wait_complete(self, extra_s: float, what: str, then: str = "") -> list[str]:
        """Wait on ``*OPC?`` until the instrument has finished ``what`` (a sweep, a burst, an upload), allowing
        ``extra_s`` seconds beyond the transport timeout; a reply other than 1 is a `DeviceError`. ``then`` holds
        queries (each from the root, ``:OUTP1?;:SOUR1:FUNC?``) answered once it has finished, in the same message:
        their replies are returned, one a query, at no round trip more."""
        command = f"*OPC?;{then}" if then else "*OPC?"
        with self.transport.patience(extra_s):
            reply = self.query(command)
        done, *replies = reply.split(";")
        if _integer(done) != 1 or len(replies) != then.count("?"):
            expected = f"1 and {then.count('?')} replies" if then else "1"
            raise self.unexpected_reply(f"reply {excerpt(reply)} to {command!r} after {what} is not {expected}")
        return [part.strip() for part in replies]

    def query_float(self, command: str) -> float:
        """A numeric reply; a reply that is not a number is a `DeviceError` naming the command."""
        reply = self.query(command)
        try:
            value = float(reply)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise self.unexpected_reply(f"reply {excerpt(reply)} to {command!r} is not a finite number")
        return value

    def query_floats(self, command: str) -> list[float]:
        """A comma-separated numeric reply."""
        reply = self.query(command)
        try:
            return [float(part) for part in reply.split(",")]
        except ValueError:
            raise self.unexpected_reply(f"reply {excerpt(reply)} to {command!r} is not a list of numbers") from None

    def query_bool(self, command: str) -> bool:
        """A ``0`` or ``1`` reply; anything else is a `DeviceError` naming the command."""
        reply = self.query(command)
        if reply not in ("0", "1"):
            raise self.unexpected_reply(f"reply {excerpt(reply)} to {command!r} is not 0 or 1")
        return reply == "1"

    def parse_error(self, reply: str) -> tuple[int, str]:
        """Split an error-queue entry ``<code>,"<message>"``; drivers override for other formats. Anything else (a
        bare number, say, an unsolicited line or one meant for another query) is malformed, not an error code."""
        code, comma, message = reply.partition(",")
        message = message.strip()
        if not (_integer(code) is not None and comma and len(message) >= 2 and message[0] == message[-1] == '"'):
            raise self.malformed_error_reply(reply)
        return int(code), message[1:-1]

    def malformed_error_reply(self, reply: str) -> DeviceError:
        """The error for an error-queue entry that `parse_error` cannot read."""
        return self.unexpected_reply(f"error-queue reply {excerpt(reply)} is malformed")

    def check_errors(self, after: str = "") -> None:
        """Read the error queue until it is empty; raise `DeviceError` listing every error found."""
        errors = self._error_texts()
        if errors:
            context = f" after {after}" if after else ""
            raise DeviceError(f"{self.name}: instrument reported{context}: {'; '.join(errors)}; what was sent may "  # type: ignore[attr-defined]
                              "not have been carried out: look each code up in the instrument's manual, correct the "
                              "setting or the command, then try again")

    def changed_unseen(self, changes: list[str], what: str) -> DeviceError:
        """The error for settings the instrument holds otherwise than this driver left them (``changes``, each
        ``"<what> <held>, not <set>"``), found after ``what``: changed by the instrument's own protection, its front
        panel, another program or a restart. The error queue is emptied into it, as it may say which (an
        overtemperature, an overload); what was measured meanwhile is not to be taken as data."""
        try:
            errors = self._error_texts()
        except HilError as error:  # the link itself failing: said, but not in place of the change
            errors = [f"its error queue could not be read ({error})"]
        said = f" (it reported: {'; '.join(errors)})" if errors else ""
        return DeviceError(f"{self.name}: after {what} the instrument has {'; '.join(changes)} as this driver "  # type: ignore[attr-defined]
                           "left it (its protection switched an output off, or its front panel, another program or a "
                           f"restart changed it){said}: what was measured meanwhile is not of the settings sent; check "
                           "the instrument and the device under test, then try again")

    def _error_texts(self) -> list[str]:
        """The error queue emptied, each entry as ``<code> <message>``."""
        return [message if code is None else f"{code} {message}" for code, message in self.read_errors()]

    def read_errors(self) -> list[tuple[int | None, str]]:
        """Empty the error queue: its errors as (code, message), without the "Query INTERRUPTED" a resynchronisation
        accounts for; code None where the queue did not empty."""
        errors: list[tuple[int | None, str]] = []
        for _ in range(self.max_error_reads):
            code, message = self.parse_error(self.query("SYST:ERR?"))
            if code == 0:
                break
            if code == self.QUERY_INTERRUPTED and self._interrupted:
                self._interrupted -= 1  # a query a timeout left behind, discarded at a resynchronisation
                continue
            errors.append((code, message))
        else:
            errors.append((None, "its error queue did not empty"))
        self._interrupted = 0
        return errors


def _integer(text: str) -> int | None:
    """An integer reply such as ``5`` or ``+5``; None for anything else."""
    try:
        return int(text.strip())
    except ValueError:
        return None
