"""Typed schemas for every config group, registered in Hydra's ConfigStore, and the pre-flight checks.

The values live in ``conf/``; these dataclasses only say what type each knob has, so a typo or a wrong type
fails at compose time. Each group YAML starts with ``defaults: [base_<group>]``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

OmegaConf.register_new_resolver("abspath", lambda p: os.path.abspath(os.path.expanduser(str(p))), replace=True)
# a dataset's default name: its file or folder name without suffix (mnist.npz -> mnist)
OmegaConf.register_new_resolver("basename", lambda p: os.path.splitext(os.path.basename(str(p).rstrip("/")))[0],
                                replace=True)


@dataclass
class ModelConf:
    """What every encoder source takes; each ``_target_`` is a builder returning a synbench.encoders.Encoder."""

    _target_: str = MISSING
    name: str = MISSING  # the model's name (timm/torchvision name; the label of the rest)
    pretrained: bool = MISSING  # false: seeded random init (said explicitly, never a fallback)
    checkpoint: Optional[str] = None  # local weights file; overrides the hub / packaged weights
    init_seed: int = MISSING


@dataclass
class ImageModelConf(ModelConf):
    """timm and torchvision classifiers."""

    normalize: str = MISSING  # model | imagenet
    input_size: Optional[int] = None  # square side in pixels; null: the model's own (pretrained config) size


@dataclass
class CrepeModelConf(ModelConf):
    size: str = MISSING  # tiny | full


@dataclass
class HFModelConf:
    """A Hugging Face transformers vision backbone (optional extra: synbench[hf])."""

    _target_: str = "synbench.encoders.hf_encoder.load_hf_encoder"
    name: str = MISSING
    path: str = MISSING  # a save_pretrained directory (or a hub id where there is network)
    pooling: str = MISSING  # pooler | cls | mean
    normalize: str = MISSING  # model: preprocessor_config.json's mean/std | imagenet
    pretrained: bool = MISSING  # false: the config's architecture with a seeded random init
    init_seed: int = MISSING


@dataclass
class CustomModelConf:
    """A user's nn.Module (synbench/encoders/custom.py states the contract)."""

    _target_: str = "synbench.encoders.custom.wrap_module"
    _recursive_: bool = False  # the module is built by the wrapper, under model.init_seed
    name: str = MISSING
    module: Any = MISSING  # {_target_: my_pkg.MyNet, ...its arguments}
    input_shape: list[int] = MISSING  # [C, H, W] images | [C, L] audio
    value_range: list[float] = MISSING  # [lo, hi] of valid raw inputs; the mixture is centred on its middle
    mean: list[float] = MISSING  # per channel (or one value): the encoder feeds (x - mean) / std
    std: list[float] = MISSING
    checkpoint: Optional[str] = None
    init_seed: int = MISSING


@dataclass
class MixtureConf:
    scales: list[float] = MISSING
    n_train: int = MISSING
    n_test: int = MISSING
    prior: float = MISSING
    noise_std: float = MISSING
    mean: Optional[float] = MISSING  # offset of both classes; null: the centre of the encoder's value range
    direction: str = MISSING  # ones | random | lowfreq
    direction_seed: int = MISSING
    lowfreq_res: int = MISSING
    chunk_size: int = MISSING  # samples per seeded chunk: fixes the data whatever the batch size
    pixel_range: Optional[list[float]] = None  # box attacks project into; None: unbounded


@dataclass
class EpsilonConf:
    grid: list[float] = MISSING  # relative radii eps in [0, 1)


@dataclass
class RobustBayesConf:
    _target_: str = "synbench.probes.RobustBayesProbe"
    eig_floor: float = MISSING
    eps: list[float] = MISSING


@dataclass
class RobustLogisticConf:
    _target_: str = "synbench.probes.RobustLogisticProbe"
    radius: float = MISSING  # representation-space radius the probe is trained against
    norm: str = MISSING  # l2 | linf
    weight_decay: float = MISSING
    max_iter: int = MISSING


@dataclass
class SynBenchMetricConf:
    _target_: str = "synbench.metrics.synbench_score.SynBenchScore"
    probe: RobustBayesConf = MISSING
    thresholds: list[float] = MISSING
    headline: float = MISSING
    grid_start: float = MISSING
    grid_stop: float = MISSING
    grid_num: int = MISSING


@dataclass
class ProbeAccuracyConf:
    _target_: str = "synbench.metrics.probe_accuracy.ProbeAccuracy"


@dataclass
class RMQMConf:
    _target_: str = "synbench.metrics.rmqm.RMQM"
    scale: float = MISSING  # the mixture scale whose test inputs are altered (must be on mixture.scales)
    n_points: int = MISSING
    batch_size: int = MISSING
    noise_levels: int = MISSING  # n of the white-noise schedule (level 0 = clean)
    sigma_max: float = MISSING  # noise std at the last level, input units
    pgd_levels: int = MISSING  # n of the PGD schedule: n-1 ascent steps, every iterate recorded
    pgd_alpha: float = MISSING  # linf step size, input units
    pgd_radius: float = MISSING  # linf ball radius
    pgd_offset: float = MISSING  # size of the seeded offset the first step leaves from
    pixel_range: Any = None  # [lo, hi] both paths are clipped to; None: unbounded (mixture.pixel_range)


@dataclass
class SpectrumConf:
    _target_: str = "synbench.metrics.spectrum.Spectrum"
    scale: float = MISSING  # the headline scale (must be on mixture.scales); curves cover every scale
    rankme_eps: float = MISSING  # RankMe's epsilon added to the normalised singular values
    fit_start: int = MISSING  # alpha-ReQ: first eigenvalue index of the log-log fit (1-based)
    fit_stop: Optional[int] = None  # last index; null: the last eigenvalue above rel_floor * lambda_1
    rel_floor: float = MISSING


@dataclass
class AttackConf:
    _target_: str = "synbench.attacks.PGD"
    norm: str = MISSING  # l2 | linf
    eps: list[float] = MISSING  # input-space radii to evaluate, pixel units
    steps: int = MISSING
    restarts: int = MISSING
    step_factor: float = MISSING  # step size = step_factor * eps / steps
    batch_size: int = MISSING


@dataclass
class RobustnessConf:
    _target_: str = "synbench.metrics.robustness.RepresentationRobustness"
    attack: AttackConf = MISSING
    scale: float = MISSING  # the mixture scale whose test points are attacked
    n_points: int = MISSING
    pixel_range: Any = None  # [lo, hi] or None (an interpolation of mixture.pixel_range)


@dataclass
class SoftmaxProbeConf:
    _target_: str = "synbench.probes.softmax.SoftmaxProbe"
    penalties: list[float] = MISSING  # L2 grid, on standardised features; the best held-out accuracy wins
    val_fraction: float = MISSING  # share of the train split held out to choose the penalty
    max_iter: int = MISSING  # L-BFGS iterations of the refit (the head)
    tol: float = MISSING  # L-BFGS stops once every gradient entry is below it
    search_max_iter: Optional[int] = None  # the penalty search's fits; null: max_iter
    search_tol: Optional[float] = None  # null: tol


@dataclass
class DownstreamConf:
    _target_: str = "synbench.metrics.downstream.Downstream"
    probe: SoftmaxProbeConf = MISSING
    attack: AttackConf = MISSING
    n_points: Optional[int] = None  # test images attacked (the first ones); null: all


@dataclass
class LogMEConf:
    _target_: str = "synbench.metrics.logme.LogME"
    tol: float = MISSING  # MacKay's fixed point stops when alpha and beta both change by less than this, relatively
    max_iter: int = MISSING  # fixed-point iterations per class at most


@dataclass
class DatasetConf:
    """A real labelled dataset read from local files (``synbench/data/readers.py``); ``dataset.path`` always."""

    _target_: str = MISSING
    name: str = MISSING  # its label in runs and reports (tag synbench.dataset)
    path: str = MISSING
    test_fraction: float = MISSING  # the seeded test split, for data without a split of their own
    split_seed: int = MISSING
    n_train: Optional[int] = None  # a seeded subset of the train split; null: all of it
    n_test: Optional[int] = None
    classes: Optional[list[str]] = None  # names of integer labels, indexed by label; null: the data's own
    get: Optional[str] = None  # the command that writes dataset.path, said when it is missing (named datasets)


@dataclass
class ImageFolderDatasetConf(DatasetConf):
    image_size: Optional[int] = None  # resize every image to N x N on load (needed when sizes differ)


@dataclass
class NpzDatasetConf(DatasetConf):
    value_range: Optional[list[float]] = None  # the stored pixels' range; null: [0, 255] integers, [0, 1] floats


@dataclass
class HFDatasetConf(ImageFolderDatasetConf):
    image_key: str = MISSING
    label_key: str = MISSING


@dataclass
class TrackingConf:
    uri: str = MISSING
    experiment: str = MISSING
    artifact_location: Optional[str] = None  # used when the experiment is created
    run_name: Optional[str] = None  # default: model name + overrides
    connect_timeout_s: float = MISSING
    heartbeat_s: float = MISSING  # a RUNNING job rewrites its heartbeat tag this often (0: none)
    stale_after_s: float = MISSING  # a RUNNING run with an older heartbeat is dead, from any host


@dataclass
class EmbedConf:
    batch_size: Any = MISSING  # auto (timed on the job's model and device) | a positive integer
    precision: str = MISSING  # auto (bf16 on CUDA, fp32 on CPU) | fp32 | bf16
    compile: Any = MISSING  # auto (timed where the job is long enough) | true | false
    channels_last: Any = MISSING  # auto (timed) | true | false
    tune_batches: list[int] = MISSING  # candidate batch sizes for auto, tried in increasing order
    tune_max_pass_seconds: float = MISSING  # a candidate whose one pass takes longer ends the search
    tune_min_seconds: float = MISSING  # timed seconds per candidate (after one warm-up pass)
    tune_budget: float = MISSING  # the search stops past this fraction of the projected embedding time
    tune_compile_min_seconds: float = MISSING  # compile=auto tries torch.compile only above this projected time
    keep_freed_memory: bool = MISSING  # glibc keeps freed blocks for reuse (no page faults between passes)


@dataclass
class CacheConf:
    enabled: bool = MISSING
    dir: str = MISSING
    tuning_dir: str = MISSING


@dataclass
class PathsConf:
    outputs: str = MISSING


@dataclass
class CommonConf:
    """What every app takes (conf/common.yaml, plus the tracking group and a mixture)."""

    mixture: MixtureConf = MISSING
    tracking: TrackingConf = MISSING
    embed: EmbedConf = MISSING
    cache: CacheConf = MISSING
    paths: PathsConf = MISSING
    seed: int = MISSING
    device: str = MISSING  # auto | cpu | cuda | cuda:N
    progress: bool = MISSING
    resume: bool = MISSING  # skip a run whose MLflow run with the same config hash is FINISHED


@dataclass
class Config(CommonConf):
    """One SynBench job (conf/config.yaml)."""

    model: Any = MISSING  # one of the model schemas above, by the `model` group's choice
    epsilon: EpsilonConf = MISSING
    probe: Any = MISSING
    metrics: dict[str, Any] = field(default_factory=dict)
    attack: AttackConf = MISSING
    dataset: Any = None  # a real labelled dataset (the `dataset` group) for metrics.downstream; null: none


@dataclass
class ComparisonConf:
    """``python -m synbench.compare``: spec shared/spec/data_kernel.md; knobs explained in conf/compare.yaml."""

    scale: float = MISSING
    k: Optional[int] = None
    mutual_k: int = MISSING
    reference: Optional[str] = None
    augment_diagonal: bool = MISSING
    d: Optional[int] = None
    max_dim: int = MISSING
    n_bootstrap: int = MISSING
    alpha: float = MISSING
    top_changed: int = MISSING
    hist_bins: int = MISSING


@dataclass
class CompareConfig(CommonConf):
    """One model comparison (conf/compare.yaml)."""

    models: dict[str, Any] = field(default_factory=dict)  # label -> one choice of the `model` group
    compare: ComparisonConf = MISSING
    dataset: Any = None  # a real dataset's test split as the inputs (the `dataset` group); null: the mixture


def register() -> None:
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=Config)
    cs.store(name="base_compare", node=CompareConfig)
    cs.store(group="model", name="base_image_model", node=ImageModelConf)
    cs.store(group="model", name="base_packaged_model", node=ModelConf)
    cs.store(group="model", name="base_crepe_model", node=CrepeModelConf)
    cs.store(group="model", name="base_custom_model", node=CustomModelConf)
    cs.store(group="model", name="base_hf_model", node=HFModelConf)
    cs.store(group="mixture", name="base_mixture", node=MixtureConf)
    cs.store(group="epsilon", name="base_epsilon", node=EpsilonConf)
    cs.store(group="probe", name="base_robust_bayes", node=RobustBayesConf)
    cs.store(group="probe", name="base_robust_logistic", node=RobustLogisticConf)
    cs.store(group="metrics", name="base_synbench", node=SynBenchMetricConf)
    cs.store(group="metrics", name="base_probe_accuracy", node=ProbeAccuracyConf)
    cs.store(group="metrics", name="base_robustness", node=RobustnessConf)
    cs.store(group="metrics", name="base_spectrum", node=SpectrumConf)
    cs.store(group="metrics", name="base_rmqm", node=RMQMConf)
    cs.store(group="metrics", name="base_downstream", node=DownstreamConf)
    cs.store(group="metrics", name="base_logme", node=LogMEConf)
    cs.store(group="attack", name="base_attack", node=AttackConf)
    cs.store(group="dataset", name="base_image_folder", node=ImageFolderDatasetConf)
    cs.store(group="dataset", name="base_npz", node=NpzDatasetConf)
    cs.store(group="dataset", name="base_idx", node=DatasetConf)
    cs.store(group="dataset", name="base_hf", node=HFDatasetConf)
    cs.store(group="tracking", name="base_tracking", node=TrackingConf)


register()


def check_config(cfg: DictConfig) -> None:
    """Cheap checks of the data side of a job, before any model is loaded; one line per problem."""
    check_missing(cfg)
    check_finite(resolved(cfg))
    mix = cfg.mixture
    scales = list(mix.scales)
    if not scales:
        raise ValueError("mixture.scales is empty; give an increasing list of positive scales, e.g. [0.5, 1.0, 2.0]")
    if any(s < 0 for s in scales):
        raise ValueError(f"mixture.scales={scales} has a negative scale; scales are >= 0")
    if any(b <= a for a, b in zip(scales, scales[1:])):
        raise ValueError(f"mixture.scales={scales} is not strictly increasing; sort it and drop repeats")
    for key in ("n_train", "n_test", "chunk_size"):
        if int(mix[key]) <= 0:
            raise ValueError(f"mixture.{key}={mix[key]} must be a positive integer")
    if min(int(mix.n_train), int(mix.n_test)) < 4:
        raise ValueError(f"mixture.n_train={mix.n_train}, n_test={mix.n_test}: need at least 4 samples per split")
    if not 0.0 < float(mix.prior) < 1.0:
        raise ValueError(f"mixture.prior={mix.prior} must be in (0, 1)")
    if not float(mix.noise_std) > 0:
        raise ValueError(f"mixture.noise_std={mix.noise_std} must be > 0")
    if int(mix.lowfreq_res) <= 0:
        raise ValueError(f"mixture.lowfreq_res={mix.lowfreq_res} must be a positive integer")
    emb = cfg.embed
    if emb.batch_size != "auto" and not (isinstance(emb.batch_size, int) and not isinstance(emb.batch_size, bool)
                                         and emb.batch_size > 0):
        raise ValueError(f"embed.batch_size={emb.batch_size!r} must be a positive integer or auto")
    for key in ("channels_last", "compile"):
        if emb[key] not in ("auto", True, False):
            raise ValueError(f"embed.{key}={emb[key]!r} must be true, false or auto")
    if not emb.tune_batches or any(int(b) <= 0 for b in emb.tune_batches):
        raise ValueError(f"embed.tune_batches={list(emb.tune_batches)} must be a non-empty list of positive integers")
    for key in ("tune_max_pass_seconds", "tune_min_seconds", "tune_budget", "tune_compile_min_seconds"):
        if not emb[key] > 0:
            raise ValueError(f"embed.{key}={emb[key]} must be > 0")
    if not cfg.metrics:
        raise ValueError("metrics is empty; select at least one, e.g. metrics=[synbench]")


def check_finite(node, key: str = "") -> None:
    """No NaN anywhere, and no inf inside a list (scales, radii, grids): a NaN passes every ``<`` check unseen,
    and a NaN scale's accuracy of 0.0 would enter the means. A lone inf may be meant (no limit)."""
    if isinstance(node, dict):
        for k, v in node.items():
            check_finite(v, f"{key}.{k}" if key else str(k))
    elif isinstance(node, list):
        bad = [v for v in node if isinstance(v, float) and not math.isfinite(v)]
        if bad:
            raise ValueError(f"{key}={node} holds {bad[0]}; every value of a list must be a finite number")
        for i, v in enumerate(node):
            if isinstance(v, (dict, list)):
                check_finite(v, f"{key}[{i}]")
    elif isinstance(node, float) and math.isnan(node):
        raise ValueError(f"{key}=nan is not a number; give a finite value")


# an example value for each mandatory key a user most often leaves unset (``???`` in conf/)
MISSING_EXAMPLES = {"dataset.path": "/path/to/your/data", "tracking.uri": "http://mlflow-host:5000",
                    "model.path": "/path/to/a/save_pretrained/folder"}


def check_missing(cfg: DictConfig) -> None:
    """A mandatory key left unset (``???``) is one line naming it, before anything reads the config: else
    OmegaConf's three-line error names whatever key first interpolates it (``dataset.name`` for a missing
    ``dataset.path``)."""
    missing = sorted(_missing(OmegaConf.to_container(cfg, resolve=False), ""))  # resolving would raise first
    if missing:
        also = f" (also unset: {', '.join(missing[1:])})" if len(missing) > 1 else ""
        raise ValueError(f"{missing[0]} is not set: add {missing[0]}={MISSING_EXAMPLES.get(missing[0], '...')}{also}")


def _missing(node, prefix: str) -> list[str]:
    if isinstance(node, dict):
        return [k for key, value in node.items() for k in _missing(value, f"{prefix}{key}.")]
    if isinstance(node, list):
        return [k for i, value in enumerate(node) for k in _missing(value, f"{prefix}{i}.")]
    return [prefix[:-1]] if node == MISSING else []


# Keys that change where or how fast a job runs, never what it computes: left out of the job's identity hash.
NON_IDENTITY_KEYS = ("paths", "tracking", "cache", "device", "progress", "resume", "embed.batch_size", "embed.compile",
                     "embed.channels_last", "embed.tune_batches", "embed.tune_max_pass_seconds",
                     "embed.tune_min_seconds", "embed.tune_budget", "embed.tune_compile_min_seconds",
                     "embed.keep_freed_memory")


def resolved(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)


# the password of a URL's user info (``scheme://user:password@host``): never logged, printed or uploaded
# (Hydra's printed overrides escape each ``:`` as ``\:``)
_URL_PASSWORD = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*\\?://[^/\s:@]*):[^\s/]*@")


def redact(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***`` (``http://alice:***@host``)."""
    return _URL_PASSWORD.sub(r"\1:***@", text)


def redact_log_records() -> None:
    """Every log record of this process, Hydra's own included (its launcher prints each job's overrides), has
    URL passwords redacted as it is made: the record factory outlives the handlers Hydra reconfigures."""
    make = logging.getLogRecordFactory()
    if getattr(make, "redacts", False):
        return

    def redacted(*args, **kwargs):
        record = make(*args, **kwargs)
        message = record.getMessage()
        if "@" in message and redact(message) != message:
            record.msg, record.args = redact(message), None
        return record

    redacted.redacts = True
    logging.setLogRecordFactory(redacted)


def flat_params(cfg: DictConfig) -> dict[str, object]:
    """The resolved config flattened to dotted keys (``model.name``), lists as strings, passwords in URLs
    redacted: MLflow params."""
    out: dict[str, object] = {}

    def walk(node, prefix):
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}{k}.")
        else:
            value = node if isinstance(node, (int, float, bool, str)) or node is None else str(node)
            out[prefix[:-1]] = redact(value) if isinstance(value, str) else value

    walk(resolved(cfg), "")
    return out


def job_hash(cfg: DictConfig, data_digest: str | None = None) -> str:
    """A stable hash of what the job computes (for resume and cache lookups across sweeps). The config names
    real data only by their path, so a job that reads a dataset passes its content digest: the same path
    holding other data is other work, never a FINISHED run to skip to."""
    flat = flat_params(cfg)
    keep = {k: v for k, v in flat.items()
            if not any(k == p or k.startswith(p + ".") for p in NON_IDENTITY_KEYS)}
    if data_digest is not None:
        keep["dataset.content_digest"] = data_digest
    return hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()[:16]


def resolve_device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"device={name!r} is not a device; valid: auto, cpu, cuda, cuda:N") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} but CUDA is not available here; use device=auto or device=cpu")
    return device


def build(node: DictConfig):
    """``hydra.utils.instantiate`` that surfaces the target's own error (a one-line ValueError, say) instead of
    Hydra's multi-line wrapper, so bad input reads the same whether it is caught in the config or the builder."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        return instantiate(node)
    except InstantiationException as err:
        cause = err.__cause__
        if not isinstance(cause, Exception):
            raise
        # a nested target names its key from its own node (``attack.eps``): say the key the user set
        # (``metrics.robustness.attack.eps``), which Hydra's message holds as full_key; not where the node is
        # an interpolation (``metrics.downstream.attack: ${attack}``): there the user set ``attack.eps``
        full = re.search(r"^full_key: (\S+)$", str(err), flags=re.M)
        if full and isinstance(cause, ValueError) and len(cause.args) == 1 and isinstance(cause.args[0], str):
            parent, _, own = full.group(1).rpartition(".")
            holder = OmegaConf.select(node._get_root(), parent) if parent else None
            field = re.match(rf"{re.escape(own)}\.(\w+)", cause.args[0])
            if (field and isinstance(holder, DictConfig) and not OmegaConf.is_interpolation(holder, own)
                    and not OmegaConf.is_interpolation(holder[own], field.group(1))):
                raise type(cause)(full.group(1) + cause.args[0][len(own):]) from None
        raise cause from None
