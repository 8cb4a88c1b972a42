//! The web root: a `ws://`/`wss://` listener also answers plain HTTP GET and HEAD with
//! static files (the browser terminal), so that the page and its WebSocket share one
//! origin and no other server is needed.
//!
//! Deliberately small: one request per connection, files only (no directory listing,
//! no dotfiles), nothing outside the root (dot segments refused, symlinks resolved and
//! checked), a bounded request head, file size and number of requests served at once,
//! files streamed rather than loaded.
//!
//! Browsers may open a WebSocket to any address from any page, with the visitor's
//! network position: [`check_origin`] is the listener's policy against that.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use libshv::logsafe::shown;
use libshv::transport::BoxStream;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// Largest request head (request line and headers) we read.
const MAX_HEAD: usize = 8 * 1024;
/// Largest file we serve (the page's scripts are far smaller).
const MAX_FILE: u64 = 8 * 1024 * 1024;
const MAX_HEADERS: usize = 64;
/// HTTP requests answered at once (each holds a file open and a buffer); more wait.
const MAX_CONCURRENT: usize = 32;
/// Time to answer one HTTP request, the file included: a client that does not read is
/// dropped.
const HTTP_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

static SERVING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(MAX_CONCURRENT);

/// The origin policy of a WebSocket upgrade. Without `Origin` the client is not a
/// browser and no page can be driving it: admitted. With it, the page must be from this
/// very origin (`http(s)://` + the request's `Host`), and that host must be an IP
/// address, `localhost` or one of `names` — not a name an attacker controls and points
/// at us (DNS rebinding).
pub fn check_origin(
    origin: Option<&str>,
    host: Option<&str>,
    names: &[String],
) -> Result<(), String> {
    let Some(origin) = origin else {
        return Ok(());
    };
    let host = host.ok_or("a browser's upgrade without Host")?;
    let same = ["http://", "https://"]
        .iter()
        .any(|s| origin.eq_ignore_ascii_case(&format!("{s}{host}")));
    if !same {
        return Err(format!(
            "the page's origin {} is not this broker's ({})",
            shown(origin),
            shown(host)
        ));
    }
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    let known = name.parse::<std::net::IpAddr>().is_ok()
        || name.eq_ignore_ascii_case("localhost")
        || names.iter().any(|n| n.eq_ignore_ascii_case(name));
    if !known {
        return Err(format!(
            "host {} is not in web_hosts (add it if browsers reach the broker by this name)",
            shown(name)
        ));
    }
    Ok(())
}

/// Reads the HTTP request head. A WebSocket upgrade gets the stream back, with the
/// head still to be read (by the WebSocket handshake); anything else is answered from
/// `root` and the connection ends (`Ok(None)`).
pub async fn serve_or_upgrade(mut stream: BoxStream, root: &Path) -> io::Result<Option<BoxStream>> {
    let mut head = Vec::with_capacity(1024);
    let end = loop {
        if let Some(i) = find_head_end(&head) {
            break i;
        }
        if head.len() >= MAX_HEAD {
            respond(
                &mut stream,
                431,
                "text/plain",
                b"request head too large\n",
                false,
            )
            .await?;
            return Ok(None);
        }
        let mut chunk = [0u8; 2048];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::other("connection closed before an HTTP request"));
        }
        head.extend_from_slice(&chunk[..n]);
    };
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let parsed = req.parse(&head[..end]);
    if !matches!(parsed, Ok(httparse::Status::Complete(_))) {
        respond(&mut stream, 400, "text/plain", b"bad request\n", false).await?;
        return Ok(None);
    }
    let upgrade = req.headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("upgrade")
            && String::from_utf8_lossy(h.value)
                .to_ascii_lowercase()
                .contains("websocket")
    });
    if upgrade {
        return Ok(Some(Box::new(Prefixed {
            prefix: head,
            pos: 0,
            inner: stream,
        })));
    }
    let method = req.method.unwrap_or("").to_string();
    let target = req.path.unwrap_or("").to_string();
    // Never log a query: a form may put a password in it.
    let logged = target.split(['?', '#']).next().unwrap_or("").to_string();
    let Ok(_slot) = SERVING.acquire().await else {
        return Ok(None);
    };
    let answer = answer(&mut stream, root, &method, &target, &logged);
    match tokio::time::timeout(HTTP_DEADLINE, answer).await {
        Ok(r) => r?,
        Err(_) => tracing::debug!("{method} {} not done in {HTTP_DEADLINE:?}", shown(&logged)),
    }
    Ok(None)
}

async fn answer(
    stream: &mut BoxStream,
    root: &Path,
    method: &str,
    target: &str,
    logged: &str,
) -> io::Result<()> {
    let head_only = method == "HEAD";
    if method != "GET" && !head_only {
        return respond(stream, 405, "text/plain", b"only GET and HEAD\n", false).await;
    }
    let Some(path) = resolve(root, target).await else {
        tracing::debug!("{method} {} 404", shown(logged));
        return respond(stream, 404, "text/plain", b"not found\n", head_only).await;
    };
    let file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!("{method} {}: {}", shown(logged), shown(&e.to_string()));
            return respond(
                stream,
                500,
                "text/plain",
                b"cannot read the file\n",
                head_only,
            )
            .await;
        }
    };
    let len = file.metadata().await?.len();
    if len > MAX_FILE {
        tracing::warn!("{method} {}: larger than {MAX_FILE} bytes", shown(logged));
        return respond(stream, 500, "text/plain", b"file too large\n", head_only).await;
    }
    tracing::debug!("{method} {} 200", shown(logged));
    write_head(stream, 200, content_type(&path), len).await?;
    if !head_only {
        // Streamed: a reader that does not read holds one buffer, not the file.
        let copied = tokio::io::copy(&mut file.take(len), stream).await?;
        if copied != len {
            return Err(io::Error::other("the file changed while it was sent"));
        }
    }
    stream.flush().await?;
    let _ = stream.shutdown().await;
    Ok(())
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// The file a request target names under `root`, if it is a regular file inside it.
pub async fn resolve(root: &Path, target: &str) -> Option<PathBuf> {
    let path = target.split(['?', '#']).next().unwrap_or("");
    let path = path.strip_prefix('/')?;
    let decoded = percent_encoding::percent_decode_str(path)
        .decode_utf8()
        .ok()?;
    let mut file = root.to_path_buf();
    for seg in decoded.split('/') {
        // Dot segments, dotfiles (`.git`, `.env`), backslashes and NULs never name a
        // file of the page; empty segments (`//`) are skipped.
        if seg.starts_with('.') || seg.contains(['\\', '\0']) {
            return None;
        }
        if !seg.is_empty() {
            file.push(seg);
        }
    }
    if decoded.is_empty() || decoded.ends_with('/') {
        file.push("index.html");
    }
    // Symlinks inside the root may point anywhere: check where the file really is.
    let real = tokio::fs::canonicalize(&file).await.ok()?;
    let real_root = tokio::fs::canonicalize(root).await.ok()?;
    if !real.starts_with(&real_root) {
        return None;
    }
    let meta = tokio::fs::metadata(&real).await.ok()?;
    meta.is_file().then_some(real)
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" | "htm" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        _ => "Internal Server Error",
    }
}

async fn respond(
    stream: &mut BoxStream,
    status: u16,
    content_type: &str,
    body: &[u8],
    head_only: bool,
) -> io::Result<()> {
    write_head(stream, status, content_type, body.len() as u64).await?;
    if !head_only {
        stream.write_all(body).await?;
    }
    stream.flush().await?;
    let _ = stream.shutdown().await;
    Ok(())
}

async fn write_head(
    stream: &mut BoxStream,
    status: u16,
    content_type: &str,
    len: u64,
) -> io::Result<()> {
    // The page runs a terminal with the user's rights: it may not be framed by another
    // site, load scripts from elsewhere, or connect anywhere but back to its broker.
    let head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {len}\r\n\
         Cache-Control: no-cache\r\nX-Content-Type-Options: nosniff\r\n\
         X-Frame-Options: DENY\r\nReferrer-Policy: no-referrer\r\n\
         Content-Security-Policy: default-src 'self'; connect-src 'self'; \
         style-src 'self' 'unsafe-inline'; frame-ancestors 'none'; form-action 'none'\r\n\
         Connection: close\r\n\r\n",
        reason(status),
    );
    stream.write_all(head.as_bytes()).await
}

/// A stream whose first bytes were already read: they are read again first.
struct Prefixed {
    prefix: Vec<u8>,
    pos: usize,
    inner: BoxStream,
}

impl AsyncRead for Prefixed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.pos < self.prefix.len() {
            let n = (self.prefix.len() - self.pos).min(buf.remaining());
            let start = self.pos;
            buf.put_slice(&self.prefix[start..start + n]);
            self.pos += n;
            if self.pos == self.prefix.len() {
                self.prefix = Vec::new();
                self.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_files_inside_the_root() {
        let dir = std::env::temp_dir().join(format!("shv-web-{}", std::process::id()));
        let root = dir.join("root");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("index.html"), "i").unwrap();
        std::fs::write(root.join("sub/a.js"), "a").unwrap();
        std::fs::write(dir.join("secret"), "s").unwrap();
        std::os::unix::fs::symlink(dir.join("secret"), root.join("link")).unwrap();
        let ok = |p: &str| {
            let root = root.clone();
            let p = p.to_string();
            async move { resolve(&root, &p).await.is_some() }
        };
        assert!(ok("/").await);
        assert!(ok("/index.html?x=1").await);
        assert!(ok("/sub/a.js").await);
        assert!(ok("/sub/%61.js").await);
        for bad in [
            "/../secret",
            "/sub/../../secret",
            "/%2e%2e/secret",
            "/sub",
            "/link",
            "/nope",
            "relative",
            "/sub\\a.js",
            "/%00",
            "/.hidden",
            "/sub/.git/config",
        ] {
            assert!(!ok(bad).await, "{bad}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn only_pages_of_this_broker_may_open_websockets() {
        let names = vec!["broker.example.com".to_string()];
        let ok = |o: Option<&str>, h: Option<&str>| check_origin(o, h, &names).is_ok();
        // Not a browser.
        assert!(ok(None, None));
        assert!(ok(None, Some("anything:1")));
        // The page served here.
        assert!(ok(Some("http://127.0.0.1:3777"), Some("127.0.0.1:3777")));
        assert!(ok(Some("http://[::1]:3777"), Some("[::1]:3777")));
        assert!(ok(Some("http://localhost:3777"), Some("localhost:3777")));
        assert!(ok(
            Some("https://Broker.Example.com"),
            Some("broker.example.com")
        ));
        // Another site's page, and DNS rebinding (an attacker's name pointed at us).
        assert!(!ok(Some("https://evil.example"), Some("127.0.0.1:3777")));
        assert!(!ok(
            Some("http://evil.example:3777"),
            Some("evil.example:3777")
        ));
        assert!(!ok(Some("null"), Some("127.0.0.1:3777")));
        assert!(!ok(Some("http://127.0.0.1:3777"), None));
    }
}
