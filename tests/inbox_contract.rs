//! The inbox checksum as the README documents it for other programs, checked against digests
//! computed outside vigil: tests/data/inbox_digests.py wrote the files in tests/data/inbox/
//! with Python's `json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)`
//! and `hashlib.sha256`. Nested objects, non-ASCII text, number forms (`1.0`, `1e3`, `1e16`)
//! and escaped characters are each one file.

use serde_json::Value;
use std::path::PathBuf;
use vigil::intent::{canonical_json, inbox, sha256_hex};

const FIXTURES: &[&str] = &["nested", "non_ascii", "numbers", "escapes"];

fn fixture(name: &str, ext: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/inbox")
        .join(format!("{name}.{ext}"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The file's fields without `sha256`, and the digest it carries.
fn body(name: &str) -> (Value, String) {
    let mut v: Value = serde_json::from_slice(&fixture(name, "json")).unwrap();
    let sum = v
        .as_object_mut()
        .unwrap()
        .remove("sha256")
        .expect("a sha256 field");
    (v, sum.as_str().unwrap().to_string())
}

#[test]
fn canonical_json_is_the_text_python_hashed() {
    for name in FIXTURES {
        let (v, _) = body(name);
        let python = String::from_utf8(fixture(name, "canonical")).unwrap();
        assert_eq!(canonical_json(&v), python, "{name}");
    }
}

#[test]
fn files_written_elsewhere_verify_and_their_intents_are_read() {
    for name in FIXTURES {
        let (v, sum) = body(name);
        assert_eq!(sha256_hex(&canonical_json(&v)), sum, "{name}");
        let intent = inbox::parse(&fixture(name, "json")).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(Value::Object(intent.data), v["data"], "{name}");
    }
    let numbers = inbox::parse(&fixture("numbers", "json")).unwrap();
    assert_eq!(numbers.data["e3"], 1000.0);
    assert_eq!(numbers.data["big_int"], 12_345_678_901_234_567_u64);
    let text = inbox::parse(&fixture("non_ascii", "json")).unwrap();
    assert_eq!(text.reason, "GPU-Speicher voll: 2,5 GiB — ✓ 日本語 😀");
    assert_eq!(text.dedup_key.as_deref(), Some("gpu0-ü"));
}

#[test]
fn a_changed_value_no_longer_verifies() {
    for (name, from, to) in [
        ("numbers", "\"one_float\": 1.0", "\"one_float\": 1"),
        ("non_ascii", "東京", "京都"),
        ("escapes", "caf\\u00e9", "cafe"),
        ("nested", "\"x\": 1", "\"x\": 2"),
    ] {
        let text = String::from_utf8(fixture(name, "json")).unwrap();
        assert!(text.contains(from), "{name} holds {from}");
        let e = inbox::parse(text.replace(from, to).as_bytes())
            .unwrap_err()
            .to_string();
        assert!(e.contains("checksum mismatch"), "{name}: {e}");
    }
}

#[test]
fn floats_are_written_as_python_writes_them() {
    for (json, canonical) in [
        ("1.0", "1.0"),
        ("1e3", "1000.0"),
        ("-2.50", "-2.5"),
        ("1e15", "1000000000000000.0"),
        ("1e16", "1e+16"),
        ("1.5e300", "1.5e+300"),
        ("0.0001", "0.0001"),
        ("0.00001", "1e-05"),
        ("1.25e-7", "1.25e-07"),
        ("-0.0", "-0.0"),
        ("0.0", "0.0"),
        ("123456789.125", "123456789.125"),
        ("5e-324", "5e-324"),
        ("1.7976931348623157e308", "1.7976931348623157e+308"),
        ("42", "42"),
        ("-7", "-7"),
        ("18446744073709551615", "18446744073709551615"),
    ] {
        let v: Value = serde_json::from_str(json).unwrap();
        assert_eq!(canonical_json(&v), canonical, "{json}");
    }
}
