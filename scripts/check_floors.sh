#!/usr/bin/env bash
# CI step: do the floors in pyproject.toml work? Installs hpjax in a fresh virtualenv with every
# dependency of [project.dependencies] pinned to its declared lowest version (a constraints file
# made from the `>=` of each line; pip resolves the rest), then runs a smoke test with them: a
# 2-epoch `hpjax` train with a checkpoint (JAX, Flax, Optax, Orbax) and a 2-trial `hpjax -m` sweep
# with hpjax's sweeper (Optuna, SQLAlchemy, its SQLite study, filelock, the report), and a 2-epoch
# train of each example project's own model, Flax NNX and Equinox (the `equinox` extra at its
# floor too), read back with `hpjax.load`. A floor that fails here is raised in pyproject.toml. Then tests/plugins/test_conformance.py: the speedups over
# Optuna's and Hydra's internals and the public path agree at these versions.
#
#   scripts/check_floors.sh            # about 2 min with a warm pip cache, 5 s of it the smoke test
#
# Its virtualenv and outputs go to $HPJAX_FLOORS_DIR (default /tmp/hpjax-floors), made anew.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${HPJAX_FLOORS_DIR:-/tmp/hpjax-floors}
rm -rf "$dir" && mkdir -p "$dir"
python3 - > "$dir/constraints.txt" <<'EOF'
import re, sys, tomllib

for dep in tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]:
    m = re.match(r"\s*([A-Za-z0-9_.\-]+)(\[[^]]*\])?\s*[^;]*?>=\s*([0-9][0-9.]*)", dep)
    if not m:
        sys.exit(f"check_floors: {dep!r} in pyproject.toml declares no floor (>=)")
    print(f"{m.group(1)}=={m.group(3)}")
EOF
echo "check_floors: installing the lowest versions: $(tr '\n' ' ' < "$dir/constraints.txt")"
python3 -m venv "$dir/venv"
"$dir/venv/bin/pip" install -q -c "$dir/constraints.txt" -e . > "$dir/pip.log" 2>&1 ||
  { grep -v "is ignored" "$dir/pip.log" | tail -30; exit 1; }
"$dir/venv/bin/pip" check >/dev/null || { "$dir/venv/bin/pip" check; exit 1; }
# each pinned version is the one installed (a constraint pip could not meet fails the install)
"$dir/venv/bin/python" - "$dir/constraints.txt" <<'EOF'
import sys
from importlib.metadata import version

from packaging.version import Version

for line in open(sys.argv[1]):
    name, want = line.strip().split("==")
    assert Version(version(name)) == Version(want), (name, version(name), want)
EOF
# the equinox extra at its floor, beside the others
equinox=$(python3 -c 'import re, tomllib; print(next(re.match(r"equinox>=([0-9.]+)", d).group(1)
  for d in tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["equinox"]))')
echo "equinox==$equinox" >> "$dir/constraints.txt"
"$dir/venv/bin/pip" install -q -c "$dir/constraints.txt" "equinox==$equinox" >> "$dir/pip.log" 2>&1 ||
  { grep -v "is ignored" "$dir/pip.log" | tail -30; exit 1; }
tiny=(data=iris model.width=8 train.epochs=2)
"$dir/venv/bin/hpjax" "${tiny[@]}" train.checkpoint_every=1 hydra.run.dir="$dir/run" \
  > "$dir/run.log" 2>&1 || { tail -30 "$dir/run.log"; exit 1; }
"$dir/venv/bin/hpjax" -m hydra/sweeper=hpjax hydra.sweeper.n_trials=2 \
  'optimizer.lr=tag(log, interval(1e-3, 1e-1))' "${tiny[@]}" hydra.sweep.dir="$dir/sweep" \
  > "$dir/sweep.log" 2>&1 || { tail -30 "$dir/sweep.log"; exit 1; }
# the example projects' own models, each from its folder as docs/models.md runs them
for project in nnx_model:nnx_mlp equinox_model:eqx_mlp; do
  (cd "examples/${project%%:*}" && "$dir/venv/bin/hpjax" --config-dir conf "model=${project#*:}" \
    data=digits model.features=8 model.batch_norm=true train.epochs=2 optimizer.lr=0.01 \
    hydra.run.dir="$dir/${project%%:*}") > "$dir/${project%%:*}.log" 2>&1 ||
    { tail -30 "$dir/${project%%:*}.log"; exit 1; }
done
"$dir/venv/bin/python" - "$dir" <<'EOF'
import csv, json, os, sys
from pathlib import Path

out = Path(sys.argv[1]).resolve()
result = json.loads((out / "run" / "result.json").read_text())
assert result["status"] == "ok" and result["epochs_run"] == 2, result
assert (out / "run" / "checkpoints" / "1").is_dir(), "no Orbax checkpoint"
rows = list(csv.DictReader((out / "sweep" / "summary.csv").open()))
assert [r["status"] for r in rows] == ["ok", "ok"], rows
assert (out / "sweep" / "best.yaml").is_file()
import equinox as eqx
import numpy as np
from flax import nnx

import hpjax

own, root = {}, Path.cwd()
for project, kind in (("nnx_model", nnx.Module), ("equinox_model", eqx.Module)):
    os.chdir(root / "examples" / project)  # the project's package imports from its folder
    ran = json.loads((out / project / "result.json").read_text())
    assert ran["status"] == "ok" and ran["epochs_run"] == 2, ran
    trained = hpjax.load(out / project)
    module = trained.module[0] if isinstance(trained.module, tuple) else trained.module
    assert isinstance(module, kind), type(module)  # the user's own object, trained state in
    x, y = trained.data.x_test, trained.data.y_test
    raw = x.reshape(len(x), -1) * trained.data.std + trained.data.mean
    accuracy = float(np.mean(trained.predict(raw) == trained.data.classes[y]))
    assert abs(accuracy - ran["test"]["test/accuracy"]) < 1e-6, (accuracy, ran["test"])
    own[project] = accuracy
print(f"check_floors: the lowest versions train, checkpoint and sweep "
      f"(val/accuracy {result['objective']:.3f}; sweep trials {[r['trial'] for r in rows]}); "
      f"NNX and Equinox train and load (test/accuracy {own['nnx_model']:.3f}, "
      f"{own['equinox_model']:.3f})")
EOF
# The speedups over Optuna's and Hydra's internals (hydra_plugins/*/_speedups) and the public path
# they stand in for leave the same study rows and job files at these versions too
"$dir/venv/bin/pip" install -q -c "$dir/constraints.txt" "pytest>=8" "pytest-xdist>=3.5,<4" \
  > "$dir/pip-test.log" 2>&1 || { tail -30 "$dir/pip-test.log"; exit 1; }
"$dir/venv/bin/python" -m pytest -q -n 0 -p no:cacheprovider tests/plugins/test_conformance.py \
  > "$dir/conformance.log" 2>&1 || { tail -40 "$dir/conformance.log"; exit 1; }
echo "check_floors: the speedups and Optuna's and Hydra's public path agree on these versions" \
  "($(tail -1 "$dir/conformance.log"))"
