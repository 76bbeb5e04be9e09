"""The ``hil`` command.

A user mistake (a bad file, a value out of limits, a missing instrument, a bad argument) prints one line on stderr
and exits with status 2, never a traceback. Ctrl-C exits with 130 after the instruments are safe (``hil emulate``,
which serves until Ctrl-C, with 0), SIGTERM and SIGHUP with 128 + their number.
"""

from __future__ import annotations

import argparse
import glob
import importlib.metadata
import logging
import os
import signal
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from rich.console import Console
from rich.table import Table

from hil.errors import (
    ConfigError,
    HilError,
    NoLocks,
    RunHeld,
    Terminated,
    WriteRefused,
    handling,
    run_warning,
    signals_held,
    stop_signals,
    terminate_on_signals,
)

DEFAULT_LAB = "lab.yaml"


def _stderr(line: str) -> None:
    """``line`` on standard error; nothing where hil started with it closed (``2>&-``), as Python's own warnings do:
    print's stream of None is standard output, which holds what a script reads (a run's folder, the files that
    passed hil check)."""
    if sys.stderr is not None:
        print(line, file=sys.stderr)


def _console() -> Console:
    """The console of hil's tables. Their cells are text as found (a protocol's name, an instrument's reply), never
    rich markup: ``[/b]`` in one would be an error, and ``[bold]`` a style. A terminal's width folds their columns;
    output to a file or a pipe has no width, so that each row stays whole for grep and scripts."""
    terminal = sys.stdout is not None and sys.stdout.isatty()  # None: hil started with its stdout closed (>&-)
    return Console(width=None if terminal else sys.maxsize, markup=False)


def _devices(args: argparse.Namespace) -> int:
    from hil.lab import Lab

    if args.lab == Path(DEFAULT_LAB) and not args.lab.exists():  # the default lab, looked for where hil was run
        raise ConfigError(f"file not found in the working directory, {Path.cwd()}; run hil in the lab file's folder, "
                          "or name the file with --lab FILE", source=DEFAULT_LAB)
    console = _console()
    lab = Lab.load(args.lab)
    identities = lab.read_identities()  # read only: an instrument may be in use (someone's output left as it is)
    table = Table(title=f"Instruments of {args.lab}")
    for column in ("name", "class", "resource", "identity", "limits"):
        table.add_column(column, overflow="fold")
    for name, instrument in lab.instruments.items():
        transport = getattr(instrument, "transport", None)
        table.add_row(
            name,
            f"{type(instrument).__name__} ({instrument.capability})",
            transport.resource if transport is not None else f"world {lab.config.instruments[name].world}",
            identities[name],
            "\n".join(f"{key}: {limit.describe()}" for key, limit in instrument.limits.items()),
        )
    console.print(table)
    if lab.worlds:
        worlds = Table(title="Simulated worlds")
        for column in ("name", "kind", "preset", "seed", "clock"):
            worlds.add_column(column)
        for name, world in lab.worlds.items():
            worlds.add_row(name, world.kind, world.preset, str(world.seed),
                           "real time" if world.clock.realtime else "virtual")
        console.print(worlds)
    if lab.systems:
        systems = Table(title="Physical systems y = f(x, θ)")
        for column in ("name", "kind", "instruments", "x", "θ", "y", "max batch"):
            systems.add_column(column)
        for name, system in lab.systems.items():
            systems.add_row(
                name, system.kind, ", ".join(f"{r}: {i.name}" for r, i in system.instruments.items()),
                f"{system.n_in} in {system.x_bounds[0]:g}..{system.x_bounds[1]:g}",
                f"{system.n_params} in {system.theta_bounds[0]:g}..{system.theta_bounds[1]:g}",
                str(system.n_out), str(system.max_batch))
        console.print(systems)
    return 0


def _check(args: argparse.Namespace) -> int:
    """Check each file (``hil check experiments/*.yaml`` in CI): a line for each, on stdout if it passes, on stderr
    if not; status 2 if any did not."""
    failed = False
    for file in _expanded(args.files):
        try:
            print(_checked(file, args.lab), flush=True)  # in order with the errors, where both go to one log
        except HilError as error:
            _say(error)
            failed = True
    return 2 if failed else 0


def _expanded(files: list[Path]) -> list[Path]:
    """``files`` with each wildcard pattern (``experiments\\*.yaml``) replaced by the files it matches, in order, on
    Windows, whose shells pass it on as written where a POSIX shell expands it; a pattern that matches nothing stays,
    to be reported as not found, as a POSIX shell leaves it."""
    if sys.platform != "win32":
        return files
    expanded = []
    for file in files:
        matches = sorted(glob.glob(str(file))) if any(character in str(file) for character in "*?[") else []
        expanded += [Path(match) for match in matches] or [file]
    return expanded


def _checked(file: Path, lab_file: Path | None) -> str:
    """What ``file``, a lab file or a protocol (on ``lab_file``, or its own lab), holds; `HilError` if it is wrong."""
    from hil.config import YamlDocument
    from hil.lab import Lab, reads_as
    from hil.protocol import check_protocol

    document = YamlDocument.read(file)  # once: what it reads as, then what it holds
    if reads_as(document.data) == "protocol":
        return check_protocol(document, lab_file)
    if lab_file is not None:
        raise ConfigError(f"{file} is a lab file, checked on its own; --lab goes with a protocol")
    lab = Lab.load(document)
    try:
        instruments = lab.build()
    finally:
        lab.close()
    return (f"{file}: OK, a lab of {len(instruments)} instrument(s), {len(lab.worlds)} world(s) and "
            f"{len(lab.systems)} system(s); no hardware was touched")


def _run(args: argparse.Namespace) -> int:
    with signals_held():  # a stop inside torch's import was lost, or left numpy half-loaded (a traceback later)
        from hil.orchestrator import Interrupted, run_protocol
        from hil.store import EVENTS, SUMMARY, local_time, resume_command

    if (args.protocol is None) == (args.resume is None):
        _stderr("hil: error: give a protocol file, or --resume RUN (not both); see hil run --help")
        return 2
    if args.resume is not None and (args.seed is not None or args.lab is not None):
        _stderr("hil: error: --seed and --lab choose a new run's; a resumed run keeps its own; see hil run --help")
        return 2
    if args.protocol is not None and args.protocol.is_dir():  # a run folder, --resume forgotten?
        resume = f", and continues a run with: {resume_command(args.protocol)}" \
            if (args.protocol / EVENTS).exists() else ""
        _stderr(f"hil: error: {args.protocol} is a {'run ' if resume else ''}folder; hil run takes a protocol file "
                f"(e.g. experiments/*.yaml){resume}")
        return 2
    try:  # the progress bars go to stderr: stdout holds the run's folder and report alone, for a script to read
        store = run_protocol(args.protocol, lab_path=args.lab, seed=args.seed, resume=args.resume,
                             show_progress=not args.quiet)
    except Interrupted as stopped:
        _stderr(f"hil: {stopped}")
        return stopped.exit_status
    report = store.path / SUMMARY
    if store.finished_before is not None:  # a resume of a finished run: it ran nothing and wrote nothing
        ended = local_time(store.finished_before.get("time"))
        print(f"{store.path}: the run finished at {ended}; nothing to resume; its report: {report}")
        return 0
    print(f"run folder: {store.path}")
    print(f"report:     {report}")
    return 0


def _runs(args: argparse.Namespace) -> int:
    from hil.store import EVENTS, list_runs, shell_word

    if not args.root.exists():  # no run made there yet, or hil runs from another folder than the runs'
        where = "" if args.root.is_absolute() else f" in the working directory, {Path.cwd()}"
        _stderr(f"hil: error: {args.root}: no such folder{where}; hil run makes it (a protocol's output.root, runs by "
                "default), or give another with --root")
        return 2
    if not args.root.is_dir():
        _stderr(f"hil: error: {args.root} is not a folder of runs; give one with --root")
        return 2
    try:  # one it cannot read: the runs' search finds none there, silently ("no runs")
        with os.scandir(args.root):
            is_run = (args.root / EVENTS).is_file()
    except OSError as error:
        _stderr(f"hil: error: {args.root}: cannot read the folder ({error.strerror or error}); fix its permissions, or "
                "give another with --root")
        return 2
    if is_run:  # a run folder: listing the runs inside it would show none
        _stderr(f"hil: error: {args.root} is a run folder; list it with the others: hil runs --root "
                f"{shell_word(str(args.root.absolute().parent))}")
        return 2
    table = Table(title=f"Runs in {args.root}")
    for column in ("run", "protocol", "status", "device accuracy", "events"):
        table.add_column(column, overflow="fold")  # folded, not cut short: a run's name is what hil report takes
    runs = list_runs(args.root)
    if not runs:
        print(f"no runs in {args.root} (hil run makes them in its protocol's output.root, runs by default)")
        return 0
    for run in runs:
        accuracy = run["device_accuracy"]
        shown = f"{accuracy:.3f}" if isinstance(accuracy, int | float) else "" if accuracy is None else str(accuracy)
        table.add_row(run["run"], str(run["protocol"]), run["status"], shown, str(run["events"]))
    _console().print(table)
    return 0


def _report(args: argparse.Namespace) -> int:
    from hil.report import live_summary, write_report
    from hil.store import RunStore

    try:
        store = RunStore.open(args.run, reporting=True)
    except (RunHeld, WriteRefused, NoLocks) as refused:  # a run going on (it writes its report as it ends), a folder
        # this user cannot write (another user's run, a read-only copy), or one hil cannot lock: its summary, read only
        store = RunStore.open(args.run, watch=True)
        try:
            print(live_summary(store))
        finally:
            store.close()
        said = (f"{args.run} is open in another hil process (pid {refused.pid}): above is its summary so far, written "
                "nowhere; the process that has it open writes its report") if isinstance(refused, RunHeld) else \
            f"{refused.brief}: above is its summary, written nowhere"
        _stderr(f"hil: {said}")
        return 0
    try:
        print(write_report(store))
    finally:
        store.close()
    return 0


def _port(text: str) -> int:
    """A ``--port`` value: 0 (a free port) to 65535."""
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port (0 to 65535; 0: a free one)")
    return port


def _seed(text: str) -> int:
    """A ``--seed`` value: an integer in the range `hil.config.Seed` allows."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 2**32 - 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a seed (an integer in 0..{2**32 - 1})")
    return value


def _emulate(args: argparse.Namespace) -> int:
    """Serve a driver's emulator until Ctrl-C, for trying a driver or a bench program by hand."""
    import time

    import yaml

    from hil.config import yaml_value
    from hil.registry import instrument_class
    from simulators.emulators.server import serve

    options = {}
    for option in args.options:
        key, equals, text = option.partition("=")
        if not equals or not key.isidentifier():
            raise ConfigError(f"emulator option {option!r} is not KEY=VALUE")
        try:
            options[key] = yaml_value(text)
        except yaml.constructor.ConstructorError as error:  # YAML, but not a value Python holds (a huge integer)
            raise ConfigError(str(error.problem), field=key) from None
        except yaml.YAMLError:
            raise ConfigError(f"{text!r} is not a YAML value (a number, text, true/false or null)",
                              field=key) from None
    if args.via == "pty" and args.port:  # it served a pty and said nothing of the port asked for
        raise ConfigError(f"--port {args.port} is for --via tcp: a pty has no port; leave --port out")
    server = serve(instrument_class(args.driver), options, args.via, args.port, name=args.driver)
    try:  # from here on, a Ctrl-C is the way to stop it, even one that comes as the address is printed
        # Ctrl-C stops it even where SIGINT came in ignored (a job a shell script started in the background)
        with handling((signal.SIGINT,), signal.default_int_handler):
            print(f"{args.driver} emulator at {server.resource} (Ctrl-C stops it)", flush=True)
            while True:
                time.sleep(0.2)
    except Terminated as stop:  # SIGTERM or SIGHUP: a stop, reported with its signal's status, not Ctrl-C's 0
        _stderr(f"hil: {args.driver} emulator stopped by {stop}")  # no instrument to make safe
        return 128 + stop.signum
    except KeyboardInterrupt:
        return 0
    finally:
        server.stop()


def _version() -> str:
    """hil's version, as `hil.orchestrator.software_versions` records it in a run."""
    try:
        return importlib.metadata.version("hil")
    except importlib.metadata.PackageNotFoundError:  # hil run from a source tree it was not installed from
        return "not installed"


class _Parser(argparse.ArgumentParser):
    """argparse's parser (and its subcommands'), refusing bad arguments on one line as hil refuses every mistake,
    ``hil: error: ...; see hil run --help``, rather than its usage and the error; exit status 2 as argparse's."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"hil: error: {' '.join(message.split())}; see {self.prog} --help\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="hil", description="Train physical neural networks with the hardware in the loop.",
                     epilog="exit status: 0 done; 2 a bad argument or file, an instrument that failed, or a run that "
                            "failed (one line on stderr says which, and what to do); 1 the output could not be "
                            "written (a full disk, a reader that quit); 128+N stopped by signal N: 130 Ctrl-C, 143 "
                            "SIGTERM, 129 SIGHUP, 149 SIGBREAK (Ctrl-Break, Windows) (a stopped run says how to "
                            "resume it; hil emulate, which runs until Ctrl-C, exits 0 at it)")
    parser.add_argument("--version", action="version", version=f"hil {_version()}",
                        help="print hil's version (as a run records it) and exit")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def subcommand(name: str, summary: str, details: str) -> argparse.ArgumentParser:
        """A subcommand: ``summary`` in hil --help's list; in its own --help, what it prints too (``details``)."""
        return commands.add_parser(name, help=summary, description=f"{summary[0].upper()}{summary[1:]}. {details}")

    devices = subcommand("devices", "list the lab's instruments, reading each one's identity (and nothing else: an "
                         "instrument in use is left as it is)", "Prints tables of the instruments (class, resource, "
                         "identity, limits), the simulated worlds and the physical systems.")
    devices.add_argument("--lab", default=DEFAULT_LAB, type=Path, help="lab file (default: %(default)s)")
    devices.set_defaults(func=_devices)

    check = subcommand("check", "validate a lab file or a protocol without touching hardware",
                       "Prints a line saying what each file given holds; a mistake is one line on stderr naming the "
                       "file, line and field, and the status is 2 if any file has one.")
    check.add_argument("files", nargs="+", type=Path, metavar="file", help="a lab file or a protocol (or several)")
    check.add_argument("--lab", type=Path, default=None, help="lab file for a protocol (default: its own)")
    check.set_defaults(func=_check)

    run = subcommand("run", "run an experiment protocol, or resume a run",
                     "Prints the run's folder and its report on stdout; the progress bars and the errors go to stderr. "
                     "A first Ctrl-C stops after the current step, training batch or group of twin data, with a "
                     "checkpoint; a second, SIGTERM, SIGHUP or Ctrl-Break (Windows) stop at once; the instruments are "
                     "put in their safe state, and the last line says how to resume.")
    run.add_argument("protocol", type=Path, nargs="?", help="the protocol file (none with --resume)")
    run.add_argument("--lab", type=Path, default=None, help="lab file (default: the protocol's)")
    run.add_argument("--seed", type=_seed, default=None, help="override the protocol's seed")
    run.add_argument("--resume", type=Path, default=None, metavar="RUN", help="continue this run folder")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    run.set_defaults(func=_run)

    runs = subcommand("runs", "list the runs in a folder",
                      "Prints a table of them, newest first: protocol, status, device accuracy and events.")
    runs.add_argument("--root", type=Path, default=Path("runs"),
                      help="the folder of run folders (default: %(default)s, a protocol's default output.root)")
    runs.set_defaults(func=_runs)

    emulate = subcommand("emulate", "serve a driver's instrument emulator until Ctrl-C",
                         "Prints the VISA resource to give in a lab file or to pyvisa.")
    emulate.add_argument("driver", help="a driver name, as in lab.yaml (e.g. keithley_2450)")
    emulate.add_argument("options", nargs="*", metavar="KEY=VALUE", help="emulator options (e.g. load_ohm=1000)")
    emulate.add_argument("--via", choices=("tcp", "pty"), default="tcp", help="TCP on 127.0.0.1, or a pty")
    emulate.add_argument("--port", type=_port, default=0, help="TCP port (default: a free one)")
    emulate.set_defaults(func=_emulate)

    report = subcommand("report", "write (again) the report of a run",
                        "Prints the path of its summary.md. Of a run going on, or in a folder hil cannot write or "
                        "lock, prints its summary so far instead, writing nothing.")
    report.add_argument("run", type=Path, help="a run folder")
    report.set_defaults(func=_report)
    for command in commands.choices.values():  # an argument a command does not take points at its own help
        command.set_defaults(parser=command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    if getattr(sys.stdout, "errors", None) == "strict" and hasattr(sys.stdout, "reconfigure"):
        # a path the file system gave in another encoding (a lone surrogate) is printed escaped, not a traceback
        sys.stdout.reconfigure(errors="backslashreplace")
    # matplotlib (the report's plots) logs to stderr where nothing takes its log: two lines on each hil run and hil
    # report where the home cannot be written (a shared account's, a service's), of a cache it then keeps elsewhere
    plots = logging.getLogger("matplotlib")
    if not plots.handlers:
        plots.addHandler(logging.NullHandler())
    with warnings.catch_warnings():
        python_shows = warnings.showwarning

        def one_line(message: Warning | str, category: type[Warning], *where: Any) -> None:
            """hil's warnings (a plugin's entry point ignored, say) as one line, as its errors are."""
            if run_warning(category):
                _stderr(f"hil: warning: {message}")
            else:
                python_shows(message, category, *where)

        warnings.showwarning = one_line
        return _main(argv)


def _say(error: HilError) -> None:
    """A mistake or a failure on stderr: its line, then what to do next (a failed run: how to resume it)."""
    _stderr(f"hil: error: {error}")
    for note in getattr(error, "__notes__", ()):
        _stderr(f"hil: {note}")


def _main(argv: Sequence[str] | None) -> int:
    args, unrecognized = build_parser().parse_known_args(argv)
    if args.func is _emulate:  # options after a flag (emulate X --via pty load_ohm=1000), which argparse leaves over
        args.options += [word for word in unrecognized if "=" in word and not word.startswith("-")]
        unrecognized = [word for word in unrecognized if word not in args.options]
    if unrecognized:
        args.parser.error(f"unrecognized arguments: {' '.join(unrecognized)}")
    try:
        os.getcwd()
    except OSError as error:  # removed since (a colleague tidying a shared folder), or a share gone stale: torch's
        # import then ended hil with "Intel oneMKL FATAL ERROR: Cannot load libtorch_cpu.so", as if not installed
        _stderr(f"hil: error: the working directory is gone ({error.strerror or error}): it was removed, or its share "
                "was lost; cd to a folder that exists and run hil again")
        return 2
    func: Callable[[argparse.Namespace], int] = args.func
    # what a stop leaves: hil run's instruments made safe; the other commands change nothing on an instrument
    stopped = "instruments were put in their safe state" if func is _run else "nothing was changed on the instruments"
    # SIGTERM and SIGHUP stop hil at once, but one that came in ignored stays so: `nohup hil run` outlives its terminal
    ignored = [s for s in stop_signals() if signal.getsignal(s) is signal.SIG_IGN]
    with terminate_on_signals(), handling(tuple(ignored), signal.SIG_IGN):
        try:
            return func(args)
        except HilError as error:
            _say(error)
            return 2
        except Terminated as stop:
            _stderr(f"hil: stopped by {stop}; {stopped}")
            return 128 + stop.signum
        except KeyboardInterrupt:
            _stderr(f"hil: interrupted; {stopped}")
            return 130
        except BrokenPipeError:  # the output's reader quit (hil check x.yaml | head -c 1): stop quietly, as rich does
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush at exit
            return 1
        except OSError as error:  # a file the command names is named by the error; else the output failed
            if error.filename is None:
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            what = "cannot write standard output" if error.filename is None else str(error.filename)
            _stderr(f"hil: error: {what} ({error.strerror or error})")
            return 1


if __name__ == "__main__":
    sys.exit(main())
