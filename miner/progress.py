"""Progress of long work: a tqdm bar on a terminal, a log line every 30 s elsewhere.

Every long stage counts its work in the unit people think in (sentences, queries,
candidates, pairs) through one ``Progress``. On a terminal it is a tqdm bar with rate
and ETA; in a non-TTY run (CI, nohup, a Ray driver's log) tqdm is off and the same
numbers go to the log every ``LOG_EVERY_S`` seconds, so a log is never silent for
minutes::

    with Progress("knn de->en", total=n_queries, unit="query") as bar:
        for block in blocks:
            ...
            bar.update(len(block))
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Optional

from tqdm import tqdm

log = logging.getLogger("miner.progress")

LOG_EVERY_S = float(os.environ.get("MINER_PROGRESS_EVERY_S", "30"))


def is_terminal() -> bool:
    """True when stderr is a terminal (where a redrawn bar is readable)."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # closed or replaced stderr
        return False


def human_count(value: float) -> str:
    """12345678 -> '12.3M'; counts read by people, not parsed."""
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            return f"{value / limit:.1f}{suffix}"
    return f"{value:.0f}"


def human_seconds(seconds: float) -> str:
    """3725 -> '1h02m'; 75 -> '1m15s'; 4.2 -> '4s'."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


class Progress:
    """Count of work done out of ``total`` (None: unknown), shown as a bar or logged.

    ``enabled=False`` shows and logs nothing (a worker inside a pool, a quiet test),
    but still counts. ``logger``: where the non-TTY lines go.
    """

    def __init__(self, desc: str, total: Optional[int] = None, unit: str = "it",
                 enabled: bool = True, every_s: Optional[float] = None,
                 logger: Optional[logging.Logger] = None, initial: int = 0):
        self.desc = desc
        self.total = total
        self.unit = unit
        self.n = initial
        self.enabled = enabled
        self.every_s = LOG_EVERY_S if every_s is None else every_s
        self.log = logger or log
        self.start = time.monotonic()
        self._initial = initial
        self._last_log = self.start
        self._bar = None
        if enabled and is_terminal():
            self._bar = tqdm(total=total, unit=unit, desc=desc, initial=initial,
                             unit_scale=True, dynamic_ncols=True, leave=False)

    def update(self, n: int = 1) -> None:
        self.n += n
        if self._bar is not None:
            self._bar.update(n)
        elif self.enabled:
            now = time.monotonic()
            if now - self._last_log >= self.every_s:
                self._last_log = now
                self.log.info(self.line())

    def line(self) -> str:
        """'knn de->en: 1.2M/4.0M query (30%), 41.2k query/s, ETA 1m08s'."""
        elapsed = max(time.monotonic() - self.start, 1e-9)
        rate = (self.n - self._initial) / elapsed
        done = human_count(self.n)
        if self.total:
            share = 100.0 * self.n / self.total
            text = f"{self.desc}: {done}/{human_count(self.total)} {self.unit} ({share:.0f}%)"
        else:
            text = f"{self.desc}: {done} {self.unit}"
        text += f", {human_count(rate)} {self.unit}/s"
        if self.total and rate > 0 and self.n < self.total:
            text += f", ETA {human_seconds((self.total - self.n) / rate)}"
        return text

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
