"""Training loops of the papers, on one shared machinery.

**Using it**::

    from pyseg_noise.training import Trainer, load_config
    cfg = load_config("configs/pint.yaml", ["data.root=data/LA", "data.noisy_labels=noisy"])
    result = Trainer(cfg, "runs/pint").fit()          # or: pyseg-noise train pint --data ... --out ...
    print(result.summary["dice"], result.summary["asd"])

**Methods** are registered by name (:func:`method_names`): ``vnet`` (plain
cross-entropy), ``pnt``, ``int``, ``pint`` (PINT's pixel-wise, image-wise and
two-phase noise-tolerant learning), and the others' modules as they are added.

**The method contract.** A method is a subclass of :class:`Method`, decorated
with :func:`register_method`, in its own module listed in
``registry.BUILTIN_METHOD_MODULES``. It implements:

* ``name`` (class attribute, the registry key), ``Options`` (a dataclass of its
  own hyper-parameters whose defaults are the paper's values; it appears in
  YAML as ``method_options:``) and ``description`` (one line for ``--help``);
* ``build()`` — create the networks from ``self.config`` (seeded by the Trainer;
  built on CPU, moved to ``self.device`` by the Trainer);
* ``networks() -> {name: nn.Module}`` — the trainable networks: the Trainer
  optimizes their parameters (or ``param_groups()``), averages their gradients
  across processes, converts their batch norms for multi-process runs, saves
  their ``state_dict`` in checkpoints and switches their train/eval mode;
* ``train_step(batch, iteration) -> {"loss": Tensor, **scalars}`` — the loss of
  one :class:`Batch` (``image``, ``label``, ``cases``, ``positions`` and
  ``normal_like_image(stream)`` for input noise that does not depend on the
  number of processes). Do not call ``backward`` or step an optimizer: the
  Trainer does both, under mixed precision where enabled. Every returned entry
  is logged (averaged over processes);
* ``predict(x) -> probabilities`` (Tensor[B, C, *S]) — used by validation,
  ``pyseg-noise predict`` and ``reproduce``;
* ``state_dict()`` / ``load_state_dict(state)`` — only what is *not* in
  ``networks()`` (an EMA teacher, a sample queue); tensors and plain values, as
  checkpoints are read with ``weights_only=True``.

Optional hooks: ``after_step(iteration)`` (e.g. ``EMATeacher.update``),
``modules()`` (every module to move to the device, teachers included),
``total_iterations()`` and ``lr_at(iteration)`` (multi-phase schedules),
``param_groups()`` (a group's ``"lr_scale"`` multiplies the scheduled rate),
``uncertainty(x)`` (the uncertainty panel of ``plots/case.png``) and the class
method ``validate_config(config)`` (raise :class:`ConfigError`).

The :class:`Trainer` owns everything else: data (a seeded, sharded stream of
crops), device choice, mixed precision, optimizer and schedule, gradient
averaging over ``torch.distributed`` processes, atomic checkpoints with every
random state, ``--resume``, Ctrl-C, non-finite-loss stops, the run folder's
log, TensorBoard and plots, and the final validation on clean labels.

**Elsewhere in the package:** TSMAN's distillation (:mod:`.distill`, Eq. 8-10) and
self-training pipeline (:mod:`.self_training`); the exceptions (:mod:`.errors`).
"""
from .checkpoint import atomic_save, checkpoint_path, load_checkpoint
from .collapse import CollapseVerdict, detect_collapse
from .config import DataConfig, ModelConfig, NoOptions, OptimConfig, TrainConfig, load_config, save_config
from .ema import EMATeacher
from .errors import CheckpointError, CheckpointWriteError, ConfigError, RunOutputWriteError
from .method import Batch, Method
from .registry import get_method, method_names, register_method
from .trainer import (NonFiniteLossError, Trainer, TrainingDataError, TrainingInterrupted, TrainResult,
                      load_trained)

__all__ = [
    "EMATeacher",
    "Trainer",
    "TrainResult",
    "TrainConfig",
    "DataConfig",
    "ModelConfig",
    "OptimConfig",
    "NoOptions",
    "ConfigError",
    "load_config",
    "save_config",
    "Method",
    "Batch",
    "register_method",
    "get_method",
    "method_names",
    "NonFiniteLossError",
    "TrainingInterrupted",
    "TrainingDataError",
    "CheckpointError",
    "CheckpointWriteError",
    "RunOutputWriteError",
    "load_trained",
    "load_checkpoint",
    "atomic_save",
    "checkpoint_path",
    "detect_collapse",
    "CollapseVerdict",
]
