"""The ``mine`` command: a thin shell that parses flags, builds a Config and calls
the same functions the tests call. User errors (MinerError) print one line on
stderr and exit 2.
"""

from __future__ import annotations

import errno
import functools
import logging
import sys

import click

from miner.config import (EMBED_DTYPES, ENCODERS, EXECUTORS, FORMAT_CHOICES, INDEX_KINDS,
                           KNN_BACKENDS, MARGINS, RETRIEVALS, Config)
from miner.errors import MinerError


# what the disk or the file system, not a bug, makes a write fail with
_STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})


def user_errors(fn):
    """Turn a MinerError (and a broken pipe) into one line on stderr and exit code 2;
    so too an OSError of a full disk, a quota, a read-only or forbidden folder (naming
    the file), since the runner records only finished work and publishes bitext whole."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except MinerError as e:
            click.echo(f"mine: error: {e}", err=True)
            sys.exit(2)
        except BrokenPipeError:  # `mine pair ... | head`
            sys.exit(0)
        except OSError as e:
            if e.errno not in _STORAGE_ERRNOS:  # anything else is a bug: raise it
                raise
            where = f"{e.filename}: " if e.filename else ""
            click.echo(f"mine: error: {where}{e.strerror or e}; outputs written before "
                       f"are kept, free space or fix the folder and rerun", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("mine: interrupted", err=True)
            sys.exit(130)

    return wrapper


def _progress(message: str) -> None:
    click.echo(message, err=True)


def run_stages(cfg: Config, stages: list) -> dict:
    """Run ``stages`` over ``cfg.out`` (miner.pipeline.run_stages), progress on stderr."""
    from miner.pipeline import run_stages as run

    return run(cfg, stages, _progress)


def _pairs(values) -> list[tuple[str, str]]:
    from miner.config import parse_pair
    from miner.lid import normalize_lang

    return [tuple(normalize_lang(x) for x in parse_pair(p)) for p in values]


def build_config(config_file: str | None, **flags) -> Config:
    """A Config from an optional TOML file, then the flags that were given on top,
    checked whole (``Config.validate``) before any stage runs."""
    cfg = Config.from_toml(config_file) if config_file else Config()
    cfg.update({k: v for k, v in flags.items() if v is not None and v != ()})
    return cfg.validate()


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Log what each stage does.")
def main(verbose: bool) -> None:
    """Mine parallel sentences (bitext) from monolingual text."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")


# --- commands: each is a few lines that call into a stage module -------------------


def _executor_options(fn):
    """--executor and --ray-address: where a stage's tasks run (miner.executor)."""
    fn = click.option("--ray-address", help="Ray cluster address, e.g. auto or HOST:6379 "
                      "(with --executor ray).")(fn)
    return click.option("--executor", type=click.Choice(EXECUTORS),
                        help="Where the tasks run: this machine or a Ray cluster [local].")(fn)


def _mining_options(fn):
    """Flags shared by the commands that mine: encoder, kNN and margin settings."""
    options = [
        click.option("--config", "config_file", type=click.Path(dir_okay=False),
                     help="TOML file with settings (same names as the flags)."),
        click.option("--encoder", type=click.Choice(ENCODERS),
                     help="Sentence encoder [muse]."),
        click.option("--model", help="Model id or path (sentence-transformers)."),
        click.option("--batch-size", type=int, help="Sentences per encoder batch."),
        click.option("-k", "--k", "k", type=int, help="Neighbours for the margin [4]."),
        click.option("--margin", type=click.Choice(MARGINS),
                     help="Margin function [ratio]."),
        click.option("--retrieval", type=click.Choice(RETRIEVALS),
                     help="Candidate retrieval [max]."),
        click.option("--knn-backend", type=click.Choice(KNN_BACKENDS),
                     help="kNN implementation [auto]."),
        click.option("--shard-size", type=int, help="Rows per shard."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


@main.command()
@click.argument("src", type=click.Path())
@click.argument("tgt", type=click.Path())
@click.option("--src-lang", required=True, help="Language code of SRC, e.g. de.")
@click.option("--tgt-lang", required=True, help="Language code of TGT, e.g. en.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Output TSV (score, src, tgt), best first; .gz compresses.")
@click.option("--threshold", type=float, help="Keep pairs scoring at least this.")
@click.option("--show", type=int, default=10, show_default=True,
              help="Print this many of the best pairs.")
@click.option("--work", type=click.Path(),
              help="Keep the stage outputs here (a rerun resumes) [a temporary directory].")
@_mining_options
@user_errors
def pair(src, tgt, src_lang, tgt_lang, output, threshold, show, work, config_file, **flags):
    """Mine two one-sentence-per-line files (plain or .gz) into scored pairs."""
    from miner.pair import (check_langs, check_output, format_pairs, mine_files, work_directory,
                            write_tsv)

    check_langs(src_lang, tgt_lang)
    check_output(output, (src, tgt))
    cfg = build_config(config_file, threshold=threshold, **flags)
    with work_directory(work) as work_dir:
        table = mine_files(src, tgt, src_lang, tgt_lang, cfg, work_dir)
    n = write_tsv(output, table)
    click.echo(f"{n} pairs ({src_lang}-{tgt_lang}) written to {output}", err=True)
    for line in format_pairs(table, show):
        click.echo(line)


@main.group(name="eval")
def eval_group():
    """Evaluate mining (BUCC) and similarity search (Tatoeba)."""


@eval_group.command()
@click.argument("directory", type=click.Path())
@click.option("--pair", "lang_pair", required=True, help="Language pair, e.g. de-en.")
@click.option("--tune-split", default="training", show_default=True,
              help="Split whose gold pairs choose the threshold.")
@click.option("--test-split", default="test", show_default=True,
              help="Split mined with that threshold and scored.")
@click.option("--select", is_flag=True,
              help="Also choose margin (ratio|distance) and k (2,4,8,16) on the tune split.")
@click.option("--filters", is_flag=True,
              help="Apply the bitext filters (all but the threshold, which is tuned) as "
                   "`mine run` does, before tuning and scoring.")
@click.option("--learn", type=click.Path(dir_okay=False),
              help="Fit a scorer on the tune split's candidates, write it to this JSON "
                   "file and score the test split with it.")
@click.option("--scorer", help="A learned scorer: a JSON file from `mine eval bucc --learn`, "
                                "or `default` (shipped, for muse) [none: the margin].")
@click.option("--output-pairs", type=click.Path(dir_okay=False),
              help="Write the test split's extracted pairs (src-id<TAB>tgt-id).")
@click.option("--json", "json_file", type=click.Path(dir_okay=False),
              help="Write the result as JSON.")
@_mining_options
@user_errors
def bucc(directory, lang_pair, tune_split, test_split, select, filters, learn, output_pairs,
         json_file, config_file, **flags):
    """BUCC 2018-style mining evaluation on DIRECTORY, mined by the stages of `mine run`."""
    from miner.evaluate.bucc import evaluate_bucc
    from miner.io import atomic_open, write_json

    cfg = build_config(config_file, **flags)
    r = evaluate_bucc(directory, lang_pair, None, tune_split, test_split, cfg=cfg,
                      select=select, filters=filters, learn=learn)
    if r.filter_counts is not None:
        c = r.filter_counts
        dropped = ", ".join(f"{k}={v}" for k, v in c["dropped"].items() if v) or "none"
        click.echo(f"{r.pair} {r.test_split} filters: {c['kept']} of {c['candidates']} "
                   f"candidates kept (dropped: {dropped})")
    if select:
        for row in r.selection:
            click.echo(f"  tune {row['margin']:>8} k={row['k']:<2} F1={100 * row['tune_f1']:.2f}")
    click.echo(f"{r.pair}: margin={r.margin} k={r.k} threshold={r.threshold:.5f} "
               f"(tune {r.tune_split} F1={100 * r.tune_f1:.2f})"
               + (f" scorer={r.scorer}" if r.scorer else ""))
    if learn:
        click.echo(f"scorer written to {learn}")
    if r.f1 is not None:
        click.echo(f"{r.pair} {r.test_split}: precision={100 * r.precision:.2f} "
                   f"recall={100 * r.recall:.2f} F1={100 * r.f1:.2f} "
                   f"({r.n_extracted} extracted, {r.n_gold} gold)")
    else:
        click.echo(f"{r.pair} {r.test_split}: {r.n_extracted} pairs extracted (no gold to score)")
    if output_pairs:
        with atomic_open(output_pairs, "w", encoding="utf-8") as f:
            f.writelines(f"{a}\t{b}\n" for a, b in r.pairs)
    if json_file:
        write_json(json_file, r.to_dict())


@eval_group.command()
@click.argument("directory", type=click.Path())
@click.option("--langs", help="Comma-separated Tatoeba codes [the encoder's languages].")
@click.option("--json", "json_file", type=click.Path(dir_okay=False),
              help="Write the results as JSON.")
@_mining_options
@user_errors
def tatoeba(directory, langs, json_file, config_file, **flags):
    """Tatoeba similarity search error rates (xsim) against English."""
    from miner.embed.encoders import encoder_for
    from miner.evaluate.tatoeba import MUSE_LANGS, evaluate_tatoeba
    from miner.io import write_json

    cfg = build_config(config_file, **flags)
    encoder = encoder_for(cfg.embed)
    lang_list = [x.strip() for x in langs.split(",") if x.strip()] if langs else list(MUSE_LANGS)
    results = evaluate_tatoeba(directory, lang_list, encoder, backend=cfg.knn.knn_backend)
    click.echo(f"{'lang':<6}{'n':>6}{'xx->en %':>10}{'en->xx %':>10}{'avg %':>8}")
    for r in results:
        click.echo(f"{r.lang:<6}{r.n:>6}{100 * r.err_xx_en:>10.2f}{100 * r.err_en_xx:>10.2f}"
                   f"{100 * r.err:>8.2f}")
    avg = sum(r.err for r in results) / len(results)
    click.echo(f"{'avg':<6}{'':>6}{'':>10}{'':>10}{100 * avg:>8.2f}")
    if json_file:
        write_json(json_file, {"results": [dict(r.__dict__, err=r.err) for r in results],
                               "average_error": avg})


def _parse_lid_thresholds(values: tuple[str, ...]) -> tuple[float | None, dict[str, float] | None]:
    """``("0.6", "de=0.7")`` -> ``(0.6, {"de": 0.7})``: a bare number sets the default,
    ``LANG=P`` a per-language threshold."""
    from miner.lid import normalize_lang

    default, per_lang = None, {}
    for value in values:
        lang, sep, number = value.rpartition("=")
        try:
            prob = float(number)
        except ValueError:
            raise MinerError(f"bad --lid-threshold {value!r}: expected P or LANG=P, e.g. 0.5 or de=0.7") from None
        if sep:
            per_lang[normalize_lang(lang)] = prob
        else:
            default = prob
    return default, per_lang or None


@main.command()
@click.argument("inputs", nargs=-1, type=click.Path())
@click.option("--lang", "langs", multiple=True, required=True,
              help="Language to keep (2- or 3-letter ISO 639 code); repeat for several.")
@click.option("--out", "out_dir", required=True, type=click.Path(),
              help="Output directory: sentences/{lang}/part-*.parquet and manifest.json.")
@click.option("--format", "format_", default=None,
              type=click.Choice(FORMAT_CHOICES),
              help="Input format (default: from the file name and magic bytes).")
@click.option("--paragraphs", is_flag=True, default=None,
              help="Plain text: documents are blank-line-separated blocks, not lines.")
@click.option("--text-field", default=None, help="JSONL/Parquet field holding the text [text].")
@click.option("--id-field", default=None, help="JSONL/Parquet field holding the document id.")
@click.option("--min-chars", type=int, default=None, help="Drop shorter sentences [10].")
@click.option("--max-chars", type=int, default=None, help="Drop longer sentences [500].")
@click.option("--normalize-punctuation", is_flag=True, default=None,
              help="Apply Moses-style punctuation normalisation.")
@click.option("--lid-model", type=click.Path(), default=None,
              help="fastText LID model (lid.176.bin, GlotLID, OpenLID) [lid.176.ftz].")
@click.option("--lid-threshold", "lid_threshold_values", multiple=True,
              help="Minimum LID probability [0.5]; LANG=P sets one language's, e.g. de=0.7. Repeatable.")
@click.option("--no-lid", is_flag=True, default=None, help="Skip language ID (one --lang only).")
@click.option("--short-lid-chars", type=int, default=None,
              help="Sentences shorter than this stay in their document's language unless "
                   "LID is very sure [40; 0: off].")
@click.option("--short-lid-threshold", type=float, default=None,
              help="LID probability a short sentence needs to leave its document's language [0.95].")
@click.option("--workers", type=int, default=None, help="Inputs processed in parallel [cores].")
@click.option("--chunk-size", default=None,
              help="Split bigger uncompressed text/JSONL and Parquet inputs into tasks of this size [256M].")
@click.option("--shard-size", type=int, default=None, help="Rows per output shard [100000].")
@click.option("--config", "config_file", type=click.Path(), default=None,
              help="TOML file with the same settings.")
@_executor_options
@user_errors
def prepare(inputs, langs, out_dir, format_, lid_threshold_values, config_file, **flags):
    """Read INPUT files, split, filter and language-identify their sentences."""
    from miner.prepare import PrepareStage

    if not inputs:
        raise MinerError("give at least one INPUT file")
    default, per_lang = _parse_lid_thresholds(lid_threshold_values)
    cfg = build_config(config_file, format=format_, lid_threshold=default, out=out_dir, **flags)
    if per_lang:
        cfg.prepare.lid_thresholds = {**cfg.prepare.lid_thresholds, **per_lang}
        cfg.validate()
    counts = run_stages(cfg, [PrepareStage(cfg, list(inputs), list(langs))])["prepare"]
    for lang, c in counts.items():
        click.echo(f"{lang}: {c['documents']} documents, {c['sentences']} sentences, "
                   f"{c['kept']} kept ({c['too_short']} too short, {c['too_long']} too long, "
                   f"{c['wrong_language']} wrong language, {c['duplicate']} duplicate)")


@main.command()
@click.argument("directory", type=click.Path())
@click.option("--lang", "langs", multiple=True, required=True, help="Language(s) to embed.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="TOML settings.")
@click.option("--encoder", type=click.Choice(ENCODERS), help="[muse]")
@click.option("--model", help="Model id or path (sentence-transformers).")
@click.option("--batch-size", type=int, help="Sentences per encoder batch.")
@click.option("--device", help="auto | cpu | cuda | cuda:N [auto].")
@click.option("--embed-dtype", type=click.Choice(EMBED_DTYPES),
              help="Storage dtype of the embeddings [float16].")
@_executor_options
@user_errors
def embed(directory, langs, config_file, **flags):
    """Embed the sentence shards of DIRECTORY (from `mine prepare`), resumably."""
    from miner.embed.stage import EmbedStage
    from miner.lid import normalize_lang

    cfg = build_config(config_file, out=directory, **flags)
    langs = list(dict.fromkeys(normalize_lang(x) for x in langs))
    counts = run_stages(cfg, [EmbedStage(cfg, lang) for lang in langs])
    for lang in langs:
        c = counts[f"embed/{lang}"]
        click.echo(f"embed {lang}: {c['sentences_embedded']} sentences in "
                   f"{c['embedded_shards']} shard(s), {c['skipped_shards']} already done")


@main.command()
@click.argument("directory", type=click.Path())
@click.option("--pair", "lang_pairs", multiple=True, required=True,
              help="Language pair, e.g. de-en (repeatable).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="TOML settings.")
@click.option("-k", "--k", "k", type=int, help="Neighbours per sentence [4].")
@click.option("--index", type=click.Choice(INDEX_KINDS),
              help="flat (exact) | ivf | ivfpq | auto (by size) [flat].")
@click.option("--nprobe", type=int, help="Inverted lists visited per query (ivf, ivfpq) [64].")
@click.option("--knn-backend", type=click.Choice(KNN_BACKENDS),
              help="Exact search implementation [auto].")
@click.option("--max-memory", help="Memory budget of the search blocks, e.g. 8G [8G].")
@_executor_options
@user_errors
def knn(directory, lang_pairs, config_file, **flags):
    """k nearest neighbours of each source sentence among the targets and back."""
    from miner.knn.stage import KnnStage

    cfg = build_config(config_file, out=directory, **flags)
    pairs = _pairs(lang_pairs)
    counts = run_stages(cfg, [KnnStage(cfg, src, tgt) for src, tgt in pairs])
    for src, tgt in pairs:
        for direction in ("fwd", "bwd"):
            d = counts[f"knn/{src}-{tgt}"][direction]
            click.echo(f"knn {src}-{tgt} {direction}: {d['queries']} queries x {d['database']} "
                       f"({d['index']}), {d['searched_shards']} shard(s) searched, "
                       f"{d['skipped_shards']} already done")


@main.command()
@click.argument("directory", type=click.Path())
@click.option("--pair", "lang_pairs", multiple=True, required=True, help="e.g. de-en.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="TOML settings.")
@click.option("--margin", type=click.Choice(MARGINS), help="[ratio]")
@click.option("--retrieval", type=click.Choice(RETRIEVALS), help="[max]")
@click.option("--shard-size", type=int, help="Rows per output part.")
@click.option("--scorer", help="A learned scorer: a JSON file from `mine eval bucc --learn`, "
                                "or `default` (shipped, for muse) [none: the margin].")
@_executor_options
@user_errors
def score(directory, lang_pairs, config_file, **flags):
    """Score stored neighbours with a margin into candidate pairs."""
    from miner.score import ScoreStage

    cfg = build_config(config_file, out=directory, **flags)
    pairs = _pairs(lang_pairs)
    counts = run_stages(cfg, [ScoreStage(cfg, src, tgt) for src, tgt in pairs])
    for src, tgt in pairs:
        click.echo(f"score {src}-{tgt}: {counts[f'score/{src}-{tgt}']['candidates']} candidates")


@main.command()
@click.argument("inputs", nargs=-1, type=click.Path())
@click.option("--config", "config_file", type=click.Path(dir_okay=False),
              help="TOML file with inputs, pairs, out and any stage setting.")
@click.option("--pair", "pairs", multiple=True, help="Language pair, e.g. de-en (repeatable).")
@click.option("--out", help="Output directory [work].")
@click.option("--encoder", type=click.Choice(ENCODERS), help="[muse]")
@click.option("--model", help="Model id or path (sentence-transformers).")
@click.option("-k", "--k", "k", type=int, help="Neighbours for the margin [4].")
@click.option("--margin", type=click.Choice(MARGINS), help="[ratio]")
@click.option("--retrieval", type=click.Choice(RETRIEVALS), help="[max]")
@click.option("--threshold", type=float, help="Margin threshold for the bitext.")
@click.option("--scorer", help="A learned scorer: a JSON file from `mine eval bucc --learn`, "
                                "or `default` (shipped, for muse) [none: the margin].")
@click.option("--index", type=click.Choice(INDEX_KINDS), help="[flat]")
@click.option("--knn-backend", type=click.Choice(KNN_BACKENDS))
@click.option("--max-memory", help="Memory budget of kNN blocks, e.g. 8G.")
@click.option("--shard-size", type=int, help="Rows per shard.")
@click.option("--chunk-size", help="Prepare bigger text/JSONL/Parquet inputs in pieces of this size [256M].")
@click.option("--min-chars", type=int, help="Shortest sentence kept [10].")
@click.option("--max-chars", type=int, help="Longest sentence kept [500].")
@click.option("--no-lid", is_flag=True, default=None, help="Skip language identification.")
@click.option("--executor", type=click.Choice(EXECUTORS), help="Where stages run [local].")
@click.option("--ray-address", help="Ray cluster address (with --executor ray).")
@click.option("--show", type=int, default=0, help="Print this many of the best pairs per pair.")
@user_errors
def run(inputs, config_file, pairs, show, **flags):
    """Run every stage, from INPUTS (dumps, text, JSONL...) to filtered bitext.

    Stages whose outputs are complete are skipped, so rerunning after a crash resumes.
    """
    from miner.pipeline import run_pipeline

    cfg = build_config(config_file, inputs=inputs, pairs=pairs, **flags)
    summary = run_pipeline(cfg, progress=lambda msg: click.echo(msg, err=True))
    from miner.rundir import RunDir

    run_dir = RunDir(cfg.out)
    for pair, counts in summary["pairs"].items():
        folder = run_dir.bitext(*pair.split("-"))
        click.echo(f"{pair}: {counts.get('kept', '?')} pairs -> {folder}/")
        if show:
            import gzip

            with run_dir.bitext_tsv(*pair.split("-")).open("rb") as raw, \
                    gzip.open(raw, "rt", encoding="utf-8") as f:
                for _, line in zip(range(show), f):
                    score_, src_text, tgt_text = line.rstrip("\n").split("\t")
                    click.echo(f"  {float(score_):.3f}  {src_text}\n         {tgt_text}")
    click.echo(f"report: {run_dir.report_html}")



@main.command()
@click.argument("directory", type=click.Path())
@click.option("--pair", "lang_pairs", multiple=True, help="e.g. de-en (repeatable) [config pairs].")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="TOML settings.")
@click.option("--threshold", type=float,
              help="Keep pairs scoring at least this [1.30 for muse+ratio, else none].")
@click.option("--scorer", help="A learned scorer: a JSON file from `mine eval bucc --learn`, "
                                "or `default` (shipped, for muse) [none: the margin].")
@click.option("--length-ratio/--no-length-ratio", default=None,
              help="Character length ratio filter [on].")
@click.option("--min-length-ratio", type=float, help="Lowest len(src)/len(tgt) [0.5; zh/ja/th wider].")
@click.option("--max-length-ratio", type=float, help="Highest len(src)/len(tgt) [2.0; zh/ja/th wider].")
@click.option("--lid-agreement/--no-lid-agreement", default=None,
              help="Drop pairs whose sides LID puts in another language [on].")
@click.option("--drop-copies/--keep-copies", default=None,
              help="Drop pairs whose sides are equal after normalisation [drop].")
@click.option("--number-mismatch/--no-number-mismatch", default=None,
              help="Drop pairs whose numbers disagree [on].")
@click.option("--strict-numbers", is_flag=True, default=None,
              help="Numbers must match exactly as multisets (default: lenient).")
@click.option("--drop-junk/--keep-junk", default=None,
              help="Drop pairs with a side of only URLs, e-mails, punctuation, numbers [drop].")
@click.option("--drop-boilerplate/--keep-boilerplate", default=None,
              help="Drop pairs with a side that is mostly URLs, has too few letters, "
                   "repeats itself, or holds markup or menus [drop].")
@click.option("--script-agreement/--no-script-agreement", default=None,
              help="Drop pairs with a side not mostly in its language's scripts [on].")
@click.option("--pair-dedup/--no-pair-dedup", default=None, help="Drop repeated pairs [on].")
@click.option("--one-to-one/--no-one-to-one", default=None,
              help="Each sentence in at most one pair [off].")
@click.option("--max-pairs-per-doc", type=int, help="Cap of pairs per document pair [none].")
@click.option("--report/--no-report", default=True, show_default=True,
              help="Rebuild DIR/report.html afterwards.")
@user_errors
def bitext(directory, lang_pairs, config_file, report, **flags):
    """Filter the scored candidates of DIRECTORY into bitext (TSV, Moses, Parquet)."""
    from miner.outputs import BitextStage
    from miner.report import ReportStage
    from miner.rundir import RunDir

    cfg = build_config(config_file, out=directory, **flags)
    pairs = _pairs(lang_pairs or cfg.pairs)
    if not pairs:
        raise MinerError("no language pair given (--pair de-en)")
    stages = [BitextStage(cfg, src, tgt) for src, tgt in pairs]
    if report:  # every pair published in the folder, the stages that made them
        stages.append(ReportStage(RunDir(directory).bitext_pairs() or [f"{s}-{t}" for s, t in pairs],
                                  None))
    counts = run_stages(cfg, stages)
    for src, tgt in pairs:
        c = counts[f"bitext/{src}-{tgt}"]
        dropped = ", ".join(f"{k} {v}" for k, v in c["dropped"].items())
        click.echo(f"bitext {src}-{tgt}: {c['kept']} of {c['candidates']} pairs kept "
                   f"({dropped}) -> {RunDir(directory).bitext(src, tgt)}/")


@main.command()
@click.argument("directory", type=click.Path())
@click.option("--pair", "lang_pair", help="Only this pair, e.g. de-en [every pair].")
@user_errors
def report(directory, lang_pair):
    """Rebuild DIRECTORY/report.json and report.html from the manifest and the bitext."""
    from miner.report import build_report
    from miner.rundir import RunDir
    from miner.runlock import RunLock

    root = RunDir(directory).root
    if not root.is_dir():  # before the lock, which would create the folder
        raise MinerError(f"{root}: " + ("not a directory" if root.exists() else "no such directory"))
    with RunLock(directory):
        r = build_report(directory, lang_pair)
    for pair, p in r["pairs"].items():
        click.echo(f"{pair}: {p['counts'].get('kept', '?')} pairs kept")
    click.echo(f"report written to {RunDir(directory).report_html}")
