#!/usr/bin/env python3
"""Generate the tokenizer exactness fixtures under tests/tok/data/ with
Hugging Face `tokenizers` (the reference). Run from the repository root:

    /work/venv/bin/python tests/tok/gen/gen_cases.py [SHARED_DIR] [GRPO_EXE]

Writes:
  data/deepseek_hard.jsonl   harder cases on the DeepSeek-V3 tokenizer from
                             SHARED_DIR/fixtures/deepseek-v3-tokenizer
  data/<family>/             small tokenizers built here with `tokenizers`
                             (a BPE trained on a few KB of text, then the
                             pipeline of each family or feature), each with
                             tokenizer.json, tokenizer_config.json, cases.jsonl
  data/dup_added/            data/added's tokenizer.json with added tokens
                             listed twice (other flags, other ids, identical,
                             empty), written as is: HF's AddedVocabulary
                             semantics for duplicates (later flags, the same
                             id, special once special, the normalized form of
                             an id kept)
  data/bytelevel/            the output of `grpo tokenize --write-bytelevel`
                             (when GRPO_EXE is given) with the ids HF gives

A case line: {"text": str | "text_hex": hex, "ids": [...] (add_special_tokens
False), "ids_add": [...] (True), "ids_special_as_text": [...]
(encode_special_tokens True), "decoded": str, "decoded_skip": str}.
Invalid UTF-8 cases carry "text_hex" and "lossy_ids" (ids of the text after
bytes.decode("utf-8", "replace")). Decode-only cases: {"decode_ids": [...],
"decoded": ..., "decoded_skip": ...}.
"""
import json
import os
import random
import subprocess
import sys

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(os.path.dirname(HERE), "data")
SHARED = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "../../../../shared")
GRPO = sys.argv[2] if len(sys.argv) > 2 else None

LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
          r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
         r"|\s*[\r\n]+|\s+(?!\S)|\s+")

rng = random.Random(1234)

# Texts every tokenizer sees (hand-written, plus generated stress cases).
COMMON = [
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "  leading spaces and trailing   ",
    "x = 12345678901234567890; y = x ** 2 # 3.14159265358979",
    "def f(a, b):\n    return a + b\n\n\nprint(f(2, 3))\n",
    "我们来计算一下这个问题的答案。Mixed 中文 and English 混合在一起, 123个苹果.",
    "日本語のテキストとカタカナ、ひらがな。한국어 문장도 들어갑니다.",
    "Emoji 😀🎉👩‍👩‍👧‍👦 👍🏽 and flags 🇯🇵🇫🇷, symbols ©®™ ≤ ≥ ∑ ∫",
    "Combining: e\u0301 a\u0300\u0316 n\u0303 \u0915\u093f \u05e9\u05c1\u05b8 Z\u0351\u0352\u0353",
    "Line one\r\nLine two\r\n\r\n\r\nLine five\ttab\r\n",
    "\r\n\r\n\r\n",
    "      ",
    "\t \t\n  \u00a0\u3000 \u2003",
    "a\u180eb c\u180e d",
    "\n",
    "a",
    "don't WON'T Can't I'M you're it's she'LL we'D ſ'S",
    "\\frac{1}{2} + \\sqrt{3} = \\dfrac{2+\\sqrt{12}}{4} and $\\boxed{\\frac{3}{4}}$.",
    "URL: https://example.com/path?query=1&b=2#frag  email: a.b@c.de",
    "((((nested)))) [[brackets]] {{braces}} !!!???...,,,;;;",
    "Ünïcödé àccents éèê naïve café ｆｕｌｌｗｉｄｔｈ ＡＢＣ １２３ ﬁ ℌ ①",
    "Привет, как дела? Всё хорошо. مرحبا بالعالم",
    "9" * 50 + " " + "1234567" * 11,
    "٣٤٥ ১২৩ ⅣⅫ ½ ²³",
    "tab\tsep\tvalues\t\t\tend",
    "for (int i = 0; i < n; ++i) { sum += a[i]; }\n\t\treturn sum;",
    " ",
    "  \n  \n",
    "   x",
    "x   ",
]

STRESS = [
    "supercalifragilisticexpialidocious" * 40,
    "".join(rng.choice("abcdefgh") for _ in range(6000)),
    "a" * 5000,
    "".join(rng.choice("0123456789") for _ in range(3000)),
    " " * 3000 + "x",
    "\r\n" * 500,
    "".join(chr(rng.choice([0x4e00 + rng.randrange(2000), 0x3042 + rng.randrange(80), 0x41 + rng.randrange(26)]))
            for _ in range(2000)),
]

# Random texts over a pool of character classes and token fragments (a
# differential fuzz against HF, seeded so the fixture is reproducible).
POOL = (list("abcXYZ019  \t\n\r.,;:!?'\"-_()[]{}<>|/\\$%&*+=#@^~`")
        + ["\r\n", "   ", "'s", "'LL", "123", "4567", "éàü", "e\u0301", "\u0300\u0301", "ß", "ſ", "ﬁ", "Ω",
           "中文", "计算", "龥", "ひらがな", "カタカナ", "ｰ", "한국", "😀", "👩\u200d💻", "🇯🇵", "\u200d", "\u00a0",
           "\u3000", "\u180e", "\u2028", "\u2003", "\u0085", "مرحبا", "नमस्ते", "ＡＢ", "１２", "∑∫≤", "½",
           "٣", "<｜", "｜>", "<think>", "</think>", "<｜User｜>", "<｜Assistant｜>", "<|EOT|>",
           "<｜end▁of▁sentence｜>", "<|begin_of_text|>", "<|im_end|>", "<lst>", "<rst>", "cat", "<sp>"])


def random_texts(n, seed):
    r = random.Random(seed)
    return ["".join(r.choice(POOL) for _ in range(r.randrange(1, 60))) for _ in range(n)]


INVALID = [b"abc\xffdef", b"\xe4\xbd", b"ok \xed\xa0\x80 surrogate", b"\xf0\x9f\x98 x \xc0\xaf",
           b"\xf4\x90\x80\x80 beyond", b"trailing \xe6\x97"]


def specials_of(tk):
    return [t.content for t in tk.get_added_tokens_decoder().values()]


def special_texts(tk):
    """Texts that contain the tokenizer's added-token strings."""
    toks = [t for t in tk.get_added_tokens_decoder().values()]
    out = []
    if not toks:
        return out
    for t in toks[:6]:
        out.append(f"before{t.content}after")
        out.append(f"  spaced  {t.content}  out  ")
        out.append(f"{t.content}{t.content}")
        out.append(f"word{t.content}word {t.content}")
    out.append("".join(t.content for t in toks[:8]))
    out.append("partial " + toks[0].content[:-1] + " and " + toks[0].content[1:])
    return out


def case(tk, text):
    enc = tk.encode(text, add_special_tokens=False).ids
    add = tk.encode(text, add_special_tokens=True).ids
    tk.encode_special_tokens = True
    sat = tk.encode(text, add_special_tokens=False).ids
    tk.encode_special_tokens = False
    row = {"text": text, "ids": enc}
    # only when they differ from "ids" (keeps the fixtures small)
    if add != enc:
        row["ids_add"] = add
    if sat != enc:
        row["ids_special_as_text"] = sat
    row["decoded"] = tk.decode(enc, skip_special_tokens=False)
    row["decoded_skip"] = tk.decode(enc, skip_special_tokens=True)
    return row


def decode_case(tk, ids):
    return {"decode_ids": ids, "decoded": tk.decode(ids, skip_special_tokens=False),
            "decoded_skip": tk.decode(ids, skip_special_tokens=True)}


def cases_for(tk, extra=(), stress=True):
    """stress=False keeps only the first 400 characters of each stress text."""
    st = STRESS if stress else [t[:400] for t in STRESS]
    out = [case(tk, t) for t in COMMON + list(extra) + special_texts(tk) + st]
    for b in INVALID:
        out.append({"text_hex": b.hex(),
                    "lossy_ids": tk.encode(b.decode("utf-8", "replace"), add_special_tokens=False).ids})
    n = tk.get_vocab_size()
    ids = tk.encode("héllo 世界 😀", add_special_tokens=False).ids
    out.append(decode_case(tk, ids))
    out.append(decode_case(tk, list(reversed(ids))))          # broken UTF-8 byte order
    out.append(decode_case(tk, ids[1:] + [n + 5, n + 100]))    # unknown ids are dropped
    specials = [i for i in range(n) if tk.id_to_token(i) in specials_of(tk)]
    out.append(decode_case(tk, specials[:4] + ids + specials[:2]))
    return out


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def corpus():
    texts = []
    for name in ["gsm8k_test.jsonl", "humaneval.jsonl"]:
        with open(os.path.join(SHARED, "data", name), encoding="utf-8") as f:
            for i, line in enumerate(f):
                if i >= 120:
                    break
                d = json.loads(line)
                texts.append(d.get("question") or d.get("prompt") or "")
                texts.append(d.get("answer") or d.get("canonical_solution") or "")
    texts += COMMON * 3
    return texts


def train(model, pre, vocab_size, specials, **trainer_kw):
    tk = Tokenizer(model)
    tk.pre_tokenizer = pre
    tr = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                             **trainer_kw)
    tk.train_from_iterator(corpus(), tr)
    return tk


def save_family(name, tk, config, extra=(), stress=False, n_random=20):
    d = os.path.join(DATA, name)
    os.makedirs(d, exist_ok=True)
    tk.save(os.path.join(d, "tokenizer.json"), pretty=False)
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump(config, f, ensure_ascii=False, indent=1)
    # reload from disk: the cases come from exactly the committed file
    tk = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
    extra = list(extra) + random_texts(n_random, name)
    write_jsonl(os.path.join(d, "cases.jsonl"), cases_for(tk, extra, stress))
    print(name, tk.get_vocab_size(), "ids")


def with_json(tk, edit):
    """A copy of tk with its JSON edited by edit(dict)."""
    j = json.loads(tk.to_str())
    edit(j)
    return Tokenizer.from_str(json.dumps(j))


def families():
    bl_alpha = pre_tokenizers.ByteLevel.alphabet()
    bl_last = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)

    # Llama-3 style: Split(Llama-3 regex) + ByteLevel, ignore_merges, TemplateProcessing BOS.
    tk = train(models.BPE(ignore_merges=True),
               pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(LLAMA3), "isolated"), bl_last]),
               600, ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"], initial_alphabet=bl_alpha)
    tk.decoder = decoders.ByteLevel()
    bos = tk.token_to_id("<|begin_of_text|>")
    tk = with_json(tk, lambda j: j.update(post_processor={
        "type": "Sequence", "processors": [
            {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
            {"type": "TemplateProcessing",
             "single": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                        {"Sequence": {"id": "A", "type_id": 0}}],
             "pair": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                      {"Sequence": {"id": "A", "type_id": 0}},
                      {"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 1}},
                      {"Sequence": {"id": "B", "type_id": 1}}],
             "special_tokens": {"<|begin_of_text|>": {"id": "<|begin_of_text|>", "ids": [bos],
                                                      "tokens": ["<|begin_of_text|>"]}}}]}))
    save_family("llama3", tk, {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"},
                stress=True, n_random=150)
    base = tk

    # Qwen2 style: NFC, Split(Qwen2 regex) + ByteLevel, added tokens not in the vocab.
    tk = train(models.BPE(),
               pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(QWEN2), "isolated"), bl_last]),
               600, [], initial_alphabet=bl_alpha)
    tk.normalizer = normalizers.NFC()
    tk.decoder = decoders.ByteLevel()
    tk.add_special_tokens(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    save_family("qwen2", tk, {"bos_token": None, "eos_token": "<|im_end|>",
                              "pad_token": "<|endoftext|>", "add_bos_token": False}, stress=True,
                n_random=150)

    # GPT-2 style: ByteLevel(add_prefix_space, use_regex) alone, merges written "a b".
    tk = train(models.BPE(), pre_tokenizers.ByteLevel(add_prefix_space=True), 500,
               ["<|endoftext|>"], initial_alphabet=bl_alpha)
    tk.decoder = decoders.ByteLevel()
    tk = with_json(tk, lambda j: j["model"].update(
        merges=[" ".join(m) if isinstance(m, list) else m for m in j["model"]["merges"]]))
    save_family("gpt2", tk, {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>"})

    def pre(*steps):
        return lambda j: j.update(pre_tokenizer={"type": "Sequence", "pretokenizers": list(steps)})

    BL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}

    def split(pattern, behavior, invert=False, literal=False):
        return {"type": "Split", "pattern": {"String" if literal else "Regex": pattern},
                "behavior": behavior, "invert": invert}

    variants = {
        "split_removed": pre(split(r"\s+", "Removed"), BL),
        "split_prev": pre(split(" ", "MergedWithPrevious", literal=True), BL),
        "split_next": pre(split(r"\p{P}", "MergedWithNext"), BL),
        "split_contig": pre(split(r"[0-9a]", "Contiguous"), BL),
        "split_invert": pre(split(r"\p{L}+", "Isolated", invert=True), BL),
        "split_removed_invert": pre(split(r"\p{L}+|\p{N}", "Removed", invert=True), BL),
        "split_empty_matches": pre(split(r"x*", "Isolated"), BL),
        "split_prev_empty": pre(split(r"\d*", "MergedWithPrevious"), BL),
        "digits": pre({"type": "Digits", "individual_digits": False}, BL),
        "digits_individual": pre({"type": "Digits", "individual_digits": True},
                                 {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                                  "use_regex": True}),
    }
    for name, edit in variants.items():
        save_family(name, with_json(base, edit), {"bos_token": "<|begin_of_text|>"})

    # Added-token flags under an NFKC normalizer.
    def added(j):
        j["normalizer"] = {"type": "NFKC"}
        j["pre_tokenizer"] = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                              "use_regex": True}
        j["post_processor"] = None
        nxt = max(j["model"]["vocab"].values()) + 1
        toks = [("<lst>", dict(lstrip=True, special=True, normalized=False)),
                ("<rst>", dict(rstrip=True, special=True, normalized=False)),
                ("<both>", dict(lstrip=True, rstrip=True, special=False, normalized=False)),
                ("cat", dict(single_word=True, special=False, normalized=True)),
                ("Ｘｙ", dict(special=False, normalized=True)),
                ("ﬁne", dict(special=True, normalized=False)),
                ("<sp>", dict(special=True, normalized=False)),
                ("<sp>x", dict(special=False, normalized=False)),
                ("é", dict(single_word=True, special=False, normalized=True))]
        for i, (c, f) in enumerate(toks):
            t = {"id": nxt + i, "content": c, "single_word": False, "lstrip": False, "rstrip": False,
                 "normalized": True, "special": False}
            t.update(f)
            j["added_tokens"].append(t)

    extra = ["x <lst> y <rst>  z", "  <both>  | \t<both>\n", "cat concat cats cat. (cat) _cat 3cat",
             "Ｘｙ Xy xy ＸＹ", "ﬁne fine <sp> <sp>x <sp>xx", "cafe\u0301 caf\u00e9 é e\u0301 xé",
             "<lst><lst> <rst><rst>", "a\u00a0<lst>\u00a0b\u3000<rst>\u3000c"]
    save_family("added", with_json(base, added), {}, extra, n_random=150)

    # Non-byte-level BPE: byte_fallback + unk + continuing_subword_prefix/end_of_word_suffix.
    def chars_model(byte_fallback, fuse_unk, prefix, suffix):
        def edit(j):
            m = j["model"]
            j["pre_tokenizer"] = split(r"\s+", "Removed")
            j["decoder"] = None
            j["post_processor"] = None
            m.update(unk_token="<unk>", byte_fallback=byte_fallback, fuse_unk=fuse_unk,
                     continuing_subword_prefix=prefix, end_of_word_suffix=suffix)
            if byte_fallback:
                nxt = max(m["vocab"].values()) + 1
                for b in range(256):
                    m["vocab"][f"<0x{b:02X}>"] = nxt + b
        return edit

    tk = train(models.BPE(unk_token="<unk>"), pre_tokenizers.Split(Regex(r"\s+"), "removed"), 400,
               ["<unk>", "<s>"])
    save_family("fallback", with_json(tk, chars_model(True, False, None, None)), {"bos_token": "<s>"})
    save_family("unk_fused", with_json(tk, chars_model(False, True, None, None)), {"bos_token": "<s>"})
    save_family("unk_plain", with_json(tk, chars_model(False, False, None, None)), {"bos_token": "<s>"})
    tk = train(models.BPE(unk_token="<unk>", continuing_subword_prefix="##", end_of_word_suffix="</w>"),
               pre_tokenizers.Split(Regex(r"\s+"), "removed"), 400, ["<unk>"],
               continuing_subword_prefix="##", end_of_word_suffix="</w>")
    save_family("prefix_suffix", with_json(tk, chars_model(False, False, "##", "</w>")), {})


def dup_added():
    """Duplicate added_tokens entries, written without HF's re-serialization
    (which would merge them), then the cases HF gives for that file."""
    j = json.load(open(os.path.join(DATA, "added", "tokenizer.json"), encoding="utf-8"))

    def t(i, content, **flags):
        d = {"id": i, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": True, "special": False}
        d.update(flags)
        return d

    j["added_tokens"] += [
        t(606, "<sp>", normalized=True, lstrip=True),             # flags replaced, stays special
        t(603, "cat", special=True),                              # now special, not single_word
        t(900, "<both>", lstrip=True, rstrip=True, normalized=False),  # identical: ignored
        t(608, "<dup>", special=True, lstrip=True, normalized=False),
        t(608, "<dup>", rstrip=True, normalized=False),           # later flags win
        t(609, "\uff31\uff5a", normalized=True),                  # NFKC "Qz": cached form
        t(609, "\uff31\uff5a", normalized=False),                 # raw match, cached decode
        t(607, "<sp>x", normalized=False),                        # identical: ignored
        t(5, "ing", normalized=True),                             # a vocabulary string
        t(5, "ing", special=True, single_word=True, normalized=False),
        t(610, "", special=True),                                 # empty: ignored
        t(168, "\u00e9", special=True, normalized=False),
        t(611, "<dup>", special=True, lstrip=True, normalized=False),  # back to the first flags
    ]
    d = os.path.join(DATA, "dup_added")
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, "tokenizer.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(j, f, ensure_ascii=False)
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump({}, f)
    tk = Tokenizer.from_file(path)
    extra = ["a <sp> b<sp>c <sp>x cat concat cats <dup> x<dup>y  <dup>  end",
             "\uff31\uff5a Qz \uff31\uff3a qz", "ing sing ing. (ing) singing",
             "\u00e9 caf\u00e9 e\u0301 x\u00e9", "<lst> <rst> <both>  <both> \ufb01ne"]
    write_jsonl(os.path.join(d, "cases.jsonl"), cases_for(tk, extra + random_texts(40, "dup"),
                                                          stress=False))
    print("dup_added", tk.get_vocab_size(), "ids")


def r1zero_template():
    """The R1-Zero template as grpo-survey.md section 3 quotes it (one
    paragraph; the survey wraps it over lines), with {prompt} for the question."""
    doc = open(os.path.join(SHARED, "docs", "grpo-survey.md"), encoding="utf-8").read()
    start = doc.index("`", doc.index("R1-Zero template (Table 1), verbatim:")) + 1
    text = " ".join(line.strip() for line in doc[start:doc.index("`", start)].split("\n"))
    assert text.endswith("User: prompt. Assistant:"), text[-40:]
    return text[: -len("prompt. Assistant:")] + "{prompt}. Assistant:"


def deepseek():
    d = os.path.join(SHARED, "fixtures", "deepseek-v3-tokenizer")
    tk = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
    r1zero = r1zero_template()
    extra = [
        "<｜begin▁of▁sentence｜><｜User｜>What is 2+2?<｜Assistant｜><think>\n",
        "text with <｜end▁of▁sentence｜> inside and <|EOT|> and <｜place▁holder▁no▁7｜>x",
        "<｜User｜><｜User｜>  <｜Assistant｜>\n<｜tool▁calls▁begin｜><｜tool▁sep｜>",
        "almost <｜User> and <｜User｜ and |User｜>",
        r1zero.replace("{prompt}", "What is 7*8?"),
        r1zero.replace("{prompt}", "Compute <｜User｜> and <think> 1+1"),
        "3.14159265358979323846264338327950288419716939937510",
        "In 2024, 1,234,567 people (12.5%) paid $99.99 on 11/22.",
        "数学题：计算 12345 × 678 = ？答案是8369910。",
        "Ｔｈｅ ｆｕｌｌｗｉｄｔｈ ｔｅｘｔ　with ideographic space",
    ]
    rows = cases_for(tk, extra + random_texts(300, "deepseek"))
    write_jsonl(os.path.join(DATA, "deepseek_hard.jsonl"), rows)
    print("deepseek_hard", len(rows), "cases")


def bytelevel():
    if not GRPO:
        return
    d = os.path.join(DATA, "bytelevel")
    subprocess.run([GRPO, "tokenize", "--write-bytelevel", d], check=True)
    tk = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
    rows = cases_for(tk, ["<think>\nreason</think>\n<answer>42</answer>", "<|bos|>x<|eos|><|pad|>"],
                     stress=False)
    write_jsonl(os.path.join(d, "cases.jsonl"), rows)
    # transformers must load it too and agree (with and without special tokens)
    from transformers import AutoTokenizer
    at = AutoTokenizer.from_pretrained(d)
    for r in rows:
        if "text" in r:
            assert at.encode(r["text"], add_special_tokens=False) == r["ids"], r["text"][:40]
            assert at.encode(r["text"]) == r.get("ids_add", r["ids"]), r["text"][:40]
    print("bytelevel", len(rows), "cases; transformers agrees")


if __name__ == "__main__":
    os.makedirs(DATA, exist_ok=True)
    deepseek()
    families()
    dup_added()
    bytelevel()
