//! A raw HTTP/1.1 client over a plain socket: `Connection: close`, the body
//! read to the end of the stream (chunked bodies joined). Enough for the
//! tests' needs, with no client library between them and the server under
//! test, and usable from any thread without a runtime.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// How long a GET or POST waits for the answer.
const TIMEOUT: Duration = Duration::from_secs(5);

/// How long an upload waits for the answer (the server reads the whole file
/// first).
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(30);

/// `GET http://{addr}{path}`: the status and the body, or `None` when
/// nothing answers.
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    request(addr, "GET", path, "application/json", b"", TIMEOUT)
}

/// `POST http://{addr}{path}` with a JSON `body`, like [`http_get`].
pub fn http_post(addr: &str, path: &str, body: &str) -> Option<(u16, String)> {
    request(
        addr,
        "POST",
        path,
        "application/json",
        body.as_bytes(),
        TIMEOUT,
    )
}

/// `POST http://{addr}/upload` of `content` as the multipart part `file`
/// with the client file name `file_name` (raw bytes in the part's header,
/// as a client may send them), like [`http_get`].
pub fn http_upload(addr: &str, file_name: &[u8], content: &[u8]) -> Option<(u16, String)> {
    let boundary = "wdsTestBoundary7";
    let mut body =
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"")
            .into_bytes();
    body.extend_from_slice(file_name);
    body.extend_from_slice(b"\"\r\nContent-Type: text/csv\r\n\r\n");
    body.extend_from_slice(content);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    request(
        addr,
        "POST",
        "/upload",
        &format!("multipart/form-data; boundary={boundary}"),
        &body,
        UPLOAD_TIMEOUT,
    )
}

fn request(
    addr: &str,
    method: &str,
    path: &str,
    content_type: &str,
    body: &[u8],
    timeout: Duration,
) -> Option<(u16, String)> {
    let mut conn = TcpStream::connect(addr).ok()?;
    conn.set_read_timeout(Some(timeout)).ok()?;
    let len = body.len();
    write!(
        conn,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: {content_type}\r\nContent-Length: {len}\r\n\r\n"
    )
    .ok()?;
    conn.write_all(body).ok()?;
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw);
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Some((status, body))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::dechunk;

    #[test]
    fn dechunk_joins_chunks_and_stops_at_the_last() {
        assert_eq!(dechunk("3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"), "abcde");
        // Sizes are hexadecimal.
        assert_eq!(dechunk("a\r\n0123456789\r\n0\r\n\r\n"), "0123456789");
        assert_eq!(dechunk("5\r\nab"), "");
    }
}
