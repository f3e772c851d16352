"""The sweep's report (hpjax/report.py): what it reads of each job directory."""

import pytest
import yaml
from omegaconf import OmegaConf

from hpjax.report.trials import _read_overrides


@pytest.mark.parametrize("overrides", [
    ["optimizer.lr=0.001", "activation=relu", "train.early_stopping.monitor=val/loss"],
    ["a=b=c", "x.y-z=1e-3", "k=", "k=-1", "k=+1", "k=1,2", "k=null", "k=true"],
    ["k=a b"], ["k='x'"], ["k=~"], ["k=a#b"], ["k=a: b"], ["k=%x"], ["k=é"], ["+k=1"], [],
])
def test_overrides_read_back_as_yaml_reads_them(overrides, tmp_path):
    path = tmp_path / "overrides.yaml"
    OmegaConf.save(OmegaConf.create(overrides), path)  # as Hydra saves them
    assert _read_overrides(path) == [str(o) for o in yaml.safe_load(path.read_text())] \
        == overrides
