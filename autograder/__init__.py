"""Course autograder: release notebooks, grade submissions in sandboxes, keep a gradebook."""

import sys

__version__ = "0.1.0"

# nbformat imports jsonschema, whose format checkers import `rfc3987_syntax` when it is installed
# (nbgrader's dependencies install it), and that builds some 35 IRI grammars at import: 1.3 s of every
# grading command's start (python-jsonschema/jsonschema#1428). No notebook schema checks an IRI
# format, so our processes go without it: jsonschema skips that checker when the import fails.
if "jsonschema" not in sys.modules:
    sys.modules.setdefault("rfc3987_syntax", None)
