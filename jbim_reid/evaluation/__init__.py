"""Evaluation around the rank metrics: the multi-resolution ensemble's weights and distance fusion
(``ensemble``), reports and tables (``reports``), CMC plots (``plots``), ranked lists with the SR image
(``visualize``) and model complexity (``complexity``).

May import models, metrics, config and utils; never datasets, engines or anything above them.
"""
