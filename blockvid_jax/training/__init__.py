"""Training: train state, losses, optimizer, the pure jitted steps and the host loop.

Modules are imported by path (`blockvid_jax.training.loop`, ...) so that importing the package stays
light; `train_and_evaluate(config, workdir)` lives in `blockvid_jax.training.loop`.
"""
