"""Continuing a population from its members' checkpoints (`PopulationRun.resume`)."""

import logging
from typing import Any, Optional

import jax

from hpjax.engine import checkpoint
from hpjax.engine.schedulers import pbt as pbt_lib

log = logging.getLogger("hpjax")


def restore(run: Any, dirs: list[str]) -> Optional[int]:
    """Restores every member of `run` (a `hpjax.engine.state.PopulationRun`) from their latest
    common checkpoint (a member that had left the population, from its last one); returns its
    epoch, or None when a member has none, or one was saved by another config (the run then
    starts anew)."""
    with checkpoint.unreadable(dirs) as damaged:  # a checkpoint cut short: set aside
        epoch, at = checkpoint.resume_epoch(dirs)
        if epoch is None:
            return None
        like = jax.tree.map(lambda a: a[0], (run.states, run.best_params))
        trees, metas = [], []
        for d, member, e in zip(dirs, run.members, at, strict=True):
            tree, meta = checkpoint.restore(d, e, like)
            if meta["config"] != member.origin:
                log.warning("checkpoint in %s is of another config: training from the start", d)
                return None
            trees.append(tree)
            metas.append(meta)
    if "moved" in damaged:
        return None
    trees += trees[-1:] * (run.inputs.size - len(trees))  # the padding members
    # placed as a fresh state: the epoch program runs as compiled, not compiled again
    run.states, run.best_params = run.place.per_member(checkpoint.stack(trees))
    for member, meta in zip(run.members, metas, strict=True):
        member.restore(meta, epoch)
        changed = {k: v for k, v in (meta.get("values") or {}).items()
                   if pbt_lib.value_of(member.cfg, k) != v}
        if changed:  # PBT's explore, a scheduled value: the traced numbers it trained with
            member.cfg = pbt_lib.with_values(member.cfg, changed)
            run.set_hparams(member)
    run.restored = metas
    # the data where the members' common epoch left it (a member that had left saved earlier)
    run.feed.restore(next((m for m, e in zip(metas, at, strict=True) if e == epoch), {}))
    if run.scheduler is not None:  # each member saved the state it knew: the latest last
        for meta in sorted(metas, key=lambda m: len(m["rows"])):
            run.scheduler.restore(meta.get("scheduler") or {})
    run.compact(epoch)  # members that had left: out again
    log.info("resumed %d member%s from the checkpoint of epoch %d", len(dirs),
             "" if len(dirs) == 1 else "s", epoch)
    return epoch


