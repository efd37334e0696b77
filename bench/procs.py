"""The processes a benchmark run drives: Usher, nginx, wrk and PostgreSQL.

Everything listens on 127.0.0.1 on a free port, and every process started
here is stopped by the same ``with`` block that started it.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import math
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from usher.storage.sqlite.engine import WRITER_THREAD


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def require(program: str) -> str:
    found = shutil.which(program) or (f"/usr/sbin/{program}" if program == "nginx" else None)
    if not found or not Path(found).exists():
        raise SystemExit(
            f"The benchmark needs `{program}`; run `scripts/install-system-deps` "
            "(Debian packages wrk and nginx)."
        )
    return found


def _wait_ready(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited early:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code < 500:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within 60 s:\n{log.read_text()[-3000:]}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


@contextlib.contextmanager
def usher_server(database: str, workdir: Path, name: str = "usher") -> Iterator[tuple[str, int]]:
    """``usher serve`` with the benchmark routes on, logging to ``<name>.log``;
    yields (base URL, pid)."""
    port = free_port()
    log = workdir / f"{name}.log"
    env = {**os.environ, "USHER_DATABASE_URL": database, "USHER_BENCH_ROUTES": "1"}
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "usher", "serve", "--port", str(port), "--log-level", "warning"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_ready(url + "/healthz", process, log)
        yield url, process.pid
    finally:
        _stop(process)


PG_USER = "usher"
#: The settings a benchmark cluster runs with. fsync and synchronous_commit
#: stay on: a logged attempt must be on disk before its answer, as with
#: SQLite's synchronous=FULL, or the comparison would flatter PostgreSQL.
PG_SETTINGS = {
    "shared_buffers": "256MB",
    # The copy writes gigabytes of WAL at full size; the default 1 GB would
    # checkpoint every few seconds of it.
    "max_wal_size": "2GB",
    "maintenance_work_mem": "256MB",
    "fsync": "on",
    "synchronous_commit": "on",
    "full_page_writes": "on",
}


def pg_bindir() -> Path | None:
    """The newest installed PostgreSQL's bin folder (Debian keeps it off PATH)."""
    installed = list(Path("/usr/lib/postgresql").glob("[0-9]*/bin/initdb"))
    if installed:
        return max(installed, key=lambda path: float(path.parts[-3])).parent
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path else None


def _has_postgres_user() -> bool:
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return False
    return True


def require_postgres() -> Path:
    bindir = pg_bindir()
    runnable = os.geteuid() != 0 or _has_postgres_user()
    if bindir is None or not (bindir / "pg_ctl").exists() or not runnable:
        raise SystemExit(
            "Measuring PostgreSQL needs its server programs (initdb, pg_ctl) and, under "
            "root, the `postgres` system user, which were not found. Run "
            "`scripts/install-system-deps` (Debian package postgresql), or pass "
            "`--backends sqlite` to measure SQLite alone."
        )
    return bindir


def _as_postgres(command: list[str]) -> list[str]:
    # PostgreSQL refuses to run as root; under root its folder belongs to
    # the `postgres` system user, which runs every server command.
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


def _pg_root(workdir: Path) -> Path:
    """An empty folder for the cluster: ``<workdir>/postgres`` if the
    ``postgres`` user can reach it, else one in the system's temp folder."""
    root = workdir / "postgres"
    # A cluster an interrupted run left behind would hold stale data.
    shutil.rmtree(root, ignore_errors=True)
    reachable = subprocess.run(
        _as_postgres(["test", "-x", str(workdir)]), capture_output=True, timeout=30, check=False
    )
    if reachable.returncode != 0:
        root = Path(tempfile.mkdtemp(prefix="usher-bench-pg-"))
        print(
            f"== {workdir} is closed to the postgres user; the cluster goes in {root}",
            file=sys.stderr,
        )
    else:
        root.mkdir()
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
        os.chown(root, owner.pw_uid, owner.pw_gid)
    return root


@contextlib.contextmanager
def postgres_cluster(workdir: Path) -> Iterator[str]:
    """A throw-away PostgreSQL server with an empty database ``usher``,
    started the way tests/pgcluster.py starts one (initdb + pg_ctl, its
    socket in its own folder) but with :data:`PG_SETTINGS`; yields the
    database URL. The folder is deleted afterwards."""
    bindir = require_postgres()
    root = _pg_root(workdir)
    data, log = root / "data", root / "server.log"
    port = free_port()

    def pg(program: str, *args: str, timeout: float = 300) -> None:
        command = _as_postgres([str(bindir / program), *args])
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            server_log = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            raise RuntimeError(
                f"{' '.join(command)} failed ({done.returncode}):\n"
                f"{done.stdout}{done.stderr}\n{server_log}"
            )

    try:
        # --no-sync: the cluster is thrown away with the run; the server
        # itself runs with fsync on.
        pg("initdb", "--pgdata", str(data), "--username", PG_USER, "--auth", "trust",
           "--encoding", "UTF8", "--no-locale", "--no-sync")  # fmt: skip
        settings = {"listen_addresses": "127.0.0.1", "port": str(port),
                    "unix_socket_directories": str(root), **PG_SETTINGS}  # fmt: skip
        options = " ".join(f"-c {name}={value}" for name, value in settings.items())
        pg("pg_ctl", "start", "--wait", "--pgdata", str(data), "--log", str(log), "-o", options)
        try:
            pg("createdb", "--host", str(root), "--port", str(port), "--username", PG_USER,
               "usher")  # fmt: skip
            yield f"postgresql://{PG_USER}@127.0.0.1:{port}/usher?sslmode=disable"
        finally:
            # The shutdown checkpoint may write all of shared_buffers; pg_ctl
            # gives up after 60 s by default, and the folder is deleted next.
            pg("pg_ctl", "stop", "--wait", "--timeout", "600", "--pgdata", str(data),
               "--mode", "fast", timeout=660)  # fmt: skip
    finally:
        shutil.rmtree(root, ignore_errors=True)


NGINX_SECRET = "bench-secret"  # noqa: S105  # a throwaway secret for a local benchmark
_NGINX_CONF = """
worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/tmp;
    proxy_temp_path {prefix}/tmp;
    fastcgi_temp_path {prefix}/tmp;
    uwsgi_temp_path {prefix}/tmp;
    scgi_temp_path {prefix}/tmp;
    server {{
        listen 127.0.0.1:{port};
        location /s/ {{
            secure_link $arg_md5,$arg_expires;
            secure_link_md5 "$secure_link_expires$uri {secret}";
            if ($secure_link = "") {{ return 403; }}
            if ($secure_link = "0") {{ return 410; }}
            default_type application/json;
            return 200 '{{"allowed":true,"reason":""}}';
        }}
    }}
}}
"""


@contextlib.contextmanager
def nginx_secure_link(workdir: Path) -> Iterator[str]:
    """nginx (one worker, like Usher's one process) answering a ``secure_link``
    check; yields a URL that passes it."""
    nginx = require("nginx")
    prefix = workdir / "nginx"
    (prefix / "tmp").mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(_NGINX_CONF.format(prefix=prefix, port=port, secret=NGINX_SECRET))
    log = prefix / "stdout.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            [nginx, "-p", str(prefix), "-c", str(conf)], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        expires = int(time.time()) + 86_400
        uri = "/s/seed1-live/bench"
        digest = hashlib.md5(f"{expires}{uri} {NGINX_SECRET}".encode()).digest()  # noqa: S324  # what secure_link speaks
        token = base64.urlsafe_b64encode(digest).decode().rstrip("=")
        url = f"http://127.0.0.1:{port}{uri}?md5={token}&expires={expires}"
        _wait_ready(url, process, log)
        if httpx.get(url, timeout=2).status_code != 200:
            raise RuntimeError("nginx secure_link refused the benchmark's own link.")
        yield url
    finally:
        _stop(process)


@dataclass
class WrkResult:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    errors: int
    #: Usher's answers of ``/usher/check`` by HTTP status during the run,
    #: from its ``/metrics`` (empty where not asked for): which non-2xx
    #: wrk counted.
    statuses: dict[str, int] = field(default_factory=dict)
    #: Usher's CPU time per request by thread (µs) and how busy the whole
    #: machine was (:func:`cpu_between`; empty where not asked for).
    cpu: dict[str, float] = field(default_factory=dict)


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not match:
        raise ValueError(f"wrk printed an unexpected latency {text!r}.")
    return float(match.group(1)) * _UNITS[match.group(2)]


#: The wrk script that cycles through a file of request paths.
PATHS_SCRIPT = Path(__file__).with_name("paths.lua")


def wrk(
    url: str, *, connections: int, seconds: float, threads: int = 2, paths: Path | None = None
) -> WrkResult:
    """``wrk`` against ``url``; with ``paths`` (a file of request paths, one a
    line), each request asks for the next path of the file on ``url``'s
    server instead (:data:`PATHS_SCRIPT`)."""
    program = require("wrk")
    threads = min(threads, connections)
    script = [] if paths is None else ["-s", str(PATHS_SCRIPT)]
    arguments = [] if paths is None else ["--", str(paths), str(threads)]
    out = subprocess.run(
        [program, f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s",
         "--latency", "--timeout", "10s", *script, url, *arguments],
        capture_output=True, text=True, timeout=seconds + 60, check=True,
    ).stdout  # fmt: skip
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"\s50%\s+(\S+)", out)
    p99 = re.search(r"\s99%\s+(\S+)", out)
    total = re.search(r"(\d+) requests in", out)
    if not (rate and p50 and p99 and total):
        raise RuntimeError(f"Could not read wrk's output:\n{out}")
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*?read (\d+), write (\d+), timeout (\d+)", out)
    return WrkResult(
        requests_per_s=float(rate.group(1)),
        p50_ms=_ms(p50.group(1)),
        p99_ms=_ms(p99.group(1)),
        requests=int(total.group(1)),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        errors=sum(int(n) for n in errors.groups()) if errors else 0,
    )


@dataclass(frozen=True)
class CpuSample:
    """CPU time used so far by one process and each of its threads, and by
    the machine."""

    #: the process's user + system clock ticks, ended threads' included
    process: int
    #: thread id → (its name, user + system clock ticks)
    threads: dict[int, tuple[str, int]]
    #: the machine's busy and total clock ticks over all cores
    machine_busy: int
    machine_total: int


def _thread_ticks(stat: str) -> tuple[str, int]:
    """A ``/proc/…/stat`` line's name and user + system ticks."""
    # The name is in parentheses and may hold anything, parentheses too.
    head, _, rest = stat.rpartition(")")
    fields = rest.split()
    # rest starts at field 3 (state); utime and stime are fields 14 and 15.
    return head.partition("(")[2], int(fields[11]) + int(fields[12])


def cpu_sample(pid: int) -> CpuSample:
    threads: dict[int, tuple[str, int]] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            threads[int(task.name)] = _thread_ticks((task / "stat").read_text())
    _, process = _thread_ticks(Path(f"/proc/{pid}/stat").read_text())
    # cpu  user nice system idle iowait irq softirq steal (guest time is in user)
    ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    idle = ticks[3] + ticks[4]
    return CpuSample(process, threads, sum(ticks) - idle, sum(ticks))


def thread_names(url: str) -> dict[int, str]:
    """Usher's threads by kernel thread id (its ``/bench/threads``): the
    kernel calls them all "python"."""
    named: dict[str, str] = httpx.get(url + "/bench/threads", timeout=30).json()
    return {int(tid): name for tid, name in named.items()}


def cpu_between(
    pid: int, before: CpuSample, after: CpuSample, requests: int, names: dict[int, str]
) -> dict[str, float]:
    """Usher's CPU per request between two samples, in µs: its event loop
    (the main thread), SQLite's writer thread (by ``names``,
    :func:`thread_names`) and the rest of the process, threads that ended
    meanwhile included; and ``machine_busy``, the share of all the
    machine's cores busy (wrk and everything else included), which says
    whether the run was CPU-bound. NaN per request for a run of none."""
    per_request_us = 1e6 / os.sysconf("SC_CLK_TCK") / requests if requests else math.nan
    loop = writer = 0
    for tid, (name, ticks) in after.threads.items():
        # Clamped: a thread id the kernel reused since ``before`` starts over.
        spent = max(0, ticks - before.threads.get(tid, (name, 0))[1])
        if tid == pid:
            loop += spent
        elif names.get(tid) == WRITER_THREAD:
            writer += spent
    other = max(0, after.process - before.process - loop - writer)
    total = after.machine_total - before.machine_total
    busy = (after.machine_busy - before.machine_busy) / total if total else 0.0
    return {
        "loop_us": loop * per_request_us,
        "writer_us": writer * per_request_us,
        "other_us": other * per_request_us,
        "machine_busy": busy,
    }


def _metrics(url: str) -> str:
    """The text of Usher's ``/metrics``."""
    return httpx.get(url + "/metrics", timeout=30).text


def pending_writes(url: str) -> float:
    """Usher's ``usher_storage_pending_writes`` gauge."""
    for line in _metrics(url).splitlines():
        if line.startswith("usher_storage_pending_writes "):
            return float(line.split()[1])
    raise RuntimeError(f"{url}/metrics has no usher_storage_pending_writes gauge.")


#: More than the writer's longest batch (0.1 s), for the one in flight.
_LAST_BATCH_S = 0.2


def wait_for_writes(url: str, timeout_s: float = 10.0) -> None:
    """Wait until Usher has committed the writes a run queued (its queue
    gauge reads 0, then one batch more), at most ``timeout_s``: a run's CPU
    and answers are counted in its own window, not in the next run's."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and pending_writes(url) > 0:
        time.sleep(0.05)
    time.sleep(_LAST_BATCH_S)


_BUCKET = re.compile(
    r'^usher_http_request_duration_seconds_bucket\{le="([^"]+)",route="([^"]+)"\} (\S+)$', re.M
)


_CHECK_ANSWERS = re.compile(
    r'^usher_http_requests_total\{route="/usher/check",status="(\d+)"\} (\S+)$', re.M
)


def check_answers(url: str) -> dict[str, int]:
    """Usher's ``/usher/check`` answers so far by HTTP status, from ``/metrics``."""
    return {status: int(float(n)) for status, n in _CHECK_ANSWERS.findall(_metrics(url))}


def answers_between(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """The answers by status given between two :func:`check_answers` looks."""
    grown = {status: n - before.get(status, 0) for status, n in after.items()}
    return {status: n for status, n in sorted(grown.items()) if n}


def latency_buckets(url: str, route: str) -> list[tuple[float, float]]:
    """The server's own latency histogram of ``route`` from ``/metrics``:
    (upper bound in seconds, cumulative count) pairs."""
    buckets = _BUCKET.findall(_metrics(url))
    return [(float(le), float(n)) for le, name, n in buckets if name == route]


def bucket_quantile(
    before: list[tuple[float, float]], after: list[tuple[float, float]], q: float
) -> float:
    """The upper bound (ms) of the histogram bucket holding the ``q``
    quantile of the requests answered between the two snapshots."""
    counted = dict(before)
    growth = [(le, n - counted.get(le, 0.0)) for le, n in after]
    total = growth[-1][1] if growth else 0.0
    for le, n in growth:
        if total and n >= q * total:
            return le * 1000
    return float("nan")


class RssSampler:
    """The largest resident set size of one process, read from /proc while
    a phase runs."""

    def __init__(self, pid: int, every_s: float = 0.1) -> None:
        self.pid = pid
        self.every_s = every_s
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError):
                self.peak_kib = max(self.peak_kib, self.rss_kib())
            self._stop.wait(self.every_s)

    def __enter__(self) -> RssSampler:
        self.peak_kib = self.rss_kib()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
