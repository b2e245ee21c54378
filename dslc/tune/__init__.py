"""`dslc tune`: hyperparameter search over the `choice(...)`/`range(...)` spaces a spec writes.

`space.py` finds the spaces and fills them in (no Optuna: `dslc check` imports it);
`study.py` runs the Optuna study.
"""
