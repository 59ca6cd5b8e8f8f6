"""Forbidden APIs are caught however submission code reaches them; library internals stay free."""

from __future__ import annotations

import inspect
import pydoc
import re
import textwrap
from pathlib import Path

import nbformat
import pytest
import torch

from autograder.grading import zoo
from autograder.grading.oracle import StudentFault, SubmissionError
from autograder.grading.tripwires import operator_patterns
from conftest import call, student_session, write_course, write_notebook

SDPA = "torch.nn.functional.scaled_dot_product_attention"
QUANTIZE = "torch.quantize_per_tensor"
GENERATE = "transformers.generation.utils.GenerationMixin.generate"

SHORTCUTS = textwrap.dedent('''
    import importlib
    import torch
    import torch.nn.functional as F
    from torch.nn.functional import scaled_dot_product_attention as attend
    from torch.utils._python_dispatch import _pop_mode

    def by_name(q):
        return F.scaled_dot_product_attention(q, q, q)

    def by_alias(q):
        return attend(q, q, q)

    def by_getattr(q):
        return getattr(importlib.import_module("torch.nn.functional"), "scaled_" + "dot_product_attention")(q, q, q)

    def by_c_binding(q):
        return torch._C._nn.scaled_dot_product_attention(q, q, q)

    def by_math_kernel(q):
        return torch.ops.aten._scaled_dot_product_attention_math(q, q, q)[0]

    def by_cpu_flash_kernel(q):
        return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu.default(q, q, q)[0]

    def by_library_module(q):
        attention = torch.nn.MultiheadAttention(q.shape[-1], 1, batch_first=True)
        return attention(q[0], q[0], q[0], need_weights=False)[0]

    def by_hand(q):
        scores = q @ q.transpose(-2, -1) / q.shape[-1] ** 0.5
        return scores.softmax(-1) @ q

    def through_the_zoo_model(model, ids):
        model.set_attn_implementation("sdpa")
        return model(ids).logits

    def quantize_ops(x):
        return torch.ops.aten.quantize_per_tensor(x, 0.1, 0, torch.qint8).int_repr()

    def quantize_by_name(x):
        return torch.quantize_per_tensor(x, 0.1, 0, torch.qint8).int_repr()

    def generate(model, ids):
        return model.generate(ids, max_new_tokens=2, do_sample=False)

    def _continue(self, ids):  # a parameter named `self` holding the grader's model is still the student's code
        return self.generate(ids, max_new_tokens=2, do_sample=False)

    def generate_through_a_self(model, ids):
        return _continue(model, ids)

    def switch_the_modes_off(q):
        with torch._C.DisableTorchFunction(), torch._C._DisableTorchDispatch():
            return F.scaled_dot_product_attention(q, q, q)

    def pop_the_modes_for_a_while(q):
        from torch.overrides import _pop_mode_temporarily as pop_function_mode
        from torch.utils._python_dispatch import _pop_mode_temporarily as pop_dispatch_mode

        with pop_function_mode(), pop_dispatch_mode():
            return F.scaled_dot_product_attention(q, q, q)

    def _in_a_thread(work):
        import threading
        out = {}
        thread = threading.Thread(target=lambda: out.setdefault("result", work()))
        thread.start()
        thread.join()
        return out.get("result")

    def attention_in_a_thread(q):
        return _in_a_thread(lambda: F.scaled_dot_product_attention(q, q, q))

    def by_hand_in_a_thread(q):
        return _in_a_thread(lambda: by_hand(q))

    def function_modes_in_use():
        from torch.overrides import _get_current_function_mode_stack
        return len(_get_current_function_mode_stack())

    def pop_the_checks(q):
        for _ in range(4):
            try:
                _pop_mode()
            except Exception:
                pass
        with torch._C.DisableTorchFunction():
            return F.scaled_dot_product_attention(q, q, q)
''')


def armed_session(tmp_path_factory, code: str, forbidden: set[str], call_timeout_s: float):
    """A sandbox session over a notebook holding `code`, with `forbidden` armed before the notebook loads
    (as after the suite's collection); a generator for module-scoped fixtures."""
    root = write_course(tmp_path_factory.mktemp("course"), "x = 1", {"test_a.py": "A = 1\n"}, points=1,
                        call_timeout_s=call_timeout_s)
    s = student_session(root, write_notebook(root / "team.ipynb", [nbformat.v4.new_code_cell(code)]))
    s.forbidden_all.update(forbidden)
    yield s
    s.close()


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    yield from armed_session(tmp_path_factory, SHORTCUTS, {SDPA, QUANTIZE, GENERATE}, 30)


@pytest.mark.parametrize("function", ["by_name", "by_alias", "by_getattr", "by_c_binding", "by_math_kernel",
                                      "by_cpu_flash_kernel", "by_library_module"])
def test_every_way_to_reach_attention_is_caught(session, function):
    q = torch.randn(1, 2, 5, 8)
    with pytest.raises(StudentFault, match=f"^`{function}` called `{SDPA}`, which this task asks you to implement yourself$"):
        call(session, function, q, forbidden=(SDPA,))
    assert call(session, function, q).shape[-1] == 8  # allowed where the test does not forbid it


def test_own_code_and_a_grader_models_internals_stay_free(session):
    q = torch.randn(1, 2, 5, 8)
    torch.testing.assert_close(call(session, "by_hand", q, forbidden=(SDPA,)),
                               torch.nn.functional.scaled_dot_product_attention(q, q, q))
    model, ids = zoo.tiny_model("llama"), torch.tensor([[1, 2, 3, 4]])
    torch.testing.assert_close(call(session, "through_the_zoo_model", model, ids, forbidden=(SDPA,)),
                               model(ids).logits, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("function", ["quantize_ops", "quantize_by_name"])
def test_quantization_ops_are_caught_by_name_and_through_torch_ops(session, function):
    x = torch.randn(4, 4)
    with pytest.raises(StudentFault, match=f"called `{QUANTIZE}`"):
        call(session, function, x, forbidden=(QUANTIZE,))


@pytest.mark.parametrize("function", ["generate", "generate_through_a_self"])
def test_pure_python_library_functions_are_guarded(session, function):
    model, ids = zoo.tiny_model("llama"), torch.tensor([[1, 2, 3]])
    with pytest.raises(StudentFault, match=f"called `{GENERATE}`"):
        call(session, function, model, ids, forbidden=(GENERATE,))


def test_removing_the_checks_during_a_call_fails_it(session):
    q = torch.randn(1, 1, 3, 4)
    with pytest.raises(StudentFault, match="`pop_the_checks` disabled the grader's checks for forbidden calls"):
        call(session, "pop_the_checks", q, forbidden=(SDPA,))
    assert call(session, "by_hand", q, forbidden=(SDPA,)).shape == q.shape  # the next call is watched again
    with pytest.raises(StudentFault, match="called"):
        call(session, "by_name", q, forbidden=(SDPA,))


@pytest.mark.parametrize("function", ["switch_the_modes_off", "pop_the_modes_for_a_while"])
def test_switching_the_checks_off_for_a_while_fails_the_call(session, function):
    """The modes are back in place when such a call returns: it is the switching itself that counts."""
    q = torch.randn(1, 1, 3, 4)
    with pytest.raises(StudentFault, match=f"`{function}` disabled the grader's checks for forbidden calls"):
        call(session, function, q, forbidden=(SDPA,))
    assert call(session, "switch_the_modes_off", q).shape == q.shape  # where nothing is forbidden, it is allowed


def test_a_thread_started_during_a_call_is_watched_too(session):
    """The torch modes are per thread; a thread of the submission's gets them too."""
    q = torch.randn(1, 1, 3, 4)
    with pytest.raises(StudentFault, match=f"`attention_in_a_thread` called `{SDPA}`"):
        call(session, "attention_in_a_thread", q, forbidden=(SDPA,))
    assert call(session, "by_hand_in_a_thread", q, forbidden=(SDPA,)).shape == q.shape


def test_operator_patterns_name_the_kernel_family():
    assert operator_patterns("torch.quantize_per_tensor") == ("aten::quantize_per_tensor",)
    assert "aten::_scaled_dot_product_*" in operator_patterns(SDPA)
    assert operator_patterns("bitsandbytes::*") == ("bitsandbytes::*",)
    assert operator_patterns("bitsandbytes.functional.quantize_4bit") == ("bitsandbytes::quantize_4bit",)


def test_a_pure_python_api_is_checked_without_the_torch_modes(session):
    """The modes put every torch call through Python; a pure-Python API alone must not switch them on."""
    assert call(session, "function_modes_in_use", forbidden=(GENERATE,)) == 0
    assert call(session, "function_modes_in_use", forbidden=(QUANTIZE,)) == 1


# Every way to reach a pure-Python library function that a student might find, written as a notebook
# would: each returns something to call with the function's positional arguments.
ROUTES = textwrap.dedent('''
    import copy
    import gc
    import importlib
    import importlib.util
    import inspect
    import marshal
    import sys
    import textwrap
    import types


    def _place(api):
        parts = api.split(".")
        for cut in range(len(parts) - 1, 0, -1):
            try:
                module = importlib.import_module(".".join(parts[:cut]))
                break
            except ImportError:
                continue
        owner = module
        for name in parts[cut:-1]:
            owner = getattr(owner, name)
        return owner, parts[-1]


    def _innermost(function):
        while hasattr(function, "__wrapped__"):
            function = function.__wrapped__
        return function


    def _by_referents(start, name):
        seen, todo = set(), [start]
        while todo:
            item = todo.pop()
            if id(item) in seen:
                continue
            seen.add(id(item))
            if isinstance(item, types.FunctionType) and item.__name__ == name and not hasattr(item, "__wrapped__"):
                return item
            todo.extend(r for r in gc.get_referents(item) if isinstance(r, (types.FunctionType, types.CellType, tuple)))


    def _module_copy(function, how):
        path = inspect.getsourcefile(function)
        if how == "reload":
            module = importlib.reload(sys.modules[function.__module__])
        elif how == "spec_from_file_location":
            spec = importlib.util.spec_from_file_location("my_copy", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        elif how == "exec_source":
            module = types.ModuleType("my_copy")
            exec(compile(open(path).read(), path, "exec"), module.__dict__)
        else:  # the cached bytecode next to the source
            with open(importlib.util.cache_from_source(path), "rb") as cached:
                code = marshal.loads(cached.read()[16:])
            module = types.ModuleType("my_copy")
            exec(code, module.__dict__)
        owner = module
        for name in function.__qualname__.split(".")[:-1]:
            owner = getattr(owner, name)
        return _innermost(getattr(owner, function.__name__))


    def reach(api, route):
        owner, name = _place(api)
        found = getattr(owner, name)
        inner = _innermost(inspect.unwrap(found))
        if route == "by_name":
            return found
        if route == "unwrap":
            return inspect.unwrap(found)
        if route == "__wrapped__":
            return _innermost(found)
        if route == "__func__":
            instance = object.__new__(owner) if isinstance(owner, type) else object()
            return types.MethodType(inner, instance).__func__
        if route == "vars":
            return _innermost(vars(owner)[name])
        if route == "gc.get_referents":
            return _by_referents(found, inner.__name__)
        if route == "FunctionType":
            return types.FunctionType(inner.__code__, inner.__globals__, "mine", inner.__defaults__, inner.__closure__)
        if route == "copy":
            clone = copy.copy(copy.deepcopy(inner))
            return types.FunctionType(clone.__code__, dict(clone.__globals__), clone.__name__, clone.__defaults__)
        if route == "code.replace":
            return types.FunctionType(inner.__code__.replace(co_name="mine"), inner.__globals__)
        if route == "in_a_thread":  # what the thread raises is lost; the call fails all the same
            import threading

            def in_a_thread(*args):
                thread = threading.Thread(target=inner, args=args)
                thread.start()
                thread.join()
            in_a_thread.__signature__ = inspect.signature(inner)
            return in_a_thread
        if route == "source_compiled":
            namespace = dict(inner.__globals__)
            source = textwrap.dedent(inspect.getsource(inner))
            exec(compile(source[source.index("def "):], "mine.py", "exec"), namespace)  # without its decorators
            return namespace[inner.__name__]
        return _module_copy(inner, route)


    def reach_and_call(api, route):
        function = reach(api, route)
        required = [p for p in inspect.signature(function).parameters.values()
                    if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        return function(*[None] * len(required))


    def generate_by_unwrap(model, ids):
        return inspect.unwrap(type(model).generate)(model, ids, max_new_tokens=2, do_sample=False)


    def top_p_through_the_class_dict(logits, p):
        from transformers.generation.logits_process import TopPLogitsWarper
        return vars(TopPLogitsWarper)["__call__"](TopPLogitsWarper(top_p=p), None, logits)


    def top_p_by_hand(logits, p):
        order = logits.sort(dim=-1, descending=True)
        keep = order.values.softmax(-1).cumsum(-1) - order.values.softmax(-1) < p
        masked = order.values.masked_fill(~keep, float("-inf"))
        return masked.scatter(-1, order.indices, masked)


    def reload_outside_a_check():
        import transformers.generation.utils
        importlib.reload(transformers.generation.utils)


    @lambda _: types.FunctionType(compile("def g(model, ids):\\n    return model.generate(ids, max_new_tokens=2)",
                                          "helper.py", "exec").co_consts[0], globals())
    def generate_from_elsewhere(model, ids):
        pass
''')

ROUTE_NAMES = ("by_name", "unwrap", "__wrapped__", "__func__", "vars", "gc.get_referents", "FunctionType", "copy",
               "in_a_thread", "code.replace", "source_compiled", "reload", "spec_from_file_location", "exec_source",
               "cached_bytecode")


def _python_level_apis() -> list[str]:
    """Every API the four hidden suites forbid that is a pure-Python function here."""
    from autograder.authoring.release import _forbidden_apis

    apis = {api for suite in sorted((Path(__file__).parents[1] / "grader_tests").iterdir())
            for forbidden in _forbidden_apis(suite.resolve()).values() for api in forbidden}
    return sorted(api for api in apis if "::" not in api and inspect.isfunction(inspect.unwrap(pydoc.locate(api))))


PYTHON_APIS = _python_level_apis()


@pytest.fixture(scope="module")
def routes(tmp_path_factory):
    yield from armed_session(tmp_path_factory, ROUTES, set(PYTHON_APIS), 60)


def test_the_suites_forbid_pure_python_apis_of_each_library():
    assert GENERATE in PYTHON_APIS and "bitsandbytes.functional.quantize_4bit" in PYTHON_APIS
    assert "transformers.generation.logits_process.TopPLogitsWarper.__call__" in PYTHON_APIS


@pytest.mark.parametrize("route", ROUTE_NAMES)
@pytest.mark.parametrize("api", PYTHON_APIS)
def test_a_forbidden_python_function_is_caught_however_it_is_reached(routes, api, route):
    """The check is in the function's own code: every object that runs that code runs the check, and a
    new copy of the code is refused when it is made."""
    with pytest.raises(StudentFault, match=f"^`reach_and_call` called `{re.escape(api)}`, which this task asks"):
        call(routes, "reach_and_call", api, route, forbidden=(api,))


def test_the_real_thing_reached_through_a_guard_fails_and_is_free_where_allowed(routes):
    model, ids = zoo.tiny_model("llama"), torch.tensor([[1, 2, 3]])
    with pytest.raises(StudentFault, match=f"`generate_by_unwrap` called `{GENERATE}`"):
        call(routes, "generate_by_unwrap", model, ids, forbidden=(GENERATE,))
    expected = model.generate(ids, max_new_tokens=2, do_sample=False)
    assert torch.equal(call(routes, "generate_by_unwrap", model, ids), expected)
    top_p = "transformers.generation.logits_process.TopPLogitsWarper.__call__"
    logits = torch.randn(3, 10)
    with pytest.raises(StudentFault, match=f"called `{re.escape(top_p)}`"):
        call(routes, "top_p_through_the_class_dict", logits, 0.8, forbidden=(top_p,))
    torch.testing.assert_close(call(routes, "top_p_by_hand", logits, 0.8, forbidden=(top_p,)),
                               call(routes, "top_p_through_the_class_dict", logits, 0.8))


def test_code_compiled_under_another_file_name_is_the_submission_too(routes):
    """A graded function built from code compiled as `helper.py` is still the submission's."""
    model, ids = zoo.tiny_model("llama"), torch.tensor([[1, 2, 3]])
    with pytest.raises(StudentFault, match=f"`generate_from_elsewhere` called `{GENERATE}`"):
        call(routes, "generate_from_elsewhere", model, ids, forbidden=(GENERATE,))


def test_a_copy_of_forbidden_code_is_refused_also_outside_a_check(routes):
    """Made where nothing is forbidden, the copy would run unchecked later: it is never made."""
    with pytest.raises(SubmissionError, match="ForbiddenCall.*a new copy of its code"):
        call(routes, "reload_outside_a_check")
    with pytest.raises(StudentFault, match=f"called `{GENERATE}`"):  # the library module is intact
        call(routes, "reach_and_call", GENERATE, "by_name", forbidden=(GENERATE,))


BNB_BLOCKWISE = "bitsandbytes.functional.quantize_blockwise"

NATIVE = textwrap.dedent('''
    import ctypes
    import glob
    import os
    import shutil

    import bitsandbytes
    import bitsandbytes.cextension
    import bitsandbytes.functional as bnbf
    import torch

    LIBRARY = bitsandbytes.cextension.lib._lib._name
    KERNEL_AT_LOAD = bitsandbytes.functional.lib.cquantize_blockwise_cpu_fp32


    def _quantize(kernel, x):
        code = bnbf.create_dynamic_map().float()
        absmax = torch.empty((x.numel() + 63) // 64)
        out = torch.empty(x.shape, dtype=torch.uint8)
        kernel(bnbf.get_ptr(code), bnbf.get_ptr(x), bnbf.get_ptr(absmax), bnbf.get_ptr(out),
               ctypes.c_longlong(64), ctypes.c_longlong(x.numel()))
        return out, absmax


    def by_cdll(x):
        return _quantize(ctypes.CDLL(LIBRARY).cquantize_blockwise_cpu_fp32, x)


    def by_the_module_handle(x):
        return _quantize(bnbf.lib.cquantize_blockwise_cpu_fp32, x)


    def by_cextension(x):
        return _quantize(bitsandbytes.cextension.lib._lib["cquantize_blockwise_cpu_fp32"], x)


    def by_a_pointer_taken_at_load(x):
        return _quantize(KERNEL_AT_LOAD, x)


    def by_address(x):
        address = ctypes.cast(bnbf.lib.cquantize_blockwise_cpu_fp32, ctypes.c_void_p).value
        kernel = ctypes.CFUNCTYPE(None, *[ctypes.c_void_p] * 4, ctypes.c_longlong, ctypes.c_longlong)(address)
        return _quantize(kernel, x)


    def by_a_copy_of_the_library(x):
        copy = shutil.copy(LIBRARY, "/tmp/mine.so")
        return _quantize(ctypes.CDLL(copy).cquantize_blockwise_cpu_fp32, x)


    def by_another_build_of_the_library(x):
        other = next(p for p in glob.glob(os.path.dirname(LIBRARY) + "/*.so") if p != LIBRARY)
        return ctypes.CDLL(other)


    def unlock_and_run(x):
        libc = ctypes.CDLL(None)
        libc.mprotect.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
        for line in open("/proc/self/maps"):
            span, permissions, *_ = line.split()
            if line.rstrip().endswith(LIBRARY) and permissions.startswith("---"):
                start, end = (int(a, 16) for a in span.split("-"))
                libc.mprotect(start, end - start, 5)
        return _quantize(bnbf.lib.cquantize_blockwise_cpu_fp32, x)


    def by_hand(x):
        blocks = x.reshape(-1, 64)
        return blocks.abs().amax(1)
''')


@pytest.fixture(scope="module")
def native(tmp_path_factory):
    yield from armed_session(tmp_path_factory, NATIVE, {BNB_BLOCKWISE, "bitsandbytes::*"}, 60)


@pytest.mark.parametrize("function", ["by_cdll", "by_the_module_handle", "by_cextension", "by_a_pointer_taken_at_load",
                                      "by_address"])
def test_a_forbidden_librarys_native_kernels_cannot_run(native, function):
    """In a task that forbids bitsandbytes, its native code is locked, however the kernel was reached."""
    import bitsandbytes.functional as bnbf

    x = torch.randn(4, 64)
    crashed = f"^`{function}` crashed \\(SIGSEGV\\) running the native code of bitsandbytes"
    with pytest.raises(StudentFault, match=crashed):
        call(native, function, x, forbidden=(BNB_BLOCKWISE,))
    out, absmax = call(native, function, x)  # where nothing is forbidden, the kernel is the library's
    expected, state = bnbf.quantize_blockwise(x, blocksize=64)
    assert torch.equal(out, expected) and torch.equal(absmax, state.absmax)
    assert call(native, "by_hand", x, forbidden=(BNB_BLOCKWISE,)).shape == (4,)  # own code runs as before


@pytest.mark.parametrize("function", ["by_a_copy_of_the_library", "by_another_build_of_the_library"])
def test_loading_a_copy_of_a_locked_library_is_refused(native, function):
    with pytest.raises(StudentFault, match=f"^`{function}` called `{re.escape(BNB_BLOCKWISE)}`"):
        call(native, function, torch.randn(1, 64), forbidden=(BNB_BLOCKWISE,))


def test_unlocking_the_native_code_fails_the_call(native):
    with pytest.raises(StudentFault, match="`unlock_and_run` disabled the grader's lock on a forbidden library's"):
        call(native, "unlock_and_run", torch.randn(1, 64), forbidden=(BNB_BLOCKWISE,))
