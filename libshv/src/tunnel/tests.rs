use super::*;
use bytes::Bytes;

fn ctl_full() -> TunnelCtl {
    TunnelCtl {
        state: TunnelState::FindTunnelResponse,
        host: Some("127.0.0.1".into()),
        port: Some(3755),
        secret: Some("s3cr3t".into()),
        request_id: Some(42),
        caller_ids: vec![1, 7],
        nonce: Some("n0nce".into()),
    }
}

#[test]
fn fast_data_matches_the_generic_decoder() {
    for (ch, data) in [(1i64, vec![]), (2, b"abc".to_vec()), (0, vec![0u8; 70_000])] {
        let v = RpcValue::from(vec![RpcValue::from(ch), RpcValue::from(data.clone())]);
        let mut m = shvproto::IMap::new();
        m.insert(2, v.clone());
        let body = RpcValue::from(m).to_chainpack();
        assert_eq!(
            fast_data(&bytes::Bytes::from(body.clone())),
            parse_data(&v),
            "channel {ch}"
        );
        assert_eq!(
            fast_data(&bytes::Bytes::from(body.clone())),
            Some(TunnelEvent::Data {
                channel: ch,
                data: data.into()
            })
        );
    }
    // What we write is what the generic writer writes, forward connections' channels
    // (16 + N, beyond one byte's tiny Int) included.
    for (ch, data) in [
        (0i64, b"".to_vec()),
        (2, vec![7u8; 300]),
        (63, b"x".to_vec()),
        (64, b"y".to_vec()),
        (16 + 255, b"z".to_vec()),
        (16 + 70_000, vec![1u8; 200]),
        (i64::from(u32::MAX) + 16, b"w".to_vec()),
    ] {
        let v = RpcValue::from(vec![RpcValue::from(ch), RpcValue::from(data.clone())]);
        let mut m = shvproto::IMap::new();
        m.insert(2, v);
        let body = data_body(ch, &data, Dialect::Shv);
        assert_eq!(&body[..], &RpcValue::from(m).to_chainpack()[..], "{ch}");
        // Read back as the same channel, by the fast path whatever the channel, as the
        // generic decoder reads it.
        let v = RpcValue::from_chainpack(&body).unwrap();
        let generic = parse_data(v.as_imap().get(&2).unwrap());
        let want = Some(TunnelEvent::Data {
            channel: ch,
            data: data.into(),
        });
        assert_eq!(generic, want, "{ch}");
        assert_eq!(fast_data(&body), want, "{ch} takes the fast path");
    }
    // A channel as a UInt, or negative (as another writer may send them): read as the
    // generic decoder reads them.
    for ch in [
        RpcValue::from(100u64),
        RpcValue::from(-5i64),
        RpcValue::from(5u64),
    ] {
        let v = RpcValue::from(vec![ch.clone(), RpcValue::from(b"q".to_vec())]);
        let mut m = shvproto::IMap::new();
        m.insert(2, v.clone());
        let body = RpcValue::from(m).to_chainpack();
        assert_eq!(
            fast_data(&bytes::Bytes::from(body.clone())),
            parse_data(&v),
            "{}",
            ch.to_cpon()
        );
        assert!(
            fast_data(&bytes::Bytes::from(body.clone())).is_some(),
            "{}",
            ch.to_cpon()
        );
    }
    // Control maps, truncated or trailing bytes: not the fast path.
    let ctl = RpcValue::from_cpon(r#"i{2:[3,{"eof":true}]}"#)
        .unwrap()
        .to_chainpack();
    assert_eq!(fast_data(&bytes::Bytes::from(ctl.clone())), None);
    let good = RpcValue::from_cpon(r#"i{2:[1,b"xy"]}"#)
        .unwrap()
        .to_chainpack();
    assert_eq!(
        fast_data(&bytes::Bytes::copy_from_slice(&good[..good.len() - 1])),
        None
    );
    let mut longer = good.clone();
    longer.insert(longer.len() - 1, 0x41);
    assert_eq!(fast_data(&bytes::Bytes::from(longer.clone())), None);
    // A body written twice (shvapp's libshv) reads as its first copy.
    let twice = [&good[..], &good[..]].concat();
    assert_eq!(
        fast_data(&bytes::Bytes::from(twice.clone())),
        Some(TunnelEvent::Data {
            channel: 1,
            data: bytes::Bytes::from_static(b"xy")
        })
    );
}

/// The journal dialect's data: a ChainPack String as a C++ end writes it (the same
/// bytes as shvproto's for UTF-8 text), read back byte-exact whatever the bytes.
#[test]
fn journal_data_are_strings_of_any_bytes() {
    let text = "fanda@tecka:~$ \u{1b}[0m ž";
    let mut m = shvproto::IMap::new();
    m.insert(
        2,
        RpcValue::from(vec![RpcValue::from(1), RpcValue::from(text)]),
    );
    let body = data_body(1, text.as_bytes(), Dialect::Journal);
    assert_eq!(&body[..], &RpcValue::from(m).to_chainpack()[..]);
    let all: Vec<u8> = (0..=255u8).chain([0xc3, 0xff, 0xfe]).collect();
    for data in [all.clone(), vec![0xc3], vec![0u8; 70_000]] {
        let body = data_body(0, &data, Dialect::Journal);
        assert_eq!(
            fast_data(&body),
            Some(TunnelEvent::Data {
                channel: 0,
                data: data.into()
            }),
        );
    }
}

#[test]
fn tctl_wire_shape() {
    let v = TunnelCtl::new(TunnelState::FindTunnelRequest).to_value();
    assert_eq!(v.to_cpon(), "<1:3>i{1:1}");
    let v = ctl_full().to_value();
    assert_eq!(
        v.to_cpon(),
        r#"<1:3>i{1:2,2:"127.0.0.1",3:3755,4:"s3cr3t",5:42,6:[1,7],7:"n0nce"}"#
    );
    let one = TunnelCtl {
        caller_ids: vec![5],
        ..TunnelCtl::new(TunnelState::CreateTunnelRequest)
    };
    assert_eq!(one.to_value().to_cpon(), "<1:3>i{1:3,6:5}");
}

#[test]
fn tctl_round_trip() {
    for c in [
        ctl_full(),
        TunnelCtl::new(TunnelState::CloseTunnel),
        TunnelCtl {
            caller_ids: vec![3],
            request_id: Some(-1),
            ..TunnelCtl::new(TunnelState::CreateTunnelResponse)
        },
    ] {
        let v = c.to_value();
        assert_eq!(TunnelCtl::parse(&v).unwrap(), c);
        let cp = RpcValue::from_chainpack(v.to_chainpack()).unwrap();
        assert_eq!(TunnelCtl::parse(&cp).unwrap(), c);
        let cpon = RpcValue::from_cpon(v.to_cpon()).unwrap();
        assert_eq!(TunnelCtl::parse(&cpon).unwrap(), c);
    }
}

#[test]
fn tctl_tolerant_parse() {
    // No meta, UInt state, Null fields, [] and [x] stacks, unknown keys.
    let v = RpcValue::from_cpon(r#"i{1:2u,2:null,3:4000u,6:[],99:"x"}"#).unwrap();
    let c = TunnelCtl::parse(&v).unwrap();
    assert_eq!(c.state, TunnelState::FindTunnelResponse);
    assert_eq!(c.host, None);
    assert_eq!(c.port, Some(4000));
    assert!(c.caller_ids.is_empty());
    let v = RpcValue::from_cpon("i{1:4,6:[9]}").unwrap();
    assert_eq!(TunnelCtl::parse(&v).unwrap().caller_ids, vec![9]);
    assert_eq!(
        TunnelCtl::parse(&RpcValue::from_cpon("i{2:\"h\"}").unwrap()),
        Err(TunnelCtlError::NoState)
    );
    assert_eq!(
        TunnelCtl::parse(&RpcValue::from_cpon("i{1:9}").unwrap()),
        Err(TunnelCtlError::BadState(9))
    );
    assert_eq!(
        TunnelCtl::parse(&RpcValue::from_cpon("{}").unwrap()),
        Err(TunnelCtlError::NotIMap)
    );
    assert_eq!(
        TunnelCtl::parse(&RpcValue::from_cpon("i{1:1,3:70000}").unwrap()),
        Err(TunnelCtlError::BadField(3))
    );
}

#[test]
fn secret_not_in_debug() {
    assert!(!format!("{:?}", ctl_full()).contains("s3cr3t"));
}

#[test]
fn step2_find_tunnel_request_shape() {
    let req = RpcValue::from_cpon(
        r#"<1:1,8:12,9:"test/agent",10:"launchRexec",11:[3,4]>i{1:{"method":"runCmd","params":{"cmd":["ls"]}}}"#,
    )
    .unwrap();
    let f = RpcFrame::parse(Bytes::from(req.to_chainpack())).unwrap();
    let out = find_tunnel_request(&f.meta, None);
    let msg = RpcMessage::from_frame(&out).unwrap();
    assert_eq!(
        RpcValue::new(Value::IMap(Box::new(msg.body.clone())), Some(msg.meta)).to_cpon(),
        "<1:1,8:12,11:[3,4],13:null,15:<1:3>i{1:1}>i{}"
    );
    assert!(out.is_response());
}

#[test]
fn step6_7_shapes() {
    let f = tunnel_frame(
        12,
        &[3],
        true,
        Some(&TunnelCtl {
            state: TunnelState::CreateTunnelRequest,
            host: Some("localhost".into()),
            port: Some(3755),
            secret: None,
            request_id: Some(10),
            caller_ids: vec![3],
            nonce: None,
        }),
        None,
    );
    let v = RpcValue::from_chainpack(f.payload()).unwrap();
    assert_eq!(
        v.to_cpon(),
        r#"<1:1,8:12,11:3,13:null,15:<1:3>i{1:3,2:"localhost",3:3755,5:10,6:3}>i{}"#
    );
    let f = tunnel_frame(
        10,
        &[8],
        true,
        Some(&TunnelCtl::new(TunnelState::CreateTunnelResponse)),
        None,
    );
    let v = RpcValue::from_chainpack(f.payload()).unwrap();
    assert_eq!(v.to_cpon(), "<1:1,8:10,11:8,13:null,15:<1:3>i{1:4}>i{}");
}

#[test]
fn data_and_close_frames() {
    let f = tunnel_frame(
        12,
        &[3],
        false,
        None,
        Some(RpcValue::from(vec![
            RpcValue::from(1),
            RpcValue::from(&b"hi\n"[..]),
        ])),
    );
    let v = RpcValue::from_chainpack(f.payload()).unwrap();
    assert_eq!(v.to_cpon(), r#"<1:1,8:12,11:3>i{2:[1,b"hi\n"]}"#);
    assert_eq!(
        frame_event(&f).unwrap(),
        Some(TunnelEvent::Data {
            channel: 1,
            data: bytes::Bytes::from_static(b"hi\n")
        })
    );
    // Old peers send Strings.
    let s = RpcValue::from_cpon(r#"[2,"err"]"#).unwrap();
    assert_eq!(
        parse_data(&s),
        Some(TunnelEvent::Data {
            channel: 2,
            data: bytes::Bytes::from_static(b"err")
        })
    );
    let c = RpcValue::from_cpon(r#"[3,{"resize":[100,40]}]"#).unwrap();
    assert!(matches!(parse_data(&c), Some(TunnelEvent::Control(_))));

    let close = tunnel_frame(
        12,
        &[3],
        false,
        Some(&TunnelCtl::new(TunnelState::CloseTunnel)),
        Some(CloseStatus::ExitCode(3).to_value()),
    );
    let v = RpcValue::from_chainpack(close.payload()).unwrap();
    assert_eq!(
        v.to_cpon(),
        r#"<1:1,8:12,11:3,15:<1:3>i{1:5}>i{2:{"exitCode":3}}"#
    );
    assert_eq!(
        frame_event(&close).unwrap(),
        Some(TunnelEvent::Closed(CloseStatus::ExitCode(3)))
    );
    let err =
        RpcValue::from_cpon(r#"<1:1,8:12,15:<1:3>i{1:5}>i{2:{"error":"secret expired"}}"#).unwrap();
    let f = RpcFrame::parse(Bytes::from(err.to_chainpack())).unwrap();
    assert_eq!(
        frame_event(&f).unwrap(),
        Some(TunnelEvent::Closed(CloseStatus::Error(
            "secret expired".into()
        )))
    );
}

#[test]
fn close_status_codes() {
    assert_eq!(CloseStatus::ExitCode(3).exit_code(), 3);
    assert_eq!(CloseStatus::Signal(9).exit_code(), 137);
    assert_eq!(CloseStatus::Error("x".into()).exit_code(), 255);
    for s in [
        CloseStatus::ExitCode(0),
        CloseStatus::Signal(15),
        CloseStatus::Error("boom".into()),
    ] {
        assert_eq!(CloseStatus::from_value(Some(&s.to_value())), s);
    }
    assert_eq!(CloseStatus::from_value(None), CloseStatus::Detached);
    // A lying peer's signal number: never an overflow (a panic in debug builds).
    assert_eq!(CloseStatus::Signal(i32::MAX).exit_code(), 255);
    for n in [i64::MAX, i64::MIN, i64::from(i32::MAX) + 1] {
        let v = RpcValue::from_cpon(format!(r#"{{"signal":{n}}}"#)).unwrap();
        let _ = CloseStatus::from_value(Some(&v)).exit_code();
    }
}

#[test]
fn launch_params_forms() {
    let p = LaunchParams {
        pty: true,
        cmd: vec!["sh".into(), "-c".into(), "echo hi".into()],
        cols: 100,
        rows: 40,
        env: vec![("TERM".into(), "xterm-256color".into())],
        cwd: None,
        forward: None,
        copy: None,
    };
    let v = p.to_value();
    assert_eq!(
        v.to_cpon(),
        r#"{"method":"runPtyCmd","params":{"cmd":["sh","-c","echo hi"],"cols":100,"env":{"TERM":"xterm-256color"},"rows":40}}"#
    );
    assert_eq!(LaunchParams::from_value(&v).unwrap(), p);
    // Original List form and String cmd.
    let v = RpcValue::from_cpon(r#"{"method":"runPtyCmd","params":["top",120,50]}"#).unwrap();
    let p = LaunchParams::from_value(&v).unwrap();
    assert_eq!(p.cmd, vec!["/bin/sh", "-c", "top"]);
    assert_eq!((p.cols, p.rows, p.pty), (120, 50, true));
    let v = RpcValue::from_cpon(r#"{"method":"runCmd","params":["ls","-l"]}"#).unwrap();
    let p = LaunchParams::from_value(&v).unwrap();
    assert_eq!(p.cmd, vec!["ls", "-l"]);
    assert!(!p.pty);
    let v = RpcValue::from_cpon(r#"{"method":"runPtyCmd"}"#).unwrap();
    assert!(LaunchParams::from_value(&v).unwrap().cmd.is_empty());
    assert!(LaunchParams::from_value(&RpcValue::from_cpon(r#"{"method":"rm"}"#).unwrap()).is_err());
    assert!(LaunchParams::from_value(
        &RpcValue::from_cpon(r#"{"method":"runCmd","params":[1]}"#).unwrap()
    )
    .is_err());
}

#[test]
fn control_messages_round_trip() {
    for c in [
        Control::Resize {
            cols: 100,
            rows: 40,
        },
        Control::Eof,
        Control::Signal(2),
        Control::Ack(65536),
    ] {
        assert_eq!(Control::parse(&c.clone().to_value()), Some(c));
    }
    assert_eq!(
        Control::Resize {
            cols: 100,
            rows: 40
        }
        .to_value()
        .to_cpon(),
        r#"{"resize":[100,40]}"#
    );
    let big = RpcValue::from_cpon(r#"{"resize":[0,99999]}"#).unwrap();
    assert_eq!(
        Control::parse(&big),
        Some(Control::Resize {
            cols: 1,
            rows: 65535
        })
    );
    for odd in [r#"{"eof":false}"#, r#"{"ack":-1}"#, r#"{"what":1}"#, "[1]"] {
        assert_eq!(
            Control::parse(&RpcValue::from_cpon(odd).unwrap()),
            None,
            "{odd}"
        );
    }
}

#[test]
fn a_notice_is_capped_at_a_character_boundary_and_must_be_text() {
    let n = Control::Notice("idle".into());
    assert_eq!(Control::parse(&n.clone().to_value()), Some(n));
    // 1023 ASCII bytes and a 3-byte character across the cap: cut before it.
    let long = format!("{}€€€", "x".repeat(super::ctl::MAX_NOTICE - 1));
    let Some(Control::Notice(cut)) = Control::parse(&Control::Notice(long).to_value()) else {
        panic!("not a notice");
    };
    assert_eq!(cut.len(), super::ctl::MAX_NOTICE - 1);
    assert_eq!(
        Control::parse(&RpcValue::from_cpon(r#"{"notice":[1,2]}"#).unwrap()),
        None
    );
}

#[test]
fn forward_launches_and_connection_controls_round_trip() {
    for f in [
        Forward::Connect {
            host: "10.0.0.5".into(),
            port: 502,
        },
        Forward::Listen {
            bind: "0.0.0.0".into(),
            port: 8080,
        },
    ] {
        let p = LaunchParams {
            forward: Some(f),
            ..Default::default()
        };
        assert_eq!(p.kind(), "forward");
        assert_eq!(LaunchParams::from_value(&p.to_value()).unwrap(), p);
    }
    for bad in [
        r#"{"method":"forwardTcp","params":{"host":"h","port":0}}"#,
        r#"{"method":"forwardTcp","params":{"host":"","port":80}}"#,
        r#"{"method":"listenTcp","params":{"port":80}}"#,
        r#"{"method":"listenTcp","params":[1]}"#,
    ] {
        let v = RpcValue::from_cpon(bad).unwrap();
        assert!(LaunchParams::from_value(&v).is_err(), "{bad}");
    }
    for c in [
        Control::ConnOpen(7),
        Control::ConnEof(0),
        Control::ConnClose(u32::MAX),
        Control::ConnOpenTo {
            id: 3,
            host: "plc.local".into(),
            port: 502,
        },
        Control::Total(1 << 40),
    ] {
        assert_eq!(Control::parse(&c.clone().to_value()), Some(c));
    }
    let negative = RpcValue::from_cpon(r#"{"connOpen":-1}"#).unwrap();
    assert_eq!(Control::parse(&negative), None);
}
