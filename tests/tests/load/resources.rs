//! Bounded resources: a client that does not read is cut off instead of buffered
//! without bound, connections that never log in are timed out, and password guessing
//! is throttled without telling existing users from unknown ones.

use std::time::Instant;

use libshv::login::{Credentials, LoginParams};
use libshv::RpcValue;
use tests::*;
use tokio::io::AsyncReadExt;

/// These tests measure what the broker does under load (memory, queue bounds, login
/// floods); run at once in one process, each one's load starved the others' readers
/// and the wrong connection was cut off. They take turns.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A subscriber that never reads while a device floods signals: the broker must drop
/// it (its queue is bounded) and its memory must stay well below the flood's volume,
/// while another client keeps being served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_reading_subscriber_is_cut_off_and_memory_stays_bounded() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut broker = Broker::start(Some(&config_yaml(&[], "limits: {client_queue: 256}\n")));
    let pid = broker.pid();
    let (observer, _) = broker.connect("admin", "admin").await;
    let baseline = vm_rss_kib(pid);

    let mut sleeper = RawConn::subscriber(broker.port, "admin", "admin", "**:*:*").await;
    // From here on `sleeper` is not read until the flood is over.

    let mut device = broker.raw().await;
    let hello = device.call("", "hello", None).await.result().unwrap();
    let nonce = hello.get("nonce").unwrap().as_str().to_string();
    let p = LoginParams {
        user: "device".into(),
        credentials: Credentials::Plain("device".into()),
        mount_point: Some("test/flood".into()),
        ..Default::default()
    };
    device
        .call("", "login", Some(p.to_value(&nonce)))
        .await
        .result()
        .expect("device login");

    // 64 MiB of signals in 1 KiB payloads: far more than the bound asserted below, so
    // a broker that buffered for the sleeper would exceed it.
    const FLOOD_MIB: usize = 64;
    let signal = libshv::RpcMessage::new_signal(
        "x",
        "chng",
        "get",
        Some(RpcValue::from(vec![0x5au8; 1024])),
    )
    .to_frame();
    let one = libshv::codec::encode_frame(&signal);
    let batch: Vec<u8> = one.repeat(1024);
    let mut peak = baseline;
    for i in 0..FLOOD_MIB {
        device.send_bytes(&batch).await.expect("flood");
        if i % 8 == 0 {
            peak = peak.max(vm_rss_kib(pid));
            assert_served(&observer).await;
        }
    }
    // The broker has read the whole flood once the device's next ping is answered.
    assert!(device.call(".app", "ping", None).await.result().is_ok());
    peak = peak.max(vm_rss_kib(pid));
    broker.assert_running();
    assert_served(&observer).await;

    // The sleeper finds what the kernel buffered, then the end of the stream.
    let frames = sleeper.expect_closed().await;
    assert!(
        frames.len() < FLOOD_MIB * 1024,
        "the sleeper got all {} signals: it was never cut off",
        frames.len()
    );
    assert!(
        broker.stderr().contains("send queue full"),
        "no 'send queue full' disconnect logged"
    );
    // Bound: the baseline plus a quarter of the flood. Buffering the flood for the
    // sleeper would need all 64 MiB.
    let bound = baseline + (FLOOD_MIB as u64 * 1024) / 4;
    eprintln!("VmRSS baseline {baseline} KiB, peak {peak} KiB, bound {bound} KiB");
    assert!(peak < bound, "VmRSS peak {peak} KiB >= bound {bound} KiB");
}

/// A viewer subscribed to everything with a 16 KiB receive window (a client that stops
/// reading fills it, and the broker's send buffer, quickly however the host tunes TCP),
/// and a device at test/flood.
async fn sleeper_and_device(broker: &Broker) -> (RawConn, RawConn) {
    let mut sleeper = RawConn::connect_small_window(broker.port).await;
    sleeper
        .login("viewer", "viewer", true)
        .await
        .expect("login");
    sleeper.subscribe("**:*:*").await;
    let device = RawConn::device(broker.port, "device", "device", "test/flood").await;
    (sleeper, device)
}

/// A subscriber that stops reading while its queue stays under every bound (it would
/// keep its megabytes for as long as it stays connected) is closed once its socket has
/// taken nothing for `write_stall_timeout`, and the log says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_reader_is_closed_after_the_write_stall_timeout() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut broker = Broker::start(Some(&config_yaml(
        &[],
        "limits: {write_stall_timeout: 2}\n",
    )));
    let (observer, _) = broker.connect("admin", "admin").await;
    let (mut sleeper, mut device) = sleeper_and_device(&broker).await;
    // 16 MiB in 256 signals: more than the kernel buffers (the broker's send buffer
    // grows to 4 MiB on Linux's defaults; the sleeper's receive buffer is 16 KiB), less
    // than the queue's bounds (4096 frames, 32 MiB), so only the stall can end it.
    let signal = libshv::RpcMessage::new_signal(
        "x",
        "chng",
        "get",
        Some(RpcValue::from(vec![0x5au8; 64 * 1024])),
    )
    .to_frame();
    let batch = libshv::codec::encode_frame(&signal).repeat(16);
    for _ in 0..16 {
        device.send_bytes(&batch).await.expect("flood");
    }
    assert!(device.call(".app", "ping", None).await.result().is_ok());
    let stalled = Instant::now();
    broker.wait_log("took no bytes for 2 s");
    eprintln!("closed {:?} after the flood", stalled.elapsed());
    let frames = sleeper.expect_closed().await;
    assert!(
        frames.len() < 256,
        "the sleeper got every signal: it never stalled"
    );
    assert!(!broker.stderr().contains("send queue full"));
    broker.assert_running();
    assert_served(&observer).await;
    assert!(device.call(".app", "ping", None).await.result().is_ok());
}

/// All clients' queues together are bounded too (`outgoing_bytes`): a non-reading
/// subscriber whose own queue is still under its bounds is cut off once all queues hold
/// the total, because its queue is the long one, while a subscriber that keeps up stays
/// connected and gets the flood to its end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_queues_together_are_bounded_and_the_long_one_gives_way() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let limits = "limits: {outgoing_bytes: 8388608, write_stall_timeout: 0}\n";
    let mut broker = Broker::start(Some(&config_yaml(&[], limits)));
    let (reader, mut signals) = broker.connect("admin", "admin").await;
    reader
        .call(
            ".broker/currentClient",
            "subscribe",
            Some(RpcValue::from("test/**:*:*")),
        )
        .await
        .expect("subscribe");
    let (mut sleeper, mut device) = sleeper_and_device(&broker).await;
    // 16 MiB in 256 signals: under the sleeper's own bounds (4096 frames, 32 MiB), twice
    // the total.
    let flood = tokio::spawn(async move {
        for i in 0..256i64 {
            let mut payload = vec![0x5au8; 64 * 1024];
            payload[..8].copy_from_slice(&i.to_be_bytes());
            let signal = libshv::RpcMessage::new_signal("x", "chng", "get", Some(payload.into()));
            device.send(&signal).await.expect("flood");
            // Paced (8 MB/s), so that the reader, a debug build sharing this process
            // with the file's other tests on a busy machine, keeps well within its fair
            // share of the total (8 MiB over four queues) while the sleeper's grows (at
            // 32 and at 16 MB/s it sometimes fell behind under load and was the one cut
            // off).
            tokio::time::sleep(std::time::Duration::from_millis(8)).await;
        }
        device
    });
    // (Its client drops what the test does not read in time, so only the last signal
    // is waited for; the reader stays connected to the end.)
    loop {
        let s = next_signal(&mut signals).await;
        let (_, _, _, v) = signal_parts(&s);
        if v.as_blob()[..8] == 255i64.to_be_bytes() {
            break;
        }
    }
    let mut device = flood.await.unwrap();
    assert!(device.call(".app", "ping", None).await.result().is_ok());
    broker.wait_log("all send queues together are full");
    let frames = sleeper.expect_closed().await;
    assert!(frames.len() < 256, "the sleeper got every signal");
    assert!(!broker.stderr().contains("send queue full"));
    broker.assert_running();
    assert_served(&reader).await;
}

/// 1 000 connections that never finish login are all closed by `login_timeout`, and
/// a logged-in client is served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_unfinished_logins_time_out() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut broker = Broker::start(Some(&config_yaml(&[], "limits: {login_timeout: 2}\n")));
    let (observer, _) = broker.connect("admin", "admin").await;
    let mut idle = tokio::task::JoinSet::new();
    for i in 0..1000u32 {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", broker.port))
            .await
            .expect("connect");
        // A third say hello, a third send half a frame, a third say nothing at all.
        let bytes: Vec<u8> = match i % 3 {
            0 => libshv::codec::encode_frame(
                &libshv::RpcMessage::new_request(1, "", "hello", None).to_frame(),
            ),
            1 => vec![0x40, 0x01, 0x8b],
            _ => Vec::new(),
        };
        idle.spawn(async move {
            use tokio::io::AsyncWriteExt;
            let _ = s.write_all(&bytes).await;
            let mut buf = [0u8; 256];
            // Reads until the broker closes (EOF or reset); errors count as closed.
            loop {
                match tokio::time::timeout(TIMEOUT * 2, s.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => return true,
                    Ok(Ok(_)) => continue,
                    Err(_) => return false,
                }
            }
        });
    }
    assert_served(&observer).await;
    let mut closed = 0;
    while let Some(r) = idle.join_next().await {
        if r.expect("reader task") {
            closed += 1;
        }
    }
    assert_eq!(closed, 1000, "connections left open past login_timeout");
    broker.assert_running();
    assert_served(&observer).await;
}

/// Failed logins on one connection are throttled (the third takes longer than the
/// first), and a wrong password for an existing user gets exactly the same error as
/// any password for a user that does not exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_are_throttled_and_do_not_reveal_users() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut broker = Broker::start(None);
    let (observer, _) = broker.connect("admin", "admin").await;
    let mut raw = broker.raw().await;
    let mut took = Vec::new();
    let mut errors = Vec::new();
    for (user, password) in [
        ("admin", "wrong1"),
        ("nobody", "wrong2"),
        ("admin", "wrong3"),
    ] {
        let start = Instant::now();
        let r = raw.login(user, password, true).await;
        took.push(start.elapsed());
        errors.push(r.expect_err("a wrong password must fail"));
    }
    eprintln!("failed login durations: {took:?}");
    assert!(
        took[2] > took[0],
        "third failure ({:?}) not slower than the first ({:?})",
        took[2],
        took[0]
    );
    // Same code and message whether the user exists or not.
    assert_eq!(errors[0], errors[1], "existing vs unknown user differ");
    assert_eq!(errors[0], errors[2]);

    // The same holds for PLAIN logins on fresh connections.
    let mut a = broker.raw().await;
    let mut b = broker.raw().await;
    let ea = a.login("viewer", "nope", false).await.unwrap_err();
    let eb = b.login("no-such-user", "nope", false).await.unwrap_err();
    assert_eq!(ea, eb);
    broker.assert_running();
    assert_served(&observer).await;
}

/// The queue bound is in bytes too: a subscriber that stops reading while a device
/// emits 1 MiB signals is cut off once 32 MiB (`limits.client_queue_bytes`, default)
/// are queued for it, long before its 4096 frames are: the broker's memory stays within
/// that limit plus the in-flight budget and a margin, and the device and a third client
/// keep being served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_reading_subscriber_of_1mib_signals_is_cut_off_by_bytes() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut broker = Broker::start(Some(&config_yaml(&[], "")));
    let pid = broker.pid();
    let (observer, _) = broker.connect("admin", "admin").await;
    let mut sleeper = RawConn::subscriber(broker.port, "viewer", "viewer", "test/**:*:*").await;
    let mut device = RawConn::device(broker.port, "device", "device", "test/big").await;
    let baseline = vm_rss_kib(pid);

    const SIGNALS: usize = 300;
    let signal = libshv::RpcMessage::new_signal(
        "x",
        "chng",
        "get",
        Some(RpcValue::from(vec![0x5au8; 1 << 20])),
    )
    .to_frame();
    let one = libshv::codec::encode_frame(&signal);
    let mut peak = baseline;
    for i in 0..SIGNALS {
        device.send_bytes(&one).await.expect("device sends");
        if i % 20 == 0 {
            peak = peak.max(vm_rss_kib(pid));
            assert_served(&observer).await;
        }
    }
    assert!(device.call(".app", "ping", None).await.result().is_ok());
    peak = peak.max(vm_rss_kib(pid));
    broker.assert_running();
    assert_served(&observer).await;
    let frames = sleeper.expect_closed().await;
    assert!(frames.len() < SIGNALS, "the sleeper got every signal");
    assert!(broker.stderr().contains("send queue full"));
    // 32 MiB queue + 64 MiB in-flight budget + 32 MiB margin (socket buffers, the
    // writer's buffer, allocator slack). Queueing the flood would need 300 MiB.
    let bound = baseline + 128 * 1024;
    eprintln!("VmRSS baseline {baseline} KiB, peak {peak} KiB, bound {bound} KiB");
    assert!(peak < bound, "VmRSS peak {peak} KiB >= bound {bound} KiB");
}
