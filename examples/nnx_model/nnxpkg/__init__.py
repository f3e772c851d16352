"""An hpjax project whose model is a Flax NNX module (examples/nnx_model)."""
