"""The production compose stack (infra/compose/) is well formed and safe by construction.

Docker is not needed: the files are parsed and checked, and the shell scripts run against stubs.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import shutil
import stat
import subprocess
import urllib.parse
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_DIR = ROOT / "infra" / "compose"
COMPOSE_FILE = COMPOSE_DIR / "compose.yaml"
SCRIPTS = sorted(COMPOSE_DIR.glob("*.sh"))

SERVICES = {"postgres", "s3", "mlflow", "prefect-server", "worker-cpu", "worker-gpu", "arena"}
PUBLISHED = {"mlflow", "prefect-server", "s3", "arena"}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|KEY|AUTH|TOKEN")
REQUIRED_REF = re.compile(r"\$\{([A-Z0-9_]+):\?([^}]*)\}")
DEFAULT_REF = re.compile(r"\$\{([A-Z0-9_]+):-")
BIND = "${BIND_ADDR:-127.0.0.1}:"


@pytest.fixture(scope="module")
def text() -> str:
    """compose.yaml without its comment lines."""
    return "\n".join(line for line in COMPOSE_FILE.read_text().splitlines() if not line.lstrip().startswith("#"))


@pytest.fixture(scope="module")
def compose(text: str) -> dict:
    return yaml.safe_load(text)


@pytest.fixture(scope="module")
def services(compose: dict) -> dict:
    return compose["services"]


def env_of(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def required_vars(text: str) -> set[str]:
    return {m.group(1) for m in REQUIRED_REF.finditer(text)}


def parse_env_file(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's interpolation, enough for this file: ${V:?msg}, ${V:-default} (nested), ${V}."""
    pattern = re.compile(r"\$\{([A-Z0-9_]+)(?::([?-])((?:[^{}]|\$\{[^{}]*\})*))?\}")

    def sub(m: re.Match) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3) or ""
        if env.get(name):
            return env[name]
        if op == "?":
            raise KeyError(f"{name}: {arg}")
        if op == "-":
            return interpolate(arg, env)
        return ""

    return pattern.sub(sub, text)


# --- structure -------------------------------------------------------------------------------------


def test_all_services_present(services: dict) -> None:
    assert set(services) == SERVICES


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_service_has_a_healthcheck(services: dict, name: str) -> None:
    hc = services[name].get("healthcheck")
    assert hc and not hc.get("disable"), f"{name} has no healthcheck"
    test = hc["test"]
    assert test and test != ["NONE"]
    assert (test[0] in {"CMD", "CMD-SHELL"}) if isinstance(test, list) else bool(test)


def test_depends_on_waits_for_health(services: dict) -> None:
    expected = {
        "mlflow": {"postgres", "s3"},
        "prefect-server": {"postgres"},
        "worker-cpu": {"prefect-server", "mlflow", "s3"},
        "worker-gpu": {"prefect-server", "mlflow", "s3"},
        "arena": {"postgres", "mlflow", "s3"},
    }
    for name, deps in expected.items():
        depends = services[name].get("depends_on")
        assert isinstance(depends, dict), f"{name}: depends_on must be the long form with conditions"
        assert set(depends) == deps, name
        for dep, cond in depends.items():
            assert cond == {"condition": "service_healthy"} or cond.get("condition") == "service_healthy", (name, dep)
    assert "depends_on" not in services["postgres"] and "depends_on" not in services["s3"]


# --- secrets -----------------------------------------------------------------------------------------


def test_secret_env_vars_reference_required_variables(services: dict) -> None:
    for name, service in services.items():
        for key, value in env_of(service).items():
            if SECRET_NAME.search(key):
                assert REQUIRED_REF.fullmatch(value.strip()), f"{name}.{key} must be ${{VAR:?...}}, got {value!r}"


def test_credentials_in_urls_are_required_variables(services: dict) -> None:
    userinfo = re.compile(r"://[^/@\s:]+:(.+?)@")
    for name, service in services.items():
        for key, value in env_of(service).items():
            m = userinfo.search(value)
            if m:
                assert REQUIRED_REF.fullmatch(m.group(1)), f"{name}.{key} embeds a literal password"


def test_no_defaults_for_secrets(text: str) -> None:
    defaulted = {m.group(1) for m in DEFAULT_REF.finditer(text)}
    assert not {v for v in defaulted if SECRET_NAME.search(v)}, "a secret variable has a default"
    for m in REQUIRED_REF.finditer(text):
        assert "generate-secrets.sh" in m.group(2), f"{m.group(1)}: the error should say how to fix it"


def test_required_variables_listed_in_env_example(text: str) -> None:
    example = parse_env_file(COMPOSE_DIR / ".env.example")
    assert required_vars(text) <= set(example)
    for key, value in example.items():
        if SECRET_NAME.search(key):
            assert value in {"", "admin:"}, f".env.example must not carry a value for {key}"


def test_dotenv_is_git_ignored() -> None:
    assert ".env" in (COMPOSE_DIR / ".gitignore").read_text().split()


def test_compose_refuses_to_interpolate_without_secrets(text: str) -> None:
    with pytest.raises(KeyError, match="generate-secrets.sh"):
        interpolate(text, {})


# --- networks and ports --------------------------------------------------------------------------------


def test_internal_network(compose: dict, services: dict) -> None:
    networks = compose["networks"]
    assert networks["internal"]["internal"] is True
    for name, service in services.items():
        assert "internal" in service["networks"], name
        assert "network_mode" not in service, name
    for name in SERVICES - PUBLISHED:
        others = [n for n in services[name]["networks"] if not (networks.get(n) or {}).get("internal")]
        assert not others, f"{name} must only be on internal networks, is on {others}"


def test_only_three_services_publish_ports_on_the_bind_address(services: dict) -> None:
    publishing = {name for name, s in services.items() if s.get("ports")}
    assert publishing == PUBLISHED
    for name in PUBLISHED:
        for port in services[name]["ports"]:
            assert isinstance(port, str) and port.startswith(BIND), f"{name}: {port!r} is not bound to {BIND}"
    container_ports = {name: services[name]["ports"][0].rsplit(":", 1)[1] for name in PUBLISHED}
    assert container_ports == {"mlflow": "5000", "prefect-server": "4200", "s3": "8333", "arena": "8765"}


# --- MLflow --------------------------------------------------------------------------------------------


def test_mlflow_server_has_auth_and_s3_artifacts(services: dict) -> None:
    mlflow = services["mlflow"]
    command = mlflow["command"]
    args = command if isinstance(command, list) else command.split()
    assert args[args.index("--app-name") + 1] == "basic-auth"
    assert args[args.index("--artifacts-destination") + 1].startswith("s3://mlflow/")
    assert "--serve-artifacts" in args
    env = env_of(mlflow)
    for key in ("MLFLOW_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY", "AWS_SECRET_ACCESS_KEY"):
        assert REQUIRED_REF.fullmatch(env[key]), key
    assert env["MLFLOW_S3_ENDPOINT_URL"] == "http://s3:8333"
    assert mlflow["build"]["dockerfile"] == "mlflow.Dockerfile"


def test_mlflow_image_pins_versions() -> None:
    dockerfile = (COMPOSE_DIR / "mlflow.Dockerfile").read_text()
    assert re.search(r"mlflow(\[auth\])?==3\.17\.2", dockerfile)
    assert "psycopg2-binary==" in dockerfile and "boto3==" in dockerfile
    assert "mlflow-entrypoint.sh" in dockerfile


def _run_mlflow_entrypoint(tmp_path: Path, args: list[str], **extra: str) -> subprocess.CompletedProcess:
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    stub = bindir / "mlflow"
    stub.write_text(
        "#!/bin/sh\n"
        'printf "%s\\n" "$@" > "$OUT_DIR/argv"\n'
        'env > "$OUT_DIR/environ"\n'
        'cp "$MLFLOW_AUTH_CONFIG_PATH" "$OUT_DIR/auth.ini"\n'
        'stat -c %a "$MLFLOW_AUTH_CONFIG_PATH" > "$OUT_DIR/mode"\n'
    )
    stub.chmod(0o755)
    python = bindir / "python"
    if not python.exists():
        python.symlink_to(shutil.which("python3") or shutil.which("python"))
    env = {
        "PATH": f"{bindir}:/usr/bin:/bin",
        "OUT_DIR": str(tmp_path),
        "TMPDIR": str(tmp_path),
        "MLFLOW_DB_PASSWORD": "p%w@d:/x y",
        "MLFLOW_ADMIN_USERNAME": "admin",
        "MLFLOW_ADMIN_PASSWORD": "adm%in pw 0123456789abcdef",
        "MLFLOW_FLASK_SERVER_SECRET_KEY": "flask-secret-0123456789abcdef",
        "AWS_ACCESS_KEY_ID": "access",
        "AWS_SECRET_ACCESS_KEY": "secret",
        **extra,
    }
    return subprocess.run(
        ["sh", str(COMPOSE_DIR / "mlflow-entrypoint.sh"), *args],
        env=env, capture_output=True, text=True, timeout=20,
    )


def test_mlflow_entrypoint_renders_auth_config(tmp_path: Path, services: dict) -> None:
    proc = _run_mlflow_entrypoint(tmp_path, [str(a) for a in services["mlflow"]["command"]])
    assert proc.returncode == 0, proc.stderr
    argv = (tmp_path / "argv").read_text().split("\n")
    assert argv[0] == "server" and "basic-auth" in argv
    assert "p%w@d" not in "".join(argv) and "adm%in" not in "".join(argv), "secrets must not be in argv"
    assert (tmp_path / "mode").read_text().strip() == "600"
    ini = configparser.ConfigParser()
    ini.read(tmp_path / "auth.ini")  # configparser's % interpolation must give back the raw values
    section = ini["mlflow"]
    assert section["admin_username"] == "admin"
    assert section["admin_password"] == "adm%in pw 0123456789abcdef"
    auth_uri = urllib.parse.urlsplit(section["database_uri"])
    assert auth_uri.scheme == "postgresql+psycopg2" and auth_uri.path == "/mlflow_auth"
    assert urllib.parse.unquote(auth_uri.password) == "p%w@d:/x y" and auth_uri.hostname == "postgres"
    environ = dict(line.split("=", 1) for line in (tmp_path / "environ").read_text().splitlines() if "=" in line)
    backend = urllib.parse.urlsplit(environ["MLFLOW_BACKEND_STORE_URI"])
    assert backend.scheme == "postgresql+psycopg2" and backend.path == "/mlflow"
    assert urllib.parse.unquote(backend.password) == "p%w@d:/x y"
    assert "MLFLOW_ADMIN_PASSWORD" not in environ and "MLFLOW_DB_PASSWORD" not in environ


def test_mlflow_entrypoint_refuses_without_auth_or_secrets(tmp_path: Path) -> None:
    proc = _run_mlflow_entrypoint(tmp_path, ["--host", "0.0.0.0"])
    assert proc.returncode != 0 and "basic-auth" in proc.stderr
    proc = _run_mlflow_entrypoint(tmp_path, ["--app-name", "basic-auth"], MLFLOW_ADMIN_PASSWORD="")
    assert proc.returncode != 0 and "MLFLOW_ADMIN_PASSWORD" in proc.stderr


# --- Prefect -------------------------------------------------------------------------------------------


def test_prefect_server(services: dict) -> None:
    server = services["prefect-server"]
    assert server["image"] == "prefecthq/prefect:3.8.8-python3.11"
    env = env_of(server)
    assert REQUIRED_REF.fullmatch(env["PREFECT_SERVER_API_AUTH_STRING"])
    db = env["PREFECT_API_DATABASE_CONNECTION_URL"]
    assert db.startswith("postgresql+asyncpg://prefect:") and db.endswith("@postgres:5432/prefect")
    assert env["PREFECT_UI_API_URL"]
    assert "server" in server["command"] and "start" in server["command"]
    assert "/api/health" in " ".join(server["healthcheck"]["test"])


@pytest.mark.parametrize("name,pool", [("worker-cpu", "cpu"), ("worker-gpu", "gpu")])
def test_workers(services: dict, name: str, pool: str) -> None:
    worker = services[name]
    command = worker["command"]
    assert command[:3] == ["prefect", "worker", "start"]
    assert command[command.index("--pool") + 1] == pool
    assert command[command.index("--type") + 1] == "process"
    assert "--with-healthcheck" in command
    env = env_of(worker)
    assert env["PREFECT_API_URL"] == "http://prefect-server:4200/api"
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    for key in ("PREFECT_API_AUTH_STRING", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
                "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert REQUIRED_REF.fullmatch(env[key]), (name, key)
    assert worker["build"]["dockerfile"] == "infra/compose/alignflow.Dockerfile"
    assert (COMPOSE_DIR / worker["build"]["context"] / "pyproject.toml").is_file()


def test_server_and_clients_share_the_auth_string(services: dict) -> None:
    server = REQUIRED_REF.fullmatch(env_of(services["prefect-server"])["PREFECT_SERVER_API_AUTH_STRING"]).group(1)
    for name in ("worker-cpu", "worker-gpu"):
        assert REQUIRED_REF.fullmatch(env_of(services[name])["PREFECT_API_AUTH_STRING"]).group(1) == server


def test_gpu_worker_requests_nvidia_devices(services: dict) -> None:
    devices = services["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert {"driver": "nvidia", "count": "all", "capabilities": ["gpu"]} in devices
    assert "deploy" not in services["worker-cpu"]


def test_worker_image_installs_torch_first() -> None:
    dockerfile = (COMPOSE_DIR / "alignflow.Dockerfile").read_text()
    assert "ARG TORCH_VERSION=2.13.0" in dockerfile
    assert dockerfile.index('pip install "torch==${TORCH_VERSION}"') < dockerfile.index("RUN pip install .")


# --- Postgres and S3 -----------------------------------------------------------------------------------


def test_postgres_init_creates_both_databases(services: dict) -> None:
    mounts = services["postgres"]["volumes"]
    assert any(m.startswith("./postgres-init.sh:/docker-entrypoint-initdb.d/") for m in mounts)
    sql = (COMPOSE_DIR / "postgres-init.sh").read_text()
    for db in ("mlflow", "prefect", "arena"):
        assert re.search(rf"CREATE DATABASE {db} OWNER", sql), db
    assert ":'mlflow_pw'" in sql and ":'prefect_pw'" in sql and ":'arena_pw'" in sql, \
        "passwords go in as psql variables"


def test_arena_service_logs_annotators_in_and_keeps_votes_in_postgres(services: dict) -> None:
    arena = services["arena"]
    command = arena["command"]
    assert command[:3] == ["alignflow", "arena", "serve"] and "--users-env" in command
    assert command[command.index("--users-env") + 1] == "ARENA_USERS"
    env = env_of(arena)
    assert env["ALIGNFLOW_ARENA_DB"].startswith("postgresql+psycopg2://arena:${ARENA_DB_PASSWORD:?")
    assert REQUIRED_REF.fullmatch(env["ARENA_USERS"].strip()), "annotator logins have no default"
    dockerfile = (COMPOSE_DIR / "alignflow.Dockerfile").read_text()
    assert "COPY arena ./arena" in dockerfile and "psycopg2-binary" in dockerfile


def test_the_image_copies_every_package_the_project_installs() -> None:
    """`pip install .` in the image installs what pyproject's package list finds there: a package the image
    does not copy would be missing only at import time, on the workers."""
    import tomllib

    root = COMPOSE_DIR.parents[1]
    patterns = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    dockerfile = (COMPOSE_DIR / "alignflow.Dockerfile").read_text()
    packages = [p.removesuffix("*") for p in patterns]
    assert {"alignment", "storage", "launcher", "arena"} <= set(packages)
    for package in packages:
        assert (root / package / "__init__.py").is_file(), package
        assert f"COPY {package} ./{package}" in dockerfile, f"the image does not copy {package}/"


def test_s3_service(services: dict) -> None:
    s3 = services["s3"]
    assert s3["image"].startswith("chrislusf/seaweedfs:")
    assert any(m.endswith(":/usr/local/bin/s3-entrypoint.sh:ro") for m in s3["volumes"])
    assert env_of(s3)["SEAWEED_S3_CONFIG"] == "/etc/seaweedfs/s3.json"
    script = (COMPOSE_DIR / "s3-entrypoint.sh").read_text()
    assert '-s3.config="$S3_CONFIG"' in script and "server" in script


def test_s3_entrypoint_renders_identities_and_buckets(tmp_path: Path) -> None:
    buckets = tmp_path / "buckets"
    buckets.touch()
    weed = tmp_path / "weed"
    weed.write_text(
        "#!/bin/sh\n"
        'case "$1" in\n'
        '  server) printf "%s\\n" "$@" > "$OUT_DIR/server-args"; exit 0 ;;\n'
        "  upload) exit 0 ;;\n"
        '  shell) cmd=$(cat); case "$cmd" in\n'
        '     *s3.bucket.create*) echo "${cmd##*-name }" >> "$OUT_DIR/buckets" ;;\n'
        '     *) cat "$OUT_DIR/buckets" ;; esac ;;\n'
        "esac\n"
    )
    weed.chmod(0o755)
    env = {
        "PATH": "/usr/bin:/bin", "OUT_DIR": str(tmp_path), "WEED_BIN": str(weed),
        "SEAWEED_DATA_DIR": str(tmp_path / "data"), "SEAWEED_S3_CONFIG": str(tmp_path / "etc" / "s3.json"),
        "SEAWEED_READY_FILE": str(tmp_path / "ready"),
        "S3_MLFLOW_ACCESS_KEY": "mlflowaccess0123456789", "S3_MLFLOW_SECRET_KEY": "mlflowsecret0123456789abc",
        "S3_ALIGNFLOW_ACCESS_KEY": "alignaccess0123456789", "S3_ALIGNFLOW_SECRET_KEY": "alignsecret0123456789abc",
    }
    proc = subprocess.run(["sh", str(COMPOSE_DIR / "s3-entrypoint.sh")], env=env,
                          capture_output=True, text=True, timeout=20)
    assert proc.returncode == 0, proc.stderr
    config_path = tmp_path / "etc" / "s3.json"
    assert stat.S_IMODE(config_path.stat().st_mode) == 0o600
    identities = {i["name"]: i for i in json.loads(config_path.read_text())["identities"]}
    assert identities["mlflow"]["credentials"] == [
        {"accessKey": "mlflowaccess0123456789", "secretKey": "mlflowsecret0123456789abc"}]
    assert identities["alignflow"]["credentials"][0]["accessKey"] == "alignaccess0123456789"
    for name, ident in identities.items():
        assert all(a.endswith(f":{name}") for a in ident["actions"]), "each identity is limited to its bucket"
        assert "Admin" not in ident["actions"]
    assert set(buckets.read_text().split()) == {"mlflow", "alignflow"}
    assert f"-s3.config={config_path}" in (tmp_path / "server-args").read_text().split("\n")
    assert (tmp_path / "ready").exists()

    bad = dict(env, S3_MLFLOW_SECRET_KEY='quote"inside0123456789')
    proc = subprocess.run(["sh", str(COMPOSE_DIR / "s3-entrypoint.sh")], env=bad,
                          capture_output=True, text=True, timeout=20)
    assert proc.returncode != 0 and "S3_MLFLOW_SECRET_KEY" in proc.stderr


# --- generate-secrets.sh and the scripts ----------------------------------------------------------------


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_scripts_parse(script: Path) -> None:
    subprocess.run(["bash", "-n", str(script)], check=True, timeout=10)
    first = script.read_text().splitlines()[0]
    if first == "#!/bin/sh" and shutil.which("dash"):
        subprocess.run(["dash", "-n", str(script)], check=True, timeout=10)
    assert os.access(script, os.X_OK), f"{script.name} is not executable"


def test_generate_secrets(tmp_path: Path, text: str) -> None:
    script = tmp_path / "generate-secrets.sh"
    shutil.copy(COMPOSE_DIR / "generate-secrets.sh", script)
    proc = subprocess.run(["bash", str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=20)
    assert proc.returncode == 0, proc.stderr
    dotenv = tmp_path / ".env"
    assert stat.S_IMODE(dotenv.stat().st_mode) == 0o600
    values = parse_env_file(dotenv)
    missing = required_vars(text) - set(values)
    assert not missing, f"generate-secrets.sh does not write {sorted(missing)}"
    for key, value in values.items():
        if SECRET_NAME.search(key):
            secret = value.split(":", 1)[1] if key == "PREFECT_API_AUTH_STRING" else value
            assert len(secret) >= 24, f"{key} is too short"
            assert re.fullmatch(r"[A-Za-z0-9_.-]+", secret), f"{key} has characters that need quoting"
    secrets = [v for k, v in values.items() if SECRET_NAME.search(k)]
    assert len(set(secrets)) == len(secrets), "every secret is drawn separately"
    assert re.fullmatch(r"[^:]+:.+", values["PREFECT_API_AUTH_STRING"])
    # every ${VAR:?} in compose.yaml resolves with the generated file
    yaml.safe_load(interpolate(text, values))

    before = dotenv.read_bytes()
    again = subprocess.run(["bash", str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=20)
    assert again.returncode != 0 and "exists" in again.stderr
    assert dotenv.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [".env", "generate-secrets.sh"], "no temp file left"


def test_generate_secrets_output_argument(tmp_path: Path) -> None:
    out = tmp_path / "custom.env"
    subprocess.run(["bash", str(COMPOSE_DIR / "generate-secrets.sh"), str(out)], check=True,
                   capture_output=True, timeout=20)
    assert [p.name for p in tmp_path.iterdir()] == ["custom.env"]
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
