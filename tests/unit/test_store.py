"""The PNG slice store: path rules, path safety, 16-bit decoding, errors, listing and the cache."""

from __future__ import annotations

import os
import struct
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from app.deeplesion.errors import CorruptSliceError, SliceNotFoundError, UnsafePathError
from app.deeplesion.store import SliceStore, encode_hu_png


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def handmade_png16(values: np.ndarray) -> bytes:
    """A 16-bit grayscale PNG built byte by byte (no Pillow), big-endian samples as the PNG spec says."""
    height, width = values.shape
    header = struct.pack(">IIBBBBB", width, height, 16, 0, 0, 0, 0)
    rows = b"".join(b"\x00" + values[y].astype(">u2").tobytes() for y in range(height))
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(rows))
        + _png_chunk(b"IEND", b"")
    )


@pytest.fixture
def store(tmp_path: Path) -> SliceStore:
    return SliceStore(tmp_path / "data")


def test_path_for_replaces_the_last_underscore(store: SliceStore) -> None:
    assert store.path_for("000001_01_01_109.png") == store.root / "Images_png" / "000001_01_01" / "109.png"
    assert store.path_for("004427_26_03_1234.png") == store.root / "Images_png" / "004427_26_03" / "1234.png"
    assert store.path_for("000001_01_01_007.png").name == "007.png"


@pytest.mark.parametrize(
    "name",
    [
        "../000001_01_01_109.png",
        "000001_01_01_109.png/../../etc/passwd",
        "/etc/passwd",
        "/000001_01_01_109.png",
        "000001_01_01\\109.png",
        "000001_01_01/109.png",
        "000001_01_01_109.png\x00",
        "000001_01_01_109.png\n",
        "000001_01_01_109.jpg",
        "000001_01_01_109.PNG",
        "000001_01_01_09.png",
        "000001_01_01_12345.png",
        "000001_01_01_0109.png",
        "00001_01_01_109.png",
        "",
        "..",
        "000001_01_01_１０９.png",
        "٠٠٠٠٠١_٠١_٠١_١٠٩.png",
    ],
)
def test_unsafe_or_foreign_names_are_refused(store: SliceStore, name: str) -> None:
    with pytest.raises(UnsafePathError):
        store.path_for(name)
    with pytest.raises(UnsafePathError):
        store.read_hu(name)
    assert store.exists(name) is False


@pytest.mark.parametrize(
    "folder", ["..", "000001_01_01/..", "/tmp", "000001_01", "000001_01_01\x00", "a\\b", "٠٠٠٠٠١_٠١_٠١"]
)
def test_unsafe_series_folders_are_refused(store: SliceStore, folder: str) -> None:
    with pytest.raises(UnsafePathError):
        store.stored_slices(folder)
    with pytest.raises(UnsafePathError):
        store.read_hu_slice(folder, 1)


@pytest.mark.parametrize("index", [-1, 10000, True])
def test_bad_slice_indices_are_refused(store: SliceStore, index: int) -> None:
    with pytest.raises(UnsafePathError):
        store.read_hu_slice("000001_01_01", index)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    name=st.text(alphabet=st.characters(codec="utf-8"), max_size=40)
    | st.from_regex(r"\A[0-9_./\\]{1,30}\Z")
    | st.from_regex(r"\A(\.\./|/)?\d{6}_\d{2}_\d{2}[_/]\d{2,5}\.png\Z")
)
def test_no_random_name_resolves_outside_the_data_root(tmp_path: Path, name: str) -> None:
    store = SliceStore(tmp_path)
    images = os.path.realpath(tmp_path / "Images_png")
    try:
        path = store.path_for(name)
    except UnsafePathError:
        return
    real = os.path.realpath(path)
    assert real.startswith(images + os.sep)
    assert Path(real).parent.parent == Path(images)


def test_symlinked_series_pointing_outside_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "001.png").write_bytes(encode_hu_png(np.zeros((4, 4), np.int16)))
    store = SliceStore(tmp_path / "data")
    store.images_dir.mkdir(parents=True)
    (store.images_dir / "000009_01_01").symlink_to(outside, target_is_directory=True)
    with pytest.raises(UnsafePathError, match="outside the data root"):
        store.path_for("000009_01_01_001.png")
    with pytest.raises(UnsafePathError):
        store.read_hu("000009_01_01_001.png")
    with pytest.raises(UnsafePathError):
        store.stored_slices("000009_01_01")
    assert store.exists("000009_01_01_001.png") is False


def test_symlinked_slice_file_pointing_outside_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "secret.png"
    secret.write_bytes(encode_hu_png(np.zeros((4, 4), np.int16)))
    store = SliceStore(tmp_path / "data")
    folder = store.images_dir / "000009_01_01"
    folder.mkdir(parents=True)
    (folder / "001.png").symlink_to(secret)
    with pytest.raises(UnsafePathError):
        store.read_hu("000009_01_01_001.png")


def test_images_dir_itself_may_be_a_symlink(tmp_path: Path) -> None:
    real_images = tmp_path / "disk2" / "Images_png"
    store_root = tmp_path / "data"
    store_root.mkdir()
    (store_root / "Images_png").symlink_to(real_images, target_is_directory=True)
    store = SliceStore(store_root)
    hu = np.array([[1, 2], [3, 4]], np.int16)
    SliceStore(tmp_path / "disk2").write_hu("000001_01_01_001.png", hu)
    np.testing.assert_array_equal(store.read_hu("000001_01_01_001.png"), hu)


def test_handmade_16_bit_png_decodes_to_value_minus_32768(store: SliceStore) -> None:
    raw = np.array([[0, 32768, 65535], [31744, 32808, 33768]], dtype=np.uint16)
    path = store.path_for("000001_01_01_109.png")
    path.parent.mkdir(parents=True)
    path.write_bytes(handmade_png16(raw))
    hu = store.read_hu("000001_01_01_109.png")
    assert hu.dtype == np.int16
    np.testing.assert_array_equal(hu, [[-32768, 0, 32767], [-1024, 40, 1000]])


def test_write_hu_writes_a_real_16_bit_grayscale_png(store: SliceStore) -> None:
    hu = np.array([[-32768, -1024, 0], [40, 3071, 32767]], dtype=np.int16)
    path = store.write_hu("000001_01_01_001.png", hu)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
    assert (width, height, depth, colour) == (3, 2, 16, 0)
    # Decode the samples without Pillow: the stored value must be HU + 32768, big-endian.
    idat = b"".join(
        data[i + 8 : i + 8 + struct.unpack(">I", data[i : i + 4])[0]]
        for i in _chunk_offsets(data)
        if data[i + 4 : i + 8] == b"IDAT"
    )
    samples = _unfilter(zlib.decompress(idat), width=3, height=2, bytes_per_pixel=2)
    values = np.frombuffer(samples, dtype=">u2").reshape(2, 3)
    np.testing.assert_array_equal(values.astype(np.int32) - 32768, hu)


def _unfilter(data: bytes, width: int, height: int, bytes_per_pixel: int) -> bytes:
    """Undo PNG row filters (spec section 9) to get the raw samples."""
    stride = width * bytes_per_pixel
    out = bytearray()
    prev = bytearray(stride)
    for y in range(height):
        kind = data[y * (stride + 1)]
        row = bytearray(data[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            a = row[i - bytes_per_pixel] if i >= bytes_per_pixel else 0
            b = prev[i]
            c = prev[i - bytes_per_pixel] if i >= bytes_per_pixel else 0
            if kind == 1:
                row[i] = (row[i] + a) & 0xFF
            elif kind == 2:
                row[i] = (row[i] + b) & 0xFF
            elif kind == 3:
                row[i] = (row[i] + (a + b) // 2) & 0xFF
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                row[i] = (row[i] + pred) & 0xFF
        out += row
        prev = row
    return bytes(out)


def _chunk_offsets(data: bytes) -> list[int]:
    offsets, i = [], 8
    while i < len(data):
        offsets.append(i)
        i += 12 + struct.unpack(">I", data[i : i + 4])[0]
    return offsets


@pytest.mark.parametrize("size", [512, 768, 1024])
def test_write_then_read_round_trips_every_size(store: SliceStore, size: int) -> None:
    rng = np.random.default_rng(size)
    hu = rng.integers(-32768, 32768, size=(size, size)).astype(np.int16)
    store.write_hu("000002_01_01_050.png", hu)
    back = store.read_hu("000002_01_01_050.png")
    assert back.shape == (size, size)
    np.testing.assert_array_equal(back, hu)


def test_write_hu_accepts_a_path_and_refuses_bad_arrays(store: SliceStore, tmp_path: Path) -> None:
    target = tmp_path / "x" / "1.png"
    store.write_hu(target, np.zeros((2, 2), np.int32))
    assert target.is_file()
    with pytest.raises(ValueError, match="2-D"):
        store.write_hu(target, np.zeros((2, 2, 2), np.int16))
    with pytest.raises(ValueError, match="-32768..32767"):
        store.write_hu(target, np.full((2, 2), 40000, np.int32))


def test_missing_slice_raises_slice_not_found_naming_the_file(store: SliceStore) -> None:
    with pytest.raises(SliceNotFoundError) as info:
        store.read_hu("000001_01_01_109.png")
    assert info.value.path.endswith(os.path.join("000001_01_01", "109.png"))
    assert "109.png" in str(info.value)


def _write_bytes(store: SliceStore, name: str, data: bytes) -> Path:
    path = store.path_for(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda: b"not a png at all", "cannot decode"),
        (lambda: encode_hu_png(np.zeros((64, 64), np.int16))[:60], "cannot decode"),
        (lambda: _pillow_png(Image.new("L", (4, 4))), "not a 16-bit grayscale PNG (mode L)"),
        (lambda: _pillow_png(Image.new("RGB", (4, 4))), "not a 16-bit grayscale PNG (mode RGB)"),
        (lambda: _pillow_jpeg(), "not a PNG"),
        (lambda: b"", "cannot decode"),
    ],
)
def test_corrupt_slice_raises_with_file_and_reason(store: SliceStore, make: object, reason: str) -> None:
    path = _write_bytes(store, "000001_01_01_110.png", make())  # type: ignore[operator]
    with pytest.raises(CorruptSliceError) as info:
        store.read_hu("000001_01_01_110.png")
    assert info.value.path == str(path)
    assert reason in info.value.reason


def test_a_directory_where_a_slice_should_be_is_corrupt(store: SliceStore) -> None:
    store.path_for("000001_01_01_111.png").mkdir(parents=True)
    with pytest.raises(CorruptSliceError, match="not a regular file"):
        store.read_hu("000001_01_01_111.png")


def _pillow_png(img: Image.Image) -> bytes:
    import io

    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _pillow_jpeg() -> bytes:
    import io

    buf = io.BytesIO()
    Image.new("L", (4, 4)).save(buf, format="JPEG")
    return buf.getvalue()


def test_stored_slices_lists_sorted_indices_and_ignores_other_files(store: SliceStore) -> None:
    for index in (12, 3, 104, 1000):
        store.write_hu(f"000001_01_01_{index:03d}.png", np.zeros((2, 2), np.int16))
    folder = store.images_dir / "000001_01_01"
    for junk in ("notes.txt", "12.png", "0012.png", "abc.png", "005.png.tmp"):
        (folder / junk).write_bytes(b"x")
    assert store.stored_slices("000001_01_01") == [3, 12, 104, 1000]
    assert store.stored_slices("000002_01_01") == []
    assert store.exists("000001_01_01_012.png")
    assert not store.exists("000001_01_01_013.png")


def test_series_folders_lists_only_series_directories(store: SliceStore) -> None:
    assert store.series_folders() == []
    store.write_hu("000002_01_01_001.png", np.zeros((2, 2), np.int16))
    store.write_hu("000001_03_02_001.png", np.zeros((2, 2), np.int16))
    (store.images_dir / "README.txt").write_text("x")
    (store.images_dir / "000003_01_01.zip").write_text("x")
    assert store.series_folders() == ["000001_03_02", "000002_01_01"]


def test_read_hu_slice_matches_read_hu(store: SliceStore) -> None:
    hu = np.arange(12, dtype=np.int16).reshape(3, 4)
    store.write_hu("000001_01_01_009.png", hu)
    np.testing.assert_array_equal(store.read_hu_slice("000001_01_01", 9), hu)


def test_returned_arrays_are_read_only_so_the_cache_cannot_be_corrupted(store: SliceStore) -> None:
    store.write_hu("000001_01_01_001.png", np.zeros((2, 2), np.int16))
    hu = store.read_hu("000001_01_01_001.png")
    with pytest.raises(ValueError):
        hu[0, 0] = 5
    assert store.read_hu("000001_01_01_001.png")[0, 0] == 0


def test_cache_serves_repeats_and_sees_rewritten_files(store: SliceStore) -> None:
    store.write_hu("000001_01_01_001.png", np.zeros((4, 4), np.int16))
    store.read_hu("000001_01_01_001.png")
    store.read_hu("000001_01_01_001.png")
    assert (store.misses, store.hits) == (1, 1)
    path = store.write_hu("000001_01_01_001.png", np.full((4, 4), 7, np.int16))
    st_ = path.stat()
    os.utime(path, ns=(st_.st_atime_ns, st_.st_mtime_ns + 1_000_000_000))
    assert store.read_hu("000001_01_01_001.png")[0, 0] == 7


def test_cache_stays_within_its_byte_budget(tmp_path: Path) -> None:
    store = SliceStore(tmp_path, cache_bytes=3 * 64 * 64 * 2)
    for i in range(1, 8):
        store.write_hu(f"000001_01_01_{i:03d}.png", np.full((64, 64), i, np.int16))
    for i in range(1, 8):
        assert store.read_hu(f"000001_01_01_{i:03d}.png")[0, 0] == i
    assert store.cache_bytes <= 3 * 64 * 64 * 2
    # The three most recent slices are still cached.
    before = store.hits
    store.read_hu("000001_01_01_007.png")
    assert store.hits == before + 1


def test_concurrent_reads_return_the_right_slices(tmp_path: Path) -> None:
    store = SliceStore(tmp_path, cache_bytes=4 * 32 * 32 * 2)
    for i in range(1, 11):
        store.write_hu(f"000001_01_01_{i:03d}.png", np.full((32, 32), i, np.int16))
    failures: list[str] = []

    def worker(seed: int) -> None:
        rng = np.random.default_rng(seed)
        for _ in range(200):
            i = int(rng.integers(1, 11))
            value = int(store.read_hu(f"000001_01_01_{i:03d}.png")[5, 5])
            if value != i:
                failures.append(f"slice {i} read as {value}")

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert store.cache_bytes <= 4 * 32 * 32 * 2


def test_store_pickles_for_worker_processes_without_its_cache(tmp_path: Path) -> None:
    import pickle

    store = SliceStore(tmp_path, cache_bytes=1024 * 1024)
    hu = np.arange(6, dtype=np.int16).reshape(2, 3)
    store.write_hu("000001_01_01_001.png", hu)
    store.read_hu("000001_01_01_001.png")
    copy = pickle.loads(pickle.dumps(store))
    assert copy.root == store.root and copy.cache_bytes == 0
    np.testing.assert_array_equal(copy.read_hu("000001_01_01_001.png"), hu)


def test_mode_i_images_from_older_pillow_decode_too(
    store: SliceStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Older Pillow versions opened 16-bit grayscale PNGs as 32-bit mode "I"; newer ones use "I;16".
    raw = np.array([[32768, 33000], [100, 65535]], dtype=np.int32)
    legacy = Image.fromarray(raw)
    assert legacy.mode == "I"
    legacy.format = "PNG"
    path = _write_bytes(store, "000001_01_01_004.png", b"placeholder")
    monkeypatch.setattr("app.deeplesion.store.Image.open", lambda source: legacy)
    np.testing.assert_array_equal(store.read_hu("000001_01_01_004.png"), raw - 32768)
    out_of_range = Image.fromarray(np.array([[70000]], dtype=np.int32))
    out_of_range.format = "PNG"
    monkeypatch.setattr("app.deeplesion.store.Image.open", lambda source: out_of_range)
    uncached = SliceStore(store.root, cache_bytes=0)  # the first decode is cached under the same file
    with pytest.raises(CorruptSliceError, match="outside the 16-bit range"):
        uncached.read_hu("000001_01_01_004.png")
    assert path.is_file()
