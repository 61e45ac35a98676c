"""The change engine: run a runbook's steps on many hosts over SSH and report every event.

Plain asyncio + asyncssh (through ``opsplane.ssh``) with no Django import, so it is tested
and benchmarked on its own; the Django side adapts it (frozen targets in, events out to
the database and the run's channel group).

    outcome = await execute(targets, steps, strategy, params=..., secrets=...,
                            sink=sink, cancel=asyncio.Event())

**Templating.** ``shell`` commands and ``script`` bodies are Jinja2 templates rendered in
an ``ImmutableSandboxedEnvironment`` whose ``finalize`` shell-quotes the value of every
``{{ expression }}``: ``rm -rf {{ path }}`` with path ``"; rm -rf /"`` removes one oddly
named file. A list or tuple becomes one quoted argument per item (nothing for an empty
list). There is deliberately no ``raw`` filter: parameter values come from operators
and must never become shell syntax. So do not put quotes around ``{{ }}`` in a template
(``"{{ x }}"`` would pass the quotes on literally). The quoting protects against
parameter values, not against the runbook's author, who can write any command anyway.
``upload`` contents and ``dest`` are rendered in the same sandbox without quoting.
The context is ``params`` (also each parameter as a top-level name), ``host`` (the
target's name), ``labels`` and ``facts``; the four reserved names win over parameters of
the same name. (``{% set x %}...{% endset %}`` captures text that is already quoted;
use ``{% set x = ... %}``.) Undefined names are errors (``StrictUndefined``): a missing
parameter fails that host's step with a message instead of rendering as an empty string;
guard optional ones with ``is defined``. ``when`` is a Jinja2 expression over the same context.
Template syntax errors are found before anything runs (``check_steps``).

**Strategy.** Hosts run at most ``parallelism`` at a time, batch by batch (Ansible
``serial`` semantics, ``batch_sizes``). ``max_fail_percentage`` is checked at the end of
each batch, as Ansible does, against the hosts of all batches done so far (failed plus
unreachable over done): a batch that started always finishes, so use a small first batch
("1", "10%") as the canary. Exceeding it cancels every later host (reason ``aborted``).
Unlike Ansible, nothing stops a run when it is None, even a batch in which every host
failed.

**Cancel.** ``cancel.set()`` starts no more hosts and cancels the task doing each running
host's SSH work; ``opsplane.ssh`` then sends the command a TERM signal and closes its
channel, and the engine closes the connection (the lab, like a hung-up terminal, kills
the command's process group when its connection goes). Sink calls happen in another task
and are never interrupted by cancel, so no event is lost half-way. OpenSSH ignores
signal requests for root logins, but OpenSSH 9.2 (tested) still ends the command when its
session closes, well within the two seconds.

**Secrets.** Every secret value is replaced by ``********`` in everything the sink sees:
output chunks, rendered commands and scripts, diffs and error messages. Output is masked
per stream; a chunk's end that could begin a secret (at most ``len(longest secret) - 1``
characters) is held back until the next chunk or the end of the command, so a secret
split across chunks is still caught while other output passes on at once.

**Checking.** ``check_mode`` connects and renders everything but changes nothing: shell and
script steps are ``skipped`` (reason ``check_mode``) after ``step_started`` shows what would
run; uploads read the remote file and emit the diff, with status ``changed`` or
``unchanged`` as they would have been, and write nothing.
"""

import asyncio
import contextlib
import difflib
import re
import secrets as _random
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

import asyncssh
import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from opsplane import ssh

MASK = "********"
STEP_KINDS = ("shell", "script", "upload")
SCRIPT_DIR = "/tmp"  # noqa: S108 - remote path; the file is created O_EXCL with mode 0700
# Bounds on clean-up awaited after a step or a host ends, so that cancel stays prompt.
CLEANUP_TIMEOUT = 2.0


class HostState(StrEnum):
    PENDING = "pending"  # only inside a running execute()
    OK = "ok"
    FAILED = "failed"
    SKIPPED = "skipped"  # every step was skipped
    CANCELLED = "cancelled"
    UNREACHABLE = "unreachable"


class StepStatus(StrEnum):
    OK = "ok"
    FAILED = "failed"
    SKIPPED = "skipped"
    UNCHANGED = "unchanged"  # upload: the file already had this content (and mode)
    CHANGED = "changed"  # upload: written (or, in check mode, would be)
    CANCELLED = "cancelled"


class RunbookError(ValueError):
    """The steps or the strategy cannot run as given (bad template syntax, bad batch size)."""


# --- inputs ------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Target:
    """One host. ``spec`` None with ``error`` set: the adapter could not build a spec (e.g.
    an unreadable credential); the host then fails with ``error_reason`` (default
    ``config``) without connecting."""

    name: str
    spec: ssh.ConnectionSpec | None
    labels: Mapping[str, Any] = field(default_factory=dict)
    facts: Mapping[str, Any] = field(default_factory=dict)
    error: str = ""
    error_reason: str = ""

    def __post_init__(self):
        if self.spec is None and not self.error:
            raise RunbookError(f"target {self.name!r}: no connection spec and no error")


_MODE = re.compile(r"0?[0-7]{3,4}")


@dataclass(frozen=True, kw_only=True)
class Step:
    """One step of a runbook. ``kind`` says which fields count:

    - ``shell``: ``command``, a template (values shell-quoted);
    - ``script``: ``script``, a template (values shell-quoted), copied to a 0700 file in
      /tmp, run as ``<interpreter> <file>`` and removed; ``interpreter`` is split like a
      shell command line (``/usr/bin/env python3`` works);
    - ``upload``: ``template`` (the file's contents, not quoted) written to ``dest`` (a
      template too), atomically, with ``mode`` (octal, "0644") and ``owner``
      ("user" or "user:group"); without them the current file's mode and owner are kept.

    ``timeout`` bounds the step (for a script: copying and running it). A failing step
    (non-zero exit, timeout, render error) fails the host unless ``continue_on_error``.
    ``when`` false skips the step on that host. ``run_once``: the step runs on the first
    target, in input order, that reaches it with ``when`` true (a host that gets there
    earlier waits for the targets before it to get there or drop out); the others skip it
    with reason "run_once", but only once it has finished, so what follows it (a restart
    after a migration) runs after it everywhere; and if it failed (without
    continue_on_error) they fail it too, with reason "run_once". That holds across
    batches: a host of batch 3 finds the step already done in batch 1.
    """

    name: str
    kind: str
    command: str = ""
    script: str = ""
    interpreter: str = "/bin/sh"
    template: str = ""
    dest: str = ""
    mode: str | None = None
    owner: str | None = None
    timeout: float | None = None
    continue_on_error: bool = False
    run_once: bool = False
    when: str = ""

    def __post_init__(self):
        where = f"step {self.name!r}"
        if self.kind not in STEP_KINDS:
            raise RunbookError(f"{where}: kind must be one of {', '.join(STEP_KINDS)}")
        if self.kind == "shell" and not self.command.strip():
            raise RunbookError(f"{where}: a shell step needs a command")
        if self.kind == "script":
            if not self.script.strip():
                raise RunbookError(f"{where}: a script step needs a script")
            try:
                argv = shlex.split(self.interpreter)
            except ValueError as exc:
                raise RunbookError(f"{where}: interpreter: {exc}") from None
            if not argv:
                raise RunbookError(f"{where}: a script step needs an interpreter")
        if self.kind == "upload" and not self.dest.strip():
            raise RunbookError(f"{where}: an upload step needs a dest")
        if self.mode is not None and not _MODE.fullmatch(self.mode):
            raise RunbookError(f"{where}: mode must be octal like 0644, not {self.mode!r}")
        if self.owner is not None and not self.owner.strip():
            raise RunbookError(f"{where}: owner must be a user or user:group")
        if self.timeout is not None and not self.timeout > 0:
            raise RunbookError(f"{where}: timeout must be positive")

    @property
    def mode_bits(self):
        return None if self.mode is None else int(self.mode, 8)


@dataclass(frozen=True, kw_only=True)
class Strategy:
    """How hosts are scheduled. ``batches``: sizes as ints, "N" or "N%" (Ansible ``serial``);
    see ``batch_sizes``. ``max_fail_percentage``: abort when failed + unreachable hosts
    exceed this share of the hosts done, checked after each batch."""

    parallelism: int = 20
    batches: Sequence[str | int] = ()
    max_fail_percentage: float | None = None
    pause_between_batches: float = 0
    check_mode: bool = False

    def __post_init__(self):
        if isinstance(self.batches, str):
            raise RunbookError("batches is a list of sizes, not one string")
        if self.parallelism < 1:
            raise RunbookError("parallelism must be at least 1")
        for size in self.batches:
            _batch_size(size, 100)  # syntax only; the real sizes depend on the host count
        if self.max_fail_percentage is not None and not 0 <= self.max_fail_percentage <= 100:
            raise RunbookError("max_fail_percentage must be between 0 and 100")
        if self.pause_between_batches < 0:
            raise RunbookError("pause_between_batches must not be negative")


def _batch_size(size, total):
    if isinstance(size, bool) or not isinstance(size, int | str):
        raise RunbookError(f"batch size {size!r} is not a number or a percentage")
    text = str(size).strip()
    try:
        if text.endswith("%"):
            percent = float(text[:-1])
            if not 0 < percent <= 100:
                raise ValueError
            # Ansible: a percentage of all hosts, rounded down, but at least one host.
            return max(1, int(total * percent / 100))
        count = int(text)
    except ValueError:
        raise RunbookError(f"batch size {size!r} is not a positive number or percentage") from None
    if count < 1:
        raise RunbookError(f"batch size {size!r} is not a positive number or percentage")
    return count


def batch_sizes(total, batches=()):
    """Batch sizes for ``total`` hosts: ``batch_sizes(10, ["1", "50%", "100%"]) == [1, 5, 4]``.

    As Ansible's ``serial``: the last size repeats until every host has a batch; a
    percentage is of all hosts, rounded down but at least 1; empty means one batch of all.
    """
    if total <= 0:
        return []
    if not batches:
        return [total]
    wanted = [_batch_size(size, total) for size in batches]
    sizes, done = [], 0
    while done < total:
        size = min(wanted[min(len(sizes), len(wanted) - 1)], total - done)
        sizes.append(size)
        done += size
    return sizes


# --- outputs -----------------------------------------------------------------------------


@dataclass(kw_only=True)
class StepResult:
    index: int
    name: str
    status: StepStatus
    exit_status: int | None = None
    error: str = ""  # for skipped steps the reason: "when", "run_once" or "check_mode"


@dataclass(kw_only=True)
class HostResult:
    """One target's result. ``exit_status`` is the last command's; ``error_reason`` is one
    word: an ``opsplane.ssh`` reason (timeout, refused, unreachable, dns, auth, host_key,
    protocol) or exit_status, render, sftp, run_once, cancelled, aborted, or the target's
    own ``error_reason``. Times are UTC datetimes, None for a host that never started."""

    name: str
    state: HostState = HostState.PENDING
    exit_status: int | None = None
    error_reason: str = ""
    error: str = ""
    started_at: datetime | None = None
    finished_at: datetime | None = None
    steps: list[StepResult] = field(default_factory=list)


@dataclass(kw_only=True)
class RunOutcome:
    hosts: list[HostResult]  # in the targets' order
    started_at: datetime
    finished_at: datetime
    aborted: bool = False
    abort_reason: str = ""
    cancelled: bool = False

    def host(self, name):
        return next(result for result in self.hosts if result.name == name)

    def count(self, state):
        return sum(1 for result in self.hosts if result.state == state)

    @property
    def ok(self):
        """Every host ok or skipped, nothing aborted or cancelled."""
        return all(r.state in (HostState.OK, HostState.SKIPPED) for r in self.hosts)


class Sink(Protocol):
    """Where events go. Per host, in this order::

        host_started
        (step_started  (output | diff)*  step_finished)*   for each step the host reaches
        host_finished

    ``batch_started(i, names)`` comes before any event of that batch's hosts, and every
    host_finished of a batch before the next batch_started; ``run_finished`` is last.
    Every target gets exactly one ``host_finished``; a host that never started (cancelled
    or aborted first) gets only that, after the running hosts of its batch finished, in
    the targets' order. A skipped step still gets ``step_started`` (``rendered`` empty
    when it was skipped before rendering) and ``step_finished``, whose ``error`` is then
    the reason: when, run_once or check_mode. Output chunks of one
    (host, step, stream) arrive in the order the command wrote them; chunks that piled up
    while the sink was busy are joined into one call. Indexes count from 0.

    Events of different hosts interleave. Calls for one host are awaited one after the
    other, so a slow sink holds that host's events back (they queue in memory, and the
    host keeps its parallelism slot until they are delivered) but not its SSH work. The
    sink runs in the event loop and must not block it: batch database writes instead of
    awaiting one per event. An exception raised by the sink
    stops the run: every session is closed and ``execute`` raises it.
    """

    async def batch_started(self, index: int, names: list[str]) -> None: ...
    async def host_started(self, name: str) -> None: ...
    async def step_started(self, name: str, step_index: int, step_name: str,
                           rendered: str) -> None: ...
    async def output(self, name: str, step_index: int, stream: str, text: str) -> None: ...
    async def diff(self, name: str, step_index: int, text: str) -> None: ...
    async def step_finished(self, name: str, step_index: int, status: StepStatus,
                            exit_status: int | None, error: str) -> None: ...
    async def host_finished(self, name: str, state: HostState, exit_status: int | None,
                            error_reason: str, error: str) -> None: ...
    async def run_finished(self, outcome: RunOutcome) -> None: ...


class NullSink:
    """Drops every event (benchmarks, callers that only want the outcome)."""

    async def batch_started(self, index, names):
        pass

    async def host_started(self, name):
        pass

    async def step_started(self, name, step_index, step_name, rendered):
        pass

    async def output(self, name, step_index, stream, text):
        pass

    async def diff(self, name, step_index, text):
        pass

    async def step_finished(self, name, step_index, status, exit_status, error):
        pass

    async def host_finished(self, name, state, exit_status, error_reason, error):
        pass

    async def run_finished(self, outcome):
        pass


class RecordingSink:
    """Keeps every call as a tuple ``(method, *arguments)`` in ``events`` (for tests)."""

    def __init__(self):
        self.events = []

    async def batch_started(self, index, names):
        self.events.append(("batch_started", index, list(names)))

    async def host_started(self, name):
        self.events.append(("host_started", name))

    async def step_started(self, name, step_index, step_name, rendered):
        self.events.append(("step_started", name, step_index, step_name, rendered))

    async def output(self, name, step_index, stream, text):
        self.events.append(("output", name, step_index, stream, text))

    async def diff(self, name, step_index, text):
        self.events.append(("diff", name, step_index, text))

    async def step_finished(self, name, step_index, status, exit_status, error):
        self.events.append(("step_finished", name, step_index, status, exit_status, error))

    async def host_finished(self, name, state, exit_status, error_reason, error):
        self.events.append(("host_finished", name, state, exit_status, error_reason, error))

    async def run_finished(self, outcome):
        self.events.append(("run_finished", outcome))

    def of(self, method, name=None):
        """The events of one method, of one host when ``name`` is given."""
        return [e for e in self.events if e[0] == method and (name is None or e[1] == name)]

    def for_host(self, name):
        return [e for e in self.events
                if e[0] not in ("batch_started", "run_finished") and e[1] == name]

    def text(self, name, step_index=None, stream="stdout"):
        """All output of a host (and step) on ``stream``, joined."""
        return "".join(e[4] for e in self.of("output", name)
                       if e[3] == stream and (step_index is None or e[2] == step_index))


# --- secrets -----------------------------------------------------------------------------


class _Masker:
    def __init__(self, values):
        values = sorted({str(v) for v in values if v}, key=len, reverse=True)
        # Longest first, so that of two secrets where one contains the other the whole
        # longer one is masked.
        self.pattern = re.compile("|".join(map(re.escape, values))) if values else None
        self.values = values
        self.hold = len(values[0]) - 1 if values else 0
        self.initials = frozenset(value[0] for value in values)

    def mask(self, text):
        if self.pattern is None or not text:
            return text
        return self.pattern.sub(MASK, text)

    def held_from(self, data):
        """Where the end of ``data`` may begin a secret that the next chunk completes."""
        size = len(data)
        for start in range(max(0, size - self.hold), size):
            if data[start] in self.initials:
                tail = data[start:]
                if any(len(v) > len(tail) and v.startswith(tail) for v in self.values):
                    return start
        return size


class _StreamMasker:
    """Masks one output stream chunk by chunk, holding back a possible secret's start.

    Only a tail that could begin a secret waits for the next chunk (or the end of the
    command), so ordinary output is passed on as soon as it arrives.
    """

    __slots__ = ("masker", "tail")

    def __init__(self, masker):
        self.masker = masker
        self.tail = ""

    def feed(self, text):
        data = self.tail + text if self.tail else text
        held = self.masker.held_from(data)
        # A match starting before ``held`` is complete: a longer secret starting at the
        # same place would reach past the end of ``data`` and so start at or after ``held``.
        parts, pos = [], 0
        for match in self.masker.pattern.finditer(data):
            if match.start() >= held:
                break
            parts.append(data[pos:match.start()])
            parts.append(MASK)
            pos = match.end()
        if not parts and held == len(data):
            self.tail = ""
            return data
        cut = max(held, pos)
        parts.append(data[pos:cut])
        self.tail = data[cut:]
        return "".join(parts)

    def flush(self):
        tail, self.tail = self.tail, ""
        return self.masker.mask(tail)


# --- templates ---------------------------------------------------------------------------


def _text(value):
    return "" if value is None else str(value)


def _shell_quote(value):
    # finalize: every {{ expression }} in a shell template becomes quoted argument(s).
    if isinstance(value, list | tuple):
        return " ".join(shlex.quote(_text(item)) for item in value)
    return shlex.quote(_text(value))


class _Undefined(jinja2.StrictUndefined):
    """Says which name is missing, also for ``params.x`` (Jinja: "'dict object' has no
    attribute 'x'")."""

    __slots__ = ()

    @property
    def _undefined_message(self):
        if self._undefined_hint is None and self._undefined_name is not None:
            return f"{self._undefined_name!r} is undefined"
        return super()._undefined_message


def _environment(**options):
    return ImmutableSandboxedEnvironment(
        undefined=_Undefined,
        autoescape=False,
        # File contents and scripts keep their final newline.
        keep_trailing_newline=True,
        **options,
    )


SHELL_ENV = _environment(finalize=_shell_quote)
FILE_ENV = _environment()


class _Constant:
    """A template without any Jinja syntax renders to itself: skip Jinja per host."""

    __slots__ = ("source",)

    def __init__(self, source):
        self.source = source

    def render(self, context):
        return self.source


def _template(env, source, what, step):
    # Jinja only acts on "{"-sequences (and rewrites "\r\n"), so text without them is
    # its own rendering.
    if "{" not in source and "\r" not in source:
        return _Constant(source)
    try:
        return env.from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise RunbookError(f"step {step.name!r}: {what}: {exc} (line {exc.lineno})") from None


@dataclass(frozen=True)
class _Compiled:
    step: Step
    body: Any = None  # shell command, script body or upload contents
    dest: Any = None
    when: Any = None


def _compile(step):
    when = None
    if step.when.strip():
        try:
            when = FILE_ENV.compile_expression(step.when, undefined_to_none=False)
        except jinja2.TemplateSyntaxError as exc:
            raise RunbookError(f"step {step.name!r}: when: {exc}") from None
    if step.kind == "shell":
        return _Compiled(step, _template(SHELL_ENV, step.command, "command", step), when=when)
    if step.kind == "script":
        return _Compiled(step, _template(SHELL_ENV, step.script, "script", step), when=when)
    return _Compiled(
        step,
        _template(FILE_ENV, step.template, "template", step),
        _template(FILE_ENV, step.dest, "dest", step),
        when,
    )


def check_steps(steps):
    """Raise ``RunbookError`` when a step's templates or ``when`` do not parse."""
    return [_compile(step) for step in steps]


def _context(params, target):
    context = dict(params)
    context.update(params=params, host=target.name, labels=target.labels, facts=target.facts)
    return context


def _describe(exc):
    if isinstance(exc, jinja2.TemplateError):  # "'path' is undefined", sandbox refusals
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _unified_diff(dest, old, new):
    lines = difflib.unified_diff(
        old.splitlines(keepends=True), new.splitlines(keepends=True),
        fromfile=f"{dest} (current)", tofile=f"{dest} (new)",
    )
    # difflib leaves a last line without its newline glued to the next one; say it as
    # diff(1) does.
    return "".join(
        line if line.endswith("\n") else f"{line}\n\\ No newline at end of file\n"
        for line in lines
    )


# --- the run -----------------------------------------------------------------------------


async def execute(targets, steps, strategy, *, params, secrets=(), sink, cancel):
    """Run ``steps`` on ``targets`` as ``strategy`` says; return a ``RunOutcome``.

    Events go to ``sink`` (see ``Sink`` for their order). ``params`` are the validated
    parameter values; ``secrets`` the values the sink must never see. Setting ``cancel``
    stops the run within about two seconds. Raises ``RunbookError`` before any event when
    the steps, strategy or target names are unusable.
    """
    return await _Run(targets, steps, strategy, params, secrets, sink, cancel).execute()


_UNKNOWN, _PASSED, _CANDIDATE = 0, 1, 2


class _Once:
    """A run_once step: which host runs it, and how it ended.

    The host that runs it is the first target, in input order, that reaches the step with
    ``when`` true. A host that gets there waits until every target before it has either
    got there too or can no longer (skipped it, failed or ended before it). Waits only
    ever point at earlier targets, and those started first (batches are in input order
    and the semaphore is first come, first served), so they always end.
    """

    __slots__ = ("state", "frontier", "claimer", "decided", "done", "failed")

    def __init__(self, count):
        self.state = bytearray(count)  # per target: _UNKNOWN, _PASSED or _CANDIDATE
        self.frontier = 0  # every target before it has _PASSED
        self.claimer = None  # the index of the target that runs it
        self.decided = asyncio.Event()
        self.done = asyncio.Event()
        self.failed = False

    def mark(self, index, candidate):
        """Target ``index`` got to the step with ``when`` true (``candidate``), or will not
        run it; its first word counts."""
        if self.state[index] != _UNKNOWN:
            return
        self.state[index] = _CANDIDATE if candidate else _PASSED
        while self.claimer is None and self.frontier < len(self.state):
            state = self.state[self.frontier]
            if state == _PASSED:
                self.frontier += 1
                continue
            if state == _CANDIDATE:
                self.claimer = self.frontier
                self.decided.set()
            break


class _Mailbox:
    """A host's events, queued by its SSH task and delivered to the sink by another."""

    __slots__ = ("items", "wake", "closed")

    def __init__(self):
        self.items = []
        self.wake = asyncio.Event()
        self.closed = False

    def put(self, item):
        self.items.append(item)
        self.wake.set()

    def close(self, _task=None):
        self.closed = True
        self.wake.set()


class _Run:
    def __init__(self, targets, steps, strategy, params, secrets, sink, cancel):
        self.targets = list(targets)
        names = [target.name for target in self.targets]
        if len(set(names)) != len(names):
            raise RunbookError("target names must be unique")
        self.compiled = check_steps(steps)
        self.strategy = strategy
        self.sizes = batch_sizes(len(self.targets), strategy.batches)
        self.params = dict(params)
        self.masker = _Masker(secrets)
        self.sink = sink
        self.cancel = cancel
        self.limit = asyncio.Semaphore(strategy.parallelism)
        self.results = [HostResult(name=name) for name in names]
        self.once = {  # step index -> _Once
            index: _Once(len(self.targets))
            for index, compiled in enumerate(self.compiled) if compiled.step.run_once
        }
        self.workers = set()
        self.cancelling = False

    async def execute(self):
        started_at = datetime.now(UTC)
        aborted, abort_reason, stop_error = False, "", ""
        watch = asyncio.ensure_future(self.cancel.wait())
        watch.add_done_callback(self._on_cancel)
        try:
            offset = 0
            for index, size in enumerate(self.sizes):
                if self.cancel.is_set():
                    break
                batch = range(offset, offset + size)
                await self.sink.batch_started(index, [self.targets[i].name for i in batch])
                await self._run_batch(batch)
                offset += size
                if offset == len(self.targets) or self.cancel.is_set():
                    break
                if abort_reason := self._exceeded(offset):
                    aborted, stop_error = True, f"aborted: {abort_reason}"
                    break
                if self.strategy.pause_between_batches:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(
                            asyncio.shield(watch), self.strategy.pause_between_batches
                        )
        finally:
            watch.remove_done_callback(self._on_cancel)
            watch.cancel()
        for result in self.results:
            if result.state == HostState.PENDING:
                result.state = HostState.CANCELLED
                if aborted:
                    result.error_reason, result.error = "aborted", stop_error
                else:
                    result.error_reason, result.error = "cancelled", "cancelled before it started"
                await self.sink.host_finished(
                    result.name, result.state, None, result.error_reason, result.error
                )
        outcome = RunOutcome(
            hosts=self.results, started_at=started_at, finished_at=datetime.now(UTC),
            aborted=aborted, abort_reason=abort_reason,
            cancelled=any(result.error_reason == "cancelled" for result in self.results),
        )
        await self.sink.run_finished(outcome)
        return outcome

    def ended(self, index):
        """Target ``index`` runs no more steps: it cannot claim a run_once step now."""
        for once in self.once.values():
            once.mark(index, False)

    def _on_cancel(self, watch):
        if watch.cancelled():
            return
        self.cancelling = True
        for worker in list(self.workers):
            worker.cancel()

    def _exceeded(self, done):
        limit = self.strategy.max_fail_percentage
        if limit is None:
            return ""
        failed = sum(
            1 for result in self.results[:done]
            if result.state in (HostState.FAILED, HostState.UNREACHABLE)
        )
        if failed * 100 / done <= limit:
            return ""
        return (f"max_fail_percentage {limit:g}% exceeded: {failed} of {done} hosts "
                "failed or unreachable")

    async def _run_batch(self, batch):
        try:
            async with asyncio.TaskGroup() as group:
                for index in batch:
                    group.create_task(self._host(index))
        except BaseExceptionGroup as exc:
            # A sink or engine error in one host: the group has cancelled the others.
            raise exc.exceptions[0] from None

    async def _host(self, index):
        """Deliver one host's events to the sink while a separate task does its SSH work.

        Only the SSH task is cancelled on ``cancel``, so a sink call is never cut short.
        """
        async with self.limit:
            if self.cancelling:
                self.ended(index)
                return  # never started: execute() reports it
            mailbox = _Mailbox()
            host = _HostRun(self, index, mailbox.put)
            worker = asyncio.create_task(host.run())
            worker.add_done_callback(mailbox.close)
            self.workers.add(worker)
            try:
                await self._deliver(host.name, mailbox)
            finally:
                self.ended(index)
                self.workers.discard(worker)
                if not worker.done():
                    # Torn down (the caller cancelled execute, or another host raised):
                    # let the worker close its session before execute gives up.
                    worker.cancel()
                    await asyncio.wait({worker}, timeout=CLEANUP_TIMEOUT)
            if worker.cancelled() and self.cancelling:
                # Cancelled before its first line ran: it never started.
                return
            worker.result()  # an engine bug in the worker surfaces here

    async def _deliver(self, name, mailbox):
        sink = self.sink
        while True:
            await mailbox.wake.wait()
            mailbox.wake.clear()
            items, mailbox.items = mailbox.items, []
            # Consecutive chunks of one step and stream become one call: when the sink is
            # slower than the output, the number of calls shrinks instead of piling up.
            key, parts = None, []
            for method, args in items:
                if method == "output":
                    if args[:2] == key:
                        parts.append(args[2])
                        continue
                    if parts:
                        await sink.output(name, key[0], key[1], "".join(parts))
                    key, parts = args[:2], [args[2]]
                    continue
                if parts:
                    await sink.output(name, key[0], key[1], "".join(parts))
                    key, parts = None, []
                await getattr(sink, method)(name, *args)
            if parts:
                await sink.output(name, key[0], key[1], "".join(parts))
            if mailbox.closed and not mailbox.items:
                return


class _StepFailed(Exception):
    """Ends a step as failed: ``reason`` for the host, message for the operator."""

    def __init__(self, reason, message, exit_status=None):
        super().__init__(message)
        self.reason = reason
        self.exit_status = exit_status


class _HostRun:
    """One host's SSH work: connect, run the steps, close. Events go to ``emit``."""

    def __init__(self, run, index, emit):
        self.run_ = run
        self.index = index
        self.target = run.targets[index]
        self.name = self.target.name
        self.result = run.results[index]
        self.emit = emit
        self.mask = run.masker.mask
        self.conn = None
        self.sftp = None
        self.step_started = False

    async def run(self):
        result = self.result
        result.started_at = datetime.now(UTC)
        self.emit(("host_started", ()))
        try:
            try:
                await self._connect_and_run()
            finally:
                self.run_.ended(self.index)  # before closing: hosts may wait for this
                if self.conn is not None:
                    await self._close()
        except asyncio.CancelledError:
            if not self.run_.cancelling:
                raise  # the run itself is being torn down: no more events
            asyncio.current_task().uncancel()
            if result.state == HostState.PENDING:  # still connecting
                self._end(HostState.CANCELLED, "cancelled", "cancelled while connecting")
        result.finished_at = datetime.now(UTC)
        self.emit(("host_finished", (result.state, result.exit_status, result.error_reason,
                                     result.error)))

    def _end(self, state, reason="", error=""):
        self.result.state = state
        self.result.error_reason = reason
        self.result.error = self.mask(error)

    async def _connect_and_run(self):
        target = self.target
        if target.spec is None:
            self._end(HostState.FAILED, target.error_reason or "config", target.error)
            return
        try:
            self.conn = await ssh.connect(target.spec)
        except ssh.SSHError as exc:
            self._end(HostState.UNREACHABLE, exc.reason, str(exc))
            return
        context = _context(self.run_.params, target)
        for compiled in self.run_.compiled:
            if not await self._step(compiled, context):
                return
        steps = self.result.steps
        all_skipped = steps and all(s.status == StepStatus.SKIPPED for s in steps)
        self._end(HostState.SKIPPED if all_skipped else HostState.OK)

    async def _close(self):
        self.conn.close()
        try:
            async with asyncio.timeout(CLEANUP_TIMEOUT):
                await self.conn.wait_closed()
        except TimeoutError:
            self.conn.abort()

    # --- steps ---------------------------------------------------------------------------

    async def _step(self, compiled, context):
        """Run one step; False when the host must stop here."""
        step = compiled.step
        index = len(self.result.steps)
        record = StepResult(index=index, name=step.name, status=StepStatus.SKIPPED)
        self.result.steps.append(record)
        self.step_started = False
        once = self.run_.once.get(index)
        claimed = False  # this host runs the run_once step for everyone
        try:
            skip = ""
            if compiled.when is not None:
                try:
                    if not compiled.when(context):
                        skip = "when"
                except Exception as exc:  # any error in the operator's expression
                    raise _StepFailed("render", f"when: {_describe(exc)}") from None
            if not skip and once is not None:
                once.mark(self.index, True)
                await once.decided.wait()
                claimed = once.claimer == self.index
                if not claimed:
                    # Wait until it has run there, so that what follows the step here (a
                    # restart after a migration) runs after it.
                    await once.done.wait()
                    claimer = self.run_.targets[once.claimer].name
                    if once.failed:
                        raise _StepFailed("run_once", f"the run_once step failed on {claimer}")
                    skip = "run_once"
            if skip:
                self._started(record, "")
                return self._finish(record, StepStatus.SKIPPED, error=skip)
            status, exit_status = await getattr(self, f"_{step.kind}")(compiled, context, record)
            if exit_status is not None:
                self.result.exit_status = exit_status
            if status == StepStatus.FAILED:
                raise _StepFailed("exit_status", f"exited with status {exit_status}",
                                  exit_status)
            return self._finish(record, status, exit_status,
                                error="check_mode" if status == StepStatus.SKIPPED else "")
        except _StepFailed as failure:
            if claimed:
                once.failed = not step.continue_on_error
            return self._fail(record, failure)
        except asyncio.CancelledError:
            if claimed:
                once.failed = True
            if self.run_.cancelling:
                if not self.step_started:
                    self._started(record, "")
                self._finish(record, StepStatus.CANCELLED, error="cancelled")
                self._end(HostState.CANCELLED, "cancelled",
                          f"cancelled during step {index + 1} {step.name!r}")
            raise
        finally:
            if once is not None:
                once.mark(self.index, False)  # skipped or failed before claiming
            if claimed:
                once.done.set()

    def _started(self, record, rendered):
        self.step_started = True
        self.emit(("step_started", (record.index, record.name, self.mask(rendered))))

    def _finish(self, record, status, exit_status=None, error=""):
        record.status, record.exit_status, record.error = status, exit_status, self.mask(error)
        self.emit(("step_finished", (record.index, status, exit_status, record.error)))
        return True

    def _fail(self, record, failure):
        if not self.step_started:
            self._started(record, "")
        self._finish(record, StepStatus.FAILED, failure.exit_status, str(failure))
        if self.run_.compiled[record.index].step.continue_on_error:
            return True
        self._end(HostState.FAILED, failure.reason,
                  f"step {record.index + 1} {record.name!r}: {failure}")
        return False

    # --- step kinds: each returns (status, exit_status) or raises _StepFailed -----------

    def _render(self, template, context, what):
        try:
            return template.render(context)
        except Exception as exc:  # any error in the operator's template
            raise _StepFailed("render", f"cannot render the {what}: {_describe(exc)}") from None

    async def _shell(self, compiled, context, record):
        command = self._render(compiled.body, context, "command")
        self._started(record, command)
        if self.run_.strategy.check_mode:
            return StepStatus.SKIPPED, None
        status = await self._deadline(compiled.step, self._stream, record.index, command)
        return (StepStatus.OK if status == 0 else StepStatus.FAILED), status

    async def _script(self, compiled, context, record):
        step = compiled.step
        body = self._render(compiled.body, context, "script")
        self._started(record, body)
        if self.run_.strategy.check_mode:
            return StepStatus.SKIPPED, None
        path = f"{SCRIPT_DIR}/opsplane-{_random.token_hex(8)}"
        command = ssh.quote_command([*shlex.split(step.interpreter), path])
        created = False

        async def upload_and_run():
            nonlocal created
            sftp = await self._sftp()
            # Exclusive create: never follows a link someone planted in /tmp; 0700 so only
            # the login user can read what may hold secrets.
            file = await sftp.open(path, "xb", attrs=asyncssh.SFTPAttrs(permissions=0o700))
            created = True
            async with file:
                await file.write(body.encode())
            return await self._stream(record.index, command)

        try:
            status = await self._deadline(step, upload_and_run)
        finally:
            if created:
                await self._remove(path)
        return (StepStatus.OK if status == 0 else StepStatus.FAILED), status

    async def _upload(self, compiled, context, record):
        step = compiled.step
        dest = self._render(compiled.dest, context, "dest")
        if not dest.strip():
            raise _StepFailed("render", "dest renders as an empty path")
        content = self._render(compiled.body, context, "template")
        self._started(record, f"upload {dest}")
        check_mode = self.run_.strategy.check_mode

        async def compare_and_write():
            sftp = await self._sftp()
            data = content.encode()
            current, attrs = await self._read(sftp, dest)
            mode = step.mode_bits
            old_mode = None if attrs is None or attrs.permissions is None else (
                attrs.permissions & 0o7777)
            mode_differs = mode is not None and old_mode is not None and mode != old_mode
            if current == data and not mode_differs:
                return StepStatus.UNCHANGED
            text = ""
            if current != data:
                text = _unified_diff(dest, current.decode(errors="replace"), content)
            if mode_differs:
                text += f"mode of {dest}: {old_mode:04o} -> {mode:04o}\n"
            self.emit(("diff", (record.index, self.mask(text))))
            if check_mode:
                return StepStatus.CHANGED
            if current == data:
                await sftp.chmod(dest, mode)
            else:
                await self._write(sftp, step, dest, data, attrs, old_mode if mode is None else mode)
            return StepStatus.CHANGED

        return await self._deadline(step, compare_and_write), None

    async def _read(self, sftp, dest):
        """The remote file's bytes and attributes; ``(b"", None)`` when there is none."""
        try:
            async with sftp.open(dest, "rb") as file:
                attrs = await file.stat()
                return await file.read(), attrs
        except asyncssh.SFTPNoSuchFile:
            return b"", None

    async def _write(self, sftp, step, dest, data, attrs, mode):
        # Written beside dest and renamed over it, so readers see the old file or the new
        # one, never half of it; mode and owner are set before it appears.
        tmp = f"{dest}.opsplane-tmp-{_random.token_hex(4)}"
        created = False
        try:
            file = await sftp.open(
                tmp, "xb",
                attrs=asyncssh.SFTPAttrs(permissions=0o600 if mode is not None else None),
            )
            created = True
            async with file:
                await file.write(data)
            if mode is not None:
                await sftp.chmod(tmp, mode)
            if step.owner:
                result = await ssh.run(self.conn, ssh.quote_command(["chown", "--", step.owner,
                                                                     tmp]))
                if result.exit_status:
                    raise _StepFailed(
                        "exit_status",
                        f"chown {step.owner} failed ({result.exit_status}): "
                        f"{result.stderr.strip()}",
                        result.exit_status,
                    )
            elif attrs is not None and attrs.uid is not None:
                # Replacing a file must not hand it to the login user (say root) when the
                # service that reads it runs as someone else.
                await sftp.chown(tmp, attrs.uid, attrs.gid)
            await self._rename(sftp, tmp, dest)
            created = False
        finally:
            if created:
                await self._remove(tmp)

    async def _rename(self, sftp, tmp, dest):
        try:
            await sftp.posix_rename(tmp, dest)
        except asyncssh.SFTPOpUnsupported:
            # A server without the posix-rename extension: mv renames atomically too.
            result = await ssh.run(self.conn, ssh.quote_command(["mv", "-f", "--", tmp, dest]))
            if result.exit_status:
                raise _StepFailed("exit_status", f"mv failed: {result.stderr.strip()}",
                                  result.exit_status) from None

    # --- plumbing ----------------------------------------------------------------------

    async def _sftp(self):
        if self.sftp is None:
            self.sftp = await self.conn.start_sftp_client()
        return self.sftp

    async def _remove(self, path):
        # Best effort, bounded: runs after failures and during cancel too.
        with contextlib.suppress(asyncssh.Error, OSError, TimeoutError):
            async with asyncio.timeout(CLEANUP_TIMEOUT):
                await self.sftp.remove(path)

    async def _deadline(self, step, work, *args):
        """Await ``work(*args)`` within the step's timeout, turning errors into _StepFailed."""
        try:
            async with asyncio.timeout(step.timeout) as deadline:
                return await work(*args)
        except TimeoutError as exc:
            if deadline.expired():
                raise _StepFailed("timeout", f"did not finish within {step.timeout:g}s") from None
            raise _StepFailed("timeout", str(exc) or "timed out") from None
        except ssh.SSHError as exc:
            raise _StepFailed(exc.reason, str(exc)) from None
        except asyncssh.SFTPError as exc:
            raise _StepFailed("sftp", f"SFTP: {exc.reason}") from None
        except (asyncssh.Error, OSError) as exc:
            raise _StepFailed("protocol", f"connection lost: {exc}") from None

    async def _stream(self, index, command):
        """Run ``command``, queueing its output (masked) as it arrives; its exit status."""
        emit = self.emit
        masker = self.run_.masker
        if masker.pattern is None:
            def on_output(stream, text):
                emit(("output", (index, stream, text)))

            return await ssh.stream(self.conn, command, on_output=on_output)

        streams = {"stdout": _StreamMasker(masker), "stderr": _StreamMasker(masker)}

        def on_output(stream, text):
            if text := streams[stream].feed(text):
                emit(("output", (index, stream, text)))

        try:
            return await ssh.stream(self.conn, command, on_output=on_output)
        finally:
            for stream, held in streams.items():
                if text := held.flush():
                    emit(("output", (index, stream, text)))
