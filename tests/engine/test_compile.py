"""The process: JAX's CPU devices, set by an explicit call and not by importing hpjax."""

import subprocess
import sys


def test_use_cpu_cores_gives_jax_one_device_per_core_unless_told_otherwise():
    import os

    cores = len(os.sched_getaffinity(0))
    probe = ("import os, hpjax, jax; hpjax.use_cpu_cores(); "
             "print(len(jax.devices()), 'xla_force' in os.environ.get('XLA_FLAGS', ''))")
    for env, devices, flag in (({}, cores, False), ({"HPJAX_CPU_DEVICES": "auto"}, cores, False),
                               ({"HPJAX_CPU_DEVICES": "1"}, 1, False),
                               ({"HPJAX_CPU_DEVICES": "3"}, 3, False),
                               ({"HPJAX_CPU_DEVICES": "3", "XLA_FLAGS":
                                 "--xla_force_host_platform_device_count=2"}, 2, True)):
        base = {k: v for k, v in os.environ.items()
                if k not in ("HPJAX_CPU_DEVICES", "XLA_FLAGS")}
        out = subprocess.run([sys.executable, "-c", probe], env={**base, **env},
                             capture_output=True, text=True, check=True)
        # Child processes are not told: the device count is JAX's config, not XLA_FLAGS.
        assert out.stdout.split() == [str(devices), str(flag)], (env, out.stderr)


def test_importing_hpjax_changes_no_global_state():
    probe = ("import hpjax, hpjax.config, hpjax.engine.jobs, hpjax.engine.batch, jax, sys; "
             "from hydra.core.config_store import ConfigStore; "
             "print(len(jax.devices()), 'base_config' in ConfigStore.instance().repo)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, env={"HPJAX_CPU_DEVICES": "auto", "PATH": ""})
    assert out.stdout.split() == ["1", "False"], out.stderr
