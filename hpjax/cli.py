"""What `hpjax` registers with Hydra before it parses the command line: schemas and --help."""

from pathlib import Path

from hydra.core.config_store import ConfigStore

from hpjax.config import register_configs

# conf/ at the top of the repository; hpjax/conf links to it, and a wheel carries it there.
CONF_DIR = Path(__file__).resolve().parent / "conf"

_HEADER = """hpjax: tune the hyperparameters of JAX models with Hydra.

  hpjax                                   train the default config (digits, MLP, Adam)
  hpjax optimizer=adamw optimizer.lr=3e-4 choose a group option, override any value
  hpjax --cfg job                         print the composed config
  hpjax -m                                run the default grid (conf/search/default.yaml)
  hpjax -m optimizer.lr=1e-3,1e-2 activation=relu,tanh   a 4-job grid, one job directory each
"""


def sweep_argv(argv: list[str]) -> list[str]:
    """The command line, with the default grid (`search=default`, the group's default) kept for a
    bare `hpjax -m` only: a multirun whose command line sweeps something itself (a sweep such as
    `a=1,2`) runs exactly that, so its axes are not multiplied by the default grid's. A preset
    (`search=tpe`) replaces the default grid as another choice of its group."""
    if not {"-m", "--multirun"} & set(argv):
        return argv
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(
            [a for a in argv if "=" in a and not a.startswith("-")])
    except Exception:  # noqa: BLE001  (Hydra reports a bad override itself)
        return argv
    keys = [o.key_or_group for o in parsed]
    if any(k == "search" or k.startswith("hydra.sweeper.params") for k in keys):
        return argv  # a preset, or the user's own sweeper params
    if any(o.is_sweep_override() for o in parsed):
        return [*argv, "hydra.sweeper.params=null"]
    return argv


def _groups() -> str:
    lines = []
    for group in sorted(p for p in CONF_DIR.iterdir() if p.is_dir()):
        choices = sorted(f.stem for f in group.glob("*.yaml"))
        lines.append(f"{group.name}: {', '.join(choices)}")
    return "\n".join(lines)


def register() -> None:
    """Stores the config schemas and a --help page listing each group's YAML choices."""
    register_configs()
    # Hydra's own $APP_CONFIG_GROUPS would list the base_* schemas as choices too.
    template = (f"{_HEADER}\n== Config groups ==\nCompose your configuration from these groups "
                f"(group=option)\n\n{_groups()}\n\n== Config ==\nOverride anything in the config "
                "(foo.bar=value)\n\n$CONFIG\n\n$FLAGS_HELP")
    ConfigStore.instance().store(group="hydra/help", name="hpjax", node={
        "app_name": "hpjax", "header": _HEADER, "footer": "",
        "template": template})
