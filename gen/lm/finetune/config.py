"""Every key of a feedback fine-tuning config (`family = "lm.finetune"`), with its default.

The LM's keys (`gen.lm.config`) and the `finetune` section; an experiment starts from the
config of the run it fine-tunes (`configs/lm/*_rl.py`, `*_ppo.py`, `*_dpo.py`) and sets the
rest. A workdir saved before a key existed loads with this default (`gen.core.runs`).
"""

from gen.core.config import ConfigDict
from gen.lm.config import default_config as lm_default_config


def default_config() -> ConfigDict:
  c = lm_default_config()
  c.family = "lm.finetune"
  c.data.pairs = ""  # DPO: JSONL preference pairs (gen.lm.data.pairs).
  c.finetune = ConfigDict()
  c.finetune.method = "reinforce"  # reinforce | ppo | dpo
  c.finetune.reward = "line_length"  # A name registered in gen.lm.finetune.rewards.
  c.finetune.target = 0.0  # The reward's target, where it has one (line_length: characters).
  c.finetune.prompt_len = 0  # 0: prompts are the start token; k: a data window's first k.
  c.finetune.max_new_tokens = 0  # Sampled tokens per prompt; 0: fill the context.
  c.finetune.kl_coef = 0.02  # beta: weight of KL(policy || reference), nats per sequence.
  c.finetune.ppo_epochs = 1  # PPO: optimizer steps per sampled batch.
  c.finetune.clip = 0.2  # PPO's ratio clip epsilon.
  c.finetune.beta = 0.1  # DPO's inverse temperature: larger keeps closer to the reference.
  return c
