"""Policies: the Gaussian actor-critic (``actor_critic``) and its fast MLP kernels (``mlp_kernels``)."""
