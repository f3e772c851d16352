"""The README's pictures from a real sweep: report.html, TensorBoard's HParams view and
optuna-dashboard, each opened in Debian's Chromium by `hpjax.report.html.browse` (the function the
browser test uses).

    python scripts/readme_pictures.py                 # a 32-trial qmc sweep on digits, ~1 min
    python scripts/readme_pictures.py --sweep-dir outputs/multirun/<date>   # pictures of a sweep

Needs `pip install -e '.[test,tensorboard,dashboard]'` and Chromium (scripts/local_cluster.sh).
"""

import argparse
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from hpjax.report.html import browse, write_report

ROOT = Path(__file__).resolve().parent.parent
SWEEP = ["search=qmc", "logger=tensorboard"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(command: list[str], port: int, chromium: str, url: str, png: Path, **kw) -> list:
    """Starts a server, waits for its port, screenshots `url`, stops it."""
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(1)
        _, errors = browse(url, png, chromium=chromium, full_page=False, **kw)
        return errors
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:  # optuna-dashboard's server ignores SIGTERM
            server.kill()
            server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep-dir", type=Path, help="an existing sweep (default: run one)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    args = parser.parse_args()
    chromium = shutil.which("chromium") or sys.exit("no chromium: run scripts/local_cluster.sh")
    args.out.mkdir(parents=True, exist_ok=True)
    sweep = args.sweep_dir
    if sweep is None:
        sweep = Path("outputs/readme_pictures").resolve()
        shutil.rmtree(sweep, ignore_errors=True)
        hpjax = Path(sys.executable).parent / "hpjax"
        subprocess.run([str(hpjax), "-m", *SWEEP, f"hydra.sweep.dir={sweep}"], check=True)
    report = write_report(sweep)
    info, errors = browse(report.as_uri(), args.out / "report.png", chromium=chromium,
                          width=1100, height=1500, full_page=False)
    print(f"report.html: {info.get('table_rows')} trials, console errors: {errors}")
    bin_dir = Path(sys.executable).parent
    port = free_port()
    errors = serve([str(bin_dir / "tensorboard"), "--logdir", str(sweep / "tensorboard"),
                    "--port", str(port), "--bind_all"], port, chromium,
                   f"http://localhost:{port}/#hparams", args.out / "tensorboard_hparams.png",
                   width=1400, height=800, settle_ms=8000)
    print(f"tensorboard: console errors {errors}")
    port = free_port()
    errors = serve([str(bin_dir / "optuna-dashboard"), f"sqlite:///{sweep / 'study.db'}",
                    "--port", str(port)], port, chromium,
                   f"http://localhost:{port}/dashboard/studies/1", args.out /
                   "optuna_dashboard.png", width=1400, height=1000, settle_ms=8000)
    print(f"optuna-dashboard: console errors {errors}")
    print(f"pictures in {args.out}")


if __name__ == "__main__":
    main()
