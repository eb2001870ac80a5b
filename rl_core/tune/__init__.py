"""Tuning over several seeds a trial on current Optuna: the search space, the study in the sweep folder (a
journal file, leases for running trials), the worker loop, and what a finished study writes."""
