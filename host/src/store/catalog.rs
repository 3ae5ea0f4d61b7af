//! The curated catalog shipped with the binary (`host/catalog.toml`, embedded).

use serde::{Deserialize, Serialize};

/// The catalog's TOML text.
const CATALOG_TOML: &str = include_str!("../../catalog.toml");

/// One catalog model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogEntry {
    /// The id `runanywhere pull` takes (and the store id it installs under).
    pub id: String,
    /// A display name.
    pub name: String,
    /// The Hugging Face repository, `OWNER/NAME`.
    pub repo: String,
    /// Branch, tag or commit.
    #[serde(default = "main")]
    pub revision: String,
    /// The engine format name (`gguf`, `safetensors`, `onnx`, `llama2c`).
    pub format: String,
    /// Quantization or data type.
    pub quant: String,
    /// Parameter count, as the model card states it (e.g. `135M`).
    pub parameters: String,
    /// The licence.
    pub license: String,
    /// Context length the model was trained for, in tokens.
    pub context_length: u64,
    /// A rough memory estimate in MiB (see the catalog's header).
    pub ram_estimate_mb: u64,
    /// The files to pull: exact paths or `*` patterns, some pinned.
    pub files: Vec<CatalogFile>,
    /// Which of the files is the model, when it is not the only one or the folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_file: Option<String>,
    /// A separate tokenizer file among the files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<String>,
}

fn main() -> String {
    "main".into()
}

/// A file of a catalog entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum CatalogFile {
    /// A path or a `*` pattern in the repository.
    Pattern(String),
    /// A path with a cited size and checksum.
    Pinned {
        /// Path in the repository.
        path: String,
        /// Size in bytes.
        size: u64,
        /// SHA-256, lowercase hex.
        sha256: String,
    },
}

impl CatalogFile {
    /// The path or pattern.
    pub fn path(&self) -> &str {
        match self {
            CatalogFile::Pattern(p) => p,
            CatalogFile::Pinned { path, .. } => path,
        }
    }
}

impl CatalogEntry {
    /// Total size, when every file is pinned.
    pub fn size(&self) -> Option<u64> {
        self.files.iter().try_fold(0u64, |acc, f| match f {
            CatalogFile::Pinned { size, .. } => Some(acc + size),
            CatalogFile::Pattern(_) => None,
        })
    }

    /// `hf.co/REPO` (with the revision unless it is `main`).
    pub fn source(&self) -> String {
        if self.revision == "main" {
            format!("hf.co/{}", self.repo)
        } else {
            format!("hf.co/{}@{}", self.repo, self.revision)
        }
    }
}

/// The catalog could not be read.
#[derive(Debug, thiserror::Error)]
#[error("the built-in model catalog is malformed: {0}")]
pub struct CatalogError(String);

/// The catalog's models.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Catalog {
    #[serde(rename = "model")]
    models: Vec<CatalogEntry>,
}

impl Catalog {
    /// The catalog shipped with this build.
    pub fn builtin() -> Result<Catalog, CatalogError> {
        Catalog::parse(CATALOG_TOML)
    }

    /// Parses a catalog from TOML.
    pub fn parse(text: &str) -> Result<Catalog, CatalogError> {
        toml::from_str(text).map_err(|e| CatalogError(e.to_string()))
    }

    /// Every model, in catalog order.
    pub fn models(&self) -> &[CatalogEntry] {
        &self.models
    }

    /// The model with `id` (case-insensitive).
    pub fn get(&self, id: &str) -> Option<&CatalogEntry> {
        self.models.iter().find(|m| m.id.eq_ignore_ascii_case(id))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use runanywhere_formats::ModelFormat;

    use super::*;
    use crate::store::validate_id;

    #[test]
    fn the_builtin_catalog_is_well_formed() {
        let catalog = Catalog::builtin().unwrap();
        assert!(catalog.models().len() >= 10);
        let mut ids = HashSet::new();
        for m in catalog.models() {
            assert!(ids.insert(m.id.clone()), "duplicate id {}", m.id);
            validate_id(&m.id).unwrap();
            assert!(
                ModelFormat::from_name(&m.format).is_some(),
                "{}: {}",
                m.id,
                m.format
            );
            assert_eq!(m.repo.split('/').count(), 2, "{}", m.repo);
            assert!(!m.files.is_empty(), "{}", m.id);
            for f in &m.files {
                if let CatalogFile::Pinned { sha256, .. } = f {
                    assert_eq!(sha256.len(), 64, "{}", m.id);
                    assert!(sha256.bytes().all(|b| b.is_ascii_hexdigit()), "{}", m.id);
                }
            }
        }
        // Each format our engines read is represented, except ExecuTorch's (the public
        // `.pte` LLMs on the Hub, pytorch/*-8da4w and executorch-community/*, are exported
        // with the custom sdpa / KV-cache ops, which the stock runtime wheel lacks) and
        // LiteRT's (the litert-community models we know are gated Gemma exports or ship as
        // `.task` / `.litertlm` bundles, which the litert engine does not read).
        let not_listed = [ModelFormat::Pte, ModelFormat::Tflite];
        for format in ModelFormat::ALL
            .into_iter()
            .filter(|f| !not_listed.contains(f))
        {
            assert!(
                catalog.models().iter().any(|m| m.format == format.name()),
                "{format}"
            );
        }
        let stories = catalog.get("stories260K").unwrap();
        assert_eq!(stories.size(), Some(1_185_376));
        assert_eq!(stories.source(), "hf.co/ggml-org/tiny-llamas");
        assert_eq!(catalog.get("smollm2-135m-instruct").unwrap().size(), None);
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = Catalog::parse("[[model]]\nid = \"x\"\nsha = \"1\"\n").unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }
}
