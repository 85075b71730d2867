"""Generated jax loss modules: one per spec. DO NOT EDIT; run `make generate`."""
