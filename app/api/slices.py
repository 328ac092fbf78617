"""Slice images: windowed PNG/WebP/JPEG and raw int16 HU, cached in memory and immutable for clients."""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Generic, TypeVar

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Path, Request
from fastapi.responses import Response
from PIL import Image
from starlette.concurrency import run_in_threadpool

from app.api.deps import ReleasingRoute
from app.api.rendering import RenderingParams, rendering_params
from app.api.schemas import NotFoundOrNoFile, error_responses
from app.api.security import current_user
from app.deeplesion.csvio import format_number
from app.deeplesion.errors import SliceNotFoundError, UnsafePathError
from app.deeplesion.windowing import Window, apply_window

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/slices", tags=["slices"], route_class=ReleasingRoute)

# A slice name without its .png suffix: patient, study, series, slice index.
SLICE_NAME_RE = re.compile(r"^\d{6}_\d{2}_\d{2}_\d{3,4}$")
IMAGE_FORMATS: dict[str, tuple[str, str, dict[str, Any]]] = {
    # Low PNG compression: encoding time matters more than bytes on a local network.
    "png": ("PNG", "image/png", {"compress_level": 1}),
    "webp": ("WEBP", "image/webp", {"quality": 90, "method": 0}),
    "jpg": ("JPEG", "image/jpeg", {"quality": 92}),
}
# Images need sign-in (a shared cache must not hand them to others) unless plain images are made public.
IMMUTABLE = "private, max-age=31536000, immutable"
IMMUTABLE_PUBLIC = "public, max-age=31536000, immutable"
# Resolved paths kept per slice name (a realpath pair each saved); least recently used names go first. About
# 300 bytes an entry: 20,000 entries hold every slice a team has open and stay under 10 MB whatever is asked.
PATH_MEMO_ENTRIES = 20_000
# Bump when the rendering itself changes, so that clients drop renders cached under old ETags.
RENDER_VERSION = "1"

K = TypeVar("K")
V = TypeVar("V")


class ByteLRU(Generic[K, V]):
    """A thread-safe LRU cache bounded by the total size in bytes of its values."""

    def __init__(self, max_bytes: int, size_of: Callable[[V], int]) -> None:
        self.max_bytes = max_bytes
        self._size_of = size_of
        self._items: OrderedDict[K, V] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: K) -> V | None:
        """The cached value, or None; a hit makes the entry most recent."""
        with self._lock:
            value = self._items.get(key)
            if value is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key: K, value: V) -> None:
        """Store a value, evicting the least recently used entries beyond the byte budget."""
        size = self._size_of(value)
        if size > self.max_bytes:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= self._size_of(old)
            self._items[key] = value
            self._bytes += size
            while self._bytes > self.max_bytes and self._items:
                _, evicted = self._items.popitem(last=False)
                self._bytes -= self._size_of(evicted)

    @property
    def nbytes(self) -> int:
        """Bytes held."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)


@dataclass(frozen=True)
class SeriesInfo:
    """What the database knows about a series: spacing (x, y, z mm) and the DICOM window (min, max HU)."""

    spacing_mm: tuple[float, float, float] | None
    dicom_window: tuple[float, float] | None


@dataclass(frozen=True)
class Encoded:
    """An encoded response body and its ETag."""

    body: bytes
    etag: str
    width: int
    height: int


def _etag(*parts: object) -> str:
    digest = hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=12).hexdigest()
    return f'"{digest}"'


def _if_none_match(request: Request, etag: str) -> bool:
    header = request.headers.get("if-none-match")
    if not header:
        return False
    tags = {t.strip().removeprefix("W/") for t in header.split(",")}
    return etag in tags or "*" in tags


class SliceImages:
    """Reads (through the store's decoded-slice cache), windows and encodes slices; caches encoded bodies."""

    def __init__(
        self,
        store: Any,
        *,
        series_info: Callable[[str], SeriesInfo | None] | None = None,
        encoded_cache_bytes: int = 192 * 2**20,
    ) -> None:
        self.store = store
        self._series_lookup = series_info
        self.encoded: ByteLRU[tuple[Any, ...], Encoded] = ByteLRU(encoded_cache_bytes, lambda e: len(e.body))
        self._series: dict[str, SeriesInfo] = {}
        self._paths: OrderedDict[str, Any] = OrderedDict()
        self._paths_lock = threading.Lock()

    # -- lookups -------------------------------------------------------------------------------
    @staticmethod
    def file_name(name: str) -> str:
        """The DL_info file name of a URL slice name; UnsafePathError for anything else."""
        if not SLICE_NAME_RE.fullmatch(name):
            raise UnsafePathError(f"not a DeepLesion slice name: {name!r}")
        return f"{name}.png"

    def stat(self, file_name: str) -> tuple[int, int]:
        """(mtime_ns, size) of a stored slice; SliceNotFoundError when it is not stored."""
        if getattr(self.store, "remote", False):
            # Object storage: the store memoises identities (HEAD) for a short time itself.
            identity: tuple[int, int] = self.store.identity(file_name)
            return identity
        with self._paths_lock:
            path = self._paths.get(file_name)
            if path is not None:
                self._paths.move_to_end(file_name)
        if path is None:
            # The store's containment check resolves symlinks (two realpath calls): do it once per name.
            # Safe to reuse: pixels are only ever read through store.read_hu, which checks again.
            path = self.store.path_for(file_name)
            with self._paths_lock:
                self._paths[file_name] = path
                while len(self._paths) > PATH_MEMO_ENTRIES:
                    self._paths.popitem(last=False)
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            raise SliceNotFoundError(str(path)) from None
        return st.st_mtime_ns, st.st_size

    def memo_entries(self) -> int:
        """How many slice names have a memoized path."""
        return len(self._paths)

    def is_memoized(self, file_name: str) -> bool:
        """Whether a slice name's path is memoized (no recency change)."""
        return file_name in self._paths

    def series_info_cached(self, series_folder: str) -> SeriesInfo | None:
        """The series' metadata when already looked up (no I/O)."""
        return self._series.get(series_folder)

    def series_info(self, series_folder: str) -> SeriesInfo | None:
        """The series' metadata from the database; cached because imported originals never change."""
        info = self._series.get(series_folder)
        if info is not None or self._series_lookup is None:
            return info
        try:
            info = self._series_lookup(series_folder)
        except Exception:
            # The image is still worth showing with a default window; the cause goes to the log.
            log.exception("series metadata lookup failed for %s", series_folder)
            return None
        if info is not None:
            self._series[series_folder] = info
        return info

    # -- pixels ----------------------------------------------------------------------------------
    def hu(self, file_name: str) -> np.ndarray:
        """The slice's HU array; the store's LRU (keyed by mtime and size) is the one decoded-slice cache."""
        return self.store.read_hu(file_name)

    def windowed(self, hu: np.ndarray, window: Window) -> np.ndarray:
        """8-bit windowed pixels (the data layer's lookup-table windowing)."""
        return apply_window(hu, window)

    # -- responses -------------------------------------------------------------------------------
    def image_etag(
        self, file_name: str, stat: tuple[int, int], window: Window, fmt: str, extra: str = ""
    ) -> str:
        """ETag of a windowed render: file identity, window, format and the rendering version."""
        return _etag(RENDER_VERSION, file_name, *stat, window.center, window.width, fmt, extra)

    def render(
        self,
        file_name: str,
        stat: tuple[int, int],
        window: Window,
        fmt: str,
        *,
        etag: str,
        marks: Sequence[Any] | None = None,
    ) -> Encoded:
        """Encode (or fetch from the cache) a windowed image; marks are burnt in when given."""
        key = (file_name, *stat, window.center, window.width, fmt, etag)
        cached = self.encoded.get(key)
        if cached is not None:
            return cached
        gray = self.windowed(self.hu(file_name), window)
        if marks:
            from app.deeplesion.render import draw_overlays

            image: Image.Image = draw_overlays(gray, list(marks))
        else:
            image = Image.fromarray(gray, mode="L")
        pil_format, _, options = IMAGE_FORMATS[fmt]
        buf = io.BytesIO()
        image.save(buf, pil_format, **options)
        encoded = Encoded(buf.getvalue(), etag, gray.shape[1], gray.shape[0])
        self.encoded.put(key, encoded)
        return encoded

    def raw(self, file_name: str, stat: tuple[int, int]) -> Encoded:
        """Gzip-compressed int16 little-endian HU (cached)."""
        etag = _etag(RENDER_VERSION, file_name, *stat, "raw")
        key = (file_name, *stat, "raw")
        cached = self.encoded.get(key)
        if cached is not None:
            return cached
        hu = self.hu(file_name)
        body = gzip.compress(hu.astype("<i2", copy=False).tobytes(), compresslevel=1, mtime=0)
        encoded = Encoded(body, etag, hu.shape[1], hu.shape[0])
        self.encoded.put(key, encoded)
        return encoded


def database_series_info(session_factory: Callable[[], Any]) -> Callable[[str], SeriesInfo | None]:
    """A lookup of a series' spacing and DICOM window in the imported key slices."""

    def lookup(series_folder: str) -> SeriesInfo | None:
        from app.review.series import series_display_info

        with session_factory() as session:
            found = series_display_info(session=session, series_folder=series_folder)
        if found is None:
            return None
        spacing, window = found
        return SeriesInfo(spacing_mm=spacing, dicom_window=window)

    return lookup


async def get_slice_images(request: Request) -> SliceImages:
    """The app's slice renderer (built in the lifespan)."""
    images: SliceImages = request.app.state.slice_images
    return images


SliceName = Annotated[
    str,
    Path(description="Slice file name without the .png suffix, e.g. 000001_01_01_108.", max_length=64),
]


async def _series_info(images: SliceImages, file_name: str) -> SeriesInfo | None:
    folder = file_name.rsplit("_", 1)[0]
    info = images.series_info_cached(folder)
    if info is None:
        info = await run_in_threadpool(images.series_info, folder)
    return info


MaybeUser = Annotated[Any, Depends(current_user)]


def _require_reader(user: Any, *, public: bool = False) -> None:
    """401 for an anonymous client unless the image is public (LESION_REVIEW_PUBLIC_IMAGES, plain only)."""
    if user is None and not public:
        raise HTTPException(status_code=401, detail="sign in first (POST /api/auth/login)")


def _not_modified(etag: str, cache_control: str) -> Response:
    return Response(status_code=304, headers={"ETag": etag, "Cache-Control": cache_control})


@router.get(
    "/{name}.raw",
    response_class=Response,
    responses={
        200: {"content": {"application/octet-stream": {}}, "description": "gzip int16 LE HU"},
        **error_responses(401, 404, 422, bodies={404: NotFoundOrNoFile}),
    },
    summary="Raw int16 HU pixels of a slice",
)
async def slice_raw(
    request: Request,
    name: SliceName,
    images: Annotated[SliceImages, Depends(get_slice_images)],
    user: MaybeUser,
) -> Response:
    """Raw int16 little-endian HU, row-major, gzip Content-Encoding; X-Width/X-Height/X-Spacing headers."""
    _require_reader(user)
    file_name = images.file_name(name)
    stat = images.stat(file_name)
    info = await _series_info(images, file_name)
    etag = _etag(RENDER_VERSION, file_name, *stat, "raw")
    if _if_none_match(request, etag):
        return _not_modified(etag, IMMUTABLE)
    key = (file_name, *stat, "raw")
    encoded = images.encoded.get(key)
    if encoded is None:
        encoded = await run_in_threadpool(images.raw, file_name, stat)
    headers = {
        "ETag": encoded.etag,
        "Cache-Control": IMMUTABLE,
        "Content-Encoding": "gzip",
        "X-Width": str(encoded.width),
        "X-Height": str(encoded.height),
        "Access-Control-Expose-Headers": "X-Width, X-Height, X-Spacing",
    }
    if info is not None and info.spacing_mm is not None:
        headers["X-Spacing"] = ",".join(format_number(v) for v in info.spacing_mm)
    return Response(encoded.body, media_type="application/octet-stream", headers=headers)


@router.get(
    "/{name}.{fmt}",
    response_class=Response,
    responses={
        200: {
            "content": {"image/png": {}, "image/webp": {}, "image/jpeg": {}},
            "description": "The windowed 8-bit slice",
        },
        **error_responses(401, 404, 422, bodies={404: NotFoundOrNoFile}),
    },
    summary="Windowed 8-bit image of a slice",
)
async def slice_image(
    request: Request,
    name: SliceName,
    fmt: Annotated[str, Path(description="png, webp or jpg", max_length=8)],
    images: Annotated[SliceImages, Depends(get_slice_images)],
    params: Annotated[RenderingParams, Depends(rendering_params)],
    user: MaybeUser,
) -> Response:
    """A windowed PNG/WebP/JPEG of a stored slice, optionally with the key slice's lesions burnt in."""
    public = bool(request.app.state.settings.public_images) and not params.overlay
    _require_reader(user, public=public)
    if fmt not in IMAGE_FORMATS:
        raise UnsafePathError(f"unknown image format: {fmt!r}")
    file_name = images.file_name(name)
    stat = images.stat(file_name)
    info = await _series_info(images, file_name)
    window = params.window(info.dicom_window if info else None)
    media_type = IMAGE_FORMATS[fmt][1]
    if params.overlay:
        marks, state = await run_in_threadpool(_overlay_marks, request, file_name)
        # Lesions change with every edit: revalidate each time instead of caching for a year.
        cache_control = "private, no-cache"
        etag = images.image_etag(file_name, stat, window, fmt, f"overlay:{state}")
    else:
        marks, cache_control = None, IMMUTABLE_PUBLIC if public else IMMUTABLE
        etag = images.image_etag(file_name, stat, window, fmt)
    if _if_none_match(request, etag):
        return _not_modified(etag, cache_control)
    key = (file_name, *stat, window.center, window.width, fmt, etag)
    encoded = images.encoded.get(key)
    if encoded is None:
        encoded = await run_in_threadpool(images.render, file_name, stat, window, fmt, etag=etag, marks=marks)
    return Response(
        encoded.body, media_type=media_type, headers={"ETag": encoded.etag, "Cache-Control": cache_control}
    )


def _overlay_marks(request: Request, file_name: str) -> tuple[list[Any], str]:
    """The key slice's current lesions as overlay marks, plus a digest of their state for the ETag."""
    from app.review.corrections import key_slice_detail
    from app.review.errors import NotFoundError
    from app.review.overlay import overlay_marks

    try:
        with request.app.state.session_factory() as session:
            detail = key_slice_detail(session=session, file_name=file_name, user=None)
    except NotFoundError:
        # A context slice has no lesions of its own: the plain image is the honest answer.
        return [], "none"
    lesions = detail.get("lesions", [])
    state = ";".join(f"{lesion.get('id')}:{lesion.get('version')}" for lesion in lesions)
    return list(overlay_marks(lesions)), state
