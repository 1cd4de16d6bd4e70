import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing in the suite may reach for the hub
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

import synbench.config  # noqa: E402,F401  (registers schemas and the abspath resolver)
from synbench.runner import CONF_DIR  # noqa: E402

# A job small enough for 2 CPU cores: test_vit, 4 scales reaching past Phi^-1(0.99), 64 + 64 samples each.
# resume=false: the suite's jobs share one store and many re-run a config on purpose (test_resume.py says
# what resume does).
SMALL = ["mixture.scales=[0.5,1.5,2.5,3.5]", "mixture.n_train=64", "mixture.n_test=64", "mixture.chunk_size=32",
         "epsilon.grid=[0.0,0.5]", "progress=false", "embed.batch_size=64", "resume=false"]


def make_cfg(outputs: Path, *overrides: str):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("config", overrides=[f"paths.outputs={outputs}", *SMALL, *overrides])


@pytest.fixture(scope="session")
def store(tmp_path_factory) -> Path:
    """One outputs/ folder (one SQLite store, migrated once) shared by the end-to-end tests."""
    return tmp_path_factory.mktemp("outputs")


@pytest.fixture
def cfg_factory(store):
    return lambda *overrides: make_cfg(store, *overrides)


def load_script(name: str):
    """``scripts/<name>.py`` as a module (the scripts are not a package), for tests of their functions."""
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
