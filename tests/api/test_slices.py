"""Slice image and raw endpoints through create_app: windows, formats, caching headers, bad names."""

from __future__ import annotations

import gzip
import io
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.deeplesion.store import write_hu_png
from app.main import create_app
from app.review.vocabulary import palette_rgb
from tests.api.slice_data import (
    DICOM_WINDOW,
    KEY_SLICE,
    SERIES,
    SIZE,
    UNIMPORTED_SERIES,
    SliceDataset,
    build_slice_dataset,
)

KEY_URL = "/api/slices/" + KEY_SLICE.removesuffix(".png")
LOOPBACK = ("127.0.0.1", 40000)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> SliceDataset:
    return build_slice_dataset(tmp_path_factory.mktemp("slices") / "data")


@pytest.fixture(scope="module")
def client(data: SliceDataset) -> Iterator[TestClient]:
    # raise_server_exceptions (the default) turns any unhandled error into a failing test. A client on the
    # machine itself with no users in the database is the automatic local reviewer (images need sign-in).
    with TestClient(create_app(data.settings, detector=None), client=LOOPBACK) as c:
        yield c


@pytest.fixture()
def own_data(tmp_path: Path) -> SliceDataset:
    """A dataset of the test's own, for tests that change files."""
    return build_slice_dataset(tmp_path / "data")


@pytest.fixture()
def own_client(own_data: SliceDataset) -> Iterator[TestClient]:
    with TestClient(create_app(own_data.settings, detector=None), client=LOOPBACK) as c:
        yield c


def pixels(response_content: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(response_content)) as img:
        return np.asarray(img.convert("L"))


def expected_u8(hu: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Independent windowing formula: linear from lo (black) to hi (white), clipped."""
    return np.clip((hu.astype(np.float64) - lo) / (hi - lo) * 255.0, 0, 255)


def test_png_default_window_is_the_key_slices_dicom_window(client: TestClient, data: SliceDataset) -> None:
    r = client.get(f"{KEY_URL}.png")
    assert r.status_code == 200
    assert r.headers["content-type"] == "image/png"
    got = pixels(r.content).astype(np.float64)
    want = expected_u8(data.hu[KEY_SLICE], *DICOM_WINDOW)
    assert got.shape == (SIZE, SIZE)
    assert np.abs(got - want).max() <= 1.0


def test_context_slice_of_an_imported_series_uses_its_dicom_window(
    client: TestClient, data: SliceDataset
) -> None:
    name = f"{SERIES}_107.png"
    got = pixels(client.get(f"/api/slices/{name[:-4]}.png").content).astype(np.float64)
    assert np.abs(got - expected_u8(data.hu[name], *DICOM_WINDOW)).max() <= 1.0


def test_slice_without_metadata_defaults_to_soft_tissue(client: TestClient, data: SliceDataset) -> None:
    name = f"{UNIMPORTED_SERIES}_050.png"
    got = pixels(client.get(f"/api/slices/{name[:-4]}.png").content).astype(np.float64)
    assert np.abs(got - expected_u8(data.hu[name], 40 - 200, 40 + 200)).max() <= 1.0


@pytest.mark.parametrize(
    ("preset", "center", "width"),
    [
        ("soft_tissue", 40, 400),
        ("lung", -600, 1500),
        ("liver", 90, 150),
        ("bone", 480, 2500),
        ("brain", 40, 80),
    ],
)
def test_presets_render_their_documented_window(
    client: TestClient, data: SliceDataset, preset: str, center: float, width: float
) -> None:
    r = client.get(f"{KEY_URL}.png", params={"preset": preset})
    assert r.status_code == 200
    want = expected_u8(data.hu[KEY_SLICE], center - width / 2, center + width / 2)
    assert np.abs(pixels(r.content) - want).max() <= 1.0


def test_different_windows_give_different_pixels(client: TestClient) -> None:
    lung = pixels(client.get(f"{KEY_URL}.png", params={"preset": "lung"}).content)
    bone = pixels(client.get(f"{KEY_URL}.png", params={"preset": "bone"}).content)
    assert (lung != bone).mean() > 0.5


def test_dicom_and_detector_presets(client: TestClient, data: SliceDataset) -> None:
    dicom = pixels(client.get(f"{KEY_URL}.png", params={"preset": "dicom"}).content)
    assert np.abs(dicom - expected_u8(data.hu[KEY_SLICE], *DICOM_WINDOW)).max() <= 1.0
    det = pixels(client.get(f"{KEY_URL}.png", params={"preset": "detector"}).content)
    assert np.abs(det - expected_u8(data.hu[KEY_SLICE], -1024, 3071)).max() <= 1.0


def test_min_max_equals_the_same_centre_width(client: TestClient) -> None:
    a = client.get(f"{KEY_URL}.png", params={"min": -200, "max": 300})
    b = client.get(f"{KEY_URL}.png", params={"center": 50, "width": 500})
    assert a.status_code == b.status_code == 200
    assert np.array_equal(pixels(a.content), pixels(b.content))


@pytest.mark.parametrize("width", [1, 65535])
def test_width_bounds_are_accepted(client: TestClient, width: int) -> None:
    assert client.get(f"{KEY_URL}.png", params={"center": 0, "width": width}).status_code == 200


@pytest.mark.parametrize(
    "params",
    [
        {"center": 0, "width": 0},
        {"center": 0, "width": 65536},
        {"center": 0, "width": -5},
        {"min": 100, "max": 100},
        {"min": 300, "max": -300},
        {"min": -40000, "max": 40000},
        {"center": 40},
        {"width": 400},
        {"min": 0},
        {"preset": "lung", "center": 40, "width": 400},
        {"preset": "lung", "min": 0, "max": 10},
        {"preset": "no_such_preset"},
        {"center": "nan", "width": 400},
        {"center": "abc", "width": 400},
        {"center": 0, "width": "inf"},
    ],
)
def test_bad_windows_are_422_json(client: TestClient, params: dict[str, object]) -> None:
    r = client.get(f"{KEY_URL}.png", params=params)
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["code"] in ("invalid_window", "invalid_input")
    assert body["detail"]


def test_dicom_preset_on_a_slice_without_metadata_is_422(client: TestClient) -> None:
    r = client.get(f"/api/slices/{UNIMPORTED_SERIES}_050.png", params={"preset": "dicom"})
    assert r.status_code == 422
    assert r.json()["code"] == "invalid_window"


@pytest.mark.parametrize(
    ("suffix", "content_type", "pil_format"), [("webp", "image/webp", "WEBP"), ("jpg", "image/jpeg", "JPEG")]
)
def test_webp_and_jpg_have_their_content_type(
    client: TestClient, data: SliceDataset, suffix: str, content_type: str, pil_format: str
) -> None:
    r = client.get(f"{KEY_URL}.{suffix}", params={"preset": "soft_tissue"})
    assert r.status_code == 200
    assert r.headers["content-type"] == content_type
    with Image.open(io.BytesIO(r.content)) as img:
        assert img.format == pil_format
        got = np.asarray(img.convert("L")).astype(np.float64)
    # Lossy formats: close to the exact window, not equal.
    assert np.abs(got - expected_u8(data.hu[KEY_SLICE], -160, 240)).mean() < 6.0


def test_raw_is_gzip_int16_of_the_exact_hu(client: TestClient, data: SliceDataset) -> None:
    r = client.get(f"{KEY_URL}.raw", headers={"Accept-Encoding": "identity"})
    assert r.status_code == 200
    assert r.headers["content-encoding"] == "gzip"
    assert r.headers["x-width"] == str(SIZE) and r.headers["x-height"] == str(SIZE)
    assert [float(v) for v in r.headers["x-spacing"].split(",")] == [0.8, 0.8, 5.0]
    # httpx already undid the gzip encoding; the wire bytes were gzip (checked by the header above).
    hu = np.frombuffer(r.content, dtype="<i2").reshape(SIZE, SIZE)
    assert np.array_equal(hu, data.hu[KEY_SLICE])


def test_raw_windowed_in_the_browser_matches_the_png(client: TestClient) -> None:
    hu = np.frombuffer(client.get(f"{KEY_URL}.raw").content, dtype="<i2").reshape(SIZE, SIZE)
    png = pixels(client.get(f"{KEY_URL}.png", params={"min": -100, "max": 200}).content)
    assert np.abs(png - expected_u8(hu, -100, 200)).max() <= 1.0


def test_raw_wire_bytes_are_gzip(client: TestClient, data: SliceDataset) -> None:
    with client.stream("GET", f"{KEY_URL}.raw") as r:
        wire = b"".join(r.iter_raw())
    assert np.array_equal(
        np.frombuffer(gzip.decompress(wire), dtype="<i2").reshape(SIZE, SIZE), data.hu[KEY_SLICE]
    )


def test_raw_of_unimported_series_has_no_spacing_header(client: TestClient) -> None:
    r = client.get(f"/api/slices/{UNIMPORTED_SERIES}_050.raw")
    assert r.status_code == 200
    assert "x-spacing" not in r.headers


@pytest.mark.parametrize("suffix", ["png", "webp", "jpg", "raw"])
def test_images_are_immutable_with_an_etag(client: TestClient, suffix: str) -> None:
    r = client.get(f"{KEY_URL}.{suffix}")
    assert r.status_code == 200
    # Private: images need sign-in, so a shared cache must not hand them on.
    assert r.headers["cache-control"] == "private, max-age=31536000, immutable"
    assert r.headers["etag"].startswith('"') and len(r.headers["etag"]) > 8


def test_matching_if_none_match_is_304_without_body(client: TestClient) -> None:
    first = client.get(f"{KEY_URL}.png", params={"preset": "lung"})
    again = client.get(
        f"{KEY_URL}.png", params={"preset": "lung"}, headers={"If-None-Match": first.headers["etag"]}
    )
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == first.headers["etag"]
    raw = client.get(f"{KEY_URL}.raw")
    assert client.get(f"{KEY_URL}.raw", headers={"If-None-Match": raw.headers["etag"]}).status_code == 304


def test_etag_differs_per_window_and_format(client: TestClient) -> None:
    tags = {
        client.get(f"{KEY_URL}.png", params={"preset": "lung"}).headers["etag"],
        client.get(f"{KEY_URL}.png", params={"preset": "bone"}).headers["etag"],
        client.get(f"{KEY_URL}.webp", params={"preset": "lung"}).headers["etag"],
        client.get(f"{KEY_URL}.raw").headers["etag"],
    }
    assert len(tags) == 4
    stale = client.get(f"{KEY_URL}.png", params={"preset": "bone"}, headers={"If-None-Match": '"stale"'})
    assert stale.status_code == 200


def test_rewritten_slice_gets_a_new_etag_and_new_pixels(
    own_client: TestClient, own_data: SliceDataset
) -> None:
    client, data = own_client, own_data
    before = client.get(f"{KEY_URL}.png", params={"preset": "soft_tissue"})
    flat = np.full((SIZE, SIZE), 40, dtype=np.int16)
    path = data.root / "Images_png" / SERIES / "108.png"
    write_hu_png(path, flat)
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # coarse clocks: make the change visible
    after = client.get(f"{KEY_URL}.png", params={"preset": "soft_tissue"})
    assert after.headers["etag"] != before.headers["etag"]
    assert np.all(np.abs(pixels(after.content).astype(int) - 128) <= 1)


def test_missing_slice_is_404_json_naming_it(client: TestClient) -> None:
    r = client.get(f"/api/slices/{SERIES}_150.png")
    assert r.status_code == 404
    body = r.json()
    assert body["code"] == "slice_not_found"
    assert "150.png" in body["file"]
    assert client.get(f"/api/slices/{SERIES}_150.raw").json()["code"] == "slice_not_found"


def test_corrupt_png_is_422_json_naming_the_file_relative_to_the_data_root(
    client: TestClient, data: SliceDataset
) -> None:
    r = client.get(f"/api/slices/{data.corrupt[:-4]}.png")
    assert r.status_code == 422
    body = r.json()
    assert body["code"] == "corrupt_slice"
    assert body["file"].endswith(f"{SERIES}/110.png")
    assert str(data.root) not in r.text
    # The server keeps serving afterwards.
    assert client.get(f"{KEY_URL}.png").status_code == 200
    assert client.get(f"/api/slices/{data.corrupt[:-4]}.raw").status_code == 422


TRAVERSALS = [
    "..%2F..%2Fetc%2Fpasswd",
    "..%2Fsecret.txt",
    "..%2F..%2Fsecret.txt%00.png",
    "%2e%2e%2f%2e%2e%2fsecret",
    "..%5C..%5Csecret.txt",
    "..\\..\\secret",
    "000001_01_01_108%00",
    "000001_01_01_108%2F..%2F..%2F..%2Fsecret",
    "%2Fetc%2Fpasswd",
    "....%2F%2F....%2F%2Fsecret",
    "000001_01_01_108.png%2F..%2F..%2Fsecret",
    "%252e%252e%252fsecret",
    "000001_01_01_1",
    "000001_01_01_108.png",
    "1_01_01_108",
    "000001_01_01_00108",
    "０００００１_01_01_108",
]


@pytest.mark.parametrize("name", TRAVERSALS)
@pytest.mark.parametrize("suffix", ["png", "raw", "txt", "gif"])
def test_traversal_and_non_slice_names_are_404_with_no_outside_bytes(
    client: TestClient, data: SliceDataset, name: str, suffix: str
) -> None:
    r = client.get(f"/api/slices/{name}.{suffix}")
    assert r.status_code == 404, (name, r.status_code, r.text[:200])
    assert r.headers["content-type"].startswith("application/json")
    assert data.outside_marker not in r.content
    assert b"root:" not in r.content
    assert r.json()["code"] in ("not_found", "slice_not_found")


def test_raw_path_traversal_via_url_without_encoding_is_404(client: TestClient, data: SliceDataset) -> None:
    r = client.get("/api/slices/../../secret.txt")
    assert r.status_code == 404
    assert data.outside_marker not in r.content


def test_symlink_out_of_the_data_folder_is_refused(own_client: TestClient, own_data: SliceDataset) -> None:
    client, data = own_client, own_data
    link = data.root / "Images_png" / SERIES / "111.png"
    link.symlink_to(data.root / "secret.txt")
    r = client.get(f"/api/slices/{SERIES}_111.png")
    assert r.status_code == 404
    assert data.outside_marker not in r.content


def sign_in(client: TestClient, root: Path) -> dict[str, str]:
    """Create a reviewer in the dataset's database and sign in; returns the CSRF header."""
    from app.db.session import make_engine, make_session_factory
    from app.review.users import create_user

    engine = make_engine(f"sqlite:///{(root / 'lesion_review.db').resolve()}")
    with make_session_factory(engine)() as session, session.begin():
        create_user(session=session, name="olga", password="overlay-pass-1", role="reviewer")
    engine.dispose()
    r = client.post("/api/auth/login", json={"username": "olga", "password": "overlay-pass-1"})
    assert r.status_code == 200, r.text
    return {"X-CSRF-Token": r.json()["csrf_token"]}


def colour_pixels(content: bytes, colour: tuple[int, int, int]) -> np.ndarray:
    with Image.open(io.BytesIO(content)) as img:
        rgb = np.asarray(img.convert("RGB")).astype(int)
    return np.all(np.abs(rgb - np.array(colour)) <= 2, axis=-1)


def test_overlay_burns_in_the_original_lesion_along_its_recist_axis(client: TestClient) -> None:
    ORIGINAL = palette_rgb("original")

    plain = client.get(f"{KEY_URL}.png")
    marked = client.get(f"{KEY_URL}.png", params={"overlay": 1})
    assert marked.status_code == 200
    assert not colour_pixels(plain.content, ORIGINAL).any()
    green = colour_pixels(marked.content, ORIGINAL)
    # The long axis of key_record() runs (20,20)-(40,40): its midpoint is drawn, the far corner is not.
    assert green[30, 30] and not green[60, 5]
    assert marked.headers["etag"] != plain.headers["etag"]
    # Lesions change with edits: revalidated, never a year-long cache.
    assert "immutable" not in marked.headers["cache-control"]
    assert "no-cache" in marked.headers["cache-control"]


def test_overlay_follows_an_edit_with_a_new_etag_and_colour(
    own_client: TestClient, own_data: SliceDataset
) -> None:
    ORIGINAL, CORRECTED = palette_rgb("original"), palette_rgb("corrected")

    client = own_client
    before = client.get(f"{KEY_URL}.png", params={"overlay": 1})
    csrf = sign_in(client, own_data.root)
    lesion = client.get(f"/api/key-slices/{KEY_SLICE}").json()["lesions"][0]
    moved = [5.0, 50.0, 25.0, 50.0, 15.0, 45.0, 15.0, 55.0]
    r = client.put(
        f"/api/lesions/{lesion['id']}/geometry",
        json={"version": lesion["version"], "recist": moved},
        headers=csrf,
    )
    assert r.status_code == 200, r.text
    stale = client.get(
        f"{KEY_URL}.png", params={"overlay": 1}, headers={"If-None-Match": before.headers["etag"]}
    )
    assert stale.status_code == 200
    assert stale.headers["etag"] != before.headers["etag"]
    corrected = colour_pixels(stale.content, CORRECTED)
    assert corrected[50, 15] and not colour_pixels(stale.content, ORIGINAL)[30, 30]
    again = client.get(
        f"{KEY_URL}.png", params={"overlay": 1}, headers={"If-None-Match": stale.headers["etag"]}
    )
    assert again.status_code == 304


def test_overlay_on_a_context_slice_is_the_plain_image(client: TestClient) -> None:
    url = f"/api/slices/{SERIES}_107.png"
    plain, overlaid = client.get(url), client.get(url, params={"overlay": 1})
    assert overlaid.status_code == 200
    assert np.array_equal(pixels(plain.content), pixels(overlaid.content))


def test_byte_lru_evicts_least_recently_used_beyond_its_budget() -> None:
    from app.api.slices import ByteLRU

    cache: ByteLRU[str, bytes] = ByteLRU(10, len)
    cache.put("a", b"1234")
    cache.put("b", b"1234")
    assert cache.get("a") == b"1234"  # a is now the most recent
    cache.put("c", b"1234")  # 12 bytes > 10: b (least recent) goes
    assert cache.get("b") is None and cache.get("a") == b"1234" and cache.get("c") == b"1234"
    assert cache.nbytes == 8
    cache.put("huge", b"x" * 11)  # larger than the whole budget: not cached, nothing evicted
    assert cache.get("huge") is None and len(cache) == 2
    cache.put("a", b"12")  # replacing a value accounts for the old size
    assert cache.nbytes == 6


def test_the_memo_of_slice_paths_stays_bounded_and_keeps_recent_names(tmp_path: Path) -> None:
    from app.api.slices import PATH_MEMO_ENTRIES, SliceImages
    from app.deeplesion.errors import SliceNotFoundError
    from app.deeplesion.store import SliceStore

    images = SliceImages(SliceStore(tmp_path))
    asked = PATH_MEMO_ENTRIES + 5_000
    for n in range(asked):  # well-formed names of slices that are not stored, as a scanner would send
        with pytest.raises(SliceNotFoundError):
            images.stat(f"{n // 1000:06d}_01_01_{n % 1000:03d}.png")
    assert images.memo_entries() == PATH_MEMO_ENTRIES
    # Least recently used names go first, so the names in use now keep their memo.
    last = f"{(asked - 1) // 1000:06d}_01_01_{(asked - 1) % 1000:03d}.png"
    first = "000000_01_01_000.png"
    assert images.is_memoized(last) and not images.is_memoized(first)
