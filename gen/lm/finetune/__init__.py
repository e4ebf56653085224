"""Fine-tuning the transformer from feedback: REINFORCE / PPO against a reward function
(with a KL penalty to the model it started from) and DPO from preference pairs.

A family of its own (`family = "lm.finetune"`) built on `gen.lm`: see
`gen.lm.finetune.pipeline` for the training step, `losses` for the math, `rewards` for
the registered rewards, `make_pairs` and `score` for the command-line tools.
"""

from gen.lm.finetune.pipeline import PairData as make_data
from gen.lm.finetune.pipeline import make

__all__ = ["make", "make_data"]
