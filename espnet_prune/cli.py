"""How every entry point turns bad input into one line and a non-zero exit status.

Every error this package raises for bad input (a config key, a checkpoint, an audio file, a data dir)
derives from ValueError and names its culprit in the message; OSError covers files that cannot be
opened. ``exit_on_error`` turns them into ``prog: error: <message>`` on stderr and exit status 1, as
argparse does for bad options (status 2); anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys
from contextlib import contextmanager
from typing import Iterator, Tuple, Type

BAD_INPUT_ERRORS: Tuple[Type[BaseException], ...] = (ValueError, OSError)


def one_line(error: BaseException) -> str:
    """The error's message on one line (line breaks and runs of spaces collapsed)."""
    return " ".join(str(error).split()) or type(error).__name__


@contextmanager
def exit_on_error(prog: str, *extra: Type[BaseException]) -> Iterator[None]:
    """Run the block; on a bad-input error (or one of ``extra``) exit with ``prog: error: ...``, status 1."""
    try:
        yield
    except BAD_INPUT_ERRORS + extra as exc:
        sys.exit(f"{prog}: error: {one_line(exc)}")


def boolean(value: str) -> bool:
    """An option's true/false value (true, false, yes, no, 1, 0), as ESPnet's ``str2bool`` reads it."""
    lowered = value.lower()
    if lowered not in ("true", "false", "yes", "no", "1", "0"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")
    return lowered in ("true", "yes", "1")


def add_switch(parser: argparse.ArgumentParser, name: str, help: str) -> None:
    """A false-by-default option set by ``--name``, ``--name true`` or ``--name false`` (recipes pass values)."""
    parser.add_argument(name, type=boolean, nargs="?", const=True, default=False, help=help)


def add_trust_checkpoint(parser: argparse.ArgumentParser) -> None:
    """The ``--trust_checkpoint`` opt-in of every command that reads a checkpoint."""
    add_switch(
        parser,
        "--trust_checkpoint",
        "unpickle checkpoints that hold more than tensors and plain data; unpickling can run code "
        "from the file: only for files you trust (default: refused, naming the classes)",
    )
