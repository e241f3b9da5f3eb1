//! A small scripted HTTP/1.1 server on loopback for the protocol tests: each accepted connection
//! reads one request (head and a `Content-Length` body), records it raw, and answers with the next
//! scripted reply (`Connection: close`). A reply of `None` holds the connection open without
//! answering, to exercise timeouts.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// One request as received.
#[derive(Debug, Clone)]
pub struct Req {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Req {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A scripted reply: status, headers, body.
pub type Reply = Option<(u16, Vec<(&'static str, String)>, Vec<u8>)>;

pub fn reply(status: u16, headers: &[(&'static str, &str)], body: &[u8]) -> Reply {
    Some((status, headers.iter().map(|(k, v)| (*k, (*v).to_owned())).collect(), body.to_vec()))
}

pub struct Scripted {
    pub url: String,
    pub requests: Arc<Mutex<Vec<Req>>>,
    _thread: JoinHandle<()>,
}

impl Scripted {
    pub fn start(replies: Vec<Reply>) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = requests.clone();
        let mut replies: VecDeque<Reply> = replies.into();
        let thread = std::thread::spawn(move || {
            while let Some(next) = replies.pop_front() {
                let Ok((stream, _)) = listener.accept() else { return };
                let mut r = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                let mut parts = line.split_whitespace();
                let (method, target) = (parts.next().unwrap_or("").to_owned(), parts.next().unwrap_or("").to_owned());
                let mut headers = Vec::new();
                loop {
                    let mut h = String::new();
                    r.read_line(&mut h).unwrap();
                    let h = h.trim_end();
                    if h.is_empty() {
                        break;
                    }
                    let (k, v) = h.split_once(':').unwrap();
                    headers.push((k.trim().to_owned(), v.trim().to_owned()));
                }
                let len: usize = headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                    .map_or(0, |(_, v)| v.parse().unwrap());
                let mut body = vec![0; len];
                r.read_exact(&mut body).unwrap();
                log.lock().unwrap().push(Req { method, target, headers, body });
                let mut w = stream;
                match next {
                    Some((status, headers, body)) => {
                        let mut head = format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
                        for (k, v) in headers {
                            head.push_str(&format!("{k}: {v}\r\n"));
                        }
                        head.push_str("\r\n");
                        let _ = w.write_all(head.as_bytes());
                        let _ = w.write_all(&body);
                    }
                    None => std::thread::sleep(Duration::from_secs(5)),
                }
            }
        });
        Scripted { url, requests, _thread: thread }
    }

    pub fn requests(&self) -> Vec<Req> {
        self.requests.lock().unwrap().clone()
    }
}

/// An `[opencast]` config pointing every service at `url` (no discovery), with short timeouts.
pub fn config(url: &str, auth: &str) -> lectern_config::OpencastConfig {
    let text = format!(
        "[opencast]\nurl = \"{url}\"\nusername = \"agent\"\npassword = \"secret\"\nauth = \"{auth}\"\naddress = \"http://box\"\n\
         capture_admin_url = \"{url}/capture-admin\"\nscheduler_url = \"{url}/recordings\"\ningest_url = \"{url}/ingest\"\n\
         connect_timeout_s = 1\nread_timeout_s = 1\nrequest_timeout_s = 3\nretry_initial_s = 5\nretry_max_s = 300\n"
    );
    lectern_config::Config::parse(&text, None).unwrap().opencast.unwrap()
}
