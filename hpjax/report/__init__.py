"""The end of a sweep: `summary.csv`, `best.yaml`, `report.html` and the ranked table, all read
from the job directories, so a report can be rebuilt at any time: `python -m hpjax.report DIR`."""

from hpjax.report.summary import SweepReport, keep_params, main, report

__all__ = ["SweepReport", "keep_params", "main", "report"]
