"""Every registered method trains a few iterations on the tiny set; PINT's step equals its formula."""
import json
import math

import pytest
import torch
import torch.nn.functional as F

from pyseg_noise.ops import pint_image_loss, pint_pixel_loss
from pyseg_noise.training import ConfigError, Trainer, load_checkpoint, method_names
from pyseg_noise.training.method import Batch
from pyseg_noise.training.pint import PINT, perturbed_teacher_uncertainty
from pyseg_noise.training.registry import get_method
from pyseg_noise.training.run_log import read_log

from .tiny_runs import CROP, tiny_config


pytestmark = pytest.mark.usefixtures("one_thread")


MINE = ("vnet", "pnt", "int", "pint")


def _options(method):
    if method == "pint":
        return {"image_phase_iterations": 2}
    return None


@pytest.mark.slow  # end-to-end training (the fast tier leaves it out)
@pytest.mark.parametrize("method", method_names())
def test_a_few_iterations_of_every_method(method, tiny_h5, tmp_path):
    try:
        cfg = tiny_config(tiny_h5, method, method_options=_options(method))
    except ConfigError as exc:  # a method that needs other sizes: its own tests cover it
        if method in MINE:
            raise
        pytest.skip(f"{method} does not run on the generic tiny config: {exc}")
    result = Trainer(cfg, tmp_path / method).fit()
    total = 6 if method == "pint" else 4
    assert result.iteration == result.total_iterations == total
    records = [r for r in read_log(tmp_path / method) if "split" not in r]
    assert [r["iteration"] for r in records] == list(range(1, total + 1))
    assert all(math.isfinite(r["loss"]) for r in records)
    state = load_checkpoint(tmp_path / method)
    assert state["iteration"] == total and state["finished"] and state["method"] == method
    s = result.summary
    assert s["cases"] == 2 and 0.0 <= s["dice"] <= 1.0 and 0.0 <= s["fg_pred"] <= 1.0
    assert s["asd"] >= 0 and s["hd95"] >= 0
    saved = json.loads((tmp_path / method / "eval" / "summary.json").read_text())
    assert saved["dice"] == pytest.approx(s["dice"])
    if method == "pint":
        assert [r["phase"] for r in records] == [1.0] * 4 + [2.0] * 2


@pytest.mark.slow  # end-to-end training (the fast tier leaves it out)
def test_run_folder_has_plots_and_config(tiny_h5, tmp_path):
    cfg = tiny_config(tiny_h5, "pint", method_options={"image_phase_iterations": 1}, plots=True, iterations=2)
    Trainer(cfg, tmp_path / "run").fit()
    for name in ("config.yaml", "log.jsonl", "checkpoints/last.pt", "eval/cases.csv", "plots/loss.png",
                 "plots/case.png"):
        assert (tmp_path / "run" / name).is_file(), name


def _pint_method(tiny_h5, **options):
    cfg = tiny_config(tiny_h5, "pint", method_options={"passes": 2, **options})
    torch.manual_seed(0)
    method = PINT(cfg)
    method.build()
    return method


def _batch():
    g = torch.Generator().manual_seed(1)
    label = (torch.rand(2, *CROP, generator=g) < 0.2).long()
    image = torch.randn(2, 1, *CROP, generator=g) + 2 * label[:, None].float()
    return Batch(image=image, label=label, cases=["a", "b"], positions=[4, 5], seed=0)


def test_pint_step_is_eq_2_3_with_the_teacher_mean_and_entropy(tiny_h5):
    method = _pint_method(tiny_h5, teacher_dropout=False)
    batch = _batch()
    method.student.train()
    torch.manual_seed(5)
    out = method.train_step(batch, 0)
    # by hand: M = 2 perturbed teacher passes (train-mode batch norm), with the same keyed noise
    teacher = method.ema.teacher.train()
    probs = []
    with torch.no_grad():
        for m in range(2):
            x = batch.image + (0.1 * batch.normal_like_image(m)).clamp(-0.2, 0.2)
            probs.append(teacher(x, dropout=False).softmax(1))
    p_hat = torch.stack(probs).mean(0)
    u = -(p_hat * p_hat.clamp_min(1e-30).log()).sum(1)
    torch.manual_seed(5)
    logits = method.student(batch.image)
    s = logits.softmax(1)
    ce = F.cross_entropy(logits, batch.label, reduction="none")
    mse = ((s - p_hat) ** 2).mean(1)
    alpha = torch.exp(-u)
    expected = (alpha * ce + (1 - alpha) * mse).mean()
    torch.testing.assert_close(out["loss"], expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out["uncertainty"], u.mean(), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(out["alpha"], alpha.mean(), rtol=1e-4, atol=1e-6)
    # the op it calls, on the same inputs
    torch.testing.assert_close(out["loss"], pint_pixel_loss(logits, batch.label, p_hat), rtol=1e-4, atol=1e-6)


def test_pint_phase_two_uses_the_image_loss_and_the_running_statistics_option(tiny_h5):
    method = _pint_method(tiny_h5, teacher_dropout=False, passes=1, noise_std=0.0, teacher_batchnorm="running")
    batch = _batch()
    t = method.config.iterations  # first phase-2 iteration
    torch.manual_seed(2)
    out = method.train_step(batch, t)
    torch.manual_seed(2)
    logits = method.student(batch.image)
    with torch.no_grad():
        prob = method.ema.teacher.eval()(batch.image, dropout=False).softmax(1)
    torch.testing.assert_close(out["loss"], pint_image_loss(logits, batch.label, prob), rtol=1e-4, atol=1e-6)
    assert out["phase"].item() == 2.0
    assert not method.ema.teacher.training  # left in eval mode after its passes


def test_streamed_uncertainty_of_identical_passes_is_one_pass(tiny_h5):
    method = _pint_method(tiny_h5, teacher_dropout=False)
    x = _batch().image
    zeros = lambda m: torch.zeros_like(x)  # noqa: E731
    p, u = perturbed_teacher_uncertainty(method.ema.teacher, x, zeros, passes=3, noise_std=0.1, noise_clip=0.2,
                                         dropout=False)
    with torch.no_grad():
        ref = method.ema.teacher(x, dropout=False).softmax(1)
    torch.testing.assert_close(p, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(u, -(ref * ref.log()).sum(1), rtol=1e-4, atol=1e-6)


def test_ema_teacher_follows_the_student(tiny_h5):
    method = _pint_method(tiny_h5)
    with torch.no_grad():
        for p in method.student.parameters():
            p.add_(1.0)
    method.after_step(0)  # decay min(1 - 1/1, 0.99) = 0: the teacher becomes the student
    for (n, a), (_, b) in zip(method.student.named_parameters(), method.ema.teacher.named_parameters()):
        assert torch.equal(a, b), n
    assert method.state_dict()["ema"]["step"] == 0


def test_ce_warmup_is_plain_cross_entropy(tiny_h5):
    method = _pint_method(tiny_h5, ce_warmup_iterations=3)
    batch = _batch()
    torch.manual_seed(3)
    out = method.train_step(batch, 2)
    torch.manual_seed(3)
    torch.testing.assert_close(out["loss"], F.cross_entropy(method.student(batch.image), batch.label))
    assert method.phase_at(3) == "pixel"


def test_vnet_step_is_cross_entropy(tiny_h5):
    cfg = tiny_config(tiny_h5, "vnet")
    method = get_method("vnet")(cfg)
    torch.manual_seed(0)
    method.build()
    batch = _batch()
    torch.manual_seed(1)
    loss = method.train_step(batch, 0)["loss"]
    torch.manual_seed(1)
    torch.testing.assert_close(loss, F.cross_entropy(method.model(batch.image), batch.label))
