"""Text shown as text (issue 26): overrides, errors, paths and metric names printed through rich
appear as written, brackets and all (rich would read `[mnist1d]` or `[bold]` as markup)."""

import io

import yaml
from rich.console import Console

from hpjax.engine.progress import EpochReport, SweepProgress
from hpjax.report import report
from hpjax.results import Result

MNIST1D = "data='mnist1d': needs the mnist1d package: pip install 'hpjax[mnist1d]'"


def test_the_report_shows_errors_overrides_and_paths_as_written(tmp_path):
    sweep = tmp_path / "sweep[1]"
    bad_path = f"data.path='{tmp_path}/[red]data[/red].npz': file not found"
    trials = [(["optimizer.lr=0.1", "+note=[bold]x[/bold]"],
               Result("ok", 0.9, "val/accuracy", "max", best={"val/accuracy": 0.9})),
              (["optimizer.lr=0.2", "+note=b"], Result.failed(MNIST1D, "val/accuracy", "max")),
              (["optimizer.lr=0.3", "+note=c"], Result.failed(MNIST1D, "val/accuracy", "max")),
              (["optimizer.lr=0.4", "+note=d"], Result.failed(bad_path, "val/accuracy", "max"))]
    for job, (overrides, result) in enumerate(trials):
        (sweep / str(job) / ".hydra").mkdir(parents=True)
        (sweep / str(job) / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
        result.write(sweep / str(job))
    console = Console(record=True, width=400, file=io.StringIO())
    report(sweep, console=console)
    text = console.export_text()
    assert f"2 trials failed: {MNIST1D} (trials 1, 2)\n" in text  # once, with its trials
    assert f"1 trial failed: {bad_path} (trial 3)\n" in text
    assert "+note=[bold]x[/bold]" in text
    assert (sweep / "summary.csv").read_text().count("pip install 'hpjax[mnist1d]'") == 2


def test_the_live_display_shows_labels_and_names_as_written():
    console = Console(record=True, width=200, file=io.StringIO(), force_terminal=True)
    progress = SweepProgress(console, live=True)
    with progress.running():
        update = progress.population("population [bold]1[/bold]", 2,
                                     names=["lr=[red]0.1", "lr=0.2"])
        update(EpochReport(epoch=1, epochs=2, running=2, members=2, best=0.5, best_member=0,
                           metric="val/[acc]"))
    text = console.export_text()
    assert "population [bold]1[/bold]" in text
    assert "best val/[acc] 0.5000 (lr=[red]0.1)" in text
