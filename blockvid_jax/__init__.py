"""blockvid_jax: minute-long video generation by block diffusion (BlockVid) in JAX/Flax."""

__version__ = "0.1.0"
