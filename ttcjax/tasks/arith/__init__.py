"""The synthetic arithmetic testbed: problems and verifier, shipped models, sweep and study."""
