"""Course autograder: release notebooks, grade submissions in sandboxes, keep a gradebook."""

__version__ = "0.1.0"
