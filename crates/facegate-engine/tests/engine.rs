//! End-to-end checks of the engine on the real runtime and model pack.
//!
//! Needs `<workspace>/.facegate` from `scripts/setup`. The faceapi checks also need the shared
//! datasets beside the workspace (`../shared/datasets`) and are skipped without them.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use facegate_core::{Code, Engine};
use facegate_engine::embed::cosine;
use facegate_engine::{EngineConfig, EngineError, OrtEngine};
use image::{DynamicImage, ImageFormat, RgbImage};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn home() -> PathBuf {
    let home = workspace().join(".facegate");
    assert!(
        home.join("onnxruntime").is_dir() && home.join("models").is_dir(),
        "{} is missing: run scripts/setup (make setup) first",
        home.display()
    );
    home
}

fn pack_file(name: &str) -> Vec<u8> {
    let path = home().join("models/buffalo_s").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}; run scripts/setup", path.display()))
}

fn datasets() -> Option<PathBuf> {
    let dir = workspace().join("../shared/datasets");
    if dir.is_dir() {
        Some(dir)
    } else {
        println!("skipping: /work/shared datasets not found");
        None
    }
}

/// One engine for the whole test binary; loading again is tested separately.
fn engine() -> Arc<OrtEngine> {
    static ENGINE: OnceLock<Arc<OrtEngine>> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            let config = EngineConfig { workers: 2, ..EngineConfig::with_home(&home()) };
            Arc::new(OrtEngine::load(&config).unwrap_or_else(|e| panic!("engine load: {e}")))
        })
        .clone()
}

fn encode(img: &RgbImage, format: ImageFormat) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    DynamicImage::ImageRgb8(img.clone()).write_to(&mut out, format).expect("encode");
    out.into_inner()
}

#[test]
fn sample_images_have_the_expected_faces() {
    let engine = engine();
    for (name, check) in [
        ("players.jpg", (|n: usize| n >= 18) as fn(usize) -> bool),
        ("yaoming.jpg", |n| n == 1),
        ("gdp.jpg", |n| n == 5),
    ] {
        let analysis = engine.analyze(&pack_file(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let n = analysis.faces.len();
        assert!(check(n), "{name}: {n} faces");
        let (w, h) = (analysis.width as f32, analysis.height as f32);
        let mut last_area = f32::INFINITY;
        for f in &analysis.faces {
            let b = &f.bbox;
            assert!(b.width() > 4.0 && b.height() > 4.0, "{name}: tiny box {b:?}");
            assert!(
                b.left >= -0.1 * w && b.top >= -0.1 * h && b.right <= 1.1 * w && b.bottom <= 1.1 * h,
                "{name}: box {b:?} outside {w}×{h}"
            );
            // Keypoints sit inside (or at the edge of) their box.
            for p in f.landmarks {
                assert!(p[0] > b.left - 0.2 * b.width() && p[0] < b.right + 0.2 * b.width(), "{name}: {p:?} {b:?}");
            }
            assert!(f.detector_score >= 0.5 && f.detector_score <= 1.0);
            assert_eq!(f.embedding.len(), 512);
            let norm: f32 = f.embedding.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-3, "{name}: norm {norm}");
            assert!(b.area() <= last_area, "{name}: faces are not largest first");
            last_area = b.area();
        }
    }
    let info = engine.model_info();
    assert_eq!(info.model_id, "buffalo_s/w600k_mbf@1");
    assert_eq!(info.embedding_size, 512);
    assert!(info.calibration.score(0.9) > info.calibration.score(0.1));
}

#[test]
fn stages_agree_with_analyze_and_are_deterministic() {
    let engine = engine();
    let bytes = pack_file("yaoming.jpg");
    let img = facegate_engine::decode_image(&bytes, engine.decode_limits()).expect("decode");
    let dets = engine.detect(&img).expect("detect");
    assert_eq!(dets.len(), 1);
    let embs = engine.embed_faces(&img, &dets).expect("embed");
    let analysis = engine.analyze(&bytes).expect("analyze");
    assert!(cosine(&embs[0], &analysis.faces[0].embedding) > 0.9999);
    assert!(engine.embed_faces(&img, &[]).expect("no faces").is_empty());

    // The same face alone and in a batch with others embeds the same.
    let players = facegate_engine::decode_image(&pack_file("players.jpg"), engine.decode_limits()).expect("decode");
    let many = engine.detect(&players).expect("detect");
    let batch = engine.embed_faces(&players, &many).expect("batch");
    let single = engine.embed_faces(&players, &many[3..4]).expect("single");
    assert!(cosine(&batch[3], &single[0]) > 0.999);
}

#[test]
fn concurrent_callers_get_the_same_answers() {
    let engine = engine();
    let bytes = Arc::new(pack_file("gdp.jpg"));
    let reference = engine.analyze(&bytes).expect("analyze");
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let (engine, bytes) = (engine.clone(), bytes.clone());
            std::thread::spawn(move || engine.analyze(&bytes).expect("analyze"))
        })
        .collect();
    for h in handles {
        let got = h.join().expect("thread");
        assert_eq!(got.faces.len(), reference.faces.len());
        for (a, b) in got.faces.iter().zip(&reference.faces) {
            assert!(cosine(&a.embedding, &b.embedding) > 0.9999);
        }
    }
}

#[test]
fn faceapi_identities_are_found_and_separated() {
    let Some(data) = datasets() else { return };
    let engine = engine();
    let root = data.join("faceapi/identities");
    let mut people: Vec<(String, Vec<Vec<f32>>)> = Vec::new();
    let mut names: Vec<PathBuf> = std::fs::read_dir(&root).expect("identities").flatten().map(|e| e.path()).collect();
    names.sort();
    for dir in names {
        let person = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        let mut embeddings = Vec::new();
        for i in 1..=5 {
            let path = dir.join(format!("{person}{i}.png"));
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let analysis = engine.analyze(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(!analysis.faces.is_empty(), "{}: no face", path.display());
            embeddings.push(analysis.faces[0].embedding.clone());
        }
        people.push((person, embeddings));
    }
    assert_eq!(people.len(), 8);

    let (mut same_min, mut diff_max) = (f32::INFINITY, f32::NEG_INFINITY);
    let (mut same_sum, mut same_n, mut diff_sum, mut diff_n) = (0.0f32, 0, 0.0f32, 0);
    for (i, (_, a)) in people.iter().enumerate() {
        for (j, (_, b)) in people.iter().enumerate() {
            for (x, ea) in a.iter().enumerate() {
                for (y, eb) in b.iter().enumerate() {
                    if (i, x) >= (j, y) {
                        continue;
                    }
                    let s = cosine(ea, eb);
                    if i == j {
                        same_min = same_min.min(s);
                        same_sum += s;
                        same_n += 1;
                    } else {
                        diff_max = diff_max.max(s);
                        diff_sum += s;
                        diff_n += 1;
                    }
                }
            }
        }
    }
    let (same_mean, diff_mean) = (same_sum / same_n as f32, diff_sum / diff_n as f32);
    println!("same person: mean {same_mean:.3} min {same_min:.3}; different: mean {diff_mean:.3} max {diff_max:.3}");
    assert!(same_mean > 0.5, "same-person mean similarity {same_mean}");
    assert!(diff_mean < 0.3, "different-person mean similarity {diff_mean}");
    assert!(diff_max < 0.35, "most similar different people: {diff_max}");
}

/// Inserts an APP1 Exif segment carrying `Orientation = value` after the JPEG's SOI/APP0.
fn with_exif_orientation(jpeg: &[u8], value: u16) -> Vec<u8> {
    let mut tiff = Vec::new();
    tiff.extend_from_slice(b"MM\0*");
    tiff.extend_from_slice(&8u32.to_be_bytes());
    tiff.extend_from_slice(&1u16.to_be_bytes());
    tiff.extend_from_slice(&0x0112u16.to_be_bytes());
    tiff.extend_from_slice(&3u16.to_be_bytes());
    tiff.extend_from_slice(&1u32.to_be_bytes());
    tiff.extend_from_slice(&value.to_be_bytes());
    tiff.extend_from_slice(&[0, 0]);
    tiff.extend_from_slice(&0u32.to_be_bytes());
    let mut app1 = vec![0xFF, 0xE1];
    app1.extend_from_slice(&((2 + 6 + tiff.len()) as u16).to_be_bytes());
    app1.extend_from_slice(b"Exif\0\0");
    app1.extend_from_slice(&tiff);

    assert_eq!(&jpeg[..2], &[0xFF, 0xD8], "not a JPEG");
    let mut at = 2;
    if jpeg[2..4] == [0xFF, 0xE0] {
        at += 2 + usize::from(u16::from_be_bytes([jpeg[4], jpeg[5]]));
    }
    let mut out = jpeg[..at].to_vec();
    out.extend_from_slice(&app1);
    out.extend_from_slice(&jpeg[at..]);
    out
}

#[test]
fn exif_rotated_jpeg_is_turned_upright() {
    let engine = engine();
    let upright = facegate_engine::decode_image(&pack_file("yaoming.jpg"), engine.decode_limits()).expect("decode");
    // Stored lying on its side; Orientation 6 tells viewers to turn it 90° clockwise.
    let sideways = image::imageops::rotate270(&upright);
    let tagged = with_exif_orientation(&encode(&sideways, ImageFormat::Jpeg), 6);
    let analysis = engine.analyze(&tagged).expect("analyze");
    assert_eq!((analysis.width, analysis.height), upright.dimensions());
    assert_eq!(analysis.faces.len(), 1);
    let reference = engine.analyze(&pack_file("yaoming.jpg")).expect("analyze");
    let s = cosine(&analysis.faces[0].embedding, &reference.faces[0].embedding);
    assert!(s > 0.8, "re-encoded upright face similarity {s}");
}

#[test]
fn hostile_inputs_are_errors_not_panics() {
    let engine = engine();
    let code = |bytes: &[u8]| engine.analyze(bytes).err().map(|e| e.code());
    assert_eq!(code(b""), Some(Code::InvalidImage));
    assert_eq!(code(b"definitely not an image"), Some(Code::UnsupportedMediaType));
    assert_eq!(code(b"GIF89a\x10\x00\x10\x00\x00\x00\x00"), Some(Code::UnsupportedMediaType));

    let yao = pack_file("yaoming.jpg");
    for cut in [3, 20, 200, yao.len() / 4, yao.len() / 2, yao.len() - 2] {
        assert!(engine.analyze(&yao[..cut]).is_err(), "truncated at {cut} decoded");
    }
    // Random bytes, and random bytes behind valid magic numbers.
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut noise = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect()
    };
    for magic in [&b""[..], b"\xFF\xD8\xFF\xE0", b"\x89PNG\r\n\x1a\n", b"RIFF\x10\x00\x00\x00WEBPVP8 ", b"BM"] {
        for len in [16, 1000, 20_000] {
            let mut bytes = magic.to_vec();
            bytes.extend(noise(len));
            let _ = engine.analyze(&bytes);
        }
    }
    // BMP headers claiming 20000² and 100000² pixels: refused before any pixel buffer exists
    // (the BMP decoder itself refuses sides over 65535 as malformed).
    let bmp_header = |side: i32| {
        let mut bmp = b"BM".to_vec();
        bmp.extend_from_slice(&[0u8; 12]);
        bmp[10..14].copy_from_slice(&54u32.to_le_bytes());
        bmp.extend_from_slice(&40u32.to_le_bytes());
        bmp.extend_from_slice(&side.to_le_bytes());
        bmp.extend_from_slice(&side.to_le_bytes());
        bmp.extend_from_slice(&1u16.to_le_bytes());
        bmp.extend_from_slice(&24u16.to_le_bytes());
        bmp.extend_from_slice(&[0u8; 24]);
        bmp
    };
    assert_eq!(code(&bmp_header(20_000)), Some(Code::PayloadTooLarge));
    assert!(matches!(code(&bmp_header(100_000)), Some(Code::PayloadTooLarge | Code::InvalidImage)));

    // Degenerate but valid images: no face, no error.
    for (w, h) in [(1, 1), (1, 500), (3000, 2)] {
        let img = RgbImage::from_pixel(w, h, image::Rgb([120, 130, 140]));
        let analysis = engine.analyze(&encode(&img, ImageFormat::Png)).expect("valid image");
        assert!(analysis.faces.is_empty());
    }
    let too_big = vec![0u8; engine.config().max_input_bytes + 1];
    assert_eq!(code(&too_big), Some(Code::PayloadTooLarge));
}

#[test]
fn load_errors_name_the_file_and_the_fix() {
    let good = EngineConfig { workers: 1, ..EngineConfig::with_home(&home()) };

    let missing_runtime =
        EngineConfig { runtime_library: PathBuf::from("/nonexistent/libonnxruntime.so"), ..good.clone() };
    let err = OrtEngine::load(&missing_runtime).expect_err("no runtime");
    let text = err.to_string();
    assert!(text.contains("/nonexistent/libonnxruntime.so") && text.contains("make setup"), "{text}");

    let empty = std::env::temp_dir().join(format!("facegate-engine-empty-{}", std::process::id()));
    std::fs::create_dir_all(&empty).expect("temp dir");
    let err = OrtEngine::load(&EngineConfig { model_dir: empty.clone(), ..good.clone() }).expect_err("no pack");
    assert!(matches!(err, EngineError::Missing { .. }), "{err}");
    assert!(err.to_string().contains("manifest.toml"), "{err}");
    let _ = std::fs::remove_dir_all(&empty);

    let err = OrtEngine::load(&EngineConfig { detection_threshold: 0.0, ..good.clone() }).expect_err("bad config");
    assert!(matches!(err, EngineError::Config(_)), "{err}");

    // Loading again in the same process reuses the ONNX Runtime environment.
    let again = OrtEngine::load(&good).expect("second load");
    assert_eq!(again.analyze(&pack_file("yaoming.jpg")).expect("analyze").faces.len(), 1);
}
