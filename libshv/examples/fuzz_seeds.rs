//! Writes the seed corpora of the fuzz targets (`fuzz/corpus/<target>/seed-*`) from real
//! messages: the spec's examples, the login and tunnel handshakes as our tools send
//! them, and the broker API calls. Run from the repository root:
//!
//! ```sh
//! cargo run -p libshv --example fuzz_seeds -- fuzz/corpus
//! ```
//!
//! Seeds are named by content hash, so re-running only adds new ones.

use std::path::{Path, PathBuf};

use libshv::login::{Credentials, LoginParams};
use libshv::message::{RpcError, RpcMessage};
use libshv::shvproto::RpcValue;
use libshv::tunnel::{self, CloseStatus, LaunchParams, TunnelCtl, TunnelState};

fn cpon(s: &str) -> RpcValue {
    RpcValue::from_cpon(s).unwrap_or_else(|e| panic!("seed {s}: {e}"))
}

/// Real messages (Cpon), as they appear in the spec and on the wire between our tools.
const MESSAGES: &[&str] = &[
    r#"<1:1,8:1,10:"hello">i{}"#,
    r#"<1:1,8:2,10:"workflows">i{}"#,
    r#"<1:1,8:1>i{2:{"nonce":"abcd1234abcd1234"}}"#,
    r#"<1:1,8:3,10:"login">i{1:{"login":{"password":"admin","type":"PLAIN","user":"admin"},"options":{"device":{"mountPoint":"test/dev"},"idleWatchDogTimeOut":60}}}"#,
    r#"<1:1,8:4,9:".app",10:"ping">i{}"#,
    r#"<1:1,8:5,10:"ls">i{}"#,
    r#"<1:1,8:6,9:".broker",10:"dir">i{1:"clientInfo"}"#,
    r#"<1:1,8:7,9:".broker/currentClient",10:"subscribe">i{1:["test/**:*:chng",60]}"#,
    r#"<1:1,8:8,9:"test/dev/number",10:"set",11:[3,5],16:"admin:shvbroker",17:63,14:"su">i{1:42}"#,
    r#"<1:1,8:8,11:[3,5]>i{2:true}"#,
    r#"<1:1,8:9,11:7>i{3:i{1:2,2:"method not found"}}"#,
    r#"<1:1,9:"test/dev/number",10:"chng",19:"get",17:8,20:false>i{1:123}"#,
    r#"<1:1,9:"test",10:"lsmod">i{1:{"dev":true}}"#,
    r#"<1:1,8:10,9:"test/agent",10:"launchRexec",11:4>i{1:{"method":"runPtyCmd","params":{"cmd":["sh","-c","ls"],"cols":80,"rows":24,"env":{"TERM":"xterm"}}}}"#,
    r#"<1:1,8:10,11:4,13:null,15:<1:3>i{1:1}>i{}"#,
    r#"<1:1,8:10,11:4,15:<1:3>i{1:2,2:"127.0.0.1",3:3755,4:"0123456789abcdef0123456789abcdef",6:[4]}>i{}"#,
    r#"<1:1,8:10,11:[4],13:null,15:<1:3>i{1:3,2:"127.0.0.1",3:3755,5:77,6:4}>i{}"#,
    r#"<1:1,8:77,11:9,13:null,15:<1:3>i{1:4}>i{}"#,
    r#"<1:1,8:10,11:4>i{2:[1,b"hello\n"]}"#,
    r#"<1:1,8:77,11:9>i{2:[3,{"resize":[120,40]}]}"#,
    r#"<1:1,8:10,11:4,15:<1:3>i{1:5}>i{2:{"exitCode":0}}"#,
    r#"<1:1,8:10,11:4,15:<1:3>i{1:5}>i{2:{"error":"secret expired"}}"#,
    r#"<1:1,8:11,9:"a/b",10:"set">i{1:[null,true,false,-1,1u,1.5,1.25e3,d"2024-01-02T03:04:05.678Z",x"0aff",b"\\00",i{1:2},{"k":[]},<5:"m">{}]}"#,
];

struct Seeds {
    root: PathBuf,
    count: usize,
}

impl Seeds {
    fn put(&mut self, target: &str, data: &[u8]) {
        let dir = self.root.join(target);
        std::fs::create_dir_all(&dir).expect("create corpus dir");
        let name = format!("seed-{}", &libshv::login::sha1_hex(data)[..16]);
        let path = dir.join(name);
        if !path.exists() {
            std::fs::write(&path, data).expect("write seed");
            self.count += 1;
        }
    }
}

fn framed(payload: &[u8], format: u8) -> Vec<u8> {
    let mut b = bytes::BytesMut::new();
    libshv::codec::write_header(&mut b, payload.len(), format);
    b.extend_from_slice(payload);
    b.to_vec()
}

fn main() {
    let root = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new("fuzz/corpus").to_path_buf());
    let mut s = Seeds { root, count: 0 };
    let mut stream = Vec::new();

    for m in MESSAGES {
        let v = cpon(m);
        let cp = v.to_chainpack();
        s.put("frame_parse", &cp);
        s.put("message_decode", &cp);
        s.put("cpon_parse", m.as_bytes());
        s.put("cpon_parse", v.to_cpon().as_bytes());
        let f = framed(&cp, 1);
        // [limit byte 0 = default 16 MiB, chunk byte] + the framed message.
        s.put("block_codec", &[&[0u8, 0][..], &f].concat());
        // A small limit (64 bytes) reaches the oversized-and-drained path.
        s.put("block_codec", &[&[64u8, 3][..], &f, &f].concat());
        stream.extend_from_slice(&f);
        if let Some(tctl) = v.meta.as_ref().and_then(|m| m.get(15)) {
            s.put("tunnel_ctl", &tctl.to_chainpack());
        }
        let msg = RpcMessage::from_frame(&libshv::RpcFrame::parse(cp.into()).unwrap()).unwrap();
        if let Some(p) = msg.param() {
            s.put("tunnel_ctl", &p.to_chainpack());
            s.put("login_params", &p.to_chainpack());
            s.put("message_decode", &p.to_chainpack());
        }
        if let Ok(r) = msg.result() {
            s.put("tunnel_ctl", &r.to_chainpack());
        }
    }
    // A whole session in one stream, then with a ResetSession and junk in the middle.
    s.put("block_codec", &[&[0u8, 7][..], &stream].concat());
    s.put(
        "block_codec",
        &[
            &[0u8, 1][..],
            &stream[..40],
            &[0x01, 0x00, 0x00, 0x02, 0x07, 0x00],
            &stream,
        ]
        .concat(),
    );

    // Every login shape our clients produce.
    let creds = [
        Credentials::Plain("admin".into()),
        Credentials::Sha1(libshv::login::sha1_hex(b"admin")),
        Credentials::Token("tok".into()),
        Credentials::TunnelSecret("0123456789abcdef0123456789abcdef".into()),
        Credentials::None,
    ];
    for (i, c) in creds.into_iter().enumerate() {
        let p = LoginParams {
            user: "admin".into(),
            credentials: c,
            use_sha1: i % 2 == 0,
            device_id: (i == 1).then(|| "dev1".into()),
            mount_point: (i == 0).then(|| "test/dev".into()),
            idle_timeout: Some(i as u64 * 30),
            user_agent: Some("fuzz-seeds".into()),
            broker: false,
        };
        let v = p.to_value("abcd1234abcd1234");
        s.put("login_params", &v.to_chainpack());
        let req = RpcMessage::new_request(3, "", "login", Some(v)).to_frame();
        s.put("frame_parse", &req.payload());
        s.put(
            "block_codec",
            &[&[0u8, 2][..], &libshv::codec::encode_frame(&req)].concat(),
        );
    }

    // Every TunnelCtl state and the launch parameters in both forms.
    for st in [
        TunnelState::FindTunnelRequest,
        TunnelState::FindTunnelResponse,
        TunnelState::CreateTunnelRequest,
        TunnelState::CreateTunnelResponse,
        TunnelState::CloseTunnel,
    ] {
        let mut c = TunnelCtl::new(st);
        c.host = Some("127.0.0.1".into());
        c.port = Some(3755);
        c.secret = Some("s3cr3t".into());
        c.request_id = Some(77);
        c.caller_ids = vec![4, 9];
        s.put("tunnel_ctl", &c.to_value().to_chainpack());
        let f = tunnel::tunnel_frame(10, &[4, 9], true, Some(&c), None);
        s.put("frame_parse", &f.payload());
        s.put("message_decode", &f.payload());
    }
    for pty in [true, false] {
        let lp = LaunchParams {
            pty,
            cmd: vec!["sh".into(), "-c".into(), "sleep 30".into()],
            cols: 100,
            rows: 30,
            env: vec![("TERM".into(), "xterm-256color".into())],
            cwd: Some("/tmp".into()),
            forward: None,
            copy: None,
        };
        s.put("tunnel_ctl", &lp.to_value().to_chainpack());
    }
    s.put(
        "tunnel_ctl",
        &cpon(r#"{"method":"runPtyCmd","params":["bash",80,24]}"#).to_chainpack(),
    );
    for st in [
        CloseStatus::from_value(Some(&cpon(r#"{"exitCode":3}"#))),
        CloseStatus::from_value(Some(&cpon(r#"{"signal":9}"#))),
    ] {
        s.put("tunnel_ctl", &st.to_value().to_chainpack());
    }
    let err = RpcMessage::new_request(1, "x", "y", None)
        .with_error(&RpcError::new(8, "boom"))
        .to_frame();
    s.put("message_decode", &err.payload());
    // ResetSession and an unknown format byte, alone.
    s.put("block_codec", &[0u8, 0, 0x01, 0x00]);
    s.put("block_codec", &[0u8, 0, 0x02, 0x07, 0x00]);

    println!("{} new seed files under {}", s.count, s.root.display());
}
