//! The camera's V4L2 side outside the pipeline (issue 11): what a node is (driver, card, bus
//! info, whether it captures video: UVC cameras expose a second, metadata-only node), finding the
//! camera by a stable identity instead of `/dev/videoN` (which renumbers), the frame sizes it
//! offers, and its controls — set at the start of each recording (power-line frequency against
//! flicker, exposure, focus, anything the camera names) and read back for `status`.
//!
//! Plain ioctls on the node through `libc`, with the handful of `videodev2.h` structs written out
//! here: the design card's `v4l` crate and `v4l2r` both generate their bindings with bindgen at
//! build time, which needs libclang on every build host and clang in the Yocto cross build
//! (docs/decisions.md D23). The structs are the kernel's stable UAPI; their sizes and the ioctl
//! numbers are pinned by tests against the values `videodev2.h` gives.

use std::ffi::CStr;
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

#[cfg(any(target_arch = "powerpc", target_arch = "powerpc64", target_arch = "mips", target_arch = "mips64", target_arch = "sparc64"))]
compile_error!("v4l2.rs encodes ioctl numbers the asm-generic way (x86, arm, aarch64, riscv); this architecture differs");

const fn ioc(dir: u32, nr: u32, size: usize) -> libc::c_ulong {
    ((dir << 30) | ((size as u32) << 16) | ((b'V' as u32) << 8) | nr) as libc::c_ulong
}
const READ: u32 = 2;
const READ_WRITE: u32 = 3;

#[repr(C)]
#[derive(Default)]
struct Capability {
    driver: [u8; 16],
    card: [u8; 32],
    bus_info: [u8; 32],
    version: u32,
    capabilities: u32,
    device_caps: u32,
    reserved: [u32; 3],
}

#[repr(C)]
#[derive(Default)]
struct QueryCtrl {
    id: u32,
    kind: u32,
    name: [u8; 32],
    minimum: i32,
    maximum: i32,
    step: i32,
    default_value: i32,
    flags: u32,
    reserved: [u32; 2],
}

#[repr(C)]
#[derive(Default)]
struct Control {
    id: u32,
    value: i32,
}

#[repr(C)]
#[derive(Default)]
struct FmtDesc {
    index: u32,
    kind: u32,
    flags: u32,
    description: [u8; 32],
    pixelformat: u32,
    mbus_code: u32,
    reserved: [u32; 3],
}

#[repr(C)]
#[derive(Default)]
struct FrmSizeEnum {
    index: u32,
    pixel_format: u32,
    kind: u32,
    /// discrete: width, height; stepwise: min_w, max_w, step_w, min_h, max_h, step_h.
    size: [u32; 6],
    reserved: [u32; 2],
}

const VIDIOC_QUERYCAP: libc::c_ulong = ioc(READ, 0, std::mem::size_of::<Capability>());
const VIDIOC_ENUM_FMT: libc::c_ulong = ioc(READ_WRITE, 2, std::mem::size_of::<FmtDesc>());
const VIDIOC_G_CTRL: libc::c_ulong = ioc(READ_WRITE, 27, std::mem::size_of::<Control>());
const VIDIOC_S_CTRL: libc::c_ulong = ioc(READ_WRITE, 28, std::mem::size_of::<Control>());
const VIDIOC_QUERYCTRL: libc::c_ulong = ioc(READ_WRITE, 36, std::mem::size_of::<QueryCtrl>());
const VIDIOC_ENUM_FRAMESIZES: libc::c_ulong = ioc(READ_WRITE, 74, std::mem::size_of::<FrmSizeEnum>());

const CAP_VIDEO_CAPTURE: u32 = 0x0000_0001;
const CAP_DEVICE_CAPS: u32 = 0x8000_0000;
const CTRL_FLAG_NEXT_CTRL: u32 = 0x8000_0000;
const CTRL_FLAG_DISABLED: u32 = 0x0001;
const CTRL_TYPE_CTRL_CLASS: u32 = 6;
const BUF_TYPE_VIDEO_CAPTURE: u32 = 1;

/// V4L2_CID_POWER_LINE_FREQUENCY: a menu, 0 disabled, 1 50 Hz, 2 60 Hz, 3 auto.
pub const CID_POWER_LINE_FREQUENCY: u32 = 0x0098_0918;

/// What a node says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caps {
    pub driver: String,
    pub card: String,
    pub bus_info: String,
    /// It captures video (a UVC camera's metadata node does not).
    pub video_capture: bool,
}

/// One control as the camera describes it, with its current value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ctrl {
    pub id: u32,
    pub name: String,
    /// The name as a config key, like v4l2-ctl's: lowercase, runs of other characters as `_`.
    pub key: String,
    pub min: i32,
    pub max: i32,
    pub default: i32,
    pub value: Option<i32>,
}

/// An open V4L2 node.
pub struct Device {
    path: PathBuf,
    file: File,
}

fn text(bytes: &[u8]) -> String {
    CStr::from_bytes_until_nul(bytes).map_or_else(|_| String::from_utf8_lossy(bytes).into_owned(), |c| c.to_string_lossy().into_owned())
}

/// A control's name as a config key: `Power Line Frequency` → `power_line_frequency`.
pub fn key_of(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.is_empty() && !out.ends_with('_') {
            out.push('_');
        }
    }
    out.trim_end_matches('_').to_owned()
}

impl Device {
    pub fn open(path: &Path) -> Result<Device, String> {
        let file = OpenOptions::new().read(true).write(true).open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Device { path: path.to_owned(), file })
    }

    fn ioctl<T>(&self, request: libc::c_ulong, arg: &mut T) -> std::io::Result<()> {
        // SAFETY: `arg` is the #[repr(C)] struct `request` encodes (size pinned by the tests), and
        // the fd stays open for the call.
        let r = unsafe { libc::ioctl(self.file.as_raw_fd(), request as _, arg as *mut T) };
        if r < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    pub fn caps(&self) -> Result<Caps, String> {
        let mut c = Capability::default();
        self.ioctl(VIDIOC_QUERYCAP, &mut c).map_err(|e| format!("{}: not a V4L2 device ({e})", self.path.display()))?;
        let caps = if c.capabilities & CAP_DEVICE_CAPS != 0 { c.device_caps } else { c.capabilities };
        Ok(Caps { driver: text(&c.driver), card: text(&c.card), bus_info: text(&c.bus_info), video_capture: caps & CAP_VIDEO_CAPTURE != 0 })
    }

    /// Every enabled control (not the class headings), with its value.
    pub fn controls(&self) -> Vec<Ctrl> {
        let mut out = Vec::new();
        let mut q = QueryCtrl { id: CTRL_FLAG_NEXT_CTRL, ..QueryCtrl::default() };
        while self.ioctl(VIDIOC_QUERYCTRL, &mut q).is_ok() && out.len() < 1024 {
            if q.kind != CTRL_TYPE_CTRL_CLASS && q.flags & CTRL_FLAG_DISABLED == 0 {
                let name = text(&q.name);
                out.push(Ctrl { id: q.id, key: key_of(&name), name, min: q.minimum, max: q.maximum, default: q.default_value, value: self.get(q.id).ok() });
            }
            q = QueryCtrl { id: q.id | CTRL_FLAG_NEXT_CTRL, ..QueryCtrl::default() };
        }
        out
    }

    pub fn get(&self, id: u32) -> Result<i32, String> {
        let mut c = Control { id, value: 0 };
        self.ioctl(VIDIOC_G_CTRL, &mut c).map(|()| c.value).map_err(|e| e.to_string())
    }

    pub fn set(&self, id: u32, value: i32) -> Result<(), String> {
        let mut c = Control { id, value };
        self.ioctl(VIDIOC_S_CTRL, &mut c).map_err(|e| e.to_string())
    }

    /// The frame sizes of every capture format, as `WxH` (a stepwise range as `WxH-WxH`).
    pub fn frame_sizes(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for i in 0..64 {
            let mut f = FmtDesc { index: i, kind: BUF_TYPE_VIDEO_CAPTURE, ..FmtDesc::default() };
            if self.ioctl(VIDIOC_ENUM_FMT, &mut f).is_err() {
                break;
            }
            for j in 0..256 {
                let mut s = FrmSizeEnum { index: j, pixel_format: f.pixelformat, ..FrmSizeEnum::default() };
                if self.ioctl(VIDIOC_ENUM_FRAMESIZES, &mut s).is_err() {
                    break;
                }
                let size = match s.kind {
                    1 => format!("{}x{}", s.size[0], s.size[1]),
                    _ => format!("{}x{}-{}x{}", s.size[0], s.size[3], s.size[1], s.size[4]),
                };
                if !out.contains(&size) {
                    out.push(size);
                }
                if s.kind != 1 {
                    break;
                }
            }
        }
        out
    }
}

/// Whether `sizes` ([`Device::frame_sizes`]) offer `width`x`height`; `None` when the camera
/// lists none (some drivers do not enumerate).
pub fn offers(sizes: &[String], width: u32, height: u32) -> Option<bool> {
    if sizes.is_empty() {
        return None;
    }
    Some(sizes.iter().any(|s| match s.split_once('-') {
        None => s == &format!("{width}x{height}"),
        Some((lo, hi)) => {
            let wh = |t: &str| t.split_once('x').and_then(|(w, h)| Some((w.parse::<u32>().ok()?, h.parse::<u32>().ok()?)));
            matches!((wh(lo), wh(hi)), (Some((w0, h0)), Some((w1, h1))) if (w0..=w1).contains(&width) && (h0..=h1).contains(&height))
        }
    }))
}

/// The camera a `video_device` value names: a path (`/dev/video0`, `/dev/v4l/by-id/...`), or a
/// stable identity — `bus:<bus info>` (e.g. `bus:usb-0000:01:00.0-1.2`) or `card:<name>` — matched
/// against every `/dev/video*` node that captures video. An identity that matches nothing is an
/// error naming what is there.
pub fn resolve(spec: &str) -> Result<PathBuf, String> {
    let (field, want) = match spec.split_once(':') {
        Some(("bus", v)) => ("bus", v),
        Some(("card", v)) => ("card", v),
        _ => return Ok(PathBuf::from(spec)),
    };
    let mut seen = Vec::new();
    let mut nodes: Vec<PathBuf> = std::fs::read_dir("/dev")
        .map(|d| d.flatten().map(|e| e.path()).filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("video"))).collect())
        .unwrap_or_default();
    nodes.sort();
    for node in nodes {
        let Ok(caps) = Device::open(&node).and_then(|d| d.caps()) else { continue };
        if !caps.video_capture {
            continue;
        }
        let have = if field == "bus" { &caps.bus_info } else { &caps.card };
        if have == want {
            return Ok(node);
        }
        seen.push(format!("{} (card {:?}, bus {:?})", node.display(), caps.card, caps.bus_info));
    }
    Err(format!("no camera with {field} {want:?}; video capture nodes: {}", if seen.is_empty() { "none".to_owned() } else { seen.join(", ") }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structs_and_ioctl_numbers_match_videodev2_h() {
        // sizeof() from linux/videodev2.h on x86_64 and aarch64, and the VIDIOC_* values they give.
        assert_eq!(std::mem::size_of::<Capability>(), 104);
        assert_eq!(std::mem::size_of::<QueryCtrl>(), 68);
        assert_eq!(std::mem::size_of::<Control>(), 8);
        assert_eq!(std::mem::size_of::<FmtDesc>(), 64);
        assert_eq!(std::mem::size_of::<FrmSizeEnum>(), 44);
        assert_eq!(VIDIOC_QUERYCAP, 0x8068_5600);
        assert_eq!(VIDIOC_ENUM_FMT, 0xc040_5602);
        assert_eq!(VIDIOC_G_CTRL, 0xc008_561b);
        assert_eq!(VIDIOC_S_CTRL, 0xc008_561c);
        assert_eq!(VIDIOC_QUERYCTRL, 0xc044_5624);
        assert_eq!(VIDIOC_ENUM_FRAMESIZES, 0xc02c_564a);
    }

    #[test]
    fn control_names_become_keys_like_v4l2_ctl() {
        assert_eq!(key_of("Power Line Frequency"), "power_line_frequency");
        assert_eq!(key_of("Auto Exposure"), "auto_exposure");
        assert_eq!(key_of("White Balance, Automatic"), "white_balance_automatic");
        assert_eq!(key_of("Focus, Automatic Continuous"), "focus_automatic_continuous");
    }

    #[test]
    fn sizes_offered_discrete_and_stepwise() {
        let sizes = vec!["640x480".to_owned(), "1280x720".to_owned()];
        assert_eq!(offers(&sizes, 1280, 720), Some(true));
        assert_eq!(offers(&sizes, 1920, 1080), Some(false));
        assert_eq!(offers(&["16x16-1920x1080".to_owned()], 1280, 720), Some(true));
        assert_eq!(offers(&[], 1280, 720), None);
    }

    #[test]
    fn a_path_is_a_path_and_a_missing_identity_is_named() {
        assert_eq!(resolve("/dev/video0").unwrap(), PathBuf::from("/dev/video0"));
        let e = resolve("card:Lectern No Such Camera").unwrap_err();
        assert!(e.starts_with("no camera with card \"Lectern No Such Camera\"; video capture nodes:"), "{e}");
        assert!(Device::open(Path::new("/dev/null")).unwrap().caps().unwrap_err().contains("not a V4L2 device"));
    }
}
