"""A user's own project: a Flax module and a data function, tuned by hpjax from this folder."""
