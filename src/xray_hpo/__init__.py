"""xray-hpo: Optuna hyperparameter search for a small chest X-ray CNN, tracked by DVC and ClearML.

Importing this package has no side effects: no I/O, no ClearML task, no torch threads.
"""

__version__ = "0.1.0"
