"""The fused decoder pass (urlkit.model.fused_decoder) computes transformers' function: the
same scores and LoRA gradients on every path the Reranker takes (plain left-padded batch,
shared-prefix levels with a key/value cache, folded packs), in float32 exactly and with bf16
frozen weights up to bf16 rounding (forced here, whatever this CPU has); and it steps aside
for what it does not handle."""

from __future__ import annotations

import pytest
import torch
from helpers.device import TEST_DEVICE, on_test_device, to_device
from helpers.tiny_reranker import ALL_PROJECTIONS, scores_and_gradients, tiny_reranker
from omegaconf import OmegaConf

from urlkit.build import add_lora
from urlkit.data.format import Document, Query
from urlkit.model.fused_decoder import fused_decoder
from urlkit.model.heads import build_head
from urlkit.model.lora import lora_layers, lora_merged, merge_lora
from urlkit.model.scoring import Reranker, ScoringOptions

QUERIES = [Query(id="q1", text="where do cats sleep", qrels={"d1": 1}),
           Query(id="q2", text="tool for cutting wood", qrels={"d2": 1})]
DOCS = [Document(id="d1", text="Cats sleep in warm, sheltered places such as sunny windowsills."),
        Document(id="d2", text="A hand saw cuts wood."),
        Document(id="d3", title="Tea", text="Steep green tea leaves in water just below boiling."),
        Document(id="d4", text="Rain.")]
# one query's candidates (one folded pass in training), two queries (shared levels and a cache)
PAIRS = {"one-query": [(0, 0), (0, 1), (0, 2), (0, 3)], "two-queries": [(0, 0), (1, 1), (1, 3), (0, 2)]}


def _batch(renderer, pairs):
    return on_test_device(renderer.collate([renderer.encode("Find the passage.", QUERIES[q], DOCS[d]) for q, d in pairs]))


@pytest.mark.parametrize("targets", [ALL_PROJECTIONS, ["q_proj", "v_proj"]], ids=["all-projections", "q-and-v"])
@pytest.mark.parametrize("pairs", PAIRS.values(), ids=PAIRS.keys())
@pytest.mark.parametrize("share_prefix", [True, False], ids=["shared-prefix", "plain-left-padded"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_float32_scores_and_gradients_equal_transformers(targets, pairs, share_prefix, training):
    reranker, renderer = tiny_reranker(targets)
    assert fused_decoder(reranker.decoder) is not None, "the tiny Llama with LoRA takes the fused pass"
    fused = reranker.with_options(share_prefix=share_prefix)
    plain = reranker.with_options(share_prefix=share_prefix, fused_layers=False)
    fused.train(training), plain.train(training)
    batch = _batch(renderer, pairs)
    (fused_scores, fused_grads), (scores, grads) = scores_and_gradients(fused, batch), scores_and_gradients(plain, batch)
    assert torch.allclose(fused_scores, scores, atol=1e-5)
    assert len(grads) == 2 * 2 * len(targets)  # two layers, A and B per adapted projection
    for fused_grad, grad in zip(fused_grads, grads, strict=True):
        assert grad.abs().max() > 0
        assert (fused_grad - grad).norm() / grad.norm() < 1e-5  # float32 sums in another order


@pytest.mark.parametrize("pairs", PAIRS.values(), ids=PAIRS.keys())
def test_bf16_weights_score_and_train_like_transformers_mixed_path(pairs):
    reranker, renderer = tiny_reranker(dtype=torch.bfloat16)
    assert reranker.decoder.get_input_embeddings().weight.dtype == torch.bfloat16
    reranker.train()
    batch = _batch(renderer, pairs)
    (fused_scores, fused_grads), (scores, grads) = (
        scores_and_gradients(reranker, batch), scores_and_gradients(reranker.with_options(fused_layers=False), batch))
    # the tolerances of tests/model/test_mixed_precision.py: bf16 rounding, summed in other orders
    assert torch.allclose(fused_scores, scores, atol=0.05 * scores.abs().max().item())
    reference, _ = tiny_reranker()  # the same weights in float32
    reference.train()
    exact_scores, exact_grads = scores_and_gradients(reference, batch)
    assert torch.allclose(fused_scores, exact_scores, atol=0.05 * exact_scores.abs().max().item())
    for fused_grad, grad, exact in zip(fused_grads, grads, exact_grads, strict=True):
        assert fused_grad.dtype == torch.float32
        assert (fused_grad - grad).norm() / grad.norm() < 0.05
        assert (fused_grad - exact).norm() / exact.norm() < 0.05


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16-mixed", "16-mixed"])
def test_float32_weights_under_an_outer_autocast_train_like_transformers(dtype):
    # Lightning's bf16-mixed and 16-mixed open the autocast around float32 weights: the fused
    # pass's products then come out in its dtype, float32 adapters and all
    reranker, renderer = tiny_reranker()
    reranker.train()
    batch = _batch(renderer, PAIRS["one-query"])
    with torch.autocast(TEST_DEVICE.type, dtype=dtype):
        (fused_scores, fused_grads), (scores, grads) = (
            scores_and_gradients(reranker, batch), scores_and_gradients(reranker.with_options(fused_layers=False), batch))
    assert torch.allclose(fused_scores, scores, atol=0.05 * scores.abs().max().item())
    for fused_grad, grad in zip(fused_grads, grads, strict=True):
        assert fused_grad.dtype == torch.float32
        assert (fused_grad - grad).norm() / grad.norm() < 0.05


def _qwen3_reranker(renderer):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    config = Qwen3Config(vocab_size=len(renderer.tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=512,
                         attn_implementation="sdpa")
    model = Qwen3ForCausalLM(config)
    for layer in model.model.layers:  # q_norm / k_norm start at ones: make them matter
        layer.self_attn.q_norm.weight.data.uniform_(0.5, 1.5)
        layer.self_attn.k_norm.weight.data.uniform_(0.5, 1.5)
    add_lora(model, OmegaConf.create({"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ALL_PROJECTIONS}))
    for name, parameter in model.named_parameters():
        if "lora_B" in name:
            parameter.data.normal_(0, 0.2)
    head = build_head("lm_head", model, [5, 7])
    return on_test_device(Reranker(type("Backbone", (), {"model": model})(), head))


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_qwen3_query_and_key_norms(training):
    _, renderer = tiny_reranker()
    reranker = _qwen3_reranker(renderer)
    assert type(reranker.decoder).__name__ == "Qwen3Model" and fused_decoder(reranker.decoder) is not None
    reranker.train(training)
    for pairs in PAIRS.values():
        batch = _batch(renderer, pairs)
        (fused_scores, fused_grads), (scores, grads) = (
            scores_and_gradients(reranker, batch), scores_and_gradients(reranker.with_options(fused_layers=False), batch))
        assert torch.allclose(fused_scores, scores, atol=1e-5)
        for fused_grad, grad in zip(fused_grads, grads, strict=True):
            assert (fused_grad - grad).norm() / grad.norm() < 1e-5
    reranker.decoder.layers[1].self_attn.sliding_window = 8  # not reproduced: transformers runs it
    assert fused_decoder(reranker.decoder) is None


def _scoring_two_queries():
    """An eval-mode reranker, a two-query batch and the same reranker on transformers' forward."""
    reranker, renderer = tiny_reranker()
    reranker.eval()
    return reranker, _batch(renderer, PAIRS["two-queries"]), reranker.with_options(fused_layers=False)


def test_kept_weights_follow_a_merge_and_its_undoing():
    reranker, batch, plain = _scoring_two_queries()
    with torch.no_grad():
        before = reranker(batch)  # concatenates and keeps the frozen q|k|v and gate|up weights
        with lora_merged(reranker.decoder) as merged:
            assert merged == 2 * len(ALL_PROJECTIONS)
            inside, expected = reranker(batch), plain(batch)
        after = reranker(batch)
    assert torch.allclose(inside, expected, atol=1e-5) and torch.allclose(inside, before, atol=1e-4)
    assert torch.equal(after, before)
    with torch.no_grad():  # a frozen weight written in place is read again, not the kept copy
        reranker.decoder.layers[0].self_attn.k_proj.base_layer.weight.mul_(2)
        assert torch.allclose(reranker(batch), plain(batch), atol=1e-5)
        assert not torch.allclose(reranker(batch), before, atol=1e-3)


def test_kept_weights_follow_peft_merging_for_good_and_unmerging():
    # peft merges through .data (no version bump): the kept weights follow its merged state
    reranker, batch, plain = _scoring_two_queries()
    with torch.no_grad():
        before = reranker(batch)
        assert merge_lora(reranker.decoder) == 2 * len(ALL_PROJECTIONS)
        merged, expected = reranker(batch), plain(batch)
        for layer in lora_layers(reranker.decoder):
            layer.unmerge()
        unmerged = reranker(batch)
    assert torch.allclose(merged, expected, atol=1e-5) and torch.allclose(merged, before, atol=1e-4)
    assert torch.allclose(unmerged, before, atol=1e-5)


def test_training_after_an_inference_mode_evaluation():
    # weights first concatenated under inference_mode are saved for a later backward
    reranker, renderer = tiny_reranker()
    batch = _batch(renderer, PAIRS["one-query"])
    with torch.inference_mode():
        reranker.eval()(batch)
    reranker.train()
    scores, grads = scores_and_gradients(reranker, batch)
    expected_scores, expected_grads = scores_and_gradients(reranker.with_options(fused_layers=False), batch)
    assert torch.allclose(scores, expected_scores, atol=1e-5)
    assert all((g - e).norm() / e.norm() < 1e-5 for g, e in zip(grads, expected_grads, strict=True))


def test_what_it_does_not_handle_runs_through_transformers():
    reranker, renderer = tiny_reranker(dropout=0.1)
    reranker.train()
    assert fused_decoder(reranker.decoder) is None, "LoRA dropout: peft draws one mask per projection"
    reranker.eval()
    assert fused_decoder(reranker.decoder) is None  # a LoRA dropout module is kept in eval mode too
    reranker, _ = tiny_reranker()
    reranker.decoder.gradient_checkpointing = True
    reranker.train()
    assert fused_decoder(reranker.decoder) is None
    reranker.eval()
    assert fused_decoder(reranker.decoder) is not None, "checkpointing applies to training only"
    reranker.decoder.gradient_checkpointing = False
    reranker.decoder.layers[1] = torch.nn.Sequential(reranker.decoder.layers[1])  # a wrapped layer (FSDP)
    assert fused_decoder(reranker.decoder) is None


def test_the_fused_pass_is_an_option_of_the_reranker(monkeypatch):
    reranker, renderer = tiny_reranker(device="cpu")  # the CPU's choice of attention (other on CUDA)
    calls = []
    import urlkit.model.scoring as scoring

    monkeypatch.setattr(scoring, "fused_decoder", lambda decoder, **how: calls.append(how) or None)
    monkeypatch.setattr(scoring, "can_compile", lambda device: True)
    batch = to_device(_batch(renderer, PAIRS["one-query"]), torch.device("cpu"))
    with torch.no_grad():
        reranker.eval()(batch)
        reranker.with_options(fused_layers=False)(batch)
        reranker.train()(batch)
        reranker.with_options(cpu_training_attention="default").train()(batch)
        reranker.with_options(compiled_layers=True).train()(batch)
        reranker.with_options(compiled_layers=False).eval()(batch)
    reranker.eval()(batch)  # gradients on: eager
    monkeypatch.setattr(scoring, "can_compile", lambda device: False)  # no C++ compiler: eager
    with torch.no_grad():
        reranker.eval()(batch)
    # attention computed by the pass itself where the reranker would pick SDPA's math kernel;
    # compiled by default where measured faster: eval mode, no gradients, low-precision weights
    # (below; not these float32 ones), a CPU that can compile
    expected = [(False, False), (True, False), (False, False), (True, True), (False, False), (False, False), (False, False)]
    modes = [False, True, True, True, False, False, False]  # training-mode passes: rows rounded up to 8
    assert calls == [{"explicit_attention": explicit, "compiled": compiled, "token_multiple": 8 if training else 1,
                      "read_only": True, "banded": True} for (explicit, compiled), training in zip(expected, modes, strict=True)]
    assert ScoringOptions().fused_layers and ScoringOptions().compiled_layers is None
    assert ScoringOptions().token_multiple is None
    with pytest.raises(ValueError, match="token_multiple must be a positive int or None, got 0"):
        ScoringOptions(token_multiple=0)
    calls.clear()  # training on a GPU (asked directly: none is needed to choose): rows as they are
    inputs = {key: batch[key] for key in ("input_ids", "attention_mask")}
    reranker.train()._pass(inputs, torch.device("cuda"))
    reranker.with_options(token_multiple=16)._pass(inputs, torch.device("cuda"))
    reranker.with_options(read_only_last_layer=False)._pass(inputs, torch.device("cuda"))
    reranker.with_options(banded_attention=False)._pass(inputs, torch.device("cuda"))
    assert [how["token_multiple"] for how in calls] == [1, 16, 1, 1]
    assert [how["read_only"] for how in calls] == [True, True, False, True]
    assert [how["banded"] for how in calls] == [True, True, True, False]
    calls.clear()  # bf16 frozen weights: a long scoring job compiles where the CPU can, training never does
    low, low_renderer = tiny_reranker(dtype=torch.bfloat16, device="cpu")
    low_batch = to_device(_batch(low_renderer, PAIRS["one-query"]), torch.device("cpu"))
    long_job = low.with_options(job_tokens=ScoringOptions().compile_from_tokens)
    monkeypatch.setattr(scoring, "can_compile", lambda device: True)
    with torch.no_grad():
        long_job.eval()(low_batch)
        low.eval()(low_batch)  # a job of unknown size (one call): the compile would not pay
        low.with_options(job_tokens=ScoringOptions().compile_from_tokens - 1).eval()(low_batch)
        low.with_options(job_tokens=50, compile_from_tokens=50).eval()(low_batch)
        long_job.train()(low_batch)
        long_job.with_options(compiled_layers=False).eval()(low_batch)
    monkeypatch.setattr(scoring, "can_compile", lambda device: False)
    with torch.no_grad():
        long_job.eval()(low_batch)
    assert [how["compiled"] for how in calls] == [True, False, False, True, False, False, False]
    for bad in ({"job_tokens": -1}, {"compile_from_tokens": 1.5}):
        with pytest.raises(ValueError, match=f"{next(iter(bad))} must be a non-negative int"):
            ScoringOptions(**bad)


def test_rerank_split_compiles_the_layers_of_a_job_long_enough_to_pay_for_it(tmp_path, monkeypatch):
    # model.compile=auto: rerank_split tells the reranker its job's prompt tokens; a split that
    # reaches compile_from_tokens scores through compiled layers, one token fewer eagerly
    from helpers.run_helpers import first_documents_ranking, write_small_dataset

    import urlkit.model.scoring as scoring
    from urlkit.data.loaders import load_split
    from urlkit.evaluation.rerank import rerank_split

    calls = []
    monkeypatch.setattr(scoring, "fused_decoder", lambda decoder, **how: calls.append(how["compiled"]) or None)
    monkeypatch.setattr(scoring, "can_compile", lambda device: True)
    reranker, renderer = tiny_reranker(dtype=torch.bfloat16, device="cpu")
    split = load_split(write_small_dataset(tmp_path / "data"), "test")
    ranking = first_documents_ranking(split, 3)
    tokens = sum(len(renderer.encode(split.instruction_for(q), q, split.corpus[d]).input_ids)
                 for q in split.queries for d, _ in ranking[q.id][:3])
    for threshold, compiled in ((tokens, True), (tokens + 1, False)):
        calls.clear()
        long_enough = reranker.with_options(compile_from_tokens=threshold)
        rerank_split(long_enough, renderer, split, ranking, depth=3, batch_size=4, progress=False)
        assert calls and set(calls) == {compiled}, (threshold, tokens, calls)
    assert reranker.options.job_tokens == 0  # a view scored the job; the reranker itself is unchanged


@pytest.mark.timeout(300)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bf16"])
def test_compiled_layers_score_and_train_as_the_eager_pass(dtype, monkeypatch):
    # torch.compile of the layers' halves (inductor: a C++ compiler here, Triton on a GPU) on
    # every path of the pass: plain, shared levels with a cache, folded packs; forced in training too
    import urlkit.model.fused_decoder as fused
    from urlkit.hardware import can_compile

    calls, compiled_halves = [], fused.compiled_halves

    def counted(shape):
        before, after = compiled_halves(shape)
        return (lambda *args: calls.append(len(args[0])) or before(*args)), after

    monkeypatch.setattr(fused, "compiled_halves", counted)

    if not can_compile(TEST_DEVICE):
        pytest.skip(f"inductor finds no toolchain for {TEST_DEVICE} here")
    reranker, renderer = tiny_reranker(dtype=dtype)
    # rows as they come (token_multiple=1): the graphs must serve many token counts
    compiled, eager = (reranker.with_options(compiled_layers=flag, token_multiple=1) for flag in (True, False))
    tolerance = 1e-5 if dtype == torch.float32 else 0.05  # bf16: the relative tolerances of the test above
    for pairs in PAIRS.values():
        batch = _batch(renderer, pairs)
        for sharing in ({"share_prefix": True}, {"share_prefix": True, "fold": False}, {"share_prefix": False}):
            scored, expected = (r.with_options(**sharing) for r in (compiled, eager))
            scored.eval(), expected.eval()
            with torch.inference_mode():
                scores, eager_scores = scored(batch), expected(batch)
            assert torch.allclose(scores, eager_scores, atol=tolerance * eager_scores.abs().max().item())
        compiled.train(), eager.train()
        (scores, grads), (eager_scores, eager_grads) = (scores_and_gradients(compiled, batch),
                                                        scores_and_gradients(eager, batch))
        assert torch.allclose(scores, eager_scores, atol=tolerance * eager_scores.abs().max().item())
        for grad, expected_grad in zip(grads, eager_grads, strict=True):
            assert (grad - expected_grad).norm() / expected_grad.norm() < tolerance
    # two layers a pass; 8 scoring calls, the unfolded ones in several passes (levels reading
    # a cache); one graph a half for passes of many token counts
    assert len(calls) > 2 * 8 and len(calls) % 2 == 0, calls
    assert len(set(calls)) >= 5, calls


def test_model_compile_reaches_the_reranker_and_a_bad_value_names_the_key(tmp_path):
    from helpers.run_helpers import compose_train, write_small_dataset

    from urlkit.build import build_reranker
    from urlkit.errors import ConfigError

    data = write_small_dataset(tmp_path / "data")
    for value, expected in (("auto", None), ("true", True), ("false", False)):
        built = build_reranker(compose_train(data, f"model.compile={value}"), trainable=False)
        assert built.reranker.options.compiled_layers is expected
    with pytest.raises(ConfigError, match="model.compile='sometimes'"):
        build_reranker(compose_train(data, "model.compile=sometimes"), trainable=False)


@pytest.mark.parametrize("multiple", [7, 64])
def test_rows_rounded_up_to_a_token_multiple_change_no_score_or_gradient(multiple, monkeypatch):
    # zero rows appended to a pass for the products' sake (token_multiple) never reach a real
    # token: the same scores and gradients on every path as rows taken as they come
    import urlkit.model.fused_decoder as fused

    rows, project, attention, read_states = [], fused._project, fused.grouped_attention, fused._read_states
    reading = []  # inside the last layer's output half for the read tokens: rows as they come

    def counted_project(x, operands):
        if not reading:
            rows.append(len(x))
        return project(x, operands)

    def read_tokens_states(*args):
        reading.append(True)
        try:
            return read_states(*args)
        finally:
            reading.clear()

    monkeypatch.setattr(fused, "_project", counted_project)
    monkeypatch.setattr(fused, "_read_states", read_tokens_states)
    # training's explicit attention, dense: its width and keys, both rounded (the banded one's
    # blocks and spans are multiples of 32 and 8 whatever the pass: tests/model/test_grouped_attention.py)
    monkeypatch.setattr(fused, "grouped_attention", lambda q, k, v, plan, *args: rows.extend(
        (plan.width, plan.keys)) or attention(q, k, v, plan, *args))
    reranker, renderer = tiny_reranker()
    padded, unpadded = (reranker.with_options(token_multiple=m, compiled_layers=False, banded_attention=False)
                        for m in (multiple, 1))
    for pairs in PAIRS.values():
        batch = _batch(renderer, pairs)
        for sharing in ({"share_prefix": True}, {"share_prefix": True, "fold": False}, {"share_prefix": False}):
            for training in (True, False):
                scored, expected = (r.with_options(**sharing).train(training) for r in (padded, unpadded))
                rows.clear()
                scores, grads = scores_and_gradients(scored, batch)
                assert rows and all(count % multiple == 0 for count in rows), rows
                rows.clear()
                expected_scores, expected_grads = scores_and_gradients(expected, batch)
                assert any(count % multiple for count in rows), "the test must pad something"
                assert torch.allclose(scores, expected_scores, atol=1e-5)
                for grad, expected_grad in zip(grads, expected_grads, strict=True):
                    assert (grad - expected_grad).norm() / expected_grad.norm() < 1e-5


def test_the_last_layer_computes_only_the_states_that_are_scored(monkeypatch):
    # one state a prompt is read (its last token); the last layer's output half (o, MLP, final
    # norm) runs for those alone and not at all for a shared level (only its keys and values are
    # read): the same scores and gradients as computing every token's state, fewer product rows
    import urlkit.model.fused_decoder as fused

    rows, read_rows, project, read_states = [], [], fused._project, fused._read_states
    monkeypatch.setattr(fused, "_project", lambda x, operands: rows.append(len(x)) or project(x, operands))
    monkeypatch.setattr(fused, "_read_states", lambda hidden, *args: read_rows.append(len(hidden)) or read_states(
        hidden, *args))
    reranker, renderer = tiny_reranker()
    read_only, every_state = (reranker.with_options(read_only_last_layer=flag, compiled_layers=False, token_multiple=1)
                              for flag in (True, False))
    for pairs in PAIRS.values():
        batch = _batch(renderer, pairs)
        for sharing in ({"share_prefix": True}, {"share_prefix": True, "fold": False}, {"share_prefix": False}):
            for training in (True, False):
                scored, expected = (r.with_options(**sharing).train(training) for r in (read_only, every_state))
                rows.clear(), read_rows.clear()
                scores, grads = scores_and_gradients(scored, batch)
                assert sum(read_rows) == len(pairs), read_rows  # each prompt's state, once
                computed = sum(rows)
                rows.clear(), read_rows.clear()
                expected_scores, expected_grads = scores_and_gradients(expected, batch)
                assert not read_rows
                # the skipped rows: every unread token's o, gate|up and down products
                assert computed < sum(rows) - 3 * len(pairs), (computed, sum(rows))
                assert torch.allclose(scores, expected_scores, atol=1e-6)
                for grad, expected_grad in zip(grads, expected_grads, strict=True):
                    assert (grad - expected_grad).norm() / expected_grad.norm() < 1e-5
