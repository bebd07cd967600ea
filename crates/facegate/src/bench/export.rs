//! `facegate bench search --export DIR`: the synthetic gallery and probes as raw files, with the
//! exact scan's answers, so that another index (a peer library) is measured on the very same
//! data as facegate's (`scripts/peer_usearch_search.py`).
//!
//! Files, all little-endian, rows in the order they were inserted:
//! - `gallery.f16`: each template's values as f16 (what facegate stores), `dim` a row;
//! - `gallery_subjects.u64`: each template's subject, by number;
//! - `probes.f32`: each probe's values, `dim` a probe; `probes_mated.u8`: 1 for a mated probe;
//! - `exact_top1.u64`: for the first `recall_queries` probes, the subject the exact scan ranks
//!   first without a tag filter (`u64::MAX` for none);
//! - `meta.json`: the counts and `dim`.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;

/// Files being written; see the module documentation.
pub struct GalleryExport {
    dir: PathBuf,
    gallery: BufWriter<File>,
    subjects: BufWriter<File>,
    rows: u64,
}

/// A probe as exported: its values and whether it is mated.
pub struct ExportedProbe<'a> {
    pub embedding: &'a [f32],
    pub mated: bool,
}

impl GalleryExport {
    pub fn create(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let open = |name: &str| -> anyhow::Result<BufWriter<File>> {
            let path = dir.join(name);
            Ok(BufWriter::with_capacity(
                1 << 20,
                File::create(&path).with_context(|| format!("creating {}", path.display()))?,
            ))
        };
        Ok(Self {
            dir: dir.to_owned(),
            gallery: open("gallery.f16")?,
            subjects: open("gallery_subjects.u64")?,
            rows: 0,
        })
    }

    pub fn row(&mut self, subject: u64, embedding: &[f32]) -> anyhow::Result<()> {
        for &x in embedding {
            self.gallery.write_all(&half::f16::from_f32(x).to_le_bytes())?;
        }
        self.subjects.write_all(&subject.to_le_bytes())?;
        self.rows += 1;
        Ok(())
    }

    /// Writes the probes and, for the first of them, the exact scan's top subjects
    /// (`u64::MAX` where it found none).
    pub fn finish(mut self, dim: usize, probes: &[ExportedProbe<'_>], exact_tops: &[u64]) -> anyhow::Result<()> {
        self.gallery.flush()?;
        self.subjects.flush()?;
        let values: Vec<u8> = probes.iter().flat_map(|p| p.embedding.iter().flat_map(|x| x.to_le_bytes())).collect();
        let mated: Vec<u8> = probes.iter().map(|p| u8::from(p.mated)).collect();
        let exact: Vec<u8> = exact_tops.iter().flat_map(|t| t.to_le_bytes()).collect();
        std::fs::write(self.dir.join("probes.f32"), values)?;
        std::fs::write(self.dir.join("probes_mated.u8"), mated)?;
        std::fs::write(self.dir.join("exact_top1.u64"), &exact)?;
        let meta = serde_json::json!({
            "templates": self.rows,
            "dim": dim,
            "queries": probes.len(),
            "recall_queries": exact_tops.len(),
        });
        std::fs::write(self.dir.join("meta.json"), serde_json::to_string_pretty(&meta)?)?;
        Ok(())
    }
}
