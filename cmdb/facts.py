"""Facts gathered over SSH: one POSIX shell script, its output parsed into a dict.

Plain asyncio on top of ``opsplane.ssh`` (no Django import): ``cmdb.services.gather_facts``
builds the connection specs and stores what comes back.
"""

import asyncio
import re
from dataclasses import dataclass

from opsplane import ssh

# Prints `key=value` lines (and `disk=`/`ip=` once per item) using only POSIX tools and
# /proc, so it works on minimal images without Python. Missing tools leave a fact out.
FACTS_SCRIPT = r"""
exec 2>/dev/null
LC_ALL=C; export LC_ALL
echo "hostname=$(hostname 2>/dev/null || uname -n)"
if [ -r /etc/os-release ]; then
  . /etc/os-release
  echo "os_name=${NAME:-}"
  echo "os_id=${ID:-}"
  echo "os_version=${VERSION_ID:-}"
  echo "os_pretty=${PRETTY_NAME:-}"
else
  echo "os_name=$(uname -s)"
fi
echo "kernel=$(uname -r)"
echo "arch=$(uname -m)"
echo "cpu_count=$(getconf _NPROCESSORS_ONLN 2>/dev/null || nproc)"
awk '/^MemTotal:/ {print "memory_kb=" $2}' /proc/meminfo
awk '{print "uptime_seconds=" int($1)}' /proc/uptime
df -P -k -x tmpfs -x devtmpfs -x overlay -x squashfs 2>/dev/null | \
  awk 'NR > 1 {print "disk=" $6 "|" $1 "|" $2 "|" $3 "|" $4}'
if command -v ip >/dev/null; then
  ip -o addr show scope global | awk '{split($4, a, "/"); print "ip=" $2 "|" a[1]}'
else
  for a in $(hostname -I 2>/dev/null); do echo "ip=|$a"; done
fi
echo "facts_done=1"
"""


TEXT_FACTS = {"hostname", "os_name", "os_id", "os_version", "os_pretty", "kernel", "arch"}


class FactsError(Exception):
    reason = "protocol"


def parse_facts(output):
    """The dict of facts ``FACTS_SCRIPT`` printed. Raises ``FactsError`` when the script
    did not run to the end (the shell is not POSIX, or output was cut)."""
    facts = {"disks": [], "ip_addresses": []}
    done = False
    for line in output.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        value = value.strip()
        if key == "facts_done":
            done = True
        elif key == "disk":
            mount, device, size, used, avail = (value.split("|") + [""] * 5)[:5]
            if size.isdigit():
                facts["disks"].append({
                    "mount": mount, "device": device, "size_kb": int(size),
                    "used_kb": int(used or 0), "available_kb": int(avail or 0),
                })
        elif key == "ip":
            interface, _, address = value.partition("|")
            facts["ip_addresses"].append({"interface": interface, "address": address})
        elif key in {"cpu_count", "memory_kb", "uptime_seconds"}:
            if re.fullmatch(r"\d+", value):
                facts[key] = int(value)
        elif key in TEXT_FACTS and value:
            facts[key] = value
    if not done:
        raise FactsError("the facts script did not finish (no POSIX shell, or output cut)")
    return facts


@dataclass
class Outcome:
    """What happened on one host: ``facts`` on success, else ``reason`` + ``detail``."""

    name: str
    facts: dict | None = None
    reason: str = ""
    detail: str = ""
    presented_key: str = ""  # host_key failures: the key the host offered


async def gather(specs, *, concurrency=50, timeout=60):
    """Run the facts script on every spec, ``concurrency`` hosts at a time. One host's
    failure (timeout, refused, auth, host key) is its outcome; it never stops the others."""
    limit = asyncio.Semaphore(concurrency)

    async def one(spec):
        async with limit:
            try:
                async with asyncio.timeout(timeout):
                    conn = await ssh.connect(spec)
                    async with conn:
                        result = await ssh.run(conn, "/bin/sh -s", stdin=FACTS_SCRIPT,
                                               timeout=timeout)
                return Outcome(spec.name, facts=parse_facts(result.stdout))
            except ssh.SSHError as exc:
                return Outcome(spec.name, reason=exc.reason, detail=str(exc),
                               presented_key=getattr(exc, "presented_key", "") or "")
            except TimeoutError:
                return Outcome(spec.name, reason="timeout",
                               detail=f"{spec.label}: no facts within {timeout:g}s")
            except FactsError as exc:
                return Outcome(spec.name, reason=exc.reason, detail=f"{spec.label}: {exc}")

    return await asyncio.gather(*(one(spec) for spec in specs))
