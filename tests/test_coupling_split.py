"""A coupling's split and merge: views for interleaved and block masks, index gathers otherwise, always the same values."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from invertible.transforms import AffineCoupling

MASKS = [
    ([True, False, True, False], "interleaved"),
    ([False, True, False, True, False, True], "interleaved"),
    ([True, False], "interleaved"),
    ([True, True, False, False, False], "blocks"),
    ([False, False, True], "blocks"),
    ([True, False, True], None),
    ([True, False, False, True], None),
]


@pytest.mark.parametrize("mask, layout", MASKS)
def test_split_gathers_the_masked_features_and_merge_undoes_it(mask, layout):
    coupling = AffineCoupling(torch.tensor(mask), hidden=(4,))
    assert coupling._layout == layout
    x = torch.randn(7, len(mask))
    x_a, x_b = coupling._split(x)
    keep = torch.tensor(mask)
    assert torch.equal(x_a, x[:, keep]) and torch.equal(x_b, x[:, ~keep])
    assert torch.equal(coupling._merge(x_a, x_b), x)


class _Ops(TorchDispatchMode):
    """Records the name of every aten operation dispatched while active (forward and backward)."""

    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.add(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


GATHERS = {"index", "index_put", "index_put_", "select_backward", "slice_backward", "index_select"}


@pytest.mark.parametrize("mask", [[True, False, True, False], [True, True, False, False, False]])
def test_view_layouts_backpropagate_without_gathers_or_zero_filled_copies(mask):
    coupling = AffineCoupling(torch.tensor(mask), hidden=(4,))
    x = torch.randn(5, len(mask), requires_grad=True)
    with _Ops() as ops:
        z, ladj = coupling(x)
        (z.sum() + ladj.sum()).backward()
    assert not ops.names & GATHERS, ops.names & GATHERS


def test_maf_layer_splits_its_parameters_without_zero_filled_copies():
    from invertible.transforms import MaskedAffineAutoregressive

    layer = MaskedAffineAutoregressive(4, hidden=(8,), init="shear")
    x = torch.randn(5, 4, requires_grad=True)
    with _Ops() as ops:
        z, ladj = layer(x)
        (z.sum() + ladj.sum()).backward()
    assert not ops.names & GATHERS, ops.names & GATHERS
