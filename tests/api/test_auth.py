"""The auth matrix: anonymous 401, wrong role 403, CSRF 403, login/logout, loopback autologin."""

from __future__ import annotations

from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from tests.api.conftest import PASSWORD, Api, add_user

KS = "000001_01_01_108.png"


def _first_lesion(api: Api) -> dict:  # type: ignore[type-arg]
    r = api.client.get(f"/api/key-slices/{KS}")
    assert r.status_code == 200, r.text
    return r.json()["lesions"][0]  # type: ignore[no-any-return]


def test_flag_noisy_without_login_is_401(api: Api) -> None:
    r = api.client.post("/api/lesions/1/flag", json={"version": 1, "reason": "duplicate", "note": ""})
    assert r.status_code == 401
    assert r.json()["code"] == "not_authenticated"


def test_reading_the_work_list_without_login_is_401(api: Api) -> None:
    assert api.client.get("/api/key-slices").status_code == 401


def test_wrong_password_is_401_and_sets_no_cookie(api: Api) -> None:
    add_user(api.database_url, "carol")
    r = api.client.post("/api/auth/login", json={"username": "carol", "password": "not-the-password"})
    assert r.status_code == 401
    assert "lesion_review_session" not in r.headers.get("set-cookie", "")


def test_login_sets_httponly_samesite_cookie_and_me_answers(api: Api) -> None:
    add_user(api.database_url, "dave")
    r = api.client.post("/api/auth/login", json={"username": "dave", "password": PASSWORD})
    assert r.status_code == 200
    cookie = r.headers["set-cookie"].lower()
    assert "lesion_review_session=" in cookie and "httponly" in cookie and "samesite=lax" in cookie
    assert "secure" not in cookie
    me = api.client.get("/api/auth/me")
    assert me.status_code == 200
    assert me.json()["user"]["name"] == "dave"
    assert me.json()["csrf_token"] == r.json()["csrf_token"]
    assert me.headers["cache-control"] == "no-store"


def test_write_without_csrf_header_is_403_and_changes_nothing(api: Api) -> None:
    api.login("erin")
    lesion = _first_lesion(api)
    r = api.client.post(f"/api/lesions/{lesion['id']}/confirm", json={"version": lesion["version"]})
    assert r.status_code == 403
    assert r.json()["code"] == "csrf_failed"
    assert _first_lesion(api) == lesion


def test_write_with_wrong_csrf_token_is_403(api: Api) -> None:
    api.login("frank")
    lesion = _first_lesion(api)
    r = api.client.post(
        f"/api/lesions/{lesion['id']}/confirm",
        json={"version": lesion["version"]},
        headers={"X-CSRF-Token": api.csrf + "x"},
    )
    assert r.status_code == 403


def test_write_with_csrf_token_succeeds(api: Api) -> None:
    api.login("gina")
    lesion = _first_lesion(api)
    r = api.write("POST", f"/api/lesions/{lesion['id']}/confirm", json={"version": lesion["version"]})
    assert r.status_code == 200, r.text  # type: ignore[attr-defined]
    result = r.json()  # type: ignore[attr-defined]
    confirmed = next(le for le in result["key_slice"]["lesions"] if le["id"] == lesion["id"])
    assert confirmed["review"] == "confirmed" and confirmed["confirmed"]["by"] == "gina"


def test_reviewer_exporting_is_403_and_admin_gets_the_csv(api: Api, second_api: Api) -> None:
    api.login("henry", "reviewer")
    assert api.client.get("/api/exports/dl_info.csv").status_code == 403
    second_api.login("iris", "admin")
    r = second_api.client.get("/api/exports/dl_info.csv?state=original")
    assert r.status_code == 200
    assert r.text.startswith("File_name,")


def test_logout_ends_the_session(api: Api) -> None:
    api.login("jack")
    assert api.write("POST", "/api/auth/logout").status_code == 200  # type: ignore[attr-defined]
    assert api.client.get("/api/auth/me").status_code == 401


def test_loopback_without_users_signs_in_local_admin(app_settings: Settings) -> None:
    with TestClient(create_app(app_settings, detector=None), client=("127.0.0.1", 40000)) as c:
        me = c.get("/api/auth/me")
        assert me.status_code == 200
        assert me.json()["user"]["name"] == "local" and me.json()["user"]["role"] == "admin"
        # Even the automatic reviewer's writes need the token a cross-site page cannot read.
        r = c.put(f"/api/key-slices/{KS}/status", json={"status": "done", "version": 0})
        assert r.status_code == 403
        r = c.put(
            f"/api/key-slices/{KS}/status",
            json={"status": "done", "version": 0},
            headers={"X-CSRF-Token": me.json()["csrf_token"]},
        )
        assert r.status_code == 200


def test_loopback_autologin_stops_once_a_user_exists(app_settings: Settings, database_url: str) -> None:
    add_user(database_url, "kate")
    with TestClient(create_app(app_settings, detector=None), client=("127.0.0.1", 40000)) as c:
        assert c.get("/api/auth/me").status_code == 401


def test_non_loopback_client_is_not_signed_in_automatically(client: TestClient) -> None:
    assert client.get("/api/auth/me").status_code == 401


def test_secure_cookie_when_configured(app_settings: Settings, database_url: str) -> None:
    add_user(database_url, "lena")
    settings = app_settings.model_copy(update={"cookie_secure": True})
    with TestClient(create_app(settings, detector=None)) as c:
        r = c.post("/api/auth/login", json={"username": "lena", "password": PASSWORD})
        assert "secure" in r.headers["set-cookie"].lower()


def test_repeated_wrong_passwords_are_throttled_even_for_the_right_one(api: Api) -> None:
    add_user(api.database_url, "mona")
    for _ in range(5):
        assert (
            api.client.post(
                "/api/auth/login", json={"username": "mona", "password": "guess-guess"}
            ).status_code
            == 401
        )
    r = api.client.post("/api/auth/login", json={"username": "mona", "password": PASSWORD})
    assert r.status_code == 429 and r.json()["code"] == "too_many_attempts"


def test_two_server_processes_share_the_local_admins_csrf_token(app_settings: Settings) -> None:
    # Two apps on one database stand for two worker processes: per-process tokens gave 403 on half the writes.
    with (
        TestClient(create_app(app_settings, detector=None), client=("127.0.0.1", 40000)) as a,
        TestClient(create_app(app_settings, detector=None), client=("127.0.0.1", 40001)) as b,
    ):
        token_a = a.get("/api/auth/me").json()["csrf_token"]
        token_b = b.get("/api/auth/me").json()["csrf_token"]
        assert token_a == token_b
        for version, client in enumerate((b, a, b)):
            r = client.put(
                f"/api/key-slices/{KS}/status",
                json={"status": "done" if version % 2 == 0 else "unreviewed", "version": version},
                headers={"X-CSRF-Token": token_a},
            )
            assert r.status_code == 200, r.text


def test_the_local_admins_csrf_token_survives_a_restart(app_settings: Settings) -> None:
    with TestClient(create_app(app_settings, detector=None), client=("127.0.0.1", 40000)) as a:
        before = a.get("/api/auth/me").json()["csrf_token"]
    with TestClient(create_app(app_settings, detector=None), client=("127.0.0.1", 40000)) as b:
        assert b.get("/api/auth/me").json()["csrf_token"] == before
