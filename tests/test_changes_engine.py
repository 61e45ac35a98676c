"""The change engine against real servers: OpenSSH sshd and the asyncssh lab, no mocks."""

import asyncio
import contextlib
import random
import subprocess
import sys
import time
import uuid
from dataclasses import replace
from pathlib import Path

import asyncssh
import pytest

from changes import engine
from changes.engine import HostState, RecordingSink, Step, StepStatus, Strategy, Target
from opsplane import ssh
from opsplane.lab import connection_specs
from opsplane.testing.require import unavailable
from opsplane.testing.ssh import Unavailable, free_port, run_lab

LARGE_LAB_BASE = "127.0.120.1"  # away from the session lab and tests/test_lab.py's labs
LARGE_LAB_HOSTS = 200


# --- helpers -----------------------------------------------------------------------------


def lab_targets(inventory, labels=None):
    labels = labels or {}
    return [
        Target(name=spec.name, spec=spec, labels=labels.get(spec.name, {}),
               facts={"os": "debian"})
        for spec in connection_specs(inventory, connect_timeout=5)
    ]


def lab_home(inventory, name):
    return Path(inventory["client_key"]).parent / "hosts" / name


@pytest.fixture(params=["sshd", "lab"])
def server(request):
    """``(target, home)``: one host and a local directory to put its files in, for tests
    that must hold for OpenSSH and the lab alike (both run on this machine)."""
    if request.param == "sshd":
        sshd = request.getfixturevalue("sshd")
        home = request.getfixturevalue("tmp_path")
        return Target(name="sshd", spec=sshd.spec()), home
    inventory = request.getfixturevalue("ssh_lab")
    target = lab_targets(inventory)[0]
    return target, lab_home(inventory, target.name)


async def run(targets, steps, strategy=None, *, params=None, secrets=(), cancel=None):
    sink = RecordingSink()
    outcome = await engine.execute(
        targets, steps, strategy or Strategy(), params=params or {}, secrets=secrets,
        sink=sink, cancel=cancel or asyncio.Event(),
    )
    check_event_order(sink, targets, outcome)
    return outcome, sink


def check_event_order(sink, targets, outcome):
    """The Sink contract: per host host_started, (step_started, output|diff*,
    step_finished)*, host_finished; a host that never started only host_finished."""
    assert sink.events[-1] == ("run_finished", outcome)
    assert [e for e in sink.events if e[0] == "run_finished"] == [sink.events[-1]]
    for target in targets:
        events = sink.for_host(target.name)
        assert [e[0] for e in events].count("host_finished") == 1, target.name
        assert events[-1][0] == "host_finished", target.name
        if events[0][0] != "host_started":
            assert len(events) == 1 and events[0][2] == HostState.CANCELLED, events
            continue
        current, last = None, -1
        for event in events[1:-1]:
            method, index = event[0], event[2]
            if method == "step_started":
                assert current is None and index == last + 1, events
                current = index
            elif method in ("output", "diff"):
                assert index == current, events
            else:
                assert method == "step_finished" and index == current, events
                current, last = None, index
        assert current is None, events
        result = outcome.host(target.name)
        assert events[-1][2:] == (result.state, result.exit_status, result.error_reason,
                                  result.error)


def marker():
    return uuid.uuid4().hex[:12]


# --- pure parts --------------------------------------------------------------------------


def test_the_engine_imports_no_django():
    code = "import sys, changes.engine; print(sorted(m for m in sys.modules if 'django' in m))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, cwd=Path(__file__).resolve().parents[1])
    assert result.stdout.strip() == "[]"


def test_batch_sizes_follow_ansible_serial():
    assert engine.batch_sizes(10, []) == [10]
    assert engine.batch_sizes(10, ["1", "50%", "100%"]) == [1, 5, 4]
    assert engine.batch_sizes(10, [3]) == [3, 3, 3, 1]
    assert engine.batch_sizes(10, ["1", "10%"]) == [1] + [1] * 9
    assert engine.batch_sizes(3, ["10%"]) == [1, 1, 1]  # rounded down, but at least one
    assert engine.batch_sizes(0, ["1"]) == []
    for bad in ("0", "0%", "abc", "150%", -1, True):
        with pytest.raises(engine.RunbookError):
            Strategy(batches=[bad])


def test_bad_steps_are_refused_when_built():
    with pytest.raises(engine.RunbookError, match="kind"):
        Step(name="x", kind="ftp")
    with pytest.raises(engine.RunbookError, match="mode"):
        Step(name="x", kind="upload", dest="/tmp/x", mode="rw-r--r--")
    with pytest.raises(engine.RunbookError, match="syntax|unexpected|expected"):
        engine.check_steps([Step(name="x", kind="shell", command="echo {{ oops")])


def test_stream_masking_survives_any_chunking():
    rng = random.Random(7)
    for _ in range(3000):
        values = ["".join(rng.choice("ab") for _ in range(rng.randint(1, 4)))
                  for _ in range(rng.randint(1, 3))]
        masker = engine._Masker(values)
        text = "".join(rng.choice(["a", "b", "x", "\n", *values]) for _ in range(12))
        cuts = sorted(rng.sample(range(len(text) + 1), min(len(text) + 1, 4)))
        stream, out, prev = engine._StreamMasker(masker), [], 0
        for cut in [*cuts, len(text)]:
            out.append(stream.feed(text[prev:cut]))
            prev = cut
        out.append(stream.flush())
        for piece in "".join(out).split(engine.MASK):
            assert not any(value in piece for value in values), (values, text, cuts, out)


async def test_a_template_syntax_error_stops_the_run_before_any_event(ssh_lab):
    sink = RecordingSink()
    with pytest.raises(engine.RunbookError, match="'broken'"):
        await engine.execute(
            lab_targets(ssh_lab)[:1],
            [Step(name="fine", kind="shell", command="true"),
             Step(name="broken", kind="shell", command="echo {% if %}")],
            Strategy(), params={}, sink=sink, cancel=asyncio.Event(),
        )
    assert sink.events == []


# --- step kinds --------------------------------------------------------------------------


async def test_shell_step_runs_and_reports_output_and_status(server):
    target, _ = server
    outcome, sink = await run(
        [target],
        [Step(name="hello", kind="shell", command="echo hello {{ who }}; echo warn >&2"),
         Step(name="fail", kind="shell", command="exit 3")],
        params={"who": "world"},
    )
    result = outcome.host(target.name)
    assert (result.state, result.exit_status, result.error_reason) == ("failed", 3, "exit_status")
    assert result.error == "step 2 'fail': exited with status 3"
    assert sink.text(target.name, 0) == "hello world\n"
    assert sink.text(target.name, 0, "stderr") == "warn\n"
    assert sink.of("step_started", target.name)[0][4] == "echo hello world; echo warn >&2"
    assert [s.status for s in result.steps] == [StepStatus.OK, StepStatus.FAILED]


HOSTILE = [
    "; rm -rf /",
    "$(touch /tmp/pwned-{m})",
    "`touch /tmp/pwned-{m}-bt`",
    "it's",
    '"double" \\ quoted',
    "two\nlines",
    "ünïcødé ✓ 中文",
    "$HOME *",
    "",
    "-n",
]


async def test_hostile_parameter_values_arrive_literally(server):
    target, _ = server
    mark = marker()
    values = [value.format(m=mark) for value in HOSTILE]
    params = {f"p{i}": value for i, value in enumerate(values)}
    arguments = " ".join("{{ p%d }}" % i for i in range(len(values)))  # noqa: UP031
    outcome, sink = await run(
        [target],
        [Step(name="echo", kind="shell", command="printf '%s\\0' " + arguments),
         Step(name="list", kind="shell", command="printf '%s\\0' {{ items }}"),
         Step(name="script", kind="script", script="printf '%s\\0' " + arguments + "\n")],
        params={**params, "items": values[:3]},
    )
    assert outcome.host(target.name).state == HostState.OK
    assert sink.text(target.name, 0).split("\0")[:-1] == values
    assert sink.text(target.name, 1).split("\0")[:-1] == values[:3]
    assert sink.text(target.name, 2).split("\0")[:-1] == values
    assert not list(Path("/tmp").glob(f"pwned-{mark}*"))


async def test_a_missing_parameter_fails_the_step_without_running_it(server):
    target, home = server
    mark = home / f"ran-{marker()}"
    outcome, sink = await run(
        [target],
        [Step(name="needs path", kind="shell", command=f"touch {mark}; rm -rf {{{{ path }}}}"),
         Step(name="never", kind="shell", command="echo never")],
    )
    result = outcome.host(target.name)
    assert (result.state, result.error_reason) == ("failed", "render")
    assert "'path' is undefined" in result.error
    assert not mark.exists()
    assert sink.of("step_started", target.name) == [
        ("step_started", target.name, 0, "needs path", "")
    ]
    assert len(result.steps) == 1


async def test_the_sandbox_refuses_python_internals(ssh_lab):
    target = lab_targets(ssh_lab)[0]
    outcome, _ = await run(
        [target], [Step(name="escape", kind="shell",
                        command="echo {{ params.__class__.__mro__[1].__subclasses__() }}")],
    )
    result = outcome.host(target.name)
    assert (result.state, result.error_reason) == ("failed", "render")
    assert "unsafe" in result.error or "__class__" in result.error, result.error


async def test_script_step_runs_with_its_interpreter_and_is_removed(server):
    target, _ = server
    outcome, sink = await run(
        [target],
        [Step(name="py", kind="script", interpreter="/usr/bin/env python3",
              script="import sys\nprint('args', sys.argv[1:], {{ greeting }})\n"),
         Step(name="sh", kind="script", script='echo "$0"; ls -l "$0" | cut -c1-10\nexit 4\n',
              continue_on_error=True)],
        params={"greeting": "hi there"},
    )
    result = outcome.host(target.name)
    assert result.state == HostState.OK, result
    assert sink.text(target.name, 0) == "args [] hi there\n"
    path, mode = sink.text(target.name, 1).splitlines()
    assert path.startswith("/tmp/opsplane-") and mode == "-rwx------"
    assert not Path(path).exists()  # the hosts are on this machine
    assert result.steps[1].status == StepStatus.FAILED and result.exit_status == 4


async def test_upload_diffs_writes_atomically_and_then_is_unchanged(server):
    target, home = server
    dest = home / f"app-{marker()}.conf"
    dest.write_text("port = 1\nname = old\n")
    dest.chmod(0o600)
    step = Step(name="conf", kind="upload", template="port = {{ port }}\nname = {{ host }}\n",
                dest=str(dest), mode="0640", owner="root:root")

    outcome, sink = await run([target], [step], params={"port": 8080})
    assert outcome.host(target.name).steps[0].status == StepStatus.CHANGED
    [(_, _, _, diff)] = sink.of("diff", target.name)
    assert diff.splitlines() == [
        f"--- {dest} (current)", f"+++ {dest} (new)", "@@ -1,2 +1,2 @@",
        "-port = 1", "-name = old", "+port = 8080", f"+name = {target.name}",
        f"mode of {dest}: 0600 -> 0640",
    ]
    assert sink.of("step_started", target.name)[0][4] == f"upload {dest}"
    assert dest.read_text() == f"port = 8080\nname = {target.name}\n"
    assert dest.stat().st_mode & 0o7777 == 0o640
    assert not list(home.glob("*.opsplane-tmp-*"))

    outcome, sink = await run([target], [step], params={"port": 8080})
    assert outcome.host(target.name).steps[0].status == StepStatus.UNCHANGED
    assert sink.of("diff") == []

    # Only the mode differs: changed, content untouched.
    dest.chmod(0o644)
    outcome, sink = await run([target], [step], params={"port": 8080})
    assert outcome.host(target.name).steps[0].status == StepStatus.CHANGED
    assert sink.of("diff")[0][3] == f"mode of {dest}: 0644 -> 0640\n"
    assert dest.stat().st_mode & 0o7777 == 0o640


async def test_upload_creates_a_new_file_and_reports_a_bad_owner(ssh_lab):
    target = lab_targets(ssh_lab)[0]
    home = lab_home(ssh_lab, target.name)
    dest = home / f"new-{marker()}.txt"
    outcome, sink = await run(
        [target],
        [Step(name="new", kind="upload", template="no newline", dest=str(dest)),
         # Replaces the file just written: its owner and mode are kept.
         Step(name="rewrite", kind="upload", template="no newline\nmore\n", dest=str(dest)),
         Step(name="owner", kind="upload", template="x", dest=str(dest) + ".2",
              owner="no-such-user-here")],
    )
    assert dest.read_text() == "no newline\nmore\n"
    first, second, _ = (e[3] for e in sink.of("diff"))
    assert first.endswith("+no newline\n\\ No newline at end of file\n")
    assert "-no newline\n\\ No newline at end of file\n+no newline\n+more\n" in second
    result = outcome.host(target.name)
    assert (result.state, result.error_reason) == ("failed", "exit_status")
    assert "chown no-such-user-here failed" in result.error
    assert not Path(str(dest) + ".2").exists()
    assert not list(home.glob("*.opsplane-tmp-*"))


async def test_check_mode_runs_nothing_and_writes_nothing(server):
    target, home = server
    mark = home / f"touched-{marker()}"
    dest = home / f"checked-{marker()}.conf"
    outcome, sink = await run(
        [target],
        [Step(name="touch", kind="shell", command=f"touch {mark}"),
         Step(name="script", kind="script", script=f"touch {mark}\n"),
         Step(name="conf", kind="upload", template="a = {{ a }}\n", dest=str(dest), mode="0600")],
        Strategy(check_mode=True),
        params={"a": 1},
    )
    assert not mark.exists() and not dest.exists()
    result = outcome.host(target.name)
    assert [(s.status, s.error) for s in result.steps] == [
        (StepStatus.SKIPPED, "check_mode"), (StepStatus.SKIPPED, "check_mode"),
        (StepStatus.CHANGED, ""),
    ]
    assert result.state == HostState.OK
    assert sink.of("step_started", target.name)[0][4] == f"touch {mark}"
    assert sink.of("diff")[0][3].endswith("+a = 1\n")
    assert sink.of("output") == []


# --- conditions, run_once, batches, failure threshold ----------------------------------


async def test_when_skips_steps_and_a_bad_expression_fails_the_host(ssh_lab):
    targets = lab_targets(ssh_lab, {"lab-001": {"role": "db"}, "lab-002": {"role": "web"}})[:3]
    outcome, sink = await run(
        targets,
        [Step(name="db only", kind="shell", command="echo db", when="labels.role == 'db'")],
    )
    assert [h.state for h in outcome.hosts] == ["ok", "skipped", "failed"]
    assert sink.of("step_finished", "lab-002")[0][3:] == (StepStatus.SKIPPED, None, "when")
    failed = outcome.host("lab-003")
    assert failed.error_reason == "render" and "role" in failed.error

    outcome, _ = await run(
        targets,
        [Step(name="guarded", kind="shell", command="echo {{ params.v }}",
              when="labels.role is defined and facts.os == 'debian' and params.v > 1")],
        params={"v": 2},
    )
    assert [h.state for h in outcome.hosts] == ["ok", "ok", "skipped"]


async def test_run_once_runs_on_the_first_host_only_across_batches(ssh_lab, tmp_path):
    targets = lab_targets(ssh_lab)[:5]
    log = tmp_path / "once.log"
    outcome, sink = await run(
        targets,
        [Step(name="migrate", kind="shell", command=f"echo {{{{ host }}}} >> {log}",
              run_once=True),
         Step(name="after", kind="shell", command="echo after")],
        Strategy(batches=["1", "2"]),
    )
    assert log.read_text() == "lab-001\n"
    assert all(h.state == HostState.OK for h in outcome.hosts)
    for name in ("lab-002", "lab-005"):
        assert sink.of("step_finished", name)[0][3:] == (StepStatus.SKIPPED, None, "run_once")

    # The first target that gets to it with `when` true, even when others are quicker.
    log.unlink()
    slow_first = lab_targets(ssh_lab, {"lab-001": {"skip": True}})[:4]
    outcome, _ = await run(
        slow_first,
        [Step(name="slow", kind="shell", command="sleep {{ 0.3 if host == 'lab-002' else 0 }}"),
         Step(name="migrate", kind="shell", command=f"echo {{{{ host }}}} >> {log}",
              run_once=True, when="labels.skip is not defined")],
        Strategy(parallelism=4),
    )
    assert log.read_text() == "lab-002\n"
    assert [h.steps[1].error for h in outcome.hosts] == ["when", "", "run_once", "run_once"]

    # A run_once step that fails stops the hosts that skipped it too.
    outcome, _ = await run(
        targets[:3], [Step(name="migrate", kind="shell", command="exit 2", run_once=True)],
        Strategy(parallelism=3),
    )
    assert [h.error_reason for h in outcome.hosts] == ["exit_status", "run_once", "run_once"]


async def test_batches_start_in_order_and_finish_before_the_next(ssh_lab):
    targets = lab_targets(ssh_lab)
    outcome, sink = await run(
        targets, [Step(name="echo", kind="shell", command="echo ok")],
        Strategy(batches=["1", "50%", "100%"], parallelism=3, pause_between_batches=0.05),
    )
    names = [t.name for t in targets]
    assert [e[1:] for e in sink.of("batch_started")] == [
        (0, names[:1]), (1, names[1:6]), (2, names[6:])
    ]
    # Every host of a batch finishes before the next batch starts.
    position = {e: i for i, e in enumerate(map(id, sink.events))}
    finished = {e[1]: position[id(e)] for e in sink.of("host_finished")}
    for batch in sink.of("batch_started")[1:]:
        earlier = names[:names.index(batch[2][0])]
        assert max(finished[n] for n in earlier) < position[id(batch)]
    assert outcome.ok


async def test_max_fail_percentage_aborts_the_remaining_hosts(ssh_lab):
    failing = {"lab-003": {"broken": True}, "lab-004": {"broken": True}}
    targets = lab_targets(ssh_lab, failing)
    outcome, sink = await run(
        targets,
        [Step(name="check", kind="shell",
              command="exit {{ 1 if labels.broken is defined else 0 }}")],
        Strategy(batches=["2"], max_fail_percentage=20),
    )
    assert outcome.aborted and not outcome.cancelled
    assert outcome.abort_reason.startswith("max_fail_percentage 20% exceeded: 2 of 4 hosts")
    assert [h.state for h in outcome.hosts[:4]] == ["ok", "ok", "failed", "failed"]
    for host in outcome.hosts[4:]:
        assert (host.state, host.error_reason) == ("cancelled", "aborted")
        assert host.error.startswith("aborted: max_fail_percentage")
        assert sink.for_host(host.name)[0][0] == "host_finished"
    assert len(sink.of("batch_started")) == 2


async def test_cancel_during_the_pause_between_batches(ssh_lab):
    targets = lab_targets(ssh_lab)[:4]
    cancel = asyncio.Event()
    asyncio.get_running_loop().call_later(0.5, cancel.set)
    started = time.monotonic()
    outcome, sink = await run(
        targets, [Step(name="echo", kind="shell", command="echo ok")],
        Strategy(batches=["2"], pause_between_batches=30), cancel=cancel,
    )
    assert time.monotonic() - started < 3
    assert [h.state for h in outcome.hosts] == ["ok", "ok", "cancelled", "cancelled"]
    assert outcome.cancelled and len(sink.of("batch_started")) == 1


# --- timeouts, cancel, connection failures ----------------------------------------------


async def test_a_step_timeout_fails_the_host(ssh_lab):
    target = lab_targets(ssh_lab)[0]
    started = time.monotonic()
    outcome, sink = await run(
        [target],
        [Step(name="slow script", kind="script", script='echo "$0"; sleep 5\n', timeout=0.5,
              continue_on_error=True),
         Step(name="slow", kind="shell", command="sleep 5", timeout=0.5)],
    )
    assert time.monotonic() - started < 4
    result = outcome.host(target.name)
    assert (result.state, result.error_reason) == ("failed", "timeout")
    assert result.error == "step 2 'slow': did not finish within 0.5s"
    script = sink.text(target.name, 0).strip()
    assert script.startswith("/tmp/opsplane-") and not Path(script).exists()


def processes_with(text):
    """Pids of the processes on this machine whose command line contains ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if entry.name.isdigit() and text.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
    return found


async def test_cancel_stops_new_hosts_and_kills_running_commands(ssh_lab):
    targets = lab_targets(ssh_lab)
    cancel, sink = asyncio.Event(), RecordingSink()
    execution, command = await start_sleeps(targets, sink, cancel)
    cancel.set()
    cancelled_at = time.monotonic()
    outcome = await asyncio.wait_for(execution, 5)
    assert time.monotonic() - cancelled_at < 2
    await wait_until_gone(command, cancelled_at)
    check_event_order(sink, targets, outcome)

    assert outcome.cancelled and not outcome.aborted
    assert all(h.state == HostState.CANCELLED for h in outcome.hosts)
    ran = [h for h in outcome.hosts if h.started_at is not None]
    assert [h.name for h in ran] == ["lab-001", "lab-002", "lab-003"]
    for host in ran:
        assert host.error == "cancelled during step 1 'sleep'"
        assert sink.of("step_finished", host.name)[0][3] == StepStatus.CANCELLED
    for host in outcome.hosts[3:]:
        assert (host.error_reason, host.error) == ("cancelled", "cancelled before it started")
        assert sink.of("host_started", host.name) == []


async def start_sleeps(targets, sink, cancel, parallelism=3):
    """Start a run of a uniquely long ``sleep`` and return (task, sleep command) once
    ``parallelism`` of them run on the lab."""
    # A unique sleep length is the marker: it shows in the sleep's own command line.
    command = f"sleep 300.{random.randrange(10**8):08d}"
    execution = asyncio.create_task(engine.execute(
        targets, [Step(name="sleep", kind="shell", command=f"echo started; {command}")],
        Strategy(parallelism=parallelism), params={}, sink=sink, cancel=cancel,
    ))
    deadline = time.monotonic() + 10
    while len(processes_with(command)) < parallelism:
        assert time.monotonic() < deadline, "the sleeps did not start"
        assert not execution.done(), execution
        await asyncio.sleep(0.05)
    return execution, command


async def wait_until_gone(command, since):
    while processes_with(command):
        assert time.monotonic() - since < 2, "the remote command outlived the cancel"
        await asyncio.sleep(0.05)


async def test_cancel_ends_the_command_on_openssh_too(sshd):
    target = Target(name="sshd", spec=sshd.spec())
    cancel, sink = asyncio.Event(), RecordingSink()
    execution, command = await start_sleeps([target], sink, cancel, parallelism=1)
    cancel.set()
    cancelled_at = time.monotonic()
    outcome = await asyncio.wait_for(execution, 5)
    assert outcome.host("sshd").state == HostState.CANCELLED
    await wait_until_gone(command, cancelled_at)


async def test_cancelling_execute_itself_closes_every_session(ssh_lab):
    targets = lab_targets(ssh_lab)
    execution, command = await start_sleeps(targets, RecordingSink(), asyncio.Event())
    execution.cancel()
    cancelled_at = time.monotonic()
    with pytest.raises(asyncio.CancelledError):
        await execution
    assert time.monotonic() - cancelled_at < 2.5
    await wait_until_gone(command, cancelled_at)


async def test_a_failing_sink_stops_the_run_and_closes_every_session(ssh_lab):
    class FailingSink(RecordingSink):
        async def output(self, name, step_index, stream, text):
            if name == "lab-002":
                raise RuntimeError("database down")
            await super().output(name, step_index, stream, text)

    targets = lab_targets(ssh_lab)
    sink = FailingSink()
    execution = asyncio.create_task(engine.execute(
        targets, [Step(name="sleep", kind="shell", command="echo started; sleep 300.4242")],
        Strategy(parallelism=3), params={}, sink=sink, cancel=asyncio.Event(),
    ))
    with pytest.raises(RuntimeError, match="database down"):
        await asyncio.wait_for(execution, 10)
    failed_at = time.monotonic()
    assert sink.of("run_finished") == []
    await wait_until_gone("sleep 300.4242", failed_at)


async def test_a_wrong_host_key_or_a_closed_port_fails_only_that_host(ssh_lab):
    targets = lab_targets(ssh_lab)[:4]
    other_key = ssh.public_key_line(asyncssh.generate_private_key("ssh-ed25519"))
    targets[1] = replace(targets[1], spec=replace(targets[1].spec, host_keys=[other_key]))
    closed = replace(targets[2].spec, host="127.0.0.1", port=free_port())
    targets[2] = replace(targets[2], spec=closed)
    targets.append(Target(name="no-credential", spec=None, error="credential unreadable: bad key",
                          error_reason="credential"))
    outcome, sink = await run(targets, [Step(name="echo", kind="shell", command="echo ok")])
    states = [(h.state, h.error_reason) for h in outcome.hosts]
    assert states == [
        ("ok", ""), ("unreachable", "host_key"), ("unreachable", "refused"), ("ok", ""),
        ("failed", "credential"),
    ]
    assert "does not match the pinned key" in outcome.hosts[1].error
    assert outcome.hosts[4].error == "credential unreadable: bad key"
    assert sink.text("lab-004") == "ok\n"


# --- secrets, ordering, scale ------------------------------------------------------------


async def test_secrets_are_masked_everywhere_even_split_across_chunks(ssh_lab):
    target = lab_targets(ssh_lab)[0]
    home = lab_home(ssh_lab, target.name)
    dest = home / f"secret-{marker()}.conf"
    outcome, sink = await run(
        [target],
        [Step(name="split", kind="shell",
              command="printf 'pw=hun'; sleep 0.2; printf 'ter2\\n'; printf hunt >&2; "
                      "sleep 0.1; printf 'er2!' >&2"),
         Step(name="param", kind="shell", command="echo {{ password }} token={{ token }}"),
         Step(name="conf", kind="upload", template="password = {{ password }}\n",
              dest=str(dest)),
         Step(name="fail", kind="shell", command="exit 1 # {{ password }}")],
        params={"password": "s3cr3t-pw", "token": "t0k-9"},
        secrets=["hunter2", "s3cr3t-pw", "t0k-9"],
    )
    assert sink.text(target.name, 0) == "pw=********\n"
    assert sink.text(target.name, 0, "stderr") == "********!"
    assert len(sink.of("output", target.name)) >= 3  # it did arrive in pieces
    assert sink.text(target.name, 1) == "******** token=********\n"
    assert sink.of("step_started")[1][4] == "echo ******** token=********"
    assert sink.of("diff")[0][3].endswith("+password = ********\n")
    assert dest.read_text() == "password = s3cr3t-pw\n"  # the file itself has the value
    assert sink.of("step_started")[3][4] == "exit 1 # ********"
    everything = repr(sink.events)
    for value in ("hunter2", "s3cr3t-pw", "t0k-9"):
        assert value not in everything
    assert outcome.host(target.name).state == HostState.FAILED


async def test_output_order_is_kept_per_host_and_stream(ssh_lab):
    targets = lab_targets(ssh_lab)
    outcome, sink = await run(
        targets,
        [Step(name="count", kind="shell",
              command="seq 1 20000; seq 1 3000 >&2; echo {{ host }}")],
        secrets=["no-such-secret-in-output"],
    )
    assert outcome.ok
    numbers = "".join(f"{n}\n" for n in range(1, 20001))
    for target in targets:
        assert sink.text(target.name) == numbers + f"{target.name}\n"
        assert sink.text(target.name, stream="stderr").splitlines() == [
            str(n) for n in range(1, 3001)
        ]


@pytest.fixture(scope="module")
def large_lab(tmp_path_factory):
    with contextlib.ExitStack() as stack:
        try:
            inventory = stack.enter_context(run_lab(
                LARGE_LAB_HOSTS, tmp_path_factory.mktemp("large-lab"), base=LARGE_LAB_BASE
            ))
        except Unavailable as exc:
            unavailable(f"SSH lab: {exc}")
        yield inventory


async def test_two_hundred_hosts_all_ok(large_lab):
    targets = lab_targets(large_lab)
    assert len(targets) == LARGE_LAB_HOSTS
    started = time.monotonic()
    outcome, sink = await run(
        targets, [Step(name="echo", kind="shell", command="echo ok")], Strategy(parallelism=100)
    )
    elapsed = time.monotonic() - started
    assert outcome.ok, [h for h in outcome.hosts if h.state != HostState.OK][:3]
    assert all(sink.text(t.name) == "ok\n" for t in targets)
    assert elapsed < 30, f"{LARGE_LAB_HOSTS} hosts took {elapsed:.1f}s"
