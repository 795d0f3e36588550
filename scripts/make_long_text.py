#!/usr/bin/env python3
"""Writes a long test document (about 3,000 characters a page) to stdout.

    scripts/make_long_text.py [--pages 20] [--chars N] [--seed 1]

Paragraphs of English sentences with what a sentence splitter must not cut
at (numbers such as 3.14 and 1,000, abbreviations such as Dr. and e.g.,
initials, quotes), a Chinese paragraph every few, an over-long sentence
now and then. With --chars, exactly that many characters (cut at a word).
Deterministic for a seed.
"""

import argparse
import random

WORDS = (
    "the river ran past the old mill where children played in summer and the "
    "miller counted sacks of grain while travellers told stories of distant cities "
    "bright markets quiet harbours ships and mountains covered in snow each morning "
    "a bell rang across the valley calling workers to the fields and the bakers "
    "to their ovens letters arrived from the capital with news of treaties prices "
    "and weather the schoolteacher read them aloud so that everyone could hear"
).split()

EXTRAS = [
    "Dr. Hale measured 3.14 metres of rope.",
    "It cost $1,250.75, e.g. the price of a horse.",
    "J. R. Miller arrived at 10:30 a.m. on the train.",
    "\"Are you coming?\" she asked. \"Not today!\"",
    "The U.S. envoy met Mr. and Mrs. Grant at No. 12 Market St. before noon.",
    "Nobody knew why... but everyone agreed.",
]

CHINESE = [
    "清晨的河边很安静，只有风吹过树叶的声音。",
    "老磨坊已经有一百多年的历史了！",
    "孩子们在草地上奔跑，大人们在田里劳动。",
    "你听说过山那边的城市吗？",
    "那里的市场很热闹，船只每天进出港口。",
]


def sentence(rng, words):
    n = rng.randint(6, words)
    text = " ".join(rng.choice(WORDS) for _ in range(n))
    if n > 20:  # clauses in a long sentence
        ws = text.split()
        for i in range(7, len(ws) - 3, 8):
            ws[i] += rng.choice([",", ";", ","])
        text = " ".join(ws)
    return text[0].upper() + text[1:] + rng.choice([".", ".", ".", "!", "?"])


def paragraph(rng, index):
    if index % 5 == 4:
        return "".join(rng.choice(CHINESE) for _ in range(rng.randint(3, 8)))
    out = []
    for _ in range(rng.randint(3, 8)):
        if rng.random() < 0.2:
            out.append(rng.choice(EXTRAS))
        else:
            out.append(sentence(rng, 90 if rng.random() < 0.05 else 24))
    return " ".join(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pages", type=int, default=20)
    ap.add_argument("--chars", type=int, default=0)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    target = a.chars or a.pages * 3000
    paragraphs, total, i = [], 0, 0
    while total < target:
        p = paragraph(rng, i)
        paragraphs.append(p)
        total += len(p) + 2
        i += 1
    text = "\n\n".join(paragraphs)
    if a.chars:
        text = text[: a.chars]
        text = text[: text.rfind(" ")] if " " in text[-20:] else text
        text = text.ljust(a.chars, ".")
    print(text)


if __name__ == "__main__":
    main()
