"""Where attachment bytes live: content-addressed by sha256, behind one small interface.

An upload is first written to a staging file; the database row commits;
only then is the file moved into place (`Storage.put`). A crash before the
commit leaves a staging file and no row, which the sweeper removes; a crash
between the commit and the move leaves a sealed staging file whose sha256 a
row names, which the sweeper moves into place. No file is ever served but
through a row, so an orphan is never served.

"Orphan" means no row *of this database* names it: a storage directory
belongs to one database, whose id it carries in a mark file written on
first use. A sweep or a server pointed at a directory marked by another
database refuses (StorageOfAnotherDatabase) rather than take its files for
orphans.
"""

import contextlib
import fcntl
import hashlib
import os
import re
import time
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

SHA256 = re.compile(r"[0-9a-f]{64}")
_PART = ".part"  # being received
_SEALED = ".sealed"  # received and hashed: <sha256>.<random>.sealed, waiting for its row's commit


_MARK = "caseapi-database-id"  # in the storage root: the id of the database the files belong to


class StorageOfAnotherDatabase(Exception):
    """The storage directory is marked with another database's id; the message is one line."""

    def __init__(self, root: object, owner: str, database_id: str | None) -> None:
        this = f"this database is {database_id}" if database_id else "this database has stored no file yet"
        super().__init__(
            f"storage directory {root} belongs to another database ({owner}); {this}: "
            "set CASEAPI_STORAGE_DIR to this database's own directory"
        )


class Storage(Protocol):
    """The files, by sha256. An S3-compatible store implements the same methods;
    staging stays on the local disk either way."""

    staging: "Staging"

    @property
    def location(self) -> str:
        """Where the files are, for an operator's message (a directory, a bucket)."""
        ...

    def put(self, sha256: str, staged: Path) -> None:
        """Move (or upload) a sealed staging file into place; the staging file is gone afterwards."""

    def open(self, sha256: str) -> BinaryIO:
        """The stored bytes; FileNotFoundError when there are none."""

    def delete(self, sha256: str) -> None:
        """Remove the file; nothing happens when there is none."""

    def exists(self, sha256: str) -> bool: ...

    def names(self) -> Iterator[str]:
        """The sha256 of every stored file (for the sweeper)."""

    def lock(self) -> AbstractContextManager[None]:
        """Held around a move into place, and around a reference check and the deletion it decides."""

    claimed_by: str | None  # the database this process found the files belong to

    def owner(self) -> str | None:
        """The id of the database the files belong to; None before the first use."""

    def claim(self, database_id: str) -> None:
        """Mark the files as this database's, unless they are another's (StorageOfAnotherDatabase)."""


@dataclass(frozen=True)
class Staged:
    path: Path
    sha256: str
    size: int


class StagedWriter:
    """A staging file being written: hashed and counted as it goes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = open(path, "xb")  # noqa: SIM115  (closed by seal() or discard())
        self._digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        self._digest.update(data)
        self._file.write(data)
        self.size += len(data)

    def seal(self) -> Staged:
        """Durable on disk and renamed after its hash, so the sweeper can tell whose it is."""
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        sha256 = self._digest.hexdigest()
        sealed = self.path.with_name(f"{sha256}.{uuid.uuid4().hex}{_SEALED}")
        os.replace(self.path, sealed)
        return Staged(path=sealed, sha256=sha256, size=self.size)

    def discard(self) -> None:
        # Closing flushes what is buffered, which fails again on a full disk;
        # the bytes are thrown away anyway, and the file must go regardless.
        with contextlib.suppress(OSError):
            self._file.close()
        self.path.unlink(missing_ok=True)


class Staging:
    """Staging files, always on the local disk (beside the files for a local store)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def writer(self) -> StagedWriter:
        self.root.mkdir(parents=True, exist_ok=True)
        return StagedWriter(self.root / f"{uuid.uuid4().hex}{_PART}")

    def stale(self, older_than: float) -> Iterator[tuple[Path, str | None]]:
        """Staging files untouched for `older_than` seconds, with the sha256 of sealed ones."""
        if not self.root.is_dir():
            return
        cutoff = time.time() - older_than
        for path in self.root.iterdir():
            try:
                if path.stat().st_mtime > cutoff:
                    continue
            except FileNotFoundError:
                continue  # moved into place meanwhile
            if path.name.endswith(_SEALED):
                yield path, path.name.split(".", 1)[0]
            elif path.name.endswith(_PART):
                yield path, None


class LocalStorage:
    """Files under `root/objects/ab/<sha256>`; a lock file serialises the
    reference checks of deletions and the sweeper against moves into place."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.objects = root / "objects"
        self.staging = Staging(root / "staging")
        self.claimed_by: str | None = None  # checked once per process

    @property
    def location(self) -> str:
        return str(self.root)

    def _path(self, sha256: str) -> Path:
        if not SHA256.fullmatch(sha256):
            raise ValueError("not a sha256")
        return self.objects / sha256[:2] / sha256

    def put(self, sha256: str, staged: Path) -> None:
        path = self._path(sha256)
        path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, path)  # atomic: a reader sees no file or the whole file

    def open(self, sha256: str) -> BinaryIO:
        return open(self._path(sha256), "rb")

    def delete(self, sha256: str) -> None:
        self._path(sha256).unlink(missing_ok=True)

    def exists(self, sha256: str) -> bool:
        return self._path(sha256).is_file()

    def names(self) -> Iterator[str]:
        if not self.objects.is_dir():
            return
        for folder in self.objects.iterdir():
            for path in folder.iterdir():
                if SHA256.fullmatch(path.name):
                    yield path.name

    def owner(self) -> str | None:
        try:
            return (self.root / _MARK).read_text().strip() or None
        except FileNotFoundError:
            return None

    def claim(self, database_id: str) -> None:
        if self.claimed_by == database_id:
            return
        with self.lock():
            owner = self.owner()
            if owner is None:
                staged = self.root / f"{_MARK}.{uuid.uuid4().hex}{_PART}"
                staged.write_text(database_id + "\n")
                os.replace(staged, self.root / _MARK)
            elif owner != database_id:
                raise StorageOfAnotherDatabase(self.root, owner, database_id)
        self.claimed_by = database_id

    @contextmanager
    def lock(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def copy_chunks(source: BinaryIO, chunk_size: int, start: int, length: int) -> Iterator[bytes]:
    """`length` bytes of the file from `start`, in chunks, closing it at the end
    (or when the client goes away)."""
    try:
        source.seek(start)
        while length > 0 and (chunk := source.read(min(chunk_size, length))):
            length -= len(chunk)
            yield chunk
    finally:
        source.close()
