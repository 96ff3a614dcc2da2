//! A request's facts as JSON spells them: the owned form of [`Request`]. The
//! JavaScript edge receives it from its handler, and the shared decision
//! cases (`tests/vectors/decisions.json`) are written in it, so every build
//! reads the same shape the same way.

use serde::{Deserialize, Serialize};

use crate::{Config, Decision, Request, decide};

/// What an edge knows about a request, owned and serialisable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Facts {
    /// Method, e.g. `GET`.
    pub method: String,
    /// Host the client asked for, port allowed.
    pub host: String,
    /// Path, starting with `/`.
    pub path: String,
    /// Query string without `?`.
    #[serde(default)]
    pub query: String,
    /// Request headers as pairs, in message order.
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    /// The client address.
    #[serde(default, alias = "clientIp")]
    pub client_ip: Option<String>,
    /// 32 hex digits of randomness for a minted sticky id; absent means no
    /// cookie can be minted. Core has no randomness, so the caller brings it.
    #[serde(default)]
    pub mint: Option<String>,
}

/// A `mint` that is not 32 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("mint must be 32 hex digits (16 random bytes)")]
pub struct InvalidMint;

impl Facts {
    /// The mint's 16 bytes, if there is one.
    pub fn mint_bytes(&self) -> Result<Option<[u8; 16]>, InvalidMint> {
        self.mint
            .as_deref()
            .map(|m| {
                let mut bytes = [0u8; 16];
                hex::decode_to_slice(m, &mut bytes).map_err(|_| InvalidMint)?;
                Ok(bytes)
            })
            .transpose()
    }

    /// [`decide`] for this request under `config`.
    pub fn decide<'c>(&self, config: &'c Config) -> Result<Decision<'c>, InvalidMint> {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let request = Request {
            method: &self.method,
            host: &self.host,
            path: &self.path,
            query: &self.query,
            headers: &headers,
            client_ip: self.client_ip.as_deref(),
            mint: self.mint_bytes()?,
        };
        Ok(decide(config, &request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(mint: Option<&str>) -> Facts {
        Facts {
            method: "GET".into(),
            host: "shop.example".into(),
            path: "/".into(),
            query: String::new(),
            headers: vec![("x-user-id".into(), "alice".into())],
            client_ip: None,
            mint: mint.map(str::to_owned),
        }
    }

    #[test]
    fn mint_is_exactly_32_hex_digits() {
        assert_eq!(facts(None).mint_bytes(), Ok(None));
        assert_eq!(
            facts(Some("000102030405060708090a0b0c0d0e0f")).mint_bytes(),
            Ok(Some([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]))
        );
        assert_eq!(facts(Some("00")).mint_bytes(), Err(InvalidMint));
        assert_eq!(
            facts(Some("zz0102030405060708090a0b0c0d0e0f")).mint_bytes(),
            Err(InvalidMint)
        );
    }

    #[test]
    fn decides_as_the_borrowed_request_does() {
        let config = Config::from_json(
            br#"{"schema":1,"routes":[{"id":"web","old":"https://old.internal",
                "new":"https://new.internal","new_weight":50,"key":["header:x-user-id"]}]}"#,
        )
        .expect("valid");
        let f = facts(None);
        let headers = [("x-user-id", "alice")];
        let request = Request {
            method: "GET",
            host: "shop.example",
            path: "/",
            query: "",
            headers: &headers,
            client_ip: None,
            mint: None,
        };
        let direct = decide(&config, &request);
        let via = f.decide(&config).expect("no mint");
        assert_eq!((via.arm, via.bucket), (direct.arm, direct.bucket));
        assert_eq!(
            facts(Some("xyz")).decide(&config).map(|d| d.arm),
            Err(InvalidMint)
        );
    }
}
