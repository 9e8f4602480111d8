"""The local sweep backend: child processes, each on its own slice of the machine's GPUs.

**Devices.** The sweep shares out a list of GPUs (its ``devices``: by default the ones it sees,
``CUDA_VISIBLE_DEVICES``'s entries or ``0 .. n-1``). A run needing ``k`` of them takes the first
``k`` free ones from a queue, runs with ``CUDA_VISIBLE_DEVICES`` set to them, and puts them back
at the end of the queue when it ends, whether it finished or crashed. Runs start in order; one
that needs more devices than are free waits (and the runs behind it with it) until enough are.

**Start methods.** ``fork`` (the default on Linux) pays the imports once; the children ask the
kernel to kill them when the sweep dies (``prctl(PR_SET_PDEATHSIG)``, Linux only). ``spawn`` (the
default elsewhere: macOS, Windows) starts each child as a fresh interpreter that imports dalib
again, and the child watches a pipe from the sweep: when the sweep dies, however it dies, the
operating system closes the pipe and the child exits. Under ``spawn`` the pipe is the only
inherited handle, so no other child holds it open.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, TypeVar

from dalib.errors import DalibError

#: How a run is started: ``dalib``'s entry point, given the ``fit ...`` command line.
Main = Callable[[list[str]], None]
T = TypeVar("T")
START_METHODS = ("fork", "spawn")
#: How a child that saw its sweep die ends itself: at once, like the sweep's ``prctl`` children
#: (on Windows, where there is no SIGKILL, ``os.kill`` with SIGTERM is ``TerminateProcess``).
KILL = getattr(signal, "SIGKILL", signal.SIGTERM)


def default_start_method() -> str:
    """``fork`` where the kernel can kill orphaned children (Linux), ``spawn`` elsewhere."""
    return "fork" if sys.platform.startswith("linux") else "spawn"


def check_start_method(method: str) -> str:
    if method not in START_METHODS:
        raise DalibError(f"start_method must be one of {', '.join(START_METHODS)}, got {method!r}")
    if method == "fork" and not sys.platform.startswith("linux"):
        raise DalibError(
            f"start_method: fork needs Linux (to end the runs with the sweep); on {sys.platform} "
            "use spawn"
        )
    return method


def visible_devices() -> list[str]:
    """The GPUs this process may use, as ``CUDA_VISIBLE_DEVICES`` names them for a child.

    Counted through NVML, which does not initialise CUDA, so forked children can still use it.
    """
    import torch

    count = torch.cuda.device_count()
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is None:
        return [str(index) for index in range(count)]
    return [name.strip() for name in listed.split(",") if name.strip()][:count]


def device_list(value: Any) -> list[str]:
    """A sweep file's ``devices``: a count (``4``: GPUs 0-3) or a list of GPU ids or UUIDs."""
    if isinstance(value, bool) or not isinstance(value, int | list) or value == []:
        raise DalibError(f"devices must be a count or a non-empty list of GPU ids, got {value!r}")
    if isinstance(value, int):
        if value < 1:
            raise DalibError(f"devices must be a count >= 1 or a list of GPU ids, got {value}")
        return [str(index) for index in range(value)]
    names = [str(name) for name in value]
    if len(set(names)) != len(names):
        raise DalibError(f"devices lists a GPU twice: {value}")
    return names


class DeviceSlots:
    """The queue of free devices: a run takes the first ``n``; they go back to its end."""

    def __init__(self, devices: Sequence[str]) -> None:
        self.free = list(devices)

    def take(self, count: int) -> list[str] | None:
        """``count`` free devices, or None (and nothing taken) if fewer are free."""
        if count > len(self.free):
            return None
        taken, self.free = self.free[:count], self.free[count:]
        return taken

    def put_back(self, devices: Sequence[str]) -> None:
        self.free.extend(devices)


def die_with_parent(watch: Connection | None) -> None:
    """End this child when the sweep ends: by the kernel (``watch`` None, Linux) or when the
    sweep's end of the ``watch`` pipe closes (every platform)."""
    if watch is None:
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        return

    def wait_for_eof() -> None:
        with contextlib.suppress(EOFError, OSError):
            watch.recv_bytes()  # the sweep never writes: this returns only at its end
        os.kill(os.getpid(), KILL)

    threading.Thread(target=wait_for_eof, name="dalib-sweep-watch", daemon=True).start()


def child(
    dalib_main: Main, arguments: list[str], log: Path, devices: str | None, watch: Connection | None
) -> None:
    """One run: dies with the sweep, sees only its ``devices``, writes its output to ``log``.

    A forked child ends with ``os._exit``, which skips ``atexit``: a wandb run the child
    started is finished explicitly so that it is flushed and synced as at a normal exit (a run
    the forked parent had open is the parent's to finish).
    """
    die_with_parent(watch)
    if devices is not None:  # before anything initialises CUDA
        os.environ["CUDA_VISIBLE_DEVICES"] = devices
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    os.dup2(fd, 1), os.dup2(fd, 2)
    inherited = wandb_run()
    try:
        dalib_main(arguments)
    finally:
        run = wandb_run()
        if run is not None and run is not inherited:
            run.finish()


def wandb_run() -> Any:
    """The current wandb run, if wandb is imported (only when a run logs to it) and has one."""
    wandb = sys.modules.get("wandb")
    return None if wandb is None else wandb.run


def run_local(
    todo: Sequence[tuple[T, int]],
    prepare: Callable[[T], tuple[list[str], Path]],
    dalib_main: Main,
    processes: int,
    devices: Sequence[str],
    start_method: str,
) -> Iterator[tuple[T, int, list[str]]]:
    """Yield ``(job, exit code, its devices)`` as runs finish, ``processes`` at a time.

    ``todo`` pairs each job with the number of ``devices`` it needs (0: it is given none, and
    ``CUDA_VISIBLE_DEVICES`` is left as it is); ``prepare`` gives its command line and log file.
    """
    context = multiprocessing.get_context(check_start_method(start_method))
    slots = DeviceSlots(devices)
    running: dict[Any, tuple[T, Any, list[str], Connection | None]] = {}
    queue = list(todo)
    while queue or running:
        while queue and len(running) < processes:
            job, need = queue[0]
            taken = slots.take(need)
            if taken is None and not running:
                raise DalibError(f"a run needs {need} GPUs; the sweep has {len(slots.free)}")
            if taken is None:
                break
            queue.pop(0)
            arguments, log = prepare(job)
            watch, keep = context.Pipe(duplex=False) if start_method == "spawn" else (None, None)
            visible = ",".join(taken) if need else None
            process = context.Process(
                target=child, args=(dalib_main, arguments, log, visible, watch)
            )
            process.start()
            if watch is not None:
                watch.close()  # the child's end; the sweep keeps `keep` open while it lives
            running[process.sentinel] = (job, process, taken, keep)
        for sentinel in wait(list(running)):
            job, process, taken, keep = running.pop(sentinel)
            process.join()
            if keep is not None:
                keep.close()
            slots.put_back(taken)
            yield job, process.exitcode, taken
