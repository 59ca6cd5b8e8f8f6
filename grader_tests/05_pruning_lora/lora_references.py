"""Layers and values the LoRA tests hand to the student's code, and what they must give back."""

import torch

IN, OUT = 12, 8


def base_layer(seed: int, bias: bool = True) -> torch.nn.Linear:
    torch.manual_seed(seed)
    return torch.nn.Linear(IN, OUT, bias=bias)


def adapter(r: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(r, IN, generator=g), torch.randn(OUT, r, generator=g)


def loaded(submission, base: torch.nn.Linear, r: int, alpha: float, seed: int):
    """The student's LoRALinear around `base`, carrying the adapter (A, B) of `seed`. Loaded leniently: an
    extra buffer of the student's costs LoRALinear's parameter test, not every test that needs the layer
    (merge_lora's included); a layer that has nowhere to put A, B or the base's weights cannot be tested."""
    lora = submission.LoRALinear(base, r, alpha)
    a, b = adapter(r, seed)
    keys = lora.load_state_dict({**{f"base.{k}": v for k, v in base.state_dict().items()}, "A": a, "B": b},
                                strict=False)
    unexpected = list(keys.unexpected_keys)
    assert not unexpected, (f"LoRALinear has no {', '.join(unexpected)}: keep the layer as `self.base` and the "
                            "adapter as the parameters `self.A` and `self.B`")
    return lora, a, b


def expected_output(base: torch.nn.Linear, a, b, r: int, alpha: float, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return (base(x.double().float()).double() + (alpha / r) * x.double() @ a.double().T @ b.double().T).float()


def merged_weight(base: torch.nn.Linear, a, b, r: int, alpha: float) -> torch.Tensor:
    return (base.weight.double() + (alpha / r) * b.double() @ a.double()).float().detach()


def inputs(*shape, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
