"""Embed stage: sentence encoders and embedding shards."""

from miner.embed.encoders import Encoder, load_encoder, l2_normalize, usable_cores

__all__ = ["Encoder", "load_encoder", "l2_normalize", "usable_cores"]
