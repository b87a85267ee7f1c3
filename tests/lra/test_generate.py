"""Generation: greedy sampling through the decode cache equals the argmax of the full causal
forward; the CLI samples from a trained workdir."""

import pathlib
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import fixtures
from lra import generate, models, train
from fixtures import tiny_lm_config as tiny_config, write_corpus

ROOT = pathlib.Path(__file__).resolve().parents[2]


def tiny_lm(name, **options):
  return models.LanguageModel(
      vocab_size=256, max_length=8, num_layers=2, emb_dim=16, num_heads=2, qkv_dim=16,
      mlp_dim=32, dropout_rate=0.0, attention_name=name, attention_options=options,
      rngs=nnx.Rngs(0, projection=1))


@pytest.mark.parametrize("name, options", [
    ("rfa_gaussian", dict(num_features=16)),
    ("rfa_gaussian", dict(num_features=16, gated=True)),
    ("softmax", {}),
])
def test_greedy_sampling_is_the_argmax_of_the_full_forward(name, options):
  prompt = np.random.default_rng(0).integers(0, 256, (2, 3)).astype(np.int32)
  sampled = generate.sample(tiny_lm(name, **options), prompt, 12, temperature=0)
  assert sampled.shape == (2, 12) and sampled.dtype == np.int32
  tokens = np.concatenate([prompt, sampled], 1)  # 15 bytes: past max_length, positions repeat
  model = tiny_lm(name, **options)
  model.eval()
  logits = model({"inputs": jnp.asarray(tokens)})
  np.testing.assert_array_equal(np.argmax(logits[:, 2:-1], -1), sampled)


def test_sampling_checks_and_top_k():
  model = tiny_lm("softmax")
  prompt = np.zeros((1, 2), np.int32)
  one = generate.sample(model, prompt, 6, temperature=1.0, top_k=1, seed=3)
  np.testing.assert_array_equal(one, generate.sample(model, prompt, 6, temperature=0))
  draws = generate.sample(model, prompt, 32, temperature=5.0, seed=1)
  assert len(set(draws[0].tolist())) > 4
  with pytest.raises(ValueError, match="temperature=-1"):
    generate.sample(model, prompt, 4, temperature=-1)
  with pytest.raises(ValueError, match="top_k=300"):
    generate.sample(model, prompt, 4, top_k=300)
  with pytest.raises(ValueError, match=r"prompt has shape \(1, 0\)"):
    generate.sample(model, np.zeros((1, 0), np.int32), 4)


def test_mechanisms_without_a_decode_path_say_so():
  with pytest.raises(NotImplementedError, match="'linear' has no decoding path"):
    generate.sample(tiny_lm("linear"), np.zeros((1, 2), np.int32), 4)


@pytest.mark.slow
def test_cli_samples_from_a_trained_workdir(tmp_path):
  corpus = write_corpus(tmp_path / "text.txt")
  config = tiny_config(corpus, "rfa_gaussian,gated", num_train_steps=2, eval_every=2,
                       checkpoint_every=2)
  train.train_and_evaluate(config, tmp_path / "work")
  env = fixtures.subprocess_env(1)
  command = [sys.executable, "-m", "lra.generate", f"--workdir={tmp_path / 'work'}",
             "--prompt=12: alpha", "--num_tokens=20", "--temperature=0"]
  result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, timeout=300)
  assert result.returncode == 0, result.stderr.decode()
  text = result.stdout.decode("utf-8")
  assert 1 <= len(text) <= 20 and len(text.encode("utf-8", errors="surrogatepass")) <= 60
  model, step = generate.load_model(tmp_path / "work")
  expected = generate.sample(model, np.frombuffer(b"12: alpha", np.uint8)[None].astype(np.int32),
                             20, temperature=0)
  assert step == 2
  assert text == bytes(expected[0].astype(np.uint8)).decode("utf-8", errors="replace")
  with pytest.raises(ValueError, match="holds a 'listops' run"):
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "run.json").write_text('{"config": {"task": "listops"}}')
    generate.load_config(tmp_path / "other")
