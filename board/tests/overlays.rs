//! The device-tree overlays in `board/overlays/` against the pin maps they must match: each
//! overlay is compiled with `dtc` (as CI does; package `device-tree-compiler`), the blob is read
//! back, and every pin it configures is compared with the pin map — line, direction, pull, the
//! LED's boot level — plus the rules the overlays' comments promise: one fragment on the right
//! controller, every pin group applied through the controller's own `pinctrl-0` (a hog), and no
//! node that would claim a line (`gpios`, `gpio-hog`, a driver `compatible`), because lecternd
//! requests the lines itself through the GPIO character device. The `config.txt` fragment must
//! load each overlay under the right model filter and end in `[all]`.
//!
//! The overlays carry no active-low flag (nothing in a pinctrl node says which level means
//! "pressed"), so active-low is checked through what it implies: an input's pull holds it at its
//! *inactive* level (pull-up ⇔ active-low) and the LED boots at its *dark* level.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use lectern_board::{Bias, PinMap};

/// Which overlay goes with which built-in pin map, on which controller, for which SoC.
struct Case {
    pinmap: &'static str,
    overlay: &'static str,
    /// The label `fragment@0`'s target must resolve to in the base tree.
    controller: &'static str,
    soc: &'static str,
    /// The `config.txt` section that must load it.
    filter: &'static str,
}

const CASES: &[Case] = &[
    Case {
        pinmap: "rpi4",
        overlay: "lectern-rpi4",
        controller: "gpio",
        soc: "brcm,bcm2711",
        filter: "[pi4]",
    },
    Case {
        pinmap: "rpi5",
        overlay: "lectern-rpi5",
        controller: "rp1_gpio",
        soc: "brcm,bcm2712",
        filter: "[pi5]",
    },
];

fn overlays_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("overlays")
}

/// `None` (after saying so loudly) when dtc is missing outside CI; CI must have it.
fn dtc_available() -> bool {
    // fdtoverlay comes in the same package.
    let ok = ["dtc", "fdtoverlay"].iter().all(|tool| {
        Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if !ok {
        let why = "dtc or fdtoverlay not found (Debian package device-tree-compiler, scripts/install-deps.sh)";
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{why}; CI must compile the overlays"
        );
        eprintln!("\n*** SKIPPED overlay checks: {why} ***\n");
    }
    ok
}

/// Compiles overlay source with dtc as the build does (`-@` for the symbols the firmware's
/// loader resolves labels with). Any warning is an error: the overlays stay clean.
fn compile(source: &str, name: &str) -> Result<Vec<u8>, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let src = dir.path().join(format!("{name}-overlay.dts"));
    let out = dir.path().join(format!("{name}.dtbo"));
    std::fs::write(&src, source).map_err(|e| e.to_string())?;
    let run = Command::new("dtc")
        .args(["-@", "-I", "dts", "-O", "dtb", "-o"])
        .arg(&out)
        .arg(&src)
        .output()
        .map_err(|e| format!("cannot run dtc: {e}"))?;
    let stderr = String::from_utf8_lossy(&run.stderr);
    if !run.status.success() || !stderr.trim().is_empty() {
        return Err(format!(
            "dtc on {name}-overlay.dts ({}): {}",
            run.status,
            stderr.trim()
        ));
    }
    std::fs::read(&out).map_err(|e| format!("{}: {e}", out.display()))
}

/// Applies a compiled overlay with libfdt's `fdtoverlay` to a stand-in base tree that has the
/// case's controller under its label (the way the Pi firmware merges overlays at boot), and
/// returns the merged controller node's blob: proof that the labels and phandle fixups `-@` wrote
/// resolve, and that the hog lands on the controller itself.
fn apply_to_base(case: &Case, overlay: &[u8]) -> Result<Vec<u8>, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    // The Pi 5 tree also calls RP1's controller `gpio` (`gpio: &rp1_gpio`); only the case's own
    // label is given here, so an overlay aimed at the other label fails to apply.
    let base_src = format!(
        "/dts-v1/;\n/ {{\n\tcompatible = \"{soc}\";\n\tsoc {{\n\t\t{label}: header-gpio {{\n\t\t\tgpio-controller;\n\t\t\t#gpio-cells = <2>;\n\t\t}};\n\t}};\n}};\n",
        soc = case.soc,
        label = case.controller
    );
    let (base_dts, base, ovl, out) = (
        dir.path().join("base.dts"),
        dir.path().join("base.dtb"),
        dir.path().join("overlay.dtbo"),
        dir.path().join("merged.dtb"),
    );
    std::fs::write(&base_dts, base_src).map_err(|e| e.to_string())?;
    std::fs::write(&ovl, overlay).map_err(|e| e.to_string())?;
    let run = |cmd: &mut Command| -> Result<(), String> {
        let o = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
        if o.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{cmd:?}: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ))
        }
    };
    run(Command::new("dtc")
        .args(["-@", "-I", "dts", "-O", "dtb", "-o"])
        .arg(&base)
        .arg(&base_dts))?;
    run(Command::new("fdtoverlay")
        .arg("-i")
        .arg(&base)
        .arg("-o")
        .arg(&out)
        .arg(&ovl))
    .map_err(|e| {
        format!(
            "the overlay does not apply to a base tree with &{}: {e}",
            case.controller
        )
    })?;
    std::fs::read(&out).map_err(|e| e.to_string())
}

/// A flattened device tree read back into nodes. Just enough of the format (v17) for these
/// checks: the structure block's tokens and the strings block.
mod fdt {
    #[derive(Debug, Default)]
    pub struct Node {
        pub name: String,
        pub props: Vec<(String, Vec<u8>)>,
        pub children: Vec<Node>,
    }

    impl Node {
        pub fn prop(&self, name: &str) -> Option<&[u8]> {
            self.props
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_slice())
        }
        pub fn child(&self, name: &str) -> Option<&Node> {
            self.children.iter().find(|c| c.name == name)
        }
        /// A string-list property (`"a", "b"`).
        pub fn strings(&self, name: &str) -> Option<Vec<String>> {
            let v = self.prop(name)?;
            let v = v.strip_suffix(&[0]).unwrap_or(v);
            Some(
                v.split(|b| *b == 0)
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect(),
            )
        }
        /// A `<u32 ...>` property.
        pub fn cells(&self, name: &str) -> Option<Vec<u32>> {
            let v = self.prop(name)?;
            Some(
                v.chunks_exact(4)
                    .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            )
        }
        /// Every node below this one, depth first, with its path.
        pub fn walk<'a>(&'a self, path: &str, out: &mut Vec<(String, &'a Node)>) {
            for c in &self.children {
                let p = format!("{path}/{}", c.name);
                out.push((p.clone(), c));
                c.walk(&p, out);
            }
        }
    }

    fn be32(b: &[u8], at: usize) -> Result<u32, String> {
        b.get(at..at + 4)
            .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
            .ok_or_else(|| format!("blob truncated at {at}"))
    }

    pub fn parse(b: &[u8]) -> Result<Node, String> {
        if be32(b, 0)? != 0xd00d_feed {
            return Err("not a flattened device tree (bad magic)".into());
        }
        let off_struct = be32(b, 8)? as usize;
        let off_strings = be32(b, 12)? as usize;
        let mut pos = off_struct;
        let mut stack: Vec<Node> = Vec::new();
        let mut root = None;
        loop {
            let token = be32(b, pos)?;
            pos += 4;
            match token {
                1 => {
                    let end = b[pos..]
                        .iter()
                        .position(|c| *c == 0)
                        .ok_or("unterminated node name")?;
                    let name = String::from_utf8_lossy(&b[pos..pos + end]).into_owned();
                    pos = (pos + end + 1).next_multiple_of(4);
                    stack.push(Node {
                        name,
                        ..Node::default()
                    });
                }
                2 => {
                    let node = stack.pop().ok_or("END_NODE without BEGIN_NODE")?;
                    match stack.last_mut() {
                        Some(parent) => parent.children.push(node),
                        None => root = Some(node),
                    }
                }
                3 => {
                    let len = be32(b, pos)? as usize;
                    let nameoff = be32(b, pos + 4)? as usize;
                    pos += 8;
                    let value = b.get(pos..pos + len).ok_or("property runs past the blob")?;
                    pos = (pos + len).next_multiple_of(4);
                    let s = off_strings + nameoff;
                    let end = b[s..]
                        .iter()
                        .position(|c| *c == 0)
                        .ok_or("unterminated property name")?;
                    let name = String::from_utf8_lossy(&b[s..s + end]).into_owned();
                    stack
                        .last_mut()
                        .ok_or("property outside a node")?
                        .props
                        .push((name, value.to_vec()));
                }
                4 => {}
                9 => return root.ok_or_else(|| "no root node".into()),
                t => return Err(format!("unknown structure token {t} at {}", pos - 4)),
            }
        }
    }
}

/// How one pin is left at boot: direction, pull and (outputs) level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Setting {
    /// Input with this pull (`None`: the overlay leaves the pull alone).
    Input(Option<Bias>),
    /// Output at this level (true = high).
    Output(bool),
}

impl std::fmt::Display for Setting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Setting::Input(None) => write!(f, "input, pull left alone"),
            Setting::Input(Some(b)) => write!(f, "input, {b:?}"),
            Setting::Output(level) => {
                write!(f, "output {}", if *level { "high" } else { "low" })
            }
        }
    }
}

/// What the pin map says the overlay must set, by line, with the role for messages. An input's
/// pull is its configured bias; an output boots dark (high only if active-low).
fn expected(map: &PinMap) -> BTreeMap<u32, (String, Setting)> {
    let mut m = BTreeMap::new();
    for (role, input) in [("button", &map.button), ("power_fail", &map.power_fail)] {
        let pull = match input.bias {
            Bias::AsIs => None,
            b => Some(b),
        };
        m.insert(input.line, (role.to_owned(), Setting::Input(pull)));
    }
    for (role, out) in map.lights() {
        m.insert(
            out.line,
            (role.key().to_owned(), Setting::Output(out.active_low)),
        );
    }
    m
}

/// Decodes one pin group (legacy `brcm,*` or generic pinctrl binding) into settings by line.
fn group_settings(path: &str, g: &fdt::Node) -> Result<Vec<(u32, Setting)>, String> {
    if let Some(pins) = g.cells("brcm,pins") {
        let pick = |prop: &str, i: usize| -> Option<u32> {
            let v = g.cells(prop)?;
            if v.len() == 1 {
                Some(v[0])
            } else {
                v.get(i).copied()
            }
        };
        let mut out = Vec::new();
        for (i, line) in pins.iter().enumerate() {
            let pull = match pick("brcm,pull", i) {
                None => None,
                Some(0) => Some(Bias::Disabled),
                Some(1) => Some(Bias::PullDown),
                Some(2) => Some(Bias::PullUp),
                Some(p) => return Err(format!("{path}: brcm,pull {p} is not 0, 1 or 2")),
            };
            let setting = match pick("brcm,function", i) {
                Some(0) => Setting::Input(pull),
                // The legacy binding cannot choose a level: the latch is low after reset.
                Some(1) => Setting::Output(false),
                Some(f) => {
                    return Err(format!(
                        "{path}: GPIO{line} set to alternate function {f}, not a GPIO"
                    ))
                }
                None => return Err(format!("{path}: GPIO{line} has no brcm,function")),
            };
            out.push((*line, setting));
        }
        return Ok(out);
    }
    let pins = g
        .strings("pins")
        .ok_or_else(|| format!("{path}: neither brcm,pins nor pins"))?;
    let function = g.strings("function").unwrap_or_default();
    if function != ["gpio"] {
        return Err(format!("{path}: function {function:?}, expected \"gpio\""));
    }
    let has = |p: &str| g.prop(p).is_some();
    let pulls: Vec<Bias> = [
        ("bias-disable", Bias::Disabled),
        ("bias-pull-down", Bias::PullDown),
        ("bias-pull-up", Bias::PullUp),
    ]
    .into_iter()
    .filter(|(p, _)| has(p))
    .map(|(_, b)| b)
    .collect();
    if pulls.len() > 1 {
        return Err(format!("{path}: more than one bias-* property"));
    }
    let setting = match (has("input-enable"), has("output-low"), has("output-high")) {
        (true, false, false) => Setting::Input(pulls.first().copied()),
        (false, true, false) => Setting::Output(false),
        (false, false, true) => Setting::Output(true),
        _ => {
            return Err(format!(
                "{path}: exactly one of input-enable, output-low, output-high expected"
            ))
        }
    };
    pins.iter()
        .map(|p| {
            p.strip_prefix("gpio")
                .and_then(|n| n.parse::<u32>().ok())
                .map(|line| (line, setting))
                .ok_or_else(|| format!("{path}: pin {p:?} is not gpioN"))
        })
        .collect()
}

/// Everything wrong with overlay `source` for `case` and `map`; empty when they agree.
fn problems(case: &Case, source: &str, map: &PinMap) -> Vec<String> {
    let name = format!("{}-overlay.dts", case.overlay);
    let blob = match compile(source, case.overlay) {
        Ok(b) => b,
        Err(e) => return vec![e],
    };
    let root = match fdt::parse(&blob) {
        Ok(r) => r,
        Err(e) => return vec![format!("{name}: {e}")],
    };
    let mut bad = Vec::new();

    // Merged into a base tree, the controller carries the hog and every group it names.
    match apply_to_base(case, &blob).and_then(|b| fdt::parse(&b)) {
        Err(e) => bad.push(format!("{name}: {e}")),
        Ok(merged) => {
            let ctl = merged.child("soc").and_then(|s| s.child("header-gpio"));
            let applied = ctl.and_then(|c| c.cells("pinctrl-0")).unwrap_or_default();
            let groups: Vec<u32> = ctl
                .map(|c| {
                    c.children
                        .iter()
                        .filter_map(|g| g.cells("phandle").and_then(|v| v.first().copied()))
                        .collect()
                })
                .unwrap_or_default();
            if applied.is_empty() || applied.iter().any(|h| !groups.contains(h)) {
                bad.push(format!(
                    "{name}: merged into a base tree, &{}'s pinctrl-0 {applied:?} does not point at its own pin groups {groups:?}",
                    case.controller
                ));
            }
        }
    }

    if root.strings("compatible") != Some(vec![case.soc.to_owned()]) {
        bad.push(format!(
            "{name}: compatible {:?}, expected [{:?}]",
            root.strings("compatible"),
            case.soc
        ));
    }
    let fragments: Vec<&fdt::Node> = root
        .children
        .iter()
        .filter(|c| c.name.starts_with("fragment"))
        .collect();
    if fragments.len() != 1 || fragments[0].name != "fragment@0" {
        let names: Vec<&str> = fragments.iter().map(|f| f.name.as_str()).collect();
        bad.push(format!("{name}: expected one fragment@0, found {names:?}"));
        return bad;
    }
    let target = root
        .child("__fixups__")
        .and_then(|f| f.strings(case.controller));
    if target != Some(vec!["/fragment@0:target:0".to_owned()]) {
        bad.push(format!(
            "{name}: fragment@0 must target &{} (the header's pin controller); __fixups__ has {:?}",
            case.controller,
            root.child("__fixups__").map(|f| f
                .props
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>())
        ));
    }
    let Some(ov) = fragments[0].child("__overlay__") else {
        bad.push(format!("{name}: fragment@0 has no __overlay__"));
        return bad;
    };

    // Nothing may claim a line: no GPIO consumers, no hogs, no device nodes.
    let mut all = Vec::new();
    root.walk("", &mut all);
    for (path, node) in &all {
        if path.contains("__symbols__") || path.contains("fixups__") {
            continue;
        }
        for (prop, _) in &node.props {
            if prop == "gpios"
                || prop.ends_with("-gpios")
                || prop == "gpio-hog"
                || prop == "compatible"
            {
                bad.push(format!(
                    "{name}: {path} has `{prop}`: the overlay must not claim lines or add devices (lecternd requests them through the GPIO character device)"
                ));
            }
        }
    }

    // The hog: pinctrl-0 on the controller itself names every group, and only those.
    if ov.strings("pinctrl-names") != Some(vec!["default".to_owned()]) {
        bad.push(format!(
            "{name}: __overlay__ needs pinctrl-names = \"default\""
        ));
    }
    let applied: Vec<u32> = ov.cells("pinctrl-0").unwrap_or_default();
    let mut actual: BTreeMap<u32, (String, Setting)> = BTreeMap::new();
    for g in &ov.children {
        let path = format!("fragment@0/__overlay__/{}", g.name);
        let handle = g.cells("phandle").and_then(|v| v.first().copied());
        if !handle.is_some_and(|h| applied.contains(&h)) {
            bad.push(format!(
                "{name}: {path} is not in the controller's pinctrl-0, so it would never be applied"
            ));
        }
        match group_settings(&path, g) {
            Ok(settings) => {
                for (line, s) in settings {
                    if let Some((other, _)) = actual.insert(line, (g.name.clone(), s)) {
                        bad.push(format!(
                            "{name}: GPIO{line} set by both {other} and {}",
                            g.name
                        ));
                    }
                }
            }
            Err(e) => bad.push(format!("{name}: {e}")),
        }
    }
    if applied.len() != ov.children.len() {
        bad.push(format!(
            "{name}: pinctrl-0 has {} entries for {} pin groups",
            applied.len(),
            ov.children.len()
        ));
    }

    // Agreement with the pin map, line by line.
    let want = expected(map);
    for (line, (role, setting)) in &want {
        match actual.get(line) {
            None => bad.push(format!(
                "{name}: pin map {} has {role} on line {line}, which the overlay does not set",
                map.source
            )),
            Some((group, got)) if got != setting => bad.push(format!(
                "{name}: {role} (line {line}): pin map {} wants {setting}, overlay group {group} sets {got}",
                map.source
            )),
            Some(_) => {}
        }
    }
    for (line, (group, got)) in &actual {
        if !want.contains_key(line) {
            bad.push(format!(
                "{name}: group {group} sets GPIO{line} ({got}), which pin map {} does not use",
                map.source
            ));
        }
    }

    // Active-low through its consequence: a pulled input rests at its inactive level.
    for (role, input) in [("button", &map.button), ("power_fail", &map.power_fail)] {
        let rests_high = match input.bias {
            Bias::PullUp => Some(true),
            Bias::PullDown => Some(false),
            Bias::AsIs | Bias::Disabled => None,
        };
        if rests_high.is_some_and(|high| high != input.active_low) {
            bad.push(format!(
                "{name}: {role} (line {}) is active_low = {} but pulled {}: unconnected it would read as asserted",
                input.line,
                input.active_low,
                if input.active_low { "down" } else { "up" }
            ));
        }
    }
    bad
}

fn source_of(case: &Case) -> String {
    let path = overlays_dir().join(format!("{}-overlay.dts", case.overlay));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn check(case: &Case) {
    let map = PinMap::load(case.pinmap).unwrap();
    let bad = problems(case, &source_of(case), &map);
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// `source` with the first `from` replaced by `to`; `from` must be there.
fn drift(source: &str, from: &str, to: &str) -> String {
    assert!(source.contains(from), "test needs {from:?} in the overlay");
    source.replacen(from, to, 1)
}

/// The checker must report something containing every needle for this source and map.
fn expect_problems(case: &Case, source: &str, map: &PinMap, needles: &[&str]) {
    let bad = problems(case, source, map).join("\n");
    assert!(!bad.is_empty(), "drift not caught");
    for n in needles {
        assert!(bad.contains(n), "expected {n:?} in:\n{bad}");
    }
}

#[test]
fn rpi4_overlay_matches_its_pin_map() {
    if dtc_available() {
        check(&CASES[0]);
    }
}

#[test]
fn rpi5_overlay_matches_its_pin_map() {
    if dtc_available() {
        check(&CASES[1]);
    }
}

/// The checker itself: drifted overlays and maps must be caught, each with a message naming
/// what disagrees.
#[test]
fn drift_is_caught() {
    if !dtc_available() {
        return;
    }
    let case = &CASES[1];
    let (source, map) = (source_of(case), PinMap::load(case.pinmap).unwrap());
    let drifted = |from: &str, to: &str| drift(&source, from, to);
    let expect =
        |src: &str, map: &PinMap, needles: &[&str]| expect_problems(case, src, map, needles);
    // A line moved in the overlay only.
    expect(
        &drifted("\"gpio17\"", "\"gpio16\""),
        &map,
        &["button on line 17", "GPIO16"],
    );
    // A pull flipped.
    expect(
        &drifted("bias-pull-up;", "bias-pull-down;"),
        &map,
        &["button (line 17)", "PullUp", "PullDown"],
    );
    // The LED booting lit.
    expect(
        &drifted("output-low;", "output-high;"),
        &map,
        &["led (line 27)", "output low", "output high"],
    );
    // A group that is never applied.
    expect(
        &drifted(
            "<&lectern_button &lectern_power_fail &lectern_led>",
            "<&lectern_button &lectern_led>",
        ),
        &map,
        &["lectern_power_fail is not in the controller's pinctrl-0"],
    );
    // A gpio-keys node would claim the button.
    expect(
        &drifted(
            "\t\t\t// Record button",
            "\t\t\tkeys { compatible = \"gpio-keys\"; k { gpios = <&rp1_gpio 17 1>; }; };\n\t\t\t// Record button",
        ),
        &map,
        &["must not claim lines"],
    );
    // The wrong controller.
    expect(
        &drifted("target = <&rp1_gpio>;", "target = <&gpio>;"),
        &map,
        &[
            "must target &rp1_gpio",
            "does not apply to a base tree with &rp1_gpio",
        ],
    );
    // The map drifts instead: an active-low LED must boot high, and a pull-up on an
    // active-high input would assert it when unplugged.
    let text = lectern_board::BUILTIN_PINMAPS
        .iter()
        .find(|(n, _)| *n == "rpi5")
        .unwrap()
        .1;
    let led_low = PinMap::parse(
        &text.replacen(
            "[led]\nline = 27\nactive_low = false",
            "[led]\nline = 27\nactive_low = true",
            1,
        ),
        "drifted.toml",
    )
    .unwrap();
    expect(&source, &led_low, &["led (line 27)", "wants output high"]);
    let pf_high = PinMap::parse(
        &text.replacen(
            "[power_fail]\nline = 22\nactive_low = true",
            "[power_fail]\nline = 22\nactive_low = false",
            1,
        ),
        "drifted.toml",
    )
    .unwrap();
    expect(
        &source,
        &pf_high,
        &["power_fail (line 22) is active_low = false but pulled up"],
    );
    // An optional light in the map that the overlay does not set.
    let tally = PinMap::parse(
        &format!("{text}\n[led2]\nline = 23\nrole = \"tally\"\n"),
        "drifted.toml",
    )
    .unwrap();
    expect(
        &source,
        &tally,
        &["led2 on line 23, which the overlay does not set"],
    );
    // And a syntax error is dtc's message, not a panic.
    expect(
        &drifted("output-low;", "output-low"),
        &map,
        &["dtc on lectern-rpi5-overlay.dts"],
    );
}

/// The same for the legacy `brcm,*` binding of the Pi 4 overlay.
#[test]
fn drift_is_caught_in_the_legacy_binding() {
    if !dtc_available() {
        return;
    }
    let case = &CASES[0];
    let (source, map) = (source_of(case), PinMap::load(case.pinmap).unwrap());
    let check = |from: &str, to: &str, needles: &[&str]| {
        expect_problems(case, &drift(&source, from, to), &map, needles)
    };
    check(
        "brcm,pins = <22>;",
        "brcm,pins = <23>;",
        &["power_fail on line 22", "GPIO23"],
    );
    check(
        "brcm,pull = <2>;",
        "brcm,pull = <1>;",
        &["button (line 17)", "PullDown"],
    );
    check(
        "brcm,function = <1>;",
        "brcm,function = <4>;",
        &["GPIO27 set to alternate function 4"],
    );
    check("brcm,pull = <2>;", "brcm,pull = <7>;", &["brcm,pull 7"]);
    check(
        "compatible = \"brcm,bcm2711\";",
        "compatible = \"brcm,bcm2835\";",
        &["expected [\"brcm,bcm2711\"]"],
    );
}

#[test]
fn every_overlay_has_a_case_and_config_txt_loads_each_under_its_model() {
    let dir = overlays_dir();
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_suffix("-overlay.dts")
                .map(str::to_owned)
        })
        .collect();
    on_disk.sort();
    let mut cased: Vec<String> = CASES.iter().map(|c| c.overlay.to_owned()).collect();
    cased.sort();
    assert_eq!(
        on_disk,
        cased,
        "every overlay in {} needs a Case in this test",
        dir.display()
    );

    let config = std::fs::read_to_string(dir.join("config.txt")).unwrap();
    let mut section = "[all]".to_owned();
    let mut loads: Vec<(String, String)> = Vec::new();
    for line in config.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line.to_owned();
        } else if let Some(o) = line.strip_prefix("dtoverlay=") {
            loads.push((section.clone(), o.to_owned()));
        } else {
            assert!(
                line.is_empty() || line.starts_with('#'),
                "config.txt: unexpected line {line:?}"
            );
        }
    }
    assert_eq!(
        section, "[all]",
        "config.txt must end in [all], or whatever is appended after it applies to one model only"
    );
    let mut want: Vec<(String, String)> = CASES
        .iter()
        .map(|c| (c.filter.to_owned(), c.overlay.to_owned()))
        .collect();
    want.sort();
    loads.sort();
    assert_eq!(loads, want, "config.txt: (section, dtoverlay) pairs");
}

/// The detection table's Pi rows use the pin maps these overlays are checked against.
#[test]
fn detected_pis_use_the_overlaid_pin_maps() {
    for (compatible, pinmap) in [
        ("raspberrypi,4-model-b\0brcm,bcm2711\0", "rpi4"),
        ("raspberrypi,5-model-b\0brcm,bcm2712\0", "rpi5"),
    ] {
        let d = lectern_board::classify(compatible, "", true);
        assert_eq!(d.pinmap, pinmap, "{compatible:?}");
        assert!(
            CASES.iter().any(|c| c.pinmap == pinmap),
            "no overlay for pin map {pinmap}"
        );
    }
}
