//! Model packs: a directory with a `manifest.toml` and the ONNX files it names.
//!
//! The manifest is what makes a pack swappable: file names, hashes, input normalisation,
//! embedding size, the model id that templates carry, and optionally the calibration that turns
//! similarities into scores. Every file is checked against its SHA-256 at load, so a truncated
//! download or a silently replaced model cannot produce templates under the wrong model id.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use facegate_core::Calibration;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::error::{EngineError, Result};

pub const MANIFEST_FILE: &str = "manifest.toml";

/// Where `scripts/setup` puts the pack called `name` under `home`.
pub fn pack_dir(home: &Path, name: &str) -> PathBuf {
    home.join("models").join(name)
}

/// Similarity → score knots used when a manifest has no `[calibration]` table.
///
/// The scale is `score = 3000 + 1000 · log10(1 / FMR)` (see `facegate_core::score`). These are
/// buffalo_s's knots measured on LFW impostor pairs (`packs/buffalo_s/manifest.toml`; this
/// crate's `examples/lfw_pairs.rs --impostors` finds the same within 0.002 on the pairs_dev
/// subset). For another ArcFace-style 512-d pack they are a provisional guess until its own
/// impostor distribution is measured and written into its manifest.
pub const PROVISIONAL_CALIBRATION: &[(f32, f32)] = &[
    (-1.0, 0.0),
    (0.00533, 3301.0),
    (0.09118, 4000.0),
    (0.16655, 5000.0),
    (0.22738, 6000.0),
    (0.28199, 7000.0),
    (0.33822, 8000.0),
    (0.449, 9999.0),
    (1.0, 9999.0),
];

/// The parsed `manifest.toml` of a pack. Unknown keys are ignored so that later tools can
/// extend the format without breaking older engines.
#[derive(Debug, Clone, Deserialize)]
pub struct Manifest {
    pub model_id: String,
    /// Licence of the weights, in a line: what `serve` logs at start and `facegate packs` lists.
    #[serde(default)]
    pub license: Option<String>,
    /// What the weights were trained on, in a line.
    #[serde(default)]
    pub trained_on: Option<String>,
    /// `false` when the weights' licence forbids commercial use: `serve` then warns at start.
    #[serde(default)]
    pub commercial_use: Option<bool>,
    /// What the pack misses at the score users act on, in a line (FNMR at FMR 1e-4, 7000, over
    /// all LFW genuine pairs): `facegate packs` lists it beside the licence, so that choosing the
    /// licence-clean pack is choosing knowing its cost.
    #[serde(default)]
    pub accuracy: Option<String>,
    pub detector: DetectorSpec,
    pub recognizer: RecognizerSpec,
    /// A second recognizer whose template is joined to the first one's (see
    /// [`FusedRecognizerSpec`]); the pack's template is then both, one after the other.
    #[serde(default)]
    pub fused_recognizer: Option<FusedRecognizerSpec>,
    #[serde(default)]
    pub landmarks: Option<LandmarksSpec>,
    #[serde(default)]
    pub calibration: Option<CalibrationSpec>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DetectorSpec {
    pub file: String,
    pub sha256: String,
    #[serde(flatten)]
    pub provenance: Provenance,
    /// The family of the detector's outputs, which decides how they are decoded.
    #[serde(default)]
    pub kind: DetectorKind,
    /// Channel order of the network input.
    #[serde(default)]
    pub channels: ChannelOrder,
    pub mean: f32,
    pub std: f32,
    #[serde(default = "default_strides")]
    pub strides: Vec<u32>,
    #[serde(default = "default_anchors")]
    pub anchors_per_cell: usize,
    /// Minimum score this pack's detector was measured at; the engine's `detection_threshold`
    /// setting overrides it. Scores of different detector families are not on one scale.
    #[serde(default)]
    pub threshold: Option<f32>,
    /// IoU above which this pack's boxes are merged; the engine's `nms_iou` setting overrides it.
    #[serde(default)]
    pub nms_iou: Option<f32>,
    /// Side of the square canvas of the keypoint refinement pass, a multiple of 32 and at least
    /// 128; absent for none. Each face found is warped upright onto the ArcFace template in the
    /// middle of that canvas and detected again there, and the keypoints of that second look
    /// replace the first (see `refine::refine_keypoints`).
    #[serde(default)]
    pub refine_canvas: Option<u32>,
}

/// Detector families whose outputs the engine decodes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DetectorKind {
    /// InsightFace's SCRFD: per stride `score_S`, `bbox_S` (distances to the four sides) and
    /// `kps_S`, `anchors_per_cell` anchors per cell.
    #[default]
    Scrfd,
    /// OpenCV Zoo's YuNet: per stride `cls_S` and `obj_S` (score = √(cls·obj)), `bbox_S` (centre
    /// offset and log size) and `kps_S`, one anchor per cell.
    Yunet,
}

/// Order of the three colour planes a network reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelOrder {
    #[default]
    Rgb,
    /// OpenCV-trained models read the planes in the order OpenCV decodes images.
    Bgr,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RecognizerSpec {
    pub file: String,
    pub sha256: String,
    #[serde(flatten)]
    pub provenance: Provenance,
    pub input_size: u32,
    pub mean: f32,
    pub std: f32,
    pub embedding_size: usize,
    /// Embed each face and its mirror image and add the two (see `embed::embed`). Changes the
    /// templates, so a pack that turns it on or off needs a new `model_id` and calibration.
    #[serde(default)]
    pub flip_test: bool,
    /// Where the detector's five keypoints (eyes, nose tip, mouth corners, the image's left
    /// first) are placed in this recognizer's crop, in crop pixels. Default: ArcFace's 112 px
    /// template scaled to `input_size`, the crop the ArcFace family is trained on.
    #[serde(default)]
    pub template: Option<[[f32; 2]; 5]>,
    /// A vector subtracted from the unit embedding before it is normalised again; absent for
    /// none. A recognizer whose embeddings share a common direction (the mean over many people
    /// is far from zero) scores every two strangers a little alike; taking that direction out
    /// spreads the impostors apart. `embedding_size` values, of norm under 1 so that no unit
    /// embedding can become zero. Changes the templates: a new `model_id` and calibration.
    #[serde(default)]
    pub centre: Option<Vec<f32>>,
}

/// `[fused_recognizer]`: a second network on its own crop of the same face. Its L2-normalised
/// embedding `b` is joined to the first one's `a` as `(√(1 − w)·a, √w·b)`, a unit vector whose
/// cosine with another such template is `(1 − w)·cos_a + w·cos_b`: score fusion by a weighted
/// mean of the two similarities, carried by one template, so that storage, the index and the
/// calibration see one pack.
#[derive(Debug, Clone, Deserialize)]
pub struct FusedRecognizerSpec {
    #[serde(flatten)]
    pub recognizer: RecognizerSpec,
    /// `w` above, in (0, 1).
    pub weight: f32,
}

/// `license` and `source` of one model file: the weights' licence, and where the file comes
/// from, in a line each, which `facegate packs` lists beside the file.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Provenance {
    #[serde(default)]
    pub license: Option<String>,
    #[serde(default)]
    pub source: Option<String>,
}

impl Manifest {
    /// Every model file the pack loads, with its role and provenance, in load order.
    pub fn model_files(&self) -> Vec<(&'static str, &str, &Provenance)> {
        let mut files = vec![
            ("detector", self.detector.file.as_str(), &self.detector.provenance),
            ("recognizer", self.recognizer.file.as_str(), &self.recognizer.provenance),
        ];
        if let Some(f) = &self.fused_recognizer {
            files.push(("fused recognizer", f.recognizer.file.as_str(), &f.recognizer.provenance));
        }
        if let Some(l) = &self.landmarks {
            files.push(("landmarks", l.file.as_str(), &l.provenance));
        }
        files
    }

    /// Values in one template: the recognizer's, plus the fused recognizer's when there is one.
    pub fn template_size(&self) -> usize {
        self.recognizer.embedding_size + self.fused_recognizer.as_ref().map_or(0, |f| f.recognizer.embedding_size)
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct LandmarksSpec {
    pub file: String,
    pub sha256: String,
    #[serde(flatten)]
    pub provenance: Provenance,
    pub input_size: u32,
    /// Input normalisation, `(x - mean) / std` on RGB. InsightFace's 2d106det normalises inside
    /// its graph, hence the defaults 0 and 1.
    #[serde(default)]
    pub mean: f32,
    #[serde(default = "default_landmark_std")]
    pub std: f32,
}

/// `[calibration]`: `knots = [[similarity, score], ...]`, strictly increasing in similarity.
#[derive(Debug, Clone, Deserialize)]
pub struct CalibrationSpec {
    pub knots: Vec<[f32; 2]>,
}

fn default_strides() -> Vec<u32> {
    vec![8, 16, 32]
}

fn default_anchors() -> usize {
    2
}

fn default_landmark_std() -> f32 {
    1.0
}

/// A loaded, verified pack: the manifest plus absolute paths of its model files.
#[derive(Debug, Clone)]
pub struct Pack {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub detector_path: PathBuf,
    pub recognizer_path: PathBuf,
    pub fused_recognizer_path: Option<PathBuf>,
    pub landmarks_path: Option<PathBuf>,
    pub calibration: Calibration,
}

impl Pack {
    /// Reads `dir/manifest.toml`, checks it and the SHA-256 of every model file it names.
    pub fn load(dir: &Path) -> Result<Pack> {
        let manifest_path = dir.join(MANIFEST_FILE);
        if !manifest_path.is_file() {
            return Err(EngineError::Missing { what: "model pack manifest", path: manifest_path });
        }
        let text = std::fs::read_to_string(&manifest_path)
            .map_err(|source| EngineError::Io { path: manifest_path.clone(), source })?;
        let manifest = parse_manifest(&text, &manifest_path)?;
        let calibration = manifest_calibration(&manifest, &manifest_path)?;

        let detector_path = model_file(dir, &manifest.detector.file, &manifest.detector.sha256, &manifest_path)?;
        let recognizer_path = model_file(dir, &manifest.recognizer.file, &manifest.recognizer.sha256, &manifest_path)?;
        let fused_recognizer_path = (manifest.fused_recognizer.as_ref())
            .map(|spec| model_file(dir, &spec.recognizer.file, &spec.recognizer.sha256, &manifest_path))
            .transpose()?;
        let landmarks_path = (manifest.landmarks.as_ref())
            .map(|spec| model_file(dir, &spec.file, &spec.sha256, &manifest_path))
            .transpose()?;
        Ok(Pack {
            dir: dir.to_path_buf(),
            manifest,
            detector_path,
            recognizer_path,
            fused_recognizer_path,
            landmarks_path,
            calibration,
        })
    }
}

/// A pack found under a packs directory, for `facegate packs`.
#[derive(Debug)]
pub struct PackListing {
    pub name: String,
    pub dir: PathBuf,
    /// The manifest, or why it could not be read.
    pub manifest: Result<Manifest>,
    /// Model files the manifest names that are not there (`make setup` fetches them). Hashes
    /// are checked when a pack loads, not when it is listed.
    pub missing: Vec<String>,
}

/// Every sub-directory of `packs_dir` holding a `manifest.toml`, by name.
pub fn list_packs(packs_dir: &Path) -> Result<Vec<PackListing>> {
    let entries = match std::fs::read_dir(packs_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(EngineError::Io { path: packs_dir.to_path_buf(), source }),
    };
    let mut packs = Vec::new();
    for entry in entries {
        let dir = entry.map_err(|source| EngineError::Io { path: packs_dir.to_path_buf(), source })?.path();
        let manifest_path = dir.join(MANIFEST_FILE);
        if !manifest_path.is_file() {
            continue;
        }
        let manifest = std::fs::read_to_string(&manifest_path)
            .map_err(|source| EngineError::Io { path: manifest_path.clone(), source })
            .and_then(|text| parse_manifest(&text, &manifest_path));
        let missing = match &manifest {
            Ok(m) => m
                .model_files()
                .into_iter()
                .map(|(_, file, _)| file)
                .filter(|file| !dir.join(file).is_file())
                .map(str::to_owned)
                .collect(),
            Err(_) => Vec::new(),
        };
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        packs.push(PackListing { name, dir, manifest, missing });
    }
    packs.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(packs)
}

/// Parses and validates manifest text; `path` is only used in messages.
pub fn parse_manifest(text: &str, path: &Path) -> Result<Manifest> {
    let bad = |reason: String| EngineError::Manifest { path: path.to_path_buf(), reason };
    let manifest: Manifest = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
    if manifest.model_id.trim().is_empty() {
        return Err(bad("model_id is empty".into()));
    }
    let d = &manifest.detector;
    if d.strides.is_empty() || d.strides.iter().any(|&s| s == 0 || 32 % s != 0) {
        return Err(bad(format!("detector.strides must be non-empty divisors of 32, got {:?}", d.strides)));
    }
    if d.anchors_per_cell == 0 {
        return Err(bad("detector.anchors_per_cell must be at least 1".into()));
    }
    if d.kind == DetectorKind::Yunet && d.anchors_per_cell != 1 {
        return Err(bad("a yunet detector has one anchor per cell (anchors_per_cell = 1)".into()));
    }
    for (what, value) in [("detector.threshold", d.threshold), ("detector.nms_iou", d.nms_iou)] {
        if value.is_some_and(|v| !(v > 0.0 && v <= 1.0)) {
            return Err(bad(format!("{what} must lie in (0, 1]")));
        }
    }
    if d.refine_canvas.is_some_and(|side| side < 128 || side % 32 != 0) {
        return Err(bad("detector.refine_canvas must be a multiple of 32, at least 128".into()));
    }
    check_recognizer_spec(&manifest.recognizer, "recognizer").map_err(bad)?;
    if let Some(f) = &manifest.fused_recognizer {
        check_recognizer_spec(&f.recognizer, "fused_recognizer").map_err(bad)?;
        if !(f.weight > 0.0 && f.weight < 1.0) {
            return Err(bad("fused_recognizer.weight must lie in (0, 1)".into()));
        }
    }
    if let Some(l) = &manifest.landmarks {
        if l.input_size < 2 || !l.std.is_finite() || l.std == 0.0 {
            return Err(bad("landmarks.input_size must be at least 2 and landmarks.std a non-zero number".into()));
        }
    }
    if !d.std.is_finite() || d.std == 0.0 {
        return Err(bad("detector.std must be a non-zero number".into()));
    }
    Ok(manifest)
}

fn check_recognizer_spec(r: &RecognizerSpec, table: &str) -> std::result::Result<(), String> {
    if r.input_size == 0 || r.embedding_size == 0 {
        return Err(format!("{table}.input_size and embedding_size must be positive"));
    }
    if !r.std.is_finite() || r.std == 0.0 {
        return Err(format!("{table}.std must be a non-zero number"));
    }
    if let Some(centre) = &r.centre {
        let norm = centre.iter().map(|v| f64::from(*v) * f64::from(*v)).sum::<f64>().sqrt();
        if centre.len() != r.embedding_size || !norm.is_finite() || norm >= 1.0 {
            return Err(format!(
                "{table}.centre must hold embedding_size ({}) numbers, of norm under 1",
                r.embedding_size
            ));
        }
    }
    if let Some(points) = &r.template {
        let side = r.input_size as f32;
        if points.iter().flatten().any(|v| !(v.is_finite() && (0.0..=side).contains(v))) {
            return Err(format!("{table}.template: every point must lie inside the {side} px crop"));
        }
    }
    Ok(())
}

/// The pack's calibration, or [`PROVISIONAL_CALIBRATION`] when the manifest has none.
pub fn manifest_calibration(manifest: &Manifest, path: &Path) -> Result<Calibration> {
    let knots = match &manifest.calibration {
        Some(spec) => spec.knots.iter().map(|&[s, v]| (s, v)).collect(),
        None => PROVISIONAL_CALIBRATION.to_vec(),
    };
    Calibration::new(knots)
        .map_err(|reason| EngineError::Manifest { path: path.to_path_buf(), reason: format!("calibration: {reason}") })
}

/// Resolves a file named by the manifest and checks its hash.
fn model_file(dir: &Path, name: &str, expected: &str, manifest_path: &Path) -> Result<PathBuf> {
    // Names are plain file names inside the pack: a manifest must not reach elsewhere on disk.
    let plain = Path::new(name).file_name().is_some_and(|f| f == name);
    if !plain {
        return Err(EngineError::Manifest {
            path: manifest_path.to_path_buf(),
            reason: format!("file {name:?} must be a plain file name inside the pack directory"),
        });
    }
    let path = dir.join(name);
    if !path.is_file() {
        return Err(EngineError::Missing { what: "model file", path });
    }
    let actual = sha256_file(&path)?;
    if !actual.eq_ignore_ascii_case(expected.trim()) {
        return Err(EngineError::HashMismatch { path, expected: expected.trim().to_owned(), actual });
    }
    Ok(path)
}

/// Hex SHA-256 of a file, streamed so that large models are not held twice in memory.
pub fn sha256_file(path: &Path) -> Result<String> {
    let io_err = |source| EngineError::Io { path: path.to_path_buf(), source };
    let mut file = File::open(path).map_err(io_err)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(io_err)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
model_id = "test@1"
[detector]
file = "det.onnx"
sha256 = "00"
mean = 127.5
std = 128.0
[recognizer]
file = "rec.onnx"
sha256 = "00"
input_size = 112
mean = 127.5
std = 127.5
embedding_size = 512
"#;

    #[test]
    fn parses_a_minimal_manifest_with_defaults() {
        let m = parse_manifest(MINIMAL, Path::new("m.toml")).expect("valid manifest");
        assert_eq!(m.detector.strides, vec![8, 16, 32]);
        assert_eq!(m.detector.anchors_per_cell, 2);
        assert!(m.landmarks.is_none());
        let with_landmarks = format!("{MINIMAL}\n[landmarks]\nfile = \"lm.onnx\"\nsha256 = \"00\"\ninput_size = 192\n");
        let l = parse_manifest(&with_landmarks, Path::new("m.toml")).expect("valid").landmarks.expect("landmarks");
        assert_eq!((l.input_size, l.mean, l.std), (192, 0.0, 1.0));
        assert!(parse_manifest(&with_landmarks.replace("192", "0"), Path::new("m.toml")).is_err());
        let c = manifest_calibration(&m, Path::new("m.toml")).expect("default calibration");
        assert_eq!(c.score(0.28199), 7000);
        assert_eq!(c.score(1.0), 9999);
    }

    #[test]
    fn a_fused_recognizer_adds_its_values_to_the_template() {
        assert_eq!(parse_manifest(MINIMAL, Path::new("m.toml")).expect("valid").template_size(), 512);
        let fused = |weight: &str, template: &str| {
            format!(
                "{MINIMAL}\n[fused_recognizer]\nfile = \"second.onnx\"\nsha256 = \"00\"\ninput_size = 150\n\
                 mean = 0.0\nstd = 1.0\nembedding_size = 128\nweight = {weight}\n{template}"
            )
        };
        let five = "template = [[50.0, 60.0], [100.0, 60.0], [75.0, 90.0], [55.0, 110.0], [95.0, 110.0]]\n";
        let m = parse_manifest(&fused("0.4", five), Path::new("m.toml")).expect("valid");
        assert_eq!(m.template_size(), 640);
        let f = m.fused_recognizer.expect("fused");
        assert_eq!((f.weight, f.recognizer.input_size), (0.4, 150));
        assert_eq!(f.recognizer.template.map(|t| t[2]), Some([75.0, 90.0]));
        assert!(parse_manifest(&fused("0.4", ""), Path::new("m.toml")).is_ok(), "the template is optional");
        for weight in ["0.0", "1.0", "-0.5", "nan"] {
            assert!(parse_manifest(&fused(weight, five), Path::new("m.toml")).is_err(), "weight {weight}");
        }
        let centre = |values: &str| fused("0.4", &format!("centre = [{values}]\n"));
        let two = |a: &str, b: &str| {
            std::iter::repeat_n(a, 64).chain(std::iter::repeat_n(b, 64)).collect::<Vec<_>>().join(", ")
        };
        let m = parse_manifest(&centre(&two("0.05", "-0.05")), Path::new("m.toml")).expect("a valid centre");
        assert_eq!(m.fused_recognizer.and_then(|f| f.recognizer.centre).map(|c| c.len()), Some(128));
        assert!(parse_manifest(&centre("0.1, 0.2"), Path::new("m.toml")).is_err(), "a centre of the wrong length");
        assert!(parse_manifest(&centre(&two("0.1", "0.1")), Path::new("m.toml")).is_err(), "a centre of norm over 1");
        assert!(parse_manifest(&centre(&two("nan", "0.0")), Path::new("m.toml")).is_err(), "a centre not a number");
        let outside = five.replace("110.0]]", "151.0]]");
        assert!(parse_manifest(&fused("0.4", &outside), Path::new("m.toml")).is_err());
        assert!(parse_manifest(&fused("0.4", "").replace("input_size = 150", "input_size = 0"), Path::new("m.toml"))
            .is_err());
    }

    /// The packs this repository ships name every model file's licence and source.
    #[test]
    fn shipped_manifests_name_each_files_licence_and_source() {
        let packs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packs");
        let mut seen = 0;
        for entry in std::fs::read_dir(&packs).expect("packs/") {
            let path = entry.expect("entry").path().join(MANIFEST_FILE);
            let text = std::fs::read_to_string(&path).expect("manifest");
            let m = parse_manifest(&text, &path).expect("valid");
            for (role, file, provenance) in m.model_files() {
                let named = |v: &Option<String>| v.as_deref().is_some_and(|v| !v.trim().is_empty());
                assert!(named(&provenance.license) && named(&provenance.source), "{}: {role} {file}", path.display());
            }
            assert!(m.accuracy.is_some(), "{}: what the pack misses", path.display());
            seen += 1;
        }
        assert_eq!(seen, 3);
    }

    #[test]
    fn reads_calibration_knots() {
        let text = format!("{MINIMAL}\n[calibration]\nknots = [[-1.0, 0.0], [0.3, 7000.0], [1.0, 9999.0]]\n");
        let m = parse_manifest(&text, Path::new("m.toml")).expect("valid manifest");
        let c = manifest_calibration(&m, Path::new("m.toml")).expect("calibration");
        assert_eq!(c.score(0.3), 7000);
    }

    #[test]
    fn rejects_bad_manifests() {
        let bad_cal = format!("{MINIMAL}\n[calibration]\nknots = [[0.5, 10.0], [0.1, 20.0]]\n");
        let m = parse_manifest(&bad_cal, Path::new("m.toml")).expect("parses");
        assert!(manifest_calibration(&m, Path::new("m.toml")).is_err());
        let bad_stride = MINIMAL.replace("std = 128.0", "std = 128.0\nstrides = [7]");
        assert!(parse_manifest(&bad_stride, Path::new("m.toml")).is_err());
        let refine = |side: &str| MINIMAL.replace("std = 128.0", &format!("std = 128.0\nrefine_canvas = {side}"));
        assert_eq!(
            parse_manifest(&refine("224"), Path::new("m.toml")).expect("valid").detector.refine_canvas,
            Some(224)
        );
        for side in ["96", "200", "0"] {
            assert!(parse_manifest(&refine(side), Path::new("m.toml")).is_err(), "refine_canvas = {side}");
        }
        assert!(parse_manifest("model_id = 3", Path::new("m.toml")).is_err());
    }

    #[test]
    fn missing_manifest_and_bad_hash_name_the_file() {
        let dir = std::env::temp_dir().join(format!("facegate-pack-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let err = Pack::load(&dir).expect_err("no manifest");
        assert!(err.to_string().contains("manifest.toml"), "{err}");

        std::fs::write(dir.join(MANIFEST_FILE), MINIMAL).expect("write manifest");
        let err = Pack::load(&dir).expect_err("no model");
        assert!(err.to_string().contains("det.onnx") && err.to_string().contains("make setup"), "{err}");

        std::fs::write(dir.join("det.onnx"), b"not a model").expect("write model");
        let err = Pack::load(&dir).expect_err("bad hash");
        assert!(matches!(err, EngineError::HashMismatch { .. }), "{err}");
        assert!(err.to_string().contains("det.onnx"), "{err}");

        let traversal = MINIMAL.replace("det.onnx", "../det.onnx");
        std::fs::write(dir.join(MANIFEST_FILE), traversal).expect("write manifest");
        assert!(matches!(Pack::load(&dir), Err(EngineError::Manifest { .. })));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
