"""miner.storage: local paths and URLs of a pyarrow filesystem behave alike; tested
against a real S3 protocol server on 127.0.0.1 (moto)."""

import pickle
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from s3server import environment, s3_server

from miner.errors import MinerError
from miner.io import atomic_open, atomic_path, write_json
from miner.manifest import read_manifest, update_stage
from miner.storage import RemotePath, as_path, is_url, parquet_file, read_table, rmtree


@pytest.fixture(scope="module")
def s3():
    with s3_server() as env, environment(env):
        yield RemotePath("s3://miner-test/run")


def test_as_path_tells_urls_from_local_paths():
    assert isinstance(as_path("out/run"), Path)
    assert as_path("file:///tmp/x") == Path("/tmp/x")
    assert is_url("s3://b/k") and not is_url("/tmp/x") and not is_url("file:///x")
    p = as_path("s3://bucket/a/b/part-00001.parquet")
    assert isinstance(p, RemotePath)
    assert (p.name, p.stem, p.suffix) == ("part-00001.parquet", "part-00001", ".parquet")
    assert p.parent == RemotePath("s3://bucket/a/b") and str(p.parent / "x") == "s3://bucket/a/b/x"
    assert p.relative_to("s3://bucket/a") == Path("b/part-00001.parquet")
    assert pickle.loads(pickle.dumps(p)) == p
    with pytest.raises(ValueError):
        p.relative_to("s3://other/a")


def test_remote_files_round_trip(s3, tmp_path):
    d = s3 / "t1"
    assert not d.exists() and list(d.glob("*")) == []
    with atomic_open(d / "a" / "x.txt", "w", encoding="utf-8") as f:
        f.write("hello\n")
    with atomic_open(d / "a" / "y.tsv.gz", "w", encoding="utf-8") as f:
        f.write("1\t2\n")
    write_json(d / "b" / "c.json", {"k": [1, 2]})
    assert (d / "a" / "x.txt").read_text() == "hello\n"
    assert (d / "a" / "x.txt").stat().st_size == 6 and (d / "a" / "x.txt").is_file()
    assert (d / "a").is_dir() and d.exists()
    assert [p.name for p in d.glob("*/*.json")] == ["c.json"]
    assert [p.name for p in d.glob("a/*")] == ["x.txt", "y.tsv.gz"]
    assert [p.name for p in d.rglob("*.txt")] == ["x.txt"]
    import gzip

    assert gzip.decompress((d / "a" / "y.tsv.gz").read_bytes()) == b"1\t2\n"
    (d / "a" / "x.txt").unlink()
    assert not (d / "a" / "x.txt").exists()
    (d / "a" / "x.txt").unlink(missing_ok=True)
    rmtree(d)
    assert not d.exists()


def test_a_failed_write_publishes_nothing(s3):
    target = s3 / "t2" / "part-00000.parquet"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            pq.write_table(pa.table({"a": [1, 2, 3]}), tmp)
            raise RuntimeError("crash before the upload")
    assert not target.exists()


def test_parquet_and_manifest_on_s3(s3):
    table = pa.table({"id": pa.array(np.arange(1000, dtype=np.uint64)),
                      "text": [f"s{i}" for i in range(1000)]})
    with atomic_path(s3 / "t3" / "part-00000.parquet") as tmp:
        pq.write_table(table, tmp, row_group_size=100)
    f = parquet_file(s3 / "t3" / "part-00000.parquet")
    assert f.metadata.num_row_groups == 10 and f.read_row_group(3).column("id")[0].as_py() == 300
    assert read_table(s3 / "t3" / "part-00000.parquet", columns=["text"]).equals(table.select(["text"]))
    update_stage(str(s3 / "t3"), "prepare", {"counts": {"de": 1}, "finished": True})
    assert read_manifest(s3 / "t3")["stages"]["prepare"]["counts"] == {"de": 1}


def test_an_unknown_scheme_is_one_clear_error():
    with pytest.raises(MinerError, match="not a storage location"):
        RemotePath("nosuch://bucket/x").exists()


def test_a_missing_bucket_is_one_error(s3, tmp_path):
    with pytest.raises(MinerError, match=r"^s3://no-such-bucket/run/manifest.json: storage error"):
        update_stage("s3://no-such-bucket/run", "prepare", {"finished": True})


@pytest.mark.slow  # the S3 client retries the refused connection for ~12 s
def test_an_unreachable_store_is_one_error_line(s3, tmp_path):
    from click.testing import CliRunner

    from conftest import EXAMPLES

    from miner.cli import main

    try:
        runner = CliRunner(mix_stderr=False)
    except TypeError:  # click >= 8.2: stderr is always apart
        runner = CliRunner()
    with environment({"AWS_ENDPOINT_URL": "http://127.0.0.1:9"}):  # nothing listens there
        r = runner.invoke(main, ["prepare", str(EXAMPLES / "articles" / "de.jsonl"), "--lang", "de",
                                 "--out", "s3://miner-test/unreachable"], prog_name="mine")
    assert isinstance(r.exception, SystemExit) and r.exit_code == 2, (r.exc_info, r.stderr)
    assert "Traceback" not in r.stderr
    assert r.stderr.strip().startswith("mine: error: s3://miner-test/unreachable") and \
        "storage error" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
