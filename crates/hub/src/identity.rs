//! Who a connection is, from a signed token (JWT) checked before the upgrade.
//!
//! A backend that knows its users signs a short-lived token for each of them; the hub checks
//! the signature, the expiry and (when configured) the audience and issuer, and from then on
//! the connection speaks as the token's `sub`: names cannot be forged, and the `rooms` and
//! `publish` claims say where it may go and whether it may talk.
//!
//! Keys are bound to their algorithm when the hub starts (a secret to HS256, an RSA public
//! key to RS256, an EC P-256 public key to ES256), and a token is checked only against keys
//! of its header's algorithm: a token cannot choose to be checked with a public key used as
//! an HMAC secret (algorithm confusion), and `alg: none` is no algorithm at all.

use std::fmt;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::protocol::{clean_name, MAX_NAME_CHARS};

/// How the hub checks connection tokens: a shared secret (HS256) and/or public keys (RS256
/// or ES256, in PEM), with the audience and issuer they must name.
///
/// ```
/// let jwt = duplex_hub::JwtConfig::default()
///     .secret(b"a long random shared secret".to_vec())
///     .audience("chat");
/// assert_eq!(jwt.audience.as_deref(), Some("chat"));
/// ```
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct JwtConfig {
    /// The HS256 secret, if tokens may be signed with one.
    pub secret: Option<Vec<u8>>,
    /// PEM public keys (RSA for RS256, EC P-256 for ES256). A token is accepted if any key of
    /// its algorithm verifies it, so a new key can be added before the old one is retired.
    pub public_keys: Vec<Vec<u8>>,
    /// The `aud` a token must contain; `None`: not checked.
    pub audience: Option<String>,
    /// The `iss` a token must have; `None`: not checked.
    pub issuer: Option<String>,
}

// Secrets stay out of logs and panic messages.
impl fmt::Debug for JwtConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtConfig")
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("public_keys", &self.public_keys.len())
            .field("audience", &self.audience)
            .field("issuer", &self.issuer)
            .finish()
    }
}

impl JwtConfig {
    /// Sets [`JwtConfig::secret`].
    pub fn secret(mut self, secret: Vec<u8>) -> Self {
        self.secret = Some(secret);
        self
    }

    /// Adds a PEM public key to [`JwtConfig::public_keys`].
    pub fn public_key(mut self, pem: Vec<u8>) -> Self {
        self.public_keys.push(pem);
        self
    }

    /// Sets [`JwtConfig::audience`].
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = Some(audience.into());
        self
    }

    /// Sets [`JwtConfig::issuer`].
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = Some(issuer.into());
        self
    }
}

/// A key or secret the hub cannot use.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JwtKeyError {
    /// Neither a secret nor a public key was given.
    #[error("JWT needs a secret or at least one public key")]
    NoKey,
    /// The secret is too short to resist guessing.
    #[error("the JWT secret is {0} bytes; use at least {MIN_SECRET_BYTES}")]
    ShortSecret(usize),
    /// A public key is neither an RSA nor an EC P-256 key in PEM.
    #[error("public key {index} is not an RSA or EC P-256 public key in PEM: {reason}")]
    BadPublicKey {
        /// Its position among the keys given, from 1.
        index: usize,
        /// What the parser said.
        reason: String,
    },
}

/// The shortest HS256 secret accepted: 256 bits, the size of the HMAC's hash (RFC 7518
/// section 3.2 requires a key at least that long).
pub const MIN_SECRET_BYTES: usize = 32;

/// Which rooms a token may join: exact names, or `prefix.*` for every room that starts with
/// `prefix.`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RoomPatterns(Vec<RoomPattern>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum RoomPattern {
    Exact(String),
    /// The part before the `*`, dot included.
    Prefix(String),
}

impl RoomPatterns {
    pub(crate) fn new<I: IntoIterator<Item = String>>(patterns: I) -> RoomPatterns {
        RoomPatterns(
            patterns
                .into_iter()
                .map(|p| match p.strip_suffix('*') {
                    Some(prefix) => RoomPattern::Prefix(prefix.to_owned()),
                    None => RoomPattern::Exact(p),
                })
                .collect(),
        )
    }

    pub(crate) fn allows(&self, room: &str) -> bool {
        self.0.iter().any(|p| match p {
            RoomPattern::Exact(name) => name == room,
            // `team.*` matches `team.a` but not `team.` itself (no room name ends in nothing)
            // nor `team` (which names another room).
            RoomPattern::Prefix(prefix) => room.len() > prefix.len() && room.starts_with(prefix),
        })
    }

    /// The patterns as the token gave them.
    pub(crate) fn to_strings(&self) -> Vec<String> {
        self.0
            .iter()
            .map(|p| match p {
                RoomPattern::Exact(name) => name.clone(),
                RoomPattern::Prefix(prefix) => format!("{prefix}*"),
            })
            .collect()
    }
}

/// Who a connection is, from its token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Identity {
    /// The token's subject: the stable identity.
    pub(crate) sub: String,
    /// The name shown to others: the `name` claim, or `sub`.
    pub(crate) name: String,
    /// The rooms it may join; `None`: all.
    pub(crate) rooms: Option<RoomPatterns>,
    /// Whether it may send messages (`false`: a read-only subscriber).
    pub(crate) publish: bool,
}

impl Identity {
    /// Whether the token allows joining `room`.
    pub(crate) fn may_join(&self, room: &str) -> bool {
        self.rooms.as_ref().is_none_or(|rooms| rooms.allows(room))
    }
}

/// Why a token was refused, said in the 401's body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TokenError {
    #[error("missing token (Authorization: Bearer or ?token=)")]
    Missing,
    #[error("malformed token")]
    Malformed,
    #[error("token algorithm not accepted (use one this hub has a key for)")]
    Algorithm,
    #[error("bad token signature")]
    Signature,
    #[error("token expired")]
    Expired,
    #[error("token not valid yet")]
    NotYetValid,
    #[error("token has no {0} claim")]
    MissingClaim(String),
    #[error("token is for another audience")]
    Audience,
    #[error("token has another issuer")]
    Issuer,
    #[error("token's claims are invalid: {0}")]
    Claims(String),
}

/// The claims the hub reads; the registered ones (`exp`, `aud`, `iss`) are checked by
/// [`jsonwebtoken`] before these are looked at.
#[derive(Debug, Deserialize)]
struct Claims {
    sub: Option<String>,
    name: Option<String>,
    rooms: Option<Vec<String>>,
    publish: Option<bool>,
}

/// Checks tokens against the configured keys.
pub(crate) struct Verifier {
    keys: Vec<(Algorithm, DecodingKey)>,
    validation: Validation,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let algorithms: Vec<Algorithm> = self.keys.iter().map(|(alg, _)| *alg).collect();
        f.debug_struct("Verifier")
            .field("keys", &algorithms)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// Parses the keys of `config`, each bound to its algorithm.
    pub(crate) fn new(config: &JwtConfig) -> Result<Verifier, JwtKeyError> {
        let mut keys = Vec::new();
        if let Some(secret) = &config.secret {
            if secret.len() < MIN_SECRET_BYTES {
                return Err(JwtKeyError::ShortSecret(secret.len()));
            }
            let key = DecodingKey::from_secret(secret).map_err(|_| JwtKeyError::NoKey)?;
            keys.push((Algorithm::HS256, key));
        }
        for (i, pem) in config.public_keys.iter().enumerate() {
            // An EC key parses only as EC and an RSA key only as RSA, so trying both in turn
            // finds the key's type.
            let key = match DecodingKey::from_ec_pem(pem) {
                Ok(key) => (Algorithm::ES256, key),
                Err(ec) => match DecodingKey::from_rsa_pem(pem) {
                    Ok(key) => (Algorithm::RS256, key),
                    Err(rsa) => {
                        return Err(JwtKeyError::BadPublicKey {
                            index: i + 1,
                            reason: format!("as EC: {ec}; as RSA: {rsa}"),
                        })
                    }
                },
            };
            keys.push(key);
        }
        if keys.is_empty() {
            return Err(JwtKeyError::NoKey);
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = keys.iter().map(|(alg, _)| *alg).collect();
        validation.set_required_spec_claims(&["exp"]);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        // Clocks of issuer and hub may differ a little; a minute is jsonwebtoken's default.
        validation.leeway = 60;
        match &config.audience {
            Some(aud) => validation.set_audience(&[aud]),
            // Without a configured audience any `aud` is fine (jsonwebtoken would refuse
            // tokens that carry one).
            None => validation.validate_aud = false,
        }
        if let Some(iss) = &config.issuer {
            validation.set_issuer(&[iss]);
        }
        Ok(Verifier { keys, validation })
    }

    /// Checks `token` and reads the identity it carries.
    pub(crate) fn verify(&self, token: &str) -> Result<Identity, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| match e.kind() {
            // `alg: none` (or any name jsonwebtoken does not know) fails to parse the header.
            ErrorKind::Json(_) | ErrorKind::InvalidAlgorithmName => TokenError::Algorithm,
            _ => TokenError::Malformed,
        })?;
        let mut last = TokenError::Algorithm;
        for (alg, key) in &self.keys {
            if *alg != header.alg {
                continue;
            }
            let mut validation = self.validation.clone();
            validation.algorithms = vec![*alg];
            match jsonwebtoken::decode::<Claims>(token, key, &validation) {
                Ok(data) => return identity(data.claims),
                // Another key of this algorithm may have signed it (rotation).
                Err(e) if matches!(e.kind(), ErrorKind::InvalidSignature) => {
                    last = TokenError::Signature;
                }
                Err(e) => return Err(token_error(e.kind())),
            }
        }
        Err(last)
    }
}

fn token_error(kind: &ErrorKind) -> TokenError {
    match kind {
        ErrorKind::InvalidSignature => TokenError::Signature,
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::ImmatureSignature => TokenError::NotYetValid,
        ErrorKind::InvalidAudience => TokenError::Audience,
        ErrorKind::InvalidIssuer => TokenError::Issuer,
        ErrorKind::MissingRequiredClaim(claim) => TokenError::MissingClaim(claim.clone()),
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => TokenError::Algorithm,
        ErrorKind::Json(e) => TokenError::Claims(e.to_string()),
        ErrorKind::InvalidClaimFormat(claim) => TokenError::Claims(format!("{claim} is invalid")),
        _ => TokenError::Malformed,
    }
}

/// The identity of verified claims: `sub` is required, the shown name must be a valid name.
fn identity(claims: Claims) -> Result<Identity, TokenError> {
    let sub = claims
        .sub
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| TokenError::MissingClaim("sub".to_owned()))?;
    let name = match &claims.name {
        Some(name) => clean_name(name).ok_or_else(|| {
            TokenError::Claims(format!(
                "name is 1 to {MAX_NAME_CHARS} characters without control characters"
            ))
        })?,
        // A long `sub` (a UUID, an e-mail address) is shown shortened; it stays whole as the
        // identity.
        None => {
            let short: String = sub.trim().chars().take(MAX_NAME_CHARS).collect();
            clean_name(&short).ok_or_else(|| {
                TokenError::Claims("sub has control characters; add a name claim".to_owned())
            })?
        }
    };
    Ok(Identity {
        sub,
        name,
        rooms: claims.rooms.map(RoomPatterns::new),
        publish: claims.publish.unwrap_or(true),
    })
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::{json, Value};

    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn hs256(claims: Value) -> String {
        let key = EncodingKey::from_secret(SECRET).unwrap();
        encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap()
    }

    fn verifier(config: JwtConfig) -> Verifier {
        Verifier::new(&config).unwrap()
    }

    #[test]
    fn a_valid_token_gives_its_identity() {
        let v = verifier(JwtConfig::default().secret(SECRET.to_vec()));
        let id = v
            .verify(&hs256(
                json!({"sub": "u1", "name": "Ann", "exp": now() + 60,
                "rooms": ["team.*", "lobby"], "publish": false}),
            ))
            .unwrap();
        assert_eq!(id.sub, "u1");
        assert_eq!(id.name, "Ann");
        assert!(!id.publish);
        assert!(id.may_join("lobby") && id.may_join("team.a"));
        assert!(!id.may_join("team") && !id.may_join("team.") && !id.may_join("other"));
        let id = v
            .verify(&hs256(json!({"sub": "u2", "exp": now() + 60})))
            .unwrap();
        assert_eq!(id.name, "u2");
        assert!(id.publish && id.may_join("anything"));
    }

    #[test]
    fn refusals_say_why() {
        let v = verifier(
            JwtConfig::default()
                .secret(SECRET.to_vec())
                .audience("chat"),
        );
        let cases = [
            (
                json!({"sub": "u", "aud": "chat", "exp": now() - 3600}),
                TokenError::Expired,
            ),
            (
                json!({"sub": "u", "aud": "chat"}),
                TokenError::MissingClaim("exp".into()),
            ),
            (
                json!({"sub": "u", "aud": "other", "exp": now() + 60}),
                TokenError::Audience,
            ),
            (
                json!({"aud": "chat", "exp": now() + 60}),
                TokenError::MissingClaim("sub".into()),
            ),
        ];
        for (claims, want) in cases {
            assert_eq!(v.verify(&hs256(claims.clone())), Err(want), "{claims}");
        }
        let other = EncodingKey::from_secret(b"another secret of thirty-two bytes!").unwrap();
        let forged = encode(
            &Header::new(Algorithm::HS256),
            &json!({"sub": "u", "aud": "chat", "exp": now() + 60}),
            &other,
        )
        .unwrap();
        assert_eq!(v.verify(&forged), Err(TokenError::Signature));
        assert_eq!(v.verify("not a token"), Err(TokenError::Malformed));
    }

    #[test]
    fn alg_none_is_refused() {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = b64.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let claims = b64.encode(json!({"sub": "u", "exp": now() + 60}).to_string());
        let v = verifier(JwtConfig::default().secret(SECRET.to_vec()));
        assert_eq!(
            v.verify(&format!("{header}.{claims}.")),
            Err(TokenError::Algorithm)
        );
    }

    #[test]
    fn short_secrets_and_missing_keys_are_refused_at_start() {
        assert!(matches!(
            Verifier::new(&JwtConfig::default().secret(b"short".to_vec())),
            Err(JwtKeyError::ShortSecret(5))
        ));
        assert!(matches!(
            Verifier::new(&JwtConfig::default()),
            Err(JwtKeyError::NoKey)
        ));
        assert!(matches!(
            Verifier::new(&JwtConfig::default().public_key(b"junk".to_vec())),
            Err(JwtKeyError::BadPublicKey { index: 1, .. })
        ));
    }
}
