"""Forbidden APIs are caught however submission code reaches them; library internals stay free."""

from __future__ import annotations

import textwrap

import nbformat
import pytest
import torch

from autograder.grading import zoo
from autograder.grading.oracle import StudentFault
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

    def pop_the_checks(q):
        for _ in range(4):
            try:
                _pop_mode()
            except Exception:
                pass
        with torch._C.DisableTorchFunction():
            return F.scaled_dot_product_attention(q, q, q)
''')


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    root = write_course(tmp_path_factory.mktemp("course"), "x = 1", {"test_a.py": "A = 1\n"}, points=1,
                        call_timeout_s=30)
    notebook = write_notebook(root / "team.ipynb", [nbformat.v4.new_code_cell(SHORTCUTS)])
    s = student_session(root, notebook)
    s.forbidden_all.update({SDPA, QUANTIZE, GENERATE})  # armed before the notebook loads, as after collection
    yield s
    s.close()


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


def test_pure_python_library_functions_are_guarded(session):
    model, ids = zoo.tiny_model("llama"), torch.tensor([[1, 2, 3]])
    with pytest.raises(StudentFault, match=f"called `{GENERATE}`"):
        call(session, "generate", model, ids, forbidden=(GENERATE,))


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


def test_a_pure_python_api_is_guarded_without_the_torch_modes(monkeypatch):
    """The modes put every torch call through Python; a name guard alone must not switch them on."""
    from torch.overrides import _get_current_function_mode_stack
    from transformers.generation.utils import GenerationMixin

    from autograder.grading.tripwires import Tripwires

    monkeypatch.setattr(GenerationMixin, "generate", GenerationMixin.generate)  # restored after the test
    wires = Tripwires([GENERATE, QUANTIZE])
    with wires.watch([GENERATE]):
        assert _get_current_function_mode_stack() == []
    with wires.watch([QUANTIZE]):
        assert len(_get_current_function_mode_stack()) == 1
