"""The course model and its store, at the bottom of the package.

Enters: `course_config.py` (assignments, points, deadlines, tolerances, runners), the roster of teams,
and every record written by grading and by graders. Leaves: `Course`, `Assignment`, `Roster` and the
SQLite `Gradebook`, which every stage above reads and writes. Imports nothing of the package's: each
stage above builds on this one.
"""
