"""LV-Bench evaluation: Video Drift Error (VDE) and its scorers.

User guide: the README section "Evaluate with LV-Bench VDE".

Modules: `vde` (the formula and its JSON reports), `scorers` (per-chunk metrics and their registry),
`vit` / `convert_vit` / `features` (the Flax DINO and CLIP ViTs and their PyTorch-layout converter),
`musiq` / `convert_musiq` (MUSIQ-SPAQ, clarity), `amt` / `convert_amt` (AMT-S, motion),
`preprocess` / `resize` (the scorers' image pipelines), `weights` (weight files), `cli`
(`python -m blockvid_jax.evaluate`). Submodules are not imported here, so `import
blockvid_jax.evaluate.vde` stays light.
"""
