"""The public import path of `autograder.grading.zoo` (notebooks and hidden suites use it): the same module."""
import sys
from autograder.grading import zoo
sys.modules[__name__] = zoo
