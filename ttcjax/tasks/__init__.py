"""Tasks: the synthetic arithmetic testbed and its study, and MATH-style data and grading."""
