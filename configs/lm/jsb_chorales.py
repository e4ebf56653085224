"""Note-by-note Bach chorales: a small GPT over soprano-alto-tenor-bass tokens.

Each quarter-note step is four tokens (S, A, T, B; a token names voice and pitch or a
rest), each chorale `BOS ... EOS` (gen.lm.data.music). Samples are written as MIDI,
a WAV rendering and a piano-roll picture.

Run:       gen train --config=configs/lm/jsb_chorales.py --workdir=runs/chorales
           gen sample --workdir=runs/chorales --num=4 --max_new_tokens=400 --out=chorale.mid
           gen eval --workdir=runs/chorales --config.data.eval_split=test
           (the jsb-chorales/ folder is looked up in data.dir or $GEN_DATA_DIR)
Hardware:  2-core CPU (no accelerator).
Wall time: 27 min 24 s for 1500 steps, compilation and evals included, with the CPU shared
           by two or three other training jobs throughout (1-1.7 steps/s; an upper bound).
Result:    NLL per token / per quarter-note step (4 voice tokens, plus BOS/EOS per
           chorale): valid 1.385 / 5.59 nats, test 1.363 / 5.49 nats (`gen eval`, whole
           splits). Train loss 0.999: it overfits after step 1000, where valid was lowest
           (1.370 / 5.52); 55k training tokens are few. Samples (top-p 0.95) read as
           four-part chorale texture: voices in their ranges, mostly stepwise soprano,
           leaping bass, voices cross on 1.5% of steps (real chorales: 2.7%); half of them
           end on their own (EOS) after 25-40 quarter notes, the rest reach 100.
Reference: NLL per time step on the JSB quarter-note piano roll (88 binary notes per step,
           voices unknown; the usual benchmark): published models report roughly 5 to 9
           nats per step, RNN-NADE among the best (Boulanger-Lewandowski et al. 2012).
           Ours predicts four voiced pitches per step: the same units (nats per quarter
           note) but a different task, so not directly comparable.
"""

from gen.lm.config import default_config


def get_config():
  c = default_config()
  c.data.update(batch_size=16, name="jsb_chorales")
  c.data.eval_split = "valid"  # valid | test
  c.data.seq_len = 128  # 32 quarter notes (8 bars of 4/4) of context.

  c.model.update(num_heads=4, num_layers=4, width=128)
  c.model.dtype = "float32"  # float32 | bfloat16 (compute; params stay float32)
  c.model.norm_eps = 1e-6  # The epsilon the figures above were measured with (GPT-2: 1e-5).
  c.model.positions = "rotary"  # learned | rotary

  c.optim.warmup_steps = 50

  c.sample.update(temperature=1.0, top_k=0, top_p=0.95)
  c.sample.max_new_tokens = 400  # 100 quarter notes; a chorale usually ends before (EOS).

  c.train.update(checkpoint_every=500, log_every=100, num_samples=4, num_steps=1500,
                 sample_every=500)
  return c
