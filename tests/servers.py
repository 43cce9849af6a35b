"""Real servers for the slow tests (PostgreSQL, a two-node Ray cluster), always stopped by process id.

A test starts its processes through :class:`Servers` (the ``servers`` fixture of conftest.py); at the
end, pass or fail, each gets its own stop signal, then whatever is left of it and of everything it
started is killed. Those processes are found by parentage and by a tag in their environment:
PostgreSQL's backends overwrite their environment with their process titles, and Ray's workers
start sessions of their own and outlive a raylet killed under them, so neither a process group nor
the process tree alone finds them all. ``ray stop`` is never used: it stops every Ray on the machine.
"""
from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

TAG = "ZSCRGAN_TEST_SERVERS"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Servers:
    """Processes one test starts, in a scratch folder that any user may enter (tmp_path is root's alone)."""

    def __init__(self):
        self.tag = secrets.token_hex(8)
        self.folder = Path(tempfile.mkdtemp(prefix="zscrgan-srv-"))  # short: a unix socket path has 107 bytes
        self.folder.chmod(0o755)
        self.started: list[tuple[subprocess.Popen, int]] = []

    def start(self, argv: list[str], log: str, stop_signal=signal.SIGTERM, env: dict | None = None,
              **popen) -> subprocess.Popen:
        """``argv`` in a session of its own, output appended to ``self.folder / log``."""
        env = {**(os.environ if env is None else env), TAG: self.tag}
        with open(self.folder / log, "ab") as out:
            proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True, **popen)
        self.started.append((proc, stop_signal))
        return proc

    def log(self, name: str) -> str:
        path = self.folder / name
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def alive(self) -> set[int]:
        """Live processes started here, their descendants, and every process carrying this tag."""
        parents, mine = {}, {p.pid for p, _ in self.started}
        marker = f"{TAG}={self.tag}".encode()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                state, ppid = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:2]
                environ = (entry / "environ").read_bytes()
            except (OSError, ValueError):  # gone meanwhile
                continue
            if state != "Z":
                parents[int(entry.name)] = int(ppid)
                if marker in environ.split(b"\0"):
                    mine.add(int(entry.name))
        mine &= parents.keys()
        while True:
            children = {pid for pid, ppid in parents.items() if ppid in mine} - mine
            if not children:
                return mine
            mine |= children

    def stop(self, grace: float = 10) -> None:
        """Each started process gets its stop signal; after ``grace`` s every one left is killed.
        Raises when a process survives even that, so a stray server fails the test."""
        for proc, stop_signal in self.started:
            if proc.poll() is None:
                proc.send_signal(stop_signal)
        if not self._wait(grace):
            for pid in self.alive():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        left = not self._wait(10)
        for proc, _ in self.started:
            proc.poll()  # reap our children
        shutil.rmtree(self.folder, ignore_errors=True)
        assert not left, f"processes {sorted(self.alive())} outlived their test"

    def _wait(self, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while self.alive():
            for proc, _ in self.started:
                proc.poll()  # a child that exited is a zombie until reaped
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)
        return True


# ---- PostgreSQL ------------------------------------------------------------------------------------
def postgres_programs() -> Path | None:
    """The folder of PostgreSQL's server programs: on PATH, or Debian's /usr/lib/postgresql/N/bin."""
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).resolve().parent
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: p.parent.parent.name.zfill(4))
    return debian[-1].parent if debian else None


def server_user() -> dict:
    """Popen arguments that drop root (PostgreSQL refuses to run as root): the postgres user, else nobody."""
    if os.getuid() != 0:
        return {}
    for name in ("postgres", "nobody"):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
    pytest.skip("running as root with neither a postgres nor a nobody user to run PostgreSQL as")


def start_postgres(servers: Servers, user: str = "optuna", password: str = "secret", database: str = "zscrgan_tune"):
    """A fresh PostgreSQL on 127.0.0.1 with a role owning a database (``createuser``/``createdb`` of
    docs/scale.md, done in SQL); returns that role's URL. The unix socket trusts the test, TCP wants
    the password as a real server's would. Skips where the server programs or psycopg are absent."""
    programs = postgres_programs()
    if programs is None:
        pytest.skip("PostgreSQL's server programs (initdb, postgres) are absent: apt-get install postgresql")
    psycopg = pytest.importorskip("psycopg", reason="the postgres extra: pip install 'zscrgan[postgres]'")
    as_server = server_user()
    home = servers.folder / "pg"
    home.mkdir()
    if as_server:
        os.chown(home, as_server["user"], as_server["group"])
    init = subprocess.run([str(programs / "initdb"), "-D", str(home / "data"), "-U", "postgres", "--auth-local=trust",
                           "--auth-host=scram-sha-256", "--no-sync", "--no-locale", "-E", "UTF8"],
                          cwd=home, capture_output=True, text=True, timeout=120, **as_server)
    assert init.returncode == 0, init.stdout + init.stderr
    port = free_port()
    postmaster = servers.start([str(programs / "postgres"), "-D", str(home / "data"), "-p", str(port), "-k", str(home),
                                "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"],
                               "postgres.log", stop_signal=signal.SIGINT, cwd=home, **as_server)  # SIGINT: fast shutdown
    deadline = time.monotonic() + 60
    while True:
        try:
            admin = psycopg.connect(host=str(home), port=port, user="postgres", dbname="postgres", autocommit=True)
            break
        except psycopg.OperationalError:
            assert postmaster.poll() is None and time.monotonic() < deadline, servers.log("postgres.log")
            time.sleep(0.2)
    with admin:
        admin.execute(f"CREATE ROLE {user} LOGIN PASSWORD '{password}'")
        admin.execute(f"CREATE DATABASE {database} OWNER {user}")
    return f"postgresql://{user}:{password}@127.0.0.1:{port}/{database}"


# ---- Ray ---------------------------------------------------------------------------------------------
RAY = [sys.executable, "-m", "ray.scripts.scripts"]  # the `ray` command of this Python, wherever PATH points
def start_ray_cluster(servers: Servers, object_store_bytes: int = 80_000_000) -> tuple[str, dict]:
    """A head and a second node on this machine, one CPU each, with token authentication, as
    docs/scale.md starts them: ``ray get-auth-token --generate`` on the head, its ~/.ray/auth_token
    copied to the node (each node a HOME of its own). Returns the head's address and the
    environment a client needs (RAY_AUTH_MODE=token, RAY_AUTH_TOKEN). Ray's own processes carry
    the servers' tag, so stopping them ends every raylet and worker."""
    port = free_port()
    homes = {name: servers.folder / name for name in ("head", "node")}
    env = {name: {**os.environ, "HOME": str(home), "RAY_AUTH_MODE": "token"} for name, home in homes.items()}
    homes["head"].mkdir()
    made = subprocess.run([*RAY, "get-auth-token", "--generate"], env=env["head"], capture_output=True, text=True,
                          timeout=120)
    token = made.stdout.strip()
    assert made.returncode == 0 and token, made.stderr
    (homes["node"] / ".ray").mkdir(parents=True)
    shutil.copy(homes["head"] / ".ray" / "auth_token", homes["node"] / ".ray" / "auth_token")
    node_flags = ["--num-cpus", "1", "--object-store-memory", str(object_store_bytes), "--disable-usage-stats",
                  "--block"]  # --block: the node's processes stay children of `ray start`, ended by its SIGTERM
    head = servers.start([*RAY, "start", "--head", "--port", str(port), "--include-dashboard", "false",
                          "--temp-dir", str(servers.folder / "head-tmp"), *node_flags], "ray-head.log", env=env["head"])
    deadline = time.monotonic() + 120
    while True:  # the node joins through the head's GCS port
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert head.poll() is None and time.monotonic() < deadline, servers.log("ray-head.log")
            time.sleep(0.2)
    servers.start([*RAY, "start", "--address", f"127.0.0.1:{port}", "--temp-dir", str(servers.folder / "node-tmp"),
                   *node_flags], "ray-node.log", env=env["node"])
    return f"127.0.0.1:{port}", {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
