"""The Trainer: data, devices, optimizer, schedule, precision, processes, checkpoints, logs, plots.

A method (:class:`~pyseg_noise.training.Method`) computes losses; the Trainer
does the rest, the same way for every method::

    for t in iterations:                       # start at the checkpoint's iteration on --resume
        batch = next slice of the data stream  # pure function of (seed, t, rank)
        lr = method.lr_at(t)
        loss = method.train_step(batch, t)     # under autocast on GPU
        stop if loss is not finite             # the message names the iteration
        backward; average gradients over processes; optimizer step
        method.after_step(t)                   # e.g. EMA teacher update
        log; checkpoint every N; on Ctrl-C: checkpoint, then stop
    validate on the clean labels; plots

Run folder::

    config.yaml               every setting, defaults included
    log.jsonl                 training scalars (and validation lines)
    checkpoints/last.pt       the latest checkpoint (atomic writes)
    eval/cases.csv, eval/summary.json   final validation (clean labels)
    plots/loss.png, plots/case.png      loss curves; PINT Fig. 2-style case panel
    tensorboard/              when tensorboard is installed
"""
from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import random
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import numpy as np
import torch

from . import distributed as ddp
from .batch_stream import StreamDataset, stream_loader
from .checkpoint import (CHECKPOINT_FORMAT, CheckpointError, CheckpointWriteError, atomic_save, capture_rng_state,
                         checkpoint_path, load_checkpoint, restore_rng_state)
from .config import ConfigError, TrainConfig, config_from_dict, save_config
from .keyed_random import PROCESS_STREAM, sample_key
from .method import Batch, Method
from .registry import get_method
from .run_data import case_for_plot, train_dataset, validation_dataset
from .run_log import RunLog, RunOutputWriteError, read_log, writing
from .step_parts import part
from .sync_batchnorm import convert_batchnorm, local_statistics
from .validation import METRIC_COLUMNS, evaluate_method, summarize

__all__ = ["Trainer", "TrainResult", "run_step", "NonFiniteLossError", "TrainingInterrupted", "TrainingDataError",
           "resolve_device", "RESUMABLE_CHANGES", "build_method", "load_trained"]

PathLike = Union[str, Path]

#: config keys that may differ between a run and its resumption (they do not change the result)
RESUMABLE_CHANGES = ("progress", "plots", "checkpoint_every", "log_every", "val_every", "val_batch_size", "cpu_allocator",
                     "data.num_workers", "data.cache", "data.root", "data.label_overrides", "device")


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the message names the iteration."""


class TrainingDataError(ValueError):
    """A data file could not be read during training or validation; the message names it."""


def _data_error_text(exc: BaseException) -> str:
    """The message of a data-reading error, also when a DataLoader worker re-raised it.

    A worker's exception arrives as ``"Caught ValueError in DataLoader worker process 0.\nOriginal
    Traceback ...\nValueError: <message>"``: the message is the last line, after the type.
    """
    text = str(exc)
    if text.startswith("Caught ") and "Original Traceback" in text:
        last = [ln for ln in text.splitlines() if ln.strip()][-1].strip()
        prefix = f"{type(exc).__name__}: "
        return last[len(prefix):] if last.startswith(prefix) else last
    return " ".join(text.split("\n"))


class _NamedDataErrors:
    """A dataset view whose read errors (ValueError, OSError: a corrupt or vanished file) become
    :class:`TrainingDataError` with ``what`` in front."""

    def __init__(self, dataset, what: str):
        self._dataset = dataset
        self._what = what

    def __len__(self):
        return len(self._dataset)

    def __getitem__(self, index):
        try:
            return self._dataset[index]
        except (ValueError, OSError) as exc:
            raise TrainingDataError(f"{self._what}: {_data_error_text(exc)}") from exc


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) stopped the run after saving a checkpoint."""

    def __init__(self, iteration: int, checkpoint: Path):
        super().__init__(f"interrupted after iteration {iteration}; checkpoint saved to {checkpoint}")
        self.iteration = iteration
        self.checkpoint = checkpoint


@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` returns."""

    run_dir: Path
    iteration: int
    total_iterations: int
    checkpoint: Path
    summary: Optional[Dict[str, float]] = None
    cases: List[Dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``"auto"`` -> ``cuda:<local_rank>`` if CUDA is available, else CPU.

    Raises:
        ConfigError: CUDA asked for but not available.
    """
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r} requested but CUDA is not available (use --device cpu or auto)")
        return torch.device(name if ":" in name else f"cuda:{local_rank}")
    return torch.device(name)


def _flatten(d: Dict[str, Any], prefix: str = "") -> Dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and k != "method_options":
            out.update(_flatten(v, key + "."))
        elif isinstance(v, dict):
            out.update({f"{key}.{kk}": vv for kk, vv in v.items()} or {key: {}})
        else:
            out[key] = v
    return out


def config_differences(old: Dict[str, Any], new: Dict[str, Any]) -> List[str]:
    """Keys whose values differ between two config dicts, except :data:`RESUMABLE_CHANGES`."""
    a, b = _flatten(old), _flatten(new)
    keys = sorted(set(a) | set(b))
    return [k for k in keys if k not in RESUMABLE_CHANGES and a.get(k) != b.get(k)]


@contextlib.contextmanager
def _determinism(enabled: bool, device: torch.device):
    """``torch.use_deterministic_algorithms`` for the run, restored afterwards."""
    previous = torch.are_deterministic_algorithms_enabled()
    previous_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    previous_benchmark = torch.backends.cudnn.benchmark
    previous_cudnn = torch.backends.cudnn.deterministic
    if enabled and device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    # warn_only: on GPUs a few kernels (e.g. CUDA's nll_loss2d) have no deterministic variant
    torch.use_deterministic_algorithms(enabled, warn_only=device.type == "cuda")
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = (not enabled) and device.type == "cuda"
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous, warn_only=previous_warn)
        torch.backends.cudnn.deterministic = previous_cudnn
        torch.backends.cudnn.benchmark = previous_benchmark


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def build_method(config: TrainConfig, device: torch.device) -> Method:
    """Instantiate and build the configured method on ``device`` (weights seeded by ``config.seed``)."""
    cls = get_method(config.method)
    method = cls(config, device)
    _seed_everything(config.seed)
    method.build()
    for module in method.modules():
        module.to(device)
    method.speed.apply(method.modules())  # channels_last_3d / torch.compile, as the config resolves
    return method


def load_trained(path: PathLike, device: Union[str, torch.device] = "auto") -> Method:
    """A trained method from a run folder or checkpoint file, in eval mode, for prediction.

    Raises:
        FileNotFoundError: no checkpoint.
        CheckpointError (a ValueError): not a pyseg_noise checkpoint, corrupt, or its
            contents do not fit the method it names (the message names the file).
    """
    path = Path(path)
    file = checkpoint_path(path) if path.is_dir() else path
    state = load_checkpoint(file)
    try:
        config = config_from_dict(state["config"])
    except ConfigError as exc:
        raise CheckpointError(f"checkpoint {file} holds an invalid config: {exc}") from exc
    dev = resolve_device(device if isinstance(device, str) else str(device))
    method = build_method(config, dev)
    _load_states(file, state, method)
    method.eval()
    return method


def _load_states(file: Path, state: Dict[str, Any], method: Method, optimizer=None, scaler=None) -> None:
    """Load a checkpoint's networks, method state (and optimizer, grad scaler) into a built method.

    Raises:
        CheckpointError: an entry is missing or does not fit (wrong shapes, other networks,
            other parameter groups); the message names the file and the entry.
    """
    networks = state["networks"]
    expected = set(method.networks())
    if set(networks) != expected:
        raise CheckpointError(f"checkpoint {file} holds the networks {sorted(networks)} but method "
                              f"{method.config.method!r} has {sorted(expected)}")
    steps = [(f"network {name!r}", lambda n=name, net=net: net.load_state_dict(networks[n]))
             for name, net in method.networks().items()]
    steps.append(("method_state", lambda: method.load_state_dict(state.get("method_state") or {})))
    if optimizer is not None:
        steps.append(("optimizer", lambda: optimizer.load_state_dict(state["optimizer"])))
    if scaler is not None and state.get("scaler"):
        steps.append(("scaler", lambda: scaler.load_state_dict(state["scaler"])))
    for what, load in steps:
        try:
            load()
        except (RuntimeError, KeyError, ValueError, TypeError, IndexError, AttributeError) as exc:
            reason = " ".join(str(exc).split())
            raise CheckpointError(f"checkpoint {file}: its {what} does not fit this run: "
                                  f"{type(exc).__name__}: {reason[:400]}") from exc


def _build_optimizer(config: TrainConfig, groups: List[dict]) -> torch.optim.Optimizer:
    o = config.optim
    groups = [dict(g) for g in groups]
    for g in groups:
        g.setdefault("lr_scale", 1.0)
        g.setdefault("lr", o.lr * g["lr_scale"])
    if o.name == "sgd":
        return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    return torch.optim.Adam(groups, lr=o.lr, weight_decay=o.weight_decay)


class _StopSignals:
    """Turns SIGINT/SIGTERM into a flag the loop checks after each iteration; a second Ctrl-C aborts."""

    def __init__(self, log: RunLog):
        self.flag = False
        self._log = log
        self._previous = {}

    def _handler(self, signum, frame):
        if self.flag:  # second signal: stop now, without a checkpoint
            raise KeyboardInterrupt
        self.flag = True
        self._log.write(f"received {signal.Signals(signum).name}: saving a checkpoint after this iteration "
                        "(press Ctrl-C again to abort without saving)")

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False


def run_step(method: Method, optimizer: torch.optim.Optimizer, scaler, amp_dtype: Optional[torch.dtype],
             params: List[torch.Tensor], batch: Batch, t: int, watch: "_LossWatch", total: int) -> Dict[str, Any]:
    """One optimizer step of ``method`` at 0-based iteration ``t``: its loss under autocast,
    backward, gradient averaging over processes, the optimizer, :meth:`Method.after_step`.

    Returns the dict ``train_step`` returned (device tensors; nothing is read on the host,
    except the loss of one CPU process, see :class:`_LossWatch`). The training benchmark
    times this same function.

    Raises:
        NonFiniteLossError: the loss is not finite (where ``watch`` reads every step).
    """
    method.train()
    optimizer.zero_grad(set_to_none=True)
    with part("train_step"), torch.autocast(method.device.type, dtype=amp_dtype or torch.float32,
                                             enabled=amp_dtype is not None):
        out = method.train_step(batch, t)
    if not isinstance(out, dict) or "loss" not in out:
        raise TypeError(f"{type(method).__name__}.train_step must return a dict with a 'loss' tensor")
    loss = out["loss"]
    if watch.observe(loss, t + 1):
        raise watch.error(t + 1, total, before_update=True)
    with part("backward"):
        if scaler is not None:
            scaler.scale(loss).backward()
        else:
            loss.backward()
    with part("optimizer"):
        ddp.average_gradients(params)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
    with part("after_step"):
        method.after_step(t)
    return out


class _LossWatch:
    """Finds a non-finite loss without a host synchronisation every step.

    One process on the CPU reads the loss every step (a CPU tensor: nothing to wait for)
    and stops before that update. On a GPU, or with several processes, a step only records
    on the device the first iteration whose loss was not finite; :meth:`sync` reads it, with
    the stop flag, in one collective every ``log_every`` iterations and before every
    checkpoint, so the run stops within ``log_every`` iterations and no checkpoint holds
    weights that a non-finite loss has updated.
    """

    def __init__(self, device: torch.device, distributed: bool, method: str, run_dir: Optional[Path]):
        self.eager = device.type == "cpu" and not distributed
        self.distributed = distributed
        self.device = device
        self.method = method
        self.run_dir = run_dir
        self.first_bad = torch.full((), -1, dtype=torch.int64, device=device)
        self.value = float("nan")

    def observe(self, loss: torch.Tensor, iteration: int) -> bool:
        """Record 1-based ``iteration``'s loss; True if it is not finite and this watch reads every step."""
        loss = loss.detach()
        if self.eager:
            value = float(loss)
            if not math.isfinite(value):
                self.value = value
                return True
            return False
        bad = ~torch.isfinite(loss) & (self.first_bad < 0)
        self.first_bad = torch.where(bad, iteration, self.first_bad)
        return False

    def sync(self, stop_flag: bool, it: int, total: int) -> bool:
        """Raise :class:`NonFiniteLossError` if a loss so far was not finite (on any process);
        else whether any process was asked to stop. A collective in a distributed run."""
        if self.eager:
            return stop_flag
        flags = torch.stack([self.first_bad, torch.tensor(int(stop_flag), dtype=torch.int64, device=self.device)])
        first_bad, stop = ddp.all_reduce_max(flags).tolist()
        if first_bad >= 0:
            raise self.error(int(first_bad), total, before_update=False, found_after=it)
        return bool(stop)

    def error(self, iteration: int, total: int, *, before_update: bool, found_after: int = 0) -> "NonFiniteLossError":
        last = read_checkpoint_iteration(self.run_dir) if self.run_dir is not None else None
        value = f" ({self.value})" if before_update else ""
        where = ("the run stopped before that update" if before_update else
                 f"found after iteration {found_after}; no checkpoint was written after it")
        return NonFiniteLossError(
            f"non-finite loss{value} at iteration {iteration} of {total} (method {self.method}); {where}"
            + (f"; the last checkpoint holds iteration {last}" if last is not None else "")
            + ". Lower optim.lr or check the data.")


class Trainer:
    """Trains one configured method into a run folder.

    Args:
        config: a validated :class:`TrainConfig` (see :func:`pyseg_noise.training.load_config`).
        run_dir: the run folder (created).
        resume: continue from ``run_dir/checkpoints/last.pt``; the result equals that of
            an uninterrupted run (bitwise with ``deterministic=True`` on the same machine).
        overwrite: replace an existing run in ``run_dir`` instead of refusing.
        validate: evaluate on the validation split (clean labels) at the end.

    Raises (from :meth:`fit`):
        ConfigError / FileNotFoundError: bad settings or data (before any training), e.g. an
            image without a label file.
        CheckpointError: ``resume=True`` and the checkpoint is corrupt, foreign, incomplete
            or does not fit the method (names the file); nothing of it was loaded into training.
        TrainingDataError: a data file could not be read during training or validation
            (names the file and the iteration).
        NonFiniteLossError: the loss became NaN/inf (names the iteration).
        CheckpointWriteError: a checkpoint could not be written (e.g. no space left); the
            previous checkpoint is unchanged, training stops; free space and resume.
        RunOutputWriteError: ``log.jsonl``, ``eval/`` or ``plots/`` could not be written
            (names the file and the last good checkpoint); training stops, the checkpoint
            is intact; free space and resume (after the last iteration, resuming writes the
            evaluation and plots again).
        TrainingInterrupted: SIGINT/SIGTERM; a checkpoint was saved first.

    Example:
        >>> cfg = load_config(None, method="pint", data={"root": "data/LA", "noisy_labels": "noisy"})  # doctest: +SKIP
        >>> result = Trainer(cfg, "runs/pint").fit()                                                  # doctest: +SKIP
        >>> result.summary["dice"]                                                                    # doctest: +SKIP
    """

    def __init__(self, config: TrainConfig, run_dir: PathLike, *, resume: bool = False, overwrite: bool = False,
                 validate: bool = True):
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
        self.config = config
        self.run_dir = Path(run_dir)
        self.resume = resume
        self.overwrite = overwrite
        self.validate = validate
        self.method: Optional[Method] = None
        self._watch: Optional[_LossWatch] = None

    # ------------------------------------------------------------------ setup
    def _prepare_run_dir(self, info: ddp.DistInfo) -> Optional[Dict[str, Any]]:
        ckpt_file = checkpoint_path(self.run_dir)
        marker = self.run_dir / "config.yaml"
        state = None
        if self.resume:
            if not ckpt_file.is_file():
                raise ConfigError(f"nothing to resume: no checkpoint at {ckpt_file}")
            state = load_checkpoint(ckpt_file)
            diffs = config_differences(state["config"], self.config.to_dict())
            if diffs:
                raise ConfigError(
                    f"--resume: the settings differ from the checkpoint's in {', '.join(diffs[:6])}; "
                    f"resume with the run's own {marker} (checkpoint {ckpt_file})"
                )
        elif marker.exists() or ckpt_file.exists():
            if not self.overwrite:
                raise ConfigError(f"run folder {self.run_dir} already holds a run; pass --resume to continue it "
                                  "or choose another --out")
        # every process has looked at the folder before rank 0 changes it
        ddp.barrier()
        if info.is_main:
            if not self.resume:
                for p in (ckpt_file, self.run_dir / "log.jsonl"):
                    if p.exists():
                        p.unlink()
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_config(self.config, marker)
        return state

    # ------------------------------------------------------------------ checkpoints
    def _checkpoint(self, info, device, it, total, optimizer, scaler, lr) -> Path:
        """Collective: every process contributes its RNG state; rank 0 writes.

        Raises:
            CheckpointWriteError: on every process when rank 0's write failed (e.g. a full
                disk); the previous checkpoint is unchanged and training stops.
        """
        if self._watch is not None:
            self._watch.sync(False, it, total)  # no checkpoint of weights a non-finite loss has updated
        rngs = ddp.all_gather_objects(capture_rng_state())
        path = checkpoint_path(self.run_dir)
        failure: Optional[CheckpointWriteError] = None
        if info.is_main:
            try:
                self._write_checkpoint(path, info, it, total, optimizer, scaler, lr, rngs)
            except CheckpointWriteError as exc:
                last = read_checkpoint_iteration(self.run_dir)
                kept = f"iteration {last}" if last is not None else "none"
                failure = CheckpointWriteError(
                    f"training stopped after iteration {it} of {total}: {exc}; last good checkpoint: {kept}",
                    exc.errno)
                failure.__cause__ = exc
        if ddp.any_rank(failure is not None, device):
            raise failure or CheckpointWriteError(f"training stopped after iteration {it}: rank 0 could not write "
                                                  f"the checkpoint {path} (see its error)")
        ddp.barrier()
        return path

    def _write_checkpoint(self, path, info, it, total, optimizer, scaler, lr, rngs) -> None:
        method = self.method
        atomic_save({
            "format": CHECKPOINT_FORMAT,
            "iteration": it,
            "total_iterations": total,
            "finished": it >= total,
            "method": self.config.method,
            "config": self.config.to_dict(),
            "networks": {n: net.state_dict() for n, net in method.networks().items()},
            "method_state": method.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "scheduler": {"iteration": it, "lr": lr},
            "sampler": {"seed": self.config.seed, "global_batch": self.config.batch_size, "next_iteration": it},
            "rng": rngs,
            "world_size": info.world_size,
            "torch_version": str(torch.__version__),
        }, path)

    # ------------------------------------------------------------------ the loop
    def fit(self) -> TrainResult:
        """Train (or resume) to the end, validate, plot. See the class docstring."""
        cfg = self.config
        started = time.perf_counter()
        wants_cuda = cfg.device.startswith("cuda") or (cfg.device == "auto" and torch.cuda.is_available())
        # The process group stays up for later runs of the same process (re-creating it in one
        # torchrun job is not reliable); it is destroyed at exit.
        info = ddp.init_distributed(wants_cuda)
        device = resolve_device(cfg.device, info.local_rank)
        if cfg.batch_size % info.world_size:
            raise ConfigError(f"batch_size {cfg.batch_size} must be divisible by the number of processes "
                              f"{info.world_size}")
        with _determinism(cfg.deterministic, device):
            return self._fit(info, device, started)

    def _fit(self, info: ddp.DistInfo, device: torch.device, started: float) -> TrainResult:
        cfg = self.config
        state = self._prepare_run_dir(info)
        stream = StreamDataset(train_dataset(cfg), cfg.seed)
        if self.validate and info.is_main:
            validation_dataset(cfg)  # a missing validation file fails now, not after training

        method = build_method(cfg, device)
        self.method = method
        if info.distributed and cfg.sync_batchnorm:
            # teachers too: one that normalises with batch statistics must see the global batch
            for net in method.modules():
                if convert_batchnorm(net, device) is not net:
                    raise ConfigError("sync_batchnorm: a network that is itself a batch-norm layer is not supported")
        ddp.broadcast_state(method.modules())
        optimizer = _build_optimizer(cfg, method.param_groups())
        amp_dtype = method.speed.student_dtype
        scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
        params = [p for g in optimizer.param_groups for p in g["params"]]
        total = method.total_iterations()

        start = 0
        # the per-process stream of the global generators (dropout masks): distinct per rank
        torch.manual_seed(sample_key(cfg.seed, info.rank, PROCESS_STREAM))
        if state is not None:
            ckpt_file = checkpoint_path(self.run_dir)
            _load_states(ckpt_file, state, method, optimizer, scaler)
            rngs = state.get("rng") or []
            if len(rngs) == info.world_size:
                try:
                    restore_rng_state(rngs[info.rank])
                except (RuntimeError, KeyError, ValueError, TypeError, IndexError, AttributeError) as exc:
                    raise CheckpointError(f"checkpoint {ckpt_file}: its random generator states are invalid: "
                                          f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}") from exc
            start = int(state["iteration"])

        log = RunLog(self.run_dir, enabled=info.is_main, progress=cfg.progress, total=total, initial=start,
                     desc=cfg.method, resume_from=start if state is not None else None)
        log.write(f"speed: {method.speed.describe()}")
        log.log({"iteration": start, "split": "speed", **method.speed.as_dict()})
        ckpt = checkpoint_path(self.run_dir)
        it = start
        lr = method.lr_at(min(it, max(total - 1, 0)))
        try:
            with _StopSignals(log) as stop:
                if start < total:
                    with method.speed.training():  # e.g. freed memory kept in the heap on the CPU
                        it, lr = self._loop(info, device, stream, method, optimizer, scaler, amp_dtype, params,
                                            log, stop, start, total)
                if state is None or it > start or not ckpt.exists():
                    ckpt = self._checkpoint(info, device, it, total, optimizer, scaler, lr)
        except RunOutputWriteError as exc:
            last = read_checkpoint_iteration(self.run_dir)
            after = "" if exc.iteration is None else f" after iteration {exc.iteration} of {total}"
            stopped = RunOutputWriteError(
                f"training stopped{after}: {exc}; last good checkpoint: "
                f"{'none' if last is None else f'iteration {last}'}", exc.errno, exc.path, exc.iteration)
            raise stopped from exc
        finally:
            log.close()
        result = TrainResult(self.run_dir, it, total, ckpt)
        if info.is_main:
            with local_statistics():  # rank 0 alone: no batch-norm collectives
                self._finish(method, result)
        ddp.barrier()
        result.seconds = time.perf_counter() - started
        return result

    def _loop(self, info, device, stream, method, optimizer, scaler, amp_dtype, params, log, stop, start, total):
        cfg = self.config
        loader = stream_loader(stream, cfg.batch_size, rank=info.rank, world_size=info.world_size, start=start,
                               stop=total, num_workers=cfg.data.num_workers, pin_memory=device.type == "cuda")
        it, lr = start, cfg.optim.lr
        speed = method.speed
        networks = list(method.modules())
        watch = self._watch = _LossWatch(device, info.distributed, cfg.method, self.run_dir)
        t0 = time.perf_counter()
        batches = iter(loader)
        while True:
            try:
                raw = next(batches)
            except StopIteration:
                break
            except (ValueError, OSError) as exc:  # a corrupt or vanished data file (also from a worker)
                raise TrainingDataError(f"reading the training data for iteration {it + 1} failed: "
                                        f"{_data_error_text(exc)}") from exc
            t = it
            lr = method.lr_at(t)
            for g in optimizer.param_groups:
                g["lr"] = lr * g.get("lr_scale", 1.0)
            batch = Batch(
                image=speed.prepare_input(raw["image"].to(device, non_blocking=True), networks),
                label=raw["label"].to(device, non_blocking=True),
                cases=list(raw["case"]),
                positions=[int(p) for p in raw["position"]],
                seed=cfg.seed,
            )
            out = run_step(method, optimizer, scaler, amp_dtype, params, batch, t, watch, total)
            if info.distributed and not cfg.sync_batchnorm:
                # as DDP's broadcast_buffers: rank 0's batch-norm statistics everywhere (one collective per dtype)
                ddp.broadcast_buffers([m for m in method.networks().values()])
            it = t + 1
            # Host reads and collectives only here, every log_every iterations (and at the first and last).
            if it % cfg.log_every == 0 or it == total or it == start + 1:
                scalars = self._step_scalars(out, device)
                stopping = watch.sync(stop.flag, it, total)
                log.log({"iteration": it, **scalars, "lr": lr, "seconds": round(time.perf_counter() - t0, 3)})
                log.progress(1, loss=scalars["loss"], lr=lr)
            else:
                stopping = stop.flag if not info.distributed else False
                log.progress(1)
            if stopping:
                path = self._checkpoint(info, device, it, total, optimizer, scaler, lr)
                log.write(f"checkpoint saved at iteration {it}: {path}")
                raise TrainingInterrupted(it, path)
            if it % cfg.checkpoint_every == 0 and it < total:
                self._checkpoint(info, device, it, total, optimizer, scaler, lr)
            if cfg.val_every and it % cfg.val_every == 0 and it < total:
                if info.is_main:
                    with local_statistics():
                        self._validate(method, log, it)
                ddp.barrier()
        return it, lr

    @staticmethod
    def _step_scalars(out: Dict[str, Any], device: torch.device) -> Dict[str, float]:
        """The step's returned scalars as floats, averaged over processes (one host read, one collective)."""
        names = list(out)
        values = torch.stack([torch.as_tensor(out[k], device=device).detach().float().reshape(()) for k in names])
        return dict(zip(names, ddp.all_reduce_mean(values).tolist()))

    # ------------------------------------------------------------------ validation and plots
    def _validate(self, method, log: Optional[RunLog], it: int):
        dataset = validation_dataset(self.config)
        if dataset is None:
            return None, []
        dataset = _NamedDataErrors(dataset, f"reading the validation data after iteration {it} failed")
        cfg = self.config
        rows = evaluate_method(method, dataset, patch_size=cfg.data.crop_size, stride=cfg.val_stride,
                               batch_size=cfg.val_batch_size, limit=cfg.data.val_cases)
        summary = summarize(rows)
        if log is not None:
            log.log({"iteration": it, "split": "val", **{k: summary[k] for k in METRIC_COLUMNS}})
        return summary, rows

    def _finish(self, method, result: TrainResult) -> None:
        """Final validation into ``eval/`` and the plots, after the last checkpoint.

        Raises:
            RunOutputWriteError: a file of ``eval/`` or ``plots/`` could not be written; the
                message names it and the finished checkpoint, from which ``--resume`` writes
                them again. A partly written file is removed.
        """
        try:
            self._write_outputs(method, result)
        except RunOutputWriteError as exc:
            raise RunOutputWriteError(
                f"{exc}; training is finished (checkpoint {result.checkpoint}, iteration {result.iteration} of "
                f"{result.total_iterations}): free space and resume the run to write eval/ and plots/",
                exc.errno, exc.path) from exc

    def _write_outputs(self, method, result: TrainResult) -> None:
        cfg = self.config
        if self.validate:
            summary, rows = self._validate(method, None, result.iteration)
            result.summary, result.cases = summary, rows
            if summary is not None:
                out = self.run_dir / "eval"
                with writing(out / "cases.csv") as path:
                    out.mkdir(exist_ok=True)
                    with open(path, "w", newline="") as f:
                        writer = csv.DictWriter(f, fieldnames=["case", *METRIC_COLUMNS])
                        writer.writeheader()
                        writer.writerows(rows)
                with writing(out / "summary.json") as path, open(path, "w") as f:
                    json.dump({"iteration": result.iteration, "split": cfg.data.val_split, **summary,
                               "speed": method.speed.as_dict()}, f, indent=1)
        if cfg.plots:
            from .plots import plot_case, plot_loss_curves

            with writing(self.run_dir / "plots" / "loss.png") as path:
                plot_loss_curves(read_log(self.run_dir), path, title=f"{cfg.method} ({Path(cfg.data.root).name})")
            self._plot_case(method, plot_case)

    @torch.no_grad()
    def _plot_case(self, method, plot_case) -> None:
        cfg = self.config
        case = case_for_plot(cfg)
        if case is None:
            return
        crop = _crop_around(case, cfg.data.crop_size)
        x = torch.from_numpy(crop["image"])[None].to(method.device)
        method.eval()
        pred = method.predict(x).argmax(1)[0].cpu().numpy()
        unc = method.uncertainty(x)
        with writing(self.run_dir / "plots" / "case.png") as path:
            plot_case(crop["image"][0], crop["clean"], path, noisy=crop["noisy"], prediction=pred,
                      uncertainty=None if unc is None else unc[0].float().cpu().numpy(),
                      title=f"{cfg.method}: training case {case['case']}")


def _crop_around(case: dict, size) -> dict:
    """A ``size`` box centred on the clean foreground (padded with zeros where the volume is smaller)."""
    image, clean, noisy = case["image"], case["clean"], case["noisy"]
    pads = [(max(s - n, 0) // 2, max(s - n, 0) - max(s - n, 0) // 2) for s, n in zip(size, clean.shape)]
    if any(p for pair in pads for p in pair):
        image = np.pad(image, [(0, 0)] + pads)
        clean = np.pad(clean, pads)
        noisy = None if noisy is None else np.pad(noisy, pads)
    fg = np.argwhere(clean > 0)
    centre = fg.mean(0).round().astype(int) if len(fg) else np.array(clean.shape) // 2
    starts = [int(min(max(c - s // 2, 0), n - s)) for c, s, n in zip(centre, size, clean.shape)]
    box = tuple(slice(a, a + s) for a, s in zip(starts, size))
    return {
        "image": np.ascontiguousarray(image[(slice(None),) + box], dtype=np.float32),
        "clean": clean[box],
        "noisy": None if noisy is None else noisy[box],
    }


def read_checkpoint_iteration(run_dir: PathLike) -> Optional[int]:
    """The iteration stored in ``run_dir``'s checkpoint, or None if there is none (or it is unreadable)."""
    try:
        return int(load_checkpoint(run_dir)["iteration"])
    except (FileNotFoundError, ValueError, KeyError):
        return None
