"""Fine-tuning the transformer from feedback: REINFORCE / PPO against a reward function
(with a KL penalty to the model it started from) and DPO from preference pairs.

A family of its own (`family = "lm.finetune"`) built on `gen.lm`: see
`gen.lm.finetune.steps` for the training step, `losses` for the math, `rewards` for
the registered rewards, `make_pairs` and `score` for the command-line tools.
"""

from gen.lm.finetune.config import default_config
from gen.lm.finetune.steps import PairData as make_data
from gen.lm.finetune.steps import make

__all__ = ["default_config", "make", "make_data"]
