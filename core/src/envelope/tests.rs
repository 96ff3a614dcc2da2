use super::*;

const CONFIG: &str = r#"{"schema":1,"routes":[{"id":"web","old":"https://old.example.com","new":"https://new.example.com","new_weight":10,"key":["header:x-user-id"]}]}"#;

fn key() -> SecretKey {
    SecretKey::from_seed([7; 32])
}

fn body(version: u64) -> Vec<u8> {
    let doc = EnvelopeDoc {
        version,
        parent: None,
        issued_at: "2026-11-27T08:00:00Z".into(),
        actor: "ci".into(),
        reason: "test".into(),
        config: serde_json::from_str::<ConfigDoc>(CONFIG).expect("config doc"),
        keys: None,
    };
    doc.to_body()
}

#[test]
fn a_signed_envelope_opens_with_the_matching_public_key() {
    let body = body(3);
    let sig = key().sign(&body);
    let env = Envelope::open(&body, &sig, &key().public_key()).expect("opens");
    assert_eq!(env.version, 3);
    assert_eq!(env.digest, Digest::of(&body));
    assert_eq!(
        env.config.route("web").map(|r| r.weight().ppm()),
        Some(100_000)
    );
}

#[test]
fn any_change_to_the_body_breaks_the_signature() {
    let body = body(3);
    let sig = key().sign(&body);
    let mut tampered = body.clone();
    let at = tampered
        .iter()
        .position(|&b| b == b'3')
        .expect("version digit");
    tampered[at] = b'9';
    assert_eq!(
        Envelope::open(&tampered, &sig, &key().public_key()).map(|e| e.version),
        Err(EnvelopeError::BadSignature)
    );
}

#[test]
fn another_key_does_not_verify() {
    let body = body(1);
    let other = SecretKey::from_seed([8; 32]);
    // Named: refused by name, before any signature check.
    assert_eq!(
        key().public_key().verify(&body, &other.sign(&body)),
        Err(EnvelopeError::UntrustedKey {
            key: other.public_key().id(),
            trusted: vec![key().public_key().id()],
        })
    );
    // Unnamed (an older signer): the signature itself fails.
    let unnamed = other.sign(&body);
    let unnamed = unnamed.split(';').next().expect("signature part");
    assert_eq!(
        key().public_key().verify(&body, unnamed),
        Err(EnvelopeError::BadSignature)
    );
    // Naming a trusted key does not help a signature made by another.
    let forged = format!("{unnamed}; key={}", key().public_key().id());
    assert_eq!(
        key().public_key().verify(&body, &forged),
        Err(EnvelopeError::BadSignature)
    );
}

#[test]
fn a_signature_names_its_key_and_any_trusted_key_may_sign() {
    let body = body(1);
    let (a, b) = (key(), SecretKey::from_seed([8; 32]));
    let trusted = [a.public_key(), b.public_key()];
    let header = SignatureHeader::parse(&b.sign(&body)).expect("parses");
    assert_eq!(header.key, Some(b.public_key().id()));
    assert_eq!(header.verify(&body, &trusted), Ok(&trusted[1]));
    let unnamed = b
        .sign(&body)
        .split(';')
        .next()
        .map(str::to_owned)
        .expect("part");
    let header = SignatureHeader::parse(&unnamed).expect("parses");
    assert_eq!(header.verify(&body, &trusted), Ok(&trusted[1]));
    let stranger = SecretKey::from_seed([9; 32]).sign(&body);
    let err = SignatureHeader::parse(&stranger)
        .and_then(|h| h.verify(&body, &trusted).map(|_| ()))
        .expect_err("untrusted");
    assert_eq!(
        err.to_string(),
        format!(
            "signature key {} is not trusted by this edge (it trusts {}, {})",
            SecretKey::from_seed([9; 32]).public_key().id(),
            a.public_key().id(),
            b.public_key().id()
        )
    );
}

#[test]
fn a_push_stamp_binds_the_digest_and_the_time() {
    let body = body(1);
    let digest = Digest::of(&body);
    let k = key();
    let stamped = k
        .stamp(&k.sign(&body), &digest, 1_796_000_000)
        .expect("stamps");
    let header = SignatureHeader::parse(&stamped).expect("parses");
    let public = k.public_key();
    assert_eq!(
        header.check_stamp(&public, &digest, 1_796_000_000),
        Ok(true)
    );
    assert_eq!(
        header.check_stamp(&public, &digest, 1_796_000_000 + MAX_STAMP_SKEW_SECS),
        Ok(true)
    );
    assert_eq!(
        header.check_stamp(&public, &digest, 1_796_000_000 + MAX_STAMP_SKEW_SECS + 1),
        Err(EnvelopeError::StaleStamp {
            at: 1_796_000_000,
            now: 1_796_000_000 + MAX_STAMP_SKEW_SECS + 1
        })
    );
    // The stamp of one body does not carry over to another.
    assert_eq!(
        header.check_stamp(&public, &Digest::of(b"other"), 1_796_000_000),
        Err(EnvelopeError::BadSignature)
    );
    // A changed time breaks the stamp's signature.
    let moved = stamped.replace("at=1796000000", "at=1796000001");
    assert_eq!(
        SignatureHeader::parse(&moved).and_then(|h| h.check_stamp(&public, &digest, 1_796_000_000)),
        Err(EnvelopeError::BadSignature)
    );
    // The body signature is the same one, stamped or not.
    assert_eq!(header.verify(&body, &[public]), Ok(&public));
    // Another key cannot stamp this key's signature.
    assert!(
        SecretKey::from_seed([8; 32])
            .stamp(&k.sign(&body), &digest, 1)
            .is_err()
    );
}

#[test]
fn declared_key_sets_are_checked() {
    let one = key().public_key().to_string();
    assert_eq!(parse_key_set(&[one.as_str()]).map(|k| k.len()), Ok(1));
    for (keys, why) in [
        (vec![], "keys: must list at least one key"),
        (vec![one.clone(), one.clone()], "is listed twice"),
        (
            vec!["ed25519:nope".to_owned()],
            "keys: [0]: public key must be",
        ),
        (vec![one.clone(); 9], "9 keys, over the limit of 8"),
    ] {
        let err = parse_key_set(&keys).expect_err("refused").to_string();
        assert!(err.contains(why), "{err}");
    }
    let two = SecretKey::from_seed([8; 32]).public_key().to_string();
    assert_eq!(
        parse_key_list(&format!(" {one}, {two}\n")).map(|k| k.len()),
        Ok(2)
    );
    assert!(parse_key_list(" , ").is_err());
    // An envelope that declares a bad set is invalid as a whole.
    let mut doc: EnvelopeDoc<serde_json::Value> = serde_json::from_slice(&body(2)).expect("doc");
    doc.keys = Some(vec![]);
    let bad = serde_json::to_vec(&doc).expect("json");
    assert!(matches!(
        Envelope::parse(&bad),
        Err(EnvelopeError::BadKeySet(_))
    ));
}

#[test]
fn malformed_signature_headers_are_named_as_such() {
    let body = body(1);
    for header in [
        "",
        "ed25519",
        "rsa=AAAA",
        "ed25519=not base64!",
        "ed25519=AAAA",
        "ed25519=AAAA; key=0011223344556677",
    ] {
        assert_eq!(
            key().public_key().verify(&body, header),
            Err(EnvelopeError::BadSignatureHeader),
            "{header:?}"
        );
    }
}

#[test]
fn config_errors_inside_an_envelope_carry_the_config_prefix() {
    let bad = body(1)
        .iter()
        .map(|&b| b as char)
        .collect::<String>()
        .replace("\"new_weight\":10.0", "\"new_weight\":101.0");
    let err = Envelope::parse(bad.as_bytes()).expect_err("invalid");
    assert_eq!(
        err.to_string(),
        "config.routes[0].new_weight: must be 0..=100"
    );
}

#[test]
fn version_zero_is_refused() {
    assert_eq!(
        Envelope::parse(&body(0)).map(|e| e.version),
        Err(EnvelopeError::ZeroVersion)
    );
}

#[test]
fn an_oversized_body_is_refused_before_the_signature_is_checked() {
    let big = vec![b' '; MAX_ENVELOPE_BYTES + 1];
    assert_eq!(
        Envelope::open(&big, "garbage", &key().public_key()).map(|e| e.version),
        Err(EnvelopeError::TooLarge(MAX_ENVELOPE_BYTES + 1))
    );
}

#[test]
fn the_version_rule() {
    let d1 = Digest::of(b"one");
    let d2 = Digest::of(b"two");
    let at = |version, digest| Applied { version, digest };
    let cases = [
        (None, at(1, d1), Admission::Apply),
        (Some(at(1, d1)), at(2, d2), Admission::Apply),
        (Some(at(2, d2)), at(2, d2), Admission::AlreadyApplied),
        (
            Some(at(2, d2)),
            at(2, d1),
            Admission::Reject { current: at(2, d2) },
        ),
        (
            Some(at(3, d1)),
            at(2, d2),
            Admission::Reject { current: at(3, d1) },
        ),
    ];
    for (current, incoming, want) in cases {
        assert_eq!(
            admit(current, incoming),
            want,
            "{current:?} <- {incoming:?}"
        );
    }
}

#[test]
fn keys_round_trip_through_their_text_form() {
    let secret = key();
    let text = secret.to_text();
    assert!(text.starts_with("ed25519-secret:"));
    let again: SecretKey = text.parse().expect("parses");
    assert_eq!(again.public_key(), secret.public_key());
    let public = secret.public_key().to_string();
    assert!(
        public.starts_with("ed25519:") && public.len() == "ed25519:".len() + 44,
        "{public}"
    );
    assert_eq!(public.parse::<PublicKey>(), Ok(secret.public_key()));
    assert_eq!(
        format!("{public}\n").parse::<PublicKey>(),
        Ok(secret.public_key()),
        "trailing newline"
    );
}

#[test]
fn bad_key_text_is_refused_with_the_expected_form() {
    let err = "ed25519:short".parse::<PublicKey>().expect_err("too short");
    assert_eq!(
        err.to_string(),
        "public key must be ed25519:<base64 of 32 bytes>"
    );
    let err = key()
        .public_key()
        .to_string()
        .parse::<SecretKey>()
        .expect_err("a public key is no secret");
    assert_eq!(
        err.to_string(),
        "secret key must be ed25519-secret:<base64 of 32 bytes>"
    );
    assert!(
        !format!("{:?}", key()).contains(&key().to_text()),
        "Debug never shows the secret"
    );
}

#[test]
fn digests_are_lowercase_hex() {
    let d = Digest::of(b"");
    assert_eq!(
        d.to_string(),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert_eq!(d.to_string().parse::<Digest>(), Ok(d));
    assert_eq!(
        d.to_string().to_uppercase().parse::<Digest>(),
        Err(EnvelopeError::BadDigest)
    );
}
