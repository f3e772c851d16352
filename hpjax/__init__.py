"""hpjax: config-driven hyperparameter tuning of JAX/Flax/Optax models with Hydra."""

__version__ = "0.1.0"
