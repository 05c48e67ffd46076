"""How a model is scored: generation, behaviour-aware scoring, judges, the optional vLLM backend
and the merging diagnostics. Imports the engine and the runs.
"""
