"""The baseline attention mechanisms; importing this package registers each of them (see
`lra.attention`). One module per mechanism, all built on `common.Attention`."""

from lra.baselines import (bigbird, linear, linformer, local, longformer, nystromformer, performer,
                           reformer, sinkhorn, softmax, sparse, synthesizer)

__all__ = ["bigbird", "linear", "linformer", "local", "longformer", "nystromformer", "performer",
           "reformer", "sinkhorn", "softmax", "sparse", "synthesizer"]
