"""Running Usher for real: ``--version``, the shipped systemd unit and its
settings file (docs/deploy/), and the wheel installed into a fresh venv."""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
import tomllib
import zipfile
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import httpx
import pytest

from tests.helpers import free_port
from tests.live.conftest import USHER, LiveServer
from tests.live.streaming import main_config, need, private_prefix, render, run_nginx
from usher.config import Settings
from usher.storage import migrations

# The wheel tests share a module-scoped build and a wheelhouse in
# .pytest_cache: one worker builds and fills it (see conftest.py, xdist).
pytestmark = pytest.mark.xdist_group("deploy")

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "docs" / "deploy"
UNIT = DEPLOY / "usher.service"
ENV_FILE = DEPLOY / "usher.env"
#: Where the unit expects the ``usher`` command (docs/deploy.md installs it there).
INSTALLED_AT = "/opt/usher/bin/usher"
#: The highest ``systemd-analyze security`` exposure the unit may have (0 to
#: 10; up to 2 is systemd's "OK" band).
MAX_EXPOSURE = 2.0
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
#: Bounds every step of the wheel test (pip may fetch from the index once).
PIP_TIMEOUT_S = 300


def test_python_m_usher_prints_the_installed_version() -> None:
    result = subprocess.run(
        [*USHER, "--version"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"usher {importlib.metadata.version('usher')}\n"


# -- the systemd unit ---------------------------------------------------------------


def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        pytest.fail("systemd-analyze is not installed; run scripts/install-system-deps (as root).")
    return found


def installable(unit_text: str, folder: Path) -> Path:
    """The unit written to ``folder`` with its ``usher`` command pointed at a
    stand-in: verify refuses an ExecStart= program that does not exist."""
    assert INSTALLED_AT in unit_text, f"the unit no longer runs {INSTALLED_AT}; update this test"
    stand_in = folder / "usher"
    stand_in.write_text("#!/bin/sh\n")
    stand_in.chmod(0o755)
    unit = folder / "usher.service"
    unit.write_text(unit_text.replace(INSTALLED_AT, str(stand_in)))
    return unit


def verify(unit_text: str, folder: Path) -> str:
    """What ``systemd-analyze verify`` says about a unit file: empty when it
    is clean. It exits 0 after an unknown directive or a bad value (it warns
    and ignores the line), so every line it prints counts as a problem."""
    result = subprocess.run(
        [systemd_analyze(), "verify", "--man=no", str(installable(unit_text, folder))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    said = (result.stdout + result.stderr).strip()
    return said or ("" if result.returncode == 0 else f"exit status {result.returncode}")


@pytest.mark.slow
def test_the_shipped_unit_verifies_cleanly(tmp_path: Path) -> None:
    assert verify(UNIT.read_text(), tmp_path) == ""


@pytest.mark.slow
@pytest.mark.parametrize(
    ("old", "new", "complaint"),
    [
        ("ProtectSystem=strict", "ProtectSytem=strict", "Unknown key 'ProtectSytem'"),
        ("ProtectSystem=strict", "ProtectSystem=strictly", "strictly"),
        ("Restart=on-failure", "Restart=sometimes", "sometimes"),
    ],
)
def test_verify_reports_a_broken_unit(tmp_path: Path, old: str, new: str, complaint: str) -> None:
    text = UNIT.read_text()
    assert old in text
    assert complaint in verify(text.replace(old, new), tmp_path)


def unit_settings() -> dict[str, list[str]]:
    """Every ``Key=value`` line of the unit (comments dropped)."""
    found: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, value = line.split("=", 1)
            found.setdefault(key.strip(), []).append(value.strip())
    return found


@pytest.mark.slow
def test_the_unit_is_hardened(tmp_path: Path) -> None:
    settings = unit_settings()
    for key, value in {
        "DynamicUser": "yes",
        "StateDirectory": "usher",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "NoNewPrivileges": "yes",
        "Restart": "on-failure",
        "EnvironmentFile": "-/etc/usher/usher.env",
    }.items():
        assert settings.get(key) == [value], key
    assert "USHER_DATABASE_URL=sqlite:////var/lib/usher/usher.db" in settings["Environment"]
    # systemd's own score of the sandbox, on its 0-100 scale.
    result = subprocess.run(
        [
            systemd_analyze(),
            "security",
            "--offline=yes",
            f"--threshold={int(MAX_EXPOSURE * 10)}",
            str(installable(UNIT.read_text(), tmp_path)),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def env_file_lines() -> dict[str, str]:
    """The settings usher.env sets or shows commented out, first value of each."""
    found: dict[str, str] = {}
    for line in ENV_FILE.read_text().splitlines():
        match = re.fullmatch(r"#?(USHER_[A-Z_]+)=(.*)", line)
        if match:
            found.setdefault(match.group(1), match.group(2))
    return found


def test_the_env_file_shows_the_real_defaults() -> None:
    shown = env_file_lines()
    # Read by the unit's ExecStart= line, not by Usher.
    unit_only = {"USHER_HOST": "127.0.0.1", "USHER_PORT": "8080"}
    for name, value in unit_only.items():
        assert shown.pop(name) == value
    assert "USHER_HOST=127.0.0.1 USHER_PORT=8080" in unit_settings()["Environment"]
    # The one value the file sets (nginx on this machine is the panel's proxy).
    proxies = shown.pop("USHER_PANEL_TRUSTED_PROXIES")
    assert proxies == "127.0.0.1,::1"
    # Every other line shows its default: reading the file changes nothing,
    # and a misspelt name (which Usher would ignore) would differ here.
    assert Settings.from_env(shown) == Settings.from_env(
        {"USHER_DATABASE_URL": shown["USHER_DATABASE_URL"]}
    )
    assert shown["USHER_DATABASE_URL"] == "sqlite:////var/lib/usher/usher.db"


# -- the wheel ---------------------------------------------------------------------


def clean_env() -> dict[str, str]:
    """This environment without what would make the fresh venv import the
    source tree or the test venv's packages."""
    return {
        name: value
        for name, value in os.environ.items()
        if name not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"}
    }


def pip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pip", *args],
        capture_output=True,
        text=True,
        timeout=PIP_TIMEOUT_S,
        env=clean_env(),
        check=False,
    )


def source_tree(folder: Path) -> Path:
    """What a clone holds for the build, copied so the build's byproducts
    (build/, *.egg-info) stay out of the repository."""
    copy = folder / "usher-src"
    copy.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, copy / name)
    shutil.copytree(
        ROOT / "src", copy / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    return copy


@pytest.fixture(scope="module")
def wheelhouse(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Wheels of the build requirements and dependencies, kept between runs
    (in pytest's cache, or ``$USHER_WHEELHOUSE``) so that after the first run
    the build and install need no index."""
    configured = os.environ.get("USHER_WHEELHOUSE")
    if configured:
        return Path(configured)
    cache = getattr(request.config, "cache", None)
    if cache is not None:
        found: Path = cache.mkdir("usher-wheelhouse")
        return found
    return tmp_path_factory.mktemp("wheelhouse")


def offline_or_fill(wheelhouse: Path, source: Path, *args: str) -> None:
    """Run ``pip *args`` from the wheelhouse alone; when it lacks something,
    download what the build and the install need into it once, then again."""
    offline = ("--no-index", "--find-links", str(wheelhouse))
    if pip(*args, *offline).returncode == 0:
        return
    fill = pip(
        "download",
        "--dest",
        str(wheelhouse),
        "-c",
        str(ROOT / "constraints.txt"),
        *PYPROJECT["build-system"]["requires"],
        str(source),
    )
    assert fill.returncode == 0, f"pip could not fetch the dependencies:\n{fill.stderr}"
    again = pip(*args, *offline)
    assert again.returncode == 0, f"pip {' '.join(args)} failed:\n{again.stderr}"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory, wheelhouse: Path) -> Path:
    folder = tmp_path_factory.mktemp("wheel")
    source = source_tree(folder)
    dist = folder / "dist"
    offline_or_fill(wheelhouse, source, "wheel", "--no-deps", "--wheel-dir", str(dist), str(source))
    (built,) = dist.glob("usher-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory, wheelhouse: Path, wheel: Path) -> Path:
    """A fresh venv holding only the wheel and its pinned dependencies."""
    folder = tmp_path_factory.mktemp("venv") / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(folder)],
        check=True,
        timeout=60,
        env=clean_env(),
    )
    python = str(folder / "bin" / "python")
    offline_or_fill(
        wheelhouse,
        wheel,
        "--python",
        python,
        "install",
        "-c",
        str(ROOT / "constraints.txt"),
        str(wheel),
    )
    return folder


def package_files() -> set[str]:
    """The files of the usher package in the source tree, as wheel paths."""
    package = ROOT / "src"
    return {
        path.relative_to(package).as_posix()
        for path in (package / "usher").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }


@pytest.mark.slow
@pytest.mark.timeout(PIP_TIMEOUT_S * 3)
def test_the_wheel_holds_the_whole_package(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = {name for name in archive.namelist() if ".dist-info/" not in name}
        metadata = archive.read(f"usher-{PYPROJECT['project']['version']}.dist-info/METADATA")
    # Modules, migrations, panel templates and static assets alike.
    assert names == package_files()
    assert {"usher/storage/migrations/sqlite/0001_initial.sql", "usher/py.typed"} <= names
    assert any(name.startswith("usher/web/panel/static/") for name in names)
    # Ranges in the wheel, exact pins only in constraints.txt.
    requirements = [
        line.removeprefix("Requires-Dist:").split(";")[0].strip()
        for line in metadata.decode().splitlines()
        if line.startswith("Requires-Dist:")
    ]
    assert requirements and not [spec for spec in requirements if "==" in spec], requirements


@pytest.mark.slow
@pytest.mark.timeout(PIP_TIMEOUT_S * 3)
def test_the_installed_wheel_serves(venv: Path, tmp_path: Path) -> None:
    bin_dir = venv / "bin"
    env = clean_env()
    where = subprocess.run(
        [str(bin_dir / "python"), "-c", "import usher; print(usher.__file__)"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
        check=True,
    )
    assert Path(where.stdout.strip()).is_relative_to(venv), where.stdout
    version = subprocess.run(
        [str(bin_dir / "usher"), "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
        check=True,
    )
    assert version.stdout == f"usher {PYPROJECT['project']['version']}\n"

    database = tmp_path / "usher.db"
    port = free_port()
    log = tmp_path / "serve.log"
    with serving(bin_dir / "usher", database, port, log, tmp_path, env) as url:
        assert httpx.get(f"{url}/healthz", timeout=5).json() == {"status": "ok"}
        for asset in ("panel.css", "panel.js"):
            served = httpx.get(f"{url}/panel/static/{asset}", timeout=5)
            assert served.status_code == 200
            assert served.content == (ROOT / "src/usher/web/panel/static" / asset).read_bytes()
        sign_in = httpx.get(f"{url}/panel/", timeout=5, follow_redirects=True)
        assert sign_in.status_code == 200 and "<form" in sign_in.text  # templates render
    assert "Usher demo account" in log.read_text()
    with closing(sqlite3.connect(database)) as db:
        (stored,) = db.execute("SELECT version FROM schema_version").fetchone()
        (demo,) = db.execute("SELECT count(*) FROM accounts WHERE username = 'demo'").fetchone()
    assert stored == len(migrations.load("sqlite"))
    assert demo == 1


@contextmanager
def serving(
    usher: Path, database: Path, port: int, log: Path, cwd: Path, env: dict[str, str]
) -> Iterator[str]:
    """``usher serve --demo`` from the venv, until the block ends."""
    url = f"http://127.0.0.1:{port}"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                str(usher),
                "serve",
                "--demo",
                "--port",
                str(port),
                "--database",
                f"sqlite:///{database}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, f"usher serve exited:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"usher serve never answered:\n{log.read_text()}"
            try:
                httpx.get(f"{url}/healthz", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


# -- TLS in front (docs/deploy/nginx-tls.conf) -------------------------------------

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@pytest.fixture
def server_env() -> dict[str, str]:
    """The settings docs/deploy/usher.env sets for nginx on the same machine."""
    return {"USHER_PANEL_TRUSTED_PROXIES": env_file_lines()["USHER_PANEL_TRUSTED_PROXIES"]}


def self_signed(folder: Path) -> tuple[Path, Path]:
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [need("openssl"), "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
        capture_output=True, timeout=60, check=True,
    )  # fmt: skip
    return cert, key


@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_panel_over_https_behind_nginx(live_server: LiveServer) -> None:
    http_port, https_port = free_port(), free_port()
    with private_prefix() as prefix:
        cert, key = self_signed(prefix)
        site = render(
            "deploy/nginx-tls.conf",
            {
                "listen 80;": f"listen 127.0.0.1:{http_port};",
                "listen 443 ssl;": f"listen 127.0.0.1:{https_port} ssl;",
                "server 127.0.0.1:8080;": f"server {live_server.url.removeprefix('http://')};",
                "/etc/letsencrypt/live/usher.example.net/fullchain.pem": str(cert),
                "/etc/letsencrypt/live/usher.example.net/privkey.pem": str(key),
            },
        )
        with run_nginx(prefix, main_config(prefix, http=site), [http_port, https_port]):
            https = f"https://127.0.0.1:{https_port}"
            plain = httpx.get(f"http://127.0.0.1:{http_port}/panel/", timeout=10)
            assert plain.status_code == 301
            assert plain.headers["location"].startswith("https://")
            with httpx.Client(base_url=https, verify=False, timeout=10) as browser:
                form = browser.get("/panel/sign-in")
                assert "secure" in form.headers["set-cookie"].lower()
                found = _CSRF.search(form.text)
                assert found is not None, form.text
                signed_in = browser.post(
                    "/panel/sign-in",
                    data={
                        "csrf": found.group(1),
                        "cdn": str(live_server.cdn),
                        "method": "api",
                        "api_key": live_server.api_key,
                        "secret": live_server.secret,
                    },
                )
                assert signed_in.status_code == 303, signed_in.text
                session = signed_in.headers.get_list("set-cookie")
                assert any("usher" in c and "; secure" in c.lower() for c in session), session
                assert browser.get("/panel/").status_code == 200
                # The signed API answers through the proxy; callbacks and
                # metrics are not published.
                api = browser.post("/api", data={"json": "{}"})
                assert api.headers["content-type"].startswith("application/json")
                for hidden in ("/usher/check?key=k&pass=p&app=demo-live", "/metrics"):
                    assert browser.get(hidden).status_code == 404, hidden
        # Without the proxy's word, Usher does not claim TLS.
        direct = httpx.get(f"{live_server.url}/panel/sign-in", timeout=10)
        assert "secure" not in direct.headers["set-cookie"].lower()
