"""The grader's GPU path, checked on a CUDA runner in one run (python bench/gpu_check.py).

Why this exists: GPU time is scarce (a lent machine, minutes per task), and several things can only
be seen there: whether bitsandbytes' CUDA kernels agree with its CPU kernels as COURSE.md and
NUMERICS.md claim, what the CUDA snapshot of assignment 04 holds, whether GPU-marked hidden tests
really run (or whether the sandbox cannot reach CUDA), and how long grading takes with 16 cores.
So one script does all of it in one go, each section on its own (a failure prints a clear line and
the run goes on), and prints one summary at the end.

Sections:
  a. environment: versions, `import torch` and first CUDA init times, bitsandbytes' backend;
  b. bitsandbytes CPU vs CUDA on the facts the 04 suite relies on (int8 codes within +-1, outlier
     columns, NF4 codes bit-identical, Linear8bitLt error), using the suite's own reference helpers;
  c. the 04 CUDA snapshot (make_snapshots.py's logic) written to $OUT/cuda_kernels.pt, compared with
     the committed one and with the CPU kernels;
  d. every sample of every assignment graded through the normal batch path (isolation on) and
     compared with samples/<a>/expected.json (which states the CPU grader's score; the points each
     sample earns from GPU-marked tests are shown apart, and compared with its `gpu_points` where the
     catalogue declares them);
  e. a direct sandbox probe: does code in a sandbox see CUDA (isolated, with bitsandbytes preloaded,
     without the memory limit, without isolation)?
  f. `verify` of 04 (grades the solution with the GPU tests on), timed;
  g. a batch of 100 hand-ins of 04 (its samples, copied round-robin) through the batch path, timed.

Files written to $OUT: cuda_kernels.pt (the fresh snapshot, GPU only), gpu_check_summary.json (every
section's facts and problems), gradebook_NN.db (each assignment's batch gradebook). The run command
(bench/gpu_check.cmd) adds nvidia_smi.txt, pip_install.log and gpu_check.log (this output).

Without CUDA (any development machine) the GPU parts print "skipped: no CUDA" and d/e/f exercise the
normal CPU path. Grading, probes and verify run in child processes of this script with hard time
limits, so a hang costs one section, not the run. Environment: OUT (folder for files that come
back; default a new temp folder), GPU_CHECK_BUDGET_S (wall budget, default 450 s), GPU_CHECK_JOBS
(grading workers, default 8), GPU_CHECK_BATCH (hand-ins in section g, default 100),
GPU_CHECK_CAP_SCALE (multiplies the per-section time caps, which are sized for the 16-core runner;
default 1).
"""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

# Nothing heavy at module level: multiprocessing's forkserver re-imports this file as __mp_main__.
ROOT = Path(__file__).resolve().parents[1]
QUANT_DIR = ROOT / "grader_tests" / "04_efficient_inference_part_2"
GPU_ASSIGNMENT = "04_efficient_inference_part_2"
RESERVE_S = 8.0  # kept back from every section's limit for the summary
# Section time caps are sized for the 16-core GPU runner; a slow machine scales them up.
CAP_SCALE = float(os.environ.get("GPU_CHECK_CAP_SCALE", "1"))


def say(*parts) -> None:
    print(*parts, flush=True)


class SectionTimeout(BaseException):
    """Raised by SIGALRM inside an in-process section (BaseException: passes `except Exception`)."""


class Record:
    """What a section found: facts for the summary, problems that make it fail, or a skip reason."""

    def __init__(self, key: str, title: str):
        self.key, self.title = key, title
        self.status, self.facts, self.problems, self.elapsed_s, self.data = "ok", [], [], 0.0, {}

    def fact(self, text: str) -> None:
        self.facts.append(text)
        say(f"  [{self.key}] {text}")

    def problem(self, text: str) -> None:
        self.problems.append(text)
        self.status = "fail"
        say(f"  [{self.key}] PROBLEM: {text}")

    def skip(self, why: str) -> None:
        if self.status != "fail":
            self.status = "skipped"
        self.facts.append(f"skipped: {why}")
        say(f"  [{self.key}] skipped: {why}")

    def as_dict(self) -> dict:
        return {"title": self.title, "status": self.status, "elapsed_s": round(self.elapsed_s, 2),
                "facts": self.facts, "problems": self.problems, "data": self.data}


# --- orchestration ----------------------------------------------------------------------------------


class Runner:
    def __init__(self, out: Path, budget_s: float):
        self.out, self.start = out, time.monotonic()
        self.deadline = self.start + budget_s
        self.records: dict[str, Record] = {}
        self.children: list[subprocess.Popen] = []
        self.work = Path(tempfile.mkdtemp(prefix="gpu_check_work_"))

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def record(self, key: str, title: str) -> Record:
        self.records.setdefault(key, Record(key, title))
        return self.records[key]

    def in_process(self, key: str, title: str, fn, cap_s: float) -> Record:
        rec = self.record(key, title)
        limit = int(min(cap_s * CAP_SCALE, self.left() - RESERVE_S))
        say(f"\n=== {key}. {title} (limit {max(limit, 0)} s, {self.left():.0f} s of budget left)")
        if limit < 3:
            rec.problem("not run: the time budget is spent")
            return rec
        begin = time.monotonic()

        def on_alarm(signum, frame):
            raise SectionTimeout()

        previous = signal.signal(signal.SIGALRM, on_alarm)
        signal.alarm(limit)
        try:
            fn(rec)
        except SectionTimeout:
            rec.problem(f"timed out after {limit} s")
        except Exception as exc:  # noqa: BLE001 - a section's failure must not stop the run
            traceback.print_exc()
            rec.problem(f"section crashed: {type(exc).__name__}: {exc}")
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)
            rec.elapsed_s += time.monotonic() - begin
        say(f"=== {key}: {rec.status} in {rec.elapsed_s:.1f} s")
        return rec

    def group(self, title: str, tasks: list, cap_s: float) -> None:
        """Run child-process tasks side by side: tasks are (record, start(), finish(handle, limit), label)."""
        limit = min(cap_s * CAP_SCALE, self.left() - RESERVE_S)
        say(f"\n=== {title} (limit {max(limit, 0):.0f} s, {self.left():.0f} s of budget left)")
        if limit < 10:
            for rec, _, _, label in tasks:
                rec.problem(f"{label}: not run, the time budget is spent")
            return
        begin, started = time.monotonic(), []
        for rec, start, finish, label in tasks:
            try:
                started.append((rec, start(), finish, label))
            except Exception as exc:  # noqa: BLE001
                traceback.print_exc()
                rec.problem(f"{label}: could not start: {type(exc).__name__}: {exc}")
        for rec, handle, finish, label in started:
            try:
                finish(handle, max(1.0, limit - (time.monotonic() - begin)))
            except Exception as exc:  # noqa: BLE001
                traceback.print_exc()
                rec.problem(f"{label}: crashed: {type(exc).__name__}: {exc}")
            rec.elapsed_s += time.monotonic() - begin
        say(f"=== {title}: done in {time.monotonic() - begin:.1f} s")

    def kill_children(self) -> None:
        for proc in self.children:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)  # the group this script started for the child
                except ProcessLookupError:
                    pass
                proc.wait()
                self.show_output(proc)

    def start_child(self, kind: str, arg: str, tag: str) -> tuple[subprocess.Popen, Path]:
        result = self.work / f"{tag}.json"
        env = dict(os.environ, PYTHONUNBUFFERED="1", GPU_CHECK_OUT=str(self.out))
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", kind, arg, str(result)]
        # Output goes to a file, not to our stdout: a process that outlives its group (sandboxes call
        # setsid) must not hold the pipe to `tee` open. A session of its own: on a timeout the whole
        # group (pool workers, forkservers) goes at once.
        with open(self.work / f"{tag}.log", "wb") as log:
            proc = subprocess.Popen(cmd, cwd=str(ROOT), env=env, start_new_session=True, stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=subprocess.STDOUT)
        proc.log_path, proc.tag, proc.shown = self.work / f"{tag}.log", f"{kind} {arg}", False
        self.children.append(proc)
        return proc, result

    def show_output(self, proc: subprocess.Popen) -> None:
        if proc.shown:
            return
        proc.shown = True
        try:
            text = proc.log_path.read_text(errors="replace")
        except OSError as exc:
            text = f"(no output: {exc})"
        lines = [line for line in text.splitlines() if "kernels-community" not in line]  # a harmless offline warning
        say(f"  --- output of child `{proc.tag}` ({len(lines)} lines) ---")
        for line in lines[-400:]:
            say(f"  | {line}")

    def finish_child(self, proc: subprocess.Popen, result: Path, limit: float) -> tuple[dict | None, str]:
        """Wait up to `limit` s; returns (the child's JSON or None, a note on how it ended)."""
        try:
            rc = proc.wait(timeout=max(limit, 1))
            note = "" if rc == 0 else f"child exited with status {rc}"
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # the group this script started for the child
            except ProcessLookupError:
                pass
            proc.wait()
            note = f"killed after {limit:.0f} s (time limit)"
        self.show_output(proc)
        try:
            data = json.loads(result.read_text())
        except (OSError, ValueError):
            data = None
        return data, note


# --- a. environment ---------------------------------------------------------------------------------


def section_env(rec: Record) -> None:
    import importlib.metadata as md

    rec.fact(f"python {platform.python_version()} ({sys.executable}); {os.cpu_count()} CPUs; {platform.platform()}")
    begin = time.perf_counter()
    import torch
    rec.data["import_torch_s"] = round(time.perf_counter() - begin, 2)
    rec.fact(f"torch {torch.__version__}, CUDA build {torch.version.cuda}; import torch {rec.data['import_torch_s']} s")
    rec.data["cuda"] = torch.cuda.is_available()
    if rec.data["cuda"]:
        begin = time.perf_counter()
        torch.zeros(1, device="cuda")
        torch.cuda.synchronize()
        rec.data["cuda_init_s"] = round(time.perf_counter() - begin, 2)
        props = torch.cuda.get_device_properties(0)
        rec.fact(f"CUDA device {torch.cuda.get_device_name(0)} (capability {props.major}.{props.minor}, "
                 f"{props.total_memory / 2**30:.0f} GiB, {torch.cuda.device_count()} visible); "
                 f"first CUDA init {rec.data['cuda_init_s']} s")
    else:
        rec.skip("no CUDA (torch.cuda.is_available() is False)")
    begin = time.perf_counter()
    from transformers import LlamaForCausalLM  # noqa: F401 - the cold cost COURSE.md quotes
    rec.fact(f"import transformers with a model class: {time.perf_counter() - begin:.2f} s")
    begin = time.perf_counter()
    try:
        import bitsandbytes
        from bitsandbytes import cextension

        lib = cextension.lib
        rec.data["bnb_backend"] = cextension.BNB_BACKEND
        rec.data["bnb_cuda_lib"] = bool(getattr(lib, "compiled_with_cuda", False))
        path = getattr(getattr(lib, "_lib", None), "_name", "?")
        rec.fact(f"bitsandbytes {bitsandbytes.__version__} imported in {time.perf_counter() - begin:.2f} s; backend "
                 f"{cextension.BNB_BACKEND}; native library {type(lib).__name__} ({path}); "
                 f"compiled with CUDA: {rec.data['bnb_cuda_lib']}")
        if rec.data["cuda"] and not rec.data["bnb_cuda_lib"]:
            rec.problem("CUDA is available but bitsandbytes loaded no CUDA library")
    except Exception as exc:  # noqa: BLE001
        traceback.print_exc()
        rec.problem(f"bitsandbytes does not import: {type(exc).__name__}: {exc}")
    versions, places = [], {}
    for name in ("transformers", "tokenizers", "numpy", "pytest", "nbformat", "jsonschema", "fastjsonschema",
                 "referencing", "rpds", "attrs", "traitlets", "jupyter_core", "platformdirs", "rich", "jinja2",
                 "matplotlib", "bitsandbytes", "tzdata"):
        try:
            version = md.version({"rpds": "rpds-py"}.get(name, name))
        except md.PackageNotFoundError:
            version = "NOT INSTALLED"
        try:
            module = __import__(name)
            where = str(Path(module.__file__).parent.parent) if getattr(module, "__file__", None) else "?"
        except Exception as exc:  # noqa: BLE001
            where = "IMPORT FAILED"
            rec.problem(f"{name} does not import: {type(exc).__name__}: {exc}")
        versions.append(f"{name} {version}")
        places.setdefault(where, []).append(name)
    rec.fact("versions: " + ", ".join(versions))
    for where, names in places.items():
        rec.fact(f"from {where}: {' '.join(names)}")
    from autograder.grading.devices import device_name, nvidia_driver_present

    rec.fact(f"autograder: nvidia_driver_present()={nvidia_driver_present()}, device_name()={device_name()!r}")


# --- b. bitsandbytes CPU vs CUDA --------------------------------------------------------------------


def quant_references():
    if str(QUANT_DIR) not in sys.path:
        sys.path.insert(0, str(QUANT_DIR))
    import quant_references as qr

    return qr


def section_bnb(rec: Record) -> None:
    import torch
    import bitsandbytes.functional as bnbf

    qr = quant_references()
    cuda = torch.cuda.is_available()
    if not cuda:
        rec.skip("no CUDA: only the CPU side below")

    def check(what: str, fn) -> None:
        try:
            fn()
        except Exception as exc:  # noqa: BLE001
            traceback.print_exc()
            rec.problem(f"{what}: {type(exc).__name__}: {exc}")

    def int8_plain():
        x = qr.activations_with_outliers(64, 256, [5, 130], seed=123).half()
        codes, scales, _ = qr.bnb_int8(x.float())
        rec.fact(f"int8 CPU: codes {tuple(codes.shape)} {codes.dtype}, range [{int(codes.min())}, {int(codes.max())}]")
        if not cuda:
            return
        c_codes, c_scales, _ = qr.bnb_int8(x.cuda())
        diff = (codes.int() - c_codes.cpu().int()).abs()
        scale_rel = ((scales - c_scales.cpu().float()).abs() / scales.abs().clamp_min(1e-12)).max().item()
        rec.data["int8_max_code_diff"] = int(diff.max())
        rec.fact(f"int8 CPU (fp32 of fp16 values) vs CUDA (fp16), threshold 0: max code diff {int(diff.max())}, "
                 f"{int((diff > 0).sum())} of {diff.numel()} codes differ; row scale max rel diff {scale_rel:.2e}")
        if int(diff.max()) > 1:
            rec.problem(f"int8 codes differ by {int(diff.max())} (> 1) between CPU and CUDA")

    def int8_threshold():
        x = qr.activations_with_outliers(64, 256, [5, 130], seed=124).half()
        codes, scales, cols = bnbf.int8_vectorwise_quant(x.float().clone(), threshold=6.0)
        rec.fact(f"int8 CPU threshold 6: outlier columns {None if cols is None else cols.tolist()}")
        if not cuda:
            return
        c_codes, c_scales, c_cols = bnbf.int8_vectorwise_quant(x.cuda().clone(), threshold=6.0)
        same = (cols is None and c_cols is None) or (
            cols is not None and c_cols is not None
            and sorted(cols.cpu().tolist()) == sorted(c_cols.cpu().tolist()))
        diff = (codes.int() - c_codes.cpu().int()).abs()
        rec.fact(f"int8 threshold 6: CUDA outlier columns {None if c_cols is None else c_cols.cpu().tolist()}; "
                 f"equal to CPU: {same}; max code diff {int(diff.max())}")
        if not same:
            rec.problem("outlier columns differ between CPU and CUDA at threshold 6")
        if int(diff.max()) > 1:
            rec.problem(f"int8 codes at threshold 6 differ by {int(diff.max())} (> 1)")

    def nf4():
        w = torch.randn(256, 256, generator=qr.generator(125))
        codes, absmax = qr.bnb_nf4(w)
        rec.fact(f"NF4 CPU: codes {tuple(codes.shape)}, {absmax.numel()} absmax values")
        if not cuda:
            return
        c_codes, c_absmax = qr.bnb_nf4(w.cuda())
        identical = torch.equal(codes, c_codes.cpu())
        absmax_diff = (absmax.float() - c_absmax.cpu().float()).abs().max().item()
        rec.data["nf4_identical"] = identical
        rec.fact(f"NF4 256x256 CPU vs CUDA: codes bit-identical: {identical} "
                 f"({int((codes != c_codes.cpu()).sum())} differ); absmax max diff {absmax_diff:.2e}")
        if not identical:
            rec.problem("NF4 codes differ between CPU and CUDA")

    def fp4_info():
        if not cuda:
            return
        w = torch.randn(256, 256, generator=qr.generator(126))
        cpu_p, cpu_s = bnbf.quantize_4bit(w, quant_type="fp4")
        cu_p, cu_s = bnbf.quantize_4bit(w.cuda(), quant_type="fp4")
        cpu_d = bnbf.dequantize_4bit(cpu_p, cpu_s).reshape(-1).float()
        cu_d = bnbf.dequantize_4bit(cu_p, cu_s).cpu().reshape(-1).float()
        rec.fact(f"FP4 (info; NUMERICS says they disagree): packed bytes equal {torch.equal(cpu_p, cu_p.cpu())}; "
                 f"max dequantized diff {(cpu_d - cu_d).abs().max().item():.3g}")

    def linear8bitlt():
        g = qr.generator(103)
        x = qr.activations_with_outliers(16, 256, [3, 77, 200], seed=3)
        weight, bias = torch.randn(64, 256, generator=g) * 0.05, torch.randn(64, generator=g) * 0.1
        fp32 = x @ weight.T + bias
        cpu_out = qr.linear8bitlt(x, weight, bias, threshold=6.0)
        rec.fact(f"Linear8bitLt CPU (fp32) vs fp32 linear: {100 * qr.relative_error(cpu_out, fp32):.2f}% "
                 f"(NUMERICS: up to 0.84%)")
        if not cuda:
            return
        xh, wh, bh = x.half().cuda(), weight.half().cuda(), bias.half().cuda()
        ref16 = torch.nn.functional.linear(xh, wh, bh)
        out = qr.linear8bitlt(xh, wh, bh, threshold=6.0)
        err16, err32 = qr.relative_error(out, ref16), qr.relative_error(out, fp32)
        rec.data["linear8bitlt_vs_fp16"] = err16
        rec.fact(f"Linear8bitLt CUDA (fp16, threshold 6) vs fp16 linear: {100 * err16:.2f}% (COURSE.md: 0.57%); "
                 f"vs CPU fp32: {100 * err32:.2f}%; vs Linear8bitLt CPU: "
                 f"{100 * qr.relative_error(out, cpu_out):.2f}%")
        if err16 > 0.015:
            rec.problem(f"Linear8bitLt on CUDA is {100 * err16:.2f}% off an fp16 linear (the suite's bound is 1.5%)")

    check("int8 vector-wise, threshold 0", int8_plain)
    check("int8 vector-wise, threshold 6", int8_threshold)
    check("NF4", nf4)
    check("FP4", fp4_info)
    check("Linear8bitLt", linear8bitlt)


# --- c. the 04 CUDA snapshot ------------------------------------------------------------------------


def section_snapshot(rec: Record, out: Path) -> None:
    import torch

    qr = quant_references()
    import make_snapshots  # from the same folder: the logic the course uses to write the snapshot

    committed = qr.SNAPSHOT
    rec.fact(f"committed snapshot {committed.relative_to(ROOT)}: {'present' if committed.is_file() else 'absent'}")
    if not torch.cuda.is_available():
        rec.skip("no CUDA")
        return
    target = out / "cuda_kernels.pt"
    make_snapshots.SNAPSHOT = target  # write into $OUT, never into the repository
    make_snapshots.main()
    fresh = torch.load(target, weights_only=True, map_location="cpu")  # as the graders load it
    rec.fact(f"wrote {target} ({target.stat().st_size} bytes): keys {sorted(fresh)}; versions {fresh.get('versions')}")
    inputs = qr.snapshot_inputs()
    for key, value in inputs.items():
        if not torch.equal(fresh[key], value):
            rec.problem(f"snapshot input {key} differs from snapshot_inputs() (not reproducible?)")
    # What a CPU grader compares a correct student's CPU results with: the CPU kernels' answer.
    codes, scales, _ = qr.bnb_int8(inputs["int8_input"].float())
    nf4_codes, absmax = qr.bnb_nf4(inputs["nf4_input"])
    code_diff = int((codes.int() - fresh["int8_codes"].int()).abs().max())
    scale_rel = ((scales - fresh["int8_row_scales"].float()).abs() / scales.abs().clamp_min(1e-12)).max().item()
    nf4_same = torch.equal(nf4_codes, fresh["nf4_codes"])
    absmax_diff = (absmax.float() - fresh["nf4_absmax"].float()).abs().max().item()
    rec.fact(f"snapshot vs CPU kernels: int8 max code diff {code_diff} (test allows 1), row scale max rel diff "
             f"{scale_rel:.2e} (fp32 rtol 1e-4), NF4 codes identical {nf4_same}, absmax max diff {absmax_diff:.2e}")
    if code_diff > 1 or scale_rel > 1e-4 or not nf4_same or absmax_diff > 1e-5:
        rec.problem("a correct CPU implementation would fail test_cpu_codes_match_cuda_kernel against this snapshot")
    if committed.is_file():
        old = torch.load(committed, weights_only=True, map_location="cpu")
        for key in sorted(set(old) | set(fresh)):
            a, b = old.get(key), fresh.get(key)
            if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
                if a.shape != b.shape:
                    rec.problem(f"committed vs fresh {key}: shape {tuple(a.shape)} vs {tuple(b.shape)}")
                else:
                    rec.fact(f"committed vs fresh {key}: max |diff| {(a.double() - b.double()).abs().max().item():.3g}")
            else:
                rec.fact(f"committed vs fresh {key}: {a!r} vs {b!r}")


# --- d. grading the samples (child process) ---------------------------------------------------------


def child_grade(assignment_id: str, result_path: Path) -> None:
    from autograder.course.config import load_course
    from autograder.course.gradebook import Gradebook
    from autograder.grading.handins import discover
    from autograder.grading.scheduler import grade_batch

    tag = f"[d {assignment_id[:2]}]"
    jobs = int(os.environ.get("GPU_CHECK_JOBS", "8"))
    assignment = load_course(ROOT).get(assignment_id)
    found = discover([ROOT / "samples" / assignment_id])
    samples = found.handins
    for entry, why in found.skipped:
        if not entry.endswith("expected.json"):
            say(f"{tag} not a hand-in: {entry} ({why})")
    db = Path(tempfile.mkdtemp(prefix=f"gpu_check_{assignment_id[:2]}_")) / "gradebook.db"
    data = {"samples": {}, "failures": {}, "batch_s": None, "jobs": jobs, "gradebook": str(db)}
    begin = time.perf_counter()

    def save() -> None:
        result_path.write_text(json.dumps(data))

    def on_done(job, outcome) -> None:
        sid, took = job.submission_id, time.perf_counter() - begin
        if isinstance(outcome, BaseException):
            data["failures"][sid] = f"{type(outcome).__name__}: {outcome}"
            say(f"{tag} {sid}: GRADER FAILURE {data['failures'][sid]} (at {took:.1f} s)")
        else:
            data["samples"][sid] = {
                "status": outcome.status, "message": outcome.message, "earned": outcome.earned,
                "possible": outcome.possible, "device": outcome.device, "load_messages": outcome.load_messages,
                "tests": [{"id": t.test_id, "status": t.status, "earned": t.points_earned,
                           "possible": t.points_possible, "message": t.message, "s": t.duration_s}
                          for t in outcome.results]}
            say(f"{tag} {sid}: {outcome.earned:g}/{outcome.possible:g} on {outcome.device} (at {took:.1f} s)")
        save()

    say(f"{tag} grading {len(samples)} samples with jobs={jobs}, isolation on")
    with Gradebook.open(db) as gradebook:
        graded, skipped, failures = grade_batch(assignment, samples, gradebook, jobs=jobs, isolate=True,
                                                on_done=on_done)
    data["batch_s"] = round(time.perf_counter() - begin, 2)
    data["failures"].update(failures)
    data["skipped"] = skipped
    save()
    out = os.environ.get("GPU_CHECK_OUT")
    if out:
        import shutil

        shutil.copy(db, Path(out) / f"gradebook_{assignment_id[:2]}.db")
    say(f"{tag} batch done in {data['batch_s']} s")


def child_collect(assignment_id: str, result_path: Path) -> None:
    """Which tests are GPU-marked, and their points, as the oracle's pytest run would see them."""
    import pytest

    from autograder.course.config import load_course

    tests_dir = load_course(ROOT).get(assignment_id).tests_dir
    found = {}

    class Collector:
        def pytest_collection_modifyitems(self, items):
            for item in items:
                points = item.get_closest_marker("points")
                found[item.nodeid] = {"gpu": item.get_closest_marker("gpu") is not None,
                                      "points": float(points.args[0]) if points else 0.0}

    args = [str(tests_dir), "-c", os.devnull, "--rootdir", str(tests_dir), "-p", "no:cacheprovider",
            "-p", "no:terminal", "--collect-only", "-W", "ignore"]
    code = pytest.main(args, plugins=[Collector()])
    result_path.write_text(json.dumps({"tests": found, "exit": int(code)}))


def grade_start(runner: Runner, assignment_id: str):
    tag = assignment_id[:2]
    return (runner.start_child("collect", assignment_id, f"collect_{tag}"),
            runner.start_child("grade", assignment_id, f"grade_{tag}"), time.monotonic())


def grade_finish(rec: Record, runner: Runner, assignment_id: str, handle, limit: float, alongside: str) -> None:
    (collect_proc, collect_json), (grade_proc, grade_json), begin = handle
    expected_file = ROOT / "samples" / assignment_id / "expected.json"
    declared = json.loads(expected_file.read_text())
    expected = {sid: float(v["points"]) for sid, v in declared.items()}
    expected_gpu = {sid: float(v["gpu_points"]) for sid, v in declared.items() if "gpu_points" in v}
    graded, note = runner.finish_child(grade_proc, grade_json, limit - (time.monotonic() - begin))
    wall = time.monotonic() - begin
    collected, collect_note = runner.finish_child(collect_proc, collect_json, max(5.0, limit - (time.monotonic() - begin)))
    if note:
        rec.problem(f"{assignment_id}: grading {note}")
    if graded is None:
        rec.problem(f"{assignment_id}: no grading result came back")
        return
    gpu_ids = {t for t, info in (collected or {}).get("tests", {}).items() if info["gpu"]}
    if collected is None:
        rec.fact(f"{assignment_id}: collecting the GPU-marked tests failed ({collect_note}); "
                 "counting needs-gpu tests as GPU-marked")
    samples = graded["samples"]
    for result in samples.values():  # fallback and sanity: needs-gpu is only ever a GPU-marked test
        gpu_ids.update(t["id"] for t in result["tests"] if t["status"] == "needs-gpu")
    info = rec.data.setdefault(assignment_id, {})
    info.update(batch_s=graded.get("batch_s"), wall_s=round(wall, 2), gpu_tests=sorted(gpu_ids), scores={})
    for sid, failure in graded.get("failures", {}).items():
        rec.problem(f"{assignment_id}/{sid}: grader failure: {failure}")
    for sid in sorted(set(expected) - set(samples)):
        rec.problem(f"{assignment_id}/{sid}: no result")
    for sid in sorted(set(samples) - set(expected)):
        rec.problem(f"{assignment_id}/{sid}: graded but has no expected score")
    notes: dict[str, list[str]] = {}
    needs_gpu: dict[str, list[str]] = {}
    matched, gpu_ran, gpu_passed = 0, 0, 0
    for sid in sorted(samples):
        result = samples[sid]
        if result["status"] != "graded":
            rec.problem(f"{assignment_id}/{sid}: not graded: {result['message']}")
        tests = result["tests"]
        non_gpu = sum(t["earned"] for t in tests if t["id"] not in gpu_ids)
        non_gpu_possible = sum(t["possible"] for t in tests if t["id"] not in gpu_ids)
        gpu_tests = [t for t in tests if t["id"] in gpu_ids]
        ran = [t for t in gpu_tests if t["status"] != "needs-gpu"]
        gpu_ran += len(ran)
        gpu_passed += sum(t["status"] == "passed" for t in ran)
        line = (f"{assignment_id}/{sid}: {result['earned']:g}/{result['possible']:g} on {result['device']}; "
                f"non-GPU tests {non_gpu:g} (expected {expected.get(sid, float('nan')):g})")
        gpu_earned = sum(t["earned"] for t in gpu_tests)
        if gpu_tests:
            line += (f"; GPU-marked {gpu_earned:g}/{sum(t['possible'] for t in gpu_tests):g}"
                     f" ({len(ran)} of {len(gpu_tests)} ran)")
            if sid in expected_gpu:
                line += f" (expected {expected_gpu[sid]:g})"
        if sid in expected_gpu and len(ran) == len(gpu_tests) and gpu_earned != expected_gpu[sid]:
            rec.problem(f"GPU MISMATCH {assignment_id}/{sid}: GPU-marked tests earned {gpu_earned:g}, "
                        f"expected.json says {expected_gpu[sid]:g}")
        info["scores"][sid] = {"earned": result["earned"], "non_gpu": non_gpu, "expected": expected.get(sid),
                               "gpu": {t["id"]: [t["status"], t["message"][:300]] for t in gpu_tests}}
        if sid in expected and non_gpu != expected[sid]:
            rec.problem("MISMATCH " + line)
            lost = [t for t in tests if t["status"] != "passed" and t["id"] not in gpu_ids]
            for t in lost[:8]:
                say(f"      {t['id']}: {t['status']}: {t['message'][:200]}")
            if len(lost) > 8:
                say(f"      ... and {len(lost) - 8} more tests not passed")
        else:
            matched += sid in expected
            say(f"  [d] {line}")
        for t in tests:
            if t["status"] == "error":
                rec.problem(f"{assignment_id}/{sid} {t['id']}: grader error: {t['message'][:300]}")
            elif t["status"] == "needs-gpu":
                needs_gpu.setdefault(t["id"], []).append(sid)
        # GPU tests that ran: every one for the GPU assignment, the ones not passed elsewhere.
        for t in ran:
            if assignment_id == GPU_ASSIGNMENT or t["status"] != "passed":
                say(f"      GPU test {t['id']}: {t['status']} ({t['earned']:g}/{t['possible']:g}) {t['message'][:300]}")
        full_marks = sid in expected and expected[sid] == non_gpu_possible  # a correct solution
        for t in ran:
            if full_marks and t["status"] != "passed":
                rec.problem(f"{assignment_id}/{sid} (full non-GPU marks) fails GPU test {t['id']}: "
                            f"{t['status']}: {t['message'][:200]}")
        for note_line in filter(None, (result.get("load_messages") or "").splitlines()):
            notes.setdefault(note_line, []).append(sid)
    for test_id, sids in sorted(needs_gpu.items()):
        where = "every sample" if len(sids) == len(samples) else ", ".join(sids)
        say(f"  [d] {assignment_id} needs-gpu: {test_id} on {where}")
    gpu_runs = sum(len([t for t in r["tests"] if t["id"] in gpu_ids]) for r in samples.values())
    rec.fact(f"{assignment_id}: {len(samples)}/{len(expected)} samples graded, {matched} match expected.json; "
             f"batch {graded.get('batch_s')} s (jobs={graded.get('jobs')}{', alongside ' + alongside if alongside else ''}); "
             f"{len(gpu_ids)} GPU-marked tests: {gpu_ran} of {gpu_runs} runs happened, {gpu_passed} passed, "
             f"{sum(map(len, needs_gpu.values()))} needs-gpu")
    for note_line, sids in notes.items():
        rec.fact(f"{assignment_id}: load/isolation note on {len(sids)} samples ({', '.join(sids[:4])}"
                 f"{', ...' if len(sids) > 4 else ''}): {note_line[:300]}")
    if not notes:
        rec.fact(f"{assignment_id}: no load or isolation notes recorded")


# --- e. sandbox probe (child processes) -------------------------------------------------------------


PROBE_CODE = '''
import os
import resource
import torch
{extra}

def probe():
    info = {{}}

    def step(name, fn):
        try:
            info[name] = fn()
        except BaseException as exc:
            info[name] = ("ERROR " + type(exc).__name__ + ": " + str(exc))[:600]

    step("rlimit_as_data", lambda: str((resource.getrlimit(resource.RLIMIT_AS), resource.getrlimit(resource.RLIMIT_DATA))))
    step("dev_nvidia", lambda: " ".join(sorted(n for n in os.listdir("/dev") if n.startswith("nvidia"))))
    step("is_available", lambda: bool(torch.cuda.is_available()))
    step("device_count", lambda: int(torch.cuda.device_count()))
    step("tensor_on_cuda", lambda: float((torch.arange(4.0, device="cuda") * 2).sum().item()))
    step("device_name", lambda: torch.cuda.get_device_name())
    # bitsandbytes comes from the wheels on PYTHONPATH: can a sandbox import it itself (not preloaded)?
    step("import_bitsandbytes", lambda: __import__("bitsandbytes").__version__)
    return info
'''

PROBES = {  # name: (isolate, memory_mb or None for the course default, bitsandbytes preloaded)
    "isolated": (True, None, False),
    "isolated+bnb": (True, None, True),
    "isolated-no-memlimit": (True, 10**7, False),
    "no-isolation-no-memlimit": (False, 10**7, False),
}


def child_probe(name: str, result_path: Path) -> None:
    import dataclasses
    import importlib.util

    import nbformat

    from autograder.course.config import load_course
    from autograder.grading.extraction import extract
    from autograder.grading.oracle import GradingSession

    isolate, memory_mb, bnb = PROBES[name]
    spec = importlib.util.spec_from_file_location("gpu_check_test_helpers", ROOT / "tests" / "conftest.py")
    helpers = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = helpers  # its dataclasses look their module up there
    spec.loader.exec_module(helpers)
    root = Path(tempfile.mkdtemp(prefix="gpu_check_probe_"))
    helpers.write_course(root, "x = 1", {"test_probe.py": "def test_nothing():\n    pass\n"}, points=1,
                         call_timeout_s=60, submission_timeout_s=120)
    code = PROBE_CODE.format(extra="import bitsandbytes.functional as bnbf" if bnb else "")
    notebook = helpers.write_notebook(root / "submissions" / "probe.ipynb", [nbformat.v4.new_code_cell(code)])
    assignment = load_course(root).get(helpers.ASSIGNMENT)
    if memory_mb:
        assignment = dataclasses.replace(assignment, limits=dataclasses.replace(assignment.limits, memory_mb=memory_mb))
    data = {"memory_mb": assignment.limits.memory_mb}
    begin = time.perf_counter()
    session = GradingSession(assignment, extract(notebook, assignment.extraction), isolate)
    try:
        if bnb:  # arms a bitsandbytes tripwire, so the forkserver preloads bitsandbytes as for suite 04
            session.forbidden_now = ("bitsandbytes.functional.quantize_4bit",)
        data["value"] = session.request("probe", "call", "probe")
    except BaseException as exc:  # noqa: BLE001
        data["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        data["isolation"] = dict(session.isolation)
        data["load_warnings"] = list(session.load_warnings)
        data["sandbox_start_s"] = list(session.sandbox_start_s)
        data["elapsed_s"] = round(time.perf_counter() - begin, 2)
        session.close()
        result_path.write_text(json.dumps(data, default=str))


def probe_start(runner: Runner):
    return {name: runner.start_child("probe", name, f"probe_{i}") for i, name in enumerate(PROBES)}, time.monotonic()


def probe_finish(rec: Record, runner: Runner, handle, limit: float, cuda: bool) -> None:
    started, begin = handle
    if not cuda:
        rec.skip("no CUDA: the probes show the sandbox path only")
    for name, (proc, path) in started.items():
        data, note = runner.finish_child(proc, path, limit - (time.monotonic() - begin))
        if data is None:
            rec.problem(f"probe {name}: no result ({note or 'child wrote nothing'})")
            continue
        rec.data[name] = data
        value = data.get("value")
        if data.get("error"):
            answer = f"ERROR {data['error']}"
        elif isinstance(value, dict):
            answer = ", ".join(f"{k}={v}" for k, v in value.items())
        else:
            answer = repr(value)
        rec.fact(f"probe {name} (memory_mb={data.get('memory_mb')}): {answer[:900]}")
        say(f"  [e] probe {name}: isolation {data.get('isolation')}; sandbox start {data.get('sandbox_start_s')} s; "
            f"took {data.get('elapsed_s')} s; GradingSession args {data.get('session_args')}"
            + (f"; load warnings {data['load_warnings']}" if data.get("load_warnings") else ""))
        if data.get("isolation", {}).get("isolation"):
            rec.fact(f"probe {name}: isolation {data['isolation']['isolation']}")
        sees_cuda = isinstance(value, dict) and value.get("device_name") and not str(value["device_name"]).startswith("ERROR")
        if cuda and name in ("isolated", "isolated+bnb") and not sees_cuda:
            rec.problem(f"a sandbox ({name}) cannot use CUDA: {answer[:300]}")


# --- f. verify ----------------------------------------------------------------------------------------


def child_verify(assignment_id: str, result_path: Path) -> None:
    from autograder.course.config import load_course
    from autograder.authoring.verify import verify

    assignment = load_course(ROOT).get(assignment_id)
    begin = time.perf_counter()
    problems = verify(assignment)
    result_path.write_text(json.dumps({"problems": problems, "verify_s": round(time.perf_counter() - begin, 2)}))


def verify_start(runner: Runner):
    return runner.start_child("verify", GPU_ASSIGNMENT, "verify"), time.monotonic()


def verify_finish(rec: Record, runner: Runner, handle, limit: float) -> None:
    (proc, path), begin = handle
    data, note = runner.finish_child(proc, path, limit - (time.monotonic() - begin))
    if data is None:
        rec.problem(f"verify {GPU_ASSIGNMENT}: no result ({note})")
        return
    rec.data.update(data)
    rec.fact(f"verify {GPU_ASSIGNMENT}: {'verified' if not data['problems'] else 'FAILED'} in {data['verify_s']} s "
             "(verify() alone, its grading workers' start included)")
    for problem in data["problems"]:
        rec.problem(problem)


# --- main ---------------------------------------------------------------------------------------------


# --- g. a 100-submission batch of 04 (child process) -------------------------------------------------


BATCH_SIZE = int(os.environ.get("GPU_CHECK_BATCH", "100"))


def child_batch(assignment_id: str, result_path: Path) -> None:
    import shutil

    from autograder.course.config import load_course
    from autograder.course.gradebook import Gradebook
    from autograder.grading.handins import discover
    from autograder.grading.scheduler import grade_batch

    jobs = int(os.environ.get("GPU_CHECK_JOBS", "8"))
    assignment = load_course(ROOT).get(assignment_id)
    samples = sorted(discover([ROOT / "samples" / assignment_id]).handins.items())
    batch = Path(tempfile.mkdtemp(prefix="gpu_check_batch_"))
    for n in range(BATCH_SIZE):
        sid, path = samples[n % len(samples)]
        shutil.copy(path, batch / f"team{n:03d}_{sid}.ipynb")
    data = {"jobs": jobs, "done": 0, "failures": 0, "seconds": None, "stages": {}}
    begin = time.perf_counter()

    def on_done(job, outcome) -> None:
        data["done"] += 1
        data["failures"] += isinstance(outcome, BaseException)
        data["seconds"] = round(time.perf_counter() - begin, 2)
        for stage, seconds in ({} if isinstance(outcome, BaseException) else outcome.stages).items():
            if stage == "forkserver start":  # once per batch, reported by each worker's first hand-in
                data["forkserver_s"] = round(max(data.get("forkserver_s", 0.0), seconds), 2)
            elif stage != "worker start":
                data["stages"][stage] = round(data["stages"].get(stage, 0.0) + seconds, 3)
        result_path.write_text(json.dumps(data))

    with Gradebook.open(batch / "gradebook.db") as gradebook:
        grade_batch(assignment, discover([batch]).handins, gradebook, jobs=jobs, isolate=True, on_done=on_done)
    say(f"[g] {data['done']} hand-ins graded in {data['seconds']} s with {jobs} workers")


def batch_start(runner: Runner):
    return runner.start_child("batch", GPU_ASSIGNMENT, "batch"), time.monotonic()


def batch_finish(rec: Record, runner: Runner, handle, limit: float) -> None:
    (proc, result), begin = handle
    data, note = runner.finish_child(proc, result, limit - (time.monotonic() - begin))
    if note:
        rec.problem(f"batch: {note}")
    if not data:
        rec.problem("batch: no result came back")
        return
    rec.data.update(data)
    if data["done"] < BATCH_SIZE:
        rec.problem(f"only {data['done']} of {BATCH_SIZE} hand-ins graded within the limit")
    if data["failures"]:
        rec.problem(f"{data['failures']} grader failures")
    if data["done"]:
        rec.fact(f"{data['done']} hand-ins of {GPU_ASSIGNMENT} in {data['seconds']} s with {data['jobs']} workers: "
                 f"{data['seconds'] / data['done']:.2f} s per hand-in")
        slowest = sorted(data.get("stages", {}).items(), key=lambda item: -item[1])[:6]
        rec.fact(f"forkserver start {data.get('forkserver_s')} s; where a hand-in's time went (mean s): "
                 + ", ".join(f"{stage} {seconds / data['done']:.3f}" for stage, seconds in slowest))


def run_child_mode(argv: list[str]) -> int:
    kind, arg, result = argv[0], argv[1], Path(argv[2])
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    handlers = {"grade": child_grade, "collect": child_collect, "probe": child_probe, "verify": child_verify,
                "batch": child_batch}
    try:
        handlers[kind](arg, result)
    except BaseException:  # noqa: BLE001
        traceback.print_exc()
        return 1
    return 0


def print_summary(runner: Runner) -> int:
    order = ["a", "b", "c", "d", "e", "f", "g"]
    say("\n" + "=" * 100)
    say(f"SUMMARY (gpu_check, {time.monotonic() - runner.start:.0f} s total, out: {runner.out})")
    failed = False
    for key in order:
        rec = runner.records.get(key)
        if rec is None:
            say(f"{key}. not run")
            failed = True
            continue
        failed |= rec.status == "fail"
        say(f"{key}. {rec.title}: {rec.status.upper()} ({rec.elapsed_s:.1f} s)")
        for problem in rec.problems:
            say(f"     PROBLEM {problem}")
        shown = rec.facts
        if key == "d":  # the per-sample lines are above; mismatches are among the problems
            shown = [f for f in rec.facts if "samples graded" in f or "note on" in f or "no load" in f]
        for fact in shown:
            say(f"     {fact}")
    say("=" * 100)
    summary = {key: rec.as_dict() for key, rec in runner.records.items()}
    try:
        (runner.out / "gpu_check_summary.json").write_text(json.dumps(summary, indent=1, default=str))
    except OSError as exc:
        say(f"could not write the summary JSON: {exc}")
    say(f"RESULT: {'PROBLEMS FOUND' if failed else 'all sections ok or skipped'}")
    return 1 if failed else 0


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        return run_child_mode(sys.argv[2:])
    os.environ["PYTHONUNBUFFERED"] = "1"
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    out = Path(os.environ.get("OUT") or tempfile.mkdtemp(prefix="gpu_check_out_"))
    out.mkdir(parents=True, exist_ok=True)
    runner = Runner(out, float(os.environ.get("GPU_CHECK_BUDGET_S", "450")))
    say(f"gpu_check: repo {ROOT}, out {out}, budget {runner.left():.0f} s, PYTHONPATH={os.environ.get('PYTHONPATH', '')}")

    def on_term(signum, frame):  # an outer `timeout`: leave nothing behind, still print what we have
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        runner.kill_children()
        say(f"\n!!! gpu_check got signal {signum}: stopped early")
        code = print_summary(runner)
        sys.stdout.flush()
        os._exit(code or 2)

    signal.signal(signal.SIGTERM, on_term)
    env = runner.in_process("a", "environment", section_env, 75)
    cuda = bool(env.data.get("cuda"))
    runner.in_process("b", "bitsandbytes CPU vs CUDA", section_bnb, 60)
    runner.in_process("c", "04 CUDA snapshot", lambda rec: section_snapshot(rec, out), 30)

    grading = runner.record("d", "grading every sample (isolation on)")
    probes = runner.record("e", "sandbox CUDA probe")
    verifying = runner.record("f", f"verify {GPU_ASSIGNMENT}")
    assignments = sorted(p.parent.name for p in (ROOT / "samples").glob("*/expected.json"))
    others = [a for a in assignments if a != GPU_ASSIGNMENT]

    def grade_task(assignment_id: str, alongside: str):
        return (grading, lambda: grade_start(runner, assignment_id),
                lambda handle, limit: grade_finish(grading, runner, assignment_id, handle, limit, alongside),
                f"grading {assignment_id}")

    probe_task = (probes, lambda: probe_start(runner),
                  lambda handle, limit: probe_finish(probes, runner, handle, limit, cuda), "sandbox probes")
    verify_task = (verifying, lambda: verify_start(runner),
                   lambda handle, limit: verify_finish(verifying, runner, handle, limit), f"verify {GPU_ASSIGNMENT}")
    # Side by side where it fits 16 cores; the most informative first: 04 (GPU tests) and the probes.
    groups = []
    if GPU_ASSIGNMENT in assignments:
        groups.append(("d+e. grading 04 alongside the sandbox probes", [grade_task(GPU_ASSIGNMENT, "probes"), probe_task], 120))
    else:
        groups.append(("e. sandbox probes", [probe_task], 60))
    if others:
        groups.append((f"d+f. grading {others[0]} alongside verify", [grade_task(others[0], "verify"), verify_task], 110))
    else:
        groups.append(("f. verify", [verify_task], 90))
    rest = others[1:]
    for i in range(0, len(rest), 2):
        pair = rest[i:i + 2]
        groups.append((f"d. grading {' and '.join(pair)}",
                       [grade_task(a, " and ".join(b for b in pair if b != a)) for a in pair], 90))
    batching = runner.record("g", f"{BATCH_SIZE} hand-ins of {GPU_ASSIGNMENT}")
    groups.append((f"g. {BATCH_SIZE} hand-ins of {GPU_ASSIGNMENT}", [(batching, lambda: batch_start(runner),
                   lambda handle, limit: batch_finish(batching, runner, handle, limit), "batch")], 150))
    for title, tasks, cap in groups:
        runner.group(title, tasks, cap)
    runner.kill_children()
    return print_summary(runner)


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # never wait on anything left behind (CUDA teardown, stray threads)
