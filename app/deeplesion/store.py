"""The PNG slice store: safe file name -> path resolution, 16-bit PNG <-> int16 HU, listing and caching."""

from __future__ import annotations

import io
import logging
import os
import re
import tempfile
import threading
import warnings
from collections import OrderedDict
from pathlib import Path, PurePath, PurePosixPath
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image, UnidentifiedImageError

from app.deeplesion.errors import CorruptSliceError, SliceNotFoundError, UnsafePathError
from app.deeplesion.objectstore import DataDir, ObjectBackend, backend_for, is_url, local_path
from app.deeplesion.schema import HU_OFFSET

logger = logging.getLogger(__name__)

IMAGES_DIR = "Images_png"
SERIES_RE = re.compile(r"\A\d{6}_\d{2}_\d{2}\Z", re.ASCII)
FILE_NAME_RE = re.compile(r"\A(?P<series>\d{6}_\d{2}_\d{2})_(?P<slice>\d{3,4})\.png\Z", re.ASCII)
SLICE_FILE_RE = re.compile(r"\A(?P<slice>\d{3,4})\.png\Z", re.ASCII)
MAX_SLICE_INDEX = 9999
# Pillow modes a 16-bit grayscale PNG can open as, depending on the Pillow version and byte order.
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I")
DEFAULT_CACHE_BYTES = 128 * 1024 * 1024


def _describe(name: object) -> str:
    """A short printable form of an untrusted name for error messages."""
    text = repr(name)
    return text if len(text) <= 80 else text[:77] + "..."


def parse_file_name(file_name: str) -> tuple[str, int]:
    """Split `000001_01_01_109.png` into (series folder, slice index), refusing anything else."""
    if not isinstance(file_name, str):
        raise UnsafePathError(f"slice file name must be a string, got {type(file_name).__name__}")
    match = FILE_NAME_RE.match(file_name)
    if match is None:
        raise UnsafePathError(
            f"not a DeepLesion slice name: {_describe(file_name)} "
            "(expected PPPPPP_SS_RR_NNN.png, e.g. 000001_01_01_109.png)"
        )
    digits = match.group("slice")
    index = int(digits)
    if digits != f"{index:03d}":
        raise UnsafePathError(
            f"slice index in {_describe(file_name)} is not zero padded to 3 digits as in DL_info.csv"
        )
    return match.group("series"), index


def check_series_folder(series_folder: str) -> str:
    """The folder name unchanged when it is a series folder like `000001_01_01`, else UnsafePathError."""
    if not isinstance(series_folder, str) or SERIES_RE.match(series_folder) is None:
        raise UnsafePathError(
            f"not a DeepLesion series folder: {_describe(series_folder)} "
            "(expected PPPPPP_SS_RR, e.g. 000001_01_01)"
        )
    return series_folder


def check_slice_index(slice_index: int) -> int:
    """Return the index when it is a valid slice number (0..9999), else raise UnsafePathError."""
    if isinstance(slice_index, bool) or not isinstance(slice_index, int | np.integer):
        raise UnsafePathError(f"slice index must be an integer, got {_describe(slice_index)}")
    if not 0 <= int(slice_index) <= MAX_SLICE_INDEX:
        raise UnsafePathError(f"slice index must be 0..{MAX_SLICE_INDEX}, got {slice_index}")
    return int(slice_index)


def slice_png_name(slice_index: int) -> str:
    """File name of a slice inside its series folder, e.g. `109.png`."""
    return f"{check_slice_index(slice_index):03d}.png"


def decode_hu_png(
    data_or_path: bytes | os.PathLike[str] | str, label: str | None = None
) -> npt.NDArray[np.int16]:
    """Decode a 16-bit grayscale PNG (path or bytes) into int16 HU; CorruptSliceError when it is not one."""
    label = label or str(data_or_path if not isinstance(data_or_path, bytes) else "<bytes>")
    try:
        with warnings.catch_warnings():
            # A decompression-bomb warning on a CT slice means the file is wrong; make it an error.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            source = data_or_path if not isinstance(data_or_path, bytes) else io.BytesIO(data_or_path)
            with Image.open(source) as img:
                if img.format != "PNG":
                    raise CorruptSliceError(label, f"not a PNG file (format {img.format})")
                if img.mode not in _SIXTEEN_BIT_MODES:
                    raise CorruptSliceError(label, f"not a 16-bit grayscale PNG (mode {img.mode})")
                img.load()
                arr = np.asarray(img)
    except CorruptSliceError:
        raise
    except FileNotFoundError:
        raise SliceNotFoundError(label) from None
    except (
        UnidentifiedImageError,
        OSError,
        SyntaxError,
        ValueError,
        Image.DecompressionBombWarning,
        Image.DecompressionBombError,
        EOFError,
    ) as exc:
        raise CorruptSliceError(label, f"cannot decode PNG: {exc}") from None
    if arr.ndim != 2:
        raise CorruptSliceError(label, f"expected a 2-D image, got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise CorruptSliceError(label, "image has zero size")
    if arr.dtype != np.uint16:
        # Mode "I" holds 32-bit ints; a genuine 16-bit PNG stays within 0..65535.
        if arr.min() < 0 or arr.max() > 65535:
            raise CorruptSliceError(label, "pixel values outside the 16-bit range")
        arr = arr.astype(np.uint16)
    # uint16 - 32768 fits int16 exactly: flip the top bit instead of widening to int32.
    return (arr ^ np.uint16(0x8000)).view(np.int16)


def encode_hu_png(hu: npt.ArrayLike, compress_level: int = 1) -> bytes:
    """Encode int16 HU as a 16-bit grayscale PNG with the dataset's 32768 offset."""
    buf = io.BytesIO()
    _hu_to_image(hu).save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


def _hu_to_image(hu: npt.ArrayLike) -> Image.Image:
    """A Pillow I;16 image holding hu + 32768."""
    arr = np.asarray(hu)
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"HU slice must be a non-empty 2-D array, got shape {arr.shape}")
    if arr.dtype != np.int16:
        if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
            raise ValueError("HU slice contains NaN or infinity")
        if arr.size and (arr.min() < -HU_OFFSET or arr.max() > HU_OFFSET - 1):
            raise ValueError("HU values must lie in -32768..32767")
        arr = np.rint(arr).astype(np.int16) if np.issubdtype(arr.dtype, np.floating) else arr.astype(np.int16)
    raw = np.ascontiguousarray(arr).view(np.uint16) ^ np.uint16(0x8000)
    # uint16 arrays map to mode I;16 by themselves (the mode argument of fromarray is deprecated).
    return Image.fromarray(raw)


class SliceStore:
    """Slices of a DeepLesion dataset; `root` is the folder holding `Images_png/` (and DL_info.csv).

    An fsspec URL (s3://bucket/prefix, memory://...) as root gives an ObjectSliceStore instead.
    """

    # True for datasets on object storage: no local paths, identities come from the backend.
    remote = False

    def __new__(cls, root: DataDir | None = None, *args: Any, **kwargs: Any) -> SliceStore:
        # Unpickling calls __new__ without arguments; __setstate__ then rebuilds from the state.
        if cls is SliceStore and is_url(root):
            return super().__new__(ObjectSliceStore)
        return super().__new__(cls)

    def __init__(self, root: DataDir, cache_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self.root: Any = local_path(root)
        self.images_dir: PurePath = self.root / IMAGES_DIR
        self._cache: OrderedDict[tuple[str, int, int], npt.NDArray[np.int16]] = OrderedDict()
        self._cache_bytes = 0
        self._cache_limit = max(0, int(cache_bytes))
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        if self.root.name == IMAGES_DIR and not self.images_dir.exists():
            logger.warning("SliceStore root %s looks like Images_png itself; pass its parent", self.root)

    def __repr__(self) -> str:
        return f"SliceStore({str(self.root)!r})"

    def __getstate__(self) -> dict[str, object]:
        # Worker processes (multiprocessing, DataLoader) get the paths and an empty cache, not the lock.
        return {"root": self.root, "cache_bytes": self._cache_limit}

    def __setstate__(self, state: dict[str, object]) -> None:
        root = state["root"]
        limit = state["cache_bytes"]
        assert isinstance(root, Path) and isinstance(limit, int)
        self.__init__(root, cache_bytes=limit)  # type: ignore[misc]

    # -- paths -----------------------------------------------------------------------------------
    def _base(self) -> str:
        """Real path of Images_png (it may itself be a symlink to another disk)."""
        return os.path.realpath(self.images_dir)

    def _contained(self, path: PurePath, what: str) -> PurePath:
        """Refuse `path` when its real location leaves Images_png (e.g. through a symlink)."""
        base = self._base()
        real = os.path.realpath(path)
        if real != base and not real.startswith(base + os.sep):
            raise UnsafePathError(f"{what} resolves outside the data root {self.images_dir}")
        return path

    def path_for(self, file_name: str) -> PurePath:
        """`000001_01_01_109.png` -> `root/Images_png/000001_01_01/109.png`; refuses unsafe names."""
        series, index = parse_file_name(file_name)
        return self._contained(self.images_dir / series / f"{index:03d}.png", file_name)

    def slice_path(self, series_folder: str, slice_index: int) -> PurePath:
        """Path of slice `slice_index` of a series folder (refuses unsafe names)."""
        folder = check_series_folder(series_folder)
        name = slice_png_name(slice_index)
        return self._contained(self.images_dir / folder / name, f"{folder}/{name}")

    def series_dir(self, series_folder: str) -> PurePath:
        """Path of a series folder inside Images_png (refuses unsafe names)."""
        folder = check_series_folder(series_folder)
        return self._contained(self.images_dir / folder, folder)

    # -- listing ---------------------------------------------------------------------------------
    def exists(self, file_name: str) -> bool:
        """True when the slice PNG is stored (False for names that are unsafe or not DeepLesion names)."""
        try:
            return os.path.isfile(self.path_for(file_name))
        except UnsafePathError:
            return False

    def stored_slices(self, series_folder: str) -> list[int]:
        """Sorted slice indices stored for a series; [] when the folder is missing."""
        directory = self.series_dir(series_folder)
        try:
            entries = list(os.scandir(directory))
        except (FileNotFoundError, NotADirectoryError):
            return []
        indices: list[int] = []
        for entry in entries:
            match = SLICE_FILE_RE.match(entry.name)
            if match is None:
                continue
            digits = match.group("slice")
            index = int(digits)
            if digits == f"{index:03d}":
                indices.append(index)
        indices.sort()
        return indices

    def series_folders(self) -> list[str]:
        """Sorted names of the series folders present in Images_png."""
        try:
            entries = list(os.scandir(self.images_dir))
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(e.name for e in entries if SERIES_RE.match(e.name) and e.is_dir())

    # -- reading ---------------------------------------------------------------------------------
    def read_hu(self, file_name: str) -> npt.NDArray[np.int16]:
        """The slice as int16 HU (read-only array, possibly shared through the cache)."""
        return self._read(self.path_for(file_name))

    def read_hu_slice(self, series_folder: str, slice_index: int) -> npt.NDArray[np.int16]:
        """Slice `slice_index` of a series folder as int16 HU (read-only array)."""
        return self._read(self.slice_path(series_folder, slice_index))

    def _read(self, path: PurePath) -> npt.NDArray[np.int16]:
        """Decode through the LRU cache; the key includes mtime and size so rewritten files are re-read."""
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            raise SliceNotFoundError(str(path)) from None
        if not os.path.isfile(path):
            raise CorruptSliceError(str(path), "not a regular file")
        key = (str(path), st.st_mtime_ns, st.st_size)
        if self._cache_limit:
            with self._lock:
                cached = self._cache.get(key)
                if cached is not None:
                    self._cache.move_to_end(key)
                    self.hits += 1
                    return cached
        hu = decode_hu_png(path)
        hu.setflags(write=False)
        if self._cache_limit and hu.nbytes <= self._cache_limit:
            with self._lock:
                self.misses += 1
                if key not in self._cache:
                    self._cache[key] = hu
                    self._cache_bytes += hu.nbytes
                while self._cache_bytes > self._cache_limit:
                    _, old = self._cache.popitem(last=False)
                    self._cache_bytes -= old.nbytes
        return hu

    def clear_cache(self) -> None:
        """Forget every decoded slice."""
        with self._lock:
            self._cache.clear()
            self._cache_bytes = 0

    @property
    def cache_bytes(self) -> int:
        """Bytes currently held by the decoded-slice cache."""
        return self._cache_bytes

    # -- writing ---------------------------------------------------------------------------------
    def write_hu(self, name_or_path: str | Path, hu: npt.ArrayLike, compress_level: int = 1) -> Path:
        """Write int16 HU as a 16-bit PNG (+32768); a slice name goes to Images_png, a Path is used as is."""
        path = name_or_path if isinstance(name_or_path, Path) else self.path_for(name_or_path)
        return write_hu_png(Path(path), hu, compress_level=compress_level)

    def identity(self, file_name: str) -> tuple[int, int]:
        """(mtime_ns, size) of a stored slice, what ETags and caches key on; SliceNotFoundError if absent."""
        path = self.path_for(file_name)
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            raise SliceNotFoundError(str(path)) from None
        return st.st_mtime_ns, st.st_size

    def stored_index(self) -> dict[str, list[int]]:
        """Every series folder with its sorted stored slice indices."""
        return {folder: self.stored_slices(folder) for folder in self.series_folders()}


class ObjectSliceStore(SliceStore):
    """Slices on object storage: names are checked before any key is built; bytes come through a disk cache.

    Paths it hands out (path_for, slice_path, series_dir) are object keys relative to the dataset root, for
    messages only. The decoded-slice LRU is the same as for local folders, keyed by the object's identity.
    """

    remote = True

    def __init__(self, root: DataDir, cache_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self.root = str(root).rstrip("/")
        self.backend: ObjectBackend = backend_for(self.root)
        self.images_dir = PurePosixPath(IMAGES_DIR)
        self._cache = OrderedDict()
        self._cache_bytes = 0
        self._cache_limit = max(0, int(cache_bytes))
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __repr__(self) -> str:
        return f"ObjectSliceStore({self.backend!r})"

    def __setstate__(self, state: dict[str, object]) -> None:
        root = state["root"]
        limit = state["cache_bytes"]
        assert isinstance(root, str) and isinstance(limit, int)
        self.__init__(root, cache_bytes=limit)  # type: ignore[misc]

    def _key(self, rel: PurePath) -> str:
        return self.backend.key(*rel.parts)

    def _contained(self, path: PurePath, what: str) -> PurePath:
        # Keys are built only from names the regexes accepted: nothing to resolve, nothing to escape.
        return path

    def path_for(self, file_name: str) -> PurePath:
        """`000001_01_01_109.png` -> `Images_png/000001_01_01/109.png` (object key under the root)."""
        series, index = parse_file_name(file_name)
        return self.images_dir / series / f"{index:03d}.png"

    def slice_path(self, series_folder: str, slice_index: int) -> PurePath:
        """Key of slice `slice_index` of a series folder, relative to the root."""
        return self.images_dir / check_series_folder(series_folder) / slice_png_name(slice_index)

    def series_dir(self, series_folder: str) -> PurePath:
        """Key of a series folder, relative to the root."""
        return self.images_dir / check_series_folder(series_folder)

    def exists(self, file_name: str) -> bool:
        """True when the slice object is stored (False for unsafe names)."""
        try:
            return self.backend.exists(self._key(self.path_for(file_name)))
        except UnsafePathError:
            return False

    def identity(self, file_name: str) -> tuple[int, int]:
        """(identity stamp, size) of a stored slice object; SliceNotFoundError if absent."""
        rel = self.path_for(file_name)
        ident = self.backend.identity(self._key(rel))
        if ident is None:
            raise SliceNotFoundError(str(rel))
        return ident.stamp(), ident.size

    def stored_slices(self, series_folder: str) -> list[int]:
        """Sorted slice indices stored for a series (one listing, memoised briefly); [] when absent."""
        names = self.backend.listdir(self._key(self.series_dir(series_folder)))
        return sorted(_slice_indices(names))

    def series_folders(self) -> list[str]:
        """Sorted names of the series folders under Images_png."""
        names = self.backend.listdir(self._key(self.images_dir))
        return sorted(n for n in names if SERIES_RE.match(n))

    def stored_index(self) -> dict[str, list[int]]:
        """Every series folder with its stored slices, from one recursive listing (the importer's)."""
        index: dict[str, list[int]] = {}
        for rel in self.backend.find(self._key(self.images_dir)):
            folder, _, name = rel.partition("/")
            if SERIES_RE.match(folder) and "/" not in name:
                for i in _slice_indices([name]):
                    index.setdefault(folder, []).append(i)
        return {folder: sorted(indices) for folder, indices in sorted(index.items())}

    def _read(self, path: PurePath) -> npt.NDArray[np.int16]:
        """Decode through the LRU; the key holds the object's identity so a rewritten object is re-read."""
        key = self._key(path)
        ident = self.backend.identity(key)
        if ident is None:
            raise SliceNotFoundError(str(path))
        cache_key = (key, ident.stamp(), ident.size)
        if self._cache_limit:
            with self._lock:
                cached = self._cache.get(cache_key)
                if cached is not None:
                    self._cache.move_to_end(cache_key)
                    self.hits += 1
                    return cached
        try:
            data = self.backend.read(key)
        except FileNotFoundError:
            raise SliceNotFoundError(str(path)) from None
        hu = decode_hu_png(data, label=str(path))
        hu.setflags(write=False)
        if self._cache_limit and hu.nbytes <= self._cache_limit:
            with self._lock:
                self.misses += 1
                if cache_key not in self._cache:
                    self._cache[cache_key] = hu
                    self._cache_bytes += hu.nbytes
                while self._cache_bytes > self._cache_limit:
                    _, old = self._cache.popitem(last=False)
                    self._cache_bytes -= old.nbytes
        return hu

    def write_hu(self, name_or_path: str | Path, hu: npt.ArrayLike, compress_level: int = 1) -> Path:
        """Not supported: the app never writes images, and object storage is read-only to it."""
        raise NotImplementedError("writing slices to object storage is not supported")


def _slice_indices(names: list[str]) -> list[int]:
    """Slice indices of `NNN.png` names (zero padded as in DL_info.csv); other names are ignored."""
    indices = []
    for name in names:
        match = SLICE_FILE_RE.match(name)
        if match is not None:
            digits = match.group("slice")
            index = int(digits)
            if digits == f"{index:03d}":
                indices.append(index)
    return indices


def write_hu_png(path: Path | str, hu: npt.ArrayLike, compress_level: int = 1) -> Path:
    """Write int16 HU to `path` as a 16-bit grayscale PNG with the 32768 offset, atomically."""
    target = Path(path)
    image = _hu_to_image(hu)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            image.save(fh, format="PNG", compress_level=compress_level)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target
