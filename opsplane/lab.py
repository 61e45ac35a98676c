"""The SSH lab: many SSH hosts on loopback addresses, served by one asyncio process.

Each host is an asyncssh server on its own 127.x.y.z address (all on one port) with its
own host key, accepting the lab's client key for any user name. Commands really run,
through ``/bin/sh -c`` as the lab's OS user, in a per-host directory
``<dir>/hosts/<name>/`` that is also its HOME. It is for demos, tests and benchmarks of
the change engine at scale; it never listens outside 127.0.0.0/8.

Keys are generated once and kept in the lab directory, so pinned host keys stay valid
across restarts. ``<dir>/inventory.json`` is written (atomically) only once every host
listens, so its appearance means "ready"; its ``pid`` is removed again on a clean stop.
For plain OpenSSH clients the directory also holds ``known_hosts``::

    ssh -i var/lab/client_key -o UserKnownHostsFile=var/lab/known_hosts -p 2222 127.0.10.1

Plain asyncio + asyncssh with no Django import; ``manage.py lab`` is a thin wrapper.
"""

import asyncio
import contextlib
import fcntl
import functools
import getpass
import ipaddress
import json
import os
import posixpath
import resource
import signal
from dataclasses import dataclass, field
from pathlib import Path

import asyncssh

from opsplane.ssh import ConnectionSpec, public_key_line

DEFAULT_BASE = "127.0.10.1"
DEFAULT_PORT = 2222
INVENTORY_VERSION = 1
LOOPBACK = ipaddress.IPv4Network("127.0.0.0/8")
READ_SIZE = 65536
# Besides one listening socket per host: connections, child pipes, key and log files.
SPARE_FDS = 256


class LabError(Exception):
    """The lab cannot start as asked; the message says what to change."""


@dataclass(frozen=True)
class LabHost:
    name: str
    address: str
    home: Path
    key: asyncssh.SSHKey = field(repr=False)

    @property
    def host_key(self):
        return public_key_line(self.key)


def host_name(index):
    """Name of the ``index``-th host, counting from 1: lab-001 ... lab-999, lab-1000 ..."""
    return f"lab-{index:03d}"


def lab_addresses(base, count):
    """``count`` consecutive addresses from ``base``, all inside 127.0.0.0/8."""
    try:
        first = ipaddress.IPv4Address(base)
    except ipaddress.AddressValueError:
        raise LabError(f"base address {base!r} is not an IPv4 address") from None
    if count < 1:
        raise LabError(f"the lab needs at least one host, not {count}")
    if first not in LOOPBACK or count > LOOPBACK.num_addresses:
        raise LabError(f"base address {first} is not in 127.0.0.0/8: the lab is loopback only")
    last = first + (count - 1)
    if last not in LOOPBACK:
        raise LabError(
            f"{count} hosts from {first} would end at {last}, outside 127.0.0.0/8: "
            "pick a lower base address or fewer hosts"
        )
    return [str(first + offset) for offset in range(count)]


def read_inventory(directory):
    return json.loads((Path(directory) / "inventory.json").read_text())


def connection_specs(inventory, *, connect_timeout=10):
    """A ``ConnectionSpec`` per host of a lab inventory, with its pinned host key."""
    return [
        ConnectionSpec(
            host=host["address"],
            port=host["port"],
            username=host["user"],
            client_keys=[inventory["client_key"]],
            host_keys=[host["host_key"]],
            connect_timeout=connect_timeout,
            name=host["name"],
        )
        for host in inventory["hosts"]
    ]


def _write_atomic(path, data, mode=0o644):
    # Readers (waiting for the inventory, loading keys) never see a half-written file,
    # even when the lab is killed mid-write.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as file:
        file.write(data)
    os.replace(tmp, path)


def _key(path):
    """The ed25519 key stored at ``path``, generated there on first use."""
    try:
        return asyncssh.read_private_key(path)
    except FileNotFoundError:
        key = asyncssh.generate_private_key("ssh-ed25519")
        _write_atomic(path, key.export_private_key(), mode=0o600)
        return key


def _raise_fd_limit(needed):
    # One listening socket per host: 1,000 hosts do not fit in the usual soft limit of
    # 1,024 descriptors, but raising the soft limit up to the hard one needs no privilege.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and needed > hard:
        raise LabError(
            f"{needed} file descriptors needed but the hard limit (ulimit -Hn) is {hard}: "
            "start fewer hosts or raise the limit"
        )
    if soft != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _signal_group(child, signum=signal.SIGKILL):
    """Signal the command's whole process group while its leader is still ours."""
    # Only while the leader is unreaped: after that its pid, and so the group id, may
    # be reused by an unrelated process.
    if child.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signum)


class _LabServer(asyncssh.SSHServer):
    """Tracks open connections so that ``Lab.stop`` can close them."""

    def __init__(self, connections):
        self._connections = connections
        self._conn = None

    def connection_made(self, conn):
        self._conn = conn
        self._connections.add(conn)

    def connection_lost(self, exc):
        self._connections.discard(self._conn)


class _LabSFTPServer(asyncssh.SFTPServer):
    """SFTP on the real file system, relative paths starting in the host's directory."""

    def __init__(self, chan, *, home):
        super().__init__(chan)
        self._home = os.fsencode(home)

    def map_path(self, path):
        return super().map_path(posixpath.join(self._home, path))


class Lab:
    """``count`` SSH hosts from ``base`` on ``port``, keys and files under ``directory``.

    Use ``await start()`` / ``await stop()``, or ``async with Lab(...) as lab``.
    ``delay`` adds that many seconds before each command starts, to mimic slow hosts.
    """

    def __init__(self, count, *, base=DEFAULT_BASE, port=DEFAULT_PORT, directory, delay=0.0):
        self.addresses = lab_addresses(base, count)
        self.port = port
        self.directory = Path(directory).resolve()
        self.delay = delay
        self.hosts = []
        self.inventory_path = self.directory / "inventory.json"
        self.client_key_path = self.directory / "client_key"
        self._lock = None
        self._acceptors = []
        self._connections = set()
        self._children = set()
        self._env = {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "USER": getpass.getuser(),
            "LOGNAME": getpass.getuser(),
            "SHELL": "/bin/sh",
            "LANG": os.environ.get("LANG", "C.UTF-8"),
        }

    async def __aenter__(self):
        await self.start()
        return self

    async def __aexit__(self, *exc_info):
        await self.stop()

    async def start(self):
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_directory()
        try:
            # A stale inventory would tell waiters that this start is already done.
            self.inventory_path.unlink(missing_ok=True)
            _raise_fd_limit(len(self.addresses) + SPARE_FDS)
            client_public = self._prepare_hosts()
            await self._listen(client_public)
            self._write_known_hosts()
            self._write_inventory(pid=os.getpid())
        except BaseException:
            await self.stop()
            raise

    async def stop(self):
        """Stop listening, kill every running command, close connections; no orphans."""
        children, connections = list(self._children), list(self._connections)
        for acceptor in self._acceptors:
            acceptor.close()
        for child in children:
            _signal_group(child)
        for conn in connections:
            conn.close()
        await asyncio.gather(
            *(acceptor.wait_closed() for acceptor in self._acceptors),
            *(conn.wait_closed() for conn in connections),
            *(child.wait() for child in children),
        )
        if self._acceptors and self.inventory_path.exists():
            self._write_inventory(pid=None)
        self._acceptors = []
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def _lock_directory(self):
        # Two labs writing one inventory and one set of keys would confuse everyone
        # reading them; the lock goes away with its process, so it is never stale.
        self._lock = os.open(self.directory / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock)
            self._lock = None
            raise LabError(f"another lab is running with directory {self.directory}") from None

    def _prepare_hosts(self):
        """Load or generate the keys; create the host directories. Returns the client public key."""
        (self.directory / "host_keys").mkdir(exist_ok=True)
        client_key = _key(self.client_key_path)
        client_public = public_key_line(client_key)
        pub_path = self.client_key_path.with_name("client_key.pub")
        if not pub_path.exists():
            _write_atomic(pub_path, f"{client_public} opsplane-lab\n".encode())
        self.hosts = []
        for index, address in enumerate(self.addresses, start=1):
            name = host_name(index)
            home = self.directory / "hosts" / name
            home.mkdir(parents=True, exist_ok=True)
            key = _key(self.directory / "host_keys" / name)
            self.hosts.append(LabHost(name=name, address=address, home=home, key=key))
        return client_public

    async def _listen(self, client_public):
        options = dict(
            server_factory=functools.partial(_LabServer, self._connections),
            authorized_client_keys=asyncssh.import_authorized_keys(client_public),
            password_auth=False,
            kbdint_auth=False,
            # No pseudo-terminals or forwarding: commands run over pipes, as for a script.
            allow_pty=False,
            agent_forwarding=False,
            # Left at their defaults these look up the host's DNS name once per listener.
            gss_host=None,
            rdns_lookup=False,
            encoding=None,
        )
        results = await asyncio.gather(
            *(
                asyncssh.listen(
                    host.address,
                    self.port,
                    **options,
                    server_host_keys=[host.key],
                    process_factory=functools.partial(self._session, host),
                    sftp_factory=functools.partial(_LabSFTPServer, home=host.home),
                )
                for host in self.hosts
            ),
            return_exceptions=True,
        )
        self._acceptors = [result for result in results if isinstance(result, asyncssh.SSHAcceptor)]
        for host, result in zip(self.hosts, results, strict=True):
            if isinstance(result, OSError):
                raise LabError(
                    f"cannot listen on {host.address}:{self.port}: {result.strerror or result}"
                )
            if isinstance(result, BaseException):
                raise result

    def _write_known_hosts(self):
        lines = "".join(
            f"[{host.address}]:{self.port} {host.host_key}\n" for host in self.hosts
        )
        _write_atomic(self.directory / "known_hosts", lines.encode())

    def _write_inventory(self, *, pid):
        user = getpass.getuser()
        inventory = {
            "version": INVENTORY_VERSION,
            "client_key": str(self.client_key_path),
            "known_hosts": str(self.directory / "known_hosts"),
            "user": user,
            "port": self.port,
            "hosts": [
                {
                    "name": host.name,
                    "address": host.address,
                    "port": self.port,
                    "user": user,
                    "host_key": host.host_key,
                }
                for host in self.hosts
            ],
        }
        if pid is not None:
            inventory["pid"] = pid
        _write_atomic(self.inventory_path, json.dumps(inventory, indent=1).encode())

    async def _session(self, host, process):
        """Run one exec or shell request of ``host`` with ``/bin/sh``."""
        if process.subsystem is not None:
            process.stderr.write(f"lab: no subsystem {process.subsystem!r}\n".encode())
            process.exit(1)
            return
        if self.delay:
            await asyncio.sleep(self.delay)
        # Without a command this is a shell request: sh reads commands from stdin, as
        # sshd runs a login shell when no pseudo-terminal is asked for.
        argv = ["/bin/sh"] if process.command is None else ["/bin/sh", "-c", process.command]
        try:
            child = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=host.home,
                env={**self._env, "HOME": str(host.home), "OPSPLANE_LAB_HOST": host.name},
                # Its own process group, so the command's children can be killed with it.
                start_new_session=True,
            )
        except OSError as exc:
            process.stderr.write(f"lab: cannot start /bin/sh: {exc}\n".encode())
            process.exit(126)
            return
        self._children.add(child)
        feeder = asyncio.create_task(_feed_stdin(process, child))
        relay = asyncio.create_task(_relay_output(process, child))
        closed = asyncio.create_task(process.wait_closed())
        try:
            await asyncio.wait({relay, closed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            feeder.cancel()
            closed.cancel()
            # The client went away (or stop() closed the connection) before the command
            # finished: like a hung-up terminal, that ends the command.
            _signal_group(child)
            relay.cancel()
            await asyncio.gather(relay, feeder, return_exceptions=True)
            await child.wait()
            self._children.discard(child)
        if not process.is_closing():
            _report_exit(process, child.returncode)


def _report_exit(process, returncode):
    if returncode >= 0:
        process.exit(returncode)
        return
    try:
        name = signal.Signals(-returncode).name.removeprefix("SIG")
    except ValueError:  # a real-time signal: no name to send
        process.exit(128 - returncode)
    else:
        # Report a signal death as sshd does, so clients see the signal's name.
        process.exit_with_signal(name)


async def _feed_stdin(process, child):
    """Copy the channel's stdin to the command, then close it; relay signal requests."""
    try:
        while True:
            try:
                data = await process.stdin.read(READ_SIZE)
            except asyncssh.SignalReceived as exc:
                with contextlib.suppress(KeyError):  # a signal name this OS does not know
                    _signal_group(child, signal.Signals[f"SIG{exc.signal}"])
                continue
            except (asyncssh.BreakReceived, asyncssh.TerminalSizeChanged):
                continue
            if not data:
                break
            child.stdin.write(data)
            await child.stdin.drain()
        child.stdin.close()
    except (BrokenPipeError, ConnectionResetError):
        pass  # the command exited without reading all its input, as commands may


async def _relay_output(process, child):
    """Copy the command's stdout and stderr to the channel until both end; wait for it."""

    async def copy(reader, writer):
        while data := await reader.read(READ_SIZE):
            writer.write(data)
            await writer.drain()

    await asyncio.gather(
        copy(child.stdout, process.stdout), copy(child.stderr, process.stderr)
    )
    await child.wait()


async def serve(count, base, port, directory, delay=0.0, ready=None):
    """Run a lab until SIGINT or SIGTERM; ``ready(lab)`` is called once it is up."""
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    # Installed before starting, so a signal during start-up still stops cleanly.
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    lab = Lab(count, base=base, port=port, directory=directory, delay=delay)
    try:
        await lab.start()
        if ready is not None:
            ready(lab)
        await stopping.wait()
    finally:
        await lab.stop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
