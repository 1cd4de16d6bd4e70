"""Config composition, typing and the pre-flight checks (no model, no MLflow)."""

import pytest
from omegaconf import OmegaConf
from hydra.errors import ConfigCompositionException

from synbench.config import check_config, job_hash, resolve_device
from synbench.probes import check_epsilons
from tests.conftest import make_cfg


def test_default_config_composes_every_group(tmp_path):
    cfg = make_cfg(tmp_path)
    assert cfg.model.name == "test_vit" and cfg.model.pretrained is False
    assert cfg.probe._target_.endswith("RobustBayesProbe")
    assert list(cfg.metrics) == ["synbench", "probe"]
    assert cfg.tracking.uri == f"sqlite:///{tmp_path}/mlflow/mlflow.db"
    assert cfg.cache.dir == f"{tmp_path}/cache/embeddings"
    check_config(cfg)


def test_paper_experiment_is_the_published_protocol(tmp_path):
    with pytest.raises(ConfigCompositionException):  # must say it replaces the null experiment: no '+' 
        make_cfg(tmp_path, "+experiment=paper_vit_b16")
    from hydra import compose, initialize_config_dir
    from synbench.runner import CONF_DIR
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=["experiment=paper_vit_b16"])
    assert cfg.model.name == "vit_base_patch16_224" and cfg.model.pretrained is True
    scales = list(cfg.mixture.scales)
    assert len(scales) == 49 and scales[0] == 0.1 and scales[-1] == 4.9
    assert all(abs(b - a - 0.1) < 1e-9 for a, b in zip(scales, scales[1:]))
    assert cfg.mixture.n_train == cfg.mixture.n_test == 2048
    assert cfg.mixture.prior == 0.5 and cfg.mixture.direction == "ones" and cfg.mixture.noise_std == 1.0
    assert list(cfg.epsilon.grid)[:3] == [0.0, 0.1, 0.2]
    assert list(cfg.metrics.synbench.thresholds) == [0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.99]


@pytest.mark.parametrize("override", ["mixture.n_train=abc", "embed.tune_min_seconds=soon", "model.nonexistent=1",
                                      "metrics.synbench.grid_num=many"])
def test_wrong_types_and_unknown_keys_fail_at_compose(tmp_path, override):
    with pytest.raises(ConfigCompositionException):
        make_cfg(tmp_path, override)


@pytest.mark.parametrize("override, needle", [
    ("mixture.scales=[]", "mixture.scales is empty"),
    ("mixture.scales=[1.0,0.5,2.0]", "not strictly increasing"),
    ("mixture.scales=[0.5,0.5,2.0]", "not strictly increasing"),
    ("mixture.scales=[-1.0,2.0]", "negative"),
    ("mixture.n_train=0", "mixture.n_train=0"),
    ("mixture.n_test=-5", "mixture.n_test=-5"),
    ("mixture.chunk_size=0", "mixture.chunk_size=0"),
    ("mixture.prior=1.0", "mixture.prior=1.0"),
    ("mixture.noise_std=0", "mixture.noise_std=0"),
    ("embed.batch_size=0", "embed.batch_size=0 must be a positive integer or auto"),
    ("embed.batch_size=1.5", "embed.batch_size=1.5"),
    ("embed.batch_size=fast", "embed.batch_size='fast'"),
    ("embed.channels_last=maybe", "embed.channels_last='maybe' must be true, false or auto"),
    ("embed.compile=fast", "embed.compile='fast' must be true, false or auto"),
    ("embed.tune_compile_min_seconds=0", "embed.tune_compile_min_seconds=0"),
    ("embed.tune_batches=[]", "embed.tune_batches=[]"),
    ("embed.tune_min_seconds=0", "embed.tune_min_seconds=0"),
    ("embed.tune_budget=-1", "embed.tune_budget=-1"),
    ("metrics=[]", "metrics is empty"),
])
def test_bad_values_get_one_line_errors(tmp_path, override, needle):
    cfg = make_cfg(tmp_path, override)
    with pytest.raises(ValueError) as err:
        check_config(cfg)
    assert needle in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("overrides, needle", [
    (["mixture.scales=[0.5,nan,3.0]"], "mixture.scales=[0.5, nan, 3.0] holds nan; every value of a list must be"),
    (["mixture.scales=[0.5,1.0,3.0,inf]"], "mixture.scales=[0.5, 1.0, 3.0, inf] holds inf"),
    (["attack.eps=[0.0,-inf]"], "attack.eps=[0.0, -inf] holds -inf"),
    (["epsilon.grid=[0.0,nan]"], "epsilon.grid=[0.0, nan] holds nan"),
    (["metrics=[robustness]", "metrics.robustness.attack.eps=[0.0,nan]"], "metrics.robustness.attack.eps=[0.0, nan]"),
    (["mixture.prior=nan"], "mixture.prior=nan is not a number"),
])
def test_non_finite_numbers_are_refused_before_anything_runs(tmp_path, overrides, needle):
    """A NaN passes every ``<`` check unseen (a NaN scale once put an accuracy of 0.0 into the means)."""
    with pytest.raises(ValueError) as err:
        check_config(make_cfg(tmp_path, *overrides))
    assert needle in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("grid", [[1.0], [-0.1], [0.0, 1.5], []])
def test_eps_outside_unit_interval_is_rejected(grid):
    with pytest.raises(ValueError, match=r"\[0, 1\)|empty"):
        check_epsilons(grid)


def test_job_hash_tracks_what_is_computed_not_where(tmp_path):
    base = job_hash(make_cfg(tmp_path))
    assert job_hash(make_cfg(tmp_path / "elsewhere", "embed.batch_size=7", "device=cpu", "progress=true",
                             "embed.channels_last=true", "embed.tune_batches=[2,4]")) == base
    assert job_hash(make_cfg(tmp_path, "seed=1")) != base
    assert job_hash(make_cfg(tmp_path, "epsilon.grid=[0.0]")) != base


def test_device_names_are_checked():
    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(ValueError, match="device='gpu0'"):
        resolve_device("gpu0")


def test_every_knob_has_a_value_in_conf(tmp_path):
    cfg = make_cfg(tmp_path)
    assert not OmegaConf.missing_keys(cfg)


def test_paper_vit_family_is_one_multirun_of_the_four_vits():
    from hydra import compose, initialize_config_dir
    from synbench.runner import CONF_DIR
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=["experiment=paper_vit_family"], return_hydra_config=True)
        paper = compose("config", overrides=["experiment=paper_vit_b16"])
    assert cfg.hydra.sweeper.params["model.name"].split(",") == [
        "vit_tiny_patch16_224", "vit_small_patch16_224", "vit_base_patch16_224", "vit_large_patch16_224"]
    assert cfg.model.input_size == 224 and cfg.model.normalize == "imagenet" and cfg.model.pretrained is True
    for group in ("mixture", "epsilon", "metrics"):  # the same protocol as the single-model paper experiment
        assert OmegaConf.to_container(cfg[group]) == OmegaConf.to_container(paper[group])


def test_slurm_launcher_is_submitit_with_the_projects_defaults():
    from hydra import compose, initialize_config_dir
    from synbench.runner import CONF_DIR
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=slurm", "hydra.launcher.partition=gpu",
                                           "hydra.launcher.timeout_min=30"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.synbench_launcher.SlurmLauncher"  # the plugin's, extended
    from hydra.core.plugins import Plugins
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher
    from hydra_plugins.synbench_launcher import SlurmLauncher as Ours
    assert issubclass(Ours, SlurmLauncher)
    assert Plugins.instance().class_name_to_class[launcher._target_] is Ours  # Hydra's plugin scan finds it
    assert (launcher.partition, launcher.timeout_min, launcher.gpus_per_node) == ("gpu", 30, 1)


def test_compare_config_composes_models_from_the_model_group(tmp_path):
    from hydra import compose, initialize_config_dir
    from synbench.runner import CONF_DIR
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("compare", overrides=[f"paths.outputs={tmp_path}", "+model@models.r50=resnet50",
                                            "~models.cnn", "models.vit_b.init_seed=7"])
        with pytest.raises(ConfigCompositionException):  # typed like the job's model group
            compose("compare", overrides=["models.vit_a.pretrained=maybe"])
    assert list(cfg.models) == ["vit_a", "vit_b", "r50"]
    assert cfg.models.vit_b.init_seed == 7 and cfg.models.r50.name == "resnet50"
    assert not OmegaConf.missing_keys(cfg)


def test_a_nested_targets_error_names_the_key_the_user_set():
    """A builder names its own node (``attack.eps``); the error says the key the user set: the nested key where
    it was set there, the group's key where the nested one only interpolates it (N18c)."""
    from synbench.config import build

    pgd = {"_target_": "synbench.attacks.PGD", "norm": "linf", "eps": [0.0, 0.01], "steps": 2, "restarts": 1,
           "step_factor": 2.5, "batch_size": 8}
    root = OmegaConf.create({"attack": dict(pgd), "metrics": {
        "robustness": {"_target_": "builtins.dict", "attack": {**pgd, "eps": [-0.1, 0.0]}},
        "downstream": {"_target_": "builtins.dict", "attack": "${attack}"},
        "fields": {"_target_": "builtins.dict", "attack": {**pgd, "eps": "${attack.eps}"}}}})
    with pytest.raises(ValueError, match=r"^metrics\.robustness\.attack\.eps=\[-0\.1, 0\.0\] must be "):
        build(root.metrics.robustness)
    root.attack.eps = [-0.2]
    for where in ("downstream", "fields"):
        with pytest.raises(ValueError, match=r"^attack\.eps=\[-0\.2\] must be "):
            build(root.metrics[where])
