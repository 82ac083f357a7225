"""The top layer: the ``itb`` command, scenarios, the bench harness and reports."""
