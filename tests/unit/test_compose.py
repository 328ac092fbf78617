"""docker-compose.yml and Dockerfile structure (no Docker engine here): services, env, volumes, profile."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.config import Settings

ROOT = Path(__file__).resolve().parents[2]
ENV_PREFIX = "LESION_REVIEW_"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


def app_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in compose["services"].items() if svc.get("build")}


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # the "KEY=value" list form
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def test_compose_has_the_app_and_a_postgres_database(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert "app" in services and "db" in services
    assert re.fullmatch(r"postgres:1[56](\.\d+)?(-\w+)?", services["db"]["image"])
    assert services["app"].get("build")


def test_database_has_a_pg_isready_healthcheck(compose: dict[str, Any]) -> None:
    check = compose["services"]["db"]["healthcheck"]
    test = check["test"]
    command = " ".join(test) if isinstance(test, list) else test
    assert "pg_isready" in command
    assert check.get("interval") and check.get("retries")


def test_every_app_service_waits_for_a_healthy_database(compose: dict[str, Any]) -> None:
    services = app_services(compose)
    assert services
    for name, svc in services.items():
        assert svc["depends_on"]["db"]["condition"] == "service_healthy", name


def test_database_data_lives_in_a_named_volume(compose: dict[str, Any]) -> None:
    named = set((compose.get("volumes") or {}).keys())
    mounts = compose["services"]["db"]["volumes"]
    sources = {m.split(":", 1)[0] for m in mounts if m.endswith(":/var/lib/postgresql/data")}
    assert sources and sources <= named


def test_png_store_is_bind_mounted_read_only_at_the_data_dir(compose: dict[str, Any]) -> None:
    for name, svc in app_services(compose).items():
        data_dir = env_of(svc)[f"{ENV_PREFIX}DATA_DIR"]
        mounts = [m for m in svc["volumes"] if m.split(":")[-2:] == [data_dir, "ro"]]
        assert mounts, f"{name}: no read-only mount at {data_dir}"
        source = mounts[0].rsplit(":", 2)[0]
        # A host path (bind mount), not a named volume.
        assert source.startswith(("/", ".", "${")), source


def test_app_env_vars_are_real_settings_fields(compose: dict[str, Any]) -> None:
    fields = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    seen: set[str] = set()
    for name, svc in app_services(compose).items():
        for key in env_of(svc):
            if key.startswith(ENV_PREFIX):
                assert key in fields, f"{name} sets {key}, which app.config.Settings does not read"
                seen.add(key)
    wanted = {"DATA_DIR", "DATABASE_URL", "HOST", "ALLOWED_HOSTS", "MODEL_PATH", "DEVICE"}
    assert {ENV_PREFIX + w for w in wanted} <= seen


def test_app_talks_to_the_compose_database_and_listens_publicly(compose: dict[str, Any]) -> None:
    db_env = compose["services"]["db"]["environment"]
    for name, svc in app_services(compose).items():
        env = env_of(svc)
        url = env[f"{ENV_PREFIX}DATABASE_URL"]
        assert url.startswith("postgresql+psycopg://"), name
        assert "@db:5432/" in url and url.endswith("/" + db_env["POSTGRES_DB"])
        assert f"//{db_env['POSTGRES_USER']}:" in url
        assert env[f"{ENV_PREFIX}HOST"] == "0.0.0.0"


def test_app_container_migrates_before_serving(compose: dict[str, Any]) -> None:
    for name, svc in app_services(compose).items():
        command = svc["command"]
        text = " ".join(command) if isinstance(command, list) else command
        assert text.index("lesion-review migrate") < text.index("lesion-review serve"), name
        assert "&&" in text  # serving only after a successful migration


def test_gpu_profile_reserves_an_nvidia_device_and_uses_cuda(compose: dict[str, Any]) -> None:
    gpu = [svc for svc in compose["services"].values() if "gpu" in (svc.get("profiles") or [])]
    assert len(gpu) == 1
    svc = gpu[0]
    devices = svc["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
    assert env_of(svc)[f"{ENV_PREFIX}DEVICE"] == "cuda"
    # The default service stays CPU-only and outside any profile.
    assert not compose["services"]["app"].get("profiles")
    assert env_of(compose["services"]["app"])[f"{ENV_PREFIX}DEVICE"] != "cuda"


def test_app_services_publish_different_host_ports(compose: dict[str, Any]) -> None:
    ports = [p.rsplit(":", 2)[-2] for svc in app_services(compose).values() for p in svc.get("ports", [])]
    assert len(ports) == len(set(ports))


def test_dockerfile_builds_from_python_slim_and_installs_the_package() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.M)
    assert re.search(r"pip install (-e )?\.", text)
    for needed in ("app", "migrations", "templates", "static", "alembic.ini"):
        assert re.search(rf"^COPY .*\b{re.escape(needed)}\b", text, re.M), needed


# -- the team layout: replicas sharing PostgreSQL and an object store ----------------------------------------


@pytest.fixture(scope="module")
def team() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "deploy" / "compose.team.yml").read_text())
    assert isinstance(data, dict)
    return data


def test_team_layout_runs_two_app_replicas_with_several_workers(team: dict[str, Any]) -> None:
    app = team["services"]["app"]
    assert app["deploy"]["replicas"] >= 2
    command = app["command"]
    assert command[:2] == ["lesion-review", "serve"] and int(command[command.index("--workers") + 1]) >= 2
    assert "ports" not in app, "replicas are reached through the proxy, not one host port each"


def test_team_replicas_share_one_database_and_one_object_store(team: dict[str, Any]) -> None:
    services = team["services"]
    env = env_of(services["app"])
    db_env = services["db"]["environment"]
    url = env[f"{ENV_PREFIX}DATABASE_URL"]
    assert (
        url.startswith("postgresql+psycopg://") and "@db:5432/" in url and url.endswith(db_env["POSTGRES_DB"])
    )
    data_dir = env[f"{ENV_PREFIX}DATA_DIR"]
    assert data_dir.startswith("s3://")
    options = json.loads(env[f"{ENV_PREFIX}STORAGE_OPTIONS"])
    assert options["client_kwargs"]["endpoint_url"] == "http://minio:9000"
    assert env["AWS_ACCESS_KEY_ID"] == services["minio"]["environment"]["MINIO_ROOT_USER"]
    fields = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    assert {k for k in env if k.startswith(ENV_PREFIX)} <= fields


def test_team_migrates_once_before_any_replica_starts(team: dict[str, Any]) -> None:
    services = team["services"]
    assert services["migrate"]["command"] == ["lesion-review", "migrate"]
    assert services["migrate"]["depends_on"]["db"]["condition"] == "service_healthy"
    assert services["app"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert "migrate" not in " ".join(services["app"]["command"])
    assert env_of(services["migrate"]) == env_of(services["app"])


def test_team_connections_fit_postgres_default_limit(team: dict[str, Any]) -> None:
    app = team["services"]["app"]
    env = env_of(app)
    settings = Settings(
        db_pool_size=int(env[f"{ENV_PREFIX}DB_POOL_SIZE"]),
        db_max_overflow=int(env[f"{ENV_PREFIX}DB_MAX_OVERFLOW"]),
    )
    workers = int(app["command"][app["command"].index("--workers") + 1])
    most = app["deploy"]["replicas"] * workers * (settings.db_pool_size + settings.db_max_overflow)
    assert most <= 100 - 10, f"{most} connections could exceed PostgreSQL's default max_connections"


def test_team_proxy_balances_over_the_replicas(team: dict[str, Any]) -> None:
    proxy = team["services"]["proxy"]
    mount = next(v for v in proxy["volumes"] if v.endswith(":/etc/caddy/Caddyfile:ro"))
    caddyfile = (ROOT / "deploy" / mount.split(":")[0]).read_text()
    assert re.search(r"dynamic a app 8000", caddyfile) and "health_uri /api/health" in caddyfile
    assert any(p.endswith(":443:443") for p in proxy["ports"])
