"""The tiny Qwen2: built in code, saved, loaded back with the Auto classes verl uses, generates and stops."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from verl_resrl.tiny import model as tiny_model
from verl_resrl.tiny.tokenizer import save_tokenizer


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny_model")
    model = tiny_model.build_model()
    tiny_model.save_model(model, str(out))
    save_tokenizer(str(out))
    return model, str(out)


def test_size_and_architecture(saved):
    model, _ = saved
    config = model.config
    assert config.model_type == "qwen2"
    assert (config.hidden_size, config.num_hidden_layers, config.vocab_size) == (128, 4, 260)
    assert config.tie_word_embeddings and model.lm_head.weight is model.model.embed_tokens.weight
    assert 500_000 <= tiny_model.count_parameters(model) <= 2_000_000


def test_auto_classes_load_the_same_weights(saved):
    model, path = saved
    loaded = AutoModelForCausalLM.from_pretrained(path)
    assert type(loaded).__name__ == "Qwen2ForCausalLM"
    assert loaded.config._attn_implementation == "sdpa"
    assert next(loaded.parameters()).dtype == torch.float32
    ids = torch.tensor([[257, 117, 115, 101, 114, 10, 49, 43, 50]])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, loaded(ids).logits)


def test_init_seed_decides_the_weights():
    same = [tiny_model.build_model(tiny_model.TinyModelConfig(init_seed=7)) for _ in range(2)]
    other = tiny_model.build_model(tiny_model.TinyModelConfig(init_seed=8))
    first, second, third = (m.model.embed_tokens.weight for m in (*same, other))
    assert torch.equal(first, second) and not torch.equal(first, third)


def test_generate_stops_at_im_end_and_pads_with_pad(saved):
    model, path = saved
    tokenizer = AutoTokenizer.from_pretrained(path)
    loaded = AutoModelForCausalLM.from_pretrained(path)
    im_end, endoftext = tokenizer.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
    assert loaded.generation_config.eos_token_id == [im_end, endoftext]
    assert loaded.generation_config.pad_token_id == tokenizer.pad_token_id
    # make <|im_end|> by far the likeliest token after 3 steps: output bias on the LM head's input is hard with tied
    # embeddings, so force it through a logits processor that the generation must honour
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Compute 1+2."}], add_generation_prompt=True)
    ids = torch.tensor([prompt["input_ids"]] * 2)

    def force_stop(batch_row, prefix):
        return [im_end] if prefix.shape[0] - ids.shape[1] >= 3 else list(range(256))

    torch.manual_seed(0)
    out = loaded.generate(ids, max_new_tokens=10, do_sample=True, prefix_allowed_tokens_fn=force_stop)
    new = out[:, ids.shape[1] :]
    assert new.shape[1] == 4 and (new[:, 3] == im_end).all() and (new[:, :3] < 256).all()


FINGERPRINT = ("import sys, torch; torch.set_num_threads(int(sys.argv[1])); from verl_resrl.tiny import model as m; "
               "print(m.weights_sha256(m.build_model()))")


def test_the_initial_weights_fingerprint_does_not_depend_on_threads_or_process():
    """The seeded initialisation is the same bits in any process and thread count (build fact initial_weights_sha256)."""
    import subprocess
    import sys

    prints = {subprocess.run([sys.executable, "-c", FINGERPRINT, str(n)], capture_output=True, text=True,
                             check=True, timeout=120).stdout.strip() for n in (1, 2)}
    assert prints == {tiny_model.weights_sha256(tiny_model.build_model())}


def test_the_fingerprint_sees_one_ulp_and_survives_a_save(saved):
    model, path = saved
    loaded = AutoModelForCausalLM.from_pretrained(path)
    assert tiny_model.weights_sha256(loaded) == tiny_model.weights_sha256(model)
    with torch.no_grad():
        w = loaded.model.layers[0].mlp.up_proj.weight
        w[3, 5] = torch.nextafter(w[3, 5], torch.tensor(float("inf")))
    assert tiny_model.weights_sha256(loaded) != tiny_model.weights_sha256(model)
