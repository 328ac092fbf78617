"""Work list filters, sorting, pagination, counts and queue neighbours, checked against the imported CSV."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from app.deeplesion.schema import LesionRecord
from tests.api.conftest import Api

Dataset = tuple[Path, list[LesionRecord]]


def files(records: list[LesionRecord], keep: Any = lambda r: True) -> list[str]:
    return sorted({r.file_name for r in records if keep(r)})


def worklist(api: Api, **params: Any) -> dict[str, Any]:
    r = api.client.get("/api/key-slices", params=params)
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    return r.json()  # type: ignore[no-any-return]


def names(body: dict[str, Any]) -> list[str]:
    return [item["file_name"] for item in body["items"]]


def test_unfiltered_list_has_every_key_slice_in_file_name_order(api: Api, review_dataset: Dataset) -> None:
    api.login("a1")
    body = worklist(api)
    assert names(body) == files(review_dataset[1])
    assert body["total"] == len(files(review_dataset[1]))
    assert body["counts"] == {
        "total": body["total"],
        "unreviewed": body["total"],
        "in_progress": 0,
        "done": 0,
    }


@pytest.mark.parametrize(
    ("params", "keep"),
    [
        ({"split": "test"}, lambda r: r.train_val_test == 3),
        ({"split": "train"}, lambda r: r.train_val_test == 1),
        ({"lesion_type": 5}, lambda r: r.coarse_lesion_type == 5),
        ({"lesion_type": [2, -1]}, lambda r: r.coarse_lesion_type in (2, -1)),
        ({"noisy": "true"}, lambda r: r.possibly_noisy == 1),
        ({"patient": 2}, lambda r: r.patient_index == 2),
    ],
)
def test_filters_match_the_csv(api: Api, review_dataset: Dataset, params: dict[str, Any], keep: Any) -> None:
    api.login("a2")
    expected = files(review_dataset[1], keep)
    assert expected, "the fixture must have a row for every filter"
    body = worklist(api, **params)
    assert names(body) == expected and body["total"] == len(expected)


def test_size_filter_uses_the_long_axis_of_the_largest_lesion(api: Api, review_dataset: Dataset) -> None:
    api.login("a3")
    largest: dict[str, float] = {}
    for r in review_dataset[1]:
        largest[r.file_name] = max(largest.get(r.file_name, 0.0), r.long_axis_mm)
    # The size is the long axis in mm, not the mean of the two diameters.
    listed = {i["file_name"]: i["max_size_mm"] for i in worklist(api)["items"]}
    assert listed == pytest.approx(largest)
    threshold = sorted(largest.values())[len(largest) // 2]
    body = worklist(api, min_size_mm=threshold)
    assert names(body) == sorted(f for f, s in largest.items() if s >= threshold - 1e-6)
    body = worklist(api, max_size_mm=threshold - 1e-3)
    assert names(body) == sorted(f for f, s in largest.items() if s < threshold - 1e-3)
    body = worklist(api, sort="size", order="desc")
    assert [i["max_size_mm"] for i in body["items"]] == sorted(
        (i["max_size_mm"] for i in body["items"]), reverse=True
    )


def test_pagination_splits_the_list_without_overlap(api: Api, review_dataset: Dataset) -> None:
    api.login("a4")
    all_files = files(review_dataset[1])
    pages = [names(worklist(api, page=p, page_size=2)) for p in (1, 2, 3)]
    assert pages[0] + pages[1] + pages[2] == all_files
    assert worklist(api, page=1, page_size=2)["total"] == len(all_files)


def test_status_filter_and_counts_follow_the_reviewer(api: Api, second_api: Api) -> None:
    api.login("a5")
    second_api.login("a6")
    ks = names(worklist(api))[0]
    api.write("PUT", f"/api/key-slices/{ks}/status", json={"status": "done", "version": 0})
    mine = worklist(api, status="done")
    assert names(mine) == [ks]
    assert mine["counts"]["done"] == 1 and mine["counts"]["unreviewed"] == mine["counts"]["total"] - 1
    assert worklist(second_api, status="done")["total"] == 0
    assert names(worklist(second_api, status="done", reviewer="a5")) == [ks]


def test_a_flag_makes_a_key_slice_noisy_in_the_list(api: Api, review_dataset: Dataset) -> None:
    api.login("a7")
    clean = [
        f for f in files(review_dataset[1]) if f not in files(review_dataset[1], lambda r: r.possibly_noisy)
    ]
    target = clean[0]
    assert target not in names(worklist(api, noisy="true"))
    lesion = api.client.get(f"/api/key-slices/{target}").json()["lesions"][0]
    api.write(
        "POST",
        f"/api/lesions/{lesion['id']}/flag",
        json={"version": lesion["version"], "reason": "duplicate"},
    )
    assert target in names(worklist(api, noisy="true"))


def test_neighbours_follow_the_filtered_order(api: Api, review_dataset: Dataset) -> None:
    api.login("a8")
    order = files(review_dataset[1], lambda r: r.train_val_test == 3)
    r = api.client.get(f"/api/key-slices/{order[1]}/neighbours", params={"split": "test"})
    assert r.json() == {"previous": order[0], "next": order[2] if len(order) > 2 else None}
    first = api.client.get(f"/api/key-slices/{order[0]}/neighbours", params={"split": "test"}).json()
    assert first["previous"] is None


@pytest.mark.parametrize(
    "params",
    [
        {"page": 0},
        {"page_size": 501},
        {"sort": "bogus"},
        {"split": "x"},
        {"lesion_type": 99},
        {"min_size_mm": -1},
    ],
)
def test_bad_work_list_parameters_are_422(api: Api, params: dict[str, Any]) -> None:
    api.login("a9")
    assert api.client.get("/api/key-slices", params=params).status_code == 422


def test_unknown_reviewer_and_unknown_key_slice_are_404(api: Api) -> None:
    api.login("b1")
    assert api.client.get("/api/key-slices", params={"reviewer": "nobody"}).status_code == 404
    assert api.client.get("/api/key-slices/999999_01_01_001.png/neighbours").status_code == 404
    assert api.client.get("/api/key-slices/..%2F..%2Fetc%2Fpasswd").status_code == 404


@pytest.mark.parametrize("order", ["asc", "desc"])
def test_status_sort_pages_through_groups_in_order(api: Api, review_dataset: Dataset, order: str) -> None:
    api.login("b2")
    all_files = files(review_dataset[1])
    done, in_progress = all_files[0], all_files[2]
    api.write("PUT", f"/api/key-slices/{done}/status", json={"status": "done", "version": 0})
    api.write("PUT", f"/api/key-slices/{in_progress}/status", json={"status": "in_progress", "version": 0})
    rank = {done: 2, in_progress: 1}
    expected = sorted(all_files, key=lambda f: (rank.get(f, 0), f), reverse=order == "desc")
    got: list[str] = []
    for page in range(1, len(all_files) + 1):
        got += names(worklist(api, sort="status", order=order, page=page, page_size=1))
    assert got == expected
    nb = api.client.get(
        f"/api/key-slices/{expected[1]}/neighbours", params={"sort": "status", "order": order}
    )
    assert nb.json() == {"previous": expected[0], "next": expected[2]}


def test_on_disk_filter_and_image_on_disk_follow_the_stored_slices(api: Api, review_dataset: Dataset) -> None:
    from tests.api.review_data import STORED

    api.login("a-disk")

    def on_disk(name: str) -> bool:
        series, index = name.rsplit("_", 1)
        return int(index[:-4]) in STORED.get(series, [])

    every = files(review_dataset[1])
    assert {on_disk(n) for n in every} == {True, False}, "the data should have key images on and off disk"
    body = worklist(api)
    assert {i["file_name"]: i["image_on_disk"] for i in body["items"]} == {n: on_disk(n) for n in every}
    assert names(worklist(api, on_disk="true")) == [n for n in every if on_disk(n)]
    absent = worklist(api, on_disk="false")
    assert names(absent) == [n for n in every if not on_disk(n)]
    assert absent["counts"]["total"] == absent["total"] == len(names(absent))
