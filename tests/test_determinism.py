"""Every stage runs torch in its deterministic mode, so reruns give the same bits.

The case that made this necessary: the AR + NAR baseline picks each row's NAR head by indexing
with repeated indices, and on the CPU the backward of that adds the rows' gradients in whatever
order two threads finish. Two runs of the smoke profile then trained ar_nar to weights that
differ in the last bits (found by comparing two runs' results.json)."""

from __future__ import annotations

import pytest
import torch

from baselines.ar_nar import ArNarConfig, ArNarLM
from siren_bench.models.siren import Text
from siren_bench.stage_context import open_stage

K, V, TEXT_DIM = 8, 64, 16


@pytest.fixture
def restore_torch_mode():
    enabled, warn_only, threads = (torch.are_deterministic_algorithms_enabled(),
                                   torch.is_deterministic_algorithms_warn_only_enabled(), torch.get_num_threads())
    yield
    torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
    torch.set_num_threads(threads)


def test_a_stage_turns_on_torchs_deterministic_kernels(restore_torch_mode, tmp_path):
    torch.use_deterministic_algorithms(False)
    params = tmp_path / "params.yaml"
    params.write_text("run:\n  profile: ci\n  device: cpu\n")
    open_stage(params)
    assert torch.are_deterministic_algorithms_enabled()
    assert not torch.is_deterministic_algorithms_warn_only_enabled()  # on the CPU a missing kernel is an error


def test_the_ar_nar_gradient_has_the_same_bits_on_every_backward(restore_torch_mode):
    """Many rows share each NAR head, so two threads accumulate into the same weights; this
    gave a different gradient on most of 20 backward passes before the stages set the mode, so 8
    passes would all agree by chance with probability well under 1 %."""
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = ArNarLM(ArNarConfig(n_codebooks=K, codebook_size=V, text_dim=TEXT_DIM, dim=32, n_heads=4, n_kv_heads=2,
                                ar_layers=1, nar_layers=1, dropout=0.0, max_frames=64, ffn_multiple=32))
    codes = torch.randint(0, V, (128, K, 48), generator=torch.Generator().manual_seed(1))
    text = Text(torch.randn(128, 4, TEXT_DIM), torch.ones(128, 4, dtype=torch.bool), torch.randn(128, TEXT_DIM))
    gradients = set()
    for _ in range(8):
        model.zero_grad()
        torch.manual_seed(2)  # the same NAR stages each pass
        model.loss(codes, text).backward()
        gradients.add(b"".join(p.grad.numpy().tobytes() for p in model.nar.heads.parameters() if p.grad is not None))
    assert len(gradients) == 1
