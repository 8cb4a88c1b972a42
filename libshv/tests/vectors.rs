//! The ChainPack/Cpon vectors shared with the web terminal's JavaScript codec
//! (`tests/vectors/chainpack.json`, checked there by `node --test web/test/`): both
//! codecs must agree byte for byte with shvproto.
//!
//! `direction: "both"`: Cpon encodes to exactly the bytes, and the bytes decode to
//! exactly the Cpon. `"decode"`: only the latter (Doubles, whose Cpon text is not read
//! back bit-exact, and Decimals whose text reads back with another exponent).

use libshv::RpcValue;

#[test]
fn shvproto_agrees_with_the_shared_vectors() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/vectors/chainpack.json"
    );
    let text = std::fs::read_to_string(path).expect("tests/vectors/chainpack.json");
    let vectors: Vec<serde_json::Value> = serde_json::from_str(&text).expect("JSON");
    assert!(vectors.len() >= 100, "the vector file lost entries");
    let mut both = 0;
    for v in &vectors {
        let name = v["name"].as_str().expect("name");
        let cpon = v["cpon"].as_str().expect("cpon");
        let bytes = hex::decode(v["chainpack_hex"].as_str().expect("hex")).expect("hex");
        let decoded = RpcValue::from_chainpack(&bytes)
            .unwrap_or_else(|e| panic!("{name}: shvproto cannot decode the bytes: {e}"));
        assert_eq!(decoded.to_cpon(), cpon, "{name}: bytes → Cpon");
        match v["direction"].as_str() {
            Some("both") => {
                let encoded = RpcValue::from_cpon(cpon)
                    .unwrap_or_else(|e| panic!("{name}: shvproto cannot read the Cpon: {e}"))
                    .to_chainpack();
                assert_eq!(
                    hex::encode(encoded),
                    hex::encode(&bytes),
                    "{name}: Cpon → bytes"
                );
                both += 1;
            }
            Some("decode") => {}
            other => panic!("{name}: unknown direction {other:?}"),
        }
    }
    assert!(
        both * 10 >= vectors.len() * 8,
        "most vectors must go both ways"
    );
}
