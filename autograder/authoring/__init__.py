"""The instructor's side: compiling sources into releases and proving the hidden suites.

Enters: `source/<a>/` (solutions and hidden tests inline) and `grader_tests/<a>/`. Leaves: the
committed `release/<a>/` (`release`, with its leak check), proof that the solution scores full marks
and the release zero (`verify`), and how many plausible mistakes each suite catches (`mutants`).
Grades with the same machinery as TAs do, so it imports every stage below it: `course`, `grading`,
`exports`, `student`.
"""
