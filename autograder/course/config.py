"""Load and validate `course_config.py`: one clear message per mistake, never a traceback.

The config is plain Python so instructors can compute values; it is executed once, then every key
is checked against the schema below. Errors name the file and the field (e.g.
``course_config.py: ASSIGNMENTS[1].due: 'next friday' is not a date (YYYY-MM-DD HH:MM)``).
"""

from __future__ import annotations

import copy
import datetime as dt
import os
import re
import runpy
import zoneinfo
from dataclasses import dataclass, field
from pathlib import Path

from autograder.course.roster import DEFAULT_MAX_TEAM_SIZE, Roster, RosterError, load_roster

CONFIG_FILE = "course_config.py"
DTYPE_PROFILES = ("fp32", "tf32", "fp16", "bf16")
EXTRACTION_MODES = ("definitions", "cells")


class ConfigError(Exception):
    """A course configuration problem, phrased for the instructor."""


@dataclass(frozen=True)
class Tolerance:
    rtol: float
    atol: float


LATE_UNITS = {"day": 1, "hour": 24}  # `late_policy.per`: what a started unit of lateness costs


@dataclass(frozen=True)
class LatePolicy:
    percent_per_day: float
    cap_percent: float
    per: str = "day"  # "day": every started day costs percent_per_day; "hour": every started hour 1/24 of it

    def penalty_percent(self, days_late: float) -> float:
        """Started units (days, or hours) count whole; the deduction never exceeds the cap."""
        if days_late <= 0:
            return 0.0
        import math

        units = LATE_UNITS[self.per]
        return min(self.cap_percent, math.ceil(round(days_late * units, 9)) * self.percent_per_day / units)


@dataclass(frozen=True)
class Limits:
    call_timeout_s: float
    submission_timeout_s: float
    memory_mb: int


@dataclass(frozen=True)
class Assignment:
    id: str
    title: str
    due: dt.datetime
    points: float
    gpu: bool
    tolerances: dict[str, Tolerance]
    late_policy: LatePolicy
    extraction: str
    limits: Limits
    root: Path = field(repr=False)
    mutation_threshold: float | None = None  # `verify --mutants` fails below this share of killed mutants
    # survivors the instructor lets through on purpose: mutant id -> why (checked against the mutants)
    mutation_accepted: dict[str, str] = field(default_factory=dict)

    @property
    def source_dir(self) -> Path:
        return self.root / "source" / self.id

    @property
    def release_dir(self) -> Path:
        return self.root / "release" / self.id

    @property
    def tests_dir(self) -> Path:
        return self.root / "grader_tests" / self.id

    def source_notebooks(self) -> list[Path]:
        return sorted(self.source_dir.glob("*.ipynb"))


@dataclass(frozen=True)
class Course:
    name: str
    term: str
    timezone: str
    assignments: dict[str, Assignment]
    root: Path
    config_path: Path
    roster: Roster | None = None  # TEAMS: who is in which team; None when the course declares none

    def get(self, assignment_id: str) -> Assignment:
        try:
            return self.assignments[assignment_id]
        except KeyError:
            known = ", ".join(self.assignments) or "none"
            raise ConfigError(
                f"unknown assignment {assignment_id!r}; {self.config_path.name} declares: {known}"
            ) from None

    def select(self, ids: list[str] | None) -> list[Assignment]:
        return [self.get(a) for a in ids] if ids else list(self.assignments.values())


_COURSE_KEYS = {"name": str, "term": str, "timezone": str}
_OPTIONAL_COURSE_KEYS = {"max_team_size": int}
_DEFAULT_KEYS = {"tolerances", "late_policy", "extraction", "limits"}
_ASSIGNMENT_KEYS = {"id", "title", "due", "points", "gpu", "mutation_threshold", "mutation_accepted"} | _DEFAULT_KEYS
_REQUIRED_ASSIGNMENT_KEYS = {"id", "title", "due", "points"}


def find_course_root(start: Path | None = None) -> Path:
    """The course root is the nearest folder (upwards) holding course_config.py."""
    env = os.environ.get("AUTOGRADER_COURSE_ROOT")
    if env:
        return Path(env).resolve()
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / CONFIG_FILE).is_file():
            return folder
    raise ConfigError(f"no {CONFIG_FILE} found in {here} or any folder above it")


def load_course(root: Path | None = None) -> Course:
    root = Path(root).resolve() if root else find_course_root()
    path = root / CONFIG_FILE
    if not path.is_file():
        raise ConfigError(f"{path}: file not found")
    try:
        namespace = runpy.run_path(str(path))
    except Exception as exc:  # the config is instructor code: report, don't crash
        raise ConfigError(f"{path.name}: could not be executed: {type(exc).__name__}: {exc}") from None
    return _validate(namespace, root, path)


def _fail(path: Path, where: str, problem: str) -> ConfigError:
    return ConfigError(f"{path.name}: {where}: {problem}")


def _validate(ns: dict, root: Path, path: Path) -> Course:
    course = ns.get("COURSE")
    if not isinstance(course, dict):
        raise _fail(path, "COURSE", "missing or not a dict")
    for key in course:
        if key not in _COURSE_KEYS and key not in _OPTIONAL_COURSE_KEYS:
            raise _fail(path, f"COURSE.{key}",
                        f"unknown key (expected one of {sorted(_COURSE_KEYS | _OPTIONAL_COURSE_KEYS)})")
    for key, typ in _COURSE_KEYS.items():
        if not isinstance(course.get(key), typ):
            raise _fail(path, f"COURSE.{key}", "missing or not a string")
    try:
        tz = zoneinfo.ZoneInfo(course["timezone"])
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise _fail(path, "COURSE.timezone", f"{course['timezone']!r} is not a known time zone") from None

    defaults = ns.get("DEFAULTS", {})
    if not isinstance(defaults, dict):
        raise _fail(path, "DEFAULTS", "not a dict")
    for key in defaults:
        if key not in _DEFAULT_KEYS:
            raise _fail(path, f"DEFAULTS.{key}", f"unknown key (expected one of {sorted(_DEFAULT_KEYS)})")

    raw_assignments = ns.get("ASSIGNMENTS")
    if not isinstance(raw_assignments, list) or not raw_assignments:
        raise _fail(path, "ASSIGNMENTS", "missing, empty or not a list")
    assignments: dict[str, Assignment] = {}
    for i, raw in enumerate(raw_assignments):
        where = f"ASSIGNMENTS[{i}]"
        if not isinstance(raw, dict):
            raise _fail(path, where, "not a dict")
        for key in raw:
            if key not in _ASSIGNMENT_KEYS:
                raise _fail(path, f"{where}.{key}", f"unknown key (expected one of {sorted(_ASSIGNMENT_KEYS)})")
        for key in sorted(_REQUIRED_ASSIGNMENT_KEYS - raw.keys()):
            raise _fail(path, f"{where}.{key}", "missing")
        merged = _merge(defaults, raw)
        a = _assignment(merged, where, tz, root, path)
        if a.id in assignments:
            raise _fail(path, f"{where}.id", f"duplicate assignment id {a.id!r}")
        assignments[a.id] = a
    return Course(course["name"], course["term"], course["timezone"], assignments, root, path,
                  _roster(ns, course, root, path))


def _roster(ns: dict, course: dict, root: Path, path: Path) -> Roster | None:
    size = course.get("max_team_size", DEFAULT_MAX_TEAM_SIZE)
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise _fail(path, "COURSE.max_team_size", f"{size!r} is not a positive whole number")
    if "TEAMS" not in ns:
        return None
    try:
        return load_roster(ns["TEAMS"], root, path.name, size)
    except RosterError as exc:
        raise ConfigError(str(exc)) from None


def _merge(defaults: dict, raw: dict) -> dict:
    merged = copy.deepcopy(defaults)
    for key, value in raw.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def _number(value, path, where, *, positive=True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(path, where, f"{value!r} is not a number")
    if value < 0 or (positive and value == 0):
        raise _fail(path, where, f"{value!r} must be {'positive' if positive else 'non-negative'}")
    return float(value)


def _assignment(raw: dict, where: str, tz, root: Path, path: Path) -> Assignment:
    aid = raw["id"]
    if not isinstance(aid, str) or not aid or "/" in aid or aid.startswith("."):
        raise _fail(path, f"{where}.id", f"{aid!r} is not a valid folder name")
    if not isinstance(raw["title"], str):
        raise _fail(path, f"{where}.title", "not a string")
    due_raw = raw["due"]
    try:
        due = dt.datetime.strptime(due_raw, "%Y-%m-%d %H:%M").replace(tzinfo=tz)
    except (TypeError, ValueError):
        raise _fail(path, f"{where}.due", f"{due_raw!r} is not a date (YYYY-MM-DD HH:MM)") from None
    points = _number(raw["points"], path, f"{where}.points")
    gpu = raw.get("gpu", False)
    if not isinstance(gpu, bool):
        raise _fail(path, f"{where}.gpu", f"{gpu!r} is not True or False")

    tolerances = {}
    raw_tol = raw.get("tolerances", {})
    if not isinstance(raw_tol, dict):
        raise _fail(path, f"{where}.tolerances", "not a dict")
    for profile, tol in raw_tol.items():
        twhere = f"{where}.tolerances.{profile}"
        if profile not in DTYPE_PROFILES:
            raise _fail(path, twhere, f"unknown dtype profile (expected one of {list(DTYPE_PROFILES)})")
        if not isinstance(tol, dict) or set(tol) != {"rtol", "atol"}:
            raise _fail(path, twhere, "must be a dict with exactly 'rtol' and 'atol'")
        tolerances[profile] = Tolerance(
            _number(tol["rtol"], path, f"{twhere}.rtol", positive=False),
            _number(tol["atol"], path, f"{twhere}.atol", positive=False),
        )
    for profile in DTYPE_PROFILES:
        if profile not in tolerances:
            raise _fail(path, f"{where}.tolerances.{profile}", "missing (set it here or in DEFAULTS)")

    late = raw.get("late_policy")
    if not isinstance(late, dict) or not {"percent_per_day", "cap_percent"} <= set(late) <= {
            "percent_per_day", "cap_percent", "per"}:
        raise _fail(path, f"{where}.late_policy", "must be a dict with 'percent_per_day' and 'cap_percent' "
                                                  "(and optionally 'per')")
    if late.get("per", "day") not in LATE_UNITS:
        raise _fail(path, f"{where}.late_policy.per", f"{late['per']!r} is not one of {list(LATE_UNITS)}")
    late_policy = LatePolicy(
        _number(late["percent_per_day"], path, f"{where}.late_policy.percent_per_day", positive=False),
        _number(late["cap_percent"], path, f"{where}.late_policy.cap_percent", positive=False),
        late.get("per", "day"),
    )
    if late_policy.cap_percent > 100:
        raise _fail(path, f"{where}.late_policy.cap_percent", "must be at most 100")

    extraction = raw.get("extraction")
    if extraction not in EXTRACTION_MODES:
        raise _fail(path, f"{where}.extraction", f"{extraction!r} is not one of {list(EXTRACTION_MODES)}")

    lim = raw.get("limits")
    keys = {"call_timeout_s", "submission_timeout_s", "memory_mb"}
    if not isinstance(lim, dict) or set(lim) != keys:
        raise _fail(path, f"{where}.limits", f"must be a dict with exactly {sorted(keys)}")
    limits = Limits(
        _number(lim["call_timeout_s"], path, f"{where}.limits.call_timeout_s"),
        _number(lim["submission_timeout_s"], path, f"{where}.limits.submission_timeout_s"),
        int(_number(lim["memory_mb"], path, f"{where}.limits.memory_mb")),
    )

    threshold = raw.get("mutation_threshold")
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, float))
                                  or not 0 <= threshold <= 1):
        raise _fail(path, f"{where}.mutation_threshold", f"{threshold!r} is not a number from 0 to 1")

    accepted = raw.get("mutation_accepted", {})
    if not isinstance(accepted, dict):
        raise _fail(path, f"{where}.mutation_accepted", "must be a dict {mutant id: why it may survive}")
    for mutant, reason in accepted.items():
        if not isinstance(mutant, str) or not re.fullmatch(r"m[0-9a-f]{6}", mutant):
            raise _fail(path, f"{where}.mutation_accepted", f"{mutant!r} is not a mutant id (as `autograder mutants` "
                                                            "prints them, e.g. 'm3fa2c1')")
        if not isinstance(reason, str) or not reason.strip():
            raise _fail(path, f"{where}.mutation_accepted.{mutant}", "needs the reason it may survive, as text")

    a = Assignment(aid, raw["title"], due, points, gpu, tolerances, late_policy, extraction, limits, root,
                   None if threshold is None else float(threshold), dict(accepted))
    if not a.source_notebooks():
        raise _fail(path, f"{where}.id", f"no source notebook found in {a.source_dir.relative_to(root)}/")
    return a
