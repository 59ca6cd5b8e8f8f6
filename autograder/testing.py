"""The public import path of `autograder.grading.testing` (hidden suites use it): the same module."""
import sys
from autograder.grading import testing
sys.modules[__name__] = testing
