"""MATH-style problems with open checkpoints: data, grading, prompts, sweep and study."""
