"""The TAs' web workspace (`autograder serve`): the course overview, a team's page, grading one hand-graded
cell across all teams with rubrics and the keyboard, overrides and regrade requests.

Enters: the gradebook (the same tables grading, exports and `import-manual` use) and the course config.
Leaves: pages rendered with the package's Jinja2 templates, and graders' changes written back to the
gradebook, each in its append-only log. Imports `course`, `grading`, `exports` and `student`.
"""
