"""A detector slower than the traffic, for the backpressure test (loaded as 'tests.slow_detector:SlowDetector')."""

from __future__ import annotations

import time

from detectors.base import Detector


class SlowDetector(Detector):
    name = "slow"

    def __init__(self, seconds_per_batch: float = 0.2):
        self.seconds_per_batch = seconds_per_batch

    def score_batch(self, events):
        time.sleep(self.seconds_per_batch)
        return []
