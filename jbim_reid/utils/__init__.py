"""Plumbing every layer may use and which imports no other part of the package: the safe loader and
atomic writers (``fileio``), downloads (``download``), image reading (``images``), optional deploy
imports (``optional``), torchreid-version differences (``compat``) and the data error (``errors``).
"""
