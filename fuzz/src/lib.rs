//! What the fuzz targets share: the fixed key and stored frame they run
//! against, and the input format of the `request` target (decoded by the
//! target, encoded by `examples/seed.rs` from the raw-request corpus).

use std::sync::OnceLock;

use rollout_core::edge::stored::{self, Frame};
use rollout_core::edge::{Trust, receive_push};
use rollout_core::{ConfigDoc, EnvelopeDoc, SecretKey};

/// The seed of the key every target signs with and verifies against.
pub const SEED: [u8; 32] = [7; 32];

/// The fixed key.
pub fn key() -> &'static SecretKey {
    static KEY: OnceLock<SecretKey> = OnceLock::new();
    KEY.get_or_init(|| SecretKey::from_seed(SEED))
}

/// A config that uses every part of a route: matches on host, path and
/// method, every key source, failover on statuses and connect errors, flags
/// with allow-lists and salts, overrides with and without tokens, and a
/// minted sticky cookie on the default route. Its routes follow
/// `core/tests/vectors/requests.json` (`/api`, `/flaky`, `/down`, default),
/// so the raw-request corpus seeds reach each of them.
pub const CONFIG: &str = r#"{
  "schema": 1,
  "debug_headers": true,
  "routes": [
    {"id": "api", "match": {"path_prefix": "/api", "methods": ["GET", "POST", "PUT", "DELETE"]},
     "old": "http://old.internal:8081", "new": "http://new.internal:8082", "new_weight": 50,
     "salt": "api-1", "key": ["header:x-user-id", "cookie:sid", "query:uid", "client-ip"],
     "flags": [{"name": "beta", "percent": 25, "allow": ["alice", "bob"]},
               {"name": "everyone", "percent": 100}],
     "overrides": [{"from": "header:x-rollout-force",
                    "token_sha256": ["9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"]}]},
    {"id": "flaky", "match": {"path_prefix": "/flaky"},
     "old": "http://old.internal:8081", "new": "http://new.internal:8082", "new_weight": 100,
     "key": ["header:x-user-id"], "failover": {"statuses": [502, 503], "connect_error": true}},
    {"id": "down", "match": {"host": "*.example.com", "path_prefix": "/down"},
     "old": "http://old.internal:8081", "new": "https://[::1]:9", "new_weight": 100,
     "key": ["header:x-user-id"], "failover": {"connect_error": true}},
    {"id": "web", "old": "http://old.internal:8081", "new": "http://new.internal:8082",
     "new_weight": 50, "salt": "web-1", "key": ["header:x-user-id", "cookie:rid"],
     "assign_cookie": true,
     "flags": [{"name": "dark-mode", "percent": 50, "salt": "dm"},
               {"name": "new-nav", "percent": 0.0001, "allow": ["user-7"]}],
     "overrides": [{"from": "cookie:rollout_force"}]}
  ]
}"#;

/// The edge's clock in the fuzz targets (Unix seconds).
pub const NOW: u64 = 1_796_030_000;

/// The edge key's signature of `body`, stamped at [`NOW`], as the control
/// service pushes it.
pub fn stamped(body: &[u8]) -> String {
    key()
        .stamp(&key().sign(body), &rollout_core::Digest::of(body), NOW)
        .expect("fuzz: a key stamps its own signature")
}

/// A signed envelope body of `version` holding `config`, and its signature.
pub fn signed(version: u64, config: &str) -> (Vec<u8>, String) {
    let config: ConfigDoc = serde_json::from_str(config).expect("fuzz: the config parses");
    let body = EnvelopeDoc {
        version,
        parent: None,
        issued_at: "2026-11-30T00:00:00Z".into(),
        actor: "fuzz".into(),
        reason: "fuzz".into(),
        config,
        keys: None,
    }
    .to_body();
    let signature = key().sign(&body);
    (body, signature)
}

/// The stored value an edge holds after a push of [`CONFIG`] as version 7.
pub fn frame() -> &'static [u8] {
    static FRAME: OnceLock<Vec<u8>> = OnceLock::new();
    FRAME.get_or_init(|| {
        let (body, signature) = signed(7, CONFIG);
        let outcome = receive_push(
            None,
            &body,
            Some(&signature),
            &Trust::key(key().public_key()),
        );
        let active = outcome.apply.expect("fuzz: the fixed envelope applies");
        stored::frame_for(&active, &signature, &body)
    })
}

/// The same frame with an older compact form number, which an edge
/// re-derives from the envelope inside it.
pub fn older_frame() -> &'static [u8] {
    static OLDER: OnceLock<Vec<u8>> = OnceLock::new();
    OLDER.get_or_init(|| {
        let frame = Frame::parse(frame()).expect("fuzz: the fixed frame parses");
        Frame {
            form: stored::COMPACT_FORM - 1,
            compact: b"an older build's compact form",
            ..frame
        }
        .to_bytes()
    })
}

/// Splits at the first NUL: `(before, after)`, `after` empty when there is
/// none. JSON text never holds a raw NUL, so a JSON head stays whole.
pub fn split_nul(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}

/// What the origin did, in a `request` input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OriginResult {
    /// It answered with this status.
    Status(u16),
    /// Nothing reached it.
    Connect,
    /// The exchange broke after it began.
    Other,
}

/// A `request` target input, decoded. Every byte string decodes to one.
///
/// Format: 4 control bytes, then a request head as HTTP/1 writes it, then a
/// tail:
///
/// - byte 0, bits: 0 the client spoke TLS; 1 random bytes for a sticky id
///   are at hand; 2 the body is replayable; 3-4 the origin's result (0 and 3
///   a status, 1 a connect error, 2 another error); 5 the admin store holds
///   the fixed frame (else nothing); 6 the edge's public key setting is
///   invalid; 7 sign the tail's body with the fixed key and send that as
///   `rollout-signature`.
/// - bytes 1-2: the origin's status, big-endian.
/// - byte 3: bits 0-1 what the store holds when a swap conflicts (nothing,
///   the fixed frame, the swap's own value, the tail's body); bit 2 also
///   forward against an older-form frame (re-derived); the whole byte fills
///   the sticky id's random bytes.
/// - the head: `METHOD SP TARGET [SP ...]`, then `name: value` lines, each
///   ending in LF (a CR before it is dropped), up to an empty line. Names
///   `@authority` and `@client-ip` give the platform's authority and client
///   address instead of a header.
/// - the tail: the origin's response headers in the same line form, up to
///   an empty line, then a body (the admin PUT body, and the error text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestInput {
    /// Control byte 0.
    pub flags: u8,
    /// The origin's status.
    pub status: u16,
    /// Control byte 3.
    pub extra: u8,
    /// The method.
    pub method: String,
    /// The request target.
    pub target: String,
    /// `@authority`, the last one given.
    pub authority: Option<String>,
    /// `@client-ip`, the last one given.
    pub client_ip: Option<String>,
    /// The request headers, in order.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The origin's response headers.
    pub response_headers: Vec<(String, Vec<u8>)>,
    /// The body.
    pub body: Vec<u8>,
}

/// Lines up to the first empty one, and what follows it.
fn lines(mut data: &[u8]) -> (Vec<&[u8]>, &[u8]) {
    let mut out = Vec::new();
    while !data.is_empty() {
        let (line, rest) = match data.iter().position(|&b| b == b'\n') {
            Some(i) => (&data[..i], &data[i + 1..]),
            None => (data, &[][..]),
        };
        data = rest;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        out.push(line);
    }
    (out, data)
}

fn header_line(line: &[u8]) -> (String, Vec<u8>) {
    let (name, value) = match line.iter().position(|&b| b == b':') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line, &[][..]),
    };
    let value = value.trim_ascii();
    (String::from_utf8_lossy(name).into_owned(), value.to_vec())
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

impl RequestInput {
    /// Decodes any bytes (short input reads as zeros).
    pub fn decode(data: &[u8]) -> RequestInput {
        let mut ctl = [0u8; 4];
        let n = data.len().min(4);
        ctl[..n].copy_from_slice(&data[..n]);
        let (head, tail) = lines(&data[n..]);
        let mut head = head.into_iter();
        let first = head.next().unwrap_or_default();
        let mut words = first.split(|&b| b == b' ');
        let method = text(words.next().unwrap_or_default());
        let target = text(words.next().unwrap_or_default());
        let (mut authority, mut client_ip, mut headers) = (None, None, Vec::new());
        for line in head {
            let (name, value) = header_line(line);
            match name.as_str() {
                "@authority" => authority = Some(text(&value)),
                "@client-ip" => client_ip = Some(text(&value)),
                _ => headers.push((name, value)),
            }
        }
        let (response, body) = lines(tail);
        RequestInput {
            flags: ctl[0],
            status: u16::from_be_bytes([ctl[1], ctl[2]]),
            extra: ctl[3],
            method,
            target,
            authority,
            client_ip,
            headers,
            response_headers: response.into_iter().map(header_line).collect(),
            body: body.to_vec(),
        }
    }

    /// The bytes that decode to this input (for seeds). Header lines must
    /// hold no LF and names no `:`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![self.flags];
        out.extend(self.status.to_be_bytes());
        out.push(self.extra);
        out.extend(format!("{} {} HTTP/1.1\r\n", self.method, self.target).bytes());
        let pseudo = [
            ("@authority", &self.authority),
            ("@client-ip", &self.client_ip),
        ];
        for (name, value) in pseudo {
            if let Some(v) = value {
                out.extend(format!("{name}: {v}\r\n").bytes());
            }
        }
        let put = |out: &mut Vec<u8>, headers: &[(String, Vec<u8>)]| {
            for (n, v) in headers {
                out.extend(n.bytes());
                out.extend(b": ");
                out.extend(v);
                out.extend(b"\r\n");
            }
            out.extend(b"\r\n");
        };
        put(&mut out, &self.headers);
        put(&mut out, &self.response_headers);
        out.extend(&self.body);
        out
    }

    /// The https flag.
    pub fn https(&self) -> bool {
        self.flags & 1 != 0
    }

    /// Random bytes for a sticky id, when at hand.
    pub fn mint(&self) -> Option<[u8; 16]> {
        (self.flags & 2 != 0).then_some([self.extra; 16])
    }

    /// Whether the body can be sent again.
    pub fn replayable(&self) -> bool {
        self.flags & 4 != 0
    }

    /// The origin's result.
    pub fn result(&self) -> OriginResult {
        match (self.flags >> 3) & 3 {
            1 => OriginResult::Connect,
            2 => OriginResult::Other,
            _ => OriginResult::Status(self.status),
        }
    }

    /// Whether the admin store holds the fixed frame.
    pub fn admin_holds_frame(&self) -> bool {
        self.flags & 0x20 != 0
    }

    /// Whether the edge's public key setting is invalid.
    pub fn bad_key_setting(&self) -> bool {
        self.flags & 0x40 != 0
    }

    /// Whether to sign the body with the fixed key.
    pub fn sign_body(&self) -> bool {
        self.flags & 0x80 != 0
    }

    /// What the store holds when a swap conflicts: 0 nothing, 1 the fixed
    /// frame, 2 the swap's own value, 3 the body.
    pub fn conflict_with(&self) -> u8 {
        self.extra & 3
    }

    /// Whether to forward against an older-form frame too.
    pub fn rederive(&self) -> bool {
        self.extra & 4 != 0
    }
}
