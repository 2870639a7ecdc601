"""Process pools whose workers share the cores deliberately and die with their parent.

Without this, a ``kill -9`` of ``sgn data synth`` left its workers running (about 400 MB
each), and every worker started one torch/BLAS thread per core, oversubscribing the
machine ``jobs`` times.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Iterator, Mapping

from sgn.utils import SGNError

_PR_SET_PDEATHSIG = 1
THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
# In a pool worker: how many of the pool's tasks run now (shared by its workers; see running_task).
_running = None


def share_of_cores(processes: int) -> int:
    """Threads for each of ``processes`` processes that share this machine's cores equally (at least 1)."""
    return max(1, (os.cpu_count() or 1) // processes)


@contextlib.contextmanager
def worker_pool(jobs: int, threads: int = 1) -> Iterator[ProcessPoolExecutor]:
    """A spawned pool of ``jobs`` workers of ``threads`` threads each, ended with the block.

    "spawn": workers never inherit the parent's threads (torch, tqdm) or locks. Each worker
    ends when this process dies, even by ``kill -9``. The thread counts reach the workers'
    libraries, which read them when they load, and any process a worker starts (a
    notebook kernel), through the environment: set for the block, since the pool starts
    its workers at the first submission.
    """
    saved = {name: os.environ.get(name) for name in THREAD_ENV}
    os.environ.update({name: str(threads) for name in THREAD_ENV})
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(jobs, mp_context=context, initializer=_die_with_parent,
                               initargs=(os.getpid(), threads, context.Value("i", 0)))
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # no worker writes after the caller's cleanup
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def running_task() -> Iterator[None]:
    """Count the block as one of its pool's running tasks, for :func:`rebalance_threads` (nothing
    outside a pool worker)."""
    if _running is None:
        yield
        return
    with _running.get_lock():
        _running.value += 1
    try:
        yield
    finally:
        with _running.get_lock():
            _running.value -= 1


def rebalance_threads() -> None:
    """In a pool worker, give torch an equal share of the cores among the pool's running tasks
    (:func:`running_task`), so that a run left alone by its finished siblings takes the cores they
    leave idle; nothing outside a pool worker. Cheap enough to call every training step."""
    running = 0 if _running is None else _running.value
    if running < 1:  # not in a pool worker, or in one whose task is not counted
        return
    threads = share_of_cores(running)
    torch = sys.modules["torch"]
    if threads != torch.get_num_threads():
        torch.set_num_threads(threads)


def watched(pool: ProcessPoolExecutor, futures: Mapping[Future, str], stall_s: float, doing: str) -> Iterator[Any]:
    """Yield each future's result as it completes. A worker that dies (a crash in native code
    kills it with a signal) or no result within ``stall_s`` seconds (a hang) ends the pool and
    raises one :class:`SGNError` naming what the unfinished futures were working on
    (``futures[f]``: a file) and ``doing``."""
    pending = set(futures)
    while pending:
        done, pending = wait(pending, timeout=stall_s, return_when=FIRST_COMPLETED)
        if not done:
            _kill_workers(pool)
            raise SGNError(f"{_names(futures, pending)}: no progress {doing} for {stall_s:g} s; stopped "
                           "(a damaged file can hang its native reader)")
        for future in done:
            try:
                yield future.result()
            except BrokenProcessPool:
                _kill_workers(pool)
                raise SGNError(f"{_names(futures, pending | {future})}: a worker died {doing} (killed by a "
                               "signal: a crash in native code, most likely on a damaged file)") from None


def _names(futures: Mapping[Future, str], unfinished: set[Future]) -> str:
    return ", ".join(sorted({futures[f] for f in unfinished}))


def _kill_workers(pool: ProcessPoolExecutor) -> None:
    """SIGKILL the pool's workers, so that its shutdown does not wait on a hung one."""
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        with contextlib.suppress(OSError, ValueError):
            process.kill()


def _die_with_parent(parent_pid: int, threads: int, running) -> None:
    """Pool initializer: an end when ``parent_pid`` dies, torch's threads if it is loaded already,
    and the pool's count of running tasks (``running``, a shared integer).

    Linux delivers SIGKILL on the parent's death (``prctl(PR_SET_PDEATHSIG)``); elsewhere a
    daemon thread polls the parent pid.
    """
    global _running
    _running = running
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    if not _kill_me_with_parent():
        threading.Thread(target=_exit_when_orphaned, args=(parent_pid,), daemon=True).start()
    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        os._exit(1)


def _kill_me_with_parent() -> bool:
    """Arm ``PR_SET_PDEATHSIG`` with SIGKILL; False where prctl is not available."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _exit_when_orphaned(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(0.5)
    os._exit(1)
