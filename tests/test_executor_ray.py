"""The executor layer: the local executor, and `mine run --executor ray` on a real
two-node Ray cluster on 127.0.0.1 (byte-identical bitext, equal manifest counts, a
worker killed during embed, a rerun that redoes nothing).

Ray only ever runs inside a private network and PID namespace (``unshare -n -p``)
with loopback alone: Ray binds 127.0.0.1 there, and ``ray stop`` there sees only the
cluster this test started (everything in the namespace dies with it anyway).
"""

import filecmp
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import EXAMPLES, REPO, shared_data

from miner.errors import MinerError
from miner.executor import LocalExecutor, make_executor

VENV_BIN = Path(sys.executable).parent
WIKI_PAGES = ("dewiki-20130602-id1.xml", "dewiki-20130602-id5.xml", "dewiki-20130602-id81.xml",
              "dewiki-20130602-id89.xml", "dewiki-20130602-id111.xml",
              "enwiki-20120104-id39.xml", "enwiki-20120104-id290.xml",
              "enwiki-20120104-id655.xml")


def _square(x):
    return x * x


class _Counter:
    """A stateful worker: counts how often it was built."""

    built = 0

    def __init__(self, offset):
        type(self).built += 1
        self.offset = offset

    def __call__(self, x):
        return x + self.offset


# -- local executor --------------------------------------------------------------------

def test_local_map_keeps_input_order_in_process_and_in_a_pool():
    items = list(range(7))
    assert LocalExecutor(1).map(_square, items) == [x * x for x in items]
    seen = []
    assert LocalExecutor(2).map(_square, items, on_result=lambda i, r: seen.append((i, r))) \
        == [x * x for x in items]
    assert sorted(seen) == [(x, x * x) for x in items]


def test_local_map_actors_builds_the_worker_once():
    from functools import partial

    _Counter.built = 0
    assert LocalExecutor(2).map_actors(partial(_Counter, 10), [1, 2, 3]) == [11, 12, 13]
    assert _Counter.built == 1
    assert LocalExecutor().map_actors(partial(_Counter, 10), []) == []


def test_make_executor_rejects_unknown_names_and_a_stray_address():
    assert make_executor("local").name == "local"
    with pytest.raises(MinerError, match="unknown executor"):
        make_executor("slurm")
    with pytest.raises(MinerError, match="--executor ray"):
        make_executor("local", ray_address="127.0.0.1:6379")


def test_importing_the_stages_does_not_import_ray():
    code = ("import sys, miner.cli, miner.pipeline, miner.executor, miner.prepare, "
            "miner.embed.stage, miner.knn.stage, miner.knn.distributed, miner.score; "
            "miner.executor.make_executor('local'); print('ray' in sys.modules)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                       timeout=120)
    assert p.stdout.strip() == "False", p.stderr


@pytest.mark.slow  # the `runs` fixture: three `mine run`s, ~80 s
def test_local_runs_never_import_ray(runs):
    """The local executor neither imports nor needs Ray: the reference runs of the
    `runs` fixture ran `mine run` in processes where importing ray fails."""
    for name in ("examples", "wiki"):
        assert (runs / "local" / name / "bitext" / "de-en" / "bitext.tsv.gz").exists()


def test_ray_executor_without_ray_names_the_install_line(tmp_path):
    code = textwrap.dedent("""
        import sys
        sys.modules["ray"] = None
        from miner.errors import MinerError
        from miner.executor import make_executor
        try:
            make_executor("ray")
        except MinerError as e:
            print(e)
    """)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                       timeout=60)
    assert "pip install 'miner[ray]'" in p.stdout, p.stdout + p.stderr


def test_distributed_knn_equals_the_single_process_search(tmp_path):
    """(query shard x partition) tasks and the merge give the stage's bytes, with
    several partitions and ties."""
    import numpy as np

    from miner.formats.embeddings import EmbeddingMeta, write_embedding_shard
    from miner.knn.distributed import DirectionPlan, run_direction
    from miner.knn.sharded import knn_partitions, mean_topk
    from miner.knn.stage import read_knn_shard

    rng = np.random.default_rng(0)
    meta = EmbeddingMeta("test", 8, "float16")

    def shards(name, sizes):
        paths = []
        for i, n in enumerate(sizes):
            x = rng.standard_normal((n, 8)).astype(np.float32)
            x[::5] = x[0]  # exact duplicates: ties broken by the lower row
            x /= np.linalg.norm(x, axis=1, keepdims=True)
            p = tmp_path / name / f"part-{i:05d}.parquet"
            write_embedding_shard(p, rng.integers(1, 2**63, n, dtype=np.uint64), x, meta)
            paths.append(p)
        return paths

    q_paths, db_paths = shards("q", [37, 20]), shards("db", [30, 25, 11])
    db_rows = (30, 25, 11)
    plan = DirectionPlan(str(tmp_path / "out"), tuple(map(str, db_paths)), db_rows,
                         part_rows=17, q_block=9, k=4, backend="numpy")
    todo = [(p, {"query": p.name}) for p in q_paths]
    stale = tmp_path / "out" / ".partial" / "part-00000.parquet.00000.0123456789ab.npz"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"from an interrupted run with other settings")
    assert run_direction(LocalExecutor(1), plan, todo) == [37, 20]  # queries per shard
    assert not (tmp_path / "out" / ".partial").exists()

    from miner.knn.stage import read_embeddings

    db = [read_embeddings(p) for p in db_paths]
    db_ids = np.concatenate([i for i, _ in db])
    db_emb = np.concatenate([e for _, e in db])
    for p in q_paths:
        ids, emb = read_embeddings(p)
        sims, rows = [], []
        for s0 in range(0, len(emb), 9):
            s, r = knn_partitions(emb[s0:s0 + 9], [db_emb[i:i + 17] for i in range(0, 66, 17)],
                                  4, "numpy")
            sims.append(s)
            rows.append(r)
        sims, rows = np.concatenate(sims), np.concatenate(rows)
        got = read_knn_shard(tmp_path / "out" / p.name)
        assert np.array_equal(got[0], ids)
        assert np.array_equal(got[1], db_ids[rows])
        assert np.array_equal(got[2], sims)
        assert np.array_equal(got[3], mean_topk(sims))


# -- a real two-node Ray cluster ---------------------------------------------------------

KILLER = r'''
import os, signal, sys, time
# Kill -9 the first Ray actor process caught embedding a shard (its title is
# "ray::StageActor.run" while it works); this PID namespace holds only our cluster.
deadline = time.time() + 240
while time.time() < deadline:
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                title = f.read().split(b"\0")[0].decode(errors="replace")
        except OSError:
            continue
        if title.startswith("ray::StageActor.run"):
            os.kill(int(pid), signal.SIGKILL)
            open(sys.argv[1], "w").write(f"{pid} {title}\n")
            sys.exit(0)
    time.sleep(0.01)
sys.exit("no embedding actor seen")
'''


def _can_unshare() -> bool:
    if not shutil.which("unshare") or not shutil.which("ip"):
        return False
    p = subprocess.run(["unshare", "-n", "-p", "-f", "--mount-proc", "true"], capture_output=True)
    return p.returncode == 0


def mine_without_ray(*args):
    """`mine ARGS` in a process where ``import ray`` raises ImportError."""
    code = ("import sys; sys.modules['ray'] = None; from miner.cli import main; "
            "sys.argv = ['mine', *sys.argv[1:]]; main()")
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True,
                          text=True, cwd=REPO, timeout=600)


def strip_seconds(obj):
    if isinstance(obj, dict):
        return {k: strip_seconds(v) for k, v in obj.items() if k != "seconds"}
    return obj


def manifest_counts(out: Path, manifest: Path | None = None) -> dict:
    stages = json.loads((manifest or out / "manifest.json").read_text())["stages"]
    return {name: strip_seconds(rec.get("counts")) for name, rec in stages.items() if name != "run"}


def assert_same_bitext(a: Path, b: Path) -> None:
    files = sorted(p.relative_to(a / "bitext") for p in (a / "bitext").rglob("*") if p.is_file())
    assert files, a
    assert files == sorted(p.relative_to(b / "bitext") for p in (b / "bitext").rglob("*")
                           if p.is_file())
    match, mismatch, errors = filecmp.cmpfiles(a / "bitext", b / "bitext",
                                               [str(f) for f in files], shallow=False)
    assert not mismatch and not errors, (mismatch, errors)


def ray_skip_reason() -> str | None:
    try:
        import ray  # noqa: F401
    except ImportError:
        return "Ray is not installed: pip install 'miner[ray]'"
    if os.geteuid() != 0 or not _can_unshare():
        return "needs root and unshare -n -p (a private loopback-only namespace for Ray)"
    return None


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Outputs of `mine run` on the examples and on a real Wikipedia excerpt: local
    (with Ray unimportable) under local/, and on one two-node Ray cluster under ray/,
    the excerpt while a worker is killed during embed, then a rerun of the examples.
    The cluster starts while the local runs work."""
    pages = shared_data("wikipedia", "pages")
    base = tmp_path_factory.mktemp("ray")
    examples = sorted((EXAMPLES / "articles").glob("*.jsonl"))
    wiki = [pages / name for name in WIKI_PAGES]
    ex_args = [*examples, "--pair", "de-en", "--shard-size", 20]
    wiki_args = [*wiki, "--pair", "de-en", "--shard-size", 200]

    skip = ray_skip_reason()
    cluster = None
    if skip is None:
        (base / "killer.py").write_text(KILLER)
        q = lambda xs: " ".join(f"'{x}'" for x in xs)  # noqa: E731 (paths hold no quotes)
        ray_mine = "python -m miner run --executor ray --ray-address 127.0.0.1:$PORT"
        script = f"""
            set -e
            ip link set lo up
            # token auth (Ray >= 2.5x, when ~/.ray/auth_token exists) is pointless in this
            # private namespace and refuses the second node if the token file changes
            export PATH={VENV_BIN}:$PATH RAY_USAGE_STATS_ENABLED=0 RAY_AUTH_MODE=disabled
            cd {REPO}
            PORT=6390
            T=$(mktemp -d /tmp/mray.XXXXXX)
            # an S3 server for the s3:// run; every node gets its endpoint and keys, as
            # nodes of a real cluster get their store's settings
            python -c "import logging, time; logging.disable(logging.INFO); from moto.server import ThreadedMotoServer as S; s = S(ip_address='127.0.0.1', port=5390, verbose=False); s.start(); time.sleep(100000)" >"{base}/moto.log" 2>&1 &
            MOTO=$!
            export AWS_ACCESS_KEY_ID=miner-test AWS_SECRET_ACCESS_KEY=miner-test AWS_DEFAULT_REGION=us-east-1 AWS_ENDPOINT_URL=http://127.0.0.1:5390 AWS_EC2_METADATA_DISABLED=true
            trap 'ray stop --force >/dev/null 2>&1 || true; kill $MOTO 2>/dev/null || true; rm -rf "$T"' EXIT
            for i in $(seq 100); do python -c "import boto3; boto3.client('s3').create_bucket(Bucket='miner-test')" 2>/dev/null && break; sleep 0.2; done
            COMMON="--num-cpus 1 --object-store-memory 200000000 --disable-usage-stats"
            ray start --head --port $PORT --temp-dir "$T" --include-dashboard false $COMMON >"{base}/head.log" 2>&1
            ray start --address 127.0.0.1:$PORT $COMMON >"{base}/node.log" 2>&1
            {ray_mine} {q(ex_args)} --chunk-size 2K --out "{base}/ray/examples" >"{base}/examples.out" 2>"{base}/examples.err"
            cp "{base}/ray/examples/manifest.json" "{base}/examples.manifest.json"
            python "{base}/killer.py" "{base}/killed.txt" & KILLER=$!
            {ray_mine} {q(wiki_args)} --out "{base}/ray/wiki" >"{base}/wiki.out" 2>"{base}/wiki.err"
            wait $KILLER
            {ray_mine} {q(ex_args)} --chunk-size 2K --out "{base}/ray/examples" >"{base}/rerun.out" 2>"{base}/rerun.err"
            {ray_mine} {q(ex_args)} --out s3://miner-test/examples >"{base}/s3.out" 2>"{base}/s3.err"
            {ray_mine} {q(ex_args)} --index ivf --out s3://miner-test/ivf >"{base}/ivf.out" 2>"{base}/ivf.err"
            for run in examples ivf; do
              python -c "import sys, pyarrow.fs as f; fs, p = f.FileSystem.from_uri(sys.argv[1]); f.copy_files(p, sys.argv[2], source_filesystem=fs, destination_filesystem=f.LocalFileSystem())" s3://miner-test/$run "{base}/ray/s3-$run"
            done
        """
        cluster = subprocess.Popen(["unshare", "-n", "-p", "-f", "--mount-proc", "bash", "-c", script],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for name, args in (("examples", ex_args), ("wiki", wiki_args),
                           ("ivf", [*ex_args, "--index", "ivf"])):
            p = mine_without_ray("run", *args, "--out", base / "local" / name)
            assert p.returncode == 0, p.stderr[-3000:]
    finally:
        if cluster is not None:
            try:
                _, err = cluster.communicate(timeout=600)
            except subprocess.TimeoutExpired:
                cluster.kill()  # PID 1 of the namespace: everything in it dies too
                _, err = cluster.communicate()
    base.joinpath("ray.skip").write_text(skip or "")
    if cluster is not None and cluster.returncode != 0:
        logs = "".join(f"\n--- {f.name}\n{f.read_text()[-2000:]}" for f in sorted(base.glob("*.err")))
        pytest.fail(f"the Ray runs failed:\n{err[-3000:]}{logs}")
    return base


@pytest.fixture(scope="module")
def ray_runs(runs):
    skip = (runs / "ray.skip").read_text()
    if skip:
        pytest.skip(skip)
    return runs


@pytest.mark.slow  # a two-node Ray cluster (`runs`)
def test_ray_run_matches_local_on_the_examples(ray_runs):
    """The Ray run prepared the three inputs in 2 KiB pieces (a task each), the local
    run one task per file: same shards, same bitext."""
    staged = list((ray_runs / "ray" / "examples" / ".prepare").iterdir())
    assert len(staged) >= 9, staged
    assert_same_bitext(ray_runs / "local" / "examples", ray_runs / "ray" / "examples")
    first = ray_runs / "examples.manifest.json"  # before the rerun below
    assert manifest_counts(ray_runs / "ray" / "examples", first) == \
        manifest_counts(ray_runs / "local" / "examples")


@pytest.mark.slow  # a two-node Ray cluster (`runs`)
def test_ray_run_matches_local_on_a_wikipedia_excerpt(ray_runs):
    """Eight real page exports (5 dewiki, 3 enwiki), one prepare task per file."""
    assert_same_bitext(ray_runs / "local" / "wiki", ray_runs / "ray" / "wiki")
    assert manifest_counts(ray_runs / "ray" / "wiki") == manifest_counts(ray_runs / "local" / "wiki")
    counts = manifest_counts(ray_runs / "ray" / "wiki")
    assert counts["embed/de"]["shards"] == 2 and counts["knn/de-en"]["fwd"]["shards"] == 2


@pytest.mark.slow  # a two-node Ray cluster (`runs`)
def test_ray_rerun_redoes_no_finished_work(ray_runs):
    err = (ray_runs / "rerun.err").read_text()
    assert "prepare: up to date, skipped" in err
    for lang in ("de", "en"):
        assert f"embed/{lang}: up to date, skipped" in err, err
    counts = manifest_counts(ray_runs / "ray" / "examples")
    assert counts["knn/de-en"]["fwd"]["searched_shards"] == 0
    assert_same_bitext(ray_runs / "local" / "examples", ray_runs / "ray" / "examples")


@pytest.mark.slow  # a two-node Ray cluster (`runs`)
def test_ray_run_into_a_bucket_matches_local(ray_runs):
    """``--out s3://...`` on the cluster (an S3 server on 127.0.0.1): every task reads
    and writes the bucket, no shared disk involved; same bitext and counts as local."""
    assert_same_bitext(ray_runs / "local" / "examples", ray_runs / "ray" / "s3-examples")
    assert manifest_counts(ray_runs / "ray" / "s3-examples") == \
        manifest_counts(ray_runs / "local" / "examples")
    assert "s3://miner-test/examples/bitext/de-en/" in (ray_runs / "s3.out").read_text()


@pytest.mark.slow  # a two-node Ray cluster (`runs`)
def test_ray_ivf_search_tasks_on_a_bucket_match_local(ray_runs):
    """``--index ivf``: the driver trains the index and uploads it, one search task per
    query shard reads it from the bucket (a node-local copy for faiss)."""
    assert_same_bitext(ray_runs / "local" / "ivf", ray_runs / "ray" / "s3-ivf")
    counts = manifest_counts(ray_runs / "ray" / "s3-ivf")
    assert counts == manifest_counts(ray_runs / "local" / "ivf")
    assert counts["knn/de-en"]["fwd"]["index"] == "ivf" and counts["knn/de-en"]["fwd"]["shards"] > 1
    assert not any("/.index/" in str(p) for p in (ray_runs / "ray" / "s3-ivf").rglob("*"))


@pytest.mark.slow  # a two-node Ray cluster (`runs`)
def test_ray_run_survives_a_worker_killed_during_embed(ray_runs):
    """The wiki run above had one embedding actor SIGKILLed mid-shard: Ray restarted
    it and retried the shard, and the output is still the local one."""
    killed = (ray_runs / "killed.txt").read_text()
    assert "ray::StageActor.run" in killed
    assert_same_bitext(ray_runs / "local" / "wiki", ray_runs / "ray" / "wiki")
    assert manifest_counts(ray_runs / "ray" / "wiki") == manifest_counts(ray_runs / "local" / "wiki")
