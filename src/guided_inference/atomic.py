"""Writing a file so that a crash never leaves half of it: readers see the old file or the new.

    write_atomic(Path("cal.json"), json.dumps(record, indent=1) + "\\n")

Contract: ``data`` (text, written as UTF-8, or bytes) goes to a temporary file in the
same directory (a rename is atomic only within one file system), is fsynced, then
``os.replace``-d over ``path``. The new file keeps the old one's permission bits, or for
a new file gets what ``open`` would have given it (0644 less the umask): ``mkstemp``
alone would leave it 0600. On any error the temporary file is removed and ``path`` is
as it was. The directory must exist.
"""
from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path


def write_atomic(path: str | Path, data: str | bytes) -> None:
    path = Path(path)
    blob = data.encode("utf-8") if isinstance(data, str) else data
    mode = _mode_for(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _mode_for(path: Path) -> int:
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        umask = os.umask(0o022)  # read it (there is no getter before Python 3.13), then put it back
        os.umask(umask)
        return 0o644 & ~umask
