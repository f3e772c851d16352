"""Checkpoints of a trial's training state with Orbax, so a killed or requeued trial continues.

Each member of a population saves its own slice of the population's state (parameters, optimizer
state, PRNG keys, the best epoch's parameters) and what the host loop knows of it (metrics rows,
early-stopping tracker, status) into its own folder, every `train.checkpoint_every` epochs. A new
run of the same trial finds the folder, restores every member at their latest common epoch and
goes on from the next one: the epochs before are not trained again, and the metrics continue.
"""

import contextlib
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

log = logging.getLogger("hpjax")

def _manager(directory: str, saving: bool = False) -> Any:
    import orbax.checkpoint as ocp

    options = ocp.CheckpointManagerOptions(
        max_to_keep=2, create=True, enable_async_checkpointing=False,
        # A save cut off by a kill or a full disk leaves a tmp folder, never read: the next
        # save removes it. Orbax removes it in a thread of its own that a save waits for and
        # closing the manager does not: a manager that only reads would leave that thread
        # deleting while the caller moves on (`clear`'s rmtree of the same folder, `set_aside`
        # renaming it, a retried trial's copy) and one of them failing with FileNotFoundError.
        cleanup_tmp_directories=saving)
    return ocp.CheckpointManager(Path(directory).resolve(), options=options)


def _leaves(tree: Any) -> dict:
    """A pytree as {index: array}, PRNG keys as their raw data: any optimizer state's structure
    (named tuples, None leaves) comes back from the template it is restored into."""
    leaves = jax.tree.leaves(tree)
    return {f"{i:04d}": jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key)
            else x for i, x in enumerate(leaves)}


def save(directory: str, epoch: int, tree: Any, meta: dict) -> None:
    """Saves one member: `tree` its arrays (any pytree), `meta` what the host knows (JSON)."""
    import orbax.checkpoint as ocp

    from hpjax.results import naming

    # a full or read-only disk: Orbax's error names no folder
    with naming(os.path.join(directory, str(epoch))), _manager(directory, True) as manager:
        if epoch in manager.all_steps():  # left by a run that got further than its population
            manager.delete(epoch)
        manager.save(epoch, args=ocp.args.Composite(
            state=ocp.args.StandardSave(_leaves(tree)), meta=ocp.args.JsonSave(meta)))


def all_epochs(directory: str) -> list[int]:
    with _manager(directory) as manager:
        return list(manager.all_steps())


def restore(directory: str, epoch: int, like: Any) -> tuple[Any, dict]:
    """One member's (tree, meta) saved at `epoch`; `like`, a tree of the same structure."""
    import orbax.checkpoint as ocp

    template, treedef = jax.tree.flatten(like)
    target = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), _leaves(like))
    with _manager(directory) as manager:
        restored = manager.restore(epoch, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()))
    leaves = [jax.random.wrap_key_data(restored["state"][f"{i:04d}"],
                                       impl=jax.random.key_impl(t))
              if jnp.issubdtype(t.dtype, jax.dtypes.prng_key)
              else jnp.asarray(restored["state"][f"{i:04d}"]) for i, t in enumerate(template)]
    return jax.tree.unflatten(treedef, leaves), restored["meta"]


def stack(trees: list) -> Any:
    """Restored members' trees as one population's, stacked on the host: placed as a fresh
    population's arrays are (not committed to a device where those are not), so that the
    programs compiled for it run on them."""
    def leaf(*xs: Any) -> Any:
        if jnp.issubdtype(xs[0].dtype, jax.dtypes.prng_key):
            data = np.stack([np.asarray(jax.random.key_data(x)) for x in xs])
            return jax.random.wrap_key_data(data, impl=jax.random.key_impl(xs[0]))
        return np.stack([np.asarray(x) for x in xs])

    return jax.tree.map(leaf, *trees)


def restore_meta(directory: str, epoch: int) -> dict:
    """What the host knew of one member at `epoch` (its arrays stay on disk)."""
    import orbax.checkpoint as ocp

    with _manager(directory) as manager:
        return manager.restore(epoch, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))[
            "meta"]


@contextlib.contextmanager
def unreadable(dirs: list[str]) -> Iterator[dict]:
    """Around reading a population's checkpoints: one that cannot be read (cut short by a kill
    mid-save or a full disk) sets every folder aside (`set_aside`: never overwritten, never
    mixed with a new run's) and says so; the dict it yields then holds `moved`, and the run
    starts anew."""
    found: dict = {}
    try:
        yield found
    except Exception as e:  # noqa: BLE001  (whatever Orbax or a torn JSON file raises)
        found["moved"] = set_aside(dirs)
        text = str(e).splitlines()[0][:200] if str(e) else ""
        log.warning("the checkpoints in %s cannot be read (%s: %s): moved aside, never "
                    "overwritten (%s); training from the start", ", ".join(dirs),
                    type(e).__name__, text, ", ".join(found["moved"]))


def set_aside(dirs: list[str]) -> list[str]:
    """Renames each checkpoint folder to `<folder>.damaged` (then `.damaged-2`, ...), where a
    new run's saves cannot overwrite it; returns the new names."""
    moved = []
    for d in dirs:
        if not os.path.isdir(d):
            continue
        target, n = f"{d}.damaged", 1
        while os.path.exists(target):
            n += 1
            target = f"{d}.damaged-{n}"
        os.replace(d, target)
        moved.append(target)
    return moved


def clear(directory: str) -> None:
    """Removes a member's checkpoints: its training starts anew."""
    if Path(directory).is_dir():
        shutil.rmtree(directory)


def resume_epoch(dirs: list[str]) -> tuple[Optional[int], list[Optional[int]]]:
    """The latest epoch every member saved, or after which it had left the population (a
    bracket's pruned members leave it); and for each member the epoch to restore it from."""
    saved = [set(all_epochs(d)) if os.path.isdir(d) else set() for d in dirs]
    if not all(saved):
        return None, []
    left = [max(s) if restore_meta(d, max(s)).get("left") else None
            for d, s in zip(dirs, saved, strict=True)]
    for epoch in sorted(set.union(*saved), reverse=True):
        at = [epoch if epoch in s else (g if g is not None and g <= epoch else None)
              for s, g in zip(saved, left, strict=True)]
        if all(a is not None for a in at):
            return epoch, at
    return None, []


PARAMS_FILE = "params.msgpack"  # in a job directory: the best epoch's variables (save_params)
PARAMS_DIR = "params"  # a trial of several members: params/member_<k>.msgpack; Orbax's, before


def save_params(items: list[tuple[str, Any]]) -> None:
    """Saves each `(path, variables)` as one file of Flax's msgpack serialization, keyed by the
    model's own names (`{"params": {"Dense_0": {"kernel": ...}}, "batch_stats": ...}`), readable
    without hpjax: `flax.serialization.msgpack_restore(Path(path).read_bytes())`. Each file is
    written whole or not at all (a temporary file, then renamed over it)."""
    from flax import serialization

    from hpjax.results import write_whole

    # One plain file, not an Orbax checkpoint per trial (its event loops, a tensorstore per
    # array, a folder renamed): what each costs a trial is in docs/benchmarks.md.
    for path, variables in items:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        write_whole(path, f"{path}.tmp", serialization.msgpack_serialize(variables))


def load_params(path: str) -> dict:
    """The variables `save_params` saved, as NumPy arrays; `path` may also be the `params/`
    folder that Orbax wrote before (runs of earlier versions)."""
    if Path(path).is_dir():
        import orbax.checkpoint as ocp

        with ocp.StandardCheckpointer() as checkpointer:
            return checkpointer.restore(Path(path).resolve())
    from flax import serialization

    return serialization.msgpack_restore(Path(path).read_bytes())
