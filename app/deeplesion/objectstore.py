"""Datasets on object storage (s3://, gs://, memory://) through fsspec, with a byte-bounded disk cache."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

logger = logging.getLogger(__name__)

# A data folder is either a local path or an fsspec URL; `file://` URLs are local paths.
DataDir = Path | str
URL_RE = re.compile(r"\A(?P<scheme>[A-Za-z][A-Za-z0-9+.-]+)://")
DEFAULT_DISK_CACHE_MB = 2048
# How long a looked-up object identity (HEAD) or folder listing is trusted before it is asked again.
DEFAULT_TTL_S = 5.0
MEMO_ENTRIES = 20_000
STORAGE_OPTIONS_ENV = "LESION_REVIEW_STORAGE_OPTIONS"
CACHE_DIR_ENV = "LESION_REVIEW_CACHE_DIR"
CACHE_MB_ENV = "LESION_REVIEW_CACHE_MB"
TTL_ENV = "LESION_REVIEW_OBJECT_TTL_S"
# Identity fields that change when an object is rewritten, in the order the fsspec implementations offer them.
_TOKEN_FIELDS = ("ETag", "etag", "md5Hash", "generation", "LastModified", "mtime", "last_modified", "created")


def is_url(root: object) -> bool:
    """True for an fsspec URL other than file:// (those are plain local folders)."""
    if not isinstance(root, str):
        return False
    match = URL_RE.match(root)
    return match is not None and match.group("scheme").lower() != "file"


def local_path(root: DataDir) -> Path:
    """A local data folder as a Path (`file:///data/x` -> /data/x)."""
    if isinstance(root, str) and root.lower().startswith("file://"):
        return Path(root[len("file://") :])
    return Path(root)


def normalize_data_dir(root: DataDir) -> DataDir:
    """An object-store URL without trailing slashes, or a local Path."""
    if is_url(root):
        assert isinstance(root, str)
        return root.rstrip("/")
    return local_path(root)


def display_name(root: DataDir) -> str:
    """The data folder's last name only: never a host, credentials, query or the whole URL."""
    if not is_url(root):
        return local_path(root).name
    parts = urlsplit(str(root))
    host = parts.netloc.rsplit("@", 1)[-1]
    names = [p for p in f"{host}/{parts.path}".split("/") if p]
    return names[-1] if names else ""


def storage_options_from_env() -> dict[str, Any]:
    """LESION_REVIEW_STORAGE_OPTIONS (a JSON object), e.g. {"client_kwargs": {"endpoint_url": ...}}."""
    text = os.environ.get(STORAGE_OPTIONS_ENV, "").strip()
    if not text:
        return {}
    try:
        options = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{STORAGE_OPTIONS_ENV} is not valid JSON: {exc.msg}") from None
    if not isinstance(options, dict):
        raise ValueError(f"{STORAGE_OPTIONS_ENV} must be a JSON object")
    return options


@dataclass(frozen=True)
class ObjectIdentity:
    """What tells one version of an object from another: a token (ETag, mtime, ...) and the size."""

    token: str
    size: int

    def stamp(self) -> int:
        """The token as a non-negative 63-bit number (it stands where a file's mtime_ns stands)."""
        digest = hashlib.blake2b(self.token.encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") >> 1


class DiskCache:
    """Object bytes in a local folder, least recently used files removed beyond `max_bytes`."""

    def __init__(self, folder: Path, max_bytes: int) -> None:
        self.folder = Path(folder)
        self.max_bytes = max(0, int(max_bytes))
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._index: OrderedDict[str, int] = OrderedDict()
        self._bytes = 0
        self.hits = 0
        self.misses = 0
        # A restarted server keeps what the last one fetched.
        with self._lock:
            self._resync()
            self._evict()

    def _resync(self) -> None:
        """Index the folder's files, least recently used (oldest mtime) first.

        Other processes (serve --workers) share the folder: their files count against the bound too.
        """
        found = []
        for entry in os.scandir(self.folder):
            if entry.is_file() and not entry.name.startswith("."):
                try:
                    st = entry.stat()
                except FileNotFoundError:
                    continue
                found.append((st.st_mtime_ns, entry.name, st.st_size))
        self._index = OrderedDict((name, size) for _, name, size in sorted(found))
        self._bytes = sum(self._index.values())

    def get(self, name: str) -> bytes | None:
        """The cached bytes, or None."""
        with self._lock:
            known = name in self._index
            if known:
                self._index.move_to_end(name)
        if not known:
            self.misses += 1
            return None
        path = self.folder / name
        try:
            data = path.read_bytes()
            # The mtime is the recency every process sharing the folder sees.
            os.utime(path)
        except FileNotFoundError:
            # Another worker process sharing the folder removed it.
            with self._lock:
                size = self._index.pop(name, None)
                if size is not None:
                    self._bytes -= size
            self.misses += 1
            return None
        self.hits += 1
        return data

    def put(self, name: str, data: bytes) -> None:
        """Keep `data` under `name` (atomically written), then trim to the byte bound."""
        if len(data) > self.max_bytes:
            return
        fd, tmp = tempfile.mkstemp(prefix=".put.", dir=self.folder)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, self.folder / name)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        with self._lock:
            old = self._index.pop(name, None)
            if old is not None:
                self._bytes -= old
            self._index[name] = len(data)
            self._bytes += len(data)
            if self._bytes > self.max_bytes:
                self._resync()
            self._evict()

    def _evict(self) -> None:
        while self._bytes > self.max_bytes and self._index:
            name, size = self._index.popitem(last=False)
            self._bytes -= size
            (self.folder / name).unlink(missing_ok=True)

    @property
    def nbytes(self) -> int:
        """Bytes this cache holds."""
        return self._bytes

    def disk_bytes(self) -> int:
        """Bytes of the files in the folder (what the bound is about), measured."""
        return sum(e.stat().st_size for e in os.scandir(self.folder) if e.is_file())


class _TtlMemo:
    """A bounded memo whose entries expire after `ttl_s` seconds."""

    def __init__(self, ttl_s: float, entries: int) -> None:
        self.ttl_s = ttl_s
        self.entries = entries
        self._items: OrderedDict[str, tuple[float, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> tuple[bool, Any]:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return False, None
            if item[0] < time.monotonic():
                del self._items[key]
                return False, None
            self._items.move_to_end(key)
            return True, item[1]

    def put(self, key: str, value: Any) -> None:
        if self.ttl_s <= 0:
            return
        with self._lock:
            self._items[key] = (time.monotonic() + self.ttl_s, value)
            self._items.move_to_end(key)
            while len(self._items) > self.entries:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


def _default_cache_dir(url: str) -> Path:
    base = os.environ.get(CACHE_DIR_ENV, "").strip()
    root = Path(base) if base else Path(tempfile.gettempdir()) / "lesion-review-cache"
    # One subfolder per dataset URL: a cache folder never mixes two datasets' objects.
    return root / hashlib.blake2b(url.encode(), digest_size=8).hexdigest()


class ObjectBackend:
    """One dataset on an fsspec file system: identities (HEAD), reads through the disk cache, listings."""

    def __init__(
        self,
        url: str,
        *,
        storage_options: dict[str, Any] | None = None,
        cache_dir: Path | None = None,
        cache_bytes: int | None = None,
        ttl_s: float | None = None,
        memo_entries: int = MEMO_ENTRIES,
    ) -> None:
        import fsspec

        self.url = url.rstrip("/")
        options = dict(storage_options_from_env() if storage_options is None else storage_options)
        # Identities must come from the server, not from a listing fsspec remembered (it never expires).
        options.setdefault("use_listings_cache", False)
        fs, base = fsspec.core.url_to_fs(self.url, **options)
        self.fs = fs
        self.base = str(base).rstrip("/")
        if cache_bytes is None:
            cache_bytes = int(os.environ.get(CACHE_MB_ENV, DEFAULT_DISK_CACHE_MB)) * 2**20
        if ttl_s is None:
            ttl_s = float(os.environ.get(TTL_ENV, DEFAULT_TTL_S))
        self.cache = DiskCache(cache_dir or _default_cache_dir(self.url), cache_bytes)
        self._identities = _TtlMemo(ttl_s, memo_entries)
        self._listings = _TtlMemo(ttl_s, 1024)
        self.heads = 0
        self.gets = 0
        self.lists = 0
        # The settings configure_backend built it with (JSON), to tell whether a later call may reuse it.
        self.signature = ""

    def __repr__(self) -> str:
        return f"ObjectBackend({display_name(self.url)!r})"

    def key(self, *parts: str) -> str:
        """The object key of `parts` (already validated names) under the dataset root."""
        return "/".join((self.base, *parts)) if self.base else "/".join(parts)

    def identity(self, key: str) -> ObjectIdentity | None:
        """The object's identity, None when no object (file) is there; memoised for ttl_s."""
        found, value = self._identities.get(key)
        if found:
            return value
        self.heads += 1
        try:
            info = self.fs.info(key)
        except FileNotFoundError:
            info = None
        ident = None
        if info is not None and info.get("type", "file") == "file":
            token = next((str(info[f]) for f in _TOKEN_FIELDS if info.get(f) is not None), "")
            ident = ObjectIdentity(token=token, size=int(info.get("size") or 0))
        self._identities.put(key, ident)
        return ident

    def exists(self, key: str) -> bool:
        """Whether an object is stored at key."""
        return self.identity(key) is not None

    def read(self, key: str) -> bytes:
        """The object's bytes, from the disk cache when this version of it was fetched before."""
        ident = self.identity(key)
        if ident is None:
            raise FileNotFoundError(key)
        name = hashlib.blake2b(f"{key}|{ident.token}|{ident.size}".encode(), digest_size=16).hexdigest()
        data = self.cache.get(name)
        if data is None:
            self.gets += 1
            data = bytes(self.fs.cat_file(key))
            self.cache.put(name, data)
        return data

    def listdir(self, key: str) -> list[str]:
        """Names directly under a folder key ([] when it is absent); memoised for ttl_s."""
        found, value = self._listings.get(key)
        if found:
            return list(value)
        self.lists += 1
        try:
            entries = self.fs.ls(key, detail=False)
        except (FileNotFoundError, NotADirectoryError):
            entries = []
        names = sorted({str(e).rstrip("/").rsplit("/", 1)[-1] for e in entries})
        self._listings.put(key, names)
        return names

    def find(self, key: str) -> list[str]:
        """Every object below a folder key, as paths relative to it (one recursive listing)."""
        self.lists += 1
        # Some implementations add or drop a leading slash (memory://): compare without it.
        prefix = key.strip("/") + "/"
        try:
            found = self.fs.find(key)
        except FileNotFoundError:
            return []
        paths = (str(p).lstrip("/") for p in found)
        return [p[len(prefix) :] for p in paths if p.startswith(prefix) and len(p) > len(prefix)]

    def forget(self) -> None:
        """Drop memoised identities and listings (the next request asks the server again)."""
        self._identities.clear()
        self._listings.clear()


_BACKENDS: dict[str, ObjectBackend] = {}
_BACKENDS_LOCK = threading.Lock()


def backend_for(url: str) -> ObjectBackend:
    """The process's backend of a dataset URL: the one the server configured, else one from the env."""
    url = url.rstrip("/")
    with _BACKENDS_LOCK:
        backend = _BACKENDS.get(url)
        if backend is None:
            backend = _BACKENDS[url] = ObjectBackend(url)
        return backend


def configure_backend(url: str, **config: Any) -> ObjectBackend:
    """The process's backend of a dataset URL with these settings (a backend with others is replaced)."""
    url = url.rstrip("/")
    signature = json.dumps(config, sort_keys=True, default=str)
    with _BACKENDS_LOCK:
        backend = _BACKENDS.get(url)
        if backend is None or backend.signature != signature:
            backend = _BACKENDS[url] = ObjectBackend(url, **config)
            backend.signature = signature
        return backend


def data_file_exists(root: DataDir, name: str) -> bool:
    """Whether a top-level file of the dataset (DL_info.csv, synth_truth.json) is there."""
    if is_url(root):
        backend = backend_for(str(root))
        return backend.exists(backend.key(name))
    return (local_path(root) / name).is_file()


def read_data_file(root: DataDir, name: str) -> bytes:
    """A top-level file of the dataset (DL_info.csv) as bytes; FileNotFoundError when absent."""
    if is_url(root):
        backend = backend_for(str(root))
        return backend.read(backend.key(name))
    return (local_path(root) / name).read_bytes()
