//! Framing: one input's bytes → message [`Frame`]s, and [`FrameError`]s for what is not.
//!
//! Accepted shapes: plain pipe-delimited files with CR, LF or CRLF segment terminators (mixed
//! too), a UTF-8 BOM, MLLP start/end bytes, blank lines; several messages in one file (a new
//! message starts at each line-start `MSH`); FHS/BHS … BTS/FTS batches, including a lone
//! trailing `FTS`; the Excelleris `hl7pull` XML (`<HL7Messages><Message><![CDATA[…]]>`) and
//! Interior Health POI XML (`<result><messages><message>`), CDATA or entity-escaped.
//!
//! A lone LF inside a field of a CR-terminated message (a sender that joins a multi-line
//! field with LF) does not end the segment: in a message whose MSH line ends in a lone CR, a
//! line that follows a lone LF and does not start with a segment name continues the previous
//! segment, the LF kept in its value, as python-hl7 and OSCAR's HAPI read it (only CR ends a
//! segment there). Such segments are parsed with [`super::Message::parse_framed`].
//!
//! Every byte of the input is accounted for: a frame keeps the **original bytes** of its
//! message (for the dead-letter store) and the segment lines (for parsing). Text that belongs
//! to no message (a cover letter before the first `MSH`, junk between XML elements) comes back
//! as a [`FrameError`] with its bytes. Framing never panics.
//!
//! [`StreamFramer`] gives the same frames for input that arrives in chunks (a property test
//! checks it for arbitrary split points), emitting each message once the next one starts.

use bytes::Bytes;

/// Where a frame was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Container {
    /// Pipe-delimited text, one or more messages.
    Plain,
    /// FHS/BHS batch file.
    Batch,
    /// Excelleris `hl7pull` or Interior Health POI XML.
    Xml,
}

/// One message's bytes.
#[derive(Debug, Clone)]
pub struct Frame {
    /// 0-based index of the message in its input (rejected frames count too).
    pub index: u32,
    /// The original bytes of this message as they appear in the input, from the start of its
    /// MSH line through the terminator of its last segment (for XML: the element content
    /// after CDATA/entity decoding). A single-message file without a BOM is its own frame.
    pub raw: Bytes,
    /// The message's segments, each without its terminator, blank lines removed.
    pub segments: Vec<Bytes>,
    /// 1-based line of the input where the message starts (0 inside XML).
    pub line: usize,
}

impl Frame {
    /// The segments joined by `sep` with a trailing `sep`, e.g. `\r\n` as OSCAR stores them.
    pub fn joined(&self, sep: &[u8]) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.raw.len() + self.segments.len());
        for s in &self.segments {
            v.extend_from_slice(s);
            v.extend_from_slice(sep);
        }
        v
    }
}

/// Why some bytes of the input do not form a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("input is empty")]
    Empty,
    #[error("no MSH segment found: not an HL7 v2 message")]
    NoMessage,
    #[error("{lines} line(s) outside any message starting at line {line}")]
    Stray { line: usize, lines: usize },
    #[error("XML wrapper is malformed: {0}")]
    BadXml(&'static str),
}

/// A frame that was rejected, with its bytes.
#[derive(Debug, Clone)]
pub struct Rejected {
    pub index: u32,
    pub raw: Bytes,
    pub error: FrameError,
}

/// The result of framing one input.
#[derive(Debug, Clone)]
pub struct Framed {
    pub container: Container,
    pub messages: Vec<Frame>,
    pub rejected: Vec<Rejected>,
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Frames an input. See the module docs.
pub fn frame(input: &Bytes) -> Framed {
    let mut out = Framed {
        container: Container::Plain,
        messages: Vec::new(),
        rejected: Vec::new(),
    };
    let start = if input.starts_with(BOM) { BOM.len() } else { 0 };
    let body = input.slice(start..);
    if body
        .iter()
        .all(|b| b.is_ascii_whitespace() || *b == 0x0B || *b == 0x1C)
    {
        out.rejected.push(Rejected {
            index: 0,
            raw: input.clone(),
            error: FrameError::Empty,
        });
        return out;
    }
    let first = body
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(0);
    if body[first] == b'<' {
        out.container = Container::Xml;
        frame_xml(&body, &mut out);
    } else {
        frame_plain(&body, &mut out, true, true);
    }
    out
}

fn is_batch_line(line: &[u8]) -> bool {
    line.len() >= 3
        && matches!(&line[..3], b"FHS" | b"BHS" | b"BTS" | b"FTS")
        && line.get(3).is_none_or(|b| !b.is_ascii_alphanumeric())
}

fn is_msh(line: &[u8]) -> bool {
    line.len() >= 4 && &line[..3] == b"MSH" && !line[3].is_ascii_alphanumeric()
}

/// Splits pipe text into messages. `top_level` is false inside an XML element.
/// `whole` is false when more input follows `body` (a stream cut before a line-start MSH):
/// then text without an MSH is stray text before the next message, not a non-HL7 input.
fn frame_plain(body: &Bytes, out: &mut Framed, top_level: bool, whole: bool) {
    struct Current {
        start: usize,
        end: usize,
        line: usize,
        segments: Vec<Bytes>,
        /// Where the last segment starts in `body` (a continuation line extends it).
        last_start: usize,
        /// The MSH line ended in a lone CR: the message's segments are CR-terminated.
        cr_terminated: bool,
        /// The field separator (MSH-1).
        separator: u8,
    }
    let mut current: Option<Current> = None;
    let mut stray: Option<(usize, usize, usize, usize)> = None; // (start, end, line, count)
    let mut any_msh = false;
    let mut line_no = 0usize;
    let mut pos = 0usize;
    let n = body.len();

    let flush_stray = |stray: &mut Option<(usize, usize, usize, usize)>, out: &mut Framed| {
        if let Some((s, e, line, count)) = stray.take() {
            let index = (out.messages.len() + out.rejected.len()) as u32;
            out.rejected.push(Rejected {
                index,
                raw: body.slice(s..e),
                error: FrameError::Stray { line, lines: count },
            });
        }
    };
    let flush_msg = |current: &mut Option<Current>, out: &mut Framed| {
        if let Some(c) = current.take() {
            let index = (out.messages.len() + out.rejected.len()) as u32;
            out.messages.push(Frame {
                index,
                raw: body.slice(c.start..c.end),
                segments: c.segments,
                line: if top_level { c.line } else { 0 },
            });
        }
    };

    // The previous line ended in a lone LF.
    let mut after_lone_lf = false;
    while pos < n {
        // A line ends at CR, LF, CRLF, or an MLLP end byte.
        let mut end = pos;
        while end < n && !matches!(body[end], b'\r' | b'\n' | 0x1C) {
            end += 1;
        }
        let lone_cr = end < n && body[end] == b'\r' && body.get(end + 1) != Some(&b'\n');
        let lone_lf = end < n && body[end] == b'\n';
        let continues_after_lf = std::mem::replace(&mut after_lone_lf, lone_lf);
        let mut next = end;
        if next < n {
            if body[next] == b'\r' && next + 1 < n && body[next + 1] == b'\n' {
                next += 2;
            } else {
                next += 1;
            }
        }
        line_no += 1;
        let mut ls = pos;
        while ls < end && (body[ls] == 0x0B || body[ls] == b' ' || body[ls] == b'\t') {
            ls += 1;
        }
        let mut le = end;
        while le > ls && matches!(body[le - 1], b' ' | b'\t') {
            le -= 1;
        }
        let line = &body[ls..le];
        if line.is_empty() {
            // blank line, tolerated
        } else if is_msh(line) {
            any_msh = true;
            flush_stray(&mut stray, out);
            flush_msg(&mut current, out);
            current = Some(Current {
                start: ls,
                end: next,
                line: line_no,
                segments: vec![body.slice(ls..le)],
                last_start: ls,
                cr_terminated: lone_cr,
                separator: line[3],
            });
        } else if is_batch_line(line) {
            flush_stray(&mut stray, out);
            flush_msg(&mut current, out);
            if top_level {
                out.container = Container::Batch;
            }
        } else if let Some(c) = current.as_mut() {
            c.end = next;
            if c.cr_terminated && continues_after_lf && !starts_segment(line, c.separator) {
                // A lone LF inside a field of a CR-terminated message: the line goes on
                // with the previous segment, the LF kept in its value (as python-hl7 and
                // OSCAR's HAPI read it: only CR ends a segment there).
                if let Some(last) = c.segments.last_mut() {
                    *last = body.slice(c.last_start..le);
                }
            } else {
                c.last_start = ls;
                c.segments.push(body.slice(ls..le));
            }
        } else {
            match stray.as_mut() {
                Some(s) => {
                    s.1 = next;
                    s.3 += 1;
                }
                None => stray = Some((ls, next, line_no, 1)),
            }
        }
        pos = next;
    }
    flush_stray(&mut stray, out);
    flush_msg(&mut current, out);
    if whole && !any_msh && out.messages.is_empty() {
        // Nothing here is HL7: one rejection for the whole body, not a stray-lines one.
        let had_stray = out
            .rejected
            .iter()
            .any(|r| matches!(r.error, FrameError::Stray { .. }));
        if had_stray || out.rejected.is_empty() {
            out.rejected
                .retain(|r| !matches!(r.error, FrameError::Stray { .. }));
            let index = out.rejected.len() as u32;
            out.rejected.push(Rejected {
                index,
                raw: body.clone(),
                error: FrameError::NoMessage,
            });
        }
    }
}

/// Unwraps `<Message>`/`<message>` elements (any case) of an XML wrapper.
fn frame_xml(body: &Bytes, out: &mut Framed) {
    let b = &body[..];
    let mut pos = 0;
    let mut found_any_element = false;
    while let Some(open) = find_ci(b, pos, b"<message") {
        let after_name = open + b"<message".len();
        // `<messages>` is the POI list element, not a message.
        match b.get(after_name) {
            Some(c) if *c == b'>' || c.is_ascii_whitespace() || *c == b'/' => {}
            _ => {
                pos = after_name;
                continue;
            }
        }
        let Some(gt) = b[after_name..]
            .iter()
            .position(|&c| c == b'>')
            .map(|p| after_name + p)
        else {
            out.rejected.push(Rejected {
                index: (out.messages.len() + out.rejected.len()) as u32,
                raw: body.slice(open..),
                error: FrameError::BadXml("unterminated <Message> tag"),
            });
            return;
        };
        found_any_element = true;
        if b[gt - 1] == b'/' {
            // <Message/>: empty element
            pos = gt + 1;
            continue;
        }
        let content_start = gt + 1;
        let Some(close) = find_ci(b, content_start, b"</message>") else {
            out.rejected.push(Rejected {
                index: (out.messages.len() + out.rejected.len()) as u32,
                raw: body.slice(open..),
                error: FrameError::BadXml("missing </Message>"),
            });
            return;
        };
        let content = xml_text(&body.slice(content_start..close));
        if content.iter().all(|c| c.is_ascii_whitespace()) {
            pos = close + b"</message>".len();
            continue;
        }
        let before = out.messages.len() + out.rejected.len();
        let mut inner = Framed {
            container: Container::Xml,
            messages: Vec::new(),
            rejected: Vec::new(),
        };
        frame_plain(&content, &mut inner, false, true);
        for mut m in inner.messages {
            m.index += before as u32;
            out.messages.push(m);
        }
        for mut r in inner.rejected {
            r.index += before as u32;
            out.rejected.push(r);
        }
        pos = close + b"</message>".len();
    }
    if !found_any_element {
        let root_ok =
            find_ci(b, 0, b"<hl7messages").is_some() || find_ci(b, 0, b"<messages").is_some();
        if !root_ok {
            out.rejected.push(Rejected {
                index: 0,
                raw: body.clone(),
                error: FrameError::NoMessage,
            });
        }
    }
    // Renumber so indexes follow document order without gaps.
    let mut all: Vec<(u32, bool, usize)> = out
        .messages
        .iter()
        .enumerate()
        .map(|(i, m)| (m.index, true, i))
        .chain(
            out.rejected
                .iter()
                .enumerate()
                .map(|(i, r)| (r.index, false, i)),
        )
        .collect();
    all.sort();
    for (new, (_, is_msg, i)) in all.into_iter().enumerate() {
        if is_msg {
            out.messages[i].index = new as u32;
        } else {
            out.rejected[i].index = new as u32;
        }
    }
}

/// The text of an element's content: CDATA sections verbatim, other text entity-decoded.
fn xml_text(content: &Bytes) -> Bytes {
    let c = &content[..];
    if !c.windows(9).any(|w| w == b"<![CDATA[") && !c.contains(&b'&') {
        return content.clone();
    }
    let mut out = Vec::with_capacity(c.len());
    let mut i = 0;
    while i < c.len() {
        if c[i..].starts_with(b"<![CDATA[") {
            let s = i + 9;
            let e = c[s..]
                .windows(3)
                .position(|w| w == b"]]>")
                .map(|p| s + p)
                .unwrap_or(c.len());
            out.extend_from_slice(&c[s..e]);
            i = (e + 3).min(c.len());
        } else if c[i] == b'&' {
            let semi = c[i..].iter().take(12).position(|&b| b == b';');
            let decoded = semi.and_then(|p| decode_entity(&c[i + 1..i + p]));
            match (semi, decoded) {
                (Some(p), Some(ch)) => {
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                    i += p + 1;
                }
                _ => {
                    out.push(b'&');
                    i += 1;
                }
            }
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    Bytes::from(out)
}

fn decode_entity(name: &[u8]) -> Option<char> {
    match name {
        b"amp" => Some('&'),
        b"lt" => Some('<'),
        b"gt" => Some('>'),
        b"quot" => Some('"'),
        b"apos" => Some('\''),
        [b'#', b'x' | b'X', hex @ ..] => std::str::from_utf8(hex)
            .ok()
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .and_then(char::from_u32),
        [b'#', dec @ ..] => std::str::from_utf8(dec)
            .ok()
            .and_then(|d| d.parse::<u32>().ok())
            .and_then(char::from_u32),
        _ => None,
    }
}

fn find_ci(h: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    if from >= h.len() || needle.len() > h.len() - from {
        return None;
    }
    h[from..]
        .windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle))
        .map(|p| p + from)
}

/// Frames a byte stream that arrives in chunks (a file read piece by piece, a socket) into
/// exactly the frames [`frame`] finds in the whole input, emitting each message as soon as
/// the next one has started. An XML wrapper is buffered and framed whole at the end.
#[derive(Debug, Default)]
pub struct StreamFramer {
    buf: Vec<u8>,
    /// Frames emitted so far (indexes continue from here).
    emitted: u32,
    /// Lines consumed so far (line numbers continue from here).
    lines: usize,
    started: bool,
    /// A BOM was stripped (an empty input's rejection keeps it, as `frame` does).
    bom: bool,
    xml: bool,
    any_msh: bool,
    batch: bool,
}

impl StreamFramer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a chunk; returns the messages (and rejections) now known to be complete.
    pub fn push(&mut self, chunk: &[u8]) -> Framed {
        self.buf.extend_from_slice(chunk);
        let mut out = Framed {
            container: Container::Plain,
            messages: Vec::new(),
            rejected: Vec::new(),
        };
        if !self.started {
            // Decide on BOM and XML only once the first meaningful byte is here.
            if self.buf.len() < BOM.len() && BOM.starts_with(&self.buf) {
                return out;
            }
            if !self.bom && self.buf.starts_with(BOM) {
                self.buf.drain(..BOM.len());
                self.bom = true;
            }
            match self.buf.iter().position(|b| !b.is_ascii_whitespace()) {
                None => return out,
                Some(p) => {
                    self.started = true;
                    self.xml = self.buf[p] == b'<';
                }
            }
        }
        if self.xml {
            return out;
        }
        // Cut before the last complete line that starts a message, judged exactly as
        // `frame_plain` judges lines (leading MLLP/blank trimming, the MSH test).
        let mut cut = None;
        let b = &self.buf;
        let mut end = b.len();
        // Only lines whose terminator has arrived are complete.
        while let Some(term) = b[..end]
            .iter()
            .rposition(|c| matches!(c, b'\r' | b'\n' | 0x1C))
        {
            let start = b[..term]
                .iter()
                .rposition(|c| matches!(c, b'\r' | b'\n' | 0x1C))
                .map_or(0, |p| p + 1);
            if start > 0 && line_starts_message(&b[start..term]) {
                cut = Some(start);
                break;
            }
            end = term;
        }
        let Some(cut) = cut else { return out };
        let prefix = Bytes::copy_from_slice(&self.buf[..cut]);
        self.buf.drain(..cut);
        self.emit(&prefix, false, &mut out);
        out
    }

    /// Ends the stream: frames what is left.
    pub fn finish(mut self) -> Framed {
        let mut out = Framed {
            container: Container::Plain,
            messages: Vec::new(),
            rejected: Vec::new(),
        };
        let rest = Bytes::from(std::mem::take(&mut self.buf));
        if self.xml || !self.started {
            // Nothing was emitted yet: the whole input is here, frame it as `frame` does
            // (a partial BOM, whitespace only, or an XML wrapper).
            let whole = if self.bom {
                let mut v = BOM.to_vec();
                v.extend_from_slice(&rest);
                Bytes::from(v)
            } else {
                rest
            };
            return frame(&whole);
        }
        if rest
            .iter()
            .all(|b| b.is_ascii_whitespace() || *b == 0x0B || *b == 0x1C)
        {
            if self.emitted == 0 {
                let raw = if self.bom {
                    let mut v = BOM.to_vec();
                    v.extend_from_slice(&rest);
                    Bytes::from(v)
                } else {
                    rest
                };
                out.rejected.push(Rejected {
                    index: 0,
                    raw,
                    error: FrameError::Empty,
                });
            }
            return out;
        }
        self.emit(&rest, !self.any_msh, &mut out);
        out
    }

    fn emit(&mut self, body: &Bytes, whole: bool, out: &mut Framed) {
        let mut part = Framed {
            container: Container::Plain,
            messages: Vec::new(),
            rejected: Vec::new(),
        };
        frame_plain(body, &mut part, true, whole);
        if part.container == Container::Batch {
            self.batch = true;
        }
        if !part.messages.is_empty() {
            self.any_msh = true;
        }
        let n = (part.messages.len() + part.rejected.len()) as u32;
        for mut m in part.messages {
            m.index += self.emitted;
            m.line += self.lines;
            out.messages.push(m);
        }
        for mut r in part.rejected {
            r.index += self.emitted;
            if let FrameError::Stray { line, lines } = r.error {
                r.error = FrameError::Stray {
                    line: line + self.lines,
                    lines,
                };
            }
            out.rejected.push(r);
        }
        self.emitted += n;
        self.lines += count_lines(body);
        out.container = if self.batch {
            Container::Batch
        } else {
            Container::Plain
        };
    }
}

/// Whether a line starts with a segment name (three capitals or digits, the first a capital)
/// followed by the field separator or the line's end.
fn starts_segment(line: &[u8], separator: u8) -> bool {
    line.len() >= 3
        && line[0].is_ascii_uppercase()
        && line[1..3]
            .iter()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        && line.get(3).is_none_or(|b| *b == separator)
}

/// Whether a line (without its terminator) starts a message, trimmed as `frame_plain` does.
fn line_starts_message(line: &[u8]) -> bool {
    let mut ls = 0;
    while ls < line.len() && matches!(line[ls], 0x0B | b' ' | b'\t') {
        ls += 1;
    }
    let mut le = line.len();
    while le > ls && matches!(line[le - 1], b' ' | b'\t') {
        le -= 1;
    }
    is_msh(&line[ls..le])
}

/// Lines ended in `b` the way `frame_plain` counts them (CRLF once, MLLP end byte too).
fn count_lines(b: &[u8]) -> usize {
    let mut n = 0;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\r' if b.get(i + 1) == Some(&b'\n') => {
                n += 1;
                i += 2;
                continue;
            }
            b'\r' | b'\n' | 0x1C => n += 1,
            _ => {}
        }
        i += 1;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn splits_multi_message_file_with_mixed_terminators() {
        let f = frame(&b("MSH|^~\\&|A\rPID|1\r\nOBR|1\n\nMSH|^~\\&|B\nPID|2\n"));
        assert_eq!(f.messages.len(), 2);
        assert!(f.rejected.is_empty());
        assert_eq!(f.messages[0].segments.len(), 3);
        assert_eq!(f.messages[1].segments.len(), 2);
        assert_eq!(&f.messages[1].segments[0][..], b"MSH|^~\\&|B");
        assert_eq!(f.messages[1].line, 5);
    }

    #[test]
    fn a_lone_lf_inside_a_field_of_a_cr_terminated_message_continues_its_segment() {
        let input = b("MSH|^~\\&|A|B\rPID|1||9000000011||ZZTEST^A||19800102|F|||1 MAIN ST\nAPT 2^^TOWN||||M\nS|||X\rOBR|1\rOBX|1|ST|X||a\r");
        let f = frame(&input);
        assert!(f.rejected.is_empty(), "{:?}", f.rejected);
        let segs: Vec<&[u8]> = f.messages[0].segments.iter().map(|s| &s[..]).collect();
        assert_eq!(segs.len(), 4);
        assert_eq!(
            segs[1],
            &b"PID|1||9000000011||ZZTEST^A||19800102|F|||1 MAIN ST\nAPT 2^^TOWN||||M\nS|||X"[..]
        );
        // The original bytes are the message's, untouched.
        assert_eq!(f.messages[0].raw, input);
        // LF-terminated messages keep reading each line as a segment; so does a line that
        // starts with a segment name after a lone LF.
        let lf = frame(&b("MSH|^~\\&|A\nPID|1\nOBR|1\n"));
        assert_eq!(lf.messages[0].segments.len(), 3);
        let named = frame(&b("MSH|^~\\&|A\rPID|1\nOBR|1\r"));
        assert_eq!(named.messages[0].segments.len(), 3);
        // A stray line after a CR stays a (bad) segment of its own.
        let cr = frame(&b("MSH|^~\\&|A\rPID|1\rjunk\rOBR|1\r"));
        assert_eq!(cr.messages[0].segments.len(), 4);
    }

    #[test]
    fn strips_bom_and_mllp_bytes() {
        let f = frame(&Bytes::from_static(
            b"\xEF\xBB\xBF\x0bMSH|^~\\&|A\rPID|1\r\x1c\r",
        ));
        assert_eq!(f.messages.len(), 1);
        assert_eq!(f.messages[0].segments.len(), 2);
    }

    #[test]
    fn consumes_batch_lines_and_lone_fts() {
        let f = frame(&b(
            "FHS|^~\\&\rBHS|^~\\&\rMSH|^~\\&|A\rPID|1\rMSH|^~\\&|B\rPID|2\rBTS|2\rFTS|1\r",
        ));
        assert_eq!(f.container, Container::Batch);
        assert_eq!(f.messages.len(), 2);
        assert!(f.rejected.is_empty());
        let g = frame(&b("MSH|^~\\&|A\rPID|1\rFTS|1\r"));
        assert_eq!(g.messages.len(), 1);
        assert_eq!(g.messages[0].segments.len(), 2);
    }

    #[test]
    fn stray_text_before_first_msh_is_rejected_not_dropped() {
        let f = frame(&b("Dear clinic,\rplease see below\rMSH|^~\\&|A\rPID|1\r"));
        assert_eq!(f.messages.len(), 1);
        assert_eq!(f.rejected.len(), 1);
        assert_eq!(f.rejected[0].error, FrameError::Stray { line: 1, lines: 2 });
        assert_eq!(&f.rejected[0].raw[..], b"Dear clinic,\rplease see below\r");
        assert_eq!(f.messages[0].index, 1);
    }

    #[test]
    fn empty_and_non_hl7_inputs_are_rejected_whole() {
        assert_eq!(frame(&b("")).rejected[0].error, FrameError::Empty);
        assert_eq!(frame(&b(" \r\n")).rejected[0].error, FrameError::Empty);
        let f = frame(&b("hello\nworld\n"));
        assert!(f.messages.is_empty());
        assert_eq!(f.rejected.len(), 1);
        assert_eq!(f.rejected[0].error, FrameError::NoMessage);
        assert_eq!(&f.rejected[0].raw[..], b"hello\nworld\n");
    }

    #[test]
    fn unwraps_excelleris_xml_with_cdata() {
        let x = "<?xml version=\"1.0\"?>\n<HL7Messages MessageCount=\"2\"><Message MsgID=\"1\"><![CDATA[MSH|^~\\&|PATHL7\nPID||1\n]]></Message><Message MsgID=\"2\"><![CDATA[MSH|^~\\&|PATHL7\nPID||2\n]]></Message></HL7Messages>";
        let f = frame(&b(x));
        assert_eq!(f.container, Container::Xml);
        assert_eq!(f.messages.len(), 2);
        assert_eq!(&f.messages[1].segments[1][..], b"PID||2");
        assert_eq!(&f.messages[0].raw[..], b"MSH|^~\\&|PATHL7\nPID||1\n");
    }

    #[test]
    fn unwraps_poi_xml_and_accepts_an_empty_response() {
        let x = "<result><messages>\n<message format=\"HL7\" msgId=\"a\"><![CDATA[MSH|^~\\&|IHALAB\nPID|1\n]]></message>\n</messages></result>";
        let f = frame(&b(x));
        assert_eq!(f.messages.len(), 1);
        let empty = frame(&b(
            "<?xml version=\"1.0\"?>\n<result><messages>\n \n</messages></result>",
        ));
        assert!(empty.messages.is_empty());
        assert!(empty.rejected.is_empty());
    }

    #[test]
    fn entity_escaped_xml_content_is_decoded() {
        let x = "<HL7Messages><Message>MSH|^~\\&amp;|X\rPID|1|a&lt;b</Message></HL7Messages>";
        let f = frame(&b(x));
        assert_eq!(&f.messages[0].segments[0][..], b"MSH|^~\\&|X");
        assert_eq!(&f.messages[0].segments[1][..], b"PID|1|a<b");
    }

    fn chunked(input: &[u8], cuts: &[usize]) -> Framed {
        let mut f = StreamFramer::new();
        let mut all = Framed {
            container: Container::Plain,
            messages: Vec::new(),
            rejected: Vec::new(),
        };
        let mut last = 0;
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
        points.sort_unstable();
        for p in points.into_iter().chain(std::iter::once(input.len())) {
            let part = f.push(&input[last..p]);
            all.messages.extend(part.messages);
            all.rejected.extend(part.rejected);
            if part.container == Container::Batch {
                all.container = Container::Batch;
            }
            last = p;
        }
        let end = f.finish();
        if end.container != Container::Plain {
            all.container = end.container;
        }
        all.messages.extend(end.messages);
        all.rejected.extend(end.rejected);
        all
    }

    type Summary = (
        Container,
        Vec<(u32, Vec<u8>, Vec<Vec<u8>>, usize)>,
        Vec<(u32, Vec<u8>, String)>,
    );

    fn summary(f: &Framed) -> Summary {
        (
            f.container,
            f.messages
                .iter()
                .map(|m| {
                    (
                        m.index,
                        m.raw.to_vec(),
                        m.segments.iter().map(|s| s.to_vec()).collect(),
                        m.line,
                    )
                })
                .collect(),
            f.rejected
                .iter()
                .map(|r| (r.index, r.raw.to_vec(), r.error.to_string()))
                .collect(),
        )
    }

    #[test]
    fn a_line_that_is_only_msh_and_a_terminator_does_not_split_a_stream() {
        // Found by the differential fuzz target: "MSH" alone on a line (its separator is
        // the line break) is not a message start for the whole-input framer either.
        let input = b"MSH|^~\\&|A\rPID|1\rMSH \rOBX|1\rMSH|^~\\&|B\rPID|2\r";
        for cut in 0..=input.len() {
            assert_eq!(
                summary(&chunked(input, &[cut])),
                summary(&frame(&Bytes::copy_from_slice(input))),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn a_stream_of_only_a_bom_is_rejected_as_empty_with_its_bytes() {
        // Found by the differential fuzz target, as was the partial BOM.
        for input in [
            &b"\xEF\xBB\xBF"[..],
            b"\xEF\xBB",
            b"\xEF",
            b"\xEF\xBB\xBF \r\n",
        ] {
            for cut in 0..=input.len() {
                assert_eq!(
                    summary(&chunked(input, &[cut])),
                    summary(&frame(&Bytes::copy_from_slice(input))),
                    "{input:?} cut {cut}"
                );
            }
        }
    }

    #[test]
    fn a_stream_framed_in_chunks_gives_the_same_frames_as_the_whole() {
        let input = b"\xEF\xBB\xBFnote\r\nFHS|^~\\&\rMSH|^~\\&|A\rPID|1\r\n\r\nMSH|^~\\&|B\nPID|2\nBTS|2\rFTS|1\r";
        for cut in 0..input.len() {
            assert_eq!(
                summary(&chunked(input, &[cut])),
                summary(&frame(&Bytes::copy_from_slice(input))),
                "cut at {cut}"
            );
        }
    }

    proptest! {
        #[test]
        fn framing_a_stream_split_at_arbitrary_points_matches_framing_the_whole(
            msgs in proptest::collection::vec(
                (proptest::collection::vec("[A-Z]{3}\\|[a-z0-9^|]{0,10}", 0..5), 0usize..3, any::<bool>()),
                0..5,
            ),
            junk in "[a-z ]{0,12}",
            cuts in proptest::collection::vec(any::<usize>(), 0..8),
        ) {
            let mut text = junk.clone();
            if !text.is_empty() { text.push('\n'); }
            for (segs, style, blank) in &msgs {
                let sep = ["\r", "\n", "\r\n"][*style];
                text.push_str("MSH|^~\\&|X");
                for s in segs { text.push_str(sep); text.push_str(s); }
                text.push_str(sep);
                if *blank { text.push_str(sep); }
            }
            let whole = frame(&Bytes::from(text.clone()));
            let streamed = chunked(text.as_bytes(), &cuts);
            prop_assert_eq!(summary(&streamed), summary(&whole));
        }

        #[test]
        fn framing_never_panics_and_accounts_for_every_message(input in proptest::collection::vec(any::<u8>(), 0..600)) {
            let bytes = Bytes::from(input);
            let f = frame(&bytes);
            let mut idx: Vec<u32> = f.messages.iter().map(|m| m.index).chain(f.rejected.iter().map(|r| r.index)).collect();
            idx.sort();
            for (i, v) in idx.iter().enumerate() { prop_assert_eq!(*v as usize, i); }
            prop_assert!(!f.messages.is_empty() || !f.rejected.is_empty() || f.container == Container::Xml);
        }

        #[test]
        fn terminator_style_does_not_change_segments(
            segs in proptest::collection::vec("[A-Z]{3}\\|[a-z0-9^|]{0,12}", 1..8),
            style in 0usize..3,
        ) {
            let sep = ["\r", "\n", "\r\n"][style];
            let mut text = String::from("MSH|^~\\&|X");
            for s in &segs { text.push_str(sep); text.push_str(s); }
            let f = frame(&Bytes::from(text.clone()));
            let g = frame(&Bytes::from(text.replace(sep, "\r")));
            let fs: Vec<_> = f.messages.iter().map(|m| m.segments.clone()).collect();
            let gs: Vec<_> = g.messages.iter().map(|m| m.segments.clone()).collect();
            prop_assert_eq!(fs, gs);
        }
    }
}
