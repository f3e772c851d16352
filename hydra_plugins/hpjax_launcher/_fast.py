"""A batch's jobs at a few hundred microseconds of host work each, with the files Hydra writes.

Hydra ends every job the same way (`hydra.core.utils.run_job`): two deep copies of the job's
composed config, `.hydra/{config,hydra,overrides}.yaml` dumped by PyYAML, its logging set up
again, its callbacks; before that the launcher composes the job (a deep copy of its group
choices' config with the values applied) and validates it (`OmegaConf.to_object`). That is tens
of milliseconds a job, where the training of a small trial takes milliseconds (docs/benchmarks.md,
host overhead per trial).

Jobs of a sweep differ in a few values only (`optimizer.lr=0.0083131`), so `Templates` does that
work once per template, the jobs with the same config-group choices and the same overridden keys:
it composes the first job with Hydra, validates it, and renders its three YAML files with a slot
at each place a job differs (the overridden values, `hydra.overrides.task`, `hydra.job.num`, `id`,
`override_dirname`, `hydra.runtime.output_dir`). A job then costs its values: the override parsed
(numbers without Hydra's parser), each value converted by its config node's own validation, the
validated `Config` with the values replaced (`dataclasses.replace`: the schemas' checks run again),
and the slots filled with each value's YAML as PyYAML writes it. The files are byte for byte
Hydra's (tests/test_launcher_fast.py runs a sweep both ways and compares every file; scalars
needing quotes, nulls, infinities against PyYAML). A job's log file gets a handler of its own,
made like the first job's.

Anything else takes Hydra's path for the whole batch (`Ineligible`): a `+key`/`~key` override, a
list or dict value, a `hydra.*` override, a value another config value interpolates, an
interpolation in a value, callbacks that read each job's config (hpjax's trackers), jobs that
change directory or set environment variables.
"""

import copy
import dataclasses
import os
import re
from collections.abc import Callable
from typing import Any

import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import OverrideType, ValueType
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from . import _speedups

_INT = re.compile(r"-?(?:0|[1-9][0-9]*)\Z")
_FLOAT = re.compile(r"-?(?:[0-9]+\.[0-9]+(?:[eE][-+]?[0-9]+)?|[0-9]+[eE][-+]?[0-9]+)\Z")
_KEY = re.compile(r"[A-Za-z_][\w\-]*(?:\.[A-Za-z_][\w\-]*)*\Z")
_PLAIN = re.compile(r"[\w./=,+\-]+\Z", re.ASCII)  # with '=' or a leading '/': never quoted
_SLOT = "HPJAXSLOT{}Z"
# keys whose values `hpjax.config.to_config` checks against others after its schemas' checks
_CHECKED_ELSEWHERE = ("objective.", "task.", "model._target_", "data._target_")


class Ineligible(Exception):
    """The batch takes Hydra's own path (the reason is the message)."""


# -- YAML as OmegaConf's dumper writes it ---------------------------------------------------------
_rendered: dict = {}


def scalar_yaml(value: Any) -> str:
    """`value` as PyYAML with OmegaConf's dumper writes it in a block mapping or sequence."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value:
            return ".nan"
        if value in (float("inf"), float("-inf")):
            return ".inf" if value > 0 else "-.inf"
        text = repr(value).lower()
        return text.replace("e", ".0e", 1) if "." not in text and "e" in text else text
    if not isinstance(value, str):
        raise Ineligible(f"a value of type {type(value).__name__}")
    if ("=" in value or value.startswith("/")) and not value.startswith("-") \
            and _PLAIN.match(value):
        return value
    if len(value) < 50 and _INT.match(value):  # a job's number as a string (hydra.job.id)
        return f"'{value}'"
    text = _rendered.get(value)
    if text is None:
        text = yaml.dump([value], Dumper=_speedups.yaml_dumper(), default_flow_style=False,
                         allow_unicode=True)
        if not text.startswith("- ") or text.count("\n") != 1 or len(text) > 60:
            raise Ineligible(f"the string {value!r} is not a short one-line YAML scalar")
        text = text[2:-1]
        if len(_rendered) < 10_000:
            _rendered[value] = text
    return text


def _dump(container: Any) -> str:
    return yaml.dump(container, default_flow_style=False, allow_unicode=True, sort_keys=False,
                     Dumper=_speedups.yaml_dumper())


class Text:
    """A YAML file with slots: `render(values)` fills slot i with `scalar_yaml(values[i])`."""

    def __init__(self, container: Any, slots: list[tuple]) -> None:
        for i, path in enumerate(slots):
            node = container
            for part in path[:-1]:
                node = node[part]
            if isinstance(node, dict) and path[-1] not in node or isinstance(
                    node, list) and not 0 <= path[-1] < len(node):
                raise Ineligible(f"no place for {'.'.join(map(str, path))}")
            if isinstance(node[path[-1]], (dict, list)):
                raise Ineligible(f"{'.'.join(map(str, path))} is not a value")
            node[path[-1]] = _SLOT.format(i)
        text = _dump(container)
        pieces = re.split(r"HPJAXSLOT(\d+)Z", text)
        self.pieces, self.order = pieces[0::2], [int(i) for i in pieces[1::2]]
        if sorted(self.order) != list(range(len(slots))):
            raise Ineligible("a slot is not written once as a plain scalar")

    def render(self, values: list) -> str:
        out = [self.pieces[0]]
        for i, piece in zip(self.order, self.pieces[1:], strict=True):
            out.append(scalar_yaml(values[i]))
            out.append(piece)
        return "".join(out)


# -- overrides ------------------------------------------------------------------------------------
class Parsed:
    """One `key=value` override: its key, value, whether the key is a config group."""

    __slots__ = ("line", "key", "value", "group")

    def __init__(self, line: str, key: str, value: Any, group: bool) -> None:
        self.line, self.key, self.value, self.group = line, key, value, group


class Overrides:
    """Parses `key=value` overrides: numbers by a pattern (cheaper than Hydra's parser, which
    would otherwise run for every value of every job), anything else by Hydra's parser, once per
    distinct line."""

    def __init__(self, is_group: Callable[[str], bool]) -> None:
        self.parser, self.is_group = OverridesParser.create(), is_group
        self._lines: dict[str, Parsed] = {}
        self._groups: dict[str, bool] = {}

    def _group(self, key: str) -> bool:
        if key not in self._groups:
            self._groups[key] = self.is_group(key)
        return self._groups[key]

    def parse(self, line: str) -> Parsed:
        key, eq, text = line.partition("=")
        if eq and _KEY.match(key) and not key.startswith("hydra."):
            if _FLOAT.match(text):
                return Parsed(line, key, float(text), self._group(key))
            if _INT.match(text):
                return Parsed(line, key, int(text), self._group(key))
        parsed = self._lines.get(line)
        if parsed is None:
            o = self.parser.parse_overrides([line])[0]
            if o.type != OverrideType.CHANGE or o.value_type != ValueType.ELEMENT or \
                    o.is_hydra_override() or o.package is not None:
                raise Ineligible(f"override {line!r}")
            value = o.value()
            if isinstance(value, (list, dict)) or isinstance(value, str) and "${" in value:
                raise Ineligible(f"override {line!r}: not a plain value")
            parsed = Parsed(line, o.key_or_group, value, self._group(o.key_or_group))
            if len(self._lines) < 10_000:
                self._lines[line] = parsed
        return parsed


@dataclasses.dataclass(frozen=True)
class DirnameRule:
    """`hydra.job.config.override_dirname`, read once: `exclude_keys`, `item_sep`, `kv_sep`."""

    exclude_keys: frozenset
    item_sep: str
    kv_sep: str

    @classmethod
    def of(cls, names: Any) -> "DirnameRule":
        return cls(frozenset(names.exclude_keys), str(names.item_sep), str(names.kv_sep))


def overrides_dirname(parsed: list[Parsed], names: Any) -> str:
    """`hydra.job.override_dirname` as Hydra builds it (`get_overrides_dirname`)."""
    lines = sorted(p.line for p in parsed if p.key not in names.exclude_keys)
    return names.item_sep.join(lines).replace("=", names.kv_sep)


# -- templates ------------------------------------------------------------------------------------
def _node(cfg: DictConfig, key: str) -> Any:
    node = cfg
    for part in key.split("."):
        if not isinstance(node, DictConfig) or part not in node:
            raise Ineligible(f"{key} is not a key of the config")
        node = _speedups.child_node(node, part)
    if OmegaConf.is_config(node):
        raise Ineligible(f"{key} is a config node, not a value")
    return node


def _replace(obj: Any, parts: list[str], value: Any) -> Any:
    if not dataclasses.is_dataclass(obj) or parts[0] not in {
            f.name for f in dataclasses.fields(obj) if f.init}:
        raise Ineligible(f"{parts[0]} is not a field of the validated config")
    if len(parts) > 1:
        value = _replace(getattr(obj, parts[0]), parts[1:], value)
    return dataclasses.replace(obj, **{parts[0]: value})


def _interpolations(cfg: Any) -> list[str]:
    """The interpolations in a config's values (`${task.metric}`), as written."""
    found = []
    container = OmegaConf.to_container(cfg, resolve=False)

    def walk(node: Any) -> None:
        items = node.values() if isinstance(node, dict) else node if isinstance(
            node, list) else ()
        for v in items:
            if isinstance(v, str) and "${" in v:
                found.append(v)
            walk(v)
    walk(container)
    return found


@dataclasses.dataclass
class Template:
    keys: list[str]  # the overridden value keys, in order
    nodes: list[Any]  # their config nodes (they convert values as the config would)
    cfg: Any  # the validated `hpjax.Config` of the first job
    task_name: str
    names: DirnameRule  # hydra.job.config.override_dirname
    config: Text
    hydra: Text
    overrides: Text
    job: DictConfig  # the first job's composed config (logging)
    sweep_dir: str
    output_subdir: str  # hydra.output_subdir (.hydra)
    hydra_config: Any = None  # HydraConfig's copy of `job`, made at its first batch's logging


class Templates:
    """One `Template` per set of group choices and overridden keys; `job(...)` per job."""

    def __init__(self, compose: Callable[[int, list], DictConfig],
                 validate: Callable[[DictConfig], Any], is_group: Callable[[str], bool]) -> None:
        self.compose, self.validate = compose, validate
        self.parse = Overrides(is_group).parse
        self._templates: dict[tuple, Template] = {}

    def _make(self, index: int, overrides: list, parsed: list[Parsed]) -> Template:
        config = self.compose(index, overrides)
        hydra = config.hydra
        if hydra.job.chdir or hydra.job.env_set or hydra.output_subdir is None:
            raise Ineligible("the job changes directory, sets variables or writes no .hydra/")
        if OmegaConf.to_container(hydra.sweep, resolve=False).get("subdir") != \
                "${hydra.job.num}":
            raise Ineligible("hydra.sweep.subdir is not the job's number")
        with read_write(hydra.runtime), open_dict(hydra.runtime):
            hydra.runtime.output_dir = os.path.abspath(os.path.join(
                str(hydra.sweep.dir), str(hydra.sweep.subdir)))
        task = copy.deepcopy(config)  # as run_job makes it
        with read_write(task), open_dict(task):
            del task["hydra"]
        keys = [p.key for p in parsed if not p.group]
        if any(k.startswith(_CHECKED_ELSEWHERE) for k in keys):
            raise Ineligible("the objective and the task are checked together by to_config")
        for text in _interpolations(task):
            if ":" in text or any(k.rsplit(".", 1)[-1] in text for k in keys):
                raise Ineligible(f"the interpolation {text} may depend on a job's values")
        cfg = self.validate(task)
        n_task = len(hydra.overrides.task)
        hydra_only = OmegaConf.masked_copy(config, "hydra")
        return Template(
            keys=keys, nodes=[_node(task, k) for k in keys], cfg=cfg, task_name=hydra.job.name,
            names=DirnameRule.of(hydra.job.config.override_dirname),
            config=Text(OmegaConf.to_container(task, resolve=False, enum_to_str=True),
                        [tuple(k.split(".")) for k in keys]),
            hydra=Text(OmegaConf.to_container(hydra_only, resolve=False, enum_to_str=True),
                       [("hydra", "overrides", "task", i) for i in range(n_task)] + [
                           ("hydra", "job", "override_dirname"), ("hydra", "job", "id"),
                           ("hydra", "job", "num"), ("hydra", "runtime", "output_dir")]),
            overrides=Text(OmegaConf.to_container(hydra.overrides.task),
                           [(i,) for i in range(n_task)]),
            job=config, sweep_dir=str(hydra.sweep.dir), output_subdir=str(hydra.output_subdir))

    def job(self, index: int, overrides: list) -> "FastJob":
        if not _speedups.enabled():
            raise Ineligible("the speedups are off (HPJAX_SPEEDUPS=off, or untested versions)")
        parsed = [self.parse(line) for line in overrides]
        key = tuple((p.line if p.group else p.key) for p in parsed)
        template = self._templates.get(key)
        if template is None:
            template = self._templates[key] = self._make(index, overrides, parsed)
        values = [p.value for p in parsed if not p.group]
        try:
            converted = [node.validate_and_convert(v) for node, v in zip(
                template.nodes, values, strict=True)]
        except Exception as e:  # a value the config rejects: Hydra's path reports it
            raise Ineligible(f"a value the config rejects: {e}") from None
        cfg = template.cfg
        for k, v in zip(template.keys, converted, strict=True):
            if not isinstance(v, (int, float, str, type(None))):
                raise Ineligible(f"{k}: a value of type {type(v).__name__}")
            try:  # the schemas' own checks run again
                cfg = _replace(cfg, k.split("."), v)
            except Ineligible:
                raise
            except Exception as e:  # a bad value: Hydra's path fails the job as usual
                raise Ineligible(f"{k}={v}: {e}") from None
        if any(k.startswith("train.early_stopping.") for k in template.keys) and \
                cfg.train.early_stopping.monitor not in cfg.task.metrics():
            raise Ineligible("train.early_stopping.monitor is not a metric of the task")
        output_dir = os.path.abspath(os.path.join(template.sweep_dir, str(index)))
        lines = [p.line for p in parsed]
        return FastJob(index, overrides, template, cfg, output_dir, {
            "config.yaml": template.config.render(converted),
            "hydra.yaml": template.hydra.render(lines + [
                overrides_dirname(parsed, template.names), str(index), index, output_dir]),
            "overrides.yaml": template.overrides.render(lines)})


@dataclasses.dataclass
class FastJob:
    index: int
    overrides: list
    template: Template
    cfg: Any  # the validated hpjax.Config
    output_dir: str
    files: dict  # .hydra/ file name -> text
