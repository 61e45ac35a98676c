"""SSH client layer: pinned host keys, operator-readable errors, buffered and streamed commands.

Plain asyncio + asyncssh with no Django import: the change engine and CMDB fact gathering
build on it, and it is tested and benchmarked on its own.

Only what a ``ConnectionSpec`` says is trusted. Nothing is read from ``~/.ssh`` (no
known_hosts, config, default keys or agent): a worker's home directory must not decide
which hosts it trusts or which keys it offers.
"""

import asyncio
import contextlib
import shlex
import signal
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import asyncssh

READ_SIZE = 65536
# asyncssh options that would otherwise read ~/.ssh (config, default keys, agent,
# X.509 trust) or ask Kerberos.
ISOLATED = {
    "config": None,
    "agent_path": None,
    "agent_identities": None,
    "pkcs11_provider": None,
    "x509_trusted_certs": None,
    "x509_trusted_cert_paths": [],
    "gss_host": None,
}


@dataclass(frozen=True, kw_only=True)
class ConnectionSpec:
    """Everything needed to reach one host.

    ``host_keys`` are the pinned public keys in OpenSSH one-line format
    (``"ssh-ed25519 AAAA..."``); a connection is only made when the server proves it holds
    one of them. ``client_keys`` are private key paths or asyncssh key objects.
    """

    host: str
    port: int = 22
    username: str
    client_keys: Sequence[str | Path | asyncssh.SSHKey] = field(default=(), repr=False)
    passphrase: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    host_keys: Sequence[str] = ()
    connect_timeout: float = 10
    name: str = ""

    @property
    def label(self):
        """How messages name the host: its name and where it was reached."""
        where = f"{self.host}:{self.port}"
        return f"{self.name} ({where})" if self.name else where


class SSHError(Exception):
    """A connection or command failed; ``reason`` says why in one word an operator knows."""

    reason: str


class SSHTimeout(SSHError):
    reason = "timeout"


class SSHRefused(SSHError):
    reason = "refused"


class SSHUnreachable(SSHError):
    reason = "unreachable"


class SSHAuthError(SSHError):
    reason = "auth"


class HostKeyError(SSHError):
    """The server's host key is not pinned, or no key is pinned at all.

    ``presented_key`` is the key the server offered (``"<algorithm> <base64>"``) when it
    did not match, so the caller can show it and an admin can decide to trust it."""

    reason = "host_key"

    def __init__(self, message, *, presented_key=""):
        super().__init__(message)
        self.presented_key = presented_key


class SSHNameError(SSHError):
    """The host name does not resolve."""

    reason = "dns"


class SSHProtocolError(SSHError):
    reason = "protocol"


class Result(NamedTuple):
    exit_status: int
    stdout: str
    stderr: str


def fingerprint(public_key):
    """SHA256 fingerprint as OpenSSH prints it (``SHA256:...``)."""
    if isinstance(public_key, str):
        public_key = asyncssh.import_public_key(public_key)
    return public_key.get_fingerprint("sha256")


def public_key_line(key):
    """``"<algorithm> <base64>"`` without a comment: the form host keys are pinned in."""
    algorithm, blob = key.export_public_key("openssh").decode().split()[:2]
    return f"{algorithm} {blob}"


def quote_command(argv):
    """Join arguments into one shell command line, every argument quoted."""
    return " ".join(shlex.quote(str(arg)) for arg in argv)


class _PinnedHostKeyClient(asyncssh.SSHClient):
    """Keeps the key a server presented when it was not one of the pinned ones.

    asyncssh only asks this callback about keys that are not pinned; answering False
    refuses them, and keeping the key lets the error show its fingerprint.
    """

    def __init__(self):
        self.rejected_key = None

    def validate_host_public_key(self, host, addr, port, key):
        self.rejected_key = key
        return False


def _pinned_keys(spec):
    # An empty known_hosts would make asyncssh fall back to ~/.ssh/known_hosts, so an
    # unpinned host is refused here, before any packet is sent.
    if not spec.host_keys:
        raise HostKeyError(
            f"{spec.label}: no host key is pinned for this host; fetch it and pin it "
            "before connecting"
        )
    try:
        return [asyncssh.import_public_key(line) for line in spec.host_keys]
    except (asyncssh.KeyImportError, ValueError) as exc:
        raise HostKeyError(f"{spec.label}: a pinned host key cannot be read: {exc}") from None


def _client_keypairs(spec):
    # Loaded here so a missing or undecryptable key file is an "auth" problem named as
    # such, never mistaken for a network error. An empty list would make asyncssh load
    # the default ~/.ssh keys, hence None.
    if not spec.client_keys:
        return None
    try:
        return asyncssh.load_keypairs(list(spec.client_keys), spec.passphrase)
    except (OSError, asyncssh.KeyImportError, asyncssh.KeyEncryptionError, ValueError) as exc:
        raise SSHAuthError(f"{spec.label}: cannot load the client key: {exc}") from None


def _map_error(exc, spec, *, timeout):
    """The SSHError for an OSError or asyncssh.Error raised while connecting."""
    where = spec.label
    # TimeoutError is an OSError subclass, and ConnectionRefusedError a ConnectionError:
    # the order of these tests matters.
    if isinstance(exc, TimeoutError):
        return SSHTimeout(f"{where}: no SSH handshake within {timeout:g}s")
    if isinstance(exc, ConnectionRefusedError):
        return SSHRefused(f"{where}: connection refused (is sshd running on port {spec.port}?)")
    if isinstance(exc, asyncssh.PermissionDenied):
        return SSHAuthError(f"{where}: permission denied for user {spec.username!r}")
    if isinstance(exc, ConnectionError | asyncssh.Error):
        return SSHProtocolError(f"{where}: SSH connection failed: {exc}")
    if isinstance(exc, socket.gaierror):
        return SSHNameError(f"{where}: the host name does not resolve: {exc.strerror or exc}")
    # Any other OSError: no route, network down.
    return SSHUnreachable(f"{where}: host unreachable: {exc.strerror or exc}")


async def connect(spec):
    """Open an SSH connection to ``spec``, verifying the host key against the pinned keys.

    Raises an ``SSHError`` subclass whose ``reason`` is one of timeout, refused,
    unreachable, auth, host_key or protocol.
    """
    trusted = _pinned_keys(spec)
    client_keys = _client_keypairs(spec)
    client = _PinnedHostKeyClient()
    try:
        return await asyncssh.connect(
            spec.host,
            spec.port,
            username=spec.username,
            client_factory=lambda: client,
            known_hosts=(trusted, [], []),
            client_keys=client_keys,
            password=spec.password,
            connect_timeout=spec.connect_timeout,
            **ISOLATED,
        )
    except asyncssh.HostKeyNotVerifiable as exc:
        presented = client.rejected_key
        if presented is None:
            raise HostKeyError(f"{spec.label}: host key not accepted: {exc}") from None
        pinned = ", ".join(fingerprint(key) for key in trusted)
        raise HostKeyError(
            f"{spec.label}: host key does not match the pinned key ({pinned}); the server "
            f"presented {fingerprint(presented)}. The host key changed: if the host was "
            "reinstalled, pin its new key; otherwise someone may be intercepting the connection.",
            presented_key=public_key_line(presented),
        ) from None
    except (OSError, asyncssh.Error) as exc:
        raise _map_error(exc, spec, timeout=spec.connect_timeout) from exc


async def fetch_host_key(host, port=22, timeout=10):
    """Return the host key ``host`` presents, as ``"<algorithm> <base64>"``.

    Trust on first use: nothing is verified, so call it only when an operator chooses to
    pin whatever key the host shows now.
    """
    spec = ConnectionSpec(host=host, port=port, username="", connect_timeout=timeout)
    try:
        options = asyncssh.SSHClientConnectionOptions(
            client_keys=None, connect_timeout=timeout, **ISOLATED
        )
        key = await asyncssh.get_server_host_key(host, port, config=None, options=options)
    except (OSError, asyncssh.Error) as exc:
        raise _map_error(exc, spec, timeout=timeout) from exc
    if key is None:
        raise SSHProtocolError(f"{spec.label}: the server presented no host key")
    return public_key_line(key)


def _exit_status(process):
    # A command killed by a signal reports it as the shell would: 128 + signal number.
    # (asyncssh's exit_status is -1 then.)
    if process.exit_signal is not None:
        name = process.exit_signal[0]
        try:
            return 128 + signal.Signals[f"SIG{name}"]
        except KeyError:
            return 255
    if process.exit_status is not None:
        return process.exit_status
    # The channel closed without a status: OpenSSH's client reports 255 in that case too.
    return 255


@contextlib.asynccontextmanager
async def _remote_command(conn, command, *, stdin, timeout):
    """Open a session channel for ``command``; make sure it is not left running on exit."""
    try:
        process = await conn.create_process(
            command, stdin=stdin, encoding="utf-8", errors="replace"
        )
    except asyncssh.ChannelOpenError as exc:
        raise SSHProtocolError(f"cannot start {command!r}: {exc.reason}") from exc
    deadline = asyncio.timeout(timeout)
    finished = False
    try:
        async with deadline:
            yield process
        finished = True
    except TimeoutError:
        if not deadline.expired():
            raise
        raise SSHTimeout(f"{command!r} did not finish within {timeout:g}s") from None
    except asyncssh.Error as exc:
        raise SSHProtocolError(f"{command!r}: connection lost: {exc}") from exc
    finally:
        # Given up on (timeout, cancellation, error): ask the server to stop the command
        # and close the channel so nothing more arrives for it. The lab and OpenSSH for
        # non-root users honour the signal; OpenSSH ignores it for root logins, where only
        # closing the connection (as the change engine does on cancel) ends the session's
        # processes at once; with the channel alone closed, the command runs on until it
        # next writes.
        if not finished:
            with contextlib.suppress(OSError):  # the connection is already gone
                process.terminate()
            process.close()


async def run(conn, command, *, timeout=None, stdin=None):
    """Run ``command`` and wait for it: ``Result(exit_status, stdout, stderr)``.

    ``stdin`` is text fed to the command, then end of file. Undecodable output bytes become
    U+FFFD. Raises ``SSHTimeout`` when ``timeout`` seconds pass first.
    """
    async with _remote_command(
        conn, command, stdin=asyncssh.DEVNULL if stdin is None else asyncssh.PIPE,
        timeout=timeout,
    ) as process:
        stdout, stderr = await process.communicate(stdin)
    return Result(_exit_status(process), stdout, stderr)


async def stream(conn, command, *, on_output, timeout=None):
    """Run ``command`` and return its exit status, passing output on as it arrives.

    ``on_output(stream_name, text)`` is called with ``"stdout"`` or ``"stderr"`` and the
    chunk read (up to 64 KiB, cut anywhere but never inside a UTF-8 character), in arrival
    order per stream. It runs in the event loop, so it must not block. The command's stdin
    is empty. Raises ``SSHTimeout`` when ``timeout`` seconds pass first.
    """

    async def relay(reader, name):
        while chunk := await reader.read(READ_SIZE):
            on_output(name, chunk)

    async with _remote_command(conn, command, stdin=asyncssh.DEVNULL, timeout=timeout) as process:
        await asyncio.gather(relay(process.stdout, "stdout"), relay(process.stderr, "stderr"))
        await process.wait_closed()
    return _exit_status(process)
