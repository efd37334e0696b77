"""Real streaming servers for the end-to-end tests: nginx and ffmpeg.

nginx runs from a private prefix on 127.0.0.1 high ports, configured with the
very files shipped in ``docs/nginx/`` (only ports and paths are replaced, and
every replaced text must be found, so a changed doc fails here instead of
being silently left untested). ``scripts/install-system-deps`` (run by
``make test``) installs nginx, libnginx-mod-rtmp and ffmpeg.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"
RTMP_MODULE_PATHS = (
    Path("/usr/lib/nginx/modules/ngx_rtmp_module.so"),
    Path("/usr/lib64/nginx/modules/ngx_rtmp_module.so"),
)
#: Bounds every wait in these tests, so a broken server fails a test instead
#: of hanging the suite.
STARTUP_S = 15.0


def need(program: str, *extra_paths: str) -> str:
    """The path of a program the e2e tests drive, or a failure saying how to
    install it (not a skip: `make test` installs it, so absence is a bug)."""
    found = shutil.which(program) or next(
        (path for path in extra_paths if os.access(path, os.X_OK)), None
    )
    if found is None:
        pytest.fail(f"{program} is not installed; run scripts/install-system-deps (as root).")
    return found


def rtmp_module() -> Path:
    for path in RTMP_MODULE_PATHS:
        if path.exists():
            return path
    pytest.fail("The nginx RTMP module is missing; run scripts/install-system-deps (as root).")


def render(doc: str, replacements: dict[str, str]) -> str:
    """A shipped config with ports and paths replaced; each text to replace
    must occur in the doc."""
    text = (DOCS / doc).read_text()
    for old, new in replacements.items():
        assert old in text, f"docs/{doc} no longer contains {old!r}; update the e2e test with it"
        text = text.replace(old, new)
    return text


def wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the process exited early:\n{log.read_text(errors='replace')}")
        with socket.socket() as sock:
            sock.settimeout(0.2)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}:\n{log.read_text(errors='replace')}")


@dataclass
class Nginx:
    prefix: Path
    process: subprocess.Popen[bytes]
    log: Path

    def error_log(self) -> str:
        path = self.prefix / "logs" / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""


@contextmanager
def private_prefix() -> Iterator[Path]:
    """A directory nginx's workers can read whoever they run as.

    pytest's tmp_path sits under a 0700 directory of the current user; when
    the tests run as root, nginx's workers run as nobody and could not reach
    it. This prefix is world-readable (and removed afterwards).
    """
    prefix = Path(tempfile.mkdtemp(prefix="usher-nginx-"))
    try:
        prefix.chmod(0o755)
        for sub in ("logs", "temp", "cache", "media", "vod"):
            (prefix / sub).mkdir(mode=0o755)
        # Written by the workers (live HLS and DASH, and the sockets of
        # rtmp_auto_push), whoever they run as.
        for sub in ("live", "live/hls", "live/dash", "sockets"):
            (prefix / sub).mkdir()
            (prefix / sub).chmod(0o777)
        yield prefix
    finally:
        shutil.rmtree(prefix, ignore_errors=True)


def main_config(prefix: Path, *, rtmp: str = "", http: str = "", workers: int = 1) -> str:
    """nginx.conf around the shipped snippets: what a packaged nginx.conf
    provides (module, pid, logs, temp paths), pointed into the prefix. With
    more than one worker, RTMP streams are copied between them
    (``rtmp_auto_push``), as docs/nginx/rtmp.conf describes."""
    auto_push = f"rtmp_auto_push on;\nrtmp_socket_dir {prefix}/sockets;" if workers > 1 else ""
    temp = prefix / "temp"
    # As root, nginx would run workers as "nobody" anyway; say so, so the
    # files above are made readable for them. Unprivileged, nginx refuses the
    # directive, and everything runs as the current user.
    user = "user nobody nogroup;" if os.geteuid() == 0 else ""
    return f"""
load_module {rtmp_module()};
{user}
daemon off;
worker_processes {workers};
{auto_push}
pid {prefix}/logs/nginx.pid;
error_log {prefix}/logs/error.log info;
events {{ worker_connections 256; }}
{rtmp}
http {{
    access_log {prefix}/logs/access.log;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    {http}
}}
"""


@contextmanager
def run_nginx(prefix: Path, config: str, ports: list[int]) -> Iterator[Nginx]:
    binary = need("nginx", "/usr/sbin/nginx")
    conf = prefix / "nginx.conf"
    conf.write_text(config)
    log = prefix / "logs" / "stderr.log"
    check = subprocess.run(
        [binary, "-t", "-p", str(prefix), "-c", str(conf)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert check.returncode == 0, f"nginx refused the config:\n{check.stderr}\n{config}"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [binary, "-p", str(prefix), "-c", str(conf)], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        for port in ports:
            wait_for_port(port, process, log)
        yield Nginx(prefix, process, log)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGQUIT)  # graceful: workers finish, then exit
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


# -- ffmpeg ------------------------------------------------------------------------

TEST_VIDEO = ("-f", "lavfi", "-i", "testsrc=size=320x240:rate=25")
H264 = ("-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-pix_fmt", "yuv420p")


def ffmpeg(*args: str) -> list[str]:
    return [need("ffmpeg"), "-hide_banner", "-nostdin", "-loglevel", "error", *args]


def start_publisher(url: str, progress: Path) -> subprocess.Popen[bytes]:
    """A live test stream, published in real time until stopped."""
    return subprocess.Popen(
        ffmpeg(
            "-re",
            *TEST_VIDEO,
            *H264,
            "-g",
            "25",  # a keyframe a second, so a new viewer gets a picture at once
            "-f",
            "flv",
            "-progress",
            str(progress),
            url,
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


@dataclass
class Published:
    returncode: int
    frames: int
    stderr: str
    seconds: float


def publish(url: str, progress: Path, *, seconds: float = 1.0, timeout: float = 20.0) -> Published:
    """A publisher that sends ``seconds`` of the test stream and stops; one
    that nginx refuses exits at once, having sent no frame."""
    output = ("-progress", str(progress), "-f", "flv", url)
    started = time.monotonic()
    result = subprocess.run(
        ffmpeg("-re", *TEST_VIDEO, "-t", str(seconds), *H264, *output),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    sent = frames_in(progress.read_text(errors="replace")) if progress.exists() else 0
    return Published(result.returncode, sent, result.stderr, time.monotonic() - started)


def wait_until_publishing(publisher: subprocess.Popen[bytes], progress: Path) -> None:
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        if publisher.poll() is not None:
            stderr = publisher.stderr.read().decode(errors="replace") if publisher.stderr else ""
            raise RuntimeError(f"the publisher exited: {stderr}")
        if progress.exists() and frames_in(progress.read_text(errors="replace")) >= 10:
            return
        time.sleep(0.1)
    raise RuntimeError("the publisher sent no frames")


def frames_in(progress: str) -> int:
    """The last ``frame=N`` of ffmpeg's -progress output."""
    frames = [line.split("=", 1)[1] for line in progress.splitlines() if line.startswith("frame=")]
    return int(frames[-1]) if frames and frames[-1].strip().isdigit() else 0


@dataclass
class Played:
    returncode: int
    frames: int
    stderr: str
    seconds: float


def play(url: str, *, seconds: float = 2.0, timeout: float = 20.0, idle_s: float = 5.0) -> Played:
    """A player: read ``url`` for ``seconds`` of media and throw it away."""
    started = time.monotonic()
    result = subprocess.run(
        ffmpeg(
            "-progress",
            "pipe:1",
            "-rw_timeout",
            str(int(idle_s * 1_000_000)),
            # Probe briefly: the test stream's codecs are known at once, and
            # ffmpeg's default probing would add seconds to every play.
            "-analyzeduration",
            "1000000",
            "-probesize",
            "100000",
            "-i",
            url,
            "-t",
            str(seconds),
            "-f",
            "null",
            "-",
        ),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return Played(
        result.returncode,
        frames_in(result.stdout),
        result.stderr,
        time.monotonic() - started,
    )


# -- another client address ------------------------------------------------------------


class Forwarder:
    """A TCP forwarder on 127.0.0.1 whose upstream connections come from
    ``source`` (another loopback address: Linux routes all of 127.0.0.0/8 to
    lo), so the server behind it sees a second client address."""

    #: Bounds: connections accepted, and each blocking wait (so every thread
    #: notices the stop within it).
    MAX_CONNECTIONS = 50
    POLL_S = 0.2

    def __init__(self, upstream_port: int, source: str = "127.0.0.2") -> None:
        self.upstream_port = upstream_port
        self.source = source
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(self.POLL_S)
        self.port: int = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._pumps: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    def __enter__(self) -> Forwarder:
        self._acceptor.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._acceptor.join(timeout=5)
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                _shut(sock)  # wakes a pump blocked in sendall
        for thread in self._pumps:
            thread.join(timeout=5)
        for sock in self._sockets:
            sock.close()
        alive = [t.name for t in (self._acceptor, *self._pumps) if t.is_alive()]
        assert not alive, f"forwarder threads did not stop: {alive}"

    def _pump_between(self, a: socket.socket, b: socket.socket) -> None:
        with self._lock:
            self._sockets += [a, b]
        for source, target in ((a, b), (b, a)):
            thread = threading.Thread(target=self._pump, args=(source, target), daemon=True)
            self._pumps.append(thread)  # only the acceptor appends; __exit__ joins it first
            thread.start()

    def _accept(self) -> None:
        accepted = 0
        while not self._stop.is_set() and accepted < self.MAX_CONNECTIONS:
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # closed by __exit__
            accepted += 1
            upstream = socket.socket()
            try:
                upstream.bind((self.source, 0))
                upstream.connect(("127.0.0.1", self.upstream_port))
            except OSError:
                client.close()
                upstream.close()
                continue
            self._pump_between(client, upstream)

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                readable, _, _ = select.select([source], [], [], self.POLL_S)
                if not readable:
                    continue
                data = source.recv(65536)
                if not data:
                    break
                target.sendall(data)
            except (OSError, ValueError):  # ValueError: select on a closed socket
                break
        # Either side's end ends both directions: the other pump sees it.
        _shut(source)
        _shut(target)


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already shut, or never connected
        sock.shutdown(socket.SHUT_RDWR)
