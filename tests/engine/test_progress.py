"""Progress: one live bar per population on a terminal, one log line per epoch elsewhere."""

import logging

from helpers import SMALL_MLP, sgd_configs
from hpjax.engine.loop import train_population


def test_progress_reports_each_epoch_live_or_as_log_lines(caplog, tmp_path, monkeypatch):
    from io import StringIO

    from rich.console import Console

    from hpjax.engine.progress import SweepProgress

    buf = StringIO()
    progress = SweepProgress(Console(file=buf, force_terminal=True, width=160), live=True)
    reports = []
    with progress.running():
        update = progress.population("population 1/1: 3 trials", 4, ["trial 7", "trial 8", "t9"])
        outcomes = train_population(sgd_configs([0.1, 0.05, 1e6], SMALL_MLP), launcher="vmap",
                                    on_progress=lambda r: (reports.append(r), update(r)))
    assert [(r.epoch, r.running, r.members) for r in reports] == [(e, 2, 3) for e in range(1, 5)]
    best = max((0, 1), key=lambda i: outcomes[i].result.objective)  # the diverged one never
    assert (reports[-1].best, reports[-1].best_member) == (outcomes[best].result.objective, best)
    text = buf.getvalue()
    assert "population 1/1: 3 trials" in text and "epoch   4/4" in text and "2/3 running" in text
    assert f"best val/accuracy {reports[-1].best:.4f} (trial {7 + best})" in text
    # without a terminal: one log line per epoch in the populations' log file, the same
    # numbers, and one line on the terminal when the population ends
    plain = SweepProgress(Console(file=StringIO()), log_file=str(tmp_path / "populations.log"))
    assert not plain.live
    terminal = logging.StreamHandler(StringIO())
    terminal.setFormatter(logging.Formatter("[HYDRA] %(message)s"))
    monkeypatch.setattr(logging.root, "handlers", [caplog.handler, terminal])
    with caplog.at_level(logging.INFO, logger="hpjax"), plain.running():
        update = plain.population("population 1/1", 4, ["trial 7", "trial 8", "t9"])
        for r in reports:
            update(r)
    best_line = f"best val/accuracy {reports[-1].best:.4f} (trial {7 + best})"
    assert terminal.stream.getvalue() == (
        f"[HYDRA] population 1/1: done after epoch 4, {best_line}\n")
    assert not caplog.messages  # (the end goes to the terminal's handler, as set up at the start)
    lines = (tmp_path / "populations.log").read_text().splitlines()
    assert len(lines) == 4 and lines[-1].endswith(
        f"] population 1/1: epoch   4/4  2/3 members running  {best_line}")


def test_a_piped_sweep_prints_a_line_per_population_not_per_epoch(hpjax_main, tmp_path):
    """`hpjax -m search=qmc`, piped (as in a SLURM log; here in this process, its output not a
    terminal): the qmc preset asks whole populations at once; each population's epochs go to
    the sweep's populations.log, the terminal gets its end; Optuna's notice that QMCSampler is
    experimental (nothing a user can act on) is not shown."""
    import warnings

    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")  # every warning the command lets through, recorded
        out = hpjax_main("-m", "search=qmc", "hydra.sweeper.n_trials=8", "data=iris",
                         "train.epochs=3", "model.width=choice(16, 32)", "model.num_layers=1",
                         f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert out.returncode == 0, out.stderr[-2000:]
    assert not [w for w in shown if "QMCSampler" in str(w.message)], [str(w.message)
                                                                       for w in shown]
    lines = (out.stdout + out.stderr).splitlines()
    assert not [line for line in lines if "Warning" in line]
    assert not [line for line in lines if " epoch   " in line]  # no per-epoch line
    ends = [line for line in lines if ": done after epoch 3, best val/accuracy" in line]
    launched = [line for line in lines if "Launching 8 jobs as 2 populations" in line]
    assert len(ends) == 2 and len(launched) == 1  # one batch of 8: a population per width
    epochs = (tmp_path / "sweep" / "populations.log").read_text().splitlines()
    assert len(epochs) == 2 * 3 and "population 2/2: 3 trials: epoch   3/3" in epochs[-1]
    # the study, the search space (7 lines), the 8 jobs (a batch of at most 20 names them),
    # the launch (3), the ends (2), the progress, the table (a row a line: 8 + 5), the results
    assert len(lines) <= 36, "\n".join(lines)


def test_batches_like_the_one_before_still_log_their_epochs(hpjax_main, tmp_path):
    """Three batches of one trial, piped: the second and third launch as the first did, so the
    terminal names the first only; populations.log still has every population's epochs."""
    out = hpjax_main("-m", "hydra/sweeper=hpjax", "hydra.sweeper.algorithm=random",
                     "hydra.sweeper.n_trials=3", "hydra.sweeper.batch_size=1",
                     "optimizer.lr=tag(log, interval(1e-3, 1e-2))", "data=iris",
                     "train.epochs=3", "model.width=16", "model.num_layers=1",
                     f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert out.returncode == 0, out.stderr[-2000:]
    lines = (out.stdout + out.stderr).splitlines()
    ends = [line for line in lines if ": done after epoch 3, best val/accuracy" in line]
    assert len(ends) == 1 and ends[0].endswith("(trial 0)")
    epochs = (tmp_path / "sweep" / "populations.log").read_text().splitlines()
    assert [line.split("] ", 1)[1].split("  best")[0] for line in epochs] == [
        f"population 1/1: 1 trials: epoch   {e}/3  1/1 members running"
        for _ in range(3) for e in (1, 2, 3)]
    assert [line.rsplit("(", 1)[1] for line in epochs] == [
        f"trial {t})" for t in range(3) for _ in range(3)]
