"""A detector slower than the traffic, for the backpressure test (loaded as 'tests.slow_detector:SlowDetector')."""

from __future__ import annotations

import os
import time

from detectors.base import Detector


class SlowDetector(Detector):
    name = "slow"

    def __init__(self, seconds_per_batch: float = 0.2, hold_while: str | None = None):
        self.seconds_per_batch = seconds_per_batch
        self.hold_while = hold_while  # a file: while it exists, every batch waits (the test decides when the detector catches up)

    def score_batch(self, events):
        time.sleep(self.seconds_per_batch)
        while self.hold_while and os.path.exists(self.hold_while):
            time.sleep(0.05)
        return []
