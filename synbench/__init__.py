"""synbench: score pretrained representations with synthetic data, no downstream data needed.

The data's path is the import order: config -> data -> encoders -> probes -> attacks -> metrics -> tracking;
`synbench.app` only wires them.
"""

__version__ = "0.1.0"
