//! Server-sent events (the WHATWG `text/event-stream` format), as far as a probe needs
//! them: the data of the complete `message` events at the start of a body.

/// The data of every complete `message` event in `body`, in order. An event is complete
/// once the blank line that ends it arrived; what follows the last one is left for
/// later (it may be the start of the next event).
pub(crate) fn messages(body: &[u8]) -> Vec<String> {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let mut messages = Vec::new();
    let mut data = String::new();
    let mut has_data = false;
    let mut is_message = true;
    for line in complete_lines(body) {
        if line.is_empty() {
            if has_data && is_message {
                messages.push(std::mem::take(&mut data));
            }
            data.clear();
            has_data = false;
            is_message = true;
            continue;
        }
        if line.starts_with(b":") {
            continue;
        }
        let (field, value) = match line.iter().position(|b| *b == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &[][..]),
        };
        match field {
            b"data" => {
                if has_data {
                    data.push('\n');
                }
                data.push_str(&String::from_utf8_lossy(value));
                has_data = true;
            }
            b"event" => is_message = value.is_empty() || value == b"message",
            _ => {}
        }
    }
    messages
}

/// The lines of `body` that a line break ended (CRLF, LF or CR), without it. A CR at the
/// very end may be the first half of a CRLF, so its line waits for more.
fn complete_lines(body: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = body;
    std::iter::from_fn(move || {
        let end = rest.iter().position(|b| *b == b'\n' || *b == b'\r')?;
        let line = &rest[..end];
        let after = match (rest[end], rest.get(end + 1)) {
            (b'\r', Some(b'\n')) => end + 2,
            (b'\r', None) => return None,
            _ => end + 1,
        };
        rest = &rest[after..];
        Some(line)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_of_streams() {
        let cases: &[(&str, &[u8], &[&str])] = &[
            (
                "one event, LF",
                b"event: message\ndata: {\"a\":1}\n\n",
                &["{\"a\":1}"],
            ),
            ("CRLF line ends", b"data: x\r\n\r\n", &["x"]),
            (
                "CR line ends (the last CR waits for a possible LF)",
                b"data: x\r\rdata: y\r\rdata: z\r\r",
                &["x", "y"],
            ),
            (
                "multi-line data joined with LF",
                b"data: {\"a\":\ndata: 1}\n\n",
                &["{\"a\":\n1}"],
            ),
            ("no space after the colon", b"data:x\n\n", &["x"]),
            (
                "only one leading space is stripped",
                b"data:  x\n\n",
                &[" x"],
            ),
            (
                "comments and ids are skipped",
                b": hi\nid: 7\ndata: x\n\n",
                &["x"],
            ),
            (
                "other event types are skipped",
                b"event: ping\ndata: x\n\ndata: y\n\n",
                &["y"],
            ),
            (
                "an event without data is not dispatched",
                b"event: message\n\ndata: y\n\n",
                &["y"],
            ),
            ("an unfinished event waits", b"data: x\n\ndata: y\n", &["x"]),
            ("a CR at the end waits for its LF", b"data: x\r\n\r", &[]),
            (
                "a byte order mark is dropped",
                b"\xEF\xBB\xBFdata: x\n\n",
                &["x"],
            ),
            ("a field without a colon has no value", b"data\n\n", &[""]),
            ("an empty body", b"", &[]),
        ];
        for (name, body, want) in cases {
            assert_eq!(messages(body), *want, "{name}");
        }
    }
}
