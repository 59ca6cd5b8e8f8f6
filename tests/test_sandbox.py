"""The sandbox through the grader's eyes: what student code can and cannot do to grading.

One session per module is reused where tests do not kill the sandbox, since each fresh sandbox
costs a fork; tests that end the process check that the next call gets a fresh one.
"""

from __future__ import annotations

import multiprocessing
import textwrap
import time

import pytest
import torch

from autograder.course.config import load_course
from autograder.grading.extraction import extract
from autograder.grading import oracle, sandbox, wire
from autograder.grading.oracle import GraderFault, Handle, GradingSession, SubmissionError, StudentFault
from autograder.grading.sandbox import SandboxDied, SandboxTimeout
from conftest import ASSIGNMENT, call, student_session, write_course, write_notebook

import nbformat

STUDENT_CODE = textwrap.dedent('''
    import os, sys, time
    import torch
    import torch.nn.functional as F
    !pip install something-from-the-internet
    BROKEN_CONSTANT = 1 / 0
    model = load_from_the_hub("Qwen/Qwen2.5-0.5B")

    def add(a, b):
        return a + b

    def double(x):
        return x * 2

    def fails():
        raise ValueError("k must be positive")

    def attention(q):
        return F.scaled_dot_product_attention(q, q, q)

    def swallow_forbidden(q):
        try:
            return F.scaled_dot_product_attention(q, q, q)
        except BaseException:
            return q

    def enable_tf32():
        torch.backends.cuda.matmul.allow_tf32 = True
        return 0

    def tf32_is_on():
        return torch.backends.cuda.matmul.allow_tf32

    def mix_numerics(statements, getters, x):
        """How each getter reads as the call begins, then the statements (any of torch's numerics APIs),
        then a correct result."""
        def read(getter):
            try:
                return eval(getter, {"torch": torch})
            except Exception as exc:
                return type(exc).__name__
        readings = {getter: read(getter) for getter in getters}
        for statement in statements:
            exec(statement, {"torch": torch})
        return readings, x @ x.T

    class AlwaysEqual:
        def __eq__(self, other):
            return True

    def always_equal():
        return AlwaysEqual()

    class Counter(torch.nn.Module):
        def __init__(self, start):
            super().__init__()
            self.count = start
            self.scale = torch.nn.Linear(2, 2, bias=False)

        def forward(self, x):
            self.count += 1
            return self.scale(x)

    def hard_exit():
        os._exit(3)

    def write_to_inherited_pipes():
        from multiprocessing import forkserver, resource_tracker
        held = [forkserver._forkserver._forkserver_alive_fd, resource_tracker._resource_tracker._fd]
        for fd in filter(None, held):
            os.write(fd, b"!")  # one byte down the alive pipe stopped the forkserver
        return held

    def soft_exit():
        sys.exit(0)

    def spin():
        while True:
            pass

    def sleep(seconds):
        time.sleep(seconds)
        return seconds

    def hog_memory():
        return torch.empty(40 * 2**30, dtype=torch.uint8).sum()

    def sample(generator):
        return torch.rand(3, generator=generator)

    def feed(model, ids, one_by_one):
        rows = [ids[i:i + 1] for i in range(len(ids))] if one_by_one else [ids]
        return [model(row).logits.shape[0] for row in rows]

    def describe(layer, x):
        return (type(layer).__name__, layer.training, layer.weight.requires_grad, layer.bias.requires_grad,
                layer.in_features, layer.weight.dtype, layer(x))

    def scale_in_place(x, layer):
        x.mul_(2)
        layer.weight.data.zero_()
        return x.sum()

    def scale_copy(x, layer):
        return (x * 2).sum() + layer(x).sum()

    class Frozen(torch.nn.Module):
        def __init__(self, base):
            super().__init__()
            self.base = base
            self.base.weight.requires_grad_(False)
''')


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    suite = "from autograder import zoo  # its tests hand zoo models to the sandbox\nEXPECTED = 42\n"
    root = write_course(tmp_path_factory.mktemp("course"), "x = 1", {"test_secret.py": suite}, points=1,
                        call_timeout_s=3, submission_timeout_s=60, memory_mb=1024)
    submission = write_notebook(root / "submissions" / "team.ipynb", [nbformat.v4.new_code_cell(STUDENT_CODE)])
    return root, submission


def new_session(course, **limits) -> GradingSession:
    return student_session(*course, **limits)


@pytest.fixture(scope="module")
def session(course):
    s = new_session(course)
    yield s
    s.close()


def test_plain_results_come_back_exact(session):
    assert call(session, "add", 2, 3) == 5
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    out = call(session, "double", x)
    assert type(out) is torch.Tensor and torch.equal(out, x * 2)


def test_only_definitions_run_and_failed_constants_become_warnings(session):
    call(session, "add", 0, 0)
    assert any("BROKEN_CONSTANT" in w and "ZeroDivisionError" in w for w in session.load_warnings)
    # `model = load_from_the_hub(...)` is an experiment: it never ran, so it raised no NameError.
    assert not any("load_from_the_hub" in w for w in session.load_warnings)


def test_missing_function_is_named(session):
    with pytest.raises(StudentFault, match="`top_k_filter` is not defined in your notebook"):
        call(session, "top_k_filter", torch.zeros(2), 1)


def test_student_exception_names_type_message_and_cell(session):
    with pytest.raises(SubmissionError, match=r"`fails` raised ValueError: k must be positive \(at cell 1, line \d+, in fails\)") as info:
        call(session, "fails")
    assert "ValueError" in info.value.mro and "Exception" in info.value.mro


def test_forbidden_api_fails_only_where_forbidden(session):
    q = torch.randn(1, 1, 3, 4)
    sdpa = "torch.nn.functional.scaled_dot_product_attention"
    assert call(session, "attention", q).shape == q.shape  # armed but not forbidden in this call
    with pytest.raises(StudentFault, match=f"`attention` called `{sdpa}`, which this task asks you to implement"):
        call(session, "attention", q, forbidden=(sdpa,))
    with pytest.raises(StudentFault, match="called `torch.nn.functional.scaled_dot_product_attention`"):
        call(session, "swallow_forbidden", q, forbidden=(sdpa,))


def test_changing_global_numerics_is_judged_as_usual_with_a_note(session):
    session.notes = []
    assert call(session, "enable_tf32") == 0
    # TF32 on also lowers the float32 matmul precision: both are named.
    assert session.notes[0] == ("`enable_tf32` changed torch.backends.cuda.matmul.allow_tf32; the grader reset it "
                                "(graded functions should leave it alone)")
    assert all(note.endswith("the grader reset it (graded functions should leave it alone)") for note in session.notes)
    session.notes = []
    assert call(session, "tf32_is_on") is False  # reset before the next call
    assert session.notes == []


# What a submission may write through each of torch's two numerics APIs (one at a time, the legacy first).
LEGACY_NUMERICS = ["torch.set_float32_matmul_precision('medium')", "torch.set_float32_matmul_precision('high')",
                   "torch.backends.cuda.matmul.allow_tf32 = True", "torch.backends.cudnn.allow_tf32 = True",
                   "torch.backends.cudnn.allow_tf32 = False"]
NEW_NUMERICS = [f"torch.backends.{node}.fp32_precision = '{value}'".replace("backends..", "backends.")
                for node, values in (("", ("tf32", "ieee")), ("cuda.matmul", ("tf32", "ieee")), ("cudnn", ("tf32",)),
                                     ("cudnn.conv", ("tf32", "ieee")), ("cudnn.rnn", ("ieee",)), ("mkldnn", ("bf16",)),
                                     ("mkldnn.matmul", ("bf16", "tf32")), ("mkldnn.conv", ("tf32",)))
                for value in values]
# The getters of both APIs, as the grader's pins must leave them (full float32 everywhere).
PINNED_READINGS = {"torch.get_float32_matmul_precision()": "highest", "torch.backends.cuda.matmul.allow_tf32": False,
                   "torch.backends.cudnn.allow_tf32": False,
                   **{f"torch.backends.{node}fp32_precision": "ieee" for node in (
                       "", "cuda.matmul.", "cudnn.", "cudnn.conv.", "cudnn.rnn.", "mkldnn.", "mkldnn.matmul.",
                       "mkldnn.conv.", "mkldnn.rnn.")}}


def test_every_mix_of_torchs_two_numerics_apis_is_reset_and_the_correct_result_keeps_its_points(session):
    """Once the legacy and the `fp32_precision` APIs are mixed, torch's legacy getters raise: the pins
    must still read and reset every setting, and the call stays the submission's correct result."""
    steps = LEGACY_NUMERICS + NEW_NUMERICS
    mixes = [[a] for a in steps] + [[a, b] for a in steps for b in steps if a != b] + [[]]
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    previous = None
    for statements in mixes:
        session.notes = []
        readings, product = call(session, "mix_numerics", statements, list(PINNED_READINGS), x)
        assert readings == PINNED_READINGS, f"after {previous}"
        assert torch.equal(product, x @ x.T)
        if len(statements) == 1 and not statements[0].endswith(("'ieee'", "False")):  # not a pin's value
            assert session.notes, statements  # what changed is named
        previous = statements


def test_objects_come_back_as_handles_that_never_compare_equal(session):
    obj = call(session, "always_equal")
    assert isinstance(obj, Handle) and obj.remote_type == "AlwaysEqual"
    assert obj != 1 and not (obj == obj.remote_type)


def test_modules_are_driven_through_handles(session):
    module = call(session, "Counter", 5)
    weight = torch.eye(2) * 3
    module.load_state_dict({"scale.weight": weight})
    x = torch.ones(1, 2)
    assert torch.equal(module(x), x @ weight.T)
    assert module.count == 6
    assert torch.equal(module.scale.weight, weight)


def test_generator_state_is_copied(session):
    expected = torch.rand(3, generator=torch.Generator().manual_seed(7))
    assert torch.equal(call(session, "sample", torch.Generator().manual_seed(7)), expected)


def test_fed_tokens_counts_positions_and_batch_size_of_each_forward_call(course):
    from autograder.grading import zoo
    from autograder.grading.oracle import SubmissionProxy

    session = new_session(course, call_timeout_s=30)  # a model's first forward in a fresh sandbox: slow when loaded
    try:
        model, ids = zoo.tiny_model("llama"), torch.randint(3, 100, (3, 5), generator=torch.Generator().manual_seed(0))
        proxy = SubmissionProxy(session)
        with proxy.fed_tokens() as whole, proxy.fed_tokens() as nested:
            assert call(session, "feed", model, ids, False) == [3]
        with proxy.fed_tokens() as looped:
            assert call(session, "feed", model, ids, True) == [1, 1, 1]
        assert (whole.per_call, whole.batch_sizes) == ([5], [3]) and nested.batch_sizes == [3]
        assert (looped.per_call, looped.batch_sizes) == ([5, 5, 5], [1, 1, 1])
    finally:
        session.close()


def test_a_torch_module_crosses_as_its_class_attributes_parameters_and_mode(session):
    layer = torch.nn.Linear(3, 2, dtype=torch.float64).eval()
    layer.weight.requires_grad_(False)
    x = torch.randn(4, 3, dtype=torch.float64)
    name, training, weight_grad, bias_grad, in_features, dtype, out = call(session, "describe", layer, x)
    assert (name, training, weight_grad, bias_grad, in_features, dtype) == ("Linear", False, False, True, 3, torch.float64)
    assert torch.equal(out, layer(x))


def test_a_module_of_a_class_the_sandbox_cannot_import_is_refused_by_name(session):
    class Mine(torch.nn.Module):
        pass

    with pytest.raises(wire.WireError, match="cannot pass a Mine to a submission: only modules of classes from torch"):
        call(session, "describe", Mine(), torch.ones(1))


def test_handles_report_requires_grad_training_dtype_and_device_of_parameters(session):
    frozen = call(session, "Frozen", torch.nn.Linear(2, 2, dtype=torch.float64))
    assert frozen.base.weight.requires_grad is False and frozen.base.bias.requires_grad is True
    assert frozen.training is True and frozen.base.weight.dtype == torch.float64
    assert frozen.base.weight.device == torch.device("cpu")


def test_changed_inputs_names_each_tensor_a_call_changed_in_place(session):
    from autograder.grading.oracle import SubmissionProxy

    x, layer = torch.ones(2, 2), torch.nn.Linear(2, 2)
    weight = layer.weight.detach().clone()
    with SubmissionProxy(session).changed_inputs() as changed:
        call(session, "scale_in_place", x, layer)
        session.request("scale_in_place", "call", "scale_in_place", args=(x,), kwargs={"layer": layer})
        call(session, "scale_copy", x, layer)
    assert changed.per_call == [("scale_in_place", ["args[0]", "args[1].weight"]),
                                ("scale_in_place", ["args[0]", "kwargs['layer'].weight"]), ("scale_copy", [])]
    assert torch.equal(x, torch.ones(2, 2)) and torch.equal(layer.weight, weight)  # the grader's own stay as they were
    call(session, "scale_in_place", x, layer)
    assert len(changed.per_call) == 3  # recorded only inside the block


def test_sys_exit_is_an_ordinary_failure(session):
    with pytest.raises(SubmissionError, match=r"`soft_exit` called sys.exit\(\)"):
        call(session, "soft_exit")
    assert call(session, "add", 1, 2) == 3


def test_memory_bomb_is_contained(course):
    session = new_session(course)
    try:
        with pytest.raises((SubmissionError, SandboxDied), match="allocate|memory|MemoryError|SIGKILL"):
            call(session, "hog_memory")
        assert call(session, "add", 1, 2) == 3
    finally:
        session.close()


def test_the_forkserver_and_resource_tracker_pipes_are_closed_before_student_code_runs(course):
    """A red-team submission wrote a byte down the forkserver's "alive" pipe (every later sandbox of the batch
    failed) and escape codes down the resource tracker's (they reached the TA's terminal)."""
    session = new_session(course)
    try:
        assert call(session, "write_to_inherited_pipes") == [None, None]
    finally:
        session.close()
    after = new_session(course)  # a fresh sandbox from the same forkserver
    try:
        assert call(after, "add", 1, 2) == 3
    finally:
        after.close()


def test_hard_exit_kills_only_the_sandbox_and_the_next_call_gets_a_fresh_one(course):
    session = new_session(course)
    try:
        module = call(session, "Counter", 0)
        generation = session.generation
        with pytest.raises(SandboxDied, match="exit code 3 while running `hard_exit`"):
            call(session, "hard_exit")
        assert call(session, "add", 1, 2) == 3
        assert session.generation == generation + 1
        with pytest.raises(StudentFault, match="lost when your code crashed"):
            module(torch.ones(1, 2))
    finally:
        session.close()


def test_endless_loop_times_out_and_grading_goes_on(course):
    session = new_session(course, call_timeout_s=2)
    try:
        with pytest.raises(SandboxTimeout, match=r"`spin` did not finish within 2 s"):
            call(session, "spin")
        assert call(session, "add", 2, 2) == 4
    finally:
        session.close()


def test_submission_time_budget_is_enforced(course):
    session = new_session(course, call_timeout_s=5, submission_timeout_s=2)
    try:
        assert call(session, "sleep", 0.2) == 0.2
        with pytest.raises(SandboxTimeout):
            call(session, "sleep", 3)
        with pytest.raises(SandboxTimeout, match="whole time budget"):
            call(session, "add", 1, 1)
    finally:
        session.close()


@pytest.mark.parametrize("constant, failure, message", [
    ("SEED = os._exit(0)", SandboxDied, "ended the process .* while loading your notebook"),
    ("SEED = spin()", SandboxTimeout, "loading your notebook did not finish within 3 s"),
])
def test_a_notebook_that_cannot_load_fails_every_call_without_new_sandboxes(tmp_path, course, monkeypatch,
                                                                            constant, failure, message):
    monkeypatch.setattr("autograder.grading.oracle.LOAD_TIMEOUT_S", 1.0)
    root, _ = course
    notebook = write_notebook(tmp_path / "team.ipynb", [nbformat.v4.new_code_cell(STUDENT_CODE + constant)])
    session = GradingSession(load_course(root).get(ASSIGNMENT), extract(notebook))
    try:
        for _ in range(2):
            with pytest.raises(failure, match=message):
                call(session, "add", 1, 2)
        assert session.generation == 1 and session.sandbox_start_s == []
    finally:
        session.close()


def test_a_gpu_runner_preloads_nothing_that_initialises_cuda(course, monkeypatch):
    """bitsandbytes initialises CUDA on import; a forkserver holding a CUDA context forks sandboxes
    that cannot use the GPU, so where a GPU exists only what does not touch CUDA is preloaded."""
    import multiprocessing.forkserver

    from autograder.grading import sandbox, warm

    assignment = load_course(course[0]).get(ASSIGNMENT)
    preloaded = lambda: multiprocessing.forkserver._forkserver._preload_modules  # noqa: E731
    for gpu in (True, False):
        monkeypatch.setattr(warm, "nvidia_driver_present", lambda: gpu)
        sandbox.warm_context(assignment, ["transformers", "bitsandbytes"])
        extra = ["transformers"] if gpu else ["bitsandbytes", "transformers"]
        assert preloaded() == [*warm.SANDBOX_BASE, *extra, warm.NUMERICS, warm.ZOO, warm.PAGES]


def test_a_function_that_timed_out_twice_in_a_row_is_not_called_again(course):
    session = new_session(course, call_timeout_s=3)  # a fresh sandbox's first call is slow on a loaded machine
    try:
        for _ in range(2):
            with pytest.raises(SandboxTimeout, match="did not finish within 3 s"):
                call(session, "sleep", 10)
        begin = time.monotonic()
        with pytest.raises(SandboxTimeout, match=r"`sleep` was not run: it did not finish in its last 2 calls"):
            call(session, "sleep", 0.1)
        assert time.monotonic() - begin < 0.5
        assert call(session, "add", 1, 2) == 3  # other functions are called as usual
    finally:
        session.close()


def test_a_call_that_finishes_resets_the_count_so_slow_functions_lose_nothing(course):
    session = new_session(course, call_timeout_s=3)
    try:
        for seconds in (10, 0.1, 10, 0.1):
            if seconds > 3:
                with pytest.raises(SandboxTimeout):
                    call(session, "sleep", seconds)
            else:
                assert call(session, "sleep", seconds) == seconds
    finally:
        session.close()


@pytest.fixture
def planted_fault(monkeypatch, tmp_path):
    """A fault in the grader's own code of the sandbox (its numerics pins), in every sandbox forked from
    this process from now on; `planted_fault(n)` makes it raise the next `n` times it runs. Each sandbox
    is a process of its own: the count is kept in a file (the sessions run without walls to reach it)."""
    left, pin = tmp_path / "faults_left", sandbox._pin_numerics
    left.write_text("0")

    def faulty(torch):
        if (n := int(left.read_text())) > 0:
            left.write_text(str(n - 1))
            raise RuntimeError("planted fault in the grader's pins")
        return pin(torch)

    monkeypatch.setattr(sandbox, "_pin_numerics", faulty)
    monkeypatch.setattr(oracle, "warm_context", lambda *args: multiprocessing.get_context("fork"))
    return lambda n: left.write_text(str(n))


def unwalled_session(course) -> GradingSession:
    session = new_session(course)
    session.isolate = False
    return session


def test_a_fault_of_the_graders_code_in_the_sandbox_is_retried_in_a_fresh_one(course, planted_fault):
    planted_fault(1)
    session = unwalled_session(course)
    try:
        assert call(session, "add", 1, 2) == 3
        assert session.generation == 2 and session.notes == []
    finally:
        session.close()


def test_a_fault_of_the_graders_code_that_persists_is_a_grader_error_never_the_students(course, planted_fault):
    planted_fault(2)
    session = unwalled_session(course)
    try:
        with pytest.raises(GraderFault, match=r"`add`: the grader failed inside the sandbox \(RuntimeError: planted"):
            call(session, "add", 1, 2)
        assert session.generation == 2  # retried once, in a fresh sandbox
        assert call(session, "add", 1, 2) == 3
    finally:
        session.close()


def test_a_grader_fault_in_a_call_on_the_submissions_object_is_not_repeated_and_keeps_the_object(course,
                                                                                                 planted_fault):
    """Repeating a call on a stateful object would change it twice, and a fresh sandbox has lost it."""
    session = unwalled_session(course)
    try:
        module = call(session, "Counter", 5)
        planted_fault(1)
        with pytest.raises(GraderFault, match="planted fault"):
            module(torch.ones(1, 2))
        assert session.generation == 1 and module.count == 5  # the fault came before the call
        module(torch.ones(1, 2))
        assert module.count == 6
    finally:
        session.close()
