"""Preloaded by the forkserver when the hidden suite uses the zoo: build the pristine models and tokenizer
that the hidden tests use and `autograder.grading.wire` hands to student code, so forked sandboxes inherit
them (copy-on-write)."""

import gc

from autograder.grading import zoo

zoo.warm()
gc.freeze()  # as in `autograder.grading.warm.numerics`, for the models too
