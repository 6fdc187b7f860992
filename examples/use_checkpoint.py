"""Carry a model trained with `rnnkit train lm` into your own code.

    rnnkit train lm --preset demo          # or any run folder / .safetensors file
    python examples/use_checkpoint.py runs/demo
"""
import sys

import torch

import rnnkit
from rnnkit.training.checkpoint import load

path = sys.argv[1] if len(sys.argv) > 1 else "runs/demo"
model = load(path)                       # == rnnkit.load(path): the CharLM, in eval mode
print(model.config["arch"], model.config["hidden"], "vocabulary:", len(model.vocab) - 1, "characters")

# 1. generate text
g = torch.Generator().manual_seed(0)
print(model.generate("import ", length=120, temperature=0.7, generator=g))

# 2. next-character probabilities for a prompt
ids = model.encode("for i in range(")              # (T,)
with torch.no_grad():
    logits, state = model(ids.view(-1, 1))         # (T, 1, V), carried state
probs = torch.softmax(logits[-1, 0], -1)
top = torch.topk(probs, 5)
print("after 'for i in range(':", [(model.decode([int(i)]), round(float(p), 3))
                                   for p, i in zip(top.values, top.indices)])

# 3. the recurrent weights load unchanged into the matching torch.nn module
rnn = model.rnn                                    # rnnkit.LSTM with torch.nn's parameter names
if isinstance(rnn, rnnkit.LSTM):
    twin = torch.nn.LSTM(rnn.input_size, rnn.hidden_size, rnn.num_layers)
    twin.load_state_dict(rnn.state_dict())
    x = model.embed(ids.view(-1, 1))
    with torch.no_grad():
        print("max |rnnkit - torch.nn| over the outputs:", float((rnn(x)[0] - twin(x)[0]).abs().max()))
