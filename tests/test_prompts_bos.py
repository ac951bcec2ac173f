"""BOS per model: each model reads the prompt with exactly one BOS where it wants one
(``prompts.prompt_ids``, from ``adds_bos``), so a pair of models with different BOS rules
(or a base whose template leaves BOS text in the prompt) never doubles or drops it."""
import pytest

from guided_inference.config import GenerationConfig
from guided_inference.engine import guided_generate
from guided_inference.prompts import chat_prompt, prompt_ids


@pytest.mark.parametrize("name", ["smol", "gemma", "qwen_base"])
def test_prompt_carries_no_bos_text_and_tokenizer_adds_exactly_one(name, request):
    backend = request.getfixturevalue(name)
    text = chat_prompt(backend, "What is 2+2?")
    ids = prompt_ids(backend, text)
    bos = backend.llm.token_bos()
    if backend.adds_bos:  # Gemma: BOS added by the tokenizer, so not in the text
        assert ids[0] == bos and ids.count(bos) == 1 and not text.startswith(backend.bos_text)
    elif bos >= 0 and backend.bos_text and text.startswith(backend.bos_text):
        assert ids[0] == bos and ids.count(bos) >= 1  # SmolLM2: its "BOS" <|im_start|> is template text


def test_prompt_that_already_leads_with_bos_text_is_not_given_a_second(gemma):
    text = gemma.bos_text + "Question: hi\nAnswer:"
    ids = prompt_ids(gemma, text)
    assert ids.count(gemma.llm.token_bos()) == 1 and ids[0] == gemma.llm.token_bos()


def test_gemma_without_template_gets_plain_frame_and_one_bos(gemma):
    text = chat_prompt(gemma, "Name a colour.")
    assert text == "Question: Name a colour.\nAnswer:" and gemma.adds_bos
    assert gemma.tokenize(text, add_bos=True).count(gemma.llm.token_bos()) == 1


def test_text_handoff_pair_each_model_reads_its_own_bos(smol, gemma):
    """SmolLM2 base (its template) with a Gemma oracle: Gemma's ids start with its one BOS."""
    seen = []

    class Spy:
        def __init__(self, inner):
            self.inner = inner

        def __getattr__(self, n):
            return getattr(self.inner, n)

        def generate(self, context, *a, **kw):
            seen.append(list(context))
            return self.inner.generate(context, *a, **kw)

    prompt = chat_prompt(smol, "Say hello.")
    trace = guided_generate(prompt, smol, Spy(gemma), GenerationConfig(policy="always", c=1, k=3, max_new_tokens=6))
    assert trace.handoff == "text" and seen
    assert seen[0].count(gemma.llm.token_bos()) == 1 and seen[0][0] == gemma.llm.token_bos()
