"""The ResRL trainer's own-time metric: the slowest rank's seconds, read from the workers' reply metrics."""

import math
from types import SimpleNamespace

from verl_resrl.trainer import _worker_seconds
from verl_resrl.workers.resrl_engine import SECONDS_METRIC


def reply(extra_info):
    return SimpleNamespace(extra_info=extra_info)


def test_slowest_rank_wins_whatever_the_nesting():
    """verl gathers per-rank metrics into lists under 'metrics'; other keys and non-numbers are ignored."""
    outputs = [
        reply({"metrics": [{SECONDS_METRIC: 0.25, "actor/x": 9.0}, {SECONDS_METRIC: [0.5]}], "other": 7}),
        reply({"metrics": {SECONDS_METRIC: [0.125, 0.375]}}),
    ]
    assert _worker_seconds(outputs) == 0.5


def test_no_reply_metric_is_nan_not_zero():
    """A missing measurement must not read as 'ResRL cost nothing'."""
    assert math.isnan(_worker_seconds([reply({}), reply(None), SimpleNamespace()]))
