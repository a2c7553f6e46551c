"""Blobs as files under one root directory: the embedded default.

A key ``a/b/c`` is the file ``<root>/a/b/c``. An upload streams into a temporary file under
``<root>/.incoming`` (the same filesystem, so the publish is one ``rename``), is fsynced, then
``os.replace``d onto its key and the directory fsynced: a reader sees the old file or the new
one, and a crash leaves at most an unnamed temporary file, which ``remove_stale_uploads``
clears. File I/O runs on the store's own small thread pool, never on the event loop, using only
the standard library (no aiofiles: it would run the same calls on the same kind of pool).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import stat as stat_mode
import tempfile
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TypeVar

from server.storage.base import BlobInfo, PresignedPost, PresignedPut, check_presign_args
from server.storage.errors import BlobKeyConflict, BlobNotFound
from server.storage.keys import MAX_KEY_CHARS, is_key_segment, validate_key, validate_prefix
from server.storage.meter import UploadMeter

__all__ = ["INCOMING_DIR", "LocalBlobStore"]

T = TypeVar("T")

INCOMING_DIR = ".incoming"  # a hidden name: no key can reach it
_READ_CHUNK_BYTES = 1024 * 1024
_WRITE_BUFFER_BYTES = 1024 * 1024  # small chunks are gathered into writes this large
_PUBLISH_ATTEMPTS = 3  # a concurrent delete may remove an empty parent between mkdir and rename
_IO_THREADS = 4
# What opening a key's path fails with when no blob is there: missing, a "folder" (a prefix of
# other keys), below a file, or a symlink (never made by the store; not followed).
_NOT_A_BLOB = {errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.ELOOP}


@dataclass(frozen=True)
class _Entry:
    name: str
    is_dir: bool
    size_bytes: int
    mtime_s: float

    @property
    def sort_key(self) -> str:
        # A directory sorts as "name/", so a depth-first walk yields keys in byte order
        # ("a-b" < "a/x", as S3 lists them), not "a/x" before "a-b".
        return self.name + "/" if self.is_dir else self.name


def _utc(mtime_s: float) -> datetime:
    return datetime.fromtimestamp(mtime_s, tz=UTC)


class _FileChunks:
    """The chunks of one open file, read with ``pread`` (no shared file position)."""

    def __init__(self, store: LocalBlobStore, fd: int) -> None:
        self._store = store
        self._fd = fd
        self.closed = False

    async def read(self, offset_bytes: int, length_bytes: int | None) -> AsyncIterator[bytes]:
        position, remaining = offset_bytes, length_bytes
        while remaining is None or remaining > 0:
            if self.closed:  # the fd number may already belong to another file
                raise ValueError("read from a blob after leaving its open() block")
            want = _READ_CHUNK_BYTES if remaining is None else min(_READ_CHUNK_BYTES, remaining)
            data = await self._store._run(os.pread, self._fd, want, position)
            if not data:
                return
            position += len(data)
            if remaining is not None:
                remaining -= len(data)
            yield data

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            os.close(self._fd)


class LocalBlobStore:
    """``BlobStore`` over a directory. ``fsync=False`` (tests) skips the durability syncs."""

    def __init__(self, root: Path, *, fsync: bool = True, io_threads: int = _IO_THREADS) -> None:
        self.root = Path(root)
        self._incoming = self.root / INCOMING_DIR
        self._fsync = fsync
        self._executor = ThreadPoolExecutor(io_threads, thread_name_prefix="blob-io")

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*validate_key(key).split("/"))

    # -- writing

    async def put_stream(
        self, key: str, chunks: AsyncIterable[bytes], *, max_bytes: int
    ) -> BlobInfo:
        path = self._path(key)
        meter = UploadMeter(max_bytes)
        file, tmp = await self._run(self._create_temp)
        try:
            pending = bytearray()
            async for chunk in chunks:
                meter.add(chunk)
                pending += chunk
                if len(pending) >= _WRITE_BUFFER_BYTES:
                    data, pending = pending, bytearray()
                    await self._run(file.write, data)
            if pending:
                await self._run(file.write, pending)
            st = await self._run(self._publish, file, tmp, path, key)
        except BaseException:
            # Synchronous on purpose: a cancelled upload must still leave nothing behind, and
            # closing and unlinking one file is quick. Closing waits for a write in progress.
            self._discard(file, tmp)
            raise
        return BlobInfo(key, meter.size_bytes, _utc(st.st_mtime), meter.hexdigest())

    def _create_temp(self) -> tuple[IO[bytes], str]:
        self._incoming.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self._incoming, prefix="upload-")
        return os.fdopen(fd, "wb"), tmp

    def _publish(self, file: IO[bytes], tmp: str, path: Path, key: str) -> os.stat_result:
        file.flush()
        if self._fsync:
            os.fsync(file.fileno())
        file.close()
        for attempt in range(_PUBLISH_ATTEMPTS):
            created_dirs = not path.parent.is_dir()
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp, path)
                break
            except (FileExistsError, NotADirectoryError, IsADirectoryError):
                raise BlobKeyConflict(key) from None
            except FileNotFoundError:
                if attempt == _PUBLISH_ATTEMPTS - 1:
                    raise
        if self._fsync:
            for directory in self._dirs_to_sync(path.parent, created_dirs):
                _fsync_dir(directory)
        return os.stat(path, follow_symlinks=False)

    def _dirs_to_sync(self, parent: Path, created_dirs: bool) -> Iterator[Path]:
        """The directory that gained the entry and, when some were created, each one above it."""
        yield parent
        while created_dirs and parent != self.root:
            parent = parent.parent
            yield parent

    @staticmethod
    def _discard(file: IO[bytes], tmp: str) -> None:
        with contextlib.suppress(OSError):
            file.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)

    async def delete(self, key: str) -> None:
        await self._run(self._delete, self._path(key))

    def _delete(self, path: Path) -> None:
        try:
            os.unlink(path)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return
        if self._fsync:
            _fsync_dir(path.parent)
        directory = path.parent
        while directory != self.root:  # empty "folders" go with their last object
            try:
                directory.rmdir()
            except OSError:
                return
            directory = directory.parent

    def remove_stale_uploads(self, older_than_s: float) -> int:
        """Delete temporary files a crash left behind, those untouched for ``older_than_s``
        (other processes may be writing the younger ones). Returns how many went."""
        cutoff_s = time.time() - older_than_s
        removed = 0
        try:
            entries = list(os.scandir(self._incoming))
        except FileNotFoundError:
            return 0
        for entry in entries:
            with contextlib.suppress(FileNotFoundError):
                if entry.stat(follow_symlinks=False).st_mtime < cutoff_s:
                    os.unlink(entry.path)
                    removed += 1
        return removed

    # -- reading

    @asynccontextmanager
    async def open(
        self, key: str, *, offset_bytes: int = 0, length_bytes: int | None = None
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        path = self._path(key)
        _check_range(offset_bytes, length_bytes)
        try:
            fd = await self._run(_open_regular_file, path)
        except OSError as exc:
            if exc.errno in _NOT_A_BLOB:
                raise BlobNotFound(key) from None
            raise
        chunks = _FileChunks(self, fd)
        try:
            yield chunks.read(offset_bytes, length_bytes)
        finally:
            chunks.close()

    async def stat(self, key: str) -> BlobInfo | None:
        path = self._path(key)
        try:
            st = await self._run(_lstat, path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not stat_mode.S_ISREG(st.st_mode):
            return None
        return BlobInfo(key, st.st_size, _utc(st.st_mtime))

    async def list_blobs(self, prefix: str = "") -> AsyncIterator[BlobInfo]:
        head, _, start = validate_prefix(prefix).rpartition("/")
        directory = self.root.joinpath(*head.split("/")) if head else self.root
        # Depth first, one directory read per step: (entries left, its path, its key prefix).
        stack = [(iter(await self._run(_scan, directory, start)), directory, head and head + "/")]
        while stack:
            entries, directory, base = stack[-1]
            entry = next(entries, None)
            if entry is None:
                stack.pop()
            elif entry.is_dir:
                child = directory / entry.name
                stack.append(
                    (iter(await self._run(_scan, child, "")), child, f"{base}{entry.name}/")
                )
            elif len(base) + len(entry.name) <= MAX_KEY_CHARS:
                yield BlobInfo(base + entry.name, entry.size_bytes, _utc(entry.mtime_s))

    # -- pre-signing: not for files; the server signs URLs to its own upload route instead

    async def presigned_put(
        self, key: str, *, expires_s: int, content_type: str
    ) -> PresignedPut | None:
        validate_key(key)
        check_presign_args(expires_s, content_type=content_type)
        return None

    async def presigned_post(
        self, key: str, *, expires_s: int, max_bytes: int, content_type: str | None = None
    ) -> PresignedPost | None:
        validate_key(key)
        check_presign_args(expires_s, max_bytes, content_type)
        return None

    async def close(self) -> None:
        await asyncio.to_thread(self._executor.shutdown, True)


def _check_range(offset_bytes: int, length_bytes: int | None) -> None:
    if offset_bytes < 0:
        raise ValueError(f"offset_bytes must not be negative, got {offset_bytes}")
    if length_bytes is not None and length_bytes < 0:
        raise ValueError(f"length_bytes must not be negative, got {length_bytes}")


def _lstat(path: Path) -> os.stat_result:
    return os.stat(path, follow_symlinks=False)


def _open_regular_file(path: Path) -> int:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        if not stat_mode.S_ISREG(os.fstat(fd).st_mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    except BaseException:
        os.close(fd)
        raise
    return fd


def _scan(directory: Path, start: str) -> list[_Entry]:
    """The entries of one directory that may hold keys, in key order; none if it is gone."""
    entries = []
    try:
        listing = list(os.scandir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return []
    for item in listing:
        if not item.name.startswith(start) or not is_key_segment(item.name):
            continue
        try:
            st = item.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue
        if stat_mode.S_ISDIR(st.st_mode) or stat_mode.S_ISREG(st.st_mode):
            is_dir = stat_mode.S_ISDIR(st.st_mode)
            entries.append(_Entry(item.name, is_dir, st.st_size, st.st_mtime))
    return sorted(entries, key=lambda entry: entry.sort_key)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
