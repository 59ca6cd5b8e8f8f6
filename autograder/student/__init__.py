"""What runs on a student's machine: public checks in the notebook, `validate` before handing in,
`pack` to hand in.

Enters: the student's notebook and the release's metadata. Leaves: readable verdicts in the notebook,
a list of what would cost points, a packed hand-in. It reads notebooks exactly as grading does, so it
imports `autograder.grading` and `autograder.course` only.
"""
