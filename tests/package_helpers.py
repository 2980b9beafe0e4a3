"""A copy of the shipped compact package to change in a test."""

from __future__ import annotations

import json
import shutil

from lamra.light_checkpoint import CHANNELS
from lamra.model import SHIPPED_DIR


def light_package(tmp_path):
    """The shipped package under ``tmp_path``, without its score channels (appearance, colour)."""
    package = tmp_path / "package"
    shutil.copytree(SHIPPED_DIR, package, ignore=shutil.ignore_patterns(*(file for file, _ in CHANNELS.values())))
    config = json.loads((package / "lamra.json").read_text())
    for kind in CHANNELS:
        config.pop(kind, None)
    (package / "lamra.json").write_text(json.dumps(config))
    return package
