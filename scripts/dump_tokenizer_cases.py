#!/usr/bin/env python3
"""Dump text-tokenizer reference cases: tests/fixtures/reference/tokenizer_cases.json.

`ids` are from the GENUINE Qwen2 byte-level BPE (Qwen2 pre-tokenizer regex, NFC, no BOS/EOS), i.e.
what the model was trained with (docs/architecture.md, text tokenizer). They are computed twice and must agree:
  * the slow `transformers.Qwen2Tokenizer` (pure Python, Qwen2 regex `PRETOKENIZE_REGEX`),
  * `transformers.Qwen2TokenizerFast` built from the same vocab.json/merges.txt/tokenizer_config.json
    with `fix_mistral_regex=False`, checked to carry the Qwen2 Split regex.
For each case we also record `package_ids`: what the official package's own processor gives
(`AutoProcessor.from_pretrained(<local checkpoint dir>, fix_mistral_regex=True)`, exactly as
`Qwen3TTSModel.from_pretrained` does), and `package_differs` when it is different — that is where the
transformers 4.57.3 Mistral-regex trap bites.

    dump_tokenizer_cases.py --tokenizer-dir tests/fixtures/tokenizer \
        --package-dir tests/fixtures/tiny-0.6B-Base --out tests/fixtures/reference/tokenizer_cases.json
"""
import argparse
import json
import os
import shutil
import sys
import tempfile

QWEN2_REGEX = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"""
               r"""\s*[\r\n]+|\s+(?!\S)|\s+""")

CORPUS = [
    # English
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "I'm sure you'll like it; they've said it's what we'd want.",
    "Don'T SHOUT, it'S LOUD.",
    # mixed case (Mistral-regex trap)
    "iPhone",
    "HelloWorld",
    "I bought an iPhone and a MacBookPro at the AppleStore.",
    "TTSModel uses camelCase and PascalCase and snake_case.",
    "OpenAI GPT-4o vs. Qwen3-TTS-12Hz",
    "ABCdef XYZabc aBcDeF",
    "通义千问Qwen模型",
    "XMLHttpRequest macOS iOS WiFi eBay McDonald's iPhone15Pro",
    "中文ABC混合Def文本",
    "path/to/File.txt, a/b//c, http://example.com/Path?Q=1",
    # CJK
    "我叫通义千问，是阿里云的开源大模型。",
    "今天天气怎么样？我们去公园散步吧！",
    "こんにちは、世界。今日はいい天気ですね。",
    "カタカナとひらがなと漢字",
    "안녕하세요, 세계! 오늘 날씨가 좋네요.",
    # European languages
    "Grüß Gott! Die Straße ist schön, und Äpfel sind süß.",
    "Ça va très bien, merci. L'été à Paris est magnifique !",
    "Привет, мир! Как дела? Всё хорошо.",
    "Olá, tudo bem? A informação está correta, não é?",
    "¿Dónde está la biblioteca? ¡Mañana será otro día!",
    "Buongiorno, come stai? Perché no? Città e università.",
    # digits / numbers
    "12345",
    "3.14",
    "Call 555-0199 at 10:30, costs $1,234.56 or 7.5%.",
    "In 2024, 1/3 of 300 is 100; 2^10 = 1024.",
    "١٢٣ ४५६ ⅷ ½",
    # punctuation
    "Wait... what?! (Really) [yes] {no} <maybe> \"quoted\" 'single'",
    "--- *** ### @@@ !!! ??? ;;; ::: ,,, ...",
    "a.b,c;d:e!f?g",
    # emoji / symbols
    "I love it 😀👍🏽🎉!",
    "👨‍👩‍👧‍👦 family, 🇨🇳🇺🇸 flags, ❤️ heart",
    "→ ← ↑ ↓ ∑ ∫ √ ∞ ≠ ≤ ≥ € £ ¥ © ®",
    # whitespace
    " leading space",
    "trailing space ",
    "  two leading and two trailing  ",
    "\nleading newline",
    "trailing newline\n",
    "multiple\n\nnewlines\n\n\nhere",
    "tabs\tand\t\tspaces   mixed \t \n end",
    "\r\nwindows\r\nline ends\r\n",
    "   ",
    "",
    "\n",
    # unicode normalisation (NFC)
    "cafe\u0301 vs caf\u00e9",
    "Ａｂｃ　全角スペース",
    # special tokens inside text
    "<|im_start|>",
    "<|im_end|>",
    "Hello<|im_end|>world",
    "<|im_start|>user\nhi<|im_end|>",
    "<tts_pad><tts_text_bos><tts_text_eod><|endoftext|>",
    "text with <|audio_start|> and <think></think> tags",
    "<|im_start |> not a special token",
    # full chat-template strings used by the package
    "<|im_start|>assistant\nHello, world!<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>assistant\nI bought an iPhone.<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>assistant\n我叫通义千问，是阿里云的开源大模型。<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>assistant\nThis is the reference transcript.<|im_end|>\n",
    "<|im_start|>user\nSpeak in a warm, cheerful voice with a slight British accent.<|im_end|>\n",
    "<|im_start|>user\n用特别愤怒的语气说<|im_end|>\n",
    "<|im_start|>assistant\n\nLeading newline inside template<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>assistant\n<|im_end|>\n<|im_start|>assistant\n",
    # longer mixed text
    "Qwen3-TTS supports 10 languages: Chinese (中文), English, Japanese (日本語), Korean (한국어), "
    "German, French, Russian, Portuguese, Spanish and Italian. It's GREAT for iOS/macOS apps!",
]


def fast_pretokenizer_regexes(tok):
    """Return the Split regex(es) of a fast tokenizer's pre-tokenizer (from its JSON state)."""
    state = json.loads(tok.backend_tokenizer.to_str())
    out = []

    def walk(pt):
        if pt is None:
            return
        if pt.get("type") == "Sequence":
            for p in pt.get("pretokenizers", []):
                walk(p)
        elif pt.get("type") == "Split":
            pat = pt.get("pattern", {})
            out.append(pat.get("Regex", pat.get("String")))
    walk(state.get("pre_tokenizer"))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokenizer-dir", required=True, help="dir with vocab.json + merges.txt")
    ap.add_argument("--tokenizer-config", default=None,
                    help="tokenizer_config.json (default: <package-dir>/tokenizer_config.json)")
    ap.add_argument("--package-dir", required=True,
                    help="a local checkpoint dir (config.json etc.) for the package's own processor")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    import transformers
    from transformers import AutoConfig, AutoProcessor, Qwen2Tokenizer, Qwen2TokenizerFast
    from transformers.models.qwen2 import tokenization_qwen2
    from qwen_tts.core.models import Qwen3TTSConfig, Qwen3TTSProcessor

    tcfg = args.tokenizer_config or os.path.join(args.package_dir, "tokenizer_config.json")
    with tempfile.TemporaryDirectory() as td:
        # plain tokenizer dir (no config.json => the 4.57.3 local-dir Mistral check cannot trigger on
        # the slow path; the fast path is loaded with fix_mistral_regex=False explicitly)
        for fn in ["vocab.json", "merges.txt"]:
            shutil.copyfile(os.path.join(args.tokenizer_dir, fn), os.path.join(td, fn))
        shutil.copyfile(tcfg, os.path.join(td, "tokenizer_config.json"))
        slow = Qwen2Tokenizer.from_pretrained(td)
        fast = Qwen2TokenizerFast.from_pretrained(td, fix_mistral_regex=False)
    fast_regex = fast_pretokenizer_regexes(fast)
    assert tokenization_qwen2.PRETOKENIZE_REGEX == QWEN2_REGEX, tokenization_qwen2.PRETOKENIZE_REGEX
    assert fast_regex == [QWEN2_REGEX], fast_regex

    AutoConfig.register("qwen3_tts", Qwen3TTSConfig)
    AutoProcessor.register(Qwen3TTSConfig, Qwen3TTSProcessor)
    proc = AutoProcessor.from_pretrained(args.package_dir, fix_mistral_regex=True)
    pkg_regex = fast_pretokenizer_regexes(proc.tokenizer)

    cases = []
    n_diff = 0
    for text in CORPUS:
        ids_slow = slow(text, add_special_tokens=True)["input_ids"]
        ids_fast = fast(text, add_special_tokens=True)["input_ids"]
        if ids_slow != ids_fast:
            raise SystemExit(f"slow/fast Qwen2 disagree on {text!r}: {ids_slow} vs {ids_fast}")
        # the package tokenizes via processor(text=..., return_tensors="pt", padding=True)
        pkg = proc(text=text, return_tensors="pt", padding=True)["input_ids"]
        pkg_ids = pkg.reshape(-1).tolist()
        case = {"text": text, "ids": ids_slow}
        if pkg_ids != ids_slow:
            case["package_ids"] = pkg_ids
            case["package_differs"] = True
            n_diff += 1
        # sanity: decoding round-trips
        case["decoded_roundtrip"] = fast.decode(ids_slow, skip_special_tokens=False) == __import__(
            "unicodedata").normalize("NFC", text)
        cases.append(case)

    out = {
        "description": "Genuine Qwen2 byte-level BPE ids (Qwen2 regex, NFC, no BOS/EOS) for the Qwen3-TTS "
                       "text tokenizer; package_ids = ids from the official package's processor loaded "
                       "from a local checkpoint dir with fix_mistral_regex=True (present only where they "
                       "differ).",
        "tokenizer": {
            "ids_from": ["transformers.Qwen2Tokenizer (slow)",
                         "transformers.Qwen2TokenizerFast (fix_mistral_regex=False)"],
            "files": ["vocab.json", "merges.txt", "tokenizer_config.json (released)"],
            "qwen2_regex": QWEN2_REGEX,
            "package_loader": "AutoProcessor.from_pretrained(<local dir with config.json "
                              "transformers_version=4.57.3>, fix_mistral_regex=True)",
            "package_regex": pkg_regex,
            "package_regex_is_qwen2": pkg_regex == [QWEN2_REGEX],
            "transformers_version": transformers.__version__,
            "add_special_tokens": "irrelevant (Qwen2 adds no BOS/EOS)",
        },
        "n_cases": len(cases),
        "n_package_differs": n_diff,
        "cases": cases,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"[dump_tokenizer_cases] {len(cases)} cases, package differs on {n_diff}; package regex is "
          f"{'Qwen2' if pkg_regex == [QWEN2_REGEX] else 'NOT Qwen2 (Mistral patch)'}", file=sys.stderr)


if __name__ == "__main__":
    main()
