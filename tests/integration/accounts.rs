//! What authentication keeps in the engine: API clients, refresh-token rotation with
//! reuse detection, signing keys and recorded responses.

use emporium_engine::*;
use emporium_tests::TestEngine;

fn hash(n: u8) -> String {
    format!("{n:02x}").repeat(32)
}

#[test]
fn refresh_tokens_rotate_once_and_reuse_revokes_the_family() {
    let te = TestEngine::new();
    let expires_at = emporium_tests::T0 + 60_000;
    let first = te
        .shop
        .send(IssueRefreshToken { subject: "cus_1".into(), token_hash: hash(1), expires_at })
        .unwrap();
    let rotate = |presented: u8, new: u8| {
        te.shop
            .send(RotateRefreshToken {
                presented_hash: hash(presented),
                new_hash: hash(new),
                expires_at,
            })
            .unwrap()
    };
    let second = match rotate(1, 2) {
        Rotation::Rotated(token) => token,
        other => panic!("expected a rotation, got {other:?}"),
    };
    assert_eq!(second.family, first.family);
    assert_eq!(second.subject, "cus_1");
    // The spent token comes back: it leaked. The family, successor included, dies.
    assert_eq!(rotate(1, 3), Rotation::Reused);
    assert_eq!(te.state().refresh_token(&hash(2)).unwrap().state, RefreshState::Revoked);
    assert_eq!(rotate(2, 4), Rotation::Invalid);
    assert_eq!(rotate(9, 5), Rotation::Invalid);
    // Expired tokens are refused, then purged by the expiry sweep.
    te.shop
        .send(IssueRefreshToken { subject: "cus_2".into(), token_hash: hash(6), expires_at })
        .unwrap();
    te.clock.advance(60_000);
    assert_eq!(rotate(6, 7), Rotation::Invalid);
    te.shop.send(ExpireDue).unwrap();
    assert!(te.state().refresh_token(&hash(6)).is_none());
}

#[test]
fn accounts_survive_a_restart() {
    let te = TestEngine::new();
    let client = te
        .shop
        .send(CreateApiClient {
            name: "warehouse".into(),
            secret_hash: "hashed".into(),
            scopes: vec!["inventory:write".into()],
        })
        .unwrap();
    te.shop.send(AddSigningKey { kid: "k1".into(), secret: vec![7; 32] }).unwrap();
    let key = IdempotencyKey { scope: "cus_1".into(), key: "k".into() };
    te.shop
        .send(RecordResponse {
            key: key.clone(),
            fingerprint: 42,
            status: 201,
            body: b"{}".to_vec(),
        })
        .unwrap();
    let te = te.reopen();
    assert_eq!(te.state().api_client(&client.id).unwrap().scopes, vec!["inventory:write"]);
    assert_eq!(te.state().signing_keys()[0].kid, "k1");
    let record = te.state().idempotency_record(&key.scoped()).unwrap();
    assert_eq!(record.fingerprint, 42);
    assert!(matches!(&record.outcome, IdempotentOutcome::Response(r) if r.status == 201));
}

#[test]
fn bad_account_input_is_refused() {
    let te = TestEngine::new();
    let lsn = te.engine.last_lsn();
    let bad_scope = CreateApiClient {
        name: "x".into(),
        secret_hash: "h".into(),
        scopes: vec!["Bad Scope".into()],
    };
    assert_eq!(te.shop.send(bad_scope).unwrap_err().fields()[0].field, "scopes[0]");
    let short_key = AddSigningKey { kid: "k".into(), secret: vec![1; 8] };
    assert_eq!(te.shop.send(short_key).unwrap_err().fields()[0].field, "secret");
    let bad_hash =
        IssueRefreshToken { subject: "s".into(), token_hash: "zz".into(), expires_at: i64::MAX };
    assert_eq!(te.shop.send(bad_hash).unwrap_err().fields()[0].field, "token_hash");
    assert_eq!(te.engine.last_lsn(), lsn);
}

/// Logging in again and again cannot grow the refresh-token table without bound: a
/// subject keeps at most `REFRESH_FAMILIES_PER_SUBJECT_MAX` sessions, a new one past it
/// revokes the oldest (whose tokens are then refused), and the count holds after a
/// reopen. Another subject's sessions are untouched.
#[test]
fn a_subjects_sessions_are_bounded_and_the_oldest_give_way() {
    let te = TestEngine::new();
    let expires_at = emporium_tests::T0 + 3_600_000;
    let extra = 8;
    let issue = |subject: &str, n: usize| {
        te.clock.advance(1);
        te.shop
            .send(IssueRefreshToken {
                subject: subject.into(),
                token_hash: format!("{:064x}", n + if subject == "cus_1" { 0 } else { 1 << 20 }),
                expires_at,
            })
            .unwrap()
    };
    issue("cus_2", 0);
    let tokens: Vec<_> =
        (0..REFRESH_FAMILIES_PER_SUBJECT_MAX + extra).map(|n| issue("cus_1", n)).collect();
    assert_eq!(te.state().session_count("cus_1"), REFRESH_FAMILIES_PER_SUBJECT_MAX);
    assert_eq!(te.state().session_count("cus_2"), 1);
    for (n, token) in tokens.iter().enumerate() {
        let now = te.state().refresh_token(&token.hash).unwrap().state;
        let expected = if n < extra { RefreshState::Revoked } else { RefreshState::Active };
        assert_eq!(now, expected, "session {n}");
    }
    let oldest = te.shop.send(RotateRefreshToken {
        presented_hash: tokens[0].hash.clone(),
        new_hash: "e".repeat(64),
        expires_at,
    });
    assert_eq!(oldest.unwrap(), Rotation::Invalid, "a revoked session is over");
    let te = te.reopen();
    assert_eq!(te.state().session_count("cus_1"), REFRESH_FAMILIES_PER_SUBJECT_MAX);
    assert_eq!(te.state().session_count("cus_2"), 1);
}
