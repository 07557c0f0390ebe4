"""Flow matching, training noise schedules, inference noise shuffling and the block rollout sampler."""
