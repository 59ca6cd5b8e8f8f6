"""Grading: from a folder of hand-ins to verdicts in the gradebook.

Enters: hand-ins (notebooks, packed zips, LMS folders) and the hidden suite of `grader_tests/<a>/`.
Leaves: one recorded result per hidden test of each submission. Inside, in the order a hand-in meets
them: `handins` and `teams` (intake: reading untrusted bytes, matching hand-ins to teams),
`extraction` (what of the notebook runs), `review` (what of it a TA should read by hand), `warm` (the preloaded forkserver), `sandbox` with its walls
(`isolation`, `tripwires`) and `wire` (the restricted format across them), `oracle` (the pytest plugin
that runs the suite in the trusted process), `testing` and `zoo` (what suites compare with and build
from), `devices`, `scheduler` (batches, local or on Slurm) and `timings`. Imports `autograder.course`
only.
"""
