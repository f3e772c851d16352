"""Progress: one live bar per population on a terminal, one log line per epoch elsewhere."""

import logging

from helpers import sgd_configs
from hpjax.engine.loop import train_population


def test_progress_reports_each_epoch_live_or_as_log_lines(caplog):
    from io import StringIO

    from rich.console import Console

    from hpjax.engine.progress import SweepProgress

    buf = StringIO()
    progress = SweepProgress(Console(file=buf, force_terminal=True, width=160), live=True)
    reports = []
    with progress.running():
        update = progress.population("population 1/1: 3 trials", 4, ["trial 7", "trial 8", "t9"])
        outcomes = train_population(sgd_configs([0.1, 0.05, 1e6]), launcher="vmap",
                                    on_progress=lambda r: (reports.append(r), update(r)))
    assert [(r.epoch, r.running, r.members) for r in reports] == [(e, 2, 3) for e in range(1, 5)]
    best = max((0, 1), key=lambda i: outcomes[i].result.objective)  # the diverged one never
    assert (reports[-1].best, reports[-1].best_member) == (outcomes[best].result.objective, best)
    text = buf.getvalue()
    assert "population 1/1: 3 trials" in text and "epoch   4/4" in text and "2/3 running" in text
    assert f"best val/accuracy {reports[-1].best:.4f} (trial {7 + best})" in text
    # without a terminal: one log line per epoch, the same numbers
    plain = SweepProgress(Console(file=StringIO()))
    assert not plain.live
    with caplog.at_level(logging.INFO, logger="hpjax"), plain.running():
        for r in reports:
            plain.population("population 1/1", 4, ["trial 7", "trial 8", "t9"])(r)
    assert caplog.messages[-1] == (f"epoch   4/4  2/3 members running  best val/accuracy "
                                   f"{reports[-1].best:.4f} (trial {7 + best})")
