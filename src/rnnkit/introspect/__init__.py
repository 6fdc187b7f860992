"""Why recurrent networks behave as they do, measured at native speed.

* :func:`gradient_flow` -- ``||dL/dh_k||`` (and ``||dL/dc_k||``) for every step, layer
  and direction from one native backward pass, the one-step Jacobian norms, the
  average log10 decay per step and a verdict (vanishing / stable / exploding).
* :func:`step_jacobian_norms` -- ``||ds_t/ds_{t-1}||_2`` for every step (exact or by
  power iteration).
* :func:`gate_saturation` -- how often each sigmoid gate is below 0.1 / above 0.9.
* :func:`recording` -- a context manager that records any model's rnnkit layer
  (gates, cell states, per-step state gradients) while the model runs unchanged.
* :func:`explain_text`, :func:`visualize_text`, :func:`activation_page` -- the
  ``rnnkit explain`` walk-through and the ``rnnkit visualize`` page.

>>> import torch, rnnkit
>>> from rnnkit.introspect import gradient_flow
>>> flow = gradient_flow(rnnkit.LSTM(8, 32).double(), torch.randn(100, 4, 8, dtype=torch.float64))
>>> flow.layers[0].norms["dc"].shape, flow.verdict
(torch.Size([100, 4]), 'vanishing')
"""

import importlib

from ..errors import IntrospectError

# Lazy, so that ``import rnnkit.introspect`` stays cheap (matplotlib and the recorders
# load with the function that needs them).
_WHERE = {
    "recording": "_recording", "Capture": "_recording",
    "explain_text": "explain",
    "gradient_flow": "gradflow", "GradientFlow": "gradflow", "LayerFlow": "gradflow", "verdict": "gradflow",
    "format_table": "gradflow", "plot_gradient_flow": "gradflow",
    "step_jacobian_norms": "jacobian", "layer_states": "jacobian",
    "gate_saturation": "saturation", "GateSaturation": "saturation",
    "activation_page": "visualize", "text_activations": "visualize", "visualize_text": "visualize",
    "write_heatmaps": "visualize",
}


def __getattr__(name):
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_WHERE))


__all__ = [
    "gradient_flow",
    "GradientFlow",
    "LayerFlow",
    "verdict",
    "format_table",
    "plot_gradient_flow",
    "step_jacobian_norms",
    "layer_states",
    "gate_saturation",
    "GateSaturation",
    "recording",
    "Capture",
    "explain_text",
    "text_activations",
    "activation_page",
    "write_heatmaps",
    "visualize_text",
    "IntrospectError",
]
