"""VNet: shapes, exact parameter count, PINT's dropout switches, one training run, bad input."""
import pytest
import torch
from torch.nn import functional as F

from pyseg_noise.models import VNet


def conv_params(c_in, c_out, k):
    return k**3 * c_in * c_out + c_out  # weights + bias


def bn_params(c):
    return 2 * c  # weight + bias (running stats are buffers)


def vnet_params_analytic(in_channels, n_classes, n):
    """The V-Net of the LA code bases counted by hand, stage by stage."""
    w = [n * 2**i for i in range(5)]
    total = 0
    for i, k in enumerate((1, 2, 3, 3, 3)):  # encoder stages
        for j in range(k):
            c_in = in_channels if (i == 0 and j == 0) else w[i]
            total += conv_params(c_in, w[i], 3) + bn_params(w[i])
    for i in range(4):  # strided 2^3 down convolutions
        total += conv_params(w[i], w[i + 1], 2) + bn_params(w[i + 1])
    for j, k in enumerate((3, 3, 2, 1)):  # transposed 2^3 up convolutions, decoder stages
        c = w[3 - j]
        total += conv_params(2 * c, c, 2) + bn_params(c)
        total += k * (conv_params(c, c, 3) + bn_params(c))
    return total + conv_params(n, n_classes, 1)


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def test_default_parameter_count_is_pinned_and_analytic():
    net = VNet(in_channels=1, n_classes=2)
    assert net.n_filters == 16
    assert vnet_params_analytic(1, 2, 16) == 9_448_866
    assert n_params(net) == 9_448_866


@pytest.mark.parametrize("in_channels,n_classes,n", [(1, 2, 2), (3, 4, 3)])
def test_small_parameter_count(in_channels, n_classes, n):
    assert n_params(VNet(in_channels, n_classes, n)) == vnet_params_analytic(in_channels, n_classes, n)


@pytest.mark.parametrize("shape", [(2, 1, 16, 16, 16), (1, 1, 16, 32, 48)])
def test_output_shape(shape):
    net = VNet(1, 3, n_filters=2).eval()
    out = net(torch.randn(shape))
    assert out.shape == (shape[0], 3) + shape[2:]
    assert torch.isfinite(out).all()


def test_attention_channels_follow_n_filters():
    assert VNet(1, 2, n_filters=4).attention_channels == {"f1": 32, "f2": 64, "f3": 4}


def test_dropout_is_random_in_train_mode_only():
    torch.manual_seed(0)
    x = torch.randn(2, 1, 16, 16, 16)
    net = VNet(1, 2, n_filters=4).train()
    assert not torch.allclose(net(x), net(x))
    net.eval()
    assert torch.equal(net(x), net(x))
    # forced on in eval mode: PINT's teacher with BN on running statistics
    assert not torch.allclose(net(x, dropout=True), net(x, dropout=True))
    # forced off in train mode: BN uses the batch statistics, deterministic
    net.train()
    assert torch.equal(net(x, dropout=False), net(x, dropout=False))


def test_dropout_zeroes_whole_channels_at_rate_one_half():
    # the last dropout is channel-wise (Dropout3d) with p = 0.5: a channel is either zeroed or
    # doubled; compare the features the generator yields at f3 with what reaches out_conv
    torch.manual_seed(1)
    net = VNet(1, 2, n_filters=4).eval()
    x = torch.randn(8, 1, 16, 16, 16)
    seen = {}

    def keep_input(module, inputs, output):
        seen["after"] = inputs[0]  # returns None: the output is left alone

    handle = net.out_conv.register_forward_hook(keep_input)
    stages = net.forward_stages(x, dropout=True)
    name, h = next(stages)
    while name != "f3":
        name, h = stages.send(h)
    before = h.clone()
    name, (logits, aux) = stages.send(h)
    assert name == "output" and aux is None and logits.shape == (8, 2, 16, 16, 16)
    handle.remove()
    after = seen["after"]  # Tensor[8, 4, 16, 16, 16]
    dropped = after.flatten(2).abs().amax(-1) == 0
    kept = ~dropped & (before.flatten(2).abs().amax(-1) > 0)
    assert 0.2 < dropped.float().mean().item() < 0.8  # 32 channel draws at rate 0.5
    assert kept.any()
    torch.testing.assert_close(after[kept], 2 * before[kept])


def test_without_dropout_train_mode_is_deterministic():
    x = torch.randn(2, 1, 16, 16, 16)
    net = VNet(1, 2, n_filters=4, has_dropout=False).train()
    assert torch.equal(net(x), net(x))
    with pytest.raises(ValueError, match="has_dropout=False"):
        net(x, dropout=True)


def test_sgd_steps_decrease_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    net = VNet(1, 2, n_filters=2, has_dropout=False).train()
    x = torch.randn(2, 1, 16, 16, 16)
    y = (x[:, 0] > 0.3).long()
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    losses = []
    for _ in range(6):
        opt.zero_grad()
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.95 * losses[0], losses


def test_bad_input_raises_clear_errors():
    net = VNet(1, 2, n_filters=2)
    with pytest.raises(ValueError, match=r"x must be a 5-D tensor"):
        net(torch.randn(1, 16, 16, 16))
    with pytest.raises(ValueError, match=r"x has 2 channels .*in_channels=1"):
        net(torch.randn(1, 2, 16, 16, 16))
    with pytest.raises(ValueError, match=r"multiple of 16.*\(16, 20, 16\)"):
        net(torch.randn(1, 1, 16, 20, 16))
    with pytest.raises(TypeError, match="floating-point"):
        net(torch.zeros(1, 1, 16, 16, 16, dtype=torch.long))


@pytest.mark.parametrize("kwargs,match", [
    (dict(in_channels=0, n_classes=2), "in_channels"),
    (dict(in_channels=1, n_classes=2, n_filters=0), "n_filters"),
    (dict(in_channels=1, n_classes=2.0), "n_classes"),
    (dict(in_channels=1, n_classes=2, dropout_rate=1.0), "dropout_rate"),
])
def test_bad_constructor_arguments(kwargs, match):
    with pytest.raises((TypeError, ValueError), match=match):
        VNet(**kwargs)


def test_compiles_without_graph_breaks():
    # the staged forward is a generator driven by send(); Dynamo traces it whole
    torch.manual_seed(0)
    net = VNet(1, 2, n_filters=2).eval()
    x = torch.randn(1, 1, 16, 16, 16)
    compiled = torch.compile(net, backend="aot_eager", fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), net(x))
