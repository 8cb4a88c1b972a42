//! hello / workflows / login: good and bad passwords, SHA1 and PLAIN.

use libshv::shvproto::Value;
use libshv::ClientError;
use tests::*;

async fn login_with(
    broker: &Broker,
    user: &str,
    password: &str,
    sha1: bool,
) -> Result<(), ClientError> {
    let mut c = broker.config(user, password);
    c.login.use_sha1 = sha1;
    broker
        .try_connect(&c, None)
        .await
        .map(|(client, _)| drop(client))
}

#[tokio::test]
async fn sha1_login_good_password() {
    let broker = Broker::start(None);
    let mut c = broker.config("admin", "admin");
    c.login.use_sha1 = true;
    let (client, _) = broker
        .try_connect(&c, None)
        .await
        .expect("SHA1 login as admin");
    assert_served(&client).await;
}

#[tokio::test]
async fn plain_login_good_password() {
    let broker = Broker::start(None);
    let mut c = broker.config("viewer", "viewer");
    c.login.use_sha1 = false;
    let (client, _) = broker
        .try_connect(&c, None)
        .await
        .expect("PLAIN login as viewer");
    assert_served(&client).await;
}

#[tokio::test]
async fn sha1_login_bad_password_is_refused() {
    let broker = Broker::start(None);
    let r = login_with(&broker, "admin", "wrong", true).await;
    assert!(
        matches!(r, Err(ClientError::Login(_))),
        "expected a login error, got {r:?}"
    );
    // The broker still serves others.
    let (client, _) = broker.connect("admin", "admin").await;
    assert_served(&client).await;
}

#[tokio::test]
async fn plain_login_bad_password_is_refused() {
    let broker = Broker::start(None);
    let r = login_with(&broker, "viewer", "admin", false).await;
    assert!(
        matches!(r, Err(ClientError::Login(_))),
        "expected a login error, got {r:?}"
    );
}

#[tokio::test]
async fn unknown_user_is_refused() {
    let broker = Broker::start(None);
    for sha1 in [true, false] {
        let r = login_with(&broker, "nobody", "nobody", sha1).await;
        assert!(
            matches!(r, Err(ClientError::Login(_))),
            "sha1={sha1}: {r:?}"
        );
    }
}

#[tokio::test]
async fn hello_nonce_and_workflows() {
    let broker = Broker::start(None);
    let mut raw = broker.raw().await;
    let h1 = raw.call("", "hello", None).await.result().expect("hello");
    let nonce = h1
        .get("nonce")
        .expect("hello result has nonce")
        .as_str()
        .to_string();
    assert!(
        (10..=32).contains(&nonce.len()) && nonce.chars().all(|c| c.is_ascii_graphic()),
        "nonce must be 10..32 ASCII chars: {nonce:?}"
    );
    let h2 = raw
        .call("", "hello", None)
        .await
        .result()
        .expect("second hello");
    assert_eq!(
        h2.get("nonce").map(|n| n.as_str().to_string()),
        Some(nonce),
        "repeated hello must keep the nonce"
    );
    let wf = raw
        .call("", "workflows", None)
        .await
        .result()
        .expect("workflows");
    let list: Vec<String> = match &wf.value {
        Value::List(l) => l.iter().map(|v| v.as_str().to_string()).collect(),
        _ => panic!("workflows is not a list: {}", wf.to_cpon()),
    };
    assert!(list.iter().any(|w| w == "PLAIN"), "{list:?}");
    assert!(list.iter().any(|w| w == "SHA1"), "{list:?}");
}

#[tokio::test]
async fn retry_after_bad_login_on_same_connection() {
    let broker = Broker::start(None);
    let mut raw = broker.raw().await;
    let e = raw
        .login("admin", "bad", true)
        .await
        .expect_err("bad password must fail");
    assert_ne!(e.code, 0, "login error must carry a code: {e:?}");
    raw.login("admin", "admin", true)
        .await
        .expect("second try with the right password");
    let r = raw
        .call(".app", "shvVersionMajor", None)
        .await
        .result()
        .expect("call after login");
    assert_eq!(r.as_int(), 3);
}

#[tokio::test]
async fn raw_plain_and_sha1_login_results() {
    let broker = Broker::start(None);
    for sha1 in [false, true] {
        let mut raw = broker.raw().await;
        raw.login("device", "device", sha1)
            .await
            .unwrap_or_else(|e| panic!("login sha1={sha1}: {e}"));
        let r = raw.call(".app", "ping", None).await;
        assert!(r.result().is_ok(), "ping after login (sha1={sha1})");
    }
}
