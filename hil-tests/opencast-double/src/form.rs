//! Form bodies as Opencast's endpoints accept them: `application/x-www-form-urlencoded` or
//! `multipart/form-data` (what libcurl's `HTTPPOST`, and so pyca, always sends). Multipart is
//! parsed as a stream: a file part (one with a `filename`, the only kind commons-fileupload
//! treats as a file) goes straight to a file on disk while its SHA-256, MD5 and length are
//! computed, so a track of any size costs one 64 KiB buffer. Text fields are kept in memory up to
//! [`MAX_FIELD`] each; larger ones are a 413.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::http::{parse_urlencoded, Body};

/// The largest text field (a mediapackage or Dublin Core catalog is a few KiB).
pub const MAX_FIELD: usize = 4 << 20;
/// The largest urlencoded body.
const MAX_URLENCODED: u64 = 8 << 20;

/// A file part, already on disk.
#[derive(Debug, Clone)]
pub struct FilePart {
    pub name: String,
    pub filename: String,
    pub content_type: Option<String>,
    pub path: PathBuf,
    pub bytes: u64,
    pub sha256: String,
}

/// A parsed form: text fields in order, and file parts.
#[derive(Debug, Default)]
pub struct Form {
    pub fields: Vec<(String, String)>,
    pub files: Vec<FilePart>,
}

impl Form {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// Why a form could not be read: a status (400/413/415) and a message for the client.
pub type FormError = (u16, String);

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads the body as a form; file parts are written into `dir` (created if needed) as
/// `file-N-<name>`, with `N` from `next_id`.
pub fn read_form(body: &mut Body<'_>, content_type: Option<&str>, dir: &Path, next_id: &mut dyn FnMut() -> u64) -> Result<Form, FormError> {
    let ct = content_type.unwrap_or("");
    let mime = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    match mime.as_str() {
        "application/x-www-form-urlencoded" | "" => {
            let mut raw = Vec::new();
            body.take(MAX_URLENCODED + 1).read_to_end(&mut raw).map_err(|e| (400, format!("reading the form body: {e}")))?;
            if raw.len() as u64 > MAX_URLENCODED {
                return Err((413, format!("urlencoded form larger than {MAX_URLENCODED} bytes")));
            }
            let text = String::from_utf8(raw).map_err(|_| (400, "form body is not UTF-8".to_string()))?;
            let fields = parse_urlencoded(text.trim()).ok_or((400, "malformed urlencoded form body".to_string()))?;
            Ok(Form { fields, files: Vec::new() })
        }
        "multipart/form-data" => {
            let boundary = ct
                .split(';')
                .filter_map(|p| p.trim().strip_prefix("boundary="))
                .next()
                .map(|b| b.trim_matches('"').to_owned())
                .filter(|b| !b.is_empty() && b.len() <= 70)
                .ok_or((400, "multipart/form-data without a valid boundary".to_string()))?;
            Multipart::new(body, &boundary).read_all(dir, next_id)
        }
        other => Err((415, format!("unsupported Content-Type {other:?} for a form"))),
    }
}

/// A streaming multipart reader over a body.
struct Multipart<'b, 'a> {
    body: &'b mut Body<'a>,
    /// `\r\n--boundary`: the body is read as if it started with `\r\n`, so that the first
    /// delimiter looks like every other one.
    delim: Vec<u8>,
    buf: Vec<u8>,
    eof: bool,
}

/// Where a part's bytes go.
enum Sink {
    Discard,
    Memory(Vec<u8>),
    File { file: File, sha: Sha256, bytes: u64 },
}

impl Sink {
    fn write(&mut self, data: &[u8]) -> Result<(), FormError> {
        match self {
            Sink::Discard => {}
            Sink::Memory(v) => {
                if v.len() + data.len() > MAX_FIELD {
                    return Err((413, format!("form field larger than {MAX_FIELD} bytes")));
                }
                v.extend_from_slice(data);
            }
            Sink::File { file, sha, bytes } => {
                file.write_all(data).map_err(|e| (500, format!("the double could not store the upload: {e}")))?;
                sha.update(data);
                *bytes += data.len() as u64;
            }
        }
        Ok(())
    }
}

impl<'b, 'a> Multipart<'b, 'a> {
    fn new(body: &'b mut Body<'a>, boundary: &str) -> Self {
        Multipart { body, delim: format!("\r\n--{boundary}").into_bytes(), buf: b"\r\n".to_vec(), eof: false }
    }

    fn fill(&mut self) -> Result<(), FormError> {
        let mut chunk = [0u8; 64 * 1024];
        let n = self.body.read(&mut chunk).map_err(|e| (400, format!("reading the multipart body: {e}")))?;
        if n == 0 {
            self.eof = true;
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    /// Moves bytes to `sink` up to the next delimiter and consumes it; an error at EOF.
    fn until_delim(&mut self, sink: &mut Sink) -> Result<(), FormError> {
        loop {
            if let Some(pos) = find(&self.buf, &self.delim) {
                sink.write(&self.buf[..pos])?;
                self.buf.drain(..pos + self.delim.len());
                return Ok(());
            }
            // Everything but a possible delimiter prefix at the end is part data.
            let keep = self.delim.len() - 1;
            if self.buf.len() > keep {
                let n = self.buf.len() - keep;
                sink.write(&self.buf[..n])?;
                self.buf.drain(..n);
            }
            if self.eof {
                return Err((400, "multipart body ends without its closing boundary".into()));
            }
            self.fill()?;
        }
    }

    /// Ensures at least `n` bytes are buffered (fewer only at EOF).
    fn want(&mut self, n: usize) -> Result<(), FormError> {
        while self.buf.len() < n && !self.eof {
            self.fill()?;
        }
        Ok(())
    }

    fn read_all(mut self, dir: &Path, next_id: &mut dyn FnMut() -> u64) -> Result<Form, FormError> {
        let mut form = Form::default();
        self.until_delim(&mut Sink::Discard)?;
        loop {
            self.want(2)?;
            if self.buf.starts_with(b"--") {
                // The closing delimiter; the epilogue is read and dropped so keep-alive works.
                self.body.drain(1 << 20).map_err(|e| (400, format!("reading the multipart epilogue: {e}")))?;
                return Ok(form);
            }
            // Transport padding after the delimiter, then CRLF and the part's headers.
            let head_end = loop {
                if let Some(p) = find(&self.buf, b"\r\n\r\n") {
                    break p;
                }
                if self.buf.len() > 16 * 1024 {
                    return Err((400, "multipart part headers longer than 16 KiB".into()));
                }
                if self.eof {
                    return Err((400, "multipart body ends inside part headers".into()));
                }
                self.fill()?;
            };
            let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
            self.buf.drain(..head_end + 4);
            let (mut name, mut filename, mut ctype) = (None, None, None);
            for line in head.split("\r\n").skip(1) {
                let Some((k, v)) = line.split_once(':') else { continue };
                if k.trim().eq_ignore_ascii_case("content-disposition") {
                    name = disposition_param(v, "name");
                    filename = disposition_param(v, "filename");
                } else if k.trim().eq_ignore_ascii_case("content-type") {
                    ctype = Some(v.trim().to_owned());
                }
            }
            let name = name.ok_or((400, format!("multipart part without a name: {head:?}")))?;
            match filename {
                Some(filename) => {
                    std::fs::create_dir_all(dir).map_err(|e| (500, format!("creating {}: {e}", dir.display())))?;
                    let safe: String = filename.chars().map(|c| if c.is_ascii_alphanumeric() || ".-_".contains(c) { c } else { '_' }).collect();
                    let path = dir.join(format!("file-{}-{safe}", next_id()));
                    let file = File::create(&path).map_err(|e| (500, format!("creating {}: {e}", path.display())))?;
                    let mut sink = Sink::File { file, sha: Sha256::new(), bytes: 0 };
                    let res = self.until_delim(&mut sink);
                    let Sink::File { file, sha, bytes } = sink else { unreachable!() };
                    if let Err(e) = res.and_then(|_| file.sync_all().map_err(|e| (500, format!("syncing {}: {e}", path.display())))) {
                        let _ = std::fs::remove_file(&path);
                        return Err(e);
                    }
                    form.files.push(FilePart { name, filename, content_type: ctype, path, bytes, sha256: hex(&sha.finalize()) });
                }
                None => {
                    let mut sink = Sink::Memory(Vec::new());
                    self.until_delim(&mut sink)?;
                    let Sink::Memory(v) = sink else { unreachable!() };
                    let v = String::from_utf8(v).map_err(|_| (400, format!("form field {name:?} is not UTF-8")))?;
                    form.fields.push((name, v));
                }
            }
        }
    }
}

/// A parameter of a `Content-Disposition: form-data; name="…"; filename="…"` value.
fn disposition_param(v: &str, key: &str) -> Option<String> {
    v.split(';').filter_map(|p| p.trim().strip_prefix(key)?.strip_prefix('=')).map(|p| p.trim().trim_matches('"').to_owned()).next()
}

/// The first occurrence of `needle` (which starts with `\r`) in `hay`: jumps from one CR to the
/// next rather than comparing every window, which matters for a track of hundreds of MiB.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = hay[from..].iter().position(|&b| b == needle[0]) {
        let at = from + i;
        if hay.len() - at < needle.len() {
            return None;
        }
        if &hay[at..at + needle.len()] == needle {
            return Some(at);
        }
        from = at + 1;
    }
    None
}
