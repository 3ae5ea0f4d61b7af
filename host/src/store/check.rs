//! Re-checking an installed model's files against what the store recorded when it
//! installed them (size and SHA-256), so a damaged or edited file is found before an
//! engine trips over it. Behind a server's "verify" (the web app's Models tab).

use serde::Serialize;

use super::digest::sha256_file;
use super::{Store, StoreError};

/// What one file of a model looks like now, against the record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileCheck {
    /// The file, relative to the model's directory.
    pub name: String,
    /// The recorded size.
    pub expected_size: u64,
    /// Its size now (`None`: missing or unreadable).
    pub size: Option<u64>,
    /// Whether its SHA-256 equals the recorded one.
    pub sha256_ok: bool,
    /// What went wrong reading it, if anything.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl FileCheck {
    /// Whether the file is as installed.
    pub fn ok(&self) -> bool {
        self.error.is_none() && self.sha256_ok && self.size == Some(self.expected_size)
    }
}

impl Store {
    /// Hashes every file of the model `id` and compares it with the registry's record.
    /// Reads the whole model: as slow as the disk.
    pub fn check_files(&self, id: &str) -> Result<Vec<FileCheck>, StoreError> {
        let entry = self.get(id)?.ok_or_else(|| StoreError::UnknownModel {
            id: id.to_string(),
            home: self.home.clone(),
        })?;
        let dir = self.models_dir().join(&entry.id);
        Ok(entry
            .files
            .iter()
            .map(|record| {
                let path = dir.join(&record.name);
                match sha256_file(&path) {
                    Ok((sha256, size)) => FileCheck {
                        name: record.name.clone(),
                        expected_size: record.size,
                        size: Some(size),
                        sha256_ok: sha256 == record.sha256,
                        error: None,
                    },
                    Err(e) => FileCheck {
                        name: record.name.clone(),
                        expected_size: record.size,
                        size: None,
                        sha256_ok: false,
                        error: Some(format!("cannot read {}: {e}", path.display())),
                    },
                }
            })
            .collect())
    }
}
