"""Executors: where the units of work of a stage run.

Stages never start processes themselves. Each one splits its work into independent
items (an input file, a shard, a query shard x index partition) and hands a function
and the items to an executor, which returns the results in input order. The stage's
driver then does the global pass (dedup, merges, the manifest) alone:

- ``LocalExecutor(workers)``: in this process, or a process pool of ``workers``
  processes for ``map``. The default; it never imports Ray.
- ``RayExecutor(address)``: Ray tasks for ``map`` (retried by Ray when their worker
  dies) and Ray actors for ``map_actors`` (stateful workers that load a model once;
  a killed actor is restarted and its task retried). Needs ``pip install 'miner[ray]'``.

Work items and results travel by pickle and every output goes to ``out``, so on a
cluster ``out`` (and the inputs) must be on a filesystem every node sees. Relative
paths are resolved against the driver's working directory on every worker.

Two calls::

    results = executor.map(fn, items, desc="prepare")            # fn(item) -> result
    results = executor.map_actors(make_worker, items, num_gpus=1)  # make_worker()(item)

``make_worker`` is a picklable callable (a class, a ``functools.partial``) that builds
the stateful worker; the worker is then called once per item.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, Callable, Optional, Sequence


from miner.config import EXECUTORS  # noqa: F401 - re-exported, defined once there
from miner.errors import MinerError
from miner.progress import Progress

log = logging.getLogger(__name__)

RAY_INSTALL = "pip install 'miner[ray]'"


class Executor:
    """The interface every executor implements (see the module docstring)."""

    name = "base"
    distributed = False  # True when tasks may run on other machines (the runner reads it)

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any], *, desc: str = "",
            num_cpus: float = 1, num_gpus: float = 0,
            on_result: Optional[Callable[[Any, Any], None]] = None) -> list:
        """``[fn(item) for item in items]``, possibly in parallel; results in input order.

        ``on_result(item, result)`` is called on the driver as each result arrives.
        """
        raise NotImplementedError

    def map_actors(self, make_worker: Callable[[], Callable[[Any], Any]], items: Sequence[Any],
                   *, desc: str = "", num_cpus: float = 1, num_gpus: float = 0,
                   max_workers: Optional[int] = None,
                   on_result: Optional[Callable[[Any, Any], None]] = None) -> list:
        """``worker = make_worker()`` once per worker, then ``worker(item)`` for each item;
        results in input order; ``on_result`` as for ``map``."""
        raise NotImplementedError

    def gpus(self) -> int:
        """GPUs this executor can give to ``map_actors(num_gpus=1)`` workers."""
        return 0

    def check_shared(self, directory: str | os.PathLike) -> None:
        """MinerError unless every worker sees ``directory`` (the run's outputs)."""

    def close(self) -> None:
        """Release what the executor holds (pools, the cluster connection)."""

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _die_with_parent(parent: int) -> None:
    """Process-pool initializer: on Linux, have the kernel SIGKILL this worker when its
    parent dies (``prctl(PR_SET_PDEATHSIG)``), so that a killed ``mine`` leaves no
    worker writing into its run folder; then exit at once if the parent already died
    before that was set. A no-op elsewhere.

    The signal follows the thread that started the worker: ``ProcessPoolExecutor``
    starts them from the thread calling ``submit`` and stops them before it returns.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    PR_SET_PDEATHSIG = 1
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
            log.debug("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
    except (OSError, AttributeError) as e:  # no libc, no prctl
        log.debug("cannot set PR_SET_PDEATHSIG: %s", e)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _pool_worker(parent: int, workers: int) -> None:
    """Process-pool initializer: die with the parent, and know how many siblings share
    the cores (``cores_per_worker``)."""
    os.environ[POOL_WORKERS_ENV] = str(workers)
    _die_with_parent(parent)


# set in pool workers: how many worker processes share this machine's cores
POOL_WORKERS_ENV = "MINER_POOL_WORKERS"


def cores_per_worker() -> int:
    """Threads one task may use: the usable cores shared among the pool's workers
    (all of them outside a pool), so N workers with threads do not oversubscribe."""
    try:
        workers = max(1, int(os.environ.get(POOL_WORKERS_ENV, "1")))
    except ValueError:
        workers = 1
    return max(1, usable_cores() // workers)


def usable_cores() -> int:
    """Cores this process may run on (the affinity mask, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _bar(total: int, desc: str):
    """Tasks done of ``total``: a bar on a terminal, a log line every 30 s elsewhere
    (miner.progress); nothing without ``desc``."""
    return Progress(desc, total=total, unit="task", enabled=bool(desc))


def _deliver(results: list, items: list, i: int, value, on_result, bar) -> None:
    """Result ``i`` arrived: keep it, hand it to ``on_result``, advance the bar."""
    results[i] = value
    if on_result:
        on_result(items[i], value)
    bar.update(1)


def _in_process(fn, items: list, desc: str, on_result) -> list:
    """``[fn(item) for item in items]`` here, one after the other, with a bar."""
    results = []
    with _bar(len(items), desc) as bar:
        for item in items:
            results.append(fn(item))
            if on_result:
                on_result(item, results[-1])
            bar.update(1)
    return results


class LocalExecutor(Executor):
    """Work in this process, or in a pool of ``workers`` spawned processes.

    ``workers=0`` means the usable cores; ``workers=1`` runs everything in-process
    (no pickling: ``map_actors`` may then close over live objects such as a loaded
    encoder). ``map_actors`` always runs one worker in-process: the model is loaded once.
    """

    name = "local"

    def __init__(self, workers: int = 0):
        if workers < 0:
            raise MinerError(f"workers must be 0 (all cores) or more, got {workers}")
        self.workers = workers or usable_cores()

    def map(self, fn, items, *, desc="", num_cpus=1, num_gpus=0, on_result=None) -> list:
        items = list(items)
        workers = max(1, min(self.workers, len(items)))
        results: list = [None] * len(items)
        if workers == 1:
            return _in_process(fn, items, desc, on_result)
        from concurrent.futures import as_completed

        with _bar(len(items), desc) as bar, self._pool(workers) as pool:
            futures = {pool.submit(fn, item): i for i, item in enumerate(items)}
            for future in as_completed(futures):
                _deliver(results, items, futures[future], future.result(), on_result, bar)
        return results

    def _pool(self, workers: int):
        """The pool ``map`` runs its items in: ``workers`` spawned processes."""
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        return ProcessPoolExecutor(max_workers=workers,
                                   mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_pool_worker, initargs=(os.getpid(), workers))

    def map_actors(self, make_worker, items, *, desc="", num_cpus=1, num_gpus=0,
                   max_workers=None, on_result=None) -> list:
        items = list(items)
        if not items:
            return []
        return _in_process(make_worker(), items, desc, on_result)


class ThreadExecutor(LocalExecutor):
    """``map`` over a pool of ``workers`` threads of this process (0: the usable cores).

    For steps whose work runs in numpy, pandas and Arrow, which release the GIL: no
    spawn, no pickling of the items and results (a process pool was twice slower for
    the score stage on 2 cores). Results in input order, as every executor.
    """

    name = "threads"

    def _pool(self, workers: int):
        from concurrent.futures import ThreadPoolExecutor

        return ThreadPoolExecutor(workers)


# -- Ray ---------------------------------------------------------------------------------

def _probe(cwd: str, path: str, token: str) -> Optional[str]:
    """A Ray task: None when ``path`` (a local path or URL) holds ``token`` on this node,
    else the node's IP and what went wrong."""
    from miner.storage import as_path

    if os.path.isdir(cwd):
        os.chdir(cwd)
    try:
        if as_path(path).read_text(encoding="utf-8") == token:
            return None
        problem = "another file"
    except (OSError, MinerError) as e:
        problem = str(e).splitlines()[0] if str(e) else type(e).__name__
    import ray

    return f"{ray.util.get_node_ip_address()} ({problem})"


def _run_task(cwd: str, fn: Callable, item: Any) -> Any:
    """A Ray task: ``fn(item)`` in the driver's working directory when it exists here."""
    if os.path.isdir(cwd):
        os.chdir(cwd)
    return fn(item)


class StageActor:
    """A Ray actor holding one stateful worker (e.g. an encoder loaded once).

    Its process is titled ``ray::StageActor`` (``ray::StageActor.run`` while working).
    """

    def __init__(self, cwd: str, make_worker: Callable[[], Callable[[Any], Any]]):
        if os.path.isdir(cwd):
            os.chdir(cwd)
        self.worker = make_worker()

    def run(self, item: Any) -> Any:
        return self.worker(item)


class RayExecutor(Executor):
    """Ray tasks and actors on the cluster at ``address`` (None: start a local one;
    ``"auto"``: the cluster this node belongs to).

    Tasks are retried ``max_retries`` times when their worker process dies; actors are
    restarted up to ``max_retries`` times and the task they were running is retried.
    Exceptions raised by the work itself are not retried: they reach the driver.
    """

    name = "ray"
    distributed = True

    def __init__(self, address: Optional[str] = None, max_retries: int = 3):
        try:
            import ray
        except ImportError:
            raise MinerError(f"--executor ray needs Ray: {RAY_INSTALL}") from None
        self.ray = ray
        self.address = address
        self.max_retries = max_retries
        self.cwd = os.getcwd()
        self._owns_init = False
        self._pool = None  # (key, actors) kept from the last map_actors call
        if not ray.is_initialized():
            try:
                ray.init(address=address, logging_level=logging.WARNING,
                         log_to_driver=True)
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise MinerError(f"cannot connect to the Ray cluster at {address or 'a new local cluster'}: "
                                 f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
            self._owns_init = True

    def _resources(self) -> dict:
        return self.ray.cluster_resources()

    def gpus(self) -> int:
        return int(self._resources().get("GPU", 0))

    def _get(self, ref):
        """``ray.get`` that hands the work's own MinerError to the driver unwrapped."""
        try:
            return self.ray.get(ref)
        except self.ray.exceptions.RayTaskError as e:
            cause = getattr(e, "cause", None)
            if isinstance(cause, MinerError):
                raise MinerError(str(cause)) from None
            raise

    def map(self, fn, items, *, desc="", num_cpus=1, num_gpus=0, on_result=None) -> list:
        items = list(items)
        if not items:
            return []
        self._release_actors()
        task = self.ray.remote(_run_task).options(num_cpus=num_cpus, num_gpus=num_gpus,
                                                  max_retries=self.max_retries,
                                                  retry_exceptions=False)
        fn_ref = self.ray.put(fn)
        refs = [task.remote(self.cwd, fn_ref, item) for item in items]
        index = {ref: i for i, ref in enumerate(refs)}
        results: list = [None] * len(items)
        pending = list(refs)
        with _bar(len(items), desc) as bar:
            while pending:
                done, pending = self.ray.wait(pending, num_returns=1)
                for ref in done:
                    _deliver(results, items, index[ref], self._get(ref), on_result, bar)
        return results

    def map_actors(self, make_worker, items, *, desc="", num_cpus=1, num_gpus=0,
                   max_workers=None, on_result=None) -> list:
        items = list(items)
        if not items:
            return []
        resources = self._resources()
        if num_gpus:
            slots = int(resources.get("GPU", 0) // num_gpus)
            if slots < 1:
                raise MinerError("the Ray cluster has no GPU for the GPU workers; "
                                 "add GPU nodes or use --device cpu")
        else:
            slots = int(resources.get("CPU", 1) // max(num_cpus, 1e-9))
        n = max(1, min(len(items), slots, max_workers or len(items)))
        actors = self._actors(make_worker, n, num_cpus, num_gpus)
        # a simple ordered pool: each actor takes the next item when it finishes one
        results: list = [None] * len(items)
        queue = list(enumerate(items))[::-1]
        running: dict = {}
        for actor in actors:
            if queue:
                i, item = queue.pop()
                running[actor.run.remote(item)] = (i, actor)
        with _bar(len(items), desc) as bar:
            while running:
                done, _ = self.ray.wait(list(running), num_returns=1)
                for ref in done:
                    i, actor = running.pop(ref)
                    _deliver(results, items, i, self._get(ref), on_result, bar)
                    if queue:
                        j, item = queue.pop()
                        running[actor.run.remote(item)] = (j, actor)
        return results

    def _actors(self, make_worker, n: int, num_cpus: float, num_gpus: float) -> list:
        """``n`` actors around ``make_worker``: those of the previous call when it built
        the same workers (the next language reuses the loaded models), else new ones."""
        from ray import cloudpickle

        key = (cloudpickle.dumps(make_worker), num_cpus, num_gpus)
        if self._pool is not None and self._pool[0] == key:
            actors = self._pool[1]
        else:
            self._release_actors()
            actors = []
        if len(actors) < n:
            actor_cls = self.ray.remote(StageActor).options(
                num_cpus=num_cpus, num_gpus=num_gpus, max_restarts=self.max_retries,
                max_task_retries=self.max_retries)
            actors = actors + [actor_cls.remote(self.cwd, make_worker)
                               for _ in range(n - len(actors))]
        self._pool = (key, actors)
        return actors[:n]

    def _release_actors(self) -> None:
        """Kill the kept actors, freeing their CPUs/GPUs for the next stage's tasks."""
        if self._pool is not None:
            for actor in self._pool[1]:
                self.ray.kill(actor)
            self._pool = None

    def check_shared(self, directory) -> None:
        """Write a probe file into ``directory`` and read it back on every alive node:
        outputs on a worker's local disk would be lost or split across nodes."""
        import uuid

        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        from miner.storage import RemotePath, as_path

        directory = as_path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        token = uuid.uuid4().hex
        path = directory / f".shared-probe-{token}"
        try:
            path.write_text(token, encoding="utf-8")
        except OSError as e:
            raise MinerError(f"{directory}: cannot write there ({e})") from None
        try:
            task = self.ray.remote(_probe)
            nodes = [n["NodeID"] for n in self.ray.nodes() if n.get("Alive")]
            refs = [task.options(num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(
                node, soft=False)).remote(self.cwd, str(path), token) for node in nodes]
            missing = [ip for ip in self.ray.get(refs) if ip is not None]
        finally:
            path.unlink(missing_ok=True)
        if missing:
            if isinstance(directory, RemotePath):
                raise MinerError(f"{directory} cannot be read from the Ray node(s) "
                                 f"{', '.join(sorted(set(missing)))}: give every node the store's "
                                 "credentials and endpoint (e.g. AWS_* variables), see docs/cluster.md")
            raise MinerError(f"{directory} is not shared with the Ray node(s) {', '.join(sorted(set(missing)))}: "
                             "put --out on a filesystem every node mounts at the same path "
                             "(NFS, EFS, Lustre, a bucket mount) or use a URL such as s3://bucket/run, "
                             "see docs/cluster.md")

    def close(self) -> None:
        self._release_actors()
        if self._owns_init and self.ray.is_initialized():
            self.ray.shutdown()


def make_executor(name: str = "local", ray_address: Optional[str] = None,
                  workers: int = 0) -> Executor:
    """Build an executor by name: ``local`` (default) or ``ray``; an unknown name or a
    missing Ray is a MinerError naming the fix."""
    if name == "local":
        if ray_address:
            raise MinerError("--ray-address needs --executor ray")
        return LocalExecutor(workers)
    if name == "ray":
        return RayExecutor(ray_address)
    raise MinerError(f"unknown executor {name!r}: choose one of {', '.join(EXECUTORS)}")


def executor_for(cfg) -> Executor:
    """The executor a ``Config`` asks for (``executor``, ``ray_address``, ``prepare.workers``)."""
    return make_executor(cfg.executor, cfg.ray_address, cfg.prepare.workers)
