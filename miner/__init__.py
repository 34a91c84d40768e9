"""miner: mine parallel sentences (bitext) from monolingual dumps.

Stages, one module or subpackage each: readers -> lid -> embed -> knn -> margin
-> filters -> outputs, plus evaluate. ``miner.cli`` is the thin shell around them.
"""

__version__ = "0.1.0"
