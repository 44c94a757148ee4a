"""A private LAN of Linux network namespaces: one host per namespace, names in per-host files.

Each host gets its own namespace (so its own loopback), a veth pair to a bridge that lives
in a dedicated `lan` namespace, an address on the run's /24 and `/etc/netns/<ns>/hosts`
mapping every host's names to their addresses (`ip netns exec` bind-mounts it over
`/etc/hosts`). Nothing is added to the root namespace: the test reaches a host through
`publish`, a userland port forward like Docker's (a listener on 127.0.0.1 whose upstream
sockets are opened inside the host's namespace). Names are unique per run and `close`
removes every namespace, veth and hosts file even after a failure. Needs root.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

IP = shutil.which("ip") or "/usr/sbin/ip"
NETNS_ETC = Path("/etc/netns")
NETNS_RUN = Path("/var/run/netns")
CLONE_NEWNET = 0x40000000


def available() -> str | None:
    """Why namespaces cannot be made here, or None when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if not Path(IP).exists():
        return "iproute2 (`ip`) is not installed"
    return None


def _ip(*args: str) -> None:
    result = subprocess.run([IP, *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")


@dataclass
class Host:
    """One namespace on the LAN, known by `names` (the first is its own)."""

    names: tuple[str, ...]
    ns: str
    ip: str

    @property
    def name(self) -> str:
        return self.names[0]


@dataclass
class Lan:
    """The run's namespaces; use as a context manager (or call `close`)."""

    subnet: str = "10.77.0"
    run: str = field(default_factory=lambda: "ds" + secrets.token_hex(3))
    hosts: dict[str, Host] = field(default_factory=dict)
    _forwarders: list[_Forwarder] = field(default_factory=list)
    _made: list[str] = field(default_factory=list)

    @property
    def lan_ns(self) -> str:
        return f"{self.run}-lan"

    def __enter__(self) -> Lan:
        collect_abandoned_runs()
        self._netns(self.lan_ns)
        (NETNS_ETC / self.lan_ns).mkdir(parents=True, exist_ok=True)
        (NETNS_ETC / self.lan_ns / "owner").write_text(str(os.getpid()))
        _ip("-n", self.lan_ns, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.lan_ns, "link", "set", "br0", "up")
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _netns(self, ns: str) -> None:
        _ip("netns", "add", ns)
        self._made.append(ns)
        _ip("-n", ns, "link", "set", "lo", "up")

    def add(self, *names: str) -> Host:
        """A new host answering to `names` (e.g. a compose service name and its aliases)."""
        index = len(self.hosts) + 2
        ns = f"{self.run}-{index}"
        self._netns(ns)
        veth = f"h{index}"
        _ip(
            "-n",
            self.lan_ns,
            "link",
            "add",
            veth,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            ns,
        )
        _ip("-n", self.lan_ns, "link", "set", veth, "master", "br0", "up")
        host = Host(tuple(names), ns, f"{self.subnet}.{index}")
        _ip("-n", ns, "addr", "add", f"{host.ip}/24", "dev", "eth0")
        _ip("-n", ns, "link", "set", "eth0", "up")
        self.hosts[host.name] = host
        self._write_hosts()
        return host

    def _write_hosts(self) -> None:
        """Every host's hosts file, rewritten in place (processes already running see it too)."""
        lines = ["127.0.0.1 localhost", "::1 localhost ip6-localhost"]
        lines += [f"{h.ip} {' '.join(h.names)}" for h in self.hosts.values()]
        for host in self.hosts.values():
            folder = NETNS_ETC / host.ns
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "hosts").write_text("\n".join(lines) + "\n")

    def argv(self, host: Host, command: list[str]) -> list[str]:
        """`command` run inside `host` (its hosts file over /etc/hosts)."""
        return [IP, "netns", "exec", host.ns, *command]

    def popen(self, host: Host, command: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self.argv(host, command), start_new_session=True, **kwargs)

    def publish(self, host: Host, port: int) -> int:
        """Forward a free port on the test's 127.0.0.1 to `host:port`; returns the local port."""
        forwarder = _Forwarder(host.ns, (host.ip, port))
        forwarder.start()
        self._forwarders.append(forwarder)
        return forwarder.port

    def close(self) -> None:
        """Stop the forwarders, end what still runs in the namespaces, delete them all."""
        for forwarder in self._forwarders:
            forwarder.stop()
        for ns in reversed(self._made):
            self._kill_inside(ns)
            with contextlib.suppress(RuntimeError):
                _ip("netns", "del", ns)
            shutil.rmtree(NETNS_ETC / ns, ignore_errors=True)
        self._made.clear()

    @staticmethod
    def _kill_inside(ns: str) -> None:
        """SIGKILL what is left in one of this run's namespaces (started by this run)."""
        pids = subprocess.run([IP, "netns", "pids", ns], capture_output=True, text=True).stdout
        for pid in pids.split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)


RUN_NS = re.compile(r"^(ds[0-9a-f]{6})-(lan|\d+)$")


def collect_abandoned_runs() -> None:
    """Delete the namespaces of runs whose test process is gone (killed before its cleanup)."""
    runs: dict[str, list[str]] = {}
    for path in NETNS_RUN.glob("ds*") if NETNS_RUN.exists() else []:
        if found := RUN_NS.match(path.name):
            runs.setdefault(found.group(1), []).append(path.name)
    for run, namespaces in runs.items():
        owner = NETNS_ETC / f"{run}-lan" / "owner"
        with contextlib.suppress(OSError, ValueError):
            pid = int(owner.read_text())
            if Path(f"/proc/{pid}").exists():
                continue  # still running (this or another test process)
            lan = Lan(run=run)
            lan._made = sorted(namespaces, key=lambda ns: ns.endswith("-lan"))
            lan.close()


def connect_in(ns: str, address: tuple[str, int], timeout: float = 5.0) -> socket.socket:
    """A TCP connection opened from inside namespace `ns` (a socket keeps its namespace)."""
    result: list[socket.socket | BaseException] = []

    def enter_and_connect() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(NETNS_RUN / ns, os.O_RDONLY)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:  # this thread only
                    raise OSError(ctypes.get_errno(), f"setns {ns}")
            finally:
                os.close(fd)
            result.append(socket.create_connection(address, timeout=timeout))
        except BaseException as exc:  # handed to the caller's thread
            result.append(exc)

    worker = threading.Thread(target=enter_and_connect, daemon=True)
    worker.start()
    worker.join()
    outcome = result[0]
    if isinstance(outcome, BaseException):
        raise outcome
    outcome.settimeout(None)
    return outcome


class _Forwarder(threading.Thread):
    """127.0.0.1:<free port> -> a namespace's address, one pair of pumps per connection."""

    def __init__(self, ns: str, target: tuple[str, int]) -> None:
        super().__init__(daemon=True, name=f"publish-{ns}-{target[1]}")
        self.ns, self.target = ns, target
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = int(self.listener.getsockname()[1])
        self._open: set[socket.socket] = set()
        self._stopped = False

    def run(self) -> None:
        while not self._stopped:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = connect_in(self.ns, self.target)
            except OSError:
                client.close()  # as a published port of a stopped container: refused
                continue
            self._open |= {client, upstream}
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def stop(self) -> None:
        self._stopped = True
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        with contextlib.suppress(OSError):
            self.listener.close()
        for sock in list(self._open):
            with contextlib.suppress(OSError):
                sock.close()
