"""Preloaded by the forkserver: pin the numerics switches once, so every sandbox forked from it starts
pinned and the pins' first-use costs are paid once per batch."""

import gc

import torch

from autograder.grading import sandbox

sandbox._pin_numerics(torch)
# What the forkserver imported is never garbage: no collection in a worker or sandbox walks it again,
# and walking it would also copy its pages into every forked process.
gc.freeze()
