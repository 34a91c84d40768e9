"""The stage contract: what every stage declares, and the one runner that runs them.

A stage (prepare, embed, knn, score, bitext, report; think datatrove's
``PipelineStep`` or stopes' ``StopesModule``) declares

- ``tasks(ctx)``: its units of work, each a ``Task`` with a ``key`` (its name in the
  manifest), a ``fingerprint`` (the settings and input digests its output depends on)
  and a picklable ``item``;
- ``run_task(item)``: the work of one task (or ``worker_factory(ctx)`` for stages whose
  tasks share a loaded model); it returns a ``Result``: the files it wrote, counts,
  and any JSON data the finishing pass needs;
- ``finish(ctx, records)`` and ``finish_fingerprint(ctx)``: an optional global pass
  over the tasks' records (prepare's dedup, score's retrieval, bitext's filters);
- ``placement``: where tasks run (``pool``: a process pool or cluster tasks;
  ``actors``: workers holding a model, GPU actors on a cluster; ``driver``: this
  process, or cluster tasks when the executor is a cluster).

``Runner.run(stage)`` does the rest the same way for every stage on every executor:
it skips tasks that are current, runs the others where the stage's placement says,
records each finished task in the manifest, runs the finishing pass unless it is
current, times it all, and removes files an earlier record named that the new one
does not. "Current" has one meaning everywhere: the recorded fingerprint equals the
task's, and every file the record names still exists with its recorded size and (for
Parquet) row count. Downstream fingerprints use the recorded content digests of
upstream outputs (``RunContext.digest``), so a redone task that writes the same bytes
redoes nothing after it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional

import xxhash

from miner.config import Config
from miner.errors import MinerError
from miner.executor import Executor
from miner.manifest import Manifest, merge_counts, utc_now, versions
from miner.rundir import RunDir
from miner.storage import as_path

log = logging.getLogger(__name__)

PLACEMENTS = ("pool", "actors", "driver")
_RUNNER_KEYS = ("tasks", "tasks_run", "tasks_skipped", "this_run")  # added to counts by the runner


# -- what stages declare and return --------------------------------------------------

@dataclass(frozen=True)
class Task:
    """One unit of a stage's work."""

    key: str
    fingerprint: Any  # JSON-able; hashed into the manifest
    item: Any  # picklable; the argument of run_task / the worker


@dataclass
class Result:
    """What one task (or a finishing pass) did: files written, counts, and JSON data
    for the finishing pass (kept in the manifest with the task)."""

    outputs: list = field(default_factory=list)  # paths written (local or URLs)
    counts: dict = field(default_factory=dict)
    data: Any = None


def fingerprint_hash(value: Any) -> str:
    """A short stable hash of a JSON-able value."""
    blob = json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def describe_file(path) -> dict:
    """Size, content digest (xxh64) and, for Parquet, the row count of a written file."""
    path = as_path(path)
    h = xxhash.xxh64()
    size = 0
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
            size += len(block)
    desc = {"bytes": size, "digest": h.hexdigest()}
    if path.name.endswith(".parquet"):
        from miner.formats import num_rows

        desc["rows"] = num_rows(path)
    return desc


def describe_result(result: Result) -> dict:
    """A task's result as it is recorded: outputs described, in the worker that wrote
    them (no second read of big files on the driver)."""
    return {"outputs": {str(p): describe_file(p) for p in result.outputs},
            "counts": result.counts, "data": result.data}


class Stage:
    """Base class of the stages; see the module docstring for the contract."""

    name: str = "stage"
    placement: str = "driver"

    def check(self, ctx: "RunContext") -> None:
        """Refuse to start (MinerError) when an input is missing; called first."""

    def tasks(self, ctx: "RunContext") -> list[Task]:
        return []

    def run_task(self, item: Any) -> Result:
        raise NotImplementedError(f"{self.name}: run_task")

    def worker_factory(self, ctx: "RunContext") -> Callable[[], Callable[[Any], Result]]:
        """For ``actors`` placement: a picklable callable that builds the stateful worker
        (once per worker process; Ray keeps the actors of equal factories, so the next
        language reuses loaded models). Default: a worker that is ``run_task``."""
        return functools.partial(_identity, self.run_task)

    def num_gpus(self, ctx: "RunContext") -> float:
        return 0

    def run_pending(self, ctx: "RunContext", pending: list[Task],
                    done: Callable[[Task, dict], None]) -> None:
        """Run ``pending`` tasks where ``placement`` says, calling ``done(task,
        described_result)`` as each finishes. Stages with a plan of their own (kNN on a
        cluster: query shard x partition tasks and merges) override this."""
        by_item = {id(t.item): t for t in pending}
        items = [t.item for t in pending]
        on_result = lambda item, r: done(by_item[id(item)], r)  # noqa: E731
        if self.placement == "actors":
            ctx.executor.map_actors(_DescribingFactory(self.worker_factory(ctx)), items,
                                    desc=self.name, num_gpus=self.num_gpus(ctx),
                                    on_result=on_result)
        elif self.placement == "pool" or ctx.cluster is not None:
            ctx.executor.map(_Describing(self.run_task), items, desc=self.name,
                             on_result=on_result)
        else:  # in this process
            for task in pending:
                done(task, describe_result(self.run_task(task.item)))

    def finish_fingerprint(self, ctx: "RunContext") -> Any:
        """What the finishing pass depends on besides the tasks' outputs; None: no pass."""
        return None

    def finish(self, ctx: "RunContext", records: dict[str, dict]) -> Result:
        return Result()

    def summary(self, counts: dict) -> str:
        """The progress line after the stage ran."""
        return "done"

    def report(self, counts: dict) -> dict:
        """The stage's counts as recorded and returned by ``Runner.run``, from the merged
        counts of every task and the finishing pass plus ``tasks``, ``tasks_run``,
        ``tasks_skipped`` and ``this_run`` (the counts of the tasks run this time)."""
        return counts


def _identity(x):
    return x


class _Describing:
    """A task function whose results come back described (``describe_result``)."""

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, item):
        return describe_result(self.fn(item))


class _DescribingFactory:
    """A worker factory whose workers' results come back described."""

    def __init__(self, factory):
        self.factory = factory

    def __call__(self):
        return _Describing(self.factory())


# -- the context a stage runs in ------------------------------------------------------

@dataclass
class RunContext:
    """What the runner hands every stage."""

    cfg: Config
    run: RunDir
    executor: Executor
    manifest: "Manifest"
    progress: Callable[[str], None] = print

    @property
    def cluster(self) -> Optional[Executor]:
        """The executor when tasks may leave this machine (Ray), else None: local
        stages then keep their work in this process."""
        return self.executor if self.executor.distributed else None

    def digest(self, path) -> str:
        """The content digest of an input file: as recorded by the stage that wrote it
        when the file still has its recorded size, else read from the file."""
        rel = self.run.relative(path) if _under(path, self.run) else str(path)
        rec = self.manifest.output(rel)
        p = as_path(path)
        if not p.exists():
            raise MinerError(f"{path}: no such file")
        if rec is not None and rec.get("bytes") == p.stat().st_size:
            return rec["digest"]
        return describe_file(p)["digest"]

    def input_shards(self, stage: str, directory, missing: str) -> list:
        """A stage's input: the files under ``directory`` that stage ``stage`` recorded,
        in order (one that is gone is an error naming it), or, when it recorded none
        (a folder written by other means), the ``part-*.parquet`` files there. None at
        all is the error ``{directory}: {missing}``."""
        rel = self.run.relative(directory).rstrip("/") + "/"
        mine = sorted(f for f in self.manifest.stage_outputs(stage) or ()
                      if f.startswith(rel) and "/" not in f[len(rel):])
        for f in mine:
            if not self.run.resolve(f).exists():
                raise MinerError(f"{self.run.resolve(f)}: missing (written by {stage}); "
                                 f"rerun `mine run` or the {stage.split('/')[0]} stage")
        shards = [self.run.resolve(f) for f in mine] or RunDir.shards(directory)
        if not shards:
            raise MinerError(f"{directory}: {missing}")
        return shards


def _under(path, run: RunDir) -> bool:
    try:
        run.relative(path)
        return True
    except ValueError:
        return False


# -- the runner -----------------------------------------------------------------------

class Runner:
    """Runs stages over one run folder: skip, run, record, time (see module docstring).

    ``with Runner(cfg, executor) as runner: runner.run(stage)``: entering takes the
    run lock (``miner.runlock``) and removes what an interrupted run left behind.
    """

    def __init__(self, cfg: Config, executor: Executor, progress: Callable[[str], None] = print,
                 root=None):
        self.cfg = cfg
        self.run_dir = RunDir(root if root is not None else cfg.out)
        self.executor = executor
        self.progress = progress
        self.timings: dict[str, float] = {}  # seconds each stage took in this run
        self.skipped: list[str] = []  # stages found current in this run
        self._lock = None

    def __enter__(self) -> "Runner":
        from miner.runlock import RunLock, cleanup_temp

        root = self.run_dir.root
        # the folder itself: a file in its place, a read-only or full disk is one line
        if root.exists() and not root.is_dir():
            raise MinerError(f"{root}: not a directory (the run folder, --out)")
        try:
            root.mkdir(parents=True, exist_ok=True)
            self._lock = RunLock(root)
            self._lock.__enter__()
        except OSError as e:
            self._lock = None
            raise MinerError(f"{e.filename or root}: cannot write the run folder "
                             f"({e.strerror or e})") from None
        try:
            cleanup_temp(self.run_dir.root)
            _cleanup_temp_dirs(self.run_dir)
            self.executor.check_shared(self.run_dir.root)
        except BaseException:
            self._lock.__exit__(None, None, None)
            raise
        self.manifest = Manifest(self.run_dir)
        return self

    def __exit__(self, *exc) -> None:
        if self._lock is not None:
            self._lock.__exit__(*exc)
            self._lock = None

    def context(self) -> RunContext:
        return RunContext(self.cfg, self.run_dir, self.executor, self.manifest, self.progress)

    def run(self, stage: Stage) -> dict:
        """Run one stage; returns its counts (merged task counts, then the finishing
        pass's, as recorded) and ``tasks``, ``tasks_run``, ``tasks_skipped`` and
        ``this_run`` (the counts of the tasks run this time)."""
        ctx = self.context()
        start, started = time.time(), utc_now()
        stage.check(ctx)
        old = self.manifest.stage(stage.name) or {}
        old_tasks = old.get("tasks", {})
        tasks = stage.tasks(ctx)
        keys = [t.key for t in tasks]
        if len(set(keys)) != len(keys):
            raise RuntimeError(f"{stage.name}: task keys are not unique")
        records: dict[str, dict] = {}
        pending: list[Task] = []
        for task in tasks:
            rec = old_tasks.get(task.key)
            if rec and rec.get("fingerprint") == fingerprint_hash(task.fingerprint) \
                    and self._outputs_current(rec):
                records[task.key] = rec
            else:
                pending.append(task)
        record = {"tasks": records, "finished": False}
        if pending:
            log.info("%s: %d of %d task(s) to run", stage.name, len(pending), len(tasks))
            # the stage is not finished until its finishing pass ran again
            self.manifest.set_stage(stage.name, dict(old, tasks=dict(records), finished=False))

            def done(task: Task, described: dict) -> None:
                described["outputs"] = {self.run_dir.relative(p) if _under(p, self.run_dir) else p: d
                                        for p, d in described["outputs"].items()}
                records[task.key] = dict(fingerprint=fingerprint_hash(task.fingerprint),
                                         **described)
                self.manifest.set_task(stage.name, task.key, records[task.key])

            try:
                stage.run_pending(ctx, pending, done)
            finally:  # an error in one task keeps the records of those that finished
                self.manifest.flush()
        ran_finish = False
        finish_fp = stage.finish_fingerprint(ctx)
        if finish_fp is not None:
            fp = fingerprint_hash([finish_fp, [[k, records[k].get("outputs")] for k in keys]])
            prev = old.get("finish")
            if prev and prev.get("fingerprint") == fp and self._outputs_current(prev):
                record["finish"] = prev
            else:
                t0 = time.time()
                described = describe_result(stage.finish(ctx, {k: records[k] for k in keys}))
                described["outputs"] = {self.run_dir.relative(p): d
                                        for p, d in described["outputs"].items()}
                record["finish"] = dict(fingerprint=fp, seconds=round(time.time() - t0, 3),
                                        **described)
                ran_finish = True
        counts = merge_counts(*(records[k].get("counts", {}) for k in keys))
        if "finish" in record:
            counts = merge_counts(counts, record["finish"].get("counts", {}))
        this_run = merge_counts(*(records[t.key].get("counts", {}) for t in pending))
        view = stage.report(dict(counts, tasks=len(tasks), tasks_run=len(pending),
                                 tasks_skipped=len(tasks) - len(pending), this_run=this_run))
        skipped = not pending and not ran_finish
        seconds = round(time.time() - start, 3)
        timing = {"started": started, "ended": utc_now(), "seconds": seconds,
                  "versions": versions()}
        if skipped:  # when, how long and with what the outputs were made: that run's
            timing = {k: old[k] for k in timing if k in old}
        record.update(counts={k: v for k, v in view.items() if k not in _RUNNER_KEYS},
                      tasks_run=len(pending), tasks_skipped=len(tasks) - len(pending),
                      **timing, finished=True)
        self._remove_stale(old, record)
        self.manifest.set_stage(stage.name, record)
        self.manifest.flush()
        self.timings[stage.name] = seconds
        if skipped:
            self.skipped.append(stage.name)
            self.progress(f"{stage.name}: up to date, skipped")
        else:
            self.progress(f"{stage.name}: {stage.summary(view)}")
        return view

    def run_all(self, stages: Iterable[Stage]) -> dict[str, dict]:
        return {stage.name: self.run(stage) for stage in stages}

    def _outputs_current(self, rec: dict) -> bool:
        for rel, desc in rec.get("outputs", {}).items():
            path = self.run_dir.resolve(rel) if "://" not in rel and not rel.startswith("/") \
                else as_path(rel)
            try:
                if not path.exists() or path.stat().st_size != desc.get("bytes"):
                    return False
                if "rows" in desc:
                    from miner.formats import num_rows

                    if num_rows(path) != desc["rows"]:
                        return False
            except (OSError, MinerError):
                return False
        return True

    def _remove_stale(self, old: dict, new: dict) -> None:
        """Delete files the old record named that the new one does not (outputs of
        inputs dropped from the run, parts of a run with more shards)."""
        def files(rec):
            out = set()
            for t in rec.get("tasks", {}).values():
                out.update(t.get("outputs", {}))
            out.update(rec.get("finish", {}).get("outputs", {}))
            return out

        for rel in sorted(files(old) - files(new)):
            if "://" in rel or rel.startswith("/"):
                continue  # only files inside the run folder are the run's to delete
            path = self.run_dir.resolve(rel)
            try:
                path.unlink(missing_ok=True)
            except OSError:
                pass


def _cleanup_temp_dirs(run: RunDir) -> None:
    """Remove the temporary folders of an interrupted run; a bitext folder caught in
    the middle of being replaced gets its previous version back."""
    from miner.storage import rmtree

    for d in run.temp_dirs():
        log.info("removing %s (left by an interrupted run)", d)
        rmtree(d)
    for old, live in list(run.retired_bitext()):
        if not live.exists():
            old.rename(live)  # the swap was interrupted: keep the published version
        else:
            rmtree(old)


def run_stage(stage: Stage, cfg: Config, out_dir=None, executor: Optional[Executor] = None,
              progress: Optional[Callable[[str], None]] = None) -> dict:
    """Run one stage over ``out_dir`` (default ``cfg.out``) under the run lock, on
    ``executor`` (default: the one ``cfg`` names); returns ``Runner.run``'s counts."""
    from miner.executor import executor_for

    own = executor is None
    executor = executor or executor_for(cfg)
    try:
        with Runner(cfg, executor, progress or log.info, root=out_dir) as runner:
            return runner.run(stage)
    finally:
        if own:
            executor.close()
