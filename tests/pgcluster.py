"""A throw-away PostgreSQL cluster for the test session.

``initdb`` + ``pg_ctl`` into a temporary folder, listening on 127.0.0.1 on a
free port with its unix socket in the same folder, so nothing of the
machine's own PostgreSQL (if any) is touched. PostgreSQL refuses to run as
root, so under root (as in CI) every server command runs as the ``postgres``
system user, which owns the folder.

Each test gets a database of its own, cloned from a template that was
migrated once per session (``CREATE DATABASE … TEMPLATE`` copies files
instead of running every migration again). A clone costs 50-150 ms here, so
a test's database is wiped (``TRUNCATE … RESTART IDENTITY``, ~15 ms) and
handed to the next test instead of being dropped; a test that leaves
anything but rows behind asks for a throw-away database instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import psycopg

from tests.helpers import free_port
from usher.storage.postgres import PostgresStorage

TEMPLATE = "usher_template"
SUPERUSER = "usher"
INSTALL_HINT = (
    "PostgreSQL server binaries (initdb, pg_ctl) were not found. Install them with "
    "scripts/install-system-deps (Debian package postgresql), or point USHER_TEST_PG_BIN "
    "at the folder holding initdb."
)


def _bindir() -> Path:
    """The newest installed PostgreSQL's bin folder (Debian keeps it off PATH)."""
    override = os.environ.get("USHER_TEST_PG_BIN")
    if override:
        return Path(override)
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parent.parent.name),
    )
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    raise RuntimeError(INSTALL_HINT)


class PostgresCluster:
    """One running PostgreSQL server in a temporary folder."""

    def __init__(self) -> None:
        self.bindir = _bindir()
        self.root = Path(tempfile.mkdtemp(prefix="usher-pg-"))
        self.data = self.root / "data"
        self.socket_dir = self.root / "sock"
        self.socket_dir.mkdir()
        self.log = self.root / "server.log"
        self.port = free_port()
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            # PostgreSQL will not run as root: hand the folder to `postgres`.
            owner = pwd.getpwnam("postgres")
            for path in (self.root, self.socket_dir):
                os.chown(path, owner.pw_uid, owner.pw_gid)
            self._as_user = ["runuser", "-u", "postgres", "--"]
        self._names = itertools.count()
        self._free: list[str] = []
        self.schema_version = 0

    def _run(self, program: str, *args: str, timeout: float = 60) -> None:
        command = [*self._as_user, str(self.bindir / program), *args]
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, check=False
        )
        if result.returncode != 0:
            log = self.log.read_text(errors="replace") if self.log.exists() else ""
            raise RuntimeError(
                f"{' '.join(command)} failed ({result.returncode}):\n"
                f"{result.stdout}{result.stderr}\n{log}"
            )

    def init(self) -> None:
        self._run(
            "initdb",
            "--pgdata", str(self.data),
            "--username", SUPERUSER,
            "--auth", "trust",
            "--encoding", "UTF8",
            "--no-locale",
            "--no-sync",
        )  # fmt: skip

    def start(self) -> None:
        # fsync off: a test cluster trades crash safety for speed; a restart
        # test stops it cleanly, which loses nothing.
        options = " ".join(
            [
                "-c listen_addresses=127.0.0.1",
                f"-c port={self.port}",
                f"-c unix_socket_directories={self.socket_dir}",
                "-c max_connections=300",
                "-c fsync=off",
                "-c full_page_writes=off",
                "-c synchronous_commit=on",
            ]
        )
        self._run(
            "pg_ctl", "start", "--wait", "--pgdata", str(self.data),
            "--log", str(self.log), "-o", options,
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "stop", "--wait", "--pgdata", str(self.data), "--mode", mode)

    def destroy(self) -> None:
        try:
            self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def url(self, dbname: str, **query: str) -> str:
        extra = "".join(f"&{name}={value}" for name, value in query.items())
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{dbname}?sslmode=disable{extra}"

    def admin(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(self.url("postgres"), autocommit=True)

    def prepare_template(self) -> None:
        """Create ``usher_template`` and migrate it with Usher's own code."""
        with self.admin() as conn:
            conn.execute(f"CREATE DATABASE {TEMPLATE}")

        async def migrate() -> None:
            storage = PostgresStorage(self.url(TEMPLATE, pool_min_size="0"))
            await storage.open()
            await storage.close()

        asyncio.run(migrate())
        with psycopg.connect(self.url(TEMPLATE)) as conn:
            row = conn.execute("SELECT version FROM schema_version").fetchone()
        assert row is not None and isinstance(row[0], int)
        self.schema_version = row[0]

    def create_database(self, *, empty: bool = False) -> str:
        """A fresh database: migrated (from the template) or ``empty``."""
        name = f"t{os.getpid()}_{next(self._names)}"
        template = "template0" if empty else TEMPLATE
        with self.admin() as conn:
            # FILE_COPY copies the template's files in ~10 ms; the default
            # (WAL_LOG, PostgreSQL 15+) writes them through the WAL, 7x slower.
            strategy = " STRATEGY FILE_COPY" if conn.info.server_version >= 150000 else ""
            conn.execute(f"CREATE DATABASE {name} TEMPLATE {template}{strategy}")
        return name

    def drop_database(self, name: str) -> None:
        with self.admin() as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def take_database(self) -> str:
        """A migrated database holding no rows: a recycled one, or a new clone."""
        return self._free.pop() if self._free else self.create_database()

    def give_back(self, name: str) -> None:
        """Wipe ``name`` for the next test, or drop it if it cannot be wiped."""
        try:
            with self.admin() as admin:
                # Sessions a test left behind (a killed server's) would hold
                # locks that TRUNCATE waits for.
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = %s AND pid <> pg_backend_pid()",
                    (name,),
                )
            with psycopg.connect(self.url(name), autocommit=True) as conn:
                # A test that changed the schema (its version, say) leaves a
                # database no other test may get: drop it instead.
                if conn.execute("SELECT version FROM schema_version").fetchall() != [
                    (self.schema_version,)
                ]:
                    raise psycopg.DataError("the schema was changed")
                tables = [
                    str(row[0])
                    for row in conn.execute(
                        "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
                        " AND tablename <> 'schema_version'"
                    )
                ]
                conn.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY")
        except psycopg.Error:
            self.drop_database(name)
        else:
            self._free.append(name)


def start_cluster() -> PostgresCluster:
    cluster = PostgresCluster()
    try:
        cluster.init()
    except BaseException:
        shutil.rmtree(cluster.root, ignore_errors=True)
        raise
    try:
        cluster.start()
        cluster.prepare_template()
    except BaseException:
        # destroy() stops a server that did start; one that did not start
        # makes pg_ctl stop fail, which must not hide the first error.
        with contextlib.suppress(RuntimeError):
            cluster.destroy()
        shutil.rmtree(cluster.root, ignore_errors=True)
        raise
    return cluster
