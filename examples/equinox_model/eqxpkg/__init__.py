"""An hpjax project whose model is an Equinox module (examples/equinox_model)."""
