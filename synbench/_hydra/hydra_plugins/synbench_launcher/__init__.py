"""Hydra finds launchers only under the ``hydra_plugins`` namespace package: this folder's parent is put on
``sys.path`` by ``synbench.runner``, and the class below gives the launcher of ``synbench.launcher``
its registered name (``hydra_plugins.synbench_launcher.SlurmLauncher``)."""

from synbench.launcher import SlurmLauncher as _SlurmLauncher


class SlurmLauncher(_SlurmLauncher):
    pass
