"""How many CPU threads icm's command line gives torch.

PyTorch starts one OpenMP thread per core and its threads spin while they
wait for each other.  Beside another busy process that is a collapse, not a
slowdown: on a 2-core machine with one other busy process, refining one 224²
crop took 243–399 s at 2 threads against 4.8 s idle, because every small
operation waits for a thread the scheduler has given to the other process.
So, unless told otherwise, icm takes the cores it may run on (its CPU
affinity) less those the machine's recent load says are busy, and never fewer
than one, as ``make -l`` does:

1. ``--threads N`` on the command line, if given;
2. otherwise ``OMP_NUM_THREADS`` (or ``ICM_NUM_THREADS``), if set;
3. otherwise the cores less the busy ones, at least 1.  Busy cores are the
   larger of the 1-minute load average (rounded) and the number of other
   threads runnable right now (``/proc/loadavg``, read three times): the load
   average alone takes about a minute to notice a process that just started.

``benchmarks/threads.py`` measures the policy idle and beside a busy process.
"""

from __future__ import annotations

import os
import sys

from .errors import IcmError

ENV_VARS = ("ICM_NUM_THREADS", "OMP_NUM_THREADS")


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def busy_cores() -> int:
    """Cores other work keeps busy (0 where the OS does not say): the larger of the
    rounded 1-minute load average and the median count of other runnable threads."""
    try:
        load = int(os.getloadavg()[0] + 0.5)
    except (AttributeError, OSError):
        load = 0
    return max(load, _runnable_now())


def _runnable_now(reads: int = 3) -> int:
    """Threads runnable right now besides this one (Linux's ``/proc/loadavg``), median of ``reads``."""
    import time

    counts = []
    for i in range(reads):
        try:
            with open("/proc/loadavg") as f:
                counts.append(int(f.read().split()[3].split("/")[0]) - 1)
        except (OSError, ValueError, IndexError):
            return 0
        if i + 1 < reads:
            time.sleep(0.005)
    return max(0, sorted(counts)[len(counts) // 2])


def from_env() -> int | None:
    """The thread count an environment variable asks for, or ``None``.

    Raises:
        IcmError: the variable is set but not a whole number ≥ 1.
    """
    for name in ENV_VARS:
        raw = os.environ.get(name, "").strip()
        if raw:
            try:
                n = int(raw)
            except ValueError:
                n = 0
            if n < 1:
                raise IcmError(f"{name}={raw!r}: give a whole number of threads >= 1")
            return n
    return None


def default_threads() -> int:
    """The policy above, without ``--threads``."""
    asked = from_env()
    if asked is not None:
        return asked
    cores = usable_cores()
    return max(1, min(cores, cores - busy_cores()))


_pending: int | None = None


def apply(threads: int | None = None, defer: bool = False) -> int:
    """Give torch ``threads`` (or :func:`default_threads`) intra-op threads; returns the number.

    With ``defer`` and torch not imported yet, the number is only decided (an
    environment variable that is not a number is refused now) and given to torch by
    :func:`apply_pending`, once a command knows it needs torch: ``icm analyze`` and
    ``icm decompress`` refuse files from their headers without importing it."""
    global _pending
    n = threads if threads is not None else default_threads()
    if defer and "torch" not in sys.modules:
        _pending = n
        return n
    import torch

    _pending = None
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def apply_pending() -> None:
    """Give torch the thread count that a deferred :func:`apply` decided, if any."""
    if _pending is not None:
        apply(_pending)
