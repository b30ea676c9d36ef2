#!/usr/bin/env python3
"""Writes the inbox checksum fixtures in tests/data/inbox/ from the bodies below, with digests
computed here, independently of vigil: the canonical JSON is

    json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)

encoded as UTF-8, and the checksum its hex SHA-256, as the README documents for programs that
drop intent files into the inbox. Each body is kept as written (spacing, key order, number
forms, escapes), and `"sha256"` is added as its last field; NAME.canonical holds the canonical
text this script hashed, so a disagreement shows where it is. tests/inbox_contract.rs reads
them. Run it once after changing a body (`python3 tests/data/inbox_digests.py`) and commit the
output.
"""

import hashlib
import json
import pathlib

BODIES = {
    # Keys out of order at every level, objects inside arrays inside objects.
    "nested": """{
  "reason": "nested data",
  "priority": 7,
  "intent_type": "alert_nested",
  "data": {"zeta": {"b": [3, {"y": 2, "x": 1}], "a": {}}, "alpha": [[], {"k": null}], "mid": true}
}""",
    # Non-ASCII text in values and keys; keys sort by code point ("z" before "ä" before "日").
    "non_ascii": """{"intent_type": "alert_gpu_oom", "priority": 9,
 "reason": "GPU-Speicher voll: 2,5 GiB — ✓ 日本語 😀",
 "data": {"日本": "東京", "ä": "umlaut", "z": "zed", "größe": "2,5 GiB", "emoji": "🚀"},
 "dedup_key": "gpu0-ü"}""",
    # Number forms: a float written 1.0 stays 1.0, 1e3 and 1E3 are the float 1000.0, large and
    # small floats take an exponent (1e+16, 1e-07), integers stay integers.
    "numbers": """{"intent_type": "suggest_numbers", "priority": 3, "reason": "numbers",
 "data": {"one_float": 1.0, "e3": 1e3, "E3": 1E3, "two_fifty": 2.50, "tenth": 0.1,
          "neg_half": -0.5, "hundred": 100.0, "int": 42, "neg_int": -7, "zero": 0,
          "big_int": 12345678901234567, "e16": 1e16, "e22": 1e22, "tiny": 1e-7,
          "small": 0.0001, "huge": 1.5e300, "third": 0.3333333333333333, "neg_zero": -0.0,
          "list": [1, 1.0, 1e0, 10e-1]},
 "created_at": "2026-11-23T07:12:01.530Z"}""",
    # Escapes: quotes, backslashes, control characters, an escaped slash and escaped non-ASCII
    # on input, which the canonical form writes as the characters themselves.
    "escapes": r"""{"intent_type": "alert_escapes", "priority": 5,
 "reason": "tab\there \"quoted\" back\\slash new\nline",
 "data": {"ctrl": "\u0001\u001f\b\f\r", "slash": "a\/b", "e_acute": "caf\u00e9",
          "line_sep": "\u2028", "surrogates": "\ud83d\ude00", "del": "\u007f", "nul": "\u0000"}}""",
}


def canonical(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def main():
    out = pathlib.Path(__file__).resolve().parent / "inbox"
    out.mkdir(exist_ok=True)
    for name, body in BODIES.items():
        text = canonical(json.loads(body))
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        head, brace = body.rstrip().rsplit("}", 1)
        assert brace == "", name
        (out / f"{name}.json").write_text(
            f'{head},\n "sha256": "{digest}"}}\n', encoding="utf-8"
        )
        (out / f"{name}.canonical").write_text(text, encoding="utf-8")
        print(f"{name}.json {digest}")


if __name__ == "__main__":
    main()
