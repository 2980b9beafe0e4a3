"""Writes that never leave a half-written file: write a temporary sibling, then rename it into place
(``os.replace`` is atomic within a directory), so a reader, or a run killed midway, sees the old
file or the new one and never a mix."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO


def _temp_sibling(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return Path(name)


@contextmanager
def atomic_text_writer(path: str | os.PathLike) -> Iterator[TextIO]:
    """``with atomic_text_writer(path) as handle:`` UTF-8, ``\\n`` line ends, renamed on success."""
    path = Path(path)
    temp = _temp_sibling(path)
    try:
        with temp.open("w", encoding="utf-8", newline="\n") as handle:
            yield handle
        os.chmod(temp, 0o644)  # mkstemp makes it 0600
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_text_writer(path) as handle:
        handle.write(text)
    return Path(path)


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """``write(temp_path)`` (e.g. ``torch.save`` or safetensors' ``save_file``), then the rename."""
    path = Path(path)
    temp = _temp_sibling(path)
    try:
        write(temp)
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return path


def atomic_directory(final: str | os.PathLike):
    """A temporary sibling directory (``.path``); ``commit()`` moves it into place in one rename
    (replacing what was there), ``abort()`` removes it. As a context manager it gives the path and
    commits on success, aborts on an error."""
    final = Path(final)

    class _Staging:
        def __init__(self):
            final.parent.mkdir(parents=True, exist_ok=True)
            self.path = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))

        def commit(self):
            if final.exists():
                shutil.rmtree(final)
            os.replace(self.path, final)

        def abort(self):
            shutil.rmtree(self.path, ignore_errors=True)

        def __enter__(self) -> Path:
            return self.path

        def __exit__(self, exc_type, exc, traceback) -> None:
            self.commit() if exc_type is None else self.abort()

    return _Staging()
