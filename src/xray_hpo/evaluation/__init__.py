"""Test-split evaluation: accuracy and per-class report (classification), the clinical
metrics a radiology reviewer asks for (clinical), calibration (calibration) and accuracy
under simulated acquisition shifts (robustness). One bootstrap (bootstrap) serves all."""
