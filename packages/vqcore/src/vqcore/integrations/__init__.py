"""Integrations of vqcore's converted (real-integer) models with other libraries.

* :mod:`vqcore.integrations.diffusers` — a diffusers quantizer backend named ``"vqcore"``: folders written by
  ``vqcore.save_converted(model, path, format="diffusers")`` load with ``<ModelClass>.from_pretrained(path)`` after
  :func:`vqcore.integrations.diffusers.register`.

Importing this package imports nothing from the integrated libraries (``import vqcore`` stays light); each submodule
imports its library when it is used.
"""
