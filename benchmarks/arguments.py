"""The benchmarks' command lines: a bad argument is refused on one line, before anything is measured."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import NoReturn

from hil.lab import LabConfig
from hil.registry import subclass_of


class Parser(argparse.ArgumentParser):
    """argparse's parser, refusing a bad argument on one line (``benchmarks/NAME.py: error: ...; see ... --help``)
    rather than its usage and the error; exit status 2, as argparse's."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())}; see {self.prog} --help\n")


def run(main: Callable[[], None]) -> None:
    """Run a benchmark's ``main``. A reader that quits early (``benchmarks/simulators.py | head -3``) ends it quietly
    with exit status 1, as hil's commands end, rather than in a traceback and another at exit's flush."""
    try:
        main()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush at exit
        sys.exit(1)


def count(text: str) -> int:
    """A value that counts something (repeats, rows, bytes, threads): an integer ≥ 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a count (an integer of 1 or more)")
    return value


def writable_file(text: str) -> Path:
    """A file the figures are written to as they are measured: refused at once (before hours of measuring) where
    its folder is missing or cannot be written, or where it is a folder."""
    path = Path(text)
    folder = path.parent
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a folder; name a file in it")
    if not folder.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r}: there is no folder {str(folder)!r}; create it first")
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise argparse.ArgumentTypeError(f"{text!r} cannot be written (permissions); name a file you can write")
    return path


def check_names(parser: argparse.ArgumentParser, option: str, given: Iterable[str], known: Iterable[str],
                known_as: str) -> None:
    """Refuse (one line, exit 2) a name given to ``option`` that is not among ``known`` (called ``known_as``)."""
    known = list(known)
    unknown = [name for name in given if name not in known]
    if unknown:
        parser.error(f"{option}: {', '.join(map(repr, unknown))} is none of {known_as}: {', '.join(known)}")


def check_presets(parser: argparse.ArgumentParser, config: LabConfig, worlds: Iterable[str],
                  presets: Iterable[str]) -> None:
    """Refuse (one line, exit 2) a ``--presets`` name that one of the lab's ``worlds`` (by name) does not have."""
    from simulators.world import World  # the simulators' base, as the lab imports it

    for name in worlds:
        kind = config.worlds[name].kind
        known = subclass_of("worlds", kind, World).presets
        check_names(parser, "--presets", presets, known, f"the presets of world {name!r} ({kind})")
