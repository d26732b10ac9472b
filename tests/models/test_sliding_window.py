"""sliding_window_inference: LA window layout, overlap averaging, padding, models and callables, errors."""
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from pyseg_noise.inference import sliding_window_inference, window_starts
from pyseg_noise.models import TSMAN, DenseVoxNet, VNet


def la_starts(length, patch, stride):
    """Window starts written as the LA test scripts enumerate them: every stride, plus the far border."""
    return list(range(0, length - patch, stride)) + [length - patch]


def naive_sliding_window(volume, fn, patch, stride):
    """Loop-by-loop reference: sum softmax per window, count, divide (volume >= patch)."""
    x = volume
    score, count = None, torch.zeros(x.shape[2:])
    for i in la_starts(x.shape[2], patch[0], stride[0]):
        for j in la_starts(x.shape[3], patch[1], stride[1]):
            for k in la_starts(x.shape[4], patch[2], stride[2]):
                out = torch.softmax(fn(x[:, :, i:i + patch[0], j:j + patch[1], k:k + patch[2]]), 1)
                if score is None:
                    score = torch.zeros((x.shape[0], out.shape[1]) + tuple(x.shape[2:]))
                score[:, :, i:i + patch[0], j:j + patch[1], k:k + patch[2]] += out
                count[i:i + patch[0], j:j + patch[1], k:k + patch[2]] += 1
    return score / count


@pytest.mark.parametrize("length,patch,stride,expected", [
    (100, 80, 18, [0, 18, 20]),
    (112, 112, 18, [0]),
    (88, 80, 4, [0, 4, 8]),
    (130, 112, 18, [0, 18]),
    (131, 112, 18, [0, 18, 19]),
])
def test_window_starts(length, patch, stride, expected):
    assert window_starts(length, patch, stride) == expected == la_starts(length, patch, stride)


def test_one_window_equals_the_direct_pass_and_restores_the_mode():
    torch.manual_seed(0)
    net = VNet(1, 2, n_filters=2).train()
    x = torch.randn(1, 16, 16, 16)
    probs = sliding_window_inference(x, net, patch_size=16, stride=8)
    assert net.training  # mode restored
    net.eval()
    with torch.no_grad():
        expected = torch.softmax(net(x[None]), dim=1)
    torch.testing.assert_close(probs, expected)
    assert probs.shape == (1, 2, 16, 16, 16) and not probs.requires_grad


def test_densevoxnet_in_train_mode_is_run_in_eval_mode():
    # in train mode DenseVoxNet returns (main, aux); the window runs it in eval mode (main only)
    torch.manual_seed(0)
    net = DenseVoxNet(1, 2, stem_channels=4, growth_rate=2, n_layers=1, up_channels=(4, 4)).train()
    x = torch.randn(1, 1, 12, 8, 8)
    probs = sliding_window_inference(x, net, patch_size=(8, 8, 8), stride=(4, 4, 4))
    assert net.training
    with torch.no_grad():
        net.eval()
        expected = naive_sliding_window(x, net, (8, 8, 8), (4, 4, 4))
    torch.testing.assert_close(probs, expected)


def test_tsman_uses_predict():
    torch.manual_seed(0)
    model = TSMAN(1, 3, subnet_kwargs=dict(stem_channels=4, growth_rate=2, n_layers=1,
                                           up_channels=(4, 4)))
    x = torch.randn(2, 1, 8, 8, 8)
    probs = sliding_window_inference(x, model, patch_size=(8, 8, 8), stride=(4, 4, 4))
    with torch.no_grad():
        expected = model.eval().predict(x)
    torch.testing.assert_close(probs, expected)


def test_overlapping_windows_on_a_pointwise_model_equal_the_direct_pass():
    torch.manual_seed(0)
    conv = nn.Conv3d(2, 3, kernel_size=1)
    x = torch.randn(2, 2, 20, 18, 13)
    probs = sliding_window_inference(x, conv, patch_size=(8, 8, 6), stride=(3, 5, 2))
    with torch.no_grad():
        expected = torch.softmax(conv(x), dim=1)
    torch.testing.assert_close(probs, expected)
    batched = sliding_window_inference(x, conv, patch_size=(8, 8, 6), stride=(3, 5, 2), batch_size=5)
    torch.testing.assert_close(batched, probs)


def test_overlap_average_matches_a_loop_reference():
    # a model whose output depends on the position inside the patch, so overlaps disagree
    torch.manual_seed(0)
    conv = nn.Conv3d(1, 2, kernel_size=1)
    patch, stride = (8, 6, 5), (3, 4, 2)

    def fn(p):
        ramp = torch.linspace(-2, 2, p.shape[2])[:, None, None] * torch.linspace(0, 1, p.shape[4])
        return conv(p) + torch.stack([ramp, -ramp])[None]

    x = torch.randn(2, 1, 17, 11, 9)
    probs = sliding_window_inference(x, fn, patch_size=patch, stride=stride, batch_size=3)
    with torch.no_grad():
        expected = naive_sliding_window(x, fn, patch, stride)
    torch.testing.assert_close(probs, expected)
    direct = torch.softmax(fn(x[:, :, :8, :6, :5]), 1)
    assert not torch.allclose(probs[:, :, :8, :6, :5], direct.detach())


def test_small_volume_is_padded_centred_and_cropped_back():
    torch.manual_seed(0)
    conv = nn.Conv3d(1, 2, kernel_size=3, padding=1)  # sees the zero padding at the border
    seen = []

    def fn(p):
        seen.append(tuple(p.shape))
        return conv(p)

    x = torch.randn(1, 10, 12, 5)  # unbatched [C_in, X, Y, Z]
    probs = sliding_window_inference(x, fn, patch_size=(16, 16, 8), stride=(4, 4, 4))
    assert seen == [(1, 1, 16, 16, 8)]
    assert probs.shape == (1, 2, 10, 12, 5)
    # pads (6, 4, 3) split as (3|3, 2|2, 1|2): the volume sits at [3:13, 2:14, 1:6]
    padded = F.pad(x[None], (1, 2, 2, 2, 3, 3))
    with torch.no_grad():
        expected = torch.softmax(conv(padded), 1)[:, :, 3:13, 2:14, 1:6]
    torch.testing.assert_close(probs, expected)


def test_partly_small_volume_with_several_windows():
    torch.manual_seed(0)
    conv = nn.Conv3d(1, 2, kernel_size=1)
    x = torch.randn(1, 1, 30, 6, 9)
    probs = sliding_window_inference(x, conv, patch_size=(16, 8, 4), stride=(6, 8, 2))
    with torch.no_grad():
        expected = torch.softmax(conv(x), 1)
    torch.testing.assert_close(probs, expected)


def test_output_modes_and_progress_bar():
    torch.manual_seed(0)
    conv = nn.Conv3d(1, 2, kernel_size=1)
    x = torch.randn(1, 1, 12, 12, 12)
    logits_based = sliding_window_inference(x, conv, patch_size=8, stride=4, progress=True)
    probs_based = sliding_window_inference(x, lambda p: torch.softmax(conv(p), 1), patch_size=8,
                                           stride=4, output="probs", n_classes=2)
    torch.testing.assert_close(logits_based, probs_based)
    labels = logits_based.argmax(dim=1)
    assert labels.shape == (1, 12, 12, 12)


def test_bad_input_raises_clear_errors():
    conv = nn.Conv3d(1, 2, kernel_size=1)
    net = VNet(1, 2, n_filters=2)
    x = torch.randn(1, 1, 8, 8, 8)
    with pytest.raises(ValueError, match=r"volume must be Tensor\[C_in, X, Y, Z\].*3-D"):
        sliding_window_inference(torch.randn(8, 8, 8), conv, patch_size=8, stride=4)
    with pytest.raises(ValueError, match="6-D"):
        sliding_window_inference(torch.randn(1, 1, 1, 8, 8, 8), conv, patch_size=8, stride=4)
    with pytest.raises(TypeError, match="volume must be a torch.Tensor"):
        sliding_window_inference(x.numpy(), conv, patch_size=8, stride=4)
    with pytest.raises(ValueError, match=r"2 channels .*in_channels=1"):
        sliding_window_inference(torch.randn(2, 16, 16, 16), net, patch_size=16, stride=8)
    with pytest.raises(ValueError, match="patch_size"):
        sliding_window_inference(x, conv, patch_size=(8, 8))
    with pytest.raises(ValueError, match="patch_size"):
        sliding_window_inference(x, conv, patch_size=(8, 0, 8))
    with pytest.raises(ValueError, match="stride"):
        sliding_window_inference(x, conv, patch_size=4, stride=(2, 5, 2))
    with pytest.raises(ValueError, match=r"stride \(18, 18, 4\) must not exceed patch_size"):
        sliding_window_inference(x, conv, patch_size=8)  # the LA default stride needs a larger patch
    with pytest.raises(ValueError, match="batch_size"):
        sliding_window_inference(x, conv, patch_size=8, stride=4, batch_size=0)
    with pytest.raises(ValueError, match="output must be"):
        sliding_window_inference(x, conv, patch_size=8, stride=4, output="labels")
    with pytest.raises(ValueError, match="n_classes=3"):
        sliding_window_inference(x, conv, patch_size=8, stride=4, n_classes=3)
    with pytest.raises(TypeError, match="returned tuple"):
        sliding_window_inference(x, lambda p: (conv(p), conv(p)), patch_size=8, stride=4)
    with pytest.raises(ValueError, match="returned shape"):
        sliding_window_inference(x, lambda p: conv(p)[:, :, :4], patch_size=8, stride=4)
    with pytest.raises(ValueError, match="multiple of 16"):  # the network's own check
        sliding_window_inference(torch.randn(1, 1, 12, 12, 12), net, patch_size=12, stride=4)
