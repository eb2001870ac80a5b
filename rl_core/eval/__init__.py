"""Deterministic evaluation on fixed env seeds: validation episodes, test mode, checkpoint selection, videos."""
