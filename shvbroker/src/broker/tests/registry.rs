//! Who comes and goes: a login is registered with its mount point (asked for, or
//! placed by autosetup) or refused, and the limits on sessions hold.

use super::*;

const AUTOSETUP: &str = "autosetup:
  - {device_id: history, roles: [admin], mount_point: .history}
  - {device_id: '?*', roles: [device], mount_point: 'test/auto/%d%i'}
";

/// One login into the standard world: the mount it gets, or the refusal's text.
struct Row {
    config: &'static str,
    login: Login,
    expect: Result<Option<&'static str>, &'static str>,
}

fn check(row: Row) {
    let mut w = World::new(row.config);
    match (w.login("new", row.login), row.expect) {
        (Ok(id), Ok(mount)) => {
            assert_eq!(w.broker.peers[&id].mount.as_deref(), mount);
            if let Some(m) = mount {
                assert_eq!(w.broker.route(&format!("{m}/x")), Some((id, "x".into())));
            }
        }
        (Err(e), Err(text)) => assert!(e.message.contains(text), "refused with '{}'", e.message),
        (got, want) => panic!("login gave {got:?}, expected {want:?}"),
    }
}

macro_rules! rows {
    ($($name:ident: $row:expr;)*) => {
        $( #[test] fn $name() { check($row) } )*
    };
}

const fn row(login: Login, expect: Result<Option<&'static str>, &'static str>) -> Row {
    Row {
        config: "",
        login,
        expect,
    }
}

rows! {
    a_device_mounts_where_its_role_allows:
        row(Login::User("device", Some("test/dev3")), Ok(Some("test/dev3")));
    a_trailing_slash_of_a_mount_point_is_trimmed:
        row(Login::User("device", Some("/test/dev3/")), Ok(Some("test/dev3")));
    a_mount_outside_the_role_is_refused:
        row(Login::User("device", Some("other/dev")), Err("not allowed for this user"));
    a_mount_on_another_is_refused:
        row(Login::User("device", Some("test/dev")), Err("collides with the mount 'test/dev'"));
    a_mount_inside_another_is_refused:
        row(Login::User("device", Some("test/dev/sub")), Err("collides"));
    a_mount_over_others_is_refused:
        row(Login::User("admin", Some("test")), Err("collides"));
    a_mount_with_an_empty_segment_is_refused:
        row(Login::User("device", Some("test//dev3")), Err("empty path segment"));
    a_mount_over_the_broker_nodes_is_refused:
        row(Login::User("admin", Some(".broker/x")), Err("would shadow the broker's"));
    a_client_without_a_mount_point_is_not_mounted:
        row(Login::User("viewer", None), Ok(None));
    autosetup_places_a_device_by_its_id:
        Row { config: AUTOSETUP, login: Login::Device("device", "plc"), expect: Ok(Some("test/auto/plc")) };
    autosetup_rules_decide_who_claims_an_id:
        Row { config: AUTOSETUP, login: Login::Device("device", "history"), expect: Ok(Some("test/auto/history")) };
    autosetup_for_the_role_it_names:
        Row { config: AUTOSETUP, login: Login::Device("admin", "history"), expect: Ok(Some(".history")) };
    a_device_id_no_rule_matches_stays_unmounted:
        row(Login::Device("viewer", "plc"), Ok(None));
    a_device_id_too_long_is_refused:
        Row { config: AUTOSETUP, login: Login::Device("device", "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"), expect: Err("deviceId longer than 256 bytes") };
    sessions_are_bounded_per_user:
        Row { config: "limits: {max_sessions_per_user: 2}\n", login: Login::User("device", None), expect: Err("this user has 2 sessions already") };
    a_tunnel_secret_nobody_issued_is_refused:
        row(Login::Tunnel("guess"), Err("tunnel secret not valid"));
}

/// A session closed makes room for the next one.
#[test]
fn a_closed_session_gives_its_place_back() {
    let mut w = World::new("limits: {max_sessions_per_user: 2}\n");
    assert!(w.login("d3", Login::User("device", None)).is_err());
    w.gone("dev2");
    assert!(w.login("d3", Login::User("device", None)).is_ok());
}

/// A device that leaves frees its mount point for the next one.
#[test]
fn an_unmount_frees_the_mount_point() {
    let mut w = World::new("");
    w.gone("dev");
    assert_eq!(w.broker.route("test/dev/x"), None);
    let id = w
        .login("again", Login::User("device", Some("test/dev")))
        .unwrap();
    assert_eq!(w.broker.route("test/dev/x"), Some((id, "x".into())));
}

/// A connection that gave up waiting for its registration is forgotten at once.
#[test]
fn a_registration_nobody_waits_for_is_forgotten() {
    let mut w = World::new("");
    let (tx, _rx) = queue::channel(10, 1 << 20, w.total.clone());
    let reg = Registration {
        id: 99,
        login: LoginInfo::User {
            user: "device".into(),
            grants: Grants::for_user(&w.settings, "device"),
            device_id: None,
            mount_point: Some("test/late".into()),
            user_agent: None,
        },
        tx,
        cancel: CancellationToken::new(),
        addr: "test:late".into(),
        idle_timeout: None,
        login_request: None,
    };
    let (reply, answer) = oneshot::channel();
    drop(answer);
    w.broker.handle(Event::Register(Box::new(reg), reply));
    assert!(!w.broker.peers.contains_key(&99));
    assert_eq!(w.broker.route("test/late"), None);
}
