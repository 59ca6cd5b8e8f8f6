"""What leaves the gradebook, and the hand-graded scores that join it.

Enters: the gradebook's records, the release's manual (reflection) cells, an LMS's worksheet.
Leaves: grade CSVs (Moodle first), feedback pages, Gradescope results, the instructor summary
(`grades`); reflection sheets and their scores back in the gradebook (`manual`); Moodle's download
read as hand-ins and its worksheet filled in (`moodle`); the shared CSV and page forms (`formats`).
Imports `autograder.course` and `autograder.grading` only.
"""
