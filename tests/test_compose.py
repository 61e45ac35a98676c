"""The production stack without a Docker engine: docker-compose.yml, .env.example, the
Dockerfile and the README agree with each other and with the code.

``docker-compose config`` parses and interpolates the file exactly as ``up`` would, so a
typo, an unsupported key or a missing required variable shows up here and not on a
server.
"""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from django.core.exceptions import ImproperlyConfigured

from opsplane import env
from opsplane.testing.require import unavailable

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
README = ROOT / "README.md"
DOCKERFILE = ROOT / "Dockerfile"

SERVICES = {"postgres", "redis", "migrate", "web", "worker", "beat"}
APP_SERVICES = ("migrate", "web", "worker", "beat")
# Compose refuses to start without these (``${VAR:?message}``).
REQUIRED = (
    "SECRET_KEY", "OPSPLANE_FERNET_KEYS", "DATABASE_URL", "REDIS_URL", "ALLOWED_HOSTS",
    "POSTGRES_PASSWORD",
)
CODE_DIRS = ("opsplane", "cmdb", "changes", "approvals", "alerts", "oncall")
# Read by the code, but not settings: the lab hands them on to the shells it runs.
NOT_SETTINGS = {"PATH", "LANG"}

_NAME = r"""["']([A-Za-z_][A-Za-z0-9_]*)["']"""
ENV_READS = re.compile(
    rf"""(?:\benviron\.get|\bgetenv|\benv_bool|\benv_int|\benv_list|\b_raw)\(\s*{_NAME}"""
    rf"""|\benviron\[\s*{_NAME}\s*\]"""
)
# ${VAR}, ${VAR:-default}, ${VAR:?message}; not $$VAR (an escaped dollar).
COMPOSE_VARS = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)")


# --- helpers --------------------------------------------------------------------------


def compose_config(directory, env_text):
    """Run ``docker-compose config`` with ``env_text`` as the project's ``.env``.

    The project directory is ``directory``, so ``env_file: .env`` is this file and never
    an operator's real one. The environment is nearly empty: Compose prefers the shell's
    variables to the env file's, and this test run may have DATABASE_URL and others set.
    """
    exe = shutil.which("docker-compose")
    if exe is None:
        unavailable("docker-compose is not installed (Debian: apt-get install docker-compose)")
    env_file = Path(directory) / ".env"
    env_file.write_text(env_text)
    return subprocess.run(
        [exe, "-f", str(COMPOSE_FILE), "--project-directory", str(directory),
         "--env-file", str(env_file), "config"],
        capture_output=True, text=True, timeout=60,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(directory)},
    )


def env_example():
    """The keys and values of ``.env.example`` (comments and blank lines skipped)."""
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f".env.example: not KEY=value: {line!r}"
            values[key] = value
    return values


def readme_section(title):
    text = README.read_text()
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"README.md has no '## {title}' section"
    return match.group(1)


def table_names(section, pattern):
    """First-column names (in backticks) of the Markdown table rows in ``section``."""
    return set(re.findall(rf"^\|\s*`({pattern})`\s*\|", section, re.M))


def documented_settings():
    return table_names(readme_section("Settings"), r"[A-Z][A-Z0-9_]*")


def variables_read_by_code():
    found = {}
    for directory in CODE_DIRS:
        for path in sorted((ROOT / directory).rglob("*.py")):
            for match in ENV_READS.finditer(path.read_text()):
                name = match.group(1) or match.group(2)
                found.setdefault(name, path.relative_to(ROOT))
    return found


def healthcheck(service):
    test = service.get("healthcheck", {}).get("test") or ["NONE"]
    return " ".join(test) if isinstance(test, list) else test


def published_ports(service):
    """(host address, host port) per published port, in either of Compose's spellings."""
    result = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            result.append((port.get("host_ip", ""), str(port.get("published", ""))))
        else:
            parts = str(port).split("/")[0].split(":")  # [host_ip:]published:target
            host_ip = parts[0] if len(parts) == 3 else ""
            result.append((host_ip, parts[-2] if len(parts) > 1 else ""))
    return result


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    """The stack as Compose sees it with ``.env.example`` as the operator's ``.env``."""
    directory = tmp_path_factory.mktemp("compose")
    result = compose_config(directory, ENV_EXAMPLE.read_text())
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


# --- the compose file -------------------------------------------------------------------


def test_the_stack_has_its_services(config):
    assert set(config["services"]) == SERVICES


def test_app_services_run_one_image_built_from_this_checkout(config):
    services = config["services"]
    web = services["web"]
    for name in APP_SERVICES:
        assert services[name]["build"] == web["build"], name
        assert services[name]["image"] == web["image"], name
    raw = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    assert {raw[name]["build"] for name in APP_SERVICES} == {"."}


def test_healthchecks(config):
    services = config["services"]
    assert "pg_isready" in healthcheck(services["postgres"])
    assert "redis-cli ping" in healthcheck(services["redis"])
    assert "/healthz" in healthcheck(services["web"])
    assert "inspect ping" in healthcheck(services["worker"])
    # The image's HEALTHCHECK is web's: the others must not inherit it.
    assert healthcheck(services["beat"]) == "NONE"
    assert healthcheck(services["migrate"]) == "NONE"


def test_app_services_wait_for_migrations(config):
    services = config["services"]
    for name in ("web", "worker", "beat"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
        assert depends["redis"]["condition"] == "service_healthy", name
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["migrate"]["command"] == ["python", "manage.py", "migrate", "--noinput"]
    assert services["migrate"]["restart"] == "no"
    for name in ("postgres", "redis", "web", "worker", "beat"):
        assert services[name]["restart"] == "unless-stopped", name


def test_app_services_get_the_env_file_and_the_required_settings(config):
    for name in APP_SERVICES:
        environment = config["services"][name]["environment"]
        for variable in set(REQUIRED) - {"POSTGRES_PASSWORD"}:
            assert environment.get(variable), (name, variable)
        assert environment["DATABASE_URL"].startswith("postgresql://"), name


def test_worker_serves_its_metrics_and_beat_keeps_its_schedule(config):
    services = config["services"]
    assert str(services["worker"]["environment"]["OPSPLANE_WORKER_METRICS_PORT"]) == "9808"
    assert "9808" in [str(port) for port in services["worker"].get("expose", [])]
    assert services["beat"]["command"][-2:] == [
        "--schedule", "/var/lib/opsplane/celerybeat-schedule",
    ]
    assert any(str(volume).split(":")[1] == "/var/lib/opsplane"
               if isinstance(volume, str) else volume["target"] == "/var/lib/opsplane"
               for volume in services["beat"]["volumes"])


def test_only_web_publishes_a_port_and_on_loopback_by_default(config):
    services = config["services"]
    for name, service in services.items():
        if name != "web":
            assert not service.get("ports"), name
    assert published_ports(services["web"]) == [("127.0.0.1", "8000")]


@pytest.mark.parametrize("variable", REQUIRED)
@pytest.mark.parametrize("how", ["missing", "blank"])
def test_a_missing_required_variable_stops_compose_naming_it(tmp_path, variable, how):
    lines = [line for line in ENV_EXAMPLE.read_text().splitlines()
             if not line.startswith(f"{variable}=")]
    if how == "blank":
        lines.append(f"{variable}=")
    result = compose_config(tmp_path, "\n".join(lines) + "\n")
    assert result.returncode != 0
    # The message is the last thing said (docker-compose 1.29 prints the whole mapping it
    # was interpolating before it, so a mere "contains" would prove nothing).
    assert result.stderr.strip().endswith(f"set {variable} in .env (see .env.example)"), (
        result.stderr
    )


# --- .env.example -----------------------------------------------------------------------


def test_env_example_holds_placeholders_only(tmp_path):
    values = env_example()
    # An unedited copy must not run: the settings refuse these placeholders.
    with pytest.raises(ImproperlyConfigured, match="^SECRET_KEY: "):
        env.secret_key(values, key_file=tmp_path / "secret_key")
    with pytest.raises(ImproperlyConfigured, match="^OPSPLANE_FERNET_KEYS: "):
        env.fernet_keys(values, key_file=tmp_path / "fernet_key")
    assert not list(tmp_path.iterdir())
    assert "change-me" in values["POSTGRES_PASSWORD"]
    assert values["DEBUG"] == "0"
    # The password in DATABASE_URL is the one the postgres service is created with.
    assert f":{values['POSTGRES_PASSWORD']}@postgres:" in values["DATABASE_URL"]
    assert values["DATABASE_URL"].endswith(f"/{values['POSTGRES_DB']}")


def test_every_env_example_key_is_commented():
    previous = ""
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line and not line.startswith("#"):
            assert previous.startswith("#"), f".env.example: {line!r} has no comment above it"
        previous = line


# --- the Dockerfile ---------------------------------------------------------------------


def test_dockerfile_builds_a_non_root_image_with_a_health_check():
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.11-slim-bookworm\b", text, re.M)
    user = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert user and user[-1].split(":")[0] not in {"root", "0"}
    assert re.search(r"^EXPOSE 8000$", text, re.M)
    assert re.search(r"^HEALTHCHECK .*/healthz", text, re.M | re.S)
    assert "collectstatic" in text and "docker/entrypoint.sh" in text
    assert "'.[dev]'" not in text and ".[dev]" not in text
    for variable in ("STATIC_ROOT", "OPSPLANE_VAR_DIR", "PROMETHEUS_MULTIPROC_DIR"):
        assert re.search(rf"\b{variable}=/", text), variable
    # The build context holds var/ (a laptop's secret key and database): never copy it all.
    assert not re.search(r"^COPY\s+\.\s", text, re.M)


# --- the README ---------------------------------------------------------------------------


def test_every_project_app_ships_in_the_image_and_the_package():
    """An app missing from the Dockerfile's COPY lines or from the package list works in a
    checkout and breaks only in production."""
    from django.conf import settings

    local = [app for app in settings.INSTALLED_APPS if (ROOT / app / "apps.py").exists()
             or (ROOT / app / "models.py").exists()]
    assert set(CODE_DIRS) == set(local)
    dockerfile = DOCKERFILE.read_text()
    pyproject = (ROOT / "pyproject.toml").read_text()
    for app in local:
        assert dockerfile.count(f"COPY {app} ./{app}\n") == 2, app  # build and runtime
        assert f'"{app}*"' in pyproject, app


def test_readme_opens_with_the_two_commands():
    opening = README.read_text().split("\n## ", 1)[0]
    assert "make run" in opening and "make test" in opening
    assert "http://127.0.0.1:8000" in opening


def test_readme_production_services_are_the_compose_services(config):
    named = table_names(readme_section("Production"), r"[a-z][a-z0-9_-]*")
    assert named, "README.md: no service table in 'Production'"
    assert named == set(config["services"])


def test_compose_and_env_example_variables_are_documented():
    documented = documented_settings()
    interpolated = set(COMPOSE_VARS.findall(COMPOSE_FILE.read_text()))
    assert set(REQUIRED) <= interpolated
    from_compose = interpolated - documented
    assert not from_compose, "docker-compose.yml reads these; README.md's Settings lacks them"
    from_env_example = set(env_example()) - documented
    assert not from_env_example, ".env.example sets these; README.md's Settings lacks them"


def test_every_variable_the_code_reads_is_documented():
    read = variables_read_by_code()
    assert "DATABASE_URL" in read and "OPSPLANE_LAB_PORT" in read  # the scan finds them
    missing = {name: str(path) for name, path in read.items()
               if name not in documented_settings() and name not in NOT_SETTINGS}
    assert not missing, "read by the code but not in README.md's Settings table"


def test_every_documented_variable_is_used_somewhere():
    used = set(variables_read_by_code())
    used |= set(COMPOSE_VARS.findall(COMPOSE_FILE.read_text()))
    used |= set(env_example())
    stale = {name for name in documented_settings()
             if name not in used and name not in DOCKERFILE.read_text()}
    assert not stale, "in README.md's Settings table, but nothing reads it"
