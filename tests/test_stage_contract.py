"""The stage contract over one run folder: what is current, what a damaged folder
redoes, that score and bitext skip like the others, that the bitext files are
published together, and what the runner records."""

import json
import shutil

import pytest
from click.testing import CliRunner

from miner.cli import main
from miner.config import Config
from miner.errors import MinerError
from miner.pipeline import run_pipeline, stages_for
from miner.rundir import RunDir
from miner.stage import Result, Runner, Stage, Task
from miner.executor import LocalExecutor

from conftest import EXAMPLES

INPUTS = [str(EXAMPLES / "corpus.de.txt"), str(EXAMPLES / "corpus.en.txt")]


def config(out, **settings) -> Config:
    cfg = Config(out=str(out), pairs=["de-en"], inputs=list(INPUTS), shard_size=25)
    cfg.prepare.workers = 1
    return cfg.update(settings).validate()


def bitext_bytes(out) -> dict:
    d = RunDir(out).bitext("de", "en")
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def ran(messages: list[str]) -> set[str]:
    """Stages that did work (not 'up to date, skipped')."""
    return {m.split(":")[0] for m in messages if "to run" in m or
            ("skipped" not in m and ":" in m)}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    run_pipeline(config(out), progress=lambda m: None)
    return out


def fresh_copy(reference, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    return out


def rerun(out) -> list[str]:
    messages: list[str] = []
    run_pipeline(config(out), progress=messages.append)
    return messages


def test_reference_has_several_shards(reference):
    run = RunDir(reference)
    assert len(RunDir.shards(run.sentences("de"))) == 3
    assert len(RunDir.shards(run.knn("de", "en", "fwd"))) == 3


def test_a_rerun_does_nothing(reference, tmp_path):
    out = fresh_copy(reference, tmp_path)
    messages = rerun(out)
    assert all(m.endswith("up to date, skipped") for m in messages), messages
    assert bitext_bytes(out) == bitext_bytes(reference)


@pytest.mark.parametrize("damage", ["delete", "truncate"])
@pytest.mark.parametrize("shard", ["sentences/de/part-00001.parquet",
                                   "embeddings/en/part-00002.parquet",
                                   "knn/de-en/bwd/part-00000.parquet",
                                   "scores/de-en/part-00000.parquet"])
def test_a_damaged_shard_is_redone_and_nothing_after_it(reference, tmp_path, shard, damage):
    out = fresh_copy(reference, tmp_path)
    path = out / shard
    if damage == "delete":
        path.unlink()
    else:
        path.write_bytes(path.read_bytes()[:-100])
    messages = rerun(out)
    producer = {"sentences": "prepare", "embeddings": "embed/en", "knn": "knn/de-en",
                "scores": "score/de-en"}[shard.split("/")[0]]
    # the stage that wrote it redoes it; what comes after sees the same bytes: skipped
    assert ran(messages) - {"report"} == {producer}, messages
    assert path.read_bytes() == (reference / shard).read_bytes()
    assert bitext_bytes(out) == bitext_bytes(reference)


def test_a_deleted_bitext_file_is_rewritten(reference, tmp_path):
    out = fresh_copy(reference, tmp_path)
    (out / "bitext" / "de-en" / "train.en").unlink()
    messages = rerun(out)
    assert ran(messages) - {"report"} == {"bitext/de-en"}, messages
    assert bitext_bytes(out) == bitext_bytes(reference)


def test_a_missing_shard_that_cannot_be_redone_is_one_line(reference, tmp_path):
    """`mine embed` alone cannot rewrite a sentence shard: it names the file."""
    out = fresh_copy(reference, tmp_path)
    (out / "sentences" / "de" / "part-00001.parquet").unlink()
    r = CliRunner().invoke(main, ["embed", str(out), "--lang", "de"])
    assert r.exit_code == 2
    lines = r.stderr.strip().splitlines()
    assert lines[-1].startswith("mine: error:") and "sentences/de/part-00001.parquet" in lines[-1]


def test_score_and_bitext_skip_when_current_and_a_new_threshold_redoes_only_bitext(
        reference, tmp_path):
    out = fresh_copy(reference, tmp_path)
    r = CliRunner().invoke(main, ["score", str(out), "--pair", "de-en", "--shard-size", "25"])
    assert r.exit_code == 0, r.output
    assert "score/de-en: up to date, skipped" in r.stderr
    r = CliRunner().invoke(main, ["bitext", str(out), "--pair", "de-en"])
    assert r.exit_code == 0, r.output
    assert "bitext/de-en: up to date, skipped" in r.stderr
    r = CliRunner().invoke(main, ["bitext", str(out), "--pair", "de-en", "--threshold", "1.5"])
    assert r.exit_code == 0, r.output
    assert "bitext/de-en: up to date" not in r.stderr
    kept = (out / "bitext" / "de-en" / "train.de").read_text().count("\n")
    assert 0 < kept < (reference / "bitext" / "de-en" / "train.de").read_text().count("\n")


def test_bitext_files_always_come_from_one_run(reference, tmp_path, monkeypatch):
    """A run that dies while publishing leaves the previous files, all of them, and the
    next run puts the new ones in place together."""
    import miner.outputs as outputs

    out = fresh_copy(reference, tmp_path)
    before = bitext_bytes(out)
    real_rename = type(out).rename
    calls = []

    def dying_rename(self, target):
        calls.append(self.name)
        if self.name == ".de-en.new":  # between moving the old folder aside and this
            raise KeyboardInterrupt("killed while publishing")
        return real_rename(self, target)

    cfg = config(out, threshold=1.5)
    monkeypatch.setattr(type(out), "rename", dying_rename)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(cfg, progress=lambda m: None)
    monkeypatch.setattr(type(out), "rename", real_rename)
    assert not (out / "bitext" / "de-en").exists()  # moved aside, new one not in place
    # the next run first puts the published folder back, then publishes the new one
    messages: list[str] = []
    run_pipeline(cfg, progress=messages.append)
    after = bitext_bytes(out)
    assert after != before
    n = after["train.de"].count(b"\n")
    assert after["train.en"].count(b"\n") == n
    assert f"Pairs: {n} kept".encode() in after["README.md"]
    assert not list((out / "bitext").glob(".*"))
    assert outputs.FILES  # the published set


def test_the_report_covers_only_the_pairs_of_the_run(tmp_path):
    out = tmp_path / "run"
    cfg = config(out)
    cfg.inputs.append(str(EXAMPLES / "corpus.fr.txt"))
    cfg.pairs = ["de-en", "fr-en"]
    run_pipeline(cfg.validate(), progress=lambda m: None)
    assert set(json.loads((out / "report.json").read_text())["pairs"]) == {"de-en", "fr-en"}
    cfg.pairs = ["de-en"]
    run_pipeline(cfg, progress=lambda m: None)
    report = json.loads((out / "report.json").read_text())
    assert set(report["pairs"]) == {"de-en"}
    assert not any("fr" in name for name in report["stages"] if name != "prepare")


def test_the_stage_list_of_a_run():
    cfg = config("unused")
    cfg.pairs = ["de-en", "fr-en"]
    assert [s.name for s in stages_for(cfg)] == [
        "prepare", "embed/de", "embed/en", "embed/fr", "knn/de-en", "score/de-en",
        "bitext/de-en", "knn/fr-en", "score/fr-en", "bitext/fr-en", "report"]


# -- the runner on a stage of its own -------------------------------------------------

class Squares(Stage):
    """Writes one small file per number; the finishing pass sums them."""

    name = "squares"
    placement = "pool"

    def __init__(self, numbers, salt=0):
        self.numbers, self.salt = numbers, salt

    def tasks(self, ctx):
        return [Task(f"n{n}", {"n": n, "salt": self.salt}, (n, str(ctx.run.root / f"sq{n}.txt")))
                for n in self.numbers]

    def run_task(self, item):
        n, path = item
        with open(path, "w") as f:
            f.write(str(n * n + self.salt))
        return Result([path], {"written": 1}, data=n * n + self.salt)

    def finish_fingerprint(self, ctx):
        return {}

    def finish(self, ctx, records):
        total = sum(r["data"] for r in records.values())
        path = ctx.run.root / "total.txt"
        path.write_text(str(total))
        return Result([path], {"total": total})


@pytest.mark.parametrize("workers", [1, 2])
def test_runner_skips_current_tasks_and_removes_files_it_no_longer_records(tmp_path, workers):
    cfg = Config(out=str(tmp_path))
    with Runner(cfg, LocalExecutor(workers), progress=lambda m: None) as runner:
        c = runner.run(Squares([1, 2, 3]))
        assert c["written"] == 3 and c["total"] == 14 and c["tasks_run"] == 3
        c = runner.run(Squares([1, 2, 3]))
        assert c["tasks_run"] == 0 and c["total"] == 14
        (tmp_path / "sq2.txt").write_text("tampered, longer")
        c = runner.run(Squares([1, 2, 3]))
        assert c["tasks_run"] == 1 and (tmp_path / "sq2.txt").read_text() == "4"
        c = runner.run(Squares([1, 3]))  # 2 left the run: its file goes
        assert c["tasks_run"] == 0 and c["total"] == 10 and not (tmp_path / "sq2.txt").exists()
        c = runner.run(Squares([1, 3], salt=1))  # other settings: every task again
        assert c["tasks_run"] == 2 and c["total"] == 12
    rec = json.loads((tmp_path / "manifest.json").read_text())["stages"]["squares"]
    assert rec["finished"] and set(rec["tasks"]) == {"n1", "n3"}
    assert rec["tasks"]["n1"]["outputs"]["sq1.txt"]["bytes"] == 1


def test_a_second_runner_on_the_same_folder_is_refused(tmp_path):
    cfg = Config(out=str(tmp_path))
    import threading

    errors = []
    with Runner(cfg, LocalExecutor(1), progress=lambda m: None):
        def second():
            try:
                with Runner(cfg, LocalExecutor(1), progress=lambda m: None):
                    pass
            except MinerError as e:
                errors.append(str(e))
        t = threading.Thread(target=second)
        t.start()
        t.join()
    assert len(errors) == 1 and "in use by another mine run" in errors[0]
