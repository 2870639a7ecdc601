import pytest
import torch

from sgn.checkpoint import build_model, load_model, save_checkpoint
from sgn.config import apply_overrides, load_config
from sgn.interface import TokenLayout
from sgn.utils import SGNError

CLASSES = ["a", "b", "c", "d", "e"]


def smoke(*overrides):
    return apply_overrides(load_config("smoke"), list(overrides))


VARIANTS = [
    [],
    ["model.class_tokens=false"],
    ["model.grouping=false"],
    ["model.tokens_per_class=2"],
    ["model.share_tokens=true"],
    ["model.gumbel=true"],
    ["model.arch=unet"],
]


@pytest.mark.parametrize("overrides", VARIANTS, ids=lambda o: ",".join(o) or "sgn")
def test_forward_shapes_and_gradients(overrides):
    config = smoke(*overrides)
    torch.manual_seed(0)
    model = build_model(config, CLASSES)
    n_bins, frames = config.model.n_fft // 2 + 1, 37  # an odd number of frames exercises padding
    out = model(torch.rand(2, n_bins, frames))
    assert out.mask_logits.shape == (2, len(CLASSES), config.model.warped_bins, frames)
    out.mask_logits.mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads[:3])
    if config.model.arch == "sgn":
        assert out.presence_logits.shape == (2, len(CLASSES))
        if config.model.class_tokens:
            assert out.token_logits.shape[:2] == (2, model.tokens.shape[0])
        else:
            assert out.token_logits is None
        if config.model.grouping:
            assignment = out.assignment
            assert assignment.shape[:2] == (2, model.tokens.shape[0])
            # a softmax over tokens: every feature token's assignment sums to one
            assert torch.allclose(assignment.sum(1), torch.ones_like(assignment.sum(1)), atol=1e-5)
        else:
            assert out.assignment is None


def test_masks_depend_on_input():
    torch.manual_seed(0)
    model = build_model(smoke(), CLASSES).eval()
    a = model(torch.rand(1, 128, 20)).mask_logits
    b = model(torch.rand(1, 128, 20)).mask_logits
    assert not torch.allclose(a, b)


def test_token_layout():
    layout = TokenLayout.build(CLASSES, tokens_per_class=2)
    assert layout.class_from_tokens.shape == (5, 10) and torch.allclose(layout.class_from_tokens.sum(1), torch.ones(5))
    assert layout.token_targets.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert layout.tokens_of(3).tolist() == [6, 7] and layout.token_class().tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    shared = TokenLayout.build(CLASSES, share_tokens=True)
    assert shared.class_from_tokens.shape == (5, 3) and shared.token_targets.tolist() == [0, 1, 2]
    assert shared.tokens_of(0).tolist() == shared.tokens_of(1).tolist() == [0] and shared.tokens_of(4).tolist() == [2]
    present = shared.present(torch.tensor([[0, 4], [2, -1]]))  # padding (-1) marks nothing
    assert present.tolist() == [[1, 0, 0, 0, 1], [0, 0, 1, 0, 0]]
    assert shared.present_tokens(present).tolist() == [[True, False, True], [False, True, False]]
    assert TokenLayout.without_tokens(CLASSES).n_tokens == 0


def test_gumbel_hard_assignment_at_eval():
    torch.manual_seed(0)
    model = build_model(smoke("model.gumbel=true"), CLASSES).eval()
    x = torch.rand(1, 128, 16)
    assert torch.equal(model(x).mask_logits, model(x).mask_logits)  # no noise at eval


def test_bad_configs():
    with pytest.raises(SGNError, match="model.arch"):
        build_model(smoke("model.arch=transformer"), CLASSES)
    with pytest.raises(SGNError, match="multiple of model.patch_freq"):
        build_model(smoke("model.warped_bins=60"), CLASSES)


def test_checkpoint_round_trip_and_errors(tmp_path):
    config = smoke()
    model = build_model(config, CLASSES)
    path = save_checkpoint(tmp_path / "m.pt", model, config, step=3)
    loaded, loaded_config, state = load_model(path)
    assert loaded_config == config and loaded.classes == CLASSES and state["step"] == 3
    x = torch.rand(1, 128, 9)
    assert torch.allclose(model.eval()(x).mask_logits, loaded(x).mask_logits)
    # weights_only loading works (no pickled classes)
    assert torch.load(path, weights_only=True)["format"] == "sgn-checkpoint/1"

    (tmp_path / "junk.pt").write_bytes(b"garbage")
    with pytest.raises(SGNError, match="not a readable sgn checkpoint"):
        load_model(tmp_path / "junk.pt")
    torch.save({"format": "other/2"}, tmp_path / "other.pt")
    with pytest.raises(SGNError, match="format 'other/2'"):
        load_model(tmp_path / "other.pt")
    # another architecture's weights under this config
    state = torch.load(path, weights_only=True)
    state["model"] = build_model(smoke("model.arch=unet"), CLASSES).state_dict()
    torch.save(state, tmp_path / "mixed.pt")
    with pytest.raises(SGNError, match="weights do not fit a sgn model"):
        load_model(tmp_path / "mixed.pt")
    with pytest.raises(SGNError, match="checkpoint not found"):
        load_model(tmp_path / "none.pt")


def _identity_grouping(dim: int, **kwargs):
    """A grouping block whose queries are the tokens and whose keys are the normalised features."""
    from sgn.model import GroupingBlock

    block = GroupingBlock(dim, 2.0, **{"gumbel": False, "tau": 1.0, **kwargs})
    with torch.no_grad():
        for linear in (block.q, block.k):
            linear.weight.copy_(torch.eye(dim))
            linear.bias.zero_()
        block.token_mlp.proj.weight.zero_()
        block.token_mlp.proj.bias.zero_()
    return block


def test_grouping_assigns_each_feature_to_the_token_it_matches():
    dim, n_tokens = 16, 5
    block = _identity_grouping(dim).eval()
    tokens = 8.0 * torch.eye(dim)[:n_tokens][None]  # token i points along axis i
    order = torch.tensor([3, 0, 4, 4, 1, 2, 0])  # feature p matches token order[p]
    features = 5.0 * torch.eye(dim)[order][None] + 0.1 * torch.randn(1, len(order), dim)
    _, assignment = block(tokens, features)  # [1, S, P]
    assert assignment.argmax(1)[0].tolist() == order.tolist()
    assert (assignment.max(1).values > 0.9).all()  # confidently, not by a hair
    assert torch.allclose(assignment.sum(1), torch.ones(1, len(order)), atol=1e-6)


def test_hard_assignment_passes_gradients_straight_through():
    torch.manual_seed(0)
    block = _identity_grouping(16, gumbel=True, tau=0.5).train()
    tokens = torch.randn(2, 4, 16, requires_grad=True)
    features = torch.randn(2, 9, 16)
    grouped, _ = block(tokens, features)
    grouped.square().sum().backward()
    # the forward pass used a one-hot assignment, yet the assignment logits' inputs learn
    assert block.k.weight.grad is not None and block.k.weight.grad.abs().sum() > 0
    assert block.q.weight.grad.abs().sum() > 0
