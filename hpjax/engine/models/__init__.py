"""The model adapters, one per kind of model (`hpjax.engine.model.build` picks by type)."""
