"""The README's commands are real: every ``python -m synbench`` / ``python -m synbench.compare`` /
``./scripts/run`` line in its bash blocks composes with Hydra as written (sweeps by their first value, launchers
included), and the commands that are not Hydra apps are run by other tests (named in the README)."""

import re
import shlex
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser

from synbench.runner import CONF_DIR

README = Path(__file__).resolve().parent.parent / "README.md"
APPS = {("python", "-m", "synbench"): "config", ("./scripts/run",): "config",
        ("python", "-m", "synbench.compare"): "compare", ("./scripts/compare",): "compare"}


def readme_commands() -> list[str]:
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.split(r"\s+#", line)[0].strip()
            if line and not line.startswith("#"):
                lines.append(line)
    return lines


def first_of_each_sweep(args: list[str]) -> list[str]:
    """``a=1,2`` -> ``a=1``: one job of the sweep, composed as the launcher would compose it."""
    parser = OverridesParser.create()
    out = []
    for arg in args:
        override = parser.parse_override(arg)
        if override.is_sweep_override():
            value = next(iter(override.sweep_string_iterator()))
            out.append(f"{override.get_key_element()}={value}")
        else:
            out.append(arg)
    return out


def test_every_hydra_command_in_the_readme_composes():
    composed = []
    for line in readme_commands():
        argv = shlex.split(line)
        while argv and re.fullmatch(r"[A-Z_]+=\S*", argv[0]):  # PYTHONPATH=. and the like
            argv = argv[1:]
        for prefix, config in APPS.items():
            if tuple(argv[:len(prefix)]) == prefix:
                args = [a for a in argv[len(prefix):] if not a.startswith("-") or a.startswith("~")]
                with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
                    cfg = compose(config, overrides=first_of_each_sweep(args), return_hydra_config=True)
                assert cfg.hydra.launcher._target_
                composed.append(line)
                break
    assert len(composed) >= 22, composed  # the README shows that many; a parsing slip would drop them


def test_the_commands_the_readme_names_exist():
    root = README.parent
    text = README.read_text()
    for path in ("scripts/run", "scripts/test", "scripts/compare", "scripts/tracking_server", "scripts/bench_embed.py",
                 "scripts/bench_compare.py", "scripts/timm_conformance.py", "conf/hydra/launcher/slurm.yaml",
                 "conf/experiment/paper_vit_family.yaml", "conf/compare.yaml", "scripts/prepare_mnist.py",
                 "scripts/train_family.py", "scripts/validity_mnist.py", "scripts/bench_downstream.py",
                 "conf/experiment/validity_mnist.yaml", "scripts/slurm_cluster"):
        assert path in text and (root / path).is_file(), path
