"""DenseVoxNet: shapes, exact parameter count, aux output contract, dropout, training, bad input."""
import pytest
import torch
from torch.nn import functional as F

from pyseg_noise.models import DenseVoxNet

TINY = dict(stem_channels=4, growth_rate=2, n_layers=2, up_channels=(8, 4))


def densevoxnet_params_analytic(in_ch, n_classes, stem=16, growth=12, layers=(12, 12), ups=(128, 64)):
    """DenseVoxNet counted by hand (BN: weight + bias; convs with bias except the two main deconvs)."""
    total = 27 * in_ch * stem + stem  # stem conv 3^3
    c = stem
    for _ in range(layers[0]):
        total += 2 * c + 27 * c * growth + growth
        c += growth
    c1 = c
    total += 2 * c1 + c1 * c1 + c1  # transition BN + conv 1^3
    for _ in range(layers[1]):
        total += 2 * c + 27 * c * growth + growth
        c += growth
    c2 = c
    total += 2 * c2 + c2 * c2 + c2  # BN + conv 1^3 before upsampling
    total += 8 * c2 * ups[0] + 2 * ups[0] + 8 * ups[0] * ups[1] + 2 * ups[1]  # deconvs + BNs
    total += ups[1] * n_classes + n_classes  # classifier
    total += c1 * n_classes + n_classes + 8 * n_classes * n_classes + n_classes  # aux head
    return total


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def test_default_parameter_count():
    # the paper's configuration: ~1.8 M parameters as reported by Yu et al. 2017
    assert densevoxnet_params_analytic(1, 3) == 1_703_009
    assert n_params(DenseVoxNet(1, 3)) == 1_703_009
    assert n_params(DenseVoxNet(1, 2)) == densevoxnet_params_analytic(1, 2) == 1_702_742
    net = DenseVoxNet(1, 3)
    assert net.attention_channels == {"f1": 160, "f2": 304, "f3": 64}
    assert len(net.block1.layers) == len(net.block2.layers) == 12
    assert net.dropout_rate == 0.2


def test_small_config_parameter_count():
    net = DenseVoxNet(2, 3, stem_channels=4, growth_rate=2, n_layers=(2, 3), up_channels=(8, 4))
    assert n_params(net) == densevoxnet_params_analytic(2, 3, 4, 2, (2, 3), (8, 4))
    assert net.attention_channels == {"f1": 8, "f2": 14, "f3": 4}


def test_outputs_by_mode_and_flag():
    torch.manual_seed(0)
    net = DenseVoxNet(1, 3, **TINY)
    x = torch.randn(2, 1, 16, 12, 8)
    main, aux = net.train()(x)
    assert main.shape == aux.shape == (2, 3, 16, 12, 8)
    out = net.eval()(x)
    assert isinstance(out, torch.Tensor) and out.shape == (2, 3, 16, 12, 8)
    main_e, aux_e = net(x, return_aux=True)
    torch.testing.assert_close(main_e, out)
    assert net.train()(x, return_aux=False).shape == (2, 3, 16, 12, 8)


def test_aux_weight_is_a_setting():
    assert DenseVoxNet(1, 2, **TINY).aux_weight == pytest.approx(0.33)
    assert DenseVoxNet(1, 2, aux_weight=0.5, **TINY).aux_weight == 0.5
    with pytest.raises(ValueError, match="aux_weight"):
        DenseVoxNet(1, 2, aux_weight=-1.0, **TINY)


def test_dropout_only_in_train_mode():
    torch.manual_seed(0)
    net = DenseVoxNet(1, 2, **TINY)
    x = torch.randn(2, 1, 8, 8, 8)
    net.train()
    assert not torch.allclose(net(x)[0], net(x)[0])
    net.eval()
    assert torch.equal(net(x), net(x))
    no_drop = DenseVoxNet(1, 2, dropout_rate=0.0, **TINY).train()
    assert torch.equal(no_drop(x)[0], no_drop(x)[0])


def test_sgd_steps_decrease_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    net = DenseVoxNet(1, 2, dropout_rate=0.0, **TINY).train()
    x = torch.randn(2, 1, 16, 16, 16)
    y = (x[:, 0] > 0.3).long()
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    losses = []
    for _ in range(6):
        opt.zero_grad()
        main, aux = net(x)
        loss = F.cross_entropy(main, y) + net.aux_weight * F.cross_entropy(aux, y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.95 * losses[0], losses


def test_bad_input_raises_clear_errors():
    net = DenseVoxNet(1, 2, **TINY)
    with pytest.raises(ValueError, match="5-D tensor"):
        net(torch.randn(1, 1, 8, 8))
    with pytest.raises(ValueError, match=r"3 channels .*in_channels=1"):
        net(torch.randn(1, 3, 8, 8, 8))
    with pytest.raises(ValueError, match=r"multiple of 4.*\(8, 10, 8\)"):
        net(torch.randn(1, 1, 8, 10, 8))


@pytest.mark.parametrize("kwargs,match", [
    (dict(n_layers=(2, 2, 2)), "n_layers"),
    (dict(n_layers=0), "n_layers"),
    (dict(growth_rate=0), "growth_rate"),
    (dict(up_channels=(8,)), "up_channels"),
    (dict(dropout_rate=-0.1), "dropout_rate"),
])
def test_bad_constructor_arguments(kwargs, match):
    with pytest.raises((TypeError, ValueError), match=match):
        DenseVoxNet(1, 2, **kwargs)
