"""Course autograder: release notebooks, grade submissions in sandboxes, keep a gradebook.

One subpackage per stage of the data flow, each importing only the stages below it (a test checks):
`course` (config, roster, gradebook) at the bottom; `grading` above it; `exports` (what leaves the
gradebook) and `student` (what runs on a student's machine) above grading; `authoring` (release,
verify, mutants) above those; `cli.py` on top. `autograder.zoo`, `.testing`, `.checks` and `.validate`
are the public import paths that notebooks and hidden suites use. docs/architecture.md draws it.
"""

import sys

__version__ = "0.1.0"

# nbformat imports jsonschema, whose format checkers import `rfc3987_syntax` when it is installed
# (nbgrader's dependencies install it), and that builds some 35 IRI grammars at import: 1.3 s of every
# grading command's start (python-jsonschema/jsonschema#1428). No notebook schema checks an IRI
# format, so our processes go without it: jsonschema skips that checker when the import fails.
if "jsonschema" not in sys.modules:
    sys.modules.setdefault("rfc3987_syntax", None)
