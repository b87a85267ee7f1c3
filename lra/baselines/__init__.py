"""The baseline attention mechanisms, each named in the registry `lra.attention` (one module per
mechanism, all built on `common.Attention`)."""

from lra.baselines import (bigbird, linear, linformer, local, longformer, nystromformer, performer,
                           reformer, sinkhorn, sliding_window, softmax, sparse, synthesizer)

__all__ = ["bigbird", "linear", "linformer", "local", "longformer", "nystromformer", "performer",
           "reformer", "sinkhorn", "sliding_window", "softmax", "sparse", "synthesizer"]
