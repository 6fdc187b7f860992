"""Step-by-step inference with rnnkit.Stream: a sensor signal arrives one sample at a
time, and a small GRU filters it online, one native call per sample.

    python examples/streaming.py

The stream's outputs equal the module run over the whole sequence at once; the script
checks that, then reports the time per step.
"""
import time

import numpy as np
import torch

import rnnkit

torch.manual_seed(0)
gru = rnnkit.GRU(input_size=3, hidden_size=64, num_layers=2).eval()
head = torch.nn.Linear(64, 1).eval()

# A noisy 3-channel signal, as it would come from a device: NumPy float32, one row per tick.
t = np.arange(2000, dtype=np.float32) / 100
signal = np.stack([np.sin(t), np.cos(0.5 * t), np.sin(3 * t)], axis=1)
signal += 0.1 * np.random.default_rng(0).standard_normal(signal.shape).astype(np.float32)

stream = rnnkit.Stream(gru)                     # packs the weights once; batch_size=1
out = np.empty((1, 64), dtype=np.float32)       # reused: no allocation per step
online = []
start = time.perf_counter()
for sample in signal:                           # one (3,) sample per tick
    stream.step(sample.reshape(1, 3), out=out)  # advances both layers one step
    online.append(out[0].copy())
per_step = (time.perf_counter() - start) / len(signal)

with torch.no_grad():                           # the same model over the whole sequence
    offline, h_n = gru(torch.from_numpy(signal).unsqueeze(1))
assert np.allclose(np.array(online), offline[:, 0].numpy(), atol=1e-5)
assert torch.allclose(stream.state(), h_n, atol=1e-5)

with torch.no_grad():
    y = head(torch.from_numpy(out))
print(f"{len(signal)} steps, {per_step * 1e6:.1f} us per step (2-layer GRU, H=64); "
      f"online == offline; last prediction {y.item():+.4f}")
