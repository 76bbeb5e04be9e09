"""The ``hil`` command.

A user mistake (a bad file, a value out of limits, a missing instrument) prints one line on stderr and exits
with status 2, never a traceback. Ctrl-C exits with 130 after the instruments are safe.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from hil.errors import HilError

DEFAULT_LAB = "lab.yaml"


def _devices(args: argparse.Namespace) -> int:
    from hil.lab import Lab

    console = Console(width=None if sys.stdout.isatty() else 160)
    with Lab.load(args.lab) as lab:
        table = Table(title=f"Instruments of {args.lab}")
        for column in ("name", "class", "resource", "identity", "limits"):
            table.add_column(column, overflow="fold")
        for name, instrument in lab.instruments.items():
            transport = getattr(instrument, "transport", None)
            table.add_row(
                name,
                f"{type(instrument).__name__} ({instrument.capability})",
                transport.resource if transport is not None else f"world {lab.config.instruments[name].world}",
                instrument.identify(),
                "\n".join(f"{key}: {limit.describe()}" for key, limit in instrument.limits.items()),
            )
        console.print(table)
    return 0


def _check(args: argparse.Namespace) -> int:
    from hil.lab import Lab

    lab = Lab.load(args.file)
    try:
        instruments = lab.build()
    finally:
        lab.close()
    print(f"{args.file}: OK, a lab of {len(instruments)} instrument(s); no hardware was touched")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hil", description="Train physical neural networks with the "
                                     "hardware in the loop.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    devices = commands.add_parser("devices", help="connect to the lab's instruments and list them")
    devices.add_argument("--lab", default=DEFAULT_LAB, type=Path, help="lab file (default: %(default)s)")
    devices.set_defaults(func=_devices)

    check = commands.add_parser("check", help="validate a lab file without touching hardware")
    check.add_argument("file", type=Path)
    check.set_defaults(func=_check)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except HilError as error:
        print(f"hil: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hil: interrupted; instruments were put in their safe state", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
