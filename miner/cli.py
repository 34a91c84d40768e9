"""The ``mine`` command: a thin shell that parses flags, builds a Config and calls
the same functions the tests call. User errors (MinerError) print one line on
stderr and exit 2.
"""

from __future__ import annotations

import functools
import logging
import sys

import click

from miner.config import Config
from miner.errors import MinerError


def user_errors(fn):
    """Turn a MinerError (and a broken pipe) into one line on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except MinerError as e:
            click.echo(f"mine: error: {e}", err=True)
            sys.exit(2)
        except BrokenPipeError:  # `mine pair ... | head`
            sys.exit(0)
        except KeyboardInterrupt:
            click.echo("mine: interrupted", err=True)
            sys.exit(130)

    return wrapper


def build_config(config_file: str | None, **flags) -> Config:
    """A Config from an optional TOML file, then the flags that were given on top."""
    cfg = Config.from_toml(config_file) if config_file else Config()
    cfg.update({k: v for k, v in flags.items() if v is not None and v != ()})
    return cfg


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Log what each stage does.")
def main(verbose: bool) -> None:
    """Mine parallel sentences (bitext) from monolingual text."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")


# --- commands: each is a few lines that call into a stage module -------------------
