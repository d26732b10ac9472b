"""TSMAN: output contract, attention switches, stream (in)dependence, predict, training, modules."""
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from pyseg_noise.models import (TSMAN, DenseVoxNet, MutualChannelAttention, MutualSpatialAttention,
                                VNet)
from pyseg_noise.ops import reference

TINY = dict(stem_channels=4, growth_rate=2, n_layers=2, up_channels=(8, 4), dropout_rate=0.0)


def tiny_tsman(**kwargs):
    return TSMAN(1, 3, subnet_kwargs=TINY, **kwargs)


def x_input(seed=0, shape=(2, 1, 8, 8, 8)):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g)


def test_outputs_by_mode():
    torch.manual_seed(0)
    model = tiny_tsman()
    x = x_input()
    out = model.train()(x)
    assert len(out) == 4 and all(o.shape == (2, 3, 8, 8, 8) for o in out)
    out = model.eval()(x)
    assert len(out) == 2 and all(o.shape == (2, 3, 8, 8, 8) for o in out)
    assert len(model(x, return_aux=True)) == 4
    assert model.aux_weight == pytest.approx(0.33)
    assert model.loss_attention is True


def test_vnet_subnet_has_no_aux():
    torch.manual_seed(0)
    model = TSMAN(1, 2, subnet="vnet", subnet_kwargs=dict(n_filters=2))
    assert isinstance(model.stream_a, VNet) and model.aux_weight == 0.0
    # batch 2: the 1^3 bottleneck of a 16^3 input needs more than one value per BN channel
    logits_a, logits_b, aux_a, aux_b = model.train()(x_input(shape=(2, 1, 16, 16, 16)))
    assert logits_a.shape == logits_b.shape == (2, 2, 16, 16, 16)
    assert aux_a is None and aux_b is None
    assert set(model.attention) == {"f1", "f2", "f3"}


def test_attention_modules_follow_the_switches():
    full = tiny_tsman()
    assert isinstance(full.attention["f1"], MutualChannelAttention)
    assert isinstance(full.attention["f2"], MutualChannelAttention)
    assert isinstance(full.attention["f3"], MutualSpatialAttention)
    assert full.attention["f1"].channels == 8 and full.attention["f2"].channels == 12
    assert full.attention["f3"].channels == 4

    no_sa = tiny_tsman(spatial_attention=False)
    assert set(no_sa.attention) == {"f1", "f2"} and no_sa.spatial_attention is False
    no_ca = tiny_tsman(channel_attention=False)
    assert set(no_ca.attention) == {"f3"}
    none = tiny_tsman(spatial_attention=False, channel_attention=False, loss_attention=False)
    assert len(none.attention) == 0 and none.loss_attention is False
    assert not any(name.startswith("attention.") for name, _ in none.named_parameters())
    n = lambda m: sum(p.numel() for p in m.parameters())
    assert n(full) == n(none) + n(full.attention)
    assert n(none) == 2 * n(DenseVoxNet(1, 3, **TINY))


@pytest.mark.parametrize("switch", ["spatial_attention", "channel_attention"])
def test_switching_an_attention_off_changes_the_output(switch):
    torch.manual_seed(0)
    full = tiny_tsman().eval()
    reduced = tiny_tsman(**{switch: False}).eval()
    # same sub-network weights, same remaining attentions; only the switched one is gone
    missing, unexpected = reduced.load_state_dict(full.state_dict(), strict=False)
    assert not missing and unexpected
    x = x_input()
    a_full, _ = full(x)
    a_reduced, _ = reduced(x)
    assert (a_full - a_reduced).abs().max() > 1e-4


def test_without_attention_the_streams_are_the_plain_subnets():
    torch.manual_seed(0)
    model = tiny_tsman(spatial_attention=False, channel_attention=False).eval()
    x = x_input()
    logits_a, logits_b = model(x)
    torch.testing.assert_close(logits_a, model.stream_a(x), rtol=0, atol=0)
    torch.testing.assert_close(logits_b, model.stream_b(x), rtol=0, atol=0)
    assert not torch.allclose(logits_a, logits_b)  # different initialisations


def _stream_b_grad_norm(model):
    x = x_input()
    model.zero_grad(set_to_none=True)
    logits_a = model.train()(x)[0]
    logits_a.square().sum().backward()
    grads = [p.grad for p in model.stream_b.parameters() if p.grad is not None]
    a_grads = [p.grad for p in model.stream_a.parameters() if p.grad is not None]
    assert a_grads and sum(g.abs().sum() for g in a_grads) > 0
    return sum((g.abs().sum() for g in grads), torch.tensor(0.0))


def test_streams_are_independent_with_all_attention_off():
    torch.manual_seed(0)
    model = tiny_tsman(spatial_attention=False, channel_attention=False)
    assert _stream_b_grad_norm(model) == 0


@pytest.mark.parametrize("kwargs", [dict(), dict(spatial_attention=False), dict(channel_attention=False)])
def test_attention_couples_the_streams(kwargs):
    torch.manual_seed(0)
    assert _stream_b_grad_norm(tiny_tsman(**kwargs)) > 0


def test_predict_is_the_mean_of_the_two_softmaxes():
    torch.manual_seed(0)
    model = tiny_tsman().eval()
    x = x_input()
    logits_a, logits_b = model(x)
    expected = (logits_a.softmax(1) + logits_b.softmax(1)) / 2
    probs = model.predict(x)
    torch.testing.assert_close(probs, expected)
    torch.testing.assert_close(probs.sum(1), torch.ones(2, 8, 8, 8))


def test_sgd_steps_decrease_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    model = tiny_tsman().train()
    x = x_input(shape=(2, 1, 16, 16, 16))
    y = (x[:, 0] > 0.3).long()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    losses = []
    for _ in range(6):
        opt.zero_grad()
        logits_a, logits_b, aux_a, aux_b = model(x)
        loss = (F.cross_entropy(logits_a, y) + F.cross_entropy(logits_b, y)
                + model.aux_weight * (F.cross_entropy(aux_a, y) + F.cross_entropy(aux_b, y)))
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.95 * losses[0], losses


def test_reference_tsman_loss_reaches_both_streams_and_the_attentions():
    torch.manual_seed(0)
    model = tiny_tsman().train()
    x = x_input()
    y = (x[:, 0] > 0).long()
    logits_a, logits_b, _, _ = model(x)
    loss, att = reference.tsman_loss(logits_a, logits_b, y)
    assert att.shape == (2, 8, 8, 8) and att.max() > 0  # the streams disagree somewhere at init
    loss.backward()
    for part in (model.stream_a, model.stream_b, model.attention):
        assert sum(p.grad.abs().sum() for p in part.parameters() if p.grad is not None) > 0


def test_spatial_attention_matches_its_formula():
    torch.manual_seed(0)
    sa = MutualSpatialAttention(3, hidden=2)
    h_a, h_b = torch.randn(2, 3, 4, 5, 6), torch.randn(2, 3, 4, 5, 6)
    z = F.relu(F.conv3d(torch.cat([h_a, h_b], 1), sa.mix.weight, sa.mix.bias, padding=1))
    m = torch.sigmoid(F.conv3d(z, sa.to_maps.weight, sa.to_maps.bias))
    g_a, g_b = sa(h_a, h_b)
    torch.testing.assert_close(g_a, h_a * m[:, :1])
    torch.testing.assert_close(g_b, h_b * m[:, 1:])
    m_a, m_b = sa.maps(h_a, h_b)
    assert m_a.shape == (2, 1, 4, 5, 6) and 0 < m_a.min() and m_a.max() < 1


def test_channel_attention_matches_its_formula():
    torch.manual_seed(0)
    ca = MutualChannelAttention(6, reduction=4)
    assert ca.mlp[0].out_features == 3
    h_a, h_b = torch.randn(2, 6, 4, 5, 3), torch.randn(2, 6, 4, 5, 3)
    pooled = torch.cat([h_a.mean((2, 3, 4)), h_b.mean((2, 3, 4))], 1)
    w = torch.sigmoid(ca.mlp[2](F.relu(ca.mlp[0](pooled))))
    g_a, g_b = ca(h_a, h_b)
    torch.testing.assert_close(g_a, h_a * w[:, :6, None, None, None])
    torch.testing.assert_close(g_b, h_b * w[:, 6:, None, None, None])


def test_a_closed_gate_blocks_the_gradient_of_its_stream_only():
    # TSMAN Eq. (5): dL/do -> dL/do * f_att. Close stream a's spatial gate (bias -30 -> m_a ~ 1e-13)
    # and leave stream b's at sigmoid(0) = 1/2 (zero weights): a's features get ~no gradient,
    # b's get exactly half of the upstream gradient.
    sa = MutualSpatialAttention(2, hidden=2)
    with torch.no_grad():
        sa.to_maps.weight.zero_()
        sa.to_maps.bias.copy_(torch.tensor([-30.0, 0.0]))
    h_a = torch.randn(1, 2, 3, 3, 3, requires_grad=True)
    h_b = torch.randn(1, 2, 3, 3, 3, requires_grad=True)
    g_a, g_b = sa(h_a, h_b)
    upstream = torch.randn(1, 2, 3, 3, 3)
    grad_a, grad_b = torch.autograd.grad((g_a * upstream).sum() + (g_b * upstream).sum(), (h_a, h_b))
    assert grad_a.abs().max() < 1e-10
    torch.testing.assert_close(grad_b, 0.5 * upstream)


def test_bad_input_and_arguments():
    model = tiny_tsman()
    with pytest.raises(ValueError, match=r"2 channels .*in_channels=1"):
        model(torch.randn(1, 2, 8, 8, 8))
    with pytest.raises(ValueError, match="multiple of 4"):
        model(torch.randn(1, 1, 8, 6, 8))
    with pytest.raises(ValueError, match="5-D"):
        model.predict(torch.randn(1, 8, 8, 8))
    with pytest.raises(ValueError, match="subnet must be one of"):
        TSMAN(1, 2, subnet="unet")
    with pytest.raises(ValueError, match="staged-forward protocol"):
        TSMAN(1, 2, subnet=lambda i, c: nn.Conv3d(i, c, 1))
    with pytest.raises(ValueError, match="same shape"):
        MutualSpatialAttention(4)(torch.randn(1, 4, 2, 2, 2), torch.randn(1, 4, 2, 2, 3))
    with pytest.raises(ValueError, match=r"Tensor\[B, 4, \*S\]"):
        MutualChannelAttention(4)(torch.randn(1, 3, 2, 2, 2), torch.randn(1, 3, 2, 2, 2))


def test_compiles_without_graph_breaks():
    torch.manual_seed(0)
    model = tiny_tsman().eval()
    x = x_input()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    with torch.no_grad():
        out, expected = compiled(x), model(x)
    for got, want in zip(out, expected):
        torch.testing.assert_close(got, want)
