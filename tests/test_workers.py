"""Pool workers share the cores among the tasks running now: a run left alone takes the idle cores."""

import os
import time

import pytest

from sgn.workers import rebalance_threads, running_task, share_of_cores, worker_pool


def _threads_once(running_together: int) -> tuple[int, int]:
    """In a pool worker: count as a running task, wait until ``running_together`` tasks run, rebalance;
    return torch's threads then, and the count of running tasks after this one ended."""
    import torch

    from sgn import workers

    with running_task():
        deadline = time.monotonic() + 60
        while workers._running.value < running_together:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{workers._running.value} of {running_together} tasks started")
            time.sleep(0.01)
        rebalance_threads()
        together = torch.get_num_threads()
        time.sleep(0.2)  # the others reach their own rebalance before any ends
    return together, workers._running.value


def _threads_uncounted() -> int:
    import torch

    rebalance_threads()  # not inside running_task: no share to take
    return torch.get_num_threads()


@pytest.mark.parametrize("tasks", [1, 2])
def test_running_tasks_share_the_cores_equally(tasks):
    with worker_pool(2, threads=1) as pool:
        results = [f.result(timeout=120) for f in [pool.submit(_threads_once, tasks) for _ in range(tasks)]]
    assert [threads for threads, _ in results] == [share_of_cores(tasks)] * tasks
    assert all(after < tasks for _, after in results)


def test_an_uncounted_task_and_the_parent_keep_their_threads():
    import torch

    with worker_pool(2, threads=1) as pool:
        assert pool.submit(_threads_uncounted).result(timeout=120) == 1
    before = torch.get_num_threads()
    rebalance_threads()  # the parent process: not a pool worker
    assert torch.get_num_threads() == before


def test_a_finished_task_is_no_longer_counted():
    with worker_pool(1, threads=1) as pool:
        first = pool.submit(_threads_once, 1).result(timeout=120)
        second = pool.submit(_threads_once, 1).result(timeout=120)
    assert first == second == (share_of_cores(1), 0)  # the second task saw only itself
    assert share_of_cores(1) == max(1, os.cpu_count() or 1)
