"""A GGUF file's vocabulary alone (no weights), through llama.cpp: exact local tokenize
and detokenize for backends whose model runs elsewhere (an HTTP server) or in
another framework (transformers).

    vocab = GGUFVocab("smollm2-135m")      # catalogue name, alias or .gguf path
    vocab.tokenize("Hi", add_bos=True)    # the same ids the embedded backend gives
"""
from __future__ import annotations

import hashlib
import threading


class GGUFVocab:
    def __init__(self, name_or_path: str):
        import llama_cpp

        from ..models import resolve

        self.path = resolve(name_or_path)[0]
        self._llama_cpp = llama_cpp
        self.llm = llama_cpp.Llama(model_path=str(self.path), vocab_only=True, verbose=False)
        self._lock = threading.Lock()  # llama.cpp's tokenizer is not documented as thread-safe

    def tokenize(self, text: str, *, add_bos: bool = False, special: bool = True) -> list[int]:
        with self._lock:
            return self.llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=special)

    def detokenize(self, ids: list[int], special: bool = False) -> bytes:
        with self._lock:
            return self.llm.detokenize(list(ids), special=special)

    def is_eog(self, token: int) -> bool:
        return bool(self._llama_cpp.llama_vocab_is_eog(self.llm._model.vocab, token))

    def props(self) -> dict:
        """Chat template and the texts of BOS and EOS, as the embedded backend reads them."""
        get = self.llm._model.token_get_text
        bos = self.llm.token_bos()
        return {"chat_template": self.llm.metadata.get("tokenizer.chat_template"),
                "bos_text": get(bos) if bos >= 0 else "", "eos_text": get(self.llm.token_eos())}

    def fingerprint(self) -> str:
        """The embedded llama.cpp backend's ``tokenizer_key`` for this vocabulary, so a
        backend using this vocabulary hands token ids to it unchanged."""
        return vocab_fingerprint(self.llm)


def vocab_fingerprint(llm) -> str:
    """A fingerprint of a ``llama_cpp.Llama``'s vocabulary: equal keys mean ids mean the same text."""
    h = hashlib.sha256()
    get = llm._model.token_get_text
    for i in range(llm.n_vocab()):
        h.update(get(i).encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    return h.hexdigest()[:16]
