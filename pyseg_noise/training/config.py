"""The training configuration: dataclasses whose defaults are the papers' values, YAML in and out.

A run is described by one :class:`TrainConfig`. Its sections hold what every
method shares (:class:`DataConfig`, :class:`ModelConfig`, :class:`OptimConfig`);
``method_options`` holds the chosen method's own hyper-parameters, an instance
of that method's ``Options`` dataclass (e.g. :class:`pyseg_noise.training.pint.PINTOptions`).

Defaults are PINT §3.1's: batch 4, 112 x 112 x 80 crops, SGD lr 0.01 with
momentum 0.9 and weight decay 1e-4, divided by 10 every 2500 iterations, 6000
iterations, V-Net with 16 filters and two dropout layers of rate 0.5.

YAML files hold the same nesting as the dataclasses; missing keys keep their
default, unknown keys are an error that names them::

    method: pint
    iterations: 6000
    data: {root: data/LA, noisy_labels: noisy}
    optim: {lr: 0.01}
    method_options: {passes: 4, ema_decay: 0.99}

Every validation failure raises :class:`ConfigError` (a ``ValueError``) whose
message names the key and what was expected; the command line turns it into
one line on stderr and exit code 2.
"""
from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import yaml

from .errors import ConfigError
from .registry import get_method
from .run_log import writing

__all__ = [
    "ConfigError",
    "DataConfig",
    "ModelConfig",
    "OptimConfig",
    "TrainConfig",
    "NoOptions",
    "load_config",
    "save_config",
    "parse_overrides",
    "config_from_dict",
    "dataclass_from_dict",
]


@dataclass
class NoOptions:
    """Options of a method without hyper-parameters of its own."""


@dataclass
class DataConfig:
    """Where the training and validation volumes come from.

    Attributes:
        root: dataset folder, LA ``.h5`` layout or nnU-Net NIfTI layout (see
            :func:`pyseg_noise.data.open_dataset`). Required to train.
        layout: ``"h5"``, ``"nifti"`` or None (detected).
        noisy_labels: train on the noisy labels written by ``pyseg-noise corrupt``
            with this suffix (``"noisy"`` -> h5 dataset ``label_noisy`` /
            folder ``labelsTr_noisy``); None trains on the clean labels.
        label_overrides: a folder of per-case label files (``<case>.h5`` with a
            ``label`` dataset, or ``<case>.nii.gz``) replacing the training labels
            of the cases it holds (how ``reproduce`` trains on noisy labels
            without writing into the user's dataset).
        train_split, val_split: split names (``train.list``/``imagesTr``, ...).
        crop_size: random training crop (x, y, z). PINT: 112 x 112 x 80.
        in_channels: image channels (1 for LA MRI).
        num_classes: classes including background (2 for LA).
        augment: random in-plane rot90/flip of training crops.
        cache: keep decoded volumes in memory (small datasets only).
        num_workers: DataLoader worker processes (0 = load in the main process).
        val_cases: evaluate on at most this many validation cases (None = all).
    """

    root: Optional[str] = None
    layout: Optional[str] = None
    noisy_labels: Optional[str] = None
    label_overrides: Optional[str] = None
    train_split: str = "train"
    val_split: str = "test"
    crop_size: Tuple[int, int, int] = (112, 112, 80)
    in_channels: int = 1
    num_classes: int = 2
    augment: bool = True
    cache: bool = False
    num_workers: int = 0
    val_cases: Optional[int] = None


@dataclass
class ModelConfig:
    """The backbone network (V-Net for PINT and the plain baseline).

    Attributes:
        n_filters: channels of the first stage (16 in the LA code bases PINT follows).
        dropout: build PINT's two dropout layers (§3.1).
        dropout_rate: their rate (0.5).
    """

    n_filters: int = 16
    dropout: bool = True
    dropout_rate: float = 0.5


@dataclass
class OptimConfig:
    """Optimizer and learning-rate schedule (PINT §3.1).

    Attributes:
        name: ``"sgd"`` or ``"adam"``.
        lr: initial learning rate (0.01).
        momentum: SGD momentum (0.9).
        weight_decay: L2 weight decay (1e-4).
        lr_policy: ``"step"`` (``lr * lr_gamma ** (t // lr_step)``, PINT), ``"poly"``
            (``lr * (1 - t / T) ** poly_power``) or ``"constant"``.
        lr_step: iterations between divisions (2500).
        lr_gamma: the factor (0.1, "divided by 10").
        poly_power: exponent of the poly policy.
    """

    name: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    lr_policy: str = "step"
    lr_step: int = 2500
    lr_gamma: float = 0.1
    poly_power: float = 0.9


@dataclass
class TrainConfig:
    """One training run.

    Attributes:
        method: a registered method name (``pyseg-noise train --help`` lists them).
        iterations: optimizer steps of the main phase (6000; PINT's phase 1). A
            method may add phases of its own (PINT's image-level phase).
        batch_size: global batch, split evenly over the processes of a
            distributed run (4).
        seed: seeds model initialisation, the data stream and the input noise.
        deterministic: ``torch.use_deterministic_algorithms(True)`` and no cuDNN
            autotuning, so a run (and a resumed run) repeats bit for bit.
        device: ``"auto"`` (CUDA if present, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``.
        amp: mixed precision of the student's steps: ``"auto"`` (bf16 on a GPU that has
            it, else fp16 on GPU, off on CPU), ``"off"``, ``"bf16"`` (also on the CPU, opt-in),
            ``"fp16"`` (GPU).
        teacher_amp: precision of no-grad teacher passes (PINT's M passes): ``"auto"`` (bf16
            on a CPU with AVX512-BF16/AMX or a GPU with bf16, fp16 on other GPUs, else fp32),
            ``"off"``, ``"bf16"``, ``"fp16"``. See :mod:`pyseg_noise.training.speed`.
        channels_last: networks and batches in ``channels_last_3d``: ``"auto"`` (on for
            CPU, and for GPU under mixed precision), ``"on"``, ``"off"``.
        compile: ``"off"`` or ``"on"`` (``torch.compile`` every network in place).
        cpu_allocator: ``"auto"`` / ``"cache"`` (CPU training under glibc keeps freed memory in
            the heap: no page faults for the next step's tensors) or ``"system"``.
        sync_batchnorm: in a distributed run, compute batch-norm statistics over
            the global batch (so N processes x batch b == 1 process x batch N*b).
        checkpoint_every: iterations between checkpoints (and one at the end).
        log_every: iterations between log lines.
        val_every: iterations between validations (0 = only at the end).
        val_stride: sliding-window stride for validation (LA: 18, 18, 4).
        val_batch_size: windows per forward pass in validation.
        progress: show a progress bar.
        plots: write PNG plots into the run folder.
        data, model, optim: see :class:`DataConfig`, :class:`ModelConfig`, :class:`OptimConfig`.
        method_options: the method's own options (a dict here is converted to the
            method's ``Options`` dataclass by :func:`config_from_dict`).
    """

    method: str = "vnet"
    iterations: int = 6000
    batch_size: int = 4
    seed: int = 0
    deterministic: bool = False
    device: str = "auto"
    amp: str = "auto"
    teacher_amp: str = "auto"
    channels_last: str = "auto"
    compile: str = "off"
    cpu_allocator: str = "auto"
    sync_batchnorm: bool = True
    checkpoint_every: int = 500
    log_every: int = 20
    val_every: int = 0
    val_stride: Tuple[int, int, int] = (18, 18, 4)
    val_batch_size: int = 1
    progress: bool = True
    plots: bool = True
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    method_options: Any = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        """Plain nested dict (tuples as lists), as written to ``config.yaml``."""
        return _plain(dataclasses.asdict(self))


# ----------------------------------------------------------------------------- conversion and checks
def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _coerce(value, tp, key: str):
    """``value`` checked against the annotation ``tp`` (and converted where lossless)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin is Union:
        if value is None and type(None) in args:
            return None
        errors = []
        for arm in args:
            if arm is type(None):
                continue
            try:
                return _coerce(value, arm, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{key}: expected {_type_name(tp)}, got {value!r}")
    if origin in (tuple, list, Tuple, List):
        if isinstance(value, str) or not isinstance(value, Sequence):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        if origin in (tuple, Tuple) and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{key}: expected {len(args)} values, got {len(value)} ({list(value)!r})")
            return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        inner = args[0] if args else Any
        items = [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin in (tuple, Tuple) else items
    if origin in (dict, Dict):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if not math.isfinite(float(value)):
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if isinstance(value, bool):  # YAML 1.1 reads on/off (and yes/no) as booleans
            return "on" if value else "off"
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        return dataclass_from_dict(tp, value, key)
    return value


def dataclass_from_dict(cls, values: Optional[Mapping[str, Any]], prefix: str = ""):
    """An instance of dataclass ``cls`` from a (partial) mapping, every value type-checked.

    Raises:
        ConfigError: unknown key (the known ones are listed) or a value of the wrong type.
    """
    if values is None:
        values = {}
    if dataclasses.is_dataclass(values) and not isinstance(values, type):
        if isinstance(values, cls):
            return values
        values = dataclasses.asdict(values)
    if not isinstance(values, Mapping):
        raise ConfigError(f"{prefix or cls.__name__}: expected a mapping of options, got {values!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in values if k not in names]
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(
            f"unknown config key {where}{unknown[0]!s}; known keys{' of ' + prefix if prefix else ''}: {', '.join(names) or '(none)'}"
        )
    kwargs = {}
    for name in names:
        if name in values:
            kwargs[name] = _coerce(values[name], hints[name], f"{prefix}.{name}" if prefix else name)
    return cls(**kwargs)


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


def validate_common(config: TrainConfig) -> None:
    """Range checks of the shared fields (the method checks its own options).

    Raises:
        ConfigError: naming the first bad key.
    """
    _require(config.iterations >= 1, f"iterations must be a positive integer, got {config.iterations}")
    _require(config.batch_size >= 1, f"batch_size must be a positive integer, got {config.batch_size}")
    _require(config.seed >= 0, f"seed must be a non-negative integer, got {config.seed}")
    _require(config.checkpoint_every >= 1, f"checkpoint_every must be >= 1, got {config.checkpoint_every}")
    _require(config.log_every >= 1, f"log_every must be >= 1, got {config.log_every}")
    _require(config.val_every >= 0, f"val_every must be >= 0 (0 = only at the end), got {config.val_every}")
    _require(config.val_batch_size >= 1, f"val_batch_size must be >= 1, got {config.val_batch_size}")
    _require(all(s >= 1 for s in config.val_stride), f"val_stride must be positive, got {list(config.val_stride)}")
    _require(config.amp in ("auto", "off", "bf16", "fp16"), f"amp must be auto, off, bf16 or fp16, got {config.amp!r}")
    _require(config.teacher_amp in ("auto", "off", "bf16", "fp16"),
             f"teacher_amp must be auto, off, bf16 or fp16, got {config.teacher_amp!r}")
    _require(config.channels_last in ("auto", "on", "off"),
             f"channels_last must be auto, on or off, got {config.channels_last!r}")
    _require(config.compile in ("off", "on"), f"compile must be off or on, got {config.compile!r}")
    _require(config.cpu_allocator in ("auto", "cache", "system"),
             f"cpu_allocator must be auto, cache or system, got {config.cpu_allocator!r}")
    dev = config.device
    _require(
        dev in ("auto", "cpu", "cuda") or dev.startswith("cuda:"),
        f"device must be auto, cpu, cuda or cuda:N, got {dev!r}",
    )
    d = config.data
    _require(d.layout in (None, "h5", "nifti"), f"data.layout must be h5, nifti or null, got {d.layout!r}")
    _require(all(s >= 1 for s in d.crop_size), f"data.crop_size must be positive, got {list(d.crop_size)}")
    _require(d.in_channels >= 1, f"data.in_channels must be >= 1, got {d.in_channels}")
    _require(d.num_classes >= 2, f"data.num_classes must be >= 2 (background + one class), got {d.num_classes}")
    _require(d.num_workers >= 0, f"data.num_workers must be >= 0, got {d.num_workers}")
    _require(d.val_cases is None or d.val_cases >= 1, f"data.val_cases must be null or >= 1, got {d.val_cases}")
    m = config.model
    _require(m.n_filters >= 1, f"model.n_filters must be >= 1, got {m.n_filters}")
    _require(0.0 <= m.dropout_rate < 1.0, f"model.dropout_rate must be in [0, 1), got {m.dropout_rate}")
    o = config.optim
    _require(o.name in ("sgd", "adam"), f"optim.name must be sgd or adam, got {o.name!r}")
    _require(o.lr > 0, f"optim.lr must be > 0, got {o.lr}")
    _require(o.momentum >= 0, f"optim.momentum must be >= 0, got {o.momentum}")
    _require(o.weight_decay >= 0, f"optim.weight_decay must be >= 0, got {o.weight_decay}")
    _require(o.lr_policy in ("step", "poly", "constant"), f"optim.lr_policy must be step, poly or constant, got {o.lr_policy!r}")
    _require(o.lr_step >= 1, f"optim.lr_step must be >= 1, got {o.lr_step}")
    _require(0 < o.lr_gamma <= 1, f"optim.lr_gamma must be in (0, 1], got {o.lr_gamma}")


def config_from_dict(values: Optional[Mapping[str, Any]] = None) -> TrainConfig:
    """A validated :class:`TrainConfig` from a nested mapping (e.g. parsed YAML).

    ``method_options`` becomes the method's ``Options`` dataclass and is checked
    by the method class (:meth:`pyseg_noise.training.Method.validate_config`).

    Raises:
        ConfigError: unknown method or key, wrong type, value out of range.
    """
    values = dict(values or {})
    options = values.pop("method_options", None)
    config = dataclass_from_dict(TrainConfig, values)
    method_cls = get_method(config.method)
    config.method_options = dataclass_from_dict(method_cls.Options, options, "method_options")
    validate_common(config)
    method_cls.validate_config(config)
    return config


def _set_dotted(target: Dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = target
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise ConfigError(f"cannot set {dotted}: {k} is not a section")
    node[keys[-1]] = value


def parse_overrides(overrides: Sequence[str]) -> Dict[str, Any]:
    """``["optim.lr=0.05", "data.crop_size=[64,64,48]"]`` -> nested dict (values parsed as YAML).

    Raises:
        ConfigError: an item without ``=``.
    """
    out: Dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects KEY=VALUE (e.g. optim.lr=0.05), got {item!r}")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {key}: cannot parse {raw!r}: {exc}") from exc
        _set_dotted(out, key.strip(), value)
    return out


def merge_dicts(base: Mapping[str, Any], update: Mapping[str, Any]) -> Dict[str, Any]:
    """Recursive merge: ``update``'s leaves win."""
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = merge_dicts(out[k], v)
        else:
            out[k] = v
    return out


def read_yaml(path: Union[str, Path]) -> Dict[str, Any]:
    """A YAML mapping from ``path``.

    Raises:
        FileNotFoundError: missing file.
        ConfigError: unparsable, or not a mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        values = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys, got {type(values).__name__}")
    return values


def load_config(
    path: Optional[Union[str, Path]] = None,
    overrides: Union[Sequence[str], Mapping[str, Any], None] = None,
    **top_level: Any,
) -> TrainConfig:
    """Defaults <- YAML file <- ``overrides`` (``"key.sub=value"`` strings or a nested dict) <- ``top_level``.

    Example:
        >>> cfg = load_config(None, ["optim.lr=0.05"], method="pint", iterations=100)
        >>> cfg.optim.lr, cfg.method_options.passes
        (0.05, 4)
    """
    values: Dict[str, Any] = read_yaml(path) if path is not None else {}
    if overrides:
        update = parse_overrides(overrides) if not isinstance(overrides, Mapping) else dict(overrides)
        values = merge_dicts(values, update)
    values = merge_dicts(values, {k: v for k, v in top_level.items() if v is not None})
    return config_from_dict(values)


def save_config(config: TrainConfig, path: Union[str, Path]) -> None:
    """Write ``config`` as YAML (every field, defaults included).

    Raises:
        RunOutputWriteError: the operating system refused the write (e.g. a full disk); it
            names the file, and no torn file is left.
    """
    text = yaml.safe_dump(config.to_dict(), sort_keys=False)
    with writing(path) as path, open(path, "w") as f:
        f.write(text)
