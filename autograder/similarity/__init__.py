"""Code similarity between hand-ins: which teams' code came from each other, from earlier years' hand-ins
or from public sources.

`normalise` turns code into rename-proof token streams per graded function, `fingerprints` into
winnowed k-gram hashes with the release's template removed, `sources` reads hand-ins, past years
(indexed once) and public code, `compare` scores pairs and one-way matches, and `report` writes the
HTML page, CSV and JSON. The report shows similarity, never a verdict.
"""
