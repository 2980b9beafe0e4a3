"""The command line shared by the scripts that fit a score channel and choose its settings on val
(``scripts/fit_appearance.py``, ``scripts/fit_colour.py``)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from lamra.assets import lamra_home


def channel_fit_parser(description: str, dims: Sequence[int], grid: Sequence[float], page: str) -> argparse.ArgumentParser:
    """The options every channel fit takes; a script adds its own."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="src/lamra/weights/compact", help="a light compact package")
    parser.add_argument("--data", type=Path, default=lamra_home() / "pocketbeir")
    parser.add_argument("--dims", default=",".join(map(str, dims)), help="PCA components kept, tried on val")
    parser.add_argument("--grid", default=",".join(map(str, grid)), help="weights tried on val")
    parser.add_argument("--page", default=page)
    parser.add_argument("--dry-run", action="store_true")
    return parser


def command_with_options(script: str, parser: argparse.ArgumentParser, args: argparse.Namespace,
                         names: Sequence[str]) -> str:
    """``.venv/bin/python SCRIPT`` and those of the options ``names`` whose values differ from their
    defaults: the command a page names, so it regenerates the grid the page shows."""
    changed = [f"--{name.replace('_', '-')} {getattr(args, name)}" for name in names
               if getattr(args, name) != parser.get_default(name)]
    return " ".join([f".venv/bin/python {script}", *changed])
