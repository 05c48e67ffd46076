"""What an experiment trains: the run registry (:data:`mbtrain.runs.RUNS`, the one authority), the
rows each run trains on, the stages that turn a parent model into a run's model, and the
baselines' own pieces (Fine-mixing, ONION). A new defence is one entry here. Imports the engine.
"""

from mbtrain.runs.registry import RUNS, Run

__all__ = ["RUNS", "Run"]
