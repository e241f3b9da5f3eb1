//! H.264 Annex-B → MP4 (AVCC) conversion: splitting an access unit into NAL
//! units, dropping what MP4 carries elsewhere (access unit delimiters; SPS and
//! PPS, which go into the `avcC` box once), writing each remaining NAL with a
//! 4-byte length, and reading the picture size from the SPS for the sample
//! entry.

use crate::error::{malformed, Pos, Result, StitchError};

const NAL_IDR: u8 = 5;
const NAL_SPS: u8 = 7;
const NAL_PPS: u8 = 8;
const NAL_AUD: u8 = 9;

/// Returns the index of the next `00 00 01` at or after `from`.
///
/// A start code begins with a zero byte, and slice data has few of them
/// (about 1.4 % of bytes at 4 Mbit/s), so eight bytes are tested at a time
/// for a zero byte (the "has zero byte" bit trick, whose lowest flagged byte
/// is always a real zero) and only zero bytes are looked at individually.
/// This is the stitcher's hottest loop after hashing.
fn find_start_code(data: &[u8], from: usize) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let n = data.len();
    let mut i = from;
    while i + 8 <= n {
        let w = u64::from_le_bytes(data[i..i + 8].try_into().expect("8 bytes"));
        let zeros = w.wrapping_sub(LO) & !w & HI;
        if zeros == 0 {
            i += 8;
            continue;
        }
        let j = i + (zeros.trailing_zeros() / 8) as usize;
        if j + 2 < n && data[j + 1] == 0 && data[j + 2] == 1 {
            return Some(j);
        }
        i = j + 1;
    }
    (i..n.saturating_sub(2)).find(|&j| data[j] == 0 && data[j + 1] == 0 && data[j + 2] == 1)
}

/// Calls `f` with every NAL unit of an Annex-B access unit, without start
/// codes and trailing zero bytes.
fn for_each_nal(au: &[u8], mut f: impl FnMut(&[u8])) {
    let Some(mut start) = find_start_code(au, 0) else {
        return;
    };
    loop {
        let body = start + 3;
        let next = find_start_code(au, body);
        let mut end = next.unwrap_or(au.len());
        // A 4-byte start code's leading zero (and any trailing_zero_8bits)
        // belongs to neither NAL.
        while end > body && au[end - 1] == 0 {
            end -= 1;
        }
        if end > body {
            f(&au[body..end]);
        }
        match next {
            Some(n) => start = n,
            None => return,
        }
    }
}

/// The parameter sets of the video track: the first SPS and PPS seen. Later
/// ones must be byte-identical, because one `avcC` describes the whole track.
#[derive(Default)]
pub struct ParamSets {
    pub sps: Option<Vec<u8>>,
    pub pps: Option<Vec<u8>>,
}

impl ParamSets {
    fn offer(slot: &mut Option<Vec<u8>>, nal: &[u8], pos: &Pos, what: &'static str) -> Result<()> {
        match slot {
            None => *slot = Some(nal.to_vec()),
            Some(known) if known.as_slice() == nal => {}
            Some(_) => {
                return Err(StitchError::Incompatible {
                    pos: pos.clone(),
                    what,
                })
            }
        }
        Ok(())
    }
}

impl ParamSets {
    /// Takes another part's parameter sets; they must equal ours.
    pub fn merge(&mut self, other: ParamSets, pos: &Pos) -> Result<()> {
        if let Some(sps) = other.sps {
            Self::offer(&mut self.sps, &sps, pos, "H.264 SPS")?;
        }
        if let Some(pps) = other.pps {
            Self::offer(&mut self.pps, &pps, pos, "H.264 PPS")?;
        }
        Ok(())
    }
}

/// What pass 1 needs to know about an access unit.
pub struct AuInfo {
    /// Size of the AVCC sample.
    pub size: u32,
    /// Contains an IDR slice.
    pub key: bool,
}

fn keep(nal_type: u8) -> bool {
    !matches!(nal_type, NAL_SPS | NAL_PPS | NAL_AUD)
}

/// Scans an access unit: its AVCC size, whether it is a keyframe, and its
/// parameter sets (recorded in `params`).
pub fn scan_au(au: &[u8], pos: &Pos, params: &mut ParamSets) -> Result<AuInfo> {
    let mut size = 0usize;
    let mut key = false;
    let mut err = None;
    for_each_nal(au, |nal| {
        let t = nal[0] & 0x1f;
        match t {
            NAL_SPS => {
                if let Err(e) = ParamSets::offer(&mut params.sps, nal, pos, "H.264 SPS") {
                    err.get_or_insert(e);
                }
            }
            NAL_PPS => {
                if let Err(e) = ParamSets::offer(&mut params.pps, nal, pos, "H.264 PPS") {
                    err.get_or_insert(e);
                }
            }
            NAL_IDR => key = true,
            _ => {}
        }
        if keep(t) {
            size += 4 + nal.len();
        }
    });
    if let Some(e) = err {
        return Err(e);
    }
    if size == 0 {
        return Err(malformed(pos, "H.264 access unit without slices"));
    }
    let size = u32::try_from(size).map_err(|_| malformed(pos, "access unit over 4 GiB"))?;
    Ok(AuInfo { size, key })
}

/// Whether an access unit holds an IDR slice (decodes without earlier pictures).
pub fn is_key(au: &[u8]) -> bool {
    let mut key = false;
    for_each_nal(au, |nal| key |= nal[0] & 0x1f == NAL_IDR);
    key
}

/// Appends the AVCC form of an access unit to `out`; returns its size.
pub fn write_avcc(au: &[u8], out: &mut Vec<u8>) -> usize {
    let before = out.len();
    for_each_nal(au, |nal| {
        if keep(nal[0] & 0x1f) {
            out.extend_from_slice(&(nal.len() as u32).to_be_bytes());
            out.extend_from_slice(nal);
        }
    });
    out.len() - before
}

/// Reads bits of an RBSP (emulation prevention already removed).
struct Bits<'a> {
    data: &'a [u8],
    bit: usize,
}

impl Bits<'_> {
    fn u(&mut self, n: usize) -> Option<u32> {
        let mut v = 0u32;
        for _ in 0..n {
            let byte = *self.data.get(self.bit / 8)?;
            v = (v << 1) | ((byte >> (7 - self.bit % 8)) & 1) as u32;
            self.bit += 1;
        }
        Some(v)
    }

    fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while self.u(1)? == 0 {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        Some((1u32 << zeros) - 1 + self.u(zeros)?)
    }

    fn se(&mut self) -> Option<i32> {
        let k = self.ue()? as i64;
        Some(if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) } as i32)
    }
}

/// Picture width and height in pixels from an SPS NAL unit (header byte
/// included), after cropping.
pub fn sps_dimensions(sps: &[u8]) -> Option<(u32, u32)> {
    // Remove emulation prevention bytes (00 00 03 → 00 00).
    let mut rbsp = Vec::with_capacity(sps.len());
    let mut zeros = 0;
    for &b in sps.get(1..)? {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        rbsp.push(b);
    }
    let mut r = Bits {
        data: &rbsp,
        bit: 0,
    };
    let profile = r.u(8)?;
    r.u(16)?; // constraint flags, level
    r.ue()?; // seq_parameter_set_id
    let mut chroma_format = 1;
    if matches!(
        profile,
        100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
    ) {
        chroma_format = r.ue()?;
        if chroma_format == 3 {
            r.u(1)?; // separate_colour_plane_flag
        }
        r.ue()?; // bit_depth_luma_minus8
        r.ue()?; // bit_depth_chroma_minus8
        r.u(1)?; // qpprime_y_zero_transform_bypass_flag
        if r.u(1)? == 1 {
            let lists = if chroma_format == 3 { 12 } else { 8 };
            for i in 0..lists {
                if r.u(1)? == 1 {
                    let size = if i < 6 { 16 } else { 64 };
                    let (mut last, mut next) = (8i32, 8i32);
                    for _ in 0..size {
                        if next != 0 {
                            next = (last + r.se()? + 256) % 256;
                        }
                        last = if next == 0 { last } else { next };
                    }
                }
            }
        }
    }
    r.ue()?; // log2_max_frame_num_minus4
    match r.ue()? {
        0 => {
            r.ue()?; // log2_max_pic_order_cnt_lsb_minus4
        }
        1 => {
            r.u(1)?;
            r.se()?;
            r.se()?;
            for _ in 0..r.ue()? {
                r.se()?;
            }
        }
        _ => {}
    }
    r.ue()?; // max_num_ref_frames
    r.u(1)?; // gaps_in_frame_num_value_allowed_flag
    let width_mbs = r.ue()? + 1;
    let height_units = r.ue()? + 1;
    let frame_mbs_only = r.u(1)?;
    if frame_mbs_only == 0 {
        r.u(1)?; // mb_adaptive_frame_field_flag
    }
    r.u(1)?; // direct_8x8_inference_flag
    let (mut cl, mut cr, mut ct, mut cb) = (0, 0, 0, 0);
    if r.u(1)? == 1 {
        cl = r.ue()?;
        cr = r.ue()?;
        ct = r.ue()?;
        cb = r.ue()?;
    }
    let (sub_w, sub_h) = match chroma_format {
        1 => (2, 2),
        2 => (2, 1),
        _ => (1, 1),
    };
    let crop_x = sub_w;
    let crop_y = sub_h * (2 - frame_mbs_only);
    let width = width_mbs * 16 - crop_x * (cl + cr);
    let height = height_units * 16 * (2 - frame_mbs_only) - crop_y * (ct + cb);
    Some((width, height))
}

/// The `avcC` box payload (AVCDecoderConfigurationRecord) for one SPS and one
/// PPS, with 4-byte NAL lengths.
pub fn avcc_record(sps: &[u8], pps: &[u8]) -> Vec<u8> {
    let mut v = vec![1, sps[1], sps[2], sps[3], 0xff, 0xe1];
    v.extend_from_slice(&(sps.len() as u16).to_be_bytes());
    v.extend_from_slice(sps);
    v.push(1);
    v.extend_from_slice(&(pps.len() as u16).to_be_bytes());
    v.extend_from_slice(pps);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nals(au: &[u8]) -> Vec<Vec<u8>> {
        let mut v = Vec::new();
        for_each_nal(au, |n| v.push(n.to_vec()));
        v
    }

    #[test]
    fn splits_on_three_and_four_byte_start_codes() {
        let au = [
            0, 0, 0, 1, 9, 0xf0, 0, 0, 1, 0x65, 1, 2, 0, 0, 0, 0, 1, 0x41, 7,
        ];
        assert_eq!(
            nals(&au),
            vec![vec![9, 0xf0], vec![0x65, 1, 2], vec![0x41, 7]]
        );
        assert!(nals(&[1, 2, 3]).is_empty());
        // `00 00 03` inside a NAL is not a start code.
        assert_eq!(
            nals(&[0, 0, 1, 0x65, 0, 0, 3, 1]),
            vec![vec![0x65, 0, 0, 3, 1]]
        );
    }

    #[test]
    fn avcc_drops_aud_sps_pps() {
        let au = [
            0, 0, 0, 1, 9, 0xf0, 0, 0, 1, 0x67, 1, 0, 0, 1, 0x68, 2, 0, 0, 1, 0x65, 5,
        ];
        let pos = Pos {
            file: "x".into(),
            offset: 0,
        };
        let mut p = ParamSets::default();
        let info = scan_au(&au, &pos, &mut p).unwrap();
        assert!(info.key);
        assert_eq!(info.size, 6);
        let mut out = Vec::new();
        assert_eq!(write_avcc(&au, &mut out), 6);
        assert_eq!(out, [0, 0, 0, 2, 0x65, 5]);
        assert_eq!(p.sps.as_deref(), Some(&[0x67, 1][..]));
        // A different SPS later is refused.
        let au2 = [0, 0, 1, 0x67, 2, 0, 0, 1, 0x65, 5];
        assert!(matches!(
            scan_au(&au2, &pos, &mut p),
            Err(StitchError::Incompatible { .. })
        ));
    }
}
