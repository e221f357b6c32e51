"""Tasks: the synthetic arithmetic testbed (and, later, MATH-style data)."""
