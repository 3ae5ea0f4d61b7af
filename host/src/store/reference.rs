//! What `runanywhere pull` is given: a catalog id, or a Hub reference
//! `hf.co/OWNER/REPO/PATH[@REVISION]` (also accepted: `huggingface.co/...` and the
//! Hub's browser URLs `https://huggingface.co/OWNER/REPO/{resolve,blob}/REV/PATH`).

use std::fmt;

use super::{Catalog, CatalogEntry, StoreError};

/// A file or folder in a Hub repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubRef {
    /// `OWNER/NAME`.
    pub repo: String,
    /// Path in the repository; empty for the root folder.
    pub path: String,
    /// Branch, tag or commit.
    pub revision: String,
}

impl HubRef {
    /// Parses a Hub reference; the error says why it is not one.
    pub fn parse(text: &str) -> Result<HubRef, String> {
        let rest = text
            .trim()
            .trim_start_matches("https://")
            .trim_start_matches("http://");
        let rest = ["hf.co/", "huggingface.co/", "www.huggingface.co/"]
            .iter()
            .find_map(|host| rest.strip_prefix(host))
            .ok_or("neither a catalog id nor an hf.co/... reference")?;
        let mut parts: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
        if parts.len() < 2 {
            return Err("missing OWNER/REPO".into());
        }
        let repo = format!("{}/{}", parts[0], parts[1]);
        let mut revision = None;
        // A browser URL: OWNER/REPO/{resolve,blob,tree}/REV/PATH.
        if parts.len() >= 4 && matches!(parts[2], "resolve" | "blob" | "tree") {
            revision = Some(parts[3].to_string());
            parts.drain(2..4);
        }
        let mut path = parts[2..].join("/");
        if let Some((p, rev)) = path.rsplit_once('@') {
            if rev.is_empty() || rev.contains('/') {
                return Err("an empty or malformed @REVISION".into());
            }
            revision = Some(rev.to_string());
            path = p.to_string();
        } else if repo.contains('@') {
            return Err("put @REVISION after the path: hf.co/OWNER/REPO/PATH@REVISION".into());
        }
        if path.split('/').any(|seg| seg == ".." || seg == ".") {
            return Err("the path may not contain '.' or '..'".into());
        }
        Ok(HubRef {
            repo,
            path,
            revision: revision.unwrap_or_else(|| "main".into()),
        })
    }

    /// Whether the path names a file (its last segment has an extension) rather than a
    /// folder.
    pub fn is_file(&self) -> bool {
        self.path
            .rsplit('/')
            .next()
            .is_some_and(|last| last.contains('.') && !last.ends_with('.'))
    }
}

impl fmt::Display for HubRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "hf.co/{}", self.repo)?;
        if !self.path.is_empty() {
            write!(f, "/{}", self.path)?;
        }
        write!(f, "@{}", self.revision)
    }
}

/// A model to pull.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullSpec {
    /// A catalog model.
    Catalog(Box<CatalogEntry>),
    /// A file or folder on the Hub.
    Hub(HubRef),
}

impl PullSpec {
    /// A catalog id (case-insensitive) or a Hub reference.
    pub fn parse(text: &str, catalog: &Catalog) -> Result<PullSpec, StoreError> {
        if let Some(entry) = catalog.get(text.trim()) {
            return Ok(PullSpec::Catalog(Box::new(entry.clone())));
        }
        HubRef::parse(text)
            .map(PullSpec::Hub)
            .map_err(|reason| StoreError::BadReference {
                spec: text.to_string(),
                reason,
            })
    }

    /// The source recorded in the registry: `catalog:ID` or the Hub reference.
    pub fn source(&self) -> String {
        match self {
            PullSpec::Catalog(e) => format!("catalog:{} ({})", e.id, e.source()),
            PullSpec::Hub(r) => r.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub(text: &str) -> HubRef {
        HubRef::parse(text).unwrap()
    }

    #[test]
    fn references_parse() {
        let r = hub("hf.co/ggml-org/tiny-llamas/stories260K.gguf");
        assert_eq!(
            (r.repo.as_str(), r.path.as_str(), r.revision.as_str()),
            ("ggml-org/tiny-llamas", "stories260K.gguf", "main")
        );
        assert!(r.is_file());
        assert_eq!(
            r.to_string(),
            "hf.co/ggml-org/tiny-llamas/stories260K.gguf@main"
        );
        let r = hub("huggingface.co/o/r/sub/dir/m.onnx@v1.0");
        assert_eq!(
            (r.path.as_str(), r.revision.as_str()),
            ("sub/dir/m.onnx", "v1.0")
        );
        let r = hub("https://huggingface.co/o/r/resolve/abc123/x.gguf");
        assert_eq!((r.path.as_str(), r.revision.as_str()), ("x.gguf", "abc123"));
        let r = hub("hf.co/o/r/cpu_and_mobile/cpu-int4");
        assert!(!r.is_file());
        let r = hub("hf.co/o/r");
        assert_eq!(r.path, "");
        assert!(!r.is_file());
        for bad in [
            "stories",
            "hf.co/onlyowner",
            "hf.co/o/r/x.gguf@",
            "hf.co/o/r/../x",
            "hf.co/o/r@main",
        ] {
            assert!(HubRef::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn catalog_ids_win_over_references() {
        let catalog = Catalog::builtin().unwrap();
        match PullSpec::parse("STORIES260K", &catalog).unwrap() {
            PullSpec::Catalog(e) => assert_eq!(e.id, "stories260k"),
            other => panic!("{other:?}"),
        }
        let err = PullSpec::parse("no-such-model", &catalog).unwrap_err();
        assert!(matches!(err, StoreError::BadReference { .. }), "{err}");
        assert!(err.to_string().contains("give a catalog id"), "{err}");
    }
}
