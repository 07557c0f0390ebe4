"""Parallelism: mesh axes, logical axis rules (declared once in `axes.py`) and sharding helpers."""

from blockvid_jax.parallel.axes import LOGICAL_RULES, MESH_AXES, rules_from_config
from blockvid_jax.parallel.mesh import (SAMPLING_PRESETS, activation_rules, logical_to_sharding,
                                        make_mesh, mesh_shape, named, replicated, sampling_mesh_shape,
                                        sharded_init)

__all__ = ["LOGICAL_RULES", "MESH_AXES", "rules_from_config", "activation_rules",
           "logical_to_sharding", "make_mesh", "mesh_shape", "named", "replicated", "sharded_init",
           "SAMPLING_PRESETS", "sampling_mesh_shape"]
