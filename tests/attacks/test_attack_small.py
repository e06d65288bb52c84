"""Attack suite, small inputs that used to end badly: a model or inputs on the meta device.

- A model or an input on PyTorch's ``meta`` device is refused with a camlens error, and the
  model is left as found.
"""

from __future__ import annotations

import pytest
import torch

import camlens
from nets import TrunkHead

X = torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(0))


# --- 4. The meta device -------------------------------------------------------------------------


def _hooks(model: torch.nn.Module) -> list[object]:
    return [
        hook
        for module in model.modules()
        for hooks in (
            module._forward_hooks,
            module._forward_pre_hooks,
            module._backward_hooks,
            module._backward_pre_hooks,
        )
        for hook in hooks.values()
    ]


@pytest.mark.parametrize("method", ["gradcam", "scorecam"])
def test_a_model_on_the_meta_device_is_refused_and_left_as_found(method: str) -> None:
    with torch.device("meta"):
        model = TrunkHead()
    with pytest.raises(camlens.UnsupportedModelError, match=r"to_empty\(device='cpu'\)"):
        camlens.explain(model, X, method=method)
    assert _hooks(model) == [] and model.training
    assert all(p.device.type == "meta" and p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("method", ["gradcam", "scorecam"])
def test_inputs_on_the_meta_device_are_refused_and_the_model_left_as_found(
    method: str,
) -> None:
    model = TrunkHead().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(camlens.BadInputError, match="inputs are on the 'meta' device"):
        camlens.explain(model, X.to("meta"), method=method)
    assert _hooks(model) == [] and not model.training
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_the_refusals_read_well() -> None:
    with torch.device("meta"):
        model = TrunkHead()
    with pytest.raises(camlens.CamlensError) as caught:
        camlens.explain(model, X)
    assert str(caught.value) == (
        "the model's parameters are on the 'meta' device (shapes without values), so it cannot "
        "run; give it real weights first, e.g. model.to_empty(device='cpu') then "
        "model.load_state_dict(...)"
    )
