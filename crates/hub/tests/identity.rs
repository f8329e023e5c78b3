//! Identity and permissions from signed tokens (JWT), over loopback: who may upgrade, under
//! which name a connection speaks, where it may go and whether it may talk.

mod common;

use common::*;
use duplex::{ClientBuilder, CloseCode, Message};
use duplex_hub::{HubConfig, JwtConfig};
use duplex_testkit::http::{request_head, UPGRADE_HEADERS};
use duplex_testkit::net::raw_exchange;
use jsonwebtoken::{encode, get_current_timestamp, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

const SECRET: &[u8] = b"test secret of at least thirty-two bytes";

fn hs256(claims: Value) -> String {
    let key = EncodingKey::from_secret(SECRET).unwrap();
    encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap()
}

/// Claims for `sub` valid for an hour, with `extra` merged in.
fn claims(sub: &str, extra: Value) -> Value {
    let mut claims = json!({"sub": sub, "exp": get_current_timestamp() + 3600});
    if let (Some(c), Some(extra)) = (claims.as_object_mut(), extra.as_object()) {
        c.extend(extra.clone());
    }
    claims
}

fn jwt_config(dir: &std::path::Path, jwt: JwtConfig) -> HubConfig {
    TestHub::config(dir).jwt(jwt)
}

async fn jwt_hub(dir: &std::path::Path) -> TestHub {
    let jwt = JwtConfig::default()
        .secret(SECRET.to_vec())
        .audience("chat")
        .issuer("backend");
    TestHub::start(jwt_config(dir, jwt)).await
}

/// Claims the test hub accepts.
fn good(sub: &str, extra: Value) -> Value {
    let mut c = claims(sub, json!({"aud": "chat", "iss": "backend"}));
    if let (Some(c), Some(extra)) = (c.as_object_mut(), extra.as_object()) {
        c.extend(extra.clone());
    }
    c
}

/// An upgrade request by hand, so the refusal's status and body can be read.
async fn upgrade_status(hub: &TestHub, path: &str, extra: &[(&str, &str)]) -> (u16, String) {
    let mut headers: Vec<(&str, &str)> = UPGRADE_HEADERS.to_vec();
    headers.extend_from_slice(extra);
    let response = raw_exchange(hub.addr, request_head("GET", path, &headers).as_bytes()).await;
    (response.status, response.body)
}

/// A JSON client with `token` on its URL; returns it with the identity message it got first.
async fn json_with_token(hub: &TestHub, path: &str, token: &str) -> (Ws, Value) {
    let sep = if path.contains('?') { '&' } else { '?' };
    let builder = ClientBuilder::new(&hub.url(&format!("{path}{sep}token={token}")))
        .unwrap()
        .protocol("duplex.v1");
    let mut ws = connect(hub, builder).await.expect("connect");
    let identity = recv_json(&mut ws).await;
    assert_eq!(identity["type"], "identity", "{identity}");
    (ws, identity)
}

/// Sends a join and reads up to the joiner's own presence (history skipped).
async fn join(ws: &mut Ws, join: Value) -> Value {
    send_json(ws, join).await;
    loop {
        let msg = recv_json(ws).await;
        match msg["type"].as_str() {
            Some("history") => continue,
            _ => return msg,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_hs256_token_upgrades_and_speaks_as_its_sub() {
    let dir = tempfile::tempdir().unwrap();
    let hub = jwt_hub(dir.path()).await;
    let token = hs256(good("user-1", json!({"name": "Ann"})));
    // As a bearer header.
    let bearer = ClientBuilder::new(&hub.url("/"))
        .unwrap()
        .protocol("duplex.v1")
        .header(
            http::header::AUTHORIZATION,
            http::HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        );
    let mut ann = connect(&hub, bearer).await.expect("bearer accepted");
    let identity = recv_json(&mut ann).await;
    assert_eq!(
        identity,
        json!({"type": "identity", "sub": "user-1", "name": "Ann", "publish": true})
    );
    // A join without a name gets the token's.
    let presence = join(&mut ann, json!({"type": "join"})).await;
    assert_eq!(presence["type"], "presence", "{presence}");
    assert_eq!(presence["members"], json!(["Ann"]));
    say(&mut ann, "hello").await;
    let msg = recv_kind(&mut ann, "message").await;
    assert_eq!(msg["from"], "Ann");

    // A plain client with the token in the query speaks as the token's name, not `?name=`.
    let sub_only = hs256(good("bob", json!({})));
    let mut plain_bob = plain(&hub, &format!("/?name=mallory&token={sub_only}")).await;
    let joined = recv_kind(&mut ann, "presence").await;
    assert_eq!(joined["name"], "bob");
    plain_bob.send(Message::text("hi")).await.unwrap();
    let msg = recv_kind(&mut ann, "message").await;
    assert_eq!(msg["from"], "bob");
    hub.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_es256_token_upgrades_and_keys_rotate() {
    let dir = tempfile::tempdir().unwrap();
    let old = rcgen::KeyPair::generate().unwrap();
    let new = rcgen::KeyPair::generate().unwrap();
    let jwt = JwtConfig::default()
        .public_key(old.public_key_pem().into_bytes())
        .public_key(new.public_key_pem().into_bytes());
    let hub = TestHub::start(jwt_config(dir.path(), jwt)).await;
    for (sub, pair) in [("es-old", &old), ("es-new", &new)] {
        let key = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap();
        let token = encode(
            &Header::new(Algorithm::ES256),
            &claims(sub, json!({})),
            &key,
        )
        .unwrap();
        let (mut ws, identity) = json_with_token(&hub, "/", &token).await;
        assert_eq!(identity["sub"], sub);
        let presence = join(&mut ws, json!({"type": "join"})).await;
        assert_eq!(presence["name"], sub);
    }
    // An HS256 token is no good on a hub that has only public keys, whatever its secret (the
    // public key used as an HMAC secret included: algorithm confusion).
    let confused = EncodingKey::from_secret(new.public_key_pem().as_bytes()).unwrap();
    let token = encode(
        &Header::new(Algorithm::HS256),
        &claims("x", json!({})),
        &confused,
    )
    .unwrap();
    let (status, body) = upgrade_status(&hub, &format!("/?token={token}"), &[]).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("algorithm"), "{body}");
    hub.stop().await.unwrap();
}

/// Test-only RSA keys (see `tests/data/README.md`): rcgen and ring cannot make RSA keys, so
/// they were made once with openssl and committed.
const RSA_PUBLIC: &[u8] = include_bytes!("data/test-only-rsa-a.pub.pem");
const RSA_PRIVATE: &[u8] = include_bytes!("data/test-only-rsa-a.key.pem");
const OTHER_RSA_PRIVATE: &[u8] = include_bytes!("data/test-only-rsa-other.key.pem");

fn rs256(private_pem: &[u8], claims: Value) -> String {
    let key = EncodingKey::from_rsa_pem(private_pem).unwrap();
    encode(&Header::new(Algorithm::RS256), &claims, &key).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_rs256_token_upgrades_and_one_from_another_rsa_key_gets_401() {
    let dir = tempfile::tempdir().unwrap();
    let jwt = JwtConfig::default()
        .public_key(RSA_PUBLIC.to_vec())
        .audience("chat");
    let hub = TestHub::start(jwt_config(dir.path(), jwt)).await;
    let token = rs256(
        RSA_PRIVATE,
        claims("rsa-user", json!({"aud": "chat", "name": "Rita"})),
    );
    let (mut ws, identity) = json_with_token(&hub, "/", &token).await;
    assert_eq!(
        identity,
        json!({"type": "identity", "sub": "rsa-user", "name": "Rita", "publish": true})
    );
    let presence = join(&mut ws, json!({"type": "join"})).await;
    assert_eq!(presence["members"], json!(["Rita"]));

    // Signed with another RSA key: the signature does not check out, nothing is upgraded.
    let forged = rs256(
        OTHER_RSA_PRIVATE,
        claims("rsa-user", json!({"aud": "chat"})),
    );
    let (status, body) = upgrade_status(&hub, &format!("/?token={forged}"), &[]).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("signature"), "{body}");
    let bearer = format!("Bearer {forged}");
    let (status, _) = upgrade_status(&hub, "/echo", &[("Authorization", &bearer)]).await;
    assert_eq!(status, 401, "on /echo too");
    // The right key under RS512: an RSA key is taken for RS256 only.
    let rs512 = {
        let key = EncodingKey::from_rsa_pem(RSA_PRIVATE).unwrap();
        let claims = claims("rsa-user", json!({"aud": "chat"}));
        encode(&Header::new(Algorithm::RS512), &claims, &key).unwrap()
    };
    let (status, body) = upgrade_status(&hub, &format!("/?token={rs512}"), &[]).await;
    assert_eq!(status, 401, "{body}");
    hub.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_get_401_with_a_reason_and_nothing_is_upgraded() {
    use base64::Engine;
    let dir = tempfile::tempdir().unwrap();
    let hub = jwt_hub(dir.path()).await;
    let now = get_current_timestamp();
    let expired = hs256(json!({"sub": "u", "aud": "chat", "iss": "backend", "exp": now - 3600}));
    let no_exp = hs256(json!({"sub": "u", "aud": "chat", "iss": "backend"}));
    let wrong_aud = hs256(good("u", json!({"aud": "billing"})));
    let wrong_iss = hs256(good("u", json!({"iss": "someone"})));
    let forged = {
        let key = EncodingKey::from_secret(b"not the hub's secret, thirty-two+").unwrap();
        encode(&Header::new(Algorithm::HS256), &good("u", json!({})), &key).unwrap()
    };
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let none = format!(
        "{}.{}.",
        b64.encode(br#"{"alg":"none","typ":"JWT"}"#),
        b64.encode(good("u", json!({})).to_string())
    );
    let cases = [
        (expired, "expired"),
        (no_exp, "exp"),
        (wrong_aud, "audience"),
        (wrong_iss, "issuer"),
        (forged, "signature"),
        (none, "algorithm"),
        ("garbage".to_owned(), "malformed"),
    ];
    for (token, reason) in &cases {
        let (status, body) = upgrade_status(&hub, &format!("/?token={token}"), &[]).await;
        assert_eq!(status, 401, "{reason}: {body}");
        assert!(body.contains(reason), "{reason}: {body}");
        let bearer = format!("Bearer {token}");
        let (status, _) = upgrade_status(&hub, "/echo", &[("Authorization", &bearer)]).await;
        assert_eq!(status, 401, "{reason} on /echo");
    }
    let (status, body) = upgrade_status(&hub, "/", &[]).await;
    assert_eq!(status, 401);
    assert!(body.contains("missing"), "{body}");
    hub.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_under_another_name_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let hub = jwt_hub(dir.path()).await;
    let token = hs256(good("u1", json!({"name": "Ann"})));
    let (mut ws, _) = json_with_token(&hub, "/", &token).await;
    let error = join(&mut ws, json!({"type": "join", "name": "Bob"})).await;
    assert_eq!(error["type"], "error");
    assert_eq!(error["code"], "identity");
    // Its own name is fine.
    let presence = join(&mut ws, json!({"type": "join", "name": "Ann"})).await;
    assert_eq!(presence["members"], json!(["Ann"]));
    hub.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_for_team_rooms_cannot_join_other() {
    let dir = tempfile::tempdir().unwrap();
    let hub = jwt_hub(dir.path()).await;
    let token = hs256(good("u1", json!({"rooms": ["team.*"]})));
    let (mut ws, identity) = json_with_token(&hub, "/rooms/team.a", &token).await;
    assert_eq!(identity["rooms"], json!(["team.*"]));
    let presence = join(&mut ws, json!({"type": "join"})).await;
    assert_eq!(presence["room"], "team.a");
    let error = join(&mut ws, json!({"type": "join", "room": "other"})).await;
    assert_eq!(error["code"], "forbidden_room", "{error}");
    // A plain client, whose room is its URL's, is refused before the upgrade.
    let (status, body) = upgrade_status(&hub, &format!("/rooms/other?token={token}"), &[]).await;
    assert_eq!(status, 403, "{body}");
    let (status, _) = upgrade_status(&hub, &format!("/?token={token}"), &[]).await;
    assert_eq!(status, 403, "general is not a team room");
    plain(&hub, &format!("/rooms/team.b?token={token}")).await;
    hub.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_token_cannot_send() {
    let dir = tempfile::tempdir().unwrap();
    let hub = jwt_hub(dir.path()).await;
    let reader = hs256(good("reader", json!({"publish": false})));
    let writer = hs256(good("writer", json!({})));
    let (mut ro, identity) = json_with_token(&hub, "/", &reader).await;
    assert_eq!(identity["publish"], false);
    join(&mut ro, json!({"type": "join"})).await;
    let (mut rw, _) = json_with_token(&hub, "/", &writer).await;
    join(&mut rw, json!({"type": "join"})).await;
    say(&mut ro, "can I?").await;
    let error = recv_kind(&mut ro, "error").await;
    assert_eq!(error["code"], "read_only");
    // It still reads.
    say(&mut rw, "news").await;
    let msg = recv_kind(&mut ro, "message").await;
    assert_eq!(msg["text"], "news");
    assert_eq!(msg["seq"], 1, "the refused send took no number");

    // A plain read-only client that talks is closed with 1008.
    let mut plain_ro = plain(&hub, &format!("/?token={reader}")).await;
    plain_ro.send(Message::text("hello?")).await.unwrap();
    assert_eq!(close_code(&mut plain_ro).await, CloseCode::POLICY);
    hub.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_static_token_still_works_without_jwt() {
    let dir = tempfile::tempdir().unwrap();
    let hub = TestHub::start(TestHub::config(dir.path()).token("s3cret")).await;
    let (status, _) = upgrade_status(&hub, "/?token=wrong", &[]).await;
    assert_eq!(status, 401);
    // No identity message without JWT: the join's name is the client's.
    let (_ws, _) = joined(&hub, "/?token=s3cret", "anyone", None).await;
    hub.stop().await.unwrap();
}
