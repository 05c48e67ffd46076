"""How a model is trained, knowing nothing of any defence: loading and saving models, prompt
formatting, the TRL/transformers trainers and their losses, the job scheduler, the numeric
environment, reading build folders. Imports only :mod:`mbtrain.config` and itself.
"""
