"""LV-Bench end to end: generate the benchmark's videos from its meta file, then report the table.

User guide: the README section "Evaluate on LV-Bench". Modules: `meta` (meta files, caption ->
chunk mapping, sharding), `driver` (resumable generation through `blockvid_jax.generate`), `report`
(evaluation + the paper-style VDE / VBench table), `cli` (`python -m blockvid_jax.lvbench`).
"""
