"""Fine-tuning: attack recipes, the sharded trainer, multi-host start-up."""

from jaxdelta.train.trainer import TrainConfig, Trainer, TrainingDivergedError, train

__all__ = ["TrainConfig", "Trainer", "TrainingDivergedError", "train"]
