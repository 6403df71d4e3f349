"""Designated storage roots: every document path is resolved (symlinks, `..`) and must stay inside a root.

Reads and writes then walk the resolved path one component at a time from the root's directory with
O_NOFOLLOW, so a component swapped for a symlink after the check is refused rather than followed.
"""

from __future__ import annotations

import errno
import os
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from garrison.errors import ConfigError, Conflict, NotFound, PathOutsideRoot
from garrison.security.principal import CLEARANCES
from garrison.settings import DocumentRoot

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW


@dataclass(frozen=True, slots=True)
class Root:
    """One storage root, its path already resolved."""

    path: Path
    collection: str
    label: str
    upload: bool = False

    def locate(self, relative: str) -> str:
        """The normalised relative path of `relative` inside this root; PathOutsideRoot if it escapes."""
        if not relative or "\x00" in relative:
            raise PathOutsideRoot(f"'{relative}' is not a file name inside collection '{self.collection}'")
        if PurePosixPath(relative).is_absolute() or Path(relative).is_absolute():
            raise PathOutsideRoot(
                f"'{relative}' is an absolute path; name a file relative to collection '{self.collection}'"
            )
        try:
            return self.relative(self.path / relative)
        except PathOutsideRoot:  # the message shown to clients names no server path
            raise PathOutsideRoot(
                f"'{relative}' leads outside collection '{self.collection}' once symlinks and '..' are resolved; "
                "refused"
            ) from None

    def relative(self, path: Path) -> str:
        """The relative path of `path` (absolute or not) after resolving it; PathOutsideRoot if outside."""
        resolved = Path(os.path.realpath(path))
        if resolved == self.path or not resolved.is_relative_to(self.path):
            raise PathOutsideRoot(
                f"'{path}' resolves to {resolved}, outside the storage root of collection '{self.collection}' "
                f"({self.path}); garrison reads documents only inside its roots"
            )
        return resolved.relative_to(self.path).as_posix()

    def read(self, relative: str, limit: int) -> bytes:
        """The bytes of a file given by a resolved relative path, opened without following any symlink."""
        fd = self._open_file(relative, os.O_RDONLY)
        with os.fdopen(fd, "rb") as handle:
            return handle.read(limit + 1)

    def write_new(self, relative: str, data: bytes) -> None:
        """Create a new file atomically (temp file + rename) under directories that stay inside the root."""
        parts = PurePosixPath(relative).parts
        dir_fd = self._open_dirs(parts[:-1], create=True)
        tmp = f".garrison-upload-{secrets.token_hex(6)}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o640, dir_fd=dir_fd)
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
                try:
                    os.link(tmp, parts[-1], src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
                except FileExistsError:
                    raise Conflict(
                        f"'{relative}' already exists in collection '{self.collection}'; remove it first",
                        param="file",
                    ) from None
            finally:
                os.unlink(tmp, dir_fd=dir_fd)
        finally:
            os.close(dir_fd)

    def unlink(self, relative: str) -> None:
        """Delete a file inside the root (no symlink followed on the way)."""
        parts = PurePosixPath(relative).parts
        dir_fd = self._open_dirs(parts[:-1], create=False)
        try:
            os.unlink(parts[-1], dir_fd=dir_fd)
        finally:
            os.close(dir_fd)

    def walk(self) -> Iterator[WalkEntry]:
        """Every regular file under the root (hidden names skipped), with symlinks resolved and checked."""
        for directory, dirnames, filenames in os.walk(self.path, followlinks=False):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in dirnames:  # symlinked directories are not descended; one escaping the root is reported
                full = Path(directory) / name
                if full.is_symlink():
                    yield self._entry(full)
            for name in sorted(filenames):
                if not name.startswith("."):
                    yield self._entry(Path(directory) / name)

    def _entry(self, full: Path) -> WalkEntry:
        shown = full.relative_to(self.path).as_posix()
        try:
            relative = self.relative(full)
        except PathOutsideRoot as exc:
            return WalkEntry(shown, None, refused=exc.message)
        if full.is_symlink() and (self.path / relative).is_dir():
            return WalkEntry(shown, None, alias=True)
        return WalkEntry(shown, relative, alias=full.is_symlink())

    def _open_file(self, relative: str, flags: int) -> int:
        parts = PurePosixPath(relative).parts
        dir_fd = self._open_dirs(parts[:-1], create=False)
        try:
            return _open_nofollow(parts[-1], flags | os.O_NOFOLLOW, dir_fd, relative, self)
        finally:
            os.close(dir_fd)

    def _open_dirs(self, parts: Sequence[str], *, create: bool) -> int:
        if not parts and not self.path.is_dir():
            raise ConfigError(f"the storage root of collection '{self.collection}' ({self.path}) is not a directory")
        fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for part in parts:
                if part in ("..", "."):
                    raise PathOutsideRoot(f"'{part}' is not allowed in a document path")
                if create:
                    try:
                        os.mkdir(part, 0o750, dir_fd=fd)
                    except FileExistsError:
                        pass
                nxt = _open_nofollow(part, _DIR_FLAGS, fd, "/".join(parts), self)
                os.close(fd)
                fd = nxt
        except BaseException:
            os.close(fd)
            raise
        return fd


@dataclass(frozen=True, slots=True)
class WalkEntry:
    """A file found under a root: its shown path, its resolved relative path (None when refused)."""

    shown: str
    relative: str | None
    refused: str | None = None
    alias: bool = False  # a symlink to something inside the root: indexed under its target's path


def _open_nofollow(name: str, flags: int, dir_fd: int, relative: str, root: Root) -> int:
    """Open one path component relative to `dir_fd`; a symlink there is refused, a missing one is 404."""
    try:
        return os.open(name, flags, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
            raise PathOutsideRoot(
                f"'{relative}' in collection '{root.collection}' passes through a symlink; refused"
            ) from None
        if exc.errno == errno.ENOENT:
            raise NotFound(f"no file '{relative}' in collection '{root.collection}'", param="path") from None
        raise


@dataclass(slots=True)
class Roots:
    """The configured roots by collection."""

    by_collection: dict[str, Root] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, configured: Sequence[DocumentRoot]) -> Roots:
        roots: dict[str, Root] = {}
        for item in configured:
            path = Path(os.path.realpath(item.path.expanduser()))
            if item.label not in CLEARANCES:
                raise ConfigError(f"root '{item.collection}': label must be one of {', '.join(CLEARANCES)}")
            roots[item.collection] = Root(path, item.collection, item.label, item.upload)
        paths = sorted(roots.values(), key=lambda r: len(r.path.parts))
        for i, outer in enumerate(paths):
            for inner in paths[i + 1 :]:
                if inner.path.is_relative_to(outer.path):
                    raise ConfigError(
                        f"storage roots overlap: '{inner.collection}' ({inner.path}) lies inside "
                        f"'{outer.collection}' ({outer.path}); a file must belong to one collection"
                    )
        return cls(roots)

    def get(self, collection: str) -> Root:
        """The root of a collection; 404 naming it when no root has that name."""
        root = self.by_collection.get(collection)
        if root is None:
            known = ", ".join(sorted(self.by_collection)) or "none configured"
            raise NotFound(
                f"the collection '{collection}' does not exist (collections: {known})",
                param="collections",
                code="collection_not_found",
            )
        return root

    def check(self, collections: Sequence[str]) -> list[str]:
        """The named collections, each checked to exist (404 naming the first unknown one)."""
        return [self.get(c).collection for c in collections]

    def names(self) -> list[str]:
        return sorted(self.by_collection)

    def owning(self, path: Path) -> tuple[Root, str]:
        """The root holding a user-given path (after resolving it) and the path relative to it."""
        resolved = Path(os.path.realpath(path.expanduser()))
        for root in self.by_collection.values():
            if resolved != root.path and resolved.is_relative_to(root.path):
                return root, resolved.relative_to(root.path).as_posix()
        raise PathOutsideRoot(
            f"'{path}' resolves to {resolved}, which is inside no storage root "
            f"(roots: {', '.join(str(r.path) for r in self.by_collection.values()) or 'none configured'})"
        )

    def upload_root(self, collection: str | None) -> Root:
        """The upload root to write into: the one named, or the only one configured."""
        if collection is not None:
            root = self.get(collection)
            if not root.upload:
                raise PathOutsideRoot(
                    f"collection '{collection}' is not an upload root (set upload = true on its root)",
                    code="not_an_upload_root",
                )
            return root
        uploads = [r for r in self.by_collection.values() if r.upload]
        if len(uploads) != 1:
            raise NotFound(
                "name the collection to upload into"
                if uploads
                else "no storage root accepts uploads (set upload = true on one of [[documents.roots]])",
                param="collection",
                code="collection_not_found",
            )
        return uploads[0]
