"""PPO on one rollout (``ppo``: returns, loss, update), its storage, LR schedules, training stages and the
opt-in compiled loss."""
