"""`report.html`: a sweep as one self-contained page (Plotly, its JavaScript inlined).

Built from the job directories alone (`result.json`, `metrics.jsonl`, `.hydra/overrides.yaml`),
so it works for every sweeper, Hydra's basic one included: the trials go into an in-memory Optuna
study (`optuna.create_trial`), whose `optuna.visualization` plots show the search (history,
parallel coordinates, slices, parameter importances, the Pareto front); Plotly draws the rest
(learning curves, the vmap launcher's populations) and a sortable table lists every trial. Where
the sweep kept an Optuna study in `study.db`, its distributions (log scales) are used.
"""

import html
import logging
import warnings
from pathlib import Path
from typing import Any, Optional

from omegaconf import OmegaConf

from hpjax.report.study import build_study
from hpjax.report.trials import Trial, objectives_of, rank, read_trials
from hpjax.results import read_metrics

log = logging.getLogger("hpjax")

REPORT_FILE = "report.html"
TOP_CURVES = 10  # learning curves of the best trials (plus every diverged or pruned one)
_FAILED = ("diverged", "pruned", "failed", "incomplete")


class ReportError(ValueError):
    """A directory that holds no sweep, or a sweep without trials."""


def sweep_objectives(sweep_dir: Path) -> Optional[dict]:
    """The sweeper's `objectives` from the sweep's `multirun.yaml` ({} or None: the trials' own)."""
    from hpjax.results import parse_objectives

    path = Path(sweep_dir) / "multirun.yaml"
    if not path.exists():
        return None
    objectives = OmegaConf.select(OmegaConf.load(path), "hydra.sweeper.objectives", default=None)
    return parse_objectives(objectives) if objectives else None


def check_sweep(sweep_dir: Path) -> list[Trial]:
    """The sweep's trials; a clear error for a directory that is not a sweep or has no trial."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise ReportError(f"{sweep_dir} is not a directory: give a sweep directory "
                          "(hydra.sweep.dir, e.g. outputs/multirun/2026-11-27_13-48-40)")
    trials = read_trials(sweep_dir)
    if not (sweep_dir / "multirun.yaml").exists() and not trials:
        raise ReportError(f"{sweep_dir} is not a sweep directory: it has no multirun.yaml and "
                          "no numbered job directories (hydra.sweep.dir of an `hpjax -m` run)")
    if not trials:
        raise ReportError(f"the sweep in {sweep_dir} has no trials yet: no job directory "
                          "0/, 1/, ... (did the sweep stop before its first job?)")
    return trials


# -- the figures ------------------------------------------------------------------------------
def _style(fig: Any, title: str) -> Any:
    fig.update_layout(title=title, template="plotly_white", height=460,
                      margin={"l": 60, "r": 30, "t": 60, "b": 50})
    return fig


def search_figures(study: Any, objectives: dict) -> list[tuple[str, str, Any]]:
    """(id, heading, figure or an explanation) for each `optuna.visualization` plot."""
    from optuna import visualization as vis

    names = list(objectives)
    several = len(names) > 1
    figures: list[tuple[str, str, Any]] = []

    def add(key: str, heading: str, make: Any) -> None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                figures.append((key, heading, _style(make(), heading)))
        except (ValueError, RuntimeError, ZeroDivisionError) as e:
            figures.append((key, heading, f"Not drawn: {e}"))

    for i, name in enumerate(names):
        target = (lambda t, i=i: t.values[i]) if several else None
        suffix = f" ({name})" if several else ""
        add(f"history-{i}", f"Optimisation history{suffix}", lambda target=target, name=name:
            vis.plot_optimization_history(study, target=target, target_name=name))
        if not study.best_trials and not several:
            continue
        add(f"parallel-{i}", f"Parallel coordinates{suffix}", lambda target=target, name=name:
            vis.plot_parallel_coordinate(study, target=target, target_name=name))
        add(f"slice-{i}", f"Slices{suffix}", lambda target=target, name=name:
            vis.plot_slice(study, target=target, target_name=name))
        add(f"importance-{i}", f"Parameter importances (fANOVA){suffix}",
            lambda target=target, name=name: vis.plot_param_importances(
                study, target=target, target_name=name))
    if several:
        add("pareto", "Pareto front", lambda: vis.plot_pareto_front(
            study, target_names=names if len(names) <= 3 else None,
            **({} if len(names) <= 3 else {"targets": lambda t: t.values[:2],
                                            "target_names": names[:2]})))
    return figures


def curves_figure(trials: list[Trial], objectives: dict) -> tuple[Any, list[int]]:
    """The learning curves (objective metric per epoch) of the best trials and of every diverged
    or pruned one, marked; returns the figure and the job numbers drawn."""
    import plotly.graph_objects as go

    ranked, _ = rank(trials, objectives)
    rows = {t.job: read_metrics(t.job_dir) for t in trials}
    first = next(iter(objectives))
    metric = first if any(first in r for rs in rows.values() for r in rs) else "val/loss"
    shown = [t for t in ranked if t.ok][:TOP_CURVES] + [
        t for t in trials if t.status in ("diverged", "pruned")]
    fig = go.Figure()
    for i, t in enumerate(shown):
        points = [(r["epoch"], r.get(metric)) for r in rows[t.job]]
        marked = t.status in ("diverged", "pruned")
        line = ({"dash": "dot", "color": "#d62728"} if t.status == "diverged" else
                {"dash": "dash", "color": "#7f7f7f"} if t.status == "pruned" else {})
        fig.add_trace(go.Scatter(
            x=[e for e, _ in points], y=[v for _, v in points], mode="lines+markers",
            name=f"trial {t.job}" + (f" ({t.status})" if marked else f" (rank {i + 1})"),
            line=line, marker={"symbol": "x" if marked else "circle", "size": 5},
            hovertemplate=f"trial {t.job}<br>epoch %{{x}}<br>{metric} %{{y:.4f}}"
                          f"<br>{html.escape(' '.join(t.overrides))}<extra>{t.status}</extra>"))
    fig.update_xaxes(title="epoch")
    fig.update_yaxes(title=metric)
    return _style(fig, f"Learning curves: {metric} of the top {min(TOP_CURVES, len(ranked))} "
                       "trials, diverged (red, dotted) and pruned (grey, dashed)"), \
        [t.job for t in shown]


def timeline_figure(trials: list[Trial]) -> Optional[Any]:
    """The vmap launcher's populations in time: compile, then training, one bar each; None for
    trials that ran one by one."""
    import plotly.graph_objects as go

    pops: dict[tuple, dict] = {}
    for t in trials:
        p = t.get("population")
        if p:
            pop = pops.setdefault((p["start"], p["label"]), dict(p, jobs=[]))
            if p["end"] > pop["end"]:  # a refilled population's trials end one by one
                pop.update(p)
            pop["jobs"].append(t.job)
    if not pops:
        return None
    t0 = min(p["start"] for p in pops.values())
    ordered = sorted(pops.values(), key=lambda p: p["start"])
    labels = [f"{i + 1}: {p['label']} ({p['members']} trials" + (
        f", rungs {p['rungs']})" if p.get("rungs") else ")") for i, p in enumerate(ordered)]
    hover = [f"{p['label']}<br>trials {', '.join(map(str, p['jobs']))}" +
             (f"<br>rungs (trials x epochs) {p['rungs']}" if p.get("rungs") else "")
             for p in ordered]
    compile_s = [p["compile_s"] for p in ordered]
    run_s = [max(p["end"] - p["start"] - p["compile_s"], 0.0) for p in ordered]
    fig = go.Figure([
        go.Bar(y=labels, x=compile_s, base=[p["start"] - t0 for p in ordered], orientation="h",
               name="compile", marker_color="#ff7f0e", hovertext=hover,
               hovertemplate="%{hovertext}<br>compile %{x:.2f} s<extra></extra>"),
        go.Bar(y=labels, x=run_s, base=[p["start"] - t0 + p["compile_s"] for p in ordered],
               orientation="h", name="train", marker_color="#1f77b4", hovertext=hover,
               hovertemplate="%{hovertext}<br>train %{x:.2f} s<extra></extra>")])
    fig.update_layout(barmode="overlay")
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(title="seconds since the first population started")
    fig = _style(fig, f"Populations: {len(ordered)} trained programs, "
                      f"{sum(p['members'] for p in ordered)} trials")
    fig.update_layout(height=max(260, 60 + 40 * len(ordered)))
    return fig


def rungs_figure(trials: list[Trial]) -> Optional[Any]:
    """Members still training after each epoch, one line per population where some stopped
    before the last epoch (pruned at a rung, stopped early, diverged); None when none did."""
    import plotly.graph_objects as go

    pops: dict[tuple, list[Trial]] = {}
    for t in trials:
        p = t.get("population")
        if p:
            pops.setdefault((p["start"], p["label"]), []).append(t)
    fig, drawn = go.Figure(), 0
    for i, (_, label) in enumerate(sorted(pops)):
        members = pops[(_, label)]
        runs = [t.get("epochs_run", 0) or 0 for t in members]
        if min(runs) == max(runs):
            continue
        epochs = list(range(1, max(runs) + 1))
        pruned = sum(t.status == "pruned" for t in members)
        fig.add_trace(go.Scatter(
            x=epochs, y=[sum(r >= e for r in runs) for e in epochs], mode="lines+markers",
            line={"shape": "hv"}, name=f"{i + 1}: {label}" + (f" ({pruned} pruned)"
                                                               if pruned else "")))
        drawn += 1
    if not drawn:
        return None
    fig.update_xaxes(title="epoch")
    fig.update_yaxes(title="trials still training", rangemode="tozero")
    return _style(fig, "Trials still training per epoch: rungs (pruned), early stopping, "
                       "divergence")


# -- the page ---------------------------------------------------------------------------------
def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return html.escape(str(v))


def trials_table(trials: list[Trial], objectives: dict) -> str:
    ranked, front = rank(trials, objectives)
    position = {t.job: i + 1 for i, t in enumerate(ranked) if t.ok}
    # Overrides every trial shares (search=qmc, train.epochs=5) are in the heading, not columns.
    common = set.intersection(*(set(t.overrides) for t in trials)) if len(trials) > 1 else set()
    keys = list(dict.fromkeys(o.split("=", 1)[0] for t in trials for o in t.overrides
                              if o not in common))
    metrics = list(dict.fromkeys([*objectives, "val/loss", "test/accuracy", "test/loss"]))
    head = ["trial", "rank", *keys, "status", *metrics, "epochs", "num_params", "time s"]
    head += ["pareto"] if len(objectives) > 1 else []
    body = []
    for t in ranked:
        values = dict(o.split("=", 1) for o in t.overrides)
        cells = [t.job, position.get(t.job), *(values.get(k) for k in keys), t.status,
                 *(t.metric(m) for m in metrics), t.get("epochs_run"), t.get("num_params"),
                 round(t.seconds, 3) if t.seconds is not None else None]
        cells += ["*" if t.job in front else ""] if len(objectives) > 1 else []
        body.append(f'<tr class="{t.status}">' + "".join(f"<td>{_cell(c)}</td>" for c in cells)
                    + "</tr>")
    return ('<table id="trials" class="sortable"><thead><tr>' +
            "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr></thead><tbody>\n" +
            "\n".join(body) + "</tbody></table>")


_SORT_JS = """
document.querySelectorAll("table.sortable th").forEach((th, col) => {
  th.addEventListener("click", () => {
    const body = th.closest("table").tBodies[0];
    const asc = th.dataset.order !== "asc";
    th.closest("tr").querySelectorAll("th").forEach(h => delete h.dataset.order);
    th.dataset.order = asc ? "asc" : "desc";
    const key = r => r.cells[col].textContent;
    const rows = Array.from(body.rows).sort((a, b) => {
      const x = key(a), y = key(b), nx = parseFloat(x), ny = parseFloat(y);
      if (x === "" || y === "") return (x === "") - (y === "");
      const c = isNaN(nx) || isNaN(ny) ? x.localeCompare(y) : nx - ny;
      return asc ? c : -c;
    });
    rows.forEach(r => body.appendChild(r));
  });
});
"""

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; }
.note { color: #666; }
table { border-collapse: collapse; font-size: 0.85em; }
th, td { border: 1px solid #ddd; padding: 3px 6px; text-align: right; }
th { background: #f4f4f4; cursor: pointer; position: sticky; top: 0; }
th[data-order="asc"]::after { content: " \\25B2"; }
th[data-order="desc"]::after { content: " \\25BC"; }
tr.diverged td, tr.failed td, tr.incomplete td { color: #b22; } tr.pruned td { color: #888; }
"""


def render(sweep_dir: Path, trials: list[Trial], objectives: dict) -> str:
    """The page's HTML: every figure, then the table; Plotly's JavaScript once, inlined."""
    from plotly.offline import get_plotlyjs

    study = build_study(trials, objectives, sweep_dir)
    sections = search_figures(study, objectives)
    curves, _ = curves_figure(trials, objectives)
    sections.append(("curves", "Learning curves", curves))
    timeline = timeline_figure(trials)
    if timeline is not None:
        sections.append(("timeline", "Populations (hydra/launcher=vmap)", timeline))
    rungs = rungs_figure(trials)
    if rungs is not None:
        sections.append(("rungs", "Trials still training, by population", rungs))
    counts: dict[str, int] = {}
    for t in trials:
        counts[t.status] = counts.get(t.status, 0) + 1
    ranked, _ = rank(trials, objectives)
    best = ranked[0] if ranked and ranked[0].ok else None
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    best_line = (f"best: trial {best.job}, " + ", ".join(
        f"{m} {_cell(best.metric(m))}" for m in objectives) +
        f" ({html.escape(' '.join(best.overrides))})" if best else "no finished trial")
    common = sorted(set.intersection(*(set(t.overrides) for t in trials))) \
        if len(trials) > 1 else []
    parts = [f"<h1>Sweep {html.escape(str(Path(sweep_dir).resolve()))}</h1>",
             f"<p>{len(trials)} trials ({summary}); objectives: " +
             ", ".join(f"{html.escape(m)} ({mode})" for m, mode in objectives.items()) +
             f"; {best_line}.</p>" + (f"<p>Every trial: <code>{html.escape(' '.join(common))}"
                                      "</code></p>" if common else "")]
    for key, heading, fig in sections:
        parts.append(f'<h2 id="h-{key}">{html.escape(heading)}</h2>')
        if isinstance(fig, str):
            parts.append(f'<p class="note" id="{key}">{html.escape(fig)}</p>')
        else:
            parts.append(fig.to_html(full_html=False, include_plotlyjs=False, div_id=key,
                                     config={"displaylogo": False}))
    parts.append('<h2 id="h-trials">All trials (click a column to sort)</h2>')
    parts.append(trials_table(trials, objectives))
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
            f"<title>hpjax sweep {html.escape(Path(sweep_dir).name)}</title>"
            f"<style>{_CSS}</style><script type=\"text/javascript\">{get_plotlyjs()}</script>"
            "</head><body>\n" + "\n".join(parts) + f"\n<script>{_SORT_JS}</script></body></html>\n")


def write_report(sweep_dir: str | Path, objectives: Optional[dict] = None) -> Path:
    """Writes `report.html` into a sweep directory; returns its path.

    Args:
      sweep_dir: the sweep's directory (`hydra.sweep.dir`).
      objectives: {metric: "min"|"max"}; default: the sweeper's (`multirun.yaml`), else the
        trials' own objective.
    Raises:
      ReportError: the directory is not a sweep, or it has no trials.
    """
    sweep_dir = Path(sweep_dir)
    trials = check_sweep(sweep_dir)
    objectives = objectives_of(trials, objectives or sweep_objectives(sweep_dir))
    path = sweep_dir / REPORT_FILE
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(render(sweep_dir, trials, objectives))
    tmp.replace(path)
    return path


# -- in a browser ------------------------------------------------------------------------------
_COUNT_JS = """() => {
  const out = {};
  document.querySelectorAll('.js-plotly-plot').forEach(gd => {
    out[gd.id] = {traces: gd.data.length,
                  points: gd.querySelectorAll('.scatterlayer path.point').length,
                  bars: gd.querySelectorAll('.barlayer g.point').length};
  });
  out.table_rows = document.querySelectorAll('#trials tbody tr').length;
  return out;
}"""


def browse(url: str, png: Path, *, chromium: str, full_page: bool = True,
           width: int = 1280, height: int = 900, wait_for: Optional[str] = None,
           settle_ms: int = 0) -> tuple[dict, list]:
    """Opens a page in headless Chromium (Playwright driving the browser at `chromium`, none
    downloaded) and saves a screenshot; returns what the report's plots drew ({plot id: traces,
    points, bars}, table rows; {} for other pages) and the console's errors."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            errors: list = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url)
            page.wait_for_load_state("load")
            if wait_for:
                page.wait_for_selector(wait_for, timeout=60_000)
            if settle_ms:
                page.wait_for_timeout(settle_ms)
            info = page.evaluate(_COUNT_JS) if url.startswith("file:") else {}
            if info.get("table_rows"):  # the table sorts on a click: by trial, ascending
                page.click("#trials th:first-child")
                info["sorted_trials"] = page.eval_on_selector_all(
                    "#trials tbody tr", "rows => rows.map(r => r.cells[0].textContent)")
                page.evaluate("window.scrollTo(0, 0)")
            page.screenshot(path=str(png), full_page=full_page)
        finally:
            browser.close()
    return info, errors


__all__ = ["REPORT_FILE", "ReportError", "browse", "build_study", "write_report"]
