//! What a client may hold of the public listener before it proves anything:
//! the real binary under thousands of slow connections, past its connection
//! cap, with bodies that never finish, headers that never end, answers that
//! are never read, and HTTP/2 it does not speak.

mod common;

use std::time::{Duration, Instant};

use common::{build_plugins, counter, process_stats, scrape, start_process, value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PLUGIN: &str = "[keys]\necho = \"tk\"\nbig = \"tk\"\n\
    [plugins.tk]\nsource = \"testkit.wasm\"\nmemory = \"256MiB\"\nmax_output = \"64MiB\"\n";

/// The test opens thousands of sockets: make sure the process may.
fn allow_many_files() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain structs, owned here.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        if limit.rlim_cur < 10_000 {
            limit.rlim_cur = limit.rlim_max.min(10_000);
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

fn address(url: &str) -> String {
    url.trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string()
}

/// A signed echo request over a new connection: its status and how long it took.
async fn signed_echo(client: &reqwest::Client, url: &str) -> (u16, Duration) {
    let started = Instant::now();
    let status = common::post_signed(
        client,
        url,
        r#"{"key":"echo","inputs":{"hello":"world"}}"#.to_string(),
    )
    .await
    .status()
    .as_u16();
    (status, started.elapsed())
}

/// Headers of a POST that declares a 1 MiB body.
fn slow_post_head() -> String {
    "POST / HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n\
     x-optech-signature: 00\r\ncontent-length: 1048576\r\n\r\n"
        .to_string()
}

/// Everything the host sends on `stream` until it closes it, or `None` if it
/// has not closed it within `limit`.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> Option<String> {
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(String::from_utf8_lossy(&answer).into_owned()),
            Ok(Ok(n)) => answer.extend_from_slice(&buffer[..n]),
        }
    }
}

async fn open_connections(admin: &str) -> f64 {
    value(&scrape(admin).await, "optech_connections_open", &[])
}

async fn unverified_bytes(admin: &str) -> f64 {
    value(&scrape(admin).await, "optech_unverified_body_bytes", &[])
}

async fn closed(admin: &str, reason: &str) -> f64 {
    counter(
        &scrape(admin).await,
        "optech_connections_closed_total",
        &[("reason", reason)],
    )
}

/// 2,000 connections that send their headers and 1,000 of 1,048,576 body
/// bytes, then stall: while all of them are open a signed request is
/// answered, the host's memory grows by a bounded amount, and once the body
/// deadline passes every one of them is answered 408 and closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_slow_bodies_do_not_hold_the_host() {
    const SLOW: usize = 2_000;
    // The default: what the host promises without any setting.
    const BODY_TIMEOUT: Duration = optech_host::config::DEFAULT_BODY_TIMEOUT;
    allow_many_files();
    build_plugins().as_ref().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = common::process_config(dir.path(), PLUGIN);
    let process = start_process(&config);
    let admin = process.admin.clone().unwrap();
    let pid = process.child.id();
    let client = reqwest::Client::new();
    let (status, usual) = signed_echo(&client, &process.url).await;
    assert_eq!(status, 200);
    let (rss_before, _, _) = process_stats(pid);

    let target = address(&process.url);
    let mut slow = Vec::with_capacity(SLOW);
    let opened = Instant::now();
    for _ in 0..SLOW {
        let mut stream = TcpStream::connect(&target).await.unwrap();
        stream.write_all(slow_post_head().as_bytes()).await.unwrap();
        stream.write_all(&[b' '; 1_000]).await.unwrap();
        slow.push(stream);
    }
    common::wait_until(
        "the host holds every slow connection",
        Duration::from_secs(30),
        || async { open_connections(&admin).await >= SLOW as f64 },
    )
    .await;
    let held_after = opened.elapsed();

    // A signed request on a new connection, while all of them are held.
    let (status, under_load) = signed_echo(&client, &process.url).await;
    assert_eq!(
        status, 200,
        "a signed request is answered among the slow ones"
    );
    let still_open = open_connections(&admin).await;
    assert!(
        still_open >= SLOW as f64,
        "answered while the {SLOW} slow connections were all still open ({still_open})"
    );
    let (rss_held, _, _) = process_stats(pid);
    // Declared, the bodies would be 2 GiB; held, they are 2,000 x 1,000 bytes
    // and a connection's buffers.
    let grown = rss_held - rss_before;
    assert!(
        grown < 128.0,
        "RSS grew {grown:.1} MiB ({rss_before:.1} -> {rss_held:.1}) holding {SLOW} slow bodies"
    );

    // Past the deadline each is answered 408 and closed.
    let mut timed_out = 0;
    let mut leftovers = Vec::new();
    let limit = BODY_TIMEOUT + Duration::from_secs(20);
    let answers = futures_util::future::join_all(
        slow.iter_mut()
            .map(|stream| read_until_closed(stream, limit)),
    )
    .await;
    for answer in answers {
        match answer {
            Some(text) if text.starts_with("HTTP/1.1 408") && text.contains("body_timeout") => {
                timed_out += 1
            }
            other => leftovers.push(other),
        }
    }
    let all_closed = opened.elapsed();
    assert_eq!(
        timed_out,
        SLOW,
        "every slow body is answered 408 and closed; others: {:?}",
        leftovers.iter().take(3).collect::<Vec<_>>()
    );
    assert!(
        all_closed >= BODY_TIMEOUT,
        "closed at the deadline, not before ({all_closed:?})"
    );
    common::wait_until(
        "the closed connections are gone",
        Duration::from_secs(10),
        || async { open_connections(&admin).await < 1.0 },
    )
    .await;
    let (status, _) = signed_echo(&client, &process.url).await;
    assert_eq!(status, 200);
    // Unsigned, they are counted, never kept by the console.
    let rows = client
        .get(format!("{admin}/requests/rows"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!rows.contains("body_timeout"), "{rows}");
    eprintln!(
        "{SLOW} slow bodies: held after {held_after:?}; a signed request took {usual:?} alone, \
         {under_load:?} among them; RSS {rss_before:.1} -> {rss_held:.1} MiB; all answered 408 \
         and closed {all_closed:?} after the first opened"
    );
}

/// A connection that never finishes its headers, one that sends nothing, and
/// a keep-alive connection left idle after a request are all closed at the
/// header deadline, and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_and_idle_connections_are_closed_at_the_header_deadline() {
    const HEADER_TIMEOUT: Duration = Duration::from_secs(2);
    const EACH: usize = 100;
    allow_many_files();
    build_plugins().as_ref().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = common::process_config(
        dir.path(),
        &format!(
            "header_timeout = \"{}s\"\n{PLUGIN}",
            HEADER_TIMEOUT.as_secs()
        ),
    );
    let process = start_process(&config);
    let admin = process.admin.clone().unwrap();
    let target = address(&process.url);
    let body = r#"{"key":"echo","inputs":{}}"#;
    let signature =
        optech_host::signature::Signer::new(common::SECRET.as_bytes(), None).sign(body.as_bytes());
    let mut streams = Vec::new();
    let started = Instant::now();
    for i in 0..(2 * EACH + 1) {
        let mut stream = TcpStream::connect(&target).await.unwrap();
        if i < EACH {
            // Headers that never end.
            stream
                .write_all(b"POST / HTTP/1.1\r\nhost: 127.0.0.1\r\nx-slow: 1")
                .await
                .unwrap();
        } else if i == 2 * EACH {
            // One whole request, then silence on a keep-alive connection.
            let request = format!(
                "POST / HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n\
                 x-optech-signature: {signature}\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(request.as_bytes()).await.unwrap();
        }
        streams.push(stream);
    }
    let limit = HEADER_TIMEOUT + Duration::from_secs(15);
    let answers =
        futures_util::future::join_all(streams.iter_mut().map(|s| read_until_closed(s, limit)))
            .await;
    let elapsed = started.elapsed();
    let still_open = answers.iter().filter(|a| a.is_none()).count();
    assert_eq!(still_open, 0, "every connection is closed within {limit:?}");
    assert!(
        elapsed >= HEADER_TIMEOUT,
        "at the deadline, not before: {elapsed:?}"
    );
    let kept_alive = answers[2 * EACH].as_deref().unwrap_or_default();
    assert!(
        kept_alive.starts_with("HTTP/1.1 200"),
        "the idle connection was served first: {kept_alive}"
    );
    let timeouts = closed(&admin, "header_timeout").await;
    assert!(
        timeouts >= (2 * EACH + 1) as f64,
        "{timeouts} header timeouts counted"
    );
}

/// Past `max_connections` a new connection is answered 503 and closed at
/// once; the host serves again as soon as connections are let go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_connection_cap_a_connection_is_refused_and_the_host_recovers() {
    const CAP: usize = 20;
    build_plugins().as_ref().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = common::process_config(dir.path(), &format!("max_connections = {CAP}\n{PLUGIN}"));
    let process = start_process(&config);
    let admin = process.admin.clone().unwrap();
    let target = address(&process.url);
    let mut held = Vec::new();
    for _ in 0..CAP {
        held.push(TcpStream::connect(&target).await.unwrap());
    }
    common::wait_until("the cap is reached", Duration::from_secs(10), || async {
        open_connections(&admin).await >= CAP as f64
    })
    .await;
    let mut refused = 0;
    for _ in 0..5 {
        let mut extra = TcpStream::connect(&target).await.unwrap();
        let answer = read_until_closed(&mut extra, Duration::from_secs(5))
            .await
            .expect("a connection past the cap is closed at once");
        if answer.starts_with("HTTP/1.1 503") && answer.contains("too_many_connections") {
            refused += 1;
        }
    }
    assert_eq!(refused, 5, "each connection past the cap gets the 503");
    assert_eq!(closed(&admin, "max_connections").await, 5.0);
    drop(held);
    let client = reqwest::Client::new();
    // Until the host has seen the held connections close, a new one may
    // still be past the cap: answered 503 before its request is written,
    // which the client reports as an error. Not yet, then.
    let body = r#"{"key":"echo","inputs":{"hello":"world"}}"#;
    common::wait_until(
        "a signed request is served again",
        Duration::from_secs(10),
        || async {
            common::try_post_signed(&client, &process.url, body.to_string())
                .await
                .is_ok_and(|r| r.status() == 200)
        },
    )
    .await;
}

/// The bodies of requests not yet verified share one byte budget: past it a
/// request is refused 503 `busy` before more of it is read, and a signed
/// request that fits is still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unverified_bodies_share_a_byte_budget() {
    build_plugins().as_ref().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = common::process_config(
        dir.path(),
        &format!(
            "max_body = \"256KiB\"\nmax_unverified = \"512KiB\"\nbody_timeout = \"30s\"\n{PLUGIN}"
        ),
    );
    let process = start_process(&config);
    let target = address(&process.url);
    let head = "POST / HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n\
                x-optech-signature: 00\r\ncontent-length: 262144\r\n\r\n";
    let chunk = vec![b' '; 200 * 1024];
    let mut stalled = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(&target).await.unwrap();
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(&chunk).await.unwrap();
        stalled.push(stream);
    }
    // Which connection the budget refuses depends on the order the host reads
    // them in: wait until it holds both stalled bodies, 400 KiB of the 512.
    let admin = process.admin.clone().unwrap();
    let held = 2.0 * chunk.len() as f64;
    common::wait_until(
        "both stalled bodies are held",
        Duration::from_secs(10),
        || async { unverified_bytes(&admin).await == held },
    )
    .await;
    // A third's 200 KiB do not fit.
    let mut third = TcpStream::connect(&target).await.unwrap();
    third.write_all(head.as_bytes()).await.unwrap();
    let _ = third.write_all(&chunk).await;
    let refused = read_until_closed(&mut third, Duration::from_secs(10))
        .await
        .expect("a body past the budget is refused at once");
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(refused.contains("\"busy\""), "{refused}");
    assert_eq!(
        unverified_bytes(&admin).await,
        held,
        "the refused body's bytes are given back"
    );
    let client = reqwest::Client::new();
    let (status, _) = signed_echo(&client, &process.url).await;
    assert_eq!(status, 200, "a small signed request fits in what is left");
    drop(stalled);
    common::wait_until(
        "closed bodies give their bytes back",
        Duration::from_secs(10),
        || async { unverified_bytes(&admin).await == 0.0 },
    )
    .await;
}

/// A client that stops reading its answer is cut off at the send deadline
/// instead of holding a connection (and the answer's memory) forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_read_its_answer_is_closed() {
    build_plugins().as_ref().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = common::process_config(dir.path(), &format!("send_timeout = \"2s\"\n{PLUGIN}"));
    let process = start_process(&config);
    let admin = process.admin.clone().unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket
        .connect(address(&process.url).parse().unwrap())
        .await
        .unwrap();
    let body = r#"{"key":"big","inputs":{"bytes":"33554432"}}"#;
    let signature =
        optech_host::signature::Signer::new(common::SECRET.as_bytes(), None).sign(body.as_bytes());
    let request = format!(
        "POST / HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n\
         x-optech-signature: {signature}\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    // Read nothing: the 32 MiB answer fills the socket's buffers.
    common::wait_until(
        "the host gives up on the client",
        Duration::from_secs(30),
        || async { closed(&admin, "send_timeout").await >= 1.0 },
    )
    .await;
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest)).await;
    assert!(
        matches!(read, Ok(Ok(_)) | Ok(Err(_))),
        "the connection is closed"
    );
    assert!(
        rest.len() < 32 * 1024 * 1024,
        "the answer was cut off ({} bytes read)",
        rest.len()
    );
    let (status, _) = signed_echo(&reqwest::Client::new(), &process.url).await;
    assert_eq!(status, 200);
}

/// The public listener speaks HTTP/1.1 only: a cleartext HTTP/2 client (200
/// streams a connection) gets no HTTP/2 connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleartext_http2_is_refused() {
    build_plugins().as_ref().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = common::process_config(dir.path(), PLUGIN);
    let process = start_process(&config);
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let result = h2.get(format!("{}/healthz", process.url)).send().await;
    assert!(result.is_err(), "HTTP/2 prior knowledge: {result:?}");
    let mut raw = TcpStream::connect(address(&process.url)).await.unwrap();
    raw.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    let answer = read_until_closed(&mut raw, Duration::from_secs(10))
        .await
        .expect("closed");
    // An HTTP/2 server's first frame is SETTINGS (type 4 in its 4th byte).
    assert!(
        answer.len() < 4 || answer.as_bytes()[3] != 4 || answer.starts_with("HTTP/1.1"),
        "an HTTP/2 SETTINGS frame: {answer:?}"
    );
    let (status, _) = signed_echo(&reqwest::Client::new(), &process.url).await;
    assert_eq!(status, 200);
}
