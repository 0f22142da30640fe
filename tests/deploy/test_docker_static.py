"""Static checks of the Docker deployment: no Docker engine needed, they always run.

They catch the drift that a container would only reveal at start-up: a compose service
running a command the CLI no longer has, a variable that is no longer a setting, a
Dockerfile that copies a path .dockerignore leaves out, .env.example out of step with
``app.settings.Settings``.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml
from dotenv import dotenv_values

from app.cli import cli
from app.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
ENV_EXAMPLE = ROOT / ".env.example"
SMOKE_SCRIPT = ROOT / "scripts" / "compose-smoke.sh"
SCALE_SMOKE_SCRIPT = ROOT / "scripts" / "compose-scale-smoke.sh"

APP_SERVICES = ("migrate", "api", "worker", "seed")
PROXY_DIR_IN_CONTAINER = "/etc/nginx/rbmrec"
PREFIX = "RBMREC_"
# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}, $VAR; $$ escapes $.
_INTERPOLATION = re.compile(
    r"\$(?:\$|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)
_SHELL_OPERATORS = {";", "&&", "||", "|", "&", "(", ")", ";;"}
_SHELL_KEYWORDS = {"if", "then", "else", "elif", "fi", "do", "done", "while", "until", "!", "{"}


# -- helpers -------------------------------------------------------------------------
def interpolate(value: str, env: Mapping[str, str]) -> str:
    """Compose-style interpolation of ``value`` with ``env`` (unset variables -> default)."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group("braced") or match.group("bare")
        op, arg = match.group("op"), match.group("arg")
        current = env.get(name)
        if op in (":-", "-") and (current is None or (op == ":-" and current == "")):
            return interpolate(arg, env)
        if op in (":?", "?") and (current is None or (op == ":?" and current == "")):
            raise AssertionError(f"${{{name}}} is required: {arg}")
        return current or ""

    return _INTERPOLATION.sub(replace, value)


def interpolate_command(command: str | list[str]) -> str | list[str]:
    """A compose ``command`` with its variables interpolated (all unset)."""
    if isinstance(command, str):
        return interpolate(command, {})
    return [interpolate(part, {}) for part in command]


def referenced_variables(text: str) -> set[str]:
    """Names of the variables that ``text`` interpolates (escaped ``$$`` excluded)."""
    names = set()
    for match in _INTERPOLATION.finditer(text):
        name = match.group("braced") or match.group("bare")
        if name:
            names.add(name)
    return names


def rbmrec_invocations(command: str | list[str]) -> list[list[str]]:
    """Every ``rbmrec ...`` simple command in a compose ``command`` (list or shell).

    A list whose head is a shell (``sh -c SCRIPT``) is searched inside SCRIPT.
    """
    argv = shlex.split(command) if isinstance(command, str) else list(command)
    if argv and argv[0] in ("sh", "bash", "/bin/sh", "/bin/bash"):
        script_index = next(i for i, arg in enumerate(argv) if arg.startswith("-") and "c" in arg)
        return _shell_invocations(argv[script_index + 1])
    return [argv] if argv and argv[0] == "rbmrec" else []


def _shell_invocations(script: str) -> list[list[str]]:
    found: list[list[str]] = []
    for line in script.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        lexer.commenters = "#"
        current: list[str] = []
        for token in [*lexer, ";"]:
            if token in _SHELL_OPERATORS:
                if current and current[0] == "rbmrec":
                    found.append(current)
                current = []
            elif current or token not in _SHELL_KEYWORDS:
                current.append(token)
    return found


def check_cli_invocation(argv: list[str]) -> str:
    """Parse ``argv`` with the real ``rbmrec`` CLI; return the command path.

    Raises ``AssertionError`` for an unknown command, an unknown option or a bad
    option value, with the CLI's own message; the command itself is not run.
    """
    assert argv[0] == "rbmrec", argv
    # typer may ship its own copy of click, so groups are recognised by behaviour.
    command: Any = typer.main.get_command(cli)
    ctx: Any = typer.Context(command, info_name="rbmrec")
    rest = argv[1:]
    while hasattr(command, "list_commands"):
        if not rest or rest[0].startswith("-"):
            raise AssertionError(f"{argv}: no subcommand of {ctx.command_path}")
        sub = command.get_command(ctx, rest[0])
        if sub is None:
            raise AssertionError(f"{argv}: {rest[0]!r} is not a command of {ctx.command_path}")
        command, name, rest = sub, rest[0], rest[1:]
        if hasattr(command, "list_commands"):
            ctx = typer.Context(command, info_name=name, parent=ctx)
            continue
        try:
            with command.make_context(name, list(rest), parent=ctx) as leaf:
                return str(leaf.command_path)
        except Exception as exc:
            if not hasattr(exc, "format_message"):  # not a usage error: a real failure
                raise
            raise AssertionError(f"{argv}: {exc.format_message()}") from exc
    raise AssertionError(f"{argv} is not a command")


def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict)
    return data


def environment_of(service: Mapping[str, Any]) -> dict[str, str]:
    """A service's ``environment`` (mapping or list form) as a dict of raw strings."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.split("=", 1) if "=" in item else (item, "") for item in env)
        return {key: value for key, value in pairs}
    return {key: "" if value is None else str(value) for key, value in env.items()}


def env_example_entries() -> Iterator[tuple[str, str, bool]]:
    """(name, raw value, commented out) for every ``NAME=value`` line of .env.example."""
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = re.fullmatch(r"(#\s*)?([A-Z][A-Z0-9_]*)=(.*)", line.strip())
        if match:
            yield match.group(2), match.group(3), match.group(1) is not None


def setting_name(variable: str) -> str:
    return variable.removeprefix(PREFIX).lower()


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "Dockerfile ends with a line continuation"
    out = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        out.append((keyword.upper(), args.strip()))
    return out


def runtime_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


# -- docker-compose.yml --------------------------------------------------------------
def test_compose_file_is_compose_specification() -> None:
    data = compose()
    assert "version" not in data, "the Compose Specification has no top-level version key"
    assert set(data["services"]) == {"db", "proxy", *APP_SERVICES}
    assert {"pgdata", "models"} <= set(data["volumes"])


def test_db_is_postgres_15_with_named_volume_and_pg_isready() -> None:
    db = compose()["services"]["db"]
    assert db["image"] == "postgres:15"
    assert any(v.startswith("pgdata:/var/lib/postgresql/data") for v in db["volumes"])
    assert "pg_isready" in " ".join(db["healthcheck"]["test"])


def test_start_order_waits_for_health_and_migrations() -> None:
    services = compose()["services"]
    assert services["migrate"]["depends_on"]["db"]["condition"] == "service_healthy"
    for name in ("api", "worker", "seed"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
    assert services["migrate"]["restart"] == "no"
    assert services["seed"]["restart"] == "no"
    assert services["seed"]["profiles"] == ["demo"]
    for name in ("db", "api", "worker"):
        assert services[name]["restart"] == "unless-stopped", name


def test_only_the_proxy_publishes_a_port_8000_on_loopback() -> None:
    services = compose()["services"]
    proxy = services["proxy"]
    assert [interpolate(port, {}) for port in proxy["ports"]] == ["127.0.0.1:8000:80"]
    assert interpolate(proxy["ports"][0], {"API_BIND": "0.0.0.0", "API_PORT": "9000"}) == (
        "0.0.0.0:9000:80"
    )
    # `--scale api=N` needs replicas that publish nothing (two cannot share a host port)
    assert [name for name, service in services.items() if "ports" in service] == ["proxy"]


def test_api_replicas_are_healthchecked_and_workers_come_from_env() -> None:
    api = compose()["services"]["api"]
    assert "/health/live" in " ".join(api["healthcheck"]["test"])
    workers = environment_of(api)["RBMREC_WORKERS"]
    assert interpolate(workers, {}) == "1"
    assert interpolate(workers, {"RBMREC_WORKERS": "4"}) == "4"


def test_api_trusts_forwarded_headers_from_the_proxy_service_only() -> None:
    services = compose()["services"]
    trusted = environment_of(services["api"])["RBMREC_TRUSTED_PROXIES"]
    assert Settings(_env_file=None, trusted_proxies=trusted).trusted_proxies == ["proxy"]  # type: ignore[call-arg]
    # the name resolves to the proxy alone: a network of its own with the api replicas
    assert services["proxy"]["networks"] == ["edge"]
    assert set(services["api"]["networks"]) == {"default", "edge"}
    for name in ("db", "worker", "migrate", "seed"):
        assert "edge" not in services[name].get("networks", ["default"]), name


def test_proxy_is_nginx_stable_run_by_the_repository_script_after_the_api() -> None:
    proxy = compose()["services"]["proxy"]
    assert proxy["image"] == "nginx:stable"
    mount = f"./deploy/nginx:{PROXY_DIR_IN_CONTAINER}:ro"
    assert mount in proxy["volumes"]
    assert proxy["command"] == ["sh", f"{PROXY_DIR_IN_CONTAINER}/run-proxy.sh"]
    assert proxy["healthcheck"]["test"][-1] == "health"
    assert proxy["depends_on"]["api"]["condition"] == "service_healthy"
    assert proxy["restart"] == "unless-stopped"
    # the same env file as the app containers: RBMREC_MAX_BODY_BYTES has one source
    assert proxy["env_file"] == compose()["services"]["api"]["env_file"]


def test_long_running_services_have_healthchecks_and_one_shots_none() -> None:
    services = compose()["services"]
    # `docker compose up --wait` fails on a running container whose check is disabled.
    assert "RBMREC_DATABASE_URL" in " ".join(services["worker"]["healthcheck"]["test"])
    for name in ("migrate", "seed"):
        assert services[name]["healthcheck"] == {"disable": True}, name


def test_api_worker_and_seed_share_the_model_volume_at_the_model_dir() -> None:
    services = compose()["services"]
    for name in ("api", "worker", "seed"):
        model_dir = environment_of(services[name])["RBMREC_MODEL_DIR"]
        assert f"models:{model_dir}" in services[name]["volumes"], name
    assert compose()["volumes"]["models"] is None, "a plain named volume"


def test_seed_reads_a_mounted_movielens_dir_whose_host_path_is_configurable() -> None:
    seed = compose()["services"]["seed"]
    container_dir = environment_of(seed)["RBMREC_MOVIELENS_DIR"]
    mounts = [interpolate(v, {}) for v in seed["volumes"]]
    assert f"./data/ml-100k:{container_dir}:ro" in mounts
    custom = [interpolate(v, {"MOVIELENS_HOST_DIR": "/srv/ml"}) for v in seed["volumes"]]
    assert f"/srv/ml:{container_dir}:ro" in custom


def test_every_service_command_is_a_real_rbmrec_command() -> None:
    services = compose()["services"]
    seen = {}
    for name in APP_SERVICES:
        invocations = rbmrec_invocations(interpolate_command(services[name]["command"]))
        assert invocations, f"service {name} runs no rbmrec command"
        seen[name] = [check_cli_invocation(argv) for argv in invocations]
    assert seen["migrate"] == ["rbmrec db upgrade"]
    assert seen["api"] == ["rbmrec serve"]
    assert seen["worker"] == ["rbmrec worker"]
    assert seen["seed"] == [
        "rbmrec import movielens",
        "rbmrec import movielens",
        "rbmrec train",
    ]


def test_the_command_check_rejects_what_the_cli_would_reject() -> None:
    with pytest.raises(AssertionError, match="'no-such-command' is not a command"):
        check_cli_invocation(["rbmrec", "no-such-command"])
    with pytest.raises(AssertionError, match="no subcommand"):
        check_cli_invocation(["rbmrec", "db"])
    with pytest.raises(AssertionError, match="--no-such-option"):
        check_cli_invocation(["rbmrec", "import", "movielens", "--no-such-option"])
    with pytest.raises(AssertionError, match="ml-1b"):
        check_cli_invocation(["rbmrec", "import", "movielens", "--download", "ml-1b"])
    assert check_cli_invocation(["rbmrec", "db", "upgrade", "head"]) == "rbmrec db upgrade"
    script = "if [ -f x ]; then rbmrec db upgrade; else echo no >&2; fi\nrbmrec train --seed 1\n"
    assert _shell_invocations(script) == [
        ["rbmrec", "db", "upgrade"],
        ["rbmrec", "train", "--seed", "1"],
    ]


def test_every_rbmrec_variable_in_compose_is_a_setting() -> None:
    data = compose()
    text = COMPOSE_FILE.read_text()
    variables = {v for v in referenced_variables(text) if v.startswith(PREFIX)}
    for service in data["services"].values():
        variables |= {v for v in environment_of(service) if v.startswith(PREFIX)}
    assert variables, "compose sets no RBMREC_* variable at all"
    unknown = sorted(v for v in variables if setting_name(v) not in Settings.model_fields)
    assert not unknown, f"not fields of app.settings.Settings: {unknown}"


# what `make env` puts in .env: compose requires both passwords
PASSWORDS = {"POSTGRES_PASSWORD": "owner-pw", "POSTGRES_APP_PASSWORD": "app-pw"}


def test_compose_environment_values_are_valid_settings() -> None:
    for name in APP_SERVICES:
        env = {
            k: interpolate(v, PASSWORDS)
            for k, v in environment_of(compose()["services"][name]).items()
        }
        values = {setting_name(k): v for k, v in env.items() if k.startswith(PREFIX)}
        settings = Settings(_env_file=None, **values)  # type: ignore[call-arg]
        assert settings.database_url.startswith("postgresql+psycopg://"), name
        assert settings.host == "0.0.0.0", name


def test_compose_variables_are_documented_in_env_example() -> None:
    text = COMPOSE_FILE.read_text()
    knobs = {v for v in referenced_variables(text) if not v.startswith(PREFIX)}
    documented = {name for name, _, _ in env_example_entries()}
    assert knobs <= documented, f"compose variables missing from .env.example: {knobs - documented}"


# -- .env.example --------------------------------------------------------------------
def test_env_example_lists_every_setting() -> None:
    listed = {setting_name(n) for n, _, _ in env_example_entries() if n.startswith(PREFIX)}
    missing = sorted(set(Settings.model_fields) - listed)
    unknown = sorted(listed - set(Settings.model_fields))
    assert not missing, f".env.example lacks {[PREFIX + m.upper() for m in missing]}"
    assert not unknown, f".env.example sets variables that are not settings: {unknown}"


def test_env_example_values_are_the_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    covered: set[str] = set()
    for name, raw, _commented in env_example_entries():
        if not name.startswith(PREFIX):
            continue
        covered.add(setting_name(name))
        default = Settings.model_fields[setting_name(name)].get_default(call_default_factory=True)
        if raw == "" and default is None:
            continue  # listed but unset: the default None
        # Each line alone in an env file, read by the same parser the service uses.
        monkeypatch.delenv(name, raising=False)
        one = tmp_path / f"{name}.env"
        one.write_text(f"{name}={raw}\n")
        settings = Settings(_env_file=one)  # type: ignore[call-arg]
        assert getattr(settings, setting_name(name)) == default, name
    assert covered == set(Settings.model_fields)


def test_env_example_is_a_valid_env_file() -> None:
    parsed = dotenv_values(ENV_EXAMPLE)
    assert parsed["RBMREC_RETRAIN_CRON"] == "0 3 * * *"
    assert all(value is not None for value in parsed.values())


def test_compose_defaults_match_env_example() -> None:
    # The ${VAR:-default} fallbacks in the compose file and .env.example must agree,
    # or copying .env.example would change the deployment.
    example = {name: raw for name, raw, commented in env_example_entries() if not commented}
    text = COMPOSE_FILE.read_text()
    for match in _INTERPOLATION.finditer(text):
        name, op = match.group("braced"), match.group("op")
        if name and op == ":-" and name in example:
            assert match.group("arg") == example[name].strip('"'), name


# -- Dockerfile and .dockerignore ----------------------------------------------------
def test_dockerfile_is_multi_stage_from_python_slim() -> None:
    instructions = dockerfile_instructions()
    text = DOCKERFILE.read_text()
    assert not re.search(r"^#\s*syntax\s*=", text, re.MULTILINE | re.IGNORECASE)
    froms = [args for keyword, args in instructions if keyword == "FROM"]
    assert len(froms) >= 2
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim$", text, re.MULTILINE)
    assert all(f.startswith("${PYTHON_IMAGE}") for f in froms)
    assert any("pip wheel" in args for keyword, args in instructions if keyword == "RUN")
    runtime = runtime_stage()
    assert any(k == "COPY" and args.startswith("--from=builder") for k, args in runtime)
    assert not any(k == "RUN" and "pip wheel" in args for k, args in runtime)


def test_dockerfile_runs_as_non_root_with_healthcheck_and_exec_cmd() -> None:
    runtime = runtime_stage()
    users = [args for keyword, args in runtime if keyword == "USER"]
    assert users, "the runtime stage has no USER"
    assert users[-1].split(":")[0] not in ("root", "0")
    healthchecks = [args for keyword, args in runtime if keyword == "HEALTHCHECK"]
    assert len(healthchecks) == 1
    assert "/health/live" in healthchecks[0]
    assert "CMD [" in healthchecks[0], "exec-form HEALTHCHECK (no shell needed)"
    cmds = [args for keyword, args in runtime if keyword == "CMD"]
    assert len(cmds) == 1
    assert cmds[0].startswith("["), "exec-form CMD: signals reach rbmrec, not a shell"
    argv = json.loads(cmds[0])
    assert check_cli_invocation(argv) == "rbmrec serve"
    assert not any(keyword == "ENTRYPOINT" for keyword, _ in runtime)


def test_image_finds_the_migrations_from_its_workdir() -> None:
    runtime = runtime_stage()
    workdirs = [args for keyword, args in runtime if keyword == "WORKDIR"]
    copies = [args for keyword, args in runtime if keyword == "COPY"]
    assert workdirs[-1:] == ["/app"]
    assert "migrations ./migrations" in copies
    assert "alembic.ini ./" in copies


def test_dockerfile_env_matches_what_compose_and_settings_expect() -> None:
    env: dict[str, str] = {}
    for keyword, args in runtime_stage():
        if keyword == "ENV":
            env.update(dict(re.findall(r"(\w+)=(\S+)", args)))
    for key in (k for k in env if k.startswith(PREFIX)):
        assert setting_name(key) in Settings.model_fields, key
    api_env = environment_of(compose()["services"]["api"])
    assert env["RBMREC_MODEL_DIR"] == api_env["RBMREC_MODEL_DIR"]
    assert env["RBMREC_HOST"] == "0.0.0.0"


def _ignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore patterns (last match wins, '!' re-includes) drop ``path``."""
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.removeprefix("!").strip("/")
        candidates = [pattern, pattern.removeprefix("**/")]
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatchcase(p, c) for p in prefixes for c in candidates):
            ignored = not negate
    return ignored


def dockerignore_patterns() -> list[str]:
    lines = DOCKERIGNORE.read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_dockerignore_keeps_data_models_venvs_and_git_out() -> None:
    patterns = dockerignore_patterns()
    for path in (
        ".git/HEAD",
        ".venv/bin/python",
        "models/v1/manifest.json",
        "weights.npy",
        "data/u.data",
        ".env",
        "rbmrec.db",
        "app/__pycache__/x.pyc",
        "tests/conftest.py",
    ):
        assert _ignored(path, patterns), path


def test_dockerfile_copies_only_what_the_build_context_keeps() -> None:
    patterns = dockerignore_patterns()
    for keyword, args in dockerfile_instructions():
        if keyword != "COPY" or args.startswith("--from"):
            continue
        *sources, _dest = args.split()
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: no such path"
            assert not _ignored(source, patterns), f"COPY {source} is excluded by .dockerignore"
    sources = [
        path.relative_to(ROOT).as_posix()
        for top in ("app", "rbm_core", "migrations")
        for path in (ROOT / top).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    ]
    assert sources
    dropped = [path for path in sources if _ignored(path, patterns)]
    assert not dropped, f".dockerignore drops source files: {dropped}"


@pytest.mark.parametrize("script", [SMOKE_SCRIPT, SCALE_SMOKE_SCRIPT], ids=lambda p: p.name)
def test_smoke_scripts_are_valid_bash(script: Path) -> None:
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# -- secrets and database roles --------------------------------------------------------
@pytest.mark.parametrize("password", sorted(PASSWORDS))
def test_compose_requires_the_database_passwords(password: str) -> None:
    services = compose()["services"]
    without = {k: v for k, v in PASSWORDS.items() if k != password}
    refused = 0
    for service in services.values():
        for value in environment_of(service).values():
            if password not in referenced_variables(value):
                continue
            with pytest.raises(AssertionError, match="see README"):
                interpolate(value, without)
            refused += 1
    assert refused, f"no service uses {password}"
    # no fallback password anywhere in the file
    assert not re.search(rf"\$\{{{password}:?-", COMPOSE_FILE.read_text())


def test_api_worker_and_seed_connect_as_the_app_role_and_migrate_as_the_owner() -> None:
    services = compose()["services"]

    def user_of(name: str) -> str:
        url = interpolate(environment_of(services[name])["RBMREC_DATABASE_URL"], PASSWORDS)
        return url.split("://", 1)[1].split(":", 1)[0]

    for name in ("api", "worker", "seed"):
        assert user_of(name) == "rbmrec_app", name
    assert user_of("migrate") == "rbmrec"
    db_env = {k: interpolate(v, PASSWORDS) for k, v in environment_of(services["db"]).items()}
    assert db_env["POSTGRES_USER"] == "rbmrec"
    assert db_env["POSTGRES_APP_USER"] == "rbmrec_app"
    assert db_env["POSTGRES_APP_PASSWORD"] == PASSWORDS["POSTGRES_APP_PASSWORD"]


def test_db_creates_the_app_role_when_its_volume_is_created() -> None:
    volumes = compose()["services"]["db"]["volumes"]
    assert "./deploy/postgres:/docker-entrypoint-initdb.d:ro" in volumes
    script = ROOT / "deploy" / "postgres" / "10-app-role.sh"
    text = script.read_text()
    assert "GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES" in text
    assert "GRANT USAGE, SELECT ON SEQUENCES" in text
    assert "REVOKE CREATE ON SCHEMA public FROM PUBLIC" in text
    assert "NOSUPERUSER" in text
    result = subprocess.run(["sh", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_nothing_serves_an_open_api_unless_told_so() -> None:
    # keys (or RBMREC_ALLOW_OPEN=true) come from .env; neither the compose file nor
    # the image lets the api bind 0.0.0.0 open by itself
    for name in APP_SERVICES:
        assert "RBMREC_ALLOW_OPEN" not in environment_of(compose()["services"][name]), name
    env: dict[str, str] = {}
    for keyword, args in runtime_stage():
        if keyword == "ENV":
            env.update(dict(re.findall(r"(\w+)=(\S+)", args)))
    assert "RBMREC_ALLOW_OPEN" not in env
    assert env["RBMREC_HOST"] == "0.0.0.0"


@pytest.mark.parametrize("script", [SMOKE_SCRIPT, SCALE_SMOKE_SCRIPT], ids=lambda p: p.name)
def test_smoke_scripts_give_compose_its_passwords_and_say_open_on_purpose(script: Path) -> None:
    text = script.read_text()
    assert "POSTGRES_PASSWORD=$(python3 -c 'import secrets" in text
    assert "POSTGRES_APP_PASSWORD=$(python3 -c 'import secrets" in text
    assert "RBMREC_ALLOW_OPEN=true" in text
    assert "export API_BIND=127.0.0.1" in text  # open, but on loopback only


def test_make_env_writes_fresh_secrets_that_compose_and_the_settings_accept(
    tmp_path: Path,
) -> None:
    out = tmp_path / ".env"
    for _ in range(2):
        done = subprocess.run(
            ["python3", str(ROOT / "scripts" / "make_env.py"), "--output", str(out), "--force"],
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
    assert out.stat().st_mode & 0o777 == 0o600
    values = {k: v or "" for k, v in dotenv_values(out).items()}
    secrets = [
        "POSTGRES_PASSWORD",
        "POSTGRES_APP_PASSWORD",
        "RBMREC_ADMIN_API_KEYS",
        "RBMREC_API_KEYS",
        "RBMREC_READ_API_KEYS",
    ]
    for name in secrets:
        assert len(values[name]) >= 32, name
        assert re.fullmatch(r"[A-Za-z0-9_-]+", values[name]), name
    assert len({values[name] for name in secrets}) == len(secrets)
    # compose interpolates with it, and the app accepts the keys
    url = interpolate(environment_of(compose()["services"]["api"])["RBMREC_DATABASE_URL"], values)
    assert values["POSTGRES_APP_PASSWORD"] in url
    settings = Settings(_env_file=out)  # type: ignore[call-arg]
    assert len(settings.admin_api_keys) == 1
    # an existing .env (the volume's passwords) is kept
    again = subprocess.run(
        ["python3", str(ROOT / "scripts" / "make_env.py"), "--output", str(out)],
        capture_output=True,
        text=True,
    )
    assert again.returncode == 1
    assert dotenv_values(out)["POSTGRES_PASSWORD"] == values["POSTGRES_PASSWORD"]
