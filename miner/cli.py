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

from miner.cli_options import ALL, EXECUTION, ConfigCommand, config_options
from miner.config import Config
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


def _run_pairs(cfg: Config) -> list[tuple[str, str]]:
    """The config's pairs (``--pair`` or ``pairs`` of the config file), normalised; an
    error when there is none."""
    from miner.pipeline import run_pairs

    if not cfg.pairs:
        raise MinerError("no language pair given (--pair de-en, or pairs = [...] in the config)")
    return run_pairs(cfg)


@click.group(context_settings=dict(help_option_names=["-h", "--help"]))
@click.version_option(package_name="miner", prog_name="mine",
                      message="%(prog)s %(version)s")
@click.option("-v", "--verbose", is_flag=True, help="Log what each stage does.")
def main(verbose: bool) -> None:
    """Mine parallel sentences (bitext) from monolingual text.

    Every setting is a flag of `mine run` and of the stage command that uses it, and a
    name in a TOML config file (--config); `mine config` prints them all, resolved.
    """
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # progress lines (off a terminal, every 30 s: miner.progress) show without -v, so
    # that a long run's log is never silent for minutes
    logging.getLogger("miner.progress").setLevel(logging.INFO)


# --- commands: each is a few lines that call into a stage module -------------------
#
# The settings of each command are the Config fields it uses, as generated flags
# (miner.cli_options): a flag of another stage is a usage error.

# what mining two sentence lists uses (mine pair, mine eval bucc): the stages from embed
# to bitext, and of prepare the punctuation rules (sentence cleaning) and the LID model
# (the bitext LID-agreement filter and a learned scorer's features)
MINING = ("embed", "knn", "score", "filters", "shard_size", "seed", "normalize_punctuation",
          "lid_model", *EXECUTION)
SHOW_HELP = "Print this many of the best pairs (0: none)."
SHOW_DEFAULT = 10  # `mine pair` and `mine run`: a look at the best pairs, as a start


@main.command(cls=ConfigCommand)
@click.argument("src", type=click.Path())
@click.argument("tgt", type=click.Path())
@click.option("--src-lang", required=True, help="Language code of SRC, e.g. de.")
@click.option("--tgt-lang", required=True, help="Language code of TGT, e.g. en.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Output TSV (score, src, tgt), best first; .gz compresses.")
@click.option("--show", type=int, default=SHOW_DEFAULT, show_default=True, help=SHOW_HELP)
@click.option("--work", type=click.Path(), show_default="a temporary directory",
              help="Keep the stage outputs here (a rerun resumes).")
@config_options(*MINING)
@user_errors
def pair(src, tgt, src_lang, tgt_lang, output, show, work, settings):
    """Mine two one-sentence-per-line files (plain or .gz) into scored pairs.

    The pairs pass the threshold and the filters of `mine run` (the same defaults:
    1.30 for muse with the ratio margin); --threshold and the filter flags change them.
    """
    from miner.pair import (check_langs, check_output, format_pairs, mine_files, work_directory,
                            write_tsv)

    src_lang, tgt_lang = check_langs(src_lang, tgt_lang)
    check_output(output, (src, tgt))
    cfg = settings.config()
    with work_directory(work) as work_dir:
        table, counts = mine_files(src, tgt, src_lang, tgt_lang, cfg, work_dir)
    n = write_tsv(output, table)
    dropped = ", ".join(f"{k} {v}" for k, v in counts["dropped"].items() if v) or "none"
    click.echo(f"{n} of {counts['candidates']} pairs ({src_lang}-{tgt_lang}) kept (dropped: "
               f"{dropped}), written to {output}", err=True)
    for line in format_pairs(table, show):
        click.echo(line)


@main.group(name="eval")
def eval_group():
    """Evaluate mining (BUCC) and similarity search (Tatoeba)."""


@eval_group.command(cls=ConfigCommand)
@click.argument("directory", type=click.Path())
@click.option("--pair", "lang_pair", required=True, help="Language pair, e.g. de-en.")
@click.option("--tune-split", default="training", show_default=True,
              help="Split whose gold pairs choose the threshold.")
@click.option("--test-split", default="test", show_default=True,
              help="Split mined with that threshold and scored.")
@click.option("--select", is_flag=True,
              help="Also choose margin (ratio|distance) and k (2,4,8,16) on the tune split.")
@click.option("--filters", "use_filters", is_flag=True,
              help="Apply the bitext filters (all but the threshold, which is tuned) as "
                   "`mine run` does, before tuning and scoring.")
@click.option("--learn", type=click.Path(dir_okay=False),
              help="Fit a scorer on the tune split's candidates, write it to this JSON "
                   "file and score the test split with it.")
@click.option("--output-pairs", type=click.Path(dir_okay=False),
              help="Write the test split's extracted pairs (src-id<TAB>tgt-id).")
@click.option("--json", "json_file", type=click.Path(dir_okay=False),
              help="Write the result as JSON.")
@config_options(*MINING, exclude=("threshold",))  # the evaluation tunes the threshold
@user_errors
def bucc(directory, lang_pair, tune_split, test_split, select, use_filters, learn,
         output_pairs, json_file, settings):
    """BUCC 2018-style mining evaluation on DIRECTORY, mined by the stages of `mine run`.

    The filter settings apply with --filters."""
    from miner.evaluate.bucc import evaluate_bucc
    from miner.io import atomic_open, write_json

    cfg = settings.config()
    r = evaluate_bucc(directory, lang_pair, None, tune_split, test_split, cfg=cfg,
                      select=select, filters=use_filters, learn=learn)
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


@eval_group.command(cls=ConfigCommand)
@click.argument("directory", type=click.Path())
@click.option("--langs", show_default="the encoder's languages",
              help="Comma-separated Tatoeba codes.")
@click.option("--json", "json_file", type=click.Path(dir_okay=False),
              help="Write the results as JSON.")
# xsim: the encoder (not its storage dtype: nothing is stored) and the exact nearest
# neighbour (k=1); nothing of margin, retrieval or shards
@config_options("embed", "knn_backend", exclude=("embed_dtype",))
@user_errors
def tatoeba(directory, langs, json_file, settings):
    """Tatoeba similarity search error rates (xsim) against English."""
    from miner.embed.encoders import encoder_for
    from miner.evaluate.tatoeba import MUSE_LANGS, evaluate_tatoeba
    from miner.io import write_json

    cfg = settings.config()
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


@main.command(cls=ConfigCommand)
@click.option("--lang", "langs", multiple=True, show_default="the languages of the config's pairs",
              help="Language to keep (2- or 3-letter ISO 639 code); repeat for several.")
@config_options("inputs", "out", "prepare", "shard_size", "max_memory", *EXECUTION)
@user_errors
def prepare(langs, settings):
    """Read INPUTS, split, filter and language-identify their sentences into
    OUT/sentences/{lang}/part-*.parquet."""
    from miner.pipeline import pair_langs
    from miner.prepare import PrepareStage

    cfg = settings.config()
    if not cfg.inputs:
        raise MinerError("give at least one INPUT file")
    langs = list(langs) or pair_langs(cfg)
    if not langs:
        raise MinerError("no language given (--lang de, or pairs = [...] in the config)")
    counts = run_stages(cfg, [PrepareStage(cfg, list(cfg.inputs), langs)])["prepare"]
    for lang, c in counts.items():
        click.echo(f"{lang}: {c['documents']} documents, {c['sentences']} sentences, "
                   f"{c['kept']} kept ({c['too_short']} too short, {c['too_long']} too long, "
                   f"{c['wrong_language']} wrong language, {c['duplicate']} duplicate)")


@main.command(cls=ConfigCommand)
@click.argument("directory", type=click.Path())
@click.option("--lang", "langs", multiple=True,
              show_default="every language with sentence shards in DIRECTORY",
              help="Language to embed; repeat for several.")
@config_options("embed", *EXECUTION)
@user_errors
def embed(directory, langs, settings):
    """Embed the sentence shards of DIRECTORY (from `mine prepare`), resumably."""
    from miner.embed.stage import EmbedStage
    from miner.lid import normalize_lang
    from miner.rundir import RunDir

    cfg = settings.config(out=directory)
    if langs:
        langs = list(dict.fromkeys(normalize_lang(x) for x in langs))
    else:
        run_dir = RunDir(directory)
        if run_dir.root.exists() and not run_dir.root.is_dir():
            raise MinerError(f"{run_dir.root}: not a directory")
        langs = run_dir.sentence_langs()
        if not langs:
            raise MinerError(f"{run_dir.root}: no sentence shards (sentences/LANG/part-*.parquet);"
                             f" run `mine prepare` first")
    counts = run_stages(cfg, [EmbedStage(cfg, lang) for lang in langs])
    for lang in langs:
        c = counts[f"embed/{lang}"]
        click.echo(f"embed {lang}: {c['sentences_embedded']} sentences in "
                   f"{c['embedded_shards']} shard(s), {c['skipped_shards']} already done")


@main.command(cls=ConfigCommand)
@click.argument("directory", type=click.Path())
@config_options("pairs", "knn", "seed", *EXECUTION)
@user_errors
def knn(directory, settings):
    """k nearest neighbours of each source sentence among the targets and back."""
    from miner.knn.stage import KnnStage

    cfg = settings.config(out=directory)
    pairs = _run_pairs(cfg)
    counts = run_stages(cfg, [KnnStage(cfg, src, tgt) for src, tgt in pairs])
    for src, tgt in pairs:
        for direction in ("fwd", "bwd"):
            d = counts[f"knn/{src}-{tgt}"][direction]
            click.echo(f"knn {src}-{tgt} {direction}: {d['queries']} queries x {d['database']} "
                       f"({d['index']}), {d['searched_shards']} shard(s) searched, "
                       f"{d['skipped_shards']} already done")


@main.command(cls=ConfigCommand)
@click.argument("directory", type=click.Path())
# lid_model: a learned scorer's features include LID probabilities
@config_options("pairs", "score", "shard_size", "lid_model", *EXECUTION, exclude=("threshold",))
@user_errors
def score(directory, settings):
    """Score stored neighbours with a margin into candidate pairs."""
    from miner.score import ScoreStage

    cfg = settings.config(out=directory)
    pairs = _run_pairs(cfg)
    counts = run_stages(cfg, [ScoreStage(cfg, src, tgt) for src, tgt in pairs])
    for src, tgt in pairs:
        click.echo(f"score {src}-{tgt}: {counts[f'score/{src}-{tgt}']['candidates']} candidates")


@main.command(cls=ConfigCommand)
@click.option("--show", type=int, default=SHOW_DEFAULT, show_default=True,
              help=SHOW_HELP + " Per pair.")
@config_options(*ALL)
@user_errors
def run(show, settings):
    """Run every stage, from INPUTS (dumps, text, JSONL...) to filtered bitext.

    Stages whose outputs are complete are skipped, so rerunning after a crash resumes.
    `mine config` with the same arguments prints the settings this run uses.
    """
    from miner.pipeline import run_pipeline
    from miner.rundir import RunDir

    cfg = settings.config()
    summary = run_pipeline(cfg, progress=lambda msg: click.echo(msg, err=True))
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
    # after the run: an error stays the one line on stderr
    click.echo(f"config hash {cfg.config_hash()} (`mine config` with these arguments prints "
               f"the settings)")


@main.command(name="config", cls=ConfigCommand)
@config_options(*ALL)
@user_errors
def config_command(settings):
    """Print the settings `mine run` would use with these arguments, as TOML.

    Each value's comment says where it came from: the default, the config file or a
    flag. The output is a config file: `mine run --config FILE` runs with the same
    settings (the same config hash; input paths are written absolute).
    """
    cfg = settings.config()
    click.echo("# the settings of `mine run` with these arguments (mine config)\n"
               f"# config hash {cfg.config_hash()}")
    click.echo(cfg.to_toml(settings.origin), nl=False)


@main.command(cls=ConfigCommand)
@click.argument("directory", type=click.Path())
@click.option("--report/--no-report", default=True, show_default=True,
              help="Rebuild DIR/report.html afterwards.")
# lid_model: the LID-agreement filter; scorer: a learned scorer's scores have its threshold
@config_options("pairs", "threshold", "scorer", "filters", "lid_model", *EXECUTION)
@user_errors
def bitext(directory, report, settings):
    """Filter the scored candidates of DIRECTORY into bitext (TSV, Moses, Parquet)."""
    from miner.outputs import BitextStage
    from miner.report import ReportStage
    from miner.rundir import RunDir

    cfg = settings.config(out=directory)
    pairs = _run_pairs(cfg)
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
