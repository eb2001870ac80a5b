"""The learner side: the training loop (``trainer``), PPO (``algo``), evaluation and test mode (``eval``),
logging and reports (``tracking``), and the run's life as ``launch.py`` drives it (``modes``, ``run_config``)."""
