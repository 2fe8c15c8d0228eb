"""Tables, figures and pages for ``reports/``."""
