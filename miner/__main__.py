"""``python -m miner`` runs the ``mine`` command."""

from miner.cli import main

main(prog_name="mine")
