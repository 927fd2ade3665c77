"""Other tools' checksums of a migration file, computed as they compute them.

* Prisma stores the sha256 of ``migration.sql`` as lowercase hex, and accepts
  the file with its line endings changed (LF <-> CRLF) as the same file.
* Flyway stores a CRC32 of its own kind as a signed 32-bit integer: the file
  is read line by line (``BufferedReader.readLine``: the line breaks ``\\n``,
  ``\\r\\n`` and ``\\r`` are dropped), a leading BOM is dropped, and each line's
  UTF-8 bytes are fed to one CRC32 — so line endings never change it.

golang-migrate and dbmate store no checksum. Both functions read the file's
bytes as they are on disk (the migration's ``sql`` is already normalised).
"""

from __future__ import annotations

import hashlib
import re
import zlib
from pathlib import Path

_BREAK = re.compile(r"\r\n|\r|\n")
BOM = "\ufeff"


def prisma_matches(path: str | Path, checksum: str) -> bool:
    """Whether Prisma's stored ``checksum`` is this file's, as Prisma decides it (line endings aside)."""
    data = Path(path).read_bytes()
    variants = {data, data.replace(b"\r\n", b"\n"), data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")}
    wanted = checksum.strip().lower()
    return any(hashlib.sha256(v).hexdigest() == wanted for v in variants)


def prisma_checksum(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def flyway_checksum(path: str | Path) -> int:
    """Flyway's checksum of a SQL migration file (a signed 32-bit int, as ``flyway_schema_history.checksum``)."""
    text = Path(path).read_bytes().decode("utf-8", errors="replace")
    if text.startswith(BOM):
        text = text[1:]
    lines = _BREAK.split(text)
    crc = 0
    for line in lines:
        crc = zlib.crc32(line.encode("utf-8"), crc)
    return crc - (1 << 32) if crc >= (1 << 31) else crc
